"""A chroot inside a private mount namespace, for freeze-helper tests that need their own / and its layout.

The namespace's mounts never propagate to the machine's, and it sees the machine's filesystems only through
read-only binds of /usr, /etc and the library directories, which no test names, so that a test can lay out / (a btrfs
with subvolumes, a CIS layout) without the machine's own / or /var ever being in reach. Commands run in it through
nsenter and chroot. A subclass mounts its root filesystem at ``self.root`` in :meth:`lay_out` and lists what teardown
thaws in ``self.frozen_candidates``; :meth:`cleanup` thaws those, stops every process left in the namespace, ends it
and detaches the loop devices in ``self.devices``, also when the test failed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest


def chroot_for(kind, base: Path, helper: Path, tools=()):
    """For a fixture: yields kind(base) set up with the helper, cleaned up after the test; skips the test without root
    or one of the tools."""
    for tool in ("unshare", "nsenter", "chroot", "losetup", *tools):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    if os.geteuid() != 0:
        pytest.skip("needs root")
    root = kind(base)
    try:
        root.setup(helper)
        yield root
    finally:
        root.cleanup()


class ChrootNamespace:
    def __init__(self, base: Path):
        self.base = base
        self.root = base / "root"
        self.devices: list[str] = []
        self.frozen_candidates: list[str] = []  # paths in the chroot that teardown thaws
        self.holder = None
        self._writers: list[subprocess.Popen] = []

    def run(self, argv, timeout=60, check=True):
        """Runs argv in the namespace (not in the chroot)."""
        return subprocess.run(["nsenter", f"--target={self.holder.pid}", "--mount", "--"] + list(argv),
                              capture_output=True, text=True, timeout=timeout, check=check)

    def start(self, argv):
        """Starts argv in the chroot, in a session of its own."""
        return subprocess.Popen(["nsenter", f"--target={self.holder.pid}", "--mount", "--", "chroot", str(self.root)]
                                + list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)

    def attach(self, image: Path) -> str:
        """A loop device for image, detached at teardown."""
        device = subprocess.run(["losetup", "--find", "--show", str(image)], check=True, capture_output=True,
                                text=True, timeout=60).stdout.strip()
        self.devices.append(device)
        return device

    def enter(self):
        """Makes the namespace: a process of its own holds it until teardown."""
        self.root.mkdir()
        self.holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sleep", "600"],
                                       stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while os.readlink(f"/proc/{self.holder.pid}/ns/mnt") == os.readlink("/proc/self/ns/mnt"):
            assert time.monotonic() < deadline, "unshare did not make a mount namespace"
            time.sleep(0.05)

    def furnish(self, helper: Path, dirs=()):
        """What the chroot needs to run the helper, on the root filesystem already mounted at self.root: the system's
        programs and configuration read-only, /dev, /proc, a tmpfs /run (the helper's state) and the helper."""
        root = str(self.root)
        self.run(["mkdir"] + [f"{root}/{d}" for d in ("usr", "etc", "proc", "dev", "run", "helper", *dirs)])
        for link in ("bin", "sbin", "lib", "lib64"):
            if os.path.islink(f"/{link}"):
                self.run(["ln", "-s", os.readlink(f"/{link}"), f"{root}/{link}"])
            elif os.path.isdir(f"/{link}"):
                self.run(["mkdir", f"{root}/{link}"])
                self._bind_read_only(f"/{link}", f"{root}/{link}")
        self._bind_read_only("/usr", f"{root}/usr")
        self._bind_read_only("/etc", f"{root}/etc")
        self.run(["mount", "--bind", "/dev", f"{root}/dev"])
        self.run(["mount", "-t", "proc", "proc", f"{root}/proc"])
        self.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0755", "tmpfs", f"{root}/run"])
        self.run(["cp", str(helper), f"{root}/helper/appconsistent-freeze"])

    def _bind_read_only(self, source, target):
        self.run(["mount", "--bind", source, target])
        self.run(["mount", "-o", "remount,bind,ro", target])

    def writable(self, path, within=5.0):
        """True if a write to path (in the chroot) completes within the given time."""
        proc = self.start(["sh", "-c", 'printf x >> "$1"', "sh", f"{path}/probe"])
        try:
            proc.communicate(timeout=within)
            return proc.returncode == 0
        except subprocess.TimeoutExpired:
            return False
        finally:
            self._writers.append(proc)

    def namespace_pids(self):
        mine = os.readlink(f"/proc/{self.holder.pid}/ns/mnt")
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != self.holder.pid:
                try:
                    if os.readlink(f"/proc/{entry}/ns/mnt") == mine:
                        pids.append(int(entry))
                except OSError:
                    pass
        return pids

    def cleanup(self):
        if self.holder is not None:
            for path in self.frozen_candidates:
                self.run(["fsfreeze", "-u", f"{self.root}{path}".rstrip("/")], check=False)
            for sig in (signal.SIGTERM, signal.SIGKILL):
                for pid in self.namespace_pids():
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass
                deadline = time.monotonic() + 10
                while self.namespace_pids() and time.monotonic() < deadline:
                    time.sleep(0.1)
            for proc in self._writers:
                proc.communicate(timeout=10)
            self.run(["umount", "-R", str(self.root)], check=False)
            self.holder.kill()
            self.holder.wait(timeout=10)
        for device in self.devices:
            subprocess.run(["losetup", "-d", device], check=False, capture_output=True, timeout=60)
        attached = subprocess.run(["losetup", "-a"], capture_output=True, text=True, timeout=60, check=False).stdout
        assert str(self.base) not in attached, "a loop device of the test is still attached"
