# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

"""restore_volumes over many instances in one task (set_ids, or instance_ids with latest).

Every instance's restore is the single restore of restore_run, with all its checks and its rollback; what
is shared is what the account's limits make worth sharing: one pacer (the module's), one client, and the
waits' listing calls, merged across instances so that fifty instances waiting for their volumes make one
DescribeVolumes per round, not fifty. Every instance is planned (read-only) before any is changed; one
instance's failure is reported with its own result and does not stop the others unless stop_on_failure.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time

from ansible_collections.appconsistent.snapshots.plugins.module_utils import restore
from ansible_collections.appconsistent.snapshots.plugins.module_utils.restore_alicloud import planned_calls
from ansible_collections.appconsistent.snapshots.plugins.module_utils.restore_run import RestoreRun

MANY_OPTIONS = ("set_ids", "instance_ids")
NOT_STARTED = "not started: stop_on_failure is set and the restore of another instance failed"


class SharedReads:
    """Reads of many threads merged into rounds: a thread's ids are read by the next call, made for everyone.

    ``read_many(ids)`` -> {id: item}. While one round's call is on its way, the ids asked for meanwhile gather
    for the next one, so the calls made follow the cloud's answer time, not the number of waiting threads.
    """

    def __init__(self, read_many):
        self.read_many = read_many
        self.cond = threading.Condition()
        self.pending = set()
        self.next_round = 1
        self.completed = 0
        self.reading = False
        self.results = {}
        self.errors = {}

    def read(self, ids):
        ids = list(ids)
        with self.cond:
            self.pending.update(ids)
            mine = self.next_round
            while self.completed < mine:
                if self.reading:
                    self.cond.wait()
                    continue
                self.reading = True
                batch, self.pending = sorted(self.pending), set()
                number, self.next_round = self.next_round, self.next_round + 1
                self.cond.release()
                try:
                    found, error = self.read_many(batch), None
                except restore.StepFailed as exc:
                    found, error = {}, exc
                finally:
                    self.cond.acquire()
                for key in batch:
                    self.results.pop(key, None)  # an id this round did not find is not found, whatever it was before
                self.results.update(found)
                if error is not None:
                    self.errors[number] = error
                self.completed = number
                self.reading = False
                self.cond.notify_all()
            error = self.errors.get(mine)
            if error is not None:
                raise restore.StepFailed(str(error))
            return {key: self.results[key] for key in ids if key in self.results}


class SharedApi:
    """A provider adapter whose volume and instance reads go through SharedReads; the rest is the adapter's."""

    def __init__(self, api, volume_reads, instance_reads):
        self._api = api
        self._volume_reads = volume_reads
        self._instance_reads = instance_reads

    def __getattr__(self, name):
        return getattr(self._api, name)

    def volumes(self, volume_ids):
        found = self._volume_reads.read(volume_ids)
        return {vid: found.get(vid, dict(id=vid, state="unknown", tags={})) for vid in volume_ids}

    def instance(self, instance_id):
        if self._instance_reads is None:
            return self._api.instance(instance_id)
        return self._instance_reads.read([instance_id]).get(instance_id)


class _InstanceModule:
    """The module as one instance's restore sees it: the task's clients and pacer, one instance's selector."""

    def __init__(self, module, selector, lock):
        self._module = module
        self._lock = lock  # the module makes its clients on first use: one thread at a time
        self.params = dict(module.params, set_ids=None, instance_ids=None, stop_on_failure=False)
        self.params.update(selector)
        self.check_mode = module.check_mode
        self.given = getattr(module, "given", frozenset())

    def aws_client(self, service, region=None):
        with self._lock:
            return self._module.aws_client(service, region)

    @property
    def alicloud(self):
        with self._lock:
            return self._module.alicloud

    @property
    def pacer(self):
        return getattr(self._module, "pacer", None)


def validate_many(params):
    """Refuse a many-instance task that cannot work, before anything is read."""
    given = [name for name in MANY_OPTIONS if params.get(name) is not None]
    chosen = params[given[0]]
    if not chosen:
        raise restore.RestoreRefused(f"{given[0]} is empty: name at least one")
    duplicates = sorted({item for item in chosen if chosen.count(item) > 1})
    if duplicates:
        raise restore.RestoreRefused(f"{given[0]} names {', '.join(duplicates)} more than once")
    if given[0] == "instance_ids" and not params.get("latest"):
        raise restore.RestoreRefused("instance_ids selects each instance's newest set: add latest: true (or give set_ids)")
    if params.get("latest") and given[0] != "instance_ids":
        raise restore.RestoreRefused("latest needs instance_id or instance_ids")
    if params.get("target_instance_id"):
        raise restore.RestoreRefused("target_instance_id restores one set onto one instance: with set_ids or "
                                     "instance_ids every set is restored onto its own instance")
    if params.get("max_concurrent_instances") is not None and params["max_concurrent_instances"] < 1:
        raise restore.RestoreRefused("max_concurrent_instances must be 1 or more")
    if given[0] == "set_ids":
        return [dict(set_id=item) for item in chosen]
    return [dict(instance_id=item, latest=True) for item in chosen]


class RestoreMany:
    """One restore_volumes task over many instances; ``module`` as for RestoreRun."""

    def __init__(self, module, sleep=time.sleep, clock=time.monotonic):
        self.module = module
        self.params = module.params
        self.sleep = sleep
        self.clock = clock
        self._reads = {}
        self._reads_lock = threading.Lock()
        self._clients_lock = threading.Lock()

    def _shared(self, api):
        """The adapter with the task's shared reads (one pair per adapter class: the same client underneath)."""
        with self._reads_lock:
            key = type(api).__name__
            if key not in self._reads:
                instances = getattr(api, "instances", None)
                self._reads[key] = (SharedReads(api.volumes), SharedReads(instances) if instances else None)
            volume_reads, instance_reads = self._reads[key]
        return SharedApi(api, volume_reads, instance_reads)

    def _run_for(self, selector):
        run = RestoreRun(_InstanceModule(self.module, selector, self._clients_lock), sleep=self.sleep, clock=self.clock)
        run.wrap_api = self._shared
        return run

    def run(self):
        """The task's result: one entry per instance in ``restores``; ``failed`` when any of them failed."""
        selectors = validate_many(self.params)
        runs = [self._run_for(s) for s in selectors]
        entries = [dict(selector=s, run=r, warnings=[], result=None, error=None) for s, r in zip(selectors, runs)]
        workers = min(len(entries), self.params.get("max_concurrent_instances") or len(entries))
        # Read-only first: every instance is planned before any is changed, so a refusal costs nothing.
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(self._prepare, entries))
        self._share_targets(entries)
        stop = self.params.get("stop_on_failure")
        if stop and any(e["error"] for e in entries):
            for entry in entries:
                if entry["error"] is None:
                    entry["error"] = "not started: stop_on_failure is set and the restore of another instance was refused"
        else:
            if self.module.check_mode:
                self._plan_calls([e for e in entries if e["error"] is None])
            stopped = threading.Event()
            chains = self._chains([e for e in entries if e["error"] is None])
            with concurrent.futures.ThreadPoolExecutor(max_workers=min(workers, max(len(chains), 1))) as pool:
                list(pool.map(lambda chain: [self._execute(e, stopped if stop else None) for e in chain], chains))
        return self._result(entries)

    def failure_details(self):
        """What to return with a refusal of the whole task: the mode (no instance was looked at)."""
        return dict(mode=self.params.get("mode"))

    def _prepare(self, entry):
        try:
            entry["warnings"] = entry["run"].prepare()
        except restore.RestoreRefused as exc:
            entry["error"] = str(exc)

    def _same_target(self, entries):
        """{instance: [entries]} of the instances that more than one prepared set of this task is restored onto."""
        by_target = {}
        for entry in entries:
            if entry["error"] is None and entry["run"].target:
                by_target.setdefault(entry["run"].target, []).append(entry)
        return {target: same for target, same in by_target.items() if len(same) > 1}

    def _share_targets(self, entries):
        """Several sets of one instance: refused with replace (they would swap the same devices), given device
        names of their own with attach (each set's plan picked the same free ones), left as they are with volumes."""
        mode = self.params["mode"]
        if mode == "volumes":
            return
        for target, same in self._same_target(entries).items():
            names = ", ".join(e["run"].selected.set_id or "?" for e in same)
            if mode == "replace":
                refusal = (f"the sets {names} are all of instance {target}: with mode replace restore one of them per "
                           "task (instance_ids with latest picks the newest), or use mode attach or volumes")
            else:
                refusal = self._share_free_devices(same)
            if refusal:
                for entry in same:
                    entry["error"] = refusal

    @staticmethod
    def _share_free_devices(same):
        """The free device names of the instance, dealt out over the sets attached to it; a refusal or None."""
        wanted = [item for e in same for item in e["run"].restorer.todo]
        restorer = same[0]["run"].restorer
        try:
            free = restorer.api.free_devices(restorer.instance, len(wanted))
        except restore.RestoreRefused as exc:
            return f"{exc} (the sets {', '.join(e['run'].selected.set_id or '?' for e in same)} are attached together)"
        except restore.StepFailed as exc:
            return f"cannot plan the restore: {exc}"
        for item, device in zip(wanted, free):
            item.device = device
        return None

    def _chains(self, entries):
        """The entries in runs that may go side by side: the sets attached to one instance go one after another,
        so that no two attach calls for one instance are in flight at once."""
        if self.params["mode"] != "attach":
            return [[entry] for entry in entries]
        chains, by_target = [], {}
        for entry in entries:
            target = entry["run"].target
            if target in by_target:
                by_target[target].append(entry)
                continue
            chain = [entry]
            chains.append(chain)
            if target:
                by_target[target] = chain
        return chains

    def _execute(self, entry, stopped):
        if stopped is not None and stopped.is_set():
            entry["error"] = NOT_STARTED
            return
        try:
            entry["result"] = entry["run"].execute(entry["warnings"])
        except restore.RestoreFailed as exc:
            entry["error"] = str(exc)
            entry["details"] = exc.details
        except (restore.StepFailed, restore.RestoreRefused) as exc:
            entry["error"] = str(exc)
        if entry["error"] is not None and stopped is not None:
            stopped.set()

    def _plan_calls(self, entries):
        """Check mode: count the EC2 and ECS calls the restores would make, for api_pacing's estimated_floor_s."""
        pacer = getattr(self.module, "pacer", None)
        if pacer is None:
            return
        counts = {}
        for entry in entries:
            run = entry["run"]
            if run.provider == "alicloud" and run.restorer is not None:
                for name, count in planned_calls(run.restorer, self.params["mode"],
                                                 self.params.get("safety_snapshot", True)).items():
                    pacer.plan("ecs", name, count)
            if run.provider != "aws":
                continue
            todo = run.restorer.todo
            if not todo:
                continue
            calls = {"CreateVolume": len(todo), "CreateTags": len(todo)}
            if self.params["mode"] in ("replace", "attach"):
                calls["AttachVolume"] = len(todo)
            if self.params["mode"] == "replace":
                calls["DetachVolume"] = sum(1 for e in todo if e.original)
                calls["CreateTags"] += calls["DetachVolume"]
                if (run.restorer.instance or {}).get("state") == "running":
                    calls["StopInstances"] = 1
                    calls["StartInstances"] = 1
            for name, count in calls.items():
                counts[name] = counts.get(name, 0) + count
        for name, count in counts.items():
            pacer.plan("ec2", name, count)

    def _result(self, entries):
        restores = []
        warnings = []
        for entry in entries:
            run = entry["run"]
            row = dict(entry["selector"], instance_id=run.target or entry["selector"].get("instance_id"),
                       failed=entry["error"] is not None)
            row.pop("latest", None)
            row["set_id"] = run.selected.set_id if run.selected is not None else entry["selector"].get("set_id")
            if entry["result"] is not None:
                result = dict(entry["result"])
                warnings += [f"{row['instance_id'] or row['set_id']}: {w}" for w in result.pop("warnings", [])]
                result.pop("diff", None)
                row.update(result, failed=False)
            else:
                row.update(run.failure_details(), msg=entry["error"], changed=bool(entry.get("details")))
                row.update(entry.get("details") or {})
            restores.append(row)
        failed = [r for r in restores if r["failed"]]
        diff = dict(before={}, after={})
        for entry in entries:
            if entry["result"] is not None and entry["run"].target:
                restorer_diff = entry["run"].restorer.diff()
                diff["before"].setdefault(entry["run"].target, restorer_diff["before"])
                # several sets attached to one instance: the new devices of each
                diff["after"].setdefault(entry["run"].target, {}).update(restorer_diff["after"])
        return dict(changed=any(r.get("changed") for r in restores), mode=self.params["mode"], restores=restores,
                    failed_instances=[r["instance_id"] or r["set_id"] for r in failed], warnings=warnings, diff=diff,
                    failed=bool(failed),
                    msg=(f"{len(failed)} of {len(restores)} restores failed: "
                         + "; ".join(f"{r['instance_id'] or r['set_id']}: {r['msg']}" for r in failed)) if failed else
                    f"{len(restores)} restores done")
