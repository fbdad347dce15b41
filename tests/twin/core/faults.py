"""Fault injection shared by both twins.

A spec is a dict; every key is optional::

    api_errors:                       # errors returned instead of the API's answer
      - {action: CreateSnapshots, code: SnapshotCreationPerVolumeRateExceeded, rate: 0.2}
      - {provider: aws, action: "*", code: RequestLimitExceeded, count: 3}     # the next 3 calls
      - {action: CreateSnapshots, code: InternalError, after: true}            # answered after it took effect
    throttle_rate: 0.05               # shorthand: every API call throttled at this rate
    instances:                        # per-instance faults, keyed by instance id or name
      web-1: {vss_writer_failure: true}
    snapshot_error_rate: 0.0          # other settings are free-form; each twin documents the ones it reads
    snapshot_quota: 10000

Rules with ``count`` fire on the next ``count`` matching calls, then expire; rules with ``rate``
fire with that probability (a seeded random generator makes runs repeatable).
"""

from __future__ import annotations

import copy
import random
import threading
from typing import Any, Dict, List, Optional

DEFAULT_THROTTLE_CODES = {"aws": "RequestLimitExceeded", "alicloud": "Throttling.User"}


class Faults:
    """Current fault settings; thread-safe, updatable at runtime."""

    def __init__(self, spec: Optional[Dict[str, Any]] = None, seed: Optional[int] = None):
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._spec: Dict[str, Any] = {}
        self._rules: List[Dict[str, Any]] = []
        self.update(spec or {})

    def update(self, spec: Dict[str, Any]) -> None:
        """Merge ``spec`` into the current settings.

        ``api_errors`` rules are appended; ``instances`` and ``volumes`` entries are merged per resource;
        other keys replace the previous value (``None`` removes a key).
        """
        if not isinstance(spec, dict):
            raise ValueError("faults spec must be a mapping")
        with self._lock:
            for rule in spec.get("api_errors") or []:
                if not isinstance(rule, dict) or not rule.get("action"):
                    raise ValueError(f"api_errors rule needs an action: {rule!r}")
                rule = dict(rule)
                if "count" not in rule and "rate" not in rule:
                    rule["count"] = 1
                self._rules.append(rule)
            for key, value in spec.items():
                if key == "api_errors":
                    continue
                if key in ("instances", "volumes"):
                    current = self._spec.setdefault(key, {})
                    for inst, faults in (value or {}).items():
                        if faults is None:
                            current.pop(inst, None)
                        else:
                            current.setdefault(inst, {}).update(faults)
                elif value is None:
                    self._spec.pop(key, None)
                else:
                    self._spec[key] = copy.deepcopy(value)

    def reset(self) -> None:
        """Remove every fault."""
        with self._lock:
            self._spec = {}
            self._rules = []

    def get(self, key: str, default: Any = None) -> Any:
        """A free-form setting such as ``snapshot_error_rate``."""
        with self._lock:
            return copy.deepcopy(self._spec.get(key, default))

    def chance(self, rate: float) -> bool:
        """True with probability ``rate`` (seeded)."""
        if not rate:
            return False
        with self._lock:
            return self._rng.random() < float(rate)

    def api_error(self, provider: str, action: str, after: bool = False) -> Optional[str]:
        """The error code to return for this call instead of its answer, or None.

        ``after``: the rules marked ``after: true``, whose error is answered once the call has taken effect (an answer
        lost on its way back, after which an SDK retries a call that already did its work)."""
        with self._lock:
            for rule in self._rules:
                if rule.get("provider") not in (None, provider) or bool(rule.get("after")) != after:
                    continue
                if rule["action"] not in ("*", action):
                    continue
                code = rule.get("code") or DEFAULT_THROTTLE_CODES.get(provider, "Throttling")
                if "count" in rule:
                    if rule["count"] > 0:
                        rule["count"] -= 1
                        return code
                    continue
                if self._rng.random() < float(rule["rate"]):
                    return code
            self._rules = [r for r in self._rules if "count" not in r or r["count"] > 0]
            if after:
                return None
            rate = float(self._spec.get("throttle_rate") or 0)
            if rate and self._rng.random() < rate:
                return DEFAULT_THROTTLE_CODES.get(provider, "Throttling")
        return None

    def api_error_after(self, provider: str, action: str) -> Optional[str]:
        """The error code to answer once this call has taken effect (rules with ``after: true``), or None."""
        return Faults.api_error(self, provider, action, after=True)  # not a test's stand-in for api_error

    def for_instance(self, instance: Any) -> Dict[str, Any]:
        """Faults of one instance: its fleet ``faults`` merged with runtime ones (by id, then by name)."""
        merged = dict(getattr(instance, "faults", None) or {})
        with self._lock:
            runtime = self._spec.get("instances") or {}
            for key in (getattr(instance, "name", None), getattr(instance, "id", None)):
                if key and key in runtime:
                    merged.update(runtime[key])
        return merged

    def describe(self) -> Dict[str, Any]:
        """Current settings, for the control API."""
        with self._lock:
            out = copy.deepcopy(self._spec)
            out["api_errors"] = copy.deepcopy(self._rules)
            return out


def as_faults(value: Any, seed: Optional[int] = None) -> Faults:
    """A Faults object from a Faults, a spec dict or None."""
    if isinstance(value, Faults):
        return value
    return Faults(value or {}, seed=seed)
