"""End-to-end tests of the offline unmount/remount scripts (plugins/module_utils/unmount.py) on real loop-mounted
filesystems: ext4, xfs, btrfs subvolumes and bind mounts. The scripts run here as the agent runs them (bash, as root),
and each test checks what an operator would: is the data mounted again, at its place, with its content."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from ansible_collections.appconsistent.snapshots.plugins.module_utils.unmount import (
    parse_report, remount_command, unmount_command)

STATE_DIR = Path("/run/appconsistent/offline")


class Offline:
    """Runs the unmount and remount commands of this test's runs and forgets them at teardown."""

    def __init__(self, prefix):
        self.prefix = prefix
        self.run_ids: list[str] = []

    def _run(self, command):
        proc = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120, check=False,
                              stdin=subprocess.DEVNULL)
        report = parse_report(proc.stdout)
        assert report is not None, (proc.stdout, proc.stderr)
        assert report["exit_code"] == proc.returncode, (report, proc.stderr)
        return report

    def unmount(self, run_id, mounts, deadline=120):
        run_id = f"{self.prefix}-{run_id}"
        self.run_ids.append(run_id)
        return self._run(unmount_command(run_id, [str(m) for m in mounts], deadline))

    def remount(self, run_id):
        return self._run(remount_command(f"{self.prefix}-{run_id}"))

    def cleanup(self):
        for run_id in self.run_ids:
            watchdog = STATE_DIR / f"{run_id}.watchdog"
            if watchdog.exists():
                try:
                    os.killpg(int(watchdog.read_text().strip()), signal.SIGKILL)
                except (OSError, ValueError):
                    pass
            for suffix in (".watchdog", ".mounts", ".remount"):
                (STATE_DIR / f"{run_id}{suffix}").unlink(missing_ok=True)


@pytest.fixture
def offline(fs_factory):  # pylint: disable=unused-argument
    """Depends on fs_factory, so that the watchdogs are gone before the filesystems are removed."""
    runs = Offline(f"e2e-{os.getpid()}-{time.monotonic_ns()}")
    try:
        yield runs
    finally:
        runs.cleanup()


def mounted(path) -> bool:
    return subprocess.run(["mountpoint", "-q", str(path)], check=False, timeout=30).returncode == 0


def mark(mount, text):
    (Path(mount.mountpoint) / "marker").write_text(text)


def marker(mount) -> str | None:
    path = Path(mount.mountpoint) / "marker"
    return path.read_text() if path.exists() else None


def wait_mounted(paths, within):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if all(mounted(p) for p in paths):
            return True
        time.sleep(0.2)
    return all(mounted(p) for p in paths)


@pytest.mark.parametrize("fstype", ["ext4", "xfs"])
def test_a_filesystem_is_unmounted_and_mounted_again(fs_factory, offline, fstype):
    mount = fs_factory.create(fstype)
    mark(mount, fstype)

    down = offline.unmount("plain", [mount])
    assert down["exit_code"] == 0, down
    assert not mounted(mount.mountpoint)

    up = offline.remount("plain")
    assert up["exit_code"] == 0, up
    assert mounted(mount.mountpoint) and marker(mount) == fstype


def test_btrfs_subvolumes_are_mounted_again_as_the_same_subvolumes(fs_factory, offline):
    top = fs_factory.create("btrfs")
    first = fs_factory.subvolume(top, "@a")
    second = fs_factory.subvolume(top, "@b")
    mark(first, "a")
    mark(second, "b")
    subprocess.run(["umount", str(top.mountpoint)], check=True, timeout=30)

    down = offline.unmount("subvolumes", [first, second])
    assert down["exit_code"] == 0, down
    assert not mounted(first.mountpoint) and not mounted(second.mountpoint)

    # Before: the record kept findmnt's source "/dev/loopN[/@a]", which mount cannot use; the data stayed unmounted.
    up = offline.remount("subvolumes")
    assert up["exit_code"] == 0, up
    assert mounted(first.mountpoint) and mounted(second.mountpoint)
    assert (marker(first), marker(second)) == ("a", "b")


def test_the_watchdog_mounts_btrfs_subvolumes_again_at_the_deadline(fs_factory, offline):
    top = fs_factory.create("btrfs")
    data = fs_factory.subvolume(top, "@data")
    mark(data, "data")
    subprocess.run(["umount", str(top.mountpoint)], check=True, timeout=30)

    down = offline.unmount("watchdog", [data], deadline=2)
    assert down["exit_code"] == 0, down
    assert not mounted(data.mountpoint)

    # Nobody sends the remount: the watchdog must, a little after its deadline.
    assert wait_mounted([data.mountpoint], within=15), "the watchdog did not mount the subvolume again"
    assert marker(data) == "data"


def test_a_btrfs_subvolume_whose_filesystem_stays_mounted_elsewhere_is_refused(fs_factory, offline):
    top = fs_factory.create("btrfs")
    first = fs_factory.subvolume(top, "@a")
    second = fs_factory.subvolume(top, "@b")

    # Before: /a was unmounted while the filesystem stayed mounted at /b and at the top, and the set was called offline.
    down = offline.unmount("elsewhere", [first])

    assert down["exit_code"] == 207, down
    assert down["message"] == (
        f"the filesystem of {first} ({top.device}) is also mounted at {top} {second}, so unmounting {first} would "
        "not take it offline: give all of its mount points, or take the set with the instance stopped")
    assert mounted(first.mountpoint) and mounted(second.mountpoint) and mounted(top.mountpoint)
    assert not (STATE_DIR / f"{offline.run_ids[-1]}.mounts").exists()


def test_a_bind_mount_of_a_directory_is_refused(fs_factory, offline, tmp_path):
    mount = fs_factory.create("ext4")
    (mount.mountpoint / "sub").mkdir()
    bound = tmp_path / "bound"
    bound.mkdir()
    fs_factory.mounts.append(type(mount)(bound, "bind"))
    subprocess.run(["mount", "--bind", str(mount.mountpoint / "sub"), str(bound)], check=True, timeout=30)

    # Before: both were unmounted, and mounting again failed on the source "/dev/loopN[/sub]".
    down = offline.unmount("bind", [mount, bound])

    assert down["exit_code"] == 207, down
    assert down["message"] == (
        f"{bound} is a bind mount of /sub on {mount.device}, which could not be mounted again from the device: give "
        "the mount point of the filesystem itself, or take the set with the instance stopped")
    assert mounted(mount.mountpoint) and mounted(bound)


def test_a_bind_mount_of_a_whole_filesystem_is_mounted_again_with_it(fs_factory, offline, tmp_path):
    mount = fs_factory.create("ext4")
    mark(mount, "whole")
    bound = fs_factory.bind(mount, tmp_path / "bound")

    alone = offline.unmount("bind-alone", [bound])
    assert alone["exit_code"] == 207 and f"is also mounted at {mount}" in alone["message"], alone

    down = offline.unmount("bind-whole", [mount, bound])
    assert down["exit_code"] == 0, down
    assert not mounted(mount.mountpoint) and not mounted(bound)
    up = offline.remount("bind-whole")
    assert up["exit_code"] == 0, up
    assert marker(mount) == "whole" and (bound.mountpoint / "marker").read_text() == "whole"
