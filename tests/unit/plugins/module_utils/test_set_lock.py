"""The lock decisions per mode and phase, the set's lock from its members', and the options refused before any call."""

import datetime

import pytest

from ansible_collections.appconsistent.snapshots.plugins.module_utils import set_lock as sl
from ansible_collections.appconsistent.snapshots.plugins.module_utils import snapshot_lock as lk

UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 11, 23, 6, 0, 0, tzinfo=UTC)


def lock(state, days=10, until="2026-12-03T06:00:00Z", mode=None):
    return dict(state=state, mode=mode or ("governance" if state == "governance" else "compliance"), until=until,
                duration_days=days, cool_off_hours=None, cool_off_until=None)


def params(**extra):
    base = dict(provider="aws", set_ids=["acs-20261123t060000-1a2b3c4d"], instance_ids=None, run_id=None,
                state="locked", mode="compliance", duration_days=10, expires_at=None, cool_off_hours=None,
                acknowledge_no_cool_off=True)
    base.update(extra)
    return base


@pytest.mark.parametrize("current, asked, expected", [
    (None, {}, (sl.LOCK, None)),
    (lock("expired", until="2026-11-01T00:00:00Z"), {}, (sl.LOCK, None)),
    (lock("compliance-cooloff"), {}, (sl.UNCHANGED, None)),
    (lock("compliance-cooloff"), dict(duration_days=3), (sl.LOCK, None)),  # cooling-off: shorter is fine
    (lock("governance"), dict(mode="governance", duration_days=1), (sl.LOCK, None)),
    (lock("compliance"), dict(duration_days=20), (sl.EXTEND, None)),
    (lock("compliance"), {}, (sl.UNCHANGED, None)),
])
def test_what_each_phase_allows(current, asked, expected):
    assert sl.decide(current, params(**asked), None, NOW) == expected


def test_compliance_past_cooling_off_is_never_shortened_changed_or_unlocked():
    current = lock("compliance")
    action, why = sl.decide(current, params(duration_days=5), None, NOW)
    assert action is None and "can only be extended" in why
    action, why = sl.decide(current, params(mode="governance"), None, NOW)
    assert action is None and "mode can no longer be changed" in why
    action, why = sl.decide(current, params(state="unlocked"), None, NOW)
    assert action is None and "cooling-off period is over" in why
    earlier = datetime.datetime(2026, 12, 1, tzinfo=UTC)
    assert sl.decide(current, params(duration_days=None), earlier, NOW)[0] is None


def test_unlock_governance_and_cooling_off_and_nothing_for_no_lock():
    assert sl.decide(lock("governance"), params(state="unlocked"), None, NOW) == (sl.UNLOCK, None)
    assert sl.decide(lock("compliance-cooloff"), params(state="unlocked"), None, NOW) == (sl.UNLOCK, None)
    assert sl.decide(None, params(state="unlocked"), None, NOW) == (sl.UNCHANGED, None)


def test_a_set_is_locked_only_when_every_member_is():
    held = lock("compliance", until="2026-12-03T06:00:00Z")
    later = lock("compliance-cooloff", until="2026-12-05T06:00:00Z")
    both = lk.set_lock([{"lock": held}, {"lock": later}], NOW)
    assert both == dict(locked=True, mode="compliance", until="2026-12-03T06:00:00Z", state="compliance-cooloff",
                        locked_members=2)
    one = lk.set_lock([{"lock": held}, {"lock": None}], NOW)
    assert one["locked"] is False and one["locked_members"] == 1
    assert lk.set_lock([{"lock": {"state": "unknown"}}, {"lock": held}], NOW)["locked"] is None
    assert lk.set_lock([{"lock": lock("expired", until="2026-11-01T00:00:00Z")}], NOW)["locked"] is False


@pytest.mark.parametrize("asked, text", [
    (dict(set_ids=None), "Name the sets"),
    (dict(mode=None), "needs mode"),
    (dict(duration_days=None), "exactly one of duration_days"),
    (dict(duration_days=0), "between 1 and 36500"),
    (dict(duration_days=None, expires_at="tomorrow"), "ISO 8601"),
    (dict(duration_days=None, expires_at="2026-11-01T00:00:00Z"), "in the future"),
    (dict(acknowledge_no_cool_off=False), "acknowledge_no_cool_off"),
    (dict(mode="governance", cool_off_hours=1), "compliance mode only"),
    (dict(cool_off_hours=73), "between 0 and 72"),
    (dict(provider="alicloud", mode="governance"), "compliance mode only"),
    (dict(provider="alicloud", duration_days=None, expires_at="2027-01-01T00:00:00Z"), "use duration_days"),
    (dict(state="unlocked"), "only apply to state=locked"),
])
def test_options_refused_before_any_call(asked, text):
    with pytest.raises(ValueError, match=text):
        sl.check_options(params(**asked), NOW)


def test_options_accepted():
    assert sl.check_options(params(), NOW) is None
    until = sl.check_options(params(duration_days=None, expires_at="2027-01-01T00:00:00Z", mode="governance"), NOW)
    assert until == datetime.datetime(2027, 1, 1, tzinfo=UTC)
    assert sl.check_options(params(state="unlocked", mode=None, duration_days=None, acknowledge_no_cool_off=False),
                            NOW) is None
