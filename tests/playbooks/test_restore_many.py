"""The restore playbook restores all the hosts of one cloud with one restore_volumes task, and reports each host."""

from __future__ import annotations

import re

from integration.test_restore_volumes import take_aws_set
from playbooks.conftest import fleet_inventory, instance_ids, playbook_vars, read_report

VOLUMES = [{"device": "/dev/xvda", "size": 8, "boot": True}, {"device": "/dev/xvdf", "size": 1}]
NAMES = ["app-1", "app-2", "app-3", "app-4"]
FLEET = {"instances": [{"provider": "aws", "name": name, "platform": "linux", "volumes": VOLUMES} for name in NAMES]}


def devices(ec2, iid):
    found = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    return {m["DeviceName"]: m["Ebs"]["VolumeId"] for m in found["BlockDeviceMappings"]}


def restore_task_lines(stdout):
    """The lines of the restore tasks that ran: one per module run (run_once) or one per host."""
    lines = []
    for block in re.split(r"\n(?=TASK \[)", stdout):
        if block.startswith("TASK [Restore the"):
            lines += [line for line in block.splitlines()[1:] if re.match(r"(ok|changed|failed|fatal): \[", line)]
    return lines


def test_all_hosts_are_restored_by_one_task_and_each_host_keeps_its_row(twin_factory, run_playbook, tmp_path):
    twins = twin_factory(FLEET, alicloud=False, latency={"profile": "zero", "transitions": {"snapshot_complete": 0.2}})
    ids = instance_ids(twins)
    ec2 = twins.aws_client("ec2")
    sets = {name: take_aws_set(twins, ids[name], "crash" if name == "app-4" else "application")[0] for name in NAMES}
    before = {name: devices(ec2, ids[name]) for name in NAMES}
    inventory = fleet_inventory(tmp_path / "hosts.yml", twins, FLEET, group="apps")
    base = playbook_vars(twins)

    plan = run_playbook("restore", inventory, dict(base, target="apps", appconsistent_report_dir=str(tmp_path / "c")),
                        check=True)
    rows = {r["host"]: r for r in read_report(tmp_path / "c", "restore")["hosts"]}
    assert [rows[name]["status"] for name in NAMES] == ["planned"] * 3 + ["failed"], plan
    assert {name: devices(ec2, ids[name]) for name in NAMES} == before

    twins.stats.reset()
    run = run_playbook("restore", inventory, dict(base, target="apps", appconsistent_report_dir=str(tmp_path / "r")),
                       extra_args=["--limit", "app-1,app-2,app-4"])
    assert run.rc != 0, run  # app-4's newest set is crash-consistent: below the application level asked for
    # One module run for the three hosts, shown once, on the controller
    assert restore_task_lines(run.stdout) == ["changed: [app-1 -> localhost]"], run
    assert twins.stats.counts("aws").get("StopInstances") == 2
    rows = {r["host"]: r for r in read_report(tmp_path / "r", "restore")["hosts"]}
    assert sorted(rows) == ["app-1", "app-2", "app-4"]  # --limit leaves app-3 out, and untouched
    for name in ("app-1", "app-2"):
        row = rows[name]
        assert (row["status"], row["set_id"], row["instance_id"]) == ("ok", sets[name], ids[name]), row
        assert row["consistency"] == "application" and row["instance_state"] == "running" and row["error"] is None
        now = devices(ec2, ids[name])
        assert [(v["device"], v["volume_id"]) for v in row["volumes"]] == [("/dev/xvdf", now["/dev/xvdf"])], row
        assert now["/dev/xvdf"] != before[name]["/dev/xvdf"] and now["/dev/xvda"] == before[name]["/dev/xvda"]
        assert row["duration"] is not None
    failed = rows["app-4"]
    assert failed["status"] == "failed" and "no complete set at least application-consistent" in failed["error"], failed
    assert f"{ids['app-4']}: " in run.stdout and devices(ec2, ids["app-4"]) == before["app-4"]
    assert devices(ec2, ids["app-3"]) == before["app-3"]
