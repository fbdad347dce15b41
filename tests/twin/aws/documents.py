"""SSM documents the twin knows: the AWS-owned ones the collection uses and those made with CreateDocument."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
from typing import Any, Dict, List, Optional

import yaml

TRUE_FALSE = ["True", "False"]
# AWSEC2-CreateVssSnapshot's documented tag format and characters
VSS_TAG_CHARS = r"""[A-Za-z0-9() ./\\\-"'@_+:={}]"""
VSS_TAGS_PATTERN = rf"^([Kk]ey=({VSS_TAG_CHARS}*),[Vv]alue=({VSS_TAG_CHARS}*);?)*$"
TIMEOUT_PATTERN = r"^([1-9][0-9]{0,4})|(1[0-6][0-9]{4})|(17[0-1][0-9]{3})|(172[0-7][0-9]{2})|(172800)$"


class DocumentError(Exception):
    """An SSM error: ``code`` is the AWS error type."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _shell_doc(name: str, plugin: str, platform: str) -> Dict[str, Any]:
    return {
        "name": name, "platforms": [platform], "plugins": [plugin], "kind": "shell", "owner": "Amazon",
        "parameters": {
            "commands": {"type": "StringList", "required": True, "description": "Commands to run."},
            "workingDirectory": {"type": "String", "default": ""},
            "executionTimeout": {"type": "String", "default": "3600", "allowedPattern": TIMEOUT_PATTERN},
        },
        "steps": [{"action": plugin, "name": plugin, "platform": platform}],
    }


def _vss_doc(name: str, install: bool) -> Dict[str, Any]:
    params: Dict[str, Any] = {
        key: {"type": "String", "default": "False", "allowedValues": TRUE_FALSE}
        for key in ("ExcludeBootVolume", "NoWriters", "CopyOnly", "CreateAmi", "CollectDiagnosticLogs", "SaveVssMetadata")
    }
    params.update({
        "AmiName": {"type": "String", "default": ""},
        "description": {"type": "String", "default": "", "maxChars": 255},
        "tags": {"type": "String", "default": "Key=Name,Value=", "allowedPattern": VSS_TAGS_PATTERN},
        "executionTimeout": {"type": "String", "default": "600", "allowedPattern": TIMEOUT_PATTERN},
    })
    if install:
        params["VssVersion"] = {"type": "String", "default": ""}
    return {"name": name, "platforms": ["windows"], "plugins": ["CreateVssSnapshot"], "kind": "vss", "install": install,
            "owner": "Amazon", "parameters": params,
            "steps": [{"action": "aws:runPowerShellScript", "name": "CreateVssSnapshot", "platform": "windows"}]}


BUILTIN: Dict[str, Dict[str, Any]] = {
    "AWS-RunShellScript": _shell_doc("AWS-RunShellScript", "aws:runShellScript", "linux"),
    "AWS-RunPowerShellScript": _shell_doc("AWS-RunPowerShellScript", "aws:runPowerShellScript", "windows"),
    "AWS-ConfigureAWSPackage": {
        "name": "AWS-ConfigureAWSPackage", "platforms": ["linux", "windows"], "plugins": ["configurePackage"],
        "kind": "package", "owner": "Amazon",
        "parameters": {
            "action": {"type": "String", "required": True, "allowedValues": ["Install", "Uninstall"]},
            "installationType": {"type": "String", "default": "Uninstall and reinstall",
                                 "allowedValues": ["Uninstall and reinstall", "In-place update"]},
            "name": {"type": "String", "required": True, "allowedPattern": r"^[a-zA-Z0-9_\-.]{3,128}$"},
            "version": {"type": "String", "default": ""},
            "additionalArguments": {"type": "String", "default": "{}"},
        },
        "steps": [{"action": "aws:configurePackage", "name": "configurePackage"}],
    },
    "AWSEC2-CreateVssSnapshot": _vss_doc("AWSEC2-CreateVssSnapshot", install=False),
    "AWSEC2-VssInstallAndSnapshot": _vss_doc("AWSEC2-VssInstallAndSnapshot", install=True),
}

RESERVED_PREFIXES = ("aws", "amazon", "amzn")


def _now() -> float:
    return _dt.datetime.now(_dt.timezone.utc).timestamp()


class DocumentStore:
    """AWS-owned documents plus the account's own (CreateDocument)."""

    def __init__(self, account_id: str):
        self.account_id = account_id
        self.custom: Dict[str, Dict[str, Any]] = {}

    def get(self, name: str) -> Dict[str, Any]:
        name = name.split("/")[-1] if name.startswith("arn:") else name
        doc = BUILTIN.get(name) or self.custom.get(name)
        if doc is None:
            raise DocumentError("InvalidDocument", f"Document with name {name} does not exist.")
        return doc

    def create(self, name: str, content: str, fmt: str = "JSON", doc_type: str = "Command",
               tags: Optional[List[Dict[str, str]]] = None) -> Dict[str, Any]:
        if not re.match(r"^[a-zA-Z0-9_\-.]{3,128}$", name or ""):
            raise DocumentError("ValidationException", f"Document name {name!r} is not valid.")
        if name.lower().startswith(RESERVED_PREFIXES):
            raise DocumentError("ValidationException", "Document names starting with aws, amazon or amzn are reserved.")
        if name in self.custom or name in BUILTIN:
            raise DocumentError("DocumentAlreadyExists", "The specified document already exists.")
        if doc_type not in ("Command", "Automation", "Session", "Package", "Policy"):
            raise DocumentError("InvalidDocumentType", f"Document type {doc_type} is not supported.")
        try:
            body = yaml.safe_load(content) if fmt.upper() == "YAML" else json.loads(content)
        except (ValueError, yaml.YAMLError) as exc:
            raise DocumentError("InvalidDocumentContent", f"Document content is not valid {fmt}: {exc}") from None
        if not isinstance(body, dict) or "schemaVersion" not in body:
            raise DocumentError("InvalidDocumentContent", "schemaVersion is required.")
        steps = []
        for step in body.get("mainSteps") or []:
            if not isinstance(step, dict) or "action" not in step or "name" not in step:
                raise DocumentError("InvalidDocumentContent", "Each of mainSteps needs an action and a name.")
            platform = None
            pre = step.get("precondition") or {}
            if pre.get("StringEquals"):
                values = pre["StringEquals"]
                if len(values) == 2 and values[0] == "platformType":
                    platform = str(values[1]).lower()
            inputs = step.get("inputs") or {}
            steps.append({"action": step["action"], "name": step["name"], "platform": platform,
                          "runCommand": inputs.get("runCommand") or [], "timeoutSeconds": step.get("timeoutSeconds"),
                          "workingDirectory": inputs.get("workingDirectory")})
        if doc_type == "Command" and not steps:
            raise DocumentError("InvalidDocumentContent", "A Command document needs mainSteps.")
        params = {}
        for pname, spec in (body.get("parameters") or {}).items():
            spec = dict(spec or {})
            params[pname] = {"type": spec.get("type", "String"), "default": spec.get("default"),
                             "allowedValues": spec.get("allowedValues"), "allowedPattern": spec.get("allowedPattern"),
                             "required": "default" not in spec, "description": spec.get("description", "")}
        platforms = sorted({s["platform"] for s in steps if s["platform"]}) or ["linux", "windows"]
        doc = {"name": name, "platforms": platforms, "plugins": [s["name"] for s in steps], "kind": "custom",
               "owner": self.account_id, "parameters": params, "steps": steps, "content": content, "format": fmt.upper(),
               "document_type": doc_type, "created": _now(), "tags": tags or [], "schema": str(body["schemaVersion"]),
               "hash": hashlib.sha256(content.encode()).hexdigest()}
        self.custom[name] = doc
        return doc

    def delete(self, name: str) -> None:
        if name not in self.custom:
            raise DocumentError("InvalidDocument", f"Document with name {name} does not exist.")
        del self.custom[name]

    def describe(self, doc: Dict[str, Any]) -> Dict[str, Any]:
        params = [{"Name": n, "Type": s["type"], "Description": s.get("description", ""),
                   **({"DefaultValue": s["default"]} if s.get("default") is not None else {})}
                  for n, s in doc["parameters"].items()]
        return {"Name": doc["name"], "Owner": doc["owner"], "Status": "Active", "DocumentType": doc.get("document_type", "Command"),
                "DocumentVersion": "1", "LatestVersion": "1", "DefaultVersion": "1", "SchemaVersion": doc.get("schema", "2.2"),
                "DocumentFormat": doc.get("format", "JSON"), "Hash": doc.get("hash", hashlib.sha256(doc["name"].encode()).hexdigest()),
                "HashType": "Sha256", "CreatedDate": doc.get("created", 1500000000.0),
                "PlatformTypes": [p.capitalize() for p in doc["platforms"]], "Parameters": params,
                "Tags": doc.get("tags", [])}

    def content(self, doc: Dict[str, Any]) -> str:
        if doc.get("content"):
            return doc["content"]
        params = {}
        for name, spec in doc["parameters"].items():
            fields = (("type", spec["type"]), ("default", spec.get("default")), ("allowedValues", spec.get("allowedValues")),
                      ("allowedPattern", spec.get("allowedPattern")))
            params[name] = {k: v for k, v in fields if v is not None}
        steps = [{"action": s["action"], "name": s["name"],
                  **({"precondition": {"StringEquals": ["platformType", s["platform"].capitalize()]}} if s.get("platform") else {})}
                 for s in doc["steps"]]
        return json.dumps({"schemaVersion": "2.2", "description": f"{doc['name']} (twin)", "parameters": params, "mainSteps": steps})


def resolve_parameters(doc: Dict[str, Any], given: Optional[Dict[str, List[str]]]) -> Dict[str, Any]:
    """Validate SendCommand ``Parameters`` against the document; returns values with defaults filled in.

    String parameters come back as str, StringList as list of str.
    """
    given = dict(given or {})
    spec = doc["parameters"]
    unknown = sorted(set(given) - set(spec))
    if unknown:
        raise DocumentError("InvalidParameters", f"Parameters {unknown} are not defined in the document {doc['name']}.")
    out: Dict[str, Any] = {}
    for name, pspec in spec.items():
        if name in given:
            values = given[name]
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise DocumentError("InvalidParameters", f"Parameter {name} must be a list of strings.")
        elif pspec.get("required") and pspec.get("default") is None:
            raise DocumentError("InvalidParameters", f"Parameter {name} is required by the document {doc['name']}.")
        else:
            default = pspec.get("default")
            values = default if isinstance(default, list) else ([] if default is None else [str(default)])
        if pspec["type"] == "StringList":
            value: Any = list(values)
            checked = value
        else:
            if len(values) > 1:
                raise DocumentError("InvalidParameters", f"Parameter {name} is a String and takes one value, not {len(values)}.")
            value = values[0] if values else ""
            checked = [value]
        for item in checked:
            allowed = pspec.get("allowedValues")
            if allowed and item not in allowed:
                raise DocumentError("InvalidParameters",
                                    f"Parameter \"{name}\" has value \"{item}\" not found in {allowed}.")
            pattern = pspec.get("allowedPattern")
            if pattern and name in given and not re.fullmatch(pattern, item):
                raise DocumentError("InvalidParameters",
                                    f"Parameter \"{name}\" \"{item}\" failed to satisfy constraint: {pattern}")
            max_chars = pspec.get("maxChars")
            if max_chars and len(item) > max_chars:
                raise DocumentError("InvalidParameters", f"Parameter \"{name}\" is longer than {max_chars} characters.")
        out[name] = value
    return out


def substitute(text: str, params: Dict[str, Any]) -> str:
    """``{{ name }}`` → the parameter's value (a StringList joins with newlines)."""
    def repl(match):
        value = params.get(match.group(1))
        if value is None:
            return match.group(0)
        return "\n".join(value) if isinstance(value, list) else str(value)
    return re.sub(r"\{\{\s*([A-Za-z0-9_.]+)\s*\}\}", repl, text)
