"""fleet_backup through ansible-runner, as AWX runs a job: project playbook, survey answers as extra vars."""

from __future__ import annotations

import glob
import json
import os
import shutil
import sys

import ansible_runner
import yaml

from playbooks.conftest import MIXED_FLEET, REPO_ROOT_DIR, ROLE, fleet_inventory, instance_ids, playbook_env, playbook_vars

AWX_DIR = os.path.join(REPO_ROOT_DIR, "docs", "awx")


def survey_answers(template_name, answers):
    """Extra vars as AWX builds them from a survey: every question's answer, or its default."""
    with open(os.path.join(AWX_DIR, "controller_configuration.yml"), encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    template = next(t for t in config["controller_templates"] if t["name"] == template_name)
    extra = {}
    for question in template["survey_spec"]["spec"]:
        name = question["variable"]
        value = answers.get(name, question.get("default"))
        if question.get("required") and value in (None, ""):
            raise AssertionError(f"survey question {name} is required")
        if question["type"] == "multiplechoice":
            assert str(value) in [str(c) for c in question["choices"]], (name, value)
        extra[name] = value
    unknown = set(answers) - set(extra)
    assert not unknown, f"no survey question for {unknown}"
    return extra


def test_fleet_backup_job_with_survey_answers(twin_factory, tmp_path, monkeypatch):
    # ansible-runner looks ansible-playbook up on PATH, as in an execution environment.
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    twins = twin_factory(MIXED_FLEET)
    private = tmp_path / "job"
    project = private / "project"
    shutil.copytree(os.path.join(AWX_DIR, "project"), project)
    (private / "inventory").mkdir(parents=True)
    fleet_inventory(private / "inventory" / "hosts.yml", twins, MIXED_FLEET, group="backup_daily")
    reports = tmp_path / "reports"
    # What the job template adds to the survey's answers: the job id, and connection settings that
    # would come from the job's credentials on a real controller.
    # The Alibaba instances' RAM role comes from the survey alone (issue 19), not from appconsistent_backup_options.
    connection = {k: v for k, v in playbook_vars(twins, reports).items() if k != "appconsistent_backup_options"}
    extravars = dict(survey_answers("Fleet backup (application-consistent snapshots)",
                                    {"target": "backup_daily", "retention": "2d", "ram_role_name": ROLE}),
                     awx_job_id=4711, tower_job_id=4711, **connection)
    env = {k: v for k, v in playbook_env().items() if k.startswith("ANSIBLE_")}
    runner = ansible_runner.run(private_data_dir=str(private), playbook="fleet_backup.yml", extravars=extravars,
                                envvars=env, quiet=True, ident="job-4711", timeout=600)

    assert runner.status == "failed" and runner.rc == 2, runner.stdout.read()[-4000:]
    ids = instance_ids(twins)
    events = list(runner.events)
    per_host = {}
    for event in events:
        data = event.get("event_data", {})
        if data.get("task") == "Fail the hosts whose instance has no set of the consistency asked for":
            if event["event"] in ("runner_on_failed", "runner_on_skipped"):
                per_host[data["host"]] = event["event"]
    assert per_host == {"sql-1": "runner_on_skipped", "ali-web-1": "runner_on_skipped",
                        "ali-sql-1": "runner_on_skipped", "legacy-1": "runner_on_failed"}
    failed = next(e for e in events if e["event"] == "runner_on_failed")
    assert ids["legacy-1"] in failed["event_data"]["res"]["msg"]
    calls = [e for e in events if e["event"] == "runner_on_ok"
             and e["event_data"].get("task_action") == "appconsistent.snapshots.app_consistent_group"]
    assert len(calls) == 2  # one module call per cloud for the whole fleet
    stats = next(e for e in events if e["event"] == "playbook_on_stats")["event_data"]
    assert stats["failures"] == {"legacy-1": 1}

    # The artifacts AWX keeps: the job's events, stdout, rc and status.
    artifacts = private / "artifacts" / "job-4711"
    assert (artifacts / "rc").read_text().strip() == "2"
    assert (artifacts / "status").read_text().strip() == "failed"
    assert "HTML report:" in (artifacts / "stdout").read_text()
    assert len(glob.glob(str(artifacts / "job_events" / "*.json"))) == len(events)

    report = json.loads((reports / "fleet_backup.json").read_text())
    assert report["run_id"] == "awx-4711" and report["target"] == "backup_daily"
    assert {r["host"]: r["status"] for r in report["hosts"]} == {"sql-1": "ok", "legacy-1": "failed", "ali-web-1": "ok",
                                                                 "ali-sql-1": "ok"}
    ec2 = twins.aws_client("ec2")
    snaps = ec2.describe_snapshots(OwnerIds=["self"], Filters=[{"Name": "tag:appconsistent:run-id",
                                                                "Values": ["awx-4711"]}])["Snapshots"]
    assert {t["Value"] for s in snaps for t in s["Tags"] if t["Key"] == "appconsistent:instance-id"} == {ids["sql-1"]}
