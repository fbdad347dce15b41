"""What the README, the user guide and the AWX configuration tell a new operator, checked against the tree.

Prose cannot be tested for clarity, but it can be tested for what it must contain and for agreeing with the
code: the steps a fleet needs before its first backup, one name for AWX's job id, one boto3 minimum.
"""

from __future__ import annotations

import pathlib
import re

import pytest
import yaml
from ansible_collections.amazon.aws.plugins.module_utils import botocore as amazon_botocore
from packaging.requirements import Requirement

ROOT = pathlib.Path(__file__).resolve().parents[2]
GUIDES = ("README.md", "docs/user-guide.md")


def section(path, title):
    text = (ROOT / path).read_text(encoding="utf-8")
    match = re.search(r"^(#+) " + re.escape(title) + r"\s*$(.*?)(?=^#{1,2} |\Z)", text, re.M | re.S)
    assert match, f"{path} has no section '{title}'"
    return " ".join(match.group(2).split())


@pytest.mark.parametrize("path", GUIDES)
def test_before_the_first_backup_names_what_a_fleet_needs(path):
    text = section(path, "Before the first backup")
    assert "appconsistent.snapshots.consistency_scripts" in text, "the role a Linux fleet needs"
    assert "freeze" in text and "pre/post scripts" in text
    assert "ram_role_name" in text, "what every Alibaba Cloud application-consistent run needs"
    assert "initiator: instance" in text and "aws-instance-linux-initiator.json" in text
    assert "ec2:CreateSnapshots" in text and "ec2:CreateTags" in text
    assert (ROOT / "docs/policies/aws-instance-linux-initiator.json").is_file()


@pytest.mark.parametrize("template", ["Fleet backup (application-consistent snapshots)", "Pre-patch backup"])
def test_the_awx_backup_surveys_ask_for_the_ram_role(template):
    config = yaml.safe_load((ROOT / "docs/awx/controller_configuration.yml").read_text(encoding="utf-8"))
    (found,) = [t for t in config["controller_templates"] if t["name"] == template]
    questions = {q["variable"]: q for q in found["survey_spec"]["spec"]}
    assert "ram_role_name" in questions
    backup_call = (ROOT / "playbooks/tasks/backup_call.yml").read_text(encoding="utf-8")
    assert "{'ram_role_name': ram_role_name}" in backup_call, "the backup playbooks do not use the answer"


def documentation_files():
    """README, docs, the modules (their EXAMPLES), roles and playbooks: what an operator copies from."""
    paths = [ROOT / "README.md"]
    for folder, pattern in (("docs", "**/*"), ("plugins/modules", "*.py"), ("roles", "**/*"), ("playbooks", "**/*.yml")):
        paths += [p for p in (ROOT / folder).glob(pattern) if p.is_file() and p.suffix in (".md", ".yml", ".py")]
    return paths


def test_one_name_for_the_awx_job_id():
    """awx_job_id, as AWX names it; tower_job_id only as the fallback for Ansible Tower, next to awx_job_id."""
    offenders = []
    for path in documentation_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if "tower_job_id" in line and "awx_job_id" not in line:
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "awx_job_id" in readme


def _minimum(requirement_text, name):
    for line in requirement_text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line and Requirement(line).name == name:
            (spec,) = [s for s in Requirement(line).specifier if s.operator == ">="]
            return spec.version
    raise AssertionError(f"no {name} in meta/ee-requirements.txt")


@pytest.mark.parametrize("package, documented", [("boto3", amazon_botocore.MINIMUM_BOTO3_VERSION),
                                                 ("botocore", amazon_botocore.MINIMUM_BOTOCORE_VERSION)])
def test_one_boto3_minimum(package, documented):
    """The modules document amazon.aws's minimum (their requirements: boto3 >= ...); the EE installs the same."""
    requirements = (ROOT / "meta/ee-requirements.txt").read_text(encoding="utf-8")
    assert _minimum(requirements, package) == documented


def test_the_performance_page_sizes_a_run_before_it_tells_its_history():
    """docs/performance.md is for sizing and scheduling: every operation's floor first, the history short, last."""
    text = (ROOT / "docs/performance.md").read_text(encoding="utf-8")
    titles = re.findall(r"^## (.+)$", text, re.M)
    assert titles[:3] == ["What bounds a run", "How long a run takes", "Before a run: ask check mode"], titles
    assert titles[-1] == "Measurement history", titles
    sizing = section("docs/performance.md", "How long a run takes")
    for operation in ("backup", "prune", "copy", "share", "restore"):
        assert re.search(r"\| " + operation + r"\b[^|]*\|[^|]*/ \d", sizing), f"no floor formula for {operation}"
    # The options and results the page names exist in the collection's documentation.
    documented = "".join(path.read_text(encoding="utf-8") for folder in ("plugins/modules", "plugins/doc_fragments")
                         for path in (ROOT / folder).glob("*.py"))
    for name in set(re.findall(r"`(api_[a-z_]+)(?:\.[a-z_]+)?`", text)):
        assert re.search(r"^\s*" + name + r":", documented, re.M), f"{name} is not an option or result of any module"
    history = text.split("## Measurement history", 1)[1]
    assert len(history.splitlines()) <= len(text.splitlines()) // 3, "the history outweighs the guide"


def test_the_restore_test_schedule_runs_the_verify_template_with_variables_the_playbook_reads():
    config = yaml.safe_load((ROOT / "docs/awx/controller_configuration.yml").read_text(encoding="utf-8"))
    templates = {t["name"]: t for t in config["controller_templates"]}
    playbook = (ROOT / "playbooks/verify_restore.yml").read_text(encoding="utf-8")
    (schedule,) = [s for s in config["controller_schedules"] if s["unified_job_template"] == "Verify a restore"]
    assert templates["Verify a restore"]["playbook"] == "verify_restore.yml"
    assert schedule["rrule"].startswith("DTSTART:") and " RRULE:FREQ=" in schedule["rrule"]
    survey = {q["variable"] for q in templates["Verify a restore"]["survey_spec"]["spec"]}
    for variable in set(schedule["extra_data"]) | survey:
        assert variable in playbook or variable in (ROOT / "playbooks/tasks/verify_volume.yml").read_text(
            encoding="utf-8"), f"{variable} is not read by verify_restore"
