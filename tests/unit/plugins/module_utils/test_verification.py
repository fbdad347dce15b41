"""The restore test record on a set: its value within the providers' limits, how it is read, what is verified."""

from __future__ import annotations

import datetime

import pytest

from ansible_collections.appconsistent.snapshots.plugins.module_utils import verification as vf
from ansible_collections.appconsistent.snapshots.plugins.module_utils.set_inventory import select_sets

AT = datetime.datetime(2026, 12, 7, 6, 12, 40, tzinfo=datetime.timezone.utc)


def _set(set_id, instance, created, values, safety_for=None):
    members = [{"snapshot_id": f"{set_id}-{n}", "tags": {vf.TAG_VERIFICATION: v} if v else {}}
               for n, v in enumerate(values)]
    return {"set_id": set_id, "instance_id": instance, "created": created, "consistency": "application",
            "safety_for": safety_for, "members": members, "verification": vf.set_verification(members)}


def test_a_record_reads_back_as_written():
    value = vf.format_record("passed", AT, 41.53, ["fs:ext4", "app:mysql", "fs:ext4"])
    assert value == "passed 2026-12-07T06:12:40Z 41.5s fs:ext4,app:mysql"
    assert vf.parse_record(value) == {"result": "passed", "verified_at": "2026-12-07T06:12:40Z",
                                      "seconds_to_application": 41.5, "checks": ["fs:ext4", "app:mysql"]}
    assert vf.parse_record(vf.format_record("failed", AT, None, []))["seconds_to_application"] is None


def test_checks_that_do_not_fit_the_tightest_value_limit_are_counted():
    checks = [f"app:check-number-{n:02d}" for n in range(12)]
    value = vf.format_record("passed", AT, 1.0, checks)
    assert len(value) <= vf.VALUE_MAX
    record = vf.parse_record(value)
    shown = [c for c in record["checks"] if not c.startswith("+")]
    assert shown == checks[:len(shown)] and record["checks"][-1] == f"+{len(checks) - len(shown)}"


@pytest.mark.parametrize("value", ["", "passed", "ok 2026-12-07T06:12:40Z 1.0s fs:ext4", "passed yesterday 1.0s x",
                                   "passed 2026-12-07T06:12:40Z soon fs:ext4"])
def test_what_is_not_a_record_is_none(value):
    assert vf.parse_record(value) is None


def test_only_a_passed_record_on_every_member_is_verified():
    passed = vf.format_record("passed", AT, 3.0, ["fs:xfs"])
    failed = vf.format_record("failed", AT + datetime.timedelta(days=1), None, ["fs:xfs"])
    assert vf.set_verification([{"tags": {}}]) is None
    assert vf.set_verification([{"tags": {vf.TAG_VERIFICATION: passed}}] * 2)["verified"] is True
    assert vf.set_verification([{"tags": {vf.TAG_VERIFICATION: failed}}] * 2)["verified"] is False
    partial = vf.set_verification([{"tags": {vf.TAG_VERIFICATION: passed}}, {"tags": {}}])
    assert partial["result"] == "partial" and partial["verified"] is False
    mixed = vf.set_verification([{"tags": {vf.TAG_VERIFICATION: passed}}, {"tags": {vf.TAG_VERIFICATION: failed}}])
    assert mixed["result"] == "partial" and mixed["verified_at"] == "2026-12-08T06:12:40Z"


def test_newest_verified_per_instance_skips_failed_partial_and_safety_sets():
    passed = vf.format_record("passed", AT, 3.0, ["fs:xfs"])
    failed = vf.format_record("failed", AT, None, ["fs:xfs"])
    sets = [_set("a-old", "i-a", "2026-12-01T00:00:00Z", [passed, passed]),
            _set("a-mid", "i-a", "2026-12-02T00:00:00Z", [passed, passed]),
            _set("a-failed", "i-a", "2026-12-03T00:00:00Z", [failed, failed]),
            _set("a-partial", "i-a", "2026-12-04T00:00:00Z", [passed, None]),
            _set("a-safety", "i-a", "2026-12-05T00:00:00Z", [passed], safety_for="a-mid"),
            _set("b-never", "i-b", "2026-12-05T00:00:00Z", [None])]
    assert vf.newest_verified(sets) == {"i-a": "a-mid"}
    assert [s["set_id"] for s in select_sets(sets, verified=True, newest_only=True)] == ["a-mid"]
    assert [s["set_id"] for s in select_sets(sets, verified=False)] == ["a-partial", "a-failed", "b-never"]


def test_an_incomplete_set_is_not_verified_whatever_its_members_carry():
    # A copy cut short (or a set that lost a member) keeps the record its members carried from a complete set.
    passed = vf.format_record("passed", AT, 3.0, ["fs:xfs"])
    whole = _set("a-whole", "i-a", "2026-12-01T00:00:00Z", [passed, passed])
    cut = _set("a-cut", "i-a", "2026-12-02T00:00:00Z", [passed])
    cut["complete"] = False
    cut["verification"] = vf.set_verification(cut["members"], "1 of 2 members")
    assert cut["verification"]["verified"] is False and cut["verification"]["result"] == "passed"
    assert "incomplete (1 of 2 members)" in cut["verification"]["note"]
    assert vf.newest_verified([whole, cut]) == {"i-a": "a-whole"}
    assert [s["set_id"] for s in select_sets([whole, cut], verified=True, newest_only=True)] == ["a-whole"]
