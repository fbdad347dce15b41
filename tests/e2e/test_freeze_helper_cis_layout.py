"""`mounts: auto` on a CIS-style layout: the freeze helper leaves out /var, /var/log and below, and /tmp.

A CIS benchmark puts /var, /var/log, /var/log/audit and /tmp on filesystems of their own. Frozen, they would stop the
SSM agent (its state is under /var/lib/amazon/ssm), system logging and every process that writes a temporary file for
the whole freeze window. The layout is built from real ext4 filesystems on loop devices, made the root of a chroot
inside a private mount namespace, so that the machine's own /var, /var/log and /tmp are never in reach.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

STATE = "/run/appconsistent"
# mount point in the chroot -> image size in MiB (ext4; the images are sparse)
LAYOUT = {"": 64, "/var": 32, "/var/log": 32, "/var/log/audit": 32, "/tmp": 32, "/data": 32}
AUTO = ["/data", "/var", "/var/log", "/var/log/audit", "/tmp"]  # what the controller's discovery lists on such a host


class CisRoot:
    """The chroot and its namespace; teardown thaws every filesystem, stops every process left in the namespace,
    ends it and detaches the loop devices, also when the test failed."""

    def __init__(self, base: Path):
        self.base = base
        self.root = base / "root"
        self.devices: list[str] = []
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

    def helper(self, *args):
        """Runs the helper in the chroot; (exit code, its JSON report)."""
        proc = self.start(["/helper/appconsistent-freeze", *args, "--state-dir", STATE])
        out, err = proc.communicate(timeout=120)
        lines = [line for line in out.splitlines() if line.startswith("{")]
        assert lines, f"no report (exit {proc.returncode}): {err}"
        return proc.returncode, json.loads(lines[-1])

    def setup(self, helper: Path):
        self.root.mkdir()
        self.holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sleep", "600"],
                                       stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while os.readlink(f"/proc/{self.holder.pid}/ns/mnt") == os.readlink("/proc/self/ns/mnt"):
            assert time.monotonic() < deadline, "unshare did not make a mount namespace"
            time.sleep(0.05)
        root = str(self.root)
        for mountpoint, size in LAYOUT.items():
            image = self.base / f"{mountpoint.strip('/').replace('/', '-') or 'root'}.img"
            with open(image, "wb") as handle:
                handle.truncate(size * 1024 * 1024)
            subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True, timeout=60)
            device = subprocess.run(["losetup", "--find", "--show", str(image)], check=True, capture_output=True,
                                    text=True, timeout=60).stdout.strip()
            self.devices.append(device)
            self.run(["mkdir", "-p", root + mountpoint])
            self.run(["mount", "-t", "ext4", device, root + mountpoint])
            if not mountpoint:  # the root filesystem: what the chroot needs to run the helper
                self.run(["mkdir"] + [f"{root}/{d}" for d in ("usr", "etc", "proc", "dev", "run", "helper")])
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
        self.run(["chmod", "1777", f"{root}/tmp"])
        self.run(["mkdir", "-p", f"{root}/var/lib/amazon/ssm"])  # the SSM agent's state, on /var

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
            for mountpoint in LAYOUT:
                self.run(["fsfreeze", "-u", f"{self.root}{mountpoint}"], check=False)
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


@pytest.fixture
def cis_root(tmp_path, helper_path):
    for tool in ("mkfs.ext4", "unshare", "nsenter", "chroot", "losetup", "fsfreeze"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    if os.geteuid() != 0:
        pytest.skip("needs root")
    root = CisRoot(tmp_path)
    try:
        root.setup(helper_path)
        yield root
    finally:
        root.cleanup()


def test_auto_leaves_out_var_logs_and_tmp_and_says_why(cis_root):
    argv = ["freeze", "--run-id", "cis-1", "--timeout", "20", "--prescript", "/helper/none.sh",
            "--postscript", "/helper/none.sh"]
    for mount in AUTO:
        argv += ["--auto-mount", mount]

    rc, doc = cis_root.helper(*argv)

    assert rc == 0, doc
    assert [(m["path"], m["status"]) for m in doc["mounts"]] == [("/data", "frozen")]
    reasons = {m["path"]: m["reason"] for m in doc["auto_left_out"]}
    assert list(reasons) == ["/var", "/var/log", "/var/log/audit", "/tmp"]
    assert "SSM agent's state" in reasons["/var"]
    assert reasons["/var/log"].startswith("holds /var/log") and reasons["/var/log/audit"].startswith("is under /var/log")
    assert reasons["/tmp"].startswith("holds /tmp")
    assert "mounts auto left out /var (" in doc["message"]
    # While /data is frozen, the agent's state, the logs and the temporary files take writes.
    for path in ("/var/lib/amazon/ssm", "/var/log", "/var/log/audit", "/tmp"):
        assert cis_root.writable(path), path
    assert not cis_root.writable("/data", within=1.0)

    rc, doc = cis_root.helper("thaw", "--run-id", "cis-1")
    assert rc == 0 and doc["status"] == "thawed", doc
    assert cis_root.writable("/data")


def test_nothing_left_to_freeze_is_refused_with_what_was_left_out(cis_root):
    rc, doc = cis_root.helper("freeze", "--run-id", "cis-2", "--prescript", "/helper/none.sh", "--postscript",
                              "/helper/none.sh", "--auto-mount", "/var/log/audit", "--auto-mount", "/tmp")
    assert rc == 207 and doc["mounts"] == [], doc
    assert doc["message"].startswith("nothing left to freeze: mounts auto left out /var/log/audit (is under /var/log")
    assert cis_root.writable("/var/log/audit") and cis_root.writable("/tmp")


def test_an_explicit_mount_list_may_still_name_them(cis_root):
    rc, doc = cis_root.helper("freeze", "--run-id", "cis-3", "--timeout", "20", "--prescript", "/helper/none.sh",
                              "--postscript", "/helper/none.sh", "--mount", "/var/log/audit")
    assert rc == 0 and doc["auto_left_out"] == [], doc
    assert [(m["path"], m["status"]) for m in doc["mounts"]] == [("/var/log/audit", "frozen")]
    assert not cis_root.writable("/var/log/audit", within=1.0)
    rc, doc = cis_root.helper("thaw", "--run-id", "cis-3")
    assert rc == 0, doc
    assert cis_root.writable("/var/log/audit")
