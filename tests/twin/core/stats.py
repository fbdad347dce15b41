"""API call counters and the throttled answers, so tests and benchmarks can check how many calls a job made and when it was throttled."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any, Dict, List, Optional


def _view(items, provider: Optional[str]) -> Dict:
    """``{action: n}`` for one provider, or ``{provider: {action: n}}`` for all."""
    if provider is not None:
        return {action: n for (prov, action), n in sorted(items) if prov == provider}
    out: Dict[str, Dict[str, int]] = {}
    for (prov, action), n in sorted(items):
        out.setdefault(prov, {})[action] = n
    return out


class CallCounter:
    """Thread-safe count of API calls per provider and action, and a log of the throttled answers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter = Counter()
        self._throttled: Counter = Counter()
        self._throttle_log: List[Dict[str, Any]] = []

    def record(self, provider: str, action: str) -> None:
        with self._lock:
            self._counts[(provider, action)] += 1

    def record_throttle(self, provider: str, action: str, code: str, at: Optional[float] = None) -> None:
        """A call answered with a throttling error (an empty bucket or an injected fault), at wall-clock ``at``."""
        at = time.time() if at is None else at
        with self._lock:
            self._throttled[(provider, action)] += 1
            self._throttle_log.append({"at": at, "provider": provider, "action": action, "code": code})

    def throttled(self, provider: Optional[str] = None) -> Dict:
        """``{action: n}`` throttled answers for one provider, or ``{provider: {action: n}}`` for all."""
        with self._lock:
            items = list(self._throttled.items())
        return _view(items, provider)

    def throttle_log(self, provider: Optional[str] = None, since: Optional[float] = None,
                     until: Optional[float] = None) -> List[Dict[str, Any]]:
        """The throttled answers in time order (``at`` is wall-clock seconds), optionally within [since, until]."""
        with self._lock:
            log = list(self._throttle_log)
        return [e for e in log if (provider is None or e["provider"] == provider)
                and (since is None or e["at"] >= since) and (until is None or e["at"] <= until)]

    def counts(self, provider: Optional[str] = None) -> Dict:
        """``{action: n}`` for one provider, or ``{provider: {action: n}}`` for all."""
        with self._lock:
            items = list(self._counts.items())
        return _view(items, provider)

    def total(self, provider: Optional[str] = None) -> int:
        return sum(self.counts(provider).values()) if provider else sum(sum(v.values()) for v in self.counts().values())

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
            self._throttled.clear()
            self._throttle_log = []
