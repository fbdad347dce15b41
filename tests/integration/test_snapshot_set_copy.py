"""snapshot_set_copy against the twins: real ansible-playbook runs, copy to another region, restore from the copy."""

import json

import boto3
import pytest
from alibabacloud_ecs20140526 import models as ecs_models

from ansible_collections.appconsistent.snapshots.plugins.module_utils import snapshot_set as ss
from ansible_collections.appconsistent.snapshots.plugins.module_utils import set_copy

COPY = "appconsistent.snapshots.snapshot_set_copy"
INFO = "appconsistent.snapshots.snapshot_set_info"
RESTORE = "appconsistent.snapshots.restore_volumes"
DESTINATION = "eu-west-1"
ALI_REGION = "cn-hangzhou"

FLEET = {
    "instances": [
        {"provider": "aws", "name": "db-1", "platform": "linux", "tags": {"env": "test"},
         "volumes": [{"device": "/dev/xvda", "size": 8, "boot": True}, {"device": "/dev/xvdf", "size": 20},
                     {"device": "/dev/xvdg", "size": 30}]},
        {"provider": "aws", "name": "db-2", "platform": "linux",
         "volumes": [{"device": "/dev/xvda", "size": 8, "boot": True}, {"device": "/dev/xvdf", "size": 10}]},
        {"provider": "alicloud", "id": "i-bp1copy000000000001", "name": "ali-db-1", "platform": "linux",
         "zone": "cn-hangzhou-h",
         "volumes": [{"device": "/dev/xvda", "size": 40, "type": "cloud_essd", "boot": True},
                     {"device": "/dev/xvdb", "size": 100, "type": "cloud_essd"}]},
    ],
}


def tag_dict(item):
    return {t["Key"]: t["Value"] for t in item.get("Tags") or []}


def take_aws_set(twins, instance_id, consistency="application", delete_after=None, extra_tags=None):
    """A set tagged as the collection tags its sets: CreateSnapshots plus the set tags and a device per member."""
    ec2 = twins.aws_client("ec2")
    instance = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    device_of = {m["Ebs"]["VolumeId"]: m["DeviceName"] for m in instance["BlockDeviceMappings"]}
    set_id = ss.new_set_id()
    tags = dict(ss.set_tags(set_id, instance_id, consistency, run_id="CHG-7", delete_after=delete_after),
                **(extra_tags or {}))
    snaps = ec2.create_snapshots(
        InstanceSpecification={"InstanceId": instance_id, "ExcludeBootVolume": True},
        TagSpecifications=[{"ResourceType": "snapshot", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}],
    )["Snapshots"]
    for snap in snaps:
        ec2.create_tags(Resources=[snap["SnapshotId"]], Tags=[{"Key": ss.TAG_DEVICE, "Value": device_of[snap["VolumeId"]]},
                                                              {"Key": "AppConsistent", "Value": "true"}])
    return set_id, {device_of[s["VolumeId"]]: s["SnapshotId"] for s in snaps}


def _client(twins, region):
    ep = twins.endpoints["aws"]
    return boto3.client("ec2", endpoint_url=ep["endpoint_url"], region_name=region, aws_access_key_id=ep["access_key_id"],
                        aws_secret_access_key=ep["secret_access_key"])


def destination_snapshots(twins, **filters):
    flt = [{"Name": f"tag:{k}", "Values": [v]} for k, v in filters.items()]
    return _client(twins, DESTINATION).describe_snapshots(OwnerIds=["self"], Filters=flt)["Snapshots"]


def copy_task(register, set_id, **extra):
    args = dict(provider="aws", set_id=set_id, destination_region=DESTINATION)
    args.update(extra)
    return {"name": register, COPY: args, "register": register}


@pytest.fixture
def twins(twin_factory):
    return twin_factory(FLEET)


def test_copy_check_mode_then_copy_then_idempotent_rerun_then_info_and_restore_in_the_destination(twins, run_tasks):
    db1 = twins.aws.instances["db-1"]
    set_id, source = take_aws_set(twins, db1, delete_after="2030-01-01T00:00:00Z", extra_tags={"owner": "dba"})

    checked = run_tasks([copy_task("plan", set_id)], twins.endpoints, check=True)["plan"]
    assert not checked.get("failed"), checked
    assert checked["changed"] is True and checked["set_id"] is None
    assert sorted(m["source_snapshot_id"] for m in checked["members"]) == sorted(source.values())
    assert {m["state"] for m in checked["members"]} == {"not_started"}
    assert destination_snapshots(twins, **{set_copy.TAG_COPIED_FROM: set_id}) == []

    run = run_tasks([copy_task("first", set_id), copy_task("again", set_id)], twins.endpoints)
    first, again = run["first"], run["again"]
    assert not first.get("failed"), first
    assert first["changed"] is True and first["complete"] is True
    assert first["set_id"].startswith("acs-") and first["set_id"] != set_id
    assert first["source_region"] == twins.endpoints["aws"]["region"] and first["destination_region"] == DESTINATION
    assert first["consistency"] == "application" and first["instance_id"] == db1
    assert len(first["started_snapshot_ids"]) == 2
    # the rerun finds the copy by its tags and copies nothing
    assert again["changed"] is False and again["set_id"] == first["set_id"] and again["started_snapshot_ids"] == []
    assert twins.stats.counts("aws").get("CopySnapshot") == 2

    copies = destination_snapshots(twins, **{ss.TAG_SET_ID: first["set_id"]})
    assert len(copies) == 2
    by_source = {tag_dict(c)[set_copy.TAG_SOURCE_SNAPSHOT]: tag_dict(c) for c in copies}
    for device, snapshot_id in source.items():
        tags = by_source[snapshot_id]
        assert tags[ss.TAG_DEVICE] == device
        assert tags[ss.TAG_INSTANCE_ID] == db1 and tags[ss.TAG_CONSISTENCY] == "application"
        assert tags[ss.TAG_RUN_ID] == "CHG-7" and tags[ss.TAG_DELETE_AFTER] == "2030-01-01T00:00:00Z"
        assert tags[set_copy.TAG_COPIED_FROM] == set_id
        assert tags[set_copy.TAG_SOURCE_REGION] == twins.endpoints["aws"]["region"]
        assert tags["owner"] == "dba"
        assert "AppConsistent" not in tags  # the provider's evidence stays with the source
    # the source region is untouched: no second set appears there
    source_ec2 = twins.aws_client("ec2")
    assert len(source_ec2.describe_snapshots(OwnerIds=["self"], Filters=[
        {"Name": "tag-key", "Values": [ss.TAG_SET_ID]}])["Snapshots"]) == 2

    after = run_tasks([
        {"name": "info", INFO: {"provider": "aws", "region": DESTINATION, "set_ids": [first["set_id"]]}, "register": "info"},
        {"name": "restore", RESTORE: {"provider": "aws", "region": DESTINATION, "set_id": first["set_id"], "mode": "volumes",
                                      "zone": DESTINATION + "a"}, "register": "restore"},
    ], twins.endpoints)
    info, restore = after["info"], after["restore"]
    assert not info.get("failed"), info
    listed = info["sets"]
    assert [s["set_id"] for s in listed] == [first["set_id"]]
    assert listed[0]["instance_id"] == db1 and listed[0]["consistency"] == "application" and listed[0]["complete"]
    assert not restore.get("failed"), restore
    assert restore["changed"] is True
    copy_ids = {m["snapshot_id"] for m in first["members"]}
    new_volumes = [e["volume_id"] for e in restore["device_map"]]
    dest_ec2 = _client(twins, DESTINATION)
    volumes = dest_ec2.describe_volumes(VolumeIds=new_volumes)["Volumes"]
    assert {v["SnapshotId"] for v in volumes} == copy_ids
    assert {v["AvailabilityZone"] for v in volumes} == {DESTINATION + "a"}
    assert sorted(v["Size"] for v in volumes) == [20, 30]


def test_copy_limit_refusals_requeue_instead_of_failing(twins, run_tasks):
    set_id, source = take_aws_set(twins, twins.aws.instances["db-1"])
    twins.faults.update({"api_errors": [{"action": "CopySnapshot", "code": "ResourceLimitExceeded", "count": 2}]})
    result = run_tasks([copy_task("copy", set_id, max_concurrent_copies=1)], twins.endpoints)["copy"]
    assert not result.get("failed"), result
    assert result["complete"] is True and result["limit_waits"] == 2
    assert len(result["started_snapshot_ids"]) == len(source) == 2
    assert len(destination_snapshots(twins, **{set_copy.TAG_COPIED_FROM: set_id})) == 2


def test_interrupted_copy_is_completed_by_a_rerun_into_the_same_set(twins, run_tasks):
    set_id, source = take_aws_set(twins, twins.aws.instances["db-1"])
    # A copy made by an earlier run that stopped after its first member.
    dest = _client(twins, DESTINATION)
    first_source = sorted(source.values())[0]
    partial_set = ss.new_set_id()
    dest.copy_snapshot(SourceRegion=twins.endpoints["aws"]["region"], SourceSnapshotId=first_source,
                       TagSpecifications=[{"ResourceType": "snapshot", "Tags": [
                           {"Key": ss.TAG_SET_ID, "Value": partial_set}, {"Key": set_copy.TAG_COPIED_FROM, "Value": set_id},
                           {"Key": set_copy.TAG_SOURCE_REGION, "Value": twins.endpoints["aws"]["region"]},
                           {"Key": set_copy.TAG_SOURCE_SNAPSHOT, "Value": first_source}]}])
    result = run_tasks([copy_task("resume", set_id)], twins.endpoints)["resume"]
    assert not result.get("failed"), result
    assert result["changed"] is True and result["set_id"] == partial_set
    assert len(result["started_snapshot_ids"]) == 1
    assert len(destination_snapshots(twins, **{ss.TAG_SET_ID: partial_set})) == 2


def test_refusals_come_before_any_copy(twins, run_tasks):
    set_id, _source = take_aws_set(twins, twins.aws.instances["db-2"])
    group_id, _ids = take_ali_set(twins, "i-bp1copy000000000001")
    run = run_tasks([
        copy_task("unknown", "acs-20200101t000000-00000000"),
        copy_task("reserved_tag", set_id, tags={"appconsistent:set-id": "x"}),
        copy_task("key_unencrypted", set_id, kms_key_id="alias/dr", encrypted=False),
        {"name": "ali_same_region", COPY: {"provider": "alicloud", "set_id": group_id, "destination_region": ALI_REGION},
         "register": "ali_same_region"},
    ], twins.endpoints)
    assert run["unknown"]["failed"] and "no snapshot carries appconsistent:set-id" in run["unknown"]["msg"]
    assert run["reserved_tag"]["failed"] and "reserved" in run["reserved_tag"]["msg"]
    assert run["key_unencrypted"]["failed"] and "kms_key_id" in run["key_unencrypted"]["msg"]
    # Alibaba Cloud copies only across regions
    assert run["ali_same_region"]["failed"] and "only to another region" in run["ali_same_region"]["msg"]
    assert twins.stats.counts("aws").get("CopySnapshot") is None
    assert twins.stats.counts("alicloud").get("CopySnapshot") is None


def test_incomplete_set_is_refused(twin_factory, run_tasks):
    twins = twin_factory(FLEET, latency={"profile": "zero", "transitions": {"snapshot_complete": 600}})
    set_id, _source = take_aws_set(twins, twins.aws.instances["db-2"])
    result = run_tasks([copy_task("copy", set_id)], twins.endpoints)["copy"]
    assert result["failed"] and "not complete yet" in result["msg"]
    assert twins.stats.counts("aws").get("CopySnapshot") is None


@pytest.mark.xfail(strict=True, reason="twin gap: the AWS twin hands CopySnapshot to moto unchanged, which keeps the "
                                       "source's Encrypted flag and ignores Encrypted=true")
def test_copies_are_encrypted_with_the_given_key(twins, run_tasks):
    set_id, _source = take_aws_set(twins, twins.aws.instances["db-2"])
    result = run_tasks([copy_task("copy", set_id, kms_key_id="alias/dr-backups")], twins.endpoints)["copy"]
    assert not result.get("failed"), result
    copies = _client(twins, DESTINATION).describe_snapshots(SnapshotIds=result["started_snapshot_ids"])["Snapshots"]
    assert copies and all(c["Encrypted"] and c.get("KmsKeyId") for c in copies)


# --- Alibaba Cloud -------------------------------------------------------------------------------


def take_ali_set(twins, instance_id):
    client = twins.ecs_client()
    group_id = client.create_snapshot_group(ecs_models.CreateSnapshotGroupRequest(
        region_id=ALI_REGION, instance_id=instance_id)).body.snapshot_group_id
    group = client.describe_snapshot_groups(ecs_models.DescribeSnapshotGroupsRequest(
        region_id=ALI_REGION, snapshot_group_id=[group_id])).body.snapshot_groups.snapshot_group[0]
    ids = [s.snapshot_id for s in group.snapshots.snapshot]
    client.tag_resources(ecs_models.TagResourcesRequest(
        region_id=ALI_REGION, resource_type="snapshot", resource_id=ids,
        tag=[ecs_models.TagResourcesRequestTag(key=k, value=v)
             for k, v in ss.set_tags(group_id, instance_id, "application").items()]))
    return group_id, ids


@pytest.mark.xfail(strict=True, reason="twin gap: the Alibaba twin serves one region (cn-hangzhou) and has no "
                                       "CopySnapshot action")
def test_alicloud_copy_to_another_region_then_restore_from_it(twins, run_tasks):
    group_id, ids = take_ali_set(twins, "i-bp1copy000000000001")
    run = run_tasks([
        {"name": "copy", COPY: {"provider": "alicloud", "set_id": group_id, "destination_region": "cn-shanghai"},
         "register": "copy"},
        {"name": "again", COPY: {"provider": "alicloud", "set_id": group_id, "destination_region": "cn-shanghai"},
         "register": "again"},
    ], twins.endpoints)
    copy, again = run["copy"], run["again"]
    assert not copy.get("failed"), json.dumps(copy)[:2000]
    assert copy["complete"] and sorted(m["source_snapshot_id"] for m in copy["members"]) == sorted(ids)
    assert again["changed"] is False and again["set_id"] == copy["set_id"]
    restored = run_tasks([{"name": "restore", RESTORE: {
        "provider": "alicloud", "alicloud_region": "cn-shanghai", "set_id": copy["set_id"], "mode": "volumes",
        "zone": "cn-shanghai-b"}, "register": "restore"}], twins.endpoints)["restore"]
    assert not restored.get("failed") and restored["changed"]
