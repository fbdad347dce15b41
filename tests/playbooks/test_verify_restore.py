"""verify_restore on both twins: a set restored to scratch volumes on a local verification instance, its
filesystem checked on this machine (verify_host=localhost, the twins expose attached images under
``<store>/instances/<instance>/<device>``), then the scratch volumes removed with restored_volumes_remove."""

import json
import os
import subprocess

import pytest

from alibabacloud_ecs20140526 import models as ecs_models

from ansible_collections.appconsistent.snapshots.plugins.module_utils import snapshot_set as ss
from playbooks.conftest import fleet_inventory
from playbooks.conftest import playbook_vars
from playbooks.conftest import read_report
from twin.launcher import start_twins

REGION = "cn-hangzhou"
TAG = "appconsistent:restored-from"
DEVICE_PATH = "{{ appconsistent_twin_store }}/instances/{{ verify_instance_id }}/{{ appconsistent_volume.device | basename }}"
CHECK = 'grep -q "verify me" "$APPCONSISTENT_MOUNT/pattern.txt" && echo pattern found'

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting the restored images needs root")


def make_image(path, text):
    content = str(path) + ".d"
    os.makedirs(content, exist_ok=True)
    with open(os.path.join(content, "pattern.txt"), "w", encoding="utf-8") as handle:
        handle.write(text)
    with open(path, "wb") as handle:
        handle.truncate(32 * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", content, str(path)], check=True, capture_output=True)
    return str(path)


def fleet(base):
    boot_aws = {"device": "/dev/xvda", "size": 8, "boot": True}
    boot_ali = {"device": "/dev/xvda", "size": 40, "type": "cloud_essd", "boot": True}
    return {"instances": [
        {"provider": "aws", "name": "web-1", "platform": "linux", "zone": "us-east-1a",
         "volumes": [boot_aws, {"device": "/dev/xvdf", "size": 1, "image": make_image(base / "aws.img", "verify me aws\n")}]},
        {"provider": "aws", "name": "verifier", "platform": "linux", "zone": "us-east-1a", "execution": "local",
         "volumes": [boot_aws]},
        {"provider": "alicloud", "id": "i-bp1verify000000000a1", "name": "ali-web-1", "platform": "linux",
         "zone": "cn-hangzhou-h",
         "volumes": [boot_ali, {"device": "/dev/xvdb", "size": 1, "type": "cloud_essd",
                                "image": make_image(base / "ali.img", "verify me ali\n")}]},
        {"provider": "alicloud", "id": "i-bp1verify000000000a2", "name": "ali-verifier", "platform": "linux",
         "zone": "cn-hangzhou-h", "execution": "local", "volumes": [boot_ali]},
    ]}


def take_aws_set(twins, instance_id):
    ec2 = twins.aws_client("ec2")
    mappings = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["BlockDeviceMappings"]
    device_of = {m["Ebs"]["VolumeId"]: m["DeviceName"] for m in mappings}
    set_id = ss.new_set_id()
    snaps = ec2.create_snapshots(
        InstanceSpecification={"InstanceId": instance_id, "ExcludeBootVolume": True},
        TagSpecifications=[{"ResourceType": "snapshot", "Tags": [
            {"Key": k, "Value": v} for k, v in ss.set_tags(set_id, instance_id, "application").items()]}])["Snapshots"]
    for snap in snaps:
        ec2.create_tags(Resources=[snap["SnapshotId"]], Tags=[{"Key": ss.TAG_DEVICE, "Value": device_of[snap["VolumeId"]]}])
    return set_id


def take_ali_set(twins, instance_id):
    client = twins.ecs_client()
    disks = client.describe_disks(ecs_models.DescribeDisksRequest(region_id=REGION, instance_id=instance_id)).body.disks.disk
    data = [d for d in disks if d.type == "data"]
    group_id = client.create_snapshot_group(ecs_models.CreateSnapshotGroupRequest(
        region_id=REGION, instance_id=instance_id, disk_id=[d.disk_id for d in data])).body.snapshot_group_id
    group = client.describe_snapshot_groups(ecs_models.DescribeSnapshotGroupsRequest(
        region_id=REGION, snapshot_group_id=[group_id])).body.snapshot_groups.snapshot_group[0]
    device_of = {d.disk_id: d.device for d in data}
    for snap in group.snapshots.snapshot:
        tags = dict(ss.set_tags(group_id, instance_id, "application"), **{ss.TAG_DEVICE: device_of[snap.source_disk_id]})
        client.tag_resources(ecs_models.TagResourcesRequest(
            region_id=REGION, resource_type="snapshot", resource_id=[snap.snapshot_id],
            tag=[ecs_models.TagResourcesRequestTag(key=k, value=v) for k, v in tags.items()]))
    return group_id


@pytest.fixture(scope="module")
def verify_twins(tmp_path_factory):
    base = tmp_path_factory.mktemp("verify")
    spec = fleet(base)
    twins = start_twins(json.loads(json.dumps(spec)), blockstore=str(base / "blocks"))
    try:
        yield twins, spec, base
    finally:
        twins.stop()


@pytest.mark.parametrize("provider,host,verifier", [("aws", "web-1", "verifier"), ("alicloud", "ali-web-1", "ali-verifier")])
def test_verify_restore_checks_the_set_and_removes_the_scratch_volumes(verify_twins, run_playbook, tmp_path, provider,
                                                                       host, verifier):
    twins, spec, base = verify_twins
    ids = dict(twins.endpoints["aws"]["instances"], **twins.endpoints["alicloud"]["instances"])
    set_id = take_aws_set(twins, ids[host]) if provider == "aws" else take_ali_set(twins, ids[host])
    inventory = fleet_inventory(tmp_path / "hosts.yml", twins, spec)
    reports = tmp_path / "reports"
    run = run_playbook("verify_restore", inventory, dict(
        playbook_vars(twins, reports), target=host, verify_instance_id=ids[verifier], verify_host="localhost",
        verify_profile="command", verify_command=CHECK, verify_device_path=DEVICE_PATH,
        appconsistent_twin_store=twins.blockstore.root))
    assert run.rc == 0, run
    (row,) = read_report(reports, "verify_restore")["hosts"]
    assert row["status"] == "ok" and row["set_id"] == set_id and row["provider"] == provider, row
    assert [c["result"] for c in row["checks"]] == ["ext4 clean", "ok: pattern found"], row["checks"]
    scratch = [v["volume_id"] for v in row["volumes"]]
    assert len(scratch) == 1
    assert [(r["volume_id"], r["action"], r["detached_from"]) for r in row["removed"]] == \
        [(scratch[0], "deleted", ids[verifier])]
    # nothing is left on the verification instance or in the cloud
    assert not os.listdir(os.path.join(twins.blockstore.root, "instances", ids[verifier]))
    if provider == "aws":
        left = twins.aws_client("ec2").describe_volumes(Filters=[{"Name": "tag-key", "Values": [TAG]}])["Volumes"]
    else:
        left = twins.ecs_client().describe_disks(ecs_models.DescribeDisksRequest(
            region_id=REGION, disk_ids=json.dumps(scratch))).body.disks.disk
    assert not left


@pytest.mark.parametrize("by", ["instance", "host"])
def test_verify_restore_refuses_the_production_instance_as_the_verifier(verify_twins, run_playbook, tmp_path, by):
    twins, spec, _base = verify_twins
    ids = twins.endpoints["aws"]["instances"]
    set_id = take_aws_set(twins, ids["web-1"])
    inventory = fleet_inventory(tmp_path / "hosts.yml", twins, spec)
    reports = tmp_path / "reports"
    twins.stats.reset()
    verifier = (ids["web-1"], "localhost") if by == "instance" else (ids["verifier"], "web-1")
    run = run_playbook("verify_restore", inventory, dict(
        playbook_vars(twins, reports), target="web-1", set_id=set_id, verify_instance_id=verifier[0],
        verify_host=verifier[1], verify_profile="command", verify_command=CHECK, verify_device_path=DEVICE_PATH,
        appconsistent_twin_store=twins.blockstore.root))
    assert run.rc != 0, run
    # Refused before anything was made: no volume created, attached or removed.
    counts = twins.stats.counts("aws")
    assert not any(counts.get(call) for call in ("CreateVolume", "AttachVolume", "DetachVolume", "DeleteVolume")), counts
    (row,) = read_report(reports, "verify_restore")["hosts"]
    assert row["status"] == "failed" and "never on the production one" in row["error"], row
    assert row["volumes"] == [] and row["removed"] == []
