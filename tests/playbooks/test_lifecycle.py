"""pre_patch_backup, restore and prune against the AWS twin, in the order an operator uses them."""

from __future__ import annotations

import time

import pytest

from playbooks.conftest import fleet_inventory, instance_ids, playbook_vars, read_report

WEB = {"provider": "aws", "name": "web-1", "platform": "linux", "zone": "us-east-1a",
       "volumes": [{"device": "/dev/xvda", "size": 8, "boot": True}, {"device": "/dev/xvdf", "size": 10}]}
FLEET = {"instances": [WEB]}


def attached(twins, iid):
    ec2 = twins.aws_client("ec2")
    instance = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    return {m["DeviceName"]: m["Ebs"]["VolumeId"] for m in instance["BlockDeviceMappings"]}


def set_snapshot_ids(twins, set_id):
    ec2 = twins.aws_client("ec2")
    found = ec2.describe_snapshots(OwnerIds=["self"], Filters=[{"Name": "tag:appconsistent:set-id", "Values": [set_id]}])
    return sorted(s["SnapshotId"] for s in found["Snapshots"])


def test_pre_patch_backup_needs_a_change_ticket(run_playbook, tmp_path):
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("web-1 instance_id=i-0123456789abcdef0\n")
    run = run_playbook("pre_patch_backup", inventory, {"target": "web-1"})
    assert run.rc != 0
    assert "Set change_ticket (or run_id)" in run.stdout, run


# Four playbook runs in a row: more than the suite's default per-test timeout on a loaded machine.
@pytest.mark.timeout(900)
def test_pre_patch_backup_restore_and_prune(twin_factory, run_playbook, tmp_path):
    twins = twin_factory(FLEET, alicloud=False)
    iid = instance_ids(twins)["web-1"]
    inventory = fleet_inventory(tmp_path / "hosts.yml", twins, FLEET, group="patch_wave_1")
    base = playbook_vars(twins)

    backup = run_playbook("pre_patch_backup", inventory, dict(base, target="patch_wave_1", change_ticket="CHG-9",
                                                              consistency="crash", retention="1s",
                                                              appconsistent_report_dir=str(tmp_path / "b")))
    assert backup.rc == 0, backup
    row = read_report(tmp_path / "b", "pre_patch_backup")["hosts"][0]
    assert (row["status"], row["consistency"]) == ("ok", "crash")
    set_id = row["set_id"]
    assert len(set_snapshot_ids(twins, set_id)) == 2
    before = attached(twins, iid)

    restore = run_playbook("restore", inventory, dict(base, target="web-1", min_consistency="crash",
                                                      appconsistent_report_dir=str(tmp_path / "r")))
    assert restore.rc == 0, restore
    report = read_report(tmp_path / "r", "restore")
    row = report["hosts"][0]
    assert (row["status"], row["set_id"]) == ("ok", set_id)
    after = attached(twins, iid)
    assert set(after) == set(before) and not set(after.values()) & set(before.values())
    assert {v["device"]: v["volume_id"] for v in row["volumes"]} == after
    assert "HTML report:" in restore.stdout

    time.sleep(1.5)  # the set's retention of one second has passed
    check = run_playbook("prune", inventory, dict(base, target="patch_wave_1", appconsistent_report_dir=str(tmp_path / "p0")),
                         check=True)
    assert check.rc == 0, check
    planned = read_report(tmp_path / "p0", "prune")["hosts"][0]
    assert (planned["status"], planned["deleted"]) == ("planned", [set_id])
    assert len(set_snapshot_ids(twins, set_id)) == 2

    prune = run_playbook("prune", inventory, dict(base, target="patch_wave_1", appconsistent_report_dir=str(tmp_path / "p")))
    assert prune.rc == 0, prune
    done = read_report(tmp_path / "p", "prune")["hosts"][0]
    assert (done["status"], done["deleted"]) == ("ok", [set_id])
    assert set_snapshot_ids(twins, set_id) == []
