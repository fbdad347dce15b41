"""The retention schedule: UTC calendar periods, which set of a period is kept, and how the rules combine in prune."""

import datetime

import pytest

from ansible_collections.appconsistent.snapshots.plugins.module_utils import retention
from ansible_collections.appconsistent.snapshots.plugins.module_utils import set_inventory as inv
from ansible_collections.appconsistent.snapshots.plugins.module_utils import snapshot_set as ss
from ansible_collections.appconsistent.snapshots.plugins.module_utils import verification as vf

UTC = datetime.timezone.utc
NOW = datetime.datetime(2027, 3, 1, 12, 0, 0, tzinfo=UTC)


def at(text):
    return datetime.datetime.fromisoformat(text).replace(tzinfo=UTC)


def _set(set_id, created, instance_id="i-1", consistency="application", delete_after=None, state="completed",
         verification=None):
    tags = ss.set_tags(set_id, instance_id, consistency, delete_after=delete_after)
    if verification:
        tags[vf.TAG_VERIFICATION] = verification
    member = dict(snapshot_id="snap-" + set_id, volume_id="vol-1", device="/dev/xvda", size_gib=8, state=state,
                  start_time=created, full_snapshot_size_bytes=None, tags=tags)
    return inv.build_set("aws", set_id, [member], now=NOW)


def kept_by(sets, schedule, min_consistency="application"):
    return retention.schedule_reasons(sets, schedule, min_consistency)


@pytest.mark.parametrize("moment, daily, weekly, monthly, yearly", [
    # 2026 starts on a Thursday, so it has an ISO week 53, which runs into 2027.
    ("2026-12-31T23:59:59", "2026-12-31", "2026-W53", "2026-12", "2026"),
    ("2027-01-01T00:00:00", "2027-01-01", "2026-W53", "2027-01", "2027"),
    ("2027-01-03T23:59:59", "2027-01-03", "2026-W53", "2027-01", "2027"),
    ("2027-01-04T00:00:00", "2027-01-04", "2027-W01", "2027-01", "2027"),
    # The other way round: 2024-12-30 (a Monday) is already in 2025's first week.
    ("2024-12-30T08:00:00", "2024-12-30", "2025-W01", "2024-12", "2024"),
    ("2024-02-29T12:00:00", "2024-02-29", "2024-W09", "2024-02", "2024"),
])
def test_periods_are_utc_calendar_periods_with_iso_weeks(moment, daily, weekly, monthly, yearly):
    when = at(moment)
    assert [retention.period(g, when) for g in ("daily", "weekly", "monthly", "yearly")] == [daily, weekly, monthly, yearly]


def test_a_period_is_the_utc_one_whatever_the_offset_of_the_instant():
    tokyo = datetime.timezone(datetime.timedelta(hours=9))
    # 08:00 on 1 January in Tokyo is still 31 December in UTC.
    assert retention.period("yearly", datetime.datetime(2027, 1, 1, 8, 0, tzinfo=tokyo)) == "2026"


def test_several_sets_in_one_day_only_the_newest_is_the_day_s():
    sets = [_set("morning", "2026-12-06T06:00:00"), _set("noon", "2026-12-06T12:00:00"),
            _set("evening", "2026-12-06T18:00:00"), _set("yesterday", "2026-12-05T18:00:00")]
    assert kept_by(sets, {"daily": 2}) == {"evening": ["daily 2026-12-06"], "yesterday": ["daily 2026-12-05"]}


def test_days_without_a_set_are_skipped_not_spent():
    sets = [_set("d1", "2026-12-01T06:00:00"), _set("d3", "2026-12-03T06:00:00"), _set("d7", "2026-12-07T06:00:00")]
    assert sorted(kept_by(sets, {"daily": 3})) == ["d1", "d3", "d7"]


def test_sets_below_the_chosen_consistency_are_not_counted():
    sets = [_set("app", "2026-12-06T06:00:00"), _set("crash-later", "2026-12-06T18:00:00", consistency="crash"),
            _set("fs", "2026-12-05T06:00:00", consistency="filesystem"),
            _set("offline", "2026-12-04T06:00:00", consistency="offline")]
    assert kept_by(sets, {"daily": 3}) == {"app": ["daily 2026-12-06"], "offline": ["daily 2026-12-04"]}
    assert kept_by(sets, {"daily": 3}, "crash") == {"crash-later": ["daily 2026-12-06"], "fs": ["daily 2026-12-05"],
                                                    "offline": ["daily 2026-12-04"]}


def test_incomplete_and_safety_sets_are_not_counted():
    missing = _set("missing", "2026-12-06T18:00:00")
    missing["complete"] = False
    safety = _set("safety", "2026-12-06T12:00:00", consistency="offline")
    safety["safety_for"] = "acs-other"
    sets = [missing, safety, _set("good", "2026-12-06T06:00:00")]
    assert kept_by(sets, {"daily": 1}) == {"good": ["daily 2026-12-06"]}


def test_year_boundary_and_week_53():
    sets = [_set("dec31", "2026-12-31T06:00:00"), _set("jan1", "2027-01-01T06:00:00"), _set("jan4", "2027-01-04T06:00:00")]
    assert kept_by(sets, {"weekly": 3}) == {"jan4": ["weekly 2027-W01"], "jan1": ["weekly 2026-W53"]}
    assert kept_by(sets, {"yearly": 3}) == {"jan4": ["yearly 2027"], "dec31": ["yearly 2026"]}
    assert kept_by(sets, {"monthly": 1, "yearly": 2}) == {"jan4": ["monthly 2027-01", "yearly 2027"],
                                                          "dec31": ["yearly 2026"]}


def test_leap_day_is_its_month_s_last_day():
    sets = [_set("feb28", "2024-02-28T06:00:00"), _set("feb29", "2024-02-29T06:00:00"),
            _set("mar1", "2024-03-01T06:00:00")]
    assert kept_by(sets, {"monthly": 2}) == {"mar1": ["monthly 2024-03"], "feb29": ["monthly 2024-02"]}


def test_generations_count_per_instance():
    sets = [_set("a", "2026-12-06T06:00:00"), _set("a-old", "2026-12-05T06:00:00"),
            _set("b", "2026-12-01T06:00:00", instance_id="i-2")]
    assert kept_by(sets, {"daily": 1}) == {"a": ["daily 2026-12-06"], "b": ["daily 2026-12-01"]}


def _plan(sets, **kwargs):
    delete, kept = inv.plan_prune(sets, NOW, **kwargs)
    return ({item["set_id"]: reasons for item, reasons in delete},
            {item["set_id"]: (code, reasons) for item, code, _reason, reasons in kept})


def test_a_set_is_kept_when_any_rule_keeps_it_and_goes_when_none_does():
    sets = [_set("new", "2027-02-28T06:00:00", delete_after="2027-02-01T00:00:00Z"),  # expired, but the day's set
            _set("same-day", "2027-02-28T01:00:00"),  # no tag, outside the schedule
            _set("promised", "2027-02-20T06:00:00", delete_after="2027-06-01T00:00:00Z"),  # delete-after not passed
            _set("old", "2027-01-10T06:00:00", consistency="crash", delete_after="2027-02-01T00:00:00Z")]
    delete, kept = _plan(sets, schedule={"daily": 1})
    assert sorted(delete) == ["old", "same-day"]
    assert delete["old"] == ["kept by no rule of the schedule (daily 1)", "expired at 2027-02-01T00:00:00Z"]
    assert kept["new"][0] == "schedule" and kept["new"][1][0] == "daily 2027-02-28"
    assert "newest application-consistent" in kept["new"][1][1]
    assert kept["promised"] == ("not_expired", ["delete-after 2027-06-01T00:00:00Z not reached"])


def test_keep_is_keep_last_of_any_consistency_beside_the_schedule():
    sets = [_set("crash", "2027-02-28T06:00:00", consistency="crash"), _set("app", "2027-02-27T06:00:00"),
            _set("app-old", "2027-02-20T06:00:00")]
    delete, kept = _plan(sets, keep=1, schedule={"daily": 1})
    assert list(delete) == ["app-old"]
    assert kept["crash"] == ("within_keep", ["one of the 1 newest sets of i-1"])
    assert kept["app"][0] == "schedule"


def test_the_newest_application_set_is_kept_when_the_schedule_counts_only_offline_sets():
    sets = [_set("app", "2027-02-28T06:00:00"), _set("offline", "2027-02-01T06:00:00", consistency="offline")]
    delete, kept = _plan(sets, schedule={"daily": 1}, min_consistency="offline")
    assert delete == {}
    assert kept["app"][0] == "newest_application" and kept["offline"] == ("schedule", ["daily 2027-02-01"])
    delete, _kept = _plan(sets, schedule={"daily": 1}, min_consistency="offline", protect_newest_application=False)
    assert list(delete) == ["app"]


def test_a_set_still_being_taken_is_kept_under_a_schedule():
    sets = [_set("taking", "2027-02-28T06:00:00", consistency="crash", state="pending"),
            _set("done", "2027-02-27T06:00:00")]
    delete, kept = _plan(sets, schedule={"daily": 1})
    assert delete == {} and kept["taking"] == ("in_progress", ["still being taken"])


def test_the_newest_verified_set_is_protected_unless_its_last_test_failed():
    sets = [_set("verified", "2027-01-10T06:00:00", consistency="filesystem"), _set("app", "2027-02-28T06:00:00")]
    assert _plan(sets, schedule={"daily": 1})[0] == {"verified": ["kept by no rule of the schedule (daily 1)"]}
    passed = vf.format_record("passed", datetime.datetime(2027, 1, 11, tzinfo=datetime.timezone.utc), 20.0, ["fs:ext4"])
    sets[0] = _set("verified", "2027-01-10T06:00:00", consistency="filesystem", verification=passed)
    delete, kept = _plan(sets, schedule={"daily": 1})
    assert delete == {} and kept["verified"] == ("newest_verified", [
        "the newest verified set of i-1, its restore test passed at 2027-01-11T00:00:00Z (protect_newest_verified)"])
    assert _plan(sets, schedule={"daily": 1}, protect_newest_verified=False)[0] == {
        "verified": ["kept by no rule of the schedule (daily 1)"]}
    failed = vf.format_record("failed", datetime.datetime(2027, 1, 12, tzinfo=datetime.timezone.utc), None, ["fs:ext4"])
    sets[0] = _set("verified", "2027-01-10T06:00:00", consistency="filesystem", verification=failed)
    assert "verified" in _plan(sets, schedule={"daily": 1})[0]


@pytest.mark.parametrize("params, words", [
    (dict(keep_daily=-1), "keep_daily must be 0 or more, got -1."),
    (dict(keep_weekly=0, keep_monthly=0), "The retention schedule keeps nothing (keep_weekly: 0, keep_monthly: 0)"),
    (dict(min_consistency="application"), "min_consistency chooses the sets a retention schedule counts"),
    (dict(keep_daily=7, expired=False), "expired: false has no meaning with a retention schedule"),
])
def test_meaningless_schedules_are_refused_in_one_sentence(params, words):
    message = retention.check_schedule(dict(dict(expired=True), **params))
    assert message.startswith(words) and message.count(". ") == 0 and message.endswith(".")


def test_a_sound_schedule_or_none_passes():
    assert retention.check_schedule(dict(expired=True, keep_daily=7, keep_weekly=0)) is None
    assert retention.check_schedule(dict(expired=True)) is None
    assert retention.schedule_of(dict(keep_daily=7, keep_yearly=3, keep_weekly=None)) == {"daily": 7, "yearly": 3}
