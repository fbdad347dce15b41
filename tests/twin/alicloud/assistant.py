"""Cloud Assistant of the twin: RunCommand, invocation records, agent status, and the agent's execution of commands."""

from __future__ import annotations

import base64
import binascii
import json
import os
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional

from twin.core.runner import run_local

from .api import AliError, Params, invalid, missing, paginate, tag_list
from .model import EcsInstance, Invocation, InvokeInstance, iso, new_id
from .plugin import PluginRun, parse_plugin_command

OUTPUT_LIMIT = 24 * 1024
STOP_INVOCATION_INSTANCES = 50  # InstanceId.N of StopInvocation, N 1-50
COMMAND_TYPES = {"RunShellScript": "linux", "RunBatScript": "windows", "RunPowerShellScript": "windows"}
FINAL = ("Success", "Failed", "Invalid", "Aborted", "Error", "Timeout", "Cancelled", "Terminated")
FAILED = ("Failed", "Invalid", "Aborted", "Error", "Timeout")
ERROR_INFO = {
    "InstanceNotRunning": "the instance is not running when create task",
    "ClientNotRunning": "the Cloud Assistant Agent is not running",
    "ClientNotResponse": "the Cloud Assistant Agent is not responding",
    "CommandNotApplicable": "the command is not applicable to the operating system of the instance",
    "ExitCodeNonzero": "the process exited with a non-zero exit code",
    "ExecutionTimeout": "the command execution timed out",
    "ExecutionInterrupted": "the task was interrupted",
}


def _record_status(status: str) -> str:
    """Per-instance InvokeRecordStatus from the detailed InvocationStatus."""
    if status in ("Pending", "Running", "Stopping"):
        return "Running"
    if status in ("Success", "Failed"):
        return "Finished"
    if status in ("Cancelled", "Terminated"):
        return "Stopped"
    return "Failed"


class Assistant:
    """Cloud Assistant actions; command execution happens on a thread pool, delivery delays on the scheduler."""

    def __init__(self, cloud: Any) -> None:
        self.cloud = cloud
        self.ecs = cloud.ecs
        self.lock = cloud.ecs.lock
        self.invocations: Dict[str, Invocation] = {}
        self.pool = ThreadPoolExecutor(max_workers=64, thread_name_prefix="twin-alicloud-agent")
        self.running: Dict[str, PluginRun] = {}

    # ------------------------------------------------------------------ actions
    def RunCommand(self, p: Params) -> Dict[str, Any]:
        region = self.ecs.region_check(p)
        command_type = p.require("Type")
        if command_type not in COMMAND_TYPES:
            raise AliError("InvalidCommandType", f"The command type {command_type} is not supported.")
        content = p.require("CommandContent")
        encoding = p.get("ContentEncoding", "PlainText")
        if encoding not in ("PlainText", "Base64"):
            raise invalid("ContentEncoding")
        if encoding == "Base64":
            try:
                content = base64.b64decode(content, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise AliError("InvalidCommandContent.Malformed", "The CommandContent is not valid Base64 text.") from None
        if len(content.encode("utf-8")) > 16 * 1024:
            raise AliError("InvalidCommandContent.LengthLimitExceeded", "The CommandContent exceeds 16 KB.")
        instance_ids = p.indexed("InstanceId")
        if not instance_ids:
            raise missing("InstanceId.1")
        if len(instance_ids) > 100:
            raise AliError("InstanceIdCount.LimitExceeded", "At most 100 instances can be specified in one call.")
        if len(set(instance_ids)) != len(instance_ids):
            raise AliError("InvalidInstance.Duplicated", "The instance IDs must not repeat.")
        timeout = p.int("Timeout", 60, 10, 86400)
        repeat = p.get("RepeatMode", "Once")
        if repeat not in ("Once", "DryRun"):
            raise AliError("InvalidRepeatMode", "The twin supports RepeatMode Once and DryRun only.")
        if p.bool("EnableParameter"):
            raw = p.get("Parameters", "{}")
            try:
                values = json.loads(raw)
            except ValueError:
                raise invalid("Parameters", "It must be a JSON object.") from None
            for key, value in (values or {}).items():
                content = content.replace("{{" + key + "}}", str(value))
            content = content.replace("{{ ", "{{").replace(" }}", "}}")
        tags = p.tags()
        with self.lock:
            self.ecs.deferred.settle()
            targets: List[EcsInstance] = []
            for instance_id in instance_ids:
                inst = self.ecs.instances.get(instance_id)
                if inst is None or inst.region != region:
                    raise AliError("InvalidInstance.NotFound", f"The specified instance {instance_id} does not exist.", 404)
                targets.append(inst)
            if repeat == "DryRun":
                raise AliError("DryRunOperation", "Request validation has been passed with DryRun flag set.", 400)
            now = time.time()
            invocation = Invocation(id=new_id("t"), command_id=new_id("c"), command_type=command_type, content=content,
                                    name=p.get("Name", ""), description=p.get("Description", ""), timeout=timeout,
                                    username=p.get("Username", "System" if COMMAND_TYPES[command_type] == "windows" else "root"),
                                    working_dir=p.get("WorkingDir", "/root" if COMMAND_TYPES[command_type] == "linux" else ""),
                                    termination_mode=p.get("TerminationMode", "Process"),
                                    instances={i.id: InvokeInstance(instance_id=i.id, created=now) for i in targets},
                                    created=now, tags={k: v or "" for k, v in tags}, parameters=p.get("Parameters", ""))
            self.invocations[invocation.id] = invocation
            self.ecs.other_tags[("invocation", invocation.id)] = invocation.tags
            self.ecs.other_tags[("command", invocation.command_id)] = {}
            for inst in targets:
                self._dispatch(invocation, inst)
        return {"CommandId": invocation.command_id, "InvokeId": invocation.id}

    def _dispatch(self, invocation: Invocation, inst: EcsInstance) -> None:
        record = invocation.instances[inst.id]
        latency = self.cloud.latency
        if inst.status != "Running":
            self._finish(record, "Aborted", None, "", "InstanceNotRunning")
            return
        if inst.agent_status == "not_installed":
            self._finish(record, "Aborted", None, "", "ClientNotRunning")
            return
        if inst.agent_status == "connection_lost":
            delay = latency.delivery("alicloud") + latency.transition("delivery_timeout")
            self.cloud.scheduler.call_later(delay, lambda: self._locked_finish(record, "Aborted", None, "", "ClientNotResponse"))
            return
        if COMMAND_TYPES[invocation.command_type] != inst.os_type:
            self._finish(record, "Invalid", None, "", "CommandNotApplicable")
            return
        inst.last_invoked = time.time()
        inst.invocation_count += 1
        delay = latency.delivery("alicloud")
        self.cloud.scheduler.call_later(delay, lambda: self.pool.submit(self._execute, invocation, inst, record))

    def _locked_finish(self, record: InvokeInstance, *args: Any) -> None:
        with self.lock:
            if record.status not in FINAL:
                self._finish(record, *args)

    def _finish(self, record: InvokeInstance, status: str, exit_code: Optional[int], output: str, error_code: str = "") -> None:
        now = time.time()
        record.status = status
        record.exit_code = exit_code
        encoded = output.encode("utf-8")
        record.output = encoded[-OUTPUT_LIMIT:].decode("utf-8", errors="ignore")
        record.dropped = max(0, len(encoded) - OUTPUT_LIMIT)
        record.error_code = error_code
        record.error_info = ERROR_INFO.get(error_code, "")
        record.finish = now
        record.updated = now
        record.visible_at = now + self.cloud.latency.report("alicloud")

    def _execute(self, invocation: Invocation, inst: EcsInstance, record: InvokeInstance) -> None:
        with self.lock:
            if record.status != "Pending":
                return
            record.status = "Running"
            record.start = record.updated = time.time()
        try:
            plugin = parse_plugin_command(invocation.content)
            if plugin is not None:
                run = PluginRun(self.cloud, inst, invocation, record, plugin)
                exit_code, output = run.execute()
                timed_out = time.time() - record.start > invocation.timeout
            elif inst.execution == "local" and invocation.command_type == "RunShellScript":
                exit_code, output, timed_out = self._run_local(invocation, inst, record)
            else:
                exit_code, output, timed_out = self._simulate(invocation, inst)
        except Exception as exc:  # pylint: disable=broad-except
            with self.lock:
                if record.status == "Running":
                    self._finish(record, "Error", None, f"{type(exc).__name__}: {exc}", "ExecutionException")
            return
        with self.lock:
            if record.status == "Stopping":
                self._finish(record, "Terminated", exit_code, output, "ExecutionInterrupted")
            elif record.status != "Running":
                return
            elif timed_out:
                self._finish(record, "Timeout", exit_code, output, "ExecutionTimeout")
            elif exit_code == 0:
                self._finish(record, "Success", 0, output)
            else:
                self._finish(record, "Failed", exit_code, output, "ExitCodeNonzero")

    def instance_env(self, inst: EcsInstance) -> Dict[str, str]:
        env = {"TWIN_INSTANCE_ID": inst.id, "TWIN_PROVIDER": "alicloud", "ALIBABA_CLOUD_REGION_ID": inst.region}
        if self.cloud.url:
            env["TWIN_ALICLOUD_ENDPOINT"] = self.cloud.url
        creds = self.cloud.role_credentials(inst)
        if creds is not None:
            env.update({"ALIBABA_CLOUD_ACCESS_KEY_ID": creds.access_key_id, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": creds.secret,
                        "ALIBABA_CLOUD_SECURITY_TOKEN": creds.security_token or ""})
        return env

    def _run_local(self, invocation: Invocation, inst: EcsInstance, record: InvokeInstance):
        cwd = invocation.working_dir if os.path.isdir(invocation.working_dir or "") else "/"
        result = self.run_tracked(invocation.content, record, invocation.timeout, self.instance_env(inst), cwd)
        return result.exit_code, result.stdout + result.stderr, result.timed_out

    def run_tracked(self, script: str, record: InvokeInstance, timeout: float, env: Dict[str, str], cwd: str = "/"):
        """Run ``script`` for real, with its process group recorded so that StopInvocation can end all of it."""
        pid_file = os.path.join(self.cloud.workdir, f"{uuid.uuid4().hex}.pid")
        done = threading.Event()
        watcher = threading.Thread(target=self._watch_pid, args=(pid_file, record, done), daemon=True)
        watcher.start()
        try:
            return run_local(f"echo $$ > {pid_file}\n{script}", "bash", timeout=timeout, env=env, cwd=cwd)
        finally:
            done.set()
            watcher.join(timeout=5)
            with self.lock:
                record.pgid = None
            if os.path.exists(pid_file):
                os.unlink(pid_file)

    def _watch_pid(self, pid_file: str, record: InvokeInstance, done: threading.Event) -> None:
        while not done.is_set():
            try:
                with open(pid_file, encoding="ascii") as handle:
                    text = handle.read().strip()
            except OSError:
                text = ""
            if text.isdigit():
                with self.lock:
                    record.pgid = int(text)
                    stop_now = record.status == "Stopping"
                if stop_now:
                    self._kill(record)
                return
            done.wait(0.01)

    @staticmethod
    def _kill(record: InvokeInstance) -> None:
        if record.pgid:
            try:
                os.killpg(record.pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def _simulate(self, invocation: Invocation, inst: EcsInstance):
        faults = self.ecs.instance_faults(inst)
        duration = float(faults.get("command_duration", 0) or 0)
        if faults.get("command_hang"):
            duration = invocation.timeout + 1
        if duration:
            time.sleep(min(duration, invocation.timeout))
        exit_code = int(faults.get("command_exit_code", 0) or 0)
        output = str(faults.get("command_output", ""))
        return exit_code, output, duration > invocation.timeout

    def StopInvocation(self, p: Params) -> Dict[str, Any]:
        self.ecs.region_check(p)
        invoke_id = p.require("InvokeId")
        only = p.indexed("InstanceId")
        if len(only) > STOP_INVOCATION_INSTANCES:
            raise AliError("InstanceIds.ExceedLimit", "The number of instance IDs exceeds the upper limit.", 403)
        with self.lock:
            invocation = self._invocation(invoke_id)
            for instance_id, record in invocation.instances.items():
                if only and instance_id not in only:
                    continue
                # Alibaba documents that stopping a one-time invocation cancels it where it has not started and
                # that a run already started goes on to its end: a Running record is left as it is.
                if record.status == "Pending":
                    self._finish(record, "Cancelled", None, "", "")
                    record.stop = time.time()
        return {}

    def _invocation(self, invoke_id: str) -> Invocation:
        invocation = self.invocations.get(invoke_id)
        if invocation is None:
            raise AliError("InvalidInvokeId.NotFound", f"The specified invocation {invoke_id} does not exist.", 404)
        return invocation

    # ------------------------------------------------------------------ views
    def view(self, record: InvokeInstance) -> Dict[str, Any]:
        """The record as the API shows it now: a result finished on the instance is not visible until reported."""
        if record.status in FINAL and time.time() < record.visible_at and record.status not in ("Aborted", "Invalid", "Cancelled"):
            return {"status": "Running", "exit_code": None, "output": "", "error_code": "", "error_info": "", "finish": None}
        return {"status": record.status, "exit_code": record.exit_code, "output": record.output, "error_code": record.error_code,
                "error_info": record.error_info, "finish": record.finish}

    @staticmethod
    def overall(statuses: List[str]) -> str:
        if any(s in ("Running", "Stopping") for s in statuses):
            return "Running"
        if all(s == "Pending" for s in statuses):
            return "Pending"
        if any(s == "Pending" for s in statuses):
            return "Running"
        if all(s == "Success" for s in statuses):
            return "Success"
        if any(s in ("Cancelled", "Terminated") for s in statuses):
            return "Stopped"
        if all(s in FAILED for s in statuses):
            return "Failed"
        return "PartialFailed"

    @staticmethod
    def legacy(status: str) -> str:
        return {"Success": "Finished", "PartialFailed": "PartialFinished", "Pending": "Running"}.get(status, status)

    @staticmethod
    def _encode(text: str, encoding: str) -> str:
        if encoding == "PlainText":
            return text
        return base64.b64encode(text.encode("utf-8")).decode("ascii")

    def DescribeInvocations(self, p: Params) -> Dict[str, Any]:
        self.ecs.region_check(p)
        invoke_id = p.get("InvokeId")
        command_id = p.get("CommandId")
        instance_id = p.get("InstanceId")
        wanted_status = p.get("InvokeStatus")
        command_type = p.get("CommandType")
        command_name = p.get("CommandName")
        include_output = p.bool("IncludeOutput")
        encoding = p.get("ContentEncoding", "Base64")
        if encoding not in ("PlainText", "Base64"):
            raise invalid("ContentEncoding")

        def render(inv: Invocation) -> Dict[str, Any]:
            rows = []
            for rec in inv.instances.values():
                view = self.view(rec)
                rows.append({
                    "InstanceId": rec.instance_id, "InvocationStatus": view["status"], "InstanceInvokeStatus": _record_status(view["status"]),
                    "ExitCode": view["exit_code"], "Output": self._encode(view["output"], encoding) if include_output else "",
                    "ErrorCode": view["error_code"], "ErrorInfo": view["error_info"], "Dropped": rec.dropped if view["output"] else 0,
                    "Repeats": 1 if rec.start else 0,
                    "CreationTime": iso(rec.created), "StartTime": iso(rec.start), "FinishTime": iso(view["finish"]),
                    "StopTime": iso(rec.stop), "UpdateTime": iso(rec.updated), "Timed": False})
            status = self.overall([r["InvocationStatus"] for r in rows])
            return {
                "InvokeId": inv.id, "CommandId": inv.command_id, "CommandType": inv.command_type, "CommandName": inv.name,
                "CommandDescription": inv.description, "CommandContent": self._encode(inv.content, "Base64"),
                "InvocationStatus": status, "InvokeStatus": self.legacy(status), "CreationTime": iso(inv.created),
                "Timeout": inv.timeout, "Username": inv.username, "WorkingDir": inv.working_dir, "RepeatMode": "Once",
                "Timed": False, "Frequency": "", "Parameters": inv.parameters or "{}", "TerminationMode": inv.termination_mode,
                "InvokeInstances": {"InvokeInstance": rows}, "Tags": tag_list(inv.tags),
            }

        with self.lock:
            self.ecs.deferred.settle()
            items = []
            for inv in sorted(self.invocations.values(), key=lambda i: i.created, reverse=True):
                if invoke_id and inv.id != invoke_id or command_id and inv.command_id != command_id:
                    continue
                if instance_id and instance_id not in inv.instances:
                    continue
                if command_type and inv.command_type != command_type or command_name and inv.name != command_name:
                    continue
                items.append(inv)
            rendered = [render(i) for i in items]
            if wanted_status:
                rendered = [r for r in rendered if wanted_status in (r["InvocationStatus"], r["InvokeStatus"])]
            rows, paging = paginate(p, rendered, lambda r: r, token_max=50, page_max=50)
        return {"Invocations": {"Invocation": rows}, **paging}

    def DescribeInvocationResults(self, p: Params) -> Dict[str, Any]:
        self.ecs.region_check(p)
        invoke_id = p.get("InvokeId")
        command_id = p.get("CommandId")
        instance_id = p.get("InstanceId")
        wanted = p.get("InvokeRecordStatus")
        encoding = p.get("ContentEncoding", "Base64")
        if encoding not in ("PlainText", "Base64"):
            raise invalid("ContentEncoding")
        with self.lock:
            self.ecs.deferred.settle()
            if invoke_id:
                self._invocation(invoke_id)
            results = []
            for inv in sorted(self.invocations.values(), key=lambda i: i.created, reverse=True):
                if invoke_id and inv.id != invoke_id or command_id and inv.command_id != command_id:
                    continue
                for rec in inv.instances.values():
                    if instance_id and rec.instance_id != instance_id:
                        continue
                    view = self.view(rec)
                    record_status = _record_status(view["status"])
                    if wanted and record_status != wanted:
                        continue
                    results.append({
                        "InstanceId": rec.instance_id, "InvokeId": inv.id, "CommandId": inv.command_id,
                        "InvocationStatus": view["status"], "InvokeRecordStatus": record_status, "ExitCode": view["exit_code"],
                        "Output": self._encode(view["output"], encoding), "ErrorCode": view["error_code"],
                        "ErrorInfo": view["error_info"], "Dropped": rec.dropped if view["output"] else 0,
                        "Repeats": 1 if rec.start else 0, "StartTime": iso(rec.start), "FinishedTime": iso(view["finish"]),
                        "StopTime": iso(rec.stop), "Username": inv.username, "TerminationMode": inv.termination_mode,
                        "Tags": tag_list(inv.tags)})
            rows, paging = paginate(p, results, lambda r: r, token_max=50, page_max=50)
        return {"Invocation": {"InvocationResults": {"InvocationResult": rows}, **paging}}

    def DescribeCloudAssistantStatus(self, p: Params) -> Dict[str, Any]:
        region = self.ecs.region_check(p)
        ids = p.indexed("InstanceId")
        if len(ids) > 50:
            raise invalid("InstanceId", "At most 50 instance IDs can be specified.")
        os_type = p.get("OSType")
        now = time.time()

        def render(inst: EcsInstance) -> Dict[str, Any]:
            online = inst.agent_status == "online" and inst.status == "Running"
            installed = inst.agent_status != "not_installed"
            active = 0
            for inv in self.invocations.values():
                rec = inv.instances.get(inst.id)
                if rec is not None and rec.status in ("Pending", "Running", "Stopping"):
                    active += 1
            return {
                "InstanceId": inst.id, "CloudAssistantStatus": "true" if online else "false",
                "CloudAssistantVersion": inst.agent_version if installed else "",
                "LastHeartbeatTime": iso(now if online else (now - 3600 if installed else None)) or "",
                "LastInvokedTime": iso(inst.last_invoked) or "", "ActiveTaskCount": active,
                "InvocationCount": inst.invocation_count, "OSType": "Windows" if inst.os_type == "windows" else "Linux",
                "SupportSessionManager": installed,
            }

        with self.lock:
            self.ecs.deferred.settle()
            if ids:
                targets = []
                for instance_id in ids:
                    inst = self.ecs.instances.get(instance_id)
                    if inst is None or inst.region != region:
                        raise AliError("InvalidInstance.NotFound", f"The specified instance {instance_id} does not exist.", 404)
                    targets.append(inst)
                rows = [render(i) for i in targets]
                paging = {"TotalCount": len(rows), "PageNumber": 1, "PageSize": len(rows), "NextToken": ""}
            else:
                targets = [i for i in self.ecs.instances.values() if i.region == region and (os_type is None or i.os_type == os_type.lower())]
                rows, paging = paginate(p, targets, render, token_max=50, page_max=50)
        return {"InstanceCloudAssistantStatusSet": {"InstanceCloudAssistantStatus": rows}, **paging}

    def trace(self, invoke_id: str, instance_id: str) -> List:
        """The plug-in steps recorded for one instance of an invocation (evidence for tests)."""
        with self.lock:
            return list(self._invocation(invoke_id).instances[instance_id].trace)

    def close(self) -> None:
        with self.lock:
            for inv in self.invocations.values():
                for rec in inv.instances.values():
                    if rec.status in ("Running", "Stopping"):
                        self._kill(rec)
            for run in list(self.running.values()):
                run.stop_requested = True
        # Plug-in runs thaw what they froze on their way out; give them the time to do so.
        deadline = time.monotonic() + 15
        while self.running and time.monotonic() < deadline:
            time.sleep(0.02)
        self.pool.shutdown(wait=False, cancel_futures=True)

    ACTIONS: Dict[str, Callable[..., Dict[str, Any]]] = {}


for _action in ("RunCommand", "StopInvocation", "DescribeInvocations", "DescribeInvocationResults", "DescribeCloudAssistantStatus"):
    Assistant.ACTIONS[_action] = getattr(Assistant, _action)
