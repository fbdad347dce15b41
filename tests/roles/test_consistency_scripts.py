"""The consistency_scripts role: what it installs, what it refuses, and the installed scripts
run against real MariaDB and PostgreSQL servers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import REPO_ROOT, role_applier, stop_session_groups

HELPER = REPO_ROOT / "roles" / "consistency_scripts" / "files" / "appconsistent-freeze"


def run_script(path, *args, env=None, timeout=120):
    return subprocess.run([str(path), *args], capture_output=True, text=True, timeout=timeout, check=False,
                          env=dict(os.environ, **(env or {})))


@pytest.fixture
def install(apply_role, root_dir):
    """install(profile, **variables) applies the role into root_dir and returns the result."""
    state_dir = root_dir / "state"

    def do(profile, check=False, **variables):
        params = {"consistency_scripts_profile": profile, "consistency_scripts_dir": str(root_dir / "lib"),
                  "consistency_scripts_state_dir": str(state_dir)}
        params.update(variables)
        return apply_role("consistency_scripts", params, check=check)

    try:
        yield do
    finally:
        stop_session_groups(state_dir)


def assert_root_only_script(path: Path):
    st = path.stat()
    assert stat.S_ISREG(st.st_mode)
    assert st.st_uid == 0 and st.st_gid == 0
    assert stat.S_IMODE(st.st_mode) == 0o700
    assert subprocess.run(["bash", "-n", str(path)], check=False).returncode == 0
    if shutil.which("shellcheck"):
        proc = subprocess.run(["shellcheck", str(path)], capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stdout


# --- installation ------------------------------------------------------------------------------


def test_refuses_a_directory_under_a_world_writable_one(apply_role, tmp_path):
    # Made here, like /tmp (mode 1777): the sticky bit is not enough.
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    target = shared / "scripts"
    result = apply_role("consistency_scripts", {"consistency_scripts_profile": "mysql",
                                                "consistency_scripts_dir": str(target)})
    assert result.rc != 0
    assert "group and others cannot write" in result.stdout
    assert not target.exists()


def test_refuses_a_group_writable_parent(apply_role, root_dir):
    parent = root_dir / "shared"
    parent.mkdir()
    parent.chmod(0o775)
    result = apply_role("consistency_scripts", {"consistency_scripts_profile": "postgresql",
                                                "consistency_scripts_dir": str(parent / "lib")})
    assert result.rc != 0
    assert str(parent) in result.stdout
    assert not (parent / "lib").exists()


def test_mysql_profile_installs_root_only_files_idempotently(install, root_dir):
    lib = root_dir / "lib"
    check = install("mysql", check=True)
    assert check.rc == 0, check.stdout[-3000:]
    assert check.changed > 0
    assert not lib.exists()

    first = install("mysql", consistency_scripts_mysql_user="backup", consistency_scripts_mysql_password='s3cr"et')
    assert first.rc == 0, first.stdout[-3000:]
    assert first.changed > 0
    for name in ("prescript.sh", "postscript.sh", "appconsistent-freeze"):
        assert_root_only_script(lib / name)
    assert stat.S_IMODE(lib.stat().st_mode) == 0o700
    option_file = lib / "mysql.cnf"
    assert stat.S_IMODE(option_file.stat().st_mode) == 0o600 and option_file.stat().st_uid == 0
    assert 'password="s3cr\\"et"' in option_file.read_text()
    assert (lib / "appconsistent-freeze").read_bytes() == HELPER.read_bytes()
    assert first.facts["consistency_scripts_result"]["prescript"] == str(lib / "prescript.sh")

    again = install("mysql", consistency_scripts_mysql_user="backup", consistency_scripts_mysql_password='s3cr"et')
    assert again.rc == 0
    assert again.changed == 0


def test_profile_none_removes_scripts_and_helper_can_be_left_out(install, root_dir):
    lib = root_dir / "lib"
    assert install("postgresql").rc == 0
    assert (lib / "prescript.sh").exists()
    result = install("none", consistency_scripts_freeze_helper=False)
    assert result.rc == 0
    assert sorted(p.name for p in lib.iterdir()) == []
    assert result.facts["consistency_scripts_result"]["prescript"] is None


def test_custom_profile_installs_the_operators_scripts(install, root_dir):
    pre = "#!/bin/bash\necho custom-pre \"$1\"\n"
    post = "#!/bin/bash\necho custom-post \"$1\"\n"
    result = install("custom", consistency_scripts_custom_prescript_content=pre,
                     consistency_scripts_custom_postscript_content=post)
    assert result.rc == 0, result.stdout[-3000:]
    lib = root_dir / "lib"
    assert (lib / "prescript.sh").read_text() == pre
    assert run_script(lib / "postscript.sh", "post-script").stdout == "custom-post post-script\n"
    assert_root_only_script(lib / "prescript.sh")


def test_custom_profile_refuses_a_script_that_does_not_parse(install, root_dir):
    result = install("custom", consistency_scripts_custom_prescript_content="#!/bin/bash\nif then\n",
                     consistency_scripts_custom_postscript_content="#!/bin/bash\nexit 0\n")
    assert result.rc != 0
    assert not (root_dir / "lib" / "prescript.sh").exists()


def test_custom_profile_needs_both_scripts(install, root_dir):
    result = install("custom", consistency_scripts_custom_prescript_content="#!/bin/bash\nexit 0\n")
    assert result.rc != 0
    assert "needs a prescript and a postscript" in result.stdout
    assert not (root_dir / "lib" / "prescript.sh").exists()


# --- MySQL / MariaDB ---------------------------------------------------------------------------


MYSQL_VARIANTS = {
    "default": {},
    "credentials": {"consistency_scripts_mysql_user": "backup", "consistency_scripts_mysql_password": "pw-5e6f7a8b9c"},
    "short_lock_wait": {"consistency_scripts_mysql_lock_wait_timeout": 2},
    "flush_tables": {"consistency_scripts_mysql_quiesce": "flush_tables"},
    "short_lock_wait_flush_tables": {"consistency_scripts_mysql_lock_wait_timeout": 2,
                                     "consistency_scripts_mysql_quiesce": "flush_tables"},
    "short_bound": {"consistency_scripts_hold_max_seconds": 2},
    "no_server": {"consistency_scripts_mysql_socket": "/nonexistent/mysqld.sock"},
}


def install_variants(tmp_path_factory, root, profile, variants, common):
    """Installs one copy of the profile per variant (its own script and state directory)."""
    apply = role_applier(tmp_path_factory.mktemp(profile))
    plays = []
    for name, variables in variants.items():
        params = {"consistency_scripts_profile": profile, "consistency_scripts_dir": str(root / name / "lib"),
                  "consistency_scripts_state_dir": str(root / name / "state"), "consistency_scripts_freeze_helper": True}
        params.update(common)
        params.update(variables)
        plays.append(params)
    result = apply("consistency_scripts", {}, variants=plays)
    assert result.rc == 0, result.stdout[-3000:]
    return {name: (root / name / "lib" / "prescript.sh", root / name / "lib" / "postscript.sh") for name in variants}


@pytest.fixture(scope="module")
def mysql_installed(tmp_path_factory, module_root_dir, mariadb_server):
    scripts = install_variants(tmp_path_factory, module_root_dir, "mysql", MYSQL_VARIANTS,
                               {"consistency_scripts_mysql_socket": str(mariadb_server.socket)})
    try:
        yield scripts
    finally:
        for name in MYSQL_VARIANTS:
            stop_session_groups(module_root_dir / name / "state")


@pytest.fixture
def mysql_scripts(mysql_installed):
    return lambda variant="default": mysql_installed[variant]


def insert_blocked(server, value):
    """True when an INSERT cannot get past the global read lock within one second."""
    proc = server.sql(f"SET SESSION lock_wait_timeout = 1; INSERT INTO app.t VALUES ({value})", check=False)
    if proc.returncode == 0:
        return False
    assert "Lock wait timeout exceeded" in proc.stderr, proc.stderr
    return True


# auto takes BACKUP STAGE on the MariaDB of these tests (10.4 and later); flush_tables is what MySQL gets.
@pytest.mark.parametrize("variant, lock", [("default", "BACKUP STAGE BLOCK_COMMIT held by session"),
                                           ("flush_tables", "FLUSH TABLES WITH READ LOCK held by session")])
def test_mysql_lock_holds_writes_until_the_postscript(mysql_scripts, mariadb_server, variant, lock):
    pre, post = mysql_scripts(variant)
    state = pre.parent.parent / "state"
    mariadb_server.sql("DELETE FROM app.t WHERE i BETWEEN 10 AND 19")
    assert not insert_blocked(mariadb_server, 10)

    result = run_script(pre, "pre-script")
    assert result.returncode == 0, result.stderr
    assert lock in result.stderr and "-MariaDB" in result.stderr, result.stderr  # says which lock, on which server
    assert insert_blocked(mariadb_server, 11)
    assert mariadb_server.sql("SELECT COUNT(*) FROM app.t WHERE i IN (1, 10)").stdout.strip() == "2"  # reads work
    time.sleep(1.5)
    assert insert_blocked(mariadb_server, 12)  # the lock outlives the prescript

    result = run_script(post, "post-script")
    assert result.returncode == 0, result.stderr
    assert not insert_blocked(mariadb_server, 13)
    stored = mariadb_server.sql("SELECT i FROM app.t WHERE i BETWEEN 10 AND 19").stdout.split()
    assert sorted(stored) == ["10", "13"]
    assert not any((state / "mysql").glob("session.*"))

    again = run_script(post, "post-script")
    assert again.returncode == 205


def test_mysql_credentials_stay_off_command_lines(mysql_scripts, mariadb_server):
    password = MYSQL_VARIANTS["credentials"]["consistency_scripts_mysql_password"]
    mariadb_server.sql(f"CREATE USER backup@localhost IDENTIFIED BY '{password}'; "
                       "GRANT RELOAD, PROCESS ON *.* TO backup@localhost")
    pre, post = mysql_scripts("credentials")
    assert run_script(pre, "pre-script").returncode == 0
    try:
        assert insert_blocked(mariadb_server, 20)
        for proc_dir in Path("/proc").iterdir():
            if proc_dir.name.isdigit():
                try:
                    assert password.encode() not in (proc_dir / "cmdline").read_bytes()
                except OSError:
                    pass
    finally:
        assert run_script(post, "post-script").returncode == 0
    assert not insert_blocked(mariadb_server, 21)


def test_mysql_server_down_is_application_not_ready(mysql_scripts):
    prescript, _postscript = mysql_scripts("no_server")
    pre = run_script(prescript, "pre-script")
    assert pre.returncode == 206, pre.stderr
    assert "not reachable" in pre.stderr
    assert not (prescript.parent.parent / "state" / "mysql" / "session.pid").exists()


# A long write keeps FLUSH TABLES WITH READ LOCK waiting (running reads no longer do on MariaDB); BACKUP
# STAGE waits at BLOCK_DDL only for writes to non-transactional tables (MyISAM, Aria), which hold no
# transaction a crash could roll back.
@pytest.mark.parametrize("variant, table, lock", [("short_lock_wait_flush_tables", "app.t", "FLUSH TABLES WITH READ LOCK"),
                                                  ("short_lock_wait", "app.m", "BACKUP STAGE BLOCK_COMMIT")])
def test_mysql_lock_wait_timeout_gives_up_without_stalling_writers(mysql_scripts, mariadb_server, variant, table, lock):
    pre, _post = mysql_scripts(variant)
    mariadb_server.sql("CREATE TABLE IF NOT EXISTS app.m (i INT) ENGINE=MyISAM")
    long_query = mariadb_server.sql_async(f"INSERT INTO {table} SELECT 39 FROM (SELECT SLEEP(90)) AS s")
    try:
        time.sleep(0.5)
        result = run_script(pre, "pre-script")
        assert result.returncode == 1, result.stderr
        assert f"{lock} not granted" in result.stderr or f"{lock} failed" in result.stderr, result.stderr
        # The long query still runs, but the abandoned FLUSH no longer blocks anyone.
        assert long_query.poll() is None
        assert not insert_blocked(mariadb_server, 30)
    finally:
        long_query.kill()
        long_query.wait(timeout=10)


def test_mysql_backup_stage_lets_a_running_transaction_go_on_until_it_commits(mysql_scripts, mariadb_server):
    """What BACKUP STAGE buys over FLUSH TABLES WITH READ LOCK: a long InnoDB write in progress does not keep
    the lock waiting (and every writer queued behind it); it only waits at its commit until the postscript."""
    pre, post = mysql_scripts("short_lock_wait")
    long_write = mariadb_server.sql_async("INSERT INTO app.t SELECT 80 FROM (SELECT SLEEP(3)) AS s")
    try:
        time.sleep(0.5)
        result = run_script(pre, "pre-script")
        assert result.returncode == 0, result.stderr  # FLUSH TABLES WITH READ LOCK gives up here (test above)
        assert "BACKUP STAGE BLOCK_COMMIT held" in result.stderr, result.stderr
        assert insert_blocked(mariadb_server, 81)
        time.sleep(3)
        assert long_write.poll() is None  # its commit waits for the postscript
        assert mariadb_server.sql("SELECT COUNT(*) FROM app.t WHERE i = 80").stdout.strip() == "0"
    finally:
        assert run_script(post, "post-script").returncode == 0
    assert long_write.wait(timeout=30) == 0
    assert mariadb_server.sql("SELECT COUNT(*) FROM app.t WHERE i = 80").stdout.strip() == "1"


def test_mysql_lock_ends_by_itself_at_the_hard_bound(mysql_scripts, mariadb_server):
    pre, post = mysql_scripts("short_bound")
    assert run_script(pre, "pre-script").returncode == 0
    assert "APPCONSISTENT_LOCKED" in (pre.parent.parent / "state" / "mysql" / "session.out").read_text()
    deadline = time.monotonic() + 20
    while insert_blocked(mariadb_server, 41) and time.monotonic() < deadline:
        pass
    assert not insert_blocked(mariadb_server, 42)
    late = run_script(post, "post-script")
    assert late.returncode == 1
    assert "before the postscript" in late.stderr


def test_mysql_lock_released_when_the_session_is_killed(mysql_scripts, mariadb_server):
    pre, post = mysql_scripts()
    assert run_script(pre, "pre-script").returncode == 0
    assert insert_blocked(mariadb_server, 50)
    pid = int((pre.parent.parent / "state" / "mysql" / "session.pid").read_text().split()[0])
    os.killpg(pid, 9)
    deadline = time.monotonic() + 10
    while insert_blocked(mariadb_server, 51) and time.monotonic() < deadline:
        pass
    assert not insert_blocked(mariadb_server, 52)
    assert run_script(post, "post-script").returncode == 1


def test_mysql_release_request_split_by_the_sessions_read_timeout_still_releases(mysql_scripts, mariadb_server):
    """The session reads the postscript's request with a one-second timeout, which can expire part-way through
    the line on a loaded machine; what it had read must count, or the lock is held until the hard bound."""
    pre, post = mysql_scripts()
    state = pre.parent.parent / "state" / "mysql"
    assert run_script(pre, "pre-script").returncode == 0
    try:
        assert insert_blocked(mariadb_server, 55)
        control = os.open(state / "control", os.O_WRONLY | os.O_NONBLOCK)
        try:
            # Longer apart than the read's timeout, so that it expires between the two parts.
            os.write(control, b"rel")
            time.sleep(1.5)
            os.write(control, b"ease\n")
        finally:
            os.close(control)
        deadline = time.monotonic() + 10
        while not (state / "session.end").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (state / "session.end").exists(), "the session did not take the release request"
        assert (state / "session.end").read_text().strip() == "released"
        assert not insert_blocked(mariadb_server, 56)
    finally:
        run_script(post, "post-script")


def test_mysql_second_prescript_is_refused_while_locked(mysql_scripts, mariadb_server):
    pre, post = mysql_scripts()
    assert run_script(pre, "pre-script").returncode == 0
    try:
        assert run_script(pre, "pre-script").returncode == 204
    finally:
        assert run_script(post, "post-script").returncode == 0
    assert not insert_blocked(mariadb_server, 60)


# --- a prescript that does not finish must not leave its lock session behind --------------------


def blocked_backup_stage(server):
    """A MyISAM write in progress: BACKUP STAGE waits at BLOCK_DDL behind it (and takes the lock, blocking
    every writer, once it ends)."""
    server.sql("CREATE TABLE IF NOT EXISTS app.m (i INT) ENGINE=MyISAM")
    blocker = server.sql_async("INSERT INTO app.m SELECT 90 FROM (SELECT SLEEP(120)) AS s")
    time.sleep(0.5)
    return blocker


def end_blocker(server, blocker):
    ids = server.sql("SELECT id FROM information_schema.PROCESSLIST WHERE info LIKE '%SLEEP(120)%' "
                     "AND info NOT LIKE '%PROCESSLIST%'").stdout.split()
    for thread in ids:
        server.sql(f"KILL {thread}", check=False)
    blocker.kill()
    blocker.wait(timeout=10)


def assert_no_lock_left(server, pre, post, first_value):
    """Once the writer that kept the lock waiting is gone, nothing holds the lock: writes go through within a
    few seconds and the next prescript is not refused as 'a lock session is still active' (204)."""
    deadline = time.monotonic() + 15
    value = first_value
    while insert_blocked(server, value) and time.monotonic() < deadline:
        value += 1
    assert not insert_blocked(server, value + 1), "a lock session outlived its prescript and holds the lock"
    again = run_script(pre, "pre-script")
    assert again.returncode == 0, again.stderr
    assert run_script(post, "post-script").returncode == 0


def test_mysql_prescript_timed_out_by_the_freeze_helper_leaves_no_lock_session(mysql_scripts, mariadb_server):
    pre, post = mysql_scripts()
    blocker = blocked_backup_stage(mariadb_server)
    try:
        proc = subprocess.run([str(pre.parent / "appconsistent-freeze"), "run", "--no-freeze", "--prescript", str(pre),
                               "--postscript", str(post), "--state-dir", str(pre.parent.parent / "helper-state"),
                               "--timeout", "60", "--script-timeout", "2", "--", "true"],
                              capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 201, proc.stdout + proc.stderr
        assert "prescript timed out" in json.loads(proc.stdout)["message"]
    finally:
        end_blocker(mariadb_server, blocker)
    assert_no_lock_left(mariadb_server, pre, post, 100)


def test_mysql_prescript_killed_outright_leaves_no_lock_session(mysql_scripts, mariadb_server):
    """SIGKILL gives the prescript no chance to clean up: its session notices that it is gone."""
    pre, post = mysql_scripts()
    out = pre.parent.parent / "state" / "mysql" / "session.out"
    blocker = blocked_backup_stage(mariadb_server)
    try:
        prescript = subprocess.Popen([str(pre), "pre-script"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.monotonic() + 30
        while not (out.exists() and "APPCONSISTENT_CONNECTION" in out.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "APPCONSISTENT_CONNECTION" in out.read_text()
        os.killpg(prescript.pid, signal.SIGKILL)
        prescript.wait(timeout=10)
    finally:
        end_blocker(mariadb_server, blocker)
    assert_no_lock_left(mariadb_server, pre, post, 110)


def test_mysql_scripts_through_the_freeze_helper(mysql_scripts, mariadb_server):
    """The pair passes the helper's checks, and the command the helper runs sees writes blocked."""
    pre, post = mysql_scripts()
    probe = (f"mariadb --no-defaults --socket={mariadb_server.socket} -e "
             "'SET SESSION lock_wait_timeout = 1; INSERT INTO app.t VALUES (70)'; echo insert=$?")
    proc = subprocess.run([str(pre.parent / "appconsistent-freeze"), "run", "--no-freeze", "--prescript",
                           str(pre), "--postscript", str(post), "--state-dir", str(pre.parent.parent / "helper-state"),
                           "--timeout", "30", "--", "bash", "-c", probe],
                          capture_output=True, text=True, timeout=120, check=False)
    report = json.loads(proc.stdout)
    assert proc.returncode == 0, report
    assert report["scripts"]["status"] == "valid"
    assert report["scripts"]["prescript"]["exit_code"] == 0
    assert report["scripts"]["postscript"]["exit_code"] == 0
    assert "insert=1" in report["command"]["stdout"]
    assert not insert_blocked(mariadb_server, 71)


# --- PostgreSQL --------------------------------------------------------------------------------


PG_VARIANTS = {
    "single": {},
    "multi": {"consistency_scripts_postgresql_multi_volume": True},
    "multi_short_bound": {"consistency_scripts_postgresql_multi_volume": True, "consistency_scripts_hold_max_seconds": 2},
    "no_server": {"consistency_scripts_postgresql_host": "/nonexistent", "consistency_scripts_postgresql_port": 1},
}


@pytest.fixture(scope="module")
def pg_installed(tmp_path_factory, module_root_dir, postgresql_server):
    variants = {name: dict(v, consistency_scripts_postgresql_backup_label_dir=str(module_root_dir / name / "labels"))
                for name, v in PG_VARIANTS.items()}
    scripts = install_variants(tmp_path_factory, module_root_dir, "postgresql", variants,
                               {"consistency_scripts_postgresql_host": str(postgresql_server.socket_dir),
                                "consistency_scripts_postgresql_port": postgresql_server.port})
    try:
        yield scripts
    finally:
        for name in PG_VARIANTS:
            stop_session_groups(module_root_dir / name / "state")


@pytest.fixture
def pg_scripts(pg_installed):
    return lambda variant="single": pg_installed[variant]


def test_postgresql_prescript_checkpoints(pg_scripts, postgresql_server):
    pre, post = pg_scripts()
    postgresql_server.sql("INSERT INTO t SELECT generate_series(1, 1000)")
    before = postgresql_server.sql("SELECT checkpoint_lsn FROM pg_control_checkpoint()").stdout.strip()
    result = run_script(pre, "pre-script")
    assert result.returncode == 0, result.stderr
    after = postgresql_server.sql("SELECT checkpoint_lsn FROM pg_control_checkpoint()").stdout.strip()
    assert after != before
    assert run_script(post, "post-script").returncode == 0


def test_postgresql_multi_volume_keeps_the_backup_label(pg_scripts, postgresql_server):
    pre, post = pg_scripts("multi")
    labels = pre.parent.parent / "labels"
    assert stat.S_IMODE(labels.stat().st_mode) == 0o700
    result = run_script(pre, "pre-script", env={"APPCONSISTENT_RUN_ID": "change-4711"})
    assert result.returncode == 0, result.stderr
    session = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'appconsistent-postgresql'"
    assert postgresql_server.sql(session).stdout.strip() == "1"
    postgresql_server.sql("INSERT INTO t VALUES (2)")  # writes go on during a base backup

    result = run_script(post, "post-script")
    assert result.returncode == 0, result.stderr
    label = labels / "appconsistent-change-4711" / "backup_label"
    text = label.read_text()
    assert "LABEL: appconsistent-change-4711\n" in text
    assert text.startswith("START WAL LOCATION: ")
    assert stat.S_IMODE(label.stat().st_mode) == 0o600
    assert not (postgresql_server.datadir / "backup_label").exists()
    assert postgresql_server.sql(session).stdout.strip() == "0"
    assert run_script(post, "post-script").returncode == 205


def test_postgresql_backup_session_ends_at_the_hard_bound(pg_scripts, postgresql_server):
    pre, post = pg_scripts("multi_short_bound")
    assert run_script(pre, "pre-script").returncode == 0
    session = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'appconsistent-postgresql'"
    deadline = time.monotonic() + 20
    while postgresql_server.sql(session).stdout.strip() != "0" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert postgresql_server.sql(session).stdout.strip() == "0"
    late = run_script(post, "post-script")
    assert late.returncode == 1
    assert not any((pre.parent.parent / "labels").iterdir())


def test_postgresql_server_down_is_application_not_ready(pg_scripts):
    prescript, _postscript = pg_scripts("no_server")
    pre = run_script(prescript, "pre-script")
    assert pre.returncode == 206, pre.stderr
    assert "not reachable" in pre.stderr
