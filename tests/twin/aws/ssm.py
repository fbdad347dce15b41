"""SSM Run Command for the AWS twin: commands, per-instance invocations, agents, documents.

Invocation lifecycle (Status / StatusDetails)::

    Pending/Pending --delivery--> InProgress/InProgress --run--> Success/Success
                                                            \\-> Failed/Failed (non-zero exit)
                                                            \\-> TimedOut/ExecutionTimedOut
    Pending (agent offline, instance stopped) --TimeoutSeconds--> TimedOut/DeliveryTimedOut
    Pending (fault ``undeliverable``)         --delivery-->       Failed/Undeliverable
    Pending or InProgress --CancelCommand--> Cancelled/Cancelled
    wrong platform for the document          --> Failed/InvalidPlatform
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional, Tuple

from twin.aws.documents import DocumentError, DocumentStore, resolve_parameters, substitute
from twin.aws.instance_disks import InstanceDisks
from twin.aws.vss import DEFAULT_VSS_VERSION, run_vss
from twin.core.freeze_helper import HelperSimulator, Outcome
from twin.core.runner import run_local

TERMINAL = ("Success", "Failed", "TimedOut", "Cancelled")
ERROR_DETAILS = ("Failed", "ExecutionTimedOut", "DeliveryTimedOut", "InvalidPlatform")
LIST_OUTPUT_CHARS = 2500
GET_OUTPUT_CHARS = 24000
SsmError = DocumentError


def _iso(ts: Optional[float]) -> str:
    if not ts:
        return ""
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode()


def _offset(token: Optional[str]) -> int:
    if not token:
        return 0
    try:
        return int(json.loads(base64.urlsafe_b64decode(token.encode()).decode())["o"])
    except (ValueError, KeyError, TypeError):
        raise SsmError("InvalidNextToken", "The specified token isn't valid.") from None


def _page(items: List[Any], params: Dict[str, Any], default: int, low: int, high: int) -> Tuple[List[Any], Optional[str]]:
    size = params.get("MaxResults", default)
    if not isinstance(size, int) or not low <= size <= high:
        raise SsmError("ValidationException", f"1 validation error detected: Value '{size}' at 'maxResults' failed to satisfy "
                                              f"constraint: Member must have value between {low} and {high}")
    start = _offset(params.get("NextToken"))
    chunk = items[start:start + size]
    return chunk, (_token(start + size) if start + size < len(items) else None)


def _limit(value: str, total: int, name: str) -> int:
    """MaxConcurrency / MaxErrors: a number or a percentage of the targets."""
    value = str(value).strip()
    match = re.fullmatch(r"(\d+)(%?)", value)
    if not match:
        raise SsmError("ValidationException", f"{name} must be a number or a percentage, got {value!r}")
    number = int(match.group(1))
    if match.group(2):
        if number > 100:
            raise SsmError("ValidationException", f"{name} percentage must not exceed 100")
        return max(1, -(-total * number // 100)) if name == "MaxConcurrency" else total * number // 100
    return number


def _json_default(value: Any) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _shorthand(text: str) -> Dict[str, Any]:
    """The AWS CLI's shorthand ``InstanceId=i-1,ExcludeBootVolume=true`` for a flat structure."""
    out: Dict[str, Any] = {}
    for part in text.split(","):
        key, _sep, value = part.partition("=")
        out[key.strip()] = {"true": True, "false": False}.get(value.strip().lower(), value.strip())
    return out


def parse_create_snapshots(argv: List[str]) -> Optional[Dict[str, Any]]:
    """CreateSnapshots parameters from ``aws ec2 create-snapshots ...`` or the collection's boto3 snippet, else None."""
    if len(argv) >= 3 and argv[0].rsplit("/", 1)[-1] == "aws" and argv[1:3] == ["ec2", "create-snapshots"]:
        params: Dict[str, Any] = {}
        args = argv[3:]
        i = 0
        while i < len(args):
            opt, value = args[i], (args[i + 1] if i + 1 < len(args) else "")
            i += 2
            if opt == "--instance-specification":
                params["InstanceSpecification"] = json.loads(value) if value.lstrip().startswith("{") else _shorthand(value)
            elif opt == "--tag-specifications":
                params["TagSpecifications"] = json.loads(value)
            elif opt == "--copy-tags-from-source":
                params["CopyTagsFromSource"] = value
            elif opt == "--description":
                params["Description"] = value
            elif opt == "--region":
                params["region"] = value
            elif opt in ("--output", "--query", "--profile"):
                continue
            elif opt in ("--dry-run", "--no-dry-run"):
                i -= 1
            else:
                return None
        return params if "InstanceSpecification" in params else None
    if len(argv) >= 6 and "python" in argv[0].rsplit("/", 1)[-1] and argv[1] == "-c" and "create_snapshots" in argv[2]:
        params = {"region": argv[3], "InstanceSpecification": json.loads(argv[4]), "TagSpecifications": json.loads(argv[5]),
                  "CopyTagsFromSource": "volume"}
        if len(argv) > 6:
            params["Description"] = argv[6]
        return params
    return None


class Plugin:
    def __init__(self, name: str):
        self.name = name
        self.status = "Pending"
        self.details = "Pending"
        self.code = -1
        self.stdout = ""
        self.stderr = ""
        self.start: Optional[float] = None
        self.end: Optional[float] = None

    def output(self, limit: int) -> str:
        text = self.stdout
        if self.stderr:
            text += ("\n" if text else "") + "----------ERROR-------\n" + self.stderr
        return text[:limit]


class Invocation:
    def __init__(self, command: "Command", instance_id: str, name: str, plugins: List[str]):
        self.command = command
        self.instance_id = instance_id
        self.instance_name = name
        self.status = "Pending"
        self.details = "Pending"
        self.code = -1
        self.requested = command.requested
        self.start: Optional[float] = None
        self.end: Optional[float] = None
        self.plugins = [Plugin(p) for p in plugins]

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def set(self, status: str, details: str, code: Optional[int] = None) -> None:
        self.status, self.details = status, details
        if code is not None:
            self.code = code
        for plugin in self.plugins:
            if plugin.status not in TERMINAL:
                plugin.status, plugin.details = status, details
                if code is not None:
                    plugin.code = code
        if status in TERMINAL and not self.end:
            self.end = time.time()

    def stdout(self) -> str:
        return "\n".join(p.stdout for p in self.plugins if p.stdout)

    def stderr(self) -> str:
        return "\n".join(p.stderr for p in self.plugins if p.stderr)


class Command:
    def __init__(self, doc: Dict[str, Any], params: Dict[str, Any], raw: Dict[str, Any]):
        self.id = str(uuid.uuid4())
        self.doc = doc
        self.params = params
        self.raw = raw
        self.requested = time.time()
        self.comment = raw.get("Comment", "")
        self.timeout = int(raw.get("TimeoutSeconds") or 3600)
        self.max_concurrency_text = str(raw.get("MaxConcurrency") or "50")
        self.max_errors_text = str(raw.get("MaxErrors") or "0")
        self.instance_ids_given = list(raw.get("InstanceIds") or [])
        self.targets = list(raw.get("Targets") or [])
        self.invocations: Dict[str, Invocation] = {}
        self.queue: List[str] = []
        self.running = 0
        self.errors = 0
        self.cancelled = False
        self.max_concurrency = 50
        self.max_errors = 0

    def counts(self) -> Dict[str, int]:
        invs = list(self.invocations.values())
        return {"TargetCount": len(invs), "CompletedCount": sum(1 for i in invs if i.terminal),
                "ErrorCount": sum(1 for i in invs if i.details in ERROR_DETAILS),
                "DeliveryTimedOutCount": sum(1 for i in invs if i.details == "DeliveryTimedOut")}

    def status(self) -> Tuple[str, str]:
        invs = list(self.invocations.values())
        if not invs:
            return "Success", "Success"
        if not all(i.terminal for i in invs):
            if self.cancelled:
                return "Cancelling", "Cancelling"
            return ("Pending", "Pending") if all(i.status == "Pending" for i in invs) else ("InProgress", "InProgress")
        if self.cancelled:
            return "Cancelled", "Cancelled"
        details = {i.details for i in invs}
        if details == {"Success"}:
            return "Success", "Success"
        if self.errors > self.max_errors or any(d in ("Failed", "InvalidPlatform", "Undeliverable") for d in details):
            return "Failed", "Failed"
        if "DeliveryTimedOut" in details or "ExecutionTimedOut" in details:
            return "TimedOut", "DeliveryTimedOut" if "DeliveryTimedOut" in details else "TimedOut"
        return "Failed", "Incomplete"


class SsmService:
    """The SSM actions the collection uses, answered from the twin's own state."""

    def __init__(self, cloud) -> None:
        self.cloud = cloud
        self.docs = DocumentStore(cloud.account_id)
        self.commands: Dict[str, Command] = {}
        self.order: List[str] = []
        self.pool = ThreadPoolExecutor(max_workers=64, thread_name_prefix="aws-twin-agent")
        # A VSS document holds its thread for the whole modelled freeze (vss_freeze). On a real cloud every
        # instance's agent waits on its own, so these get threads of their own instead of queueing the other
        # instances' commands behind a hundred sleeping Windows agents.
        self.vss_pool = ThreadPoolExecutor(max_workers=1024, thread_name_prefix="aws-twin-vss")
        self.helper = HelperSimulator(cloud.latency)
        self.disks = InstanceDisks()
        self._api_clients: Dict[str, Any] = {}
        self.lock = threading.RLock()

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.vss_pool.shutdown(wait=False, cancel_futures=True)
        self.disks.close()

    # -- dispatch -----------------------------------------------------------------------------
    def handles(self, action: str) -> bool:
        return hasattr(self, f"op_{action}")

    def call(self, action: str, params: Dict[str, Any]) -> Dict[str, Any]:
        return getattr(self, f"op_{action}")(params or {})

    # -- agents -------------------------------------------------------------------------------
    def _managed(self, instance_id: str) -> bool:
        inst = self.cloud.fleet_instance(instance_id)
        return bool(inst and inst.agent.status != "not_installed" and self.cloud.moto_instance(instance_id) is not None
                    and self.cloud.moto_instance(instance_id)._state.name != "terminated")

    def _ping(self, instance_id: str) -> str:
        inst = self.cloud.fleet_instance(instance_id)
        moto_inst = self.cloud.moto_instance(instance_id)
        if inst.agent.status == "connection_lost" or moto_inst._state.name != "running":
            return "ConnectionLost"
        return "Online"

    def _info(self, instance_id: str) -> Dict[str, Any]:
        inst = self.cloud.fleet_instance(instance_id)
        moto_inst = self.cloud.moto_instance(instance_id)
        windows = inst.platform == "windows"
        info = {
            "InstanceId": instance_id, "PingStatus": self._ping(instance_id),
            "LastPingDateTime": time.time() - (600 if self._ping(instance_id) != "Online" else 30),
            "AgentVersion": inst.agent.version, "IsLatestVersion": False,
            "PlatformType": "Windows" if windows else "Linux",
            "PlatformName": "Microsoft Windows Server 2022 Datacenter" if windows else "Amazon Linux",
            "PlatformVersion": "10.0.20348" if windows else "2023", "ResourceType": "EC2Instance",
            "IPAddress": moto_inst.private_ip or "", "ComputerName": f"{inst.name}.twin.internal",
            "SourceId": instance_id, "SourceType": "AWS::EC2::Instance", "AssociationStatus": "Success",
        }
        if inst.role:
            info["IamRole"] = inst.role
        return info

    def _tags(self, instance_id: str) -> Dict[str, str]:
        return dict(self.cloud.ec2.tags.get(instance_id, {}))

    def op_DescribeInstanceInformation(self, params):
        with self.cloud.lock:
            ids = [iid for iid in self.cloud.instances if self._managed(iid)]
            conditions: List[Tuple[str, List[str]]] = []
            for flt in params.get("InstanceInformationFilterList") or []:
                conditions.append((flt.get("key"), flt.get("valueSet") or []))
            for flt in params.get("Filters") or []:
                conditions.append((flt.get("Key"), flt.get("Values") or []))
            infos = []
            for iid in ids:
                info = self._info(iid)
                tags = self._tags(iid)
                keep = True
                for key, values in conditions:
                    if key == "InstanceIds":
                        keep = iid in values
                    elif key == "PingStatus":
                        keep = info["PingStatus"] in values
                    elif key in ("PlatformTypes", "PlatformType"):
                        keep = info["PlatformType"] in values
                    elif key == "AgentVersion":
                        keep = info["AgentVersion"] in values
                    elif key == "ResourceType":
                        keep = "EC2Instance" in values
                    elif key == "IamRole":
                        keep = info.get("IamRole") in values
                    elif key == "AssociationStatus":
                        keep = "Success" in values
                    elif key == "tag-key":
                        keep = any(v in tags for v in values)
                    elif key and key.startswith("tag:"):
                        keep = tags.get(key[4:]) in values
                    else:
                        raise SsmError("InvalidInstanceInformationFilterValue" if key in ("ActivationIds",) else "InvalidFilterKey",
                                       f"The specified filter key {key!r} is not valid.")
                    if not keep:
                        break
                if keep:
                    infos.append(info)
        chunk, token = _page(infos, params, 50, 5, 50)
        return {"InstanceInformationList": chunk, **({"NextToken": token} if token else {})}

    # -- inventory ------------------------------------------------------------------------------
    def _applications(self, instance_id: str) -> List[Dict[str, str]]:
        """The AWS:Application entries the agent's inventory would report: the agent, and the VSS components."""
        inst = self.cloud.fleet_instance(instance_id)
        windows = inst.platform == "windows"
        apps = [{"Name": "Amazon SSM Agent" if windows else "amazon-ssm-agent", "Version": inst.agent.version,
                 "Publisher": "Amazon Web Services", "ApplicationType": "" if windows else "System Environment/Daemons",
                 "Architecture": "x86_64"}]
        if windows and inst.agent.vss_components:
            apps.append({"Name": "AwsVssComponents", "Version": inst.agent.vss_version or DEFAULT_VSS_VERSION,
                         "Publisher": "Amazon Web Services", "ApplicationType": "", "Architecture": "x86_64"})
        return apps

    def op_ListInventoryEntries(self, params):
        instance_id = params.get("InstanceId") or ""
        type_name = params.get("TypeName") or ""
        if not re.match(r"^(i-(\w{8}|\w{17})|mi-\w{17})$", instance_id):
            raise SsmError("ValidationException", f"1 validation error detected: Value '{instance_id}' at 'instanceId' "
                                                  "failed to satisfy constraint: Member must satisfy regular expression "
                                                  "pattern: (^i-(\\w{8}|\\w{17})$)|(^mi-\\w{17}$)")
        if not re.match(r"^(AWS|Custom):.+$", type_name):
            raise SsmError("ValidationException", f"1 validation error detected: Value '{type_name}' at 'typeName' failed "
                                                  "to satisfy constraint: Member must satisfy regular expression pattern: "
                                                  "^(AWS|Custom):.*$")
        if type_name != "AWS:Application":
            raise SsmError("InvalidTypeNameException", f"The parameter type name {type_name} is not valid.")
        with self.cloud.lock:
            if self.cloud.fleet_instance(instance_id) is None or self.cloud.moto_instance(instance_id) is None:
                raise SsmError("InvalidInstanceId", "Instances [[%s]] not in a valid state for account %s"
                               % (instance_id, self.cloud.account_id))
            inst = self.cloud.fleet_instance(instance_id)
            collected = self._managed(instance_id) and inst.agent.inventory
            entries = self._applications(instance_id) if collected else []
        filters = params.get("Filters") or []
        if len(filters) > 5:
            raise SsmError("ValidationException", "Filters: at most 5 filters")
        for flt in filters:
            key, values, kind = flt.get("Key") or "", flt.get("Values") or [], flt.get("Type") or "Equal"
            if not key.startswith(type_name + "."):
                raise SsmError("InvalidFilter", f"The filter key {key} does not belong to the type {type_name}.")
            attr = key[len(type_name) + 1:]
            if kind == "Equal":
                entries = [e for e in entries if e.get(attr) in values]
            elif kind == "NotEqual":
                entries = [e for e in entries if e.get(attr) not in values]
            elif kind == "BeginWith":
                entries = [e for e in entries if any(str(e.get(attr, "")).startswith(v) for v in values)]
            else:
                raise SsmError("InvalidFilter", f"The filter type {kind} is not supported by ListInventoryEntries.")
        chunk, token = _page(entries, params, 50, 1, 50)
        answer = {"TypeName": type_name, "InstanceId": instance_id, "Entries": chunk}
        if collected:
            answer["SchemaVersion"] = "1.1"
            answer["CaptureTime"] = _iso(time.time() - 60)[:-5] + "Z"
        if token:
            answer["NextToken"] = token
        return answer

    # -- documents ------------------------------------------------------------------------------
    def op_CreateDocument(self, params):
        doc = self.docs.create(params.get("Name"), params.get("Content", ""), params.get("DocumentFormat", "JSON"),
                               params.get("DocumentType", "Command"), params.get("Tags"))
        return {"DocumentDescription": self.docs.describe(doc)}

    def op_DescribeDocument(self, params):
        return {"Document": self.docs.describe(self.docs.get(params.get("Name", "")))}

    def op_GetDocument(self, params):
        doc = self.docs.get(params.get("Name", ""))
        desc = self.docs.describe(doc)
        return {"Name": doc["name"], "DocumentVersion": "1", "Status": "Active", "Content": self.docs.content(doc),
                "DocumentType": desc["DocumentType"], "DocumentFormat": desc["DocumentFormat"], "CreatedDate": desc["CreatedDate"]}

    def op_DeleteDocument(self, params):
        self.docs.delete(params.get("Name", ""))
        return {}

    def op_ListDocuments(self, params):
        from twin.aws.documents import BUILTIN
        docs = list(BUILTIN.values()) + list(self.docs.custom.values())
        owners = [v for f in params.get("Filters") or [] if f.get("Key") == "Owner" for v in f.get("Values", [])]
        if "Self" in owners:
            docs = list(self.docs.custom.values())
        elif "Amazon" in owners:
            docs = list(BUILTIN.values())
        keys = ("Name", "Owner", "PlatformTypes", "DocumentVersion", "DocumentType", "SchemaVersion", "DocumentFormat", "Tags")
        items = [{k: v for k, v in self.docs.describe(d).items() if k in keys} for d in docs]
        chunk, token = _page(items, params, 50, 1, 50)
        return {"DocumentIdentifiers": chunk, **({"NextToken": token} if token else {})}

    # -- commands -------------------------------------------------------------------------------
    def _resolve_targets(self, targets: List[Dict[str, Any]]) -> List[str]:
        if len(targets) > 5:
            raise SsmError("ValidationException", "Member must have length less than or equal to 5 (targets)")
        ids = [iid for iid in self.cloud.instances if self._managed(iid)]
        for target in targets:
            key, values = target.get("Key", ""), target.get("Values") or []
            if key in ("InstanceIds", "instanceids"):
                ids = [i for i in ids if i in values]
            elif key.startswith("tag:"):
                ids = [i for i in ids if self._tags(i).get(key[4:]) in values]
            elif key == "tag-key":
                ids = [i for i in ids if any(v in self._tags(i) for v in values)]
            else:
                raise SsmError("InvalidTarget", f"Target key {key!r} is not supported by the twin.")
        return ids

    def op_SendCommand(self, params):
        doc = self.docs.get(params.get("DocumentName", ""))
        resolved = resolve_parameters(doc, params.get("Parameters"))
        instance_ids = params.get("InstanceIds") or []
        targets = params.get("Targets") or []
        if bool(instance_ids) == bool(targets):
            raise SsmError("ValidationException", "Exactly one of InstanceIds or Targets must be given.")
        if len(instance_ids) > 50:
            raise SsmError("ValidationException", "1 validation error detected: Value at 'instanceIds' failed to satisfy "
                                                  "constraint: Member must have length less than or equal to 50")
        timeout = params.get("TimeoutSeconds")
        if timeout is not None and not 30 <= int(timeout) <= 2592000:
            raise SsmError("ValidationException", "TimeoutSeconds must be between 30 and 2592000.")
        with self.cloud.lock:
            if instance_ids:
                bad = [i for i in instance_ids if not self._managed(i)]
                if bad:
                    raise SsmError("InvalidInstanceId", f"Instances {bad} not in a valid state for account {self.cloud.account_id}")
                chosen = list(dict.fromkeys(instance_ids))
            else:
                chosen = self._resolve_targets(targets)
            command = Command(doc, resolved, params)
            command.max_concurrency = _limit(command.max_concurrency_text, len(chosen), "MaxConcurrency")
            command.max_errors = _limit(command.max_errors_text, len(chosen), "MaxErrors")
            if command.max_concurrency < 1:
                raise SsmError("ValidationException", "MaxConcurrency must be at least 1.")
            for iid in chosen:
                name = self.cloud.fleet_instance(iid).name
                command.invocations[iid] = Invocation(command, iid, name, doc["plugins"])
                command.queue.append(iid)
            self.commands[command.id] = command
            self.order.append(command.id)
            desc = self._describe_command(command)
        self._pump(command)
        return {"Command": desc}

    def _pump(self, command: Command) -> None:
        with self.lock:
            while command.queue and command.running < command.max_concurrency:
                iid = command.queue.pop(0)
                inv = command.invocations[iid]
                if command.cancelled:
                    inv.set("Cancelled", "Cancelled")
                    continue
                if command.errors > command.max_errors:
                    # the error threshold stops the command from reaching further targets
                    inv.set("Cancelled", "Cancelled")
                    continue
                command.running += 1
                self._deliver(command, inv)

    def _later(self, delay: float, func) -> None:
        if delay <= 0:
            func()
        else:
            self.cloud.scheduler.call_later(delay, func)

    def _deliver(self, command: Command, inv: Invocation) -> None:
        faults = self.cloud.instance_faults(inv.instance_id)
        reachable = self._ping(inv.instance_id) == "Online" and not faults.get("agent_offline")
        if faults.get("undeliverable"):
            self._later(self.cloud.latency.delivery("aws"), lambda: self._finish(command, inv, "Failed", "Undeliverable", -1))
            return
        if not reachable:
            wait = float(self.cloud.faults.get("ssm_delivery_timeout", command.timeout))
            self._later(min(wait, command.timeout), lambda: self._finish(command, inv, "TimedOut", "DeliveryTimedOut", -1))
            return
        self._later(self.cloud.latency.delivery("aws") + self._held(command, faults), lambda: self._start(command, inv))

    @staticmethod
    def _held(command: Command, faults: Dict[str, Any]) -> float:
        """Seconds the fault ``hold_commands`` ({text: seconds}) delays a command whose parameters contain text."""
        hold = faults.get("hold_commands") or {}
        if not hold:
            return 0.0
        text = json.dumps(command.params)
        return max([float(seconds) for needle, seconds in hold.items() if needle in text] or [0.0])

    def _start(self, command: Command, inv: Invocation) -> None:
        with self.lock:
            if inv.terminal:
                return
            inv.set("InProgress", "InProgress")
            inv.start = time.time()
        (self.vss_pool if command.doc["kind"] == "vss" else self.pool).submit(self._execute, command, inv)

    def _execute(self, command: Command, inv: Invocation) -> None:
        try:
            outcome = self._run(command, inv)
            if outcome is None:  # answered later by the freeze helper simulation
                return
            status, details, code, delay = outcome
        except Exception as exc:  # pylint: disable=broad-except
            for plugin in inv.plugins:
                plugin.stderr = f"twin agent error: {exc}"
            status, details, code, delay = "Failed", "Failed", 1, 0.0
        self._later(delay + self.cloud.latency.report("aws"), lambda: self._finish(command, inv, status, details, code))

    def _env(self, instance_id: str) -> Dict[str, str]:
        cloud = self.cloud
        # AWS_SSM_INSTANCE_ID and AWS_SSM_REGION_NAME are what the SSM agent gives the commands it runs.
        return {"TWIN_INSTANCE_ID": instance_id, "TWIN_PROVIDER": "aws", "AWS_ENDPOINT_URL": cloud.endpoint_url or "",
                "AWS_SSM_INSTANCE_ID": instance_id, "AWS_SSM_REGION_NAME": cloud.region,
                "AWS_ACCESS_KEY_ID": cloud.access_key_id or "", "AWS_SECRET_ACCESS_KEY": cloud.secret_access_key or "",
                "AWS_DEFAULT_REGION": cloud.region, "AWS_REGION": cloud.region,
                # the freeze helper sees the instance's EBS volumes by their NVMe serials, as on a Nitro instance
                "APPCONSISTENT_SYSFS_ROOT": self.disks.sysfs_root(instance_id, cloud.fleet_instance(instance_id).volumes)}

    def _run(self, command: Command, inv: Invocation) -> Optional[Tuple[str, str, int, float]]:
        """Execute the document on one instance; returns (status, details, exit code, extra seconds before done)."""
        doc = command.doc
        fleet_inst = self.cloud.fleet_instance(inv.instance_id)
        faults = self.cloud.instance_faults(inv.instance_id)
        platform = fleet_inst.platform
        if platform not in doc["platforms"]:
            for plugin in inv.plugins:
                plugin.stderr = f"Step execution skipped: the document {doc['name']} does not support platform {platform}."
            return "Failed", "InvalidPlatform", -1, 0.0
        now = time.time()
        for plugin in inv.plugins:
            plugin.start = now
        if doc["kind"] == "vss" and faults.get("command_hang"):
            # A VSS command that never returns on the instance (a hung writer, a stuck agent): SSM ends it at
            # executionTimeout with nothing snapshotted.
            hang = float(command.params.get("executionTimeout") or 600)
            for plugin in inv.plugins:
                plugin.stderr = "The command was still running when its execution timeout passed."
            return "TimedOut", "ExecutionTimedOut", -1, hang
        if doc["kind"] == "vss":
            code, out, err = run_vss(self.cloud, inv.instance_id, command.params, install=doc.get("install", False))
            plugin = inv.plugins[0]
            plugin.stdout, plugin.stderr, plugin.code, plugin.end = out, err, code, time.time()
            return ("Success", "Success", 0, 0.0) if code == 0 else ("Failed", "Failed", code, 0.0)
        if doc["kind"] == "package":
            plugin = inv.plugins[0]
            name, action = command.params["name"], command.params["action"]
            if name == "AwsVssComponents" and action == "Install" and faults.get("vss_install_failure"):
                plugin.stderr = "Failed to install package; install status Failed: the package could not be downloaded."
                plugin.code, plugin.end = 1, time.time()
                return "Failed", "Failed", 1, 0.0
            if name == "AwsVssComponents" and platform == "windows":
                fleet_inst.agent.vss_components = action == "Install"
                fleet_inst.agent.vss_version = (command.params.get("version") or DEFAULT_VSS_VERSION) if action == "Install" else None
            plugin.stdout = f"Successfully {'installed' if action == 'Install' else 'uninstalled'} {name}"
            plugin.code, plugin.end = 0, time.time()
            return "Success", "Success", 0, 0.0
        timeout = float(command.params.get("executionTimeout") or 3600)
        if fleet_inst.execution == "local" and platform == "linux" and doc["kind"] in ("shell", "custom"):
            return self._run_local(command, inv, timeout)
        if platform == "linux" and doc["kind"] == "shell":
            script = substitute("{{ commands }}", command.params)
            if self.helper.recognises(script) and self._simulate_helper(command, inv, script, faults, timeout):
                return None
        return self._simulate(inv, faults, timeout)

    # -- the freeze helper on simulated instances -------------------------------------------------
    def _mounts(self, instance_id: str) -> Tuple[List[str], Optional[List[str]]]:
        """(what ``mounts: auto`` finds, the instance's only mount points or None when the fleet names none)."""
        data = [v for v in self.cloud.fleet_instance(instance_id).volumes if not v.boot]
        named = list(dict.fromkeys(v.mount for v in data if v.mount))
        if named:
            return named, named
        return [f"/mnt/{v.device.rsplit('/', 1)[-1]}" for v in data], None

    def _simulate_helper(self, command: Command, inv: Invocation, script: str, faults: Dict[str, Any], timeout: float) -> bool:
        def done(outcome: Outcome) -> None:
            if outcome.duration > timeout:
                status, details, code, delay = "TimedOut", "ExecutionTimedOut", -1, timeout
            else:
                status, details, code, delay = ("Success" if outcome.code == 0 else "Failed"), \
                    ("Success" if outcome.code == 0 else "Failed"), outcome.code, outcome.duration
            # what the agent reports appears when the command ends, not before
            remaining = max(0.0, (inv.start or time.time()) + delay - time.time())

            def report() -> None:
                timed_out = status == "TimedOut"  # the agent killed it before it reported
                for plugin in inv.plugins:
                    plugin.stdout, plugin.stderr = ("", "") if timed_out else (outcome.stdout, outcome.stderr)
                    plugin.code = code
                    plugin.end = time.time()
                self._finish(command, inv, status, details, code)
            self._later(remaining + self.cloud.latency.report("aws"), report)

        def defer(delay: float, func) -> None:
            self._later(delay, lambda: self.pool.submit(func))

        auto, known = self._mounts(inv.instance_id)
        return self.helper.execute(inv.instance_id, script, faults, auto, known,
                                   lambda argv: self._instance_api_call(argv, inv.instance_id), defer, done,
                                   mount_disks=self._mount_disks(inv.instance_id))

    def _mount_disks(self, instance_id: str) -> Dict[str, List[Dict[str, Any]]]:
        """The disks beneath each mount point, named as EC2 documents them: on a Nitro instance an NVMe namespace
        (nvme<N>n1, in attachment order) whose controller serial is the volume id without its dash; on a Xen
        instance the block device mapping's name with xvd for sd (/dev/sdf and /dev/xvdf are both xvdf), no serial.
        Volumes given the same mount are one filesystem over them (LVM). An instance whose fleet entry names no mount
        accepts any path (see _mounts): every path is then over all its data volumes ("*")."""
        fleet_inst = self.cloud.fleet_instance(instance_id)
        auto, known = self._mounts(instance_id)
        data = [v for v in fleet_inst.volumes if not v.boot]
        disks: Dict[str, List[Dict[str, Any]]] = {}
        for index, vol in enumerate(fleet_inst.volumes):
            if vol.boot:
                continue
            mount = vol.mount or auto[data.index(vol)]
            if fleet_inst.hypervisor == "xen":
                name = vol.device.rsplit("/", 1)[-1].rstrip("0123456789")
                disk = {"name": "xvd" + name[2:] if name.startswith("sd") else name, "serial": None}
            else:
                disk = {"name": f"nvme{index}n1", "serial": (vol.id or "").replace("-", "")}
            disks.setdefault(mount, []).append(disk)
        if known is None:
            disks["*"] = [d for ds in disks.values() for d in ds]
        return disks

    def _api_client(self, region: str):
        """The instance's own EC2 client (its role's credentials), calling the twin like the CLI would."""
        with self.lock:
            client = self._api_clients.get(region)
            if client is None:
                import boto3  # pylint: disable=import-outside-toplevel
                from botocore.config import Config  # pylint: disable=import-outside-toplevel
                client = boto3.session.Session().client(
                    "ec2", endpoint_url=self.cloud.endpoint_url, region_name=region,
                    aws_access_key_id=self.cloud.access_key_id, aws_secret_access_key=self.cloud.secret_access_key,
                    config=Config(retries={"mode": "standard", "max_attempts": 3}, max_pool_connections=64))
                self._api_clients[region] = client
            return client

    def _instance_api_call(self, argv: List[str], instance_id: str = "") -> Tuple[int, str, str]:
        """The command ``run`` starts while frozen: CreateSnapshots by the AWS CLI or boto3, answered by this twin.

        The fault ``print_snapshots`` (snapshot ids) makes a faulty or hostile instance print those snapshots too."""
        params = parse_create_snapshots(argv)
        if params is None:
            name = argv[0] if argv else ""
            return 127, "", f"{name}: the twin does not simulate this command on a simulated instance\n"
        region = params.pop("region", None) or self.cloud.region
        from botocore.exceptions import ClientError  # pylint: disable=import-outside-toplevel
        try:
            result = self._api_client(region).create_snapshots(**params)
        except ClientError as exc:
            err = exc.response.get("Error", {})
            return 254, "", (f"\nAn error occurred ({err.get('Code')}) when calling the CreateSnapshots operation: "
                             f"{err.get('Message')}\n")
        result.pop("ResponseMetadata", None)
        extra = self.cloud.instance_faults(instance_id).get("print_snapshots") if instance_id else None
        if extra:
            listed = self._api_client(region).describe_snapshots(SnapshotIds=list(extra))["Snapshots"]
            result["Snapshots"] = list(result.get("Snapshots") or []) + [
                {k: s[k] for k in ("SnapshotId", "VolumeId", "State", "StartTime", "VolumeSize", "Tags") if k in s}
                for s in listed]
        return 0, json.dumps(result, indent=4, default=_json_default) + "\n", ""

    def _run_local(self, command: Command, inv: Invocation, timeout: float) -> Tuple[str, str, int, float]:
        doc = command.doc
        steps = doc["steps"] if doc["kind"] == "custom" else [dict(doc["steps"][0], runCommand=["{{ commands }}"])]
        final = ("Success", "Success", 0)
        for plugin, step in zip(inv.plugins, steps):
            if step.get("platform") and step["platform"] != self.cloud.fleet_instance(inv.instance_id).platform:
                plugin.status, plugin.details, plugin.code = "Success", "Success", 0
                plugin.stdout = "Step execution skipped due to unsatisfied preconditions."
                continue
            script = substitute("\n".join(str(line) for line in step.get("runCommand") or []), command.params)
            cwd = command.params.get("workingDirectory") or step.get("workingDirectory") or None
            step_timeout = float(step.get("timeoutSeconds") or timeout)
            result = run_local(script, "bash", timeout=step_timeout, env=self._env(inv.instance_id), cwd=cwd)
            plugin.stdout, plugin.stderr = result.stdout, result.stderr
            plugin.start, plugin.end, plugin.code = result.started, result.finished, result.exit_code
            if result.timed_out:
                plugin.status, plugin.details = "TimedOut", "ExecutionTimedOut"
                return "TimedOut", "ExecutionTimedOut", -1, 0.0
            if result.exit_code != 0:
                plugin.status, plugin.details = "Failed", "Failed"
                return "Failed", "Failed", result.exit_code, 0.0
            plugin.status, plugin.details = "Success", "Success"
        return final[0], final[1], final[2], 0.0

    def _simulate(self, inv: Invocation, faults: Dict[str, Any], timeout: float) -> Tuple[str, str, int, float]:
        duration = float(faults.get("command_duration", 0))
        code = int(faults.get("command_exit_code", 0))
        for plugin in inv.plugins:
            plugin.stdout = str(faults.get("command_stdout", ""))
            plugin.stderr = str(faults.get("command_stderr", ""))
        if faults.get("command_hang") or duration > timeout:
            return "TimedOut", "ExecutionTimedOut", -1, timeout
        if code != 0:
            return "Failed", "Failed", code, duration
        return "Success", "Success", 0, duration

    def _finish(self, command: Command, inv: Invocation, status: str, details: str, code: int) -> None:
        with self.lock:
            if inv.terminal:
                return
            if command.cancelled and status != "Cancelled":
                status, details = "Cancelled", "Cancelled"
            inv.set(status, details, code)
            for plugin in inv.plugins:
                plugin.end = plugin.end or inv.end
            command.running -= 1
            if details in ERROR_DETAILS:
                command.errors += 1
        self._pump(command)

    def op_CancelCommand(self, params):
        command = self._command(params.get("CommandId"))
        only = params.get("InstanceIds") or list(command.invocations)
        with self.lock:
            if not params.get("InstanceIds"):
                command.cancelled = True
            for iid in only:
                inv = command.invocations.get(iid)
                if inv and not inv.terminal:
                    if inv.status == "Pending":
                        was_queued = iid in command.queue
                        if was_queued:
                            command.queue.remove(iid)
                        inv.set("Cancelled", "Cancelled")
                        if not was_queued:
                            command.running -= 1
                    else:
                        inv.set("Cancelling", "Cancelling")
                        self._later(0.0, lambda i=inv: self._cancel_running(command, i))
        return {}

    def _cancel_running(self, command: Command, inv: Invocation) -> None:
        self._finish(command, inv, "Cancelled", "Cancelled", -1)

    def _command(self, command_id: Optional[str]) -> Command:
        command = self.commands.get(command_id or "")
        if command is None:
            raise SsmError("InvalidCommandId", f"Command ID {command_id} is not valid.")
        return command

    def _describe_command(self, command: Command) -> Dict[str, Any]:
        status, details = command.status()
        raw_params = {k: (v if isinstance(v, list) else [v]) for k, v in (command.raw.get("Parameters") or {}).items()}
        return {"CommandId": command.id, "DocumentName": command.doc["name"], "DocumentVersion": "$DEFAULT",
                "Comment": command.comment, "ExpiresAfter": command.requested + command.timeout + 3600,
                "Parameters": raw_params, "InstanceIds": command.instance_ids_given, "Targets": command.targets,
                "RequestedDateTime": command.requested, "Status": status, "StatusDetails": details,
                "MaxConcurrency": command.max_concurrency_text, "MaxErrors": command.max_errors_text,
                "TimeoutSeconds": command.timeout, **command.counts(),
                "OutputS3Region": self.cloud.region, "OutputS3BucketName": "", "OutputS3KeyPrefix": "",
                "ServiceRole": command.raw.get("ServiceRoleArn", ""), "NotificationConfig": {},
                "CloudWatchOutputConfig": {"CloudWatchLogGroupName": "", "CloudWatchOutputEnabled": False}}

    def op_ListCommands(self, params):
        with self.lock:
            if params.get("CommandId"):
                commands = [self._command(params["CommandId"])]
            else:
                commands = [self.commands[c] for c in reversed(self.order)]
            if params.get("InstanceId"):
                commands = [c for c in commands if params["InstanceId"] in c.invocations]
            for flt in params.get("Filters") or []:
                key, value = flt.get("key"), flt.get("value")
                if key == "Status":
                    commands = [c for c in commands if c.status()[0] == value]
                elif key == "DocumentName":
                    commands = [c for c in commands if c.doc["name"] == value]
                elif key == "InvokedAfter":
                    commands = [c for c in commands if _iso(c.requested) >= value]
                elif key == "InvokedBefore":
                    commands = [c for c in commands if _iso(c.requested) <= value]
                else:
                    raise SsmError("InvalidFilterKey", f"The filter key {key!r} is not valid.")
            items = [self._describe_command(c) for c in commands]
        chunk, token = _page(items, params, 50, 1, 50)
        return {"Commands": chunk, **({"NextToken": token} if token else {})}

    def _describe_invocation(self, inv: Invocation, details: bool) -> Dict[str, Any]:
        command = inv.command
        out = {"CommandId": command.id, "InstanceId": inv.instance_id, "InstanceName": inv.instance_name,
               "Comment": command.comment, "DocumentName": command.doc["name"], "DocumentVersion": "$DEFAULT",
               "RequestedDateTime": inv.requested, "Status": inv.status, "StatusDetails": inv.details,
               "TraceOutput": "", "StandardOutputUrl": "", "StandardErrorUrl": "", "ServiceRole": "",
               "NotificationConfig": {}, "CloudWatchOutputConfig": {"CloudWatchLogGroupName": "", "CloudWatchOutputEnabled": False}}
        if details:
            out["CommandPlugins"] = [{
                "Name": p.name, "Status": p.status, "StatusDetails": p.details, "ResponseCode": p.code,
                **({"ResponseStartDateTime": p.start} if p.start else {}), **({"ResponseFinishDateTime": p.end} if p.end else {}),
                "Output": p.output(LIST_OUTPUT_CHARS), "StandardOutputUrl": "", "StandardErrorUrl": "",
                "OutputS3Region": self.cloud.region, "OutputS3BucketName": "", "OutputS3KeyPrefix": ""}
                for p in inv.plugins]
        return out

    def op_ListCommandInvocations(self, params):
        with self.lock:
            if params.get("CommandId"):
                commands = [self._command(params["CommandId"])]
            else:
                commands = [self.commands[c] for c in reversed(self.order)]
            invs = [inv for c in commands for inv in c.invocations.values()]
            if params.get("InstanceId"):
                invs = [i for i in invs if i.instance_id == params["InstanceId"]]
            for flt in params.get("Filters") or []:
                key, value = flt.get("key"), flt.get("value")
                if key == "Status":
                    invs = [i for i in invs if i.status == value]
                elif key == "DocumentName":
                    invs = [i for i in invs if i.command.doc["name"] == value]
                else:
                    raise SsmError("InvalidFilterKey", f"The filter key {key!r} is not valid.")
            items = [self._describe_invocation(i, bool(params.get("Details"))) for i in invs]
        chunk, token = _page(items, params, 50, 1, 50)
        return {"CommandInvocations": chunk, **({"NextToken": token} if token else {})}

    def op_GetCommandInvocation(self, params):
        command = self.commands.get(params.get("CommandId") or "")
        if command is None:
            raise SsmError("InvalidCommandId", f"Command ID {params.get('CommandId')} is not valid.")
        inv = command.invocations.get(params.get("InstanceId") or "")
        if inv is None:
            raise SsmError("InvocationDoesNotExist", "An error occurred (InvocationDoesNotExist) when calling the "
                                                     "GetCommandInvocation operation")
        with self.lock:
            plugin_name = params.get("PluginName")
            if plugin_name:
                plugin = next((p for p in inv.plugins if p.name == plugin_name), None)
                if plugin is None:
                    raise SsmError("InvalidPluginName", f"The plugin name {plugin_name} is not valid.")
                status, details, code = plugin.status, plugin.details, plugin.code
                stdout, stderr, start, end = plugin.stdout, plugin.stderr, plugin.start, plugin.end
            else:
                status, details, code = inv.status, inv.details, inv.code
                stdout, stderr = inv.stdout(), inv.stderr()
                start = min((p.start for p in inv.plugins if p.start), default=inv.start)
                end = inv.end
            elapsed = f"PT{(end - start):.3f}S" if start and end else ""
            return {"CommandId": command.id, "InstanceId": inv.instance_id, "Comment": command.comment,
                    "DocumentName": command.doc["name"], "DocumentVersion": "$DEFAULT",
                    "PluginName": plugin_name or inv.plugins[0].name, "ResponseCode": code,
                    "ExecutionStartDateTime": _iso(start), "ExecutionElapsedTime": elapsed, "ExecutionEndDateTime": _iso(end),
                    "Status": status, "StatusDetails": details, "StandardOutputContent": stdout[:GET_OUTPUT_CHARS],
                    "StandardOutputUrl": "", "StandardErrorContent": stderr[:GET_OUTPUT_CHARS], "StandardErrorUrl": "",
                    "CloudWatchOutputConfig": {"CloudWatchLogGroupName": "", "CloudWatchOutputEnabled": False}}
