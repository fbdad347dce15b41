"""vss_components against the AWS twin: the package installed through AWS-ConfigureAWSPackage, as an operator sees it."""

import pytest

COMPONENTS = "appconsistent.snapshots.vss_components"
VSS = "appconsistent.snapshots.vss_snapshot"
WINDOWS = {"provider": "aws", "platform": "windows", "state": "running",
           "volumes": [{"device": "/dev/sda1", "size": 30, "boot": True}, {"device": "xvdf", "size": 50}]}


def fleet(*instances):
    return {"instances": [dict(WINDOWS, **i) for i in instances]}


def ids(twins, *names):
    known = twins.endpoints["aws"]["instances"]
    return [known[n] for n in names]


def by_instance(result):
    return {r["instance_id"]: r for r in result["results"]}


def installed(twins, instance_id):
    """What the instance's inventory says now (read with boto3, as an operator would)."""
    ssm = twins.aws_client("ssm")
    answer = ssm.list_inventory_entries(InstanceId=instance_id, TypeName="AWS:Application",
                                        Filters=[{"Key": "AWS:Application.Name", "Values": ["AwsVssComponents"],
                                                  "Type": "Equal"}])
    return [e["Version"] for e in answer["Entries"]]


@pytest.fixture
def twins(twin_factory):
    return twin_factory(fleet(
        {"name": "has", "agent": {"vss_components": True, "vss_version": "2.5.1"}},
        {"name": "missing", "agent": {"vss_components": False}},
        {"name": "old", "agent": {"vss_components": True, "vss_version": "2.3.1"}},
        {"name": "noinv", "agent": {"vss_components": False, "inventory": False}},
        {"name": "offline", "agent": {"status": "connection_lost"}},
        {"name": "linux", "platform": "linux"},
    ), alicloud=False)


def test_check_mode_reads_inventory_and_sends_nothing(twins, run_tasks):
    has, missing, noinv = ids(twins, "has", "missing", "noinv")
    twins.stats.reset()
    run = run_tasks([{COMPONENTS: {"instance_ids": [has, missing, noinv]}, "register": "c"}], twins.endpoints, check=True)
    result = by_instance(run["c"])
    assert run["c"]["changed"] is True and not run["c"].get("failed"), run["c"]
    assert (result[has]["status"], result[has]["version_before"], result[has]["inventory"]) == ("Present", "2.5.1", True)
    assert (result[missing]["status"], result[missing]["version_before"]) == ("WouldInstall", None)
    assert (result[noinv]["status"], result[noinv]["inventory"]) == ("WouldInstall", False)
    assert twins.stats.counts("aws").get("SendCommand", 0) == 0
    assert installed(twins, missing) == []


def test_install_then_rerun_changes_nothing_and_vss_works(twins, run_tasks):
    has, missing, old = ids(twins, "has", "missing", "old")
    twins.stats.reset()
    task = {COMPONENTS: {"instance_ids": [has, missing, old], "version": "2.5.1"}}
    run = run_tasks([dict(task, register="first"), dict(task, register="second"),
                     {VSS: {"instance_ids": [missing]}, "register": "vss"}], twins.endpoints)
    first, second = by_instance(run["first"]), by_instance(run["second"])
    assert run["first"]["changed"] is True and not run["first"].get("failed"), run["first"]
    assert first[has]["status"] == "Present" and first[has]["changed"] is False
    assert (first[missing]["status"], first[missing]["version"]) == ("Installed", "2.5.1")
    assert (first[old]["status"], first[old]["version_before"], first[old]["action"]) == ("Installed", "2.3.1", "install")
    # One command covers both instances that needed the package.
    assert first[missing]["command_id"] == first[old]["command_id"]
    assert installed(twins, missing) == ["2.5.1"] and installed(twins, old) == ["2.5.1"]
    assert run["second"]["changed"] is False
    assert {r["status"] for r in second.values()} == {"Present"}
    assert twins.stats.counts("aws")["SendCommand"] == 2  # the install, then the VSS snapshot
    # The instance that had no VSS components now takes an application-consistent set without installing on the way.
    assert run["vss"]["results"][0]["consistency"] == "application", run["vss"]


def test_instances_that_cannot_be_configured_fail_with_their_reason(twins, run_tasks):
    missing, offline, linux = ids(twins, "missing", "offline", "linux")
    run = run_tasks([{COMPONENTS: {"instance_ids": [missing, offline, linux, "i-0000000000000dead"]}, "register": "c"}],
                    twins.endpoints)
    result = by_instance(run["c"])
    assert run["c"]["failed"] is True
    assert result[missing]["status"] == "Installed"
    assert (result[offline]["status"], result[offline]["error"]["code"]) == ("NotSent", "AgentNotOnline")
    assert (result[linux]["status"], result[linux]["error"]["code"]) == ("NotSent", "WrongPlatform")
    assert result["i-0000000000000dead"]["error"]["code"] == "InstanceNotFound"
    assert "3 of 4 instances" in run["c"]["msg"]
    assert sorted(f["instance_id"] for f in run["c"]["failed_instances"]) == sorted([offline, linux, "i-0000000000000dead"])


def test_a_failed_install_reports_the_instance_error(twin_factory, run_tasks):
    twins = twin_factory(fleet({"name": "broken", "agent": {"vss_components": False},
                                "faults": {"vss_install_failure": True}}), alicloud=False)
    (broken,) = ids(twins, "broken")
    run = run_tasks([{COMPONENTS: {"instance_ids": [broken]}, "register": "c"}], twins.endpoints)
    (entry,) = run["c"]["results"]
    assert run["c"]["failed"] is True
    assert entry["status"] == "Failed" and entry["error"]["code"] == "Failed"
    assert "could not be downloaded" in entry["error"]["message"]
    assert installed(twins, broken) == []


def test_absent_removes_the_package_and_then_is_a_no_op(twins, run_tasks):
    has, missing = ids(twins, "has", "missing")
    task = {COMPONENTS: {"instance_ids": [has, missing], "state": "absent"}}
    run = run_tasks([dict(task, register="first"), dict(task, register="second")], twins.endpoints)
    first = by_instance(run["first"])
    assert (first[has]["status"], first[has]["version_before"]) == ("Uninstalled", "2.5.1")
    assert first[missing]["status"] == "Absent"
    assert installed(twins, has) == []
    assert run["second"]["changed"] is False


def test_bad_input_is_refused_before_any_call(twins, run_tasks):
    (has,) = ids(twins, "has")
    twins.stats.reset()
    run = run_tasks([{COMPONENTS: {"instance_ids": [has], "version": "2.5.1; rm -rf"}, "register": "bad"},
                     {COMPONENTS: {"instance_ids": [has], "state": "absent", "version": "2.5.1"}, "register": "conflict"}],
                    twins.endpoints)
    assert run["bad"]["failed"] is True and "not a package version" in run["bad"]["msg"]
    assert run["conflict"]["failed"] is True and "only used with state: present" in run["conflict"]["msg"]
    assert sum(twins.stats.counts("aws").values()) == 0
