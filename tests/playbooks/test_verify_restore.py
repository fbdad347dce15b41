"""verify_restore on both twins: a set restored to scratch volumes on a local verification instance, its
filesystem checked on this machine (verify_host=localhost, the twins expose attached images under
``<store>/instances/<instance>/<device>``), then the scratch volumes removed with restored_volumes_remove."""

import json
import os
import random
import subprocess
import time

import pytest

from alibabacloud_ecs20140526 import models as ecs_models

from ansible_collections.appconsistent.snapshots.plugins.module_utils import snapshot_set as ss
from ansible_collections.appconsistent.snapshots.plugins.module_utils.set_inventory import order_sets
from playbooks.conftest import fleet_inventory
from playbooks.conftest import playbook_vars
from playbooks.conftest import read_report
from twin.launcher import start_twins

REGION = "cn-hangzhou"
TAG = "appconsistent:restored-from"
RECORD_TAG = "appconsistent:verification"
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
    assert run.rc == 0, run.stdout[-12000:]
    (row,) = read_report(reports, "verify_restore")["hosts"]
    assert row["status"] == "ok" and row["set_id"] == set_id and row["provider"] == provider, row
    assert [c["result"] for c in row["checks"]] == ["ext4 clean", "ok: pattern found"], row["checks"]
    # The outcome is on every snapshot of the set, and the report shows it.
    assert row["verification"]["result"] == "passed" and row["verification"]["verified"] is True, row
    assert row["verification"]["checks"] == ["fs:ext4", "app:command"], row["verification"]
    assert isinstance(row["verification"]["seconds_to_application"], float)
    assert set(member_records(twins, provider, set_id)) == {" ".join(
        ["passed", row["verification"]["verified_at"], f"{row['verification']['seconds_to_application']:.1f}s",
         "fs:ext4,app:command"])}
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


def member_records(twins, provider, set_id):
    """The appconsistent:verification value of each member of a set, as the cloud holds it."""
    if provider == "aws":
        snaps = twins.aws_client("ec2").describe_snapshots(
            Filters=[{"Name": "tag:" + ss.TAG_SET_ID, "Values": [set_id]}])["Snapshots"]
        return [{t["Key"]: t["Value"] for t in s.get("Tags") or []}.get(RECORD_TAG) for s in snaps]
    snaps = twins.ecs_client().describe_snapshots(ecs_models.DescribeSnapshotsRequest(
        region_id=REGION, tag=[ecs_models.DescribeSnapshotsRequestTag(key=ss.TAG_SET_ID, value=set_id)])).body.to_map()
    return [{t["TagKey"]: t["TagValue"] for t in s["Tags"]["Tag"]}.get(RECORD_TAG) for s in snaps["Snapshots"]["Snapshot"]]


@pytest.mark.parametrize("provider,host,verifier", [("aws", "web-1", "verifier"), ("alicloud", "ali-web-1", "ali-verifier")])
def test_a_failed_application_check_is_recorded_as_a_failure(
        verify_twins, run_playbook, tmp_path, provider, host, verifier):
    twins, spec, _base = verify_twins
    ids = dict(twins.endpoints["aws"]["instances"], **twins.endpoints["alicloud"]["instances"])
    set_id = take_aws_set(twins, ids[host]) if provider == "aws" else take_ali_set(twins, ids[host])
    inventory = fleet_inventory(tmp_path / "hosts.yml", twins, spec)
    reports = tmp_path / "reports"
    run = run_playbook("verify_restore", inventory, dict(
        playbook_vars(twins, reports), target=host, set_id=set_id, verify_instance_id=ids[verifier],
        verify_host="localhost", verify_profile="command", verify_command='grep -q "not there" "$APPCONSISTENT_MOUNT/pattern.txt"',
        verify_device_path=DEVICE_PATH, appconsistent_twin_store=twins.blockstore.root))
    assert run.rc != 0, run
    (row,) = read_report(reports, "verify_restore")["hosts"]
    assert row["status"] == "failed" and row["verification"]["result"] == "failed", row
    assert row["verification"]["verified"] is False and row["verification"]["seconds_to_application"] is None
    records = member_records(twins, provider, set_id)
    assert records and all(r.startswith("failed ") and r.endswith(" - fs:ext4,app:command") for r in records), records
    # The scratch volumes went all the same.
    assert [r["action"] for r in row["removed"]] == ["deleted"]


def test_the_pick_is_the_newest_set_or_a_seeded_draw_within_the_window(verify_twins, run_playbook, tmp_path):
    twins, spec, _base = verify_twins
    ids = twins.endpoints["aws"]["instances"]
    for take in range(3):
        if take:
            time.sleep(1.1)  # sets of one instance a second apart, as snapshot_set_info tells creation times
        take_aws_set(twins, ids["web-1"])
    snaps = twins.aws_client("ec2").describe_snapshots(
        Filters=[{"Name": "tag:" + ss.TAG_INSTANCE_ID, "Values": [ids["web-1"]]}])["Snapshots"]
    # The candidates as snapshot_set_info orders them: newest first, then by set id.
    created = {}
    for snap in snaps:
        set_id = {t["Key"]: t["Value"] for t in snap["Tags"]}[ss.TAG_SET_ID]
        created[set_id] = min(created.get(set_id, snap["StartTime"]), snap["StartTime"])
    candidates = [s["set_id"] for s in order_sets(
        [{"set_id": k, "instance_id": "i", "created": v.isoformat()} for k, v in created.items()])]
    assert len(candidates) >= 3
    inventory = fleet_inventory(tmp_path / "hosts.yml", twins, spec)
    common = dict(target="web-1", verify_instance_id=ids["verifier"], verify_host="localhost", verify_profile="none",
                  verify_device_path=DEVICE_PATH, appconsistent_twin_store=twins.blockstore.root)
    picks = {}
    for name, extra in (("latest", {}), ("seeded", dict(verify_pick="random", verify_window="1d", verify_seed="s1"))):
        reports = tmp_path / name
        run = run_playbook("verify_restore", inventory, dict(playbook_vars(twins, reports), **common, **extra))
        assert run.rc == 0, run
        picks[name] = read_report(reports, "verify_restore")["hosts"][0]["set_id"]
    assert picks["latest"] == candidates[0]
    # Ansible's random filter with a seed draws with random.Random(seed): the same seed, the same set.
    assert picks["seeded"] == random.Random("s1 web-1").choice(sorted(candidates)), (picks, candidates)
    reports = tmp_path / "refused"
    run = run_playbook("verify_restore", inventory, dict(playbook_vars(twins, reports), **common, verify_window="1d"))
    assert run.rc != 0 and "verify_window" in str(run)


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
