"""The order of `make test` (make_test.sh) and its hygiene check: a run that leaves something behind, or
whose background stage fails, must not pass."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import tempfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOOLS = ROOT / "tests" / "tools"


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=120, **kwargs)


def hygiene(action: str, snapshot: pathlib.Path, root: pathlib.Path, home: pathlib.Path) -> subprocess.CompletedProcess:
    # The check watches a directory of the test's own, not the machine's /tmp, /run and /etc that
    # other work on this machine writes to at the same time.
    env = {**os.environ, "HOME": str(home), "APPCONSISTENT_HYGIENE_WATCH": str(home.parent / "watched")}
    return run([sys.executable, str(TOOLS / "hygiene.py"), action, str(snapshot), str(root)], env=env)


def test_hygiene_finds_what_a_run_left_and_nothing_else(tmp_path: pathlib.Path) -> None:
    root, home = tmp_path / "tree", tmp_path / "home"
    root.mkdir()
    home.mkdir()
    (tmp_path / "watched").mkdir()
    snapshot = tmp_path / "snapshot.json"
    assert hygiene("snapshot", snapshot, root, home).returncode == 0

    left = pathlib.Path(tempfile.mkdtemp(prefix="appconsistent-test-", dir=tmp_path / "watched"))
    (tmp_path / "watched" / "other-work").mkdir()
    collection = home / ".ansible" / "collections" / "ansible_collections" / "appconsistent" / "snapshots"
    collection.mkdir(parents=True)
    # pylint: disable-next=consider-using-with
    process = subprocess.Popen(["sleep", "60"], cwd=root)
    # pylint: disable-next=consider-using-with
    # A session of its own: the shell may fork sleep rather than exec it, and the kill below must reach both, or
    # a sleep outlives the test and the run's own hygiene check finds it.
    server = subprocess.Popen(["sh", "-c", "sleep 60", str(left / "server")], cwd=tmp_path, start_new_session=True)
    try:
        result = hygiene("check", snapshot, root, home)
        assert result.returncode == 1, result.stdout + result.stderr
        assert f"FOUND left outside the tree: {left}" in result.stdout
        assert f"FOUND collection installed outside the tree: {collection.parent}" in result.stdout
        assert f"FOUND process {process.pid} " in result.stdout
        assert f"FOUND process {server.pid} " in result.stdout
        assert "not judged: " + str(tmp_path / "watched" / "other-work") in result.stdout
    finally:
        process.kill()
        os.killpg(server.pid, signal.SIGKILL)
        for proc in (process, server):
            proc.wait()
        left.rmdir()

    collection.rmdir()
    collection.parent.rmdir()
    result = hygiene("check", snapshot, root, home)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[hygiene] clean" in result.stdout


def fake_mountinfo(path: pathlib.Path, *mount_points: pathlib.Path) -> pathlib.Path:
    """A mountinfo listing / and these mount points, each a loop-mounted ext4, escaped as the kernel writes it."""
    lines = ["22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw"]
    for number, point in enumerate(mount_points, start=3):
        target = str(point.resolve()).replace("\\", "\\134").replace(" ", "\\040")
        lines.append(f"{30 + number} 22 7:{number} / {target} rw,relatime shared:{number} - ext4 /dev/loop{number} rw")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_hygiene_walks_into_btrfs_subvolumes_and_stops_at_mount_points(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(TOOLS))
    import hygiene  # pylint: disable=import-error,import-outside-toplevel

    watched = tmp_path / "watched"
    subvolume, mounted = watched / "data" / "subvolume", watched / "loop" / "mnt pöint"
    for directory in (subvolume, mounted):
        directory.mkdir(parents=True)
        (directory / "file").write_text("x", encoding="utf-8")
    monkeypatch.setattr(hygiene, "MOUNTINFO", str(fake_mountinfo(tmp_path / "mountinfo", mounted)), raising=False)
    # A btrfs subvolume has a device number of its own on the same file system, and is no mount point.
    lstat = os.lstat

    def btrfs_lstat(path, *args, **kwargs):
        found = lstat(path, *args, **kwargs)
        if os.fspath(path) == str(subvolume):
            return os.stat_result((found.st_mode, found.st_ino, found.st_dev + 1) + tuple(found)[3:])
        return found

    monkeypatch.setattr(hygiene.os, "lstat", btrfs_lstat)
    entries = hygiene.list_entries(str(watched))
    assert str(subvolume / "file") in entries, sorted(entries)
    assert str(mounted) in entries and str(mounted / "file") not in entries, sorted(entries)


def test_hygiene_finds_a_mount_under_the_tree_as_mountinfo_names_it(tmp_path: pathlib.Path) -> None:
    root, home = tmp_path / "tree", tmp_path / "home"
    for directory in (root / "mnt pöint", home, tmp_path / "watched"):
        directory.mkdir(parents=True)
    snapshot = tmp_path / "snapshot.json"
    mountinfo = fake_mountinfo(tmp_path / "mountinfo", root / "mnt pöint")
    env = {**os.environ, "HOME": str(home), "APPCONSISTENT_HYGIENE_WATCH": str(tmp_path / "watched"),
           "APPCONSISTENT_HYGIENE_MOUNTINFO": str(mountinfo)}
    for action in ("snapshot", "check"):
        result = run([sys.executable, str(TOOLS / "hygiene.py"), action, str(snapshot), str(root)], env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"FOUND mount {root.resolve() / 'mnt pöint'} (from /dev/loop3)" in result.stdout


def make_test(tmp_path: pathlib.Path, failing: str = "", stages: str = "unit twin-test e2e") -> subprocess.CompletedProcess:
    """make_test.sh with a make that only records the stages it was asked for (and its CPU priority)."""
    fake_make = tmp_path / "make"
    fake_make.write_text(f'#!/bin/sh\necho "ran $1" >> "{tmp_path}/ran"\nnice > "{tmp_path}/nice-$1"\n'
                         f'[ "$1" != "{failing}" ]\n', encoding="utf-8")
    fake_make.chmod(0o755)
    root = tmp_path / "tree"
    root.mkdir()
    (tmp_path / "watched").mkdir()
    env = {**os.environ, "MAKE": str(fake_make), "HOME": str(tmp_path),
           "APPCONSISTENT_HYGIENE_WATCH": str(tmp_path / "watched")}
    return run([str(TOOLS / "make_test.sh"), str(root), sys.executable, "sanity lint", stages], env=env)


def test_every_stage_runs_and_the_times_are_printed(tmp_path: pathlib.Path) -> None:
    result = make_test(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    ran = (tmp_path / "ran").read_text(encoding="utf-8").split("\n")
    assert ran[0] == "ran setup"
    assert sorted(ran[1:-1]) == ["ran e2e", "ran lint", "ran sanity", "ran twin-test", "ran unit"]
    times = result.stdout.split("=== stage times\n", 1)[1]
    for stage in ("setup", "sanity", "lint", "unit", "twin-test", "e2e", "hygiene", "total"):
        assert f"  {stage} " in times, result.stdout
    assert "[hygiene] clean" in result.stdout


@pytest.mark.parametrize("failing", ["lint", "unit"])
def test_a_failing_stage_fails_the_run_before_the_later_stages(tmp_path: pathlib.Path, failing: str) -> None:
    # lint runs in the background, unit in the foreground: both stop the run before e2e.
    result = make_test(tmp_path, failing=failing)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"=== make {failing} FAILED" in result.stdout
    assert "ran e2e" not in (tmp_path / "ran").read_text(encoding="utf-8")
    assert "=== stage times" in result.stdout
    assert "=== make hygiene" in result.stdout


def test_a_failing_stage_lets_the_background_stages_finish_before_the_hygiene_check(tmp_path: pathlib.Path) -> None:
    # A background stage stopped half-way leaves its servers and loop devices behind: the run waits for it instead.
    fake_make = tmp_path / "make"
    fake_make.write_text(f'#!/bin/sh\necho "ran $1" >> "{tmp_path}/ran"\n'
                         f'if [ "$1" = lint ]; then sleep 2; echo "lint done" >> "{tmp_path}/ran"; fi\n'
                         '[ "$1" != unit ]\n', encoding="utf-8")
    fake_make.chmod(0o755)
    (tmp_path / "tree").mkdir()
    (tmp_path / "watched").mkdir()
    env = {**os.environ, "MAKE": str(fake_make), "HOME": str(tmp_path), "APPCONSISTENT_HYGIENE_WATCH": str(tmp_path / "watched")}
    result = run([str(TOOLS / "make_test.sh"), str(tmp_path / "tree"), sys.executable, "lint", "unit e2e"], env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    ran = (tmp_path / "ran").read_text(encoding="utf-8")
    assert "lint done" in ran and "ran e2e" not in ran, ran
    assert result.stdout.index("=== make lint (ran in the background)") < result.stdout.index("=== make hygiene")
    assert "=== failed: unit" in result.stdout


def test_a_stage_pair_runs_side_by_side_the_first_at_a_lower_priority(tmp_path: pathlib.Path) -> None:
    result = make_test(tmp_path, stages="unit integration|e2e changelog-lint")
    assert result.returncode == 0, result.stdout + result.stderr
    ran = (tmp_path / "ran").read_text(encoding="utf-8").split("\n")
    assert sorted(ran[1:-1]) == ["ran changelog-lint", "ran e2e", "ran integration", "ran lint", "ran sanity", "ran unit"]
    assert ran.index("ran changelog-lint") > max(ran.index("ran integration"), ran.index("ran e2e"))
    base = int((tmp_path / "nice-unit").read_text(encoding="utf-8"))
    assert int((tmp_path / "nice-integration").read_text(encoding="utf-8")) == min(base + 10, 19)  # 19 is the lowest
    assert int((tmp_path / "nice-e2e").read_text(encoding="utf-8")) == base
    times = result.stdout.split("=== stage times\n", 1)[1]
    assert "  integration " in times and "(beside e2e)" in times and "  e2e " in times, result.stdout
    assert "=== make integration (ran beside e2e)" in result.stdout


@pytest.mark.parametrize("failing", ["integration", "e2e"])
def test_a_failure_on_either_side_of_a_pair_fails_the_run_before_later_stages(tmp_path: pathlib.Path, failing: str) -> None:
    result = make_test(tmp_path, failing=failing, stages="unit integration|e2e changelog-lint")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"=== make {failing} FAILED" in result.stdout
    assert "ran changelog-lint" not in (tmp_path / "ran").read_text(encoding="utf-8")
    assert f"=== failed: {failing}" in result.stdout


def test_molecule_keeps_its_collection_and_state_inside_the_tree() -> None:
    # Molecule writes to ANSIBLE_HOME, by default ~/.ansible, where its copy of the collection
    # would replace the one the user has installed.
    result = run(["make", "-n", "-C", str(ROOT), "molecule"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"ANSIBLE_HOME={ROOT}/build/" in result.stdout, result.stdout


def test_a_pytest_stage_keeps_its_temporary_files_in_the_tree(tmp_path: pathlib.Path) -> None:
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_where.py").write_text(
        "import tempfile\n\n\ndef test_where(tmp_path):\n"
        f"    assert str(tmp_path).startswith({str(ROOT / 'build') + '/'!r})\n"
        f"    assert tempfile.gettempdir() == {str(ROOT / 'build' / 'tmp')!r}\n", encoding="utf-8")
    (tmp_path / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    result = run([str(TOOLS / "pytest_stage.sh"), sys.executable, "hygiene-demo", "-p", "no:cacheprovider",
                  "-c", str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path), "--", str(suite)], cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
