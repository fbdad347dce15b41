# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Alibaba Cloud side of restore_volumes.

``replace`` onto the set's own instance rolls each disk back in place with
ResetDisk (ResetDisks is deprecated). A reset overwrites the disk, so before
it the module takes a *safety* snapshot-consistent group of the disks it is
about to reset (the instance is stopped then, so that group is an
``offline`` set of its own, restorable with this module); a failure part-way
resets the disks back from it. ``attach`` and ``volumes`` (and ``replace``
onto another instance) create disks from the snapshots with CreateDisk and
go through the same create / detach / attach steps as on AWS.

A reset disk keeps its id and its SourceSnapshotId, so the snapshot a disk
was last restored from is recorded in the ``appconsistent:restored-from``
tag; that tag is what idempotency checks.
"""

from __future__ import annotations

from ansible_collections.appconsistent.snapshots.plugins.module_utils import restore
from ansible_collections.appconsistent.snapshots.plugins.module_utils import set_inventory as inventory
from ansible_collections.appconsistent.snapshots.plugins.module_utils import snapshot_set as ss
from ansible_collections.appconsistent.snapshots.plugins.module_utils.alicloud import CREDENTIAL_ERROR_CODES
from ansible_collections.appconsistent.snapshots.plugins.module_utils.alicloud import AlibabaCloudError
from ansible_collections.appconsistent.snapshots.plugins.module_utils.alicloud import tags_to_dict
from ansible_collections.appconsistent.snapshots.plugins.module_utils.concurrency import chunks

DISK_STATES = {"Creating": "creating", "Available": "available", "In_use": "in-use", "Attaching": "attaching",
               "Detaching": "detaching", "ReIniting": "reiniting"}
INSTANCE_STATES = {"Running": "running", "Stopped": "stopped", "Stopping": "stopping", "Starting": "pending",
                   "Pending": "pending"}


# --- the set -------------------------------------------------------------------------------------


def member_of(snapshot, device=None):
    tags = tags_to_dict(snapshot.get("Tags"))
    size = snapshot.get("SourceDiskSize")
    return restore.Member(snapshot["SnapshotId"], device=tags.get(ss.TAG_DEVICE) or device,
                          size=int(size) if str(size or "").isdigit() else None, state=snapshot.get("Status"),
                          source_volume_id=snapshot.get("SourceDiskId"), tags=tags,
                          encrypted=snapshot.get("Encrypted"), kms_key_id=snapshot.get("KMSKeyId") or None,
                          created=snapshot.get("CreationTime"))


def normalise_disk(disk):
    status = disk.get("Status")
    return dict(id=disk["DiskId"], state=DISK_STATES.get(status, str(status or "unknown").lower()), size=disk.get("Size"),
                type=disk.get("Category"), performance_level=disk.get("PerformanceLevel") or None,
                encrypted=disk.get("Encrypted"), kms_key_id=disk.get("KMSKeyId") or None,
                snapshot_id=disk.get("SourceSnapshotId") or None, tags=tags_to_dict(disk.get("Tags")),
                zone=disk.get("ZoneId"), instance_id=disk.get("InstanceId") or None, device=disk.get("Device") or None,
                attach_state="attached" if status == "In_use" else None, disk_type=disk.get("Type"))


class AlicloudRestoreApi:
    """The adapter restore.VolumeRestore drives on Alibaba Cloud; raises restore.StepFailed for API errors."""

    def __init__(self, api):
        self.api = api

    def _call(self, func, *args, **kwargs):
        try:
            return func(*args, **kwargs)
        except AlibabaCloudError as exc:
            if exc.code in CREDENTIAL_ERROR_CODES or exc.code == "EndpointUnreachable":
                raise restore.NotConnected(str(exc)) from None
            raise restore.StepFailed(str(exc)) from None

    # --- finding the set ------------------------------------------------------------------------

    def _members(self, snapshot_ids):
        rows = self._call(self.api.describe_snapshots, snapshot_ids=snapshot_ids) if snapshot_ids else []
        return [member_of(row) for row in rows]

    def set_by_group(self, group_id):
        groups = self._call(self.api.describe_snapshot_groups, snapshot_group_ids=[group_id])
        if not groups:
            raise restore.RestoreRefused(f"snapshot-consistent group {group_id} does not exist in {self.api.region}")
        return self._from_group(groups[0])

    def _from_group(self, group):
        ids = [s["SnapshotId"] for s in (group.get("Snapshots") or {}).get("Snapshot") or []]
        members = self._members(ids)
        return restore.SelectedSet(group["SnapshotGroupId"], members, group.get("InstanceId") or None,
                                   group_status=group.get("Status"))

    def set_by_id(self, set_id):
        if set_id.startswith("ssg-"):
            return self.set_by_group(set_id)
        members = [member_of(row) for row in self._call(self.api.describe_snapshots, tags={ss.TAG_SET_ID: set_id})]
        if not members:
            raise restore.RestoreRefused(f"no snapshot carries {ss.TAG_SET_ID}={set_id} in {self.api.region}")
        instances = {m.tags.get(ss.TAG_INSTANCE_ID) for m in members} - {None}
        return restore.SelectedSet(set_id, members, instances.pop() if len(instances) == 1 else None)

    def set_by_snapshots(self, snapshot_ids):
        members = self._members(snapshot_ids)
        missing = sorted(set(snapshot_ids) - {m.snapshot_id for m in members})
        if missing:
            raise restore.RestoreRefused(f"snapshots not found in {self.api.region}: {', '.join(missing)}")
        set_ids = {m.tags.get(ss.TAG_SET_ID) for m in members} - {None}
        instances = {m.tags.get(ss.TAG_INSTANCE_ID) for m in members} - {None}
        return restore.SelectedSet(set_ids.pop() if len(set_ids) == 1 else None, members,
                                   instances.pop() if len(instances) == 1 else None, whole=False)

    def latest_set(self, instance_id, min_consistency):
        """The newest qualifying set of the instance: its groups, and sets of tagged snapshots in no group (copies).

        One tag-filtered DescribeSnapshots listing finds the instance's tagged snapshots; it also gives the details
        of the group members it lists, so only the other members are asked for by id.
        """
        groups = self._call(self.api.describe_snapshot_groups, instance_id=instance_id)
        tagged = self._call(inventory.describe_tagged_alicloud_snapshots, self.api,
                            {ss.TAG_SET_ID: None, ss.TAG_INSTANCE_ID: instance_id})
        ids = [s["SnapshotId"] for g in groups for s in (g.get("Snapshots") or {}).get("Snapshot") or []]
        members = {i: member_of(tagged[i]) for i in ids if i in tagged}
        members.update((m.snapshot_id, m) for m in self._members([i for i in ids if i not in tagged]))
        sets = []
        for group in groups:
            snaps = [members[s["SnapshotId"]] for s in (group.get("Snapshots") or {}).get("Snapshot") or []
                     if s["SnapshotId"] in members]
            if snaps and not any(restore.TAG_SAFETY_FOR in m.tags for m in snaps):
                sets.append(restore.SelectedSet(group["SnapshotGroupId"], snaps, instance_id, group_status=group.get("Status")))
        for set_id, snapshots in inventory.loose_alicloud_snapshots(tagged.values(), groups).items():
            snaps = [member_of(s) for s in snapshots]
            if not any(restore.TAG_SAFETY_FOR in m.tags for m in snaps):
                sets.append(restore.SelectedSet(set_id, snaps, instance_id))
        chosen, why = restore.newest_qualifying(sets, min_consistency)
        if chosen is None:
            raise restore.RestoreRefused(f"instance {instance_id}: {why}")
        return chosen

    # --- the adapter ----------------------------------------------------------------------------

    def instance(self, instance_id):
        found = self._call(self.api.describe_instances, [instance_id])
        if not found:
            return None
        disks = [normalise_disk(d) for d in self._call(self.api.describe_disks, instance_id=instance_id)]
        attached = [d for d in disks if d["instance_id"] == instance_id and d["device"]]
        root = next((d["device"] for d in attached if d["disk_type"] == "system"), None)
        status = found[0].get("Status")
        return dict(id=instance_id, state=INSTANCE_STATES.get(status, str(status).lower()), zone=found[0].get("ZoneId"),
                    root_device=root, platform=str(found[0].get("OSType") or "linux").lower(),
                    devices={d["device"]: d["id"] for d in attached})

    def volumes(self, volume_ids):
        found = {}
        for chunk in chunks(volume_ids, 100):
            for disk in self._call(self.api.describe_disks, disk_ids=chunk):
                found[disk["DiskId"]] = normalise_disk(disk)
        return {vid: found.get(vid, dict(id=vid, state="unknown", tags={})) for vid in volume_ids}

    def restored_volumes(self, snapshot_ids):
        found = {}
        for snapshot_id in snapshot_ids:
            for disk in self._call(self.api.describe_disks, snapshot_id=snapshot_id, status="Available"):
                vol = normalise_disk(disk)
                if vol["tags"].get(restore.TAG_RESTORED_FROM) == snapshot_id and restore.TAG_RESTORE_FAILED not in vol["tags"]:
                    found.setdefault(snapshot_id, vol)
        return found

    def source_volume(self, member):
        if not member.source_volume_id:
            return None
        found = self.volumes([member.source_volume_id])[member.source_volume_id]
        return found if found["state"] != "unknown" else None

    def volume_spec(self, member, source, params, zone):
        if params.get("iops") or params.get("throughput"):
            raise restore.RestoreRefused("iops and throughput apply to AWS volumes; on Alibaba Cloud the disk category "
                                         "(volume_type) and its performance level decide the performance")
        if (source or {}).get("disk_type") == "system" and params["mode"] == "replace":
            raise restore.RestoreRefused(f"snapshot {member.snapshot_id} is of a system disk: a system disk can only be "
                                         "restored in place (replace onto the set's own instance, with its disk still "
                                         "attached) or as a data disk with mode attach or volumes")
        source = source or {}
        category = params.get("volume_type") or source.get("type") or "cloud_essd"
        size = max(int(member.size or 0), int(source.get("size") or 0)) or None
        if params.get("volume_size"):
            if member.size and params["volume_size"] < member.size:
                raise restore.RestoreRefused(f"volume_size {params['volume_size']} GiB is smaller than snapshot "
                                             f"{member.snapshot_id} ({member.size} GiB): a disk can only be larger")
            size = params["volume_size"]
        level = source.get("performance_level") if category == source.get("type") == "cloud_essd" else None
        kms_key_id = params.get("kms_key_id") or source.get("kms_key_id") or member.kms_key_id
        return dict(snapshot_id=member.snapshot_id, zone=zone, type=category, size=size, performance_level=level,
                    encrypted=bool(member.encrypted or source.get("encrypted") or kms_key_id), kms_key_id=kms_key_id)

    def free_devices(self, instance, count):
        # AttachDisk picks the next free device itself; its Device parameter is deprecated for new names.
        return [None] * count

    def create_volume(self, spec, tags):
        return self._call(self.api.create_disk, spec["zone"], spec["snapshot_id"], spec["type"], spec["size"], tags,
                          performance_level=spec.get("performance_level"), encrypted=spec.get("encrypted"),
                          kms_key_id=spec.get("kms_key_id"))

    def attach(self, volume_id, instance_id, device):
        self._call(self.api.attach_disk, volume_id, instance_id, device)

    def detach(self, volume_id, instance_id, device):
        self._call(self.api.detach_disk, volume_id, instance_id)

    def stop(self, instance_id):
        self._call(self.api.stop_instance, instance_id)

    def start(self, instance_id):
        self._call(self.api.start_instance, instance_id)

    def tag_volumes(self, volume_ids, tags):
        self._call(self.api.tag_resources, "disk", volume_ids, tags)

    # --- ResetDisk ------------------------------------------------------------------------------

    def create_safety_group(self, instance_id, disk_ids, name, tags):
        return self._call(self.api.create_snapshot_group, instance_id, disk_ids=disk_ids, name=name,
                          description="Taken by restore_volumes before ResetDisk", tags=tags)

    def snapshot_group(self, group_id):
        groups = self._call(self.api.describe_snapshot_groups, snapshot_group_ids=[group_id])
        return groups[0] if groups else None

    def tag_snapshots(self, snapshot_ids, tags):
        self._call(self.api.tag_resources, "snapshot", snapshot_ids, tags)

    def reset(self, disk_id, snapshot_id):
        self._call(self.api.reset_disk, disk_id, snapshot_id)


def planned_calls(restorer, mode, safety_snapshot=True):
    """The ECS write calls a planned restore will make, {action: count}, for check mode's estimate of its floor."""
    todo = restorer.todo
    if not todo:
        return {}
    running = (restorer.instance or {}).get("state") == "running"
    calls = {}
    if isinstance(restorer, ResetRestore):
        calls["ResetDisk"] = len(todo)
        calls["TagResources"] = len(todo)  # restored-from, one disk at a time
        if safety_snapshot:
            calls["CreateSnapshotGroup"] = 1
            calls["TagResources"] += len(todo)  # each safety snapshot's set tags
    else:
        calls["CreateDisk"] = len(todo)  # its tags travel with it
        if mode in ("replace", "attach"):
            calls["AttachDisk"] = len(todo)
        if mode == "replace":
            calls["DetachDisk"] = sum(1 for e in todo if e.original)
            calls["TagResources"] = calls["DetachDisk"]
    if mode == "replace" and running:
        calls.update(StopInstance=1, StartInstance=1)
    return {name: count for name, count in calls.items() if count}


class ResetRestore(restore.VolumeRestore):
    """replace onto the set's own instance: Stop, safety group, ResetDisk per member, Start."""

    def __init__(self, api, params, check_mode=False, **kwargs):
        super().__init__(api, params, check_mode=check_mode, **kwargs)
        self.safety_group_id = None
        self.safety = {}  # disk id -> safety snapshot id

    def applies(self, selected, target_id):
        """True when every member's source disk is attached to the target instance (ResetDisk can roll it back)."""
        if target_id != selected.source_instance_id and selected.source_instance_id is not None:
            return False
        disks = self.api.volumes([m.source_volume_id for m in selected.members if m.source_volume_id])
        return len(disks) == len(selected.members) and all(d.get("instance_id") == target_id for d in disks.values())

    def plan(self, selected, target_id):
        self.instance = self.api.instance(target_id)
        if self.instance["state"] not in ("running", "stopped"):
            raise restore.RestoreRefused(f"instance {target_id} is {self.instance['state']}: replace needs it running or "
                                         "stopped; try again when it has settled")
        disks = self.api.volumes([m.source_volume_id for m in selected.members])
        for member in selected.members:
            disk = disks[member.source_volume_id]
            entry = restore.Entry(member, disk.get("device"), disk)
            entry.new_volume_id = disk["id"]
            entry.unchanged = restore.origin_of(disk) == member.snapshot_id and not self.params.get("force")
            entry.spec = None if entry.unchanged else dict(snapshot_id=member.snapshot_id, reset_disk=disk["id"])
            self.entries.append(entry)
        return self.entries

    def diff(self):
        before = {e.device: f"{e.original['id']} ({restore.origin_of(e.original) or 'data as is'})" for e in self.entries}
        after = {e.device: f"{e.original['id']} (reset to {e.member.snapshot_id})" for e in self.entries}
        return dict(before=before, after=after)

    def run(self, selected):
        started = self.clock()
        todo = self.todo
        if self.check_mode or not todo:
            return self._result(changed=bool(todo), state=self.instance["state"])
        instance_id = self.instance["id"]
        self.was_running = self.instance["state"] == "running"
        if self.was_running:
            try:
                self._timed("stop_seconds", self._stop, instance_id)
            except restore.StepFailed as exc:
                self._fail(f"instance {instance_id} did not stop ({exc}); no disk was reset", todo, restart=True)
        if self.params.get("safety_snapshot", True):
            try:
                self._timed("safety_snapshot_seconds", self._safety, selected, todo)
            except restore.StepFailed as exc:
                self._fail(f"the safety snapshot of the disks could not be taken ({exc}); no disk was reset "
                           "(set safety_snapshot to false to reset without one)", todo, restart=True)
        try:
            self._timed("reset_seconds", self._reset_all, [(e, e.member.snapshot_id) for e in todo])
            self._tag_reset(selected, todo)
            if self.was_running:
                self._timed("start_seconds", self._start, instance_id)
        except restore.StepFailed as exc:
            self._rollback_reset(todo, exc)
        for entry in todo:
            entry.outcome = "reset"
        self.timings["total_seconds"] = round(self.clock() - started, 3)
        result = self._result(changed=True, state=self.api.instance(instance_id)["state"])
        result["safety_snapshot_group_id"] = self.safety_group_id
        return result

    def _result(self, changed, state):
        result = super()._result(changed, state)
        for item in result["device_map"]:
            disk = item["original_volume_id"]
            if disk in self.safety:
                item["safety_snapshot_id"] = self.safety[disk]
        return result

    def _safety(self, selected, todo):
        instance_id = self.instance["id"]
        devices = {e.original["id"]: e.device for e in todo}
        base = ss.set_tags("pending", instance_id, "offline")
        base.pop(ss.TAG_SET_ID)
        group_tags = dict(base)
        group_tags[restore.TAG_SAFETY_FOR] = selected.set_id or todo[0].member.snapshot_id
        if self.params.get("safety_snapshot_delete_after"):
            group_tags[ss.TAG_DELETE_AFTER] = ss.delete_after_instant(self.params["safety_snapshot_delete_after"])
        name = "appconsistent-safety-" + ss.utcnow().strftime("%Y%m%dt%H%M%S")
        group_id = self.api.create_safety_group(instance_id, list(devices), name, group_tags)
        self.safety_group_id = group_id
        group = self.waiter.until(lambda: {group_id: self.api.snapshot_group(group_id) or {"Status": "missing"}},
                                  lambda k, g: g.get("Status") == "accomplished",
                                  lambda k, g: f"safety group {k} is {g.get('Status')}" if g.get("Status") in ("failed", "missing")
                                  else None, self.params["volume_timeout"], "the safety snapshot group")[group_id]
        for snap in (group.get("Snapshots") or {}).get("Snapshot") or []:
            disk_id = snap.get("SourceDiskId")
            self.safety[disk_id] = snap["SnapshotId"]
            tags = dict(group_tags, **{ss.TAG_SET_ID: group_id})
            if devices.get(disk_id):
                tags[ss.TAG_DEVICE] = devices[disk_id]
            self.api.tag_snapshots([snap["SnapshotId"]], tags)
        missing = [d for d in devices if d not in self.safety]
        if missing:
            raise restore.StepFailed(f"the safety group {group_id} has no snapshot of {', '.join(missing)}")

    def _reset_all(self, pairs):
        """Issue every ResetDisk, then wait for all disks to leave ReIniting with one DescribeDisks per poll."""
        for entry, snapshot_id in pairs:
            entry.detached_original = True  # from here on the disk may hold other data
            self.api.reset(entry.original["id"], snapshot_id)
        ids = [pair[0].original["id"] for pair in pairs]
        self.waiter.until(lambda: self.api.volumes(ids), lambda k, v: v["state"] in ("in-use", "available"),
                          lambda k, v: None, self.params["volume_timeout"], "resetting disks")

    def _tag_reset(self, selected, todo):
        tags = {restore.TAG_RESTORED_AT: ss.format_instant(ss.utcnow())}
        if selected.set_id:
            tags[restore.TAG_RESTORED_FROM_SET] = selected.set_id
        for entry in todo:
            self.api.tag_volumes([entry.original["id"]], dict(tags, **{restore.TAG_RESTORED_FROM: entry.member.snapshot_id}))

    def _rollback_reset(self, todo, cause):
        problems = []
        touched = [e for e in todo if e.detached_original]
        if touched and not self.safety:
            problems.append("no safety snapshot was taken, so the disks that were reset cannot be rolled back: "
                            + ", ".join(e.original["id"] for e in touched))
        elif touched:
            instance_id = self.instance["id"]
            try:
                current = self.api.instance(instance_id)["state"]
                if current not in ("stopped",):
                    self._stop(instance_id)
                for entry in touched:
                    entry.detached_original = False
                self._reset_all([(e, self.safety[e.original["id"]]) for e in touched])
                self.api.tag_volumes([e.original["id"] for e in touched],
                                     {restore.TAG_RESTORED_FROM: "", restore.TAG_RESTORE_FAILED: ss.format_instant(ss.utcnow())})
                for entry in touched:
                    entry.outcome = f"rolled back: reset to safety snapshot {self.safety[entry.original['id']]}"
            except restore.StepFailed as exc:
                problems.append(f"resetting the disks back from safety group {self.safety_group_id} failed: {exc}")
        self._fail(f"the restore failed ({cause}) and was rolled back", todo, restart=True, problems=problems)

    def _fail(self, message, todo, restart, problems=None):
        if self.safety_group_id:
            message += f"; the safety snapshot group {self.safety_group_id} holds the disks as they were before"
        super()._fail(message, [], restart, problems)
