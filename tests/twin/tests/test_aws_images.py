"""AMIs made from snapshots, DescribeImages by snapshot, and the snapshot fields moto leaves out."""

import pytest


@pytest.fixture
def cloud(twin_factory):
    twins = twin_factory({"instances": [{"provider": "aws", "name": "lin", "platform": "linux", "volumes": [
        {"device": "/dev/xvda", "size": 8, "boot": True}, {"device": "/dev/xvdf", "size": 20}]}]}, alicloud=False)
    ec2 = twins.aws_client("ec2")
    iid = twins.aws.instances["lin"]
    inst = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    return twins, ec2, iid, {m["DeviceName"]: m["Ebs"]["VolumeId"] for m in inst["BlockDeviceMappings"]}


def test_register_image_uses_the_given_snapshots_and_is_found_by_snapshot(cloud):
    _twins, ec2, _iid, vols = cloud
    root = ec2.create_snapshot(VolumeId=vols["/dev/xvda"])["SnapshotId"]
    data = ec2.create_snapshot(VolumeId=vols["/dev/xvdf"])["SnapshotId"]
    own_before = {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    image_id = ec2.register_image(Name="restored-set", RootDeviceName="/dev/xvda", VirtualizationType="hvm",
                                  BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": root}},
                                                       {"DeviceName": "/dev/xvdf", "Ebs": {"SnapshotId": data, "VolumeSize": 30}}])["ImageId"]
    image = ec2.describe_images(ImageIds=[image_id])["Images"][0]
    mapped = {m["DeviceName"]: m["Ebs"] for m in image["BlockDeviceMappings"]}
    assert mapped["/dev/xvda"]["SnapshotId"] == root and mapped["/dev/xvdf"]["SnapshotId"] == data
    assert mapped["/dev/xvdf"]["VolumeSize"] == 30 and image["RootDeviceName"] == "/dev/xvda"
    # no made-up snapshot appears in the account
    assert {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]} == own_before
    found = ec2.describe_images(Owners=["self"], Filters=[{"Name": "block-device-mapping.snapshot-id", "Values": [data]}])
    assert [i["ImageId"] for i in found["Images"]] == [image_id]
    other = ec2.create_snapshot(VolumeId=vols["/dev/xvdf"])["SnapshotId"]
    assert ec2.describe_images(Filters=[{"Name": "block-device-mapping.snapshot-id", "Values": [other]}])["Images"] == []


def test_create_image_snapshots_every_attached_volume(cloud):
    _twins, ec2, iid, vols = cloud
    image_id = ec2.create_image(InstanceId=iid, Name="from-instance", TagSpecifications=[
        {"ResourceType": "snapshot", "Tags": [{"Key": "made-by", "Value": "create-image"}]}])["ImageId"]
    mapped = {m["DeviceName"]: m["Ebs"] for m in ec2.describe_images(ImageIds=[image_id])["Images"][0]["BlockDeviceMappings"]}
    assert set(mapped) == {"/dev/xvda", "/dev/xvdf"}
    snaps = ec2.describe_snapshots(SnapshotIds=[m["SnapshotId"] for m in mapped.values()])["Snapshots"]
    assert {s["VolumeId"] for s in snaps} == set(vols.values())
    assert all({"Key": "made-by", "Value": "create-image"} in s["Tags"] for s in snaps)


def test_snapshots_have_full_size_storage_tier_and_millisecond_times(cloud):
    _twins, ec2, iid, vols = cloud
    created = ec2.create_snapshots(InstanceSpecification={"InstanceId": iid})["Snapshots"]
    assert any(s["StartTime"].microsecond for s in created)  # not all on whole seconds
    snaps = {s["VolumeId"]: s for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert snaps[vols["/dev/xvdf"]]["FullSnapshotSizeInBytes"] == 20 * 2 ** 30
    assert {s["StorageTier"] for s in snaps.values()} == {"standard"}
    assert all(s["StartTime"].microsecond % 1000 == 0 for s in snaps.values())
    by_id = {s["SnapshotId"]: s["StartTime"] for s in created}
    assert all(snaps[s["VolumeId"]]["StartTime"] == by_id[s["SnapshotId"]] for s in created)
