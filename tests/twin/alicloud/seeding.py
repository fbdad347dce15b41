"""Seeding the Alibaba twin with snapshot-consistent groups taken in the past: a history made in one step.

A test of a long-lived account (400 days of daily sets, say) cannot wait for the days to pass. Each seeded
group is what CreateSnapshotGroup leaves once accomplished, with the given creation time and member tags; the
per-disk snapshot quota (256) applies as it does to CreateSnapshotGroup.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List

from .ecs import DEFAULT_SNAPSHOT_QUOTA
from .model import Snapshot, SnapshotGroup, new_id, region_infix
from .api import AliError


def seed_snapshot_groups(handle: Any, groups: Iterable[Dict[str, Any]]) -> List[str]:
    """Accomplished groups of ``{"instance_id", "disk_ids", "created" (epoch seconds), "tags" ({key: value})}``.

    ``tags`` go on every member; a value may contain ``{group_id}``, replaced by the new group's id (the set id
    of a set made by app_consistent_group). Returns the group ids.
    """
    ecs = handle.cloud.ecs
    made = []
    with ecs.lock:
        quota = int(ecs.faults.get("snapshot_quota", DEFAULT_SNAPSHOT_QUOTA) or DEFAULT_SNAPSHOT_QUOTA)
        for spec in groups:
            disks = [ecs.disks[disk_id] for disk_id in spec["disk_ids"]]
            for disk in disks:
                if disk.instance_id != spec["instance_id"]:
                    raise ValueError(f"{disk.id} is not attached to {spec['instance_id']}")
                count = sum(1 for s in ecs.snapshots.values() if s.disk_id == disk.id and s.copied_from is None)
                if count >= quota:
                    raise AliError("QuotaExceed.Snapshot", f"The snapshot quota ({quota}) of the disk {disk.id} has been exceeded.", 403)
            region = disks[0].region
            created = float(spec["created"])
            group = SnapshotGroup(id=new_id("ssg", region_infix(region)), instance_id=spec["instance_id"], name="",
                                  description="", status="accomplished", snapshot_ids=[], created=created, region=region)
            for disk in disks:
                tags = {k: str(v).replace("{group_id}", group.id) for k, v in (spec.get("tags") or {}).items()}
                tags.update({k: str(v) for k, v in ((spec.get("disk_tags") or {}).get(disk.id) or {}).items()})
                snap = Snapshot(id=new_id("s", region_infix(region)), disk_id=disk.id, disk_type=disk.type,
                                disk_size=disk.size, disk_category=disk.category, instance_id=disk.instance_id, name="",
                                description="", status="accomplished", group_id=group.id, tags=tags, created=created,
                                ready_at=created, available=True, region=region)
                ecs.snapshots[snap.id] = snap
                group.snapshot_ids.append(snap.id)
            ecs.groups[group.id] = group
            made.append(group.id)
    return made
