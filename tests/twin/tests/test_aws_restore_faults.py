"""Faults for restore tests on the AWS twin: an instance that will not stop, volumes that fail, attaches that fail."""

import pytest
from botocore.exceptions import ClientError

from twin.aws.testing import wait_for

VOLUMES = [{"device": "/dev/xvda", "size": 8, "boot": True}, {"device": "/dev/xvdf", "size": 10}]


@pytest.fixture
def cloud(twin_factory):
    twins = twin_factory({"instances": [{"provider": "aws", "name": n, "platform": "linux", "volumes": VOLUMES}
                                        for n in ("a", "b")]},
                         latency={"profile": "zero", "transitions": {"instance_stop": 0.2, "volume_create": 0.2}},
                         alicloud=False)
    return twins, twins.aws_client("ec2"), twins.aws.instances


def state(ec2, iid):
    return ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]["Name"]


def data_volume(ec2, iid):
    inst = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    return next(m["Ebs"]["VolumeId"] for m in inst["BlockDeviceMappings"] if m["DeviceName"] == "/dev/xvdf")


def volume_state(ec2, vid):
    return ec2.describe_volumes(VolumeIds=[vid])["Volumes"][0]["State"]


def test_stop_hang_stays_stopping_until_forced(cloud):
    twins, ec2, ids = cloud
    twins.faults.update({"instances": {"a": {"stop_hang": True}}})
    answer = ec2.stop_instances(InstanceIds=[ids["a"], ids["b"]])["StoppingInstances"]
    assert {i["InstanceId"]: i["CurrentState"]["Name"] for i in answer} == {ids["a"]: "stopping", ids["b"]: "stopping"}
    wait_for(lambda: state(ec2, ids["b"]) == "stopped", what="b stopped")
    assert state(ec2, ids["a"]) == "stopping"
    with pytest.raises(ClientError) as err:
        ec2.start_instances(InstanceIds=[ids["a"]])
    assert err.value.response["Error"]["Code"] == "IncorrectInstanceState"
    ec2.stop_instances(InstanceIds=[ids["a"]], Force=True)
    wait_for(lambda: state(ec2, ids["a"]) == "stopped", what="a stopped after the forced stop")


@pytest.mark.parametrize("scope", ["global", "instance", "volume"])
def test_create_volume_error_puts_the_new_volume_in_error(cloud, scope):
    twins, ec2, ids = cloud
    source = data_volume(ec2, ids["a"])
    snap = ec2.create_snapshot(VolumeId=source)["SnapshotId"]
    other = ec2.create_snapshot(VolumeId=data_volume(ec2, ids["b"]))["SnapshotId"]
    spec = {"global": {"create_volume_error": True}, "instance": {"instances": {"a": {"create_volume_error": True}}},
            "volume": {"volumes": {source: {"create_volume_error": True}}}}[scope]
    twins.faults.update(spec)
    zone = ec2.describe_volumes(VolumeIds=[source])["Volumes"][0]["AvailabilityZone"]
    vol = ec2.create_volume(SnapshotId=snap, AvailabilityZone=zone)
    assert vol["State"] == "creating"  # the call succeeds, as on AWS
    wait_for(lambda: volume_state(ec2, vol["VolumeId"]) == "error", what="volume in error")
    with pytest.raises(ClientError) as err:
        ec2.attach_volume(VolumeId=vol["VolumeId"], InstanceId=ids["a"], Device="/dev/xvdh")
    assert err.value.response["Error"]["Code"] == "IncorrectState"
    ec2.delete_volume(VolumeId=vol["VolumeId"])
    healthy = ec2.create_volume(SnapshotId=other, AvailabilityZone=zone)["VolumeId"]
    expected = "error" if scope == "global" else "available"
    wait_for(lambda: volume_state(ec2, healthy) == expected, what=f"other volume {expected}")


@pytest.mark.parametrize("spec_of, code", [
    (lambda ids, vid: {"instances": {"a": {"attach_error": True}}}, "IncorrectState"),
    (lambda ids, vid: {"volumes": {vid: {"attach_error": "InvalidVolume.ZoneMismatch"}}}, "InvalidVolume.ZoneMismatch"),
])
def test_attach_error(cloud, spec_of, code):
    twins, ec2, ids = cloud
    zone = ec2.describe_instances(InstanceIds=[ids["a"]])["Reservations"][0]["Instances"][0]["Placement"]["AvailabilityZone"]
    vid = ec2.create_volume(Size=1, AvailabilityZone=zone)["VolumeId"]
    wait_for(lambda: volume_state(ec2, vid) == "available", what="volume available")
    twins.faults.update(spec_of(ids, vid))
    with pytest.raises(ClientError) as err:
        ec2.attach_volume(VolumeId=vid, InstanceId=ids["a"], Device="/dev/xvdh")
    assert err.value.response["Error"]["Code"] == code
    assert volume_state(ec2, vid) == "available"
    twins.faults.reset()
    ec2.attach_volume(VolumeId=vid, InstanceId=ids["a"], Device="/dev/xvdh")
    assert volume_state(ec2, vid) == "in-use"
