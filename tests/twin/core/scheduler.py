"""Deferred work for the twins: state transitions and agent command progress.

Every delayed effect (a snapshot completing, an invocation moving to InProgress) is a callback
run at a due time by one background thread, so the twins need no thread per object.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from typing import Callable, List, Tuple

LOG = logging.getLogger(__name__)


class Scheduler:
    """Runs callbacks at due times on one daemon thread."""

    def __init__(self, name: str = "twin-scheduler") -> None:
        self._heap: List[Tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def call_later(self, delay: float, func: Callable[[], None]) -> None:
        """Run ``func`` after ``delay`` seconds (at once, on the scheduler thread, when delay <= 0)."""
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + max(0.0, delay), next(self._seq), func))
            self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return len(self._heap)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(timeout)
                if self._stopped:
                    return
                func = heapq.heappop(self._heap)[2]
            try:
                func()
            except Exception:  # pylint: disable=broad-except
                LOG.exception("twin scheduler callback failed")

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._cond.notify_all()
        self._thread.join(timeout=5)
