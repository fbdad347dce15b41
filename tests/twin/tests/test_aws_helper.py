"""The freeze helper and offline scripts answered on simulated Linux instances of the AWS twin.

Commands are built by the collection's own code, so the twin is tested against what it will really receive.
"""

import json
import os
import time
import types

import pytest

from ansible_collections.appconsistent.snapshots.plugins.module_utils.group_aws import AwsGroupRun, PYTHON_CREATE_SNAPSHOTS
from ansible_collections.appconsistent.snapshots.plugins.module_utils.group_aws import parse_helper_output
from ansible_collections.appconsistent.snapshots.plugins.module_utils.unmount import remount_command, unmount_command
from twin.aws.ssm import parse_create_snapshots
from twin.aws.testing import tags_of, wait_command
from twin.core.fleet import load_fleet
from twin.core.freeze_helper import parse
from twin.launcher import start_twins

HELPER = "/usr/local/lib/appconsistent/appconsistent-freeze"
VOLUMES = [{"device": "/dev/xvda", "size": 8, "boot": True}, {"device": "/dev/xvdf", "size": 10},
           {"device": "/dev/xvdg", "size": 10}]


def _builder(requested="application", mounts=("/data",), timeout=30, region="us-east-1", tags=None):
    params = {"freeze_helper_path": HELPER, "freeze_timeout": timeout, "script_timeout": 600,
              "pre_script_path": "/usr/local/lib/appconsistent/prescript.sh",
              "post_script_path": "/usr/local/lib/appconsistent/postscript.sh", "freeze": True,
              "mounts": list(mounts), "tags": tags or {}, "run_id": None, "delete_after": None, "description": None}
    fake = types.SimpleNamespace(params=params, requested=requested, module=types.SimpleNamespace(region=region),
                                 _set_stamp="20260101t000000", _set_nonce="00112233aabbccdd")
    fake._helper_command = lambda action, run_id: AwsGroupRun._helper_command(fake, action, run_id)
    fake._set_tags = lambda set_id, iid, level, members=None: AwsGroupRun._set_tags(fake, set_id, iid, level, members)
    return fake


def freeze_cmd(run_id, **kw):
    fake = _builder(**kw)
    return fake._helper_command("freeze", run_id)


def thaw_cmd(run_id):
    return _builder()._helper_command("thaw", run_id)


def initiator_cmd(run_id, exclude_boot=True, **kw):
    fake = _builder(**kw)
    # the volumes of VOLUMES that CreateSnapshots takes
    volumes = [dict(device=v["device"], boot=v.get("boot", False)) for v in VOLUMES if not (exclude_boot and v.get("boot"))]
    outcome = types.SimpleNamespace(exclude_boot=exclude_boot, exclude_data=[], volumes=volumes)
    return AwsGroupRun._initiator_command(fake, outcome, run_id)


@pytest.fixture
def sim(twin_factory):
    twins = twin_factory({"instances": [
        {"provider": "aws", "name": "lin-1", "platform": "linux", "volumes": VOLUMES},
        {"provider": "aws", "name": "lin-2", "platform": "linux",
         "volumes": [VOLUMES[0], dict(VOLUMES[1], mount="/srv/db"), dict(VOLUMES[2], mount="/srv/db/wal")]},
    ]}, alicloud=False)
    return twins, twins.aws_client("ssm"), twins.aws.instances


def send(ssm, iid, command, timeout=30):
    cmd = ssm.send_command(InstanceIds=[iid], DocumentName="AWS-RunShellScript", Parameters={"commands": [command]})
    inv = wait_command(ssm, cmd["Command"]["CommandId"], timeout=timeout)[iid]
    got = ssm.get_command_invocation(CommandId=cmd["Command"]["CommandId"], InstanceId=iid)
    report = parse_helper_output(got["StandardOutputContent"])
    return inv, got, report


def test_freeze_then_thaw_reports_like_the_helper(sim):
    twins, ssm, ids = sim
    iid = ids["lin-1"]
    inv, got, report = send(ssm, iid, freeze_cmd("chg-1", mounts=("/data", "/data/logs"), timeout=20))
    assert (inv["Status"], got["ResponseCode"]) == ("Success", 0)
    assert got["StandardOutputContent"].count("\n") == 1  # exactly one JSON line
    assert (report["action"], report["exit_code"], report["status"], report["state"]) == ("freeze", 0, "frozen", "frozen")
    assert report["run_id"] == "chg-1" and report["timeout"] == 20
    assert [m["canonical"] for m in report["mounts"]] == ["/data/logs", "/data"]  # deepest first
    assert {m["status"] for m in report["mounts"]} == {"frozen"}
    assert report["scripts"]["status"] == "valid" and report["scripts"]["prescript"]["ran"] is True
    assert report["t_start"] <= report["t_prescript_done"] <= report["t_frozen"]
    assert report["watchdog_deadline"] == pytest.approx(report["t_prescript_done"] + 20, abs=0.002)
    assert report["t_thawed"] is None and report["auto_thawed"] is False
    assert twins.aws.ssm.helper.frozen(iid) == {"chg-1": ["/data/logs", "/data"]}

    inv, got, thaw = send(ssm, iid, thaw_cmd("chg-1"))
    assert (inv["Status"], thaw["exit_code"], thaw["status"], thaw["state"]) == ("Success", 0, "thawed", "thawed")
    assert thaw["t_frozen"] == report["t_frozen"]  # thaw reports the freeze's times
    assert thaw["t_frozen"] < thaw["t_thaw_start"] < thaw["t_thawed"] <= thaw["t_postscript_done"]
    assert thaw["scripts"]["postscript"]["ran"] is True and thaw["scripts"]["postscript"]["exit_code"] == 0
    assert twins.aws.ssm.helper.frozen(iid) == {}
    # a second thaw finds nothing frozen
    inv, got, again = send(ssm, iid, thaw_cmd("chg-1"))
    assert (inv["Status"], got["ResponseCode"], again["status"]) == ("Failed", 205, "not_frozen")


def test_auto_mounts_are_the_fleets_data_mounts_and_others_are_refused(sim):
    _twins, ssm, ids = sim
    _inv, _got, report = send(ssm, ids["lin-2"], freeze_cmd("r-auto", mounts=("auto",)))
    assert report["exit_code"] == 0
    assert [m["canonical"] for m in report["mounts"]] == ["/srv/db/wal", "/srv/db"]
    inv, got, refused = send(ssm, ids["lin-2"], freeze_cmd("r-x", mounts=("/elsewhere",)))
    assert (inv["Status"], got["ResponseCode"], refused["status"]) == ("Failed", 207, "refused")
    _inv, got, root = send(ssm, ids["lin-1"], freeze_cmd("r-root", mounts=("/",)))
    assert got["ResponseCode"] == 207 and "never frozen" in root["message"]
    # the filesystem frozen by r-auto cannot be frozen again
    _inv, got, busy = send(ssm, ids["lin-2"], freeze_cmd("r-2", mounts=("/srv/db",)))
    assert got["ResponseCode"] == 204 and busy["mounts"][0]["status"] == "already_frozen"


def test_watchdog_thaws_at_the_deadline_and_the_late_thaw_answers_203(sim):
    _twins, ssm, ids = sim
    iid = ids["lin-1"]
    _inv, _got, report = send(ssm, iid, freeze_cmd("late", timeout=0.2))
    assert report["exit_code"] == 0
    time.sleep(0.3)
    inv, got, thaw = send(ssm, iid, thaw_cmd("late"))
    assert (inv["Status"], got["ResponseCode"]) == ("Failed", 203)
    assert (thaw["status"], thaw["state"], thaw["auto_thawed"], thaw["auto_thaw_reason"]) == \
        ("auto_thawed", "auto_thawed", True, "deadline")
    assert thaw["t_thawed"] == pytest.approx(report["watchdog_deadline"], abs=0.01)


@pytest.mark.parametrize("fault, phase, code, check", [
    ({"scripts_invalid": True}, "freeze", 0, lambda r: r["scripts"]["status"] == "invalid" and r["scripts"]["reason"]),
    ({"scripts_absent": True}, "freeze", 0, lambda r: r["scripts"]["status"] == "absent"
     and not r["scripts"]["prescript"]["ran"]),
    ({"prescript_fail": True}, "freeze", 201, lambda r: r["status"] == "prescript_failed" and r["mounts"][0]["t_frozen"] is None),
    ({"app_not_ready": True}, "freeze", 206, lambda r: r["scripts"]["prescript"]["exit_code"] == 206),
    ({"freeze_fail": True}, "freeze", 209, lambda r: r["mounts"][0]["status"] == "freeze_failed"),
    ({"postscript_fail": True}, "thaw", 202, lambda r: r["scripts"]["postscript"]["exit_code"] != 0
     and r["mounts"][0]["status"] == "thawed"),
    ({"thaw_fail": True}, "thaw", 211, lambda r: r["mounts"][0]["status"] == "thaw_failed"),
])
def test_instance_faults_drive_the_helpers_outcome(sim, fault, phase, code, check):
    twins, ssm, ids = sim
    iid = ids["lin-1"]
    twins.faults.update({"instances": {"lin-1": fault}})
    _inv, got, report = send(ssm, iid, freeze_cmd("f-1"))
    if phase == "thaw":
        assert report["exit_code"] == 0
        _inv, got, report = send(ssm, iid, thaw_cmd("f-1"))
    assert got["ResponseCode"] == code and report["exit_code"] == code
    assert check(report), report


def test_filesystem_consistency_runs_no_scripts(sim):
    _twins, ssm, ids = sim
    _inv, _got, report = send(ssm, ids["lin-1"], freeze_cmd("fs-1", requested="filesystem"))
    assert report["exit_code"] == 0 and report["scripts"]["status"] == "absent"
    assert report["scripts"]["reason"] == "no script configured"


def test_helper_missing_is_exit_127(sim):
    twins, ssm, ids = sim
    twins.faults.update({"instances": {"lin-1": {"helper_missing": True}}})
    inv, got, report = send(ssm, ids["lin-1"], freeze_cmd("m-1"))
    assert (inv["Status"], got["ResponseCode"], report) == ("Failed", 127, None)
    assert "No such file or directory" in got["StandardErrorContent"]


def test_the_initiator_script_is_read_as_bash_would_expand_it():
    call = parse(initiator_cmd("init-0", mounts=("/srv/db",), tags={"team": "db"}), "i-0abc", "acs-x")
    assert (call.action, call.run_id, call.mounts, call.timeout) == ("run", "init-0", ["/srv/db"], 30)
    params = parse_create_snapshots(call.argv)
    assert params["InstanceSpecification"] == {"InstanceId": "i-0abc", "ExcludeBootVolume": True}
    tags = {t["Key"]: t["Value"] for t in params["TagSpecifications"][0]["Tags"]}
    assert tags["appconsistent:set-id"] == "acs-x" and tags["appconsistent:instance-id"] == "i-0abc"
    assert params["region"] == "us-east-1" and params["CopyTagsFromSource"] == "volume"
    # the boto3 snippet instances without the AWS CLI run, and the CLI's shorthand syntax
    python = parse_create_snapshots(["/usr/bin/python3", "-c", PYTHON_CREATE_SNAPSHOTS, "eu-west-1",
                                     json.dumps({"InstanceId": "i-1"}), "[]", "nightly"])
    assert python["region"] == "eu-west-1" and python["Description"] == "nightly"
    shorthand = parse_create_snapshots(["aws", "ec2", "create-snapshots", "--instance-specification",
                                        "InstanceId=i-2,ExcludeBootVolume=true"])
    assert shorthand["InstanceSpecification"] == {"InstanceId": "i-2", "ExcludeBootVolume": True}
    assert parse_create_snapshots(["pg_dump", "db"]) is None


def test_run_snapshots_the_instance_while_frozen(sim):
    twins, ssm, ids = sim
    iid = ids["lin-2"]
    command = initiator_cmd("init-1", mounts=("/srv/db",), tags={"team": "db"})
    twins.stats.reset()
    inv, got, report = send(ssm, iid, command)
    assert (inv["Status"], report["action"], report["exit_code"], report["status"]) == ("Success", "run", 0, "ok")
    assert report["state"] == "thawed" and report["command"]["ran"] is True and report["command"]["exit_code"] == 0
    assert report["t_frozen"] <= report["command"]["t_start"] <= report["command"]["t_end"] <= report["t_thaw_start"]
    created = json.loads(report["command"]["stdout"])["Snapshots"]
    vol_ids = {v["VolumeId"] for v in created}
    assert len(created) == 2  # the boot volume is excluded
    assert twins.stats.counts("aws").get("CreateSnapshots") == 1
    ec2 = twins.aws_client("ec2")
    snaps = ec2.describe_snapshots(SnapshotIds=[s["SnapshotId"] for s in created])["Snapshots"]
    assert {s["VolumeId"] for s in snaps} == vol_ids
    for snap in snaps:
        tags = tags_of(snap)
        assert tags["team"] == "db" and tags["appconsistent:instance-id"] == iid
        assert tags["appconsistent:set-id"].startswith("acs-") and "@@" not in tags["appconsistent:set-id"]
        assert tags["appconsistent:consistency"] == "crash" and tags["appconsistent:members"] == "2"
    assert len({tags_of(s)["appconsistent:set-id"] for s in snaps}) == 1


def test_run_reports_a_failed_snapshot_call_as_210(sim):
    twins, ssm, ids = sim
    twins.faults.update({"api_errors": [{"action": "CreateSnapshots", "code": "SnapshotLimitExceeded", "count": 1}]})
    inv, got, report = send(ssm, ids["lin-2"], initiator_cmd("init-2", mounts=("/srv/db",)))
    assert (inv["Status"], got["ResponseCode"], report["status"]) == ("Failed", 210, "command_failed")
    assert "SnapshotLimitExceeded" in report["command"]["stderr"] and report["state"] == "thawed"


def test_freeze_duration_governs_the_command_and_its_timestamps(twin_factory):
    twins = twin_factory({"instances": [{"provider": "aws", "name": "lin-1", "platform": "linux", "volumes": VOLUMES}]},
                         latency={"profile": "zero", "transitions": {"freeze_duration": 0.4, "thaw_duration": 0.2}},
                         alicloud=False)
    ssm = twins.aws_client("ssm")
    iid = twins.aws.instances["lin-1"]
    cmd = ssm.send_command(InstanceIds=[iid], DocumentName="AWS-RunShellScript",
                           Parameters={"commands": [freeze_cmd("slow")]})["Command"]
    first = ssm.list_command_invocations(CommandId=cmd["CommandId"], Details=True)["CommandInvocations"][0]
    assert first["Status"] in ("Pending", "InProgress")  # still freezing
    wait_command(ssm, cmd["CommandId"])
    report = parse_helper_output(ssm.get_command_invocation(CommandId=cmd["CommandId"], InstanceId=iid)["StandardOutputContent"])
    assert report["t_frozen"] - report["t_start"] == pytest.approx(0.4, abs=0.002)
    _inv, _got, thaw = send(ssm, iid, thaw_cmd("slow"))
    assert thaw["t_postscript_done"] - thaw["t_thaw_start"] == pytest.approx(0.2, abs=0.002)


def test_offline_unmount_and_remount(sim):
    twins, ssm, ids = sim
    iid = ids["lin-2"]
    inv, got, report = send(ssm, iid, unmount_command("off-1", ["/srv/db"], 60))
    assert (inv["Status"], report["action"], report["exit_code"]) == ("Success", "unmount", 0)
    assert twins.aws.ssm.helper.unmounted(iid) == {"off-1": ["/srv/db"]}
    _inv, got, _report = send(ssm, iid, unmount_command("off-1", ["/srv/db"], 60))
    assert got["ResponseCode"] == 204
    _inv, got, report = send(ssm, iid, remount_command("off-1"))
    assert (report["action"], report["exit_code"]) == ("remount", 0)
    assert twins.aws.ssm.helper.unmounted(iid) == {}
    _inv, got, report = send(ssm, iid, remount_command("off-1"))
    assert report["exit_code"] == 205
    _inv, got, report = send(ssm, iid, unmount_command("off-2", ["/not-mounted"], 60))
    assert report["exit_code"] == 207
    twins.faults.update({"instances": {"lin-2": {"unmount_busy": "postgres"}}})
    _inv, got, report = send(ssm, iid, unmount_command("off-3", ["/srv/db"], 60))
    assert report["exit_code"] == 3 and "postgres" in report["message"]


def test_other_commands_keep_the_plain_simulation(sim):
    twins, ssm, ids = sim
    twins.faults.update({"instances": {"lin-1": {"command_stdout": "hello", "command_exit_code": 3}}})
    inv, got, _report = send(ssm, ids["lin-1"], "echo appconsistent")
    assert (inv["Status"], got["ResponseCode"], got["StandardOutputContent"]) == ("Failed", 3, "hello")


@pytest.mark.parametrize("initiator", ["controller", "instance"])
def test_app_consistent_group_completes_on_simulated_linux_instances(twin_factory, run_tasks, initiator):
    twins = twin_factory({"instances": [
        {"provider": "aws", "name": f"lin-{n}", "platform": "linux",
         "volumes": [VOLUMES[0], dict(VOLUMES[1], mount="/data")]} for n in range(3)]}, alicloud=False)
    twins.faults.update({"instances": {"lin-2": {"prescript_fail": True}}})
    ids = [twins.aws.instances[f"lin-{n}"] for n in range(3)]
    run = run_tasks([{"appconsistent.snapshots.app_consistent_group": {
        "provider": "aws", "consistency": "application", "instance_ids": ids, "mounts": ["/data"],
        "initiator": initiator}, "register": "group", "ignore_errors": True}], twins.endpoints)
    results = {r["instance_id"]: r for r in run["group"]["results"]}
    for iid in ids[:2]:
        assert results[iid]["consistency"] == "application", results[iid]
        assert len(results[iid]["snapshots"]) == 2  # boot and data volume
    assert results[ids[2]]["consistency"] == "none" and not results[ids[2]]["snapshots"]


def test_the_make_twin_fleet_refuses_a_path_that_is_not_mounted_as_the_tests_do():
    """Issue 19.6: the demo fleet (what `make twin` starts) records its mounts, so the helper knows them."""
    demo = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fleets", "demo.yml")
    fleet = load_fleet(demo)
    unrecorded = [(i.name, v.device) for i in fleet.instances if i.platform == "linux"
                  for v in i.volumes if not v.boot and not v.mount]
    assert unrecorded == [], "Linux data volumes of the demo fleet without mount"
    twins = start_twins(demo, alicloud=False)
    try:
        ssm, web = twins.aws_client("ssm"), twins.aws.instances["web-1"]
        inv, got, refused = send(ssm, web, freeze_cmd("r-unmounted", mounts=("/srv/not-mounted",)))
        assert (inv["Status"], got["ResponseCode"], refused["status"]) == ("Failed", 207, "refused")
        _inv, got, frozen = send(ssm, web, freeze_cmd("r-data", mounts=("auto",)))
        assert got["ResponseCode"] == 0 and [m["canonical"] for m in frozen["mounts"]] == ["/data"]
        assert send(ssm, web, thaw_cmd("r-data"))[1]["ResponseCode"] == 0
    finally:
        twins.stop()


@pytest.mark.parametrize("hypervisor", ["nitro", "xen"])
def test_the_disks_beneath_each_mount_are_named_as_ec2_documents_them(twin_factory, hypervisor):
    """Nitro: an NVMe namespace whose controller serial is the volume id without its dash; Xen: the mapping's name
    with xvd for sd. Volumes given one mount are one filesystem over both (LVM)."""
    twins = twin_factory({"instances": [{"provider": "aws", "name": "lvm", "platform": "linux", "hypervisor": hypervisor,
                                         "volumes": [VOLUMES[0], dict(VOLUMES[1], device="/dev/sdf", mount="/data"),
                                                     dict(VOLUMES[2], mount="/data")]}]}, alicloud=False)
    ssm, iid = twins.aws_client("ssm"), twins.aws.instances["lvm"]
    mapping = twins.aws_client("ec2").describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    volumes = {m["DeviceName"]: m["Ebs"]["VolumeId"] for m in mapping["BlockDeviceMappings"]}
    _inv, _got, report = send(ssm, iid, freeze_cmd("disks-1"))
    send(ssm, iid, thaw_cmd("disks-1"))
    (mount,) = report["mounts"]
    if hypervisor == "nitro":
        assert sorted(d["serial"] for d in mount["disks"]) == sorted(volumes[d].replace("-", "")
                                                                     for d in ("/dev/sdf", "/dev/xvdg"))
        assert all(d["name"].startswith("nvme") for d in mount["disks"])
    else:
        assert mount["disks"] == [{"name": "xvdf", "serial": None}, {"name": "xvdg", "serial": None}]
