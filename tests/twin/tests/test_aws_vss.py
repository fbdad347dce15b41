"""AWSEC2-CreateVssSnapshot / AWSEC2-VssInstallAndSnapshot as documented: parameters, tags, failures, the tag lag."""

import re
import sys
import time

import pytest
from botocore.exceptions import ClientError

from twin.aws.testing import tags_of, wait_command, wait_for

WIN_VOLUMES = [{"device": "/dev/sda1", "size": 30, "boot": True}, {"device": "xvdf", "size": 100}, {"device": "xvdg", "size": 50}]


@pytest.fixture
def win(twin_factory):
    twins = twin_factory({"instances": [
        {"provider": "aws", "name": "sql-1", "platform": "windows", "volumes": WIN_VOLUMES},
        {"provider": "aws", "name": "sql-old", "platform": "windows", "volumes": WIN_VOLUMES,
         "agent": {"vss_components": True, "vss_version": "2.3.1"}},
        {"provider": "aws", "name": "sql-bare", "platform": "windows", "volumes": WIN_VOLUMES, "agent": {"vss_components": False}},
        {"provider": "aws", "name": "sql-writer", "platform": "windows", "volumes": WIN_VOLUMES, "faults": {"vss_writer_failure": True}},
        {"provider": "aws", "name": "sql-thaw", "platform": "windows", "volumes": WIN_VOLUMES, "faults": {"vss_thaw_timeout": True}},
        {"provider": "aws", "name": "lin-1", "platform": "linux", "volumes": WIN_VOLUMES[:2]},
    ]}, alicloud=False)
    return twins, twins.aws_client("ssm"), twins.aws_client("ec2"), twins.aws.instances


def _vss(ssm, iid, document="AWSEC2-CreateVssSnapshot", **params):
    return ssm.send_command(InstanceIds=[iid], DocumentName=document,
                            Parameters={k: [v] for k, v in params.items()})["Command"]["CommandId"]


def _run(ssm, iid, document="AWSEC2-CreateVssSnapshot", **params):
    command_id = _vss(ssm, iid, document, **params)
    inv = wait_command(ssm, command_id)[iid]
    got = ssm.get_command_invocation(CommandId=command_id, InstanceId=iid, PluginName="CreateVssSnapshot")
    return inv, got


def _snapshots(ec2, iid):
    volumes = {v["VolumeId"] for v in ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [iid]}])["Volumes"]}
    snaps = [s for p in ec2.get_paginator("describe_snapshots").paginate(OwnerIds=["self"]) for s in p["Snapshots"]]
    return [s for s in snaps if s["VolumeId"] in volumes]


def _devices(ec2, iid):
    inst = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    return {b["Ebs"]["VolumeId"]: b["DeviceName"] for b in inst["BlockDeviceMappings"]}, inst["RootDeviceName"]


# --- parameter validation at SendCommand, one case per documented rule -------------------------------------
@pytest.mark.parametrize("params", [
    {"ExcludeBootVolume": "true"},          # the strings True/False only
    {"NoWriters": "1"},
    {"CopyOnly": "Yes"},
    {"CreateAmi": "TRUE"},
    {"SaveVssMetadata": "false"},
    {"CollectDiagnosticLogs": "no"},
    {"tags": "Name=backup"},                # not the Key=k,Value=v;... format
    {"tags": "Key=a,Value=b,Key=c"},
    {"tags": "Key=team,Value=db#1"},        # '#' is not an allowed character
    {"tags": "Key=a;b,Value=c"},
    {"description": "x" * 256},             # at most 255 characters
    {"Bogus": "True"},                      # not a parameter of the document
])
def test_invalid_parameters_are_rejected_at_send(win, params):
    _twins, ssm, _ec2, ids = win
    with pytest.raises(ClientError) as err:
        _vss(ssm, ids["sql-1"], **params)
    assert err.value.response["Error"]["Code"] == "InvalidParameters"


def test_allowed_tag_characters_are_accepted(win):
    _twins, ssm, ec2, ids = win
    value = "a-b_c.d/e\\f(g) h@i+j:k=l{m}'n\"o"
    inv = _run(ssm, ids["sql-1"], tags=f"Key=odd,Value={value};key=team,value=db")[0]
    assert inv["Status"] == "Success"
    assert all(tags_of(s)["odd"] == value and tags_of(s)["team"] == "db" for s in _snapshots(ec2, ids["sql-1"]))


@pytest.mark.parametrize("reserved", ["AppConsistent", "Device", "AwsVssConfig"])
def test_reserved_tags_are_an_error(win, reserved):
    _twins, ssm, ec2, ids = win
    inv, got = _run(ssm, ids["sql-1"], tags=f"Key=team,Value=db;Key={reserved},Value=x")
    assert inv["Status"] == "Failed" and got["ResponseCode"] == 1
    assert reserved in got["StandardErrorContent"]
    assert _snapshots(ec2, ids["sql-1"]) == []


def test_no_writers_with_save_vss_metadata_fails(win):
    _twins, ssm, ec2, ids = win
    inv, got = _run(ssm, ids["sql-1"], NoWriters="True", SaveVssMetadata="True")
    assert inv["Status"] == "Failed" and "NoWriters" in got["StandardErrorContent"]
    assert _snapshots(ec2, ids["sql-1"]) == []
    inv = _run(ssm, ids["sql-1"], NoWriters="True")[0]
    assert inv["Status"] == "Success"


def test_exclude_boot_volume_only_without_create_ami(win):
    _twins, ssm, ec2, ids = win
    inv, got = _run(ssm, ids["sql-1"], ExcludeBootVolume="True", CreateAmi="True")
    assert inv["Status"] == "Failed" and "CreateAmi" in got["StandardErrorContent"]
    assert _snapshots(ec2, ids["sql-1"]) == []


def test_save_vss_metadata_needs_components_2_4(win):
    _twins, ssm, _ec2, ids = win
    inv, got = _run(ssm, ids["sql-old"], SaveVssMetadata="True")
    assert inv["Status"] == "Failed" and "2.4.0" in got["StandardErrorContent"]
    inv = _run(ssm, ids["sql-1"], SaveVssMetadata="True")[0]
    assert inv["Status"] == "Success"


def test_windows_only(win):
    _twins, ssm, ec2, ids = win
    command_id = _vss(ssm, ids["lin-1"])
    inv = wait_command(ssm, command_id)[ids["lin-1"]]
    assert (inv["Status"], inv["StatusDetails"]) == ("Failed", "InvalidPlatform")
    assert _snapshots(ec2, ids["lin-1"]) == []


# --- what a successful run leaves behind ------------------------------------------------------------------
def test_snapshots_of_all_volumes_tagged_exactly_as_documented(win):
    _twins, ssm, ec2, ids = win
    iid = ids["sql-1"]
    inv, got = _run(ssm, iid, tags="Key=team,Value=db;Key=ticket,Value=CHG-1", description="nightly")
    assert (inv["Status"], got["ResponseCode"]) == ("Success", 0)
    devices = _devices(ec2, iid)[0]
    snaps = _snapshots(ec2, iid)
    assert sorted(s["VolumeId"] for s in snaps) == sorted(devices)
    configs = set()
    for snap in snaps:
        tags = tags_of(snap)
        configs.add(tags["AwsVssConfig"])
        assert tags == {"team": "db", "ticket": "CHG-1", "Name": "", "AwsVssConfig": tags["AwsVssConfig"],
                        "AppConsistent": "true", "Device": devices[snap["VolumeId"]]}
        assert snap["Description"] == "nightly"
        assert f"Created {snap['SnapshotId']} from {snap['VolumeId']}" in got["StandardOutputContent"]
    assert len(configs) == 1  # one snapshot set
    assert re.fullmatch(r"AwsVssComponentsVersion=2\.5\.1:SnapshotSetId=\{[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}\}", configs.pop())


def test_user_name_tag_is_kept(win):
    _twins, ssm, ec2, ids = win
    inv = _run(ssm, ids["sql-1"], tags="Key=Name,Value=sql-nightly")[0]
    assert inv["Status"] == "Success"
    assert {tags_of(s)["Name"] for s in _snapshots(ec2, ids["sql-1"])} == {"sql-nightly"}


def test_exclude_boot_volume(win):
    _twins, ssm, ec2, ids = win
    iid = ids["sql-1"]
    inv = _run(ssm, iid, ExcludeBootVolume="True")[0]
    assert inv["Status"] == "Success"
    devices, root = _devices(ec2, iid)
    got = {tags_of(s)["Device"] for s in _snapshots(ec2, iid)}
    assert got == set(devices.values()) - {root}


def test_create_ami_makes_an_image_instead_of_snapshots(win):
    _twins, ssm, ec2, ids = win
    iid = ids["sql-1"]
    inv = _run(ssm, iid, CreateAmi="True", AmiName="sql-1-vss", tags="Key=team,Value=db")[0]
    assert inv["Status"] == "Success"
    images = ec2.describe_images(Filters=[{"Name": "name", "Values": ["sql-1-vss"]}])["Images"]
    assert len(images) == 1
    tags = tags_of(images[0])
    assert tags["team"] == "db" and tags["AppConsistent"] == "true" and "AwsVssConfig" in tags
    assert _snapshots(ec2, iid) == [] or all("AwsVssConfig" not in tags_of(s) for s in _snapshots(ec2, iid))


# --- failures ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, words", [("sql-writer", "writer"), ("sql-thaw", "Thaw")])
def test_writer_failure_and_thaw_timeout_leave_snapshots_not_app_consistent(win, name, words):
    _twins, ssm, ec2, ids = win
    iid = ids[name]
    inv, got = _run(ssm, iid, tags="Key=team,Value=db")
    assert inv["Status"] == "Failed" and got["ResponseCode"] == 1
    assert words in got["StandardErrorContent"]
    snaps = _snapshots(ec2, iid)
    assert len(snaps) == 3
    assert all(tags_of(s)["AppConsistent"].lower() == "false" for s in snaps)
    assert all(tags_of(s)["team"] == "db" and "Device" in tags_of(s) for s in snaps)


def test_runtime_fault_can_be_injected_through_the_control_api(win):
    twins, ssm, ec2, ids = win
    twins.faults.update({"instances": {"sql-1": {"vss_writer_failure": "SqlServerWriter"}}})
    inv, got = _run(ssm, ids["sql-1"])
    assert inv["Status"] == "Failed" and "SqlServerWriter" in got["StandardErrorContent"]
    assert {tags_of(s)["AppConsistent"] for s in _snapshots(ec2, ids["sql-1"])} == {"false"}


def test_missing_components_fail_unless_installed_by_vss_install_and_snapshot(win):
    _twins, ssm, ec2, ids = win
    iid = ids["sql-bare"]
    inv, got = _run(ssm, iid)
    assert inv["Status"] == "Failed" and "ec2-vss-agent.exe" in got["StandardErrorContent"]
    assert _snapshots(ec2, iid) == []
    inv, got = _run(ssm, iid, document="AWSEC2-VssInstallAndSnapshot", VssVersion="2.5.1")
    assert inv["Status"] == "Success" and "installed AwsVssComponents 2.5.1" in got["StandardOutputContent"]
    assert {tags_of(s)["AppConsistent"] for s in _snapshots(ec2, iid)} == {"true"}
    inv = _run(ssm, iid)[0]  # installed now
    assert inv["Status"] == "Success"


def test_configure_aws_package_installs_the_components(win):
    _twins, ssm, _ec2, ids = win
    iid = ids["sql-bare"]
    command_id = ssm.send_command(InstanceIds=[iid], DocumentName="AWS-ConfigureAWSPackage",
                                  Parameters={"action": ["Install"], "name": ["AwsVssComponents"]})["Command"]["CommandId"]
    assert wait_command(ssm, command_id)[iid]["Status"] == "Success"
    inv = _run(ssm, iid)[0]
    assert inv["Status"] == "Success"


def test_snapshot_quota_fails_the_command(win):
    twins, ssm, ec2, ids = win
    twins.faults.update({"snapshot_quota": 1})
    inv, got = _run(ssm, ids["sql-1"])
    assert inv["Status"] == "Failed" and "SnapshotLimitExceeded" in got["StandardErrorContent"]
    assert _snapshots(ec2, ids["sql-1"]) == []


# --- timing contract, without measuring time ---------------------------------------------------------------
def test_app_consistent_tag_appears_after_a_lag(twin_factory):
    twins = twin_factory({"instances": [{"provider": "aws", "name": "sql-1", "platform": "windows", "volumes": WIN_VOLUMES}]},
                         latency={"profile": "zero", "transitions": {"appconsistent_tag_lag": 3}}, alicloud=False)
    ssm, ec2, iid = twins.aws_client("ssm"), twins.aws_client("ec2"), twins.aws.instances["sql-1"]
    inv = wait_command(ssm, _vss(ssm, iid, tags="Key=team,Value=db"))[iid]
    assert inv["Status"] == "Success"
    first = _snapshots(ec2, iid)
    # the evidence is not there yet: user tags and AwsVssConfig only
    assert len(first) == 3 and all("AppConsistent" not in tags_of(s) and "Device" not in tags_of(s) for s in first)
    assert all("AwsVssConfig" in tags_of(s) and tags_of(s)["team"] == "db" for s in first)
    wait_for(lambda: all(tags_of(s).get("AppConsistent") == "true" and "Device" in tags_of(s) for s in _snapshots(ec2, iid)),
             timeout=20, what="AppConsistent")


def test_pause_is_at_most_ten_seconds(twin_factory, monkeypatch):
    slept = []
    real_sleep = time.sleep

    def sleep(seconds):
        # time.sleep is the process's: only the VSS agent's own pauses are counted, not the test's polling of the
        # command (wait_command), which sleeps whenever the command has not ended at its first look.
        if sys._getframe(1).f_globals.get("__name__") == "twin.aws.vss":  # pylint: disable=protected-access
            slept.append(seconds)
        else:
            real_sleep(seconds)

    monkeypatch.setattr("twin.aws.vss.time.sleep", sleep)
    twins = twin_factory({"instances": [{"provider": "aws", "name": "sql-1", "platform": "windows", "volumes": WIN_VOLUMES}]},
                         latency={"profile": "zero", "transitions": {"vss_freeze": 45}}, alicloud=False)
    ssm, iid = twins.aws_client("ssm"), twins.aws.instances["sql-1"]
    assert wait_command(ssm, _vss(ssm, iid))[iid]["Status"] == "Success"
    assert slept == [10.0]
    twins.latency.update({"profile": "zero", "transitions": {"vss_freeze": 2.5}})
    assert wait_command(ssm, _vss(ssm, iid))[iid]["Status"] == "Success"
    assert slept == [10.0, 2.5]


def test_many_windows_agents_in_their_vss_freeze_do_not_hold_up_other_instances(twin_factory):
    # More Windows instances in their VSS freeze than the agent threads the twin starts with: each agent waits on
    # its own, as on a real cloud, so a Linux command sent meanwhile finishes while they are all still frozen.
    windows = [{"provider": "aws", "name": f"sql-{n:02d}", "platform": "windows", "volumes": WIN_VOLUMES[:2]}
               for n in range(80)]
    twins = twin_factory({"instances": windows + [
        {"provider": "aws", "name": "lin-1", "platform": "linux", "volumes": WIN_VOLUMES[:2]}]},
        latency={"profile": "zero", "transitions": {"vss_freeze": 4.0}}, alicloud=False)
    ssm, ids = twins.aws_client("ssm"), twins.aws.instances
    sql = [ids[f"sql-{n:02d}"] for n in range(80)]
    vss = [ssm.send_command(InstanceIds=chunk, DocumentName="AWSEC2-CreateVssSnapshot")["Command"]["CommandId"]
           for chunk in (sql[:40], sql[40:])]
    shell = ssm.send_command(InstanceIds=[ids["lin-1"]], DocumentName="AWS-RunShellScript",
                             Parameters={"commands": ["echo ok"]})["Command"]["CommandId"]
    (linux,) = wait_command(ssm, shell).values()
    assert linux["Status"] == "Success"
    # every VSS command is still in its freeze when the Linux one has finished
    still_running = [i for command_id in vss for i in ssm.list_command_invocations(CommandId=command_id)["CommandInvocations"]
                     if i["Status"] in ("Pending", "InProgress")]
    assert len(still_running) == 80
    finished = wait_command(ssm, vss[0], timeout=60)
    assert {i["Status"] for i in finished.values()} == {"Success"}
