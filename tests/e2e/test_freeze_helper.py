"""End-to-end tests of the Linux freeze helper on real loop-device filesystems.

Each test checks what an operator would check on the instance: can the filesystem take a
write or not, did the scripts run and in which order, what did the helper report.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from e2e.chroot_namespace import ChrootNamespace, chroot_for

# The watchdog, the refusals and the identity checks (one filesystem, however many paths lead to it) run on each
# filesystem an instance may freeze: btrfs gives its filesystem an anonymous device number and each subvolume its own.
FSTYPES = ("ext4", "xfs", "btrfs")

TIMESTAMPS = ("t_start", "t_prescript_done", "t_frozen", "t_thaw_start", "t_thawed", "t_postscript_done")
REQUIRED_FIELDS = ("action", "run_id", "exit_code", "status", "message", "mounts", "scripts", "auto_thawed",
                   "watchdog_deadline") + TIMESTAMPS


def assert_ordered(doc, keys=TIMESTAMPS):
    values = [doc[key] for key in keys]
    assert all(isinstance(v, float) for v in values), dict(zip(keys, values))
    assert values == sorted(values), dict(zip(keys, values))


def pid_gone(pid, within=5.0):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
                if handle.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    return True
        except (FileNotFoundError, ProcessLookupError):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def scripts(script_dir, write_script):
    """A valid pre/post pair that logs to a file outside the frozen filesystems.

    Each script checks whether $PROBE_DIR takes a write (without ever blocking itself on a
    frozen filesystem) and records the result with its phase and environment.
    """
    log = script_dir / "log"
    probe = (
        'probe() {\n'
        '  [ -n "$PROBE_DIR" ] || { echo none; return; }\n'
        '  touch "$PROBE_DIR/.probe-$1" & pid=$!\n'
        '  i=0\n'
        '  while kill -0 $pid 2>/dev/null; do\n'
        '    i=$((i+1)); [ $i -gt 20 ] && { echo blocked; return; }\n'
        '    sleep 0.1\n'
        '  done\n'
        '  echo writable\n'
        '}\n'
    )
    pre = write_script(script_dir / "prescript.sh", probe + (
        f'echo "pre $(probe pre) $1 $APPCONSISTENT_PHASE $APPCONSISTENT_RUN_ID auto=$APPCONSISTENT_AUTO_THAW" >> "{log}"\n'
        'echo hello-from-pre\n'
        'echo warning-from-pre >&2\n'
        'exit "${PRE_EXIT:-0}"\n'))
    post = write_script(script_dir / "postscript.sh", probe + (
        f'echo "post $(probe post) $1 $APPCONSISTENT_PHASE $APPCONSISTENT_RUN_ID auto=$APPCONSISTENT_AUTO_THAW" >> "{log}"\n'
        'echo hello-from-post\n'
        'exit "${POST_EXIT:-0}"\n'))

    class Scripts:
        prescript = pre
        postscript = post

        @staticmethod
        def lines():
            return log.read_text().splitlines() if log.exists() else []

    return Scripts


def set_probe(monkeypatch, path):
    monkeypatch.setenv("PROBE_DIR", str(path))


# --------------------------------------------------------------------------- freeze/thaw

# --------------------------------------------------------------------------- the disks beneath a filesystem

def _fake_disk(sysfs, path, serial=None):
    """A block device directory of a fake sysfs tree; a whole disk gets device/serial, as an NVMe namespace has."""
    path = sysfs / path
    (path / "slaves").mkdir(parents=True)
    if serial is not None:
        (path / "device").mkdir()
        (path / "device" / "serial").write_text(f"{serial:<20}\n")  # NVMe pads the serial with spaces
    return path


def _fake_dev_link(sysfs, device, target):
    """/sys/dev/block/MAJ:MIN of a real block device, pointing into the fake tree."""
    rdev = os.stat(device).st_rdev
    link = sysfs / "dev" / "block" / f"{os.major(rdev)}:{os.minor(rdev)}"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)


def test_freeze_names_the_ebs_volume_beneath_a_filesystem_by_its_nvme_serial(
        fs_factory, freeze_helper, tmp_path, monkeypatch):
    mount = fs_factory.create("ext4")
    sysfs = tmp_path / "sys"
    disk = _fake_disk(sysfs, "devices/pci0000:00/nvme/nvme1/nvme1n1", serial="vol0123456789abcdef0")
    _fake_dev_link(sysfs, mount.device, disk)
    monkeypatch.setenv("APPCONSISTENT_SYSFS_ROOT", str(sysfs))

    frozen = freeze_helper("freeze", mounts=[mount], run_id="disks-1", timeout=30)
    thawed = freeze_helper("thaw", run_id="disks-1")

    assert frozen.rc == 0 and thawed.rc == 0, (frozen.stderr, thawed.stderr)
    assert frozen.doc["helper_version"] == "1.2.2"
    assert frozen.doc["mounts"][0]["disks"] == [{"name": "nvme1n1", "serial": "vol0123456789abcdef0"}]
    # The thaw reads the run's record: the same disks.
    assert thawed.doc["mounts"][0]["disks"] == frozen.doc["mounts"][0]["disks"]


def test_freeze_follows_slaves_and_partitions_down_to_the_whole_disks(fs_factory, freeze_helper, tmp_path,
                                                                      monkeypatch):
    """A logical volume over a partition of one volume and the whole of another (LVM, md and dm-crypt alike)."""
    mount = fs_factory.create("xfs")
    sysfs = tmp_path / "sys"
    one = _fake_disk(sysfs, "devices/pci0000:00/nvme/nvme1/nvme1n1", serial="vol0aaaaaaaaaaaaaaaa1")
    part = one / "nvme1n1p1"
    part.mkdir()
    (part / "partition").write_text("1\n")
    two = _fake_disk(sysfs, "devices/pci0000:00/nvme/nvme2/nvme2n1", serial="vol0bbbbbbbbbbbbbbbb2")
    crypt = _fake_disk(sysfs, "devices/virtual/block/dm-1")
    (crypt / "slaves" / "nvme2n1").symlink_to(two)
    lvm = _fake_disk(sysfs, "devices/virtual/block/dm-0")
    (lvm / "slaves" / "nvme1n1p1").symlink_to(part)
    (lvm / "slaves" / "dm-1").symlink_to(crypt)
    _fake_dev_link(sysfs, mount.device, lvm)
    monkeypatch.setenv("APPCONSISTENT_SYSFS_ROOT", str(sysfs))

    frozen = freeze_helper("freeze", mounts=[mount], run_id="disks-2", timeout=30)
    freeze_helper("thaw", run_id="disks-2")

    assert frozen.rc == 0, frozen.stderr
    assert sorted(frozen.doc["mounts"][0]["disks"], key=lambda d: d["name"]) == [
        {"name": "nvme1n1", "serial": "vol0aaaaaaaaaaaaaaaa1"}, {"name": "nvme2n1", "serial": "vol0bbbbbbbbbbbbbbbb2"}]


def test_disks_that_cannot_be_told_are_reported_as_none(fs_factory, freeze_helper, tmp_path, monkeypatch):
    """A sysfs without the device: the freeze goes on, and the report says no disk could be named."""
    mount = fs_factory.create("ext4")
    (tmp_path / "sys" / "dev" / "block").mkdir(parents=True)
    monkeypatch.setenv("APPCONSISTENT_SYSFS_ROOT", str(tmp_path / "sys"))

    frozen = freeze_helper("freeze", mounts=[mount], run_id="disks-3", timeout=30)
    freeze_helper("thaw", run_id="disks-3")

    assert frozen.rc == 0, frozen.stderr
    assert frozen.doc["mounts"][0]["disks"] == []


@pytest.mark.parametrize("fstype", ["ext4", "xfs"])
def test_freeze_blocks_writes_until_thaw(fs_factory, freeze_helper, fstype):
    mount = fs_factory.create(fstype)

    frozen = freeze_helper("freeze", mounts=[mount], run_id="basic-1", timeout=30)

    assert frozen.rc == 0, frozen.stderr
    doc = frozen.doc
    for key in REQUIRED_FIELDS:
        assert key in doc, key
    assert doc["action"] == "freeze" and doc["status"] == "frozen" and doc["run_id"] == "basic-1"
    assert doc["mounts"] == [{
        "path": str(mount), "canonical": str(mount), "fstype": fstype, "source": mount.device,
        "disks": [{"name": Path(mount.device).name, "serial": None}], "freeze_order": 0, "status": "frozen", "error": "",
        "t_frozen": doc["mounts"][0]["t_frozen"], "t_thawed": None}]
    assert doc["scripts"]["status"] == "absent"
    assert doc["auto_thawed"] is False
    assert doc["t_start"] <= doc["t_prescript_done"] <= doc["t_frozen"] < doc["watchdog_deadline"]
    assert doc["watchdog_deadline"] - doc["t_frozen"] <= 30
    assert doc["t_thaw_start"] is None

    writer = fs_factory.start_write(mount.mountpoint)
    assert not writer.done_within(1.0), "a write completed on a frozen filesystem"
    assert freeze_helper("status", run_id="basic-1").doc["state"] == "frozen"

    thawed = freeze_helper("thaw", run_id="basic-1")

    assert thawed.rc == 0, thawed.stderr
    assert thawed.doc["status"] == "thawed" and thawed.doc["state"] == "thawed"
    assert writer.done_within(10) and writer.returncode == 0
    assert (mount.mountpoint / "probe").read_text() == "x"
    assert thawed.doc["mounts"][0]["status"] == "thawed"
    assert_ordered(thawed.doc)
    assert thawed.doc["t_thawed"] < thawed.doc["watchdog_deadline"]
    # A normal thaw disarms the watchdog: no helper process is left behind.
    assert pid_gone(doc["watchdog_pid"])
    assert freeze_helper("status", run_id="basic-1").doc["state"] == "thawed"


def test_status_lists_runs(fs_factory, freeze_helper):
    mount = fs_factory.create()
    assert freeze_helper("freeze", mounts=[mount], run_id="listed").rc == 0
    try:
        doc = freeze_helper("status").doc
        assert doc["exit_code"] == 0
        runs = {run["run_id"]: run for run in doc["runs"]}
        assert runs["listed"]["state"] == "frozen"
        assert runs["listed"]["mounts"] == [{"path": str(mount), "status": "frozen"}]
    finally:
        assert freeze_helper("thaw", run_id="listed").rc == 0
    assert freeze_helper("status", run_id="nobody").doc["state"] is None


def test_thaw_without_run_id_thaws_the_only_frozen_run(fs_factory, freeze_helper):
    mount = fs_factory.create()
    assert freeze_helper("freeze", mounts=[mount], run_id="only-one").rc == 0
    result = freeze_helper("thaw")
    assert result.rc == 0 and result.doc["run_id"] == "only-one"
    assert fs_factory.writable(mount.mountpoint)


def test_paths_with_spaces_and_shell_syntax_are_taken_literally(fs_factory, freeze_helper, tmp_path):
    name = "data $(touch pwned) `touch pwned2` \"q\" 'x' ;"
    mount = fs_factory.create(mountpoint=tmp_path / name)

    frozen = freeze_helper("freeze", mounts=[mount], run_id="odd-name")
    try:
        assert frozen.rc == 0, frozen.stderr
        assert frozen.doc["mounts"][0]["canonical"] == str(mount)
        assert not fs_factory.writable(mount.mountpoint, within=0.5)
    finally:
        assert freeze_helper("thaw", run_id="odd-name").rc == 0
    assert fs_factory.writable(mount.mountpoint)
    assert not Path("/pwned").exists() and not Path("/pwned2").exists()
    assert not list(tmp_path.glob("pwned*"))


# ------------------------------------------------------------------------------ watchdog

@pytest.mark.parametrize("fstype", FSTYPES)
def test_watchdog_thaws_at_deadline_and_runs_postscript(fs_factory, freeze_helper, fstype, scripts, monkeypatch):
    mount = fs_factory.create(fstype)
    set_probe(monkeypatch, mount.mountpoint)

    frozen = freeze_helper("freeze", mounts=[mount], run_id="nobody-thaws", timeout=2,
                           prescript=scripts.prescript, postscript=scripts.postscript)
    assert frozen.rc == 0, frozen.stderr
    writer = fs_factory.start_write(mount.mountpoint)
    assert not writer.done_within(0.5)

    # Nobody sends the thaw: the watchdog must, by the deadline (plus scheduling slack).
    limit = frozen.doc["t_frozen"] + 2 + 2 - time.time()
    assert writer.done_within(max(limit, 0.1)), "the watchdog did not thaw within timeout + 2 s"

    status = freeze_helper.wait_state("nobody-thaws", ("auto_thawed",))
    assert status["auto_thawed"] is True and status["auto_thaw_reason"] == "deadline"
    assert status["t_thawed"] >= status["watchdog_deadline"]
    assert scripts.lines() == [
        "pre writable pre-script pre-script nobody-thaws auto=0",
        "post writable post-script post-script nobody-thaws auto=1",
    ]

    late = freeze_helper("thaw", run_id="nobody-thaws")
    assert late.rc == 203 and late.doc["status"] == "auto_thawed" and late.doc["auto_thawed"] is True
    assert late.doc["scripts"]["postscript"]["exit_code"] == 0
    assert pid_gone(frozen.doc["watchdog_pid"])


def _set_record(state_dir, run_id, **fields):
    """Rewrites fields of a run's record as the helper does (a whole new file put in place)."""
    record = state_dir / "runs" / run_id / "record"
    lines = [line for line in record.read_text().splitlines() if line.split("=", 1)[0] not in fields]
    lines += [f"{key}={value}" for key, value in fields.items()]
    staged = record.with_name("record.tmp.test")
    staged.write_text("\n".join(lines) + "\n")
    os.chmod(staged, 0o600)
    os.replace(staged, record)


@pytest.mark.parametrize("fstype", FSTYPES)
def test_a_thaw_completes_an_auto_thaw_whose_watchdog_died(fs_factory, freeze_helper, fstype, scripts, monkeypatch):
    """The watchdog claimed the run for its auto-thaw and died before thawing (killed, or the OOM killer's choice
    where it cannot protect itself): the thaw that comes next finishes its work."""
    mount = fs_factory.create(fstype)
    set_probe(monkeypatch, mount.mountpoint)
    frozen = freeze_helper("freeze", mounts=[mount], run_id="orphaned", timeout=60,
                           prescript=scripts.prescript, postscript=scripts.postscript)
    assert frozen.rc == 0, frozen.stderr
    # What a watchdog leaves when it dies right after its claim. A watchdog that reads this state ends, as the run is
    # no longer its to guard: from here on it is as dead as one that was killed.
    _set_record(freeze_helper.state_dir, "orphaned", state="auto_thawing", auto_thawed=1, auto_thaw_reason="deadline")
    assert pid_gone(frozen.doc["watchdog_pid"])
    assert not fs_factory.writable(mount.mountpoint, within=0.5)

    thawed = freeze_helper("thaw", run_id="orphaned")
    # Before: 203 "auto-thaw (deadline) is thawing this run", the filesystem still frozen, the postscript never run.
    assert thawed.rc == 203, thawed.doc
    assert "this thaw completed it" in thawed.doc["message"], thawed.doc["message"]
    assert fs_factory.writable(mount.mountpoint)
    assert scripts.lines()[-1] == "post writable post-script post-script orphaned auto=0"
    assert freeze_helper("status", run_id="orphaned").doc["state"] == "auto_thawed"


@pytest.mark.parametrize("fstype", FSTYPES)
def test_the_caller_completes_an_auto_thaw_whose_watchdog_died_in_the_postscript(
        fs_factory, freeze_helper, fstype, script_dir, write_script, parse_helper_output):
    """The watchdog thawed at the deadline and died while its postscript ran (the one that ends the application's
    lock): the run waiting for it lets that postscript finish and records the run as auto-thawed, instead of waiting
    script_timeout + 20 s and reporting a run still being auto-thawed."""
    mount = fs_factory.create(fstype)
    log = script_dir / "log"
    pre = write_script(script_dir / "prescript.sh", f'echo pre >> "{log}"\n')
    post = write_script(script_dir / "postscript.sh", f'echo post-start >> "{log}"\nsleep 3\necho post-end >> "{log}"\n')
    # The command outlives the deadline by 2 s (it ignores the stop), so that the watchdog's auto-thaw comes first.
    proc = freeze_helper.start("run", mounts=[mount], run_id="orphaned-post", timeout=2, prescript=pre,
                               postscript=post, script_timeout=10,
                               command=["bash", "-c", "trap '' TERM; sleep 30"])
    deadline = time.monotonic() + 60
    while "post-start" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "post-start" in log.read_text()
    for pid in freeze_helper.watchdog_pids():
        os.kill(pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    result = parse_helper_output(proc.returncode, out, err)

    # The command was stopped at the deadline (137), after the auto-thaw had claimed the run.
    assert result.rc == 210 and "the auto-thaw fired first" in result.doc["message"], (result.doc, err)
    assert log.read_text().splitlines() == ["pre", "post-start", "post-end"]
    # Before: the run waited 30 s and reported state auto_thawing.
    assert result.doc["state"] == "auto_thawed", result.doc
    assert fs_factory.writable(mount.mountpoint)


def may_lower_oom_score_adj():
    """True when this process has CAP_SYS_RESOURCE, which lowering an oom_score_adj needs."""
    status = Path("/proc/self/status").read_text()
    effective = int(next(line.split()[1] for line in status.splitlines() if line.startswith("CapEff:")), 16)
    return bool(effective & (1 << 24))  # CAP_SYS_RESOURCE


@pytest.mark.parametrize("fstype", FSTYPES)
def test_watchdog_is_protected_from_the_oom_killer_and_its_scripts_are_not(fs_factory, freeze_helper, fstype,
                                                                           script_dir, write_script):
    """While a filesystem is frozen the watchdog has oom_score_adj -1000; the scripts keep the caller's value."""
    mount = fs_factory.create(fstype)
    log = script_dir / "oom"
    record = f'echo "$1 $(cat /proc/self/oom_score_adj)" >> "{log}"\n'
    pre = write_script(script_dir / "pre.sh", record)
    post = write_script(script_dir / "post.sh", record)
    caller = Path("/proc/self/oom_score_adj").read_text().strip()

    frozen = freeze_helper("freeze", mounts=[mount], run_id="oom-1", timeout=3, prescript=pre, postscript=post)

    assert frozen.rc == 0, frozen.stderr
    watchdog = frozen.doc["watchdog_pid"]
    got = Path(f"/proc/{watchdog}/oom_score_adj").read_text().strip()
    assert frozen.doc["watchdog_oom_score_adj"] == int(got)
    if may_lower_oom_score_adj():
        assert got == "-1000"
    else:  # root without CAP_SYS_RESOURCE (a container): the watchdog says what it could not do
        assert got == caller
        assert "could not be set to -1000" in (freeze_helper.state_dir / "runs" / "oom-1" / "watchdog.log").read_text()
    # Nobody thaws: the watchdog runs the postscript, which must not inherit its protection.
    status = freeze_helper.wait_state("oom-1", ("auto_thawed",))
    assert status["auto_thaw_reason"] == "deadline"
    assert log.read_text().splitlines() == [f"pre-script {caller}", f"post-script {caller}"]
    assert pid_gone(watchdog)


@pytest.mark.parametrize("fstype", FSTYPES)
def test_watchdog_deadline_does_not_follow_the_wall_clock_back(fs_factory, freeze_helper, fstype):
    mount = fs_factory.create(fstype)
    frozen = freeze_helper("freeze", mounts=[mount], run_id="clock-step", timeout=3)
    assert frozen.rc == 0, frozen.doc
    # The wall clock is stepped back one hour (NTP, an operator): to a watchdog that reads the wall clock, the deadline
    # it recorded now lies an hour ahead. Stepping the machine's clock would disturb everything else on it, so the
    # record is moved instead, which is what the step does to the comparison.
    record = freeze_helper.state_dir / "runs" / "clock-step" / "record"
    lines = record.read_text().splitlines()
    lines = [f"deadline_ms={int(line.split('=', 1)[1]) + 3_600_000}" if line.startswith("deadline_ms=") else line
             for line in lines]
    staged = record.with_name("record.tmp.test")
    staged.write_text("\n".join(lines) + "\n")
    os.chmod(staged, 0o600)
    os.replace(staged, record)

    # Before: the watchdog compared the wall clock with that deadline and left the filesystem frozen for the hour.
    writer = fs_factory.start_write(mount.mountpoint)
    limit = frozen.doc["t_frozen"] + 3 + 3 - time.time()
    assert writer.done_within(max(limit, 0.1)), "the watchdog did not thaw at its deadline after a clock step"
    status = freeze_helper.wait_state("clock-step", ("auto_thawed",))
    assert status["auto_thaw_reason"] == "deadline"


@pytest.mark.parametrize("fstype", FSTYPES)
def test_watchdog_thaws_when_caller_is_killed(fs_factory, freeze_helper, fstype, scripts, monkeypatch):
    mount = fs_factory.create(fstype)
    set_probe(monkeypatch, mount.mountpoint)

    proc = freeze_helper.start("run", mounts=[mount], run_id="killed", timeout=5, prescript=scripts.prescript,
                               postscript=scripts.postscript, command=["sleep", "30"])
    freeze_helper.wait_state("killed", ("frozen",))
    writer = fs_factory.start_write(mount.mountpoint)
    assert not writer.done_within(0.3)

    # SIGKILL the helper and everything in its session, as an agent killing a command does.
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)

    assert writer.done_within(5 + 2), "not thawed within timeout + 2 s after the caller was killed"
    status = freeze_helper.wait_state("killed", ("auto_thawed",))
    assert status["auto_thaw_reason"] in ("caller_gone", "deadline")
    assert scripts.lines()[-1] == "post writable post-script post-script killed auto=1"
    assert freeze_helper("thaw", run_id="killed").rc == 203


def test_watchdog_stops_a_prescript_whose_caller_was_killed(fs_factory, freeze_helper, script_dir, write_script):
    mount = fs_factory.create()
    log = script_dir / "log"
    pre = write_script(script_dir / "hanging-pre.sh", f'echo "pre $$" >> "{log}"\nsleep 30\n')
    post = write_script(script_dir / "post.sh", f'echo "post auto=$APPCONSISTENT_AUTO_THAW" >> "{log}"\n')
    proc = freeze_helper.start("freeze", mounts=[mount], run_id="pre-hangs", timeout=5, prescript=pre,
                               postscript=post, script_timeout=60)
    deadline = time.monotonic() + 20
    while not (log.exists() and log.read_text().startswith("pre ")) and time.monotonic() < deadline:
        time.sleep(0.05)
    script_pid = int(log.read_text().split()[1])

    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)

    status = freeze_helper.wait_state("pre-hangs", ("auto_thawed",))
    assert status["auto_thaw_reason"] == "caller_gone"
    assert status["scripts"]["prescript"]["exit_code"] == 143
    # The prescript no longer runs (it cannot take a lock after the postscript released it).
    assert pid_gone(script_pid)
    assert log.read_text().splitlines()[-1] == "post auto=1"
    assert fs_factory.writable(mount.mountpoint, within=2)


def test_run_interrupted_by_sigterm_thaws_and_reports(fs_factory, freeze_helper, parse_helper_output):
    mount = fs_factory.create()
    proc = freeze_helper.start("run", mounts=[mount], run_id="term", timeout=30, command=["sleep", "30"])
    freeze_helper.wait_state("term", ("frozen",))

    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=30)

    result = parse_helper_output(proc.returncode, stdout, stderr)
    assert result.rc == 209 and result.doc["state"] == "thawed"
    assert result.doc["command"]["ran"] is True and result.doc["command"]["exit_code"] != 0
    assert fs_factory.writable(mount.mountpoint)


# ------------------------------------------------------------------------------ refusals

def refused_paths(tmp_path):
    plain = tmp_path / "plain-dir"
    plain.mkdir()
    root_link = tmp_path / "link-to-root"
    root_link.symlink_to("/")
    boot_link = tmp_path / "link-to-boot"
    boot_link.symlink_to("/boot")
    return {
        "root": "/",
        "root-with-slashes": "//",
        "boot": "/boot",
        "under-boot": "/boot/efi",
        "relative": "data",
        "not-a-mount-point": str(plain),
        "symlink-to-root": str(root_link),
        "symlink-to-boot": str(boot_link),
        "missing": str(tmp_path / "does-not-exist"),
        "root-dotdot": str(tmp_path) + "/../../../../../../..",
    }


NEVER = "are never frozen"
# Several checks guard each path; the reason names the first that applies (/boot may be
# missing on a test machine).
REFUSAL_REASONS = {
    "root": [NEVER], "root-with-slashes": [NEVER], "boot": [NEVER], "under-boot": [NEVER],
    "relative": ["not an absolute path"], "not-a-mount-point": ["not a mount point"],
    "symlink-to-root": ["resolves to /;"], "symlink-to-boot": ["resolves to /boot", "does not exist"],
    "missing": ["does not exist"], "root-dotdot": ["resolves to /;"],
}


@pytest.mark.parametrize("case", ["root", "root-with-slashes", "boot", "under-boot", "relative", "not-a-mount-point",
                                  "symlink-to-root", "symlink-to-boot", "missing", "root-dotdot"])
def test_refused_paths(fs_factory, freeze_helper, scripts, tmp_path, case):
    path = refused_paths(tmp_path)[case]
    other = fs_factory.create()

    result = freeze_helper("freeze", mounts=[other, path], run_id="refused", prescript=scripts.prescript,
                           postscript=scripts.postscript)

    assert result.rc == 207, result.doc
    assert result.doc["status"] == "refused"
    entry = next(m for m in result.doc["mounts"] if m["path"] == path)
    assert entry["status"] == "refused"
    assert any(reason in entry["error"] for reason in REFUSAL_REASONS[case]), entry["error"]
    # Nothing happened: no script ran, the valid mount was not frozen, no run was recorded.
    assert scripts.lines() == []
    assert fs_factory.writable(other.mountpoint)
    assert freeze_helper("status", run_id="refused").doc["state"] is None


@pytest.mark.parametrize("fstype", FSTYPES)
def test_refuses_the_filesystem_holding_the_state_directory(fs_factory, freeze_helper, fstype):
    mount = fs_factory.create(fstype)
    freeze_helper.state_dir = mount.mountpoint / "state"
    result = freeze_helper("freeze", mounts=[mount], run_id="own-state")
    assert result.rc == 207
    assert "state directory" in result.doc["mounts"][0]["error"]
    assert fs_factory.writable(mount.mountpoint)


@pytest.mark.parametrize("fstype", FSTYPES)
def test_bind_mount_of_same_filesystem_is_frozen_once(fs_factory, freeze_helper, fstype, tmp_path):
    mount = fs_factory.create(fstype)
    bound = fs_factory.bind(mount, tmp_path / "bound")
    result = freeze_helper("freeze", mounts=[mount, bound], run_id="bind")
    try:
        assert result.rc == 0, result.stderr
        statuses = {m["path"]: m["status"] for m in result.doc["mounts"]}
        assert statuses == {str(mount): "frozen", str(bound): "duplicate"}
    finally:
        assert freeze_helper("thaw", run_id="bind").rc == 0
    assert fs_factory.writable(bound.mountpoint)


# --------------------------------------------------------------------------------- btrfs
# Every subvolume of a btrfs has a device number of its own (stat), but they are one filesystem: one freeze holds them
# all. The helper must judge by the filesystem (its MAJ:MIN in /proc/self/mountinfo), as SLES and openSUSE mount /srv,
# /var and /home as subvolumes of the root filesystem.

def test_btrfs_subvolume_is_frozen_and_thawed(fs_factory, freeze_helper):
    top = fs_factory.create("btrfs")
    data = fs_factory.subvolume(top, "@data")

    frozen = freeze_helper("freeze", mounts=[data], run_id="btrfs-one")
    try:
        assert frozen.rc == 0, frozen.doc
        assert frozen.doc["mounts"][0]["fstype"] == "btrfs" and frozen.doc["mounts"][0]["source"] == top.device
        # A btrfs's MAJ:MIN is an anonymous device (0:N): the disk is found through the filesystem's devices.
        assert frozen.doc["mounts"][0]["disks"] == [{"name": Path(top.device).name, "serial": None}]
        assert not fs_factory.writable(data.mountpoint, within=0.5)
    finally:
        thawed = freeze_helper("thaw", run_id="btrfs-one")
    assert thawed.rc == 0, thawed.doc
    assert thawed.doc["mounts"][0]["status"] == "thawed"
    assert fs_factory.writable(data.mountpoint) and fs_factory.writable(top.mountpoint)


def test_two_btrfs_subvolumes_of_one_filesystem_are_frozen_once(fs_factory, freeze_helper):
    top = fs_factory.create("btrfs")
    first = fs_factory.subvolume(top, "@a")
    second = fs_factory.subvolume(top, "@b")

    frozen = freeze_helper("freeze", mounts=[first, second], run_id="btrfs-two")
    try:
        assert frozen.rc == 0, frozen.doc
        statuses = {m["path"]: m for m in frozen.doc["mounts"]}
        assert statuses[str(first)]["status"] == "frozen"
        assert statuses[str(second)]["status"] == "duplicate"
        assert statuses[str(second)]["error"] == f"same filesystem as {first} ({top.device}); frozen once, through {first}"
        # One freeze holds the whole filesystem: neither subvolume (nor the top) takes a write.
        assert not fs_factory.writable(second.mountpoint, within=0.5)
        assert not fs_factory.writable(top.mountpoint, within=0.5)
    finally:
        thawed = freeze_helper("thaw", run_id="btrfs-two")
    assert thawed.rc == 0, thawed.doc
    assert fs_factory.writable(first.mountpoint) and fs_factory.writable(second.mountpoint)


def test_btrfs_subvolume_beside_the_state_directory_is_refused(fs_factory, freeze_helper, parse_helper_output):
    top = fs_factory.create("btrfs")
    state = fs_factory.subvolume(top, "@state")
    data = fs_factory.subvolume(top, "@data")
    freeze_helper.state_dir = state.mountpoint / "appconsistent"

    # Before: the freeze went through and the helper then blocked writing its record to the frozen filesystem (and its
    # watchdog with it), so the test thaws by hand before it fails.
    proc = freeze_helper.start("freeze", mounts=[data], run_id="btrfs-state")
    try:
        stdout, stderr = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        subprocess.run(["fsfreeze", "-u", str(data)], check=False, timeout=30)
        pytest.fail("the helper blocked: it froze the filesystem that holds its state directory")
    result = parse_helper_output(proc.returncode, stdout, stderr)

    assert result.rc == 207, result.doc
    entry = result.doc["mounts"][0]
    assert entry["status"] == "refused"
    assert entry["error"] == ("is on the filesystem that holds the helper's state directory "
                              f"{freeze_helper.state_dir}, which must stay writable")
    assert fs_factory.writable(data.mountpoint) and fs_factory.writable(state.mountpoint)
    assert freeze_helper("status", run_id="btrfs-state").doc["state"] is None


def test_a_second_run_on_a_sibling_subvolume_is_already_frozen(fs_factory, freeze_helper):
    top = fs_factory.create("btrfs")
    first = fs_factory.subvolume(top, "@a")
    second = fs_factory.subvolume(top, "@b")
    assert freeze_helper("freeze", mounts=[first], run_id="sibling-1").rc == 0
    try:
        other = freeze_helper("freeze", mounts=[second], run_id="sibling-2")
        assert other.rc == 204, other.doc
        assert other.doc["mounts"][0]["status"] == "already_frozen"
        assert "sibling-1" in other.doc["message"]
    finally:
        assert freeze_helper("thaw", run_id="sibling-1").rc == 0
    assert fs_factory.writable(second.mountpoint)


class BtrfsRoot(ChrootNamespace):
    """A btrfs laid out as SLES lays out its root filesystem (subvolumes @ for /, @srv, @var), made the root of a
    chroot inside a private mount namespace, so that the helper can be shown a btrfs / without the machine's own / ever
    being in reach."""

    SUBVOLUMES = ("@", "@srv", "@var")

    def __init__(self, base: Path):
        super().__init__(base)
        self.image = base / "root.img"
        self.device = None
        self.frozen_candidates = ["/srv", "/var", ""]

    def setup(self, helper: Path):
        with open(self.image, "wb") as handle:
            handle.truncate(128 * 1024 * 1024)
        subprocess.run(["mkfs.btrfs", "-q", "-f", str(self.image)], check=True, capture_output=True, timeout=60)
        self.device = self.attach(self.image)
        self.enter()
        top = self.base / "top"
        top.mkdir()
        self.run(["mount", "-t", "btrfs", self.device, str(top)])
        for name in self.SUBVOLUMES:
            self.run(["btrfs", "subvolume", "create", str(top / name)])
        self.run(["umount", str(top)])
        root = str(self.root)
        self.run(["mount", "-t", "btrfs", "-o", "subvol=@,noatime", self.device, root])
        # The btrfs is mounted only in the namespace: what goes on it is made from there.
        self.furnish(helper, dirs=("srv", "var"))
        self.run(["mount", "-t", "btrfs", "-o", "subvol=@srv", self.device, f"{root}/srv"])
        self.run(["mount", "-t", "btrfs", "-o", "subvol=@var", self.device, f"{root}/var"])


@pytest.fixture
def btrfs_root(tmp_path, helper_path):
    yield from chroot_for(BtrfsRoot, tmp_path, helper_path, ("mkfs.btrfs", "btrfs"))


@pytest.mark.parametrize("mounts, state_dir", [(["/srv"], "/run/appconsistent"),
                                               (["/var"], "/run/appconsistent"),
                                               (["/srv", "/var"], "/run/appconsistent")],
                         ids=["srv", "var", "srv-and-var"])
def test_a_btrfs_subvolume_of_the_root_filesystem_is_refused(btrfs_root, parse_helper_output, mounts, state_dir):
    argv = ["/helper/appconsistent-freeze", "freeze", "--run-id", "root-subvolume", "--timeout", "10",
            "--state-dir", state_dir, "--prescript", "/helper/none.sh", "--postscript", "/helper/none.sh"]
    for mount in mounts:
        argv += ["--mount", mount]

    proc = btrfs_root.start(argv)
    stdout, stderr = proc.communicate(timeout=60)
    result = parse_helper_output(proc.returncode, stdout, stderr)

    # Before: stat's device numbers differ per subvolume, so /srv passed and the root filesystem was frozen.
    assert result.rc == 207, result.doc
    for entry in result.doc["mounts"]:
        assert entry["status"] == "refused"
        assert entry["error"] == (f"is on the filesystem of / (a btrfs subvolume or a bind mount of it, "
                                  f"{btrfs_root.device}); / is never frozen")
    assert result.doc["message"].startswith("refused: ")
    assert btrfs_root.writable("/") and btrfs_root.writable("/srv") and btrfs_root.writable("/var")


@pytest.mark.parametrize("fstype", FSTYPES)
def test_symlink_to_a_mount_point_is_frozen_by_its_real_path(fs_factory, freeze_helper, fstype, tmp_path):
    mount = fs_factory.create(fstype)
    link = tmp_path / "link"
    link.symlink_to(mount.mountpoint)
    result = freeze_helper("freeze", mounts=[link], run_id="via-link")
    try:
        assert result.rc == 0
        assert result.doc["mounts"][0]["path"] == str(link)
        assert result.doc["mounts"][0]["canonical"] == str(mount)
    finally:
        assert freeze_helper("thaw", run_id="via-link").rc == 0


def test_non_root_is_refused(fs_factory, freeze_helper, parse_helper_output):
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv is not installed")
    mount = fs_factory.create()
    argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "bash"]
    argv += freeze_helper.argv("freeze", mounts=[mount], run_id="nobody")
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if "Permission denied" in proc.stderr and not proc.stdout:
        pytest.skip("the helper is not readable by an unprivileged user here")
    result = parse_helper_output(proc.returncode, proc.stdout, proc.stderr)
    assert result.rc == 208 and result.doc["status"] == "not_root"
    assert fs_factory.writable(mount.mountpoint)


@pytest.mark.parametrize("fstype", FSTYPES)
def test_already_frozen(fs_factory, freeze_helper, fstype):
    mount = fs_factory.create(fstype)
    first = freeze_helper("freeze", mounts=[mount], run_id="first")
    assert first.rc == 0
    try:
        again = freeze_helper("freeze", mounts=[mount], run_id="first")
        assert again.rc == 204 and again.doc["status"] == "already_frozen"
        other = freeze_helper("freeze", mounts=[mount], run_id="second")
        assert other.rc == 204
        assert other.doc["mounts"][0]["status"] == "already_frozen"
        assert "first" in other.doc["message"]
        # The refused attempts did not disturb the freeze that holds.
        assert not fs_factory.writable(mount.mountpoint, within=0.5)
        assert freeze_helper("status", run_id="first").doc["state"] == "frozen"
    finally:
        assert freeze_helper("thaw", run_id="first").rc == 0
    assert freeze_helper("thaw", run_id="second").rc == 205


@pytest.mark.parametrize("fstype", FSTYPES)
def test_a_freeze_left_by_a_killed_watchdog_says_how_to_thaw(fs_factory, freeze_helper, fstype, helper_path):
    mount = fs_factory.create(fstype)
    first = freeze_helper("freeze", mounts=[mount], run_id="lost-watchdog", timeout=60)
    assert first.rc == 0, first.doc
    # The watchdog dies (the OOM killer, an operator's kill -9): nothing thaws this run any more.
    os.kill(first.doc["watchdog_pid"], signal.SIGKILL)
    assert pid_gone(first.doc["watchdog_pid"])

    again = freeze_helper("freeze", mounts=[mount], run_id="next")

    assert again.rc == 204, again.doc
    how = (f"run lost-watchdog of this helper left it frozen and its watchdog is gone: thaw it with "
           f"'{helper_path} thaw --state-dir {freeze_helper.state_dir} --run-id lost-watchdog'")
    assert again.doc["message"].endswith(how), again.doc["message"]
    assert not fs_factory.writable(mount.mountpoint, within=0.5)
    # The command it names works.
    thawed = freeze_helper("thaw", run_id="lost-watchdog")
    assert thawed.rc == 0, thawed.doc
    assert fs_factory.writable(mount.mountpoint)


@pytest.mark.parametrize("fstype", FSTYPES)
def test_a_filesystem_frozen_by_another_tool_says_how_to_thaw(fs_factory, freeze_helper, fstype):
    mount = fs_factory.create(fstype)
    subprocess.run(["fsfreeze", "-f", str(mount)], check=True, timeout=30)
    try:
        result = freeze_helper("freeze", mounts=[mount], run_id="foreign")
        assert result.rc == 204, result.doc
        assert result.doc["message"].endswith(
            f"if no snapshot is being taken of it, thaw it with 'fsfreeze -u {mount}'"), result.doc["message"]
    finally:
        subprocess.run(["fsfreeze", "-u", str(mount)], check=False, timeout=30)


@pytest.mark.parametrize("fstype", FSTYPES)
def test_a_run_still_holding_the_filesystem_is_named_with_its_thaw(fs_factory, freeze_helper, fstype, helper_path):
    mount = fs_factory.create(fstype)
    assert freeze_helper("freeze", mounts=[mount], run_id="holder").rc == 0
    try:
        other = freeze_helper("freeze", mounts=[mount], run_id="late")
        assert other.rc == 204, other.doc
        assert (f"'{helper_path} thaw --state-dir {freeze_helper.state_dir} --run-id holder'"
                in other.doc["message"]), other.doc["message"]
    finally:
        assert freeze_helper("thaw", run_id="holder").rc == 0


def _wait_for_line(log, line, within=30.0):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if line in (log.read_text().splitlines() if log.exists() else []):
            return
        time.sleep(0.05)
    raise AssertionError(f"{line!r} never reached {log}")


@pytest.mark.parametrize("phase", ["postscript", "prescript"])
def test_a_run_holding_a_thawed_filesystem_in_its_script_is_not_said_to_freeze_it(
        fs_factory, freeze_helper, helper_path, script_dir, write_script, parse_helper_output, phase):
    """The earlier run stays active while its postscript runs after the thaw (or its prescript before the freeze): a
    later run is refused, and told the filesystem is not frozen and to retry once the earlier run has ended."""
    mount = fs_factory.create()
    log = script_dir / "log"
    release = script_dir / "release"
    # Each script holds its run until the test releases it (bounded, so that a failed test never waits for long).
    hold = f'i=0; while [ ! -e "{release}" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done\n'
    pre = write_script(script_dir / "pre.sh", f'echo pre-start >> "{log}"\n' + (hold if phase == "prescript" else ""))
    post = write_script(script_dir / "post.sh", f'echo post-start >> "{log}"\n' + (hold if phase == "postscript" else ""))
    if phase == "postscript":
        assert freeze_helper("freeze", mounts=[mount], run_id="earlier", prescript=pre, postscript=post,
                             script_timeout=40).rc == 0
        holder = freeze_helper.start("thaw", run_id="earlier")
        _wait_for_line(log, "post-start")
        expected = (f"{mount} is not frozen: run earlier thawed it and is running its postscript; retry once run "
                    f"earlier has ended (the helper stops that postscript after the script timeout of 40s at the "
                    f"latest; '{helper_path} status --state-dir {freeze_helper.state_dir} --run-id earlier' shows "
                    f"the run's state)")
        error = "not frozen: run earlier thawed it and is running its postscript"
    else:
        holder = freeze_helper.start("freeze", mounts=[mount], run_id="earlier", prescript=pre, postscript=post,
                                     script_timeout=40)
        _wait_for_line(log, "pre-start")
        expected = (f"{mount} is not frozen yet: run earlier is running its prescript before it freezes it; retry "
                    f"once run earlier has been thawed and has ended ('{helper_path} status --state-dir "
                    f"{freeze_helper.state_dir} --run-id earlier' shows the run's state)")
        error = "not frozen yet: run earlier is running its prescript before it freezes it"
    assert fs_factory.writable(mount.mountpoint)

    later = freeze_helper("freeze", mounts=[mount], run_id="later")

    # Before: "... is already frozen by run earlier (...; to thaw it now: '... thaw ... --run-id earlier')", a thaw
    # that answers "run earlier is already being thawed" (or "still freezing").
    assert later.rc == 204, later.doc
    assert later.doc["message"] == expected, later.doc["message"]
    assert later.doc["mounts"][0]["status"] == "already_frozen"
    assert later.doc["mounts"][0]["error"] == error
    assert fs_factory.writable(mount.mountpoint)

    release.touch()
    stdout, stderr = holder.communicate(timeout=60)
    done = parse_helper_output(holder.returncode, stdout, stderr)
    assert done.rc == 0, done.doc
    if phase == "prescript":
        assert freeze_helper("thaw", run_id="earlier").rc == 0
    # Once the earlier run has ended, the retry the message asks for goes through.
    retried = freeze_helper("freeze", mounts=[mount], run_id="later")
    assert retried.rc == 0, retried.doc
    assert freeze_helper("thaw", run_id="later").rc == 0
    assert fs_factory.writable(mount.mountpoint)


def test_thaw_without_freeze(freeze_helper):
    unknown = freeze_helper("thaw", run_id="never-frozen")
    assert unknown.rc == 205 and unknown.doc["status"] == "not_frozen"
    anonymous = freeze_helper("thaw")
    assert anonymous.rc == 205


@pytest.mark.parametrize("argv", [
    ["defrost"],
    [],
    ["freeze", "--timeout", "abc", "--mount", "/x"],
    ["freeze", "--timeout", "0", "--mount", "/x"],
    ["freeze", "--script-timeout", "-1", "--mount", "/x"],
    ["freeze", "--run-id", "../escape", "--mount", "/x"],
    ["freeze", "--mount"],
    ["freeze"],
    ["run", "--mount", "/x"],
    ["thaw", "--", "echo"],
    ["freeze", "--bogus", "1"],
], ids=["unknown-subcommand", "no-subcommand", "bad-timeout", "zero-timeout", "bad-script-timeout",
        "bad-run-id", "missing-value", "no-mount", "run-without-command", "thaw-with-command", "unknown-option"])
def test_usage_errors(freeze_helper, parse_helper_output, helper_path, argv):
    args = [str(helper_path)] + argv
    if argv:
        args += ["--state-dir", str(freeze_helper.state_dir)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    result = parse_helper_output(proc.returncode, proc.stdout, proc.stderr)
    assert result.rc == 2 and result.doc["status"] == "usage_error", result.doc
    assert result.doc["message"]


# ------------------------------------------------------------------------------- scripts

def test_valid_scripts_run_around_the_freeze(fs_factory, freeze_helper, scripts, monkeypatch):
    mount = fs_factory.create()
    set_probe(monkeypatch, mount.mountpoint)

    frozen = freeze_helper("freeze", mounts=[mount], run_id="with-scripts", prescript=scripts.prescript,
                           postscript=scripts.postscript)

    assert frozen.rc == 0, frozen.stderr
    pre = frozen.doc["scripts"]["prescript"]
    assert frozen.doc["scripts"]["status"] == "valid"
    assert pre["status"] == "valid" and pre["ran"] is True and pre["exit_code"] == 0
    assert pre["stdout"] == "hello-from-pre\n" and pre["stderr"] == "warning-from-pre\n"
    assert pre["t_end"] <= frozen.doc["t_frozen"]
    assert frozen.doc["scripts"]["postscript"]["ran"] is False
    # The prescript saw a writable filesystem: it ran before the freeze.
    assert scripts.lines() == ["pre writable pre-script pre-script with-scripts auto=0"]

    thawed = freeze_helper("thaw", run_id="with-scripts")

    assert thawed.rc == 0
    post = thawed.doc["scripts"]["postscript"]
    assert post["ran"] is True and post["exit_code"] == 0 and post["stdout"] == "hello-from-post\n"
    assert post["t_start"] >= thawed.doc["t_thawed"]
    assert_ordered(thawed.doc)
    # The postscript saw a writable filesystem: it ran after the thaw.
    assert scripts.lines() == [
        "pre writable pre-script pre-script with-scripts auto=0",
        "post writable post-script post-script with-scripts auto=0",
    ]


def _make_invalid(case, scripts, script_dir):
    if case == "mode-0755":
        os.chmod(scripts.prescript, 0o755)
        return "mode 755"
    if case == "mode-0600":
        os.chmod(scripts.postscript, 0o600)
        return "not executable"
    if case == "not-owned-by-root":
        os.chown(scripts.prescript, 65534, 65534)
        return "uid 65534"
    if case == "world-writable-dir":
        os.chmod(script_dir, 0o777)
        return "writable by group or others"
    if case == "group-writable-dir":
        os.chmod(script_dir, 0o770)
        return "writable by group or others"
    if case == "dir-not-owned-by-root":
        os.chown(script_dir, 65534, 0)
        return "uid 65534"
    if case == "not-a-regular-file":
        scripts.prescript.unlink()
        scripts.prescript.mkdir(mode=0o700)
        return "not a regular file"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["mode-0755", "mode-0600", "not-owned-by-root", "world-writable-dir",
                                  "group-writable-dir", "dir-not-owned-by-root", "not-a-regular-file"])
def test_invalid_scripts_are_not_run(fs_factory, freeze_helper, scripts, script_dir, monkeypatch, case):
    mount = fs_factory.create()
    set_probe(monkeypatch, mount.mountpoint)
    expected_reason = _make_invalid(case, scripts, script_dir)

    frozen = freeze_helper("freeze", mounts=[mount], run_id="invalid", prescript=scripts.prescript,
                           postscript=scripts.postscript)

    assert frozen.rc == 0, frozen.stderr
    assert frozen.doc["scripts"]["status"] == "invalid"
    assert expected_reason in frozen.doc["scripts"]["reason"]
    assert frozen.doc["mounts"][0]["status"] == "frozen"
    thawed = freeze_helper("thaw", run_id="invalid")
    assert thawed.rc == 0
    assert thawed.doc["scripts"]["prescript"]["ran"] is False and thawed.doc["scripts"]["postscript"]["ran"] is False
    assert scripts.lines() == []
    assert fs_factory.writable(mount.mountpoint)


def test_script_in_world_writable_tree_is_invalid(fs_factory, freeze_helper, tmp_path, write_script):
    # A directory like /tmp (mode 1777): the sticky bit is not enough.
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    mount = fs_factory.create()
    pre = write_script(shared / "pre.sh", "exit 0\n")
    post = write_script(shared / "post.sh", "exit 0\n")
    result = freeze_helper("freeze", mounts=[mount], run_id="tmp-scripts", prescript=pre, postscript=post)
    try:
        assert result.rc == 0
        assert result.doc["scripts"]["status"] == "invalid"
        assert "writable by group or others" in result.doc["scripts"]["reason"]
    finally:
        assert freeze_helper("thaw", run_id="tmp-scripts").rc == 0


def test_one_absent_script_means_no_script_runs(fs_factory, freeze_helper, scripts, script_dir):
    mount = fs_factory.create()
    missing = script_dir / "missing.sh"
    frozen = freeze_helper("freeze", mounts=[mount], run_id="absent", prescript=missing,
                           postscript=scripts.postscript)
    assert frozen.rc == 0
    assert frozen.doc["scripts"]["status"] == "absent"
    assert frozen.doc["scripts"]["prescript"]["status"] == "absent"
    assert frozen.doc["scripts"]["postscript"]["status"] == "valid"
    assert "not found" in frozen.doc["scripts"]["reason"]
    assert freeze_helper("thaw", run_id="absent").rc == 0
    assert scripts.lines() == []


def test_prescript_failure_freezes_nothing(fs_factory, freeze_helper, scripts, monkeypatch):
    mount = fs_factory.create()
    monkeypatch.setenv("PRE_EXIT", "1")

    result = freeze_helper("freeze", mounts=[mount], run_id="pre-fails", prescript=scripts.prescript,
                           postscript=scripts.postscript)

    assert result.rc == 201 and result.doc["status"] == "prescript_failed"
    assert result.doc["scripts"]["prescript"]["exit_code"] == 1
    assert result.doc["mounts"][0]["status"] == "ok" and result.doc["t_frozen"] is None
    assert fs_factory.writable(mount.mountpoint, within=2)
    assert [line.split()[0] for line in scripts.lines()] == ["pre"]
    assert freeze_helper("thaw", run_id="pre-fails").rc == 205
    assert pid_gone(result.doc["watchdog_pid"])


def test_prescript_reports_application_not_ready(fs_factory, freeze_helper, scripts, monkeypatch):
    mount = fs_factory.create()
    monkeypatch.setenv("PRE_EXIT", "206")
    result = freeze_helper("freeze", mounts=[mount], run_id="not-ready", prescript=scripts.prescript,
                           postscript=scripts.postscript)
    assert result.rc == 206 and result.doc["status"] == "application_not_ready"
    assert fs_factory.writable(mount.mountpoint, within=2)


def test_prescript_timeout_is_a_failure(fs_factory, freeze_helper, script_dir, write_script):
    mount = fs_factory.create()
    pre = write_script(script_dir / "slow-pre.sh", "sleep 30\n")
    post = write_script(script_dir / "post.sh", "exit 0\n")
    result = freeze_helper("freeze", mounts=[mount], run_id="slow", prescript=pre, postscript=post,
                           script_timeout=1)
    assert result.rc == 201
    assert result.doc["scripts"]["prescript"]["timed_out"] is True
    assert "timed out" in result.doc["message"]
    assert fs_factory.writable(mount.mountpoint, within=2)


def test_postscript_failure_after_thaw(fs_factory, freeze_helper, scripts, monkeypatch):
    mount = fs_factory.create()
    monkeypatch.setenv("POST_EXIT", "3")
    assert freeze_helper("freeze", mounts=[mount], run_id="post-fails", prescript=scripts.prescript,
                         postscript=scripts.postscript).rc == 0

    result = freeze_helper("thaw", run_id="post-fails")

    assert result.rc == 202 and result.doc["status"] == "postscript_failed"
    assert result.doc["scripts"]["postscript"]["exit_code"] == 3
    assert result.doc["mounts"][0]["status"] == "thawed"
    assert fs_factory.writable(mount.mountpoint, within=2)


def test_postscript_tampered_while_frozen_is_not_run(fs_factory, freeze_helper, scripts):
    mount = fs_factory.create()
    assert freeze_helper("freeze", mounts=[mount], run_id="tampered", prescript=scripts.prescript,
                         postscript=scripts.postscript).rc == 0
    os.chmod(scripts.postscript, 0o777)

    result = freeze_helper("thaw", run_id="tampered")

    assert result.rc == 202
    assert result.doc["scripts"]["postscript"]["status"] == "invalid"
    assert "mode 777" in result.doc["scripts"]["postscript"]["reason"]
    assert [line.split()[0] for line in scripts.lines()] == ["pre"]
    assert fs_factory.writable(mount.mountpoint, within=2)


def test_no_freeze_runs_scripts_only(fs_factory, freeze_helper, scripts, monkeypatch):
    mount = fs_factory.create()
    set_probe(monkeypatch, mount.mountpoint)
    frozen = freeze_helper("freeze", run_id="scripts-only", prescript=scripts.prescript,
                           postscript=scripts.postscript, extra=["--no-freeze"])
    assert frozen.rc == 0 and frozen.doc["no_freeze"] is True and frozen.doc["mounts"] == []
    assert freeze_helper("thaw", run_id="scripts-only").rc == 0
    assert [line.split()[0] for line in scripts.lines()] == ["pre", "post"]

    ran = freeze_helper("run", run_id="run-scripts-only", prescript=scripts.prescript, postscript=scripts.postscript,
                        extra=["--no-freeze"], command=["echo", "snapshot-started"])
    assert ran.rc == 0 and ran.doc["command"]["stdout"] == "snapshot-started\n"
    assert [line.split()[0] for line in scripts.lines()] == ["pre", "post", "pre", "post"]


# ------------------------------------------------------------------------ nested, partial

def test_nested_mounts_freeze_deepest_first_thaw_shallowest_first(fs_factory, freeze_helper, tmp_path):
    outer = fs_factory.create("ext4", tmp_path / "x")
    inner = fs_factory.create("xfs", outer.mountpoint / "y")

    frozen = freeze_helper("freeze", mounts=[outer, inner], run_id="nested", timeout=30, proc_timeout=30)

    assert frozen.rc == 0, frozen.stderr
    mounts = frozen.doc["mounts"]
    assert [m["path"] for m in mounts] == [str(inner), str(outer)]
    assert mounts[0]["t_frozen"] < mounts[1]["t_frozen"]
    assert not fs_factory.writable(outer.mountpoint, within=0.5)
    assert not fs_factory.writable(inner.mountpoint, within=0.5)

    thawed = freeze_helper("thaw", run_id="nested", proc_timeout=30)

    assert thawed.rc == 0
    by_path = {m["path"]: m for m in thawed.doc["mounts"]}
    assert by_path[str(outer)]["t_thawed"] < by_path[str(inner)]["t_thawed"]
    assert all(m["status"] == "thawed" for m in thawed.doc["mounts"])
    assert fs_factory.writable(inner.mountpoint) and fs_factory.writable(outer.mountpoint)


def test_second_mount_already_frozen_rolls_back_the_first(fs_factory, freeze_helper, scripts, monkeypatch):
    first = fs_factory.create()
    second = fs_factory.create()
    set_probe(monkeypatch, first.mountpoint)
    subprocess.run(["fsfreeze", "-f", str(second)], check=True, timeout=30)

    result = freeze_helper("freeze", mounts=[first, second], run_id="partial", prescript=scripts.prescript,
                           postscript=scripts.postscript)

    assert result.rc == 204 and result.doc["status"] == "already_frozen"
    statuses = {m["path"]: m for m in result.doc["mounts"]}
    assert statuses[str(first)]["status"] == "thawed" and statuses[str(first)]["t_frozen"] is not None
    assert statuses[str(second)]["status"] == "already_frozen"
    assert fs_factory.writable(first.mountpoint, within=2)
    # Someone else's freeze is left alone.
    assert not fs_factory.writable(second.mountpoint, within=0.5)
    subprocess.run(["fsfreeze", "-u", str(second)], check=True, timeout=30)
    assert fs_factory.writable(second.mountpoint)
    assert [line.split()[0] for line in scripts.lines()] == ["pre", "post"]
    assert result.doc["state"] == "failed"


def test_unfreezable_filesystem_rolls_back(fs_factory, freeze_helper, tmp_path):
    first = fs_factory.create()
    scratch = fs_factory.tmpfs(tmp_path / "scratch")

    result = freeze_helper("freeze", mounts=[first, scratch], run_id="tmpfs")

    assert result.rc == 209 and result.doc["status"] == "freeze_failed"
    statuses = {m["path"]: m["status"] for m in result.doc["mounts"]}
    assert statuses == {str(first): "thawed", str(scratch): "freeze_failed"}
    assert fs_factory.writable(first.mountpoint, within=2)


# ----------------------------------------------------------------------------------- run

def test_run_executes_command_while_frozen(fs_factory, freeze_helper):
    mount = fs_factory.create()
    check = ('touch "$1/from-command" & pid=$!; sleep 1; '
             'if kill -0 $pid 2>/dev/null; then echo "blocked $APPCONSISTENT_RUN_ID"; else echo writable; fi')

    result = freeze_helper("run", mounts=[mount], run_id="run-ok", timeout=20,
                           command=["sh", "-c", check, "sh", str(mount)])

    assert result.rc == 0, result.doc
    command = result.doc["command"]
    assert command["exit_code"] == 0 and command["stdout"] == "blocked run-ok\n"
    assert command["argv"] == ["sh", "-c", check, "sh", str(mount)]
    assert result.doc["t_frozen"] <= command["t_start"] <= command["t_end"] <= result.doc["t_thawed"]
    assert_ordered(result.doc)
    assert result.doc["state"] == "thawed"
    assert fs_factory.writable(mount.mountpoint)


def test_run_thaws_when_command_fails(fs_factory, freeze_helper):
    mount = fs_factory.create()
    result = freeze_helper("run", mounts=[mount], run_id="run-fails", timeout=20,
                           command=["sh", "-c", "echo partial-output; echo boom >&2; exit 3"])
    assert result.rc == 210 and result.doc["status"] == "command_failed"
    assert result.doc["command"]["exit_code"] == 3
    assert result.doc["command"]["stdout"] == "partial-output\n"
    assert result.doc["command"]["stderr"] == "boom\n"
    assert result.doc["mounts"][0]["status"] == "thawed"
    assert fs_factory.writable(mount.mountpoint, within=2)


def test_run_stops_command_at_the_deadline(fs_factory, freeze_helper):
    mount = fs_factory.create()
    result = freeze_helper("run", mounts=[mount], run_id="run-slow", timeout=1, command=["sleep", "30"])
    assert result.rc in (210, 203), result.doc
    assert result.doc["command"]["timed_out"] is True or result.doc["auto_thawed"] is True
    assert fs_factory.writable(mount.mountpoint, within=3)


def test_run_output_is_valid_json_whatever_the_command_prints(fs_factory, freeze_helper, tmp_path):
    mount = fs_factory.create()
    marker = tmp_path / "injected"
    text = 'quote " backslash \\ tab \t bell \x07 unicode \u00e9\u4e2d'
    script = 'printf "%s\\n" "$1"; printf "\\377\\376 bad utf8\\n"; printf "$2"'
    result = freeze_helper("run", mounts=[mount], run_id="run-json", timeout=20,
                           command=["sh", "-c", script, "sh", text, f"$(touch {marker})"])
    assert result.rc == 0, result.doc
    stdout = result.doc["command"]["stdout"]
    assert stdout.startswith(text + "\n")
    assert "bad utf8" in stdout
    assert result.doc["command"]["argv"][-1] == f"$(touch {marker})"
    assert not marker.exists()


def test_nothing_left_behind(fs_factory, freeze_helper):
    mount = fs_factory.create()
    assert freeze_helper("freeze", mounts=[mount], run_id="leftovers").rc == 0
    assert freeze_helper("thaw", run_id="leftovers").rc == 0
    assert freeze_helper.watchdog_pids() == []
    frozen = [run for run in freeze_helper("status").doc["runs"] if run["state"] not in ("thawed", "failed")]
    assert frozen == []


# ---------------------------------------------------------------------------------- lint

def test_helper_is_valid_bash(helper_path):
    proc = subprocess.run(["bash", "-n", str(helper_path)], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr


def test_helper_is_shellcheck_clean(helper_path):
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (Debian package shellcheck)")
    proc = subprocess.run(["shellcheck", "--shell=bash", str(helper_path)], capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
