"""Real block data: images, snapshots and point-in-time copies under concurrent writes."""

import os
import struct
import subprocess

import pytest

from twin.core import blockstore
from twin.core.blockstore import BlockStore, GIB
from twin.tests.helpers import pattern, snapshots_under_writer

REGION = 8 * 1024 * 1024  # bytes the writer rewrites as one write() per generation


def _loops_on(path):
    out = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=False).stdout
    return [line for line in out.splitlines() if path in line]


@pytest.fixture
def store(tmp_path):
    blocks = BlockStore(str(tmp_path / "store"))
    try:
        yield blocks
    finally:
        blocks.close()
    assert not _loops_on(str(tmp_path)), "block store left a loop device behind"


def test_create_is_sparse_and_sized(store):
    path = store.create(1)
    assert os.path.getsize(path) == GIB
    assert os.stat(path).st_blocks * 512 < 1024 * 1024
    assert store.contains(path)


def test_snapshot_and_volume_from_snapshot_keep_content(store):
    vol = store.create(0.01)
    with open(vol, "r+b") as handle:
        handle.seek(4096)
        handle.write(b"before")
    snap = store.snapshot(vol)
    with open(vol, "r+b") as handle:
        handle.seek(4096)
        handle.write(b"after!")
    restored = store.volume_from_snapshot(snap, size_gib=0.02)
    with open(restored, "rb") as handle:
        handle.seek(4096)
        assert handle.read(6) == b"before"
    assert os.path.getsize(restored) == int(0.02 * GIB)
    store.delete(restored)
    assert not os.path.exists(restored)


@pytest.mark.parametrize("reflink", ["auto", False], ids=["reflink-or-pool", "plain-copy"])
def test_snapshots_and_restores_stay_sparse(tmp_path, reflink):
    blocks = BlockStore(str(tmp_path / "store"), reflink=reflink)
    try:
        assert blocks.method in (("reflink", "xfs-pool", "copy") if reflink else ("copy",))
        vol = blocks.create(1)
        with open(vol, "r+b") as handle:
            handle.seek(512 * 1024 * 1024)
            handle.write(b"middle")
        snap = blocks.snapshot(vol)
        restored = blocks.volume_from_snapshot(snap)
        for path in (snap, restored):
            assert os.path.getsize(path) == GIB
            assert os.stat(path).st_blocks * 512 <= 4 * 1024 * 1024, f"{path} is not sparse ({blocks.method})"
            with open(path, "rb") as handle:
                handle.seek(512 * 1024 * 1024)
                assert handle.read(6) == b"middle"
    finally:
        blocks.close()
    assert not _loops_on(str(tmp_path)), "block store left a loop device behind"


def test_create_from_an_outside_source(store, tmp_path):
    source = tmp_path / "seed.img"
    source.write_bytes(b"x" * 5000)
    path = store.create(0.001, source=str(source))
    with open(path, "rb") as handle:
        assert handle.read(5000) == b"x" * 5000
    outside = str(source)
    store.delete(outside)  # never removes what is not the store's
    assert os.path.exists(outside)


def test_a_plain_copy_reads_only_the_data_extents_of_a_sparse_source(tmp_path):
    """A mostly empty image of many GiB is copied by its data, not by a read of every zero block."""
    source = tmp_path / "seed.img"
    with open(source, "wb") as handle:
        handle.truncate(64 * GIB)
        handle.seek(GIB)
        handle.write(b"a" * 10)
        handle.seek(64 * GIB - 3)
        handle.write(b"end")
    with open(source, "rb") as handle:
        extents = list(blockstore._data_extents(handle.fileno(), 64 * GIB))  # pylint: disable=protected-access
    assert sum(end - start for start, end in extents) <= 2 * 1024 * 1024, extents
    copy = tmp_path / "copy.img"
    blockstore._sparse_copy(str(source), str(copy))  # pylint: disable=protected-access
    assert os.path.getsize(copy) == 64 * GIB
    assert os.stat(copy).st_blocks * 512 <= 2 * 1024 * 1024
    with open(copy, "rb") as handle:
        handle.seek(GIB)
        assert handle.read(10) == b"a" * 10
        handle.seek(64 * GIB - 3)
        assert handle.read(3) == b"end"


def test_snapshot_under_a_running_writer_is_the_image_at_the_call_instant(store):
    if not store.point_in_time:
        pytest.skip(f"block store cannot clone here ({store.method}); point-in-time is not promised")
    vol = store.create(0.02)
    results = snapshots_under_writer(vol, lambda: store.snapshot(vol), 25, REGION)
    seen = set()
    for snap, done_before, started_after in results:
        with open(snap, "rb") as handle:
            data = handle.read(REGION)
        generation = struct.unpack_from("<Q", data)[0]
        # the copy is one whole generation, not a mix of two: what the image held at the call
        assert data == pattern(generation, REGION) if generation else data == bytes(REGION)
        assert done_before <= generation <= started_after
        seen.add(generation)
    assert len(seen) > 1, "the writer never advanced between snapshots"
