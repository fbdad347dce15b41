# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Copying a whole snapshot set to another region, for both providers.

The copy is a set of its own: its members carry the source set's tags with a
new ``appconsistent:set-id``, plus where they came from. Those tags are also
the only record of the copy, so a rerun (on any controller) finds the copies
made so far, copies only what is missing and never makes a second copy set.

Providers limit how many copies may run at once per destination region; the
copies wait in a queue here, and a refusal because of that limit puts the copy
back in the queue instead of failing the task.
"""

from __future__ import annotations

import hashlib
import time

from ansible_collections.appconsistent.snapshots.plugins.module_utils import snapshot_set as ss
from ansible_collections.appconsistent.snapshots.plugins.module_utils import validate as checks
from ansible_collections.appconsistent.snapshots.plugins.module_utils.alicloud import AlibabaCloud
from ansible_collections.appconsistent.snapshots.plugins.module_utils.alicloud import AlibabaCloudError
from ansible_collections.appconsistent.snapshots.plugins.module_utils.alicloud import tags_to_dict
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import AppConsistentAWSError
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import error_code as aws_error_code
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import copy_snapshot
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import delete_snapshot
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import describe_snapshots
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import tags_of
from ansible_collections.appconsistent.snapshots.plugins.module_utils.concurrency import chunks

TAG_COPIED_FROM = ss.TAG_PREFIX + "copied-from"
TAG_SOURCE_REGION = ss.TAG_PREFIX + "source-region"
TAG_SOURCE_SNAPSHOT = ss.TAG_PREFIX + "source-snapshot"
COPY_TAG_KEYS = (TAG_COPIED_FROM, TAG_SOURCE_REGION, TAG_SOURCE_SNAPSHOT)

# AWS answers a copy beyond the concurrent-copy limit of the destination region with this code.
AWS_COPY_LIMIT_CODES = ("ResourceLimitExceeded",)
# Alibaba allows one unfinished copy per disk and destination region.
ALI_COPY_LIMIT_CODES = ("InvalidOperation.DiskHasUnfinishedSnapshotCopy",)
ALI_TAGS_MAX = 20
AWS_TAGS_MAX = 50

DEFAULT_MAX_CONCURRENT = 5  # AWS: concurrent copies per destination region
FIRST_POLL = 1.0
MAX_POLL = 30.0


class CopyRefused(Exception):
    """The copy cannot start; nothing was changed."""


class CopyLimited(Exception):
    """The provider refused one more copy for now (its concurrent-copy limit)."""


class CopyFailed(Exception):
    """The copy ran but did not finish; ``result`` is what the task returns with the failure."""

    def __init__(self, message, result):
        super().__init__(message)
        self.result = result


def copy_tags(member_tags, copy_set_id, source_set_id, source_region, source_snapshot_id, delete_after=None,
              extra=None, members=None):
    """The tags of one copied member: the source's own, the new set id, and where it came from.

    The providers' evidence tags are left behind: they describe the source
    snapshot and are theirs to write. The set's consistency travels in
    ``appconsistent:consistency``, which is kept.
    """
    owned = {k.lower() for k in ss.PROVIDER_OWNED_TAGS}
    tags = {k: v for k, v in (member_tags or {}).items()
            if k.lower() not in owned and not k.lower().startswith(("aws:", "acs:", "aliyun"))}
    device = (member_tags or {}).get(ss.TAG_DEVICE) or (member_tags or {}).get("Device")
    if device:
        tags[ss.TAG_DEVICE] = device
    tags.update(extra or {})
    tags[ss.TAG_SET_ID] = copy_set_id
    if members is not None:
        # The copy set is whole only once every source member has its copy: a copy cut short proves itself partial.
        tags[ss.TAG_MEMBERS] = ss.members_value(members)
    tags[TAG_COPIED_FROM] = source_set_id
    tags[TAG_SOURCE_REGION] = source_region
    tags[TAG_SOURCE_SNAPSHOT] = source_snapshot_id
    if delete_after:
        tags[ss.TAG_DELETE_AFTER] = delete_after
    return tags


def choose_copy_set(existing):
    """The copy set to complete among the copies already in the destination: (set id, members).

    Normally there is one. Should several exist (two controllers raced), the one
    with the most members wins and the others are reported, never deleted.
    """
    groups = {}
    for member in existing:
        set_id = member["tags"].get(ss.TAG_SET_ID)
        if set_id:
            groups.setdefault(set_id, []).append(member)
    if not groups:
        return None, [], []
    chosen = max(sorted(groups), key=lambda key: len(groups[key]))
    return chosen, groups[chosen], sorted(k for k in groups if k != chosen)


def newest_set_id(restore_api, instance_id, min_consistency):
    """The newest complete set of the instance in the source region that is at least min_consistency, chosen as
    restore_volumes chooses it with latest (CopyRefused when there is none)."""
    from ansible_collections.appconsistent.snapshots.plugins.module_utils import restore
    try:
        return restore_api.latest_set(instance_id, min_consistency).set_id
    except (restore.RestoreRefused, restore.StepFailed) as exc:
        raise CopyRefused(str(exc)) from None


# --- AWS ------------------------------------------------------------------------------


def aws_member(snapshot):
    tags = tags_of(snapshot)
    start = snapshot.get("StartTime")
    return dict(snapshot_id=snapshot["SnapshotId"], state=str(snapshot.get("State") or "").lower(),
                progress=snapshot.get("Progress"), size=snapshot.get("VolumeSize"),
                encrypted=bool(snapshot.get("Encrypted")), kms_key_id=snapshot.get("KmsKeyId"),
                start_time=start.isoformat() if hasattr(start, "isoformat") else start,
                device=tags.get(ss.TAG_DEVICE) or tags.get("Device"), tags=tags)


class AwsCopyApi:
    """CopySnapshot into another region of the same account."""

    provider = "aws"
    COMPLETE = ("completed",)
    FAILED = ("error",)
    TAGS_MAX = AWS_TAGS_MAX

    def __init__(self, source_client, destination_client, source_region, destination_region):
        self.source = source_client
        self.destination = destination_client
        self.source_region = source_region
        self.destination_region = destination_region

    def source_members(self, set_id):
        found = describe_snapshots(self.source, filters=[{"Name": "tag:" + ss.TAG_SET_ID, "Values": [set_id]}])
        return [aws_member(s) for s in found]

    def existing_copies(self, source_set_id):
        found = describe_snapshots(self.destination, filters=[
            {"Name": "tag:" + TAG_COPIED_FROM, "Values": [source_set_id]},
            {"Name": "tag:" + TAG_SOURCE_REGION, "Values": [self.source_region]}])
        return [aws_member(s) for s in found]

    def describe(self, snapshot_ids):
        found = {}
        for chunk in chunks(snapshot_ids, 200):
            for snapshot in describe_snapshots(self.destination, snapshot_ids=chunk):
                found[snapshot["SnapshotId"]] = aws_member(snapshot)
        return found

    def start(self, member, tags, description, encrypted, kms_key_id, token):  # pylint: disable=unused-argument
        # AWS CopySnapshot has no client token; the tag lookup before the copy is what keeps it single.
        try:
            return copy_snapshot(self.destination, self.source_region, member["snapshot_id"], description=description,
                                 encrypted=encrypted, kms_key_id=kms_key_id, tags=tags)
        except AppConsistentAWSError as exc:
            if aws_error_code(exc) in AWS_COPY_LIMIT_CODES:
                raise CopyLimited(str(exc.message)) from None
            raise

    def discard(self, snapshot_id):
        delete_snapshot(self.destination, snapshot_id)

    def latest_set_id(self, instance_id, min_consistency):
        from ansible_collections.appconsistent.snapshots.plugins.module_utils.restore_aws import AwsRestoreApi
        return newest_set_id(AwsRestoreApi(self.source), instance_id, min_consistency)


# --- Alibaba Cloud ------------------------------------------------------------------------


class _RegionParams:
    """The module as AlibabaCloud sees it, with another region: same credentials and endpoint."""

    def __init__(self, module, region):
        self._module = module
        self.params = dict(module.params, alicloud_region=region)
        self.check_mode = module.check_mode
        # The destination Region's ECS buckets are its own: its calls are paced apart from the source's.
        pacer = getattr(module, "pacer", None)
        self.pacer = pacer.in_region(region) if pacer is not None else None

    def fail_json(self, **kwargs):
        self._module.fail_json(**kwargs)


def ali_member(snapshot):
    tags = tags_to_dict(snapshot.get("Tags"))
    size = snapshot.get("SourceDiskSize")
    return dict(snapshot_id=snapshot["SnapshotId"], state=str(snapshot.get("Status") or "").lower(),
                progress=snapshot.get("Progress"), size=int(size) if str(size or "").isdigit() else None,
                encrypted=bool(snapshot.get("Encrypted")), kms_key_id=snapshot.get("KMSKeyId") or None,
                start_time=snapshot.get("CreationTime"), device=tags.get(ss.TAG_DEVICE), tags=tags)


def ali_name(text):
    """A snapshot name Alibaba accepts: 2-128 characters, a letter first, letters, digits, : _ - only."""
    cleaned = "".join(c if c.isalnum() or c in ":_-" else "-" for c in text)
    if not cleaned[:1].isalpha():
        cleaned = "copy-" + cleaned
    return cleaned[:128]


class AlicloudCopyApi:
    """CopySnapshot from the module's region (alicloud_region) to another region."""

    provider = "alicloud"
    COMPLETE = ("accomplished",)
    FAILED = ("failed",)
    TAGS_MAX = ALI_TAGS_MAX

    def __init__(self, source_api, destination_api):
        self.source_api = source_api
        self.destination_api = destination_api
        self.source_region = source_api.region
        self.destination_region = destination_api.region

    def source_members(self, set_id):
        if set_id.startswith("ssg-"):
            groups = self.source_api.describe_snapshot_groups(snapshot_group_ids=[set_id])
            ids = [s["SnapshotId"] for g in groups for s in (g.get("Snapshots") or {}).get("Snapshot") or []]
            return [ali_member(s) for s in self.source_api.describe_snapshots(snapshot_ids=ids)] if ids else []
        return [ali_member(s) for s in self.source_api.describe_snapshots(tags={ss.TAG_SET_ID: set_id})]

    def existing_copies(self, source_set_id):
        found = self.destination_api.describe_snapshots(tags={TAG_COPIED_FROM: source_set_id,
                                                              TAG_SOURCE_REGION: self.source_region})
        return [ali_member(s) for s in found]

    def describe(self, snapshot_ids):
        return {s["SnapshotId"]: ali_member(s) for s in self.destination_api.describe_snapshots(snapshot_ids=snapshot_ids)}

    def start(self, member, tags, description, encrypted, kms_key_id, token):
        try:
            return self.source_api.copy_snapshot(member["snapshot_id"], self.destination_region,
                                                 ali_name(f"copy-{member['snapshot_id']}"), description, tags=tags,
                                                 encrypted=encrypted, kms_key_id=kms_key_id, client_token=token)
        except AlibabaCloudError as exc:
            if exc.code in ALI_COPY_LIMIT_CODES:
                raise CopyLimited(str(exc)) from None
            raise

    def discard(self, snapshot_id):
        self.destination_api.delete_snapshot(snapshot_id)

    def latest_set_id(self, instance_id, min_consistency):
        from ansible_collections.appconsistent.snapshots.plugins.module_utils.restore_alicloud import AlicloudRestoreApi
        return newest_set_id(AlicloudRestoreApi(self.source_api), instance_id, min_consistency)


# --- the copy, for both providers ---------------------------------------------------------------


def validate(params, source_region):
    """Refuse what cannot work before anything is looked up or changed."""
    destination = params["destination_region"]
    if not source_region:
        raise CopyRefused("The source region is not set: give region (AWS) or alicloud_region (Alibaba Cloud).")
    if params["provider"] == "alicloud" and destination == source_region:
        raise CopyRefused(f"destination_region is the set's own region ({source_region}): Alibaba Cloud copies "
                          "snapshots only to another region.")
    if params.get("kms_key_id") and params.get("encrypted") is False:
        raise CopyRefused("kms_key_id encrypts the copies: drop encrypted: false (or the key).")
    if params.get("latest") and params.get("instance_ids") is None:
        raise CopyRefused("latest selects the newest set of each of instance_ids: give instance_ids, or drop latest.")
    if params["max_concurrent_copies"] < 1:
        raise CopyRefused("max_concurrent_copies must be 1 or more.")
    if params["wait_timeout"] <= 0:
        raise CopyRefused("wait_timeout must be a positive number of seconds.")
    conflicts = ss.user_tags_conflicts(params.get("tags"))
    conflicts += [k for k in (params.get("tags") or {}) if str(k).lower().startswith(("acs:", "aliyun"))]
    if conflicts:
        raise CopyRefused(f"tags: these keys are reserved and cannot be set: {', '.join(sorted(set(conflicts)))}.")
    try:
        params["tags"] = checks.user_tags(params.get("tags"), params["provider"], checks.COPY_OWN_TAGS)
    except ValueError as exc:
        raise CopyRefused(str(exc)) from None
    if params.get("delete_after"):
        try:
            ss.parse_duration(params["delete_after"])
        except ValueError as exc:
            raise CopyRefused(str(exc)) from None


def client_token(copy_set_id, source_snapshot_id):
    """The same request on a rerun gets the same token, so Alibaba makes the copy once."""
    return hashlib.sha256(f"{copy_set_id}/{source_snapshot_id}".encode()).hexdigest()[:40]


class SetCopy:
    """One snapshot_set_copy run over a provider adapter (AwsCopyApi, AlicloudCopyApi)."""

    def __init__(self, api, params, check_mode=False, sleep=time.sleep, clock=time.monotonic, now=None):
        self.api = api
        self.params = params
        self.check_mode = check_mode
        self.sleep = sleep
        self.clock = clock
        self.now = now
        self.warnings = []
        self.source = []
        self.copy_set_id = None
        self.copies = {}  # source snapshot id -> copy member
        self.started = []
        self.discarded = []
        self.limit_waits = 0

    # --- plan ---------------------------------------------------------------------------------

    def _source(self):
        set_id = self.params["set_id"]
        members = self.api.source_members(set_id)
        if not set_id.startswith("ssg-"):
            # Found by a tag filter: keep only the members of the set named (a group is read by its own id).
            members = checks.carrying(members, lambda m: m["tags"], ss.TAG_SET_ID, [set_id])
        if not members:
            raise CopyRefused(f"no snapshot carries {ss.TAG_SET_ID}={set_id} in {self.api.source_region}: check the "
                              "set id and the region (snapshot_set_info lists the sets)")
        pending = [m["snapshot_id"] for m in members if m["state"] not in self.api.COMPLETE]
        if pending:
            raise CopyRefused(f"set {set_id} is not complete yet ({', '.join(pending)} not finished): only completed "
                              "snapshots can be copied; run again once the set is complete")
        missing = ss.incomplete_reason([m["tags"] for m in members], [m["state"] for m in members])
        if missing:
            raise CopyRefused(f"set {set_id} is incomplete in {self.api.source_region} ({missing}): a copy of it would "
                              "not be a whole set; copy another set (snapshot_set_info says which are complete)")
        return sorted(members, key=lambda m: (m.get("device") or "", m["snapshot_id"]))

    def plan(self):
        self.source = self._source()
        existing = checks.carrying(self.api.existing_copies(self.params["set_id"]), lambda m: m["tags"], TAG_COPIED_FROM,
                                   [self.params["set_id"]])
        self.copy_set_id, members, others = choose_copy_set(existing)
        if others:
            self.warnings.append(f"{self.api.destination_region} holds more than one copy of set {self.params['set_id']} "
                                 f"({', '.join([self.copy_set_id] + others)}); {self.copy_set_id} is the one completed "
                                 "and returned")
        source_ids = {m["snapshot_id"] for m in self.source}
        for member in members:
            origin = member["tags"].get(TAG_SOURCE_SNAPSHOT)
            if origin not in source_ids:
                continue
            if member["state"] in self.api.FAILED:
                self.discarded.append(member["snapshot_id"])
                continue
            self.copies.setdefault(origin, member)
        return [m for m in self.source if m["snapshot_id"] not in self.copies]

    def _tags(self, member, delete_after):
        tags = copy_tags(member["tags"], self.copy_set_id, self.params["set_id"], self.api.source_region,
                         member["snapshot_id"], delete_after=delete_after, extra=self.params.get("tags"),
                         members=len(self.source))
        if len(tags) > self.api.TAGS_MAX:
            raise CopyRefused(f"snapshot {member['snapshot_id']} would carry {len(tags)} tags on its copy, more than the "
                              f"{self.api.TAGS_MAX} the provider allows: remove some of its own tags or of O(tags)")
        return tags

    # --- run ----------------------------------------------------------------------------------

    def run(self):
        todo, delete_after = self.prepare()
        changed = bool(todo)
        if self.check_mode:
            return self._result(changed, todo)
        self._copy(todo, delete_after)
        return self._result(changed, [])

    def prepare(self):
        """Plan, name the copy set and refuse oversized tags; (the members to copy, the copies' delete-after).

        Outside check mode a copy that ended in an error state is deleted here, to be made anew.
        """
        todo = self.plan()
        new_set = self.copy_set_id is None
        if new_set and todo:
            self.copy_set_id = None if self.check_mode else ss.new_set_id(self.now)
        delete_after = ss.delete_after_instant(self.params["delete_after"], self.now) if self.params.get("delete_after") \
            else None
        if todo and not self.check_mode:
            for member in todo:
                self._tags(member, delete_after)  # refuse oversized tag sets before the first copy
            for snapshot_id in self.discarded:
                self.api.discard(snapshot_id)
        return todo, delete_after

    def start_copy(self, member, delete_after):
        """Start the copy of one source member and record it; the new copy's id (CopyLimited: not now)."""
        params = self.params
        description = f"Copy of {member['snapshot_id']} (set {params['set_id']}) from {self.api.source_region}"
        tags = self._tags(member, delete_after)
        new_id = self.api.start(member, tags, description, params.get("encrypted") or bool(params.get("kms_key_id")),
                                params.get("kms_key_id"), client_token(self.copy_set_id, member["snapshot_id"]))
        self.started.append(new_id)
        self.copies[member["snapshot_id"]] = dict(snapshot_id=new_id, state="pending", progress="0%",
                                                  device=member.get("device"), tags=tags)
        return new_id

    def unsettled(self):
        """{copy id: source snapshot id} of the copies neither complete nor failed."""
        return {m["snapshot_id"]: origin for origin, m in self.copies.items()
                if m["state"] not in self.api.COMPLETE + self.api.FAILED}

    def failed_copies(self):
        """The message for copies that ended in an error state, or None."""
        failed = [(origin, m) for origin, m in self.copies.items() if m["state"] in self.api.FAILED]
        if not failed:
            return None
        text = ", ".join(f"{m['snapshot_id']} (copy of {origin})" for origin, m in failed)
        return (f"{len(failed)} copies of set {self.params['set_id']} ended in state {failed[0][1]['state']}: {text}. "
                "Run the task again to copy them anew.")

    def _copy(self, todo, delete_after):
        """Start every copy, at most max_concurrent_copies in flight; with wait, also wait for them to complete."""
        params = self.params
        limit = params["max_concurrent_copies"]
        deadline = self.clock() + params["wait_timeout"]
        queue = list(todo)
        in_flight = self.unsettled()
        poll = FIRST_POLL
        while queue or (params["wait"] and in_flight):
            limited = False
            while queue and len(in_flight) < limit:
                member = queue[0]
                try:
                    new_id = self.start_copy(member, delete_after)
                except CopyLimited:
                    limited = True
                    self.limit_waits += 1
                    break
                queue.pop(0)
                in_flight[new_id] = member["snapshot_id"]
                poll = FIRST_POLL
            if not queue and not params["wait"]:
                break
            if self.clock() >= deadline:
                self._timed_out(queue, in_flight)
            self.sleep(poll)
            poll = min(poll * 2, MAX_POLL) if limited or in_flight else poll
            if in_flight:
                self._refresh(in_flight)
        unsettled = self.unsettled()
        if unsettled:
            self._refresh(unsettled, drop=False)
        failed = self.failed_copies()
        if failed:
            raise CopyFailed(failed, self._result(True, []))

    def _refresh(self, in_flight, drop=True):
        found = self.api.describe(list(in_flight))
        for copy_id, origin in list(in_flight.items()):
            current = found.get(copy_id)
            if current is None:
                continue  # a copy just started may not be listed yet
            member = self.copies[origin]
            member.update(state=current["state"], progress=current.get("progress"))
            if drop and current["state"] in self.api.COMPLETE + self.api.FAILED:
                del in_flight[copy_id]

    def _timed_out(self, queue, in_flight):
        waiting = [m["snapshot_id"] for m in queue]
        running = sorted(in_flight)
        what = []
        if running:
            what.append(f"{len(running)} copies still running ({', '.join(running)})")
        if waiting:
            what.append(f"{len(waiting)} not started yet ({', '.join(waiting)})")
        raise CopyFailed(f"copying set {self.params['set_id']} to {self.api.destination_region} did not finish within "
                         f"wait_timeout ({self.params['wait_timeout']} s): {' and '.join(what)}. Run the task again "
                         f"with the same set_id to go on: the copies made so far (set {self.copy_set_id}) are kept.",
                         self._result(bool(self.started or self.discarded), queue))

    # --- result -------------------------------------------------------------------------------

    def _result(self, changed, not_started):
        pending_ids = {m["snapshot_id"] for m in not_started}
        members = []
        for source in self.source:
            copy = self.copies.get(source["snapshot_id"])
            members.append(dict(source_snapshot_id=source["snapshot_id"], device=source.get("device"),
                                snapshot_id=copy["snapshot_id"] if copy else None,
                                state=copy["state"] if copy else ("not_started" if source["snapshot_id"] in pending_ids
                                                                  else None),
                                progress=copy.get("progress") if copy else None))
        complete = bool(members) and all(m["state"] in self.api.COMPLETE for m in members)
        source_tags = self.source[0]["tags"] if self.source else {}
        before = {m["source_snapshot_id"]: m["snapshot_id"] for m in members
                  if m["snapshot_id"] and m["snapshot_id"] not in self.started}
        after = {m["source_snapshot_id"]: m["snapshot_id"] or "(new copy)" for m in members}
        return dict(
            changed=changed, provider=self.api.provider, source_set_id=self.params["set_id"],
            source_region=self.api.source_region, destination_region=self.api.destination_region,
            set_id=self.copy_set_id, instance_id=source_tags.get(ss.TAG_INSTANCE_ID),
            consistency=ss.set_consistency(m["tags"] for m in self.source) if self.source else None,
            complete=complete, members=members, started_snapshot_ids=list(self.started),
            discarded_snapshot_ids=list(self.discarded), limit_waits=self.limit_waits, warnings=list(self.warnings),
            diff=dict(before=dict(set_id=self.copy_set_id if before else None, copies=before),
                      after=dict(set_id=self.copy_set_id or "(new set)", copies=after)))


def copy_api(module):
    """The adapter for the module's provider: source = the module's region, destination = destination_region."""
    params = module.params
    destination = params["destination_region"]
    if params["provider"] == "aws":
        source_region = module.region
        validate(params, source_region)
        source = module.aws_client("ec2")
        target = module.aws_client("ec2", region=destination)
        return AwsCopyApi(source, target, source_region, destination)
    validate(params, params.get("alicloud_region"))
    return AlicloudCopyApi(module.alicloud, AlibabaCloud(_RegionParams(module, destination)))
