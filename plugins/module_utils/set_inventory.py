# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Finding, listing and pruning snapshot sets on both providers.

Sets are found from their members' tags alone, so any controller sees the
same sets. Both modules that read or delete sets (snapshot_set_info and
snapshot_set_prune) go through this file: the prune decides on exactly the
sets the info module would list.

A set is handled whole. A prune checks every member of a set before it
deletes any of them, and a set that cannot go whole is kept with the reason.
"""

from __future__ import annotations


from ansible_collections.appconsistent.snapshots.plugins.module_utils import retention
from ansible_collections.appconsistent.snapshots.plugins.module_utils import snapshot_set as ss
from ansible_collections.appconsistent.snapshots.plugins.module_utils import verification as vf
from ansible_collections.appconsistent.snapshots.plugins.module_utils.alicloud import AlibabaCloudError
from ansible_collections.appconsistent.snapshots.plugins.module_utils.alicloud import tags_to_dict
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import AppConsistentAWSError
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import error_code as aws_error_code
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import delete_snapshot
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import describe_images
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import describe_snapshots
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws_fleet import snapshot_member
from ansible_collections.appconsistent.snapshots.plugins.module_utils.concurrency import chunks
from ansible_collections.appconsistent.snapshots.plugins.module_utils.restore import TAG_SAFETY_FOR
from ansible_collections.appconsistent.snapshots.plugins.module_utils.snapshot_lock import attach_locks
from ansible_collections.appconsistent.snapshots.plugins.module_utils.snapshot_lock import is_locked

PROVIDERS = ("aws", "alicloud")
# An EC2 filter takes at most 200 values.
FILTER_VALUES_MAX = 200
ALI_GROUP_IDS_MAX = 10  # DescribeSnapshotGroups SnapshotGroupId.N
# Up to this many instances (or set ids), one filtered listing per value costs less than one
# listing of every group (or tagged snapshot) of the region. A DescribeSnapshots tag filter takes one value per key.
ALI_PER_INSTANCE_LISTING_MAX = 10
ALI_GROUP_PREFIX = "ssg-"  # a set whose id is a snapshot-consistent group id is that group
GROUP_GONE_CODES = ("InvalidSnapshotGroupId.NotFound", "InvalidSnapshotGroup.NotFound")
SNAPSHOT_GONE_CODES = ("InvalidSnapshotId.NotFound",)

# Why a set in scope was kept.
KEPT_NOT_EXPIRED = "not_expired"
KEPT_NO_DELETE_AFTER = "no_delete_after"
KEPT_WITHIN_KEEP = "within_keep"
KEPT_NEWEST_APPLICATION = "newest_application"
KEPT_IN_USE_BY_IMAGE = "in_use_by_image"
KEPT_UNTAGGED_MEMBERS = "untagged_members"
KEPT_LOCKED = "locked"
KEPT_SCHEDULE = "schedule"
KEPT_IN_PROGRESS = "in_progress"
KEPT_NEWEST_VERIFIED = "newest_verified"


def _common(values):
    values = {v for v in values if v}
    return values.pop() if len(values) == 1 else None


def build_set(provider, set_id, members, group=None, now=None):
    """The set as the modules return it, from its member dicts (and the Alibaba group, if any).

    ``group`` carries what the provider says about the set as a whole: ``tags``,
    ``instance_id``, ``created`` and ``status``; the members' own tags win, and
    the consistency comes from the members alone.
    """
    group = group or {}
    group_tags = group.get("tags") or {}

    def tag(member, key):
        return member["tags"].get(key) or group_tags.get(key)

    members = sorted(members, key=lambda m: (m.get("device") or "", m["snapshot_id"]))
    created_times = [t for t in (ss.instant(m.get("start_time")) for m in members) if t]
    created = ss.instant(group.get("created")) or (min(created_times) if created_times else None)
    # Only the members' own word counts for consistency: a group tag may name what was asked for.
    levels = [m["tags"].get(ss.TAG_CONSISTENCY) for m in members]
    delete_after = _common(tag(m, ss.TAG_DELETE_AFTER) for m in members) or group_tags.get(ss.TAG_DELETE_AFTER)
    delete_moment = ss.parse_instant(delete_after)
    sizes = [m.get("size_gib") for m in members]
    full_sizes = [m.get("full_snapshot_size_bytes") for m in members]
    untagged = [m["snapshot_id"] for m in members if m["tags"].get(ss.TAG_SET_ID) != set_id]
    # A group made by CreateSnapshotGroup carries the member count from its creation; its members get it when tagged.
    member_tags = [dict({k: v for k, v in group_tags.items() if k == ss.TAG_MEMBERS}, **m["tags"]) for m in members]
    incomplete = ss.incomplete_reason(member_tags, [m.get("state") for m in members])
    result = dict(
        provider=provider,
        set_id=set_id,
        instance_id=_common(tag(m, ss.TAG_INSTANCE_ID) for m in members) or group.get("instance_id"),
        run_id=_common(tag(m, ss.TAG_RUN_ID) for m in members),
        created=ss.format_instant(created) if created else None,
        # The set's level (appconsistent:set-consistency; a set made before it, its weakest member's); each member's
        # own level is in its consistency field.
        consistency=ss.set_consistency(m["tags"] for m in members) if levels and all(levels) else None,
        complete=incomplete is None,
        members_expected=ss.declared_members(member_tags)[0],
        incomplete_reason=incomplete,
        delete_after=delete_after,
        expired=delete_moment is not None and delete_moment <= (now or ss.utcnow()),
        size_gib=sum(sizes) if members and all(s is not None for s in sizes) else None,
        full_snapshot_size_bytes=sum(full_sizes) if members and all(s is not None for s in full_sizes) else None,
        untagged_snapshot_ids=untagged,
        # A safety set (restore_volumes' copy of the disks it was about to reset) names the set it made room for.
        safety_for=_common(tag(m, TAG_SAFETY_FOR) for m in members) or group_tags.get(TAG_SAFETY_FOR),
        # The last restore test, from the members' own tags only (a group's tags are written once, at creation).
        verification=vf.set_verification(members, incomplete),
        members=[dict(m, consistency=m["tags"].get(ss.TAG_CONSISTENCY)) for m in members],
    )
    if group.get("status") is not None:
        result["group_status"] = group["status"]
    return result


def order_sets(sets):
    """Sets by instance, newest first; a set without a creation time counts as the newest."""
    def key(item):
        moment = ss.instant(item.get("created"))
        return (item.get("instance_id") or "", -(moment.timestamp() if moment else float("inf")), item["set_id"])
    return sorted(sets, key=key)


def select_sets(sets, min_consistency=None, newest_only=False, verified=None):
    """The sets at least ``min_consistency`` (and, with ``verified`` true or false, whose last restore test passed or
    did not); with ``newest_only``, the newest of them per instance, so that verified and newest_only together are
    each instance's newest verified set.

    A safety set is never an instance's newest: it holds the data a restore replaced, not a backup taken since."""
    chosen = [s for s in order_sets(sets) if (min_consistency is None or ss.at_least(s["consistency"], min_consistency))
              and (verified is None or vf.is_verified(s) == verified)]
    if not newest_only:
        return chosen
    seen = set()
    newest = []
    for item in chosen:
        if item.get("safety_for"):
            continue
        if item["instance_id"] not in seen:
            seen.add(item["instance_id"])
            newest.append(item)
    return newest


# --- AWS ------------------------------------------------------------------------------


def aws_member(snapshot):
    member = snapshot_member(snapshot)
    member["size_gib"] = member.pop("volume_size")
    member["storage_tier"] = snapshot.get("StorageTier")
    member["full_snapshot_size_bytes"] = snapshot.get("FullSnapshotSizeInBytes")
    return member


def find_aws_sets(client, instance_ids=None, run_id=None, set_ids=None, now=None):
    """Every set of this account in the region that matches, from one paginated, tag-filtered listing per chunk."""
    base = [{"Name": "tag-key", "Values": [ss.TAG_SET_ID]}]
    if run_id:
        base.append({"Name": "tag:" + ss.TAG_RUN_ID, "Values": [run_id]})
    snapshots = {}
    # No ids is one listing without that filter.
    for id_chunk in chunks(set_ids or [], FILTER_VALUES_MAX) or [[]]:
        for instance_chunk in chunks(instance_ids or [], FILTER_VALUES_MAX) or [[]]:
            filters = list(base)
            if id_chunk:
                filters.append({"Name": "tag:" + ss.TAG_SET_ID, "Values": id_chunk})
            if instance_chunk:
                filters.append({"Name": "tag:" + ss.TAG_INSTANCE_ID, "Values": instance_chunk})
            for snapshot in describe_snapshots(client, filters=filters):
                snapshots[snapshot["SnapshotId"]] = snapshot
    groups = ss.group_into_sets(aws_member(s) for s in snapshots.values())
    return order_sets(build_set("aws", group.set_id, group.members, now=now) for group in groups)


def aws_images_by_snapshot(client):
    """{snapshot_id: [image ids]} of the snapshots this account's AMIs are built on."""
    used = {}
    for image in describe_images(client, include_disabled=True):
        for mapping in image.get("BlockDeviceMappings") or []:
            snapshot_id = (mapping.get("Ebs") or {}).get("SnapshotId")
            if snapshot_id:
                used.setdefault(snapshot_id, []).append(image["ImageId"])
    return used


def delete_aws_set(client, item):
    """Delete every member; stop at the first member that cannot go and say what is left."""
    deleted, gone = [], []
    pending = [m["snapshot_id"] for m in item["members"]]
    while pending:
        snapshot_id = pending[0]
        try:
            removed = delete_snapshot(client, snapshot_id)
        except AppConsistentAWSError as exc:
            return dict(deleted_snapshot_ids=deleted, already_gone_snapshot_ids=gone, remaining_snapshot_ids=pending,
                        error=dict(code=aws_error_code(exc) or "DeleteFailed",
                                   message=f"deleting {snapshot_id} failed: {exc.message}"))
        (deleted if removed else gone).append(snapshot_id)
        pending.pop(0)
    return dict(deleted_snapshot_ids=deleted, already_gone_snapshot_ids=gone, remaining_snapshot_ids=[], error=None)


# --- Alibaba Cloud ----------------------------------------------------------------------


def describe_snapshot_groups(api, group_ids=None, instance_id=None):
    if group_ids:
        groups = []
        for chunk in chunks(group_ids, ALI_GROUP_IDS_MAX):
            groups.extend(api.describe_snapshot_groups(snapshot_group_ids=chunk))
        return groups
    return api.describe_snapshot_groups(instance_id=instance_id)


def describe_alicloud_snapshots(api, snapshot_ids):
    """{snapshot_id: snapshot} for the ids, 100 per request (the API's limit)."""
    return {snapshot["SnapshotId"]: snapshot for snapshot in api.describe_snapshots(snapshot_ids=list(snapshot_ids))}


def delete_snapshot_group(api, group_id):
    """DeleteSnapshotGroup; the per-snapshot outcomes, or None when the group is already gone."""
    try:
        body = api.delete_snapshot_group(group_id)
    except AlibabaCloudError as exc:
        if exc.code in GROUP_GONE_CODES:
            return None
        raise
    outcomes = []
    for progress in (body.get("OperationProgressSet") or {}).get("OperationProgress") or []:
        related = ((progress.get("RelatedItemSet") or {}).get("RelatedItem") or [])
        snapshot_id = next((r.get("Value") for r in related if r.get("Name") == "SnapshotId"), None)
        outcomes.append(dict(snapshot_id=snapshot_id, ok=progress.get("OperationStatus") == "Success",
                             code=progress.get("ErrorCode") or None, message=progress.get("ErrorMsg") or None))
    return outcomes


def alicloud_member(listed, detail):
    """A group member from the group listing and (when found) its DescribeSnapshots entry."""
    detail = detail or {}
    tags = tags_to_dict(detail.get("Tags")) if detail else {}
    tags = tags or tags_to_dict(listed.get("Tags"))
    return dict(
        snapshot_id=listed["SnapshotId"],
        disk_id=listed.get("SourceDiskId") or detail.get("SourceDiskId"),
        device=tags.get(ss.TAG_DEVICE),
        size_gib=ss.int_or_none(detail.get("SourceDiskSize")),
        state=detail.get("Status") or ("accomplished" if listed.get("Progress") == "100%" else "progressing"),
        progress=detail.get("Progress") or listed.get("Progress"),
        start_time=ss.format_instant_or_none(detail.get("CreationTime")),
        storage_tier=detail.get("Category"),
        full_snapshot_size_bytes=ss.int_or_none(detail.get("FullSnapshotSizeInBytes")),
        usage=detail.get("Usage"),
        tags=tags,
    )


def _is_our_group(group, members):
    group_id = group["SnapshotGroupId"]
    group_tags = tags_to_dict(group.get("Tags"))
    return group_tags.get(ss.TAG_SET_ID) == group_id or any(m["tags"].get(ss.TAG_SET_ID) == group_id for m in members)


def is_alicloud_group_id(set_id):
    return str(set_id or "").startswith(ALI_GROUP_PREFIX)


def describe_tagged_alicloud_snapshots(api, tags):
    """{snapshot_id: snapshot} of the snapshots that carry every tag, every page; a value of None matches any value."""
    return {snapshot["SnapshotId"]: snapshot for snapshot in api.describe_snapshots(tags=tags)}


def alicloud_tag_queries(instance_ids=None, run_id=None, set_ids=None):
    """The tag filters of the DescribeSnapshots listings that find the tagged snapshots in scope, one listing each.

    A tag filter takes one value per key: up to ALI_PER_INSTANCE_LISTING_MAX set ids (or instances) are one
    listing each, more are one listing of every set member of the region, narrowed here afterwards.
    """
    base = {ss.TAG_SET_ID: None}
    if run_id:
        base[ss.TAG_RUN_ID] = run_id
    if set_ids:
        if len(set_ids) <= ALI_PER_INSTANCE_LISTING_MAX:
            return [dict(base, **{ss.TAG_SET_ID: set_id}) for set_id in set_ids]
        return [base]
    if instance_ids and len(instance_ids) <= ALI_PER_INSTANCE_LISTING_MAX:
        return [dict(base, **{ss.TAG_INSTANCE_ID: instance_id}) for instance_id in instance_ids]
    return [base]


def loose_alicloud_snapshots(snapshots, groups=()):
    """{set_id: [snapshot]} of the tagged snapshots that are in no snapshot-consistent group.

    Such a set is, for example, a copy made by snapshot_set_copy: CopySnapshot puts a copy in no group. A
    snapshot listed in one of ``groups``, or tagged with a group's ``ssg-`` set id, belongs to that group's set.
    """
    grouped = {s["SnapshotId"] for g in groups for s in (g.get("Snapshots") or {}).get("Snapshot") or []}
    sets = {}
    for snapshot in snapshots:
        set_id = tags_to_dict(snapshot.get("Tags")).get(ss.TAG_SET_ID)
        if set_id and not is_alicloud_group_id(set_id) and snapshot["SnapshotId"] not in grouped:
            sets.setdefault(set_id, []).append(snapshot)
    return sets


def find_alicloud_sets(api, instance_ids=None, run_id=None, set_ids=None, now=None):
    """The sets in the region: snapshot-consistent groups that are sets, and sets of tagged snapshots in no group.

    The groups come from DescribeSnapshotGroups; the tagged snapshots from DescribeSnapshots listings filtered by
    tag, which also give the details of the group members they list, so that only the other members are asked for
    by id (100 a request). A group member is listed once, in its group's set.
    """
    group_ids = [s for s in set_ids or [] if is_alicloud_group_id(s)]
    loose_ids = [s for s in set_ids or [] if not is_alicloud_group_id(s)]
    if set_ids:
        groups = describe_snapshot_groups(api, group_ids=group_ids) if group_ids else []
    elif instance_ids and len(instance_ids) <= ALI_PER_INSTANCE_LISTING_MAX:
        groups = [g for instance_id in instance_ids for g in describe_snapshot_groups(api, instance_id=instance_id)]
    else:
        groups = describe_snapshot_groups(api)
    listed = {g["SnapshotGroupId"]: g for g in groups}
    tagged = {}
    if loose_ids or not set_ids:
        for query in alicloud_tag_queries(instance_ids, run_id, loose_ids):
            tagged.update(describe_tagged_alicloud_snapshots(api, query))
    snapshot_ids = [s["SnapshotId"] for g in listed.values() for s in (g.get("Snapshots") or {}).get("Snapshot") or []]
    details = {i: tagged[i] for i in snapshot_ids if i in tagged}
    details.update(describe_alicloud_snapshots(api, [i for i in snapshot_ids if i not in tagged]))
    result = []
    for group_id, group in listed.items():
        members = [alicloud_member(s, details.get(s["SnapshotId"]))
                   for s in (group.get("Snapshots") or {}).get("Snapshot") or []]
        if not _is_our_group(group, members):
            continue
        result.append(build_set("alicloud", group_id, members, now=now, group=dict(
            tags=tags_to_dict(group.get("Tags")), instance_id=group.get("InstanceId") or None,
            created=group.get("CreationTime"), status=group.get("Status"))))
    for set_id, snapshots in loose_alicloud_snapshots(tagged.values(), listed.values()).items():
        if not set_ids or set_id in loose_ids:
            result.append(build_set("alicloud", set_id, [alicloud_member(s, s) for s in snapshots], now=now))
    result = [item for item in result if (not instance_ids or item["instance_id"] in instance_ids)
              and (not run_id or item["run_id"] == run_id)]
    return order_sets(result)


def delete_alicloud_set(api, item):
    """A group with DeleteSnapshotGroup, a set of snapshots in no group (a copy) member by member."""
    if not is_alicloud_group_id(item["set_id"]):
        return delete_alicloud_snapshots(api, item)
    try:
        outcomes = delete_snapshot_group(api, item["set_id"])
    except AlibabaCloudError as exc:
        return dict(deleted_snapshot_ids=[], already_gone_snapshot_ids=[],
                    remaining_snapshot_ids=[m["snapshot_id"] for m in item["members"]],
                    error=dict(code=exc.code, message=str(exc)))
    if outcomes is None:
        return dict(deleted_snapshot_ids=[], already_gone_snapshot_ids=[m["snapshot_id"] for m in item["members"]],
                    remaining_snapshot_ids=[], error=None)
    failed = [o for o in outcomes if not o["ok"]]
    result = dict(deleted_snapshot_ids=[o["snapshot_id"] for o in outcomes if o["ok"]], already_gone_snapshot_ids=[],
                  remaining_snapshot_ids=[o["snapshot_id"] for o in failed], error=None)
    if failed:
        first = failed[0]
        result["error"] = dict(code=first["code"] or "DeleteFailed",
                               message=f"DeleteSnapshotGroup kept {len(failed)} of {len(outcomes)} snapshots: "
                                       f"{first['snapshot_id']}: {first['message'] or first['code']}")
    return result


def delete_alicloud_snapshots(api, item):
    """DeleteSnapshot of each member, and of nothing else; stop at the first member that cannot go.

    Force=true deletes a member that disks were created from, as DeleteSnapshotGroup does for a group's members:
    those disks are kept, but can no longer be re-initialised. A member used by a custom image is refused by the
    API, and blockers() keeps such a set before anything is deleted.
    """
    deleted, gone = [], []
    pending = [m["snapshot_id"] for m in item["members"]]
    while pending:
        snapshot_id = pending[0]
        try:
            api.delete_snapshot(snapshot_id, force=True)
        except AlibabaCloudError as exc:
            if exc.code not in SNAPSHOT_GONE_CODES:
                return dict(deleted_snapshot_ids=deleted, already_gone_snapshot_ids=gone, remaining_snapshot_ids=pending,
                            error=dict(code=exc.code or "DeleteFailed", message=f"deleting {snapshot_id} failed: {exc}"))
            gone.append(snapshot_id)
        else:
            deleted.append(snapshot_id)
        pending.pop(0)
    return dict(deleted_snapshot_ids=deleted, already_gone_snapshot_ids=gone, remaining_snapshot_ids=[], error=None)


# --- finding, for both providers -------------------------------------------------------


def find_sets(module, provider, instance_ids=None, run_id=None, set_ids=None, now=None):
    if provider == "aws":
        sets = find_aws_sets(module.aws_client("ec2"), instance_ids=instance_ids, run_id=run_id, set_ids=set_ids, now=now)
    else:
        sets = find_alicloud_sets(module.alicloud, instance_ids=instance_ids, run_id=run_id, set_ids=set_ids, now=now)
    # Only the sets named: the lookups filter on tag values, and prune acts on what is returned here.
    sets = [item for item in sets if (not instance_ids or item["instance_id"] in instance_ids)
            and (not set_ids or item["set_id"] in set_ids) and (not run_id or item["run_id"] == run_id)]
    return attach_locks(module, provider, sets, now=now)


def summary(item):
    """A set in a prune result: enough to identify it, not every member's detail."""
    return dict(set_id=item["set_id"], instance_id=item["instance_id"], run_id=item["run_id"], created=item["created"],
                consistency=item["consistency"], delete_after=item["delete_after"],
                snapshot_ids=[m["snapshot_id"] for m in item["members"]])


# --- pruning ---------------------------------------------------------------------------


def protected_sets(sets):
    """{instance_id: set_id} of each instance's newest application- (or offline-) consistent set, safety sets aside.

    A complete set is preferred: a set still being taken may yet fail, so the
    last finished one stays protected until it has.
    """
    best = {}
    for item in order_sets(sets):
        # A safety set is offline-consistent, but of the data a restore replaced: it never stands for the instance.
        if not ss.at_least(item["consistency"], "application") or item.get("safety_for"):
            continue
        instance = item["instance_id"]
        current = best.get(instance)
        if current is None or (item["complete"] and not current["complete"]):
            best[instance] = item
    return {instance: item["set_id"] for instance, item in best.items()}


def plan_prune(sets, now, expired=True, keep=None, protect_newest_application=True, run_id=None, schedule=None,
               min_consistency=None, protect_newest_verified=True):
    """Decide, for every set, whether the rules delete it.

    ``sets`` are all the sets of the instances concerned: ranks, the schedule and protection are worked out over
    all of them, while ``run_id`` limits which may be deleted. Without a ``schedule`` a set goes when any rule
    selects it (expired, beyond the ``keep`` newest); with one ({generation: count}, see retention.py) a set goes
    when no rule keeps it (a generation, the ``keep`` newest, a delete-after not yet passed), as restic's forget.
    Returns (delete, kept): lists of (set, reasons) and (set, reason code, reason, reasons), where a kept set's
    reasons are every rule that keeps it.
    """
    protected = protected_sets(sets) if protect_newest_application else {}
    # The newest set whose restore test passed is the one an instance is known to come back from.
    verified = retention.newest_verified_sets(sets) if protect_newest_verified else {}
    by_schedule = retention.schedule_reasons(sets, schedule, min_consistency or retention.DEFAULT_MIN_CONSISTENCY) \
        if schedule else {}
    rank = {}
    counts = {}
    for item in order_sets(sets):
        instance = item["instance_id"]
        rank[item["set_id"]] = counts.get(instance, 0)
        counts[instance] = rank[item["set_id"]] + 1
    delete, kept = [], []
    for item in order_sets(sets):
        if run_id and item["run_id"] != run_id:
            continue
        position = rank[item["set_id"]]
        passed = ss.parse_instant(item["delete_after"]) if item["delete_after"] else None
        passed = passed is not None and passed <= now
        if schedule:
            code, keeps = _schedule_keeps(item, by_schedule.get(item["set_id"], []), keep, position, passed)
            reasons = [] if keeps else [f"kept by no rule of the schedule ({_schedule_text(schedule)})"
                                        + (f" nor among the {keep} newest sets of its instance" if keep else "")]
            if passed and reasons:
                reasons.append(f"expired at {item['delete_after']}")
        else:
            reasons = []
            if expired and passed:
                reasons.append(f"expired at {item['delete_after']}")
            if keep is not None and position >= keep:
                reasons.append(f"older than the {keep} newest sets of its instance")
            code, keeps = (None, []) if reasons else _why_kept(item, expired, keep, position)
        guards = []
        if protected.get(item["instance_id"]) == item["set_id"]:
            guards.append(f"the newest {item['consistency']}-consistent set of {item['instance_id']} "
                          "(protect_newest_application)")
        if verified.get(item["instance_id"]) == item["set_id"]:
            guards.append(f"the newest verified set of {item['instance_id']}, its restore test passed at "
                          f"{item['verification']['verified_at']} (protect_newest_verified)")
        if not reasons:
            kept.append((item, code, keeps[0], keeps + guards))
        elif guards:
            code = KEPT_NEWEST_APPLICATION if protected.get(item["instance_id"]) == item["set_id"] else KEPT_NEWEST_VERIFIED
            kept.append((item, code, guards[0], guards))
        else:
            delete.append((item, reasons))
    return delete, kept


def _schedule_text(schedule):
    return ", ".join(f"{name} {count}" for name, count in schedule.items())


def _schedule_keeps(item, generations, keep, position, passed):
    """(reason code, reasons) of the rules that keep a set under a schedule; reasons are empty when none does."""
    keeps = list(generations)
    codes = [KEPT_SCHEDULE] if generations else []
    if keep is not None and position < keep:
        keeps.append(f"one of the {keep} newest sets of {item['instance_id']}")
        codes.append(KEPT_WITHIN_KEEP)
    if item["delete_after"] and not passed:
        keeps.append(f"delete-after {item['delete_after']} not reached")
        codes.append(KEPT_NOT_EXPIRED)
    if retention.in_progress(item):
        keeps.append("still being taken")
        codes.append(KEPT_IN_PROGRESS)
    return (codes[0] if codes else None), keeps


def _why_kept(item, expired, keep, position):
    if keep is not None and position < keep:
        return KEPT_WITHIN_KEEP, [f"one of the {keep} newest sets of {item['instance_id']}"]
    if expired and item["delete_after"]:
        return KEPT_NOT_EXPIRED, [f"expires at {item['delete_after']}"]
    return KEPT_NO_DELETE_AFTER, ["it has no appconsistent:delete-after tag"]


# --- snapshot locks (begin): a locked member is never deleted, so its set is kept whole ---------


def member_locked(member, now=None):
    """Whether the member's snapshot lock (read by find_sets) still forbids deleting it."""
    return is_locked(member.get("lock"), now)


def locked_blocker(item, now=None):
    """(KEPT_LOCKED, reason, until) when any member is locked, else None; ``until`` is when the last lock ends."""
    held = [m for m in item["members"] if member_locked(m, now)]
    if not held:
        return None
    until = max((m["lock"].get("until") or "" for m in held), default="") or None
    modes = sorted({m["lock"].get("mode") or "?" for m in held})
    scope = "every member" if len(held) == len(item["members"]) else f"{len(held)} of {len(item['members'])} members"
    return KEPT_LOCKED, (f"locked ({', '.join(modes)} mode): {scope} cannot be deleted until "
                         f"{until or 'the lock is removed'}"), until

# --- snapshot locks (end) ---------------------------------------------------------------------------


def blockers(provider, item, images_by_snapshot=None):
    """Why a set cannot be deleted whole, as (reason code, reason), or None."""
    if item["untagged_snapshot_ids"]:
        return KEPT_UNTAGGED_MEMBERS, (f"its group holds snapshots without the {ss.TAG_SET_ID} tag of the set: "
                                       f"{', '.join(item['untagged_snapshot_ids'])}")
    if provider == "aws":
        used = {m["snapshot_id"]: images_by_snapshot.get(m["snapshot_id"])
                for m in item["members"] if (images_by_snapshot or {}).get(m["snapshot_id"])}
    else:
        used = {m["snapshot_id"]: [m.get("usage")] for m in item["members"] if "image" in str(m.get("usage") or "")}
    if used:
        text = "; ".join(f"{snap} by {', '.join(str(i) for i in images)}" for snap, images in used.items())
        return KEPT_IN_USE_BY_IMAGE, f"snapshots are in use by images ({text}); deregister the images first"
    return None


class SetPrune:
    """One snapshot_set_prune run: find, decide, check, then delete whole sets."""

    def __init__(self, module, now=None):
        self.module = module
        self.params = module.params
        self.provider = self.params["provider"]
        self.now = now or ss.utcnow()

    def _sets(self):
        instance_ids = self.params.get("instance_ids") or None
        run_id = self.params.get("run_id")
        if instance_ids:
            return find_sets(self.module, self.provider, instance_ids=instance_ids, now=self.now)
        if run_id:
            # Ranks and the protected set are per instance, over all of an instance's sets.
            instances = sorted({s["instance_id"] for s in find_sets(self.module, self.provider, run_id=run_id, now=self.now)
                                if s["instance_id"]})
            return find_sets(self.module, self.provider, instance_ids=instances, now=self.now) if instances else []
        return find_sets(self.module, self.provider, now=self.now)

    def run(self):
        params = self.params
        refusal = retention.check_schedule(params)
        if refusal:
            raise ValueError(refusal)
        schedule = retention.schedule_of(params)
        if not schedule and not params["expired"] and params.get("keep") is None:
            raise ValueError("Nothing to prune by: set expired: true, keep: N (the number of sets to keep per "
                             "instance) and/or a retention schedule (keep_daily, keep_weekly, keep_monthly, keep_yearly).")
        if params.get("keep") is not None and params["keep"] < 0:
            raise ValueError(f"keep must be 0 or more, got {params['keep']}.")
        ss.validate_run_id(params.get("run_id"))
        sets = self._sets()
        candidates, kept_plan = plan_prune(sets, self.now, expired=params["expired"], keep=params.get("keep"),
                                           protect_newest_application=params["protect_newest_application"],
                                           protect_newest_verified=params["protect_newest_verified"],
                                           run_id=params.get("run_id"), schedule=schedule,
                                           min_consistency=params.get("min_consistency"))
        kept = []
        for item, code, reason, reasons in kept_plan:
            entry = dict(summary(item), reason_code=code, reason=reason, reasons=reasons)
            locked = locked_blocker(item, self.now)
            if locked:
                # Kept by the rules anyway; the lock says how long it stays whatever they become.
                entry.update(reasons=reasons + [f"locked until {locked[2] or 'the lock is removed'}"],
                             locked_until=locked[2])
            kept.append(entry)
        images = None
        if self.provider == "aws" and any(not item["untagged_snapshot_ids"] for item, _reasons in candidates):
            images = aws_images_by_snapshot(self.module.aws_client("ec2"))
        to_delete = []
        for item, reasons in candidates:
            locked = locked_blocker(item, self.now)
            blocked = blockers(self.provider, item, images)
            if locked:
                kept.append(dict(summary(item), reason_code=locked[0], reason=locked[1], locked_until=locked[2],
                                 reasons=[f"locked until {locked[2] or 'the lock is removed'}"]))
            elif blocked:
                kept.append(dict(summary(item), reason_code=blocked[0], reason=blocked[1], reasons=[blocked[1]]))
            else:
                to_delete.append((item, reasons))
        if self.module.check_mode:
            plan_deletes(self.module, self.provider, [item for item, _reasons in to_delete])
        deleted, failed = [], []
        changed = False
        for item, reasons in to_delete:
            entry = dict(summary(item), reasons=reasons)
            if self.module.check_mode:
                deleted.append(entry)
                changed = True
                continue
            outcome = delete_aws_set(self.module.aws_client("ec2"), item) if self.provider == "aws" else \
                delete_alicloud_set(self.module.alicloud, item)
            changed = changed or bool(outcome["deleted_snapshot_ids"])
            entry.update(outcome)
            if outcome["error"]:
                failed.append(entry)
            elif outcome["deleted_snapshot_ids"]:
                deleted.append(entry)
        in_scope = [item["set_id"] for item in order_sets(sets)
                    if not params.get("run_id") or item["run_id"] == params["run_id"]]
        gone = {e["set_id"] for e in deleted} | {e["set_id"] for e in failed if e["deleted_snapshot_ids"]}
        result = dict(changed=changed, deleted=deleted, kept=kept, failed_sets=failed,
                      diff=dict(before=dict(set_ids=in_scope), after=dict(set_ids=[s for s in in_scope if s not in gone])),
                      warnings=[])
        if self.module.check_mode:
            result["would_delete"] = [entry["set_id"] for entry in deleted]
        if params.get("keep") == 0 and to_delete and not schedule:
            result["warnings"].append(keep_zero_warning(kept, params["protect_newest_application"], self.module.check_mode))
        return result


def plan_deletes(module, provider, items):
    """Count the delete calls a check-mode prune would make, so that its result estimates how long the account's
    request limits make the real one (DeleteSnapshot refills 5 tokens a second: 10,000 snapshots are half an hour)."""
    pacer = getattr(module, "pacer", None)
    if pacer is None or not items:
        return
    if provider == "aws":
        pacer.plan("ec2", "DeleteSnapshot", sum(len(item["members"]) for item in items))
        return
    groups = [item for item in items if is_alicloud_group_id(item["set_id"])]
    if groups:
        pacer.plan("ecs", "DeleteSnapshotGroup", len(groups))
    loose = sum(len(item["members"]) for item in items if not is_alicloud_group_id(item["set_id"]))
    if loose:
        pacer.plan("ecs", "DeleteSnapshot", loose)


def keep_zero_warning(kept, protect, check_mode):
    """keep: 0 says to delete everything: what is left should not come as a surprise, in check mode least of all."""
    verb = "would be" if check_mode else "was"
    if not protect:
        text = (f"keep is 0 and protect_newest_application is false: every set in scope {verb} deleted, and an "
                "instance may be left without any set")
    else:
        protected = [f"{k['set_id']} of {k['instance_id']}" for k in kept if k["reason_code"] == KEPT_NEWEST_APPLICATION]
        text = (f"keep is 0: every set in scope {verb} deleted but each instance's newest application-consistent set, "
                f"which protect_newest_application keeps ({', '.join(protected) or 'none in scope'})")
    others = sum(1 for k in kept if k["reason_code"] in (KEPT_IN_USE_BY_IMAGE, KEPT_UNTAGGED_MEMBERS, KEPT_LOCKED))
    if others:
        text += f", and {others} set{'s' if others > 1 else ''} that cannot be deleted (see kept)"
    return text + "."


class SetInfo:
    """One snapshot_set_info run."""

    def __init__(self, module, now=None):
        self.module = module
        self.now = now

    def run(self):
        params = self.module.params
        ss.validate_run_id(params.get("run_id"))
        sets = find_sets(self.module, params["provider"], instance_ids=params.get("instance_ids") or None,
                         run_id=params.get("run_id"), set_ids=params.get("set_ids") or None, now=self.now)
        return select_sets(sets, min_consistency=params.get("min_consistency"), newest_only=params["newest_only"],
                           verified=params.get("verified"))
