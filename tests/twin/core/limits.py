"""Request limits of the twin clouds: token buckets per account, Region and API, with the providers' tables.

A cloud throttles each account per Region with one token bucket per API: a call takes a token, the
bucket refills at a fixed rate up to its capacity, and a call that finds it empty is answered with the
provider's throttling error.  The buckets belong to the account, so the controller, the instances'
own calls (the VSS agent, the freeze helper's CLI call, the Alibaba plug-in) and any other tool of the
account spend the same tokens.

A spec is ``"none"``, ``"published"`` or a mapping::

    {profile: published,                       # base table: published (default) or none
     CreateSnapshots: {capacity: 5, refill: 1},     # EC2 and SSM APIs by name
     "DescribeInstances/unfiltered": {capacity: 10, refill: 2},
     "alicloud:CreateSnapshotGroup": {capacity: 10, refill: 2},
     retry: {attempts: 3, base: 1.0}}          # how the instance-side SDKs the twin emulates retry

Faults can change buckets at runtime (see :meth:`Limits.params`): ``limits`` (same form as the
overrides, e.g. a tighter bucket) and ``competing`` (``{API: tokens per second}`` spent by another tool of
the account, taken from the bucket's refill).  A bucket sees changed numbers at its next call and
applies them from then on.
"""

from __future__ import annotations

import copy
import random
import threading
import time
from typing import Any, Callable, Dict, Optional, Tuple

# EC2 developer guide, "Request throttling for the Amazon EC2 API": (capacity, refill per second).
EC2_PUBLISHED: Dict[str, Tuple[float, float]] = {
    "CreateSnapshot": (100, 5),
    "CreateSnapshots": (100, 5),
    "CreateTags": (100, 10),
    "DeleteTags": (100, 10),
    "CreateVolume": (100, 5),
    "DeleteVolume": (100, 5),
    "DeleteSnapshot": (100, 5),
    "ModifySnapshotAttribute": (100, 5),
    "StartInstances": (5, 2),
    "TerminateInstances": (100, 5),
    "CopyImage": (100, 1),
}
EC2_MUTATING = (50, 5)
EC2_NON_MUTATING = (100, 20)
# Called without a filter and without pagination (MaxResults / NextToken), these use a smaller bucket.
EC2_UNFILTERED_ACTIONS = ("DescribeInstances", "DescribeInstanceStatus", "DescribeSnapshots", "DescribeVolumes")
EC2_UNFILTERED = (50, 10)
UNFILTERED_SUFFIX = "/unfiltered"
NON_MUTATING_PREFIXES = ("Describe", "List", "Get", "Search")

# SSM publishes no table in this form (Service Quotas shows account values).  The twin's choice: the
# refill of EC2's mutating actions and a small burst, so that a fleet run batching 50 instances per
# SendCommand and reading status once per batch fits, and one polling per instance does not.
SSM_CHOSEN: Dict[str, Tuple[float, float]] = {
    "SendCommand": (20, 5),
    "ListCommandInvocations": (20, 5),
    "GetCommandInvocation": (20, 10),
    "DescribeInstanceInformation": (20, 5),
}
SSM_OTHER = (20, 5)

# Alibaba Cloud shows its thresholds only in the Quota Center.  The twin's choice mirrors EC2's published
# shape for the matching actions, so that a collection paced for one cloud is exercised the same way on
# the other: the snapshot group like CreateSnapshots, tags like CreateTags, reads like EC2's reads.
ALICLOUD_CHOSEN: Dict[str, Tuple[float, float]] = {
    "CreateSnapshotGroup": (100, 5),
    "CreateSnapshot": (100, 5),
    "DeleteSnapshot": (100, 5),
    "DeleteSnapshotGroup": (100, 5),
    "TagResources": (100, 10),
    "UntagResources": (100, 10),
    "CreateDisk": (100, 5),
    "StartInstance": (5, 2),
}
ALICLOUD_MUTATING = (50, 5)
ALICLOUD_NON_MUTATING = (100, 20)

THROTTLE_CODES = {"ec2": "RequestLimitExceeded", "ssm": "ThrottlingException", "ecs": "Throttling.User"}
PROFILES = ("none", "published")
# The AWS SDKs' standard retry mode: three attempts, exponential backoff with full jitter (base 1 s).
DEFAULT_RETRY = {"attempts": 3, "base": 1.0}


def _pair(value: Any, where: str) -> Tuple[float, float]:
    if not isinstance(value, dict) or "capacity" not in value or "refill" not in value:
        raise ValueError(f"limits {where}: give {{capacity: n, refill: tokens per second}}, got {value!r}")
    capacity, refill = float(value["capacity"]), float(value["refill"])
    if capacity < 0 or refill < 0:
        raise ValueError(f"limits {where}: capacity and refill must not be negative")
    return capacity, refill


def _key(service: str, action: str) -> str:
    """The name an override uses: EC2 and SSM APIs by name, Alibaba's as ``alicloud:Action``."""
    return f"alicloud:{action}" if service == "ecs" else action


def published(service: str, bucket: str) -> Tuple[float, float]:
    """(capacity, refill) of ``bucket`` (an API name, or ``Action/unfiltered``) in the default table."""
    if service == "ec2":
        if bucket.endswith(UNFILTERED_SUFFIX):
            return EC2_UNFILTERED
        if bucket in EC2_PUBLISHED:
            return EC2_PUBLISHED[bucket]
        return EC2_NON_MUTATING if bucket.startswith(NON_MUTATING_PREFIXES) else EC2_MUTATING
    if service == "ssm":
        return SSM_CHOSEN.get(bucket, SSM_OTHER)
    if service == "ecs":
        if bucket in ALICLOUD_CHOSEN:
            return ALICLOUD_CHOSEN[bucket]
        return ALICLOUD_NON_MUTATING if bucket.startswith(NON_MUTATING_PREFIXES) else ALICLOUD_MUTATING
    raise ValueError(f"no request limits for service {service!r}")


def bucket_name(service: str, action: str, unfiltered: bool = False) -> str:
    """The bucket a call spends from: its API's, or the smaller one of an unfiltered, unpaginated describe."""
    if service == "ec2" and unfiltered and action in EC2_UNFILTERED_ACTIONS:
        return action + UNFILTERED_SUFFIX
    return action


def ec2_unfiltered(params: Dict[str, Any]) -> bool:
    """Whether EC2 query parameters carry neither a filter nor pagination (MaxResults / NextToken)."""
    return not any(k.startswith("Filter.") or k in ("MaxResults", "NextToken") for k in params)


class TokenBucket:
    """A token bucket: ``capacity`` tokens, refilled continuously at ``refill`` per second.

    ``drain`` is another consumer's steady spending (tokens per second), taken before this bucket's
    callers see the refill.  Thread-safe; ``clock`` is injectable so tests can step time.
    """

    def __init__(self, capacity: float, refill: float, drain: float = 0.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self.capacity, self.refill, self.drain = float(capacity), float(refill), float(drain)
        self._level = float(capacity)
        self._at = clock()

    def _advance(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._at)
        self._at = now
        self._level = min(self.capacity, max(0.0, self._level + (self.refill - self.drain) * elapsed))

    def configure(self, capacity: float, refill: float, drain: float = 0.0) -> None:
        """New numbers from now on; the tokens held stay, cut to the new capacity."""
        with self._lock:
            if (capacity, refill, drain) == (self.capacity, self.refill, self.drain):
                return
            self._advance()
            self.capacity, self.refill, self.drain = float(capacity), float(refill), float(drain)
            self._level = min(self._level, self.capacity)

    def take(self, tokens: float = 1.0) -> bool:
        """Spend ``tokens`` if the bucket holds them; False (nothing spent) when it does not."""
        with self._lock:
            self._advance()
            if self._level + 1e-9 >= tokens:
                self._level = max(0.0, self._level - tokens)
                return True
            return False

    def level(self) -> float:
        with self._lock:
            self._advance()
            return self._level


class Limits:
    """The account's buckets for both twins; the spec and the faults decide their numbers."""

    def __init__(self, spec: Any = "none", faults: Any = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._faults = faults
        self._buckets: Dict[Tuple[str, str, str, str], TokenBucket] = {}
        self._rng = random.Random(0)
        self.profile = "none"
        self.overrides: Dict[str, Tuple[float, float]] = {}
        self.retry = dict(DEFAULT_RETRY)
        self.spec: Any = None
        self.update(spec)

    def update(self, spec: Any) -> None:
        """Replace the configuration (a profile name or a mapping, see the module docstring)."""
        if spec is None:
            spec = "none"
        if isinstance(spec, str):
            spec = {"profile": spec}
        if not isinstance(spec, dict):
            raise ValueError(f"limits must be none, published or a mapping, got {spec!r}")
        profile = spec.get("profile", "published")
        if profile not in PROFILES:
            raise ValueError(f"unknown limits profile {profile!r} (known: {', '.join(PROFILES)})")
        overrides = {k: _pair(v, k) for k, v in spec.items() if k not in ("profile", "retry")}
        retry = dict(DEFAULT_RETRY, **(spec.get("retry") or {}))
        with self._lock:
            self.profile, self.overrides, self.retry = profile, overrides, retry
            self.spec = copy.deepcopy(spec)

    def params(self, service: str, bucket: str) -> Optional[Tuple[float, float, float]]:
        """(capacity, refill, competing drain) of a bucket now, or None when that API is not limited.

        Order: the profile's table, the spec's overrides, then the faults ``limits`` (which replace a
        bucket's numbers, also where the profile has none) and ``competing`` (a drain on an existing bucket).
        """
        key = _key(service, bucket)
        with self._lock:
            pair = self.overrides.get(key)
            profile = self.profile
        if pair is None and profile == "published":
            pair = published(service, bucket)
        faults = self._faults
        if faults is not None:
            lowered = (faults.get("limits") or {}).get(key)
            if lowered is not None:
                pair = _pair(lowered, f"fault {key}")
        if pair is None:
            return None
        drain = float((faults.get("competing") or {}).get(key, 0.0)) if faults is not None else 0.0
        return pair[0], pair[1], drain

    def take(self, service: str, action: str, account: str, region: str, unfiltered: bool = False) -> bool:
        """Spend one token of the account's bucket for this call; False when the call is throttled."""
        name = bucket_name(service, action, unfiltered)
        params = self.params(service, name)
        if params is None:
            return True
        key = (service, account, region, name)
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = TokenBucket(*params, clock=self._clock)
        bucket.configure(*params)
        return bucket.take()

    def throttle_code(self, service: str) -> str:
        return THROTTLE_CODES[service]

    def backoff(self, attempt: int) -> float:
        """Seconds an instance-side SDK waits before retry ``attempt`` (1, 2, ...): full jitter, capped at 20 s."""
        with self._lock:
            return min(20.0, self._rng.random() * float(self.retry["base"]) * 2 ** (attempt - 1))

    def describe(self) -> Dict[str, Any]:
        """Spec, effective profile and the buckets in use with their current levels, for the control API."""
        with self._lock:
            buckets = dict(self._buckets)
            out = {"spec": copy.deepcopy(self.spec), "profile": self.profile, "retry": dict(self.retry)}
        out["buckets"] = [{"service": s, "account": a, "region": r, "api": n, "capacity": b.capacity,
                           "refill": b.refill, "competing": b.drain, "tokens": round(b.level(), 3)}
                          for (s, a, r, n), b in sorted(buckets.items())]
        return out


def default_spec(latency: Any) -> str:
    """``published`` with the realistic latency profile (benchmarks, demos), ``none`` with zero (the fast suite)."""
    return "published" if getattr(latency, "profile", "zero") == "realistic" else "none"


def as_limits(value: Any, latency: Any = None, faults: Any = None) -> Limits:
    """A Limits from a Limits, a spec, or None (the latency profile's default)."""
    if isinstance(value, Limits):
        return value
    return Limits(value if value is not None else default_spec(latency), faults=faults)
