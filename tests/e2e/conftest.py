"""Fixtures for end-to-end tests on real filesystems.

``fs_factory`` creates loop-device filesystems (ext4, xfs, btrfs and its subvolumes), tmpfs and bind mounts in the
test's temporary directory and always removes them at teardown, also when the test fails:
every filesystem is thawed (``fsfreeze -u``, errors ignored) before it is unmounted
(``umount``, ``umount -l`` as a last resort) and its loop device detached. Writers that a
test left blocked on a frozen filesystem are reaped after the thaw. Teardown then checks
that no device or mount of the test is left.

``freeze_helper`` runs the instance-side freeze helper with a private ``--state-dir`` and
stops any watchdog the test left armed before the filesystems are removed.
``script_dir`` is a root-owned directory outside world-writable trees, where pre/post
scripts pass the helper's ownership checks. Database e2e tests reuse all three.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
# Overridable so that the same tests can check a helper installed elsewhere (by the role).
HELPER = Path(os.environ.get("APPCONSISTENT_FREEZE_HELPER",
                             REPO_ROOT / "roles" / "consistency_scripts" / "files" / "appconsistent-freeze"))

# mkfs.xfs refuses filesystems smaller than 300 MiB, mkfs.btrfs those under about 110 MiB; the images are sparse.
IMAGE_MB = {"ext4": 32, "xfs": 320, "btrfs": 128}
MKFS = {"ext4": ["mkfs.ext4", "-q", "-F"], "xfs": ["mkfs.xfs", "-q", "-f"], "btrfs": ["mkfs.btrfs", "-q", "-f"]}
COMMAND_TIMEOUT = 60


def _run(argv, check=True, timeout=COMMAND_TIMEOUT):
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=timeout)


def e2e_unavailable_reason() -> str | None:
    """Why this machine cannot run the e2e tests, or None."""
    if os.geteuid() != 0:
        return "e2e tests need root (loop devices, mount, fsfreeze)"
    for tool in ("losetup", "mount", "umount", "fsfreeze", "mkfs.ext4", "findmnt"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not os.path.exists("/dev/loop-control"):
        return "no loop device support (/dev/loop-control missing)"
    return None


@dataclass
class Mount:
    """A filesystem mounted by a test."""

    mountpoint: Path
    fstype: str
    device: str | None = None
    image: Path | None = None

    def __str__(self) -> str:
        return str(self.mountpoint)


@dataclass
class Writer:
    """A process writing one byte to a file, which blocks while its filesystem is frozen."""

    path: Path
    proc: subprocess.Popen = field(repr=False)

    def done_within(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return True
            time.sleep(0.05)
        return self.proc.poll() is not None

    @property
    def returncode(self):
        return self.proc.poll()


class FilesystemFactory:
    """Creates filesystems for one test and tears all of them down."""

    def __init__(self, base: Path):
        self.base = base
        self.mounts: list[Mount] = []
        self.writers: list[Writer] = []
        self._images = 0

    def create(self, fstype: str = "ext4", mountpoint: Path | str | None = None, size_mb: int | None = None) -> Mount:
        if fstype not in MKFS:
            raise ValueError(f"unsupported fstype {fstype}")
        if shutil.which(MKFS[fstype][0]) is None:
            pytest.skip(f"{MKFS[fstype][0]} is not installed")
        self._images += 1
        image = self.base / f"disk{self._images}.img"
        with open(image, "wb") as handle:
            handle.truncate(max(size_mb or 0, IMAGE_MB[fstype]) * 1024 * 1024)
        _run(MKFS[fstype] + [str(image)])
        target = Path(mountpoint) if mountpoint else self.base / f"mnt{self._images}"
        target.mkdir(parents=True, exist_ok=True)
        device = _run(["losetup", "--find", "--show", str(image)]).stdout.strip()
        mount = Mount(target, fstype, device, image)
        # Registered before mounting, so a failed mount still gets its device detached.
        self.mounts.append(mount)
        _run(["mount", "-t", fstype, device, str(target)])
        return mount

    def subvolume(self, parent: Mount, name: str, mountpoint: Path | str | None = None) -> Mount:
        """Creates btrfs subvolume ``name`` at the top of ``parent`` (a btrfs that fs_factory created) and mounts it
        on its own, as SLES and openSUSE mount /srv, /var and /home."""
        if parent.fstype != "btrfs" or parent.device is None:
            raise ValueError("subvolumes are made on a btrfs created by fs_factory")
        _run(["btrfs", "subvolume", "create", str(parent.mountpoint / name)])
        self._images += 1
        target = Path(mountpoint) if mountpoint else self.base / f"mnt{self._images}-{name}"
        target.mkdir(parents=True, exist_ok=True)
        # No device of its own: the loop device is the parent's, detached with it.
        mount = Mount(target, "btrfs")
        self.mounts.append(mount)
        _run(["mount", "-t", "btrfs", "-o", f"subvol={name}", parent.device, str(target)])
        return mount

    def tmpfs(self, mountpoint: Path | str) -> Mount:
        target = Path(mountpoint)
        target.mkdir(parents=True, exist_ok=True)
        mount = Mount(target, "tmpfs")
        self.mounts.append(mount)
        _run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(target)])
        return mount

    def bind(self, source: Mount, mountpoint: Path | str) -> Mount:
        target = Path(mountpoint)
        target.mkdir(parents=True, exist_ok=True)
        mount = Mount(target, "bind")
        self.mounts.append(mount)
        _run(["mount", "--bind", str(source.mountpoint), str(target)])
        return mount

    def start_write(self, directory: Path | str, name: str = "probe") -> Writer:
        path = Path(directory) / name
        proc = subprocess.Popen(["sh", "-c", 'printf x >> "$1"', "sh", str(path)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        writer = Writer(path, proc)
        self.writers.append(writer)
        return writer

    def writable(self, directory: Path | str, within: float = 5.0) -> bool:
        """True if a write to the directory completes within the given time."""
        return self.start_write(directory).done_within(within)

    def _is_mounted(self, target: Path) -> bool:
        return _run(["findmnt", "-n", "--mountpoint", str(target)], check=False).returncode == 0

    def cleanup(self) -> list[str]:
        problems: list[str] = []
        # Thaw everything first (deepest last-created first is not needed for thaw, but a
        # parent frozen over a child would block the child's path lookups).
        for mount in sorted(self.mounts, key=lambda m: len(m.mountpoint.parts)):
            if self._is_mounted(mount.mountpoint):
                _run(["fsfreeze", "-u", str(mount.mountpoint)], check=False)
        for writer in self.writers:
            try:
                writer.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                writer.proc.kill()
                writer.proc.wait(timeout=10)
        for mount in reversed(self.mounts):
            while self._is_mounted(mount.mountpoint):
                if _run(["umount", str(mount.mountpoint)], check=False).returncode != 0:
                    _run(["fsfreeze", "-u", str(mount.mountpoint)], check=False)
                    if _run(["umount", str(mount.mountpoint)], check=False).returncode != 0:
                        _run(["umount", "-l", str(mount.mountpoint)], check=False)
                        break
            if mount.device:
                _run(["losetup", "-d", mount.device], check=False)
        attached = _run(["losetup", "-a"], check=False).stdout
        mounted = _run(["findmnt", "-rn", "-o", "TARGET"], check=False).stdout.splitlines()
        for mount in self.mounts:
            if mount.image is not None and str(mount.image) in attached:
                problems.append(f"loop device for {mount.image} still attached")
            if str(mount.mountpoint) in mounted:
                problems.append(f"{mount.mountpoint} still mounted")
        return problems


@pytest.fixture
def fs_factory(tmp_path):
    reason = e2e_unavailable_reason()
    if reason:
        pytest.skip(reason)
    factory = FilesystemFactory(tmp_path)
    try:
        yield factory
    finally:
        problems = factory.cleanup()
    assert not problems, problems


@pytest.fixture
def helper_path():
    return HELPER


@pytest.fixture(name="write_script")
def write_script_fixture():
    return write_script


@pytest.fixture(name="parse_helper_output")
def parse_helper_output_fixture():
    return parse_helper_output


@pytest.fixture
def script_dir():
    """A root-owned 0700 directory whose whole path is closed to group and others."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    parent = Path("/run")
    info = parent.stat()
    if info.st_uid != 0 or info.st_mode & 0o022:
        pytest.skip("/run is not a root-only-writable directory on this machine")
    path = Path(tempfile.mkdtemp(prefix="appconsistent-test-", dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def write_script(path: Path, body: str, mode: int = 0o700) -> Path:
    """Writes a /bin/sh script with the given body and mode."""
    path.write_text("#!/bin/sh\n" + body)
    os.chmod(path, mode)
    return path


@dataclass
class HelperResult:
    rc: int
    doc: dict
    stdout: str
    stderr: str


def parse_helper_output(rc: int, stdout: str, stderr: str) -> HelperResult:
    lines = stdout.splitlines()
    assert len(lines) == 1, f"expected exactly one line on stdout, got {stdout!r} (stderr {stderr!r})"
    doc = json.loads(lines[0])
    assert doc["exit_code"] == rc, (doc, stderr)
    return HelperResult(rc, doc, stdout, stderr)


class FreezeHelper:
    """Runs the freeze helper against a private state directory."""

    def __init__(self, state_dir: Path, absent_dir: Path):
        self.state_dir = state_dir
        # Scripts default to paths that do not exist, so the machine's own
        # /usr/local/lib/appconsistent never leaks into a test.
        self.no_prescript = absent_dir / "prescript.sh"
        self.no_postscript = absent_dir / "postscript.sh"
        self.procs: list[subprocess.Popen] = []

    def argv(self, action, *, mounts=(), run_id=None, timeout=None, prescript=None, postscript=None,
             script_timeout=None, extra=(), command=None, state_dir=True):
        argv = [str(HELPER), action]
        for mount in mounts:
            argv += ["--mount", str(mount)]
        if run_id is not None:
            argv += ["--run-id", run_id]
        if timeout is not None:
            argv += ["--timeout", str(timeout)]
        if action in ("freeze", "run"):
            argv += ["--prescript", str(prescript or self.no_prescript)]
            argv += ["--postscript", str(postscript or self.no_postscript)]
        if script_timeout is not None:
            argv += ["--script-timeout", str(script_timeout)]
        if state_dir:
            argv += ["--state-dir", str(self.state_dir)]
        argv += list(extra)
        if command is not None:
            argv += ["--"] + list(command)
        return argv

    def __call__(self, action, proc_timeout=COMMAND_TIMEOUT, **kwargs) -> HelperResult:
        proc = subprocess.run(self.argv(action, **kwargs), capture_output=True, text=True, timeout=proc_timeout,
                              stdin=subprocess.DEVNULL, check=False)
        return parse_helper_output(proc.returncode, proc.stdout, proc.stderr)

    def start(self, action, **kwargs) -> subprocess.Popen:
        """Starts the helper in its own session (so a test can kill its process group)."""
        proc = subprocess.Popen(self.argv(action, **kwargs), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.procs.append(proc)
        return proc

    def wait_state(self, run_id: str, states, within: float = 20.0) -> dict:
        deadline = time.monotonic() + within
        doc: dict = {}
        while time.monotonic() < deadline:
            doc = self("status", run_id=run_id).doc
            if doc["state"] in states:
                return doc
            time.sleep(0.1)
        raise AssertionError(f"run {run_id} did not reach {states}: {doc}")

    def watchdog_pids(self) -> list[int]:
        """Watchdogs started with this helper's state directory."""
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    args = handle.read().split(b"\0")
            except OSError:
                continue
            if b"_watchdog" in args and str(self.state_dir).encode() in args:
                pids.append(int(entry))
        return pids

    def cleanup(self):
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.communicate(timeout=COMMAND_TIMEOUT)
        # A watchdog left armed by a failed test thaws at once when asked to stop; give it
        # that chance before the filesystems go away, then make sure it is gone.
        for pid in self.watchdog_pids():
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while self.watchdog_pids() and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in self.watchdog_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def freeze_helper(fs_factory, tmp_path):  # pylint: disable=redefined-outer-name,unused-argument
    """Depends on fs_factory so that its teardown (watchdogs) runs before the unmounts."""
    state_dir = tmp_path / "state"
    absent = tmp_path / "no-scripts"
    absent.mkdir()
    helper = FreezeHelper(state_dir, absent)
    try:
        yield helper
    finally:
        helper.cleanup()


# The freeze and unmount helpers that app_consistent_group runs on the twin's local instances keep their records in
# their default state directory, as on a real instance. The tests remove what they added there, so that a run leaves
# nothing outside the tree (a directory that was not there before goes whole).
HELPER_STATE_DIR = Path("/run/appconsistent")
HELPER_RECORD_DIRS = ("runs", "offline")


def _helper_records() -> set[Path]:
    return {entry for sub in HELPER_RECORD_DIRS if (HELPER_STATE_DIR / sub).is_dir()
            for entry in (HELPER_STATE_DIR / sub).iterdir()}


@pytest.fixture(scope="session", autouse=True)
def helper_records_removed():
    existed = HELPER_STATE_DIR.exists()
    before = _helper_records()
    yield
    if not existed:
        shutil.rmtree(HELPER_STATE_DIR, ignore_errors=True)
        return
    for entry in _helper_records() - before:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
