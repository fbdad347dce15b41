"""Fixtures for the roles' tests: apply a role with ansible-playbook, real database servers.

``apply_role`` runs one role on this machine (local connection, as root) with the given
variables and returns the play's result. ``root_dir`` is a root-only directory under /run,
the kind of place the consistency_scripts role accepts (pytest's tmp_path is under the
world-writable /tmp, which the role refuses). ``mariadb_server`` and ``postgresql_server``
start a private server in a temporary data directory, reachable only through a socket in
that directory, and always stop it at teardown.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
COLLECTIONS = REPO_ROOT / "build" / "collections"
PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
# The test plays' own action (write_test_results), which hands results to the test without a module run.
TEST_ACTION_PLUGINS = str(REPO_ROOT / "tests" / "plugins" / "action")
PG_BIN = Path("/usr/lib/postgresql")


def _run(argv, check=True, timeout=60, **kwargs):
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=timeout, **kwargs)


def require_root():
    if os.geteuid() != 0:
        pytest.skip("needs root: installs root-owned scripts and runs them")


@dataclass
class PlayResult:
    rc: int
    stdout: str
    stderr: str
    stats: dict
    facts: dict

    @property
    def changed(self) -> int:
        return sum(host.get("changed", 0) for host in self.stats.values())


def role_applier(tmp_path):
    """apply(role, variables, check=False, variants=None) -> PlayResult (JSON callback).

    With ``variants`` (a list of variable dicts) the role is applied once per variant in
    one play, which saves an ansible-playbook start per variant.
    """
    counter = [0]

    def apply(role, variables, check=False, variants=None):
        counter[0] += 1
        facts_file = tmp_path / f"facts-{counter[0]}.json"
        keep_facts = {
            "name": "Keep the role's published facts",
            "write_test_results": {"dest": str(facts_file),
                                   "content": "{{ {'consistency_scripts_result': consistency_scripts_result"
                                              " | default(None)} | to_json }}"},
            "check_mode": False, "changed_when": False}
        apply_tasks = [{"name": f"Apply {role}", "ansible.builtin.include_role": {"name": f"appconsistent.snapshots.{role}"},
                        "vars": variant} for variant in (variants or [{}])]
        play = [{"name": f"apply {role}", "hosts": "localhost", "gather_facts": False,
                 "tasks": apply_tasks + [keep_facts]}]
        playbook = tmp_path / f"play-{counter[0]}.yml"
        playbook.write_text(yaml.safe_dump(play, sort_keys=False))
        extra = tmp_path / f"vars-{counter[0]}.json"
        extra.write_text(json.dumps(variables))
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS), ANSIBLE_LOCALHOST_WARNING="false",
                   ANSIBLE_INVENTORY_UNPARSED_WARNING="false", ANSIBLE_NOCOLOR="1",
                   ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json", ANSIBLE_BECOME_METHOD="su",
                   ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_ACTION_PLUGINS=TEST_ACTION_PLUGINS)
        cmd = [str(PLAYBOOK), "-i", "localhost,", "-c", "local", str(playbook), "-e", f"@{extra}"]
        if check:
            cmd.append("--check")
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
        try:
            stats = json.loads(proc.stdout).get("stats", {})
        except json.JSONDecodeError:
            stats = {}
        facts = json.loads(facts_file.read_text()) if facts_file.exists() else {}
        return PlayResult(proc.returncode, proc.stdout, proc.stderr, stats, facts)

    return apply


@pytest.fixture
def apply_role(tmp_path):
    return role_applier(tmp_path)


def _root_dir():
    require_root()
    path = Path("/run") / f"appconsistent-test-{uuid.uuid4().hex[:12]}"
    path.mkdir(mode=0o700)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def root_dir():
    """A fresh root:root 0700 directory under /run, removed at teardown."""
    yield from _root_dir()


@pytest.fixture(scope="module")
def module_root_dir():
    yield from _root_dir()


def stop_session_groups(state_dir: Path):
    """Ends any quiescing session a test left behind (its pid file names its process group)."""
    for pid_file in state_dir.glob("*/session.pid"):
        try:
            pid = int(pid_file.read_text().split()[0])
            os.killpg(pid, signal.SIGKILL)
        except (ValueError, IndexError, ProcessLookupError, PermissionError, OSError):
            pass


@dataclass
class MariaDB:
    socket: Path
    datadir: Path

    def sql(self, statement, check=True, timeout=30, user_args=()):
        return _run(["mariadb", "--no-defaults", f"--socket={self.socket}", *user_args, "--batch",
                     "--skip-column-names", "-e", statement], check=check, timeout=timeout)

    def sql_async(self, statement):
        return subprocess.Popen(["mariadb", "--no-defaults", f"--socket={self.socket}", "--batch",
                                 "--skip-column-names", "-e", statement],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, seconds, what):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} within {seconds}s")


@pytest.fixture(scope="module")
def mariadb_server():
    require_root()
    for tool in ("mariadbd", "mariadb-install-db", "mariadb"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            pytest.skip(f"{tool} is not installed (Debian package mariadb-server)")
    base = Path(tempfile.mkdtemp(prefix="appconsistent-mariadb-"))
    proc = None
    try:
        shutil.chown(base, "mysql", "mysql")
        datadir = base / "data"
        _run(["mariadb-install-db", "--user=mysql", f"--datadir={datadir}", "--auth-root-authentication-method=socket",
              "--skip-test-db"], timeout=120)
        socket = base / "mysql.sock"
        proc = subprocess.Popen(["/usr/sbin/mariadbd", "--no-defaults", "--user=mysql", f"--datadir={datadir}",
                                 f"--socket={socket}", "--skip-networking", f"--pid-file={base / 'mysqld.pid'}",
                                 f"--log-error={base / 'error.log'}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        server = MariaDB(socket=socket, datadir=datadir)
        _wait_for(lambda: socket.exists() and server.sql("SELECT 1", check=False).returncode == 0, 60,
                  "MariaDB did not start")
        server.sql("CREATE DATABASE app; CREATE TABLE app.t (i INT); INSERT INTO app.t VALUES (1)")
        yield server
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        shutil.rmtree(base, ignore_errors=True)


@dataclass
class PostgreSQL:
    socket_dir: Path
    port: int
    datadir: Path
    bindir: Path

    def sql(self, statement, check=True, timeout=30):
        return _run(["runuser", "-u", "postgres", "--", str(self.bindir / "psql"), "-X", "-A", "-t", "-h",
                     str(self.socket_dir), "-p", str(self.port), "-d", "postgres", "-v", "ON_ERROR_STOP=1",
                     "-c", statement], check=check, timeout=timeout)


def _pg_bindir():
    versions = sorted((p for p in PG_BIN.glob("*/bin") if (p / "postgres").exists()),
                      key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    return versions[-1] if versions else None


@pytest.fixture(scope="module")
def postgresql_server():
    require_root()
    bindir = _pg_bindir()
    if bindir is None or shutil.which("runuser") is None:
        pytest.skip("PostgreSQL is not installed (Debian package postgresql)")
    base = Path(tempfile.mkdtemp(prefix="appconsistent-postgresql-"))
    datadir = base / "data"
    started = False
    try:
        shutil.chown(base, "postgres", "postgres")
        base.chmod(0o700)
        _run(["runuser", "-u", "postgres", "--", str(bindir / "initdb"), "-D", str(datadir), "-A", "peer",
              "--no-sync"], timeout=120)
        port = 20000 + (os.getpid() % 20000)
        _run(["runuser", "-u", "postgres", "--", str(bindir / "pg_ctl"), "-D", str(datadir), "-l", str(base / "log"),
              "-o", f"-c listen_addresses='' -c unix_socket_directories={base} -p {port} -c fsync=off",
              "-w", "-t", "60", "start"], timeout=90)
        started = True
        server = PostgreSQL(socket_dir=base, port=port, datadir=datadir, bindir=bindir)
        server.sql("CREATE TABLE t (i int); INSERT INTO t VALUES (1)")
        yield server
    finally:
        if started:
            _run(["runuser", "-u", "postgres", "--", str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "immediate",
                  "-w", "stop"], check=False, timeout=60)
        shutil.rmtree(base, ignore_errors=True)
