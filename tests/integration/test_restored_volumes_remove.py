"""restored_volumes_remove against both twins: volumes restored with restore_volumes, then removed."""

import json
import types

import pytest

from alibabacloud_ecs20140526 import models as ecs_models

from ansible_collections.appconsistent.snapshots.plugins.module_utils import snapshot_set as ss
from twin.launcher import start_twins

RESTORE = "appconsistent.snapshots.restore_volumes"
REMOVE = "appconsistent.snapshots.restored_volumes_remove"
REGION = "cn-hangzhou"
TAG = "appconsistent:restored-from"

AWS_VOLUMES = [{"device": "/dev/xvda", "size": 8, "boot": True}, {"device": "/dev/xvdf", "size": 10},
               {"device": "/dev/xvdg", "size": 12}]
ALI_VOLUMES = [{"device": "/dev/xvda", "size": 40, "type": "cloud_essd", "boot": True},
               {"device": "/dev/xvdb", "size": 20, "type": "cloud_essd"}]


# --- helpers ------------------------------------------------------------------------------------


def aws_devices(ec2, instance_id):
    instance = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    return {m["DeviceName"]: m["Ebs"]["VolumeId"] for m in instance["BlockDeviceMappings"]}


def aws_existing(ec2, volume_ids):
    found = ec2.describe_volumes(Filters=[{"Name": "volume-id", "Values": list(volume_ids)}])["Volumes"]
    return {v["VolumeId"]: v for v in found}


def take_aws_set(twins, instance_id, exclude_boot=True):
    """A set made the way the collection makes them: CreateSnapshots plus the set tags, device per member."""
    ec2 = twins.aws_client("ec2")
    set_id = ss.new_set_id()
    device_of = {v: d for d, v in aws_devices(ec2, instance_id).items()}
    snaps = ec2.create_snapshots(
        InstanceSpecification={"InstanceId": instance_id, "ExcludeBootVolume": exclude_boot},
        TagSpecifications=[{"ResourceType": "snapshot", "Tags": [
            {"Key": k, "Value": v} for k, v in ss.set_tags(set_id, instance_id, "application").items()]}])["Snapshots"]
    for snap in snaps:
        ec2.create_tags(Resources=[snap["SnapshotId"]], Tags=[{"Key": ss.TAG_DEVICE, "Value": device_of[snap["VolumeId"]]}])
    return set_id


def ali_disks(twins, instance_id=None, disk_ids=None):
    req = ecs_models.DescribeDisksRequest(region_id=REGION, instance_id=instance_id,
                                          disk_ids=json.dumps(list(disk_ids)) if disk_ids else None)
    return {d.disk_id: d for d in twins.ecs_client().describe_disks(req).body.disks.disk}


def ali_devices(twins, instance_id):
    return {d.device: d.disk_id for d in ali_disks(twins, instance_id).values() if d.instance_id == instance_id}


def take_ali_set(twins, instance_id):
    """A snapshot-consistent group tagged as the collection tags its sets (group id = set id)."""
    client = twins.ecs_client()
    group_id = client.create_snapshot_group(ecs_models.CreateSnapshotGroupRequest(
        region_id=REGION, instance_id=instance_id)).body.snapshot_group_id
    group = client.describe_snapshot_groups(ecs_models.DescribeSnapshotGroupsRequest(
        region_id=REGION, snapshot_group_id=[group_id])).body.snapshot_groups.snapshot_group[0]
    device_of = {v: d for d, v in ali_devices(twins, instance_id).items()}
    for snap in group.snapshots.snapshot:
        set_tags = dict(ss.set_tags(group_id, instance_id, "application"), **{ss.TAG_DEVICE: device_of[snap.source_disk_id]})
        client.tag_resources(ecs_models.TagResourcesRequest(
            region_id=REGION, resource_type="snapshot", resource_id=[snap.snapshot_id],
            tag=[ecs_models.TagResourcesRequestTag(key=k, value=v) for k, v in set_tags.items()]))
    return group_id


def restored(run, name):
    result = run[name]
    assert result["changed"] is True and not result.get("failed"), result.get("msg")
    return [e["volume_id"] for e in result["device_map"]]


def removal(result, ok=True):
    if ok:
        assert not result.get("failed"), result.get("msg")
    return {v["volume_id"]: v for v in result["volumes"]}


@pytest.fixture(scope="module")
def clouds(tmp_path_factory):
    base = tmp_path_factory.mktemp("remove")
    instances = [{"provider": "aws", "name": n, "platform": "linux", "volumes": AWS_VOLUMES}
                 for n in ("src", "refuse-src")]
    instances += [{"provider": "aws", "name": n, "platform": "linux", "volumes": AWS_VOLUMES[:1]}
                  for n in ("scratch", "spare")]
    instances += [{"provider": "alicloud", "name": n, "platform": "linux", "zone": "cn-hangzhou-h",
                   "volumes": ALI_VOLUMES if "src" in n else ALI_VOLUMES[:1]}
                  for n in ("ali-src", "ali-refuse-src", "ali-scratch")]
    twins = start_twins({"instances": instances}, blockstore=str(base / "blocks"))
    try:
        yield types.SimpleNamespace(twins=twins, ids=dict(twins.endpoints["aws"]["instances"],
                                                          **twins.endpoints["alicloud"]["instances"]))
    finally:
        twins.stop()


# --- AWS ----------------------------------------------------------------------------------------


def test_aws_removes_restored_volumes_attached_and_detached(clouds, run_tasks):
    twins, ids = clouds.twins, clouds.ids
    ec2 = twins.aws_client("ec2")
    set_id = take_aws_set(twins, ids["src"])
    scratch_boot = aws_devices(ec2, ids["scratch"])["/dev/xvda"]
    run = run_tasks([
        {RESTORE: {"provider": "aws", "set_id": set_id, "mode": "attach", "target_instance_id": ids["scratch"],
                   "force": True}, "register": "attach"},
        {RESTORE: {"provider": "aws", "set_id": set_id, "mode": "volumes", "force": True}, "register": "volumes"},
    ], twins.endpoints)
    attached, loose = restored(run, "attach"), restored(run, "volumes")
    assert len(attached) == 2 and len(loose) == 2
    everything = attached + loose

    twins.stats.reset()
    plan = run_tasks([{REMOVE: {"provider": "aws", "volume_ids": everything}, "register": "plan", "diff": True}],
                     twins.endpoints, check=True)["plan"]
    assert plan["changed"] is True
    planned = removal(plan)
    assert {v["action"] for v in planned.values()} == {"would_delete"}
    assert {vid: planned[vid]["detached_from"] for vid in attached} == {vid: ids["scratch"] for vid in attached}
    assert all(planned[vid]["detached_from"] is None for vid in loose)
    assert plan["diff"]["before"]["volumes"] == sorted(everything) and plan["diff"]["after"]["volumes"] == []
    counts = twins.stats.counts("aws")
    assert counts.get("DetachVolume", 0) == 0 and counts.get("DeleteVolume", 0) == 0
    assert set(aws_existing(ec2, everything)) == set(everything)

    run = run_tasks([{REMOVE: {"provider": "aws", "volume_ids": everything}, "register": "remove"},
                     {REMOVE: {"provider": "aws", "volume_ids": everything}, "register": "again"}], twins.endpoints)
    done = removal(run["remove"])
    assert run["remove"]["changed"] is True
    assert [v["volume_id"] for v in run["remove"]["volumes"]] == everything  # the order given
    assert {v["action"] for v in done.values()} == {"deleted"}
    assert {vid: done[vid]["detached_from"] for vid in attached} == {vid: ids["scratch"] for vid in attached}
    assert aws_existing(ec2, everything) == {}
    assert aws_devices(ec2, ids["scratch"]) == {"/dev/xvda": scratch_boot}  # its own volume is untouched
    assert run["again"]["changed"] is False
    assert {v["action"] for v in removal(run["again"]).values()} == {"absent"}


def test_aws_refuses_original_and_boot_volumes_and_changes_nothing(clouds, run_tasks):
    twins, ids = clouds.twins, clouds.ids
    ec2 = twins.aws_client("ec2")
    source = aws_devices(ec2, ids["refuse-src"])
    # boot included: replacing onto the spare instance puts a restored volume at its root device
    set_id = take_aws_set(twins, ids["refuse-src"], exclude_boot=False)
    run = run_tasks([
        {RESTORE: {"provider": "aws", "set_id": set_id, "mode": "attach", "target_instance_id": ids["scratch"],
                   "force": True}, "register": "attach"},
        {RESTORE: {"provider": "aws", "set_id": set_id, "target_instance_id": ids["spare"]},
         "register": "replace"},
    ], twins.endpoints)
    scratch = restored(run, "attach")
    assert run["replace"]["changed"] is True, run["replace"].get("msg")
    spare_root = aws_devices(ec2, ids["spare"])["/dev/xvda"]
    assert json.dumps(run["replace"]).count(spare_root) >= 1

    twins.stats.reset()
    run = run_tasks([
        {REMOVE: {"provider": "aws", "volume_ids": scratch + [source["/dev/xvdf"]]}, "register": "original"},
        {REMOVE: {"provider": "aws", "volume_ids": scratch + [spare_root]}, "register": "boot"},
        {REMOVE: {"provider": "aws", "volume_ids": scratch, "detach": False}, "register": "no_detach"},
        {REMOVE: {"provider": "aws", "volume_ids": ["snap-0123456789abcdef0"]}, "register": "wrong_id"},
    ], twins.endpoints)
    original = run["original"]
    assert original["failed"] and original["changed"] is False
    assert source["/dev/xvdf"] in original["msg"] and TAG in original["msg"] and "Nothing was changed" in original["msg"]
    assert run["boot"]["failed"] and "boot" in run["boot"]["msg"] and spare_root in run["boot"]["msg"]
    assert run["no_detach"]["failed"] and "detach=true" in run["no_detach"]["msg"]
    assert run["wrong_id"]["failed"] and "not aws volume ids" in run["wrong_id"]["msg"]
    counts = twins.stats.counts("aws")
    assert counts.get("DetachVolume", 0) == 0 and counts.get("DeleteVolume", 0) == 0
    assert set(aws_existing(ec2, scratch + list(source.values()) + [spare_root])) == \
        set(scratch + list(source.values()) + [spare_root])
    assert all(aws_existing(ec2, scratch)[v]["State"] == "in-use" for v in scratch)

    cleanup = run_tasks([{REMOVE: {"provider": "aws", "volume_ids": scratch}, "register": "cleanup"}], twins.endpoints)
    assert removal(cleanup["cleanup"]) and aws_existing(ec2, scratch) == {}


# --- Alibaba Cloud --------------------------------------------------------------------------------


def test_alicloud_removes_restored_disks_attached_and_detached(clouds, run_tasks):
    twins, ids = clouds.twins, clouds.ids
    group_id = take_ali_set(twins, ids["ali-src"])
    scratch_before = ali_devices(twins, ids["ali-scratch"])
    run = run_tasks([
        {RESTORE: {"provider": "alicloud", "snapshot_group_id": group_id, "mode": "attach",
                   "target_instance_id": ids["ali-scratch"], "force": True}, "register": "attach"},
        {RESTORE: {"provider": "alicloud", "snapshot_group_id": group_id, "mode": "volumes", "force": True},
         "register": "volumes"},
    ], twins.endpoints)
    attached, loose = restored(run, "attach"), restored(run, "volumes")
    assert attached and loose
    everything = attached + loose

    twins.stats.reset()
    plan = run_tasks([{REMOVE: {"provider": "alicloud", "volume_ids": everything}, "register": "plan"}],
                     twins.endpoints, check=True)["plan"]
    planned = removal(plan)
    assert plan["changed"] is True and {v["action"] for v in planned.values()} == {"would_delete"}
    assert {vid: planned[vid]["detached_from"] for vid in attached} == {vid: ids["ali-scratch"] for vid in attached}
    counts = twins.stats.counts("alicloud")
    assert counts.get("DetachDisk", 0) == 0 and counts.get("DeleteDisk", 0) == 0
    assert set(ali_disks(twins, disk_ids=everything)) == set(everything)

    run = run_tasks([{REMOVE: {"provider": "alicloud", "volume_ids": everything}, "register": "remove"},
                     {REMOVE: {"provider": "alicloud", "volume_ids": everything}, "register": "again"}], twins.endpoints)
    done = removal(run["remove"])
    assert run["remove"]["changed"] is True and {v["action"] for v in done.values()} == {"deleted"}
    assert ali_disks(twins, disk_ids=everything) == {}
    assert ali_devices(twins, ids["ali-scratch"]) == scratch_before
    assert run["again"]["changed"] is False
    assert {v["action"] for v in removal(run["again"]).values()} == {"absent"}


def test_alicloud_refuses_original_system_and_reset_disks_and_changes_nothing(clouds, run_tasks):
    twins, ids = clouds.twins, clouds.ids
    source = ali_devices(twins, ids["ali-refuse-src"])
    group_id = take_ali_set(twins, ids["ali-refuse-src"])
    run = run_tasks([
        {RESTORE: {"provider": "alicloud", "snapshot_group_id": group_id, "mode": "volumes", "force": True},
         "register": "volumes"},
    ], twins.endpoints)
    loose = restored(run, "volumes")
    # a disk rolled back in place carries the restored-from tag, but it is the instance's own disk
    data_disk = source["/dev/xvdb"]
    twins.ecs_client().tag_resources(ecs_models.TagResourcesRequest(
        region_id=REGION, resource_type="disk", resource_id=[data_disk, source["/dev/xvda"]],
        tag=[ecs_models.TagResourcesRequestTag(key=TAG, value="s-bp1reset000000000000")]))

    twins.stats.reset()
    run = run_tasks([
        {REMOVE: {"provider": "alicloud", "volume_ids": loose + [ali_devices(twins, ids["ali-scratch"])["/dev/xvda"]]},
         "register": "untagged_system"},
        {REMOVE: {"provider": "alicloud", "volume_ids": loose + [data_disk]}, "register": "reset"},
        {REMOVE: {"provider": "alicloud", "volume_ids": [source["/dev/xvda"]]}, "register": "system"},
        {REMOVE: {"provider": "alicloud", "volume_ids": ["vol-0123456789abcdef0"]}, "register": "wrong_id"},
    ], twins.endpoints, check=False)
    assert run["untagged_system"]["failed"] and TAG in run["untagged_system"]["msg"]
    assert run["reset"]["failed"] and data_disk in run["reset"]["msg"] and "restored in place" in run["reset"]["msg"]
    assert run["system"]["failed"] and "system" in run["system"]["msg"]
    assert run["wrong_id"]["failed"] and "not alicloud volume ids" in run["wrong_id"]["msg"]
    counts = twins.stats.counts("alicloud")
    assert counts.get("DetachDisk", 0) == 0 and counts.get("DeleteDisk", 0) == 0
    assert set(ali_disks(twins, disk_ids=loose + list(source.values()))) == set(loose + list(source.values()))
    assert ali_devices(twins, ids["ali-refuse-src"]) == source


# --- a replace restore puts its volumes in service ------------------------------------------------


def ali_data_snapshot(twins, group_id):
    """The member of an Alibaba set that holds the data disk (/dev/xvdb)."""
    snaps = twins.ecs_client().describe_snapshots(ecs_models.DescribeSnapshotsRequest(
        region_id=REGION, tag=[ecs_models.DescribeSnapshotsRequestTag(key=ss.TAG_SET_ID, value=group_id)])).body
    return next(s.snapshot_id for s in snaps.snapshots.snapshot
                if {t.tag_key: t.tag_value for t in s.tags.tag}.get(ss.TAG_DEVICE) == "/dev/xvdb")


def test_a_volume_a_replace_restore_put_in_service_is_refused_before_any_detach(twin_factory, run_tasks):
    twins = twin_factory({"instances": [
        {"provider": "aws", "name": "db", "platform": "linux", "volumes": AWS_VOLUMES},
        {"provider": "alicloud", "name": "ali-db", "platform": "linux", "zone": "cn-hangzhou-h", "volumes": ALI_VOLUMES},
        {"provider": "alicloud", "name": "ali-dst", "platform": "linux", "zone": "cn-hangzhou-h",
         "volumes": ALI_VOLUMES}]}, blockstore=True)
    ids = dict(twins.endpoints["aws"]["instances"], **twins.endpoints["alicloud"]["instances"])
    ec2 = twins.aws_client("ec2")
    before = aws_devices(ec2, ids["db"])
    set_id = take_aws_set(twins, ids["db"])
    group_id = take_ali_set(twins, ids["ali-db"])
    ali_before = ali_devices(twins, ids["ali-dst"])
    run = run_tasks([
        {RESTORE: {"provider": "aws", "set_id": set_id, "force": True}, "register": "replace"},
        {RESTORE: {"provider": "alicloud", "snapshot_ids": [ali_data_snapshot(twins, group_id)],
                   "target_instance_id": ids["ali-dst"], "force": True}, "register": "ali_replace"},
    ], twins.endpoints)
    in_service = restored(run, "replace")
    ali_in_service = restored(run, "ali_replace")
    assert sorted(in_service) == sorted(v for d, v in aws_devices(ec2, ids["db"]).items() if d != "/dev/xvda")
    assert set(ali_in_service) <= set(ali_devices(twins, ids["ali-dst"]).values())
    # A replace restore of an older release: only the replaced volume's replaced-by tag tells what happened.
    ec2.delete_tags(Resources=in_service[:1], Tags=[{"Key": "appconsistent:restore-mode"}])
    # One whose replaced volume lost its tag: the restored volume's own restore-mode tag still tells it.
    ec2.delete_tags(Resources=[before["/dev/xvdg"]], Tags=[{"Key": "appconsistent:replaced-by"}])

    twins.stats.reset()
    run = run_tasks([
        {REMOVE: {"provider": "aws", "volume_ids": in_service}, "register": "aws"},
        {REMOVE: {"provider": "alicloud", "volume_ids": ali_in_service}, "register": "ali"},
    ], twins.endpoints)
    for name, vids in (("aws", in_service), ("ali", ali_in_service)):
        result = run[name]
        assert result["failed"] and result["changed"] is False
        assert "a replace restore put it in place of" in result["msg"] and "Nothing was changed" in result["msg"]
        assert all(vid in result["msg"] for vid in vids), result["msg"]
    assert before["/dev/xvdf"] in run["aws"]["msg"]  # the volume it took the place of, where the tag names it
    counts = twins.stats.counts("aws")
    assert counts.get("DetachVolume", 0) == 0 and counts.get("DeleteVolume", 0) == 0
    ali_counts = twins.stats.counts("alicloud")
    assert ali_counts.get("DetachDisk", 0) == 0 and ali_counts.get("DeleteDisk", 0) == 0
    assert {v: aws_existing(ec2, in_service)[v]["State"] for v in in_service} == dict.fromkeys(in_service, "in-use")
    assert ali_devices(twins, ids["ali-dst"]) != ali_before and set(ali_in_service) <= set(
        ali_devices(twins, ids["ali-dst"]).values())
