"""`mounts: auto` on a CIS-style layout: the freeze helper leaves out /var, /var/log and below, and /tmp.

A CIS benchmark puts /var, /var/log, /var/log/audit and /tmp on filesystems of their own. Frozen, they would stop the
SSM agent (its state is under /var/lib/amazon/ssm), system logging and every process that writes a temporary file for
the whole freeze window. The layout is built from real ext4 filesystems on loop devices, made the root of a chroot
inside a private mount namespace, so that the machine's own /var, /var/log and /tmp are never in reach.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from e2e.chroot_namespace import ChrootNamespace, chroot_for

STATE = "/run/appconsistent"
# mount point in the chroot -> image size in MiB (ext4; the images are sparse)
LAYOUT = {"": 64, "/var": 32, "/var/log": 32, "/var/log/audit": 32, "/tmp": 32, "/data": 32}
AUTO = ["/data", "/var", "/var/log", "/var/log/audit", "/tmp"]  # what the controller's discovery lists on such a host


class CisRoot(ChrootNamespace):
    """The CIS layout: an ext4 / with ext4 filesystems of their own at /var, /var/log, /var/log/audit, /tmp and /data,
    and the SSM agent's state directory on /var."""

    def __init__(self, base: Path):
        super().__init__(base)
        self.frozen_candidates = list(LAYOUT)

    def helper(self, *args):
        """Runs the helper in the chroot; (exit code, its JSON report)."""
        proc = self.start(["/helper/appconsistent-freeze", *args, "--state-dir", STATE])
        out, err = proc.communicate(timeout=120)
        lines = [line for line in out.splitlines() if line.startswith("{")]
        assert lines, f"no report (exit {proc.returncode}): {err}"
        return proc.returncode, json.loads(lines[-1])

    def setup(self, helper: Path):
        self.enter()
        root = str(self.root)
        for mountpoint, size in LAYOUT.items():
            image = self.base / f"{mountpoint.strip('/').replace('/', '-') or 'root'}.img"
            with open(image, "wb") as handle:
                handle.truncate(size * 1024 * 1024)
            subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True, timeout=60)
            device = self.attach(image)
            self.run(["mkdir", "-p", root + mountpoint])
            self.run(["mount", "-t", "ext4", device, root + mountpoint])
            if not mountpoint:  # the root filesystem is mounted: what the chroot needs to run the helper
                self.furnish(helper)
        self.run(["chmod", "1777", f"{root}/tmp"])
        self.run(["mkdir", "-p", f"{root}/var/lib/amazon/ssm"])  # the SSM agent's state, on /var


@pytest.fixture
def cis_root(tmp_path, helper_path):
    yield from chroot_for(CisRoot, tmp_path, helper_path, ("mkfs.ext4", "fsfreeze"))


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
