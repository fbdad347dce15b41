"""The freeze helper and the offline unmount/remount scripts, answered for simulated Linux instances.

A simulated instance has no filesystems to freeze, yet the collection drives it with the same agent
commands as a real one: ``appconsistent-freeze freeze|thaw|run|status ...`` and the offline
``unmount``/``remount`` scripts.  :class:`HelperSimulator` recognises those commands in the script
text, keeps each instance's runs (frozen mounts, watchdog deadline) and answers with the one-line
JSON report and exit code the real helper would give (its contract is the consistency_scripts
role's README).  Time is modelled, not slept: a run records when it *will* be frozen and when its
watchdog fires, and every later command sees the state for the moment it arrives.

Per-instance faults steer the outcome: ``scripts_invalid``, ``scripts_absent``, ``prescript_fail``
(201), ``app_not_ready`` (206), ``freeze_fail`` (209), ``postscript_fail`` (202), ``thaw_fail`` (211),
``helper_missing`` (127) and, for the offline scripts, ``unmount_busy`` (3) and ``remount_fail`` (209).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import random
import re
import shlex
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

HELPER_NAME = "appconsistent-freeze"
HELPER_VERSION = "1.2.2"
DEFAULT_PRESCRIPT = "/usr/local/lib/appconsistent/prescript.sh"
DEFAULT_POSTSCRIPT = "/usr/local/lib/appconsistent/postscript.sh"
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+\-]{0,127}$")
OFFLINE_STATE = "/run/appconsistent/offline/"
# Fraction of the modelled freeze time spent in the prescript (the rest is sync + fsfreeze -f).
SCRIPT_SHARE = 0.6
MIN_STEP = 0.0005
# fsfreeze -u (FITHAW) returns at once on a real kernel: the thaw is modelled as this much per frozen mount,
# and the rest of thaw_duration is the postscript, which runs after the filesystems are thawed.
FITHAW_SECONDS = 0.005

STATUS_WORDS = {2: "usage_error", 201: "prescript_failed", 202: "postscript_failed", 203: "auto_thawed",
                204: "already_frozen", 205: "not_frozen", 206: "application_not_ready", 207: "refused",
                208: "not_root", 209: "freeze_failed", 210: "command_failed", 211: "thaw_failed",
                212: "environment_error"}
ACTIVE = ("freezing", "frozen")

# (exit code, stdout, stderr) of the command that ``run`` starts while frozen
CommandResult = Tuple[int, str, str]


class UsageError(Exception):
    pass


@dataclass
class HelperCall:
    """One recognised helper invocation."""

    action: str
    helper: str
    run_id: Optional[str] = None
    mounts: List[str] = field(default_factory=list)
    auto_mounts: bool = False
    timeout: float = 30.0
    script_timeout: int = 1800
    prescript: str = DEFAULT_PRESCRIPT
    postscript: str = DEFAULT_POSTSCRIPT
    no_freeze: bool = False
    argv: List[str] = field(default_factory=list)
    error: Optional[str] = None


@dataclass
class OfflineCall:
    action: str  # unmount | remount
    run_id: str
    mounts: List[str] = field(default_factory=list)
    deadline: float = 60.0


@dataclass
class Outcome:
    """What the agent reports: exit code, stdout, stderr, and seconds the command takes."""

    code: int
    stdout: str
    stderr: str = ""
    duration: float = 0.0


def _num(value: Optional[float], places: int = 6) -> Optional[float]:
    return None if value is None else round(float(value), places)


SET_ID_DERIVED = re.compile(r"""set_id="acs-([0-9]{8}t[0-9]{6})-\$\(printf '%s' "([0-9a-f]+):\$iid" \| sha256sum""")


def _unwrap(script: str) -> str:
    """The script inside ``exec bash -c '...'`` wrappers (any depth)."""
    text = script.strip()
    for _depth in range(4):
        if not re.match(r"^(exec\s+)?bash\s+-c\s+", text):
            break
        try:
            words = shlex.split(text)
        except ValueError:
            break
        index = words.index("-c") if "-c" in words else -1
        if index < 0 or index + 1 >= len(words):
            break
        text = words[index + 1].strip()
    return text


def _lines(text: str) -> List[List[str]]:
    """The script's simple commands as words: continuation lines, multi-line quotes and arrays joined."""
    out: List[List[str]] = []
    buffer = ""
    joined = False  # the previous line ended in a backslash: bash joins the lines with nothing between
    for line in text.splitlines():
        buffer = f"{buffer}{'' if joined else chr(10)}{line}" if buffer else line
        joined = buffer.endswith("\\")
        if joined:
            buffer = buffer[:-1]
            continue
        try:
            words = shlex.split(buffer, comments=False)
        except ValueError:
            if buffer.count("\n") < 200:
                continue  # an open quote: the command goes on
            buffer = ""
            continue
        if words and re.match(r"^\w+=\(", words[0]) and not words[-1].endswith(")") and buffer.count("\n") < 200:
            continue  # an array assignment goes on
        out.append(words)
        buffer = ""
    return out


def _helper_position(words: List[str]) -> int:
    for index, word in enumerate(words):
        if os.path.basename(word) == HELPER_NAME and index + 1 < len(words):
            return index
    return -1


def _parse_helper(words: List[str], start: int) -> HelperCall:
    call = HelperCall(action=words[start + 1], helper=words[start])
    args = words[start + 2:]
    i = 0
    try:
        while i < len(args):
            arg = args[i]
            if arg == "--":
                call.argv = args[i + 1:]
                break
            if arg == "--no-freeze":
                call.no_freeze = True
                i += 1
                continue
            if arg == "${mounts[@]}":
                call.auto_mounts = True
                i += 1
                continue
            if arg not in ("--mount", "--timeout", "--script-timeout", "--prescript", "--postscript", "--run-id",
                           "--state-dir"):
                raise UsageError(f"unknown option {arg!r}")
            if i + 1 >= len(args):
                raise UsageError(f"{arg} needs a value")
            value = args[i + 1]
            if arg == "--mount":
                call.mounts.append(value)
            elif arg == "--timeout":
                if not re.fullmatch(r"\d+(\.\d{1,3})?", value) or float(value) <= 0:
                    raise UsageError(f"--timeout {value!r}: a number of seconds greater than 0 is required")
                call.timeout = float(value)
            elif arg == "--script-timeout":
                if not value.isdigit() or int(value) <= 0:
                    raise UsageError(f"--script-timeout {value!r}: whole seconds greater than 0 are required")
                call.script_timeout = int(value)
            elif arg == "--prescript":
                call.prescript = value
            elif arg == "--postscript":
                call.postscript = value
            elif arg == "--run-id":
                if not RUN_ID.match(value):
                    raise UsageError(f"--run-id {value!r}: 1-128 characters from A-Z a-z 0-9 . _ : @ + -")
                call.run_id = value
            i += 2
    except UsageError as exc:
        call.error = str(exc)
    if call.action not in ("freeze", "thaw", "run", "status"):
        call.error = call.error or f"unknown subcommand {call.action!r}"
    return call


def _initiator_argv(lines: List[List[str]], instance_id: str, set_id: str) -> Optional[List[str]]:
    """``"${snapshot[@]}"`` of the collection's instance-initiated script, expanded as bash would."""
    values: Dict[str, str] = {}
    snapshot: Optional[List[str]] = None
    for words in lines:
        if len(words) == 1 and re.match(r"^(tags|spec)=", words[0]) and not words[0].split("=", 1)[1].startswith("${"):
            name, value = words[0].split("=", 1)
            values[name] = value.replace("@@SET_ID@@", set_id).replace("@@INSTANCE_ID@@", instance_id)
        if words and words[0].startswith("snapshot=(") and "create-snapshots" in words:
            snapshot = list(words)
            snapshot[0] = snapshot[0][len("snapshot=("):]
            if snapshot[-1] == ")":
                snapshot.pop()
            elif snapshot[-1].endswith(")"):
                snapshot[-1] = snapshot[-1][:-1]
    if snapshot is None:
        return None
    subst = {"$aws_cli": "aws", "$spec": values.get("spec", ""), "$tags": values.get("tags", "")}
    return [subst.get(word, word) for word in snapshot]


def parse(script: str, instance_id: str = "", set_id: str = "") -> Optional[Any]:
    """A HelperCall or OfflineCall for a command the simulator answers, else None."""
    text = _unwrap(script)
    if OFFLINE_STATE in script and ".remount" in script:
        match = re.search(r"exec bash " + re.escape(OFFLINE_STATE) + r"'?([^'\s]+?)'?\.remount\s*$", script.strip())
        if match and "report unmount" not in script:
            return OfflineCall("remount", match.group(1))
        run_id = re.search(r"^run_id=(.+)$", text, re.M)
        mounts = re.search(r"^mounts=\((.*)\)$", text, re.M)
        deadline = re.search(r"^deadline=(\d+)$", text, re.M)
        if run_id and mounts and "report unmount" in text:
            return OfflineCall("unmount", shlex.split(run_id.group(1))[0], shlex.split(mounts.group(1)),
                               float(deadline.group(1)) if deadline else 60.0)
    lines = _lines(text)
    for words in reversed(lines):
        start = _helper_position(words)
        if start < 0:
            continue
        call = _parse_helper(words, start)
        if call.action == "run" and call.argv == ["${snapshot[@]}"]:
            call.argv = _initiator_argv(lines, instance_id, set_id) or []
        return call
    return None


@dataclass
class Run:
    """One freeze run on one instance, as the helper's state directory records it."""

    run_id: str
    action: str
    mounts: List[Dict[str, Any]]
    scripts: Dict[str, Any]
    no_freeze: bool
    timeout: float
    script_timeout: int
    t_start: float
    t_prescript_done: Optional[float] = None
    t_frozen: Optional[float] = None
    deadline: Optional[float] = None
    state: str = "freezing"
    t_thaw_start: Optional[float] = None
    t_thawed: Optional[float] = None
    t_postscript_done: Optional[float] = None
    auto_thawed: bool = False
    auto_thaw_reason: Optional[str] = None
    watchdog_pid: int = 0
    command: Optional[Dict[str, Any]] = None

    def settle(self, now: float) -> None:
        """The watchdog's work up to ``now``: a freeze past its deadline is auto-thawed at the deadline."""
        if self.state in ACTIVE and self.t_frozen is not None and self.deadline is not None and now >= self.deadline:
            self.state, self.auto_thawed, self.auto_thaw_reason = "auto_thawed", True, "deadline"
            self.t_thaw_start = self.deadline
            self.t_thawed = self.deadline + MIN_STEP
            for mount in self.mounts:
                if mount["status"] == "frozen":
                    mount["status"], mount["t_thawed"] = "thawed", self.t_thawed
            self.t_postscript_done = self.t_thawed + MIN_STEP
            self.ran_post(self.t_thawed, self.t_postscript_done, 0)

    def ran_post(self, t_start: float, t_end: float, code: int) -> None:
        post = self.scripts["postscript"]
        if self.scripts["status"] == "valid":
            post.update(ran=True, exit_code=code, t_start=_num(t_start), t_end=_num(t_end),
                        stderr="" if code == 0 else "postscript: resume failed\n")

    def state_now(self, now: float) -> str:
        self.settle(now)
        if self.state == "frozen" and self.t_frozen is not None and now < self.t_frozen:
            return "freezing"
        return self.state


def _script_entry(path: str, status: str, reason: str) -> Dict[str, Any]:
    return {"path": path, "status": status, "reason": reason, "ran": False, "exit_code": None, "timed_out": False,
            "stdout": "", "stdout_truncated": False, "stderr": "", "stderr_truncated": False, "t_start": None, "t_end": None}


def _check_scripts(call: HelperCall, faults: Dict[str, Any]) -> Dict[str, Any]:
    entries = {}
    for key, path in (("prescript", call.prescript), ("postscript", call.postscript)):
        if not path:
            status, reason = "absent", "no script configured"
        elif not path.startswith("/"):
            status, reason = "invalid", f"{path}: not an absolute path"
        elif faults.get("scripts_invalid"):
            status, reason = "invalid", f"{path}: group or others may access it (mode 0775); chmod 0700"
        elif faults.get("scripts_absent"):
            status, reason = "absent", f"{path}: not found"
        else:
            status, reason = "valid", ""
        entries[key] = _script_entry(path, status, reason)
    statuses = {entries["prescript"]["status"], entries["postscript"]["status"]}
    if "invalid" in statuses:
        pair = "invalid"
        reason = next(e["reason"] for e in entries.values() if e["status"] == "invalid")
    elif "absent" in statuses:
        pair = "absent"
        reason = next(e["reason"] for e in entries.values() if e["status"] == "absent")
    else:
        pair, reason = "valid", ""
    return {"status": pair, "reason": reason, **entries}


def _fault_code(value: Any, default: int) -> int:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and value != 0 else default


class HelperSimulator:
    """The freeze helper's state on every simulated instance of one twin.

    ``latency`` is the shared LatencyModel: ``freeze_duration`` is how long a ``freeze`` (prescript,
    sync, fsfreeze) takes, ``thaw_duration`` how long a ``thaw`` (fsfreeze -u, postscript) takes, of which
    the fsfreeze -u is ``FITHAW_SECONDS`` per mount and the rest the postscript after it; the
    offline scripts take ``freeze_duration`` to unmount and ``thaw_duration`` to mount again.
    """

    def __init__(self, latency, clock: Callable[[], float] = time.time) -> None:
        self.latency = latency
        self.clock = clock
        self.lock = threading.RLock()
        self.runs: Dict[str, Dict[str, Run]] = {}
        self.offline: Dict[str, Dict[str, Dict[str, Any]]] = {}
        # per instance, the disks beneath each mount point as the helper names them ({name, serial})
        self.disks: Dict[str, Dict[str, List[Dict[str, Any]]]] = {}

    @staticmethod
    def recognises(script: str) -> bool:
        return HELPER_NAME in script or (OFFLINE_STATE in script and ".remount" in script)

    # -- entry point ----------------------------------------------------------------------------
    def execute(self, instance_id: str, script: str, faults: Dict[str, Any], data_mounts: List[str],
                known_mounts: Optional[List[str]], run_command: Callable[[List[str]], CommandResult],
                defer: Callable[[float, Callable[[], None]], None], done: Callable[[Outcome], None],
                mount_disks: Optional[Dict[str, List[Dict[str, Any]]]] = None) -> bool:
        """Answer ``script`` on ``instance_id``; False when it is not a helper command (the caller simulates it).

        ``data_mounts`` is what ``mounts: auto`` finds on the instance; ``known_mounts`` (if given) are
        its only mount points. ``run_command`` runs the command of ``run`` (the snapshot call) while
        frozen. ``done`` receives the outcome, at once or, for ``run``, later through ``defer``.
        ``mount_disks`` names the disks beneath each mount point, as the helper reports them.
        """
        if mount_disks is not None:
            with self.lock:
                self.disks[instance_id] = mount_disks
        set_id = f"acs-{_dt.datetime.now(_dt.timezone.utc).strftime('%Y%m%dt%H%M%S')}-{random.getrandbits(32):08x}"
        # The collection's instance-initiated script derives its set id from the run and the instance id, as bash would.
        derived = SET_ID_DERIVED.search(_unwrap(script))
        if derived:
            digest = hashlib.sha256(f"{derived.group(2)}:{instance_id}".encode()).hexdigest()[:8]
            set_id = f"acs-{derived.group(1)}-{digest}"
        call = parse(script, instance_id, set_id)
        if call is None:
            return False
        if isinstance(call, OfflineCall):
            done(self._offline(instance_id, call, faults, known_mounts))
            return True
        if faults.get("helper_missing"):
            done(Outcome(127, "", f"bash: line 1: {call.helper}: No such file or directory\n"))
            return True
        if call.error:
            done(self._report(call, 2, call.error, None, self.clock()))
            return True
        if call.auto_mounts:
            call.mounts = list(data_mounts)
            if not call.mounts:
                done(Outcome(207, "", "no data filesystem on an EBS volume was found: set mounts explicitly\n"))
                return True
        with self.lock:
            if call.action == "status":
                done(self._status(instance_id, call))
            elif call.action == "thaw":
                done(self._thaw(instance_id, call, faults))
            elif call.action == "freeze":
                outcome, _run = self._freeze(instance_id, call, faults, known_mounts)
                done(outcome)
            else:
                self._run(instance_id, call, faults, known_mounts, run_command, defer, done)
        return True

    # -- report -----------------------------------------------------------------------------------
    def _report(self, call: HelperCall, code: int, message: str, run: Optional[Run], invoked: float,
                extra: Optional[Dict[str, Any]] = None, duration: float = 0.0) -> Outcome:
        if code == 0:
            word = {"freeze": "frozen", "thaw": "thawed"}.get(call.action, "ok")
        else:
            word = STATUS_WORDS.get(code, "error")
        empty_scripts = {"status": None, "reason": "", "prescript": _script_entry("", "absent", ""),
                         "postscript": _script_entry("", "absent", "")}
        report: Dict[str, Any] = {
            "helper_version": HELPER_VERSION, "action": call.action, "run_id": call.run_id or (run.run_id if run else ""),
            "exit_code": code, "status": word, "message": message, "state": run.state if run else None,
            "no_freeze": run.no_freeze if run else call.no_freeze, "timeout": _num(run.timeout, 3) if run else None,
            "script_timeout": run.script_timeout if run else None,
            "mounts": [dict(m, t_frozen=_num(m["t_frozen"]), t_thawed=_num(m["t_thawed"])) for m in run.mounts] if run else [],
            "scripts": run.scripts if run else empty_scripts, "t_invoked": _num(invoked),
            "t_start": _num(run.t_start) if run else None,
            "t_prescript_done": _num(run.t_prescript_done) if run else None,
            "t_frozen": _num(run.t_frozen) if run else None, "t_thaw_start": _num(run.t_thaw_start) if run else None,
            "t_thawed": _num(run.t_thawed) if run else None,
            "t_postscript_done": _num(run.t_postscript_done) if run else None,
            "watchdog_deadline": _num(run.deadline, 3) if run else None,
            "watchdog_pid": run.watchdog_pid if run and run.watchdog_pid else None,
            "auto_thawed": run.auto_thawed if run else False, "auto_thaw_reason": run.auto_thaw_reason if run else None,
            "thaw_completed_by": None}
        if call.action == "run" or (run and run.action == "run"):
            report["command"] = run.command if run and run.command else {
                "argv": call.argv, "ran": False, "exit_code": None, "timed_out": False, "stdout": "",
                "stdout_truncated": False, "stderr": "", "stderr_truncated": False, "t_start": None, "t_end": None}
        report.update(extra or {})
        stderr = "" if code == 0 else f"appconsistent-freeze: {message}\n"
        return Outcome(code, json.dumps(report, separators=(",", ":")) + "\n", stderr, duration)

    # -- freeze -----------------------------------------------------------------------------------
    def _active_mounts(self, instance_id: str, now: float) -> Dict[str, str]:
        out = {}
        for run in self.runs.get(instance_id, {}).values():
            if run.state_now(now) in ACTIVE and not run.no_freeze:
                for mount in run.mounts:
                    out[mount["canonical"]] = run.run_id
        return out

    def _freeze(self, instance_id: str, call: HelperCall, faults: Dict[str, Any],
                known_mounts: Optional[List[str]]) -> Tuple[Outcome, Optional[Run]]:
        now = self.clock()
        if not call.mounts and not call.no_freeze:
            return self._report(call, 2, "at least one --mount is required (or --no-freeze)", None, now), None
        for path in call.mounts:
            canonical = os.path.normpath(path) if path.startswith("/") else path
            if not path.startswith("/") or any(ord(c) < 32 for c in path):
                reason = f"{path!r}: not an absolute path"
            elif canonical in ("/", "/boot") or canonical.startswith("/boot/"):
                reason = f"{path}: / and /boot are never frozen"
            elif known_mounts is not None and canonical not in known_mounts:
                reason = f"{path}: not a mount point"
            else:
                continue
            return self._report(call, 207, reason, None, now), None
        run_id = call.run_id or f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime(now))}-{os.getpid()}-{random.randint(1000, 9999)}"
        call.run_id = run_id
        runs = self.runs.setdefault(instance_id, {})
        scripts = _check_scripts(call, faults)
        seen: Dict[str, int] = {}
        mounts = []
        # deepest first, as the helper freezes them
        for path in sorted(call.mounts, key=lambda p: (-os.path.normpath(p).count("/"), p)):
            canonical = os.path.normpath(path)
            status = "duplicate" if canonical in seen else "ok"
            seen.setdefault(canonical, len(mounts))
            known = self.disks.get(instance_id, {})
            disks = [] if status == "duplicate" else [dict(d) for d in known.get(canonical, known.get("*", []))]
            if faults.get("unmapped_disk") and status != "duplicate":
                # an instance store NVMe disk in the same volume group: its serial is no EBS volume id
                disks.append({"name": "nvme9n1", "serial": "AWS1B2C3D4E5F6A7B8C9"})
            mounts.append({"path": path, "canonical": canonical, "fstype": "xfs",
                           "source": f"/dev/nvme{len(mounts) + 1}n1", "disks": disks, "freeze_order": len(mounts),
                           "status": status,
                           "error": "", "t_frozen": None, "t_thawed": None})
        existing = runs.get(run_id)
        if existing is not None and existing.state_now(now) in ACTIVE:
            return self._report(call, 204, f"run {run_id} is already frozen", existing, now), existing
        busy = self._active_mounts(instance_id, now)
        clash = [m["canonical"] for m in mounts if m["canonical"] in busy]
        if clash:
            for mount in mounts:
                if mount["canonical"] in busy:
                    mount["status"], mount["error"] = "already_frozen", f"frozen by run {busy[mount['canonical']]}"
            run = Run(run_id, call.action, mounts, scripts, call.no_freeze, call.timeout, call.script_timeout, now, state="failed")
            return self._report(call, 204, f"already frozen: {', '.join(clash)}", run, now), None
        total = max(self.latency.transition("freeze_duration"), 2 * MIN_STEP)
        run = Run(run_id, call.action, mounts, scripts, call.no_freeze, call.timeout, call.script_timeout, now,
                  watchdog_pid=random.randint(2000, 60000))
        runs[run_id] = run
        pre_share = SCRIPT_SHARE if scripts["status"] == "valid" else 0.0
        run.t_prescript_done = now + max(total * pre_share, MIN_STEP)
        pre = scripts["prescript"]
        if scripts["status"] == "valid":
            pre.update(ran=True, exit_code=0, t_start=_num(now + MIN_STEP / 2), t_end=_num(run.t_prescript_done))
            if faults.get("app_not_ready") or faults.get("prescript_fail"):
                code = 206 if faults.get("app_not_ready") else 201
                pre["exit_code"] = 206 if code == 206 else _fault_code(faults.get("prescript_fail"), 1)
                pre["stderr"] = "prescript: application not ready\n" if code == 206 else "prescript: quiesce failed\n"
                run.state = "failed"
                word = "the prescript says the application is not ready" if code == 206 else \
                    f"the prescript failed with exit code {pre['exit_code']}"
                return self._report(call, code, f"{word}; nothing was frozen", run, now,
                                    duration=run.t_prescript_done - now), run
        freeze_start = run.t_prescript_done
        frozen_at = now + total
        run.deadline = round(freeze_start + call.timeout, 3)
        if faults.get("freeze_fail") and not call.no_freeze:
            mounts[0]["status"] = "freeze_failed"
            mounts[0]["error"] = "fsfreeze: FIFREEZE ioctl failed: Operation not supported"
            for mount in mounts[1:]:
                mount["status"] = "not_frozen"
            run.state, run.deadline = "failed", None
            run.t_postscript_done = frozen_at + MIN_STEP
            run.ran_post(frozen_at, run.t_postscript_done, 0)
            return self._report(call, 209, f"fsfreeze -f {mounts[0]['canonical']} failed: Operation not supported; "
                                           "everything was thawed", run, now, duration=run.t_postscript_done - now), run
        for mount in mounts:
            if mount["status"] == "ok" and not call.no_freeze:
                mount["status"], mount["t_frozen"] = "frozen", frozen_at
        run.t_frozen, run.state = frozen_at, "frozen"
        names = ", ".join(m["canonical"] for m in mounts)
        message = "scripts run, nothing frozen (--no-freeze)" if call.no_freeze else f"frozen: {names}"
        return self._report(call, 0, message, run, now, duration=frozen_at - now), run

    # -- thaw -------------------------------------------------------------------------------------
    def _thaw_run(self, run: Run, faults: Dict[str, Any], start: float) -> Tuple[int, str, float]:
        """Thaw an active run starting at ``start``: (exit code, message, seconds it took)."""
        total = max(self.latency.transition("thaw_duration"), 2 * MIN_STEP)
        run.t_thaw_start = start
        if faults.get("thaw_fail"):
            run.state = "failed"
            for mount in run.mounts:
                if mount["status"] == "frozen":
                    mount["status"], mount["error"] = "thaw_failed", "fsfreeze: FITHAW ioctl failed: Input/output error"
            return 211, "fsfreeze -u failed three times: a filesystem may still be frozen", total
        frozen_mounts = sum(1 for mount in run.mounts if mount["status"] == "frozen")
        run.t_thawed = start + min(total, max(MIN_STEP, FITHAW_SECONDS * frozen_mounts))
        for mount in run.mounts:
            if mount["status"] == "frozen":
                mount["status"], mount["t_thawed"] = "thawed", run.t_thawed
        run.state = "thawed"
        run.t_postscript_done = start + total
        code = 202 if faults.get("postscript_fail") and run.scripts["status"] == "valid" else 0
        run.ran_post(run.t_thawed, run.t_postscript_done, _fault_code(faults.get("postscript_fail"), 1) if code else 0)
        names = ", ".join(m["canonical"] for m in run.mounts)
        if code:
            return 202, "the postscript failed; the filesystems are thawed", total
        return 0, f"thawed: {names}", total

    def _thaw(self, instance_id: str, call: HelperCall, faults: Dict[str, Any]) -> Outcome:
        now = self.clock()
        runs = self.runs.get(instance_id, {})
        if call.run_id is None:
            frozen = [r for r in runs.values() if r.state_now(now) == "frozen"]
            if len(frozen) > 1:
                return self._report(call, 2, "several runs are frozen: give --run-id", None, now)
            if not frozen:
                return self._report(call, 205, "no frozen run", None, now)
            call.run_id = frozen[0].run_id
        run = runs.get(call.run_id)
        if run is None:
            return self._report(call, 205, f"no run {call.run_id}", None, now)
        state = run.state_now(now)
        if state == "auto_thawed":
            run.state = "auto_thawed"
            return self._report(call, 203, f"the watchdog thawed at the deadline ({run.auto_thaw_reason}) before this thaw: "
                                           "the snapshot may not be consistent", run, now)
        if state != "frozen":
            return self._report(call, 205, f"run {call.run_id} is {state}, not frozen", run, now)
        code, message, took = self._thaw_run(run, faults, now)
        return self._report(call, code, message, run, now, duration=took)

    # -- run --------------------------------------------------------------------------------------
    def _run(self, instance_id: str, call: HelperCall, faults: Dict[str, Any], known_mounts: Optional[List[str]],
             run_command: Callable[[List[str]], CommandResult], defer, done) -> None:
        if not call.argv:
            done(self._report(call, 2, "run needs a command after --", None, self.clock()))
            return
        outcome, run = self._freeze(instance_id, call, faults, known_mounts)
        if outcome.code != 0 or run is None:
            done(outcome)
            return
        invoked = run.t_start

        def while_frozen() -> None:
            started = max(self.clock(), run.t_frozen or 0)
            try:
                code, out, err = run_command(list(call.argv))
            except Exception as exc:  # pylint: disable=broad-except
                code, out, err = 1, "", f"{exc}\n"
            ended = max(self.clock(), started + MIN_STEP)
            run.command = {"argv": list(call.argv), "ran": True, "exit_code": code, "timed_out": False,
                           "stdout": out[:16384], "stdout_truncated": len(out) > 16384, "stderr": err[-4096:],
                           "stderr_truncated": len(err) > 4096, "t_start": _num(started), "t_end": _num(ended)}
            with self.lock:
                if run.state_now(ended) == "auto_thawed":
                    result, message, took = 203, "the watchdog thawed before the command finished", 0.0
                else:
                    result, message, took = self._thaw_run(run, faults, ended)
                if result in (0, 203, 202) and code != 0:
                    result, message = 210, f"the command exited {code}; the filesystems are thawed"
            done(self._report(call, result, message, run, invoked, duration=ended + took - invoked))
        defer(max(0.0, (run.t_frozen or invoked) - self.clock()), while_frozen)

    # -- status -----------------------------------------------------------------------------------
    def _status(self, instance_id: str, call: HelperCall) -> Outcome:
        now = self.clock()
        runs = self.runs.get(instance_id, {})
        if call.run_id:
            run = runs.get(call.run_id)
            if run is not None:
                run.state_now(now)
            return self._report(call, 0, "run found" if run else "no such run", run, now)
        summary = [{"run_id": r.run_id, "state": r.state_now(now), "action": r.action,
                    "mounts": [m["canonical"] for m in r.mounts], "t_start": _num(r.t_start),
                    "watchdog_deadline": _num(r.deadline, 3)} for r in runs.values()]
        return self._report(call, 0, f"{len(summary)} runs", None, now, extra={"runs": summary})

    # -- offline unmount / remount ------------------------------------------------------------------
    def _offline(self, instance_id: str, call: OfflineCall, faults: Dict[str, Any],
                 known_mounts: Optional[List[str]]) -> Outcome:
        with self.lock:
            now = self.clock()
            records = self.offline.setdefault(instance_id, {})
            record = records.get(call.run_id)
            if record is not None and now >= record["deadline"]:
                # the armed remount ran at its deadline
                records.pop(call.run_id)
                record = None
            if call.action == "remount":
                if record is None:
                    return self._offline_report(call, 205, "nothing of this run is unmounted", now)
                took = self.latency.transition("thaw_duration")
                if faults.get("remount_fail"):
                    return self._offline_report(call, 209, "some filesystems could not be mounted again: check the "
                                                           "instance now", now + took, took)
                records.pop(call.run_id)
                return self._offline_report(call, 0, "mounted again", now + took, took)
            if record is not None:
                return self._offline_report(call, 204, "a previous unmount of this run is still recorded: run the "
                                                       "remount first", now)
            for mount in call.mounts:
                canonical = os.path.normpath(mount)
                if canonical in ("/", "/boot") or canonical.startswith("/boot/"):
                    return self._offline_report(call, 207, f"{mount} is never unmounted", now)
                if known_mounts is not None and canonical not in known_mounts:
                    return self._offline_report(call, 207, f"{mount} is not a mount point", now)
            if faults.get("unmount_busy"):
                holder = faults["unmount_busy"] if isinstance(faults["unmount_busy"], str) else "postgres"
                return self._offline_report(call, 3, f"in use, not unmounted: {call.mounts[0]}: {holder} (pid 4242); "
                                                     "stop these processes or take the set with the instance stopped", now)
            took = self.latency.transition("freeze_duration")
            records[call.run_id] = {"mounts": list(call.mounts), "t": now + took, "deadline": now + took + call.deadline}
            return self._offline_report(call, 0, f"unmounted: {' '.join(call.mounts)}", now + took, took)

    @staticmethod
    def _offline_report(call: OfflineCall, code: int, message: str, at: float, took: float = 0.0) -> Outcome:
        line = json.dumps({"action": call.action, "run_id": call.run_id, "exit_code": code, "message": message,
                           "t": _num(at)}, separators=(",", ":"))
        return Outcome(code, line + "\n", "", took)

    def unmounted(self, instance_id: str) -> Dict[str, List[str]]:
        """Runs whose filesystems are unmounted now on the instance (for tests and /_twin/state)."""
        with self.lock:
            now = self.clock()
            return {rid: rec["mounts"] for rid, rec in self.offline.get(instance_id, {}).items() if now < rec["deadline"]}

    def frozen(self, instance_id: str) -> Dict[str, List[str]]:
        """Runs frozen now on the instance: {run id: mounts}."""
        with self.lock:
            now = self.clock()
            return {r.run_id: [m["canonical"] for m in r.mounts] for r in self.runs.get(instance_id, {}).values()
                    if r.state_now(now) == "frozen" and not r.no_freeze}
