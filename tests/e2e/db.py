"""Real database servers for the consistency tests: primaries on twin volumes, writers that keep
invariants, and the check of a restored volume with a second server started on it.

Every server listens on a Unix socket only (MariaDB ``--skip-networking``, PostgreSQL
``listen_addresses=''``), in a directory of its own, so that parallel runs never meet.

The invariants a writer keeps, one transaction at a time:

* ``accounts``: transfers move an amount from one account to another, so the sum of the balances
  is always ``ACCOUNTS * OPENING_BALANCE``;
* ``seq``: every transaction also inserts the next number of a counter, so the committed rows are
  exactly ``1..n``; a restored copy with a gap holds a later transaction without an earlier one.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ACCOUNTS = 50
OPENING_BALANCE = 1000
TOTAL = ACCOUNTS * OPENING_BALANCE
PG_PORT = 5432  # only names the socket file: PostgreSQL listens on no TCP address here
PG_ROOT = Path("/usr/lib/postgresql")
MARIADBD = "/usr/sbin/mariadbd"
# Small InnoDB files keep images and copies small; the restored server must use the same sizes.
MARIADB_OPTIONS = ["--innodb-log-file-size=16M", "--innodb-buffer-pool-size=32M", "--skip-name-resolve",
                   "--character-set-server=utf8mb4", "--skip-log-bin"]
START_TIMEOUT = 90


def run(argv, check=True, timeout=120, **kwargs):
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=timeout, **kwargs)


def pg_bindir() -> Path | None:
    versions = sorted((p for p in PG_ROOT.glob("*/bin") if (p / "postgres").exists()),
                      key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    return versions[-1] if versions else None


def unavailable_reason() -> str | None:
    """Why the database servers cannot run here, or None."""
    for tool in ("mariadb-install-db", "mariadb", "mariadb-check", "runuser", "blkid"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian packages mariadb-server, util-linux)"
    if not Path(MARIADBD).exists():
        return "mariadbd is not installed (Debian package mariadb-server)"
    bindir = pg_bindir()
    if bindir is None or not (bindir / "pg_amcheck").exists():
        return "PostgreSQL with pg_amcheck is not installed (Debian package postgresql)"
    for user in ("mysql", "postgres"):
        if run(["id", "-u", user], check=False).returncode != 0:
            return f"the {user} user does not exist"
    return None


def wait_for(predicate, seconds, what):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} within {seconds}s")


def private_dir(owner: str, prefix: str) -> Path:
    """A fresh 0700 directory owned by ``owner`` directly under the system temp dir.

    pytest's own temporary directories are closed to other users, and the servers do not
    run as root.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    shutil.chown(path, owner, owner)
    path.chmod(0o700)
    return path


# --- servers ------------------------------------------------------------------------------------


class MariaDB:
    """A mariadbd on ``datadir`` reachable only through its socket in ``rundir``."""

    kind = "mariadb"

    def __init__(self, datadir: Path, rundir: Path):
        self.datadir = Path(datadir)
        self.rundir = Path(rundir)
        self.socket = self.rundir / "mysqld.sock"
        self.log = self.rundir / "error.log"
        self.proc: subprocess.Popen | None = None

    def install(self):
        self.datadir.mkdir(mode=0o750)
        shutil.chown(self.datadir, "mysql", "mysql")
        run(["mariadb-install-db", "--no-defaults", "--user=mysql", f"--datadir={self.datadir}",
             "--auth-root-authentication-method=socket", "--skip-test-db", *MARIADB_OPTIONS], timeout=180)

    def start(self, wait=True):
        self.proc = subprocess.Popen([MARIADBD, "--no-defaults", "--user=mysql", f"--datadir={self.datadir}",
                                      f"--socket={self.socket}", "--skip-networking",
                                      f"--pid-file={self.rundir / 'mysqld.pid'}", f"--log-error={self.log}",
                                      *MARIADB_OPTIONS],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        if wait:
            wait_for(lambda: self.proc.poll() is not None or self.ready(), START_TIMEOUT, "MariaDB did not start")
            if self.proc.poll() is not None:
                raise AssertionError(f"mariadbd exited {self.proc.returncode}: {self.log_text()[-2000:]}")

    def ready(self) -> bool:
        return self.socket.exists() and self.sql("SELECT 1", check=False).returncode == 0

    def client(self, *extra):
        return ["mariadb", "--no-defaults", f"--socket={self.socket}", "--batch", "--skip-column-names", "--unbuffered", *extra]

    def sql(self, statement, check=True, timeout=60, database=None):
        argv = self.client() + ([database] if database else []) + ["-e", statement]
        return run(argv, check=check, timeout=timeout)

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(timeout=30)


class PostgreSQL:
    """A postgres on ``datadir``, run as the postgres user, reachable only through its socket in ``rundir``."""

    kind = "postgresql"

    def __init__(self, datadir: Path, rundir: Path):
        self.datadir = Path(datadir)
        self.rundir = Path(rundir)
        self.bindir = pg_bindir()
        self.log = self.rundir / "server.log"
        self.started = False

    @staticmethod
    def as_postgres(*argv):
        return ["runuser", "-u", "postgres", "--", *argv]

    def install(self):
        self.datadir.mkdir(mode=0o700)
        shutil.chown(self.datadir, "postgres", "postgres")
        run(self.as_postgres(str(self.bindir / "initdb"), "-D", str(self.datadir), "-A", "peer", "-U", "postgres"),
            timeout=180)

    def start(self, wait=True):
        self.started = True
        proc = run(self.as_postgres(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.log),
                                    "-o", f"-c listen_addresses='' -c unix_socket_directories={self.rundir} "
                                    f"-p {PG_PORT} -c shared_buffers=16MB", "-w" if wait else "-W",
                                    "-t", str(START_TIMEOUT), "start"), check=False, timeout=START_TIMEOUT + 30)
        if proc.returncode != 0:
            raise AssertionError(f"PostgreSQL did not start: {proc.stdout} {proc.stderr} {self.log_text()[-2000:]}")

    def client(self, *extra, database="app"):
        return self.as_postgres(str(self.bindir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                                "-h", str(self.rundir), "-p", str(PG_PORT), "-d", database, *extra)

    def sql(self, statement, check=True, timeout=60, database="app"):
        return run(self.client("-c", statement, database=database), check=check, timeout=timeout)

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self):
        if not self.started:
            return
        self.started = False
        run(self.as_postgres(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "-t", "60",
                             "stop"), check=False, timeout=90)
        # A server that did not stop in time (or whose pg_ctl failed) must not outlive the test.
        pid_file = self.datadir / "postmaster.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text().split()[0]), 9)
            except (ValueError, IndexError, OSError):
                pass


SCHEMA = {
    "mariadb": ("CREATE DATABASE app; USE app; "
                "CREATE TABLE accounts (id INT PRIMARY KEY, balance BIGINT NOT NULL) ENGINE=InnoDB; "
                "CREATE TABLE seq (n BIGINT PRIMARY KEY) ENGINE=InnoDB; "
                "INSERT INTO accounts SELECT seq, {bal} FROM seq_1_to_{n};"),
    "postgresql": ("CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL); "
                   "CREATE TABLE seq (n bigint PRIMARY KEY); "
                   "INSERT INTO accounts SELECT g, {bal} FROM generate_series(1, {n}) g;"),
}


def create_schema(server):
    statement = SCHEMA[server.kind].format(n=ACCOUNTS, bal=OPENING_BALANCE)
    if server.kind == "postgresql":
        server.sql("CREATE DATABASE app", database="postgres")
        server.sql(statement)
    else:
        server.sql(statement)


# --- the writer ---------------------------------------------------------------------------------


class Writer:
    """Runs invariant-keeping transactions through one client session until stopped.

    Each transaction ends with ``SELECT n``; the writer waits for that line before the next one,
    so ``committed`` is the number of transactions the server has acknowledged.
    """

    def __init__(self, server, pause: float = 0.005, seed: int = 0):
        self.server = server
        self.pause = pause
        self.random = random.Random(seed)
        self.committed = 0
        self.error: str | None = None
        self._stop = threading.Event()
        argv = server.client() + ["app"] if server.kind == "mariadb" else server.client()
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, bufsize=1, start_new_session=True)
        self.thread = threading.Thread(target=self._loop, name=f"writer-{server.kind}", daemon=True)
        self.thread.start()

    def _transaction(self, n: int) -> str:
        src, dst = self.random.sample(range(1, ACCOUNTS + 1), 2)
        amount = self.random.randint(1, 50)
        begin = "START TRANSACTION" if self.server.kind == "mariadb" else "BEGIN"
        return (f"{begin}; UPDATE accounts SET balance = balance - {amount} WHERE id = {src}; "
                f"UPDATE accounts SET balance = balance + {amount} WHERE id = {dst}; "
                f"INSERT INTO seq (n) VALUES ({n}); COMMIT; SELECT {n};\n")

    def _loop(self):
        try:
            while not self._stop.is_set():
                n = self.committed + 1
                self.proc.stdin.write(self._transaction(n))
                self.proc.stdin.flush()
                line = self.proc.stdout.readline()
                if line.strip() != str(n):
                    self.error = f"unexpected answer {line!r}: {self.proc.stderr.read() if self.proc.poll() is not None else ''}"
                    return
                self.committed = n
                time.sleep(self.pause)
        except (OSError, ValueError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"

    def progress_within(self, seconds: float) -> bool:
        """True when at least one more transaction commits within the given time."""
        start = self.committed
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.committed > start:
                return True
            time.sleep(0.02)
        return self.committed > start

    def stop(self):
        self._stop.set()
        self.thread.join(timeout=30)
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(timeout=10)


# --- checking a restored volume -----------------------------------------------------------------


@dataclass
class CheckResult:
    """What a second server found on one restored volume."""

    kind: str = ""
    image: str = ""
    started: bool = False
    recovery: bool = False
    integrity_ok: bool = False
    total: int | None = None
    seq_count: int | None = None
    seq_max: int | None = None
    gap: bool | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return (self.started and self.integrity_ok and self.total == TOTAL and self.gap is False
                and not self.errors)

    def to_dict(self) -> dict:
        return dict(asdict(self), passed=self.passed)


RECOVERY_MARKERS = {
    "mariadb": ("Starting crash recovery", "crash recovery", "Recovering after a crash"),
    "postgresql": ("was not properly shut down", "was interrupted", "automatic recovery in progress"),
}


def fstype_of(image: str) -> str:
    return run(["blkid", "-o", "value", "-s", "TYPE", image], check=False).stdout.strip()


class RestoredVolume:
    """A restored image attached to a loop device and mounted read-write (a restore owns its copy)."""

    def __init__(self, image: str, parent: Path):
        self.image = image
        self.mountpoint = Path(tempfile.mkdtemp(prefix="restored-", dir=parent))
        self.device: str | None = None
        self.mounted = False

    def __enter__(self) -> "RestoredVolume":
        try:
            self.device = run(["losetup", "--find", "--show", self.image]).stdout.strip()
            options = ["-o", "nouuid"] if fstype_of(self.image) == "xfs" else []
            run(["mount", *options, self.device, str(self.mountpoint)])
            self.mounted = True
            os.chmod(self.mountpoint, 0o755)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        if self.mounted:
            if run(["umount", str(self.mountpoint)], check=False).returncode != 0:
                run(["umount", "-l", str(self.mountpoint)], check=False)
            self.mounted = False
        if self.device:
            run(["losetup", "-d", self.device], check=False)
            self.device = None
        try:
            self.mountpoint.rmdir()
        except OSError:
            pass


def _int(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.lstrip("-").isdigit() else None


def _invariants(result: CheckResult, query):
    result.total = _int(query("SELECT COALESCE(SUM(balance), 0) FROM accounts"))
    row = query("SELECT COUNT(*), COALESCE(MAX(n), 0), COALESCE(MIN(n), 1) FROM seq WHERE n > 0").replace("|", " ").split()
    count, top, low = (int(v) for v in row)
    result.seq_count, result.seq_max = count, top
    result.gap = not (count == top and low == 1)


def check_mariadb(datadir: Path, result: CheckResult, extra=None):
    """``extra(result, query)``, if given, checks a workload's own invariants on the running copy."""
    rundir = private_dir("mysql", "appconsistent-check-mariadb-")
    server = MariaDB(datadir, rundir)
    try:
        try:
            server.start()
            result.started = True
        except AssertionError as exc:
            result.errors.append(str(exc)[:2000])
            return
        check = run(["mariadb-check", "--no-defaults", f"--socket={server.socket}", "--all-databases",
                     "--extended"], check=False, timeout=300)
        bad = [line for line in check.stdout.splitlines() if line.strip() and not line.rstrip().endswith("OK")
               and "note" not in line.lower()]
        result.integrity_ok = check.returncode == 0 and not bad
        if not result.integrity_ok:
            result.errors.append(f"mariadb-check rc {check.returncode}: {' | '.join(bad)[-1000:]} {check.stderr[-500:]}")
        _invariants(result, lambda q: server.sql(q, database="app").stdout)
        if extra is not None:
            extra(result, lambda q: server.sql(q, database="app").stdout)
    except (subprocess.SubprocessError, ValueError) as exc:
        result.errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        server.stop()
        result.recovery = any(marker in server.log_text() for marker in RECOVERY_MARKERS["mariadb"])
        shutil.rmtree(rundir, ignore_errors=True)


def check_postgresql(datadir: Path, result: CheckResult, extra=None):
    """``extra(result, query)``, if given, checks a workload's own invariants on the running copy."""
    rundir = private_dir("postgres", "appconsistent-check-pg-")
    server = PostgreSQL(datadir, rundir)
    # The copy holds the primary's lock file, whose process is alive on this machine: a server
    # restored on another host would not find it, and neither must this one.
    (datadir / "postmaster.pid").unlink(missing_ok=True)
    try:
        try:
            server.start()
            result.started = True
        except AssertionError as exc:
            result.errors.append(str(exc)[:2000])
            return
        amcheck = run(server.as_postgres(str(server.bindir / "pg_amcheck"), "-h", str(rundir), "-p", str(PG_PORT),
                                         "--install-missing", "--heapallindexed", "--parent-check", "-d", "app"),
                      check=False, timeout=300)
        result.integrity_ok = amcheck.returncode == 0
        if not result.integrity_ok:
            result.errors.append(f"pg_amcheck rc {amcheck.returncode}: {amcheck.stdout[-1000:]} {amcheck.stderr[-500:]}")
        _invariants(result, lambda q: server.sql(q).stdout)
        if extra is not None:
            extra(result, lambda q: server.sql(q).stdout)
    except (subprocess.SubprocessError, ValueError) as exc:
        result.errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        server.stop()
        result.recovery = any(marker in server.log_text() for marker in RECOVERY_MARKERS["postgresql"])
        shutil.rmtree(rundir, ignore_errors=True)


def check_restored_image(image: str, parent: Path) -> CheckResult:
    """Mounts a restored volume, starts a second server on the database it holds and checks it."""
    result = CheckResult(image=image)
    try:
        with RestoredVolume(image, parent) as volume:
            if (volume.mountpoint / "mysql").is_dir():
                result.kind = "mariadb"
                check_mariadb(volume.mountpoint / "mysql", result)
            elif (volume.mountpoint / "pgdata").is_dir():
                result.kind = "postgresql"
                check_postgresql(volume.mountpoint / "pgdata", result)
            else:
                result.errors.append(f"no database on the restored volume: {sorted(os.listdir(volume.mountpoint))}")
    except subprocess.SubprocessError as exc:
        result.errors.append(f"cannot mount the restored volume: {exc} {getattr(exc, 'stderr', '')}")
    return result


def percentile(values, pct: float) -> float | None:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]


def apply_role(workdir: Path, role: str, variants: list) -> subprocess.CompletedProcess:
    """Applies a role of this collection to this machine, once per variable set, in one play."""
    import json  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel
    play = [{"name": f"apply {role}", "hosts": "localhost", "gather_facts": False,
             "tasks": [{"name": f"Apply {role}", "ansible.builtin.include_role": {"name": f"appconsistent.snapshots.{role}"},
                        "vars": variant} for variant in variants]}]
    playbook = Path(workdir) / f"apply-{role}.yml"
    playbook.write_text(json.dumps(play))
    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(repo / "build" / "collections"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
               # Already root: su returns at once where sudo may wait on the host's name lookups.
               ANSIBLE_BECOME_METHOD="su", ANSIBLE_PIPELINING="true", ANSIBLE_PYTHON_INTERPRETER=sys.executable)
    return run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(playbook)],
               check=False, timeout=600, env=env)


# --- the lab: servers on twin volumes, their scripts, the twins ---------------------------------

ROLE_NAME = "AppSnapshotRole"
ALI_INSTANCE_ID = "i-bp1dbconsist000001"

COMBINED_PRESCRIPT = """#!/bin/bash
# Quiesces both databases of this host; a failure of the second releases the first.
{mysql}/prescript.sh || exit $?
rc=0
{postgresql}/prescript.sh || rc=$?
if [ "$rc" != 0 ]; then
    {mysql}/postscript.sh || true
    exit "$rc"
fi
{marker}
"""

COMBINED_POSTSCRIPT = """#!/bin/bash
# Releases both databases, reporting the first failure.
rc=0
{postgresql}/postscript.sh || rc=$?
{mysql}/postscript.sh || {{ [ "$rc" != 0 ] || rc=$?; }}
exit "$rc"
"""


class DbLab:
    """MariaDB and PostgreSQL primaries whose data directories are on loop-mounted filesystems
    that are the volumes of one local AWS instance and one local Alibaba Cloud instance.

    The images live inside the twins' block store (an image outside it would be copied at
    start-up, and the mounted filesystem would not be the volume the twins snapshot).  Both
    twins' instances are backed by the same two images, so one pair of servers serves every path.
    """

    def __init__(self, workdir: Path, fs_factory_cls, databases=("mariadb", "postgresql"),
                 fstypes=None, marker: Path | None = None):
        self.workdir = Path(workdir)
        self.fs_factory_cls = fs_factory_cls
        self.databases = tuple(databases)
        self.fstypes = dict({"mariadb": "ext4", "postgresql": "xfs"}, **(fstypes or {}))
        self.marker = marker
        self.store = None
        self.fs = None
        self.twins = None
        self.servers: dict = {}
        self.writers: dict = {}
        self.mounts: dict = {}
        self.public: Path | None = None
        self.scripts: Path | None = None
        self.rundirs: list[Path] = []
        self.problems: list[str] = []

    # paths of the installed scripts
    @property
    def prescript(self) -> Path:
        return self.scripts / "both" / "prescript.sh"

    @property
    def postscript(self) -> Path:
        return self.scripts / "both" / "postscript.sh"

    @property
    def helper(self) -> Path:
        return self.scripts / "mysql" / "appconsistent-freeze"

    @property
    def state_dir(self) -> Path:
        return self.scripts / "state"

    def setup(self):
        # pylint: disable=import-outside-toplevel
        from twin.core.blockstore import BlockStore
        from twin.launcher import start_twins
        self.store = BlockStore(str(self.workdir / "blocks"))
        # Mount points and server sockets must be reachable by the mysql and postgres users.
        self.public = Path(tempfile.mkdtemp(prefix="appconsistent-db-"))
        self.public.chmod(0o755)
        self.fs = self.fs_factory_cls(Path(self.store.data_dir))
        for kind in self.databases:
            self.mounts[kind] = self.fs.create(self.fstypes[kind], self.public / kind, size_mb=320)
            self.mounts[kind].mountpoint.chmod(0o755)
        if "mariadb" in self.databases:
            rundir = private_dir("mysql", "appconsistent-mariadb-")
            self.rundirs.append(rundir)
            server = MariaDB(self.mounts["mariadb"].mountpoint / "mysql", rundir)
            self.servers["mariadb"] = server
            server.install()
            server.start()
        if "postgresql" in self.databases:
            rundir = private_dir("postgres", "appconsistent-pg-")
            self.rundirs.append(rundir)
            server = PostgreSQL(self.mounts["postgresql"].mountpoint / "pgdata", rundir)
            self.servers["postgresql"] = server
            server.install()
            server.start()
        for server in self.servers.values():
            create_schema(server)
        self.install_scripts()
        self.twins = start_twins(self.fleet(), blockstore=self.store, latency="zero")

    def install_scripts(self):
        self.scripts = Path(tempfile.mkdtemp(prefix="appconsistent-db-", dir="/run"))
        common = {"consistency_scripts_state_dir": str(self.state_dir)}
        variants = []
        if "mariadb" in self.databases:
            variants.append(dict(common, consistency_scripts_profile="mysql",
                                 consistency_scripts_dir=str(self.scripts / "mysql"),
                                 consistency_scripts_mysql_socket=str(self.servers["mariadb"].socket)))
        if "postgresql" in self.databases:
            variants.append(dict(common, consistency_scripts_profile="postgresql",
                                 consistency_scripts_dir=str(self.scripts / "postgresql"),
                                 consistency_scripts_freeze_helper=False,
                                 consistency_scripts_postgresql_host=str(self.servers["postgresql"].rundir),
                                 consistency_scripts_postgresql_port=PG_PORT))
        marker = f'echo "$(date +%s.%N)" >> "{self.marker}"' if self.marker else ""
        if len(self.databases) == 2:
            pre = COMBINED_PRESCRIPT.format(mysql=self.scripts / "mysql", postgresql=self.scripts / "postgresql",
                                            marker=marker)
            post = COMBINED_POSTSCRIPT.format(mysql=self.scripts / "mysql", postgresql=self.scripts / "postgresql")
        else:
            only = self.scripts / ("mysql" if "mariadb" in self.databases else "postgresql")
            pre = f"#!/bin/bash\n{only}/prescript.sh || exit $?\n{marker}\n"
            post = f"#!/bin/bash\nexec {only}/postscript.sh\n"
        result = apply_role(self.workdir, "consistency_scripts", variants)
        if result.returncode != 0:
            raise AssertionError(f"the consistency_scripts role failed: {result.stdout[-3000:]} {result.stderr[-2000:]}")
        # The glue that runs both profiles' scripts: root-owned 0700 in a root-only directory, as
        # the freeze helper and the plug-in require.
        both = self.scripts / "both"
        both.mkdir(mode=0o700)
        for path, body in ((self.prescript, pre), (self.postscript, post)):
            path.write_text(body)
            path.chmod(0o700)

    def fleet(self) -> dict:
        aws_volumes = [{"device": "/dev/xvda", "size": 8, "boot": True}]
        ali_volumes = [{"device": "/dev/xvda", "size": 40, "type": "cloud_essd", "boot": True}]
        for letter, kind in zip("fg", self.databases):
            mount = self.mounts[kind]
            aws_volumes.append({"device": f"/dev/xvd{letter}", "size": 1, "image": str(mount.image),
                                "mount": str(mount.mountpoint)})
            ali_volumes.append({"device": f"/dev/xvd{'b' if letter == 'f' else 'c'}", "size": 20, "type": "cloud_essd",
                                "image": str(mount.image), "mount": str(mount.mountpoint)})
        return {"instances": [
            {"provider": "aws", "name": "db-1", "platform": "linux", "execution": "local", "role": ROLE_NAME,
             "volumes": aws_volumes},
            {"provider": "alicloud", "name": "ali-db-1", "id": ALI_INSTANCE_ID, "platform": "linux", "execution": "local",
             "role": ROLE_NAME, "zone": "cn-hangzhou-h", "volumes": ali_volumes},
        ]}

    @property
    def aws_instance(self) -> str:
        return self.twins.endpoints["aws"]["instances"]["db-1"]

    def mountpoints(self) -> list[str]:
        return [str(self.mounts[kind].mountpoint) for kind in self.databases]

    def start_writers(self):
        for kind, server in self.servers.items():
            if kind not in self.writers:
                self.writers[kind] = Writer(server, seed=len(self.writers) + 1)

    def writer_problems(self) -> list[str]:
        return [f"{kind}: {w.error}" for kind, w in self.writers.items() if w.error]

    def committed(self) -> dict:
        return {kind: w.committed for kind, w in self.writers.items()}

    def image_of(self, provider: str, volume_id: str) -> str | None:
        if provider == "aws":
            import json  # pylint: disable=import-outside-toplevel
            import urllib.request  # pylint: disable=import-outside-toplevel
            url = self.twins.endpoints["aws"]["endpoint_url"].rstrip("/") + "/_twin/state"
            with urllib.request.urlopen(url, timeout=30) as response:
                state = json.load(response)
            return next((v["image"] for v in state["volumes"] if v["id"] == volume_id), None)
        state = self.twins.alicloud.state()
        return next((d["image"] for d in state["volumes"] if d["id"] == volume_id), None)

    def thaw_all(self):
        for mount in self.mounts.values():
            run(["fsfreeze", "-u", str(mount.mountpoint)], check=False, timeout=30)

    def stop_script_sessions(self):
        if self.state_dir is None or not self.state_dir.exists():
            return
        for pid_file in self.state_dir.glob("*/session.pid"):
            try:
                os.killpg(int(pid_file.read_text().split()[0]), 9)
            except (ValueError, IndexError, OSError):
                pass

    def teardown(self) -> list[str]:
        """Stops and removes everything, in an order that cannot hang on a frozen filesystem."""
        problems: list[str] = []
        if self.fs is not None:
            self.thaw_all()
        if self.scripts is not None:
            self.stop_script_sessions()
        for writer in self.writers.values():
            writer.stop()
        for server in self.servers.values():
            try:
                server.stop()
            except (subprocess.SubprocessError, OSError) as exc:
                problems.append(f"stopping {server.kind}: {exc}")
        if self.twins is not None:
            # The twins' SSM/Cloud Assistant threads may still run commands on the mounts.
            for name in ("alicloud", "aws"):
                handle = getattr(self.twins, name)
                if handle is None:
                    continue
                try:
                    handle.stop()
                except Exception as exc:  # pylint: disable=broad-except
                    problems.append(f"stopping the {name} twin: {exc}")
                setattr(self.twins, name, None)
        if self.fs is not None:
            problems += self.fs.cleanup()
        if self.store is not None:
            self.store.close()
        for path in [self.public, self.scripts, *self.rundirs]:
            if path is not None:
                shutil.rmtree(path, ignore_errors=True)
        return problems
