"""The helper scripts `make test` is built on: a wrong answer from one of them hides test results."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOOLS = ROOT / "tests" / "tools"


def run(command: list[str], cwd: pathlib.Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False, timeout=240)


def pytest_stage(tmp_path: pathlib.Path, *paths: pathlib.Path) -> subprocess.CompletedProcess:
    (tmp_path / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    return run(
        [str(TOOLS / "pytest_stage.sh"), sys.executable, "demo", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
         "-c", str(tmp_path / "pytest.ini"), "--"] + [str(path) for path in paths],
        cwd=tmp_path,
    )


def test_stage_without_tests_yet_passes(tmp_path: pathlib.Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = pytest_stage(tmp_path, empty)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no tests collected" in result.stdout


def test_stage_whose_directory_does_not_exist_yet_passes(tmp_path: pathlib.Path) -> None:
    result = pytest_stage(tmp_path, tmp_path / "missing")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "nothing to test" in result.stdout


def test_stage_fails_on_a_failing_test(tmp_path: pathlib.Path) -> None:
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_demo.py").write_text("def test_ok():\n    pass\n\n\ndef test_broken():\n    assert 1 == 2\n", encoding="utf-8")
    result = pytest_stage(tmp_path, suite, tmp_path / "missing")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 failed, 1 passed" in result.stdout


def test_stage_fails_on_a_collection_error(tmp_path: pathlib.Path) -> None:
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_demo.py").write_text("import no_such_module_anywhere\n", encoding="utf-8")
    result = pytest_stage(tmp_path, suite)
    assert result.returncode not in (0, 5), result.stdout + result.stderr


def test_summary_adds_up_every_report(tmp_path: pathlib.Path) -> None:
    (tmp_path / "unit.xml").write_text(textwrap.dedent("""\
        <?xml version="1.0" encoding="utf-8"?>
        <testsuites><testsuite name="pytest" errors="1" failures="2" skipped="3" tests="20"/></testsuites>
        """), encoding="utf-8")
    (tmp_path / "e2e.xml").write_text(
        '<?xml version="1.0" encoding="utf-8"?><testsuite name="pytest" errors="0" failures="0" skipped="0" tests="5"/>',
        encoding="utf-8",
    )
    result = run([sys.executable, str(TOOLS / "summarize_results.py"), str(tmp_path)])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "tests: 19 passed, 3 failed, 3 skipped"


def test_find_python_names_a_missing_version_clearly() -> None:
    result = run([str(TOOLS / "find_python.sh"), "2.1"])
    assert result.returncode == 1
    assert result.stdout == ""
    assert "no working Python 2.1 found" in result.stderr


def test_find_python_accepts_a_matching_interpreter_and_refuses_another() -> None:
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    found = run([str(TOOLS / "find_python.sh"), version, sys.executable])
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == sys.executable
    refused = run([str(TOOLS / "find_python.sh"), "2.1", sys.executable])
    assert refused.returncode == 1
    assert "is not a working Python 2.1" in refused.stderr


def test_sanity_copy_holds_the_collection_and_nothing_generated(tmp_path: pathlib.Path) -> None:
    result = run([sys.executable, str(TOOLS / "stage_collection.py"), "copy", str(tmp_path)])
    assert result.returncode == 0, result.stdout + result.stderr
    galaxy = yaml.safe_load((ROOT / "galaxy.yml").read_text(encoding="utf-8"))
    tree = tmp_path / "ansible_collections" / galaxy["namespace"] / galaxy["name"]
    copied = {str(path.relative_to(tree)) for path in tree.rglob("*") if path.is_file()}
    assert {"galaxy.yml", "meta/runtime.yml", "Makefile", "tests/tools/stage_collection.py"} <= copied
    assert [path for path in copied if path.split("/")[0].startswith(".venv") or path.startswith("build/")] == []
    assert [path for path in copied if "__pycache__" in path or path.endswith(".pyc")] == []
    for dependency in galaxy["dependencies"]:
        assert (tmp_path / "ansible_collections" / dependency.replace(".", "/") / "MANIFEST.json").is_file()


def test_link_points_at_the_working_tree(tmp_path: pathlib.Path) -> None:
    for _attempt in range(2):
        result = run([sys.executable, str(TOOLS / "stage_collection.py"), "link", str(tmp_path)])
        assert result.returncode == 0, result.stdout + result.stderr
    link = tmp_path / "ansible_collections" / "appconsistent" / "snapshots"
    assert link.is_symlink()
    assert os.path.samefile(link / "galaxy.yml", ROOT / "galaxy.yml")
