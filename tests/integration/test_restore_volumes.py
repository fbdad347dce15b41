"""restore_volumes against both twins: real ansible-playbook runs, real block data, faults and rollback."""

import contextlib
import json
import os
import subprocess
import types
import urllib.request

import pytest

from alibabacloud_ecs20140526 import models as ecs_models

from ansible_collections.appconsistent.snapshots.plugins.module_utils import snapshot_set as ss
from twin.alicloud.testing import mounted_readonly
from twin.launcher import start_twins

RESTORE = "appconsistent.snapshots.restore_volumes"
REGION = "cn-hangzhou"


# --- helpers ------------------------------------------------------------------------------------


def make_image(path, size_mib, files):
    """An ext4 image holding ``files`` ({name: text}), built without mounting anything."""
    content = str(path) + ".d"
    os.makedirs(content, exist_ok=True)
    for name, text in files.items():
        with open(os.path.join(content, name), "w", encoding="utf-8") as handle:
            handle.write(text)
    if not os.path.exists(path):
        with open(path, "wb") as handle:
            handle.truncate(size_mib * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", content, str(path)], check=True, capture_output=True)
    return str(path)


def read_file(image, name, workdir):
    with mounted_readonly(image, str(workdir)) as mount:
        with open(os.path.join(mount, name), encoding="utf-8") as handle:
            return handle.read()


def twin_state(url):
    with urllib.request.urlopen(url.rstrip("/") + "/_twin/state", timeout=10) as response:
        return json.load(response)


def tags(item):
    return {t["Key"]: t["Value"] for t in item.get("Tags") or []}


def aws_instance(ec2, instance_id):
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


def aws_devices(ec2, instance_id):
    return {m["DeviceName"]: m["Ebs"]["VolumeId"] for m in aws_instance(ec2, instance_id)["BlockDeviceMappings"]}


def take_aws_set(twins, instance_id, consistency="application", exclude_boot=True):
    """A set made the way the collection makes them: CreateSnapshots plus the set tags, device per member."""
    ec2 = twins.aws_client("ec2")
    set_id = ss.new_set_id()
    device_of = {v: d for d, v in aws_devices(ec2, instance_id).items()}
    snaps = ec2.create_snapshots(
        InstanceSpecification={"InstanceId": instance_id, "ExcludeBootVolume": exclude_boot},
        TagSpecifications=[{"ResourceType": "snapshot", "Tags": [
            {"Key": k, "Value": v} for k, v in ss.set_tags(set_id, instance_id, consistency).items()]}])["Snapshots"]
    for snap in snaps:
        ec2.create_tags(Resources=[snap["SnapshotId"]], Tags=[{"Key": ss.TAG_DEVICE, "Value": device_of[snap["VolumeId"]]}])
    return set_id, {device_of[s["VolumeId"]]: s["SnapshotId"] for s in snaps}


def ecs(twins):
    return twins.ecs_client()


def ali_disks(twins, instance_id):
    body = ecs(twins).describe_disks(ecs_models.DescribeDisksRequest(region_id=REGION, instance_id=instance_id)).body
    return {d.device: d for d in body.disks.disk}


def ali_instance_status(twins, instance_id):
    body = ecs(twins).describe_instances(ecs_models.DescribeInstancesRequest(
        region_id=REGION, instance_ids=json.dumps([instance_id]))).body
    return body.instances.instance[0].status


def take_ali_set(twins, instance_id, consistency="application", disk_ids=None):
    """A snapshot-consistent group tagged as the collection tags its sets (group id = set id)."""
    client = ecs(twins)
    group_id = client.create_snapshot_group(ecs_models.CreateSnapshotGroupRequest(
        region_id=REGION, instance_id=instance_id, disk_id=disk_ids)).body.snapshot_group_id
    group = client.describe_snapshot_groups(ecs_models.DescribeSnapshotGroupsRequest(
        region_id=REGION, snapshot_group_id=[group_id])).body.snapshot_groups.snapshot_group[0]
    device_of = {d.disk_id: dev for dev, d in ali_disks(twins, instance_id).items()}
    members = {}
    for snap in group.snapshots.snapshot:
        device = device_of[snap.source_disk_id]
        set_tags = dict(ss.set_tags(group_id, instance_id, consistency), **{ss.TAG_DEVICE: device})
        client.tag_resources(ecs_models.TagResourcesRequest(
            region_id=REGION, resource_type="snapshot", resource_id=[snap.snapshot_id],
            tag=[ecs_models.TagResourcesRequestTag(key=k, value=v) for k, v in set_tags.items()]))
        members[device] = snap.snapshot_id
    return group_id, members


def disk_tags(disk):
    return {t.tag_key: t.tag_value for t in (disk.tags.tag if disk.tags else [])}


# --- one twin pair for the module: every test has instances of its own ------------------------------

DATA_VOLUMES = [{"device": "/dev/xvda", "size": 8, "boot": True},
                {"device": "/dev/xvdf", "size": 20, "type": "io2", "iops": 4000},
                {"device": "/dev/xvdg", "size": 10, "type": "gp3", "iops": 3000, "throughput": 250}]
KMS_KEY = "arn:aws:kms:eu-west-1:123456789012:key/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
PROPS_VOLUMES = DATA_VOLUMES + [{"device": "/dev/xvdh", "size": 5, "type": "gp3", "encrypted": True, "kms_key_id": KMS_KEY}]
AWS_NAMES = ("props", "check", "modes", "refuse", "timeout", "concurrency", "by-ids",
             "fault-attach", "fault-create", "fault-stop", "fault-start", "fault-detach")
ALI_NAMES = ("ali-check", "ali-attach", "ali-nostop", "ali-attachfail", "ali-createfail", "ali-ids", "ali-slowdisk",
             "ali-other-dst", "ali-swapfail")


def aws_instance_spec(name, volumes=None, **extra):
    return dict({"provider": "aws", "name": name, "platform": "linux", "volumes": volumes or DATA_VOLUMES}, **extra)


def ali_instance_spec(name, image=None):
    data = {"device": "/dev/xvdb", "size": 1 if image else 100, "type": "cloud_essd"}
    if image:
        data["image"] = image
    return {"provider": "alicloud", "name": name, "platform": "linux", "zone": "cn-hangzhou-h",
            "volumes": [{"device": "/dev/xvda", "size": 40, "type": "cloud_essd", "boot": True}, data]}


@pytest.fixture(scope="module")
def clouds(tmp_path_factory):
    base = tmp_path_factory.mktemp("restore")
    images = {
        "aws": make_image(base / "aws-data.img", 64, {"pattern.txt": "known pattern 4242\n"}),
        "ali-data": make_image(base / "ali-data.img", 64, {"pattern.txt": "ali pattern 777\n"}),
        "ali-resetfail": make_image(base / "ali-resetfail.img", 64, {"pattern.txt": "in the set\n"}),
        "ali-nostart": make_image(base / "ali-nostart.img", 64, {"pattern.txt": "in the set\n"}),
        "ali-other-src": make_image(base / "ali-other-src.img", 64, {"pattern.txt": "other instance 31337\n"}),
    }
    instances = [aws_instance_spec(n, PROPS_VOLUMES if n == "props" else None) for n in AWS_NAMES]
    instances += [aws_instance_spec("data", [{"device": "/dev/xvda", "size": 8, "boot": True},
                                             {"device": "/dev/xvdf", "size": 1, "image": images["aws"]}]),
                  aws_instance_spec("incomplete", faults={"snapshot_error": True}),
                  aws_instance_spec("scratch", [{"device": "/dev/xvda", "size": 8, "boot": True}]),
                  aws_instance_spec("spare", [{"device": "/dev/xvda", "size": 8, "boot": True}])]
    instances += [ali_instance_spec(n) for n in ALI_NAMES]
    instances += [ali_instance_spec(n, images[n]) for n in ("ali-data", "ali-resetfail", "ali-nostart", "ali-other-src")]
    twins = start_twins({"instances": instances}, blockstore=str(base / "blocks"))
    try:
        yield types.SimpleNamespace(twins=twins, images=images, workdir=base)
    finally:
        twins.stop()


def aws_id(clouds, name):
    return clouds.twins.endpoints["aws"]["instances"][name]


def ali_id(clouds, name):
    return clouds.twins.endpoints["alicloud"]["instances"][name]


# --- AWS --------------------------------------------------------------------------------------------


def test_aws_replace_brings_the_data_back_and_keeps_the_originals(clouds, run_tasks, tmp_path):
    twins = clouds.twins
    iid = aws_id(clouds, "data")
    ec2 = twins.aws_client("ec2")
    set_id, members = take_aws_set(twins, iid)
    original = aws_devices(ec2, iid)["/dev/xvdf"]
    state = twin_state(twins.endpoints["aws"]["endpoint_url"])
    original_image = next(v["image"] for v in state["volumes"] if v["id"] == original)
    make_image(original_image, 0, {"pattern.txt": "overwritten after the set\n"})

    run = run_tasks([{RESTORE: {"set_id": set_id}, "register": "restore"}], twins.endpoints)
    result = run["restore"]
    assert result["changed"] is True and not result.get("failed"), result.get("msg")
    (entry,) = result["device_map"]
    assert (entry["device"], entry["snapshot_id"], entry["original_volume_id"]) == ("/dev/xvdf", members["/dev/xvdf"], original)
    assert result["instance_state"] == "running"
    assert aws_instance(ec2, iid)["State"]["Name"] == "running"
    assert {"create_seconds", "stop_seconds", "swap_seconds", "start_seconds", "total_seconds"} <= set(result["timings"])

    devices = aws_devices(ec2, iid)
    assert devices["/dev/xvdf"] == entry["volume_id"] != original
    state = twin_state(twins.endpoints["aws"]["endpoint_url"])
    images = {v["id"]: v["image"] for v in state["volumes"]}
    assert read_file(images[entry["volume_id"]], "pattern.txt", tmp_path) == "known pattern 4242\n"
    # nothing the user had is lost: the original still exists, with its newer data, tagged
    kept = ec2.describe_volumes(VolumeIds=[original])["Volumes"][0]
    assert kept["State"] == "available"
    assert tags(kept)["appconsistent:replaced-by"] == entry["volume_id"]
    assert ss.parse_instant(tags(kept)["appconsistent:replaced-at"]) is not None
    assert read_file(images[original], "pattern.txt", tmp_path) == "overwritten after the set\n"
    new = ec2.describe_volumes(VolumeIds=[entry["volume_id"]])["Volumes"][0]
    assert tags(new)["appconsistent:restored-from"] == members["/dev/xvdf"]
    assert tags(new)["appconsistent:restored-from-set"] == set_id


def test_aws_replace_keeps_volume_properties_and_is_idempotent(clouds, run_tasks):
    twins = clouds.twins
    iid = aws_id(clouds, "props")
    ec2 = twins.aws_client("ec2")
    set_id, members = take_aws_set(twins, iid)
    before = aws_devices(ec2, iid)
    task = {RESTORE: {"instance_id": iid, "latest": True}}
    run = run_tasks([dict(task, register="first"), dict(task, register="second")], twins.endpoints)
    first, second = run["first"], run["second"]
    assert first["changed"] is True and not first.get("failed"), first.get("msg")
    assert first["set"]["set_id"] == set_id
    assert second["changed"] is False and not second.get("failed"), second.get("msg")
    assert all(e["unchanged"] for e in second["device_map"])
    after = aws_devices(ec2, iid)
    assert after["/dev/xvda"] == before["/dev/xvda"]  # the boot volume was not in the set
    data = ("/dev/xvdf", "/dev/xvdg", "/dev/xvdh")
    new = {v["VolumeId"]: v for v in ec2.describe_volumes(VolumeIds=[after[d] for d in data])["Volumes"]}
    xvdf, xvdg, xvdh = (new[after[d]] for d in data)
    assert (xvdf["VolumeType"], xvdf["Size"], xvdf["Iops"], xvdf["SnapshotId"]) == ("io2", 20, 4000, members["/dev/xvdf"])
    assert (xvdg["VolumeType"], xvdg["Size"], xvdg["Throughput"]) == ("gp3", 10, 250)
    # encryption and the KMS key of the volume it replaces
    assert (xvdh["Encrypted"], xvdh.get("KmsKeyId"), xvdh["SnapshotId"]) == (True, KMS_KEY, members["/dev/xvdh"])
    assert after["/dev/xvdh"] != before["/dev/xvdh"]
    assert {e["volume_id"] for e in second["device_map"]} == {after[d] for d in data}


def test_check_mode_and_diff_change_nothing_on_either_cloud(clouds, run_tasks):
    twins = clouds.twins
    iid, ali = aws_id(clouds, "check"), ali_id(clouds, "ali-check")
    ec2 = twins.aws_client("ec2")
    set_id, members = take_aws_set(twins, iid)
    group_id = take_ali_set(twins, ali)[0]
    before = aws_devices(ec2, iid)
    volumes_before = len(ec2.describe_volumes()["Volumes"])
    twins.stats.reset()
    run = run_tasks([{RESTORE: {"set_id": set_id, "volume_size": 30}, "register": "plan", "diff": True},
                     {RESTORE: {"set_id": group_id}, "register": "ali_plan"}], twins.endpoints, check=True)
    plan = run["plan"]
    assert plan["changed"] is True and not plan.get("failed"), plan.get("msg")
    assert {e["device"]: e["snapshot_id"] for e in plan["device_map"]} == members
    assert all(e["volume_id"] is None and e["volume"]["size"] == 30 for e in plan["device_map"])
    assert plan["diff"]["before"] == before
    assert plan["diff"]["after"]["/dev/xvdf"] == f"(new volume from {members['/dev/xvdf']})"
    assert plan["diff"]["after"]["/dev/xvda"] == before["/dev/xvda"]
    counts = twins.stats.counts("aws")
    for action in ("CreateVolume", "StopInstances", "DetachVolume", "AttachVolume", "CreateTags"):
        assert counts.get(action, 0) == 0, action
    assert aws_devices(ec2, iid) == before and len(ec2.describe_volumes()["Volumes"]) == volumes_before

    ali_plan = run["ali_plan"]
    assert ali_plan["changed"] is True and not ali_plan.get("failed"), ali_plan.get("msg")
    assert len(ali_plan["device_map"]) == 2
    counts = twins.stats.counts("alicloud")
    for action in ("StopInstance", "ResetDisk", "CreateSnapshotGroup", "TagResources", "CreateDisk"):
        assert counts.get(action, 0) == 0, action
    assert ali_instance_status(twins, ali) == "Running"


def test_snapshot_ids_select_the_snapshots_on_either_cloud(clouds, run_tasks):
    twins = clouds.twins
    iid, ali = aws_id(clouds, "by-ids"), ali_id(clouds, "ali-ids")
    ec2 = twins.aws_client("ec2")
    set_id, members = take_aws_set(twins, iid)
    group_id, ali_members = take_ali_set(twins, ali)
    ali_before = {dev: d.disk_id for dev, d in ali_disks(twins, ali).items()}
    task = {RESTORE: {"snapshot_ids": sorted(members.values()), "volume_size": 25}}
    run = run_tasks([dict(task, register="first"), dict(task, register="second"),
                     {RESTORE: {"snapshot_ids": sorted(ali_members.values()), "mode": "volumes"}, "register": "ali"}],
                    twins.endpoints)
    first = run["first"]
    assert first["changed"] is True and not first.get("failed"), first.get("msg")
    assert (first["provider"], first["set"]["set_id"], first["instance_id"]) == ("aws", set_id, iid)
    assert {e["device"]: e["snapshot_id"] for e in first["device_map"]} == members
    devices = aws_devices(ec2, iid)
    new = {v["VolumeId"]: v for v in ec2.describe_volumes(VolumeIds=[devices["/dev/xvdf"], devices["/dev/xvdg"]])["Volumes"]}
    # the type of the volume each one replaces, at the larger size asked for
    assert {(v["SnapshotId"], v["VolumeType"], v["Size"]) for v in new.values()} == {
        (members["/dev/xvdf"], "io2", 25), (members["/dev/xvdg"], "gp3", 25)}
    assert run["second"]["changed"] is False and not run["second"].get("failed"), run["second"].get("msg")

    ali_result = run["ali"]
    assert ali_result["changed"] is True and not ali_result.get("failed"), ali_result.get("msg")
    assert (ali_result["provider"], ali_result["set"]["set_id"]) == ("alicloud", group_id)
    made = {e["snapshot_id"]: e["volume_id"] for e in ali_result["device_map"]}
    assert set(made) == set(ali_members.values())
    body = ecs(twins).describe_disks(ecs_models.DescribeDisksRequest(
        region_id=REGION, disk_ids=json.dumps(list(made.values())))).body
    assert {(d.source_snapshot_id, d.disk_id, d.status) for d in body.disks.disk} == {
        (snap, disk, "Available") for snap, disk in made.items()}
    assert {dev: d.disk_id for dev, d in ali_disks(twins, ali).items()} == ali_before  # volumes only: nothing attached


def test_aws_attach_and_volumes_modes(clouds, run_tasks):
    twins = clouds.twins
    iid, scratch = aws_id(clouds, "modes"), aws_id(clouds, "scratch")
    ec2 = twins.aws_client("ec2")
    set_id, members = take_aws_set(twins, iid)
    twins.stats.reset()
    run = run_tasks([
        {RESTORE: {"set_id": set_id, "mode": "attach", "target_instance_id": scratch}, "register": "attach"},
        {RESTORE: {"set_id": set_id, "mode": "attach", "target_instance_id": scratch}, "register": "again"},
        {RESTORE: {"set_id": set_id, "mode": "volumes"}, "register": "volumes"},
        {RESTORE: {"set_id": set_id, "mode": "volumes"}, "register": "volumes_again"},
        {RESTORE: {"set_id": set_id, "target_instance_id": aws_id(clouds, "spare")}, "register": "elsewhere"},
    ], twins.endpoints)
    attach, again, volumes = run["attach"], run["again"], run["volumes"]
    assert attach["changed"] is True and not attach.get("failed"), attach.get("msg")
    devices = aws_devices(ec2, scratch)
    assert set(devices) == {"/dev/xvda"} | {e["device"] for e in attach["device_map"]}
    for entry in attach["device_map"]:
        assert devices[entry["device"]] == entry["volume_id"]
    assert aws_instance(ec2, scratch)["State"]["Name"] == "running"
    assert twins.stats.counts("aws").get("StopInstances", 0) == 1  # the replace onto the spare instance, not attach
    assert again["changed"] is False
    assert volumes["changed"] is True and not volumes.get("failed"), volumes.get("msg")
    created = ec2.describe_volumes(VolumeIds=[e["volume_id"] for e in volumes["device_map"]])["Volumes"]
    assert {v["State"] for v in created} == {"available"}
    assert {v["SnapshotId"] for v in created} == set(members.values())
    assert run["volumes_again"]["changed"] is False
    assert {e["volume_id"] for e in run["volumes_again"]["device_map"]} == {v["VolumeId"] for v in created}
    # replace onto another instance: the set's devices, next to that instance's own boot volume
    elsewhere = run["elsewhere"]
    assert elsewhere["changed"] is True and not elsewhere.get("failed"), elsewhere.get("msg")
    spare = aws_devices(ec2, aws_id(clouds, "spare"))
    assert set(spare) == {"/dev/xvda", "/dev/xvdf", "/dev/xvdg"}
    assert {spare[e["device"]] for e in elsewhere["device_map"]} == {e["volume_id"] for e in elsewhere["device_map"]}
    assert aws_devices(ec2, iid)["/dev/xvdf"] not in spare.values()  # the source instance is untouched


def test_aws_refuses_weaker_and_incomplete_sets_unless_allowed(clouds, run_tasks):
    twins = clouds.twins
    iid = aws_id(clouds, "refuse")
    ec2 = twins.aws_client("ec2")
    crash_set = take_aws_set(twins, iid, consistency="crash")[0]
    incomplete_set = take_aws_set(twins, aws_id(clouds, "incomplete"))[0]
    before = aws_devices(ec2, iid)
    run = run_tasks([
        {RESTORE: {"set_id": crash_set}, "register": "refused"},
        {RESTORE: {"instance_id": iid, "latest": True}, "register": "none_qualifies"},
        {RESTORE: {"set_id": crash_set, "allow_lower_consistency": True, "mode": "volumes"}, "register": "allowed"},
        {RESTORE: {"set_id": incomplete_set}, "register": "incomplete"},
        {RESTORE: {"set_id": incomplete_set, "allow_incomplete": True}, "register": "incomplete_allowed"},
    ], twins.endpoints)
    assert run["refused"]["failed"] is True
    assert "less than the required application" in run["refused"]["msg"]
    assert "allow_lower_consistency" in run["refused"]["msg"]
    assert run["none_qualifies"]["failed"] is True and crash_set in run["none_qualifies"]["msg"]
    assert run["allowed"]["changed"] is True and not run["allowed"].get("failed")
    assert "restoring it because allow_lower_consistency is set" in run.stdout + run.stderr
    assert run["incomplete"]["failed"] is True
    assert "incomplete" in run["incomplete"]["msg"] and "allow_incomplete" in run["incomplete"]["msg"]
    # allowed, only the completed members are restored: every member of this set failed, so there is none
    assert run["incomplete_allowed"]["failed"] is True
    assert "has no completed snapshot to restore" in run["incomplete_allowed"]["msg"], run["incomplete_allowed"]["msg"]
    assert aws_devices(ec2, iid) == before


def _assert_rolled_back(twins, iid, before, result):
    ec2 = twins.aws_client("ec2")
    assert result["failed"] is True
    assert "rolled back" in result["msg"] or "no volume was detached" in result["msg"], result["msg"]
    assert aws_devices(ec2, iid) == before
    assert aws_instance(ec2, iid)["State"]["Name"] == "running"
    created = [e["volume_id"] for e in result["device_map"] if e.get("volume_id")]
    for volume in ec2.describe_volumes(VolumeIds=created)["Volumes"] if created else []:
        assert "appconsistent:restore-failed" in tags(volume)
        assert volume["State"] in ("available", "creating")  # detached, never deleted
    originals = ec2.describe_volumes(VolumeIds=list(before.values()))["Volumes"]
    assert all("appconsistent:replaced-by" not in tags(v) for v in originals)
    return created


@contextlib.contextmanager
def failing_calls(twins, provider, action, code, first, last=None):
    """Answer calls number ``first``..``last`` (1-based, inclusive; None: every later one) of ``action`` with ``code``."""
    counted = {"n": 0}
    original = twins.faults.api_error

    def api_error(prov, name):
        if prov == provider and name == action:
            counted["n"] += 1
            if counted["n"] >= first and (last is None or counted["n"] <= last):
                return code
        return original(prov, name)
    twins.faults.api_error = api_error
    try:
        yield counted
    finally:
        twins.faults.api_error = original


@contextlib.contextmanager
def latency(twins, spec):
    twins.latency.update(spec)
    try:
        yield
    finally:
        twins.latency.update("zero")


@pytest.mark.parametrize("name, action, code, first, last, words", [
    # the second volume's attach fails; the re-attach of the originals goes through
    ("fault-attach", "AttachVolume", "IncorrectState", 2, 2, "Failed to attach volume"),
    ("fault-create", "CreateVolume", "InsufficientVolumeCapacity", 2, None, "Failed to create a volume"),
    ("fault-stop", "StopInstances", "UnsupportedOperation", 1, None, "did not stop"),
    ("fault-start", "StartInstances", "InsufficientInstanceCapacity", 1, 1, "Failed to start instance"),
    # throttled past the retries (2 attempts)
    ("fault-detach", "DetachVolume", "RequestLimitExceeded", 2, 3, "RequestLimitExceeded"),
])
def test_aws_fault_part_way_rolls_back_to_the_originals(
        clouds, run_tasks, monkeypatch, name, action, code, first, last, words):
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's own retries off: the module's retries are under test
    twins = clouds.twins
    iid = aws_id(clouds, name)
    set_id = take_aws_set(twins, iid)[0]
    before = aws_devices(twins.aws_client("ec2"), iid)
    with failing_calls(twins, "aws", action, code, first, last):
        run = run_tasks([{RESTORE: {"set_id": set_id, "aws_max_attempts": 2}, "register": "restore"}], twins.endpoints)
    result = run["restore"]
    assert words in result["msg"], result["msg"]
    assert not result["rollback_problems"], result["rollback_problems"]
    _assert_rolled_back(twins, iid, before, result)


def test_aws_volume_that_never_becomes_available_rolls_back(clouds, run_tasks):
    twins = clouds.twins
    iid = aws_id(clouds, "timeout")
    set_id = take_aws_set(twins, iid)[0]
    before = aws_devices(twins.aws_client("ec2"), iid)
    with latency(twins, {"profile": "zero", "transitions": {"volume_create": 600}}):
        run = run_tasks([{RESTORE: {"set_id": set_id, "volume_timeout": 2}, "register": "restore"}], twins.endpoints)
    result = run["restore"]
    assert "volume creation did not finish within 2 s" in result["msg"], result["msg"]
    assert len(_assert_rolled_back(twins, iid, before, result)) == 2


def test_aws_volumes_are_created_before_any_is_waited_for_and_throttling_is_absorbed(clouds, run_tasks, monkeypatch):
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's own retries off: the module's retries are under test
    twins = clouds.twins
    iid = aws_id(clouds, "concurrency")
    set_id = take_aws_set(twins, iid)[0]
    calls = []
    with failing_calls(twins, "aws", "CreateVolume", "RequestLimitExceeded", 1, 1):
        throttled = twins.faults.api_error

        def record(provider, name):
            calls.append(name)
            return throttled(provider, name)
        twins.faults.api_error = record
        with latency(twins, {"profile": "zero", "transitions": {"volume_create": 0.5, "volume_attach": 0.5}}):
            run = run_tasks([{RESTORE: {"set_id": set_id}, "register": "restore"}], twins.endpoints)
    result = run["restore"]
    assert result["changed"] is True and not result.get("failed"), result.get("msg")
    assert aws_devices(twins.aws_client("ec2"), iid)["/dev/xvdf"] == result["device_map"][0]["volume_id"]
    creates = [n for n, name in enumerate(calls) if name == "CreateVolume"]
    attaches = [n for n, name in enumerate(calls) if name == "AttachVolume"]
    assert len(creates) == 3 and len(attaches) == 2  # the first creation was throttled once and retried
    assert creates == list(range(creates[0], creates[0] + 3))  # no wait between the creations
    assert attaches[1] == attaches[0] + 1
    polls = [name for name in calls[creates[-1]:attaches[0]] if name == "DescribeVolumes"]
    assert polls  # the creations were waited for, together


# --- Alibaba Cloud ----------------------------------------------------------------------------------


def test_alicloud_replace_resets_the_disks_in_place_with_a_safety_group(clouds, run_tasks, tmp_path):
    twins = clouds.twins
    image = clouds.images["ali-data"]
    iid = ali_id(clouds, "ali-data")
    data_disk = ali_disks(twins, iid)["/dev/xvdb"].disk_id
    group_id, members = take_ali_set(twins, iid, disk_ids=[data_disk])
    make_image(image, 0, {"pattern.txt": "overwritten on alibaba\n"})

    run = run_tasks([{RESTORE: {"snapshot_group_id": group_id}, "register": "restore", "diff": True}], twins.endpoints)
    result = run["restore"]
    assert result["changed"] is True and not result.get("failed"), result.get("msg")
    (entry,) = result["device_map"]
    assert (entry["device"], entry["snapshot_id"], entry["volume_id"]) == ("/dev/xvdb", members["/dev/xvdb"], data_disk)
    assert read_file(image, "pattern.txt", tmp_path) == "ali pattern 777\n"
    assert ali_instance_status(twins, iid) == "Running" and result["instance_state"] == "running"
    disk = ali_disks(twins, iid)["/dev/xvdb"]
    assert disk_tags(disk)["appconsistent:restored-from"] == members["/dev/xvdb"]
    # the data the disk held before the reset is kept in the safety group, an offline set of its own
    safety = result["safety_snapshot_group_id"]
    group = ecs(twins).describe_snapshot_groups(ecs_models.DescribeSnapshotGroupsRequest(
        region_id=REGION, snapshot_group_id=[safety])).body.snapshot_groups.snapshot_group[0]
    assert group.status == "accomplished"
    snap_tags = {t.key: t.value for t in group.snapshots.snapshot[0].tags.tag}
    assert snap_tags["appconsistent:consistency"] == "offline" and snap_tags["appconsistent:set-id"] == safety
    assert entry["safety_snapshot_id"] == group.snapshots.snapshot[0].snapshot_id
    state = twin_state("http://" + twins.endpoints["alicloud"]["endpoint"])
    safety_image = next(s["image"] for s in state["snapshots"] if s["id"] == entry["safety_snapshot_id"])
    assert read_file(safety_image, "pattern.txt", tmp_path) == "overwritten on alibaba\n"
    assert result["diff"]["before"]["/dev/xvdb"].startswith(data_disk)
    assert members["/dev/xvdb"] in result["diff"]["after"]["/dev/xvdb"]

    again = run_tasks([{RESTORE: {"snapshot_group_id": group_id}, "register": "again"}], twins.endpoints)["again"]
    assert again["changed"] is False and not again.get("failed"), again.get("msg")


def test_alicloud_attach_mode_creates_disks_from_the_snapshots(clouds, run_tasks):
    twins = clouds.twins
    iid = ali_id(clouds, "ali-attach")
    group_id = take_ali_set(twins, iid)[0]
    before = {dev: d.disk_id for dev, d in ali_disks(twins, iid).items()}
    run = run_tasks([{RESTORE: {"snapshot_group_id": group_id, "mode": "attach"}, "register": "attach"}], twins.endpoints)
    result = run["attach"]
    assert result["changed"] is True and not result.get("failed"), result.get("msg")
    after = ali_disks(twins, iid)
    for dev, disk_id in before.items():
        assert after[dev].disk_id == disk_id
    for entry in result["device_map"]:
        disk = after[entry["device"]]
        assert disk.disk_id == entry["volume_id"] and disk.source_snapshot_id == entry["snapshot_id"]
    assert ali_instance_status(twins, iid) == "Running"


def test_alicloud_reset_failure_part_way_resets_back_from_the_safety_group(clouds, run_tasks, tmp_path):
    twins = clouds.twins
    image = clouds.images["ali-resetfail"]
    iid = ali_id(clouds, "ali-resetfail")
    group_id = take_ali_set(twins, iid)[0]
    make_image(image, 0, {"pattern.txt": "current data\n"})
    # the second disk's reset is throttled beyond the retries (2 attempts)
    with failing_calls(twins, "alicloud", "ResetDisk", "Throttling.User", 2, 3):
        run = run_tasks([{RESTORE: {"snapshot_group_id": group_id, "alicloud_max_attempts": 2}, "register": "restore"}],
                        twins.endpoints)
    result = run["restore"]
    assert result["failed"] is True and "rolled back" in result["msg"], result["msg"]
    assert "Throttling" in result["msg"] and "safety snapshot group" in result["msg"]
    assert not result["rollback_problems"]
    assert read_file(image, "pattern.txt", tmp_path) == "current data\n"
    assert ali_instance_status(twins, iid) == "Running"
    disks = ali_disks(twins, iid)
    assert "appconsistent:restore-failed" in disk_tags(disks["/dev/xvdb"])


def test_alicloud_instance_that_will_not_stop_changes_nothing(clouds, run_tasks):
    twins = clouds.twins
    iid = ali_id(clouds, "ali-nostop")
    group_id = take_ali_set(twins, iid)[0]
    twins.stats.reset()
    with failing_calls(twins, "alicloud", "StopInstance", "IncorrectInstanceStatus", 1):
        run = run_tasks([{RESTORE: {"snapshot_group_id": group_id}, "register": "restore"}], twins.endpoints)
    result = run["restore"]
    assert result["failed"] is True and "did not stop" in result["msg"] and "no disk was reset" in result["msg"]
    assert twins.stats.counts("alicloud").get("ResetDisk", 0) == 0
    assert ali_instance_status(twins, iid) == "Running"


def test_alicloud_attach_failure_detaches_the_new_disks(clouds, run_tasks):
    twins = clouds.twins
    iid = ali_id(clouds, "ali-attachfail")
    group_id = take_ali_set(twins, iid)[0]
    before = {dev: d.disk_id for dev, d in ali_disks(twins, iid).items()}
    with failing_calls(twins, "alicloud", "AttachDisk", "InvalidOperation.Conflict", 2):
        run = run_tasks([{RESTORE: {"snapshot_group_id": group_id, "mode": "attach"}, "register": "restore"}],
                        twins.endpoints)
    result = run["restore"]
    assert result["failed"] is True and "attaching the restored volumes failed" in result["msg"], result["msg"]
    assert {dev: d.disk_id for dev, d in ali_disks(twins, iid).items()} == before


def test_alicloud_disk_creation_error_leaves_the_instance_as_it_was(clouds, run_tasks):
    twins = clouds.twins
    iid = ali_id(clouds, "ali-createfail")
    group_id = take_ali_set(twins, iid)[0]
    before = {dev: d.disk_id for dev, d in ali_disks(twins, iid).items()}
    with failing_calls(twins, "alicloud", "CreateDisk", "QuotaExceed.DiskCapacity", 2):
        run = run_tasks([{RESTORE: {"snapshot_group_id": group_id, "mode": "attach"}, "register": "restore"}],
                        twins.endpoints)
    result = run["restore"]
    assert result["failed"] is True and "creating the volumes failed" in result["msg"], result["msg"]
    assert "QuotaExceed.DiskCapacity" in result["msg"]
    assert {dev: d.disk_id for dev, d in ali_disks(twins, iid).items()} == before
    (made,) = [e["volume_id"] for e in result["device_map"] if e["volume_id"]]
    body = ecs(twins).describe_disks(ecs_models.DescribeDisksRequest(region_id=REGION, disk_ids=json.dumps([made]))).body
    assert "appconsistent:restore-failed" in disk_tags(body.disks.disk[0])  # kept, tagged, never deleted
    assert ali_instance_status(twins, iid) == "Running"


def test_alicloud_replace_onto_another_instance_creates_disks_at_the_sets_devices(clouds, run_tasks, tmp_path):
    twins = clouds.twins
    source, target = ali_id(clouds, "ali-other-src"), ali_id(clouds, "ali-other-dst")
    group_id, members = take_ali_set(twins, source, disk_ids=[ali_disks(twins, source)["/dev/xvdb"].disk_id])
    before = {dev: d.disk_id for dev, d in ali_disks(twins, target).items()}
    source_before = {dev: d.disk_id for dev, d in ali_disks(twins, source).items()}
    twins.stats.reset()
    run = run_tasks([{RESTORE: {"snapshot_group_id": group_id, "target_instance_id": target}, "register": "restore"}],
                    twins.endpoints)
    result = run["restore"]
    assert result["changed"] is True and not result.get("failed"), result.get("msg")
    (entry,) = result["device_map"]
    assert (entry["device"], entry["snapshot_id"], entry["original_volume_id"], entry["outcome"]) == \
        ("/dev/xvdb", members["/dev/xvdb"], before["/dev/xvdb"], "replaced")
    counts = twins.stats.counts("alicloud")
    assert counts.get("ResetDisk", 0) == 0 and counts.get("CreateDisk") == 1  # another instance: CreateDisk, not ResetDisk
    after = ali_disks(twins, target)
    assert after["/dev/xvda"].disk_id == before["/dev/xvda"]
    assert after["/dev/xvdb"].disk_id == entry["volume_id"] and after["/dev/xvdb"].source_snapshot_id == members["/dev/xvdb"]
    assert ali_instance_status(twins, target) == "Running" and result["instance_state"] == "running"
    state = twin_state("http://" + twins.endpoints["alicloud"]["endpoint"])
    image = next(v["image"] for v in state["volumes"] if v["id"] == entry["volume_id"])
    assert read_file(image, "pattern.txt", tmp_path) == "other instance 31337\n"
    # the disk it replaced is kept, detached and tagged
    body = ecs(twins).describe_disks(ecs_models.DescribeDisksRequest(
        region_id=REGION, disk_ids=json.dumps([before["/dev/xvdb"]]))).body
    (original,) = body.disks.disk
    assert original.status == "Available" and disk_tags(original)["appconsistent:replaced-by"] == entry["volume_id"]
    assert {dev: d.disk_id for dev, d in ali_disks(twins, source).items()} == source_before  # the source is untouched


def test_alicloud_attach_failure_during_replace_attaches_the_original_disks_again(clouds, run_tasks):
    twins = clouds.twins
    source, target = ali_id(clouds, "ali-other-src"), ali_id(clouds, "ali-swapfail")
    group_id = take_ali_set(twins, source, disk_ids=[ali_disks(twins, source)["/dev/xvdb"].disk_id])[0]
    before = {dev: d.disk_id for dev, d in ali_disks(twins, target).items()}
    # the new disk's AttachDisk fails after the original was detached; the original's re-attach goes through
    with failing_calls(twins, "alicloud", "AttachDisk", "InvalidOperation.Conflict", 1, 1) as counted:
        run = run_tasks([{RESTORE: {"snapshot_group_id": group_id, "target_instance_id": target}, "register": "restore"}],
                        twins.endpoints)
    result = run["restore"]
    assert counted["n"] == 2
    assert result["failed"] is True and "rolled back" in result["msg"], result["msg"]
    assert "InvalidOperation.Conflict" in result["msg"]
    assert not result["rollback_problems"], result["rollback_problems"]
    (entry,) = result["device_map"]
    assert entry["outcome"] == f"rolled back: original {before['/dev/xvdb']} attached again"
    assert {dev: d.disk_id for dev, d in ali_disks(twins, target).items()} == before
    assert ali_instance_status(twins, target) == "Running" and result["instance_state"] == "running"
    body = ecs(twins).describe_disks(ecs_models.DescribeDisksRequest(
        region_id=REGION, disk_ids=json.dumps([entry["volume_id"], before["/dev/xvdb"]]))).body
    found = {d.disk_id: d for d in body.disks.disk}
    new, original = found[entry["volume_id"]], found[before["/dev/xvdb"]]
    assert new.status == "Available" and "appconsistent:restore-failed" in disk_tags(new)  # kept, never deleted
    assert "appconsistent:replaced-by" not in disk_tags(original)


def test_alicloud_instance_that_will_not_start_after_the_reset_is_reset_back(clouds, run_tasks, tmp_path):
    twins = clouds.twins
    image = clouds.images["ali-nostart"]
    iid = ali_id(clouds, "ali-nostart")
    group_id = take_ali_set(twins, iid, disk_ids=[ali_disks(twins, iid)["/dev/xvdb"].disk_id])[0]
    make_image(image, 0, {"pattern.txt": "current data\n"})
    # the first StartInstance (after the reset) fails; the one after the rollback goes through
    with failing_calls(twins, "alicloud", "StartInstance", "OperationDenied.NoStock", 1, 1) as counted:
        run = run_tasks([{RESTORE: {"snapshot_group_id": group_id}, "register": "restore"}], twins.endpoints)
    result = run["restore"]
    assert counted["n"] == 2
    assert result["failed"] is True and "rolled back" in result["msg"], result["msg"]
    assert "OperationDenied.NoStock" in result["msg"] and "safety snapshot group" in result["msg"]
    assert not result["rollback_problems"], result["rollback_problems"]
    (entry,) = result["device_map"]
    assert entry["outcome"].startswith("rolled back: reset to safety snapshot")
    assert read_file(image, "pattern.txt", tmp_path) == "current data\n"
    assert ali_instance_status(twins, iid) == "Running" and result["instance_state"] == "running"
    tags_now = disk_tags(ali_disks(twins, iid)["/dev/xvdb"])
    assert "appconsistent:restore-failed" in tags_now and not tags_now.get("appconsistent:restored-from")


def test_alicloud_disk_that_never_becomes_available_leaves_the_instance_as_it_was(clouds, run_tasks):
    twins = clouds.twins
    iid = ali_id(clouds, "ali-slowdisk")
    group_id = take_ali_set(twins, iid)[0]
    before = {dev: d.disk_id for dev, d in ali_disks(twins, iid).items()}
    with latency(twins, {"profile": "zero", "transitions": {"volume_create": 600}}):
        run = run_tasks([{RESTORE: {"snapshot_group_id": group_id, "mode": "attach", "volume_timeout": 2},
                          "register": "restore"}], twins.endpoints)
    result = run["restore"]
    assert result["failed"] is True, result
    assert "volume creation did not finish within 2 s" in result["msg"] and "no volume was detached" in result["msg"]
    made = [e["volume_id"] for e in result["device_map"] if e["volume_id"]]
    assert len(made) == 2
    assert {dev: d.disk_id for dev, d in ali_disks(twins, iid).items()} == before
    body = ecs(twins).describe_disks(ecs_models.DescribeDisksRequest(region_id=REGION, disk_ids=json.dumps(made))).body
    assert len(body.disks.disk) == 2
    assert all("appconsistent:restore-failed" in disk_tags(d) and not d.instance_id for d in body.disks.disk)
    assert ali_instance_status(twins, iid) == "Running"
