"""Seeding a history into the twins: what the SDK reads back, and the providers' quotas still apply."""

import datetime

import pytest
from alibabacloud_ecs20140526 import models as ecs_models

from twin.alicloud.api import AliError
from twin.alicloud.seeding import seed_snapshot_groups
from twin.aws.seeding import seed_snapshots

FLEET = {"instances": [
    {"provider": "aws", "name": "seed-1", "platform": "linux", "volumes": [{"device": "/dev/xvda", "size": 1, "boot": True}]},
    {"provider": "alicloud", "id": "i-bp1seed00000000001", "name": "seed-ali-1", "platform": "linux",
     "zone": "cn-hangzhou-h", "volumes": [{"device": "/dev/xvda", "size": 20, "type": "cloud_essd", "boot": True}]},
]}
WHEN = datetime.datetime(2025, 11, 3, 6, 0, 0, tzinfo=datetime.timezone.utc)


def test_aws_seeded_snapshots_read_back_completed_with_their_time_and_tags(twin_factory):
    twins = twin_factory(FLEET, alicloud=False)
    ec2 = twins.aws_client("ec2")
    iid = twins.endpoints["aws"]["instances"]["seed-1"]
    volume = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["BlockDeviceMappings"][0]
    made = seed_snapshots(twins.aws, [dict(volume_id=volume["Ebs"]["VolumeId"], start_time=WHEN + datetime.timedelta(days=n),
                                           tags={"k": str(n)}) for n in range(3)])
    found = {s["SnapshotId"]: s for s in ec2.describe_snapshots(SnapshotIds=made)["Snapshots"]}
    assert [(found[s]["State"], found[s]["StartTime"], found[s]["Tags"]) for s in made] == [
        ("completed", WHEN + datetime.timedelta(days=n), [{"Key": "k", "Value": str(n)}]) for n in range(3)]


def test_aws_seeding_is_refused_over_the_account_s_snapshot_quota(twin_factory):
    twins = twin_factory(FLEET, alicloud=False, faults={"snapshot_quota": 2})
    ec2 = twins.aws_client("ec2")
    iid = twins.endpoints["aws"]["instances"]["seed-1"]
    volume = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["BlockDeviceMappings"][0]
    with pytest.raises(Exception, match="SnapshotLimitExceeded|maximum number of snapshots"):
        seed_snapshots(twins.aws, [dict(volume_id=volume["Ebs"]["VolumeId"], start_time=WHEN)] * 3)


def test_alicloud_seeded_groups_read_back_and_a_disk_holds_at_most_256_snapshots(twin_factory):
    twins = twin_factory(FLEET, aws=False)
    ecs = twins.ecs_client()
    region = twins.endpoints["alicloud"]["region"]
    disk = ecs.describe_disks(ecs_models.DescribeDisksRequest(region_id=region, instance_id="i-bp1seed00000000001"))
    disk_id = disk.body.to_map()["Disks"]["Disk"][0]["DiskId"]
    spec = dict(instance_id="i-bp1seed00000000001", disk_ids=[disk_id], created=WHEN.timestamp(), tags={"set": "{group_id}"})
    made = seed_snapshot_groups(twins.alicloud, [spec] * 256)
    group = ecs.describe_snapshot_groups(ecs_models.DescribeSnapshotGroupsRequest(
        region_id=region, snapshot_group_id=[made[0]])).body.to_map()["SnapshotGroups"]["SnapshotGroup"][0]
    assert (group["Status"], group["CreationTime"]) == ("accomplished", "2025-11-03T06:00:00Z")
    member = group["Snapshots"]["Snapshot"][0]
    tags = member["Tags"]["Tag"]
    assert tags == [{"Key": "set", "Value": made[0]}]  # the group listing names its members' tags Key/Value
    with pytest.raises(AliError, match="256"):
        seed_snapshot_groups(twins.alicloud, [spec])
