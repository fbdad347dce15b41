"""How long things take in the twin clouds.

One :class:`LatencyModel` is shared by both twins so that a single setting governs the whole
stand-in cloud.  The ``zero`` profile makes everything instant (the fast test suite); the
``realistic`` profile uses the defaults below, chosen from what the providers document or what
is commonly observed, so that the benchmarks measure something meaningful.

A spec is ``"zero"``, ``"realistic"`` or a dict::

    {profile: realistic,             # base profile, default realistic
     scale: 0.1,                     # multiply every duration (0.1 = ten times faster)
     api_default: 0.08,              # any API call not listed
     api: {CreateSnapshots: 0.4, "alicloud:RunCommand": 0.2},
     delivery: 1.0 | {aws: 1.0, alicloud: 0.8},
     report: 0.5 | {aws: .., alicloud: ..},
     transitions: {snapshot_complete: 20}}
"""

from __future__ import annotations

import copy
import threading
import time
from typing import Any, Dict, Optional, Union

# Seconds.  Realistic values are deliberately on the fast side of what the clouds show, so that
# benchmarks stay affordable while keeping the relative costs (API call << agent round trip <<
# snapshot completion) intact.
REALISTIC: Dict[str, Any] = {
    "api_default": 0.08,
    "api": {
        # EC2 / SSM
        "DescribeInstances": 0.15,
        "DescribeSnapshots": 0.2,
        "DescribeVolumes": 0.12,
        "CreateSnapshots": 0.35,
        "CreateSnapshot": 0.25,
        "CreateVolume": 0.3,
        "SendCommand": 0.2,
        "ListCommandInvocations": 0.15,
        "DescribeInstanceInformation": 0.15,
        # ECS / Cloud Assistant
        "CreateSnapshotGroup": 0.35,
        "RunCommand": 0.25,
        "DescribeInvocationResults": 0.15,
        "DescribeSnapshotGroups": 0.15,
    },
    "delivery": {"aws": 1.0, "alicloud": 0.8},
    "report": {"aws": 0.5, "alicloud": 0.5},
    "transitions": {
        "snapshot_complete": 20.0,
        "snapshot_group_complete": 25.0,
        "volume_create": 4.0,
        "volume_attach": 3.0,
        "volume_detach": 3.0,
        "instance_stop": 20.0,
        "instance_start": 15.0,
        "appconsistent_tag_lag": 2.0,
        "vss_freeze": 3.0,
        "freeze_duration": 1.0,
        "thaw_duration": 0.5,
    },
}

ZERO: Dict[str, Any] = {
    "api_default": 0.0,
    "api": {},
    "delivery": {"aws": 0.0, "alicloud": 0.0},
    "report": {"aws": 0.0, "alicloud": 0.0},
    "transitions": {},
}

PROFILES = {"zero": ZERO, "realistic": REALISTIC}

TRANSITION_KINDS = tuple(REALISTIC["transitions"])


class LatencyModel:
    """Durations of API calls, agent deliveries and state transitions."""

    def __init__(self, spec: Union[str, Dict[str, Any], None] = "zero"):
        self._lock = threading.Lock()
        self._conf: Dict[str, Any] = {}
        self.spec: Any = None
        self.update(spec)

    def update(self, spec: Union[str, Dict[str, Any], None]) -> None:
        """Replace the configuration (a profile name or a dict, see the module docstring)."""
        if spec is None:
            spec = "zero"
        if isinstance(spec, str):
            spec = {"profile": spec}
        if not isinstance(spec, dict):
            raise ValueError(f"latency spec must be a profile name or a mapping, got {spec!r}")
        profile = spec.get("profile", "realistic")
        if profile not in PROFILES:
            raise ValueError(f"unknown latency profile {profile!r} (known: {', '.join(PROFILES)})")
        conf = copy.deepcopy(PROFILES[profile])
        for key in ("api_default", "scale"):
            if key in spec:
                conf[key] = float(spec[key])
        conf["api"].update({k: float(v) for k, v in (spec.get("api") or {}).items()})
        for key in ("delivery", "report"):
            if key in spec:
                value = spec[key]
                if isinstance(value, dict):
                    conf[key].update({k: float(v) for k, v in value.items()})
                else:
                    conf[key] = {"aws": float(value), "alicloud": float(value)}
        conf["transitions"].update({k: float(v) for k, v in (spec.get("transitions") or {}).items()})
        with self._lock:
            self._conf = conf
            self.spec = copy.deepcopy(spec)

    @property
    def profile(self) -> str:
        return (self.spec or {}).get("profile", "realistic")

    def _scaled(self, value: float) -> float:
        return max(0.0, value * self._conf.get("scale", 1.0))

    def api(self, provider: str, action: str) -> float:
        """Seconds one API call ``action`` takes on ``provider``."""
        api = self._conf["api"]
        value = api.get(f"{provider}:{action}", api.get(action, self._conf["api_default"]))
        return self._scaled(value)

    def sleep_api(self, provider: str, action: str) -> float:
        """Sleep for the duration of one API call; returns the seconds slept."""
        seconds = self.api(provider, action)
        if seconds > 0:
            time.sleep(seconds)
        return seconds

    def delivery(self, provider: str) -> float:
        """Seconds from sending an agent command until it starts on the instance."""
        return self._scaled(self._conf["delivery"].get(provider, 0.0))

    def report(self, provider: str) -> float:
        """Seconds from the agent finishing a command until the result is visible to the API."""
        return self._scaled(self._conf["report"].get(provider, 0.0))

    def transition(self, kind: str) -> float:
        """Seconds a state change of ``kind`` takes (e.g. ``snapshot_complete``); unknown kinds take 0."""
        return self._scaled(self._conf["transitions"].get(kind, 0.0))

    def describe(self) -> Dict[str, Any]:
        """The effective configuration, for the control API."""
        with self._lock:
            return {"spec": copy.deepcopy(self.spec), "effective": copy.deepcopy(self._conf)}


def as_model(value: Optional[Union["LatencyModel", str, Dict[str, Any]]]) -> LatencyModel:
    """A LatencyModel from a model, a spec or None (zero)."""
    if isinstance(value, LatencyModel):
        return value
    return LatencyModel(value or "zero")
