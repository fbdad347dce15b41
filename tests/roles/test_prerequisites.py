"""The prerequisites role against the twin clouds: the readiness report per host."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from .conftest import COLLECTIONS, PLAYBOOK
from .test_consistent_backup import ALI_VOLUMES, VOLUMES, aws_host, module_defaults

pytest.importorskip("moto")


def run_checks(tmp_path, hosts, endpoints, role_vars=None):
    common = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    inventory = {"all": {"hosts": {name: dict(common, **hostvars) for name, hostvars in hosts.items()}}}
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inventory))
    defaults = module_defaults(endpoints)
    aws_defaults = {k: v for k, v in defaults.items() if not k.startswith("alicloud_")}
    play = [{"name": "readiness", "hosts": "all", "gather_facts": False,
             "module_defaults": {"group/aws": aws_defaults, "group/appconsistent.snapshots.snapshots": defaults},
             "roles": [{"role": "appconsistent.snapshots.prerequisites", **(role_vars or {})}],
             "tasks": [{"name": "Keep the report", "ansible.builtin.set_stats": {
                 "data": {"reports": "{{ {inventory_hostname: prerequisites_report} }}"}, "per_host": False}}]}]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play, sort_keys=False))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS), ANSIBLE_NOCOLOR="1",
               ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json", ANSIBLE_SHOW_CUSTOM_STATS="true",
               ANSIBLE_PYTHON_INTERPRETER=sys.executable)
    proc = subprocess.run([str(PLAYBOOK), "-i", str(tmp_path / "inventory.yml"), str(tmp_path / "play.yml")],
                          env=env, capture_output=True, text=True, timeout=600, check=False)
    report = json.loads(proc.stdout)
    failures = [(t["task"]["name"], h, r.get("msg")) for play in report["plays"] for t in play["tasks"]
                for h, r in t["hosts"].items() if r.get("failed")]
    report["failures"] = failures
    return proc.returncode, report


def test_agent_offline_and_missing_policies_are_reported(twin_factory, tmp_path):
    twins = twin_factory({"instances": [
        {"provider": "aws", "name": "ready", "platform": "linux", "volumes": VOLUMES},
        {"provider": "aws", "name": "lost", "platform": "linux", "agent": {"status": "connection_lost"},
         "volumes": VOLUMES}]}, alicloud=False)
    hosts = {"ready": aws_host(twins, "ready"), "lost": aws_host(twins, "lost")}
    rc, report = run_checks(tmp_path, hosts, twins.endpoints, {"prerequisites_fail_when_not_ready": False,
                                                               "prerequisites_aws_required_policies": {}})
    assert rc == 0, report["failures"]
    reports = report["global_custom_stats"]["reports"]
    checks = {name: {c["name"]: c for c in reports[name]["checks"]} for name in hosts}
    assert checks["ready"]["agent_and_instance"]["ok"] is True
    assert checks["lost"]["agent_and_instance"]["ok"] is False
    assert "ConnectionLost" in checks["lost"]["agent_and_instance"]["detail"] or \
        "agent" in checks["lost"]["agent_and_instance"]["detail"].lower()
    assert reports["lost"]["ready"] is False
    # Nothing was created by the checks.
    assert twins.aws_client("ec2").describe_snapshots(OwnerIds=["self"])["Snapshots"] == []


def test_vss_components_checked_from_inventory_and_installed_when_asked(twin_factory, tmp_path):
    windows = {"provider": "aws", "platform": "windows", "volumes": VOLUMES}
    twins = twin_factory({"instances": [
        dict(windows, name="has"),
        dict(windows, name="missing", agent={"vss_components": False}),
        dict(windows, name="noinv", agent={"vss_components": False, "inventory": False})]}, alicloud=False)
    hosts = {name: aws_host(twins, name, "windows") for name in ("has", "missing", "noinv")}
    role_vars = {"prerequisites_fail_when_not_ready": False, "prerequisites_aws_required_policies": {}}

    def vss_checks(report):
        reports = report["global_custom_stats"]["reports"]
        return {name: next(c for c in reports[name]["checks"] if c["name"] == "vss_components") for name in hosts}

    rc, report = run_checks(tmp_path, hosts, twins.endpoints, role_vars)
    assert rc == 0, report["failures"]
    checks = vss_checks(report)
    assert checks["has"]["ok"] is True and checks["has"]["detail"] == "AwsVssComponents 2.5.1 installed"
    assert checks["missing"]["ok"] is False and "is not installed" in checks["missing"]["detail"]
    assert checks["noinv"]["ok"] is True and checks["noinv"]["detail"].startswith("not known")
    assert twins.stats.counts("aws").get("SendCommand", 0) == 0  # only checked

    rc, report = run_checks(tmp_path, hosts, twins.endpoints,
                            dict(role_vars, prerequisites_aws_install_vss_components=True))
    assert rc == 0, report["failures"]
    checks = vss_checks(report)
    assert checks["missing"]["ok"] is True and checks["missing"]["detail"].endswith("installed by this run")
    assert checks["has"]["detail"] == "AwsVssComponents 2.5.1 installed"  # left alone
    ssm = twins.aws_client("ssm")
    entries = ssm.list_inventory_entries(InstanceId=hosts["missing"]["instance_id"], TypeName="AWS:Application")["Entries"]
    assert "AwsVssComponents" in [e["Name"] for e in entries]


def test_host_not_ready_fails_with_the_reasons(twin_factory, tmp_path):
    twins = twin_factory({"instances": [{"provider": "aws", "name": "web", "platform": "linux", "volumes": VOLUMES}]},
                         alicloud=False)
    rc, report = run_checks(tmp_path, {"web": aws_host(twins, "web")}, twins.endpoints,
                            {"prerequisites_aws_required_policies": {"linux": ["AmazonSSMManagedInstanceCore"]}})
    text = json.dumps(report)
    checks = {c["name"]: c for c in report["global_custom_stats"]["reports"]["web"]["checks"]} \
        if "reports" in report.get("global_custom_stats", {}) else None
    if checks is not None and checks["instance_role_policies"]["ok"]:
        pytest.skip("the twin attaches AmazonSSMManagedInstanceCore to the instance role")
    assert rc != 0
    assert "is not ready for application-consistent snapshots" in text


def test_alibaba_non_essd_disk_is_reported(twin_factory, tmp_path):
    volumes = [dict(ALI_VOLUMES[0]), {"device": "/dev/xvdb", "size": 100, "type": "cloud_efficiency"}]
    twins = twin_factory({"instances": [{"provider": "alicloud", "id": "i-bp1prereq000000001", "name": "ali",
                                         "platform": "linux", "zone": "cn-hangzhou-h", "volumes": volumes}]}, aws=False)
    hosts = {"ali": {"prerequisites_provider": "alicloud", "ecs_instance_id": "i-bp1prereq000000001"}}
    rc, report = run_checks(tmp_path, hosts, twins.endpoints, {"prerequisites_fail_when_not_ready": False,
                                                               "prerequisites_ram_role_name": "AppSnapshotRole"})
    assert rc == 0, report["failures"]
    check = report["global_custom_stats"]["reports"]["ali"]["checks"][0]
    assert check["ok"] is False
    assert "ESSD" in check["detail"], check
