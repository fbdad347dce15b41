"""Snapshot locks of both twins: the lock book and the providers' published rules for changing a lock.

One book per twin account and Region.  Each provider's twin parses its own request (EC2 query, ECS RPC),
asks the book, and renders the answer in its own format; the rules of each provider live here, side by
side, so that they are read and tested together (see tests/twin/README.md, "Snapshot locks", for sources).

Times are wall-clock seconds.  ``age()`` moves a lock's instants back, as if it had been made earlier: the
tests use it to reach the end of a cooling-off period (at least one hour on AWS) without waiting.
"""

from __future__ import annotations

import datetime
import threading
import time
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional

DAY = 86400.0
HOUR = 3600.0
DURATION_DAYS_MAX = 36500  # both providers: LockDuration 1 to 36500 days
AWS_COOL_OFF_HOURS = (1, 72)  # AWS: CoolOffPeriod min 1, max 72 (omit it for no cooling-off)
ALICLOUD_COOL_OFF_HOURS = (0, 72)  # Alibaba: CoolOffPeriod 0 to 72, 0 locks at once

# Lock states, as both providers name them.
COOLOFF = "compliance-cooloff"
COMPLIANCE = "compliance"
GOVERNANCE = "governance"
EXPIRED = "expired"


class LockRefused(Exception):
    """A lock request the provider refuses: its error code and message (the twin renders them)."""

    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


@dataclass
class SnapshotLock:
    snapshot_id: str
    mode: str  # governance | compliance
    created: float
    duration_start: float
    expires: float
    duration_days: Optional[int] = None
    cool_off_hours: Optional[int] = None
    cool_off_expires: Optional[float] = None

    def state(self, now: float) -> str:
        if now >= self.expires:
            return EXPIRED
        if self.mode == COMPLIANCE and self.cool_off_expires is not None and now < self.cool_off_expires:
            return COOLOFF
        return self.mode

    def active(self, now: float) -> bool:
        return self.state(now) != EXPIRED


def iso(moment: Optional[float]) -> Optional[str]:
    if moment is None:
        return None
    return datetime.datetime.fromtimestamp(moment, tz=datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_iso(value: str) -> float:
    text = value.strip().replace("Z", "+00:00")
    moment = datetime.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


class LockBook:
    """The locks of one account and Region, and both providers' rules for setting, changing and removing them."""

    def __init__(self) -> None:
        self.locks: Dict[str, SnapshotLock] = {}
        self._guard = threading.Lock()

    @staticmethod
    def now() -> float:
        return time.time()

    def get(self, snapshot_id: str) -> Optional[SnapshotLock]:
        return self.locks.get(snapshot_id)

    def state(self, snapshot_id: str) -> Optional[str]:
        lock = self.locks.get(snapshot_id)
        return lock.state(self.now()) if lock else None

    def blocks_delete(self, snapshot_id: str) -> bool:
        """Both providers: a snapshot whose lock has not expired cannot be deleted, in any mode or phase."""
        lock = self.locks.get(snapshot_id)
        return lock is not None and lock.active(self.now())

    def forget(self, snapshot_id: str) -> None:
        self.locks.pop(snapshot_id, None)

    def age(self, seconds: float, snapshot_ids: Optional[Iterable[str]] = None) -> None:
        """Make locks look ``seconds`` older (tests: reach the end of a cooling-off period without waiting)."""
        with self._guard:
            for lock in self.locks.values():
                if snapshot_ids is not None and lock.snapshot_id not in set(snapshot_ids):
                    continue
                lock.created -= seconds
                lock.duration_start -= seconds
                lock.expires -= seconds
                if lock.cool_off_expires is not None:
                    lock.cool_off_expires -= seconds

    def listed(self, snapshot_ids: Optional[List[str]] = None, states: Optional[List[str]] = None) -> List[SnapshotLock]:
        now = self.now()
        return [lock for sid, lock in sorted(self.locks.items())
                if (not snapshot_ids or sid in snapshot_ids) and (not states or lock.state(now) in states)]

    # -- AWS ------------------------------------------------------------------------------------
    def aws_lock(self, snapshot_id: str, mode: Optional[str], duration_days: Optional[int], expiration: Optional[float],
                 cool_off_hours: Optional[int]) -> SnapshotLock:
        """EC2 LockSnapshot: a new lock, or a change of the lock the snapshot has, within what its phase allows."""
        if mode not in (GOVERNANCE, COMPLIANCE):
            raise LockRefused("InvalidParameterValue", f"Value ({mode}) for parameter LockMode is invalid. "
                              "Expected: 'governance' or 'compliance'.")
        if (duration_days is None) == (expiration is None):
            raise LockRefused("InvalidParameterCombination", "You must specify either LockDuration or ExpirationDate, "
                              "but not both.")
        now = self.now()
        if duration_days is not None and not 1 <= duration_days <= DURATION_DAYS_MAX:
            raise LockRefused("InvalidParameterValue", f"Value ({duration_days}) for parameter LockDuration is invalid. "
                              f"It must be between 1 and {DURATION_DAYS_MAX} days.")
        if expiration is not None and not now < expiration <= now + DURATION_DAYS_MAX * DAY:
            raise LockRefused("InvalidParameterValue", "ExpirationDate must be in the future and at most "
                              f"{DURATION_DAYS_MAX} days away.")
        if cool_off_hours is not None:
            if mode != COMPLIANCE:
                raise LockRefused("InvalidParameterCombination", "CoolOffPeriod can only be specified for compliance mode.")
            low, high = AWS_COOL_OFF_HOURS
            if not low <= cool_off_hours <= high:
                raise LockRefused("InvalidParameterValue", f"Value ({cool_off_hours}) for parameter CoolOffPeriod is "
                                  f"invalid. It must be between {low} and {high} hours.")
        with self._guard:
            current = self.locks.get(snapshot_id)
            phase = current.state(now) if current else None
            if current is None or phase == EXPIRED:
                start = now
                expires = start + duration_days * DAY if duration_days is not None else expiration
                lock = SnapshotLock(snapshot_id, mode, created=now, duration_start=start, expires=expires,
                                    duration_days=duration_days, cool_off_hours=cool_off_hours,
                                    cool_off_expires=now + cool_off_hours * HOUR if cool_off_hours else None)
                self.locks[snapshot_id] = lock
                return lock
            expires = current.duration_start + duration_days * DAY if duration_days is not None else expiration
            if phase == COMPLIANCE:
                # After the cooling-off period: only a longer lock, in compliance mode, without a cooling-off period.
                if mode != COMPLIANCE:
                    raise LockRefused("IncorrectState", f"The snapshot {snapshot_id} is locked in compliance mode and "
                                      "its cooling-off period has expired: its lock mode cannot be changed.")
                if cool_off_hours is not None:
                    raise LockRefused("InvalidParameterCombination", f"The cooling-off period of snapshot {snapshot_id} "
                                      "has expired: omit CoolOffPeriod to extend its lock.")
                if expires < current.expires:
                    raise LockRefused("IncorrectState", f"The snapshot {snapshot_id} is locked in compliance mode and "
                                      "its cooling-off period has expired: its lock can only be extended, not shortened.")
                current.expires, current.duration_days = expires, duration_days
                return current
            # Governance, or compliance within its cooling-off period: mode and duration may change either way.
            current.mode, current.expires, current.duration_days = mode, expires, duration_days
            if mode == GOVERNANCE:
                current.cool_off_hours = current.cool_off_expires = None
            elif cool_off_hours is not None:
                current.cool_off_hours, current.cool_off_expires = cool_off_hours, now + cool_off_hours * HOUR
            elif phase == GOVERNANCE:
                current.cool_off_hours = current.cool_off_expires = None  # governance to compliance, at once
            return current

    def aws_unlock(self, snapshot_id: str) -> None:
        """EC2 UnlockSnapshot: governance, or compliance within its cooling-off period; never compliance after it."""
        with self._guard:
            current = self.locks.get(snapshot_id)
            phase = current.state(self.now()) if current else None
            if phase is None or phase == EXPIRED:
                raise LockRefused("IncorrectState", f"The snapshot {snapshot_id} is not locked.")
            if phase == COMPLIANCE:
                raise LockRefused("IncorrectState", f"The snapshot {snapshot_id} is locked in compliance mode and its "
                                  "cooling-off period has expired: it cannot be unlocked.")
            del self.locks[snapshot_id]

    # -- Alibaba Cloud --------------------------------------------------------------------------
    def alicloud_lock(self, snapshot_id: str, mode: Optional[str], duration_days: Optional[int],
                      cool_off_hours: Optional[int]) -> SnapshotLock:
        """ECS LockSnapshot: compliance mode only; within the cooling-off period a relock resets every setting,
        after it only a longer LockDuration (with CoolOffPeriod 0) is accepted."""
        if mode != COMPLIANCE:
            raise LockRefused("InvalidParameter.LockMode", f"The specified LockMode {mode} is invalid: only compliance "
                              "is supported.")
        if duration_days is None:
            raise LockRefused("MissingParameter.LockDuration", "The input parameter LockDuration that is mandatory "
                              "for processing this request is not supplied.")
        if not 1 <= duration_days <= DURATION_DAYS_MAX:
            raise LockRefused("InvalidParameter.LockDuration", f"The specified LockDuration {duration_days} is invalid: "
                              f"it must be between 1 and {DURATION_DAYS_MAX} days.")
        cool_off = cool_off_hours or 0
        low, high = ALICLOUD_COOL_OFF_HOURS
        if not low <= cool_off <= high:
            raise LockRefused("InvalidParameter.CoolOffPeriod", f"The specified CoolOffPeriod {cool_off} is invalid: "
                              f"it must be between {low} and {high} hours.")
        now = self.now()
        with self._guard:
            current = self.locks.get(snapshot_id)
            phase = current.state(now) if current else None
            if phase == COMPLIANCE:
                if cool_off:
                    raise LockRefused("InvalidParameter.CoolOffPeriod", f"The snapshot {snapshot_id} is in its lock "
                                      "period: CoolOffPeriod must be 0 to extend the lock.")
                expires = current.duration_start + duration_days * DAY
                if expires < current.expires:
                    raise LockRefused("OperationDenied.SnapshotLocked", f"The snapshot {snapshot_id} is in its lock "
                                      "period: its lock duration can only be extended.", 403)
                current.expires, current.duration_days = expires, duration_days
                return current
            # No lock, an expired one, or a relock within the cooling-off period: every setting starts again.
            lock = SnapshotLock(snapshot_id, COMPLIANCE, created=now, duration_start=now, expires=now + duration_days * DAY,
                                duration_days=duration_days, cool_off_hours=cool_off,
                                cool_off_expires=now + cool_off * HOUR if cool_off else None)
            self.locks[snapshot_id] = lock
            return lock

    def alicloud_unlock(self, snapshot_id: str) -> None:
        """ECS UnlockSnapshot: only within the cooling-off period."""
        with self._guard:
            current = self.locks.get(snapshot_id)
            phase = current.state(self.now()) if current else None
            if phase is None or phase == EXPIRED:
                raise LockRefused("OperationDenied.SnapshotNotLocked", f"The snapshot {snapshot_id} is not locked.", 403)
            if phase != COOLOFF:
                raise LockRefused("OperationDenied.SnapshotLocked", f"The snapshot {snapshot_id} is in its lock period "
                                  "and cannot be unlocked.", 403)
            del self.locks[snapshot_id]
