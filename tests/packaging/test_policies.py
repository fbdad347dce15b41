"""The IAM and RAM policy documents under docs/policies allow exactly what the collection calls.

The actions are derived from the code, not listed by hand: every AWS request goes through ``call`` in
plugins/module_utils/aws.py (``call``/``pages``/``paginate`` with the operation's name), every Alibaba Cloud
request through ``AlibabaCloud.call`` in alicloud.py (``call``, or ``listing`` with ``call``, with the action's
name), and an instance that initiates its own snapshots (``initiator: instance``) runs the command group_aws.py
builds. An operator who applies a policy must not meet AccessDenied in a module, nor grant what no module needs.
"""

from __future__ import annotations

import ast
import json
import pathlib
import re

import botocore.session
import pytest
import yaml
from botocore import xform_name

ROOT = pathlib.Path(__file__).resolve().parents[2]
POLICIES = ROOT / "docs" / "policies"
MODULE_UTILS = ROOT / "plugins" / "module_utils"
# The clients the modules make (module.aws_client), whose operations aws.py calls.
AWS_SERVICES = ("ec2", "ssm", "kms")
# The amazon.aws modules the roles run on the controller, and the requests each makes (read from their
# module_utils: iam_role_info expands a role with its inline and attached policies and its instance profiles).
ROLE_MODULE_ACTIONS = {
    "amazon.aws.ec2_instance_info": {"ec2:DescribeInstances"},
    "amazon.aws.iam_instance_profile_info": {"iam:GetInstanceProfile"},
    "amazon.aws.iam_role_info": {"iam:GetRole", "iam:ListRolePolicies", "iam:ListAttachedRolePolicies",
                                 "iam:ListInstanceProfilesForRole"},
}


def _operations():
    session = botocore.session.get_session()
    owner = {}
    for service in AWS_SERVICES:
        for operation in session.get_service_model(service).operation_names:
            owner.setdefault(operation, []).append(service)
    return owner


def _string_calls(path, names, position):
    """The string constants passed at ``position`` to calls of ``names`` (plain or attribute calls)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
        if name in names and len(node.args) > position and isinstance(node.args[position], ast.Constant):
            found.add(node.args[position].value)
    return found


def aws_controller_actions():
    owner = _operations()
    actions = set()
    for operation in _string_calls(MODULE_UTILS / "aws.py", {"call", "pages", "paginate"}, 1):
        services = owner.get(operation)
        assert services and len(services) == 1, f"{operation}: not one operation of {AWS_SERVICES}: {services}"
        actions.add(f"{services[0]}:{operation}")
    return actions


def alicloud_controller_actions():
    return {f"ecs:{action}" for action in _string_calls(MODULE_UTILS / "alicloud.py", {"call"}, 0)
            | _string_calls(MODULE_UTILS / "alicloud.py", {"listing"}, 1)}


def role_actions():
    used = set()
    for path in (ROOT / "roles").glob("*/tasks/*.yml"):
        for task in yaml.safe_load(path.read_text(encoding="utf-8")) or []:
            used.update(k for k in task if k.startswith("amazon.aws."))
    assert used == set(ROLE_MODULE_ACTIONS), "the roles' amazon.aws modules changed: update ROLE_MODULE_ACTIONS"
    return set().union(*ROLE_MODULE_ACTIONS.values())


def instance_initiator_actions():
    """What an instance calls itself with initiator: instance: the AWS CLI or boto3 command group_aws.py sends."""
    source = (MODULE_UTILS / "group_aws.py").read_text(encoding="utf-8")
    script = re.search(r'INSTANCE_INITIATOR = r"""(.*?)"""', source, re.S).group(1)
    python = re.search(r'PYTHON_CREATE_SNAPSHOTS = """(.*?)"""', source, re.S).group(1)
    owner = _operations()
    by_cli = {"-".join(re.findall("[a-z]+", xform_name(op))): op for op in owner}
    calls = {by_cli[name] for name in re.findall(r'"\$aws_cli" ec2 ([a-z-]+)', script)}
    calls |= {op for op in owner if re.search(r"\." + xform_name(op) + r"\(", python)}
    actions = {f"ec2:{op}" for op in calls}
    if "--tag-specifications" in script or "TagSpecifications" in python:
        actions.add("ec2:CreateTags")  # tags given at creation are authorised as CreateTags
    return actions


def policy_actions(name):
    document = json.loads((POLICIES / name).read_text(encoding="utf-8"))
    actions = set()
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow", (name, statement)
        listed = statement.get("Action") or statement.get("action")
        actions.update([listed] if isinstance(listed, str) else listed)
    return actions


def test_the_api_layer_is_the_only_caller():
    """A request made around aws.call or AlibabaCloud.call would be missed by the derivation below."""
    operations = {xform_name(op) for op in _operations()}
    offenders = []
    for path in (ROOT / "plugins").rglob("*.py"):
        if path.name == "aws.py" and path.parent == MODULE_UTILS:
            continue
        for match in re.finditer(r"\b(?:client|ec2|ssm|kms|connection)\.([a-z_0-9]+)\(", path.read_text(encoding="utf-8")):
            if match.group(1) in operations:
                offenders.append(f"{path.relative_to(ROOT)}: {match.group(0)}")
    assert offenders == []


def test_the_derivation_finds_the_calls():
    aws = aws_controller_actions()
    assert {"ec2:CreateSnapshots", "ssm:SendCommand", "ec2:DeleteVolume", "kms:DescribeKey"} <= aws
    assert {"ecs:CreateSnapshotGroup", "ecs:RunCommand", "ecs:DeleteDisk"} <= alicloud_controller_actions()
    assert instance_initiator_actions() == {"ec2:CreateSnapshots", "ec2:CreateTags"}


@pytest.mark.parametrize("document, expected", [
    ("aws-controller.json", lambda: aws_controller_actions() | role_actions()),
    ("alicloud-ram-controller.json", alicloud_controller_actions),
    ("aws-instance-linux-initiator.json", instance_initiator_actions),
])
def test_each_policy_allows_exactly_what_the_code_calls(document, expected):
    wanted, allowed = expected(), policy_actions(document)
    assert sorted(wanted - allowed) == [], f"{document} lacks what the collection calls"
    assert sorted(allowed - wanted) == [], f"{document} allows what no module calls"


def test_every_policy_document_is_compared_and_listed():
    compared = {"aws-controller.json", "alicloud-ram-controller.json", "aws-instance-linux-initiator.json"}
    # The agents' own documents: what the SSM agent, the VSS agent and the Cloud Assistant plug-in call
    # (the providers' managed policies), not the collection's code.
    agents = {"aws-instance-linux.json", "aws-instance-windows-vss.json", "alicloud-ram-instance.json"}
    assert {p.name for p in POLICIES.glob("*.json")} == compared | agents
    readme = (POLICIES / "README.md").read_text(encoding="utf-8")
    for name in compared | agents:
        assert f"`{name}`" in readme, f"docs/policies/README.md does not say what {name} is for"


def test_parliament_finds_nothing_above_low_that_the_readme_does_not_explain():
    """parliament (an IAM policy linter) on every AWS document: each finding above LOW is named in the README."""
    import warnings  # pylint: disable=import-outside-toplevel
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # parliament 1.6 imports pkg_resources
        import parliament  # pylint: disable=import-outside-toplevel
    readme = (POLICIES / "README.md").read_text(encoding="utf-8")
    explained = set(re.findall(r"^\| `([a-z0-9-]+\.json)` \| [A-Z]+ `([A-Z_]+)`", readme, re.M))
    found = set()
    for path in sorted(POLICIES.glob("aws-*.json")):
        for finding in parliament.analyze_policy_string(path.read_text(encoding="utf-8")).findings:
            finding = parliament.enhance_finding(finding)
            if finding.severity not in ("LOW", "INFO"):
                found.add((path.name, finding.issue))
    assert sorted(found - explained) == [], "findings above LOW that docs/policies/README.md does not explain"
    assert sorted(explained - found) == [], "docs/policies/README.md explains findings parliament no longer makes"
