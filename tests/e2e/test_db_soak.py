"""A soak of the quiescing paths: app_consistent_group runs on a local AWS twin instance, each killed at a
random instant.

The freeze path (both initiators), with a real database lock: killed after the mysql profile's prescript
took MariaDB's BACKUP STAGE lock: the controller's process group, the freeze helper itself, or its watchdog.

After each kill, within the watchdog's deadline: nothing is frozen, the database takes writes again, no
lock session is left (on the server or in the scripts' state), and every set the run made is labelled no
higher than what the helper's own records show was achieved (application only when a snapshot was taken
between the freeze and the thaw of a run whose scripts both succeeded and that the watchdog did not end).

The unmount path (``consistency: offline`` with ``mounts``), killed after the data filesystem went away: the
controller's process group or the remount watchdog, three kills in four drawn inside the time the filesystem
is away and the rest around and after its remount. Within the watchdog's deadline the filesystem is mounted
again with its data, and a set is labelled offline only when its snapshots started while a sampler saw the
filesystem unmounted. Each entry says whether its kill came while the sampler saw the filesystem unmounted.

``APPCONSISTENT_SOAK_RUNS`` runs of each path (1 in ``make test``; ``make soak SOAK_RUNS=50`` for 100 runs),
drawn from ``APPCONSISTENT_SOAK_SEED``; every kill, its instant and the outcome go to build/soak/soak-SEED.json.
The six fixed kill points are in ``test_db_crash_safety.py``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from e2e import db
from e2e.conftest import e2e_unavailable_reason
# The crash-safety tests' lab fixture (a MariaDB on a volume of one local AWS instance): this module gets its own.
# pylint: disable=redefined-outer-name
from e2e.test_db_crash_safety import (  # noqa: F401  pylint: disable=unused-import
    ACG, FREEZE_TIMEOUT, Playbook, frozen, group, helper_processes, lab, lock_session, marker_lines, snapshot_tags,
    wait_until)

REASON = e2e_unavailable_reason() or db.unavailable_reason()
pytestmark = [pytest.mark.skipif(REASON is not None, reason=str(REASON)), pytest.mark.timeout(600)]

RUNS = int(os.environ.get("APPCONSISTENT_SOAK_RUNS", "1"))
SEED = int(os.environ.get("APPCONSISTENT_SOAK_SEED", "20261207"))
OUT = Path(__file__).resolve().parents[2] / "build" / "soak"
# The helper's default state directory, where the lab's helper keeps its run records.
HELPER_RUNS = Path("/run/appconsistent/runs")
# From the kill: the watchdog's deadline (freeze_timeout after the freeze), its thaw and the postscript.
BOUND = FREEZE_TIMEOUT + 4
RANK = {"none": 0, "crash": 1, "filesystem": 2, "application": 3, "offline": 3}
# The unmount path's watchdog mounts the filesystems again after max(freeze_timeout, 60) seconds.
REMOUNT_BOUND = 60 + 10
# Seconds the twin holds each CreateSnapshots call of the unmount path. The controller calls it only after the
# instance reported the filesystem unmounted and sends the remount only after it returned, so on any machine the
# filesystem stays away at least this long after the test sees it go (a slower machine only lengthens that).
SNAPSHOT_LATENCY = 1.0


@pytest.fixture(scope="module")
def soak_log():
    entries: list[dict] = []
    yield entries
    OUT.mkdir(parents=True, exist_ok=True)
    outcomes: dict = {}
    for entry in entries:
        key = f"{entry['path']}/{entry['target']}"
        outcome = entry["outcome"]
        if "killed_while_unmounted" in entry:  # the unmount path: which kills hit the time the filesystem was away
            outcome += ", killed while unmounted" if entry["killed_while_unmounted"] else ", killed while mounted"
        outcomes.setdefault(key, {}).setdefault(outcome, 0)
        outcomes[key][outcome] += 1
    inside = [entry["killed_while_unmounted"] for entry in entries if "killed_while_unmounted" in entry]
    summary = {"seed": SEED, "runs": len(entries), "outcomes": outcomes,
               "offline_kills_while_unmounted": f"{sum(inside)} of {len(inside)}", "entries": entries}
    (OUT / f"soak-{SEED}.json").write_text(json.dumps(summary, indent=1))


def plan(run: int) -> tuple[str, str, float]:
    """(initiator, what is killed, seconds after the prescript took the lock) for one run of the soak."""
    rng = random.Random(f"{SEED}:{run}")
    return rng.choice(("controller", "instance")), rng.choice(("controller", "helper", "watchdog")), \
        round(rng.uniform(0.0, 3.0), 2)


def kill(lab, book: Playbook, target: str) -> int:
    """Kills the target now; the number of processes (or process groups) it hit."""
    if target == "controller":
        book.kill()
        return 1
    pids = helper_processes(lab, b"_watchdog" if target == "watchdog" else None)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(pids)


def helper_records(since: float, mount: Path) -> list[dict]:
    """The helper's records of runs on ``mount`` started after ``since`` (wall clock), as key/value dicts."""
    records = []
    for path in HELPER_RUNS.glob("*/record"):
        try:
            fields = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
        except OSError:
            continue
        on_mount = any(key.startswith("m.") and key.endswith(".path") and value == str(mount.resolve())
                       for key, value in fields.items())
        if on_mount and float(fields.get("t_start") or 0) >= since:
            records.append(fields)
    return records


def achieved(start_time: datetime, records: list[dict]) -> str:
    """The most a snapshot started at start_time can claim, from the helper's records: application when a
    run whose prescript and postscript both succeeded and that the watchdog did not end had every
    filesystem frozen at that instant."""
    instant = start_time.timestamp()
    best = "crash"
    for rec in records:
        frozen_at, thaw_started = rec.get("t_frozen"), rec.get("t_thaw_start")
        if not frozen_at or not thaw_started or rec.get("auto_thawed") == "1":
            continue
        if not float(frozen_at) <= instant <= float(thaw_started):
            continue
        scripts_ok = rec.get("pre.rc") == "0" and rec.get("post.rc") == "0"
        best = max(best, "application" if scripts_ok else "filesystem", key=RANK.get)
    return best


def assert_nothing_left(lab, killed: float):
    """Within BOUND of the kill: thawed, writes taken, no lock session on the server or in the state."""
    mount = lab.mounts["mariadb"].mountpoint
    server = lab.servers["mariadb"]
    wait_until(lambda: not frozen(mount), BOUND, "the filesystem was not thawed", step=0.1)
    remaining = max(1.0, BOUND - (time.monotonic() - killed))
    probe = db.run(server.client("app", "-e", "SET SESSION lock_wait_timeout = 1; "
                                              "INSERT INTO seq (n) SELECT -COUNT(*) - 1 FROM seq WHERE n < 0"),
                   check=False, timeout=remaining + 5)
    deadline = time.monotonic() + remaining
    while probe.returncode != 0 and time.monotonic() < deadline:
        time.sleep(0.2)
        probe = db.run(server.client("app", "-e", "SET SESSION lock_wait_timeout = 1; "
                                                  "INSERT INTO seq (n) SELECT -COUNT(*) - 1 FROM seq WHERE n < 0"),
                       check=False, timeout=30)
    assert probe.returncode == 0, f"the database did not take writes {BOUND}s after the kill: {probe.stderr}"
    wait_until(lambda: not (lab.state_dir / "mysql" / "session.pid").exists(), 10,
               "the lock session's state was not cleared")
    locks = server.sql("SELECT COUNT(*) FROM information_schema.METADATA_LOCK_INFO "
                       "WHERE LOCK_TYPE LIKE 'Backup%' OR LOCK_MODE LIKE 'MDL_BACKUP%'", check=False)
    if locks.returncode == 0:  # the metadata_lock_info plugin may be absent
        assert locks.stdout.strip() == "0", "a backup lock is still held on the server"


@pytest.mark.parametrize("run", range(RUNS))
def test_a_run_killed_at_a_random_instant_leaves_nothing_quiesced(lab, run, tmp_path, soak_log):
    initiator, target, delay = plan(run)
    # A run that failed can leave the helper at work (a watchdog finishing a thaw and its postscript): the next run
    # would be refused as already frozen and fail for the run before it.
    wait_until(lambda: not helper_processes(lab) and not helper_processes(lab, b"_watchdog"), 120,
               "the freeze helper of an earlier run was still running")
    lab.twins.latency.update({"profile": "zero", "api": {"CreateSnapshots": 1.0}})
    lab.twins.faults.reset()
    existing = set(snapshot_tags(lab))
    started = time.time()
    before = marker_lines(lab)
    entry = {"run": run, "path": f"freeze-{initiator}", "target": target, "delay_s": delay}
    book = Playbook(tmp_path, [group(lab, initiator)], lab.twins.endpoints)
    try:
        wait_until(lambda: marker_lines(lab) > before or book.proc.poll() is not None, 180, "the prescript did not run")
        assert marker_lines(lab) > before, book.output()[-3000:]
        connection = lock_session(lab)
        time.sleep(delay)
        entry["frozen_at_kill"] = frozen(lab.mounts["mariadb"].mountpoint)
        entry["hit"] = kill(lab, book, target)
        killed = time.monotonic()
        assert_nothing_left(lab, killed)
        entry["released_s"] = round(time.monotonic() - killed, 2)
    finally:
        output = book.output(timeout=300)  # a run that was not killed goes on to its end
    entry["playbook_rc"] = book.proc.returncode
    assert connection is not None
    left = lab.servers["mariadb"].sql(f"SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = {connection}")
    assert left.stdout.strip() == "0", f"the lock session {connection} is still on the server"
    assert_nothing_left(lab, time.monotonic())

    ec2 = lab.twins.aws_client("ec2")
    made = [s for s in ec2.describe_snapshots(OwnerIds=["self"], Filters=[
        {"Name": "tag:appconsistent:instance-id", "Values": [lab.aws_instance]}])["Snapshots"] if s["SnapshotId"] not in existing]
    records = helper_records(started - 1, lab.mounts["mariadb"].mountpoint)
    entry["helper_records"] = len(records)
    labels = []
    for snap in made:
        tags = {t["Key"]: t["Value"] for t in snap.get("Tags", [])}
        label, most = tags.get("appconsistent:consistency", "none"), achieved(snap["StartTime"], records)
        labels.append(label)
        assert RANK.get(label, 9) <= RANK[most], (f"{snap['SnapshotId']} is labelled {label} but the helper's records "
                                                  f"show at most {most}", output[-2000:])
    entry["labels"] = sorted(set(labels))
    entry["outcome"] = f"set {'/'.join(entry['labels'])}" if labels else "no set"
    soak_log.append(entry)


# --- the unmount path ----------------------------------------------------------------------------------


# The sampler runs as a process of its own: in a thread of this process it would share the interpreter with the
# twins' servers and could fall a second behind.
SAMPLER = """
import os, sys, time
path, out = sys.argv[1], open(sys.argv[2], "w", buffering=1)
was = True
while True:
    now, mounted = time.time(), os.path.ismount(path)
    if mounted != was:
        out.write(f"{'M' if mounted else 'U'} {now}\\n")
        was = mounted
    time.sleep(0.02)
"""


class MountSampler:
    """Samples every 20 ms whether a path is a mount point; the intervals it was not, in wall-clock time."""

    def __init__(self, path: Path, log: Path):
        self.log = log
        self._proc = subprocess.Popen([sys.executable, "-c", SAMPLER, str(path), str(log)])

    @property
    def gaps(self) -> list[list]:
        gaps: list[list] = []
        try:
            lines = self.log.read_text().splitlines()
        except OSError:
            return gaps
        for line in lines:
            kind, _space, stamp = line.partition(" ")
            if kind == "U":
                gaps.append([float(stamp), None])
            elif kind == "M" and gaps and gaps[-1][1] is None:
                gaps[-1][1] = float(stamp)
        return gaps

    def unmounted_at(self, instant: float) -> bool:
        # A gap opens up to one step after the unmount and closes up to one step after the remount; a snapshot
        # call cannot follow the unmount within one step (the controller learns of it through the agent).
        return any(start <= instant <= (end if end is not None else time.time()) for start, end in self.gaps)

    def stop(self):
        self._proc.kill()
        self._proc.wait(timeout=10)


def offline_plan(run: int) -> tuple[str, float]:
    """(what is killed, seconds after the test saw the filesystem unmounted) for one run of the unmount path.

    Three kills in four are drawn within SNAPSHOT_LATENCY, while the filesystem is away on any machine; the rest
    within two seconds after it, around the remount and after it. The draw only steers where kills land: each
    entry records where its kill did land, and the invariants are the same wherever that is."""
    rng = random.Random(f"{SEED}:offline:{run}")
    target = rng.choice(("controller", "watchdog"))
    if rng.random() < 0.75:
        return target, round(rng.uniform(0.0, SNAPSHOT_LATENCY), 2)
    return target, round(rng.uniform(SNAPSHOT_LATENCY, SNAPSHOT_LATENCY + 2.0), 2)


def remount_watchdogs() -> list[int]:
    """Process groups of the unmount path's remount watchdogs (their pid files)."""
    pids = []
    for path in Path("/run/appconsistent/offline").glob("*.watchdog"):
        try:
            pids.append(int(path.read_text().strip()))
        except (OSError, ValueError):
            continue
    return pids


@pytest.mark.parametrize("run", range(RUNS))
def test_an_offline_run_killed_at_a_random_instant_mounts_everything_again(run, tmp_path, request, soak_log):
    target, delay = offline_plan(run)
    fs = request.getfixturevalue("fs_factory")
    mount = fs.create("ext4")
    (mount.mountpoint / "keep.txt").write_text("data")
    twins = request.getfixturevalue("twin_factory")(
        {"instances": [{"provider": "aws", "name": "app-1", "platform": "linux", "execution": "local",
                        "volumes": [{"device": "/dev/xvda", "size": 8, "boot": True},
                                    {"device": "/dev/xvdf", "size": 1, "mount": str(mount.mountpoint)}]}]},
        alicloud=False)
    twins.latency.update({"profile": "zero", "api": {"CreateSnapshots": SNAPSHOT_LATENCY}})
    iid = twins.endpoints["aws"]["instances"]["app-1"]
    ec2 = twins.aws_client("ec2")
    instance = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    data = next(m["Ebs"]["VolumeId"] for m in instance["BlockDeviceMappings"] if m["DeviceName"] == "/dev/xvdf")
    entry = {"run": run, "path": "offline", "target": target, "delay_s": delay}
    sampler = MountSampler(mount.mountpoint, tmp_path / "mounted.log")
    book = Playbook(tmp_path, [{ACG: {"provider": "aws", "consistency": "offline", "instance_ids": [iid],
                                      "mounts": [str(mount.mountpoint)], "disk_ids": [data], "delete_after": "1d"}}],
                    twins.endpoints)
    kill_at = None
    try:
        # The delay runs from the instant the test sees the sampler's first gap (up to two polls after the unmount).
        wait_until(lambda: sampler.gaps or book.proc.poll() is not None, 180, "the filesystem was never unmounted")
        assert sampler.gaps, book.output()[-3000:]
        time.sleep(delay)
        kill_at = time.time()
        if target == "controller":
            book.kill()
            entry["hit"] = 1
        else:
            groups = remount_watchdogs()
            for pgid in groups:
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            entry["hit"] = len(groups)
        killed = time.monotonic()
        wait_until(lambda: os.path.ismount(str(mount.mountpoint)), REMOUNT_BOUND, "the filesystem was not mounted again",
                   step=0.2)
        entry["mounted_again_s"] = round(time.monotonic() - killed, 2)
    finally:
        output = book.output(timeout=300)
        time.sleep(0.1)  # longer than the sampler's step, so that a remount just before is in its log
        sampler.stop()
    gaps = sampler.gaps
    # Where the kill landed, against what the sampler saw: inside a gap (the filesystem away), or mounted.
    entry["killed_while_unmounted"] = sampler.unmounted_at(kill_at)
    entry["killed_after_unmount_s"] = round(kill_at - gaps[0][0], 2)
    entry["unmounted_s"] = [round(end - start, 2) if end is not None else None for start, end in gaps]
    entry["playbook_rc"] = book.proc.returncode
    entry["calls"] = {name: count for name, count in twins.stats.counts("aws").items()
                      if name in ("SendCommand", "CreateSnapshots", "CreateTags")}
    assert os.path.ismount(str(mount.mountpoint)) and (mount.mountpoint / "keep.txt").read_text() == "data"
    labels = []
    for snap in ec2.describe_snapshots(OwnerIds=["self"], Filters=[
            {"Name": "tag:appconsistent:instance-id", "Values": [iid]}])["Snapshots"]:
        tags = {t["Key"]: t["Value"] for t in snap.get("Tags", [])}
        label = tags.get("appconsistent:consistency", "none")
        labels.append(label)
        if label == "offline":
            assert sampler.unmounted_at(snap["StartTime"].timestamp()), (
                f"{snap['SnapshotId']} is labelled offline but started while the filesystem was mounted", output[-2000:])
    entry["labels"] = sorted(set(labels))
    entry["outcome"] = f"set {'/'.join(entry['labels'])}" if labels else "no set"
    soak_log.append(entry)
