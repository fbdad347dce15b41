"""fleet_backup against the twin clouds: one call per cloud, per-host results, reports."""

from __future__ import annotations

import pytest

from playbooks.conftest import MIXED_FLEET, fleet_inventory, instance_ids, playbook_vars, read_report


def test_mixed_fleet_is_backed_up_and_the_offline_host_alone_fails(mixed_backup):
    twins, run, reports = mixed_backup
    assert run.rc == 2, run  # the playbook fails because one host failed
    assert "legacy-1" in run.stdout and "failed=1" in run.stdout.split("PLAY RECAP")[-1]
    recap = {line.split()[0]: line for line in run.stdout.split("PLAY RECAP")[-1].splitlines() if ":" in line}
    for host in ("sql-1", "ali-web-1", "ali-sql-1"):
        assert "failed=0" in recap[host], run
    assert "failed=1" in recap["legacy-1"] and "failed=1" in recap["mystery"], run

    report = read_report(reports, "fleet_backup")
    rows = {row["host"]: row for row in report["hosts"]}
    ids = instance_ids(twins)
    assert set(rows) == {"sql-1", "legacy-1", "ali-web-1", "ali-sql-1", "mystery"}
    for host in ("sql-1", "ali-web-1", "ali-sql-1"):
        row = rows[host]
        assert (row["status"], row["consistency"], row["consistency_requested"]) == ("ok", "application", "application")
        assert row["instance_id"] == ids[host] and row["set_id"] and row["snapshots"]
    legacy = rows["legacy-1"]
    assert legacy["status"] == "failed" and legacy["consistency"] == "none" and legacy["set_id"] is None
    assert "ConnectionLost" in legacy["error"]
    assert rows["mystery"]["status"] == "failed" and "has no instance_id" in rows["mystery"]["error"]
    assert sorted(report["failed_hosts"]) == ["legacy-1", "mystery"]
    assert report["run_id"] == "CHG-42" and report["summary"]["ok"] == 3 and report["summary"]["failed"] == 2
    # The cloud of every host was told from its instance id: the inventory sets no provider.
    assert [rows[h]["provider"] for h in ("sql-1", "ali-web-1")] == ["aws", "alicloud"]

    # One module call per cloud: one VSS SendCommand for AWS; on Alibaba Cloud one RunCommand per
    # command line (the Linux and the Windows plug-in).
    assert twins.stats.counts("alicloud").get("RunCommand") == 2
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


@pytest.mark.timeout(900)  # three playbook runs in a row
def test_check_mode_plans_then_a_rerun_with_the_same_run_id_makes_no_second_set(twin_factory, run_playbook, tmp_path):
    fleet = {"instances": [i for i in MIXED_FLEET["instances"] if i["name"] in ("sql-1", "ali-web-1")]}
    twins = twin_factory(fleet)
    inventory = fleet_inventory(tmp_path / "hosts.yml", twins, fleet)
    extra = dict(playbook_vars(twins), target="fleet", run_id="CHG-7")
    twins.stats.reset()
    check = run_playbook("fleet_backup", inventory, dict(extra, appconsistent_report_dir=str(tmp_path / "r0")), check=True)
    assert check.rc == 0, check
    planned = read_report(tmp_path / "r0", "fleet_backup")
    assert {r["status"] for r in planned["hosts"]} == {"planned"} and planned["check_mode"] is True
    assert not twins.stats.counts("aws").get("SendCommand") and not twins.stats.counts("alicloud").get("RunCommand")

    first = run_playbook("fleet_backup", inventory, dict(extra, appconsistent_report_dir=str(tmp_path / "r1")))
    second = run_playbook("fleet_backup", inventory, dict(extra, appconsistent_report_dir=str(tmp_path / "r2")))
    assert first.rc == 0, first
    assert second.rc == 0, second
    one, two = read_report(tmp_path / "r1", "fleet_backup"), read_report(tmp_path / "r2", "fleet_backup")
    assert {r["host"]: r["set_id"] for r in one["hosts"]} == {r["host"]: r["set_id"] for r in two["hosts"]}
    assert all(r["set_id"] for r in one["hosts"])
    assert all(r["agent_status"] == "Existing" for r in two["hosts"])


def test_without_target_nothing_runs_and_the_message_says_what_to_set(run_playbook, tmp_path):
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("web-1 instance_id=i-0123456789abcdef0\n")
    run = run_playbook("fleet_backup", inventory, {})
    assert run.rc != 0
    assert "Set the hosts to work on in the variable target" in run.stdout, run
    assert "web-1" not in run.stdout.split("PLAY RECAP")[-1]
