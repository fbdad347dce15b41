"""The hygiene check of `make test`: what a run left on this machine outside its own tree.

    hygiene.py snapshot FILE ROOT   record the machine as it is before the run
    hygiene.py check FILE ROOT      compare after the run; exit 1 on any finding

Several clones of the project may run their tests on one machine at the same time, so the
check judges only what belongs to ROOT's run:
- a collection under ~/.ansible/collections/ansible_collections/appconsistent that was not
  there (or not as it was) before the run;
- new entries in /tmp, /run and /etc below a directory entry of theirs whose name starts
  with "appconsistent" (the names this project's code writes outside the tree; the test stages keep everything else under
  ROOT/build). Other new entries are listed as "not judged": other work on the machine makes
  them too;
- loop devices backed by a file under ROOT or under such an entry;
- mounts whose target or source lies under ROOT or under such an entry;
- network namespaces named "appconsistent*" that were not there before;
- processes whose command line names a path under ROOT or under such an entry, or whose
  working directory is under ROOT, other than this check and the processes that started it.
Prints each finding, or "clean".
"""

import json
import os
import re
import subprocess
import sys
import time

# The places outside the tree that tests might write to; a test of this check watches its own.
WATCHED = tuple(os.environ.get("APPCONSISTENT_HYGIENE_WATCH", "/tmp:/run:/etc").split(":"))
OURS = "appconsistent"
# Where the mounts are read from; a test of this check gives a mountinfo of its own.
MOUNTINFO = os.environ.get("APPCONSISTENT_HYGIENE_MOUNTINFO", "/proc/self/mountinfo")


def collection_dir() -> str:
    return os.path.expanduser("~/.ansible/collections/ansible_collections/appconsistent")


def tree_stamp(path: str) -> float | None:
    """The newest mtime in a directory tree, or None when it does not exist."""
    if not os.path.lexists(path):
        return None
    newest = os.lstat(path).st_mtime
    for base, dirs, files in os.walk(path):
        for name in dirs + files:
            try:
                newest = max(newest, os.lstat(os.path.join(base, name)).st_mtime)
            except OSError:
                pass
    return newest


def list_entries(top: str, boundaries: set[str] | None = None) -> set[str]:
    """Every path under top, not entering other mounts (loop mounts, /proc-like trees).

    What bounds the walk is a mount point as mountinfo lists it, not a change of st_dev: every btrfs subvolume has
    a device number of its own on one file system, so a walk by st_dev would skip what a subvolume holds.
    """
    paths: set[str] = set()
    if not os.path.isdir(top) or os.path.islink(top):
        return paths
    if boundaries is None:
        boundaries = {target for target, _source, _device in mountinfo()}
    # mountinfo names mount points by their real path; the walk keeps the names below top as given.
    real_top = os.path.realpath(top)
    for base, dirs, files in os.walk(top):
        kept = []
        for name in dirs:
            path = os.path.join(base, name)
            paths.add(path)
            if real_top + path[len(top):] not in boundaries:
                kept.append(name)
        dirs[:] = kept
        paths.update(os.path.join(base, name) for name in files)
    return paths


def netns() -> set[str]:
    try:
        return set(os.listdir("/run/netns"))
    except OSError:
        return set()


def snapshot(path: str) -> None:
    state = {
        "time": time.time(),
        "collection": tree_stamp(collection_dir()),
        "entries": sorted(set().union(*(list_entries(top) for top in WATCHED))),
        "netns": sorted(netns()),
    }
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(state, handle)


def under(path: str, parents) -> bool:
    return any(path == parent or path.startswith(parent.rstrip("/") + "/") for parent in parents)


def named_ours(path: str) -> bool:
    """True for a path whose first part below /tmp, /run or /etc carries the project's name."""
    for top in WATCHED:
        if path.startswith(top + "/"):
            return path[len(top) + 1:].split("/", 1)[0].startswith(OURS)
    return False


def topmost(paths: set[str]) -> list[str]:
    """The paths whose parent is not in the set itself (a new directory, not each file in it)."""
    return sorted(path for path in paths if os.path.dirname(path) not in paths)


def loop_devices() -> list[tuple[str, str]]:
    result = subprocess.run(["losetup", "--list", "--json", "--output", "NAME,BACK-FILE"],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0 or not result.stdout.strip():
        return []
    return [(dev["name"], (dev.get("back-file") or "").removesuffix(" (deleted)"))
            for dev in json.loads(result.stdout).get("loopdevices", [])]


def unescape(field: bytes) -> str:
    """A mountinfo field as a path: space, tab, newline and backslash are written as octal escapes of its bytes."""
    return os.fsdecode(re.sub(rb"\\([0-7]{3})", lambda match: bytes([int(match.group(1), 8)]), field))


def mountinfo() -> list[tuple[str, str, str]]:
    """(mount point, source, MAJ:MIN of the file system) of every mount this process sees."""
    found = []
    with open(MOUNTINFO, "rb") as handle:
        for line in handle:
            fields = line.split()
            separator = fields.index(b"-")
            found.append((unescape(fields[4]), unescape(fields[separator + 2]), fields[2].decode()))
    return found


def mounts() -> list[tuple[str, str]]:
    return [(target, source) for target, source, _device in mountinfo()]


def ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
                pid = int(handle.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            break
    return pids


def processes(root: str, places) -> list[str]:
    found, mine = [], ancestors()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in mine:
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as handle:
                argv = handle.read().decode(errors="replace").split("\0")
            cwd = os.readlink(f"/proc/{name}/cwd")
        except OSError:
            continue
        if not any(argv):
            continue  # a zombie or a kernel thread
        if under(cwd, [root]) or any(place + "/" in arg or arg == place for arg in argv for place in places):
            found.append(f"process {name} (cwd {cwd}): {' '.join(argv).strip()[:200]}")
    return found


def check(path: str, root: str) -> int:
    with open(path, encoding="utf-8") as handle:
        before = json.load(handle)
    findings, notes = [], []

    stamp = tree_stamp(collection_dir())
    if stamp is not None and (before["collection"] is None or stamp > before["collection"]):
        findings.append(f"collection installed outside the tree: {collection_dir()}")

    new = set().union(*(list_entries(top) for top in WATCHED)) - set(before["entries"])
    ours = {entry for entry in new if named_ours(entry)}
    findings += [f"left outside the tree: {entry}" for entry in topmost(ours)]
    notes += [f"new on this machine, not judged: {entry}" for entry in topmost(new - ours)]

    places = [root] + sorted(ours)
    findings += [f"loop device {device} backed by {backing}"
                 for device, backing in loop_devices() if backing and under(backing, places)]
    findings += [f"mount {target} (from {source})"
                 for target, source in mounts() if under(target, places) or under(source, places)]
    findings += [f"network namespace {name}" for name in sorted(netns() - set(before["netns"]))
                 if name.startswith(OURS)]
    findings += processes(root, places)

    for note in notes:
        print(f"[hygiene] note: {note}")
    for finding in findings:
        print(f"[hygiene] FOUND {finding}")
    if not findings:
        print(f"[hygiene] clean: nothing of {root} left outside it")
    return 1 if findings else 0


def main() -> int:
    if len(sys.argv) != 4 or sys.argv[1] not in ("snapshot", "check"):
        print(__doc__.split("\n\n", 2)[1], file=sys.stderr)
        return 2
    action, path, root = sys.argv[1], sys.argv[2], os.path.realpath(sys.argv[3])
    if action == "snapshot":
        snapshot(path)
        return 0
    return check(path, root)


if __name__ == "__main__":
    sys.exit(main())
