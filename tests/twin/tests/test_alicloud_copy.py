"""The Alibaba twin's regions and CopySnapshot through the official SDK: resources per region, copies that carry the
block data into the destination region, status, validation and the concurrent-copy limit."""

from __future__ import annotations

import os

import pytest
from alibabacloud_ecs20140526 import models as m

from twin.tests.helpers import api_error, disk_images, read_block, wait_for, write_block

ROLE = "AppSnapshotRole"
HOME = "cn-hangzhou"
AWAY = "cn-shanghai"


def instance(name, zone=None, images=None, **extra):
    vols = [{"device": f"/dev/xvd{'ab'[n]}", "size": 20, "type": "cloud_essd", **({"image": images[n]} if images else {})}
            for n in range(2)]
    out = {"provider": "alicloud", "name": name, "role": ROLE, "volumes": vols}
    if zone:
        out["zone"] = zone
    out.update(extra)
    return out


@pytest.fixture
def images(tmp_path):
    return disk_images(tmp_path, "original")


@pytest.fixture
def ali(start_twin, images):
    return start_twin({"instances": [instance("db-1", images=images), instance("sh-1", zone="cn-shanghai-b")]})


def snapshots(client, region, **filters):
    return client.describe_snapshots(m.DescribeSnapshotsRequest(region_id=region, max_results=100, **filters)).body.snapshots.snapshot


def snapshot(client, region, snapshot_id):
    found = snapshots(client, region, snapshot_ids=f'["{snapshot_id}"]')
    return found[0] if found else None


def take_group(client, region, instance_id):
    group_id = client.create_snapshot_group(m.CreateSnapshotGroupRequest(region_id=region, instance_id=instance_id)).body.snapshot_group_id
    wait_for(lambda: all(s.status == "accomplished" for s in snapshots(client, region, instance_id=instance_id)))
    (group,) = client.describe_snapshot_groups(m.DescribeSnapshotGroupsRequest(
        region_id=region, snapshot_group_id=[group_id])).body.snapshot_groups.snapshot_group
    return {s.source_disk_id: s.snapshot_id for s in group.snapshots.snapshot}


def copy(client, snapshot_id, destination=AWAY, region=HOME, **extra):
    return client.copy_snapshot(m.CopySnapshotRequest(region_id=region, snapshot_id=snapshot_id, destination_region_id=destination,
                                                      **extra)).body.snapshot_id


def disk_of(ali, client, device, region=HOME, name="db-1"):
    disks = client.describe_disks(m.DescribeDisksRequest(region_id=region, instance_id=ali.instances[name])).body.disks.disk
    return next(d for d in disks if d.device == device)


# ---------------------------------------------------------------------------------------------- regions

def test_resources_belong_to_one_region_and_every_listing_honours_region_id(ali):
    client = ali.client()
    assert ali.regions[0] == HOME and {AWAY, "cn-beijing"} <= set(ali.regions)
    assert ali.endpoint()["regions"] == ali.regions
    db, sh = ali.instances["db-1"], ali.instances["sh-1"]
    home = client.describe_instances(m.DescribeInstancesRequest(region_id=HOME)).body.instances.instance
    away = client.describe_instances(m.DescribeInstancesRequest(region_id=AWAY)).body.instances.instance
    assert [(i.instance_id, i.region_id) for i in home] == [(db, HOME)]
    assert [(i.instance_id, i.region_id, i.zone_id) for i in away] == [(sh, AWAY, "cn-shanghai-b")]
    assert sh.startswith("i-uf6") and db.startswith("i-bp1")
    assert client.describe_instances(m.DescribeInstancesRequest(region_id="cn-beijing")).body.total_count == 0
    away_disks = client.describe_disks(m.DescribeDisksRequest(region_id=AWAY)).body.disks.disk
    assert {d.instance_id for d in away_disks} == {sh} and {d.region_id for d in away_disks} == {AWAY}
    # an instance of another region is unknown to a call that names this one
    err = api_error(client.create_snapshot_group, m.CreateSnapshotGroupRequest(region_id=HOME, instance_id=sh))
    assert err.code == "InvalidInstanceId.NotFound"
    err = api_error(client.run_command, m.RunCommandRequest(region_id=HOME, type="RunShellScript", command_content="true", instance_id=[sh]))
    assert err.code == "InvalidInstance.NotFound"
    group = client.create_snapshot_group(m.CreateSnapshotGroupRequest(region_id=AWAY, instance_id=sh)).body.snapshot_group_id
    assert group.startswith("ssg-uf6")
    listed = client.describe_snapshot_groups(m.DescribeSnapshotGroupsRequest(region_id=AWAY)).body.snapshot_groups.snapshot_group
    assert [g.snapshot_group_id for g in listed] == [group]
    assert client.describe_snapshot_groups(m.DescribeSnapshotGroupsRequest(region_id=HOME)).body.snapshot_groups.snapshot_group == []
    assert snapshots(client, HOME) == [] and len(snapshots(client, AWAY)) == 2
    err = api_error(client.delete_snapshot_group, m.DeleteSnapshotGroupRequest(region_id=HOME, snapshot_group_id=group))
    assert err.code == "InvalidSnapshotGroupId.NotFound"
    err = api_error(client.describe_disks, m.DescribeDisksRequest(region_id="eu-central-9"))
    assert (err.code, err.status_code) == ("InvalidRegionId.NotFound", 404)
    state = ali.state()
    assert state["regions"] == ali.regions
    assert {v["region"] for v in state["volumes"] if v["instance_id"] == sh} == {AWAY}


def test_the_regions_served_come_from_the_fleet(start_twin):
    ali = start_twin({"credentials": {"alicloud": {"region": "cn-shenzhen", "regions": ["cn-chengdu"]}},
                      "instances": [instance("sz-1"), instance("cd-1", zone="cn-chengdu-a")]})
    client = ali.client()
    assert ali.regions == ["cn-shenzhen", "cn-chengdu"]
    assert [i.zone_id for i in client.describe_instances(m.DescribeInstancesRequest(region_id="cn-shenzhen")).body.instances.instance] == ["cn-shenzhen-h"]
    assert [i.instance_name for i in client.describe_instances(m.DescribeInstancesRequest(region_id="cn-chengdu")).body.instances.instance] == ["cd-1"]
    assert api_error(client.describe_instances, m.DescribeInstancesRequest(region_id=AWAY)).code == "InvalidRegionId.NotFound"


# ---------------------------------------------------------------------------------------------- CopySnapshot

def test_a_copy_is_progressing_then_accomplished_in_the_destination_region(ali):
    client = ali.client()
    ali.latency.update({"profile": "zero", "transitions": {"snapshot_complete": 3.0}})
    db = ali.instances["db-1"]
    client.create_snapshot_group(m.CreateSnapshotGroupRequest(region_id=HOME, instance_id=db))
    source = snapshots(client, HOME, instance_id=db)[0]
    assert source.status == "progressing"
    err = api_error(copy, client, source.snapshot_id)
    assert (err.code, err.status_code) == ("IncorrectSnapshotStatus", 403)
    wait_for(lambda: snapshot(client, HOME, source.snapshot_id).status == "accomplished")
    new_id = copy(client, source.snapshot_id, destination_snapshot_name="copy-of-db", destination_snapshot_description="to Shanghai",
                  retention_days=30, encrypted=True, kmskey_id="key-1234",
                  tag=[m.CopySnapshotRequestTag(key="team", value="db"), m.CopySnapshotRequestTag(key="empty", value="")])
    assert new_id.startswith("s-uf6") and new_id != source.snapshot_id
    assert snapshot(client, HOME, new_id) is None  # the copy lives in the destination region only
    made = snapshot(client, AWAY, new_id)
    assert (made.status, made.available) == ("progressing", False)
    assert (made.region_id, made.source_snapshot_id, made.source_region_id) == (AWAY, source.snapshot_id, HOME)
    assert (made.snapshot_name, made.description, made.retention_days) == ("copy-of-db", "to Shanghai", 30)
    assert (made.encrypted, made.kmskey_id) == (True, "key-1234")
    assert (made.source_disk_id, made.source_disk_size) == (source.source_disk_id, source.source_disk_size)
    assert {t.tag_key: t.tag_value for t in made.tags.tag} == {"team": "db", "empty": ""}
    wait_for(lambda: snapshot(client, AWAY, new_id).status == "accomplished")
    done = snapshot(client, AWAY, new_id)
    assert (done.available, done.progress) == (True, "100%")
    # the source is untouched and the copy is found by its tags in the destination
    assert snapshot(client, HOME, source.snapshot_id).status == "accomplished"
    tagged = snapshots(client, AWAY, tag=[m.DescribeSnapshotsRequestTag(key="team", value="db")])
    assert [s.snapshot_id for s in tagged] == [new_id]


def test_a_copy_carries_the_block_data_to_disks_created_in_the_destination(ali, images):
    client = ali.client()
    members = take_group(client, HOME, ali.instances["db-1"])
    data_disk = disk_of(ali, client, "/dev/xvdb").disk_id
    new_id = copy(client, members[data_disk])
    write_block(images[1], "data: changed after the copy")
    wait_for(lambda: snapshot(client, AWAY, new_id).status == "accomplished")
    state = ali.state()
    copy_image = next(s["image"] for s in state["snapshots"] if s["id"] == new_id)
    source_image = next(s["image"] for s in state["snapshots"] if s["id"] == members[data_disk])
    assert copy_image and copy_image != source_image and read_block(copy_image) == "data: original"
    # a zone of another region, or the copy asked for in its source region, is refused
    err = api_error(client.create_disk, m.CreateDiskRequest(region_id=AWAY, zone_id="cn-hangzhou-h", snapshot_id=new_id, disk_category="cloud_essd"))
    assert err.code == "InvalidZoneId.NotFound"
    err = api_error(client.create_disk, m.CreateDiskRequest(region_id=HOME, zone_id="cn-hangzhou-h", snapshot_id=new_id, disk_category="cloud_essd"))
    assert err.code == "InvalidSnapshotId.NotFound"
    disk_id = client.create_disk(m.CreateDiskRequest(region_id=AWAY, zone_id="cn-shanghai-b", snapshot_id=new_id,
                                                     disk_category="cloud_essd")).body.disk_id
    (disk,) = client.describe_disks(m.DescribeDisksRequest(region_id=AWAY, disk_ids=f'["{disk_id}"]')).body.disks.disk
    assert (disk.region_id, disk.zone_id, disk.source_snapshot_id, disk.size) == (AWAY, "cn-shanghai-b", new_id, 20)
    restored = next(v["image"] for v in ali.state()["volumes"] if v["id"] == disk_id)
    assert read_block(restored) == "data: original"
    # and it can go onto an instance of that region, not onto one of the source region
    sh = ali.instances["sh-1"]
    client.attach_disk(m.AttachDiskRequest(instance_id=sh, disk_id=disk_id))
    (disk,) = client.describe_disks(m.DescribeDisksRequest(region_id=AWAY, disk_ids=f'["{disk_id}"]')).body.disks.disk
    assert (disk.status, disk.instance_id) == ("In_use", sh)
    client.detach_disk(m.DetachDiskRequest(instance_id=sh, disk_id=disk_id))
    client.delete_disk(m.DeleteDiskRequest(disk_id=disk_id))
    assert not os.path.exists(restored)
    client.delete_snapshot(m.DeleteSnapshotRequest(snapshot_id=new_id))
    assert not os.path.exists(copy_image) and os.path.exists(source_image)


def test_a_copy_cannot_roll_back_the_source_disk(ali):
    client = ali.client()
    db = ali.instances["db-1"]
    members = take_group(client, HOME, db)
    data_disk = disk_of(ali, client, "/dev/xvdb").disk_id
    back_home = copy(client, members[data_disk], destination=HOME)  # a copy within the region is allowed
    wait_for(lambda: snapshot(client, HOME, back_home).status == "accomplished")
    client.stop_instance(m.StopInstanceRequest(instance_id=db))
    wait_for(lambda: client.describe_instances(m.DescribeInstancesRequest(region_id=HOME)).body.instances.instance[0].status == "Stopped")
    err = api_error(client.reset_disk, m.ResetDiskRequest(disk_id=data_disk, snapshot_id=back_home))
    assert err.code == "InvalidSnapshotId.NotBelongToDisk"
    away = copy(client, members[data_disk])
    wait_for(lambda: snapshot(client, AWAY, away).status == "accomplished")
    assert api_error(client.reset_disk, m.ResetDiskRequest(disk_id=data_disk, snapshot_id=away)).code == "InvalidSnapshotId.NotFound"
    client.reset_disk(m.ResetDiskRequest(disk_id=data_disk, snapshot_id=members[data_disk]))


def test_copy_parameters_are_checked(ali):
    client = ali.client()
    members = take_group(client, HOME, ali.instances["db-1"])
    snap = next(iter(members.values()))
    err = api_error(client.copy_snapshot, m.CopySnapshotRequest(region_id=HOME, snapshot_id=snap))
    assert err.code == "MissingParameter" and "DestinationRegionId" in err.message
    err = api_error(client.copy_snapshot, m.CopySnapshotRequest(region_id=HOME, destination_region_id=AWAY))
    assert err.code == "MissingParameter" and "SnapshotId" in err.message
    assert api_error(copy, client, snap, destination="mars-north-1").code == "InvalidRegionId.NotFound"
    assert api_error(copy, client, snap, region="mars-north-1").code == "InvalidRegionId.NotFound"
    assert api_error(copy, client, "s-bp1doesnotexist00000").code == "InvalidSnapshotId.NotFound"
    assert api_error(copy, client, snap, region=AWAY, destination=HOME).code == "InvalidSnapshotId.NotFound"
    assert api_error(copy, client, snap, destination_snapshot_name="1-starts-with-a-digit").code == "InvalidParameter.DestinationSnapshotName"
    assert api_error(copy, client, snap, destination_snapshot_name="auto-copy").code == "InvalidParameter.DestinationSnapshotName"
    assert api_error(copy, client, snap, destination_snapshot_description="x").code == "InvalidDescription.Malformed"
    assert api_error(copy, client, snap, retention_days=0).code == "InvalidParameter.RetentionDays"
    tags = [m.CopySnapshotRequestTag(key=f"k{n}", value="v") for n in range(21)]
    assert api_error(copy, client, snap, tag=tags).code == "InvalidParameter.Tag"
    assert api_error(copy, client, snap, tag=[m.CopySnapshotRequestTag(key="aliyun:x", value="v")]).code == "InvalidTagKey.Malformed"
    assert snapshots(client, AWAY) == []


def test_a_repeated_client_token_gives_the_same_copy(ali):
    client = ali.client()
    snap = next(iter(take_group(client, HOME, ali.instances["db-1"]).values()))
    first = copy(client, snap, client_token="copy-token-1", destination_snapshot_name="once")
    again = copy(client, snap, client_token="copy-token-1", destination_snapshot_name="once")
    assert first == again and [s.snapshot_id for s in snapshots(client, AWAY)] == [first]
    err = api_error(copy, client, snap, client_token="copy-token-1", destination_snapshot_name="other")
    assert err.code == "IdempotentParameterMismatch"
    assert ali.stats.counts("alicloud")["CopySnapshot"] == 3


def test_the_concurrent_copy_limit_is_per_destination_region(ali):
    client = ali.client()
    members = list(take_group(client, HOME, ali.instances["db-1"]).values())
    ali.faults.update({"copy_concurrency_limit": {AWAY: 1}})
    ali.latency.update({"profile": "zero", "transitions": {"snapshot_complete": 3.0}})
    first = copy(client, members[0])
    err = api_error(copy, client, members[1])
    assert (err.code, err.status_code) == ("InvalidOperation.DiskHasUnfinishedSnapshotCopy", 403)
    beijing = copy(client, members[1], destination="cn-beijing")  # another destination region has its own limit
    wait_for(lambda: snapshot(client, AWAY, first).status == "accomplished")
    second = copy(client, members[1])
    assert {s.snapshot_id for s in snapshots(client, AWAY)} == {first, second}
    assert snapshot(client, "cn-beijing", beijing) is not None
    # the code is a setting, and a plain number limits every destination region
    ali.faults.update({"copy_concurrency_limit": 1, "copy_limit_code": "Throttling.Resource"})
    wait_for(lambda: snapshot(client, AWAY, second).status == "accomplished")
    copy(client, members[0], destination="cn-beijing")
    assert api_error(copy, client, members[1], destination="cn-beijing").code == "Throttling.Resource"


def test_one_unfinished_copy_per_disk_when_asked(ali):
    client = ali.client()
    members = list(take_group(client, HOME, ali.instances["db-1"]).values())
    client.create_snapshot_group(m.CreateSnapshotGroupRequest(region_id=HOME, instance_id=ali.instances["db-1"]))
    wait_for(lambda: all(s.status == "accomplished" for s in snapshots(client, HOME)))
    by_disk = {}
    for snap in snapshots(client, HOME):
        by_disk.setdefault(snap.source_disk_id, []).append(snap.snapshot_id)
    ali.faults.update({"copy_per_disk_limit": True, "copy_hang": True})
    one_disk, other_disk = list(by_disk.values())
    copy(client, one_disk[0])
    assert api_error(copy, client, one_disk[1]).code == "InvalidOperation.DiskHasUnfinishedSnapshotCopy"
    copy(client, other_disk[0])
    assert len(members) == 2 and len(snapshots(client, AWAY)) == 2


def test_copy_faults_fail_or_hold_the_copy(ali):
    client = ali.client()
    snap = next(iter(take_group(client, HOME, ali.instances["db-1"]).values()))
    ali.faults.update({"copy_error": True})
    failed = copy(client, snap)
    assert (snapshot(client, AWAY, failed).status, snapshot(client, AWAY, failed).available) == ("failed", False)
    err = api_error(client.create_disk, m.CreateDiskRequest(region_id=AWAY, zone_id="cn-shanghai-b", snapshot_id=failed, disk_category="cloud_essd"))
    assert err.code == "IncorrectSnapshotStatus"
    ali.faults.update({"copy_error": None, "copy_hang": True})
    held = copy(client, snap)
    assert snapshot(client, AWAY, held).status == "progressing"
    # a copy that never finishes does not hold up the next snapshot of the source disk
    client.create_snapshot_group(m.CreateSnapshotGroupRequest(region_id=HOME, instance_id=ali.instances["db-1"]))


def test_copies_are_in_no_group_and_found_by_a_tag_key_alone_or_with_its_value(ali):
    """What snapshot_set_info relies on to find a copied set: Tag.N.Key without a value matches any value."""
    client = ali.client()
    members = take_group(client, HOME, ali.instances["db-1"])
    set_tags = {"appconsistent:set-id": "acs-copy-1", "appconsistent:instance-id": ali.instances["db-1"]}
    copies = [copy(client, snap, tag=[m.CopySnapshotRequestTag(key=k, value=v) for k, v in set_tags.items()])
              for snap in members.values()]
    wait_for(lambda: all(snapshot(client, AWAY, c).status == "accomplished" for c in copies))

    def tagged(region, **tags):
        return sorted(s.snapshot_id for s in snapshots(client, region, tag=[m.DescribeSnapshotsRequestTag(key=k, value=v)
                                                                            for k, v in tags.items()]))

    assert tagged(AWAY, **{"appconsistent:set-id": None}) == sorted(copies)
    assert tagged(AWAY, **{"appconsistent:set-id": None, "appconsistent:instance-id": ali.instances["db-1"]}) == sorted(copies)
    assert tagged(AWAY, **{"appconsistent:set-id": "acs-copy-1"}) == sorted(copies)
    assert tagged(AWAY, **{"appconsistent:set-id": "acs-other"}) == []
    assert tagged(AWAY, **{"appconsistent:run-id": None}) == []
    # the source group's snapshots carry no tags of their own, and the copies are in no group
    assert tagged(HOME, **{"appconsistent:set-id": None}) == []
    assert client.describe_snapshot_groups(m.DescribeSnapshotGroupsRequest(region_id=AWAY)).body.snapshot_groups.snapshot_group == []
