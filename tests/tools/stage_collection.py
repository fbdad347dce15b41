"""Lay the collection out under an ``ansible_collections`` tree.

``link DEST``
    ``DEST/ansible_collections/<namespace>/<name>`` becomes a symbolic link to the
    working tree, so playbooks, ansible-doc and unit tests always see the current files.
``copy DEST``
    ``DEST/ansible_collections/<namespace>/<name>`` becomes a fresh copy of the files git
    knows about (tracked, or untracked and not ignored), which is exactly what
    ``ansible-test`` would look at in a clone. The collections the current Python has in
    its site-packages that this collection depends on are copied next to it, because
    ansible-test's import test only sees the collection root.
"""

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Used only when the tree is not a git work tree (an unpacked source archive).
UNVERSIONED_SKIP_DIRS = frozenset((".git", "build", "__pycache__", ".pytest_cache", ".ansible", "output", "htmlcov"))


def generated(relative: str) -> bool:
    """The environments and build outputs that make creates, even if .gitignore misses them."""
    top = relative.split("/", 1)[0]
    return top == "build" or top.startswith(".venv")


def collection_identity() -> tuple[str, str, dict]:
    with open(os.path.join(ROOT, "galaxy.yml"), encoding="utf-8") as handle:
        galaxy = yaml.safe_load(handle)
    return galaxy["namespace"], galaxy["name"], galaxy.get("dependencies") or {}


def known_files() -> list[str]:
    try:
        listing = subprocess.run(
            ["git", "-C", ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            check=True, capture_output=True,
        ).stdout.decode("utf-8")
    except (OSError, subprocess.CalledProcessError):
        return unversioned_files()
    # A tracked file deleted from the work tree is still listed by --cached.
    return sorted(
        path for path in set(listing.split("\0"))
        if path and not generated(path) and os.path.isfile(os.path.join(ROOT, path))
    )


def unversioned_files() -> list[str]:
    files = []
    for directory, subdirectories, names in os.walk(ROOT):
        subdirectories[:] = [name for name in subdirectories if name not in UNVERSIONED_SKIP_DIRS]
        for name in names:
            relative = os.path.relpath(os.path.join(directory, name), ROOT)
            if not name.endswith((".pyc", ".pyo")) and not generated(relative):
                files.append(relative)
    return sorted(files)


def reset(path: str) -> None:
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)


def link(destination: str) -> None:
    namespace, name, _dependencies = collection_identity()
    target = os.path.join(destination, "ansible_collections", namespace, name)
    if os.path.islink(target) and os.path.realpath(target) == os.path.realpath(ROOT):
        return
    reset(target)
    os.symlink(os.path.relpath(ROOT, os.path.dirname(target)), target)


def copy(destination: str) -> None:
    namespace, name, dependencies = collection_identity()
    target = os.path.join(destination, "ansible_collections", namespace, name)
    reset(target)
    for relative in known_files():
        source = os.path.join(ROOT, relative)
        os.makedirs(os.path.dirname(os.path.join(target, relative)), exist_ok=True)
        shutil.copy2(source, os.path.join(target, relative), follow_symlinks=False)
    for dependency in dependencies:
        copy_installed_collection(dependency, destination)


def copy_installed_collection(full_name: str, destination: str) -> None:
    spec = importlib.util.find_spec("ansible_collections")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("stage_collection: this Python has no ansible_collections package (install the 'ansible' package)")
    relative = os.path.join(*full_name.split("."))
    for location in spec.submodule_search_locations:
        source = os.path.join(location, relative)
        if os.path.isdir(source):
            target = os.path.join(destination, "ansible_collections", relative)
            reset(target)
            shutil.copytree(source, target, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "tests"))
            return
    raise SystemExit(f"stage_collection: collection {full_name} is not installed for {sys.executable}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("link", "copy"))
    parser.add_argument("destination")
    arguments = parser.parse_args()
    destination = os.path.abspath(arguments.destination)
    if arguments.mode == "link":
        link(destination)
    else:
        copy(destination)
    return 0


if __name__ == "__main__":
    sys.exit(main())
