# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

"""snapshot_set_copy over many sets in one task (set_ids, or instance_ids with latest): one queue of copies, one
limit per destination Region.

Every set is the copy of one set of set_copy (its plan, its copy set id, its tags, its idempotency); what is
shared is the destination Region's concurrent-copy limit (20 copies per destination Region on AWS, not
adjustable): max_concurrent_copies counts the copies in flight of all the sets together, copies already
running from an earlier run included, and the copies in flight are read with one listing call per round for
all of them. A set whose copy fails or is refused is reported in its own result and the others go on, unless
stop_on_failure; a set cut short keeps its appconsistent:members tag and so stays incomplete, as for one set.
"""

from __future__ import annotations

import concurrent.futures
import time

from ansible_collections.appconsistent.snapshots.plugins.module_utils.alicloud import AlibabaCloudError
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import AppConsistentAWSError
from ansible_collections.appconsistent.snapshots.plugins.module_utils.set_copy import FIRST_POLL
from ansible_collections.appconsistent.snapshots.plugins.module_utils.set_copy import MAX_POLL
from ansible_collections.appconsistent.snapshots.plugins.module_utils.set_copy import CopyLimited
from ansible_collections.appconsistent.snapshots.plugins.module_utils.set_copy import CopyRefused
from ansible_collections.appconsistent.snapshots.plugins.module_utils.set_copy import SetCopy

NOT_STARTED = "not copied: stop_on_failure is set and the copy of another set failed"
PROVIDER_ERRORS = (AppConsistentAWSError, AlibabaCloudError)
# Sets planned at once: their reads are paced by the account's buckets, this only keeps their answers coming.
PREPARE_WORKERS = 8


def provider_message(exc):
    return str(getattr(exc, "message", None) or exc)


class Entry:
    """One set of the task: its SetCopy, what is left to start and, once it failed, why."""

    def __init__(self, run):
        self.run = run
        self.todo = []
        self.delete_after = None
        self.error = None
        self.result = None
        self.instance_id = None  # the instance it was chosen for, with instance_ids

    @property
    def set_id(self):
        return self.run.params["set_id"]


class ManyCopy:
    """One snapshot_set_copy task over the sets of ``set_ids``, through one provider adapter (set_copy)."""

    def __init__(self, api, params, check_mode=False, sleep=time.sleep, clock=time.monotonic, now=None):
        self.api = api
        self.params = params
        self.check_mode = check_mode
        self.sleep = sleep
        self.clock = clock
        option = "instance_ids" if params.get("instance_ids") is not None else "set_ids"
        chosen = params[option]
        if not chosen:
            raise CopyRefused(f"{option} is empty: name at least one.")
        twice = sorted({s for s in chosen if chosen.count(s) > 1})
        if twice:
            raise CopyRefused(f"{option} names {', '.join(twice)} more than once.")
        if (option == "instance_ids") != bool(params.get("latest")):
            raise CopyRefused("instance_ids selects each instance's newest set: give it with latest: true."
                              if option == "instance_ids" else "latest selects the newest set of each of instance_ids.")
        self.option = option
        self.stopped = False
        self.entries = []
        for item in chosen:
            set_id = item if option == "set_ids" else None
            entry = Entry(SetCopy(api, dict(params, set_id=set_id, set_ids=None), check_mode=check_mode, sleep=sleep,
                                  clock=clock, now=now))
            entry.instance_id = item if option == "instance_ids" else None
            self.entries.append(entry)

    def _fail(self, entry, message):
        entry.error = message
        if self.params.get("stop_on_failure"):
            self.stopped = True

    def run(self):
        # Every set's plan is read-only calls (and the deletion of copies in an error state): read side by side,
        # as the source's and the destination's describes are what the task waits for before its first copy.
        workers = min(PREPARE_WORKERS, len(self.entries))
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(self._prepare, self.entries))
        if self.params.get("stop_on_failure") and any(e.error for e in self.entries):
            self.stopped = True
            for entry in self.entries:
                if entry.error is None:
                    entry.error = NOT_STARTED
        if not self.check_mode and not self.stopped:
            self._copy()
        return self._result()

    def _prepare(self, entry):
        try:
            if entry.instance_id:
                try:
                    entry.run.params["set_id"] = self.api.latest_set_id(entry.instance_id,
                                                                        self.params.get("min_consistency") or "application")
                except CopyRefused as exc:
                    raise CopyRefused(f"instance {entry.instance_id}: {exc}") from None
            entry.todo, entry.delete_after = entry.run.prepare()
        except CopyRefused as exc:
            entry.error = str(exc)
        except PROVIDER_ERRORS as exc:
            entry.error = provider_message(exc)

    # --- one queue for every set ------------------------------------------------------------------------

    def _copy(self):
        params = self.params
        limit = params["max_concurrent_copies"]
        deadline = self.clock() + params["wait_timeout"]
        queue = [(entry, member) for entry in self.entries if entry.error is None for member in entry.todo]
        # Copies still running from an earlier run hold their slot of the destination Region's limit.
        in_flight = {copy_id: (entry, origin) for entry in self.entries if entry.error is None
                     for copy_id, origin in entry.run.unsettled().items()}
        poll = FIRST_POLL
        while queue or (params["wait"] and in_flight):
            limited = self._start(queue, in_flight, limit)
            if self.stopped:
                queue.clear()
            if queue:
                poll = FIRST_POLL  # a slot freed is a copy to start: look again soon
            elif not params["wait"] or not in_flight:
                break
            if self.clock() >= deadline:
                self._timed_out(queue, in_flight)
                return
            self.sleep(poll)
            poll = min(poll * 2, MAX_POLL) if limited or in_flight else poll
            if in_flight:
                self._refresh(in_flight)
        unsettled = {copy_id: (entry, origin) for entry in self.entries for copy_id, origin in entry.run.unsettled().items()}
        if unsettled:
            self._refresh(unsettled, drop=False)
        for entry in self.entries:
            if entry.error is None:
                failed = entry.run.failed_copies()
                if failed:
                    entry.error = failed

    def _start(self, queue, in_flight, limit):
        """Start queued copies while the limit allows; True when the provider refused one for now."""
        limited = False
        tried = 0
        while queue and len(in_flight) < limit and tried < len(queue) and not self.stopped:
            entry, member = queue[0]
            if entry.error is not None:
                queue.pop(0)
                continue
            try:
                new_id = entry.run.start_copy(member, entry.delete_after)
            except CopyLimited:
                limited = True
                entry.run.limit_waits += 1
                if self.api.provider != "alicloud":
                    break  # AWS: the destination Region's limit, the same for every set
                # Alibaba Cloud: one unfinished copy per disk; the next set's copy may be of another disk.
                queue.append(queue.pop(0))
                tried += 1
                continue
            except CopyRefused as exc:
                self._fail(entry, str(exc))
                continue
            except PROVIDER_ERRORS as exc:
                self._fail(entry, f"copying {member['snapshot_id']} of set {entry.set_id} failed: {provider_message(exc)}")
                continue
            queue.pop(0)
            tried = 0
            in_flight[new_id] = (entry, member["snapshot_id"])
        return limited

    def _refresh(self, in_flight, drop=True):
        """One listing for the copies in flight of every set."""
        found = self.api.describe(list(in_flight))
        for copy_id, (entry, origin) in list(in_flight.items()):
            current = found.get(copy_id)
            if current is None:
                continue  # a copy just started may not be listed yet
            entry.run.copies[origin].update(state=current["state"], progress=current.get("progress"))
            if drop and current["state"] in self.api.COMPLETE + self.api.FAILED:
                del in_flight[copy_id]
                if current["state"] in self.api.FAILED and self.params.get("stop_on_failure"):
                    self.stopped = True

    def _timed_out(self, queue, in_flight):
        for entry in self.entries:
            waiting = [m["snapshot_id"] for e, m in queue if e is entry]
            running = sorted(c for c, (e, _o) in in_flight.items() if e is entry)
            if entry.error is not None or not (waiting or running):
                continue
            what = []
            if running:
                what.append(f"{len(running)} copies still running ({', '.join(running)})")
            if waiting:
                what.append(f"{len(waiting)} not started yet ({', '.join(waiting)})")
            entry.error = (f"copying set {entry.set_id} to {self.api.destination_region} did not finish within "
                           f"wait_timeout ({self.params['wait_timeout']} s): {' and '.join(what)}. Run the task again "
                           f"with the same set to go on: the copies made so far (set {entry.run.copy_set_id}) are kept.")
            entry.result = entry.run._result(bool(entry.run.started or entry.run.discarded),  # pylint: disable=protected-access
                                             [m for e, m in queue if e is entry])

    # --- result -------------------------------------------------------------------------------------------

    def _result(self):
        copies = []
        warnings = []
        for entry in self.entries:
            run = entry.run
            if entry.result is not None:
                row = entry.result
            elif run.source:
                row = run._result(bool(entry.todo or run.discarded), entry.todo if self.check_mode else [])  # pylint: disable=protected-access
            else:
                row = dict(changed=False, source_set_id=entry.set_id, set_id=None, complete=False, members=[],
                           instance_id=entry.instance_id)
            if entry.error is None and self.stopped and not run.started and entry.todo and not self.check_mode:
                entry.error = NOT_STARTED
            row = dict(row, failed=entry.error is not None)
            if entry.error is not None:
                row["msg"] = entry.error
            warnings += [f"set {entry.set_id}: {w}" for w in row.pop("warnings", [])]
            copies.append(row)
        failed = [r for r in copies if r["failed"]]
        diff = dict(before={r["source_set_id"]: r["diff"]["before"] for r in copies if "diff" in r},
                    after={r["source_set_id"]: r["diff"]["after"] for r in copies if "diff" in r})
        for row in copies:
            row.pop("diff", None)
        return dict(changed=any(r["changed"] for r in copies), provider=self.api.provider,
                    source_region=self.api.source_region, destination_region=self.api.destination_region,
                    copies=copies, failed_sets=[r["source_set_id"] or r["instance_id"] for r in failed], warnings=warnings,
                    diff=diff, failed=bool(failed),
                    msg=(f"{len(failed)} of {len(copies)} set copies failed: "
                         + "; ".join(f"{r['source_set_id'] or r['instance_id']}: {r['msg']}" for r in failed)) if failed
                    else f"{len(copies)} sets copied to {self.api.destination_region}")
