"""vss_snapshot against the AWS twin: real ansible-playbook runs, results checked as an operator would."""

import os
import re
import time

import pytest
import yaml

from ansible_collections.appconsistent.snapshots.plugins.modules import vss_snapshot

VSS = "appconsistent.snapshots.vss_snapshot"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WINDOWS = {"provider": "aws", "platform": "windows", "state": "running",
           "volumes": [{"device": "/dev/sda1", "size": 30, "boot": True}, {"device": "xvdf", "size": 100}]}


def fleet(*instances, **extra):
    doc = {"instances": [dict(WINDOWS, **i) for i in instances]}
    doc.update(extra)
    return doc


def ids(twins, *names):
    known = twins.endpoints["aws"]["instances"]
    return [known[n] for n in names]


def set_snapshots(twins, set_id):
    ec2 = twins.aws_client("ec2")
    found = ec2.describe_snapshots(OwnerIds=["self"], Filters=[{"Name": "tag:appconsistent:set-id", "Values": [set_id]}])
    return [dict(s, Tags={t["Key"]: t["Value"] for t in s.get("Tags", [])}) for s in found["Snapshots"]]


def by_instance(result):
    return {r["instance_id"]: r for r in result["results"]}


def test_one_instance_gets_an_application_consistent_set(twin_factory, run_tasks):
    twins = twin_factory(fleet({"name": "sql-1"}), alicloud=False)
    (iid,) = ids(twins, "sql-1")
    run = run_tasks([{VSS: {"instance_ids": [iid], "tags": {"purpose": "test"}, "delete_after": "7d"}, "register": "vss"}],
                    twins.endpoints)
    result = run["vss"]
    assert result["changed"] is True and not result.get("failed"), result
    (entry,) = result["results"]
    assert (entry["status"], entry["consistency"]) == ("Success", "application")
    assert len(entry["snapshots"]) == 2
    snaps = set_snapshots(twins, entry["set_id"])
    assert sorted(s["Tags"]["appconsistent:device"] for s in snaps) == ["/dev/sda1", "xvdf"]
    for snap in snaps:
        tags = snap["Tags"]
        assert tags["appconsistent:instance-id"] == iid
        assert tags["appconsistent:consistency"] == "application"
        assert tags["purpose"] == "test"
        assert tags["AppConsistent"].lower() == "true"
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", tags["appconsistent:delete-after"])


def test_check_mode_sends_nothing_and_creates_nothing(twin_factory, run_tasks):
    twins = twin_factory(fleet({"name": "sql-1"}), alicloud=False)
    (iid,) = ids(twins, "sql-1")
    twins.stats.reset()
    run = run_tasks([{VSS: {"instance_ids": [iid], "exclude_boot_volume": True}, "register": "vss"}], twins.endpoints,
                    check=True)
    entry = run["vss"]["results"][0]
    assert run["vss"]["changed"] is True
    assert entry["status"] == "WouldRun"
    assert entry["plan"]["document"] == "AWSEC2-CreateVssSnapshot"
    assert entry["plan"]["parameters"]["ExcludeBootVolume"] == ["True"]
    assert [v["device"] for v in entry["plan"]["volumes"]] == ["xvdf"]
    counts = twins.stats.counts("aws")
    assert counts.get("SendCommand", 0) == 0 and counts.get("CreateTags", 0) == 0
    assert twins.aws_client("ec2").describe_snapshots(OwnerIds=["self"])["Snapshots"] == []


def test_rerun_with_the_same_run_id_returns_the_same_set(twin_factory, run_tasks):
    twins = twin_factory(fleet({"name": "sql-1"}), alicloud=False)
    (iid,) = ids(twins, "sql-1")
    task = {VSS: {"instance_ids": [iid], "run_id": "CHG0042"}}
    run = run_tasks([dict(task, register="first"), dict(task, register="second")], twins.endpoints)
    first, second = run["first"]["results"][0], run["second"]["results"][0]
    assert run["first"]["changed"] is True and run["second"]["changed"] is False
    assert second["status"] == "Existing"
    assert second["set_id"] == first["set_id"]
    assert second["consistency"] == "application"
    assert twins.stats.counts("aws")["SendCommand"] == 1
    assert len(twins.aws_client("ec2").describe_snapshots(OwnerIds=["self"])["Snapshots"]) == 2


def test_120_instances_take_three_commands_and_no_per_instance_polling(twin_factory, run_tasks):
    twins = twin_factory({"generate": [{"count": 120, "provider": "aws", "name_prefix": "win-", "template": WINDOWS}]},
                         alicloud=False)
    every = sorted(twins.endpoints["aws"]["instances"].values())
    twins.stats.reset()
    # An account granted more than the published 100 CreateSnapshots tokens: the batching alone is under test.
    raised = {"CreateSnapshots": {"capacity": 200, "refill": 20}}
    run = run_tasks([{VSS: {"instance_ids": every, "api_rate_limits": raised}, "register": "vss"}], twins.endpoints)
    result = run["vss"]
    assert not result.get("failed"), result.get("msg")
    assert len(result["results"]) == 120
    assert {r["consistency"] for r in result["results"]} == {"application"}
    assert len({r["set_id"] for r in result["results"]}) == 120
    counts = twins.stats.counts("aws")
    assert counts["SendCommand"] == 3
    assert counts.get("GetCommandInvocation", 0) == 0
    assert counts["ListCommandInvocations"] <= 3 * 4  # one listing per batch and poll, never one per instance
    assert len(result["command_ids"]) == 3


FAULT_FLEET = fleet(
    {"name": "ok"},
    {"name": "offline", "agent": {"status": "connection_lost"}},
    {"name": "unmanaged", "agent": {"status": "not_installed"}},
    {"name": "linux", "platform": "linux"},
    {"name": "stopped", "state": "stopped"},
    {"name": "nocomp", "agent": {"vss_components": False}},
    {"name": "writer", "faults": {"vss_writer_failure": True}},
    {"name": "thaw", "faults": {"vss_thaw_timeout": True}},
    {"name": "snaperr", "faults": {"snapshot_error": True}},
)


@pytest.fixture
def fault_twins(twin_factory):
    return twin_factory(FAULT_FLEET, alicloud=False)


def test_each_fault_gets_its_own_result_and_the_rest_still_run(fault_twins, run_tasks):
    names = ["ok", "offline", "unmanaged", "linux", "stopped", "nocomp", "writer", "thaw", "snaperr"]
    iids = dict(zip(names, ids(fault_twins, *names)))
    run = run_tasks([{VSS: {"instance_ids": list(iids.values()), "wait_for_completion": True,
                            "completion_timeout": 120}, "register": "vss"}], fault_twins.endpoints)
    result = run["vss"]
    got = {name: by_instance(result)[iid] for name, iid in iids.items()}
    assert result["failed"] is True
    assert "8 of 9 instances" in result["msg"]
    assert (got["ok"]["status"], got["ok"]["consistency"]) == ("Success", "application")
    assert sorted(f["instance_id"] for f in result["failed_instances"]) == sorted(v for k, v in iids.items() if k != "ok")

    assert got["offline"]["error"]["code"] == "AgentNotOnline" and "SSM agent" in got["offline"]["error"]["message"]
    assert got["unmanaged"]["error"]["code"] == "InvalidInstanceId"
    assert got["linux"]["error"]["code"] == "WrongPlatform" and "app_consistent_group" in got["linux"]["error"]["message"]
    assert got["stopped"]["error"]["code"] == "InstanceNotRunning"
    for name in ("offline", "unmanaged", "linux", "stopped"):
        assert got[name]["status"] == "NotSent" and got[name]["consistency"] == "none" and not got[name]["command_id"]

    assert got["nocomp"]["status"] == "Failed" and got["nocomp"]["consistency"] == "none"
    assert "install_vss_components: true" in got["nocomp"]["error"]["message"]

    assert got["writer"]["status"] == "Failed" and got["writer"]["consistency"] == "crash"
    assert "writers: false" in got["writer"]["error"]["message"]
    assert got["thaw"]["status"] == "Failed" and got["thaw"]["consistency"] == "crash"
    for name in ("writer", "thaw"):  # the snapshots exist and say what they are
        tags = set_snapshots(fault_twins, got[name]["set_id"])[0]["Tags"]
        assert tags["appconsistent:consistency"] == "crash"
        assert tags.get("AppConsistent", "false").lower() != "true"

    assert got["snaperr"]["consistency"] == "none" and got["snaperr"]["error"]["code"] == "SnapshotError"
    # The task only ever sent the command to the five instances that passed the preflight.
    assert len(result["command_ids"]) == 1


def test_a_command_that_hangs_on_the_instance_times_out_with_advice(twin_factory, run_tasks):
    twins = twin_factory(fleet({"name": "ok"}, {"name": "hung", "faults": {"command_hang": True}}), alicloud=False)
    ok, hung = ids(twins, "ok", "hung")
    run = run_tasks([{VSS: {"instance_ids": [ok, hung], "execution_timeout": 2}, "register": "vss"}], twins.endpoints)
    result = run["vss"]
    got = by_instance(result)
    assert result["failed"] is True and [f["instance_id"] for f in result["failed_instances"]] == [hung]
    assert got[ok]["consistency"] == "application"
    assert got[hung]["status"] == "ExecutionTimedOut" and got[hung]["consistency"] == "none"
    assert not got[hung]["snapshots"] and not got[hung]["set_id"]
    message = got[hung]["error"]["message"]
    assert "2 s execution_timeout" in message and "vssadmin list writers" in message, message
    # The timeout was the instance's: the SendCommand carried it.
    assert got[hung]["command_id"] == got[ok]["command_id"]


def test_on_fallback_warn_keeps_a_crash_consistent_set_without_failing(twin_factory, run_tasks):
    twins = twin_factory(fleet({"name": "ok"}, {"name": "writer", "faults": {"vss_writer_failure": True}}), alicloud=False)
    ok, writer = ids(twins, "ok", "writer")
    run = run_tasks([{VSS: {"instance_ids": [ok, writer], "on_fallback": "warn"}, "register": "warn"},
                     {VSS: {"instance_ids": [writer], "on_fallback": "fail"}, "register": "fail"}], twins.endpoints)
    assert not run["warn"].get("failed")
    assert by_instance(run["warn"])[writer]["consistency"] == "crash"
    assert any("crash-consistent" in w and writer in w for w in run["warn"]["warnings"])
    assert run["fail"]["failed"] is True
    assert run["fail"]["failed_instances"][0]["consistency"] == "crash"


def test_a_late_appconsistent_tag_is_waited_for(twin_factory, run_tasks):
    twins = twin_factory(fleet({"name": "sql-1"}), alicloud=False,
                         latency={"profile": "zero", "transitions": {"appconsistent_tag_lag": 3.0}})
    (iid,) = ids(twins, "sql-1")
    run = run_tasks([{VSS: {"instance_ids": [iid]}, "register": "vss"}], twins.endpoints)
    assert run["vss"]["results"][0]["consistency"] == "application", run["vss"]


def test_a_throttling_storm_is_ridden_out(twin_factory, run_tasks):
    twins = twin_factory(fleet({"name": "sql-1"}, {"name": "sql-2"}), alicloud=False,
                         faults={"api_errors": [{"provider": "aws", "action": "*", "code": "RequestLimitExceeded", "count": 4},
                                                {"provider": "aws", "action": "SendCommand", "code": "ThrottlingException",
                                                 "count": 2}]})
    run = run_tasks([{VSS: {"instance_ids": ids(twins, "sql-1", "sql-2")}, "register": "vss"}], twins.endpoints)
    assert not run["vss"].get("failed"), run["vss"].get("msg")
    assert {r["consistency"] for r in run["vss"]["results"]} == {"application"}


@pytest.mark.parametrize("args, words", [
    ({"tags": {"AppConsistent": "yes"}}, "reserved"),
    ({"tags": {"Device": "x"}}, "reserved"),
    ({"tags": {"owner": "a;b"}}, "contains ';'"),
    ({"exclude_boot_volume": True, "create_ami": True, "ami_name": "x"}, "exclude_boot_volume cannot be used with create_ami"),
    ({"writers": False, "save_vss_metadata": True}, "save_vss_metadata needs the VSS writers"),
    ({"delete_after": "a week"}, "delete_after 'a week' is not a duration"),
    ({"run_id": "has space"}, "invalid run_id"),
])
def test_bad_input_is_refused_before_anything_is_sent(twin_factory, run_tasks, args, words):
    twins = twin_factory(fleet({"name": "sql-1"}), alicloud=False)
    twins.stats.reset()
    run = run_tasks([{VSS: dict(args, instance_ids=ids(twins, "sql-1")), "register": "vss"}], twins.endpoints)
    assert run["vss"]["failed"] is True and words in run["vss"]["msg"]
    assert twins.stats.counts("aws") == {}


def test_the_module_examples_run(twin_factory, run_tasks):
    twins = twin_factory(fleet({"name": "sql-a", "tags": {"backup": "daily"}}, {"name": "sql-b"}), alicloud=False)
    a, b = ids(twins, "sql-a", "sql-b")
    text = vss_snapshot.EXAMPLES.replace("i-0123456789abcdef0", a).replace("i-0fedcba9876543210", b)
    tasks = yaml.safe_load(text)
    for number, task in enumerate(tasks):
        task["register"] = f"example{number}"
    run = run_tasks(tasks, twins.endpoints)
    for number in range(len(tasks)):
        result = run[f"example{number}"]
        assert not result.get("failed"), (tasks[number]["name"], result.get("msg"))
        assert {r["consistency"] for r in result["results"]} == {"application"}


def readme_vss_example():
    """The README's vss_snapshot task ("every Windows instance tagged backup=daily")."""
    with open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8") as handle:
        text = handle.read()
    for block in re.findall(r"```yaml\n(.*?)```", text, re.S):
        for task in yaml.safe_load(block) or []:
            if isinstance(task, dict) and VSS in task and "targets" in task[VSS]:
                return task
    raise AssertionError("the README has no vss_snapshot example with targets")


def test_a_tag_that_also_matches_linux_instances_skips_them_and_snapshots_the_windows_ones(twin_factory, run_tasks):
    """Issue 19.4: the README example over a tag that spans Windows and Linux instances."""
    linux = {"platform": "linux", "volumes": [{"device": "/dev/xvda", "size": 8, "boot": True}]}
    twins = twin_factory(fleet({"name": "sql-a", "tags": {"backup": "daily"}},
                               dict(linux, name="web-a", tags={"backup": "daily"}),
                               dict(linux, name="web-b", tags={"backup": "weekly"})), alicloud=False)
    sql_a, web_a, web_b = ids(twins, "sql-a", "web-a", "web-b")
    task = dict(readme_vss_example(), register="readme")
    run = run_tasks([task,
                     {VSS: {"targets": [{"key": "tag:backup", "values": ["weekly"]}]}, "register": "only_linux"},
                     {VSS: {"instance_ids": [web_a]}, "register": "named"},
                     {VSS: {"targets": [{"key": "InstanceIds", "values": [web_b]}]}, "register": "named_in_targets"}],
                    twins.endpoints)
    readme = run["readme"]
    assert not readme.get("failed"), readme.get("msg")
    assert [(r["instance_id"], r["consistency"]) for r in readme["results"]] == [(sql_a, "application")]
    assert readme["failed_instances"] == []
    assert [(s["instance_id"], s["platform"]) for s in readme["skipped_instances"]] == [(web_a, "linux")]
    assert "use app_consistent_group" in readme["skipped_instances"][0]["reason"]
    # A tag of Linux instances only: nothing to do is a failure that says why.
    assert run["only_linux"]["failed"] and run["only_linux"]["msg"].startswith("no Windows instance matches targets")
    assert [s["instance_id"] for s in run["only_linux"]["skipped_instances"]] == [web_b]
    # Linux instances named by id are still refused, with the hint.
    for name, iid in (("named", web_a), ("named_in_targets", web_b)):
        result = run[name]
        assert result["failed"] and result["skipped_instances"] == [], (name, result)
        (failed,) = result["failed_instances"]
        assert failed["instance_id"] == iid and "use app_consistent_group for Linux instances" in failed["reason"]


def test_a_vss_command_given_up_on_before_delivery_is_cancelled_and_takes_no_snapshot(twin_factory, run_tasks):
    # The command reaches the instance 6 s after it was sent; the task gives up on it after 3 s. Left alone, SSM
    # would deliver it later and the instance would take a shadow copy and snapshots nobody waits for.
    twins = twin_factory(fleet({"name": "sql-1", "faults": {"hold_commands": {"appconsistent": 6}}}), alicloud=False)
    (iid,) = ids(twins, "sql-1")
    started = time.time()
    result = run_tasks([{VSS: {"instance_ids": [iid], "wait_timeout": 3}, "register": "vss"}], twins.endpoints)["vss"]
    (entry,) = result["results"]
    time.sleep(max(0.0, started + 18 - time.time()))
    assert twins.aws_client("ec2").describe_snapshots(OwnerIds=["self"])["Snapshots"] == []
    ssm = twins.aws_client("ssm")
    (invocation,) = ssm.list_command_invocations(CommandId=entry["command_id"])["CommandInvocations"]
    assert invocation["Status"] == "Cancelled"
    assert entry["error"]["code"] == "WaitTimeout" and "was cancelled" in entry["error"]["message"], entry["error"]
