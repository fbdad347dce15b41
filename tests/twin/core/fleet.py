"""Fleet files: the instances, volumes and agents a twin cloud starts with.

A fleet file is YAML::

    credentials:                      # keys the twins accept (defaults shown)
      aws: {access_key_id: AKIDTWIN, secret_access_key: twin-secret, region: us-east-1}
      alicloud: {access_key_id: LTAItwin, access_key_secret: twin-secret, region: cn-hangzhou}
    latency: zero                     # zero | realistic | {profile: realistic, api: {CreateSnapshots: 0.4}, ...}
    faults: {}                        # global fault settings, see faults.py
    limits: published                 # none | published | {CreateSnapshots: {capacity: 5, refill: 1}}; see limits.py
                                      # (default: published with realistic latency, none with zero)
    instances:
      - id: i-0123456789abcdef0       # optional for aws (generated), required form i-... for alicloud
        provider: aws                 # aws | alicloud
        name: web-1
        tags: {env: prod}
        platform: linux               # linux | windows
        state: running                # running | stopped
        zone: us-east-1a
        role: AppSnapshotRole         # AWS instance profile / Alibaba RAM role name, or null
        execution: simulated          # local | simulated
        hypervisor: nitro             # aws: nitro (EBS volumes are NVMe devices) | xen (xvd* devices)
        agent: {status: online, vss_components: true, version: 3.3.1000.0}
        faults: {vss_writer_failure: true}
        volumes:
          - {device: /dev/sda1, size: 30, type: gp3, boot: true}
          - {device: /dev/xvdf, size: 1, type: gp3, image: data.img, mount: /mnt/x}   # real block data
    generate:                         # many similar instances
      - {count: 1000, provider: aws, name_prefix: fleet-, template: {...instance fields...}}

Agent status is one of ``online``, ``connection_lost``, ``not_installed``.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import yaml

PROVIDERS = ("aws", "alicloud")
PLATFORMS = ("linux", "windows")
AGENT_STATUSES = ("online", "connection_lost", "not_installed")
EXECUTIONS = ("local", "simulated")
HYPERVISORS = ("nitro", "xen")

DEFAULT_CREDENTIALS = {
    "aws": {"access_key_id": "AKIDTWINEXAMPLE", "secret_access_key": "twin-secret-key", "region": "us-east-1"},
    "alicloud": {"access_key_id": "LTAItwinexample", "access_key_secret": "twin-secret-key", "region": "cn-hangzhou"},
}


class FleetError(ValueError):
    """A fleet file that cannot be used, with the reason."""


@dataclass
class Volume:
    device: str
    size: int = 8
    type: str = "gp3"
    boot: bool = False
    image: Optional[str] = None  # path of a backing image file (real block data)
    iops: Optional[int] = None
    throughput: Optional[int] = None
    encrypted: bool = False
    kms_key_id: Optional[str] = None
    multi_attach: bool = False
    mount: Optional[str] = None  # local instances: where the test mounted this volume on this machine
    id: Optional[str] = None  # assigned by the twin when absent


@dataclass
class Agent:
    status: str = "online"
    vss_components: bool = True
    version: str = "3.3.1000.0"
    vss_version: Optional[str] = None  # AwsVssComponents version when installed (None: the current one)
    inventory: bool = True  # SSM Inventory collected (ListInventoryEntries answers with a CaptureTime)


@dataclass
class Instance:
    provider: str
    name: str
    id: Optional[str] = None
    tags: Dict[str, str] = field(default_factory=dict)
    platform: str = "linux"
    state: str = "running"
    zone: Optional[str] = None
    role: Optional[str] = None
    execution: str = "simulated"
    agent: Agent = field(default_factory=Agent)
    faults: Dict[str, Any] = field(default_factory=dict)
    volumes: List[Volume] = field(default_factory=list)
    # AWS: how the instance's EBS volumes appear to it (nitro: NVMe devices whose serial is the volume id; xen: xvd*)
    hypervisor: str = "nitro"


@dataclass
class Fleet:
    instances: List[Instance] = field(default_factory=list)
    credentials: Dict[str, Dict[str, str]] = field(default_factory=lambda: copy.deepcopy(DEFAULT_CREDENTIALS))
    latency: Any = "zero"
    faults: Dict[str, Any] = field(default_factory=dict)
    limits: Any = None  # None: the latency profile's default (see limits.default_spec)
    base_dir: str = "."

    def by_provider(self, provider: str) -> List[Instance]:
        return [i for i in self.instances if i.provider == provider]


def _instance(data: Dict[str, Any], base_dir: str, where: str) -> Instance:
    data = dict(data)
    provider = data.get("provider")
    if provider not in PROVIDERS:
        raise FleetError(f"{where}: provider must be one of {', '.join(PROVIDERS)}, got {provider!r}")
    if not data.get("name"):
        raise FleetError(f"{where}: name is required")
    if data.get("platform", "linux") not in PLATFORMS:
        raise FleetError(f"{where}: platform must be linux or windows")
    if data.get("execution", "simulated") not in EXECUTIONS:
        raise FleetError(f"{where}: execution must be local or simulated")
    if data.get("hypervisor", "nitro") not in HYPERVISORS:
        raise FleetError(f"{where}: hypervisor must be nitro or xen")
    agent = Agent(**(data.pop("agent", None) or {}))
    if agent.status not in AGENT_STATUSES:
        raise FleetError(f"{where}: agent.status must be one of {', '.join(AGENT_STATUSES)}")
    volumes = []
    for v in data.pop("volumes", None) or []:
        vol = Volume(**v)
        if vol.image and not os.path.isabs(vol.image):
            vol.image = os.path.join(base_dir, vol.image)
        volumes.append(vol)
    if volumes and not any(v.boot for v in volumes):
        volumes[0].boot = True
    try:
        return Instance(agent=agent, volumes=volumes, **data)
    except TypeError as exc:
        raise FleetError(f"{where}: {exc}") from None


def parse_fleet(doc: Dict[str, Any], base_dir: str = ".") -> Fleet:
    doc = doc or {}
    creds = copy.deepcopy(DEFAULT_CREDENTIALS)
    for prov, values in (doc.get("credentials") or {}).items():
        creds.setdefault(prov, {}).update(values or {})
    fleet = Fleet(credentials=creds, latency=doc.get("latency", "zero"), faults=doc.get("faults") or {},
                  limits=doc.get("limits"), base_dir=base_dir)
    for n, item in enumerate(doc.get("instances") or []):
        fleet.instances.append(_instance(item, base_dir, f"instances[{n}]"))
    for g, gen in enumerate(doc.get("generate") or []):
        count = int(gen.get("count", 0))
        template = dict(gen.get("template") or {})
        template.setdefault("provider", gen.get("provider"))
        prefix = gen.get("name_prefix", "fleet-")
        for k in range(count):
            item = copy.deepcopy(template)
            item["name"] = f"{prefix}{k:04d}"
            item.pop("id", None)
            fleet.instances.append(_instance(item, base_dir, f"generate[{g}][{k}]"))
    names = [i.name for i in fleet.instances]
    dupes = sorted({n for n in names if names.count(n) > 1}) if len(names) < 5000 else []
    if dupes:
        raise FleetError(f"duplicate instance names: {', '.join(dupes)}")
    return fleet


def load_fleet(path: str) -> Fleet:
    with open(path, encoding="utf-8") as handle:
        doc = yaml.safe_load(handle)
    return parse_fleet(doc, base_dir=os.path.dirname(os.path.abspath(path)))
