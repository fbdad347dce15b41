"""EC2 behaviour around moto's backend: state transitions, real block data, quotas and faults.

moto keeps the resources; this module wraps a few methods of *one* moto EC2 backend (the twin's
own account and region; other moto users in the process are untouched) and swaps the classes of
the objects it creates for subclasses that know about transitions (``creating``, ``pending``,
``attaching``, ``detaching``, ``stopping``...).
"""

from __future__ import annotations

import copy
import os
import threading
import time
from typing import Any, Dict, List, Optional

from moto.ec2.exceptions import EC2ClientError
from moto.ec2.models.amis import Ami
from moto.ec2.models.elastic_block_store import Snapshot, Volume
from moto.ec2.models.instances import Instance
from moto.ec2.utils import EC2_PREFIX_TO_RESOURCE, get_prefix

from ..core.snapshot_locks import LockBook, LockRefused, iso, parse_iso

# one request is served per thread; the wrapped backend methods read its raw parameters here
REQUEST = threading.local()
# EBS quotas (Amazon EBS user guide, "Amazon EBS quotas"): pending snapshots per volume by type (5 for the
# others), concurrent snapshot copies per destination region.
PENDING_PER_VOLUME = {"st1": 1, "sc1": 1}
COPIES_PER_REGION = 20


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


class TwinAmi(_FastTags, Ami):
    """An AMI whose block device mappings are the ones it was registered or created with."""

    _twin_mappings: Optional[List[Dict[str, Any]]] = None

    @property
    def block_device_mappings(self) -> List[Dict[str, Any]]:
        if self._twin_mappings is not None:
            return self._twin_mappings
        return super().block_device_mappings

    def snapshot_ids(self) -> List[str]:
        return [m["Ebs"]["SnapshotId"] for m in self.block_device_mappings if (m.get("Ebs") or {}).get("SnapshotId")]


def raw_struct_list(prefix: str) -> List[Dict[str, str]]:
    """``Prefix.N.Key.Sub=value`` query parameters as [{"Key.Sub": value}], in N order."""
    params: Dict[str, List[str]] = getattr(REQUEST, "params", None) or {}
    items: Dict[int, Dict[str, str]] = {}
    for key, values in params.items():
        if not key.startswith(prefix + "."):
            continue
        index, _sep, rest = key[len(prefix) + 1:].partition(".")
        if index.isdigit() and rest:
            items.setdefault(int(index), {})[rest] = values[0]
    return [items[i] for i in sorted(items)]


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


# moto lacks the EBS snapshot lock actions; the twin answers them (rules in core/snapshot_locks.py).
LOCK_ACTIONS = ("LockSnapshot", "UnlockSnapshot", "DescribeLockedSnapshots")
# The EC2 API Reference names no error code for DeleteSnapshot on a locked snapshot; the twin's choice.
LOCKED_DELETE_CODE = "SnapshotLocked"


def _ec2_answer(action: str, body: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<{action}Response xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
            f"<requestId>twin</requestId>{body}</{action}Response>").encode()


class Ec2Extension:
    """Installs the twin's behaviour on one moto EC2 backend."""

    def __init__(self, cloud, backend=None) -> None:
        self.cloud = cloud
        self.backend = backend if backend is not None else cloud.ec2
        self.region = self.backend.region_name
        self.volume_images: Dict[str, str] = {}
        self.snapshot_images: Dict[str, str] = {}
        self._pending: Dict[str, List[Snapshot]] = {}  # volume id -> its snapshots not yet completed
        self._orig: Dict[str, Any] = {}
        self.locks = LockBook()  # EBS snapshot locks, which moto does not know
        for name in ("copy_snapshot", "create_volume", "attach_volume", "detach_volume", "delete_volume", "create_snapshot",
                     "create_snapshots", "delete_snapshot", "stop_instances", "start_instances", "describe_snapshots",
                     "describe_volumes", "register_image", "create_image", "describe_images"):
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
        fails = self._create_volume_fails(snapshot_id)
        if self.latency.transition("volume_create") > 0:
            volume._twin_state = "creating"

            def done():
                volume._twin_state = "error" if fails else None
            self._later("volume_create", done)
        elif fails:
            volume._twin_state = "error"
        return volume

    def _volume_faults(self, volume_id: Optional[str]) -> Dict[str, Any]:
        return dict((self.faults.get("volumes") or {}).get(volume_id or "", {}))

    def _create_volume_fails(self, snapshot_id: Optional[str]) -> bool:
        """Fault ``create_volume_error``: globally (true or a rate), for the snapshot's source volume or instance."""
        setting = self.faults.get("create_volume_error")
        if setting is True or (isinstance(setting, (int, float)) and not isinstance(setting, bool) and self.faults.chance(setting)):
            return True
        if not snapshot_id or snapshot_id not in self.backend.snapshots:
            return False
        snapshot = self.backend.snapshots[snapshot_id]
        source = getattr(snapshot.volume, "id", None)
        if self._volume_faults(source).get("create_volume_error"):
            return True
        owners = {t["value"] for t in snapshot.get_tags() if t["key"] == "appconsistent:instance-id"}
        attachment = getattr(snapshot.volume, "attachment", None)
        if attachment is not None:
            owners.add(attachment.instance.id)
        return any(self.cloud.instance_faults(i).get("create_volume_error") for i in owners if i in self.cloud.instances)

    def attach_volume(self, volume_id: str, instance_id: str, device_path: str, delete_on_termination: bool = False):
        volume = self.backend.get_volume(volume_id)
        if volume.status in ("creating", "error"):
            raise EC2ClientError("IncorrectState", f"Volume '{volume_id}' is not 'available'.")
        failure = self._volume_faults(volume_id).get("attach_error") or self.cloud.instance_faults(instance_id).get("attach_error")
        if failure:
            code = failure if isinstance(failure, str) else "IncorrectState"
            raise EC2ClientError(code, f"Attaching volume '{volume_id}' to instance '{instance_id}' failed (injected fault).")
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

    def _check_pending(self, volume_ids: List[str]) -> None:
        """EBS quota: at most 5 pending snapshots per volume (1 for st1 and sc1); one more is refused.

        Fault ``pending_snapshot_limit`` lowers it for every volume.  AWS also counts snapshots left in
        error (until deleted) and deleted ones still in progress; the twin counts only pending ones.
        """
        lowered = self.faults.get("pending_snapshot_limit")
        for vid in volume_ids:
            pending = [s for s in self._pending.get(vid, []) if s.status == "pending" and s.id in self.backend.snapshots]
            self._pending[vid] = pending
            volume_type = getattr(self.backend.volumes.get(vid), "volume_type", "gp3")
            limit = PENDING_PER_VOLUME.get(volume_type, 5) if lowered is None else int(lowered)
            if len(pending) >= limit:
                raise EC2ClientError("ConcurrentSnapshotLimitExceeded",
                                     f"You have reached the limit of {limit} concurrent snapshots for volume {vid} "
                                     f"(type {volume_type}). Wait until the pending snapshots complete.")

    def create_snapshot(self, volume_id: str, description: str, owner_id: Optional[str] = None,
                        from_ami: Optional[str] = None) -> Snapshot:
        self._check_quota(1)
        self._check_pending([volume_id])
        return self._snapshot(volume_id, description, owner_id, from_ami)

    def _snapshot(self, volume_id: str, description: str, owner_id: Optional[str] = None,
                  from_ami: Optional[str] = None) -> Snapshot:
        snapshot = self._orig["create_snapshot"](volume_id, description, owner_id, from_ami)
        snapshot.__class__ = TwinSnapshot
        # A snapshot of an encrypted volume is encrypted with the volume's key (moto records only the flag).
        if snapshot.encrypted and not snapshot.kms_key_id:
            snapshot.kms_key_id = getattr(snapshot.volume, "kms_key_id", None)
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
        self._pending.setdefault(volume_id, []).append(snapshot)
        return snapshot

    def snapshot_details(self, snapshot_id: str) -> Optional[tuple]:
        """(StartTime with milliseconds, FullSnapshotSizeInBytes) of a snapshot of this backend, or None."""
        snapshot = self.backend.snapshots.get(snapshot_id)
        if snapshot is None:
            return None
        start = snapshot.start_time.strftime("%Y-%m-%dT%H:%M:%S.") + f"{snapshot.start_time.microsecond // 1000:03d}Z"
        image = self.snapshot_images.get(snapshot_id)
        size = None
        if image:
            try:
                size = os.stat(image).st_blocks * 512
            except OSError:
                size = None
        if size is None:
            size = int(getattr(snapshot.volume, "size", 0) or 0) * 2 ** 30
        return start, size

    def _complete_later(self, snapshot, final: str = "completed") -> None:
        duration = self.latency.transition("snapshot_complete")
        if duration <= 0:
            snapshot._twin_status = final
            return
        snapshot._twin_status = "pending"
        snapshot._twin_started = time.monotonic()
        snapshot._twin_duration = duration

        def done():
            snapshot._twin_status = final
        self._later("snapshot_complete", done)

    def copy_snapshot(self, source_snapshot_id: str, source_region: str, description: str, kms_key_id: Optional[str]):
        """CopySnapshot into this region: the block image is copied, the copy is pending for ``snapshot_complete``.

        At most 20 copies are in flight per destination region (the EBS quota; fault ``copy_snapshot_limit``
        lowers it); one more is ``ResourceLimitExceeded``, as on AWS.
        """
        limit = int(self.faults.get("copy_snapshot_limit", COPIES_PER_REGION))
        in_flight = [s for s in self.own_snapshots() if getattr(s, "_twin_copy", False) and s.status == "pending"]
        if len(in_flight) >= limit:
            raise EC2ClientError("ResourceLimitExceeded", f"You have reached the maximum number of concurrent snapshot copies "
                                                          f"({limit}) for the destination region {self.region}.")
        source_ext = self.cloud.ext_for(source_region)
        encrypted = (raw_param("Encrypted") or ["false"])[0].lower() == "true"
        if kms_key_id and not encrypted and not source_ext.backend.get_snapshot(source_snapshot_id).encrypted:
            raise EC2ClientError("InvalidParameterDependency", "The parameter KmsKeyId requires the parameter Encrypted to be set.")
        snapshot = self._orig["copy_snapshot"](source_snapshot_id, source_region, description, kms_key_id)
        snapshot.__class__ = TwinSnapshot
        snapshot._twin_copy = True
        if encrypted:
            snapshot.encrypted = True
        image = source_ext.snapshot_images.get(source_snapshot_id)
        if image and self.cloud.blockstore:
            self.snapshot_images[snapshot.id] = self.cloud.blockstore.snapshot(image)
        self._complete_later(snapshot)
        return snapshot

    def intercept(self, action: str) -> Optional[bytes]:
        """Answer a request moto misreads or lacks, or None to let moto answer it."""
        if action in LOCK_ACTIONS:
            return getattr(self, "_" + action)()
        if action == "ModifySnapshotAttribute":
            changes = {op: raw_struct_list(f"CreateVolumePermission.{op}") for op in ("Add", "Remove")}
            if not any(changes.values()):
                return None
            snapshot_id = (raw_param("SnapshotId") or [""])[0]
            for op, items in changes.items():
                users = [i["UserId"] for i in items if i.get("UserId")]
                groups = [i["Group"] for i in items if i.get("Group")]
                if op == "Add":
                    self.backend.add_create_volume_permission(snapshot_id, user_ids=users, groups=groups)
                else:
                    self.backend.remove_create_volume_permission(snapshot_id, user_ids=users, groups=groups)
            return (b'<?xml version="1.0" encoding="UTF-8"?>\n<ModifySnapshotAttributeResponse '
                    b'xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>twin</requestId>'
                    b'<return>true</return></ModifySnapshotAttributeResponse>')
        return None

    # -- snapshot locks (LockSnapshot, UnlockSnapshot, DescribeLockedSnapshots) ---------------------
    def _lock_target(self) -> str:
        snapshot_id = (raw_param("SnapshotId") or [""])[0]
        if not snapshot_id:
            raise EC2ClientError("MissingParameter", "The request must contain the parameter SnapshotId.")
        self.backend.get_snapshot(snapshot_id)  # InvalidSnapshot.NotFound
        if (raw_param("DryRun") or ["false"])[0].lower() == "true":
            raise EC2ClientError("DryRunOperation", "Request would have succeeded, but DryRun flag is set.")
        return snapshot_id

    @staticmethod
    def _int_param(name: str) -> Optional[int]:
        value = (raw_param(name) or [None])[0]
        if value in (None, ""):
            return None
        try:
            return int(value)
        except ValueError:
            raise EC2ClientError("InvalidParameterValue", f"Value ({value}) for parameter {name} is invalid.") from None

    def _lock_fields(self, lock) -> str:
        now = self.locks.now()
        fields = [("lockState", lock.state(now)), ("lockDuration", lock.duration_days),
                  ("coolOffPeriod", lock.cool_off_hours), ("coolOffPeriodExpiresOn", iso(lock.cool_off_expires)),
                  ("lockCreatedOn", iso(lock.created)), ("lockExpiresOn", iso(lock.expires)),
                  ("lockDurationStartTime", iso(lock.duration_start))]
        return "".join(f"<{k}>{v}</{k}>" for k, v in fields if v is not None)

    def _LockSnapshot(self) -> bytes:
        snapshot_id = self._lock_target()
        expiration = (raw_param("ExpirationDate") or [None])[0]
        try:
            lock = self.locks.aws_lock(snapshot_id, (raw_param("LockMode") or [None])[0], self._int_param("LockDuration"),
                                       parse_iso(expiration) if expiration else None, self._int_param("CoolOffPeriod"))
        except LockRefused as exc:
            raise EC2ClientError(exc.code, exc.message) from None
        except ValueError:
            raise EC2ClientError("InvalidParameterValue", f"Value ({expiration}) for parameter ExpirationDate is invalid.") from None
        return _ec2_answer("LockSnapshot", f"<snapshotId>{snapshot_id}</snapshotId>{self._lock_fields(lock)}")

    def _UnlockSnapshot(self) -> bytes:
        snapshot_id = self._lock_target()
        try:
            self.locks.aws_unlock(snapshot_id)
        except LockRefused as exc:
            raise EC2ClientError(exc.code, exc.message) from None
        return _ec2_answer("UnlockSnapshot", f"<snapshotId>{snapshot_id}</snapshotId>")

    def _DescribeLockedSnapshots(self) -> bytes:
        ids = raw_param("SnapshotId")
        states = [value for item in raw_struct_list("Filter") if item.get("Name") == "lock-state"
                  for key, value in item.items() if key.startswith("Value.")]
        locks = self.locks.listed(snapshot_ids=ids or None, states=states or None)
        if ids:
            for snapshot_id in ids:
                self.backend.get_snapshot(snapshot_id)  # InvalidSnapshot.NotFound
        start = int((raw_param("NextToken") or ["0"])[0] or 0)
        size = self._int_param("MaxResults") or 1000
        if not 5 <= size <= 1000:
            raise EC2ClientError("InvalidParameterValue", f"Value ({size}) for parameter MaxResults is invalid. "
                                 "It must be between 5 and 1000.")
        page = locks[start:start + size]
        items = "".join(f"<item><ownerId>{self.cloud.account_id}</ownerId><snapshotId>{lock.snapshot_id}</snapshotId>"
                        f"{self._lock_fields(lock)}</item>" for lock in page)
        token = f"<nextToken>{start + size}</nextToken>" if start + size < len(locks) else ""
        return _ec2_answer("DescribeLockedSnapshots", f"<snapshotSet>{items}</snapshotSet>{token}")

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
        self._check_pending([vid for _dev, vid in chosen])
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
        if self.locks.blocks_delete(snapshot_id):
            state = self.locks.state(snapshot_id)
            raise EC2ClientError(LOCKED_DELETE_CODE, f"The snapshot '{snapshot_id}' is locked ({state}) and cannot be "
                                 "deleted until its lock expires or is removed.")
        snapshot = self._orig["delete_snapshot"](snapshot_id)
        self.locks.forget(snapshot_id)
        image = self.snapshot_images.pop(snapshot_id, None)
        if image and self.cloud.blockstore:
            self.cloud.blockstore.delete(image)
        return snapshot

    # -- images ---------------------------------------------------------------------------------
    def _drop_placeholder_snapshot(self, ami) -> None:
        """moto gives every AMI a made-up 15 GiB snapshot; the twin's AMIs use their real mappings instead."""
        placeholder = getattr(ami, "ebs_snapshot", None)
        if placeholder is not None and self.backend.snapshots.get(placeholder.id) is placeholder:
            del self.backend.snapshots[placeholder.id]

    def register_image(self, name: Optional[str] = None, description: Optional[str] = None):
        """RegisterImage with the request's BlockDeviceMappings (SnapshotId, VolumeSize...) and RootDeviceName."""
        ami = self._orig["register_image"](name, description)
        ami.__class__ = TwinAmi
        requested = raw_struct_list("BlockDeviceMapping")
        mappings = []
        for item in requested:
            mapping: Dict[str, Any] = {"DeviceName": item.get("DeviceName")}
            snapshot_id = item.get("Ebs.SnapshotId")
            if snapshot_id:
                snapshot = self.backend.get_snapshot(snapshot_id)
                size = int(item.get("Ebs.VolumeSize") or snapshot.volume.size)
                if size < snapshot.volume.size:
                    raise EC2ClientError("InvalidBlockDeviceMapping", f"Volume of {size} GiB is smaller than snapshot "
                                                                      f"'{snapshot_id}', expect size >= {snapshot.volume.size} GiB")
                mapping["Ebs"] = {"SnapshotId": snapshot_id, "VolumeSize": size,
                                  "VolumeType": item.get("Ebs.VolumeType") or "gp3",
                                  "DeleteOnTermination": (item.get("Ebs.DeleteOnTermination") or "true").lower() == "true",
                                  "Encrypted": snapshot.encrypted}
            elif item.get("VirtualName"):
                mapping["VirtualName"] = item["VirtualName"]
            mappings.append(mapping)
        if mappings:
            self._drop_placeholder_snapshot(ami)
            ami._twin_mappings = mappings
            root = (raw_param("RootDeviceName") or [None])[0] or mappings[0]["DeviceName"]
            ami.root_device_name = root
            ami.root_device_type = "ebs"
        return ami

    def create_image(self, instance_id: str, name: str, description: str, tag_specifications: List[Dict[str, Any]]):
        """CreateImage: a snapshot of every attached volume (tagged from TagSpecifications), mapped by device."""
        image_specs = [t for t in tag_specifications or [] if t.get("ResourceType") != "snapshot"]
        snapshot_tags = {t["Key"]: t["Value"] for spec in tag_specifications or [] if spec.get("ResourceType") == "snapshot"
                         for t in spec.get("Tags") or []}
        instance = self.backend.get_instance(instance_id)
        ami = self._orig["create_image"](instance_id, name, description, tag_specifications=image_specs)
        ami.__class__ = TwinAmi
        self._drop_placeholder_snapshot(ami)
        mappings = []
        for dev, vid in self.volumes_of(instance):
            snapshot = self._snapshot(vid, f"Created by CreateImage({instance_id}) for {ami.id}", from_ami=ami.id)
            if snapshot_tags:
                self.backend.create_tags([snapshot.id], snapshot_tags)
            volume = self.backend.get_volume(vid)
            mappings.append({"DeviceName": dev, "Ebs": {"SnapshotId": snapshot.id, "VolumeSize": volume.size,
                                                        "VolumeType": volume.volume_type, "DeleteOnTermination": dev == instance.root_device_name,
                                                        "Encrypted": bool(volume.encrypted)}})
        ami._twin_mappings = mappings
        ami.root_device_name = instance.root_device_name
        ami.root_device_type = "ebs"
        return ami

    def describe_images(self, ami_ids: Optional[List[str]] = None, filters: Optional[Dict[str, Any]] = None,
                        exec_users: Optional[List[str]] = None, owners: Optional[List[str]] = None):
        """DescribeImages, also with the ``block-device-mapping.*`` filters moto lacks."""
        filters = dict(filters or {})
        by_snapshot = filters.pop("block-device-mapping.snapshot-id", None)
        by_device = filters.pop("block-device-mapping.device-name", None)
        images = self._orig["describe_images"](ami_ids=ami_ids, filters=filters or None, exec_users=exec_users, owners=owners)
        if by_snapshot is not None:
            wanted = set(by_snapshot if isinstance(by_snapshot, list) else [by_snapshot])
            images = [i for i in images
                      if wanted & {m["Ebs"]["SnapshotId"] for m in i.block_device_mappings if (m.get("Ebs") or {}).get("SnapshotId")}]
        if by_device is not None:
            wanted = set(by_device if isinstance(by_device, list) else [by_device])
            images = [i for i in images if wanted & {m.get("DeviceName") for m in i.block_device_mappings}]
        return images

    # -- instances ------------------------------------------------------------------------------
    def stop_instances(self, instance_ids: List[str]):
        force = (raw_param("Force") or ["false"])[0].lower() == "true"
        hanging = [] if force else [i for i in instance_ids if self.cloud.instance_faults(i).get("stop_hang")]
        result = self._orig["stop_instances"]([i for i in instance_ids if i not in hanging]) if len(hanging) < len(instance_ids) else []
        for instance in self.backend.get_multi_instances_by_id(hanging):
            # the guest never finishes shutting down: the instance stays stopping until a forced stop
            previous = copy.copy(instance._state)
            if instance._state.name in ("running", "pending"):
                instance._state.name, instance._state.code = "stopping", 64
            result.append((instance, previous))
        if self.latency.transition("instance_stop") > 0:
            for instance, _previous in result:
                if instance.id in hanging:
                    continue
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
