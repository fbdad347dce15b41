"""EC2 behaviour around moto's backend: state transitions, real block data, quotas and faults.

moto keeps the resources; this module wraps a few methods of *one* moto EC2 backend (the twin's
own account and region; other moto users in the process are untouched) and swaps the classes of
the objects it creates for subclasses that know about transitions (``creating``, ``pending``,
``attaching``, ``detaching``, ``stopping``...).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Dict, List, Optional

from moto.ec2.exceptions import EC2ClientError
from moto.ec2.models.elastic_block_store import Snapshot, Volume
from moto.ec2.models.instances import Instance
from moto.ec2.utils import EC2_PREFIX_TO_RESOURCE, get_prefix

# one request is served per thread; the wrapped backend methods read its raw parameters here
REQUEST = threading.local()


class _FastTags:
    """moto answers get_tags by scanning every tag of the account; a fleet of thousands needs a lookup."""

    def get_tags(self) -> List[Dict[str, str]]:
        tags = self.ec2_backend.tags.get(self.id, {})
        rtype = EC2_PREFIX_TO_RESOURCE.get(get_prefix(self.id), "")
        return [{"resource_id": self.id, "key": k, "value": v, "resource_type": rtype} for k, v in list(tags.items())]


class TwinInstance(_FastTags, Instance):
    """A moto instance with fast tag lookup (state transitions live in moto's own ``_state``)."""


class TwinVolume(_FastTags, Volume):
    """A volume whose state can be ``creating`` (and stay ``in-use`` while ``detaching``)."""

    _twin_state: Optional[str] = None
    _twin_attachments: Optional[list] = None

    @property
    def status(self) -> str:
        if self._twin_state:
            return self._twin_state
        return "in-use" if self.attachment else "available"

    @property
    def attachments(self) -> list:
        if self._twin_attachments is not None:
            return self._twin_attachments
        return [self.attachment] if self.attachment else []


class TwinSnapshot(_FastTags, Snapshot):
    """A snapshot that is ``pending`` with growing progress until it completes (or fails)."""

    _twin_status = "completed"
    _twin_started = 0.0
    _twin_duration = 0.0

    @property
    def status(self) -> str:
        return self._twin_status

    @status.setter
    def status(self, value: str) -> None:
        self._twin_status = value

    @property
    def state(self) -> str:
        return self._twin_status

    @property
    def progress(self) -> str:
        if self._twin_status == "completed":
            return "100%"
        if self._twin_status == "error" or self._twin_duration <= 0:
            return "0%"
        done = (time.monotonic() - self._twin_started) / self._twin_duration
        return f"{min(99, int(done * 100))}%"

    @property
    def state_message(self) -> Optional[str]:
        return "Snapshot creation failed (injected fault)" if self._twin_status == "error" else None


def raw_param(name: str) -> List[str]:
    """Values of a query parameter of the current request (``Name``, ``Name.1``, ``Name.2``...)."""
    params: Dict[str, List[str]] = getattr(REQUEST, "params", None) or {}
    if name in params:
        return list(params[name])
    out = []
    prefix = name + "."
    for key in sorted((k for k in params if k.startswith(prefix)), key=lambda k: int(k.rsplit(".", 1)[1])
                      if k.rsplit(".", 1)[1].isdigit() else 0):
        out.extend(params[key])
    return out


class Ec2Extension:
    """Installs the twin's behaviour on one moto EC2 backend."""

    def __init__(self, cloud) -> None:
        self.cloud = cloud
        self.backend = cloud.ec2
        self.volume_images: Dict[str, str] = {}
        self.snapshot_images: Dict[str, str] = {}
        self._orig: Dict[str, Any] = {}
        for name in ("create_volume", "attach_volume", "detach_volume", "delete_volume", "create_snapshot",
                     "create_snapshots", "delete_snapshot", "stop_instances", "start_instances", "describe_snapshots",
                     "describe_volumes"):
            self._orig[name] = getattr(self.backend, name)
            setattr(self.backend, name, getattr(self, name))

    # -- helpers --------------------------------------------------------------------------------
    orig = property(lambda self: self._orig)

    @property
    def latency(self):
        return self.cloud.latency

    @property
    def faults(self):
        return self.cloud.faults

    def _later(self, kind: str, func) -> None:
        delay = self.latency.transition(kind)
        if delay <= 0:
            func()
        else:
            self.cloud.scheduler.call_later(delay, self.cloud.locked(func))

    def expose(self, volume_id: str, instance_id: str, device: str, attach: bool) -> None:
        """Local instances: a stable link ``<store>/instances/<instance>/<device>`` to the attached image."""
        image = self.volume_images.get(volume_id)
        store = self.cloud.blockstore
        if not image or not store or not self.cloud.is_local(instance_id):
            return
        link = os.path.join(store.root, "instances", instance_id, os.path.basename(device))
        if attach:
            os.makedirs(os.path.dirname(link), exist_ok=True)
            if os.path.lexists(link):
                os.unlink(link)
            os.symlink(image, link)
        elif os.path.islink(link):
            os.unlink(link)

    # -- volumes --------------------------------------------------------------------------------
    def create_volume(self, *args, **kwargs) -> Volume:
        volume = self._orig["create_volume"](*args, **kwargs)
        volume.__class__ = TwinVolume
        snapshot_id = kwargs.get("snapshot_id")
        if snapshot_id and snapshot_id in self.snapshot_images and self.cloud.blockstore:
            self.volume_images[volume.id] = self.cloud.blockstore.volume_from_snapshot(
                self.snapshot_images[snapshot_id], size_gib=volume.size)
        if self.latency.transition("volume_create") > 0:
            volume._twin_state = "creating"

            def done():
                volume._twin_state = None
            self._later("volume_create", done)
        return volume

    def attach_volume(self, volume_id: str, instance_id: str, device_path: str, delete_on_termination: bool = False):
        volume = self.backend.get_volume(volume_id)
        if volume.status == "creating":
            raise EC2ClientError("IncorrectState", f"Volume '{volume_id}' is not 'available'.")
        if volume.attachment is not None or volume.status == "in-use":
            raise EC2ClientError("VolumeInUse", f"vol '{volume_id}' is already attached to an instance")
        attachment = self._orig["attach_volume"](volume_id, instance_id, device_path, delete_on_termination)
        self.expose(volume_id, instance_id, device_path, attach=True)
        if attachment is not None and self.latency.transition("volume_attach") > 0:
            attachment.status = "attaching"

            def done():
                attachment.status = "attached"
            self._later("volume_attach", done)
        return attachment

    def detach_volume(self, volume_id: str, instance_id: Optional[str], device_path: Optional[str]):
        current = self.backend.get_volume(volume_id).attachment
        if current is None:
            raise EC2ClientError("IncorrectState", f"Volume '{volume_id}' is in the 'available' state.")
        if instance_id and instance_id != current.instance.id:
            raise EC2ClientError("InvalidAttachment.NotFound",
                                 f"The volume '{volume_id}' is not attached to instance '{instance_id}'.")
        # both are optional in DetachVolume
        old = self._orig["detach_volume"](volume_id, current.instance.id, device_path or current.device)
        self.expose(volume_id, old.instance.id, old.device, attach=False)
        volume = self.backend.get_volume(volume_id)
        if isinstance(volume, TwinVolume) and self.latency.transition("volume_detach") > 0:
            old.status = "detaching"
            volume._twin_state = "in-use"
            volume._twin_attachments = [old]

            def done():
                old.status = "detached"
                volume._twin_state = None
                volume._twin_attachments = None
            self._later("volume_detach", done)
        return old

    def delete_volume(self, volume_id: str):
        volume = self._orig["delete_volume"](volume_id)
        image = self.volume_images.pop(volume_id, None)
        if image and self.cloud.blockstore:
            self.cloud.blockstore.delete(image)
        return volume

    # -- snapshots ------------------------------------------------------------------------------
    def own_snapshots(self) -> List[Snapshot]:
        return [s for s in list(self.backend.snapshots.values()) if s.owner_id == self.cloud.account_id]

    def _check_quota(self, wanted: int) -> None:
        quota = self.faults.get("snapshot_quota")
        if quota is not None and len(self.own_snapshots()) + wanted > int(quota):
            raise EC2ClientError("SnapshotLimitExceeded",
                                 f"The maximum number of snapshots has been reached (quota {int(quota)}).")

    def create_snapshot(self, volume_id: str, description: str, owner_id: Optional[str] = None,
                        from_ami: Optional[str] = None) -> Snapshot:
        self._check_quota(1)
        return self._snapshot(volume_id, description, owner_id, from_ami)

    def _snapshot(self, volume_id: str, description: str, owner_id: Optional[str] = None,
                  from_ami: Optional[str] = None) -> Snapshot:
        snapshot = self._orig["create_snapshot"](volume_id, description, owner_id, from_ami)
        snapshot.__class__ = TwinSnapshot
        image = self.volume_images.get(volume_id)
        if image and self.cloud.blockstore:
            # the copy is taken now, at the call: a point-in-time image of the volume
            self.snapshot_images[snapshot.id] = self.cloud.blockstore.snapshot(image)
        volume = snapshot.volume
        instance_id = volume.attachment.instance.id if volume.attachment else None
        inst_faults = self.cloud.instance_faults(instance_id) if instance_id else {}
        fails = bool(inst_faults.get("snapshot_error")) or self.faults.chance(self.faults.get("snapshot_error_rate", 0))
        duration = self.latency.transition("snapshot_complete")
        final = "error" if fails else "completed"
        if duration <= 0:
            snapshot._twin_status = final
        else:
            snapshot._twin_status = "pending"
            snapshot._twin_started = time.monotonic()
            snapshot._twin_duration = duration

            def done():
                snapshot._twin_status = final
            self._later("snapshot_complete", done)
        return snapshot

    def volumes_of(self, instance) -> List[tuple]:
        """(device, volume id) of the instance's attached volumes, in device order."""
        return sorted((dev, bdt.volume_id) for dev, bdt in instance.get_block_device_mapping)

    def create_snapshots(self, instance_spec: Dict[str, Any], description: str, tags: Dict[str, str],
                         copy_tags_from_source: Optional[str] = None, exclude_data_volume_ids=None,
                         creation_tags: Optional[Dict[str, str]] = None) -> List[Snapshot]:
        """CreateSnapshots honouring ExcludeBootVolume, ExcludeDataVolumeIds and CopyTagsFromSource."""
        instance = self.backend.get_instance(instance_spec["InstanceId"])
        if exclude_data_volume_ids is None:
            exclude_data_volume_ids = (instance_spec.get("ExcludeDataVolumeIds") or
                                       raw_param("InstanceSpecification.ExcludeDataVolumeId"))
        exclude = set(exclude_data_volume_ids or [])
        if copy_tags_from_source is None:
            copy_tags_from_source = (raw_param("CopyTagsFromSource") or [None])[0]
        if copy_tags_from_source not in (None, "", "volume"):
            raise EC2ClientError("InvalidParameterValue", f"Value ({copy_tags_from_source}) for parameter CopyTagsFromSource is invalid.")
        exclude_boot = str(instance_spec.get("ExcludeBootVolume", False)).lower() == "true"
        volumes = self.volumes_of(instance)
        attached = {vid for _dev, vid in volumes}
        for vid in exclude:
            if vid not in attached:
                raise EC2ClientError("InvalidVolume.NotFound", f"The volume '{vid}' is not attached to instance '{instance.id}'.")
        root = instance.root_device_name
        for dev, vid in volumes:
            if dev == root and vid in exclude:
                raise EC2ClientError("InvalidParameterValue",
                                     f"The root volume '{vid}' cannot be excluded with ExcludeDataVolumeIds; use ExcludeBootVolume.")
        chosen = [(dev, vid) for dev, vid in volumes if vid not in exclude and not (exclude_boot and dev == root)]
        self._check_quota(len(chosen))
        snapshots = []
        for dev, vid in chosen:
            snapshot = self._snapshot(vid, description)
            merged: Dict[str, str] = {}
            if copy_tags_from_source == "volume":
                merged.update({t["key"]: t["value"] for t in self.backend.get_volume(vid).get_tags()})
            merged.update(tags or {})
            merged.update(creation_tags or {})
            if merged:
                self.backend.create_tags([snapshot.id], merged)
            snapshot.twin_device = dev
            snapshots.append(snapshot)
        return snapshots

    def _paginate(self, items: list, low: int, high: int) -> list:
        """MaxResults/NextToken for describe calls moto answers in one page; the token goes out via REQUEST."""
        max_results = raw_param("MaxResults")
        token = (raw_param("NextToken") or [""])[0]
        REQUEST.next_token = None
        if not max_results and not token:
            return items
        size = int(max_results[0]) if max_results else high
        if not low <= size <= high:
            raise EC2ClientError("InvalidParameterValue", f"Value ( {size} ) for parameter maxResults is invalid. "
                                                          f"Expecting a value between {low} and {high}.")
        try:
            start = int(token, 16) if token else 0
        except ValueError:
            raise EC2ClientError("InvalidNextToken", f"The specified NextToken is not valid: {token}") from None
        page = items[start:start + size]
        if start + size < len(items):
            REQUEST.next_token = format(start + size, "x")
        return page

    def describe_snapshots(self, snapshot_ids: Optional[List[str]] = None, filters: Any = None) -> List[Snapshot]:
        snapshots = self._orig["describe_snapshots"](snapshot_ids=snapshot_ids, filters=filters)
        owners = raw_param("Owner")
        if owners:
            wanted = {self.cloud.account_id if o == "self" else o for o in owners}
            snapshots = [s for s in snapshots if s.owner_id in wanted]
        if getattr(REQUEST, "action", None) != "DescribeSnapshots":
            return snapshots
        return self._paginate(snapshots, 5, 1000)

    def describe_volumes(self, volume_ids: Optional[List[str]] = None, filters: Any = None) -> List[Volume]:
        volumes = self._orig["describe_volumes"](volume_ids=volume_ids, filters=filters)
        if getattr(REQUEST, "action", None) != "DescribeVolumes":
            return volumes
        return self._paginate(volumes, 5, 500)

    def delete_snapshot(self, snapshot_id: str):
        snapshot = self._orig["delete_snapshot"](snapshot_id)
        image = self.snapshot_images.pop(snapshot_id, None)
        if image and self.cloud.blockstore:
            self.cloud.blockstore.delete(image)
        return snapshot

    # -- instances ------------------------------------------------------------------------------
    def stop_instances(self, instance_ids: List[str]):
        result = self._orig["stop_instances"](instance_ids)
        if self.latency.transition("instance_stop") > 0:
            for instance, _previous in result:
                instance._state.name, instance._state.code = "stopping", 64

                def done(inst=instance):
                    if inst._state.name == "stopping":
                        inst._state.name, inst._state.code = "stopped", 80
                self._later("instance_stop", done)
        return result

    def start_instances(self, instance_ids: List[str]):
        for instance in self.backend.get_multi_instances_by_id(instance_ids):
            if instance._state.name == "stopping":
                raise EC2ClientError("IncorrectInstanceState",
                                     f"The instance '{instance.id}' is not in a state from which it can be started.")
        result = self._orig["start_instances"](instance_ids)
        if self.latency.transition("instance_start") > 0:
            for instance, _previous in result:
                instance._state.name, instance._state.code = "pending", 0

                def done(inst=instance):
                    if inst._state.name == "pending":
                        inst._state.name, inst._state.code = "running", 16
                self._later("instance_start", done)
        return result
