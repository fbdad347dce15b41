"""How a local instance's EBS volumes look to the freeze helper: a sysfs tree naming each by its NVMe serial.

A local instance's volumes are loop devices of this machine, which have no serial. On a Nitro instance EC2 presents
every EBS volume as an NVMe device whose controller serial is the volume id without its dash; this tree gives the
helper (through APPCONSISTENT_SYSFS_ROOT) that view of each mounted volume, and nothing else: a filesystem the
fleet does not name is not in it, so the helper cannot name its disks, as on an instance with an unknown disk.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Dict, Optional, Tuple


def _mount_devices() -> Dict[str, Tuple[str, str]]:
    """{mount point: (MAJ:MIN, source)} from this process's mountinfo (the last mount of a point wins)."""
    found: Dict[str, Tuple[str, str]] = {}
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as handle:
        for line in handle:
            fields = line.split()
            if "-" not in fields:
                continue
            sep = fields.index("-")
            point = fields[4].replace("\\040", " ")
            found[point] = (fields[2], fields[sep + 2] if len(fields) > sep + 2 else "")
    return found


class InstanceDisks:
    """Fake sysfs trees, one per local instance, in a directory of their own removed by close()."""

    def __init__(self) -> None:
        self.base: Optional[str] = None

    def sysfs_root(self, instance_id: str, volumes) -> str:
        """The tree for ``instance_id`` (rebuilt on each call: tests mount and unmount between runs)."""
        if self.base is None:
            self.base = tempfile.mkdtemp(prefix="twin-sysfs-")
        root = os.path.join(self.base, instance_id)
        shutil.rmtree(root, ignore_errors=True)
        links = os.path.join(root, "dev", "block")
        os.makedirs(links)
        mounted = _mount_devices()
        for index, vol in enumerate(volumes):
            if vol.boot or not vol.mount or not vol.id or os.path.normpath(vol.mount) not in mounted:
                continue
            disk = os.path.join(root, "devices", f"nvme{index}", f"nvme{index}n1")
            os.makedirs(os.path.join(disk, "device"))
            with open(os.path.join(disk, "device", "serial"), "w", encoding="ascii") as handle:
                handle.write(f"{vol.id.replace('-', ''):<20}\n")
            fs_id, source = mounted[os.path.normpath(vol.mount)]
            ids = {fs_id}
            if source.startswith("/dev/") and os.path.exists(source):
                rdev = os.stat(source).st_rdev
                ids.add(f"{os.major(rdev)}:{os.minor(rdev)}")
            for dev in ids:
                if not os.path.lexists(os.path.join(links, dev)):
                    os.symlink(disk, os.path.join(links, dev))
        return root

    def close(self) -> None:
        if self.base is not None:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None
