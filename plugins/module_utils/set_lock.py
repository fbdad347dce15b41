# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

"""One snapshot_set_lock run: select sets as snapshot_set_info does, decide per member, then lock, extend or unlock.

Every member of every selected set is decided before anything is called: a change the provider's rules
forbid (shortening or unlocking a compliance lock whose cooling-off period is over, governance mode on
Alibaba Cloud) fails the task with nothing changed. A member already locked as asked is left alone.
"""

from __future__ import annotations

import datetime

from ansible_collections.appconsistent.snapshots.plugins.module_utils import snapshot_lock as sl
from ansible_collections.appconsistent.snapshots.plugins.module_utils import snapshot_set as ss
from ansible_collections.appconsistent.snapshots.plugins.module_utils.alicloud import AlibabaCloudError
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import AppConsistentAWSError
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import lock_snapshot as aws_lock_snapshot
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import unlock_snapshot as aws_unlock_snapshot
from ansible_collections.appconsistent.snapshots.plugins.module_utils.set_inventory import find_sets
from ansible_collections.appconsistent.snapshots.plugins.module_utils.set_inventory import select_sets

DURATION_DAYS_MAX = 36500  # both providers
COOL_OFF_HOURS_MAX = 72  # both providers (AWS from 1, Alibaba Cloud from 0; 0 here means none)
ACK_OPTION = "acknowledge_no_cool_off"
LOCK_OPTIONS = ("mode", "duration_days", "expires_at", "cool_off_hours")

# What a run does to a member (and, the strongest of its members', to a set).
UNCHANGED, LOCK, EXTEND, UNLOCK = "unchanged", "locked", "extended", "unlocked"


def check_options(params, now=None):
    """Refuse, in one sentence each, what no provider accepts or what the operator did not clearly ask for."""
    provider = params["provider"]
    if not (params.get("set_ids") or params.get("instance_ids") or params.get("run_id")):
        raise ValueError("Name the sets to lock or unlock with set_ids, instance_ids and/or run_id: a lock cannot be "
                         "undone once its cooling-off period is over, so every set of the Region is never implied.")
    ss.validate_run_id(params.get("run_id"))
    if params["state"] == "unlocked":
        given = [name for name in LOCK_OPTIONS + (ACK_OPTION,) if params.get(name) not in (None, False)]
        if given:
            raise ValueError(f"{', '.join(given)} only apply to state=locked; state=unlocked removes the locks.")
        return None
    return check_lock_options(provider, params, now)


def check_lock_options(provider, options, now=None, asked="state=locked", prefix=""):
    """The lock options' own rules (a lock asked by snapshot_set_lock, or at creation); the until-instant or None.

    ``asked`` names what asked for a lock and ``prefix`` the options' parent (``lock.`` at creation), for the messages.
    """
    mode, days, expires_at, cool_off = (options.get(k) for k in LOCK_OPTIONS)
    if mode is None:
        raise ValueError(f"{asked} needs {prefix}mode: governance (AWS only) or compliance.")
    if provider == "alicloud" and mode != sl.COMPLIANCE:
        raise ValueError(f"Alibaba Cloud locks snapshots in compliance mode only: set {prefix}mode: compliance.")
    if (days is None) == (expires_at is None):
        raise ValueError(f"{asked} needs exactly one of {prefix}duration_days (1 to 36500) and {prefix}expires_at "
                         "(a UTC instant).")
    until = None
    if days is not None and not 1 <= days <= DURATION_DAYS_MAX:
        raise ValueError(f"{prefix}duration_days must be between 1 and {DURATION_DAYS_MAX}, got {days}.")
    if expires_at is not None:
        if provider == "alicloud":
            raise ValueError(f"Alibaba Cloud locks for a number of days: use {prefix}duration_days instead of "
                             f"{prefix}expires_at.")
        until = ss.parse_instant(expires_at)
        if until is None:
            raise ValueError(f"{prefix}expires_at must be an ISO 8601 UTC instant such as 2027-01-31T00:00:00Z, "
                             f"got {expires_at!r}.")
        moment = now or ss.utcnow()
        if not moment < until <= moment + datetime.timedelta(days=DURATION_DAYS_MAX):
            raise ValueError(f"{prefix}expires_at must be in the future and at most {DURATION_DAYS_MAX} days away, "
                             f"got {expires_at}.")
    if cool_off is not None and not 0 <= cool_off <= COOL_OFF_HOURS_MAX:
        raise ValueError(f"{prefix}cool_off_hours must be between 0 and {COOL_OFF_HOURS_MAX}, got {cool_off}.")
    if cool_off and mode != sl.COMPLIANCE:
        raise ValueError(f"{prefix}cool_off_hours applies to compliance mode only; a governance lock holds at once and "
                         "can be removed by anyone allowed to.")
    if mode == sl.COMPLIANCE and not cool_off and not options.get(ACK_OPTION):
        raise ValueError("A compliance lock without a cooling-off period cannot be shortened or removed by anyone, "
                         f"the account's root user included, until it expires: set {prefix}cool_off_hours, or "
                         f"{prefix}{ACK_OPTION}: true to confirm.")
    return until


def decide(lock, params, until, now):
    """(action, refusal) for one member's current lock; refusal is a sentence when the provider forbids the change."""
    held = sl.is_locked(lock, now)
    if params["state"] == "unlocked":
        if not held:
            return UNCHANGED, None
        if lock["state"] == sl.COMPLIANCE:
            return None, f"locked in compliance mode until {lock.get('until')} and its cooling-off period is over"
        return UNLOCK, None
    mode, days = params["mode"], params.get("duration_days")
    if not held:
        return LOCK, None
    same_span = (days is not None and lock.get("duration_days") == days) or (
        until is not None and lock.get("until") and abs((ss.instant(lock["until"]) - until).total_seconds()) < 1)
    if lock["mode"] == mode and same_span:
        return UNCHANGED, None
    if lock["state"] != sl.COMPLIANCE:
        return LOCK, None  # governance, or compliance within its cooling-off period: any change is allowed
    if mode != sl.COMPLIANCE:
        return None, f"locked in compliance mode until {lock.get('until')}: its mode can no longer be changed"
    current = ss.instant(lock.get("until"))
    wanted = until
    if days is not None:
        start = current - datetime.timedelta(days=lock["duration_days"]) if lock.get("duration_days") else now
        wanted = start + datetime.timedelta(days=days)
    if current is not None and wanted < current:
        return None, (f"locked in compliance mode until {lock.get('until')} and its cooling-off period is over: "
                      "the lock can only be extended")
    return EXTEND, None


class SetLock:
    """One snapshot_set_lock run."""

    def __init__(self, module, now=None):
        self.module = module
        self.params = module.params
        self.provider = self.params["provider"]
        self.now = now or ss.utcnow()

    def run(self):
        params = self.params
        until = check_options(params, self.now)
        sets = find_sets(self.module, self.provider, instance_ids=params.get("instance_ids") or None,
                         run_id=params.get("run_id"), set_ids=params.get("set_ids") or None, now=self.now)
        sets = select_sets(sets, min_consistency=params.get("min_consistency"), newest_only=params["newest_only"])
        plan, refusals = [], []
        for item in sets:
            if item["lock"]["locked"] is None:
                raise ValueError(f"The locks of set {item['set_id']} cannot be read: allow DescribeLockedSnapshots "
                                 "(see docs/policies) before locking or unlocking sets.")
            for member in item["members"]:
                action, refusal = decide(member.get("lock"), params, until, self.now)
                if refusal:
                    refusals.append(f"{member['snapshot_id']} of set {item['set_id']} is {refusal}")
                plan.append((item, member, action))
        if refusals:
            more = f" (and {len(refusals) - 3} more)" if len(refusals) > 3 else ""
            raise ValueError(f"Nothing was changed: {'; '.join(refusals[:3])}{more}.")
        before = {item["set_id"]: dict(item["lock"]) for item in sets}
        errors = []
        for item, member, action in plan:
            member["action"] = action
            if action == UNCHANGED:
                continue
            if self.module.check_mode:
                member["lock"] = self._predict(member.get("lock"), action, until)
                continue
            try:
                member["lock"] = self._apply(member["snapshot_id"], action, until)
            except (AppConsistentAWSError, AlibabaCloudError) as exc:
                member["action"] = "failed"
                errors.append(f"{member['snapshot_id']} of set {item['set_id']}: {getattr(exc, 'message', None) or exc}")
        result_sets = []
        for item in sets:
            actions = {m["action"] for m in item["members"]}
            item["lock"] = sl.set_lock(item["members"], self.now)
            result_sets.append(dict(
                set_id=item["set_id"], instance_id=item["instance_id"], run_id=item["run_id"], created=item["created"],
                consistency=item["consistency"],
                action=next((a for a in ("failed", UNLOCK, LOCK, EXTEND) if a in actions), UNCHANGED),
                lock=item["lock"],
                members=[dict(snapshot_id=m["snapshot_id"], action=m["action"], lock=m.get("lock")) for m in item["members"]]))
        changed = any(s["action"] != UNCHANGED for s in result_sets)
        after = {s["set_id"]: s["lock"] for s in result_sets}
        return dict(changed=changed, sets=result_sets, errors=errors, diff=dict(before=before, after=after))

    def _predict(self, lock, action, until):
        """The member's lock after ``action``, for check mode: what the provider would answer."""
        if action == UNLOCK:
            return None
        params = self.params
        days = params.get("duration_days")
        if action == EXTEND:
            current = ss.instant(lock["until"])
            start = current - datetime.timedelta(days=lock["duration_days"]) if lock.get("duration_days") else self.now
            end = until or start + datetime.timedelta(days=days)
            return dict(lock, until=ss.format_instant(end), duration_days=days)
        cool_off = params.get("cool_off_hours") or None
        state = sl.COOLOFF if params["mode"] == sl.COMPLIANCE and cool_off else params["mode"]
        end = until or self.now + datetime.timedelta(days=days)
        return dict(state=state, mode=params["mode"], until=ss.format_instant(end), duration_days=days,
                    cool_off_hours=cool_off, cool_off_until=ss.format_instant(self.now + datetime.timedelta(hours=cool_off))
                    if cool_off else None)

    def _apply(self, snapshot_id, action, until):
        api = self.module.aws_client("ec2") if self.provider == "aws" else self.module.alicloud
        return apply_lock(self.provider, api, snapshot_id, action, self.params, until)


def apply_lock(provider, api, snapshot_id, action, options, until):
    """Lock, extend or unlock one snapshot; its lock afterwards (None once unlocked).

    ``api`` is the EC2 client (AWS) or the ECS access object (Alibaba Cloud) of the snapshot's Region.
    """
    extend = action == EXTEND
    cool_off = None if extend else options.get("cool_off_hours")
    if provider == "aws":
        if action == UNLOCK:
            aws_unlock_snapshot(api, snapshot_id)
            return None
        answer = aws_lock_snapshot(api, snapshot_id, options["mode"], duration_days=options.get("duration_days"),
                                   expiration_date=until, cool_off_hours=cool_off)
        return sl.aws_lock(answer)
    if action == UNLOCK:
        api.unlock_snapshot(snapshot_id)
        return None
    answer = api.lock_snapshot(snapshot_id, options["duration_days"], cool_off_hours=cool_off or 0)
    return sl.alicloud_lock(answer.get("LockedSnapshotInfo") or {})
