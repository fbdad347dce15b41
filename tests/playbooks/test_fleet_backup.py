"""fleet_backup against the twin clouds: one call per cloud, per-host results, reports."""

from __future__ import annotations

import json

from playbooks.conftest import MIXED_FLEET, fleet_inventory, instance_ids, playbook_vars, read_report


def test_mixed_fleet_is_backed_up_and_the_offline_host_alone_fails(mixed_backup):
    twins, run, reports = mixed_backup
    assert run.rc == 2, run  # the playbook fails because one host failed
    assert "legacy-1" in run.stdout and "failed=1" in run.stdout.split("PLAY RECAP")[-1]
    recap = {line.split()[0]: line for line in run.stdout.split("PLAY RECAP")[-1].splitlines() if ":" in line}
    for host in ("sql-1", "ali-web-1", "ali-sql-1"):
        assert "failed=0" in recap[host], run
    assert "failed=1" in recap["legacy-1"], run

    report = read_report(reports, "fleet_backup")
    rows = {row["host"]: row for row in report["hosts"]}
    ids = instance_ids(twins)
    assert set(rows) == {"sql-1", "legacy-1", "ali-web-1", "ali-sql-1"}
    for host in ("sql-1", "ali-web-1", "ali-sql-1"):
        row = rows[host]
        assert (row["status"], row["consistency"], row["consistency_requested"]) == ("ok", "application", "application")
        assert row["instance_id"] == ids[host] and row["set_id"] and row["snapshots"]
    legacy = rows["legacy-1"]
    assert legacy["status"] == "failed" and legacy["consistency"] == "none" and legacy["set_id"] is None
    assert legacy["error"]
    assert report["failed_hosts"] == ["legacy-1"]
    assert report["run_id"] == "CHG-42" and report["summary"]["ok"] == 3 and report["summary"]["failed"] == 1

    # One module call per cloud: one VSS SendCommand for AWS and one RunCommand for Alibaba Cloud.
    counts = twins.stats.counts("alicloud")
    assert counts.get("RunCommand") == 1
    assert twins.stats.counts("aws").get("SendCommand") == 1
    assert [c["provider"] for c in report["calls"]] == ["aws", "alicloud"]

    # The sets carry the run id and the retention the play was given.
    ec2 = twins.aws_client("ec2")
    snaps = ec2.describe_snapshots(OwnerIds=["self"], Filters=[{"Name": "tag:appconsistent:set-id",
                                                                "Values": [rows["sql-1"]["set_id"]]}])["Snapshots"]
    tags = {t["Key"]: t["Value"] for t in snaps[0]["Tags"]}
    assert tags["appconsistent:run-id"] == "CHG-42" and tags["appconsistent:delete-after"].endswith("Z")

    # The paths of both reports are printed at the end.
    assert f"JSON report: {reports}/fleet_backup.json" in run.stdout
    assert f"HTML report: {reports}/fleet_backup.html" in run.stdout
    html = (reports / "fleet_backup.html").read_text()
    assert "legacy-1" in html and "<script" not in html


def test_rerun_with_the_same_run_id_makes_no_second_set(twin_factory, run_playbook, tmp_path):
    fleet = {"instances": [i for i in MIXED_FLEET["instances"] if i["name"] != "legacy-1"]}
    twins = twin_factory(fleet)
    inventory = fleet_inventory(tmp_path / "hosts.yml", twins, fleet)
    extra = dict(playbook_vars(twins), target="fleet", run_id="CHG-7")
    first = run_playbook("fleet_backup", inventory, dict(extra, appconsistent_report_dir=str(tmp_path / "r1")))
    second = run_playbook("fleet_backup", inventory, dict(extra, appconsistent_report_dir=str(tmp_path / "r2")))
    assert first.rc == 0, first
    assert second.rc == 0, second
    one, two = read_report(tmp_path / "r1", "fleet_backup"), read_report(tmp_path / "r2", "fleet_backup")
    assert {r["host"]: r["set_id"] for r in one["hosts"]} == {r["host"]: r["set_id"] for r in two["hosts"]}
    assert all(r["agent_status"] == "Existing" for r in two["hosts"])


def test_check_mode_plans_and_makes_nothing(twin_factory, run_playbook, tmp_path):
    fleet = {"instances": [i for i in MIXED_FLEET["instances"] if i["name"] != "legacy-1"]}
    twins = twin_factory(fleet)
    inventory = fleet_inventory(tmp_path / "hosts.yml", twins, fleet)
    twins.stats.reset()
    run = run_playbook("fleet_backup", inventory, dict(playbook_vars(twins, tmp_path / "r"), target="fleet"), check=True)
    assert run.rc == 0, run
    report = read_report(tmp_path / "r", "fleet_backup")
    assert {r["status"] for r in report["hosts"]} == {"planned"}
    assert report["check_mode"] is True
    assert not twins.stats.counts("aws").get("SendCommand") and not twins.stats.counts("alicloud").get("RunCommand")


def test_without_target_nothing_runs_and_the_message_says_what_to_set(run_playbook, tmp_path):
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("web-1 instance_id=i-0123456789abcdef0\n")
    run = run_playbook("fleet_backup", inventory, {})
    assert run.rc != 0
    assert "Set the hosts to work on in the variable target" in run.stdout, run
    assert "web-1" not in run.stdout.split("PLAY RECAP")[-1]


def test_a_host_without_instance_id_fails_alone_with_the_reason(twin_factory, run_playbook, tmp_path):
    fleet = {"instances": [MIXED_FLEET["instances"][0]]}
    twins = twin_factory(fleet, alicloud=False)
    inventory = tmp_path / "hosts.yml"
    hosts = {"sql-1": {"instance_id": instance_ids(twins)["sql-1"]}, "mystery": {"platform": "linux"}}
    inventory.write_text(json.dumps({"all": {"children": {"fleet": {"hosts": hosts}}}}))
    run = run_playbook("fleet_backup", inventory, dict(playbook_vars(twins, tmp_path / "r"), target="fleet"))
    assert run.rc == 2, run
    rows = {r["host"]: r for r in read_report(tmp_path / "r", "fleet_backup")["hosts"]}
    assert rows["sql-1"]["status"] == "ok"
    assert rows["mystery"]["status"] == "failed" and "has no instance_id" in rows["mystery"]["error"]
    # The cloud is told from the AWS instance id: the play sets no provider.
    assert rows["sql-1"]["provider"] == "aws"
