# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

"""AWS side of restore_volumes: finding the set and the EC2 calls a restore makes.

The client's requests are retried as often as the task's ``aws_max_attempts``
says, so that throttling is retried with jittered backoff as long as the
operator wants, and a call that is still throttled after that fails the step
(which then rolls back) instead of hanging the job.
"""

from __future__ import annotations

import re

from ansible_collections.appconsistent.snapshots.plugins.module_utils import aws as aws_api
from ansible_collections.appconsistent.snapshots.plugins.module_utils import aws_fleet
from ansible_collections.appconsistent.snapshots.plugins.module_utils import restore
from ansible_collections.appconsistent.snapshots.plugins.module_utils import snapshot_set as ss
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import AppConsistentAWSError
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import describe_aws_failure
from ansible_collections.appconsistent.snapshots.plugins.module_utils.concurrency import chunks

FILTER_VALUES_MAX = 200
# AWS recommends f-p for EBS data volumes; q-z follow when those are taken.
DEVICE_LETTERS = "fghijklmnopqrstuvwxyz"
_DEVICE_LETTER = re.compile(r"^(?:/dev/)?(?:sd|xvd|hd)([a-z])")
IOPS_TYPES = ("io1", "io2", "gp3")


def _describe_instance(client, instance_id):
    found = aws_api.describe_instances(client, filters=[{"Name": "instance-id", "Values": [instance_id]}])
    return found[0] if found else None


def _detach_volume(client, volume_id, instance_id, device):
    if not aws_api.detach_volume(client, volume_id, instance_id=instance_id, device=device):
        raise restore.StepFailed(f"Failed to detach volume {volume_id} from {instance_id}: InvalidVolume.NotFound")


def _normalise_instance(found):
    return dict(id=found["InstanceId"], state=(found.get("State") or {}).get("Name"),
                zone=(found.get("Placement") or {}).get("AvailabilityZone"), root_device=found.get("RootDeviceName"),
                platform=aws_fleet.platform_of(found),
                devices={v["device"]: v["volume_id"] for v in aws_fleet.attached_volumes(found)})


def member_of(snapshot):
    tags = aws_api.tags_of(snapshot)
    start = snapshot.get("StartTime")
    return restore.Member(snapshot["SnapshotId"], device=tags.get(ss.TAG_DEVICE) or tags.get("Device"),
                          size=snapshot.get("VolumeSize"), state=snapshot.get("State"),
                          source_volume_id=snapshot.get("VolumeId"), tags=tags, encrypted=snapshot.get("Encrypted"),
                          kms_key_id=snapshot.get("KmsKeyId"),
                          created=start.isoformat() if hasattr(start, "isoformat") else start)


def normalise_volume(volume):
    attachment = (volume.get("Attachments") or [{}])[0]
    return dict(id=volume["VolumeId"], state=volume.get("State"), size=volume.get("Size"), type=volume.get("VolumeType"),
                iops=volume.get("Iops"), throughput=volume.get("Throughput"), encrypted=volume.get("Encrypted"),
                kms_key_id=volume.get("KmsKeyId"), snapshot_id=volume.get("SnapshotId") or None, tags=aws_api.tags_of(volume),
                zone=volume.get("AvailabilityZone"), instance_id=attachment.get("InstanceId"),
                device=attachment.get("Device"), attach_state=attachment.get("State"))


class AwsRestoreApi:
    """The adapter restore.VolumeRestore drives; raises restore.StepFailed for any AWS error."""

    def __init__(self, client, attempts=None):
        self.client = aws_api.with_max_attempts(client, attempts) if client is not None else None

    def _call(self, func, *args, what=None, **kwargs):
        try:
            return func(self.client, *args, **kwargs)
        except AppConsistentAWSError as exc:
            plain = describe_aws_failure(exc)
            if plain:
                raise restore.NotConnected(f"{plain} (failed to {what})" if what else plain) from None
            cause = getattr(exc, "exception", None)
            error = getattr(cause, "response", {}).get("Error", {}) if cause is not None else {}
            detail = f"{error.get('Code')}: {error.get('Message')}" if error else str(cause or "")
            message = f"Failed to {what}" if what else exc.message
            raise restore.StepFailed(f"{message}: {detail}" if detail else message) from None

    # --- finding the set ------------------------------------------------------------------------

    def set_by_id(self, set_id):
        snapshots = self._call(aws_api.describe_snapshots, filters=[{"Name": "tag:" + ss.TAG_SET_ID, "Values": [set_id]}])
        members = [member_of(s) for s in snapshots]
        if not members:
            raise restore.RestoreRefused(f"no snapshot carries {ss.TAG_SET_ID}={set_id} in this region: check the set id "
                                         "(snapshot_set_info lists the sets)")
        return restore.SelectedSet(set_id, members, _common(members, ss.TAG_INSTANCE_ID))

    def set_by_snapshots(self, snapshot_ids):
        try:
            snapshots = self._call(aws_api.describe_snapshots, snapshot_ids=snapshot_ids)
        except restore.StepFailed as exc:
            raise restore.RestoreRefused(f"cannot read the snapshots {', '.join(snapshot_ids)}: {exc}") from None
        members = [member_of(s) for s in snapshots]
        missing = sorted(set(snapshot_ids) - {m.snapshot_id for m in members})
        if missing:
            raise restore.RestoreRefused(f"snapshots not found: {', '.join(missing)}")
        return restore.SelectedSet(_common(members, ss.TAG_SET_ID), members, _common(members, ss.TAG_INSTANCE_ID),
                                   whole=False)

    def latest_set(self, instance_id, min_consistency):
        snapshots = self._call(aws_api.describe_snapshots, filters=[{"Name": "tag:" + ss.TAG_INSTANCE_ID, "Values": [instance_id]}])
        groups = {}
        for snapshot in snapshots:
            member = member_of(snapshot)
            if member.tags.get(ss.TAG_SET_ID):
                groups.setdefault(member.tags[ss.TAG_SET_ID], []).append(member)
        sets = [restore.SelectedSet(set_id, members, instance_id) for set_id, members in groups.items()]
        chosen, why = restore.newest_qualifying(sets, min_consistency)
        if chosen is None:
            raise restore.RestoreRefused(f"instance {instance_id}: {why}")
        return chosen

    # --- the adapter ----------------------------------------------------------------------------

    def instance(self, instance_id):
        found = self._call(_describe_instance, instance_id, what=f"describe instance {instance_id}")
        return None if found is None else _normalise_instance(found)

    def instances(self, instance_ids):
        """{id: instance} of those that exist, with one filtered listing per chunk (the waits of many restores)."""
        found = {}
        for chunk in chunks(instance_ids, FILTER_VALUES_MAX):
            for item in self._call(aws_api.describe_instances, filters=[{"Name": "instance-id", "Values": chunk}],
                                   what=f"describe instances {', '.join(chunk)}"):
                found[item["InstanceId"]] = _normalise_instance(item)
        return found

    def volumes(self, volume_ids):
        found = {}
        for chunk in chunks(volume_ids, FILTER_VALUES_MAX):
            for volume in self._call(aws_api.describe_volumes, filters=[{"Name": "volume-id", "Values": chunk}]):
                found[volume["VolumeId"]] = normalise_volume(volume)
        # a volume created moments ago may not be listed yet: it is still on its way
        return {vid: found.get(vid, dict(id=vid, state="unknown", tags={})) for vid in volume_ids}

    def restored_volumes(self, snapshot_ids):
        found = {}
        for chunk in chunks(snapshot_ids, FILTER_VALUES_MAX):
            for volume in self._call(aws_api.describe_volumes, filters=[
                    {"Name": "tag:" + restore.TAG_RESTORED_FROM, "Values": chunk},
                    {"Name": "status", "Values": ["available"]}]):
                vol = normalise_volume(volume)
                if restore.TAG_RESTORE_FAILED not in vol["tags"]:
                    found.setdefault(restore.origin_of(vol), vol)
        return found

    def source_volume(self, member):
        if not member.source_volume_id:
            return None
        found = self.volumes([member.source_volume_id])[member.source_volume_id]
        return found if found["state"] != "unknown" else None

    def volume_spec(self, member, source, params, zone):
        source = source or {}
        volume_type = params.get("volume_type") or source.get("type") or "gp3"
        size = max(int(member.size or 0), int(source.get("size") or 0)) or None
        if params.get("volume_size"):
            if member.size and params["volume_size"] < member.size:
                raise restore.RestoreRefused(f"volume_size {params['volume_size']} GiB is smaller than snapshot "
                                             f"{member.snapshot_id} ({member.size} GiB): a volume can only be larger")
            size = params["volume_size"]
        same_type = volume_type == source.get("type")
        iops = params.get("iops") or (source.get("iops") if same_type and volume_type in IOPS_TYPES else None)
        throughput = params.get("throughput") or (source.get("throughput") if same_type and volume_type == "gp3" else None)
        kms_key_id = params.get("kms_key_id") or (source.get("kms_key_id") if source.get("encrypted") else None) \
            or (member.kms_key_id if member.encrypted else None)
        encrypted = bool(member.encrypted or source.get("encrypted") or kms_key_id)
        return dict(snapshot_id=member.snapshot_id, zone=zone, type=volume_type, size=size, iops=iops,
                    throughput=throughput, encrypted=encrypted, kms_key_id=kms_key_id)

    def free_devices(self, instance, count):
        used = set()
        for device in instance["devices"]:
            match = _DEVICE_LETTER.match(device)
            if match:
                used.add(match.group(1))
        prefix = "xvd" if instance.get("platform") == "windows" else "/dev/sd"
        free = [prefix + letter for letter in DEVICE_LETTERS if letter not in used]
        if len(free) < count:
            raise restore.RestoreRefused(f"instance {instance['id']} has no {count} free device names left for attach")
        return free[:count]

    def create_volume(self, spec, tags):
        return self._call(aws_api.create_volume, spec["snapshot_id"], spec["zone"], spec["type"], spec["size"], tags,
                          iops=spec.get("iops"), throughput=spec.get("throughput"), encrypted=spec.get("encrypted"),
                          kms_key_id=spec.get("kms_key_id"), what=f"create a volume from snapshot {spec['snapshot_id']}")

    def attach(self, volume_id, instance_id, device):
        self._call(aws_api.attach_volume, volume_id, instance_id, device, what=f"attach volume {volume_id} to {instance_id} at {device}")

    def detach(self, volume_id, instance_id, device):
        self._call(_detach_volume, volume_id, instance_id, device, what=f"detach volume {volume_id} from {instance_id}")

    def stop(self, instance_id):
        self._call(aws_api.stop_instances, [instance_id], what=f"stop instance {instance_id}")

    def start(self, instance_id):
        self._call(aws_api.start_instances, [instance_id], what=f"start instance {instance_id}")

    def tag_volumes(self, volume_ids, tags):
        self._call(aws_api.create_tags, volume_ids, tags, what=f"tag volumes {', '.join(volume_ids)}")


def _common(members, key):
    values = {m.tags.get(key) for m in members}
    values.discard(None)
    return values.pop() if len(values) == 1 else None
