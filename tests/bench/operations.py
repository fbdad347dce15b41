"""Benchmarks of the operations a fleet runs after its backups (prune, restore, copy), within the account's request limits.

Each measures one task against the twins with the realistic latency model, as a ratio to the floor that the
account's published limits put under it, and (``compare``) the same task on twins without request limits, in the
same run. The snapshots are made beforehand with latency and limits off, so only the measured task pays them.
"""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Any, Callable, Dict, List, Sequence

from twin.core.limits import published

PRUNE = "appconsistent.snapshots.snapshot_set_prune"
COPY = "appconsistent.snapshots.snapshot_set_copy"
PAST = "2020-01-01T00:00:00Z"
TAG = "appconsistent:"  # the collection's tag prefix
DATA_VOLUMES = [{"device": "/dev/xvda", "size": 8, "boot": True}, {"device": "/dev/xvdf", "size": 16}]
SMALL_PRUNE = 20  # snapshots: within any bucket, so its wall time is the prune's fixed part
COPY_DESTINATION = "eu-west-1"
COPIES_PER_REGION = 20  # EBS quota: concurrent snapshot copies per destination Region


def _setup(twins, work: Callable[[], Any]) -> Any:
    """Run work with the twins' latency and limits off (the fleet's history, not the measured task)."""
    latency, limits = twins.latency.spec, twins.limits.spec
    twins.latency.update("zero")
    twins.limits.update("none")
    try:
        return work()
    finally:
        twins.latency.update(latency)
        twins.limits.update(limits)


def _sets(twins, per_instance: int, delete_after: str = PAST, threads: int = 8) -> List[str]:
    """per_instance sets of every instance (CreateSnapshots with the collection's set tags); their ids."""
    instances = sorted(twins.endpoints["aws"]["instances"].values())
    local = threading.local()

    def one(job):
        instance_id, n = job
        if not hasattr(local, "ec2"):
            local.ec2 = twins.aws_client("ec2")
        set_id = f"acs-20200101t000000-{n:04x}{instances.index(instance_id):04x}"
        tags = {TAG + "set-id": set_id, TAG + "instance-id": instance_id, TAG + "consistency": "application",
                TAG + "run-id": "bench", TAG + "delete-after": delete_after}
        local.ec2.create_snapshots(InstanceSpecification={"InstanceId": instance_id}, TagSpecifications=[
            {"ResourceType": "snapshot", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}])
        return set_id

    jobs = [(i, n) for n in range(per_instance) for i in instances]
    with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(one, jobs))


def _fleet(instances: int) -> Dict[str, Any]:
    return {"instances": [{"provider": "aws", "name": f"p-{n:04d}", "platform": "linux", "volumes": DATA_VOLUMES}
                          for n in range(instances)]}


def prune_floor(snapshots: int, share: float = 1.0) -> float:
    """Seconds of DeleteSnapshot calls the published bucket allows at least: (S - capacity) / refill."""
    capacity, refill = published("ec2", "DeleteSnapshot")
    return max(0.0, (snapshots - capacity * share) / (refill * share))


# An account whose DeleteSnapshot limit was raised far beyond the published one: what the prune costs without pacing.
RAISED = {"DeleteSnapshot": {"capacity": 100000, "refill": 10000}}


def prune(bench, snapshots: int, limits: str, raised: bool = False) -> Dict[str, Any]:
    """snapshot_set_prune of every set of a fleet holding ``snapshots`` expired snapshots (two per set); raised: the
    task is told the account's limits are far above the published ones (on twins without limits)."""
    from twin.launcher import start_twins  # pylint: disable=import-outside-toplevel

    per_instance = max(1, snapshots // 200)
    instances = max(1, snapshots // (2 * per_instance))
    twins = start_twins(_fleet(instances), latency=bench.latency, aws=True, alicloud=False, limits=limits)
    try:
        made = _setup(twins, lambda: _sets(twins, per_instance))
        args = {"provider": "aws", "expired": True, "protect_newest_application": False}
        if raised:
            args["api_rate_limits"] = RAISED
        task = {PRUNE: args, "register": "prune"}
        run = bench.play(twins, [dict(task, name="Prune the expired sets")], results=["prune"])
        result = run["results"]["prune"]
        deleted = sum(len(e.get("deleted_snapshot_ids") or []) for e in result.get("deleted") or [])
        measured = {k: v for k, v in run.items() if k not in ("results", "throttled")}
        out = dict(measured, snapshots=2 * len(made), sets=len(made), limits=limits, deleted_snapshots=deleted,
                   failed_sets=len(result.get("failed_sets") or []), failed=bool(result.get("failed")),
                   throttled=len(run["throttled"]), api_pacing=result.get("api_pacing"))
        return out
    finally:
        twins.stop()


def prune_scenario(bench, sizes: Sequence[int], compare: bool) -> Dict[str, Any]:
    """The fixed part (a prune of SMALL_PRUNE snapshots), then each size with the published limits (and without)."""
    fixed = prune(bench, SMALL_PRUNE, "published")
    entries = []
    for size in sizes:
        entry: Dict[str, Any] = {"snapshots": size}
        measured = prune(bench, size, "published")
        floor = prune_floor(measured["snapshots"]) + fixed["wall_s"]
        entry["published"] = dict(measured, floor_s=round(floor, 1), ratio=round(measured["wall_s"] / floor, 3))
        if compare:
            # The twins without limits: the collection still paces itself to the published ones, unless told more.
            entry["none"] = prune(bench, size, "none")
            entry["none, raised"] = prune(bench, size, "none", raised=True)
        entries.append(entry)
    return {"fixed_wall_s": fixed["wall_s"], "fixed_snapshots": fixed["snapshots"], "sizes": entries,
            "floor": "(S - 100) / 5 s of DeleteSnapshot (the published bucket) + the wall time of a prune of "
                     f"{SMALL_PRUNE} snapshots"}


RESTORE = "appconsistent.snapshots.restore_volumes"


def _restorable_sets(twins) -> Dict[str, str]:
    """{instance name: set id}: a crash set of each instance's data volume, tagged as the collection tags it."""
    out = {}
    ec2 = twins.aws_client("ec2")
    for name, instance_id in sorted(twins.endpoints["aws"]["instances"].items()):
        set_id = f"acs-20200101t000000-{len(out):08x}"
        tags = {TAG + "set-id": set_id, TAG + "instance-id": instance_id, TAG + "consistency": "crash"}
        made = ec2.create_snapshots(InstanceSpecification={"InstanceId": instance_id, "ExcludeBootVolume": True},
                                    TagSpecifications=[{"ResourceType": "snapshot",
                                                        "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}])
        for snapshot in made["Snapshots"]:
            ec2.create_tags(Resources=[snapshot["SnapshotId"]], Tags=[{"Key": TAG + "device", "Value": "/dev/xvdf"}])
        out[name] = set_id
    return out


def restore_many(bench, instances: int, as_tasks: bool = False) -> Dict[str, Any]:
    """restore_volumes (mode replace) of one instance, then of ``instances`` instances: in one task (set_ids), or
    (``as_tasks``) side by side, one task each (one host each, every fork at once), for comparison."""
    from twin.launcher import start_twins  # pylint: disable=import-outside-toplevel

    fleet = {"instances": [{"provider": "aws", "name": f"r-{n:03d}", "platform": "linux", "volumes": DATA_VOLUMES}
                           for n in range(instances)]}
    twins = start_twins(fleet, latency=bench.latency, aws=True, alicloud=False, limits=bench.limits)
    try:
        sets = _setup(twins, lambda: _restorable_sets(twins))
        names = sorted(sets)
        args = {"mode": "replace", "min_consistency": "crash", "force": True}
        one = bench.play(twins, [{"name": "Restore one", RESTORE: dict(args, set_ids=[sets[names[0]]]),
                                  "register": "restored"}], results=["restored"])
        if as_tasks:
            task = {"name": "Restore", RESTORE: dict(args, set_id="{{ restore_sets[inventory_hostname] }}"),
                    "vars": {"restore_sets": sets}, "register": "restored"}
            many = bench.play(twins, [task], results=["restored"], hosts=names[1:] + names[:1])
            rows = many["results"]["restored"]
            failed = {h: (r.get("msg") or "")[:200] for h, r in rows.items() if (r or {}).get("failed")}
            pacing = None
        else:
            task = {"name": "Restore all", RESTORE: dict(args, set_ids=[sets[n] for n in names]), "register": "restored"}
            many = bench.play(twins, [task], results=["restored"])
            result = many["results"]["restored"]
            failed = {r.get("instance_id") or r.get("set_id"): (r.get("msg") or "")[:200]
                      for r in result.get("restores") or [] if r.get("failed")}
            if result.get("failed") and not failed:
                failed = {"task": (result.get("msg") or "")[:200]}
            pacing = result.get("api_pacing")
        floor = one["wall_s"] + restore_floor(instances) - restore_floor(1)
        throttled: Dict[str, int] = {}
        for entry in many["throttled"]:
            throttled[entry["action"]] = throttled.get(entry["action"], 0) + 1
        return {"instances": instances, "one_task": not as_tasks, "one_wall_s": one["wall_s"], "wall_s": many["wall_s"],
                "floor_s": round(floor, 1), "ratio": round(many["wall_s"] / floor, 3), "failed": len(failed),
                "failures": dict(list(failed.items())[:5]), "throttled": throttled,
                "api_calls": many["api_calls"]["by_operation"], "api_pacing": pacing,
                "floor": "one instance's restore + max over its APIs of (N - capacity) / refill beyond the one "
                         "instance's own calls; StartInstances (5 tokens refilling 2 a second) is the slowest: "
                         "(N - 5) / 2 s"}
    finally:
        twins.stop()


def restore_floor(instances: int) -> float:
    """Seconds the published buckets put under the calls of a replace restore of ``instances`` instances with one
    data volume each and running: CreateVolume, StopInstances, DetachVolume, AttachVolume, StartInstances, one each
    per instance; the slowest bucket decides."""
    return max(max(0.0, (instances - capacity) / refill) for capacity, refill in
               (published("ec2", api) for api in ("CreateVolume", "StopInstances", "DetachVolume", "AttachVolume",
                                                  "StartInstances")))


COPY_SECONDS = "snapshot_complete"  # the latency model's time a copy takes to complete


def copy_floor(copies: int, seconds: float, quota: int = COPIES_PER_REGION) -> float:
    """Seconds ``copies`` copies of ``seconds`` each take at least with ``quota`` in flight per destination Region,
    or the CopySnapshot calls of the destination's bucket, whichever is longer."""
    capacity, refill = published("ec2", "CopySnapshot")
    waves = -(-copies // quota)
    return max(waves * seconds, 0.0, (copies - capacity) / refill)


def copy_many(bench, sets: int) -> Dict[str, Any]:
    """snapshot_set_copy of one set, then of ``sets`` sets in one task (set_ids) to another Region, with as many
    copies in flight as the destination's quota allows."""
    from twin.core.latency import LatencyModel  # pylint: disable=import-outside-toplevel
    from twin.launcher import start_twins  # pylint: disable=import-outside-toplevel

    per_instance = max(1, sets // 100)
    instances = max(1, sets // per_instance)
    twins = start_twins(_fleet(instances), latency=bench.latency, aws=True, alicloud=False, limits=bench.limits)
    try:
        made = _setup(twins, lambda: _sets(twins, per_instance, delete_after="2999-01-01T00:00:00Z"))[:sets]
        members = 2 * len(made)  # every set holds both volumes of its instance
        args = {"provider": "aws", "destination_region": COPY_DESTINATION, "max_concurrent_copies": COPIES_PER_REGION}
        one = bench.play(twins, [{"name": "Copy one set", COPY: dict(args, set_ids=made[:1]), "register": "copied"}],
                         results=["copied"])
        task = {"name": "Copy the sets", COPY: dict(args, set_ids=made[1:]), "register": "copied"}
        many = bench.play(twins, [task], results=["copied"])
        result = many["results"]["copied"]
        failed = {r["source_set_id"]: (r.get("msg") or "")[:200] for r in result.get("copies") or [] if r.get("failed")}
        if result.get("failed") and not failed:
            failed = {"task": (result.get("msg") or "")[:200]}
        seconds = LatencyModel(bench.latency).transition(COPY_SECONDS)
        floor = one["wall_s"] + copy_floor(members - 2, seconds)
        throttled: Dict[str, int] = {}
        for entry in many["throttled"]:
            throttled[entry["action"]] = throttled.get(entry["action"], 0) + 1
        complete = sum(1 for r in result.get("copies") or [] if r.get("complete"))
        return {"sets": len(made), "copies": members, "copy_s": seconds, "one_wall_s": one["wall_s"],
                "wall_s": many["wall_s"], "floor_s": round(floor, 1), "ratio": round(many["wall_s"] / floor, 3),
                "complete_sets": complete + (1 if one["results"]["copied"].get("copies", [{}])[0].get("complete") else 0),
                "failed": len(failed), "failures": dict(list(failed.items())[:5]), "throttled": throttled,
                "limit_waits": sum(r.get("limit_waits") or 0 for r in result.get("copies") or []),
                "api_calls": many["api_calls"]["by_operation"], "api_pacing": result.get("api_pacing"),
                "floor": "one set's copy + max(ceil(C / 20) x the time of one copy, (C - 50) / 5 s of CopySnapshot) "
                         "for the other sets' C copies: 20 copies in flight per destination Region (EBS quota), the "
                         "destination's CopySnapshot bucket 50 refilling 5 a second"}
    finally:
        twins.stop()


def summary(report: Dict[str, Any]) -> List[str]:
    lines: List[str] = []
    prune_report = report.get("prune")
    if prune_report:
        lines += ["## Prune", "", f"Floor: {prune_report['floor']} ({prune_report['fixed_wall_s']} s).", "",
                  "| snapshots | twin limits (collection's) | wall s | floor s | x floor | deleted | failed sets | throttled | waited for tokens s |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for e in prune_report["sizes"]:
            for key, label in (("published", "published (published)"), ("none", "none (published)"),
                               ("none, raised", "none (raised)")):
                m = e.get(key)
                if m:
                    pacing = m.get("api_pacing") or {}
                    lines.append(f"| {m['snapshots']} | {label} | {m['wall_s']} | {m.get('floor_s', '-')} | {m.get('ratio', '-')} | "
                                 f"{m['deleted_snapshots']} | {m['failed_sets']} | {m['throttled']} | "
                                 f"{pacing.get('waited_for_tokens_s')} |")
        lines.append("")
    many = report.get("restore_many")
    if many:
        how = "in one task" if many.get("one_task") else "side by side, one task each"
        lines += [f"## Restore of many instances {how}", "", f"Floor: {many['floor']}.", "",
                  "| instances | one instance s | wall s | floor s | x floor | failed | throttled |", "|---|---|---|---|---|---|---|",
                  f"| {many['instances']} | {many['one_wall_s']} | {many['wall_s']} | {many['floor_s']} | {many['ratio']} | "
                  f"{many['failed']} | {many['throttled']} |", ""]
    copies = report.get("copy_many")
    if copies:
        lines += ["## Copy of many sets in one task", "", f"Floor: {copies['floor']}.", "",
                  "| sets | copies | one set s | wall s | floor s | x floor | complete sets | failed | throttled | quota refusals |",
                  "|---|---|---|---|---|---|---|---|---|---|",
                  f"| {copies['sets']} | {copies['copies']} | {copies['one_wall_s']} | {copies['wall_s']} | {copies['floor_s']} | "
                  f"{copies['ratio']} | {copies['complete_sets']} | {copies['failed']} | {copies['throttled']} | "
                  f"{copies['limit_waits']} |", ""]
    return lines
