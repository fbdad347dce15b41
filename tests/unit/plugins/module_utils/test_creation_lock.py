"""Locking at creation: members locked once their provider allows, the wait bounded and paced, refusals reported."""

import pytest

from ansible_collections.appconsistent.snapshots.plugins.module_utils import creation_lock as cl
from ansible_collections.appconsistent.snapshots.plugins.module_utils.alicloud import AlibabaCloudError

from .test_pacing import FakeClock

COMPLIANCE = dict(mode="compliance", duration_days=7, expires_at=None, cool_off_hours=2, acknowledge_no_cool_off=False,
                  wait_timeout=600)


class FakeEcs:
    """Snapshots accomplished ``ready_after`` seconds from the start; LockSnapshot refused for those in ``refuse``."""

    def __init__(self, clock, ready_after, refuse=()):
        self.clock = clock
        self.start = clock.now
        self.ready_at = {sid: clock.now + seconds for sid, seconds in ready_after.items()}
        self.refuse = refuse
        self.locked = {}
        self.describes = 0

    def describe_snapshots(self, snapshot_ids=None):
        self.describes += 1
        return [dict(SnapshotId=sid, Status="accomplished" if self.clock() >= self.ready_at[sid] else "progressing")
                for sid in snapshot_ids]

    def lock_snapshot(self, snapshot_id, duration_days, cool_off_hours=0):
        if snapshot_id in self.refuse:
            raise AlibabaCloudError("LockSnapshot", "Forbidden.RAM", "User not authorized to operate on the specified resource.")
        assert self.clock() >= self.ready_at[snapshot_id], "locked while still in progress"
        self.locked[snapshot_id] = self.clock() - self.start
        return {"LockedSnapshotInfo": dict(SnapshotId=snapshot_id, LockStatus="compliance-cooloff", LockMode="compliance",
                                           LockDuration=duration_days, CoolOffPeriod=cool_off_hours,
                                           LockExpiredTime="2099-01-01T00:00:00Z")}


class Module:
    def __init__(self, lock):
        self.params = dict(lock=lock)
        self.check_mode = False


def run(ready_after, refuse=(), timeout=600):
    clock = FakeClock()
    api = FakeEcs(clock, ready_after, refuse)
    locker = cl.CreationLock(Module(dict(COMPLIANCE, wait_timeout=timeout)), "alicloud", api, sleep=clock.sleep,
                             clock=clock)
    members = [dict(snapshot_id=sid, state="progressing") for sid in ready_after]
    return locker.lock_sets({"ssg-1": members}), api, clock


def test_alicloud_members_are_locked_each_as_soon_as_it_is_accomplished_with_growing_pauses():
    entries, api, clock = run({"s-1": 3.0, "s-2": 40.0})
    entry = entries["ssg-1"]
    assert entry["locked"] is True and entry["locked_members"] == 2 and "error" not in entry
    assert api.locked["s-1"] < 10 < api.locked["s-2"]  # the first was not kept waiting for the second
    assert clock.slept == sorted(clock.slept) and max(clock.slept) <= 30.0
    assert api.describes == len(clock.slept) + 1  # one listing a round, none between pauses


def test_the_wait_is_bounded_and_the_set_is_not_reported_locked():
    entries, api, clock = run({"s-1": 0.0, "s-2": 10_000.0}, timeout=120)
    entry = entries["ssg-1"]
    assert entry["locked"] is False and entry["locked_members"] == 1
    assert "s-2: still progressing when lock.wait_timeout ended" in entry["error"]
    assert "snapshot_set_lock, set_ids: [ssg-1]" in entry["error"]
    assert clock.now - api.start <= 120 and "s-2" not in api.locked


def test_a_refused_lock_is_reported_with_its_code_and_not_retried():
    entries, api, clock = run({"s-1": 0.0, "s-2": 0.0}, refuse=("s-2",))
    entry = entries["ssg-1"]
    assert entry["locked"] is False and "Forbidden.RAM" in entry["error"] and clock.slept == []
    assert [m["lock"] is not None for m in entry["members"]] == [True, False]


@pytest.mark.parametrize("lock, words", [
    (dict(COMPLIANCE, cool_off_hours=None), "lock.cool_off_hours, or lock.acknowledge_no_cool_off"),
    (dict(COMPLIANCE, wait_timeout=-1), "lock.wait_timeout"),
    (dict(COMPLIANCE, mode=None), "lock needs lock.mode"),
])
def test_bad_options_are_named_with_their_parent(lock, words):
    with pytest.raises(ValueError, match=words.replace(".", r"\.")):
        cl.check_lock(dict(lock=lock), "aws")


def test_no_lock_asked_checks_nothing():
    assert cl.check_lock(dict(lock=None), "alicloud") is None
