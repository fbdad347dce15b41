# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The retention schedule of snapshot_set_prune: daily, weekly, monthly and yearly generations per instance.

The model is restic's ``forget``: a set is kept when any rule keeps it. Each generation keeps the newest set
of each of its N most recent UTC calendar periods that hold a counted set (a day, an ISO 8601 week, a month, a
year); a period without a set is skipped, not spent. Only complete sets of at least the chosen consistency are
counted, so a crash-consistent set never takes the place of an application-consistent one.
"""

from __future__ import annotations

import datetime

from ansible_collections.appconsistent.snapshots.plugins.module_utils import snapshot_set as ss
from ansible_collections.appconsistent.snapshots.plugins.module_utils import verification as vf

# Option name -> generation name, shortest period first.
GENERATIONS = (("keep_daily", "daily"), ("keep_weekly", "weekly"), ("keep_monthly", "monthly"),
               ("keep_yearly", "yearly"))
# A set the schedule counts when no consistency is chosen: only those restore into a working application.
DEFAULT_MIN_CONSISTENCY = "application"
# Member states that mean a set is still being taken (AWS pending, Alibaba progressing).
IN_PROGRESS_STATES = ("pending", "progressing")


def period(generation, moment):
    """The UTC calendar period of ``moment`` for a generation, as it is written in a reason.

    Weeks are ISO 8601 weeks (Monday to Sunday, week 1 holds the year's first Thursday), named by their ISO year:
    2026-12-31 is in 2026-W53 and 2027-01-01 too, 2027-01-04 is in 2027-W01.
    """
    moment = moment.astimezone(datetime.timezone.utc)
    if generation == "daily":
        return moment.strftime("%Y-%m-%d")
    if generation == "weekly":
        year, week, _day = moment.isocalendar()
        return f"{year}-W{week:02d}"
    if generation == "monthly":
        return moment.strftime("%Y-%m")
    if generation == "yearly":
        return moment.strftime("%Y")
    raise ValueError(f"unknown generation {generation!r}")


def schedule_of(params):
    """{generation: count} of the generations that are set, in GENERATIONS order; {} when no schedule is asked."""
    return {name: params[option] for option, name in GENERATIONS if params.get(option) is not None}


def check_schedule(params):
    """One sentence that says what is wrong with the schedule options, or None. Nothing is called before this."""
    for option, _name in GENERATIONS:
        if params.get(option) is not None and params[option] < 0:
            return f"{option} must be 0 or more, got {params[option]}."
    schedule = schedule_of(params)
    if not schedule:
        if params.get("min_consistency") is not None:
            return ("min_consistency chooses the sets a retention schedule counts: give keep_daily, keep_weekly, "
                    "keep_monthly or keep_yearly too, or leave it out.")
        return None
    if not any(schedule.values()):
        return (f"The retention schedule keeps nothing ({', '.join(f'{o}: 0' for o, n in GENERATIONS if n in schedule)}): "
                "give at least one generation a count above 0, or use keep: 0 to delete every set but the protected ones.")
    if not params.get("expired", True):
        return ("expired: false has no meaning with a retention schedule: with keep_daily, keep_weekly, keep_monthly "
                "or keep_yearly a set goes when no rule keeps it, and a set whose delete-after has not passed is kept.")
    return None


def counted(item, min_consistency):
    """Whether the schedule counts a set: complete, of at least ``min_consistency``, not a restore's safety set."""
    return (item.get("complete", True) and ss.at_least(item.get("consistency"), min_consistency)
            and not item.get("safety_for") and ss.instant(item.get("created")) is not None)


def in_progress(item):
    """Whether a set is still being taken (a member not yet completed, none failed or missing)."""
    states = [str(m.get("state") or "").lower() for m in item.get("members") or []]
    return bool(states) and any(s in IN_PROGRESS_STATES for s in states) and \
        all(s in IN_PROGRESS_STATES + ss.SnapshotSet.COMPLETE_STATES for s in states)


def schedule_reasons(sets, schedule, min_consistency=DEFAULT_MIN_CONSISTENCY):
    """{set_id: ["daily 2026-12-06", "weekly 2026-W49", ...]} of the sets the schedule keeps, per instance.

    For each instance, its counted sets are walked newest first; a generation keeps a set when the set's period
    differs from that of the last set it kept, until it has kept its count. Sets of one period after the first
    (older ones the same day, say) are not kept by that generation.
    """
    reasons = {}
    by_instance = {}
    for item in sets:
        if counted(item, min_consistency):
            by_instance.setdefault(item.get("instance_id") or "", []).append(item)
    for items in by_instance.values():
        items.sort(key=lambda s: (ss.instant(s["created"]), s["set_id"]), reverse=True)
        for name, count in schedule.items():
            last, left = None, count
            for item in items:
                if left <= 0:
                    break
                label = period(name, ss.instant(item["created"]))
                if label != last:
                    reasons.setdefault(item["set_id"], []).append(f"{name} {label}")
                    last, left = label, left - 1
    return reasons


def newest_verified_sets(sets):
    """{instance_id: set_id} of each instance's newest set whose last restore test passed on every member.

    plan_prune keeps what it returns as it keeps the newest application-consistent set; the record is read in
    verification.py.
    """
    return vf.newest_verified(sets)
