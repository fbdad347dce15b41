# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The restore test recorded on a set: its tag, how it is written and read, and what "verified" means.

The last restore test of a set is one tag on every member, ``appconsistent:verification``, whose value is
``<result> <verified at> <seconds to a working application>s <check>,<check>...``, for example
``passed 2026-12-07T06:12:40Z 41.5s fs:ext4,app:mysql`` (``-`` for the seconds when the application never came
up). One tag, not four: an Alibaba Cloud snapshot carries at most 20 tags, a set already uses eight of them and
the provider's evidence one or two, and one value written in one call can never mix the result of one test with
the time of another. A set is *verified* when every member carries the same record and its result is passed:
a newer failed test takes that back, and so does a record that reached only some members.
"""

from __future__ import annotations

import re

from ansible_collections.appconsistent.snapshots.plugins.module_utils import snapshot_set as ss

TAG_VERIFICATION = ss.TAG_VERIFICATION
PASSED, FAILED = "passed", "failed"
RESULTS = (PASSED, FAILED)
# A record that reached only some members (a run cut short): it proves nothing.
PARTIAL = "partial"
# The tightest of the providers' limits: Alibaba Cloud tag values are at most 128 characters (AWS 256), a
# snapshot carries at most 20 tags on Alibaba Cloud and 50 on AWS.
VALUE_MAX = 128
TAGS_PER_SNAPSHOT = {"aws": 50, "alicloud": 20}
_CHECK = re.compile(r"[A-Za-z0-9_.:/=+@-]{1,40}")
_SECONDS_MAX = 10 ** 7


def check_name_error(name):
    """One sentence when a check name cannot go in the record, else None."""
    if not _CHECK.fullmatch(str(name)):
        return (f"check {name!r} cannot be recorded: use 1-40 letters, digits and . _ : / = + @ - "
                "(for example fs:ext4 or app:mysql)")
    return None


def format_record(result, verified_at, seconds, checks):
    """The tag value; checks that would not fit in VALUE_MAX are counted, not dropped silently (+N)."""
    head = f"{result} {ss.format_instant(verified_at)} {'-' if seconds is None else f'{seconds:.1f}s'}"
    names, kept = list(dict.fromkeys(checks)), []
    for index, name in enumerate(names):
        rest = len(names) - index - 1
        candidate = ",".join(kept + [name]) + (f",+{rest}" if rest else "")
        if len(head) + 1 + len(candidate) > VALUE_MAX:
            kept.append(f"+{len(names) - index}")
            break
        kept.append(name)
    return f"{head} {','.join(kept)}" if kept else head


def parse_record(value):
    """{result, verified_at, seconds_to_application, checks} from a tag value; None when it is not a record."""
    parts = str(value or "").split(" ")
    if len(parts) not in (3, 4) or parts[0] not in RESULTS:
        return None
    moment = ss.parse_instant(parts[1])
    seconds = None
    if parts[2] != "-":
        try:
            seconds = float(parts[2].rstrip("s"))
        except ValueError:
            return None
    if moment is None:
        return None
    checks = [c for c in parts[3].split(",") if c] if len(parts) == 4 else []
    return dict(result=parts[0], verified_at=ss.format_instant(moment), seconds_to_application=seconds, checks=checks)


def set_verification(members, incomplete_reason=None):
    """The set's last restore test from its members' tags: None when none was recorded.

    When the members disagree (a record written on some members only), the result is ``partial`` and the newest
    record found is given: such a set is not verified. Neither is an incomplete set (``incomplete_reason``): its
    members may carry a record from the set they were copied from, or from before one of them was lost, and a
    restore of what is there is not the restore that was tested.
    """
    found = _members_verification(members)
    if found and found["verified"] and incomplete_reason:
        note = f"the set is incomplete ({incomplete_reason}): the record is not a test of what is there"
        return dict(found, verified=False, note=note)
    return found


def _members_verification(members):
    values = [(m.get("tags") or {}).get(TAG_VERIFICATION) for m in members]
    records = [parse_record(v) for v in values if v]
    records = [r for r in records if r]
    if not records:
        return None
    newest = max(records, key=lambda r: r["verified_at"])
    if len(records) == len(values) and len(set(values)) == 1:
        return dict(newest, verified=newest["result"] == PASSED)
    return dict(newest, result=PARTIAL, verified=False,
                note=f"{len(records)} of {len(values)} members carry a record, and they differ")


def is_verified(item):
    return bool((item.get("verification") or {}).get("verified"))


def newest_verified(sets):
    """{instance_id: set_id} of each instance's newest verified set (see is_verified); safety sets aside."""
    best = {}
    for item in sets:
        if not is_verified(item) or item.get("safety_for") or not item.get("instance_id"):
            continue
        moment = ss.instant(item.get("created"))
        current = best.get(item["instance_id"])
        if current is None or (moment and (current[0] is None or moment > current[0])):
            best[item["instance_id"]] = (moment, item["set_id"])
    return {instance: set_id for instance, (_moment, set_id) in best.items()}


def check_options(params):
    """Refuse, in one sentence, what cannot be recorded; (verified_at, seconds, checks). Nothing is called before this."""
    if not params.get("set_id"):
        raise ValueError("Name the set whose restore test is recorded with set_id.")
    checks = params.get("checks") or []
    for name in checks:
        error = check_name_error(name)
        if error:
            raise ValueError(error + ".")
    if params["result"] == PASSED and not checks:
        raise ValueError("A passed restore test names the checks it ran (checks: [fs:ext4, app:mysql]): a set is not "
                         "verified by a test that checked nothing.")
    seconds = params.get("seconds_to_application")
    if seconds is not None and not 0 <= seconds < _SECONDS_MAX:
        raise ValueError(f"seconds_to_application must be 0 or more, got {seconds}.")
    if params["result"] == FAILED:
        seconds = None  # the application never came up
    elif seconds is None:
        raise ValueError("A passed restore test gives seconds_to_application: the time from the start of the restore "
                         "to a working application.")
    verified_at = ss.utcnow()
    if params.get("verified_at"):
        verified_at = ss.parse_instant(params["verified_at"])
        if verified_at is None:
            raise ValueError(f"verified_at must be an ISO 8601 UTC instant such as 2026-12-07T06:12:40Z, got "
                             f"{params['verified_at']!r}.")
        if verified_at > ss.utcnow():
            raise ValueError(f"verified_at {params['verified_at']} is in the future: a restore test is recorded after it ran.")
    return verified_at, seconds, checks
