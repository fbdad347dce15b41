"""The ECS resources of the twin: instances, disks, snapshots, snapshot-consistent groups and invocations."""

from __future__ import annotations

import heapq
import itertools
import random
import string
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

ESSD_FAMILY = ("cloud_essd", "cloud_auto", "cloud_essd_entry")
CATEGORIES = ESSD_FAMILY + ("cloud_ssd", "cloud_efficiency", "cloud", "cloud_regional_disk_auto")

_ALNUM = string.ascii_lowercase + string.digits
_RANDOM = random.Random()
_ID_LOCK = threading.Lock()


# The id infix of the regions the twin serves by default (others get a neutral one).
REGION_CODES = {"cn-hangzhou": "bp1", "cn-shanghai": "uf6", "cn-beijing": "2ze", "cn-shenzhen": "wz9", "cn-chengdu": "2vc"}


def region_infix(region: str) -> str:
    return REGION_CODES.get(region, "gw8")


def new_id(prefix: str, region_code: str = "bp1") -> str:
    """An id in Alibaba's form: a type prefix, a region code and random characters (i-bp1..., d-bp1...)."""
    with _ID_LOCK:
        tail = "".join(_RANDOM.choice(_ALNUM) for _pos in range(17))
    return f"{prefix}-{region_code}{tail}"


def iso(stamp: Optional[float]) -> Optional[str]:
    if stamp is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


def iso_minutes(stamp: Optional[float]) -> Optional[str]:
    """The instance and disk listings show times to the minute."""
    if stamp is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime(stamp))


@dataclass
class EcsInstance:
    id: str
    name: str
    region: str
    zone: str
    os_type: str  # linux | windows
    status: str  # Pending Running Starting Stopping Stopped
    ram_role: Optional[str]
    execution: str
    agent_status: str
    agent_version: str
    vss_components: bool
    fleet: Any  # the fleet Instance (faults, volumes)
    tags: Dict[str, str] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    started: float = field(default_factory=time.time)
    instance_type: str = "ecs.g7.large"
    last_invoked: Optional[float] = None
    invocation_count: int = 0
    stop_hung: bool = False  # fault stop_hang: Stopping until a forced stop


@dataclass
class Disk:
    id: str
    region: str
    zone: str
    category: str
    size: int
    type: str  # system | data
    status: str  # In_use Available Attaching Detaching Creating ReIniting
    instance_id: Optional[str] = None
    device: Optional[str] = None
    multi_attach: bool = False
    image: Optional[str] = None
    mount: Optional[str] = None
    source_snapshot_id: Optional[str] = None
    ever_attached: bool = False
    delete_with_instance: bool = True
    name: str = ""
    description: str = ""
    performance_level: Optional[str] = "PL1"
    tags: Dict[str, str] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    attached: Optional[float] = None
    detached: Optional[float] = None
    last_device: Optional[str] = None
    last_instance_id: Optional[str] = None


@dataclass
class Snapshot:
    id: str
    disk_id: str
    disk_type: str
    disk_size: int
    disk_category: str
    instance_id: Optional[str]
    name: str
    description: str
    status: str  # progressing accomplished failed
    image: Optional[str] = None
    group_id: Optional[str] = None
    tags: Dict[str, str] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    ready_at: float = 0.0
    available: bool = False
    region: str = ""
    encrypted: bool = False
    kms_key_id: str = ""
    retention_days: int = 0
    copied_from: Optional[str] = None  # source snapshot of a CopySnapshot copy
    source_region: str = ""


@dataclass
class SnapshotGroup:
    id: str
    instance_id: Optional[str]
    name: str
    description: str
    status: str
    snapshot_ids: List[str]
    tags: Dict[str, str] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    resource_group_id: str = ""
    region: str = ""


@dataclass
class InvokeInstance:
    instance_id: str
    status: str = "Pending"  # Pending Running Success Failed Invalid Aborted Error Timeout Cancelled Stopping Terminated
    exit_code: Optional[int] = None
    output: str = ""
    dropped: int = 0  # bytes of output dropped over the 24 KB limit
    error_code: str = ""
    error_info: str = ""
    created: float = field(default_factory=time.time)
    start: Optional[float] = None
    finish: Optional[float] = None
    stop: Optional[float] = None
    updated: float = field(default_factory=time.time)
    visible_at: float = 0.0  # when a finished result becomes visible through the API
    pgid: Optional[int] = None  # process group of a local run, for StopInvocation
    trace: List[Tuple[str, float]] = field(default_factory=list)  # plug-in steps with epoch times (test evidence)


@dataclass
class Invocation:
    id: str
    command_id: str
    command_type: str
    content: str  # decoded
    name: str
    description: str
    timeout: int
    username: str
    working_dir: str
    termination_mode: str
    instances: Dict[str, InvokeInstance]
    created: float = field(default_factory=time.time)
    tags: Dict[str, str] = field(default_factory=dict)
    parameters: str = ""
    stopping: bool = False


class Deferred:
    """State changes that become true at a due time, applied when anyone next looks (no thread per object)."""

    def __init__(self) -> None:
        self._heap: List[Tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()

    def at(self, due: float, change: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (due, next(self._seq), change))

    def settle(self, now: Optional[float] = None) -> None:
        now = time.time() if now is None else now
        while self._heap and self._heap[0][0] <= now:
            change = heapq.heappop(self._heap)[2]
            change()
