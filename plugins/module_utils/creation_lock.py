# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The ``lock`` option of the modules that make sets (app_consistent_group, vss_snapshot, snapshot_set_copy).

The options are checked before anything is frozen or changed (``check_lock``). Once the sets exist, every member
is locked as soon as its provider allows it: AWS locks a snapshot that is pending or completed (a lock for a
duration starts when it completes); Alibaba Cloud documents no lock of a snapshot still in progress, so its
members are locked once accomplished. The waiting is bounded by ``lock.wait_timeout`` and paced (one listing a
round, growing pauses). A set is reported locked only when every member is; a set that could not be locked is
named with the task that locks it, and its members' locks are in the result.
"""

from __future__ import annotations

import time

from ansible_collections.appconsistent.snapshots.plugins.module_utils import set_lock
from ansible_collections.appconsistent.snapshots.plugins.module_utils import snapshot_lock as sl
from ansible_collections.appconsistent.snapshots.plugins.module_utils import snapshot_set as ss
from ansible_collections.appconsistent.snapshots.plugins.module_utils.alicloud import AlibabaCloudError
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import AppConsistentAWSError
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import describe_snapshots as aws_describe_snapshots
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import error_code as aws_error_code
from ansible_collections.appconsistent.snapshots.plugins.module_utils.polling import poll_until

PREFIX = "lock."
# Snapshot states in which each provider documents LockSnapshot, and the states that never lead there.
LOCKABLE = dict(aws=("pending", "completed"), alicloud=("accomplished",))
FAILED = dict(aws=("error",), alicloud=("failed",))


def lock_argument_spec():
    """The ``lock`` option, the same in every module that makes sets (see the snapshot_lock doc fragment)."""
    return dict(lock=dict(type="dict", options=dict(
        mode=dict(type="str", choices=["governance", "compliance"]),
        duration_days=dict(type="int"),
        expires_at=dict(type="str"),
        cool_off_hours=dict(type="int"),
        acknowledge_no_cool_off=dict(type="bool", default=False),
        wait_timeout=dict(type="int", default=3600),
    )))


def check_lock(params, provider, now=None, needs_wait=True):
    """Refuse bad lock options in one sentence, before any freeze or change; the lock's until-instant or None.

    ``needs_wait``: the module returns without its sets under ``wait: false`` (app_consistent_group, vss_snapshot),
    so that it could not lock them.
    """
    options = params.get("lock")
    if not options:
        return None
    if needs_wait and params.get("wait") is False:
        raise ValueError("lock needs wait: true: with wait: false the task returns before its sets exist and could "
                         "not lock them; lock them afterwards with appconsistent.snapshots.snapshot_set_lock.")
    if options.get("wait_timeout") is not None and options["wait_timeout"] < 0:
        raise ValueError(f"{PREFIX}wait_timeout must be 0 or more seconds, got {options['wait_timeout']}.")
    return set_lock.check_lock_options(provider, options, now, asked="lock", prefix=PREFIX)


def planned_lock(options):
    """What check mode reports: the lock every member of each set would get."""
    return dict(locked=None, planned={k: options.get(k) for k in set_lock.LOCK_OPTIONS})


class CreationLock:
    """Lock every member of the sets a task made. ``api`` is the EC2 client or ECS access object of their Region."""

    def __init__(self, module, provider, api, until=None, sleep=time.sleep, clock=time.monotonic):
        self.module = module
        self.provider = provider
        self.api = api
        self.options = module.params["lock"]
        self.until = until
        self.sleep = sleep
        self.clock = clock
        self.applied = 0  # LockSnapshot calls that succeeded
        self.applied_sets = set()  # the sets with at least one of them

    def lock_sets(self, sets, existing=()):
        """Lock ``sets`` ({set_id: [member dicts with snapshot_id and state]}); {set_id: the set's lock entry}.

        ``existing`` names the sets (or members) made by an earlier run: their current locks are read first, so
        that a lock already as asked is left alone and a compliance lock past its cooling-off period is extended.
        """
        now = ss.utcnow()
        members = {m["snapshot_id"]: dict(state=m.get("state"), set_id=set_id, lock=None, error=None, done=False)
                   for set_id, items in sets.items() for m in items}
        self._read_existing(members, existing, now)
        for snapshot_id, member in members.items():
            if member["done"] or member["error"]:
                continue
            action, refusal = set_lock.decide(member["lock"], dict(self.options, state="locked"), self.until, now)
            if refusal:
                member["error"] = f"it is {refusal}"
            elif action == set_lock.UNCHANGED:
                member["done"] = True
            else:
                member["action"] = action
        poll_until(lambda: self._round(members), self.options["wait_timeout"], self.sleep, self.clock,
                   first_interval=2.0, max_interval=30.0)
        return {set_id: self._entry(set_id, items, members, now) for set_id, items in sets.items()}

    def _read_existing(self, members, existing, now):
        ids = [sid for sid, m in members.items() if m["set_id"] in existing or sid in existing]
        if not ids:
            return
        try:
            locks = sl.read_locks(self.module, self.provider, snapshot_ids=ids, api=self.api)
        except (AppConsistentAWSError, AlibabaCloudError) as exc:
            for snapshot_id in ids:
                members[snapshot_id]["error"] = f"its current lock cannot be read ({self.reason(exc)})"
            return
        for snapshot_id in ids:
            members[snapshot_id]["lock"] = locks.get(snapshot_id)

    def _round(self, members):
        """Lock the members the provider now allows; True when none is left to wait for."""
        waiting = [sid for sid, m in members.items() if not m["done"] and not m["error"]]
        if waiting and any(members[sid]["state"] not in LOCKABLE[self.provider] for sid in waiting):
            states = self._states([sid for sid in waiting if members[sid]["state"] not in LOCKABLE[self.provider]])
            for snapshot_id, state in states.items():
                members[snapshot_id]["state"] = state
        for snapshot_id in waiting:
            member = members[snapshot_id]
            if member["state"] in FAILED[self.provider]:
                member["error"] = f"the snapshot ended in state {member['state']}"
            elif member["state"] in LOCKABLE[self.provider]:
                try:
                    member["lock"] = set_lock.apply_lock(self.provider, self.api, snapshot_id,
                                                         member.get("action", set_lock.LOCK), self.options, self.until)
                    member["done"] = True
                    self.applied += 1
                    self.applied_sets.add(member["set_id"])
                except (AppConsistentAWSError, AlibabaCloudError) as exc:
                    member["error"] = f"LockSnapshot was refused ({self.reason(exc)})"
        return all(m["done"] or m["error"] for m in members.values())

    def _states(self, snapshot_ids):
        if self.provider == "aws":
            return {s["SnapshotId"]: s.get("State") for s in aws_describe_snapshots(self.api, snapshot_ids=snapshot_ids)}
        return {s["SnapshotId"]: s.get("Status") for s in self.api.describe_snapshots(snapshot_ids=snapshot_ids)}

    @staticmethod
    def reason(exc):
        code = aws_error_code(exc) if isinstance(exc, AppConsistentAWSError) else exc.code
        message = getattr(exc, "message", None) or str(exc)
        return f"{code}: {message}" if code and code not in message else message

    def _entry(self, set_id, items, members, now):
        member_locks = []
        problems = []
        for item in items:
            member = members[item["snapshot_id"]]
            member_locks.append(dict(snapshot_id=item["snapshot_id"], lock=member["lock"]))
            if not member["done"]:
                problems.append(f"{item['snapshot_id']}: {member['error'] or 'still ' + str(member['state']) + ' when lock.wait_timeout ended'}")
        entry = dict(sl.set_lock(member_locks, now), members=member_locks)
        if problems:
            entry["locked"] = False
            more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
            entry["error"] = not_locked(set_id, "; ".join(problems[:3]) + more)
        return entry


def not_locked(set_id, reason):
    """Why a set a task made is not locked, and how to lock it."""
    return (f"set {set_id} was made but is not locked ({reason}); lock it with appconsistent.snapshots.snapshot_set_lock, "
            f"set_ids: [{set_id}] and the same lock options")


def lock_kept_sets(module, provider, until, result):
    """Lock the sets a snapshot task keeps (``result["results"]``; not those of ``result["failed_instances"]``).

    Each kept set gets its lock entry in ``lock``; a set left unlocked fails its instance, with the reason.
    """
    failed = {f["instance_id"] for f in result["failed_instances"]}
    if module.check_mode:
        for entry in result["results"]:
            if entry["instance_id"] not in failed:
                entry["lock"] = planned_lock(module.params["lock"])
        return
    kept = [r for r in result["results"] if r["instance_id"] not in failed and r.get("set_id") and r.get("snapshots")]
    if not kept:
        return
    api = module.aws_client("ec2") if provider == "aws" else module.alicloud
    run = CreationLock(module, provider, api, until)
    try:
        locks = run.lock_sets({r["set_id"]: r["snapshots"] for r in kept},
                              existing={r["set_id"] for r in kept if r.get("status") == "Existing"})
    except (AppConsistentAWSError, AlibabaCloudError) as exc:
        locks = {r["set_id"]: dict(locked=False, error=not_locked(r["set_id"], CreationLock.reason(exc))) for r in kept}
    result["changed"] = result["changed"] or run.applied > 0
    for entry in kept:
        entry["lock"] = locks[entry["set_id"]]
        if entry["lock"].get("error"):
            result["failed_instances"].append(dict(instance_id=entry["instance_id"], consistency=entry["consistency"],
                                                   reason=entry["lock"]["error"]))


def lock_copies(module, until, results, destination_api):
    """Lock the members of copied sets (each a ``result`` of snapshot_set_copy) in their destination Region.

    One run serves every set, so a task that copied many sets waits and reads once for all of them. The copies of
    a rerun that were made earlier (not in ``started_snapshot_ids``) have their locks read first. Each result gets
    its ``lock``; returns {set_id: why it is not locked} for the sets left unlocked.
    """
    if module.check_mode:
        for result in results:
            result["lock"] = planned_lock(module.params["lock"])
        return {}
    copied = {r["set_id"]: (r, [m for m in r["members"] if m.get("snapshot_id")]) for r in results if r.get("set_id")}
    copied = {set_id: item for set_id, item in copied.items() if item[1]}
    if not copied:
        return {}
    run = CreationLock(module, module.params["provider"], destination_api, until)
    earlier = {m["snapshot_id"] for r, members in copied.values() for m in members
               if m["snapshot_id"] not in set(r.get("started_snapshot_ids") or ())}
    try:
        locks = run.lock_sets({set_id: members for set_id, (_r, members) in copied.items()}, existing=earlier)
    except (AppConsistentAWSError, AlibabaCloudError) as exc:
        locks = {set_id: dict(locked=False, error=not_locked(set_id, CreationLock.reason(exc))) for set_id in copied}
    for set_id, (result, _members) in copied.items():
        result["changed"] = result.get("changed") or set_id in run.applied_sets
        result["lock"] = locks[set_id]
    return {set_id: lock["error"] for set_id, lock in locks.items() if lock.get("error")}
