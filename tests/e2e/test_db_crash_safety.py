"""Crash safety with a real database lock: MariaDB's BACKUP STAGE lock, held by the
mysql profile's prescript, on a filesystem that the freeze helper freezes on a local AWS twin
instance.

``ansible-playbook`` is killed with SIGKILL at each step of the controller-initiated cycle (after
the prescript, after the freeze, after the snapshot call, before the thaw), the thaw command's
delivery is lost, and the helper itself is killed in the instance-initiated cycle. Each time,
within ``freeze_timeout`` + 2 s the filesystem takes writes again and the database lock is gone
(the watchdog thaws and runs the postscript, which ends the lock session), and the next run
succeeds. The kill between freeze and thaw without a database is in
``test_app_consistent_group_aws.py``; refusals and nested mounts are in ``test_freeze_helper.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from e2e import db
from e2e.conftest import FilesystemFactory, e2e_unavailable_reason

REASON = e2e_unavailable_reason() or db.unavailable_reason()
pytestmark = [pytest.mark.skipif(REASON is not None, reason=str(REASON)), pytest.mark.timeout(600)]

ACG = "appconsistent.snapshots.app_consistent_group"
FREEZE_TIMEOUT = 4
BOUND = FREEZE_TIMEOUT + 2
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("dbcrash")
    the_lab = db.DbLab(workdir, FilesystemFactory, databases=("mariadb",), marker=workdir / "prescript-done")
    try:
        the_lab.setup()
        the_lab.start_writers()
        yield the_lab
    finally:
        problems = the_lab.teardown()
    assert not problems, problems


@pytest.fixture
def clean_twins(lab):
    lab.twins.latency.update("zero")
    lab.twins.faults.reset()
    lab.twins.stats.reset()
    try:
        yield lab.twins
    finally:
        lab.twins.latency.update("zero")
        lab.twins.faults.reset()


def group(lab, initiator="controller"):
    return {ACG: {"provider": "aws", "instance_ids": [lab.aws_instance], "mounts": lab.mountpoints(),
                  "pre_script_path": str(lab.prescript), "post_script_path": str(lab.postscript),
                  "freeze_helper_path": str(lab.helper), "freeze_timeout": FREEZE_TIMEOUT, "initiator": initiator,
                  "exclude_boot_disk": True, "delete_after": "1d"}}


class Playbook:
    """An ansible-playbook run in its own process group, so that SIGKILL takes all of it."""

    def __init__(self, tmp_path, tasks, endpoints):
        from conftest import COLLECTIONS, connection_defaults  # pylint: disable=import-outside-toplevel
        play = [{"hosts": "localhost", "gather_facts": False, "tasks": tasks,
                 "module_defaults": {"group/appconsistent.snapshots.snapshots": connection_defaults(endpoints)}}]
        path = tmp_path / "killed.yml"
        path.write_text(yaml.safe_dump(play, sort_keys=False))
        # The module unpacks itself in TMPDIR and a killed one cannot remove what it unpacked: the test's own directory.
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_PYTHON_INTERPRETER=sys.executable,
                   ANSIBLE_NOCOLOR="1", TMPDIR=str(tmp_path))
        self.proc = subprocess.Popen([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c",
                                      "local", str(path)], env=env, start_new_session=True,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def kill(self) -> float:
        """SIGKILL to ansible-playbook and everything it started. Its workers lead sessions of their own (ansible-core
        detaches them with setsid), so a signal to its process group would leave the module running on."""
        stopped: set[int] = set()
        while True:  # stopped first, so that nothing starts a process the kill would miss
            tree = {self.proc.pid, *descendants(self.proc.pid)} - stopped
            if not tree:
                break
            for pid in tree:
                try:
                    os.kill(pid, signal.SIGSTOP)
                except ProcessLookupError:
                    pass
            stopped |= tree
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return time.monotonic()

    def output(self, timeout=120) -> str:
        try:
            out = self.proc.communicate(timeout=timeout)[0]
        except subprocess.TimeoutExpired:
            self.kill()
            out = self.proc.communicate(timeout=30)[0]
        return out or ""


def descendants(pid: int) -> set[int]:
    """Every process below pid, whatever its session."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def frozen(mount) -> bool:
    """True while a write to the mount does not complete within half a second."""
    probe = subprocess.Popen(["sh", "-c", f"echo x > '{mount}/.probe'"], start_new_session=True)
    try:
        probe.wait(timeout=0.5)
        return False
    except subprocess.TimeoutExpired:
        return True
    finally:
        if probe.poll() is None:
            os.killpg(probe.pid, signal.SIGKILL)
            probe.wait()


def wait_until(predicate, seconds, what, step=0.05):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(step)
    raise AssertionError(f"{what} within {seconds}s")


def lock_session(lab) -> str | None:
    """The connection id of the prescript's FTWRL session, while it is held."""
    out = lab.state_dir / "mysql" / "session.out"
    try:
        for line in out.read_text().splitlines():
            if line.startswith("APPCONSISTENT_CONNECTION "):
                return line.split()[1]
    except OSError:
        return None
    return None


def assert_released_within(lab, since: float, connection: str | None):
    """The filesystem takes writes, the writer commits again and the lock session is gone, by the bound."""
    mount = lab.mounts["mariadb"].mountpoint
    server = lab.servers["mariadb"]
    wait_until(lambda: not frozen(mount), BOUND, "the filesystem was not thawed", step=0.1)
    remaining = BOUND - (time.monotonic() - since)
    assert remaining > 0, f"thawed only {time.monotonic() - since:.1f}s after the kill"
    probe = db.run(server.client("app", "-e", "INSERT INTO seq (n) SELECT -COUNT(*) - 1 FROM seq WHERE n < 0"),
                   check=False, timeout=max(1, remaining))
    assert probe.returncode == 0, probe.stderr
    assert time.monotonic() - since <= BOUND, f"the database took writes only {time.monotonic() - since:.1f}s later"
    assert lab.writers["mariadb"].progress_within(2), "the writer did not commit again"
    if connection is not None:
        left = server.sql(f"SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = {connection}").stdout.strip()
        assert left == "0", f"the lock session {connection} is still on the server"
    wait_until(lambda: not (lab.state_dir / "mysql" / "session.pid").exists(), 5, "the lock session state was not cleared")


def assert_next_run_succeeds(lab, run_tasks, initiator="controller"):
    lab.twins.latency.update("zero")
    lab.twins.faults.reset()
    task = group(lab, initiator)
    # An ordinary run, with a deadline that a busy machine cannot miss.
    task[ACG]["freeze_timeout"] = 30
    run = run_tasks([dict(task, register="again")], lab.twins.endpoints)
    assert not run["again"].get("failed"), run["again"].get("msg")
    assert run["again"]["results"][0]["consistency"] == "application"


def marker_lines(lab) -> int:
    try:
        return len(lab.marker.read_text().splitlines())
    except OSError:
        return 0


def test_sigkill_after_the_prescript(lab, clean_twins, run_tasks, tmp_path):
    before = marker_lines(lab)
    book = Playbook(tmp_path, [group(lab)], clean_twins.endpoints)
    try:
        wait_until(lambda: marker_lines(lab) > before, 120, "the prescript did not run")
        connection = lock_session(lab)
        killed = book.kill()
    finally:
        book.kill()
        book.output()
    assert connection is not None
    assert_released_within(lab, killed, connection)
    assert_next_run_succeeds(lab, run_tasks)


def test_sigkill_after_the_freeze(lab, clean_twins, run_tasks, tmp_path):
    # The controller learns of the freeze by polling the command: hold that poll in the twin.
    clean_twins.latency.update({"profile": "zero", "api": {"ListCommandInvocations": 30.0, "GetCommandInvocation": 30.0}})
    book = Playbook(tmp_path, [group(lab)], clean_twins.endpoints)
    mount = lab.mounts["mariadb"].mountpoint
    try:
        wait_until(lambda: frozen(mount), 120, "the filesystem was never frozen", step=0.1)
        connection = lock_session(lab)
        killed = book.kill()
    finally:
        book.kill()
        book.output()
    assert connection is not None
    assert not clean_twins.stats.counts("aws").get("CreateSnapshots")
    assert_released_within(lab, killed, connection)
    assert_next_run_succeeds(lab, run_tasks)


@pytest.mark.parametrize("point", ["after the snapshot call", "before the thaw"])
def test_sigkill_after_the_snapshot_call_and_before_the_thaw(lab, clean_twins, run_tasks, tmp_path, point):
    # CreateSnapshots takes a moment, so that the kill can land while it runs; the thaw command is held
    # in the twin for longer than the watchdog waits, set before the run so that no timing decides it.
    clean_twins.latency.update({"profile": "zero", "api": {"CreateSnapshots": 1.5}})
    clean_twins.faults.update({"instances": {"db-1": {"hold_commands": {" thaw --run-id ": 30}}}})
    existing = snapshot_tags(lab)
    book = Playbook(tmp_path, [group(lab)], clean_twins.endpoints)
    mount = lab.mounts["mariadb"].mountpoint
    try:
        wait_until(lambda: frozen(mount), 120, "the filesystem was never frozen", step=0.1)
        connection = lock_session(lab)
        wait_until(lambda: clean_twins.stats.counts("aws").get("CreateSnapshots"), 30, "no snapshot call")
        if point == "before the thaw":
            time.sleep(2.5)  # the snapshot call has returned and the thaw is on its way
        killed = book.kill()
    finally:
        book.kill()
        book.output()
    assert connection is not None
    assert_released_within(lab, killed, connection)
    # The set exists but nothing confirmed the thaw: it stays tagged crash, never application.
    wait_until(lambda: set(snapshot_tags(lab)) - set(existing), 10, "the snapshot call made no snapshot", step=0.5)
    made = {s: tags for s, tags in snapshot_tags(lab).items() if s not in existing}
    assert made, "the snapshot call made no snapshot"
    assert {tags["appconsistent:consistency"] for tags in made.values()} == {"crash"}
    assert_next_run_succeeds(lab, run_tasks)


def snapshot_tags(lab) -> dict:
    ec2 = lab.twins.aws_client("ec2")
    snaps = ec2.describe_snapshots(OwnerIds=["self"], Filters=[{"Name": "tag:appconsistent:instance-id",
                                                                "Values": [lab.aws_instance]}])["Snapshots"]
    return {s["SnapshotId"]: {t["Key"]: t["Value"] for t in s.get("Tags", [])} for s in snaps}


def test_lost_thaw_delivery(lab, clean_twins, run_tasks, tmp_path):
    before = marker_lines(lab)
    book = Playbook(tmp_path, [group(lab)], clean_twins.endpoints)
    try:
        # The freeze command is already on the instance when its prescript runs: only the thaw is lost.
        wait_until(lambda: marker_lines(lab) > before, 120, "the prescript did not run", step=0.02)
        clean_twins.faults.update({"instances": {"db-1": {"undeliverable": True}}})
        quiesced = time.monotonic()  # the freeze follows: timing from here is the stricter bound
        connection = lock_session(lab)
        assert_released_within(lab, quiesced, connection)
        output = book.output(timeout=300)
    finally:
        book.kill()
        book.output()
    assert book.proc.returncode != 0, output[-3000:]
    assert "ThawNotConfirmed" in output or "Thaw203" in output, output[-3000:]
    assert connection is not None
    assert_next_run_succeeds(lab, run_tasks)


def helper_processes(lab, action: bytes | None = None) -> list[int]:
    """Processes of the lab's freeze helper: those of ``action`` (b"run", b"_watchdog"), or with None every one but
    its watchdog."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            args = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(lab.helper).encode() not in args:
            continue
        watchdog = b"_watchdog" in args
        if watchdog if action == b"_watchdog" else not watchdog and (action is None or action in args):
            pids.append(int(entry))
    return pids


def test_killing_the_helper_itself(lab, clean_twins, run_tasks, tmp_path):
    # The instance's own CreateSnapshots call is slow, so the helper is killed while frozen.
    clean_twins.latency.update({"profile": "zero", "api": {"CreateSnapshots": 8.0}})
    book = Playbook(tmp_path, [group(lab, initiator="instance")], clean_twins.endpoints)
    mount = lab.mounts["mariadb"].mountpoint
    try:
        wait_until(lambda: frozen(mount), 120, "the filesystem was never frozen", step=0.1)
        connection = lock_session(lab)
        pids = helper_processes(lab, b"run")
        assert pids, "the helper is not running"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        assert_released_within(lab, killed, connection)
    finally:
        book.kill()
        book.output()
    assert connection is not None
    assert_next_run_succeeds(lab, run_tasks, initiator="instance")
