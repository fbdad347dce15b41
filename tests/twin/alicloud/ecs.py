"""ECS 2014-05-26 actions of the twin: instances, disks, snapshots, snapshot-consistent groups and tags."""

from __future__ import annotations

import fnmatch
import os
import re
import subprocess
import threading
import time
from typing import Any, Callable, Dict, Optional, Tuple

from .api import AliError, Params, invalid, match_tags, missing, paginate, tag_list
from ..core.snapshot_locks import COMPLIANCE, COOLOFF, EXPIRED, LockBook, LockRefused
from .model import (CATEGORIES, ESSD_FAMILY, Deferred, Disk, EcsInstance, Snapshot, SnapshotGroup, iso,
                    iso_minutes, new_id, region_infix)

PROVIDER = "alicloud"
GROUP_MAX_DISKS = 16
GROUP_MAX_GIB = 32 * 1024
DEFAULT_SNAPSHOT_QUOTA = 256
# Regions served next to the fleet's own when the fleet names none (credentials.alicloud.regions).
DEFAULT_EXTRA_REGIONS = ("cn-shanghai", "cn-beijing")
# Codes of the injected restore faults unless the fault names its own (see the README, "Faults for restore tests").
DEFAULT_FAULT_CODES = {
    "create_disk_error": ("OperationDenied.NoStock", "The requested resource is sold out in the specified zone; try another zone or retry later.", 403),
    "attach_error": ("InvalidOperation.Conflict", "The operation conflicts with another operation in progress on the disk or the instance.", 403),
    "reset_error": ("IncorrectDiskStatus", "The current disk status does not support this operation.", 403),
}
# The copy limit answer; the twin and the collection share this reading (README, "CopySnapshot").
DEFAULT_COPY_LIMIT_CODE = "InvalidOperation.DiskHasUnfinishedSnapshotCopy"
# The ECS API reference names no error code for DeleteSnapshot on a locked snapshot; the twin's choice (README).
LOCKED_DELETE_CODE = "OperationDenied.SnapshotLocked"
RESOURCE_TYPES = ("instance", "disk", "snapshot", "image", "securitygroup", "volume", "eni", "ddh", "ddhcluster", "keypair",
                  "launchtemplate", "reservedinstance", "snapshotpolicy", "elasticityassurance", "capacityreservation",
                  "command", "invocation", "activation", "managedinstance")
_NAME = re.compile(r"^[A-Za-z\u4e00-\u9fa5][A-Za-z0-9\u4e00-\u9fa5._:\-]{1,127}$")


def check_name(field_name: str, value: Optional[str]) -> None:
    """Names follow the console rules: 2-128 characters, a letter first, no http:// or https:// prefix."""
    if value is None:
        return
    if value.startswith(("http://", "https://")) or not _NAME.match(value):
        raise AliError(f"InvalidParameter.{field_name}" if field_name != "Name" else "InvalidName",
                       f"The specified {field_name} is not valid: 2 to 128 characters, starting with a letter, "
                       "letters, digits, '.', '_', '-' and ':' only, not starting with http:// or https://.")


def check_description(value: Optional[str]) -> None:
    if value is None:
        return
    if len(value) < 2 or len(value) > 256 or value.startswith(("http://", "https://")):
        raise AliError("InvalidDescription.Malformed", "The specified description is not valid: 2 to 256 characters, not starting with http:// or https://.")


def check_tags(tags: list) -> None:
    if len(tags) > 20:
        raise invalid("Tag", "At most 20 tags can be specified.")
    for key, value in tags:
        if key.startswith(("aliyun", "acs:")) or len(key) > 128:
            raise AliError("InvalidTagKey.Malformed", f"The tag key {key} is not valid.")
        if value is not None and len(value) > 128:
            raise AliError("InvalidTagValue.Malformed", f"The tag value of {key} is not valid.")


def _copy_image(source: str, target: str) -> None:
    subprocess.run(["cp", "--sparse=always", "--reflink=auto", source, target], check=True, capture_output=True)


class Ecs:
    """State and actions of the ECS part of the twin; every public action takes Params and returns a body dict."""

    def __init__(self, fleet: Any, region: str, latency: Any, faults: Any, blockstore: Any, regions: Optional[list] = None) -> None:
        self.lock = threading.RLock()
        self.deferred = Deferred()
        self.region = region
        extra = DEFAULT_EXTRA_REGIONS if regions is None else regions
        self.regions = [region] + [r for r in extra if r != region]
        self._fault_calls: Dict[tuple, int] = {}
        self.latency = latency
        self.faults = faults
        self.blockstore = blockstore
        self.instances: Dict[str, EcsInstance] = {}
        self.disks: Dict[str, Disk] = {}
        self.snapshots: Dict[str, Snapshot] = {}
        self.groups: Dict[str, SnapshotGroup] = {}
        self.locks = LockBook()  # snapshot locks (snapshot ids are unique across Regions)
        self.other_tags: Dict[tuple, Dict[str, str]] = {}  # (resource type, id) -> tags, for command/invocation
        self.gates: Dict[str, threading.Event] = {}  # action -> event that holds the action until set (tests)
        self.gate_waiting: Dict[str, threading.Event] = {}
        self._load(fleet)

    # ------------------------------------------------------------------ fleet
    def _load(self, fleet: Any) -> None:
        letters = "abcdefghijklmnopqrstuvwxyz"
        for inst in fleet.by_provider(PROVIDER):
            zone = inst.zone or f"{self.region}-h"
            region = self.region_of_zone(zone) or self.region
            if not inst.id:
                inst.id = new_id("i", region_infix(region))
            status = "Running" if inst.state == "running" else "Stopped"
            ecs_inst = EcsInstance(id=inst.id, name=inst.name, region=region, zone=zone, os_type=inst.platform,
                                   status=status, ram_role=inst.role, execution=inst.execution,
                                   agent_status=inst.agent.status, agent_version=inst.agent.version,
                                   vss_components=inst.agent.vss_components, fleet=inst, tags=dict(inst.tags or {}))
            self.instances[inst.id] = ecs_inst
            for n, vol in enumerate(inst.volumes):
                if not vol.id:
                    vol.id = new_id("d", region_infix(region))
                category = vol.type if vol.type in CATEGORIES else "cloud_essd"
                disk = Disk(id=vol.id, region=region, zone=zone, category=category, size=int(vol.size),
                            type="system" if vol.boot else "data", status="In_use", instance_id=inst.id,
                            device=vol.device or f"/dev/vd{letters[n]}", multi_attach=bool(vol.multi_attach),
                            image=vol.image, mount=vol.mount, ever_attached=True, attached=time.time(),
                            delete_with_instance=bool(vol.boot))
                self.disks[disk.id] = disk

    # ------------------------------------------------------------------ helpers
    def settle(self) -> None:
        with self.lock:
            self.deferred.settle()

    def hold(self, action: str) -> threading.Event:
        """Make ``action`` wait (inside the call) until the returned event is set; for tests of freeze windows."""
        event = threading.Event()
        with self.lock:
            self.gates[action] = event
            self.gate_waiting[action] = threading.Event()
        return event

    def waiting(self, action: str) -> threading.Event:
        """Set once a call of ``action`` is being held by its gate."""
        with self.lock:
            return self.gate_waiting.setdefault(action, threading.Event())

    def pass_gate(self, action: str) -> None:
        with self.lock:
            gate = self.gates.get(action)
            waiting = self.gate_waiting.get(action)
        if gate is not None:
            if waiting is not None:
                waiting.set()
            gate.wait()

    # A resource of another region is as unknown as one that does not exist: ``region`` None means any region
    # (actions whose SDK request carries no RegionId, where the real cloud goes by the endpoint).
    def instance(self, instance_id: Optional[str], name: str = "InstanceId", region: Optional[str] = None) -> EcsInstance:
        if not instance_id:
            raise missing(name)
        inst = self.instances.get(instance_id)
        if inst is None or (region is not None and inst.region != region):
            raise AliError("InvalidInstanceId.NotFound", f"The specified InstanceId {instance_id} does not exist.", 404)
        return inst

    def disk(self, disk_id: Optional[str], name: str = "DiskId", region: Optional[str] = None) -> Disk:
        if not disk_id:
            raise missing(name)
        disk = self.disks.get(disk_id)
        if disk is None or (region is not None and disk.region != region):
            raise AliError("InvalidDiskId.NotFound", f"The specified disk {disk_id} does not exist.", 404)
        return disk

    def snapshot(self, snapshot_id: Optional[str], name: str = "SnapshotId", region: Optional[str] = None) -> Snapshot:
        if not snapshot_id:
            raise missing(name)
        snap = self.snapshots.get(snapshot_id)
        if snap is None or (region is not None and snap.region != region):
            raise AliError("InvalidSnapshotId.NotFound", f"The specified snapshot {snapshot_id} does not exist.", 404)
        return snap

    def region_check(self, params: Params, required: bool = True, name: str = "RegionId") -> Optional[str]:
        """The region the call names (one the twin serves), or None when it names none and need not."""
        region = params.get(name)
        if region is None:
            if required:
                raise missing(name)
            return None
        if region not in self.regions:
            raise AliError("InvalidRegionId.NotFound", f"The specified {name} {region} does not exist.", 404)
        return region

    def region_of_zone(self, zone: str) -> Optional[str]:
        for region in sorted(self.regions, key=len, reverse=True):
            if zone.startswith(region + "-"):
                return region
        return None

    def injected(self, kind: str, spec: Any, scope: str = "") -> Optional[AliError]:
        """The error a restore fault (``create_disk_error``, ``attach_error``, ``reset_error``) injects into this call, if any.

        ``spec`` is true, an error code, or ``{code, message, skip, count, mode}``: the first ``skip`` matching calls
        pass, the next ``count`` (default: all) fail. Calls are counted per scope and per distinct setting.
        """
        if not spec:
            return None
        rule = spec if isinstance(spec, dict) else ({"code": spec} if isinstance(spec, str) else {})
        code, message, status = DEFAULT_FAULT_CODES[kind]
        if rule.get("code") and rule["code"] != code:
            code, message, status = rule["code"], None, None
        key = (kind, scope, repr(sorted(rule.items())))
        with self.lock:
            self._fault_calls[key] = seen = self._fault_calls.get(key, 0) + 1
        skip = int(rule.get("skip", 0) or 0)
        count = rule.get("count")
        if seen <= skip or (count is not None and seen > skip + int(count)):
            return None
        return AliError(code, rule.get("message") or message, status)

    def instance_faults(self, inst: EcsInstance) -> Dict[str, Any]:
        return self.faults.for_instance(inst.fleet)

    def dry_run(self, params: Params) -> None:
        if params.bool("DryRun"):
            raise AliError("DryRunOperation", "Request validation has been passed with DryRun flag set.", 400)

    # ------------------------------------------------------------------ instances
    def render_instance(self, inst: EcsInstance) -> Dict[str, Any]:
        return {
            "InstanceId": inst.id, "InstanceName": inst.name, "HostName": inst.name, "Description": "",
            "Status": inst.status, "RegionId": inst.region, "ZoneId": inst.zone, "InstanceType": inst.instance_type,
            "InstanceTypeFamily": "ecs.g7", "Cpu": 2, "Memory": 8192,
            "OSType": inst.os_type, "OSName": "Windows Server 2022" if inst.os_type == "windows" else "Alibaba Cloud Linux 3",
            "OSNameEn": "Windows Server 2022" if inst.os_type == "windows" else "Alibaba Cloud Linux 3",
            "ImageId": "win2022_21H2_x64_dtc_en-us_40G_alibase_20240101.vhd" if inst.os_type == "windows" else "aliyun_3_x64_20G_alibase_20240101.vhd",
            "CreationTime": iso_minutes(inst.created), "StartTime": iso_minutes(inst.started),
            "InstanceChargeType": "PostPaid", "InternetChargeType": "PayByTraffic", "InstanceNetworkType": "vpc",
            "IoOptimized": True, "DeletionProtection": False, "StoppedMode": "Not-applicable" if inst.status != "Stopped" else "KeepCharging",
            "SerialNumber": inst.id[2:], "ResourceGroupId": "", "OperationLocks": {"LockReason": []},
            "Tags": tag_list(inst.tags),
        }

    def DescribeInstances(self, p: Params) -> Dict[str, Any]:
        region = self.region_check(p)
        ids = p.json_list("InstanceIds")
        if len(ids) > 100:
            raise invalid("InstanceIds", "At most 100 instance IDs can be specified.")
        status = p.get("Status")
        zone = p.get("ZoneId")
        name = p.get("InstanceName")
        wanted_tags = p.tags()
        with self.lock:
            self.deferred.settle()
            items = [i for i in self.instances.values()
                     if i.region == region and (not ids or i.id in ids) and (status is None or i.status == status) and (zone is None or i.zone == zone)
                     and (name is None or fnmatch.fnmatchcase(i.name, name)) and match_tags(i.tags, wanted_tags)]
            rows, paging = paginate(p, items, self.render_instance, token_max=100)
        return {"Instances": {"Instance": rows}, **paging}

    def DescribeInstanceRamRole(self, p: Params) -> Dict[str, Any]:
        region = self.region_check(p)
        ids = p.json_list("InstanceIds")
        role = p.get("RamRoleName")
        with self.lock:
            if ids:
                for instance_id in ids:
                    self.instance(instance_id, "InstanceIds", region)
            items = [i for i in self.instances.values()
                     if i.region == region and i.ram_role and (not ids or i.id in ids) and (role is None or i.ram_role == role)]
            rows, paging = paginate(p, items, lambda i: {"InstanceId": i.id, "RamRoleName": i.ram_role}, page_max=100, page_default=50)
        return {"InstanceRamRoleSets": {"InstanceRamRoleSet": rows}, "RegionId": region, "TotalCount": paging["TotalCount"]}

    def StopInstance(self, p: Params) -> Dict[str, Any]:
        region = self.region_check(p, required=False)
        force = p.bool("ForceStop")
        with self.lock:
            self.deferred.settle()
            inst = self.instance(p.get("InstanceId"), region=region)
            hung = inst.status == "Stopping" and inst.stop_hung
            # A forced stop is the way out of an instance that hangs in Stopping.
            if inst.status != "Running" and not (force and hung):
                raise AliError("IncorrectInstanceStatus", "The current status of the resource does not support this operation.", 403)
            self.dry_run(p)
            inst.status = "Stopping"
            if self.instance_faults(inst).get("stop_hang") and not force:
                inst.stop_hung = True
                return {}
            inst.stop_hung = False

            def stopped() -> None:
                if inst.status == "Stopping":
                    inst.status = "Stopped"
            self.deferred.at(time.time() + self.latency.transition("instance_stop"), stopped)
            self.deferred.settle()
        return {}

    def StartInstance(self, p: Params) -> Dict[str, Any]:
        region = self.region_check(p, required=False)
        with self.lock:
            self.deferred.settle()
            inst = self.instance(p.get("InstanceId"), region=region)
            if inst.status != "Stopped":
                raise AliError("IncorrectInstanceStatus", "The current status of the resource does not support this operation.", 403)
            self.dry_run(p)
            inst.status = "Starting"

            def started() -> None:
                inst.status = "Running"
                inst.started = time.time()
            self.deferred.at(time.time() + self.latency.transition("instance_start"), started)
            self.deferred.settle()
        return {}

    # ------------------------------------------------------------------ disks
    def render_disk(self, disk: Disk) -> Dict[str, Any]:
        attachments = []
        if disk.instance_id and disk.status in ("In_use", "Detaching", "ReIniting"):
            attachments.append({"InstanceId": disk.instance_id, "Device": disk.device or "", "AttachedTime": iso(disk.attached)})
        return {
            "DiskId": disk.id, "DiskName": disk.name, "Description": disk.description, "Status": disk.status,
            "InstanceId": disk.instance_id if attachments else "", "Device": (disk.device or "") if attachments else "",
            "Category": disk.category, "Type": disk.type, "Size": disk.size, "ZoneId": disk.zone, "RegionId": disk.region,
            "PerformanceLevel": disk.performance_level if disk.category == "cloud_essd" else "",
            "SourceSnapshotId": disk.source_snapshot_id or "", "MultiAttach": "Enabled" if disk.multi_attach else "Disabled",
            "Portable": disk.type == "data", "DeleteWithInstance": disk.delete_with_instance, "Encrypted": False,
            "DiskChargeType": "PostPaid", "EnableAutoSnapshot": False, "CreationTime": iso(disk.created),
            "AttachedTime": iso(disk.attached) or "", "DetachedTime": iso(disk.detached) or "",
            "Attachments": {"Attachment": attachments},
            "MountInstances": {"MountInstance": attachments if disk.multi_attach else []},
            "OperationLocks": {"OperationLock": []}, "ResourceGroupId": "",
            "Tags": tag_list(disk.tags),
        }

    def DescribeDisks(self, p: Params) -> Dict[str, Any]:
        region = self.region_check(p)
        ids = p.json_list("DiskIds")
        if len(ids) > 100:
            raise invalid("DiskIds", "At most 100 disk IDs can be specified.")
        instance_id = p.get("InstanceId")
        status = p.get("Status")
        category = p.get("Category")
        disk_type = p.get("DiskType")
        snapshot_id = p.get("SnapshotId")
        zone = p.get("ZoneId")
        name = p.get("DiskName")
        wanted_tags = p.tags()
        with self.lock:
            self.deferred.settle()
            items = [d for d in self.disks.values()
                     if d.region == region and (not ids or d.id in ids) and (instance_id is None or d.instance_id == instance_id)
                     and (status in (None, "All") or d.status == status) and (category in (None, "all") or d.category == category)
                     and (disk_type in (None, "all") or d.type == disk_type) and (snapshot_id is None or d.source_snapshot_id == snapshot_id)
                     and (zone is None or d.zone == zone) and (name is None or d.name == name) and match_tags(d.tags, wanted_tags)]
            rows, paging = paginate(p, items, self.render_disk, token_max=500, page_max=100)
        return {"Disks": {"Disk": rows}, **paging}

    def CreateDisk(self, p: Params) -> Dict[str, Any]:
        region = self.region_check(p)
        instance_id = p.get("InstanceId")
        zone = p.get("ZoneId")
        category = p.get("DiskCategory", "cloud")
        if category not in CATEGORIES:
            raise AliError("InvalidDiskCategory.ValueNotSupported", f"The specified disk category {category} is not supported.")
        name = p.get("DiskName")
        if name is not None:
            check_name("DiskName", name)
        description = p.get("Description")
        check_description(description)
        size = p.int("Size", None, 1, 65536)
        tags = p.tags()
        with self.lock:
            self.deferred.settle()
            inst = None
            if instance_id:
                inst = self.instance(instance_id, region=region)
                zone = inst.zone
            elif not zone:
                raise missing("ZoneId")
            # A fleet may give an instance a zone of its own naming; such a zone belongs to the instance's region.
            if self.region_of_zone(zone) != region and not any(i.zone == zone and i.region == region for i in self.instances.values()):
                raise AliError("InvalidZoneId.NotFound", f"The specified zone {zone} does not exist in the region {region}.", 404)
            snap = None
            if p.get("SnapshotId"):
                snap = self.snapshot(p.get("SnapshotId"), region=region)
                if snap.status != "accomplished":
                    raise AliError("IncorrectSnapshotStatus", "The current status of the snapshot does not support this operation.", 403)
                if size is None:
                    size = snap.disk_size
                elif size < snap.disk_size:
                    raise AliError("InvalidSize.ValueNotSupported", "The specified size is smaller than the size of the snapshot.")
            if size is None:
                raise missing("Size")
            _spec, error = self._fault_error("create_disk_error", inst, snap)
            if error is not None:
                raise error
            image = None
            if snap is not None and snap.image:
                image = self.blockstore.volume_from_snapshot(snap.image)
            disk = Disk(id=new_id("d", region_infix(region)), region=region, zone=zone, category=category, size=size, type="data", status="Creating",
                        image=image, source_snapshot_id=snap.id if snap else None, name=name or "", description=description or "",
                        multi_attach=p.get("MultiAttach", "Disabled") == "Enabled", delete_with_instance=False,
                        performance_level=p.get("PerformanceLevel", "PL1"), tags={k: v or "" for k, v in tags})
            self.disks[disk.id] = disk
            created_at = time.time() + self.latency.transition("volume_create")
            if inst is not None:
                disk.instance_id = inst.id
                disk.device = self._next_device(inst.id)

                def attached() -> None:
                    disk.status = "In_use"
                    disk.ever_attached = True
                    disk.attached = time.time()
                    self._expose(disk, attach=True)
                self.deferred.at(created_at, attached)
            else:
                self.deferred.at(created_at, lambda: setattr(disk, "status", "Available"))
            self.deferred.settle()
        return {"DiskId": disk.id, "OrderId": ""}

    def _expose(self, disk: Disk, attach: bool) -> None:
        """Local instances: a stable link ``<store>/instances/<instance>/<device>`` to the attached disk's image,
        as the AWS twin keeps one, so that a play can check a restored disk on this machine."""
        inst = self.instances.get(disk.instance_id or "")
        if not disk.image or self.blockstore is None or inst is None or inst.execution != "local" or not disk.device:
            return
        link = os.path.join(self.blockstore.root, "instances", inst.id, os.path.basename(disk.device))
        if attach:
            os.makedirs(os.path.dirname(link), exist_ok=True)
            if os.path.lexists(link):
                os.unlink(link)
            os.symlink(disk.image, link)
        elif os.path.islink(link):
            os.unlink(link)

    def _next_device(self, instance_id: str) -> str:
        used = {d.device for d in self.disks.values() if d.instance_id == instance_id}
        for letter in "bcdefghijklmnopqrstuvwxyz":
            for prefix in ("/dev/xvd", "/dev/vd"):
                if f"{prefix}{letter}" in used:
                    break
            else:
                return f"/dev/xvd{letter}"
        raise AliError("InvalidOperation.DiskLimitExceeded", "No more disks can be attached to this instance.", 403)

    def _fault_error(self, kind: str, inst: Optional[EcsInstance], target: Any) -> Tuple[Any, Optional[AliError]]:
        """A restore fault for a call and the error it injects now: per disk or snapshot id (global ``resources``),
        else per instance, else global; calls are counted where the setting was found."""
        target_id = getattr(target, "id", None) or ""
        per_resource = (self.faults.get("resources") or {}).get(target_id) or {}
        if per_resource.get(kind):
            spec, scope = per_resource[kind], f"resource:{target_id}"
        elif inst is not None and self.instance_faults(inst).get(kind):
            spec, scope = self.instance_faults(inst)[kind], f"instance:{inst.id}"
        else:
            spec, scope = self.faults.get(kind), "global"
        return spec, self.injected(kind, spec, scope)

    def AttachDisk(self, p: Params) -> Dict[str, Any]:
        region = self.region_check(p, required=False)
        with self.lock:
            self.deferred.settle()
            inst = self.instance(p.get("InstanceId"), region=region)
            disk = self.disk(p.get("DiskId"), region=region)
            if disk.status != "Available":
                raise AliError("IncorrectDiskStatus", "The current disk status does not support this operation.", 403)
            if inst.status not in ("Running", "Stopped"):
                raise AliError("IncorrectInstanceStatus", "The current status of the resource does not support this operation.", 403)
            if disk.zone != inst.zone:
                raise AliError("InvalidDiskId.ZoneMismatch", "The disk and the instance are not in the same zone.", 403)
            device = p.get("Device")
            if device and any(d.device == device and d.instance_id == inst.id for d in self.disks.values()):
                raise AliError("InvalidDevice.InUse", f"The device {device} is already in use.", 403)
            spec, error = self._fault_error("attach_error", inst, disk)
            later = error is not None and isinstance(spec, dict) and spec.get("mode") == "async"
            if error is not None and not later:
                raise error
            disk.status = "Attaching"
            disk.instance_id = inst.id
            disk.device = device or self._next_device(inst.id)
            if p.get("DeleteWithInstance") is not None:
                disk.delete_with_instance = p.bool("DeleteWithInstance")

            def attached() -> None:
                if later:
                    # The real attach fails after the call was accepted: the disk simply falls back to Available.
                    disk.status = "Available"
                    disk.instance_id = None
                    disk.device = None
                    return
                disk.status = "In_use"
                disk.ever_attached = True
                disk.attached = time.time()
                self._expose(disk, attach=True)
            self.deferred.at(time.time() + self.latency.transition("volume_attach"), attached)
            self.deferred.settle()
        return {}

    def DetachDisk(self, p: Params) -> Dict[str, Any]:
        region = self.region_check(p, required=False)
        with self.lock:
            self.deferred.settle()
            inst = self.instance(p.get("InstanceId"), region=region)
            disk = self.disk(p.get("DiskId"), region=region)
            if disk.instance_id != inst.id or disk.status != "In_use":
                raise AliError("IncorrectDiskStatus", "The disk is not attached to the specified instance.", 403)
            if disk.type == "system" and inst.status != "Stopped":
                raise AliError("IncorrectInstanceStatus", "The system disk can be detached only from a stopped instance.", 403)
            disk.status = "Detaching"

            def detached() -> None:
                self._expose(disk, attach=False)
                disk.status = "Available"
                disk.last_instance_id, disk.last_device = disk.instance_id, disk.device
                disk.instance_id = None
                disk.device = None
                disk.detached = time.time()
            self.deferred.at(time.time() + self.latency.transition("volume_detach"), detached)
            self.deferred.settle()
        return {}

    def DeleteDisk(self, p: Params) -> Dict[str, Any]:
        region = self.region_check(p, required=False)
        with self.lock:
            self.deferred.settle()
            disk = self.disk(p.get("DiskId"), region=region)
            if disk.status != "Available":
                raise AliError("IncorrectDiskStatus", "Only a disk in the Available state can be deleted.", 403)
            self.disks.pop(disk.id)
            if disk.image and disk.source_snapshot_id and self.blockstore is not None:
                self.blockstore.delete(disk.image)
        return {}

    # ------------------------------------------------------------------ snapshots
    def _progress(self, snap: Snapshot) -> str:
        if snap.status == "accomplished":
            return "100%"
        if snap.status == "failed":
            return "0%"
        total = max(snap.ready_at - snap.created, 1e-6)
        return f"{min(99, int(100 * (time.time() - snap.created) / total))}%"

    def render_snapshot(self, snap: Snapshot) -> Dict[str, Any]:
        return {
            "SnapshotId": snap.id, "SnapshotName": snap.name, "Description": snap.description, "Status": snap.status,
            "SourceSnapshotId": snap.copied_from or "", "SourceRegionId": snap.source_region if snap.copied_from else "",
            "KMSKeyId": snap.kms_key_id,
            "Progress": self._progress(snap), "Available": snap.available, "SourceDiskId": snap.disk_id,
            "SourceDiskType": snap.disk_type, "SourceDiskSize": str(snap.disk_size), "SourceStorageType": "disk",
            "Category": "standard", "SnapshotType": "user", "Usage": "none", "InstantAccess": False,
            "InstantAccessRetentionDays": 0, "Encrypted": snap.encrypted, "RegionId": snap.region or self.region, "ResourceGroupId": "",
            "CreationTime": iso(snap.created), "LastModifiedTime": iso(snap.created), "RetentionDays": snap.retention_days,
            "RemainTime": max(0, int(snap.ready_at - time.time())) if snap.status == "progressing" else 0,
            "SnapshotSN": snap.id[2:], "ProductCode": "", "Tags": tag_list(snap.tags),
        }

    def DescribeSnapshots(self, p: Params) -> Dict[str, Any]:
        region = self.region_check(p)
        ids = p.json_list("SnapshotIds")
        if len(ids) > 100:
            raise invalid("SnapshotIds", "At most 100 snapshot IDs can be specified.")
        instance_id = p.get("InstanceId")
        disk_id = p.get("DiskId")
        status = p.get("Status", "all")
        if status not in ("progressing", "accomplished", "failed", "all"):
            raise invalid("Status")
        name = p.get("SnapshotName")
        source_type = (p.get("SourceDiskType") or "").lower()
        wanted_tags = p.tags()
        with self.lock:
            self.deferred.settle()
            items = [s for s in self.snapshots.values()
                     if s.region == region and (not ids or s.id in ids) and (instance_id is None or s.instance_id == instance_id)
                     and (disk_id is None or s.disk_id == disk_id) and (status in ("all", s.status))
                     and (name is None or s.name == name) and (not source_type or s.disk_type == source_type)
                     and match_tags(s.tags, wanted_tags)]
            items.sort(key=lambda s: s.created, reverse=True)
            rows, paging = paginate(p, items, self.render_snapshot, token_max=100, page_max=100)
        return {"Snapshots": {"Snapshot": rows}, **paging}

    def DeleteSnapshot(self, p: Params) -> Dict[str, Any]:
        region = self.region_check(p, required=False)
        with self.lock:
            self.deferred.settle()
            snap = self.snapshot(p.get("SnapshotId"), region=region)
            if self.locks.blocks_delete(snap.id):
                raise self._locked_error(snap)
            if any(d.source_snapshot_id == snap.id for d in self.disks.values()) and not p.bool("Force"):
                raise AliError("SnapshotCreatedDisk", "The snapshot has been used to create disks; use Force to delete it.", 403)
            self._delete_snapshot(snap)
        return {}

    def _locked_error(self, snap: Snapshot) -> AliError:
        return AliError(LOCKED_DELETE_CODE, f"The snapshot {snap.id} is locked ({self.locks.state(snap.id)}) and cannot "
                        "be deleted until its lock expires.", 403)

    def _delete_snapshot(self, snap: Snapshot) -> None:
        self.locks.forget(snap.id)
        self.snapshots.pop(snap.id, None)
        group = self.groups.get(snap.group_id or "")
        if group is not None and snap.id in group.snapshot_ids:
            group.snapshot_ids.remove(snap.id)
        if snap.image and self.blockstore is not None:
            self.blockstore.delete(snap.image)

    # ------------------------------------------------------------------ snapshot locks
    def _lock_target(self, p: Params) -> Snapshot:
        region = self.region_check(p)
        snap = self.snapshot(p.get("SnapshotId"), region=region)
        self.dry_run(p)
        return snap

    def render_lock(self, lock: Any) -> Dict[str, Any]:
        now = self.locks.now()
        return {"SnapshotId": lock.snapshot_id, "LockMode": lock.mode, "LockStatus": lock.state(now),
                "LockDuration": lock.duration_days, "CoolOffPeriod": lock.cool_off_hours or 0,
                "CoolOffPeriodExpiredTime": iso(lock.cool_off_expires) if lock.cool_off_expires else "",
                "LockCreationTime": iso(lock.created), "LockDurationStartTime": iso(lock.duration_start),
                "LockExpiredTime": iso(lock.expires)}

    def LockSnapshot(self, p: Params) -> Dict[str, Any]:
        with self.lock:
            snap = self._lock_target(p)
            try:
                lock = self.locks.alicloud_lock(snap.id, p.get("LockMode"), p.int("LockDuration"), p.int("CoolOffPeriod"))
            except LockRefused as exc:
                raise AliError(exc.code, exc.message, exc.status) from None
            return {"LockedSnapshotInfo": self.render_lock(lock)}

    def UnlockSnapshot(self, p: Params) -> Dict[str, Any]:
        with self.lock:
            snap = self._lock_target(p)
            try:
                self.locks.alicloud_unlock(snap.id)
            except LockRefused as exc:
                raise AliError(exc.code, exc.message, exc.status) from None
        return {}

    def DescribeLockedSnapshots(self, p: Params) -> Dict[str, Any]:
        region = self.region_check(p)
        ids = p.indexed("SnapshotIds") or p.json_list("SnapshotIds")
        if len(ids) > 100:
            raise invalid("SnapshotIds", "At most 100 snapshot IDs can be specified.")
        status = p.get("LockStatus")
        if status is not None and status not in (COOLOFF, COMPLIANCE, EXPIRED):
            raise invalid("LockStatus")
        self.dry_run(p)
        with self.lock:
            locks = [lock for lock in self.locks.listed(snapshot_ids=ids or None, states=[status] if status else None)
                     if lock.snapshot_id in self.snapshots and self.snapshots[lock.snapshot_id].region == region]
            rows, paging = paginate(p, locks, self.render_lock, token_max=100, page_max=100, pages=False)
        return {"LockedSnapshotsInfo": rows, "NextToken": paging["NextToken"]}

    # ------------------------------------------------------------------ copies to other regions
    def _copy_limit(self, destination: str) -> Optional[int]:
        """The number of unfinished copies a destination region accepts (fault ``copy_concurrency_limit``), or None."""
        limit = self.faults.get("copy_concurrency_limit")
        if isinstance(limit, dict):
            limit = limit.get(destination, limit.get("*"))
        return None if limit is None else int(limit)

    def CopySnapshot(self, p: Params) -> Dict[str, Any]:
        region = self.region_check(p)
        snapshot_id = p.require("SnapshotId")
        destination = self.region_check(p, name="DestinationRegionId")
        name = p.get("DestinationSnapshotName")
        check_name("DestinationSnapshotName", name)
        if name is not None and name.startswith("auto"):
            raise AliError("InvalidParameter.DestinationSnapshotName", "A snapshot name cannot start with auto (reserved for automatic snapshots).")
        description = p.get("DestinationSnapshotDescription")
        check_description(description)
        retention = p.int("RetentionDays", 0, 1, 65536)
        encrypted = p.bool("Encrypted")
        kms_key_id = p.get("KMSKeyId", "")
        tags = p.tags()
        check_tags(tags)
        with self.lock:
            self.deferred.settle()
            source = self.snapshot(snapshot_id, region=region)
            if source.status != "accomplished":
                raise AliError("IncorrectSnapshotStatus", "The current status of the snapshot does not support this operation.", 403)
            unfinished = [s for s in self.snapshots.values() if s.copied_from is not None and s.region == destination and s.status == "progressing"]
            limit = self._copy_limit(destination)
            per_disk = self.faults.get("copy_per_disk_limit")
            busy_disk = per_disk and any(self.snapshots.get(s.copied_from or "") is not None
                                         and self.snapshots[s.copied_from or ""].disk_id == source.disk_id for s in unfinished)
            if (limit is not None and len(unfinished) >= limit) or busy_disk:
                code = self.faults.get("copy_limit_code") or DEFAULT_COPY_LIMIT_CODE
                raise AliError(code, f"Too many unfinished snapshot copies into {destination}; retry when one has finished.", 403)
            now = time.time()
            done_at = now + self.latency.transition("snapshot_complete")
            image = self.blockstore.snapshot(source.image) if source.image and self.blockstore is not None else None
            copy = Snapshot(id=new_id("s", region_infix(destination)), disk_id=source.disk_id, disk_type=source.disk_type,
                            disk_size=source.disk_size, disk_category=source.disk_category, instance_id=None, name=name or "",
                            description=description or "", status="progressing", image=image, tags={k: v or "" for k, v in tags},
                            created=now, ready_at=done_at, region=destination, encrypted=encrypted or source.encrypted,
                            kms_key_id=kms_key_id if encrypted or kms_key_id else source.kms_key_id, retention_days=retention or 0,
                            copied_from=source.id, source_region=region)
            self.snapshots[copy.id] = copy
            failing = self.faults.get("copy_error")

            def complete() -> None:
                copy.status = "failed" if failing else "accomplished"
                copy.available = not failing
            if not self.faults.get("copy_hang"):
                self.deferred.at(done_at, complete)
            self.deferred.settle()
        return {"SnapshotId": copy.id}

    # ------------------------------------------------------------------ snapshot-consistent groups
    def CreateSnapshotGroup(self, p: Params) -> Dict[str, Any]:
        region = self.region_check(p)
        instance_id = p.get("InstanceId")
        disk_ids = p.indexed("DiskId")
        exclude = p.indexed("ExcludeDiskId")
        name = p.get("Name")
        check_name("Name", name)
        description = p.get("Description")
        check_description(description)
        tags = p.tags()
        if disk_ids and exclude:
            raise AliError("InvalidParameter.Conflict", "DiskId.N and ExcludeDiskId.N cannot be specified at the same time.")
        if not instance_id and not disk_ids:
            raise missing("InstanceId")
        self.pass_gate("CreateSnapshotGroup")
        with self.lock:
            self.deferred.settle()
            inst = self.instance(instance_id, region=region) if instance_id else None
            if inst is not None:
                attached = [d for d in self.disks.values() if d.instance_id == inst.id and d.status in ("In_use", "ReIniting", "Detaching")]
                for disk_id in disk_ids + exclude:
                    disk = self.disk(disk_id, "DiskId.N" if disk_ids else "ExcludeDiskId.N", region)
                    if disk.instance_id != inst.id:
                        raise AliError("InvalidDiskIds.NotBelongToInstance", f"The disk {disk_id} is not attached to the instance {inst.id}.", 403)
                chosen = [self.disks[d] for d in disk_ids] if disk_ids else [d for d in attached if d.id not in exclude]
            else:
                chosen = [self.disk(d, "DiskId.N", region) for d in disk_ids]
                zones = {d.zone for d in chosen}
                if len(zones) > 1:
                    raise AliError("InvalidParameter.ZoneMismatch", "The disks of a snapshot-consistent group must be in the same zone.")
            if not chosen:
                raise AliError("InvalidParameter.NoDisk", "No disk is left to create the snapshot-consistent group for.")
            for disk in chosen:
                if disk.category not in ESSD_FAMILY:
                    raise AliError("InvalidDiskCategory.NotSupported",
                                   f"The disk {disk.id} is a {disk.category}; snapshot-consistent groups support only "
                                   "ESSD, ESSD AutoPL and ESSD Entry disks.", 403)
                if disk.multi_attach:
                    raise AliError("InvalidOperation.MultiAttachDisk",
                                   f"The disk {disk.id} has multi-attach enabled; exclude it with ExcludeDiskId.N.", 403)
                if disk.status == "Available" and not disk.ever_attached:
                    raise AliError("IncorrectDiskStatus.NeverAttached", f"The disk {disk.id} has never been attached to an instance.", 403)
                if disk.status not in ("In_use", "Available"):
                    raise AliError("IncorrectDiskStatus", f"The current status of the disk {disk.id} does not support this operation.", 403)
                if disk.status == "In_use":
                    owner = self.instances.get(disk.instance_id or "")
                    if owner is not None and owner.status not in ("Running", "Stopped"):
                        raise AliError("IncorrectInstanceStatus", "The instance must be Running or Stopped.", 403)
            if len(chosen) > GROUP_MAX_DISKS:
                raise AliError("InvalidParameter.DiskCount", f"A snapshot-consistent group can contain at most {GROUP_MAX_DISKS} disks.")
            if sum(d.size for d in chosen) > GROUP_MAX_GIB:
                raise AliError("InvalidParameter.TotalSize", "The disks of a snapshot-consistent group can total at most 32 TiB.")
            quota = int(self.faults.get("snapshot_quota", DEFAULT_SNAPSHOT_QUOTA) or DEFAULT_SNAPSHOT_QUOTA)
            inst_faults = self.instance_faults(inst) if inst is not None else {}
            if inst_faults.get("snapshot_quota") is not None:
                quota = int(inst_faults["snapshot_quota"])
            for disk in chosen:
                count = sum(1 for s in self.snapshots.values() if s.disk_id == disk.id and s.copied_from is None)
                if count >= quota:
                    raise AliError("QuotaExceed.Snapshot", f"The snapshot quota ({quota}) of the disk {disk.id} has been exceeded.", 403)
                if any(s.disk_id == disk.id and s.status == "progressing" and s.copied_from is None for s in self.snapshots.values()):
                    raise AliError("IncorrectDiskStatus.CreatingSnapshot",
                                   f"A previous snapshot of the disk {disk.id} is still being created and instant access is disabled.", 403)
            now = time.time()
            group = SnapshotGroup(id=new_id("ssg", region_infix(region)), instance_id=inst.id if inst else None, name=name or "",
                                  description=description or "", status="progressing", snapshot_ids=[],
                                  tags={k: v or "" for k, v in tags}, created=now, region=region)
            fail_rate = float(self.faults.get("snapshot_error_rate", 0) or 0)
            failing = bool(inst_faults.get("snapshot_error")) or self.faults.chance(fail_rate)
            done_at = now + max(self.latency.transition("snapshot_group_complete"), self.latency.transition("snapshot_complete"))
            members = []
            for n, disk in enumerate(chosen):
                image = self.blockstore.snapshot(disk.image) if disk.image and self.blockstore is not None else None
                snap = Snapshot(id=new_id("s", region_infix(region)), disk_id=disk.id, disk_type=disk.type, disk_size=disk.size,
                                disk_category=disk.category, instance_id=disk.instance_id, name="", description="", status="progressing",
                                image=image, group_id=group.id, created=now, ready_at=done_at, region=region)
                members.append((snap, failing and n == 0))
                self.snapshots[snap.id] = snap
                group.snapshot_ids.append(snap.id)
            self.groups[group.id] = group

            group_fails = bool(inst_faults.get("snapshot_group_error"))
            unavailable = bool(inst_faults.get("snapshot_unavailable"))

            def complete() -> None:
                for snap, fails in members:
                    if snap.id in self.snapshots:
                        snap.status = "failed" if fails else "accomplished"
                        snap.available = not fails and not unavailable
                group.status = "failed" if failing or group_fails else "accomplished"
            if inst_faults.get("snapshot_group_hang"):
                pass  # the group never leaves "progressing"
            else:
                self.deferred.at(done_at, complete)
            self.deferred.settle()
        return {"SnapshotGroupId": group.id}

    def render_group(self, group: SnapshotGroup) -> Dict[str, Any]:
        snaps = [self.snapshots[s] for s in group.snapshot_ids if s in self.snapshots]
        return {
            "SnapshotGroupId": group.id, "Name": group.name, "Description": group.description, "Status": group.status,
            "ProgressStatus": "", "InstanceId": group.instance_id or "", "CreationTime": iso(group.created),
            "ResourceGroupId": group.resource_group_id, "Tags": tag_list(group.tags, "Key"),
            "Snapshots": {"Snapshot": [{
                "SnapshotId": s.id, "SourceDiskId": s.disk_id, "SourceDiskType": s.disk_type, "Progress": self._progress(s),
                "Available": s.available, "InstantAccess": False, "InstantAccessRetentionDays": 0,
                "Tags": tag_list(s.tags, "Key")} for s in snaps]},
        }

    def DescribeSnapshotGroups(self, p: Params) -> Dict[str, Any]:
        region = self.region_check(p)
        ids = p.indexed("SnapshotGroupId")
        if len(ids) > 10:
            raise invalid("SnapshotGroupId", "At most 10 snapshot-consistent group IDs can be specified.")
        statuses = p.indexed("Status")
        if len(statuses) > 3 or any(s not in ("progressing", "accomplished", "failed") for s in statuses):
            raise invalid("Status")
        instance_id = p.get("InstanceId")
        name = p.get("Name")
        wanted_tags = p.tags()
        with self.lock:
            self.deferred.settle()
            items = [g for g in self.groups.values()
                     if g.region == region and (not ids or g.id in ids) and (not statuses or g.status in statuses)
                     and (instance_id is None or g.instance_id == instance_id) and (name is None or g.name == name)
                     and match_tags(g.tags, wanted_tags)]
            items.sort(key=lambda g: g.created, reverse=True)
            rows, paging = paginate(p, items, self.render_group, token_max=100, pages=False)
        paging.pop("TotalCount", None)
        return {"SnapshotGroups": {"SnapshotGroup": rows}, **paging}

    @staticmethod
    def _progress_item(name: str, value: str, error: Optional[AliError] = None) -> Dict[str, Any]:
        return {"OperationStatus": "Success" if error is None else "Failed", "ErrorCode": error.code if error else "",
                "ErrorMsg": error.message if error else "", "RelatedItemSet": {"RelatedItem": [{"Name": name, "Value": value}]}}

    def DeleteSnapshotGroup(self, p: Params) -> Dict[str, Any]:
        region = self.region_check(p)
        group_id = p.require("SnapshotGroupId")
        with self.lock:
            self.deferred.settle()
            group = self.groups.get(group_id)
            if group is None or group.region != region:
                raise AliError("InvalidSnapshotGroupId.NotFound", f"The specified snapshot-consistent group {group_id} does not exist.", 404)
            progress = []
            kept = False
            for snap_id in list(group.snapshot_ids):
                snap = self.snapshots.get(snap_id)
                if snap is not None and self.locks.blocks_delete(snap_id):
                    # A locked member stays, and so does its group; the others go (per-member outcomes).
                    progress.append(self._progress_item("SnapshotId", snap_id, self._locked_error(snap)))
                    kept = True
                    continue
                if snap is not None:
                    self._delete_snapshot(snap)
                progress.append(self._progress_item("SnapshotId", snap_id))
            if not kept:
                self.groups.pop(group_id, None)
        return {"OperationProgressSet": {"OperationProgress": progress}}

    # ------------------------------------------------------------------ rollback
    def _check_reset(self, disk: Disk, snap: Snapshot) -> None:
        if snap.region != disk.region:
            raise AliError("InvalidSnapshotId.NotFound", f"The specified snapshot {snap.id} does not exist in the region of the disk {disk.id}.", 404)
        if snap.copied_from is not None:
            # Alibaba: a snapshot copy cannot roll back the disk its source snapshot was taken of.
            raise AliError("InvalidSnapshotId.NotBelongToDisk", f"The snapshot {snap.id} is a copy and cannot roll back the disk {disk.id}.", 403)
        if snap.disk_id != disk.id:
            raise AliError("InvalidSnapshotId.NotBelongToDisk", f"The snapshot {snap.id} was not created from the disk {disk.id}.", 403)
        if snap.status != "accomplished":
            raise AliError("IncorrectSnapshotStatus", "The current status of the snapshot does not support this operation.", 403)
        if disk.status not in ("In_use", "Available"):
            raise AliError("IncorrectDiskStatus", "The current disk status does not support this operation.", 403)
        if disk.status == "In_use":
            inst = self.instances.get(disk.instance_id or "")
            if inst is not None and inst.status != "Stopped":
                raise AliError("IncorrectInstanceStatus", "The instance must be Stopped before its disk can be reset.", 403)

    def _reset(self, disk: Disk, snap: Snapshot) -> None:
        if disk.image and snap.image:
            _copy_image(snap.image, disk.image)
        before = disk.status
        disk.status = "ReIniting"
        self.deferred.at(time.time() + self.latency.transition("volume_create"), lambda: setattr(disk, "status", before))

    def _reset_fault(self, disk: Disk) -> Optional[AliError]:
        inst = self.instances.get(disk.instance_id or disk.last_instance_id or "")
        return self._fault_error("reset_error", inst, disk)[1]

    def ResetDisk(self, p: Params) -> Dict[str, Any]:
        region = self.region_check(p, required=False)
        with self.lock:
            self.deferred.settle()
            disk = self.disk(p.get("DiskId"), region=region)
            snap = self.snapshot(p.get("SnapshotId"), region=region)
            self._check_reset(disk, snap)
            self.dry_run(p)
            error = self._reset_fault(disk)
            if error is not None:
                raise error
            self._reset(disk, snap)
            self.deferred.settle()
        return {}

    def ResetDisks(self, p: Params) -> Dict[str, Any]:
        region = self.region_check(p)
        records = p.indexed_records("Disk")
        if not records:
            raise missing("Disk.1.DiskId")
        if len(records) > 10:
            raise invalid("Disk", "At most 10 disks can be reset at a time.")
        with self.lock:
            self.deferred.settle()
            pairs = []
            for n, rec in enumerate(records, start=1):
                disk = self.disk(rec.get("DiskId"), f"Disk.{n}.DiskId", region)
                snap = self.snapshot(rec.get("SnapshotId"), f"Disk.{n}.SnapshotId", region)
                self._check_reset(disk, snap)
                pairs.append((disk, snap))
            self.dry_run(p)
            for disk, _snap in pairs:
                error = self._reset_fault(disk)
                if error is not None:
                    raise error
            for disk, snap in pairs:
                self._reset(disk, snap)
            self.deferred.settle()
        return {"OperationProgressSet": {"OperationProgress": [self._progress_item("DiskId", d.id) for d, _snap in pairs]}}

    # ------------------------------------------------------------------ tags
    def _tag_target(self, resource_type: str, resource_id: str, region: Optional[str] = None) -> Dict[str, str]:
        table = {"instance": self.instances, "disk": self.disks, "snapshot": self.snapshots}.get(resource_type)
        if table is not None:
            obj = table.get(resource_id)
            if obj is None or (region is not None and obj.region != region):
                raise AliError("InvalidResourceId.NotFound", f"The specified resource {resource_id} does not exist.", 404)
            return obj.tags
        known = self.other_tags.get((resource_type, resource_id))
        if known is None:
            raise AliError("InvalidResourceId.NotFound", f"The specified resource {resource_id} does not exist.", 404)
        return known

    def _resource_type(self, p: Params) -> str:
        resource_type = p.require("ResourceType")
        if resource_type not in RESOURCE_TYPES:
            raise AliError("InvalidResourceType.NotSupported", f"The resource type {resource_type} is not supported.")
        return resource_type

    def TagResources(self, p: Params) -> Dict[str, Any]:
        region = self.region_check(p)
        resource_type = self._resource_type(p)
        ids = p.indexed("ResourceId")
        if not ids:
            raise missing("ResourceId.1")
        if len(ids) > 50:
            raise invalid("ResourceId", "At most 50 resources can be tagged at a time.")
        tags = p.tags()
        if not tags:
            raise missing("Tag.1.Key")
        if len(tags) > 20:
            raise invalid("Tag", "At most 20 tags can be specified.")
        check_tags(tags)
        with self.lock:
            targets = [self._tag_target(resource_type, rid, region) for rid in ids]
            for target in targets:
                merged = dict(target)
                merged.update({k: v or "" for k, v in tags})
                if len(merged) > 20:
                    raise AliError("InvalidTagCount", "A resource can have at most 20 tags.")
            for target in targets:
                target.update({k: v or "" for k, v in tags})
        return {}

    def UntagResources(self, p: Params) -> Dict[str, Any]:
        region = self.region_check(p)
        resource_type = self._resource_type(p)
        ids = p.indexed("ResourceId")
        if not ids:
            raise missing("ResourceId.1")
        keys = p.indexed("TagKey")
        remove_all = p.bool("All")
        with self.lock:
            for rid in ids:
                target = self._tag_target(resource_type, rid, region)
                for key in list(target):
                    if remove_all or key in keys:
                        target.pop(key)
        return {}

    def ListTagResources(self, p: Params) -> Dict[str, Any]:
        region = self.region_check(p)
        resource_type = self._resource_type(p)
        ids = p.indexed("ResourceId")
        wanted = p.tags()
        if not ids and not wanted:
            raise missing("ResourceId.1")
        table = {"instance": self.instances, "disk": self.disks, "snapshot": self.snapshots}.get(resource_type)
        with self.lock:
            self.deferred.settle()
            if table is not None:
                pairs = [(rid, obj.tags) for rid, obj in table.items() if obj.region == region]
            else:
                pairs = [(rid, tags) for (rtype, rid), tags in self.other_tags.items() if rtype == resource_type]
            rows = []
            for rid, tags in pairs:
                if ids and rid not in ids:
                    continue
                if not match_tags(tags, wanted):
                    continue
                for key, value in tags.items():
                    rows.append({"ResourceId": rid, "ResourceType": resource_type, "TagKey": key, "TagValue": value})
            page, paging = paginate(Params({"NextToken": p.get("NextToken", ""), "MaxResults": "50"}), rows, lambda r: r,
                                    token_max=50, pages=False)
        return {"TagResources": {"TagResource": page}, "NextToken": paging["NextToken"]}

    # ------------------------------------------------------------------ twin state (control API)
    def summary(self) -> Dict[str, Any]:
        with self.lock:
            self.deferred.settle()
            return {
                "region": self.region,
                "regions": list(self.regions),
                "instances": [{"id": i.id, "name": i.name, "region": i.region, "status": i.status, "platform": i.os_type, "role": i.ram_role,
                               "execution": i.execution, "agent": i.agent_status} for i in self.instances.values()],
                "volumes": [{"id": d.id, "region": d.region, "instance_id": d.instance_id, "device": d.device, "category": d.category, "size": d.size,
                             "status": d.status, "image": d.image, "mount": d.mount, "source_snapshot_id": d.source_snapshot_id}
                            for d in self.disks.values()],
                "snapshots": [{"id": s.id, "region": s.region, "disk_id": s.disk_id, "status": s.status, "image": s.image,
                               "group_id": s.group_id, "copied_from": s.copied_from, "tags": dict(s.tags)} for s in self.snapshots.values()],
                "snapshot_groups": [{"id": g.id, "region": g.region, "instance_id": g.instance_id, "name": g.name, "status": g.status,
                                     "snapshot_ids": list(g.snapshot_ids)} for g in self.groups.values()],
            }

    def cleanup_images(self) -> None:
        """Forget block images that the twin itself created (snapshots, disks from snapshots)."""
        with self.lock:
            for snap in self.snapshots.values():
                if snap.image and os.path.exists(snap.image) and self.blockstore is not None:
                    self.blockstore.delete(snap.image)
            for disk in self.disks.values():
                if disk.source_snapshot_id and disk.image and os.path.exists(disk.image) and self.blockstore is not None:
                    self.blockstore.delete(disk.image)

    ACTIONS: Dict[str, Callable[..., Dict[str, Any]]] = {}


for _action in ("DescribeInstances", "DescribeInstanceRamRole", "StopInstance", "StartInstance", "DescribeDisks", "CreateDisk",
                "DeleteDisk", "AttachDisk", "DetachDisk", "DescribeSnapshots", "DeleteSnapshot", "CopySnapshot",
                "CreateSnapshotGroup", "DescribeSnapshotGroups", "DeleteSnapshotGroup",
                "LockSnapshot", "UnlockSnapshot", "DescribeLockedSnapshots", "ResetDisk", "ResetDisks", "TagResources",
                "UntagResources", "ListTagResources"):
    Ecs.ACTIONS[_action] = getattr(Ecs, _action)
