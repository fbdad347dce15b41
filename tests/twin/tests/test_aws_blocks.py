"""Real block data behind AWS twin volumes: point-in-time snapshots, restores that mount, a freeze through SSM."""

import os
import struct
import subprocess

import pytest

from twin.aws.testing import wait_command
from twin.tests.helpers import pattern, snapshots_under_writer

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loop devices and fsfreeze need root")
REGION = 1024 * 1024


def _sh(*argv):
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def mounts():
    """Loop-mounts made by a test; thawed and unmounted afterwards, also when the test fails."""
    made = []

    def mount(image, target, readonly=False):
        os.makedirs(target, exist_ok=True)
        _sh("mount", "-o", "loop,ro" if readonly else "loop", image, target)
        made.append(target)
        return target

    try:
        yield mount
    finally:
        for target in reversed(made):
            subprocess.run(["fsfreeze", "-u", target], capture_output=True, check=False)
            subprocess.run(["umount", target], capture_output=True, check=False)
        leftovers = _sh("findmnt", "-rn", "-o", "TARGET")
        assert not [t for t in made if t in leftovers.split()], "a test mount was left behind"


def _state(twins):
    return twins.aws.cloud.state()


def _image(twins, volume_id):
    return next(v["image"] for v in _state(twins)["volumes"] if v["id"] == volume_id)


def _snapshot_image(twins, snapshot_id):
    return next(s["image"] for s in _state(twins)["snapshots"] if s["id"] == snapshot_id)


def test_freeze_snapshot_restore_mount(twin_factory, mounts, tmp_path):
    seed = tmp_path / "seed.img"
    with open(seed, "wb") as handle:
        handle.truncate(64 * 1024 * 1024)
    _sh("mkfs.ext4", "-q", "-F", str(seed))
    data_mnt = str(tmp_path / "data")
    twins = twin_factory({"instances": [{
        "provider": "aws", "name": "db-local", "platform": "linux", "execution": "local",
        "volumes": [{"device": "/dev/xvda", "size": 8, "boot": True},
                    {"device": "/dev/xvdf", "size": 1, "image": str(seed), "mount": data_mnt}]}]},
        blockstore=True, alicloud=False)
    ec2, ssm = twins.aws_client("ec2"), twins.aws_client("ssm")
    iid = twins.aws.instances["db-local"]
    data_vol = next(v for v in _state(twins)["volumes"] if v["device"] == "/dev/xvdf")
    assert data_vol["image"] and twins.blockstore.contains(data_vol["image"])
    link = os.path.join(twins.blockstore.root, "instances", iid, "xvdf")
    assert os.path.realpath(link) == os.path.realpath(data_vol["image"])
    mounts(link, data_mnt)
    with open(os.path.join(data_mnt, "ledger.txt"), "w", encoding="utf-8") as handle:
        handle.write("balance=100\n")

    freeze = ssm.send_command(InstanceIds=[iid], DocumentName="AWS-RunShellScript",
                              Parameters={"commands": [f"fsfreeze -f {data_mnt}"]})["Command"]["CommandId"]
    assert wait_command(ssm, freeze)[iid]["Status"] == "Success"
    try:
        snaps = ec2.create_snapshots(InstanceSpecification={"InstanceId": iid, "ExcludeBootVolume": True})["Snapshots"]
    finally:
        thaw = ssm.send_command(InstanceIds=[iid], DocumentName="AWS-RunShellScript",
                                Parameters={"commands": [f"fsfreeze -u {data_mnt}"]})["Command"]["CommandId"]
        assert wait_command(ssm, thaw)[iid]["Status"] == "Success"
    assert [s["VolumeId"] for s in snaps] == [data_vol["id"]]
    with open(os.path.join(data_mnt, "ledger.txt"), "w", encoding="utf-8") as handle:
        handle.write("balance=0\n")

    restored = ec2.create_volume(SnapshotId=snaps[0]["SnapshotId"], AvailabilityZone="us-east-1a")
    ec2.attach_volume(VolumeId=restored["VolumeId"], InstanceId=iid, Device="/dev/xvdg")
    restored_image = _image(twins, restored["VolumeId"])
    assert restored_image and restored_image != data_vol["image"]
    assert os.path.realpath(os.path.join(twins.blockstore.root, "instances", iid, "xvdg")) == os.path.realpath(restored_image)
    check_mnt = mounts(restored_image, str(tmp_path / "restored"), readonly=True)
    with open(os.path.join(check_mnt, "ledger.txt"), encoding="utf-8") as handle:
        assert handle.read() == "balance=100\n"


def test_snapshot_through_the_api_is_the_image_at_the_call_instant(twin_factory):
    twins = twin_factory({"instances": [{"provider": "aws", "name": "busy", "platform": "linux",
                                         "volumes": [{"device": "/dev/xvda", "size": 8, "boot": True},
                                                     {"device": "/dev/xvdf", "size": 1}]}]},
                         blockstore=True, alicloud=False)
    if not twins.blockstore.point_in_time:
        pytest.skip(f"block store uses {twins.blockstore.method}: no point-in-time promise here")
    ec2 = twins.aws_client("ec2")
    volume_id = next(v["id"] for v in _state(twins)["volumes"] if v["device"] == "/dev/xvdf")
    # a volume without a fleet image gets one on demand for this test
    image = twins.blockstore.create(0.01)
    twins.aws.cloud.ext.volume_images[volume_id] = image
    taken = snapshots_under_writer(image, lambda: ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"], 15, REGION)
    generations = set()
    for snap, before, after in taken:
        with open(_snapshot_image(twins, snap), "rb") as handle:
            data = handle.read(REGION)
        generation = struct.unpack_from("<Q", data)[0]
        assert data == pattern(generation, REGION), "snapshot mixes two states of the volume"
        assert before <= generation <= after
        generations.add(generation)
    assert len(generations) > 1
    # the restored volume has the snapshot's bytes
    snap = taken[-1][0]
    restored = ec2.create_volume(SnapshotId=snap, AvailabilityZone="us-east-1a")
    with open(_image(twins, restored["VolumeId"]), "rb") as handle, open(_snapshot_image(twins, snap), "rb") as src:
        assert handle.read(REGION) == src.read(REGION)
    snap_image = _snapshot_image(twins, snap)
    ec2.delete_snapshot(SnapshotId=snap)
    assert not os.path.exists(snap_image)
