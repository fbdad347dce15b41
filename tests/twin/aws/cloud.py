"""One AWS twin: a moto account and region populated from a fleet, plus the twin's own state."""

from __future__ import annotations

import copy
import functools
import json
import os
import random
import threading
from typing import Any, Dict, Optional

from moto.backends import get_backend
from moto.iam.exceptions import NotFoundException as IAMNotFoundException

from twin.core.fleet import Fleet, Instance as FleetInstance
from twin.core.limits import THROTTLE_CODES, Limits
from twin.core.scheduler import Scheduler
from twin.aws.ec2 import Ec2Extension, TwinInstance, TwinVolume

# Calls an instance makes with its role inside the twin (the VSS agent's) are counted apart from the callers'.
INSTANCE_STATS = "aws-instance-role"
WINDOWS_AMI = "ami-0twinwindows00001"
LINUX_AMI = "ami-0twinlinux000001"


def new_account_id() -> str:
    """A fresh 12-digit account per twin, so twins in one process never share moto state."""
    return str(random.SystemRandom().randint(10 ** 11, 10 ** 12 - 1))


class AwsCloud:
    """The twin's resources: moto's EC2 backend for the account/region and the fleet's view of it."""

    def __init__(self, fleet: Fleet, latency, faults, stats, blockstore=None, account_id: Optional[str] = None,
                 limits: Optional[Limits] = None):
        self.fleet = fleet
        self.latency = latency
        self.faults = faults
        self.stats = stats
        self.limits = limits if limits is not None else Limits("none", faults=faults)
        self.blockstore = blockstore
        creds = fleet.credentials.get("aws", {})
        self.region = creds.get("region", "us-east-1")
        self.access_key_id = creds.get("access_key_id")
        self.secret_access_key = creds.get("secret_access_key")
        self.account_id = account_id or new_account_id()
        self.lock = threading.RLock()
        self.scheduler = Scheduler("aws-twin-scheduler")
        self.ec2 = self._new_ec2_backend()
        self.ext = Ec2Extension(self)
        self._region_exts: Dict[str, Ec2Extension] = {self.region: self.ext}
        self.instances: Dict[str, FleetInstance] = {}  # id -> fleet instance (agent, execution, faults)
        self.moto_instances: Dict[str, Any] = {}  # id -> moto instance, for O(1) lookups at fleet scale
        self.endpoint_url: Optional[str] = None
        self._build()

    def ext_for(self, region: Optional[str]) -> Ec2Extension:
        """The twin's EC2 behaviour for ``region`` (one endpoint serves every region; the fleet lives in its own)."""
        if not region or region == self.region:
            return self.ext
        with self.lock:
            ext = self._region_exts.get(region)
            if ext is None:
                ext = self._region_exts[region] = Ec2Extension(self, self._new_ec2_backend(region))
            return ext

    def _new_ec2_backend(self, region: Optional[str] = None):
        """The account's EC2 backend, without moto's thousands of public AMIs and their snapshots.

        They would make every twin start slowly and crowd describe calls; the fleet uses its own image ids.
        """
        previous = os.environ.get("MOTO_EC2_LOAD_DEFAULT_AMIS")
        os.environ["MOTO_EC2_LOAD_DEFAULT_AMIS"] = "false"
        try:
            return get_backend("ec2")[self.account_id][region or self.region]
        finally:
            if previous is None:
                del os.environ["MOTO_EC2_LOAD_DEFAULT_AMIS"]
            else:
                os.environ["MOTO_EC2_LOAD_DEFAULT_AMIS"] = previous

    def spend(self, service: str, action: str, region: Optional[str] = None, unfiltered: bool = False) -> Optional[str]:
        """Take this call's token from the account's bucket (``ec2`` or ``ssm``); the throttling code when it is empty."""
        if self.limits.take(service, action, self.account_id, region or self.region, unfiltered):
            return None
        return THROTTLE_CODES[service]

    def instance_spend(self, action: str) -> Optional[str]:
        """One EC2 call made on an instance by the twin itself (the VSS agent): counted apart, spending the
        account's bucket like any caller; the throttling code when the bucket is empty."""
        self.stats.record(INSTANCE_STATS, action)
        code = self.spend("ec2", action)
        if code:
            self.stats.record_throttle(INSTANCE_STATS, action, code)
        return code

    def locked(self, func):
        @functools.wraps(func)
        def run(*args, **kwargs):
            with self.lock:
                return func(*args, **kwargs)
        return run

    # -- fleet ----------------------------------------------------------------------------------
    def _fast_lookups(self) -> None:
        """Index instance lookups: moto scans every reservation, which is quadratic at fleet scale."""
        ec2 = self.ec2
        scan = ec2.get_instance

        def get_instance(instance_id: str):
            inst = self.moto_instances.get(instance_id)
            return inst if inst is not None else scan(instance_id)
        ec2.get_instance = get_instance

    def _build(self) -> None:
        self._fast_lookups()
        ec2 = self.ec2
        images: Dict[str, Any] = {}
        describe_images = ec2.describe_images

        def cached_images(*args, **kwargs):
            key = repr((args, sorted(kwargs.items())))
            if key not in images:
                images[key] = describe_images(*args, **kwargs)
            return images[key]
        # every new instance looks its AMI up among moto's hundreds; once per AMI is enough here
        ec2.describe_images = cached_images
        try:
            self._build_fleet()
        finally:
            ec2.describe_images = describe_images

    def _build_fleet(self) -> None:
        zones = {z.name for z in self.ec2.describe_availability_zones()}
        default_zone = sorted(zones)[0] if zones else self.region + "a"
        ec2 = self.ec2
        for fleet_inst in self.fleet.by_provider("aws"):
            zone = fleet_inst.zone if fleet_inst.zone in zones else default_zone
            reservation = ec2.run_instances(
                WINDOWS_AMI if fleet_inst.platform == "windows" else LINUX_AMI, 1, None, [],
                instance_type="t2.medium" if fleet_inst.hypervisor == "xen" else "t3.medium", is_instance_type_default=True, placement=zone,
                region_name=self.region, block_device_mappings=[], tags={})
            inst = reservation.instances[0]
            inst.__class__ = TwinInstance
            if fleet_inst.id:
                inst.id = fleet_inst.id
            fleet_inst.id = inst.id
            self.moto_instances[inst.id] = inst
            self.instances[inst.id] = fleet_inst
            inst.platform = "windows" if fleet_inst.platform == "windows" else None
            tags = dict(fleet_inst.tags or {})
            tags.setdefault("Name", fleet_inst.name)
            ec2.create_tags([inst.id], tags)
            if fleet_inst.role:
                profile = self._instance_profile(fleet_inst.role)
                ec2.associate_iam_instance_profile(inst.id, iam_instance_profile_name=profile.name)
                inst.iam_instance_profile = {"Arn": profile.arn, "Id": profile.id}
            boot = next((v for v in fleet_inst.volumes if v.boot), None)
            if boot is not None:
                inst.root_device_name = boot.device
            for vol in fleet_inst.volumes:
                volume = self.ext.orig["create_volume"](
                    size=vol.size, zone_name=zone, volume_type=vol.type, iops=vol.iops, throughput=vol.throughput,
                    encrypted=vol.encrypted, kms_key_id=vol.kms_key_id)
                volume.__class__ = TwinVolume
                volume._twin_state = None
                if vol.id:
                    ec2.volumes[vol.id] = ec2.volumes.pop(volume.id)
                    volume.id = vol.id
                vol.id = volume.id
                if vol.image and self.blockstore is not None:
                    image = vol.image if self.blockstore.contains(vol.image) else self.blockstore.create(vol.size, source=vol.image)
                    self.ext.volume_images[volume.id] = image
                self.ext.orig["attach_volume"](volume.id, inst.id, vol.device, vol.boot)
                self.ext.expose(volume.id, inst.id, vol.device, attach=True)
            if fleet_inst.state == "stopped":
                inst.stop()

    def _instance_profile(self, role: str):
        """The fleet's instance role as an IAM role and instance profile, made once per name."""
        iam = get_backend("iam")[self.account_id]["global"]
        if role in iam.instance_profiles:
            return iam.instance_profiles[role]
        trust = json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
        iam.create_role(role, trust, "/", None, "instance role of the twin fleet", [], None)
        for policy in ("AmazonSSMManagedInstanceCore", "AWSEC2VssSnapshotPolicy"):
            try:
                iam.attach_role_policy(f"arn:aws:iam::aws:policy/{policy}", role)
            except IAMNotFoundException:
                # moto does not know every AWS managed policy; the role works without the attachment
                pass
        return iam.create_instance_profile(role, "/", [role])

    # -- queries ----------------------------------------------------------------------------------
    def fleet_instance(self, instance_id: str) -> Optional[FleetInstance]:
        return self.instances.get(instance_id)

    def is_local(self, instance_id: str) -> bool:
        inst = self.instances.get(instance_id)
        return bool(inst and inst.execution == "local")

    def instance_faults(self, instance_id: str) -> Dict[str, Any]:
        inst = self.instances.get(instance_id)
        return self.faults.for_instance(inst) if inst else {}

    def moto_instance(self, instance_id: str):
        return self.moto_instances.get(instance_id)

    def names(self) -> Dict[str, str]:
        return {inst.name: iid for iid, inst in self.instances.items()}

    def state(self) -> Dict[str, Any]:
        """Summary for ``GET /_twin/state``."""
        with self.lock:
            instances = []
            for reservation in list(self.ec2.reservations.values()):
                for inst in reservation.instances:
                    fleet_inst = self.instances.get(inst.id)
                    instances.append({
                        "id": inst.id, "name": fleet_inst.name if fleet_inst else None, "state": inst._state.name,
                        "platform": fleet_inst.platform if fleet_inst else (inst.platform or "linux"),
                        "execution": fleet_inst.execution if fleet_inst else None,
                        "agent": copy.deepcopy(vars(fleet_inst.agent)) if fleet_inst else None,
                        "volumes": {dev: bdt.volume_id for dev, bdt in inst.get_block_device_mapping},
                    })
            volumes = []
            for vol in list(self.ec2.volumes.values()):
                att = vol.attachment
                volumes.append({
                    "id": vol.id, "state": vol.status, "size": vol.size, "snapshot_id": vol.snapshot_id,
                    "instance_id": att.instance.id if att else None, "device": att.device if att else None,
                    "image": self.ext.volume_images.get(vol.id)})
            snapshots = [{"id": s.id, "state": s.status, "volume_id": s.volume.id, "image": self.ext.snapshot_images.get(s.id),
                          "tags": {t["key"]: t["value"] for t in s.get_tags()}}
                         for s in self.ext.own_snapshots()]
        return {"provider": "aws", "account_id": self.account_id, "region": self.region, "instances": instances,
                "volumes": volumes, "snapshots": snapshots,
                "blockstore": {"root": self.blockstore.root, "method": self.blockstore.method} if self.blockstore else None}

    def close(self) -> None:
        self.scheduler.stop()
