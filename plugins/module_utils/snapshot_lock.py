# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Snapshot locks as the collection sees them: each provider's lock read into one form, per member and per set.

AWS (EBS snapshot lock) has governance and compliance mode; Alibaba Cloud has compliance mode only. Both
name the phases alike: ``governance``, ``compliance-cooloff`` (compliance, still within its cooling-off
period), ``compliance`` (cooling-off over: only a longer lock is possible) and ``expired``. A snapshot
whose lock has not expired cannot be deleted by anyone, so prune keeps every set with such a member.
"""

from __future__ import annotations


from ansible_collections.appconsistent.snapshots.plugins.module_utils import snapshot_set as ss
from ansible_collections.appconsistent.snapshots.plugins.module_utils.alicloud import AlibabaCloudError
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import AppConsistentAWSError
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import describe_locked_snapshots
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import error_code as aws_error_code

GOVERNANCE = "governance"
COMPLIANCE = "compliance"
COOLOFF = "compliance-cooloff"
EXPIRED = "expired"
UNKNOWN = "unknown"  # the credentials may not read locks
ACTIVE_STATES = (GOVERNANCE, COOLOFF, COMPLIANCE)
# Answers that mean "these credentials may not read locks": the locks are then unknown, not absent.
ACCESS_DENIED_CODES = ("UnauthorizedOperation", "AccessDenied", "AccessDeniedException", "Forbidden.RAM",
                       "Forbidden", "NoPermission")


def aws_lock(item):
    """A DescribeLockedSnapshots / LockSnapshot answer of EC2 in the collection's form."""
    state = item.get("LockState")
    return dict(state=state, mode=GOVERNANCE if state == GOVERNANCE else COMPLIANCE,
                until=ss.format_instant_or_none(item.get("LockExpiresOn")),
                duration_days=ss.int_or_none(item.get("LockDuration")),
                cool_off_hours=ss.int_or_none(item.get("CoolOffPeriod")),
                cool_off_until=ss.format_instant_or_none(item.get("CoolOffPeriodExpiresOn")))


def alicloud_lock(item):
    """A DescribeLockedSnapshots / LockSnapshot answer of ECS in the collection's form."""
    return dict(state=item.get("LockStatus"), mode=item.get("LockMode") or COMPLIANCE,
                until=ss.format_instant_or_none(item.get("LockExpiredTime")),
                duration_days=ss.int_or_none(item.get("LockDuration")),
                cool_off_hours=ss.int_or_none(item.get("CoolOffPeriod")),
                cool_off_until=ss.format_instant_or_none(item.get("CoolOffPeriodExpiredTime")))


def read_locks(module, provider, snapshot_ids=None, api=None):
    """{snapshot_id: lock} of the snapshots named (or of every locked snapshot of the Region).

    ``api`` is the EC2 client or ECS access object of another Region (a copy's destination); None is the task's.
    A snapshot without an entry has no lock. Raises the provider's error, access denied included.
    """
    if provider == "aws":
        items = describe_locked_snapshots(api or module.aws_client("ec2"), snapshot_ids=snapshot_ids)
        return {item["SnapshotId"]: aws_lock(item) for item in items}
    items = (api or module.alicloud).describe_locked_snapshots(snapshot_ids=snapshot_ids)
    return {item["SnapshotId"]: alicloud_lock(item) for item in items}


def is_locked(lock, now=None):
    """Whether a lock (the collection's form, or None) still stops its snapshot from being deleted."""
    if not lock or lock.get("state") not in ACTIVE_STATES:
        return False
    until = ss.instant(lock.get("until"))
    return until is None or until > (now or ss.utcnow())


def set_lock(members, now=None):
    """The set's lock from its members': locked only when every member is, until the earliest member's end.

    A member's lock is None when it has none. ``locked`` is None when a member's lock could not be read. ``mode`` is the members' common mode (or
    ``mixed``), ``state`` the weakest phase among them (``compliance-cooloff`` before ``compliance``).
    """
    locks = [m.get("lock") for m in members]
    if any(lock and lock.get("state") == UNKNOWN for lock in locks):
        return dict(locked=None, mode=None, until=None, state=None, locked_members=None)
    held = [lock for lock in locks if is_locked(lock, now)]
    locked = bool(held) and len(held) == len(locks)
    modes = {lock["mode"] for lock in held}
    states = {lock["state"] for lock in held}
    untils = [u for u in (ss.instant(lock.get("until")) for lock in held) if u]
    return dict(locked=locked,
                mode=(modes.pop() if len(modes) == 1 else "mixed") if held else None,
                until=ss.format_instant(min(untils)) if untils else None,
                state=next((s for s in (GOVERNANCE, COOLOFF, COMPLIANCE) if s in states), None) if held else None,
                locked_members=len(held))


def attach_locks(module, provider, sets, now=None):
    """Put each member's lock (``member["lock"]``, None for no lock) and each set's (``set["lock"]``) on ``sets``.

    One listing of the Region's locked snapshots serves every set. When the credentials may not read locks,
    the locks are unknown: members get ``{"state": "unknown"}``, sets ``locked: null``, and the task warns.
    """
    if not sets:
        return sets
    try:
        locks = read_locks(module, provider)
    except (AppConsistentAWSError, AlibabaCloudError) as exc:
        code = aws_error_code(exc) if provider == "aws" else exc.code
        if code not in ACCESS_DENIED_CODES:
            raise
        module.warn(f"Cannot read snapshot locks ({code}): the sets' locks are unknown. Allow "
                    f"{'ec2' if provider == 'aws' else 'ecs'}:DescribeLockedSnapshots (see docs/policies).")
        locks = None
    for item in sets:
        for member in item["members"]:
            member["lock"] = locks.get(member["snapshot_id"]) if locks is not None else dict(state=UNKNOWN)
        item["lock"] = set_lock(item["members"], now)
    return sets
