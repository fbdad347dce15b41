"""Helpers for the tests of the collection's playbooks, run as a user runs them.

``fleet_inventory(twins, names)`` writes a YAML inventory whose hosts carry ``instance_id`` and
``platform``; ``playbook_vars(twins)`` gives the connection variables the playbooks read; the
``run_playbook`` fixture runs ``ansible-playbook appconsistent.snapshots.<name>``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from conftest import COLLECTIONS  # tests/ is on sys.path

ROLE = "AppSnapshotRole"
REPO_ROOT_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MIXED_FLEET = {
    "faults": {"ssm_delivery_timeout": 2},
    "instances": [
        {"provider": "aws", "name": "sql-1", "platform": "windows", "zone": "us-east-1b", "role": ROLE,
         "volumes": [{"device": "/dev/sda1", "size": 30, "boot": True}, {"device": "xvdf", "size": 50}]},
        {"provider": "aws", "name": "legacy-1", "platform": "linux", "zone": "us-east-1a",
         "agent": {"status": "connection_lost"},
         "volumes": [{"device": "/dev/xvda", "size": 8, "boot": True}, {"device": "/dev/xvdf", "size": 10}]},
        {"provider": "alicloud", "id": "i-bp1play0000000000a1", "name": "ali-web-1", "platform": "linux",
         "zone": "cn-hangzhou-h", "role": ROLE,
         "volumes": [{"device": "/dev/xvda", "size": 40, "type": "cloud_essd", "boot": True},
                     {"device": "/dev/xvdb", "size": 100, "type": "cloud_essd"}]},
        {"provider": "alicloud", "id": "i-bp1play0000000000a2", "name": "ali-sql-1", "platform": "windows",
         "zone": "cn-hangzhou-h", "role": ROLE,
         "volumes": [{"device": "/dev/xvda", "size": 40, "type": "cloud_essd", "boot": True},
                     {"device": "/dev/xvdb", "size": 100, "type": "cloud_essd"}]},
    ],
}


def instance_ids(twins):
    """Instance ids by name, both clouds."""
    ids = {}
    for provider in ("aws", "alicloud"):
        ids.update((twins.endpoints.get(provider) or {}).get("instances", {}))
    return ids


def fleet_inventory(path, twins, fleet, group="fleet", extra_hosts=None):
    """A YAML inventory of the fleet's instances in one group, as an operator would keep it."""
    ids = instance_ids(twins)
    hosts = {}
    for instance in fleet["instances"]:
        hosts[instance["name"]] = {"instance_id": ids[instance["name"]], "platform": instance["platform"]}
    hosts.update(extra_hosts or {})
    doc = {"all": {"children": {group: {"hosts": hosts}}}}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def playbook_vars(twins, report_dir=None):
    """The connection variables of the playbooks, from the twins' endpoints."""
    extra = {}
    aws = twins.endpoints.get("aws")
    if aws:
        extra["appconsistent_aws"] = {"endpoint_url": aws["endpoint_url"], "region": aws["region"],
                                      "access_key": aws["access_key_id"], "secret_key": aws["secret_access_key"]}
    ali = twins.endpoints.get("alicloud")
    if ali:
        extra["appconsistent_alicloud"] = {"alicloud_endpoint": ali["endpoint"], "alicloud_protocol": ali["protocol"],
                                           "alicloud_region": ali["region"], "alicloud_access_key": ali["access_key_id"],
                                           "alicloud_secret_key": ali["access_key_secret"]}
    extra["appconsistent_backup_options"] = {"alicloud": {"ram_role_name": ROLE}}
    if report_dir is not None:
        extra["appconsistent_report_dir"] = str(report_dir)
    return extra


def playbook_env():
    return dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_LOCALHOST_WARNING="false",
                ANSIBLE_NOCOLOR="1", ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_HOST_KEY_CHECKING="false")


class PlaybookResult:
    def __init__(self, proc):
        self.rc = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr

    def __repr__(self):
        return f"rc={self.rc}\n{self.stdout[-6000:]}\n{self.stderr[-3000:]}"


@pytest.fixture
def run_playbook(tmp_path):
    """run_playbook(name, inventory=None, extra_vars=None, check=False, extra_args=()) -> PlaybookResult."""

    def run(name, inventory=None, extra_vars=None, check=False, cwd=None, extra_args=()):
        cmd = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), f"appconsistent.snapshots.{name}"]
        if inventory is not None:
            cmd += ["-i", str(inventory)]
        if extra_vars:
            cmd += ["-e", json.dumps(extra_vars)]
        if check:
            cmd.append("--check")
        cmd += list(extra_args)
        proc = subprocess.run(cmd, env=playbook_env(), capture_output=True, text=True, timeout=600, check=False,
                              cwd=str(cwd or tmp_path))
        return PlaybookResult(proc)

    return run


def read_report(directory, name):
    with open(os.path.join(directory, f"{name}.json"), encoding="utf-8") as handle:
        return json.load(handle)


@pytest.fixture(scope="package")
def mixed_backup(tmp_path_factory):
    """fleet_backup of MIXED_FLEET, run once for the tests that read its outcome: (twins, result, report_dir)."""
    from twin.launcher import start_twins  # pylint: disable=import-outside-toplevel

    base = tmp_path_factory.mktemp("mixed")
    twins = start_twins(json.loads(json.dumps(MIXED_FLEET)))
    try:
        # A host the inventory gives no instance for: it fails alone, with the reason.
        inventory = fleet_inventory(base / "hosts.yml", twins, MIXED_FLEET, extra_hosts={"mystery": {"platform": "linux"}})
        reports = base / "reports"
        twins.stats.reset()
        cmd = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "appconsistent.snapshots.fleet_backup",
               "-i", str(inventory), "-e", json.dumps(dict(playbook_vars(twins, reports), target="fleet",
                                                           run_id="CHG-42", retention="3d"))]
        proc = subprocess.run(cmd, env=playbook_env(), capture_output=True, text=True, timeout=600, check=False,
                              cwd=str(base))
        yield twins, PlaybookResult(proc), reports
    finally:
        twins.stop()
