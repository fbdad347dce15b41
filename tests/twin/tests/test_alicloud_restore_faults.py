"""Faults of the Alibaba twin that restore tests use, through the official SDK: an instance that will not stop,
CreateDisk, AttachDisk and ResetDisk failures, per instance, per disk or snapshot, and for chosen calls only."""

from __future__ import annotations

import time

import pytest
from alibabacloud_ecs20140526 import models as m

from twin.alicloud import server
from twin.tests.helpers import api_error, disk_images, read_block, wait_for, write_block

ROLE = "AppSnapshotRole"
REGION = "cn-hangzhou"
ZONE = "cn-hangzhou-h"


def instance(name, images=None, **extra):
    vols = [{"device": f"/dev/xvd{'ab'[n]}", "size": 20, "type": "cloud_essd", **({"image": images[n]} if images else {})}
            for n in range(2)]
    out = {"provider": "alicloud", "name": name, "role": ROLE, "zone": ZONE, "volumes": vols}
    out.update(extra)
    return out


@pytest.fixture
def images(tmp_path):
    return disk_images(tmp_path, "in the snapshot")


@pytest.fixture
def ali(images):
    handle = server.start({"instances": [instance("db-1", images=images), instance("web-1"),
                                         instance("stuck-1", faults={"stop_hang": True})]})
    try:
        yield handle
    finally:
        handle.stop()


def status(client, instance_id):
    body = client.describe_instances(m.DescribeInstancesRequest(region_id=REGION, instance_ids=f'["{instance_id}"]')).body
    return body.instances.instance[0].status


def disks(client, **filters):
    return client.describe_disks(m.DescribeDisksRequest(region_id=REGION, max_results=500, **filters)).body.disks.disk


def disk(client, disk_id):
    return disks(client, disk_ids=f'["{disk_id}"]')[0]


def data_disk(ali, client, name="db-1"):
    return next(d for d in disks(client, instance_id=ali.instances[name]) if d.device == "/dev/xvdb")


def group_snapshots(client, instance_id):
    client.create_snapshot_group(m.CreateSnapshotGroupRequest(region_id=REGION, instance_id=instance_id))
    snaps = client.describe_snapshots(m.DescribeSnapshotsRequest(region_id=REGION, instance_id=instance_id)).body.snapshots.snapshot
    return {s.source_disk_id: s.snapshot_id for s in snaps}


def create_disk(client, snapshot_id):
    return client.create_disk(m.CreateDiskRequest(region_id=REGION, zone_id=ZONE, snapshot_id=snapshot_id,
                                                  disk_category="cloud_essd")).body.disk_id


def test_an_instance_that_hangs_in_stopping_needs_a_forced_stop(ali):
    client = ali.client()
    stuck = ali.instances["stuck-1"]
    client.stop_instance(m.StopInstanceRequest(instance_id=stuck))
    time.sleep(0.2)
    assert status(client, stuck) == "Stopping"
    err = api_error(client.stop_instance, m.StopInstanceRequest(instance_id=stuck))
    assert (err.code, err.status_code) == ("IncorrectInstanceStatus", 403)
    assert api_error(client.start_instance, m.StartInstanceRequest(instance_id=stuck)).code == "IncorrectInstanceStatus"
    client.stop_instance(m.StopInstanceRequest(instance_id=stuck, force_stop=True))
    wait_for(lambda: status(client, stuck) == "Stopped")
    # set at run time, on an instance that stopped normally before
    web = ali.instances["web-1"]
    ali.faults.update({"instances": {"web-1": {"stop_hang": True}}})
    client.stop_instance(m.StopInstanceRequest(instance_id=web))
    time.sleep(0.2)
    assert status(client, web) == "Stopping"
    ali.faults.update({"instances": {"web-1": None}})
    client.stop_instance(m.StopInstanceRequest(instance_id=web, force_stop=True))
    wait_for(lambda: status(client, web) == "Stopped")


def test_create_disk_errors_leave_no_disk_behind(ali):
    client = ali.client()
    snaps = group_snapshots(client, ali.instances["db-1"])
    first, second = list(snaps.values())
    before = len(disks(client))
    ali.faults.update({"create_disk_error": True})
    err = api_error(create_disk, client, first)
    assert (err.code, err.status_code) == ("OperationDenied.NoStock", 403)
    assert len(disks(client)) == before
    # only the second call fails, with a code of the test's choosing
    ali.faults.update({"create_disk_error": {"code": "QuotaExceed.DiskCapacity", "skip": 1, "count": 1}})
    made = create_disk(client, first)
    assert api_error(create_disk, client, second).code == "QuotaExceed.DiskCapacity"
    made_too = create_disk(client, second)
    assert len(disks(client)) == before + 2 and made != made_too
    # per snapshot: disks from the other snapshot are still made
    ali.faults.update({"create_disk_error": None, "resources": {second: {"create_disk_error": "InvalidSnapshotId.NotReady"}}})
    assert api_error(create_disk, client, second).code == "InvalidSnapshotId.NotReady"
    create_disk(client, first)


def test_attach_errors_per_instance_per_disk_and_after_the_call(ali):
    client = ali.client()
    web = ali.instances["web-1"]
    snaps = list(group_snapshots(client, ali.instances["db-1"]).values())
    new = [create_disk(client, snaps[0]) for _n in range(3)]
    ali.faults.update({"instances": {"web-1": {"attach_error": {"skip": 1}}}})
    client.attach_disk(m.AttachDiskRequest(instance_id=web, disk_id=new[0]))
    err = api_error(client.attach_disk, m.AttachDiskRequest(instance_id=web, disk_id=new[1]))
    assert (err.code, err.status_code) == ("InvalidOperation.Conflict", 403)
    assert (disk(client, new[0]).status, disk(client, new[1]).status) == ("In_use", "Available")
    # per disk, whatever the instance
    ali.faults.update({"instances": {"web-1": None}, "resources": {new[2]: {"attach_error": "InvalidDiskId.NotPortable"}}})
    assert api_error(client.attach_disk, m.AttachDiskRequest(instance_id=web, disk_id=new[2])).code == "InvalidDiskId.NotPortable"
    client.attach_disk(m.AttachDiskRequest(instance_id=web, disk_id=new[1]))
    # accepted, then the disk falls back to Available unattached, as a failed attach does on Alibaba Cloud
    ali.faults.update({"resources": {new[2]: {"attach_error": {"mode": "async"}}}})
    ali.latency.update({"profile": "zero", "transitions": {"volume_attach": 0.3}})
    client.attach_disk(m.AttachDiskRequest(instance_id=web, disk_id=new[2]))
    assert disk(client, new[2]).status == "Attaching"
    wait_for(lambda: disk(client, new[2]).status != "Attaching")
    assert (disk(client, new[2]).status, disk(client, new[2]).instance_id) == ("Available", "")
    assert sorted(d.disk_id for d in disks(client, instance_id=web) if d.disk_id in new) == sorted(new[:2])


def test_reset_errors_change_no_data(ali, images):
    client = ali.client()
    db = ali.instances["db-1"]
    snaps = group_snapshots(client, db)
    write_block(images[0], "sys: later")
    write_block(images[1], "data: later")
    client.stop_instance(m.StopInstanceRequest(instance_id=db))
    wait_for(lambda: status(client, db) == "Stopped")
    data = data_disk(ali, client).disk_id
    system = next(d for d in snaps if d != data)
    ali.faults.update({"resources": {data: {"reset_error": True}}})
    err = api_error(client.reset_disk, m.ResetDiskRequest(disk_id=data, snapshot_id=snaps[data]))
    assert (err.code, err.status_code) == ("IncorrectDiskStatus", 403)
    # ResetDisks checks every disk first: one faulty disk resets none
    err = api_error(client.reset_disks, m.ResetDisksRequest(region_id=REGION, disk=[
        m.ResetDisksRequestDisk(disk_id=system, snapshot_id=snaps[system]), m.ResetDisksRequestDisk(disk_id=data, snapshot_id=snaps[data])]))
    assert err.code == "IncorrectDiskStatus"
    assert [read_block(p) for p in images] == ["sys: later", "data: later"]
    client.reset_disk(m.ResetDiskRequest(disk_id=system, snapshot_id=snaps[system]))
    assert read_block(images[0]) == "sys: in the snapshot"
    # per instance, for the first call only
    ali.faults.update({"resources": None, "instances": {"db-1": {"reset_error": {"code": "InternalError", "count": 1}}}})
    err = api_error(client.reset_disk, m.ResetDiskRequest(disk_id=data, snapshot_id=snaps[data]))
    assert (err.code, err.status_code) == ("InternalError", 500)
    assert read_block(images[1]) == "data: later"
    client.reset_disk(m.ResetDiskRequest(disk_id=data, snapshot_id=snaps[data]))
    assert read_block(images[1]) == "data: in the snapshot"
