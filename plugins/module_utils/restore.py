# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Restoring an instance's volumes from a snapshot set, for both providers.

The provider code (``restore_aws``, ``restore_alicloud``) finds the set and
offers a small adapter with normalised states; this file holds what is the
same everywhere: which set may be restored, the plan, the concurrent
create / detach / attach with one listing call per poll, and the rollback
that puts the original volumes back when anything fails part-way. Nothing
here deletes a volume: a failed restore leaves its new volumes, tagged.
"""

from __future__ import annotations

import time

from ansible_collections.appconsistent.snapshots.plugins.module_utils import snapshot_set as ss
from ansible_collections.appconsistent.snapshots.plugins.module_utils.polling import poll_until

TAG_RESTORED_FROM = ss.TAG_PREFIX + "restored-from"
TAG_RESTORED_FROM_SET = ss.TAG_PREFIX + "restored-from-set"
TAG_RESTORED_AT = ss.TAG_PREFIX + "restored-at"
TAG_RESTORE_FAILED = ss.TAG_PREFIX + "restore-failed"
TAG_REPLACED_BY = ss.TAG_PREFIX + "replaced-by"
TAG_REPLACED_AT = ss.TAG_PREFIX + "replaced-at"
TAG_SAFETY_FOR = ss.TAG_PREFIX + "safety-for"
# On a restored volume: the mode that made it; "replace" means it goes into service in place of the instance's own.
TAG_RESTORE_MODE = ss.TAG_PREFIX + "restore-mode"

MODES = ("replace", "attach", "volumes")
FIRST_POLL = 0.2
MAX_POLL = 2.0


class RestoreRefused(Exception):
    """The restore cannot start; nothing was changed."""


class RestoreFailed(Exception):
    """The restore failed part-way; ``details`` says what was rolled back, per device."""

    def __init__(self, message, details=None):
        super().__init__(message)
        self.details = details or {}


class StepFailed(Exception):
    """One step of the restore failed (an API error, an error state or a timeout)."""


class NotConnected(StepFailed):
    """The provider could not be asked at all (no or rejected credentials, no endpoint); the message says why."""


class Member:
    """One snapshot of the set, in provider-neutral form."""

    def __init__(self, snapshot_id, device=None, size=None, state=None, source_volume_id=None, tags=None,
                 encrypted=None, kms_key_id=None, created=None):
        self.snapshot_id = snapshot_id
        self.device = device
        self.size = size
        self.state = state
        self.source_volume_id = source_volume_id
        self.tags = dict(tags or {})
        self.encrypted = encrypted
        self.kms_key_id = kms_key_id
        self.created = created

    @property
    def complete(self):
        return str(self.state or "").lower() in ss.SnapshotSet.COMPLETE_STATES

    def to_dict(self):
        return dict(snapshot_id=self.snapshot_id, device=self.device, size=self.size, state=self.state,
                    source_volume_id=self.source_volume_id, consistency=self.tags.get(ss.TAG_CONSISTENCY))


class SelectedSet:
    """The set chosen for the restore (``set_id`` is None for loose snapshot ids)."""

    def __init__(self, set_id, members, source_instance_id=None, group_status=None, whole=True):
        self.set_id = set_id
        self.members = list(members)
        self.source_instance_id = source_instance_id
        self.group_status = group_status
        # False for snapshots named one by one: the user chose them, so the rest of their set is not missing.
        self.whole = whole

    @property
    def consistency(self):
        """A whole set's own level (appconsistent:set-consistency); snapshots named one by one, their weakest."""
        if self.whole:
            return ss.set_consistency(m.tags for m in self.members)
        return ss.weakest(m.tags.get(ss.TAG_CONSISTENCY) for m in self.members)

    @property
    def below_set_level(self):
        """The members labelled below the set's level: volumes that were not quiesced (a root volume, say)."""
        level = self.consistency
        return [m.snapshot_id for m in self.members
                if ss.consistency_rank(m.tags.get(ss.TAG_CONSISTENCY)) < ss.consistency_rank(level)]

    @property
    def incomplete_reason(self):
        if self.group_status is not None and self.group_status != "accomplished":
            return f"its snapshot group is {self.group_status}"
        tags = [m.tags for m in self.members] if self.whole else [{} for _m in self.members]
        return ss.incomplete_reason(tags, [m.state for m in self.members])

    @property
    def complete(self):
        return self.incomplete_reason is None

    @property
    def created(self):
        times = [m.created for m in self.members if m.created]
        return min(times) if times else ""

    def to_dict(self):
        return dict(set_id=self.set_id, source_instance_id=self.source_instance_id, consistency=self.consistency,
                    complete=self.complete, members=[m.to_dict() for m in self.members],
                    below_set_level=self.below_set_level)


def newest_qualifying(sets, min_consistency):
    """The newest complete set at least ``min_consistency``, and a sentence on what was seen when there is none."""
    qualifying = [s for s in sets if s.complete and ss.at_least(s.consistency, min_consistency)]
    if qualifying:
        return max(qualifying, key=lambda s: s.created or ""), None
    if not sets:
        return None, "no snapshot set of this instance was found"
    seen = ", ".join(f"{s.set_id} ({s.consistency or 'unknown'}, {'complete' if s.complete else 'incomplete'})"
                     for s in sorted(sets, key=lambda s: s.created or "", reverse=True)[:5])
    return None, f"no complete set at least {min_consistency}-consistent among: {seen}"


def check_set(selected, params):
    """Refuse a set that is incomplete or less consistent than required, unless allowed; returns warnings."""
    warnings = []
    if not selected.members:
        raise RestoreRefused(f"snapshot set {selected.set_id} has no snapshots: check the id and the region")
    minimum = params.get("min_consistency") or "application"
    level = selected.consistency
    if not ss.at_least(level, minimum):
        text = (f"snapshot set {selected.set_id or ', '.join(m.snapshot_id for m in selected.members)} is "
                f"{level or 'of unknown consistency (no appconsistent:consistency tag)'}, less than the required "
                f"{minimum}")
        if not params.get("allow_lower_consistency"):
            raise RestoreRefused(text + ": set allow_lower_consistency to restore it anyway, or lower min_consistency")
        warnings.append(text + "; restoring it because allow_lower_consistency is set")
    unusable = [m for m in selected.members if not m.complete]
    reason = selected.incomplete_reason
    if unusable or reason:
        names = ", ".join(f"{m.snapshot_id} ({m.state})" for m in unusable)
        # Snapshots that are missing never arrive: only unfinished ones are worth waiting for.
        missing = selected.whole and ss.missing_reason(m.tags for m in selected.members) is not None
        what = "; ".join(t for t in (reason if missing else None, names or reason) if t)
        if not params.get("allow_incomplete"):
            raise RestoreRefused(f"snapshot set {selected.set_id} is incomplete: {what}; "
                                 + ("it will not become complete: restore another set, or set allow_incomplete to "
                                    "restore the snapshots it has" if missing else
                                    "wait until its snapshots have completed, or set allow_incomplete to restore only "
                                    "the completed ones"))
        selected.members = [m for m in selected.members if m.complete]
        if not selected.members:
            raise RestoreRefused(f"snapshot set {selected.set_id} has no completed snapshot to restore ({what})")
        warnings.append(f"snapshot set {selected.set_id} is incomplete ({what}); restoring the completed snapshots "
                        "it has" + (f", skipped {names}" if names else ""))
    return warnings


def origin_of(volume):
    """The snapshot a volume holds the data of: our tag (ResetDisk keeps the disk id), else the provider's field."""
    return (volume.get("tags") or {}).get(TAG_RESTORED_FROM) or volume.get("snapshot_id")


class Waiter:
    """Polls with one listing call per round for every resource of a step."""

    def __init__(self, sleep=time.sleep, clock=time.monotonic):
        self.sleep = sleep
        self.clock = clock

    def until(self, read, done, failed, timeout, what):
        """Poll ``read()`` (-> {id: item}) until ``done`` holds for every id; ``failed(id, item)`` -> reason or None."""
        items, pending = {}, []

        def all_done():
            items.clear()
            items.update(read())
            pending[:] = []
            for key, item in items.items():
                reason = failed(key, item)
                if reason:
                    raise StepFailed(reason)
                if not done(key, item):
                    pending.append(key)
            return not pending

        if not poll_until(all_done, timeout, self.sleep, self.clock, FIRST_POLL, MAX_POLL):
            raise StepFailed(f"{what} did not finish within {timeout} s: {', '.join(sorted(pending))}")
        return items


class Entry:
    """One device of the plan and what has been done to it."""

    def __init__(self, member, device, original=None):
        self.member = member
        self.device = device
        self.original = original  # volume dict currently at the device (replace) or None
        self.spec = None
        self.new_volume_id = None
        self.detached_original = False
        self.attached_new = False
        self.unchanged = False
        self.outcome = None

    def to_dict(self):
        return dict(device=self.device, snapshot_id=self.member.snapshot_id, volume_id=self.new_volume_id,
                    original_volume_id=(self.original or {}).get("id"), unchanged=self.unchanged,
                    volume=dict(self.spec or {}), outcome=self.outcome)


class VolumeRestore:
    """Replace / attach / volumes through create, detach and attach (AWS, and Alibaba when ResetDisk does not apply).

    ``api`` is the provider adapter; see restore_aws.AwsRestoreApi for the methods it offers.
    """

    def __init__(self, api, params, check_mode=False, sleep=time.sleep, clock=time.monotonic):
        self.api = api
        self.params = params
        self.check_mode = check_mode
        self.waiter = Waiter(sleep, clock)
        self.clock = clock
        self.timings = {}
        self.was_running = False
        self.instance = None
        self.entries = []
        self.warnings = []

    # --- plan -----------------------------------------------------------------------------------

    def plan(self, selected, target_id):
        mode = self.params["mode"]
        self.instance = self.api.instance(target_id) if target_id else None
        if target_id and self.instance is None and not (mode == "volumes" and self.params.get("zone")):
            raise RestoreRefused(f"instance {target_id} does not exist in this region"
                                 + (": give zone for mode volumes" if mode == "volumes" else ""))
        if mode == "replace":
            missing = [m.snapshot_id for m in selected.members if not m.device]
            if missing:
                raise RestoreRefused(f"snapshots {', '.join(missing)} carry no device tag (appconsistent:device or Device): "
                                     "replace needs it to know where to attach; use mode attach or volumes")
            devices = [m.device for m in selected.members]
            if len(set(devices)) != len(devices):
                raise RestoreRefused(f"the snapshots name the same device twice ({', '.join(devices)}): "
                                     "give one set, or use mode attach or volumes")
            if self.instance["state"] not in ("running", "stopped"):
                raise RestoreRefused(f"instance {target_id} is {self.instance['state']}: replace needs it running or "
                                     "stopped; try again when it has settled")
        current = self.api.volumes(list(self.instance["devices"].values())) if self.instance else {}
        by_device = {dev: current.get(vid, dict(id=vid)) for dev, vid in (self.instance or {}).get("devices", {}).items()}
        already = {origin_of(v): v for v in current.values() if origin_of(v)}
        if mode == "volumes":
            already = self.api.restored_volumes([m.snapshot_id for m in selected.members])
        if self.params.get("force"):
            already = {}
        free = []
        if mode == "attach":
            wanted = sum(1 for m in selected.members if m.snapshot_id not in already)
            free = self.api.free_devices(self.instance, wanted)
        for member in selected.members:
            if mode == "replace":
                entry = Entry(member, member.device, by_device.get(member.device))
                if entry.original and origin_of(entry.original) == member.snapshot_id:
                    entry.unchanged = True
                    entry.new_volume_id = entry.original["id"]
            else:
                done = already.get(member.snapshot_id)
                entry = Entry(member, done.get("device") if done and mode == "attach" else None)
                if done:
                    entry.unchanged = True
                    entry.new_volume_id = done["id"]
                elif mode == "attach":
                    entry.device = free.pop(0)
            if self.params.get("force") and entry.unchanged:
                entry.unchanged = False
                entry.new_volume_id = None
            if not entry.unchanged:
                source = entry.original or self.api.source_volume(member)
                entry.spec = self.api.volume_spec(member, source, self.params, self._zone())
            self.entries.append(entry)
        return self.entries

    def _zone(self):
        if self.params.get("zone") and self.params["mode"] == "volumes":
            return self.params["zone"]
        if self.instance:
            return self.instance["zone"]
        raise RestoreRefused("mode volumes needs zone, target_instance_id or a set whose source instance still exists")

    @property
    def todo(self):
        return [e for e in self.entries if not e.unchanged]

    def diff(self):
        before = dict((self.instance or {}).get("devices") or {})
        after = dict(before)
        for entry in self.entries:
            if entry.device:
                after[entry.device] = entry.new_volume_id or f"(new volume from {entry.member.snapshot_id})"
        return dict(before=before, after=after)

    # --- run ------------------------------------------------------------------------------------

    def run(self, selected):
        started = self.clock()
        todo = self.todo
        if self.check_mode or not todo:
            return self._result(changed=bool(todo), state=(self.instance or {}).get("state"))
        mode = self.params["mode"]
        if mode == "replace":
            self._replace(selected, todo)
        else:
            self._timed("create_seconds", self._create, selected, todo)
            if mode == "attach":
                try:
                    self._timed("attach_seconds", self._attach_new, todo)
                except StepFailed as exc:
                    self._rollback_attach(todo, exc)
            self._tag_done(todo)
        self.timings["total_seconds"] = round(self.clock() - started, 3)
        state = self.api.instance(self.instance["id"])["state"] if self.instance else None
        return self._result(changed=True, state=state)

    def _result(self, changed, state):
        return dict(changed=changed, device_map=[e.to_dict() for e in self.entries], instance_state=state,
                    timings=dict(self.timings), warnings=list(self.warnings))

    def _timed(self, name, func, *args):
        start = self.clock()
        try:
            return func(*args)
        finally:
            self.timings[name] = round(self.clock() - start, 3)

    def _replace(self, selected, todo):
        instance_id = self.instance["id"]
        self.was_running = self.instance["state"] == "running"
        # the volumes are made while the instance still runs: the downtime is only the swap
        self._timed("create_seconds", self._create, selected, todo)
        if self.was_running:
            try:
                self._timed("stop_seconds", self._stop, instance_id)
            except StepFailed as exc:
                self._tag_failed(todo)
                self._fail(f"instance {instance_id} did not stop ({exc}); no volume was detached or attached", todo,
                           restart=True)
        try:
            self._timed("swap_seconds", self._swap, todo)
            if self.was_running:
                self._timed("start_seconds", self._start, instance_id)
        except StepFailed as exc:
            self._rollback_replace(todo, exc)
        self._tag_done(todo)

    def _create(self, selected, todo):
        """Issue every CreateVolume first, then wait for all of them with one listing per poll."""
        try:
            for entry in todo:
                tags = {TAG_RESTORED_FROM: entry.member.snapshot_id, TAG_RESTORED_AT: ss.format_instant(ss.utcnow()),
                        TAG_RESTORE_MODE: self.params["mode"]}
                if selected.set_id:
                    tags[TAG_RESTORED_FROM_SET] = selected.set_id
                tags.update(self.params.get("tags") or {})
                entry.new_volume_id = self.api.create_volume(entry.spec, tags)
                entry.outcome = "created"
            ids = [e.new_volume_id for e in todo]
            self.waiter.until(lambda: self.api.volumes(ids), lambda k, v: v["state"] == "available",
                              lambda k, v: f"volume {k} went to state {v['state']}" if v["state"] in ("error", "deleted")
                              else None, self.params["volume_timeout"], "volume creation")
        except StepFailed as exc:
            self._tag_failed(todo)
            self._fail(f"creating the volumes failed: {exc}; no volume was detached or attached", todo,
                       restart=False)

    def _stop(self, instance_id):
        self.api.stop(instance_id)
        self.waiter.until(lambda: {instance_id: self.api.instance(instance_id)}, lambda k, i: i["state"] == "stopped",
                          lambda k, i: None, self.params["instance_timeout"], f"stopping instance {instance_id}")

    def _start(self, instance_id):
        self.api.start(instance_id)
        self.waiter.until(lambda: {instance_id: self.api.instance(instance_id)}, lambda k, i: i["state"] == "running",
                          lambda k, i: f"instance {instance_id} is {i['state']}" if i["state"] in ("terminated",) else None,
                          self.params["instance_timeout"], f"starting instance {instance_id}")

    def _swap(self, todo):
        instance_id = self.instance["id"]
        originals = [e for e in todo if e.original]
        for entry in originals:
            self.api.detach(entry.original["id"], instance_id, entry.device)
            entry.detached_original = True
        self._wait_detached([e.original["id"] for e in originals])
        for entry in todo:
            self.api.attach(entry.new_volume_id, instance_id, entry.device)
            entry.attached_new = True
        self._wait_attached({e.new_volume_id: e.device for e in todo}, instance_id)

    def _attach_new(self, todo):
        instance_id = self.instance["id"]
        for entry in todo:
            self.api.attach(entry.new_volume_id, instance_id, entry.device)
            entry.attached_new = True
        found = self._wait_attached({e.new_volume_id: e.device for e in todo}, instance_id)
        for entry in todo:
            entry.device = found[entry.new_volume_id].get("device") or entry.device
            entry.outcome = "attached"

    def _wait_detached(self, ids):
        if ids:
            self.waiter.until(lambda: self.api.volumes(ids), lambda k, v: v["state"] == "available",
                              lambda k, v: f"volume {k} went to state {v['state']}" if v["state"] == "error" else None,
                              self.params["volume_timeout"], "detaching volumes")

    def _wait_attached(self, wanted, instance_id):
        def done(key, vol):
            return vol["state"] == "in-use" and vol.get("attach_state") == "attached" and vol.get("instance_id") == instance_id \
                and (wanted[key] is None or vol.get("device") == wanted[key])
        return self.waiter.until(lambda: self.api.volumes(list(wanted)), done,
                                 lambda k, v: f"volume {k} went to state {v['state']}" if v["state"] == "error" else None,
                                 self.params["volume_timeout"], "attaching volumes")

    # --- rollback -------------------------------------------------------------------------------

    def _rollback_replace(self, todo, cause):
        """Detach what was attached, re-attach the originals at their devices, start the instance if it ran."""
        instance_id = self.instance["id"]
        problems = []
        attached = [e for e in todo if e.attached_new]
        for entry in attached:
            try:
                self.api.detach(entry.new_volume_id, instance_id, entry.device)
            except StepFailed as exc:
                problems.append(f"{entry.device}: could not detach new volume {entry.new_volume_id}: {exc}")
        try:
            self._wait_detached([e.new_volume_id for e in attached])
        except StepFailed as exc:
            problems.append(f"new volumes still attached: {exc}")
        back = []
        for entry in [e for e in todo if e.detached_original]:
            try:
                self.api.attach(entry.original["id"], instance_id, entry.device)
                back.append(entry)
            except StepFailed as exc:
                problems.append(f"{entry.device}: could not re-attach original volume {entry.original['id']}: {exc}")
        try:
            if back:
                self._wait_attached({e.original["id"]: e.device for e in back}, instance_id)
        except StepFailed as exc:
            problems.append(f"original volumes not attached again: {exc}")
        for entry in todo:
            original = (entry.original or {}).get("id")
            if not entry.detached_original:
                entry.outcome = f"rolled back: original {original} never detached" if original else "rolled back"
            elif entry in back and not any(original in p for p in problems):
                entry.outcome = f"rolled back: original {original} attached again"
            else:
                entry.outcome = f"ROLLBACK INCOMPLETE: original {original} is detached; attach it at {entry.device}"
            entry.attached_new = False
        self._tag_failed(todo)
        self._fail(f"the restore failed ({cause}) and was rolled back", todo, restart=True, problems=problems)

    def _rollback_attach(self, todo, cause):
        instance_id = self.instance["id"]
        problems = []
        detached = []
        for entry in [e for e in todo if e.attached_new]:
            try:
                self.api.detach(entry.new_volume_id, instance_id, entry.device)
                detached.append(entry)
            except StepFailed as exc:
                problems.append(f"could not detach new volume {entry.new_volume_id}: {exc}")
        try:
            self._wait_detached([e.new_volume_id for e in detached])
            for entry in detached:
                entry.attached_new = False
                entry.outcome = "rolled back: detached again"
        except StepFailed as exc:
            problems.append(f"new volumes still attached: {exc}")
        self._tag_failed(todo)
        self._fail(f"attaching the restored volumes failed ({cause}); the instance keeps its volumes", todo,
                   restart=False, problems=problems)

    def _fail(self, message, todo, restart, problems=None):
        problems = list(problems or [])
        state = None
        if self.instance:
            instance_id = self.instance["id"]
            if restart and self.was_running:
                try:
                    current = self.api.instance(instance_id)["state"]
                    if current != "running":
                        self._start(instance_id)
                except StepFailed as exc:
                    problems.append(f"instance {instance_id} could not be started again: {exc}")
            try:
                state = self.api.instance(instance_id)["state"]
            except StepFailed:
                state = None
        kept = [e.new_volume_id for e in todo if e.new_volume_id]
        text = message
        if kept:
            text += f"; the new volumes {', '.join(kept)} are kept, tagged {TAG_RESTORE_FAILED}"
        if problems:
            text += "; ROLLBACK PROBLEMS: " + "; ".join(problems)
        if state:
            text += f"; instance is {state}"
        raise RestoreFailed(text, dict(device_map=[e.to_dict() for e in self.entries], instance_state=state,
                                       rollback_problems=problems, timings=dict(self.timings)))

    # --- tags -----------------------------------------------------------------------------------

    def _tag_failed(self, todo):
        ids = [e.new_volume_id for e in todo if e.new_volume_id]
        if ids:
            try:
                self.api.tag_volumes(ids, {TAG_RESTORE_FAILED: ss.format_instant(ss.utcnow())})
            except StepFailed as exc:
                self.warnings.append(f"could not tag the volumes of the failed restore: {exc}")

    def _tag_done(self, todo):
        now = ss.format_instant(ss.utcnow())
        for entry in todo:
            if entry.original and entry.detached_original:
                try:
                    self.api.tag_volumes([entry.original["id"]], {TAG_REPLACED_BY: entry.new_volume_id, TAG_REPLACED_AT: now})
                except StepFailed as exc:
                    self.warnings.append(f"could not tag original volume {entry.original['id']}: {exc}")
                entry.outcome = "replaced"
            elif entry.outcome == "created" and self.params["mode"] == "replace":
                entry.outcome = "attached"
