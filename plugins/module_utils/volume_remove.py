# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Removing volumes that restore_volumes created, for both providers.

Every listed volume is read and checked before anything is changed: a volume
without the ``appconsistent:restored-from`` tag, one that does not hold the
snapshot that tag names (an Alibaba Cloud disk rolled back in place with
ResetDisk carries the tag but is an instance's own disk), one that a
``replace`` restore put in service (named by the replaced volume's
``appconsistent:replaced-by`` tag, or created for a replace) while it is
attached, the boot or system disk of an instance and a volume attached to
several instances are refused,
and then nothing at all is changed. Only listed volumes are ever touched.
Then the attached ones are detached, the detach is waited for with one listing
call per round, and each volume is deleted; one that is already gone is no
change.
"""

from __future__ import annotations

import re
import time

from ansible_collections.appconsistent.snapshots.plugins.module_utils import aws
from ansible_collections.appconsistent.snapshots.plugins.module_utils.alicloud import AlibabaCloudError
from ansible_collections.appconsistent.snapshots.plugins.module_utils.alicloud import tags_to_dict
from ansible_collections.appconsistent.snapshots.plugins.module_utils.concurrency import chunks
from ansible_collections.appconsistent.snapshots.plugins.module_utils.polling import poll_until
from ansible_collections.appconsistent.snapshots.plugins.module_utils.restore import TAG_REPLACED_BY
from ansible_collections.appconsistent.snapshots.plugins.module_utils.restore import TAG_RESTORE_MODE
from ansible_collections.appconsistent.snapshots.plugins.module_utils.restore import TAG_RESTORED_FROM

ID_PATTERNS = {"aws": re.compile(r"vol-[0-9a-f]{8,17}"), "alicloud": re.compile(r"d-[0-9a-z]{6,}")}
ID_EXAMPLES = {"aws": "vol-0123456789abcdef0", "alicloud": "d-bp1abcdefghijklmnop0"}
FILTER_VALUES_MAX = 200
DISK_IDS_MAX = 100

# Normalised volume states: "available" (may be deleted), "in-use", "detaching", "attaching", others as given.
ALICLOUD_STATES = {"Available": "available", "In_use": "in-use", "Detaching": "detaching", "Attaching": "attaching",
                   "Creating": "creating", "ReIniting": "reiniting"}


class RemovalRefused(Exception):
    """A listed volume may not be removed: nothing was changed."""


class RemovalFailed(Exception):
    """Removal failed part-way; ``volumes`` says what was done to each volume, ``changed`` whether anything was."""

    def __init__(self, message, volumes, changed=False):
        super().__init__(message)
        self.volumes = volumes
        self.changed = changed


# --- provider adapters: read, detach, delete, with normalised volumes --------------------------------


class AwsVolumes:
    """EC2 volumes. Each volume: id, state, tags, snapshot_id, attachments [(instance_id, device, state)], boot."""

    provider = "aws"
    error = aws.AppConsistentAWSError

    def __init__(self, client):
        self.client = client

    def read(self, volume_ids):
        """{id: volume} for the ids that exist. Filters, not VolumeIds: one missing id must not hide the others."""
        found = {}
        for chunk in chunks(volume_ids, FILTER_VALUES_MAX):
            for volume in aws.describe_volumes(self.client, filters=[{"Name": "volume-id", "Values": chunk}]):
                attachments = [(a.get("InstanceId"), a.get("Device"), a.get("State"))
                               for a in volume.get("Attachments") or [] if a.get("State") != "detached"]
                found[volume["VolumeId"]] = dict(
                    id=volume["VolumeId"], state=volume.get("State"), snapshot_id=volume.get("SnapshotId") or None,
                    tags=aws.tags_of(volume), attachments=attachments, boot=False)
        return found

    def mark_boot(self, volumes):
        """Set ``boot`` on the volumes attached at their instance's root device."""
        instance_ids = sorted({a[0] for v in volumes.values() for a in v["attachments"] if a[0]})
        roots = {}
        for chunk in chunks(instance_ids, FILTER_VALUES_MAX):
            for instance in aws.describe_instances(self.client, filters=[{"Name": "instance-id", "Values": chunk}]):
                roots[instance["InstanceId"]] = instance.get("RootDeviceName")
        for volume in volumes.values():
            volume["boot"] = any(roots.get(iid) and _same_device(roots[iid], dev) for iid, dev, _s in volume["attachments"])

    def replaced(self, volume_ids):
        """{id: the volume it took the place of} for the ids that a replace restore put in (one filtered listing)."""
        found = {}
        for chunk in chunks(volume_ids, FILTER_VALUES_MAX):
            for volume in aws.describe_volumes(self.client, filters=[{"Name": "tag:" + TAG_REPLACED_BY, "Values": chunk}]):
                found[aws.tags_of(volume)[TAG_REPLACED_BY]] = volume["VolumeId"]
        return found

    def detach(self, volume_id, instance_id):
        try:
            return aws.detach_volume(self.client, volume_id, instance_id)
        except aws.AppConsistentAWSError as exc:
            if error_code(exc) == "IncorrectState":  # detached meanwhile: the wait sees it
                return True
            raise

    def delete(self, volume_id):
        return aws.delete_volume(self.client, volume_id)


class AlicloudDisks:
    """ECS disks, normalised like AwsVolumes."""

    provider = "alicloud"
    error = AlibabaCloudError

    def __init__(self, api):
        self.api = api

    def read(self, volume_ids):
        found = {}
        for chunk in chunks(volume_ids, DISK_IDS_MAX):
            for disk in self.api.describe_disks(disk_ids=chunk):
                status = disk.get("Status")
                attachments = [(a.get("InstanceId"), a.get("Device"), status)
                               for a in (disk.get("Attachments") or {}).get("Attachment") or [] if a.get("InstanceId")]
                if not attachments and disk.get("InstanceId"):
                    attachments = [(disk["InstanceId"], disk.get("Device") or None, status)]
                found[disk["DiskId"]] = dict(
                    id=disk["DiskId"], state=ALICLOUD_STATES.get(status, str(status or "unknown").lower()),
                    snapshot_id=disk.get("SourceSnapshotId") or None, tags=tags_to_dict(disk.get("Tags")),
                    attachments=attachments, boot=disk.get("Type") == "system")
        return found

    def mark_boot(self, volumes):
        """The disk type says it: a system disk is the boot disk of its instance."""

    def replaced(self, volume_ids):
        """{id: the disk it took the place of} for the ids that a replace restore put in (a tag filter per id)."""
        found = {}
        for volume_id in volume_ids:
            for disk in self.api.describe_disks(tags={TAG_REPLACED_BY: volume_id}):
                found[volume_id] = disk["DiskId"]
        return found

    def detach(self, volume_id, instance_id):
        try:
            self.api.detach_disk(volume_id, instance_id)
        except AlibabaCloudError as exc:
            if exc.code == "InvalidDiskId.NotFound":
                return False
            if exc.code == "IncorrectDiskStatus":  # already detaching or detached: the wait sees it
                return True
            raise
        return True

    def delete(self, volume_id):
        try:
            self.api.delete_disk(volume_id)
        except AlibabaCloudError as exc:
            if exc.code == "InvalidDiskId.NotFound":
                return False
            raise
        return True


def error_code(exc):
    """The provider's error code of an AWS or Alibaba Cloud error, or None."""
    if isinstance(exc, AlibabaCloudError):
        return exc.code
    return aws.error_code(exc)


def describe_error(exc):
    """One sentence for a provider error: what failed, the code and the provider's message."""
    if isinstance(exc, AlibabaCloudError):
        return str(exc)
    plain = aws.describe_aws_failure(exc)
    if plain:
        return plain
    cause = getattr(exc, "exception", None)
    error = (getattr(cause, "response", None) or {}).get("Error") or {}
    text = getattr(exc, "message", None) or str(exc)
    if error.get("Code"):
        text += f": {error['Code']}: {error.get('Message') or ''}".rstrip(": ")
    elif cause is not None:
        text += f": {cause}"
    return text


def _same_device(root, device):
    """/dev/xvda and /dev/sda1 style names of the same root device compare equal; AWS lists either."""
    def norm(name):
        name = re.sub(r"^/dev/", "", str(name or ""))
        return re.sub(r"^(xvd|sd)", "sd", name)
    return norm(root) == norm(device) or norm(root).rstrip("0123456789") == norm(device).rstrip("0123456789")


# --- the removal ---------------------------------------------------------------------------------


def refusal(volume, detach, replaced=None):
    """Why ``volume`` may not be removed, or None; ``replaced`` is the volume it took the place of in a replace restore."""
    vid = volume["id"]
    origin = volume["tags"].get(TAG_RESTORED_FROM)
    if not origin:
        return (f"{vid} has no {TAG_RESTORED_FROM} tag: it was not created by appconsistent.snapshots.restore_volumes, "
                "and this module only removes volumes that were")
    if volume["boot"]:
        where = ", ".join(f"{iid} ({dev})" for iid, dev, _s in volume["attachments"]) or "its instance"
        return f"{vid} is the boot (system) disk of {where}"
    if volume["snapshot_id"] != origin:
        return (f"{vid} is tagged {TAG_RESTORED_FROM}={origin} but was not created from that snapshot "
                f"(it was created from {volume['snapshot_id'] or 'no snapshot'}): a disk restored in place is an "
                "instance's own disk, not a scratch volume")
    if volume["attachments"] and (replaced or volume["tags"].get(TAG_RESTORE_MODE) == "replace"):
        iid, dev, _s = volume["attachments"][0]
        return (f"{vid} is in service on {iid} ({dev}): a replace restore put it in place of "
                f"{replaced or 'the original volume'}, so it is that instance's own disk now, not a scratch volume")
    if len(volume["attachments"]) > 1:
        where = ", ".join(iid for iid, _d, _s in volume["attachments"])
        return f"{vid} is attached to several instances ({where}): detach it yourself first"
    if volume["attachments"] and not detach:
        return f"{vid} is attached to {volume['attachments'][0][0]}: set detach=true to detach it first"
    return None


class VolumeRemoval:
    """Removes the listed restored volumes through an adapter (AwsVolumes or AlicloudDisks)."""

    def __init__(self, api, volume_ids, detach=True, wait_timeout=300, check_mode=False, sleep=time.sleep,
                 clock=time.monotonic):
        self.api = api
        self.volume_ids = list(dict.fromkeys(v.strip() for v in volume_ids if v and v.strip()))
        self.detach = detach
        self.wait_timeout = wait_timeout
        self.check_mode = check_mode
        self.sleep = sleep
        self.clock = clock

    def check_ids(self):
        pattern = ID_PATTERNS[self.api.provider]
        wrong = [v for v in self.volume_ids if not pattern.fullmatch(v)]
        if wrong:
            raise RemovalRefused(f"not {self.api.provider} volume ids: {', '.join(wrong)} (expected ids like "
                                 f"{ID_EXAMPLES[self.api.provider]}); nothing was changed")

    def plan(self):
        """Read and check every listed volume; raise RemovalRefused before anything is changed."""
        self.check_ids()
        found = self.api.read(self.volume_ids)
        self.api.mark_boot(found)
        replaced = self.api.replaced([v for v in self.volume_ids if v in found and found[v]["attachments"]])
        refused = [reason for reason in (refusal(found[v], self.detach, replaced.get(v)) for v in self.volume_ids
                                         if v in found) if reason]
        if refused:
            raise RemovalRefused("; ".join(refused) + ". Nothing was changed.")
        return found

    def run(self):
        found = self.plan()
        results = {}
        for vid in self.volume_ids:
            volume = found.get(vid)
            attached = volume["attachments"][0][0] if volume and volume["attachments"] else None
            results[vid] = dict(volume_id=vid, action="absent" if volume is None else "would_delete",
                                detached_from=attached)
        present = [v for v in self.volume_ids if v in found]
        before = dict(volumes=sorted(present))
        diff = dict(before=before, after=dict(volumes=[]), before_header="restored volumes")
        if self.check_mode or not present:
            return self._result(bool(present), results, diff)

        attached = [v for v in present if found[v]["attachments"] and found[v]["state"] != "detaching"]
        detached = []
        try:
            for vid in attached:
                if self.api.detach(vid, results[vid]["detached_from"]):
                    detached.append(vid)
                else:
                    results[vid].update(action="absent", detached_from=None)
            self._wait_available([v for v in present if results[v]["action"] != "absent"])
            for vid in present:
                if results[vid]["action"] == "absent":
                    continue
                results[vid]["action"] = "deleted" if self.api.delete(vid) else "absent"
        except self.api.error as exc:
            self._undone(results)
            raise RemovalFailed(describe_error(exc), self._ordered(results), self._changed(results, detached)) from exc
        except RemovalFailed as exc:
            self._undone(results)
            exc.volumes = self._ordered(results)
            exc.changed = self._changed(results, detached)
            raise
        changed = any(r["action"] == "deleted" for r in results.values())
        return self._result(changed, results, diff)

    def _wait_available(self, ids):
        if not ids:
            return
        pending = {}

        def poll():
            current = self.api.read(ids)
            pending.clear()
            for vid in ids:
                volume = current.get(vid)
                if volume is not None and volume["state"] != "available":
                    pending[vid] = volume["state"]
            return not pending

        if not poll_until(poll, self.wait_timeout, self.sleep, self.clock, first_interval=0.2, max_interval=5.0):
            text = ", ".join(f"{vid} ({state})" for vid, state in sorted(pending.items()))
            raise RemovalFailed(f"the detach did not finish within {self.wait_timeout} s: {text}; the volumes that "
                                "were free are not deleted either. Run the task again to finish, or raise wait_timeout",
                                [])

    @staticmethod
    def _changed(results, detached):
        return bool(detached) or any(r["action"] == "deleted" for r in results.values())

    @staticmethod
    def _undone(results):
        for result in results.values():
            if result["action"] == "would_delete":
                result["action"] = "kept"

    def _ordered(self, results):
        return [results[v] for v in self.volume_ids]

    def _result(self, changed, results, diff):
        return dict(changed=changed, volumes=self._ordered(results), diff=diff)
