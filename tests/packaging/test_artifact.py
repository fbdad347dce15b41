"""The collection artifact that ``ansible-galaxy collection build`` makes from this tree.

A user installs the artifact, not the repository: it must carry every module, role,
playbook and metadata file a controller needs, none of the tests, twin clouds or build
tooling, and every module in it must render with ansible-doc once installed.
"""

from __future__ import annotations

import fnmatch
import json
import os
import pathlib
import subprocess
import sys
import tarfile

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(sys.executable).parent
GALAXY = yaml.safe_load((ROOT / "galaxy.yml").read_text(encoding="utf-8"))
NAMESPACE = GALAXY["namespace"]
NAME = GALAXY["name"]
FQCN = f"{NAMESPACE}.{NAME}"

# What may sit at the top of the artifact; anything else is a development file that
# build_ignore let through.
TOP_LEVEL_ALLOWED = frozenset((
    "CHANGELOG.md", "CHANGELOG.rst", "COPYING", "FILES.json", "LICENSE", "MANIFEST.json", "README.md",
    "changelogs", "docs", "meta", "playbooks", "plugins", "roles",
))

# Development and test files that must never be shipped, wherever they are.
FORBIDDEN = (
    "tests", "tests/*", "*/tests", "*/tests/*",
    "twin", "twin/*", "*/twin", "*/twin/*",
    "Makefile", ".ci", ".ci/*",
    ".venv*", "build", "build/*",
    "changelogs/fragments", "changelogs/fragments/*",
    ".ansible-lint", ".yamllint", "pytest.ini", ".gitignore", ".git", ".git/*",
    "*/molecule", "*/molecule/*",
    "*__pycache__*", "*.pyc", ".pytest_cache*", ".coverage", "coverage.xml",
)


def module_names(plugins_dir: pathlib.Path) -> set[str]:
    """Modules are Python files, or PowerShell files documented by a YAML file of the same name."""
    modules_dir = plugins_dir / "modules"
    if not modules_dir.is_dir():
        return set()
    return {
        path.stem
        for path in modules_dir.iterdir()
        if path.suffix in (".py", ".ps1") and path.stem != "__init__" and not path.stem.startswith("_")
    }


def run(command: list[str], cwd: pathlib.Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=240)


@pytest.fixture(name="ansible_env", scope="module")
def fixture_ansible_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An environment that sees no configuration or collections of this machine or tree."""
    home = tmp_path_factory.mktemp("ansible-home")
    env = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
    env.update(ANSIBLE_HOME=str(home), ANSIBLE_NOCOLOR="1", ANSIBLE_COLLECTIONS_PATH=str(home / "collections"))
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture(name="artifact", scope="module")
def fixture_artifact(tmp_path_factory: pytest.TempPathFactory, ansible_env: dict[str, str]) -> pathlib.Path:
    output = tmp_path_factory.mktemp("artifact")
    result = run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(output), str(ROOT)], output, ansible_env)
    assert result.returncode == 0, result.stdout + result.stderr
    built = sorted(output.glob("*.tar.gz"))
    assert len(built) == 1, f"expected one artifact, found {built}"
    return built[0]


@pytest.fixture(name="members", scope="module")
def fixture_members(artifact: pathlib.Path) -> list[str]:
    with tarfile.open(artifact) as archive:
        return [member.name.removeprefix("./") for member in archive.getmembers()]


@pytest.fixture(name="installed", scope="module")
def fixture_installed(artifact: pathlib.Path, tmp_path_factory: pytest.TempPathFactory, ansible_env: dict[str, str]) -> dict[str, str]:
    """The artifact installed into an empty collections path; amazon.aws comes from the Python environment."""
    collections = tmp_path_factory.mktemp("collections")
    env = dict(ansible_env, ANSIBLE_COLLECTIONS_PATH=str(collections))
    result = run([str(BIN / "ansible-galaxy"), "collection", "install", "--no-deps", "-p", str(collections), str(artifact)], collections, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (collections / "ansible_collections" / NAMESPACE / NAME / "MANIFEST.json").is_file()
    return env


def read_member(artifact: pathlib.Path, name: str) -> bytes:
    with tarfile.open(artifact) as archive:
        handle = archive.extractfile(name)
        assert handle is not None, f"{name} is not a file in {artifact.name}"
        return handle.read()


def test_artifact_is_named_after_galaxy_yml(artifact: pathlib.Path) -> None:
    assert artifact.name == f"{NAMESPACE}-{NAME}-{GALAXY['version']}.tar.gz"


def test_manifest_declares_identity_license_and_dependencies(artifact: pathlib.Path) -> None:
    info = json.loads(read_member(artifact, "MANIFEST.json"))["collection_info"]
    assert (info["namespace"], info["name"]) == ("appconsistent", "snapshots")
    assert info["version"] == GALAXY["version"]
    assert info["license"] == ["GPL-3.0-or-later"]
    assert info["dependencies"] == {"amazon.aws": ">=9.0.0"}


def test_only_controller_content_at_top_level(members: list[str]) -> None:
    top_level = {member.split("/", 1)[0] for member in members if member}
    assert top_level - TOP_LEVEL_ALLOWED == set()


@pytest.mark.parametrize("pattern", FORBIDDEN)
def test_no_development_file_is_shipped(members: list[str], pattern: str) -> None:
    assert [member for member in members if fnmatch.fnmatch(member, pattern)] == []


@pytest.mark.parametrize("required", (
    "MANIFEST.json",
    "FILES.json",
    "meta/runtime.yml",
    "meta/execution-environment.yml",
    "meta/ee-requirements.txt",
    "meta/ee-bindep.txt",
    "changelogs/changelog.yaml",
    "docs/execution-environment.yml",
))
def test_runtime_metadata_is_shipped(members: list[str], required: str) -> None:
    assert required in members


def test_readme_is_shipped_when_the_tree_has_one(members: list[str]) -> None:
    if not (ROOT / GALAXY["readme"]).is_file():
        pytest.skip(f"{GALAXY['readme']} is not written yet")
    assert GALAXY["readme"] in members


def test_every_module_of_the_tree_is_shipped(members: list[str]) -> None:
    shipped = {
        pathlib.PurePosixPath(member).stem
        for member in members
        if member.startswith("plugins/modules/") and member.endswith((".py", ".ps1")) and not member.endswith("__init__.py")
    }
    assert shipped == module_names(ROOT / "plugins")


def test_files_json_lists_every_shipped_file_with_a_checksum(artifact: pathlib.Path, members: list[str]) -> None:
    files = json.loads(read_member(artifact, "FILES.json"))["files"]
    listed = {entry["name"] for entry in files if entry["ftype"] == "file"}
    shipped = {member for member in members if member not in ("MANIFEST.json", "FILES.json")}
    with tarfile.open(artifact) as archive:
        shipped_files = {member for member in shipped if archive.getmember(member).isfile()}
    assert shipped_files == listed
    assert all(entry["chksum_sha256"] for entry in files if entry["ftype"] == "file")


def test_action_group_covers_every_module(artifact: pathlib.Path) -> None:
    runtime = yaml.safe_load(read_member(artifact, "meta/runtime.yml"))
    # Entries that are mappings carry group metadata (extend_group), not module names.
    group = [entry for entry in runtime["action_groups"]["snapshots"] or [] if isinstance(entry, str)]
    assert sorted(group) == sorted(module_names(ROOT / "plugins"))


def test_requires_ansible_names_the_oldest_tested_release(artifact: pathlib.Path) -> None:
    runtime = yaml.safe_load(read_member(artifact, "meta/runtime.yml"))
    assert runtime["requires_ansible"] == ">=2.16.0"
    pins = (ROOT / "tests" / "requirements-min.txt").read_text(encoding="utf-8")
    assert "ansible-core==2.16." in pins


def test_ansible_doc_lists_exactly_the_shipped_modules(installed: dict[str, str], tmp_path: pathlib.Path) -> None:
    result = run([str(BIN / "ansible-doc"), "-t", "module", "--list", "--json", FQCN], tmp_path, installed)
    assert result.returncode == 0, result.stdout + result.stderr
    listed = set(json.loads(result.stdout or "{}"))
    assert listed == {f"{FQCN}.{name}" for name in module_names(ROOT / "plugins")}


@pytest.fixture(name="rendered", scope="module")
def fixture_rendered(installed: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess]:
    """ansible-doc run once over every module (starting it costs seconds), as JSON and as text."""
    names = [f"{FQCN}.{module}" for module in sorted(module_names(ROOT / "plugins"))]
    cwd = tmp_path_factory.mktemp("ansible-doc")
    return {
        output: run([str(BIN / "ansible-doc"), "-t", "module"] + flags + names, cwd, installed)
        for output, flags in (("json", ["--json"]), ("text", []))
    }


@pytest.mark.parametrize("module", sorted(module_names(ROOT / "plugins")))
def test_ansible_doc_renders_module(
    rendered: dict[str, subprocess.CompletedProcess], installed: dict[str, str], tmp_path: pathlib.Path, module: str,
) -> None:
    name = f"{FQCN}.{module}"
    if any(result.returncode for result in rendered.values()):
        # One broken module fails the whole batch; ask about this module alone to tell which.
        rendered = {
            output: run([str(BIN / "ansible-doc"), "-t", "module"] + flags + [name], tmp_path, installed)
            for output, flags in (("json", ["--json"]), ("text", []))
        }
    as_json, as_text = rendered["json"], rendered["text"]
    assert as_json.returncode == 0 and as_text.returncode == 0, as_json.stderr + as_text.stderr
    assert [line for line in (as_json.stderr + as_text.stderr).splitlines() if module in line] == []
    docs = json.loads(as_json.stdout)
    assert docs[name]["doc"]["module"] == module
    assert docs[name]["doc"]["short_description"]
    assert name in as_text.stdout


def test_ansible_doc_succeeds_for_all_modules(rendered: dict[str, subprocess.CompletedProcess]) -> None:
    for result in rendered.values():
        assert result.returncode == 0, result.stderr
        assert "WARNING" not in result.stderr and "ERROR" not in result.stderr, result.stderr


def test_execution_environment_sees_the_collection_requirements(installed: dict[str, str], tmp_path: pathlib.Path) -> None:
    collections = installed["ANSIBLE_COLLECTIONS_PATH"]
    result = run([str(BIN / "ansible-builder"), "introspect", "--sanitize", collections], tmp_path, installed)
    assert result.returncode == 0, result.stdout + result.stderr
    found = yaml.safe_load(result.stdout) or {}
    ours = {line.split("#", 1)[0].strip() for line in found.get("python", []) if f"from collection {FQCN}" in line}
    wanted = {
        line.strip()
        for line in (ROOT / "meta" / "ee-requirements.txt").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert wanted and ours == wanted
