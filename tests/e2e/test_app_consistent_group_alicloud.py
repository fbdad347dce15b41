"""app_consistent_group on Alibaba Cloud Linux, offline with mounts: Cloud Assistant really unmounts a loop-mounted
filesystem of a local twin instance, the twin copies the disk's image into the group, and the filesystem is mounted
again."""

import json
import os
import signal
import subprocess

import pytest

from e2e.conftest import e2e_unavailable_reason

pytestmark = pytest.mark.skipif(e2e_unavailable_reason() is not None, reason=str(e2e_unavailable_reason()))

ACG = "appconsistent.snapshots.app_consistent_group"
STATE_DIR = "/run/appconsistent/offline"


def alicloud_fleet(mount):
    return {"instances": [{"provider": "alicloud", "name": "ali-db-1", "platform": "linux", "execution": "local",
                           "zone": "cn-hangzhou-h",
                           "volumes": [{"device": "/dev/xvda", "size": 40, "type": "cloud_essd", "boot": True},
                                       {"device": "/dev/xvdb", "size": 20, "type": "cloud_essd",
                                        "image": str(mount.image), "mount": str(mount.mountpoint)}]}]}


def _state_files():
    return set(os.listdir(STATE_DIR)) if os.path.isdir(STATE_DIR) else set()


def _forget_runs(before):
    """Disarms the remount watchdogs this test left and removes its state files, never another run's."""
    for name in sorted(_state_files() - before):
        path = os.path.join(STATE_DIR, name)
        if name.endswith(".watchdog"):
            try:
                with open(path, encoding="ascii") as handle:
                    os.kill(int(handle.read().strip()), signal.SIGTERM)
            except (OSError, ValueError):
                pass
        try:
            os.unlink(path)
        except OSError:
            pass


@pytest.fixture
def ali_db(fs_factory, tmp_path):
    """A twin Alibaba instance whose data disk is a loop-mounted ext4; stopped before the filesystem is removed."""
    from twin.core.blockstore import BlockStore
    from twin.launcher import start_twins
    mount = fs_factory.create("ext4")
    before = _state_files()
    # Plain copies are point-in-time enough here: the filesystem is unmounted while the group is taken.
    twins = start_twins(alicloud_fleet(mount), aws=False, blockstore=BlockStore(str(tmp_path / "blocks"), reflink=False))
    try:
        yield twins, twins.endpoints["alicloud"]["instances"]["ali-db-1"], mount
    finally:
        twins.stop()
        _forget_runs(before)


def data_disk(twins, iid):
    from alibabacloud_ecs20140526 import models
    body = twins.ecs_client().describe_disks(models.DescribeDisksRequest(
        region_id=twins.endpoints["alicloud"]["region"], instance_id=iid)).body.to_map()
    return next(d["DiskId"] for d in body["Disks"]["Disk"] if d["Device"] == "/dev/xvdb")


def snapshot_tags(twins, snapshot_ids):
    from alibabacloud_ecs20140526 import models
    body = twins.ecs_client().describe_snapshots(models.DescribeSnapshotsRequest(
        region_id=twins.endpoints["alicloud"]["region"], snapshot_ids=json.dumps(snapshot_ids))).body.to_map()
    return {s["SnapshotId"]: {t["TagKey"]: t["TagValue"] for t in (s.get("Tags") or {}).get("Tag", [])}
            for s in body["Snapshots"]["Snapshot"]}


def offline(iid, mount, disk_id, **extra):
    args = {"provider": "alicloud", "consistency": "offline", "instance_ids": [iid], "mounts": [str(mount.mountpoint)],
            "disk_ids": [disk_id], "delete_after": "1d"}
    args.update(extra)
    return {ACG: args}


def _mounted(path):
    return subprocess.run(["mountpoint", "-q", str(path)], check=False).returncode == 0


def _features(image):
    """The ext4 features of an image; ``needs_recovery`` is set while the filesystem is mounted."""
    out = subprocess.run(["dumpe2fs", "-h", str(image)], capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("Filesystem features:"))
    return line.split(":", 1)[1].split()


def test_offline_by_unmounting_a_data_filesystem(ali_db, run_tasks, tmp_path, fs_factory):
    twins, iid, mount = ali_db
    (mount.mountpoint / "keep.txt").write_text("data")
    disk_id = data_disk(twins, iid)
    assert "needs_recovery" in _features(mount.image)  # mounted: the journal is in use
    twins.stats.reset()
    task = offline(iid, mount, disk_id, run_id="CHG-OFF-1")
    run = run_tasks([dict(task, register="group")], twins.endpoints)
    result = run["group"]
    assert not result.get("failed"), result.get("msg")
    entry = result["results"][0]
    assert entry["consistency"] == "offline" and entry["status"] == "Created"
    assert entry["downtime"] > 0
    assert entry["set_id"].startswith("ssg-") and entry["invocation_id"].startswith("t-")
    assert [(s["disk_id"], s["device"]) for s in entry["snapshots"]] == [(disk_id, "/dev/xvdb")]
    assert _mounted(mount.mountpoint) and (mount.mountpoint / "keep.txt").read_text() == "data"
    assert fs_factory.writable(mount.mountpoint, within=2)
    counts = twins.stats.counts("alicloud")
    assert counts["RunCommand"] == 2  # one unmount, one remount
    assert counts["CreateSnapshotGroup"] == 1 and not counts.get("StopInstance")
    tags = snapshot_tags(twins, [s["snapshot_id"] for s in entry["snapshots"]])
    assert {t["appconsistent:consistency"] for t in tags.values()} == {"offline"}
    assert {t["appconsistent:run-id"] for t in tags.values()} == {"CHG-OFF-1"}
    # The group holds the filesystem as it was unmounted: a clean journal, and the file.
    state = twins.alicloud.state()
    image = next(s["image"] for s in state["snapshots"] if s["id"] == entry["snapshots"][0]["snapshot_id"])
    assert "needs_recovery" not in _features(image)
    from twin.alicloud.testing import mounted_readonly
    with mounted_readonly(image, str(tmp_path)) as copy:
        assert open(os.path.join(copy, "keep.txt"), encoding="utf-8").read() == "data"

    twins.stats.reset()
    again = run_tasks([dict(task, register="again")], twins.endpoints)["again"]
    assert not again.get("failed") and again["changed"] is False
    assert again["results"][0]["status"] == "Existing" and again["results"][0]["set_id"] == entry["set_id"]
    assert again["results"][0]["consistency"] == "offline"
    counts = twins.stats.counts("alicloud")
    assert not counts.get("RunCommand") and not counts.get("CreateSnapshotGroup")
    assert _mounted(mount.mountpoint)


def test_offline_refuses_a_busy_filesystem_and_names_the_process(ali_db, run_tasks):
    twins, iid, mount = ali_db
    disk_id = data_disk(twins, iid)
    twins.stats.reset()
    holder = subprocess.Popen(["sleep", "120"], cwd=str(mount.mountpoint))
    try:
        run = run_tasks([dict(offline(iid, mount, disk_id), register="group")], twins.endpoints)
    finally:
        holder.kill()
        holder.wait()
    entry = run["group"]["results"][0]
    assert run["group"]["failed"] is True
    assert entry["error"]["code"] == "Unmount3"
    assert f"sleep (pid {holder.pid})" in entry["error"]["message"]
    assert entry["snapshots"] == [] and entry["consistency"] == "none" and "downtime" not in entry
    assert _mounted(mount.mountpoint)
    counts = twins.stats.counts("alicloud")
    assert not counts.get("CreateSnapshotGroup")
    assert counts["RunCommand"] == 2  # the remount goes to every instance that got the unmount


def test_check_mode_sends_no_command_and_leaves_it_mounted(ali_db, run_tasks):
    twins, iid, mount = ali_db
    disk_id = data_disk(twins, iid)
    twins.stats.reset()
    run = run_tasks([dict(offline(iid, mount, disk_id), register="check")], twins.endpoints, check=True)
    result = run["check"]
    assert not result.get("failed"), result.get("msg")
    entry = result["results"][0]
    assert result["changed"] is True and entry["status"] == "WouldRun"
    assert entry["plan"]["unmount"] == [str(mount.mountpoint)] and entry["plan"]["remount"] == [str(mount.mountpoint)]
    assert entry["plan"]["action"] == "CreateSnapshotGroup"
    assert [d["disk_id"] for d in entry["plan"]["disks"]] == [disk_id]
    counts = twins.stats.counts("alicloud")
    assert not any(counts.get(a) for a in ("RunCommand", "CreateSnapshotGroup", "StopInstance", "TagResources")), counts
    assert _mounted(mount.mountpoint)
