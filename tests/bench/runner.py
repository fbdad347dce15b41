"""Benchmarks of the collection against the twin clouds, with the latency model on.

Every figure comes from a real ``ansible-playbook`` run (what operators run): wall time of the run
(from starting ``ansible-playbook`` to the end of the measured tasks; the bench's own step that saves
the registered results is left out, and the whole run is kept as ``play_wall_s``),
API calls by operation from the twins' call counters, controller CPU seconds and the peak resident
memory of the ansible-playbook process tree.  The baselines run in the same process, against the
same twins and the same latency model, so the comparison is like for like.

Scenarios:

- ``fleet``: a backup of N mixed instances (Linux and Windows, two volumes each) with one
  ``app_consistent_group`` task, against (a) a playbook that lists the volumes and loops
  ``amazon.aws.ec2_snapshot`` over them and (b) ``app_consistent_group`` called once per instance.
- ``freeze``: the freeze window on Linux for AWS initiator ``controller``, AWS initiator
  ``instance`` and the Alibaba Cloud plug-in, as ratios to the floor the latency model allows.
- ``restore``: ``restore_volumes`` of an instance with 8 volumes against one with a single volume.
- ``prune``, ``restore-many`` and ``copy-many`` (tests/bench/operations.py): a prune of many snapshots, a restore
  of many instances and a copy of many sets to another Region, each in one task, as ratios to the floor the
  account's published request limits (and the destination Region's copy quota) put under them.

Run ``python tests/bench/runner.py --help``; results go to ``results.json`` and ``summary.md``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO_ROOT = os.path.dirname(TESTS_DIR)
# The test plays' own action (write_test_results): the results are kept without a module run after the measured tasks.
TEST_ACTION_PLUGINS = os.path.join(TESTS_DIR, "plugins", "action")
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

import yaml  # noqa: E402  pylint: disable=wrong-import-position

from twin.launcher import start_twins  # noqa: E402  pylint: disable=wrong-import-position
from bench import operations  # noqa: E402  pylint: disable=wrong-import-position

ACG = "appconsistent.snapshots.app_consistent_group"
RESTORE = "appconsistent.snapshots.restore_volumes"
GROUP = "group/appconsistent.snapshots.snapshots"
AWS_GROUP = "group/amazon.aws.aws"
ROLE = "AppSnapshotRole"
LINUX_VOLUMES = [{"device": "/dev/xvda", "size": 8, "boot": True}, {"device": "/dev/xvdf", "size": 16}]
WINDOWS_VOLUMES = [{"device": "/dev/sda1", "size": 30, "boot": True}, {"device": "xvdf", "size": 50}]
ALI_VOLUMES = [{"device": "/dev/xvda", "size": 40, "type": "cloud_essd", "boot": True},
               {"device": "/dev/xvdb", "size": 100, "type": "cloud_essd"}]
# One Windows instance in ten, as in the shipped 1000-instance fleet.
WINDOWS_SHARE = 10
FLEET_GOAL_CALLS = 10.0
FLEET_GOAL_WALL = 5.0
FLEET_GOAL_SCALING = 3.0
FREEZE_GOAL_RATIO = 1.5
FREEZE_GOAL_MAX = 10.0
RESTORE_GOAL = 1.3

# Runs ansible-playbook as its only child so that RUSAGE_CHILDREN covers exactly that process
# tree: CPU seconds of every process in it and the peak RSS of its largest process.
_WRAPPER = r"""
import json, resource, subprocess, sys
rc = subprocess.run(sys.argv[2:], check=False).returncode
use = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "w", encoding="utf-8") as out:
    json.dump({"rc": rc, "cpu_user": use.ru_utime, "cpu_system": use.ru_stime, "maxrss_kib": use.ru_maxrss}, out)
"""


def collections_path() -> str:
    """Where ansible-playbook finds this collection (``make collections``, or a link made here)."""
    staged = os.path.join(REPO_ROOT, "build", "collections")
    if os.path.isdir(os.path.join(staged, "ansible_collections", "appconsistent", "snapshots")):
        return staged
    parts = REPO_ROOT.split(os.sep)
    if len(parts) >= 3 and parts[-3] == "ansible_collections":
        return os.sep.join(parts[:-3])
    root = os.path.join(REPO_ROOT, "build", "pytest-collections")
    link = os.path.join(root, "ansible_collections", "appconsistent", "snapshots")
    if not os.path.islink(link):
        os.makedirs(os.path.dirname(link), exist_ok=True)
        try:
            os.symlink(REPO_ROOT, link)
        except FileExistsError:
            pass
    return root


def module_defaults(endpoints: Dict[str, Any]) -> Dict[str, Any]:
    aws, ali = endpoints.get("aws"), endpoints.get("alicloud")
    ours: Dict[str, Any] = {}
    theirs: Dict[str, Any] = {}
    if aws:
        theirs = {"endpoint_url": aws["endpoint_url"], "region": aws["region"], "access_key": aws["access_key_id"],
                  "secret_key": aws["secret_access_key"]}
        ours.update(theirs)
    if ali:
        ours.update(alicloud_endpoint=ali["endpoint"], alicloud_protocol=ali["protocol"], alicloud_region=ali["region"],
                    alicloud_access_key=ali["access_key_id"], alicloud_secret_key=ali["access_key_secret"])
    defaults = {GROUP: ours}
    if theirs:
        defaults[AWS_GROUP] = theirs
    return defaults


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation: every reported value was observed)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[rank - 1]


class Bench:
    """Runs playbooks against twins and measures them."""

    def __init__(self, workdir: str, latency: Dict[str, Any], forks: int = 5, limits: Optional[str] = None):
        self.workdir = workdir
        self.latency = latency
        self.limits = limits  # the twins' request limits: None for the profile's default (published when realistic)
        self.forks = forks
        self.collections = collections_path()
        self.count = 0

    def start(self, fleet: Dict[str, Any], aws: bool = True, alicloud: bool = False):
        return start_twins(fleet, latency=self.latency, aws=aws, alicloud=alicloud, limits=self.limits)

    def play(self, twins, tasks: List[Dict[str, Any]], results: Sequence[str] = (),
             hosts: Optional[Sequence[str]] = None) -> Dict[str, Any]:
        """Run ``tasks`` in one play on localhost; returns the measurements and the registered results.

        hosts: run the play on these inventory names instead (each a local connection, all forks at once); each
        registered result then comes back as {host: result}.
        """
        self.count += 1
        out = os.path.join(self.workdir, f"results-{self.count}.json")
        usage_file = os.path.join(self.workdir, f"usage-{self.count}.json")
        mark = os.path.join(self.workdir, f"end-{self.count}.txt")
        # The measured run ends with the tasks measured: the bench's own step that saves the registered results
        # (seconds at N = 1000, where the results are large) is not something an operator's playbook does.
        keep = "{{ {" + ", ".join(f"'{n}': {n}" for n in results) + "} | to_json }}"
        if hosts:
            keep = "{{ {" + ", ".join(f"'{n}': dict(ansible_play_hosts_all | zip(ansible_play_hosts_all | "
                                      f"map('extract', hostvars, '{n}')))" for n in results) + "} | to_json }}"
        collect = [{"name": "Mark the end of the measured tasks", "write_test_results": {
            "dest": mark, "content": "{{ now(utc=true).timestamp() }}"}},
            {"name": "Keep the results", "write_test_results": {"dest": out, "content": keep}}]
        if hosts:
            for step in collect:
                step["run_once"] = True
        play = [{"name": "bench", "hosts": "all" if hosts else "localhost", "gather_facts": False,
                 "module_defaults": module_defaults(twins.endpoints), "tasks": list(tasks) + (collect if results else [])}]
        path = os.path.join(self.workdir, f"play-{self.count}.yml")
        with open(path, "w", encoding="utf-8") as fh:
            yaml.safe_dump(play, fh, sort_keys=False)
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=self.collections, ANSIBLE_LOCALHOST_WARNING="false",
                   ANSIBLE_INVENTORY_UNPARSED_WARNING="false", ANSIBLE_NOCOLOR="1", ANSIBLE_FORKS=str(max(self.forks, len(hosts or ()))),
                   ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_ACTION_PLUGINS=TEST_ACTION_PLUGINS, ANSIBLE_DEPRECATION_WARNINGS="false")
        playbook = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
        cmd = [sys.executable, "-c", _WRAPPER, usage_file, playbook, "-i", ",".join(hosts or ["localhost"]) + ",", "-c", "local", path]
        twins.stats.reset()
        started, started_at, twin_cpu = time.monotonic(), time.time(), time.process_time()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, timeout=7200)
        wall = play_wall = time.monotonic() - started
        # This process only waits for ansible-playbook meanwhile: its CPU time is the twins' (they serve the
        # calls from threads of this process), which a real cloud would spend on its own machines.
        twin_cpu = time.process_time() - twin_cpu
        counts = twins.stats.counts()
        throttled = twins.stats.throttle_log()
        with open(usage_file, encoding="utf-8") as fh:
            usage = json.load(fh)
        if usage["rc"] != 0:
            raise RuntimeError(f"ansible-playbook failed (rc {usage['rc']}):\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}")
        registered = {}
        if results:
            with open(out, encoding="utf-8") as fh:
                registered = json.load(fh)
            with open(mark, encoding="utf-8") as fh:
                wall = float(fh.read().strip()) - started_at
        return {"wall_s": round(wall, 3), "play_wall_s": round(play_wall, 3),
                "cpu_s": round(usage["cpu_user"] + usage["cpu_system"], 3),
                "twin_cpu_s": round(twin_cpu, 3),
                "peak_rss_mib": round(usage["maxrss_kib"] / 1024.0, 1), "api_calls": api_summary(counts),
                "throttled": throttled, "results": registered}


def api_summary(counts: Dict[str, Dict[str, int]]) -> Dict[str, Any]:
    """Calls by operation; the Alibaba plug-in's own in-instance calls are kept apart."""
    controller = {p: dict(sorted(a.items())) for p, a in counts.items() if not p.endswith("-instance-role")}
    instance = {p: dict(sorted(a.items())) for p, a in counts.items() if p.endswith("-instance-role")}
    return {"controller_total": sum(sum(a.values()) for a in controller.values()),
            "instance_total": sum(sum(a.values()) for a in instance.values()),
            "by_operation": controller, "instance_by_operation": instance}


def strip(measure: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in measure.items() if k != "results"}


# ---------------------------------------------------------------------------------------- fleet

def mixed_fleet(size: int) -> Dict[str, Any]:
    instances = []
    for n in range(size):
        windows = n % WINDOWS_SHARE == WINDOWS_SHARE - 1 or (size < WINDOWS_SHARE and n == size - 1)
        instances.append({"provider": "aws", "name": f"{'win' if windows else 'lin'}-{n:04d}",
                          "platform": "windows" if windows else "linux", "tags": {"env": "bench"},
                          "volumes": WINDOWS_VOLUMES if windows else LINUX_VOLUMES})
    return {"instances": instances}


def fleet_backup(bench: Bench, size: int, baseline: bool, competing: Optional[Dict[str, float]] = None,
                 budget_share: Optional[float] = None) -> Dict[str, Any]:
    """competing: {API: tokens a second} another tool of the account spends; budget_share: the task's api_budget_share."""
    twins = bench.start(mixed_fleet(size))
    try:
        if competing:
            twins.faults.update({"competing": competing})
        ids = sorted(twins.endpoints["aws"]["instances"].values())
        entry: Dict[str, Any] = {"instances": size, "volumes": 2 * size, "competing": competing or {},
                                 "budget_share": budget_share}
        # wait_timeout bounds the whole run's start of freezes: at the published limits N instances take (N - 100) / 5 s
        # of CreateSnapshots, and the module refuses a run longer than its wait_timeout before freezing anything.
        task = {"provider": "aws", "consistency": "application", "instance_ids": ids, "run_id": f"bench-{size}",
                "wait_timeout": max(900, size)}
        if budget_share is not None:
            task["api_budget_share"] = budget_share
        collection = bench.play(twins, [{"name": "Back up the fleet", ACG: task, "register": "group"}], results=["group"])
        group = collection["results"]["group"]
        got = group["results"]
        entry["collection"] = strip(collection)
        entry["collection"]["consistency"] = count_by(got, "consistency")
        entry["collection"]["limits"] = limits_figures(got, collection["throttled"], group.get("api_pacing") or {})
        if baseline:
            loop = bench.play(twins, [
                {"name": "List the instances", "amazon.aws.ec2_instance_info": {"instance_ids": ids}, "register": "info"},
                {"name": "Snapshot every volume", "amazon.aws.ec2_snapshot": {
                    "volume_id": "{{ item.1.ebs.volume_id }}", "description": "nightly", "wait": False,
                    "snapshot_tags": {"run": f"baseline-{size}", "instance": "{{ item.0.instance_id }}",
                                      "device": "{{ item.1.device_name }}"}},
                 "loop": "{{ info.instances | subelements('block_device_mappings') }}",
                 "loop_control": {"label": "{{ item.1.ebs.volume_id }}"}, "register": "snaps"}],
                results=["snaps"])
            made = len(loop["results"]["snaps"]["results"])
            entry["baseline_ec2_snapshot"] = dict(strip(loop), snapshots=made)
            per_host = bench.play(twins, [{"name": "Back up one instance at a time", ACG: {
                "provider": "aws", "consistency": "application", "instance_ids": ["{{ item }}"], "run_id": "{{ item }}"},
                "loop": ids, "register": "each"}], results=["each"])
            entry["baseline_per_host"] = dict(strip(per_host), consistency=count_by(
                [r for res in per_host["results"]["each"]["results"] for r in res["results"]], "consistency"))
        return entry
    finally:
        twins.stop()


def limits_figures(rows: List[Dict[str, Any]], throttled: List[Dict[str, Any]], pacing: Dict[str, Any]) -> Dict[str, Any]:
    """The freeze windows of the Linux instances, the throttled answers (those that came while an instance was frozen
    apart), and the floor the account's limits put under the run's calls, as the collection reported it."""
    frozen = [(float(r["helper"]["freeze"]["t_frozen"]), float(r["helper"]["thaw"]["t_thawed"])) for r in rows
              if ((r.get("helper") or {}).get("freeze") or {}).get("t_frozen") and
              ((r.get("helper") or {}).get("thaw") or {}).get("t_thawed")]
    windows = [end - start for start, end in frozen]
    while_frozen = [t for t in throttled if any(start <= t["at"] <= end for start, end in frozen)]
    out: Dict[str, Any] = {"throttled": len(throttled), "throttled_while_frozen": len(while_frozen),
                           "rate_floor_s": pacing.get("rate_floor_s"), "waited_for_tokens_s": pacing.get("waited_for_tokens_s")}
    if windows:
        out.update(freeze_p50_s=round(percentile(windows, 50), 2), freeze_p99_s=round(percentile(windows, 99), 2),
                   freeze_max_s=round(max(windows), 2))
    return out


def count_by(rows: List[Dict[str, Any]], key: str) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for row in rows:
        out[str(row.get(key))] = out.get(str(row.get(key)), 0) + 1
    return dict(sorted(out.items()))


def fleet_verdict(entries: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Goals of item 1; baselines measured below the largest N are extrapolated linearly per instance."""
    largest = max(entries, key=lambda e: e["instances"])
    smallest = min(entries, key=lambda e: e["instances"])
    measured = [e for e in entries if "baseline_ec2_snapshot" in e]
    verdict: Dict[str, Any] = {"n": largest["instances"]}
    if measured:
        ref = max(measured, key=lambda e: e["instances"])
        factor = largest["instances"] / ref["instances"]
        verdict["baseline_from_n"] = ref["instances"]
        verdict["baseline_extrapolated"] = factor != 1
        for name in ("baseline_ec2_snapshot", "baseline_per_host"):
            calls = ref[name]["api_calls"]["controller_total"] * factor
            wall = ref[name]["wall_s"] * factor
            verdict[name] = {"api_calls": round(calls), "wall_s": round(wall, 1),
                             "calls_ratio": round(calls / max(1, largest["collection"]["api_calls"]["controller_total"]), 2),
                             "wall_ratio": round(wall / largest["collection"]["wall_s"], 2)}
        best = verdict["baseline_ec2_snapshot"]
        verdict["calls_goal_met"] = best["calls_ratio"] >= FLEET_GOAL_CALLS
        verdict["wall_goal_met"] = best["wall_ratio"] >= FLEET_GOAL_WALL
    if largest is not smallest:
        scaling = largest["collection"]["wall_s"] / smallest["collection"]["wall_s"]
        verdict["scaling"] = {"from_n": smallest["instances"], "to_n": largest["instances"], "wall_ratio": round(scaling, 2),
                              "goal_met": scaling <= FLEET_GOAL_SCALING}
    return verdict


# ---------------------------------------------------------------------------------------- freeze

FREEZE_PATHS = ("aws_controller", "aws_instance", "alicloud_plugin")


def freeze_floors(latency) -> Dict[str, float]:
    snap = latency.api("aws", "CreateSnapshots")
    return {"aws_instance": snap,
            "aws_controller": snap + latency.report("aws") + latency.delivery("aws"),
            "alicloud_plugin": latency.api("alicloud", "CreateSnapshotGroup")}


def freeze_stats(windows: List[float], floor: float) -> Dict[str, Any]:
    p50, p99, worst = percentile(windows, 50), percentile(windows, 99), max(windows)
    stats = {"runs": len(windows), "floor_s": round(floor, 4), "p50_s": round(p50, 4), "p99_s": round(p99, 4),
             "max_s": round(worst, 4), "mean_s": round(statistics.fmean(windows), 4)}
    if floor > 0:
        stats.update(p50_ratio=round(p50 / floor, 2), p99_ratio=round(p99 / floor, 2), max_ratio=round(worst / floor, 2),
                     goal_met=p99 <= FREEZE_GOAL_RATIO * floor and worst <= FREEZE_GOAL_MAX)
    else:
        stats["goal_met"] = worst <= FREEZE_GOAL_MAX
    return stats


def batches_of(ids: List[str], batch: int) -> List[List[str]]:
    return [ids[start:start + batch] for start in range(0, len(ids), batch)]


def loop_rows(registered: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The per-instance rows of a looped module task (one module call per batch of instances)."""
    return [row for item in registered["results"] for row in item.get("results", [])]


def freeze_aws(bench: Bench, runs: int, initiator: str, batch: int = 1) -> List[float]:
    """``runs`` freeze cycles, ``batch`` instances per module call, the calls one after the other."""
    fleet = {"instances": [{"provider": "aws", "name": f"fz-{n:04d}", "platform": "linux", "volumes": LINUX_VOLUMES}
                           for n in range(runs)]}
    twins = bench.start(fleet)
    try:
        ids = sorted(twins.endpoints["aws"]["instances"].values())
        args = {"provider": "aws", "consistency": "application", "instance_ids": "{{ item }}", "initiator": initiator,
                "exclude_boot_disk": True}
        if initiator == "instance":
            args["mounts"] = ["/srv/data"]
        run = bench.play(twins, [{"name": f"Freeze, initiator {initiator}", ACG: args, "loop": batches_of(ids, batch),
                                  "loop_control": {"label": "{{ item | length }} instances"}, "register": "group"}],
                         results=["group"])
        rows = loop_rows(run["results"]["group"])
        windows = [float(r["freeze_window"]) for r in rows if r.get("freeze_window") is not None]
        if len(windows) != len(ids):
            raise RuntimeError(f"initiator {initiator}: {len(ids) - len(windows)} of {len(ids)} runs reported no freeze window: "
                               f"{[r for r in rows if r.get('freeze_window') is None][:2]}")
        return windows
    finally:
        twins.stop()


def freeze_alicloud(bench: Bench, runs: int, batch: int = 1) -> List[float]:
    fleet = {"instances": [{"provider": "alicloud", "id": f"i-bp1bench{n:010d}", "name": f"fz-{n:04d}", "platform": "linux",
                            "zone": "cn-hangzhou-h", "role": ROLE, "volumes": ALI_VOLUMES} for n in range(runs)]}
    twins = bench.start(fleet, aws=False, alicloud=True)
    try:
        ids = sorted(twins.endpoints["alicloud"]["instances"].values())
        run = bench.play(twins, [{"name": "Freeze through the plug-in", ACG: {
            "provider": "alicloud", "consistency": "application", "instance_ids": "{{ item }}", "ram_role_name": ROLE},
            "loop": batches_of(ids, batch), "loop_control": {"label": "{{ item | length }} instances"},
            "register": "group"}], results=["group"])
        windows = []
        for row in loop_rows(run["results"]["group"]):
            steps = dict(twins.alicloud.trace(row["invocation_id"], row["instance_id"]))
            windows.append(steps["thawed"] - steps["frozen"])
        return windows
    finally:
        twins.stop()


# ---------------------------------------------------------------------------------------- restore

def restore(bench: Bench) -> Dict[str, Any]:
    data = [{"device": f"/dev/xvd{c}", "size": 8} for c in "fghijkl"]
    fleet = {"instances": [
        {"provider": "aws", "name": "one", "platform": "linux", "volumes": [{"device": "/dev/xvda", "size": 8, "boot": True}]},
        {"provider": "aws", "name": "eight", "platform": "linux",
         "volumes": [{"device": "/dev/xvda", "size": 8, "boot": True}] + data}]}
    twins = bench.start(fleet)
    try:
        names = twins.endpoints["aws"]["instances"]
        sets = bench.play(twins, [{"name": "Crash sets", ACG: {"provider": "aws", "consistency": "crash",
                                                               "instance_ids": [names["one"], names["eight"]],
                                                               "wait_for_completion": True}, "register": "group"}],
                          results=["group"])
        set_of = {r["instance_id"]: r["set_id"] for r in sets["results"]["group"]["results"]}
        noop = bench.play(twins, [{"name": "Nothing", "ansible.builtin.debug": {"msg": "baseline"}}])
        out: Dict[str, Any] = {"ansible_overhead_wall_s": noop["wall_s"]}
        for name, volumes in (("one", 1), ("eight", 8)):
            run = bench.play(twins, [{"name": f"Restore {name}", RESTORE: {
                "set_id": set_of[names[name]], "mode": "replace", "min_consistency": "crash", "force": True},
                "register": "restored"}], results=["restored"])
            out[f"volumes_{volumes}"] = strip(run)
        one, eight = out["volumes_1"]["wall_s"], out["volumes_8"]["wall_s"]
        net = max(0.001, one - noop["wall_s"])
        out["ratio"] = round(eight / one, 2)
        out["ratio_without_ansible_overhead"] = round((eight - noop["wall_s"]) / net, 2)
        out["goal_met"] = out["ratio_without_ansible_overhead"] <= RESTORE_GOAL
        return out
    finally:
        twins.stop()


# ---------------------------------------------------------------------------------------- report

def environment(latency_spec: Dict[str, Any]) -> Dict[str, Any]:
    from twin.core.latency import LatencyModel  # pylint: disable=import-outside-toplevel
    return {"when": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "cpus": os.cpu_count(),
            "load_average_start": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version(),
            "kernel": platform.release(), "latency": LatencyModel(latency_spec).describe()}


def run(args: argparse.Namespace) -> Dict[str, Any]:
    latency = {"profile": args.profile, "scale": args.scale}
    os.makedirs(args.out, exist_ok=True)
    report: Dict[str, Any] = {"environment": dict(environment(latency), limits=args.limits or "by latency profile"), "goals": {
        "fleet": f">= {FLEET_GOAL_CALLS:g}x fewer API calls and >= {FLEET_GOAL_WALL:g}x less wall time than the baseline at the largest N; "
                 f"wall(largest N) <= {FLEET_GOAL_SCALING:g}x wall(smallest N)",
        "freeze": f"p99 <= {FREEZE_GOAL_RATIO:g}x the floor and max <= {FREEZE_GOAL_MAX:g} s on every path",
        "restore": f"restore of 8 volumes <= {RESTORE_GOAL:g}x restore of one"}}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-") as workdir:
        bench = Bench(workdir, latency, forks=args.forks, limits=args.limits)
        # The results are written after every scenario: a failure late in a long run keeps what was measured.
        if "fleet" in args.scenarios:
            competing = {api: float(rate) for api, rate in (item.split("=", 1) for item in args.competing)}
            entries = [fleet_backup(bench, n, n <= args.baseline_max, competing, args.budget_share) for n in args.fleet_sizes]
            report["fleet"] = {"sizes": entries, "verdict": fleet_verdict(entries)}
            write_report(report, args.out, started)
        if "freeze" in args.scenarios:
            from twin.core.latency import LatencyModel  # pylint: disable=import-outside-toplevel
            floors = freeze_floors(LatencyModel(latency))
            # The Alibaba plug-in reports only once its snapshot group is accomplished (25 s modelled), so one
            # instance per call would take hours for 200 runs; its windows come from the plug-in's own trace,
            # which a shared call does not lengthen. The AWS paths run one instance per call by default: with
            # initiator instance, instances sharing a call would make their CreateSnapshots calls to the twin
            # at the same moment, and the twin, one process, would serve them one after the other.
            batches = {"aws_controller": args.freeze_batch, "aws_instance": args.freeze_batch,
                       "alicloud_plugin": args.freeze_batch_alicloud}
            paths = {"aws_controller": lambda: freeze_aws(bench, args.freeze_runs, "controller", batches["aws_controller"]),
                     "aws_instance": lambda: freeze_aws(bench, args.freeze_runs, "instance", batches["aws_instance"]),
                     "alicloud_plugin": lambda: freeze_alicloud(bench, args.freeze_runs, batches["alicloud_plugin"])}
            report["freeze"] = {}
            for name in args.freeze_paths:
                report["freeze"][name] = dict(freeze_stats(paths[name](), floors[name]), instances_per_call=batches[name])
                write_report(report, args.out, started)
        if "restore" in args.scenarios:
            report["restore"] = restore(bench)
            write_report(report, args.out, started)
        if "restore-many" in args.scenarios:
            report["restore_many"] = operations.restore_many(bench, args.restore_instances, args.restore_as_tasks)
            write_report(report, args.out, started)
        if "copy-many" in args.scenarios:
            report["copy_many"] = operations.copy_many(bench, args.copy_sets)
            write_report(report, args.out, started)
        if "prune" in args.scenarios:
            report["prune"] = operations.prune_scenario(bench, args.prune_sizes, args.compare_limits)
    write_report(report, args.out, started)
    return report


def write_report(report: Dict[str, Any], out: str, started: float) -> None:
    report["environment"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    report["environment"]["bench_wall_s"] = round(time.monotonic() - started, 1)
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=2, sort_keys=False)
    with open(os.path.join(out, "summary.md"), "w", encoding="utf-8") as fh:
        fh.write(summary(report))


def _yes(flag: Optional[bool]) -> str:
    return "n/a" if flag is None else ("met" if flag else "**missed**")


def summary(report: Dict[str, Any]) -> str:
    env = report["environment"]
    spec = env["latency"]["spec"]
    lines = ["# Benchmark summary", "",
             f"Measured {env['when']} on {env['cpus']} CPUs, load average {env['load_average_start'][0]} at the start and "
             f"{env['load_average_end'][0]} at the end; latency profile `{spec.get('profile')}` scaled by {spec.get('scale')}, "
             f"request limits `{env.get('limits', 'by latency profile')}`; "
             f"the whole run took {env['bench_wall_s']} s.", ""]
    fleet = report.get("fleet")
    if fleet:
        lines += ["## Fleet backup", "",
                  "| N | run | wall s | API calls | CPU s | twin CPU s | peak RSS MiB | consistency |",
                  "|---|---|---|---|---|---|---|---|"]
        for e in fleet["sizes"]:
            for key, label in (("collection", "app_consistent_group, one task"), ("baseline_ec2_snapshot", "ec2_snapshot loop"),
                               ("baseline_per_host", "app_consistent_group per host")):
                if key in e:
                    m = e[key]
                    lines.append(f"| {e['instances']} | {label} | {m['wall_s']} | {m['api_calls']['controller_total']} | "
                                 f"{m['cpu_s']} | {m.get('twin_cpu_s', '-')} | {m['peak_rss_mib']} | "
                                 f"{m.get('consistency', {'crash': m.get('snapshots')})} |")
        v = fleet["verdict"]
        lines.append("")
        if "baseline_ec2_snapshot" in v:
            how = f"extrapolated linearly from N = {v['baseline_from_n']}" if v["baseline_extrapolated"] else "measured"
            for key, label in (("baseline_ec2_snapshot", "ec2_snapshot loop"), ("baseline_per_host", "per host")):
                b = v[key]
                lines.append(f"- At N = {v['n']} the {label} baseline ({how}) takes {b['api_calls']} API calls and {b['wall_s']} s: "
                             f"{b['calls_ratio']}x the calls and {b['wall_ratio']}x the wall time of the collection.")
            lines.append(f"- Goal {FLEET_GOAL_CALLS:g}x fewer calls: {_yes(v['calls_goal_met'])}; goal {FLEET_GOAL_WALL:g}x less wall "
                         f"time: {_yes(v['wall_goal_met'])}.")
        if "scaling" in v:
            s = v["scaling"]
            lines.append(f"- Wall time at N = {s['to_n']} is {s['wall_ratio']}x that at N = {s['from_n']} "
                         f"(goal <= {FLEET_GOAL_SCALING:g}x): {_yes(s['goal_met'])}.")
        lines += ["", "Within the account's request limits (collection, one task):", "",
                  "| N | freeze p50 s | freeze p99 s | freeze max s | throttled (while frozen) | rate floor s | waited for tokens s |",
                  "|---|---|---|---|---|---|---|"]
        for e in fleet["sizes"]:
            m = e["collection"].get("limits") or {}
            lines.append(f"| {e['instances']} | {m.get('freeze_p50_s', '-')} | {m.get('freeze_p99_s', '-')} | {m.get('freeze_max_s', '-')} | "
                         f"{m.get('throttled')} ({m.get('throttled_while_frozen')}) | {m.get('rate_floor_s')} | {m.get('waited_for_tokens_s')} |")
        lines.append("")
        lines.append("API calls by operation (collection, one task):")
        lines.append("")
        for e in fleet["sizes"]:
            lines.append(f"- N = {e['instances']}: `{json.dumps(e['collection']['api_calls']['by_operation'], sort_keys=True)}`")
        lines.append("")
    freeze = report.get("freeze")
    if freeze:
        lines += ["## Freeze window on Linux", "", "Each run is one instance's own freeze cycle; the module calls run one after the other, "
                  "with the instances per call shown.", "",
                  "| path | runs | per call | floor s | p50 s (x floor) | p99 s (x floor) | max s (x floor) | goal |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, s in freeze.items():
            lines.append(f"| {name} | {s['runs']} | {s.get('instances_per_call', 1)} | {s['floor_s']} | {s['p50_s']} ({s.get('p50_ratio')}) | "
                         f"{s['p99_s']} ({s.get('p99_ratio')}) | {s['max_s']} ({s.get('max_ratio')}) | {_yes(s['goal_met'])} |")
        lines.append("")
    rest = report.get("restore")
    if rest:
        lines += ["## Restore", "", "| volumes | wall s | API calls | CPU s | peak RSS MiB |", "|---|---|---|---|---|"]
        for n in (1, 8):
            m = rest[f"volumes_{n}"]
            lines.append(f"| {n} | {m['wall_s']} | {m['api_calls']['controller_total']} | {m['cpu_s']} | {m['peak_rss_mib']} |")
        lines += ["", f"- 8 volumes / 1 volume: {rest['ratio']}x as measured, {rest['ratio_without_ansible_overhead']}x without the "
                      f"{rest['ansible_overhead_wall_s']} s an empty playbook takes (goal <= {RESTORE_GOAL:g}x): {_yes(rest['goal_met'])}.", ""]
    lines += operations.summary(report)
    return "\n".join(lines) + "\n"


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--out", default=os.path.join(REPO_ROOT, "build", "bench"), help="directory for results.json and summary.md")
    parser.add_argument("--profile", default="realistic", choices=["realistic", "zero"], help="latency profile of the twins")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every modelled duration")
    parser.add_argument("--limits", default=None, choices=["published", "none"],
                        help="the twins' request limits (default: published with the realistic profile, none with zero)")
    parser.add_argument("--competing", nargs="*", default=[], metavar="API=RATE",
                        help="another tool of the account spending RATE tokens a second of API's bucket (fleet scenario)")
    parser.add_argument("--budget-share", type=float, default=None, help="the fleet task's api_budget_share")
    parser.add_argument("--fleet-sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--baseline-max", type=int, default=100, help="run the baselines only up to this N; larger N extrapolate")
    parser.add_argument("--freeze-runs", type=int, default=200, help="freeze-window runs per path")
    parser.add_argument("--freeze-batch", type=int, default=1,
                        help="instances per module call in the AWS freeze runs (1: each run its own freeze cycle)")
    parser.add_argument("--freeze-batch-alicloud", type=int, default=20,
                        help="instances per module call in the Alibaba plug-in freeze runs")
    parser.add_argument("--freeze-paths", nargs="+", default=list(FREEZE_PATHS), choices=list(FREEZE_PATHS),
                        help="which freeze paths to measure")
    parser.add_argument("--forks", type=int, default=5, help="ansible forks")
    parser.add_argument("--prune-sizes", type=int, nargs="+", default=[1000],
                        help="snapshots pruned (two per set) in the prune scenario")
    parser.add_argument("--compare-limits", action="store_true",
                        help="run the prune and copy scenarios also on twins without request limits, in the same run")
    parser.add_argument("--scenarios", nargs="+", default=["fleet", "freeze", "restore"],
                        choices=["fleet", "freeze", "restore", "prune", "restore-many", "copy-many"])
    parser.add_argument("--restore-instances", type=int, default=50,
                        help="instances restored in the restore-many scenario")
    parser.add_argument("--restore-as-tasks", action="store_true",
                        help="restore-many: one task per instance, side by side, instead of one task for all")
    parser.add_argument("--copy-sets", type=int, default=200,
                        help="sets (two snapshots each) copied to another Region in one task in the copy-many scenario")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    report = run(parse_args(argv))
    sys.stdout.write(summary(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
