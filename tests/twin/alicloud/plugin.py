"""The ``app-snapshot-plugin`` / ``app-snapshot-plugin-win`` Cloud Assistant plug-ins, emulated.

On ``local`` instances every instance-side step is real: the scripts' ownership and mode are
checked with ``stat``, the scripts run, the instance's mounts are frozen with ``fsfreeze`` under a
detached watchdog that thaws them after ``TimeoutInSeconds`` whatever happens, and the group's
snapshots are block copies taken while the filesystems are frozen.  On simulated instances the
same sequence runs against the instance's faults.  The exit codes follow the table in the twin's
README (the reading of Alibaba's table that the collection uses too).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import stat
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from twin.core.runner import run_local

from .api import AliError
from .ecs import check_name

PLUGINS = ("app-snapshot-plugin", "app-snapshot-plugin-win")
LINUX_PARAMS = {"RamRoleName": "str", "EnableFsFreeze": "bool", "TimeoutInSeconds": "int", "ScriptTimeoutInSeconds": "int",
                "PreScriptPath": "str", "PostScriptPath": "str", "ExcludeDiskId": "list", "Name": "str", "Description": "str"}
WINDOWS_PARAMS = {"RamRoleName": "str", "EnableWriters": "bool", "ExcludeDiskId": "list", "Name": "str", "Description": "str"}
REQUIRED = ("RamRoleName", "Name")
DEFAULTS = {"EnableFsFreeze": True, "TimeoutInSeconds": 30, "ScriptTimeoutInSeconds": 1800, "EnableWriters": True,
            "ExcludeDiskId": [], "Description": None, "PreScriptPath": None, "PostScriptPath": None}
SUCCESS_MESSAGE = "Finish whole Processes of Snapshot successfully"
NEVER_FROZEN = ("/", "/boot")

# Exit code -> meaning (Alibaba's table as the twin reads it; see README.md).
EXIT_CODES = {
    0: "the application-consistent (or file-system-consistent) snapshots were created",
    1: "a condition is not met: invalid snapshot name, RamRoleName is not the role attached to the instance, "
       "unsupported operating system, no network path to the API, or every ESSD disk excluded",
    2: "the --params string is malformed: unknown, repeated or missing parameter, or a value of the wrong type",
    3: "no ESSD disk (without multi-attach) is attached, or the RAM role lacks permission for the snapshot APIs",
    4: "the snapshot-consistent group cannot be created (CreateSnapshotGroup was rejected)",
    5: "the snapshot-consistent group ended in an unexpected state",
    6: "the snapshot-consistent group did not complete in time",
    7: "a disk snapshot of the group ended in an unexpected state (failed)",
    8: "the consistency tags cannot be added to the snapshots",
    9: "the prescript failed (non-zero exit or script timeout)",
    10: "the postscript failed (non-zero exit or script timeout)",
    11: "I/O could not be suspended: freeze failed, a path is not a mount point, or the freeze timeout "
        "(TimeoutInSeconds) expired before the group was created",
    12: "I/O could not be resumed: thaw failed",
    13: "no RAM role is attached to the instance",
    14: "the snapshot quota of a disk is exhausted",
    15: "a snapshot of the group is not available after the group completed",
    16: "a previous snapshot of a disk is still being created and instant access is disabled",
    255: "an unknown error occurred",
}


class PluginExit(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class PluginCommand:
    plugin: str
    raw_params: Optional[str]
    params: Dict[str, Any] = field(default_factory=dict)
    error: Optional[str] = None


def parse_plugin_command(content: str) -> Optional[PluginCommand]:
    """The plug-in call in a command's content, or None when the content is not one plug-in call."""
    lines = [line.strip() for line in content.splitlines() if line.strip() and not line.strip().startswith(("#", "rem ", "REM "))]
    if len(lines) != 1 or not re.match(r"^(\S*/)?acs-plugin-manager(\.exe)?\s", lines[0] + " "):
        return None
    try:
        argv = shlex.split(lines[0])
    except ValueError as exc:
        return PluginCommand(plugin="", raw_params=None, error=f"cannot parse the command line: {exc}")
    plugin, raw, execute = "", None, False
    args = iter(argv[1:])
    for arg in args:
        if arg in ("--exec", "-e"):
            execute = True
        elif arg in ("--plugin", "-P"):
            plugin = next(args, "")
        elif arg.startswith("--plugin="):
            plugin = arg.split("=", 1)[1]
        elif arg.startswith("--params="):
            raw = arg.split("=", 1)[1]
        elif arg in ("--params", "-p"):
            raw = next(args, "")
        else:
            return PluginCommand(plugin=plugin, raw_params=raw, error=f"unknown option {arg}")
    cmd = PluginCommand(plugin=plugin, raw_params=raw)
    if not execute:
        cmd.error = "--exec is required"
    elif plugin not in PLUGINS:
        cmd.error = f"plugin {plugin!r} not found"
    else:
        try:
            cmd.params = parse_params(raw or "", windows=plugin.endswith("-win"))
        except ValueError as exc:
            cmd.error = str(exc)
    return cmd


def parse_params(raw: str, windows: bool = False) -> Dict[str, Any]:
    """``-Key=Value,-Key=Value`` (quotes already removed by the shell); raises ValueError when malformed."""
    spec = WINDOWS_PARAMS if windows else LINUX_PARAMS
    values: Dict[str, Any] = {}
    pieces = re.split(r",(?=-[A-Za-z]+=)", raw.strip()) if raw.strip() else []
    for piece in pieces:
        match = re.match(r"^-([A-Za-z]+)=(.*)$", piece, re.S)
        if not match:
            raise ValueError(f"malformed parameter {piece!r}: expected -Name=Value")
        name, value = match.group(1), match.group(2).strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        if name not in spec:
            raise ValueError(f"unknown parameter {name}")
        if name in values:
            raise ValueError(f"parameter {name} given twice")
        kind = spec[name]
        if kind == "bool":
            if value.lower() not in ("true", "false"):
                raise ValueError(f"{name} must be true or false, got {value!r}")
            values[name] = value.lower() == "true"
        elif kind == "int":
            if not re.fullmatch(r"\d+", value) or int(value) <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
            values[name] = int(value)
        elif kind == "list":
            items = [v.strip() for v in value.split(",") if v.strip()]
            for item in items:
                if not re.fullmatch(r"d-[A-Za-z0-9]+", item):
                    raise ValueError(f"{name}: {item!r} is not a disk ID")
            values[name] = items
        else:
            values[name] = value
    for name in REQUIRED:
        if not values.get(name):
            raise ValueError(f"parameter {name} is required")
    out = {k: v for k, v in DEFAULTS.items() if k in spec}
    out.update(values)
    return out


def script_problem(path: Optional[str]) -> Optional[str]:
    """Why a script may not run (None when it may): a regular file owned by root:root with mode 0700."""
    if not path:
        return "not configured"
    try:
        info = os.lstat(path)
    except OSError as exc:
        return f"{path}: {exc.strerror}"
    if not stat.S_ISREG(info.st_mode):
        return f"{path}: not a regular file"
    if info.st_uid != 0 or info.st_gid != 0:
        return f"{path}: not owned by root:root"
    if stat.S_IMODE(info.st_mode) != 0o700:
        return f"{path}: mode {stat.S_IMODE(info.st_mode):04o}, expected 0700"
    return None


class PluginRun:
    """One run of the plug-in on one instance."""

    def __init__(self, cloud: Any, inst: Any, invocation: Any, record: Any, command: PluginCommand) -> None:
        self.cloud = cloud
        self.inst = inst
        self.invocation = invocation
        self.record = record
        self.command = command
        self.params = command.params
        self.faults = cloud.ecs.instance_faults(inst)
        self.local = inst.execution == "local" and inst.os_type == "linux"
        self.log: List[str] = []
        self.stop_requested = False
        self.watchdog: Optional[subprocess.Popen] = None
        self.frozen: List[str] = []
        self.group_id = ""

    # ------------------------------------------------------------------ plumbing
    def step(self, name: str, detail: str = "") -> None:
        self.record.trace.append((name, time.time()))
        self.log.append(f"[INFO] {name}{': ' + detail if detail else ''}")

    def api(self, action: str, params: Dict[str, str]) -> Dict[str, Any]:
        if self.faults.get("network_unreachable"):
            raise PluginExit(1, "cannot reach the ECS endpoint from the instance (network connectivity)")
        return self.cloud.call(action, dict(params, RegionId=self.inst.region), principal=f"role:{self.inst.ram_role}",
                               instance=self.inst)

    def execute(self) -> Tuple[int, str]:
        key = f"{self.invocation.id}/{self.inst.id}"
        self.cloud.assistant.running[key] = self
        try:
            self._run()
            code = 0
        except PluginExit as exc:
            code = self._fail(exc.code, exc.message)
        except Exception as exc:  # pylint: disable=broad-except
            code = self._fail(255, f"unknown error: {type(exc).__name__}: {exc}")
        finally:
            self._thaw_everything()
            self.cloud.assistant.running.pop(key, None)
        return code, "\n".join(self.log) + "\n"

    def _fail(self, code: int, message: str) -> int:
        self.log.append(f"[ERROR] {message}")
        group = f'[snapshotgroup="{self.group_id}"]' if self.group_id else ""
        self.log.append(f'{group}[message="{message}"]')
        return code

    # ------------------------------------------------------------------ the plug-in
    def _run(self) -> None:
        cmd = self.command
        windows = cmd.plugin.endswith("-win")
        self.step("start", f"{cmd.plugin} (twin) on {self.inst.id}")
        if cmd.error:
            if cmd.plugin and cmd.plugin not in PLUGINS:
                raise PluginExit(255, cmd.error)
            raise PluginExit(2, f"invalid --params: {cmd.error}")
        if windows != (self.inst.os_type == "windows"):
            raise PluginExit(1, f"{cmd.plugin} does not support the operating system of the instance")
        forced = self.faults.get("plugin_exit_code")
        if forced is not None:
            raise PluginExit(int(forced), f"injected: {EXIT_CODES.get(int(forced), 'unknown error')}")
        if self.faults.get("plugin_crash"):
            raise RuntimeError("injected plug-in crash")
        # 1. RAM role and environment
        if not self.inst.ram_role:
            raise PluginExit(13, "No RAM role is attached to the instance")
        if self.params["RamRoleName"] != self.inst.ram_role:
            raise PluginExit(1, f"the RAM role {self.params['RamRoleName']} is not attached to the instance "
                                f"(attached: {self.inst.ram_role}); cannot get its credentials")
        if self.faults.get("unsupported_os"):
            raise PluginExit(1, "the operating system of the instance is not supported")
        try:
            check_name("Name", self.params["Name"])
        except AliError as exc:
            raise PluginExit(1, f"invalid snapshot name: {exc.message}") from None
        # 2. disks
        try:
            disks = self.api("DescribeDisks", {"InstanceId": self.inst.id, "MaxResults": "500"})["Disks"]["Disk"]
        except AliError as exc:
            if exc.status == 403:
                raise PluginExit(3, f"the RAM role has no permission to call DescribeDisks: {exc.code}") from None
            raise PluginExit(1, f"DescribeDisks failed: {exc.code}") from None
        essd = [d for d in disks if d["Category"] in ("cloud_essd", "cloud_auto", "cloud_essd_entry") and d["MultiAttach"] != "Enabled"]
        if not essd:
            raise PluginExit(3, "No ESSD disks are attached to the instance")
        chosen = [d["DiskId"] for d in essd if d["DiskId"] not in self.params["ExcludeDiskId"]]
        if not chosen:
            raise PluginExit(1, "All attached ESSD Disks were excluded")
        self.step("disks", ",".join(chosen))
        # 3. consistency mode: scripts (Linux) or VSS writers (Windows)
        if windows:
            app = bool(self.params["EnableWriters"]) and self.inst.vss_components
            scripts = False
        else:
            problem = self._scripts_problem()
            scripts = problem is None
            app = scripts
            if not scripts:
                self.step("scripts skipped", f"{problem}; taking file-system-consistent snapshots")
        # 4. prescript
        if scripts:
            self._script("prescript", self.params["PreScriptPath"], 9)
        # 5. freeze, group, thaw
        group_id, create_error = self._frozen_group(chosen, windows)
        # 6. postscript
        if scripts:
            self._script("postscript", self.params["PostScriptPath"], 10)
        if create_error is not None:
            raise create_error
        # 7. wait for the group, then tag
        self._wait_group(group_id)
        # Older plug-in versions write APPConsistent; the fault lets tests check readers match keys case-insensitively.
        tag = str(self.faults.get("app_consistent_tag_key", "AppConsistent")) if app else "FsConsistent"
        self._tag(group_id, tag)
        self.log.append(f'[snapshotgroup="{group_id}"][message="{SUCCESS_MESSAGE}"]')

    def _scripts_problem(self) -> Optional[str]:
        pre, post = self.params.get("PreScriptPath"), self.params.get("PostScriptPath")
        if not pre or not post:
            return "Pre/Post-Script not configured"
        if self.local:
            for path in (pre, post):
                problem = script_problem(path)
                if problem:
                    return f"Pre/Post-Script have no Expected Permission ({problem})"
            return None
        if self.faults.get("scripts_invalid"):
            return "Pre/Post-Script have no Expected Permission (injected)"
        return None

    def _script(self, which: str, path: str, code: int) -> None:
        self.step(which, path)
        timeout = self.params["ScriptTimeoutInSeconds"]
        if self.local:
            result = self.cloud.assistant.run_tracked(shlex.quote(path), self.record, timeout, self.cloud.assistant.instance_env(self.inst))
            for line in (result.stdout + result.stderr).splitlines():
                self.log.append(f"[{which}] {line}")
            if result.timed_out:
                raise PluginExit(code, f"the {which} {path} timed out after {timeout} s")
            if result.exit_code != 0:
                raise PluginExit(code, f"the {which} {path} exited with {result.exit_code}")
        elif self.faults.get(f"{which}_fail"):
            raise PluginExit(code, f"the {which} {path} exited with 1 (injected)")
        self.step(f"{which} done")

    def _frozen_group(self, disk_ids: List[str], windows: bool) -> Tuple[str, Optional[PluginExit]]:
        """Freeze, create the group, thaw; returns the group id and the error to report after the postscript."""
        freeze = (not windows and self.params["EnableFsFreeze"]) or windows
        timeout = self.params.get("TimeoutInSeconds", 30)
        group_id, create_error = "", None
        if freeze:
            try:
                self._freeze(timeout, windows)
            except PluginExit as exc:
                return group_id, exc
        try:
            params = {"InstanceId": self.inst.id, "Name": self.params["Name"]}
            if self.params.get("Description"):
                params["Description"] = self.params["Description"]
            for n, disk_id in enumerate(disk_ids, start=1):
                params[f"DiskId.{n}"] = disk_id
            group_id = self.api("CreateSnapshotGroup", params)["SnapshotGroupId"]
            self.group_id = group_id
            self.step("snapshot group created", group_id)
        except AliError as exc:
            create_error = PluginExit(self._create_code(exc), f"CreateSnapshotGroup failed: {exc.code}: {exc.message}")
        if freeze:
            thaw_error = self._thaw(timeout, windows)
            if create_error is None and thaw_error is not None:
                create_error = thaw_error
        return group_id, create_error

    @staticmethod
    def _create_code(exc: AliError) -> int:
        if exc.code.startswith("QuotaExceed"):
            return 14
        if exc.code == "IncorrectDiskStatus.CreatingSnapshot":
            return 16
        if exc.code.startswith("Forbidden"):
            return 3
        if exc.status >= 500:
            return 255
        return 4

    # ------------------------------------------------------------------ freeze and thaw
    def _mounts(self) -> List[str]:
        with self.cloud.ecs.lock:
            return [d.mount for d in self.cloud.ecs.disks.values() if d.instance_id == self.inst.id and d.mount]

    def _freeze(self, timeout: int, windows: bool) -> None:
        if windows:
            if self.faults.get("vss_writer_failure"):
                raise PluginExit(11, "VSS writers failed to freeze I/O")
            self.step("frozen", "VSS")
            return
        if not self.local:
            if self.faults.get("freeze_fail"):
                raise PluginExit(11, "fsfreeze failed (injected)")
            self.step("frozen", "simulated")
            return
        mounts = self._mounts()
        for mount in mounts:
            if os.path.realpath(mount) in NEVER_FROZEN:
                raise PluginExit(11, f"refusing to freeze {mount}")
            if not os.path.ismount(mount):
                raise PluginExit(11, f"{mount} is not a mount point")
        if not mounts:
            self.step("frozen", "no data mounts")
            return
        # The watchdog is armed before the first freeze and lives in its own session, so the
        # filesystems are thawed after the timeout even if this process dies.
        self.watchdog = subprocess.Popen(  # pylint: disable=consider-using-with
            ["sh", "-c", 'sleep "$0"; for m in "$@"; do fsfreeze -u "$m"; done', str(timeout)] + mounts,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        for mount in mounts:
            result = run_local(f"fsfreeze -f {shlex.quote(mount)}", "bash", timeout=max(5, timeout))
            if result.exit_code != 0:
                self._thaw_everything()
                raise PluginExit(11, f"fsfreeze -f {mount} failed: {result.stderr.strip()}")
            self.frozen.append(mount)
        self.step("frozen", ",".join(mounts))

    def _watchdog_fired(self) -> bool:
        return self.watchdog is not None and self.watchdog.poll() is not None

    def _thaw(self, timeout: int, windows: bool) -> Optional[PluginExit]:
        if windows or not self.local:
            if self.faults.get("freeze_timeout"):
                self.step("auto-thawed")
                return PluginExit(11, f"Timedout to receive Thaw from parent process: I/O was resumed after {timeout} s, before the group was created")
            if self.faults.get("thaw_fail"):
                return PluginExit(12, "fsfreeze -u failed (injected)")
            self.step("thawed")
            return None
        if not self.frozen:
            self.step("thawed")
            return None
        fired = self._watchdog_fired()
        self.step("thawing", ",".join(self.frozen))
        failed = []
        for mount in list(self.frozen):
            result = run_local(f"fsfreeze -u {shlex.quote(mount)}", "bash", timeout=30)
            if result.exit_code != 0:
                failed.append(f"{mount}: {result.stderr.strip()}")
        fired = fired or (bool(failed) and self._watchdog_fired())
        self._stop_watchdog()
        self.frozen = []
        if fired:
            self.step("auto-thawed")
            return PluginExit(11, f"Timedout to receive Thaw from parent process: the watchdog thawed after {timeout} s, "
                                  "before the group was created")
        self.step("thawed")
        if failed:
            return PluginExit(12, f"fsfreeze -u failed: {'; '.join(failed)}")
        return None

    def _stop_watchdog(self) -> None:
        if self.watchdog is not None:
            if self.watchdog.poll() is None:
                try:
                    os.killpg(self.watchdog.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.watchdog.wait()
            self.watchdog = None

    def _thaw_everything(self) -> None:
        for mount in self.frozen:
            run_local(f"fsfreeze -u {shlex.quote(mount)}", "bash", timeout=30)
        self.frozen = []
        self._stop_watchdog()

    # ------------------------------------------------------------------ completion
    def _wait_group(self, group_id: str) -> None:
        limit = float(self.faults.get("group_wait_timeout", 1800))
        interval = max(0.02, min(2.0, self.cloud.latency.transition("snapshot_group_complete") / 20))
        deadline = time.time() + limit
        while True:
            try:
                groups = self.api("DescribeSnapshotGroups", {"SnapshotGroupId.1": group_id})["SnapshotGroups"]["SnapshotGroup"]
            except AliError as exc:
                if exc.code.startswith("Throttling"):
                    time.sleep(interval)
                    continue
                raise PluginExit(5, f"DescribeSnapshotGroups failed: {exc.code}") from None
            if not groups:
                raise PluginExit(5, f"the snapshot-consistent group {group_id} disappeared")
            group = groups[0]
            snaps = group["Snapshots"]["Snapshot"]
            if group["Status"] == "accomplished":
                missing = [s["SnapshotId"] for s in snaps if not s["Available"]]
                if missing:
                    raise PluginExit(15, f"snapshots not available: {','.join(missing)}")
                self.step("snapshot group accomplished", group_id)
                return
            if group["Status"] == "failed":
                bad = [s["SnapshotId"] for s in snaps if s["Progress"] != "100%" or not s["Available"]]
                if bad:
                    raise PluginExit(7, f"snapshots in an unexpected state: {','.join(bad)}")
                raise PluginExit(5, f"the snapshot-consistent group {group_id} failed")
            if self.stop_requested:
                raise PluginExit(255, "stopped")
            if time.time() >= deadline:
                raise PluginExit(6, f"the snapshot-consistent group {group_id} did not complete within {limit:g} s")
            time.sleep(interval)

    def _tag(self, group_id: str, tag: str) -> None:
        if self.faults.get("tag_error"):
            raise PluginExit(8, "TagResources failed (injected)")
        with self.cloud.ecs.lock:
            snapshot_ids = list(self.cloud.ecs.groups[group_id].snapshot_ids)
        params = {"ResourceType": "snapshot", "Tag.1.Key": tag, "Tag.1.Value": "True"}
        for n, snap_id in enumerate(snapshot_ids, start=1):
            params[f"ResourceId.{n}"] = snap_id
        try:
            self.api("TagResources", params)
        except AliError as exc:
            raise PluginExit(8, f"TagResources failed: {exc.code}") from None
        self.step("tagged", f"{tag}:True")
