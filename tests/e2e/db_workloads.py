"""Workloads whose crash-consistent copies are known to break, and the client that measures what quiescing costs.

Three workloads share one lab (four data volumes of one twin AWS instance):

* ``mariadb-myisam``: MariaDB whose writer journals every InnoDB transaction in a MyISAM table before
  it commits. MyISAM writes go to the page cache without fsync and its index header is only written at
  close, so a copy of the block device holds InnoDB's committed work but not the journal's: the restored
  journal must hold ``1..k`` without gaps and ``k >= max(seq)``.
* ``mariadb-split-redo``: the same server keeps its InnoDB redo log (``ib_logfile0``, linked from the data
  directory) on a volume of its own. InnoDB's redo has no full-page images: a data volume copied before
  the redo volume lacks pages that a checkpoint in between declared written. Judged on InnoDB alone
  (server start, the InnoDB tables' check, the ``accounts`` and ``seq`` invariants).
* ``postgresql-two-volumes``: PostgreSQL whose ``accounts`` and ``wallets`` tables are partitioned over
  two volumes (the data directory with its WAL, and a tablespace on a volume of its own); every
  transaction also moves money between a wallet on each volume, so the wallets' constant total is an
  invariant across the volumes. The wallets are three times the size of the buffer cache and updated
  at random, so that, as on a busy server, pages are written to both volumes all the time (and
  checkpoints come often): a volume copied later than the WAL then holds changes the WAL does not
  explain, and one copied earlier lacks pages that a later checkpoint declared written. Full-page
  writes cannot repair a page that the copied WAL never touched, which is why a small hot table
  would not show this.

The lab's pre and post scripts are wrapped so that each records when it started and ended (the
quiesce windows); a ``LatencyProbe`` per database times one small write and one read at a time.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from contextlib import ExitStack
from pathlib import Path

from e2e import db

WORKLOADS = ("mariadb-myisam", "mariadb-split-redo", "postgresql-two-volumes")
REDO_LOG = "ib_logfile0"
WALLETS = 200_000
WALLET_BALANCE = 100
# A busy server's pace of checkpoints, without its size of WAL (the volumes are 512 MiB).
POSTGRESQL_SETTINGS = {"checkpoint_timeout": "30s", "max_wal_size": "96MB", "min_wal_size": "32MB"}

MARIADB_EXTRA = ("USE app; CREATE TABLE journal (n BIGINT PRIMARY KEY) ENGINE=MyISAM; "
                 "CREATE TABLE probe (k BIGINT NOT NULL) ENGINE=InnoDB;")
# accounts_a stays in the data directory (with the WAL), accounts_b and its index go to the second volume.
POSTGRESQL_SCHEMA = (
    "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL) PARTITION BY RANGE (id); "
    "CREATE TABLE accounts_a PARTITION OF accounts FOR VALUES FROM (1) TO ({half}); "
    "CREATE TABLE accounts_b PARTITION OF accounts FOR VALUES FROM ({half}) TO (MAXVALUE) TABLESPACE second; "
    "ALTER INDEX accounts_b_pkey SET TABLESPACE second; "
    "CREATE TABLE seq (n bigint PRIMARY KEY); CREATE TABLE probe (k bigint NOT NULL); "
    "INSERT INTO accounts SELECT g, {bal} FROM generate_series(1, {n}) g; "
    "CREATE TABLE wallets (id int PRIMARY KEY, balance bigint NOT NULL, filler char(200) NOT NULL DEFAULT '') "
    "PARTITION BY RANGE (id); "
    "CREATE TABLE wallets_a PARTITION OF wallets FOR VALUES FROM (1) TO ({wallet_half}); "
    "CREATE TABLE wallets_b PARTITION OF wallets FOR VALUES FROM ({wallet_half}) TO (MAXVALUE) TABLESPACE second; "
    "ALTER INDEX wallets_b_pkey SET TABLESPACE second; "
    "INSERT INTO wallets (id, balance) SELECT g, {wallet_balance} FROM generate_series(1, {wallets}) g;")

EVENT_WRAPPER = """#!/bin/bash
# Records when the {which}script of the profiles starts and ends, for the latency figures.
echo "{which}-start $(date +%s.%N)" >> "{events}"
rc=0
{inner} || rc=$?
echo "{which}-end $(date +%s.%N)" >> "{events}"
exit "$rc"
"""


class WorkloadWriter(db.Writer):
    """The lab's writer: in each transaction MariaDB also journals its number in a MyISAM table,
    PostgreSQL also moves money between a wallet on each volume."""

    def _transaction(self, n: int) -> str:
        text = super()._transaction(n)
        if self.server.kind == "mariadb":
            extra = f"INSERT INTO journal (n) VALUES ({n});"
        else:
            first = self.random.randint(1, WALLETS // 2)
            second = self.random.randint(WALLETS // 2 + 1, WALLETS)
            src, dst = (first, second) if self.random.random() < 0.5 else (second, first)
            amount = self.random.randint(1, 20)
            extra = (f"UPDATE wallets SET balance = balance - {amount} WHERE id = {src}; "
                     f"UPDATE wallets SET balance = balance + {amount} WHERE id = {dst};")
        return text.replace("COMMIT;", f"{extra} COMMIT;", 1)


class LatencyProbe:
    """One client session that alternates a one-row autocommit insert and a one-row read, and keeps
    (kind, start, end) of each (monotonic clock) until stopped."""

    def __init__(self, server, pause: float = 0.02):
        self.server = server
        self.pause = pause
        self.ops: list[tuple[str, float, float]] = []
        self.error: str | None = None
        self._stop = threading.Event()
        argv = server.client() + ["app"] if server.kind == "mariadb" else server.client()
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, bufsize=1, start_new_session=True)
        self.thread = threading.Thread(target=self._loop, name=f"probe-{server.kind}", daemon=True)
        self.thread.start()

    def _op(self, kind: str, statement: str, answer: str):
        start = time.monotonic()
        self.proc.stdin.write(statement)
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        end = time.monotonic()
        if line.strip() != answer:
            raise ValueError(f"unexpected answer {line!r} to {statement!r}")
        self.ops.append((kind, start, end))

    def _loop(self):
        k = 0
        try:
            while not self._stop.is_set():
                k += 1
                self._op("write", f"INSERT INTO probe (k) VALUES ({k}); SELECT {k};\n", str(k))
                self._op("read", f"SELECT {-k} FROM accounts WHERE id = 1;\n", str(-k))
                time.sleep(self.pause)
        except (OSError, ValueError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"

    def between(self, kind: str, start: float, end: float) -> list[float]:
        """Latencies (s) of the operations of ``kind`` that overlap [start, end]."""
        return [e - s for k, s, e in list(self.ops) if k == kind and s <= end and e >= start]

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


class WorkloadLab(db.DbLab):
    """MariaDB on volume f, PostgreSQL's data directory on g and its second tablespace on h, all
    volumes of one twin AWS instance; both workloads' writers, and a latency probe per database."""

    VOLUMES = (("mariadb", "ext4", "f"), ("postgresql", "xfs", "g"), ("pgspace", "xfs", "h"), ("redo", "ext4", "i"))

    def __init__(self, workdir: Path, fs_factory_cls):
        super().__init__(workdir, fs_factory_cls)
        self.probes: dict = {}
        self.events: Path | None = None

    def setup(self):
        # pylint: disable=import-outside-toplevel
        from twin.core.blockstore import BlockStore
        from twin.launcher import start_twins
        self.store = BlockStore(str(self.workdir / "blocks"))
        self.public = Path(db.tempfile.mkdtemp(prefix="appconsistent-db-"))
        self.public.chmod(0o755)
        self.fs = self.fs_factory_cls(Path(self.store.data_dir))
        for name, fstype, _letter in self.VOLUMES:
            self.mounts[name] = self.fs.create(fstype, self.public / name, size_mb=320 if name == "mariadb" else 512)
            self.mounts[name].mountpoint.chmod(0o755)
        location = self.mounts["pgspace"].mountpoint / "tblspc"
        location.mkdir(mode=0o700)
        db.shutil.chown(location, "postgres", "postgres")
        rundir = db.private_dir("mysql", "appconsistent-mariadb-")
        self.rundirs.append(rundir)
        self.servers["mariadb"] = db.MariaDB(self.mounts["mariadb"].mountpoint / "mysql", rundir)
        self.servers["mariadb"].install()
        self.move_redo_log()
        rundir = db.private_dir("postgres", "appconsistent-pg-")
        self.rundirs.append(rundir)
        self.servers["postgresql"] = db.PostgreSQL(self.mounts["postgresql"].mountpoint / "pgdata", rundir)
        self.servers["postgresql"].install()
        for server in self.servers.values():
            server.start()
        maria, pg = self.servers["mariadb"], self.servers["postgresql"]
        db.create_schema(maria)
        maria.sql(MARIADB_EXTRA)
        pg.sql("CREATE DATABASE app", database="postgres")
        pg.sql(f"CREATE TABLESPACE second LOCATION '{location}'")  # not inside a transaction block
        pg.sql(POSTGRESQL_SCHEMA.format(half=db.ACCOUNTS // 2 + 1, n=db.ACCOUNTS, bal=db.OPENING_BALANCE,
                                        wallet_half=WALLETS // 2 + 1, wallets=WALLETS, wallet_balance=WALLET_BALANCE),
               timeout=300)
        for name, value in POSTGRESQL_SETTINGS.items():
            pg.sql(f"ALTER SYSTEM SET {name} = '{value}'", database="postgres")
        pg.sql("SELECT pg_reload_conf()", database="postgres")
        self.install_scripts()
        self.wrap_scripts()
        self.twins = start_twins(self.fleet(), blockstore=self.store, latency="zero")

    def move_redo_log(self):
        """Moves the InnoDB redo log of the freshly installed (stopped) server to the redo volume."""
        datadir = self.servers["mariadb"].datadir
        target = self.mounts["redo"].mountpoint / "innodb"
        target.mkdir(mode=0o750)
        db.shutil.chown(target, "mysql", "mysql")
        db.shutil.move(datadir / REDO_LOG, target / REDO_LOG)  # a copy across filesystems: root's now
        db.shutil.chown(target / REDO_LOG, "mysql", "mysql")
        (datadir / REDO_LOG).symlink_to(target / REDO_LOG)

    def wrap_scripts(self):
        self.events = self.scripts / "both" / "events"
        for which, path in (("pre", self.prescript), ("post", self.postscript)):
            inner = path.with_name(f"{which}script-profiles.sh")
            path.rename(inner)
            path.write_text(EVENT_WRAPPER.format(which=which, events=self.events, inner=inner))
            path.chmod(0o700)

    def fleet(self) -> dict:
        volumes = [{"device": "/dev/xvda", "size": 8, "boot": True}]
        for name, _fstype, letter in self.VOLUMES:
            mount = self.mounts[name]
            volumes.append({"device": f"/dev/xvd{letter}", "size": 1, "image": str(mount.image),
                            "mount": str(mount.mountpoint)})
        return {"instances": [{"provider": "aws", "name": "db-1", "platform": "linux", "execution": "local",
                               "role": db.ROLE_NAME, "volumes": volumes}]}

    def mountpoints(self) -> list[str]:
        return [str(self.mounts[name].mountpoint) for name, _f, _l in self.VOLUMES]

    def start_writers(self):
        for seed, (kind, server) in enumerate(self.servers.items(), start=1):
            self.writers[kind] = WorkloadWriter(server, seed=seed)
            self.probes[kind] = LatencyProbe(server)

    def probe_problems(self) -> list[str]:
        return [f"{kind} probe: {p.error}" for kind, p in self.probes.items() if p.error]

    def windows(self) -> list[dict]:
        """The quiesce windows recorded so far, one per set: pre-start, pre-end, post-start, post-end (epoch s)."""
        if self.events is None or not self.events.exists():
            return []
        found, current = [], {}
        for line in self.events.read_text().splitlines():
            name, _sep, stamp = line.partition(" ")
            if name == "pre-start":
                current = {}
            current[name] = float(stamp)
            if name == "post-end" and "pre-start" in current:
                found.append(current)
                current = {}
        return found

    def teardown(self) -> list[str]:
        for probe in self.probes.values():
            probe.stop()
        return super().teardown()


# --- taking sets by a loop of single-volume calls ----------------------------------------------


def per_volume_copies(lab: WorkloadLab, count: int, gap: float) -> list[list[str]]:
    """``count`` sets taken as a loop of CreateSnapshot calls, one per data volume, ``gap`` seconds apart
    (what a script that snapshots volume after volume gives), each made into new volumes: their images."""
    ec2 = lab.twins.aws_client("ec2")
    instance = ec2.describe_instances(InstanceIds=[lab.aws_instance])["Reservations"][0]["Instances"][0]
    zone = instance["Placement"]["AvailabilityZone"]
    root = instance.get("RootDeviceName")
    volumes = sorted((m["DeviceName"], m["Ebs"]["VolumeId"]) for m in instance["BlockDeviceMappings"]
                     if m["DeviceName"] != root)
    sets = []
    for _number in range(count):
        snapshots = []
        for index, (_device, volume_id) in enumerate(volumes):
            if index:
                time.sleep(gap)
            snapshots.append(ec2.create_snapshot(VolumeId=volume_id, Description="per-volume loop")["SnapshotId"])
        ec2.get_waiter("snapshot_completed").wait(SnapshotIds=snapshots, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
        made = [ec2.create_volume(SnapshotId=s, AvailabilityZone=zone)["VolumeId"] for s in snapshots]
        ec2.get_waiter("volume_available").wait(VolumeIds=made, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
        sets.append([lab.image_of("aws", v) for v in made])
    return sets


# --- checking a restored set --------------------------------------------------------------------


def table_check_ok(output: str) -> bool:
    """CHECK TABLE's rows (Table, Op, Msg_type, Msg_text): no error or warning, every table's status OK."""
    rows = [line.split("\t") for line in output.splitlines() if line.strip()]
    return bool(rows) and all(len(r) == 4 and (r[2] == "status" and r[3] == "OK" or r[2] == "note") for r in rows)


def mariadb_workloads(result: db.CheckResult, query):
    """Checks the MyISAM journal and the InnoDB tables apart (so that each workload is judged on its
    own engine), then the journal's invariant: every committed transaction journaled its number
    first, so the journal is 1..k without gaps and k >= max(seq)."""
    result.table_checks = {"innodb": table_check_ok(query("CHECK TABLE accounts, seq EXTENDED")),
                           "myisam": table_check_ok(query("CHECK TABLE journal EXTENDED"))}
    row = query("SELECT COUNT(*), COALESCE(MAX(n), 0), COALESCE(MIN(n), 1) FROM journal").replace("|", " ").split()
    count, top, low = (int(v) for v in row)
    result.journal = {"count": count, "max": top}
    result.journal_ok = count == top and low == 1 and result.seq_max is not None and top >= result.seq_max
    if not (count == top and low == 1 and result.seq_max is not None and top >= result.seq_max):
        result.errors.append(f"invariant: journal 1..{top} ({count} rows) does not cover the committed seq 1..{result.seq_max}")


def wallets_invariant(result: db.CheckResult, query):
    """Transfers between the volumes' wallets keep their total."""
    total = query("SELECT COALESCE(SUM(balance), 0), COUNT(*) FROM wallets").replace("|", " ").split()
    result.wallets = {"total": int(total[0]), "count": int(total[1])}
    if result.wallets != {"total": WALLETS * WALLET_BALANCE, "count": WALLETS}:
        result.errors.append(f"invariant: wallets hold {result.wallets}, not {WALLETS} worth {WALLETS * WALLET_BALANCE}")


def relink_redo_log(datadir: Path, location: Path):
    """Points the restored server's redo log link at the restored redo volume (not the primary's log)."""
    (datadir / REDO_LOG).unlink()
    (datadir / REDO_LOG).symlink_to(location / REDO_LOG)


def relink_tablespaces(datadir: Path, location: Path):
    """Points the restored cluster's tablespace links at the restored tablespace volume: left as they are,
    they would lead the second server to the primary's live tablespace."""
    for link in (datadir / "pg_tblspc").iterdir():
        link.unlink()
        link.symlink_to(location)


def invariants_ok(result: db.CheckResult) -> bool:
    own_ok = not any(e.startswith("invariant: ") for e in result.errors)
    return result.total == db.TOTAL and result.gap is False and own_ok


def check_set(images: list[str], parent: Path) -> dict:
    """Mounts every restored volume of a set together and checks each database on them: {kind: CheckResult}."""
    results: dict = {}
    with ExitStack() as stack:
        found: dict = {}
        for image in images:
            volume = stack.enter_context(db.RestoredVolume(image, parent))
            for name, marker in (("mariadb", "mysql"), ("postgresql", "pgdata"), ("pgspace", "tblspc"),
                                 ("redo", "innodb")):
                if (volume.mountpoint / marker).is_dir():
                    found[name] = volume.mountpoint / marker
        result = results["mariadb"] = db.CheckResult(kind="mariadb")
        if "mariadb" in found and "redo" in found:
            relink_redo_log(found["mariadb"], found["redo"])
            db.check_mariadb(found["mariadb"], result, extra=mariadb_workloads)
        else:
            result.errors.append(f"the set lacks MariaDB's data or redo volume: {sorted(found)}")
        result = results["postgresql"] = db.CheckResult(kind="postgresql")
        if "postgresql" in found and "pgspace" in found:
            relink_tablespaces(found["postgresql"], found["pgspace"])
            db.check_postgresql(found["postgresql"], result, extra=wallets_invariant)
        else:
            result.errors.append(f"the set lacks PostgreSQL's data or tablespace volume: {sorted(found)}")
    return results


def verdicts(check: dict) -> dict:
    """Per workload, what the second servers found on one restored set."""
    maria, pg = check["mariadb"], check["postgresql"]
    tables = getattr(maria, "table_checks", {})
    found = {
        "mariadb-myisam": {"started": maria.started, "integrity_ok": maria.started and tables.get("myisam") is True,
                           "invariants_ok": getattr(maria, "journal_ok", False), "recovery": maria.recovery},
        "mariadb-split-redo": {"started": maria.started, "integrity_ok": maria.started and tables.get("innodb") is True,
                               "invariants_ok": maria.total == db.TOTAL and maria.gap is False,
                               "recovery": maria.recovery},
        "postgresql-two-volumes": {"started": pg.started, "integrity_ok": pg.started and pg.integrity_ok,
                                   "invariants_ok": invariants_ok(pg), "recovery": pg.recovery},
    }
    for verdict in found.values():
        verdict["passed"] = verdict["started"] and verdict["integrity_ok"] and verdict["invariants_ok"]
    return found


def tally(checks: list) -> dict:
    """Per workload: copies checked, that started, passed the integrity check, kept the invariants, needed recovery."""
    figures = {}
    for workload in WORKLOADS:
        kind = "postgresql" if workload.startswith("postgresql") else "mariadb"
        found = [(verdicts(c)[workload], c[kind]) for c in checks]
        figures[workload] = {key: sum(bool(v[key]) for v, _c in found)
                             for key in ("started", "integrity_ok", "invariants_ok", "recovery", "passed")}
        figures[workload]["checked"] = len(found)
        figures[workload]["failures"] = [
            dict(c.to_dict(), journal=getattr(c, "journal", None), wallets=getattr(c, "wallets", None),
                 table_checks=getattr(c, "table_checks", None)) for v, c in found if not v["passed"]][:3]
    return figures


# --- latency ------------------------------------------------------------------------------------


def _ms(value):
    return None if value is None else round(value * 1000, 1)


def latency_figures(lab: WorkloadLab, baseline: tuple, during: list, freeze_windows: list) -> dict:
    """Per database: p50/p99/max of write and read latency in the baseline interval and during the sets
    (monotonic intervals), the time writes were blocked per set (the longest write of the set) and the
    share of it that the freeze took."""
    figures = {}
    for kind, probe in lab.probes.items():
        entry = {}
        for op in ("write", "read"):
            before = probe.between(op, *baseline)
            inside = [v for start, end in during for v in probe.between(op, start, end)]
            entry[op] = {"ops_before": len(before), "ops_during": len(inside),
                         **{f"{name}_ms_before": _ms(db.percentile(before, pct)) for name, pct in (("p50", 50), ("p99", 99))},
                         "max_ms_before": _ms(max(before, default=None)),
                         **{f"{name}_ms_during": _ms(db.percentile(inside, pct)) for name, pct in (("p50", 50), ("p99", 99))},
                         "max_ms_during": _ms(max(inside, default=None))}
        blocked = [max(probe.between("write", start, end), default=0.0) for start, end in during]
        entry["writes_blocked_ms_p50"] = _ms(db.percentile(blocked, 50))
        entry["writes_blocked_ms_max"] = _ms(max(blocked, default=None))
        if freeze_windows and len(freeze_windows) == len(blocked):
            shares = [min(1.0, f / b) for f, b in zip(freeze_windows, blocked) if b > 0]
            entry["freeze_share_of_blocked_p50"] = None if not shares else round(db.percentile(shares, 50), 2)
        figures[kind] = entry
    return figures
