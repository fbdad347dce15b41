"""The consistent_backup role against the twin clouds: one play over an inventory shaped like
amazon.aws.aws_ec2's (and hand-written Alibaba Cloud hosts), as a maintenance playbook runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from .conftest import COLLECTIONS, PLAYBOOK

pytest.importorskip("moto")

VOLUMES = [{"device": "/dev/sda1", "size": 30, "boot": True}, {"device": "/dev/xvdf", "size": 10}]
ALI_VOLUMES = [{"device": "/dev/xvda", "size": 40, "type": "cloud_essd", "boot": True},
               {"device": "/dev/xvdb", "size": 100, "type": "cloud_essd"}]


def module_defaults(endpoints):
    defaults = {}
    aws = endpoints.get("aws")
    if aws:
        defaults.update(endpoint_url=aws["endpoint_url"], region=aws["region"], access_key=aws["access_key_id"],
                        secret_key=aws["secret_access_key"])
    ali = endpoints.get("alicloud")
    if ali:
        defaults.update(alicloud_endpoint=ali["endpoint"], alicloud_protocol=ali["protocol"],
                        alicloud_region=ali["region"], alicloud_access_key=ali["access_key_id"],
                        alicloud_secret_key=ali["access_key_secret"])
    return defaults


@pytest.fixture
def backup_play(tmp_path):
    """backup_play(hosts, endpoints, role_vars, check=False) -> (rc, json report)."""
    counter = [0]

    def run(hosts, endpoints, role_vars=None, check=False, play_defaults=None):
        counter[0] += 1
        common = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
        inventory = {"all": {"hosts": {name: dict(common, **hostvars) for name, hostvars in hosts.items()}}}
        inv = tmp_path / f"inventory-{counter[0]}.yml"
        inv.write_text(yaml.safe_dump(inventory))
        defaults = dict(module_defaults(endpoints), **(play_defaults or {}))
        play = [{"name": "pre-patch backup", "hosts": "all", "gather_facts": False,
                 "module_defaults": {"group/appconsistent.snapshots.snapshots": defaults},
                 "roles": [{"role": "appconsistent.snapshots.consistent_backup", **(role_vars or {})}]}]
        playbook = tmp_path / f"play-{counter[0]}.yml"
        playbook.write_text(yaml.safe_dump(play, sort_keys=False))
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS), ANSIBLE_NOCOLOR="1",
                   ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json", ANSIBLE_SHOW_CUSTOM_STATS="true",
                   ANSIBLE_PYTHON_INTERPRETER=sys.executable)
        cmd = [str(PLAYBOOK), "-i", str(inv), str(playbook)]
        if check:
            cmd.append("--check")
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
        try:
            report = json.loads(proc.stdout)
        except json.JSONDecodeError as exc:
            raise AssertionError(f"no JSON report (rc {proc.returncode}): {proc.stdout[-3000:]} {proc.stderr[-2000:]}") from exc
        return proc.returncode, report

    return run


def aws_host(twins, name, platform="linux"):
    iid = twins.endpoints["aws"]["instances"][name]
    hostvars = {"instance_id": iid, "placement": {"region": twins.endpoints["aws"]["region"]}}
    if platform == "windows":
        hostvars["platform"] = "windows"
    return hostvars


def snapshots_of_set(twins, set_id):
    ec2 = twins.aws_client("ec2")
    found = ec2.describe_snapshots(OwnerIds=["self"], Filters=[{"Name": "tag:appconsistent:set-id", "Values": [set_id]}])
    return [dict(s, Tags={t["Key"]: t["Value"] for t in s.get("Tags", [])}) for s in found["Snapshots"]]


def failed_hosts(report):
    return sorted(h for h, s in report["stats"].items() if s.get("failures"))


def test_aws_linux_and_windows_hosts_from_aws_ec2_inventory(twin_factory, backup_play):
    twins = twin_factory({"instances": [
        {"provider": "aws", "name": "web", "platform": "linux", "volumes": VOLUMES},
        {"provider": "aws", "name": "sql", "platform": "windows", "volumes": VOLUMES}]}, alicloud=False)
    hosts = {"web": aws_host(twins, "web"), "sql": aws_host(twins, "sql", "windows")}
    rc, report = backup_play(hosts, twins.endpoints, {"consistent_backup_consistency": "crash",
                                                      "consistent_backup_run_id": "CHG-42"})
    assert rc == 0, report["stats"]
    sets = report["global_custom_stats"]["consistent_backup_sets"]
    assert sorted(sets) == ["sql", "web"]
    for name in ("web", "sql"):
        entry = sets[name]
        assert entry["ok"] and entry["consistency"] == "crash" and entry["method"] == "app_consistent_group"
        snaps = snapshots_of_set(twins, entry["set_id"])
        assert sorted(s["SnapshotId"] for s in snaps) == sorted(entry["snapshot_ids"]) and len(snaps) == 2
        assert {s["Tags"]["appconsistent:run-id"] for s in snaps} == {"CHG-42"}
        assert {s["Tags"]["appconsistent:instance-id"] for s in snaps} == {hosts[name]["instance_id"]}
        assert all("appconsistent:delete-after" in s["Tags"] for s in snaps)

    # The same run id again: the sets are found, not taken twice.
    rc, again = backup_play(hosts, twins.endpoints, {"consistent_backup_consistency": "crash",
                                                     "consistent_backup_run_id": "CHG-42"})
    assert rc == 0
    assert again["global_custom_stats"]["consistent_backup_sets"]["web"]["set_id"] == sets["web"]["set_id"]
    ec2 = twins.aws_client("ec2")
    assert len(ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]) == 4


def test_aws_windows_application_goes_through_vss(twin_factory, backup_play):
    twins = twin_factory({"instances": [{"provider": "aws", "name": "sql", "platform": "windows", "volumes": VOLUMES}]},
                         alicloud=False)
    rc, report = backup_play({"sql": aws_host(twins, "sql", "windows")}, twins.endpoints)
    assert rc == 0, report["stats"]
    entry = report["global_custom_stats"]["consistent_backup_sets"]["sql"]
    assert entry["method"] == "vss_snapshot"
    assert entry["consistency"] == "application"
    tags = [s["Tags"] for s in snapshots_of_set(twins, entry["set_id"])]
    assert tags and all(t.get("AppConsistent") == "true" for t in tags)


def test_host_without_the_required_consistency_fails_and_is_reported(twin_factory, backup_play):
    twins = twin_factory({"instances": [
        {"provider": "aws", "name": "ok", "platform": "windows", "volumes": VOLUMES},
        {"provider": "aws", "name": "offline", "platform": "windows", "agent": {"status": "connection_lost"},
         "volumes": VOLUMES}]}, alicloud=False)
    hosts = {"ok": aws_host(twins, "ok", "windows"), "offline": aws_host(twins, "offline", "windows")}
    rc, report = backup_play(hosts, twins.endpoints, {"consistent_backup_consistency": "filesystem"}, check=False)
    assert rc != 0
    assert failed_hosts(report) == ["offline"]
    sets = report["global_custom_stats"]["consistent_backup_sets"]
    assert sets["ok"]["ok"] is True and sets["ok"]["consistency"] == "filesystem"
    assert sets["offline"]["ok"] is False and sets["offline"]["consistency"] == "none"
    assert sets["offline"]["msg"]


def test_check_mode_takes_nothing(twin_factory, backup_play):
    twins = twin_factory({"instances": [{"provider": "aws", "name": "web", "platform": "linux", "volumes": VOLUMES}]},
                         alicloud=False)
    rc, report = backup_play({"web": aws_host(twins, "web")}, twins.endpoints,
                             {"consistent_backup_consistency": "crash"}, check=True)
    assert rc == 0, report["stats"]
    assert report["global_custom_stats"]["consistent_backup_sets"]["web"]["check_mode"] is True
    assert twins.aws_client("ec2").describe_snapshots(OwnerIds=["self"])["Snapshots"] == []


def test_alibaba_host_with_explicit_variables(twin_factory, backup_play):
    twins = twin_factory({"instances": [{"provider": "alicloud", "id": "i-bp1role0000000001", "name": "ali",
                                         "platform": "linux", "zone": "cn-hangzhou-h", "volumes": ALI_VOLUMES}]},
                         aws=False)
    hosts = {"ali": {"consistent_backup_provider": "alicloud", "ecs_instance_id": "i-bp1role0000000001"}}
    rc, report = backup_play(hosts, twins.endpoints, {"consistent_backup_consistency": "crash"})
    assert rc == 0, report["global_custom_stats"]["consistent_backup_sets"]["ali"]["msg"]
    entry = report["global_custom_stats"]["consistent_backup_sets"]["ali"]
    assert entry["provider"] == "alicloud" and (entry["set_id"] or "").startswith("ssg-"), entry
    assert len(entry["snapshot_ids"]) == 2


def test_host_the_inventory_says_nothing_about_fails_clearly(twin_factory, backup_play):
    twins = twin_factory({"instances": []}, alicloud=False)
    rc, report = backup_play({"mystery": {}}, twins.endpoints)
    assert rc != 0
    assert failed_hosts(report) == ["mystery"]
    assert "Cannot tell the cloud or the instance" in json.dumps(report)


def test_the_inventory_region_wins_over_the_play_default(twin_factory, backup_play):
    # A play whose module_defaults name another region: the host's aws_ec2 placement says where it is.
    twins = twin_factory({"instances": [
        {"provider": "aws", "name": "web", "platform": "linux", "volumes": VOLUMES},
        {"provider": "aws", "name": "sql", "platform": "windows", "volumes": VOLUMES}]}, alicloud=False)
    hosts = {"web": aws_host(twins, "web"), "sql": aws_host(twins, "sql", "windows")}
    assert twins.endpoints["aws"]["region"] != "eu-west-1"
    rc, report = backup_play(hosts, twins.endpoints, {"consistent_backup_consistency": "crash"},
                             play_defaults={"region": "eu-west-1"})
    assert rc == 0, report["stats"]
    sets = report["global_custom_stats"]["consistent_backup_sets"]
    for name in ("web", "sql"):
        assert sets[name]["ok"], sets[name]
        assert len(snapshots_of_set(twins, sets[name]["set_id"])) == 2
