"""API call counters, so tests and benchmarks can check how many calls a job made."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Dict, Optional


class CallCounter:
    """Thread-safe count of API calls per provider and action."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter = Counter()

    def record(self, provider: str, action: str) -> None:
        with self._lock:
            self._counts[(provider, action)] += 1

    def counts(self, provider: Optional[str] = None) -> Dict:
        """``{action: n}`` for one provider, or ``{provider: {action: n}}`` for all."""
        with self._lock:
            items = list(self._counts.items())
        if provider is not None:
            return {action: n for (prov, action), n in sorted(items) if prov == provider}
        out: Dict[str, Dict[str, int]] = {}
        for (prov, action), n in sorted(items):
            out.setdefault(prov, {})[action] = n
        return out

    def total(self, provider: Optional[str] = None) -> int:
        return sum(self.counts(provider).values()) if provider else sum(sum(v.values()) for v in self.counts().values())

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
