# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Which EBS volumes of an instance the freeze helper quiesced, from the disks it names beneath each filesystem.

The helper reports, for every filesystem it froze, the whole disks beneath it (through LVM, md, dm-crypt and
partitions) with each disk's kernel name and serial. EC2 documents how these name an EBS volume:

- on Nitro instances every EBS volume is an NVMe device whose controller serial number is the volume id without its
  dash (``vol0123456789abcdef0`` for ``vol-0123456789abcdef0``); the kernel name (``nvme1n1``) says nothing;
- on Xen instances the kernel name is the block device mapping's name with ``xvd`` for ``sd``: ``/dev/sdf`` and
  ``/dev/xvdf`` both appear as ``xvdf``, and the root device ``/dev/sda1`` as ``xvda``.

A disk that maps to no volume of the instance (an instance store disk, whose NVMe serial is not a volume id; a
name that matches no mapping; no disk named at all) means the helper cannot say which volumes were quiesced: the
caller then labels no member above crash, and says why. Nothing is guessed.
"""

from __future__ import annotations

import re

_NVME_EBS_SERIAL = re.compile(r"vol-?([0-9a-f]{8,32})")
_XEN_NAME = re.compile(r"(?:xvd|sd)([a-z]+)")
_FROZEN = ("frozen", "thawed")


def _xen_key(name):
    """``sdf``/``xvdf``/``/dev/sda1`` -> ``f``/``f``/``a``: the letters a Xen disk and its mapping share, or None."""
    base = str(name or "").rsplit("/", 1)[-1]
    match = _XEN_NAME.fullmatch(base.rstrip("0123456789"))
    return match.group(1) if match else None


def volume_of_disk(disk, mappings):
    """The volume id of one disk the helper named, or None; ``mappings`` is the instance's BlockDeviceMappings."""
    volumes = {(m.get("Ebs") or {}).get("VolumeId"): m.get("DeviceName") for m in mappings or []}
    volumes.pop(None, None)
    serial = str(disk.get("serial") or "").strip()
    match = _NVME_EBS_SERIAL.fullmatch(serial)
    if match:
        volume_id = "vol-" + match.group(1)
        return volume_id if volume_id in volumes else None
    name = str(disk.get("name") or "")
    if name.startswith("nvme"):  # an NVMe disk without an EBS serial: instance store, or not readable
        return None
    key = _xen_key(name)
    if key is None:
        return None
    found = [volume_id for volume_id, device in volumes.items() if _xen_key(device) == key]
    return found[0] if len(found) == 1 else None


def quiesced_volumes(report, mappings):
    """(volume ids beneath the filesystems the report says were frozen, problem or None).

    ``report`` is the freeze helper's JSON report (freeze, or run); a problem names what could not be mapped, and
    then the volumes are not to be trusted at all.
    """
    mounts = [m for m in (report or {}).get("mounts") or [] if m.get("status") in _FROZEN]
    if not mounts:
        return set(), "the freeze helper reported no frozen filesystem"
    volumes, unknown = set(), []
    for mount in mounts:
        disks = mount.get("disks")
        if not disks:
            unknown.append(f"{mount.get('canonical') or mount.get('path')} (the helper named no disk beneath it"
                           + ("; it predates version 1.2.0)" if disks is None else ")"))
            continue
        for disk in disks:
            volume_id = volume_of_disk(disk, mappings)
            if volume_id is None:
                unknown.append(f"{mount.get('canonical') or mount.get('path')} on {disk.get('name')}"
                               + (f" (serial {disk['serial']})" if disk.get("serial") else ""))
            else:
                volumes.add(volume_id)
    if unknown:
        return volumes, ("these disks map to no EBS volume of the instance: " + ", ".join(unknown))
    return volumes, None
