"""Real block data for twin volumes and snapshots: sparse image files.

A snapshot must be a copy of the volume *at the instant of the call*, even while something keeps
writing to the image.  The store therefore clones files with ``FICLONE`` (a reflink), which the
kernel performs under the inode locks of both files, so a concurrent ``write`` lands either
wholly before or wholly after the clone.  Where the store's directory cannot reflink (ext4, for
instance) and we run as root with ``mkfs.xfs`` available, the store makes its own small XFS
filesystem with ``reflink=1`` on a loop-mounted sparse file and keeps every image there.  Failing
that it falls back to a plain sparse copy, which is *not* point-in-time under concurrent writes;
``point_in_time`` tells which one is in use.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
import subprocess
import threading
import uuid
from typing import Optional

LOG = logging.getLogger(__name__)

FICLONE = 0x40049409  # _IOW(0x94, 9, int) from linux/fs.h
GIB = 1024 ** 3
CHUNK = 1024 * 1024


class BlockStoreError(RuntimeError):
    """The store cannot do what was asked."""


def _clone(src: str, dst: str) -> None:
    with open(src, "rb") as fsrc, open(dst, "wb") as fdst:
        fcntl.ioctl(fdst.fileno(), FICLONE, fsrc.fileno())


def _sparse_copy(src: str, dst: str) -> None:
    """Copies only the data extents of ``src`` (found with SEEK_DATA/SEEK_HOLE), so that a mostly empty image of
    many GiB costs what its data costs, not a read of every zero; where the filesystem cannot tell the holes, reads
    it all and skips the zero blocks."""
    with open(src, "rb") as fsrc, open(dst, "wb") as fdst:
        size = os.fstat(fsrc.fileno()).st_size
        fdst.truncate(size)
        try:
            extents = list(_data_extents(fsrc.fileno(), size))
        except OSError:
            extents = [(0, size)]
        for start, end in extents:
            _copy_range(fsrc, fdst, start, end)


def _data_extents(fd: int, size: int):
    """(start, end) of each data extent of the open file ``fd``."""
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data after offset
                return
            raise
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        yield start, end
        offset = end


def _copy_range(fsrc, fdst, start: int, end: int) -> None:
    zero = bytes(CHUNK)
    fsrc.seek(start)
    fdst.seek(start)
    position = start
    while position < end:
        block = fsrc.read(min(CHUNK, end - position))
        if not block:
            break
        if block == zero[:len(block)]:
            fdst.seek(len(block), os.SEEK_CUR)
        else:
            fdst.write(block)
        position += len(block)


def _can_reflink(directory: str) -> bool:
    probe_src = os.path.join(directory, f".reflink-probe-{uuid.uuid4().hex}")
    probe_dst = probe_src + ".clone"
    try:
        with open(probe_src, "wb") as handle:
            handle.write(b"probe")
        _clone(probe_src, probe_dst)
        return True
    except OSError:
        return False
    finally:
        for path in (probe_src, probe_dst):
            if os.path.exists(path):
                os.unlink(path)


class BlockStore:
    """Image files for volumes and snapshots under ``root_dir``.

    ``reflink``: ``"auto"`` (reflink if possible, else an XFS pool, else plain copies), ``True``
    (point-in-time required: raise if impossible) or ``False`` (plain sparse copies).
    Call :meth:`close` to unmount the pool, if one was made.
    """

    def __init__(self, root_dir: str, reflink="auto", pool_gib: int = 64):
        self.root = os.path.abspath(root_dir)
        os.makedirs(self.root, exist_ok=True)
        self._lock = threading.Lock()
        self._pool_mount: Optional[str] = None
        self._pool_image: Optional[str] = None
        self.data_dir = os.path.join(self.root, "images")
        self.method = "copy"
        if reflink:
            os.makedirs(self.data_dir, exist_ok=True)
            if _can_reflink(self.data_dir):
                self.method = "reflink"
            else:
                self._make_pool(pool_gib, required=reflink is True)
        else:
            os.makedirs(self.data_dir, exist_ok=True)

    @property
    def point_in_time(self) -> bool:
        """True when snapshots are atomic against concurrent writes to the source image."""
        return self.method in ("reflink", "xfs-pool")

    def _make_pool(self, pool_gib: int, required: bool) -> None:
        reason = None
        if os.geteuid() != 0:
            reason = "not running as root"
        elif not shutil.which("mkfs.xfs"):
            reason = "mkfs.xfs not found (Debian package xfsprogs)"
        if reason is None:
            image = os.path.join(self.root, "pool.img")
            mount = os.path.join(self.root, "pool")
            try:
                with open(image, "wb") as handle:
                    handle.truncate(pool_gib * GIB)
                subprocess.run(["mkfs.xfs", "-q", "-f", "-m", "reflink=1", image], check=True, capture_output=True)
                os.makedirs(mount, exist_ok=True)
                subprocess.run(["mount", "-o", "loop", image, mount], check=True, capture_output=True)
                self._pool_image, self._pool_mount = image, mount
                self.data_dir = mount
                if _can_reflink(mount):
                    self.method = "xfs-pool"
                    return
                reason = "the XFS pool does not reflink"
            except (OSError, subprocess.CalledProcessError) as exc:
                stderr = getattr(exc, "stderr", b"") or b""
                reason = f"cannot make the XFS pool: {exc} {stderr.decode(errors='replace').strip()}"
        if required:
            self.close()
            raise BlockStoreError(f"point-in-time snapshots unavailable: {reason}")
        LOG.warning("block store falls back to plain sparse copies (not point-in-time): %s", reason)
        self.method = "copy"

    def _new_path(self, kind: str) -> str:
        return os.path.join(self.data_dir, f"{kind}-{uuid.uuid4().hex[:17]}.img")

    def _copy(self, src: str, dst: str) -> None:
        if self.method != "copy":
            try:
                _clone(src, dst)
                return
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                # a source outside the store (another filesystem) can only be copied
        _sparse_copy(src, dst)

    def contains(self, path: str) -> bool:
        return os.path.abspath(path).startswith(self.data_dir + os.sep)

    def create(self, size_gib: float, source: Optional[str] = None) -> str:
        """A new sparse image of ``size_gib`` GiB, empty or with the content of ``source``."""
        path = self._new_path("vol")
        size = int(size_gib * GIB)
        if source:
            self._copy(source, path)
            if os.path.getsize(path) < size:
                os.truncate(path, size)
        else:
            with open(path, "wb") as handle:
                handle.truncate(size)
        return path

    def snapshot(self, image_path: str) -> str:
        """A point-in-time copy of ``image_path`` (see the module docstring)."""
        path = self._new_path("snap")
        self._copy(image_path, path)
        return path

    def volume_from_snapshot(self, snapshot_path: str, size_gib: Optional[float] = None) -> str:
        """A new volume image with the content of a snapshot (grown to ``size_gib`` if larger)."""
        path = self._new_path("vol")
        self._copy(snapshot_path, path)
        if size_gib and os.path.getsize(path) < int(size_gib * GIB):
            os.truncate(path, int(size_gib * GIB))
        return path

    def delete(self, path: str) -> None:
        """Remove an image of this store (paths outside the store are left alone)."""
        if self.contains(path) and os.path.exists(path):
            os.unlink(path)

    def close(self) -> None:
        """Unmount and remove the XFS pool, if any.  Images outside a pool stay on disk."""
        with self._lock:
            if self._pool_mount:
                result = subprocess.run(["umount", self._pool_mount], capture_output=True, check=False)
                if result.returncode != 0:
                    # something (a test's loop mount of an image) still holds it; detach when free
                    subprocess.run(["umount", "-l", self._pool_mount], capture_output=True, check=False)
                try:
                    os.rmdir(self._pool_mount)
                except OSError:
                    pass
                self._pool_mount = None
            if self._pool_image and os.path.exists(self._pool_image):
                os.unlink(self._pool_image)
                self._pool_image = None

    def __enter__(self) -> "BlockStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
