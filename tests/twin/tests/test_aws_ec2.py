"""EC2 behaviour of the AWS twin where moto falls short, plus faults, latency and the control API."""

import json
import time
import urllib.request

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, WaiterError

from twin.aws.testing import tags_of, wait_for

FLEET = {"instances": [
    {"provider": "aws", "name": "app-1", "platform": "linux", "tags": {"env": "test"},
     "volumes": [{"device": "/dev/xvda", "size": 8, "boot": True}, {"device": "/dev/xvdf", "size": 10},
                 {"device": "/dev/xvdg", "size": 20}]},
    {"provider": "aws", "name": "app-2", "id": "i-0123456789abcdef0", "platform": "linux", "state": "stopped", "zone": "us-east-1b",
     "volumes": [{"device": "/dev/sda1", "size": 8, "id": "vol-0123456789abcdef0"}]},
]}
FAST = {"Delay": 0.1, "MaxAttempts": 200}


@pytest.fixture
def aws(twin_factory):
    twins = twin_factory(FLEET, alicloud=False)
    return twins, twins.aws_client("ec2"), twins.aws.instances


def _volumes(ec2, iid):
    inst = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    return {b["DeviceName"]: b["Ebs"]["VolumeId"] for b in inst["BlockDeviceMappings"]}


def test_fleet_is_built_as_described(aws):
    twins, ec2, ids = aws
    assert ids["app-2"] == "i-0123456789abcdef0"
    reservations = ec2.describe_instances()["Reservations"]
    insts = {i["InstanceId"]: i for r in reservations for i in r["Instances"]}
    assert set(insts) == set(ids.values())
    app1 = insts[ids["app-1"]]
    assert tags_of(app1) == {"env": "test", "Name": "app-1"}
    assert app1["State"]["Name"] == "running" and app1["RootDeviceName"] == "/dev/xvda"
    assert insts[ids["app-2"]]["State"]["Name"] == "stopped"
    assert insts[ids["app-2"]]["Placement"]["AvailabilityZone"] == "us-east-1b"
    assert _volumes(ec2, ids["app-2"]) == {"/dev/sda1": "vol-0123456789abcdef0"}
    sizes = {v["Attachments"][0]["Device"]: v["Size"] for v in ec2.describe_volumes(
        Filters=[{"Name": "attachment.instance-id", "Values": [ids["app-1"]]}])["Volumes"]}
    assert sizes == {"/dev/xvda": 8, "/dev/xvdf": 10, "/dev/xvdg": 20}
    identity = twins.aws_client("sts").get_caller_identity()
    assert identity["Account"] == twins.aws.account_id


def test_iam_and_sts_serve_the_fleets_instance_role(twin_factory):
    twins = twin_factory({"instances": [dict(FLEET["instances"][0], role="AppSnapshotRole")]}, alicloud=False)
    ec2, iam, iid = twins.aws_client("ec2"), twins.aws_client("iam"), twins.aws.instances["app-1"]
    profile = iam.get_instance_profile(InstanceProfileName="AppSnapshotRole")["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == ["AppSnapshotRole"]
    trust = iam.get_role(RoleName="AppSnapshotRole")["Role"]["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    inst = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    assert inst["IamInstanceProfile"]["Arn"] == profile["Arn"]
    assert profile["Arn"].startswith(f"arn:aws:iam::{twins.aws.account_id}:instance-profile/")
    info = twins.aws_client("ssm").describe_instance_information()["InstanceInformationList"][0]
    assert info["IamRole"] == "AppSnapshotRole"
    # IAM is moto's own: what a test creates is there, in the twin's account
    iam.create_role(RoleName="Extra", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}))
    assert {r["RoleName"] for r in iam.list_roles()["Roles"]} >= {"AppSnapshotRole", "Extra"}
    assert twins.aws_client("sts").get_caller_identity()["Account"] == twins.aws.account_id


def test_create_snapshots_honours_exclusions_and_tag_copy(aws):
    _twins, ec2, ids = aws
    iid = ids["app-1"]
    vols = _volumes(ec2, iid)
    ec2.create_tags(Resources=[vols["/dev/xvdf"]], Tags=[{"Key": "data", "Value": "orders"}, {"Key": "env", "Value": "vol"}])
    resp = ec2.create_snapshots(InstanceSpecification={"InstanceId": iid, "ExcludeBootVolume": True,
                                                       "ExcludeDataVolumeIds": [vols["/dev/xvdg"]]},
                                Description="set-1", CopyTagsFromSource="volume",
                                TagSpecifications=[{"ResourceType": "snapshot", "Tags": [{"Key": "env", "Value": "snap"}]}])
    snaps = resp["Snapshots"]
    assert [s["VolumeId"] for s in snaps] == [vols["/dev/xvdf"]]
    assert snaps[0]["State"] == "completed" and snaps[0]["Description"] == "set-1"
    # the request's tags win over the copied ones
    assert tags_of(snaps[0]) == {"data": "orders", "env": "snap"}
    without_copy = ec2.create_snapshots(InstanceSpecification={"InstanceId": iid})["Snapshots"]
    assert sorted(s["VolumeId"] for s in without_copy) == sorted(vols.values())
    assert all(tags_of(s) == {} for s in without_copy)


def test_snapshots_of_encrypted_volumes_carry_the_volumes_key(twin_factory):
    twins = twin_factory({"instances": [{"provider": "aws", "name": "vault", "platform": "linux", "volumes": [
        {"device": "/dev/xvda", "size": 8, "boot": True}, {"device": "/dev/xvdf", "size": 5, "encrypted": True}]}]},
        alicloud=False)
    ec2 = twins.aws_client("ec2")
    iid = twins.aws.instances["vault"]
    volume = ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [iid]},
                                           {"Name": "encrypted", "Values": ["true"]}])["Volumes"][0]
    # Encrypted without a key named: the account's AWS managed EBS key, as on AWS.
    aliases = twins.aws_client("kms").list_aliases(KeyId=volume["KmsKeyId"])["Aliases"]
    assert [a["AliasName"] for a in aliases] == ["alias/aws/ebs"]
    snaps = ec2.create_snapshots(InstanceSpecification={"InstanceId": iid, "ExcludeBootVolume": True})["Snapshots"]
    described = ec2.describe_snapshots(SnapshotIds=[snaps[0]["SnapshotId"]])["Snapshots"][0]
    assert described["Encrypted"] is True and described["KmsKeyId"] == volume["KmsKeyId"]


def test_create_snapshots_rejects_root_in_exclude_data_volume_ids(aws):
    _twins, ec2, ids = aws
    vols = _volumes(ec2, ids["app-1"])
    with pytest.raises(ClientError) as err:
        ec2.create_snapshots(InstanceSpecification={"InstanceId": ids["app-1"], "ExcludeDataVolumeIds": [vols["/dev/xvda"]]})
    assert err.value.response["Error"]["Code"] == "InvalidParameterValue"
    with pytest.raises(ClientError) as err:
        ec2.create_snapshots(InstanceSpecification={"InstanceId": "i-00000000000000000"})
    assert err.value.response["Error"]["Code"] == "InvalidInstanceID.NotFound"


def test_snapshot_pending_then_completed(twin_factory):
    twins = twin_factory(FLEET, latency={"profile": "zero", "transitions": {"snapshot_complete": 1.0}}, alicloud=False)
    ec2 = twins.aws_client("ec2")
    snaps = ec2.create_snapshots(InstanceSpecification={"InstanceId": twins.aws.instances["app-1"]})["Snapshots"]
    assert {s["State"] for s in snaps} == {"pending"}
    ids = [s["SnapshotId"] for s in snaps]
    described = ec2.describe_snapshots(SnapshotIds=ids)["Snapshots"]
    assert {s["State"] for s in described} == {"pending"} and all(s["Progress"] != "100%" for s in described)
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=ids, WaiterConfig=FAST)
    assert {s["Progress"] for s in ec2.describe_snapshots(SnapshotIds=ids)["Snapshots"]} == {"100%"}


def test_snapshot_error_state(twin_factory):
    twins = twin_factory(FLEET, faults={"snapshot_error_rate": 1.0}, alicloud=False)
    ec2 = twins.aws_client("ec2")
    snap = ec2.create_snapshot(VolumeId=_volumes(ec2, twins.aws.instances["app-1"])["/dev/xvdf"])
    assert ec2.describe_snapshots(SnapshotIds=[snap["SnapshotId"]])["Snapshots"][0]["State"] == "error"
    with pytest.raises(WaiterError):
        ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[snap["SnapshotId"]], WaiterConfig=FAST)


def test_volume_and_instance_transitions(twin_factory):
    transitions = {k: 0.5 for k in ("volume_create", "volume_attach", "volume_detach", "instance_stop", "instance_start")}
    twins = twin_factory(FLEET, latency={"profile": "zero", "transitions": transitions}, alicloud=False)
    ec2, ids = twins.aws_client("ec2"), twins.aws.instances
    snap = ec2.create_snapshot(VolumeId=_volumes(ec2, ids["app-1"])["/dev/xvdf"])["SnapshotId"]
    vol = ec2.create_volume(SnapshotId=snap, AvailabilityZone="us-east-1a", VolumeType="gp3")
    assert vol["State"] == "creating" and vol["Size"] == 10
    with pytest.raises(ClientError) as err:
        ec2.attach_volume(VolumeId=vol["VolumeId"], InstanceId=ids["app-1"], Device="/dev/xvdh")
    assert err.value.response["Error"]["Code"] == "IncorrectState"
    ec2.get_waiter("volume_available").wait(VolumeIds=[vol["VolumeId"]], WaiterConfig=FAST)
    att = ec2.attach_volume(VolumeId=vol["VolumeId"], InstanceId=ids["app-1"], Device="/dev/xvdh")
    assert att["State"] == "attaching"
    desc = ec2.describe_volumes(VolumeIds=[vol["VolumeId"]])["Volumes"][0]
    assert desc["State"] == "in-use" and desc["Attachments"][0]["State"] == "attaching"
    wait_for(lambda: ec2.describe_volumes(VolumeIds=[vol["VolumeId"]])["Volumes"][0]["Attachments"][0]["State"] == "attached")
    assert ec2.describe_volumes(VolumeIds=[vol["VolumeId"]])["Volumes"][0]["State"] == "in-use"
    ec2.detach_volume(VolumeId=vol["VolumeId"])
    desc = ec2.describe_volumes(VolumeIds=[vol["VolumeId"]])["Volumes"][0]
    assert desc["State"] == "in-use" and desc["Attachments"][0]["State"] == "detaching"
    ec2.get_waiter("volume_available").wait(VolumeIds=[vol["VolumeId"]], WaiterConfig=FAST)
    assert ec2.describe_volumes(VolumeIds=[vol["VolumeId"]])["Volumes"][0]["Attachments"] == []

    ec2.stop_instances(InstanceIds=[ids["app-1"]])
    state = ec2.describe_instances(InstanceIds=[ids["app-1"]])["Reservations"][0]["Instances"][0]["State"]["Name"]
    assert state == "stopping"
    ec2.get_waiter("instance_stopped").wait(InstanceIds=[ids["app-1"]], WaiterConfig=FAST)
    ec2.start_instances(InstanceIds=[ids["app-1"]])
    assert ec2.describe_instances(InstanceIds=[ids["app-1"]])["Reservations"][0]["Instances"][0]["State"]["Name"] == "pending"
    ec2.get_waiter("instance_running").wait(InstanceIds=[ids["app-1"]], WaiterConfig=FAST)


def test_injected_throttling_and_rate_errors(aws):
    twins, ec2, ids = aws
    twins.faults.update({"api_errors": [{"action": "CreateSnapshots", "code": "SnapshotCreationPerVolumeRateExceeded", "count": 1},
                                        {"action": "DescribeVolumes", "code": "RequestLimitExceeded", "count": 2}]})
    with pytest.raises(ClientError) as err:
        ec2.create_snapshots(InstanceSpecification={"InstanceId": ids["app-1"]})
    assert err.value.response["Error"]["Code"] == "SnapshotCreationPerVolumeRateExceeded"
    assert len(ec2.create_snapshots(InstanceSpecification={"InstanceId": ids["app-1"]})["Snapshots"]) == 3
    with pytest.raises(ClientError) as err:
        ec2.describe_volumes()
    assert err.value.response["Error"]["Code"] == "RequestLimitExceeded"
    # the SDK's own retries get through the throttling, as they must against the real service
    retrying = twins.aws.client("ec2", config=Config(retries={"total_max_attempts": 3, "mode": "standard"}))
    resp = retrying.describe_volumes()
    assert resp["ResponseMetadata"]["RetryAttempts"] == 1 and len(resp["Volumes"]) == 4


def test_throttling_at_a_rate(twin_factory):
    twins = twin_factory(FLEET, faults={"api_errors": [{"action": "DescribeInstances", "rate": 0.5}]}, seed=3, alicloud=False)
    ec2 = twins.aws_client("ec2")
    outcomes = []
    for _attempt in range(40):
        try:
            ec2.describe_instances()
            outcomes.append("ok")
        except ClientError as exc:
            outcomes.append(exc.response["Error"]["Code"])
    assert set(outcomes) == {"ok", "RequestLimitExceeded"}


def test_snapshot_quota(aws):
    twins, ec2, ids = aws
    twins.faults.update({"snapshot_quota": 4})
    ec2.create_snapshots(InstanceSpecification={"InstanceId": ids["app-1"]})
    with pytest.raises(ClientError) as err:
        ec2.create_snapshots(InstanceSpecification={"InstanceId": ids["app-1"]})
    assert err.value.response["Error"]["Code"] == "SnapshotLimitExceeded"
    ec2.create_snapshot(VolumeId=_volumes(ec2, ids["app-1"])["/dev/xvdf"])
    with pytest.raises(ClientError):
        ec2.create_snapshot(VolumeId=_volumes(ec2, ids["app-1"])["/dev/xvdf"])


def test_describe_snapshots_owner_tag_filter_and_pagination(aws):
    _twins, ec2, ids = aws
    for n in range(4):
        ec2.create_snapshots(InstanceSpecification={"InstanceId": ids["app-1"]},
                             TagSpecifications=[{"ResourceType": "snapshot", "Tags": [{"Key": "set", "Value": f"s{n % 2}"}]}])
    pages = list(ec2.get_paginator("describe_snapshots").paginate(
        OwnerIds=["self"], Filters=[{"Name": "tag:set", "Values": ["s1"]}], PaginationConfig={"PageSize": 5}))
    assert [len(p["Snapshots"]) for p in pages] == [5, 1]
    assert all(tags_of(s)["set"] == "s1" for p in pages for s in p["Snapshots"])
    mine = [s for p in ec2.get_paginator("describe_snapshots").paginate(OwnerIds=["self"]) for s in p["Snapshots"]]
    assert len(mine) == 12
    ec2.delete_snapshot(SnapshotId=mine[0]["SnapshotId"])
    assert len(ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]) == 11


def test_describe_volumes_pages(aws):
    ec2 = aws[1]
    pages = list(ec2.get_paginator("describe_volumes").paginate(PaginationConfig={"PageSize": 5}))
    assert [len(p["Volumes"]) for p in pages] == [4]


def test_latency_model_off_and_on(twin_factory, monkeypatch):
    slept = []
    monkeypatch.setattr("twin.core.latency.time.sleep", slept.append)
    twins = twin_factory(FLEET, alicloud=False)
    ec2, ssm = twins.aws_client("ec2"), twins.aws_client("ssm")
    ec2.describe_volumes()
    ssm.describe_instance_information()
    assert slept == []  # zero profile: no call waits
    twins.latency.update({"profile": "zero", "api": {"DescribeVolumes": 0.25, "DescribeInstanceInformation": 0.125}})
    ec2.describe_volumes()
    ssm.describe_instance_information()
    assert slept == [0.25, 0.125]
    twins.latency.update("realistic")
    slept.clear()
    ec2.describe_instances()
    assert slept == [twins.latency.api("aws", "DescribeInstances")] and slept[0] > 0


def test_control_api(aws):
    twins, ec2, ids = aws
    url = twins.aws.url

    def call(method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url + path, data=data, method=method, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    call("POST", "/_twin/stats/reset")
    ec2.describe_instances()
    ec2.describe_instances()
    twins.aws_client("ssm").describe_instance_information()
    stats = call("GET", "/_twin/stats")
    assert stats["counts"]["aws"] == {"DescribeInstances": 2, "DescribeInstanceInformation": 1}
    call("POST", "/_twin/faults", {"api_errors": [{"action": "DescribeInstances", "count": 1}]})
    with pytest.raises(ClientError):
        ec2.describe_instances()
    state = call("GET", "/_twin/state")
    assert {i["name"] for i in state["instances"]} == {"app-1", "app-2"}
    assert state["account_id"] == twins.aws.account_id
    assert {v["id"] for v in state["volumes"]} >= set(_volumes(ec2, ids["app-1"]).values())
    assert call("POST", "/_twin/latency", {"profile": "realistic"})["spec"] == {"profile": "realistic"}
    assert twins.latency.api("aws", "DescribeInstances") > 0


def test_twins_in_one_process_do_not_share_state(twin_factory):
    first = twin_factory(FLEET, alicloud=False)
    second = twin_factory(FLEET, alicloud=False)
    ec2_a, ec2_b = first.aws_client("ec2"), second.aws_client("ec2")
    ec2_a.create_snapshots(InstanceSpecification={"InstanceId": first.aws.instances["app-1"]})
    assert len(ec2_a.describe_snapshots(OwnerIds=["self"])["Snapshots"]) == 3
    assert ec2_b.describe_snapshots(OwnerIds=["self"])["Snapshots"] == []


@pytest.mark.timeout(120)
def test_thousand_instance_fleet_comes_up(twin_factory, record_testsuite_property):
    fleet = {"generate": [{"count": 1000, "provider": "aws", "name_prefix": "n-",
                           "template": {"platform": "linux", "volumes": [{"device": "/dev/xvda", "size": 8},
                                                                         {"device": "/dev/xvdf", "size": 16}]}}]}
    started = time.monotonic()
    twins = twin_factory(fleet, alicloud=False)
    # recorded, not asserted (tests never assert wall-clock times): build/test-results/twin-test.xml
    record_testsuite_property("twin_aws_1000_instances_startup_seconds", round(time.monotonic() - started, 2))
    ssm, ec2 = twins.aws_client("ssm"), twins.aws_client("ec2")
    infos = [i for p in ssm.get_paginator("describe_instance_information").paginate() for i in p["InstanceInformationList"]]
    assert len(infos) == 1000 and {i["PingStatus"] for i in infos} == {"Online"}
    volumes = [v for p in ec2.get_paginator("describe_volumes").paginate(PaginationConfig={"PageSize": 500}) for v in p["Volumes"]]
    assert len(volumes) == 2000 and {v["State"] for v in volumes} == {"in-use"}
    some = list(twins.aws.instances.values())[:50]
    assert len(ec2.describe_instances(InstanceIds=some)["Reservations"]) == 50
