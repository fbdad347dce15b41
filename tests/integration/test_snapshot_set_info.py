"""snapshot_set_info against both twins: sets made the way the collection makes them, listed as an operator reads them."""

import time

from alibabacloud_ecs20140526 import models as ecs_models

from ansible_collections.appconsistent.snapshots.plugins.module_utils import snapshot_set as ss

INFO = "appconsistent.snapshots.snapshot_set_info"
ALI_WEB = "i-bp1twin00000000001"
ALI_WIN = "i-bp1twin00000000002"
PAST = "2020-01-01T00:00:00Z"
FUTURE = "2099-01-01T00:00:00Z"
# Both providers give creation times to the second: sets of one instance that are
# ranked by age are taken at least a second apart.
TICK = 1.1


def aws_instance(twins, name):
    return twins.endpoints["aws"]["instances"][name]


def aws_set(twins, name, consistency="application", run_id=None, delete_after=None):
    """A set as vss_snapshot and app_consistent_group leave it: CreateSnapshots, then our tags on every member."""
    ec2 = twins.aws_client("ec2")
    instance_id = aws_instance(twins, name)
    described = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    devices = {m["Ebs"]["VolumeId"]: m["DeviceName"] for m in described["BlockDeviceMappings"]}
    set_id = ss.new_set_id()
    tags = ss.set_tags(set_id, instance_id, consistency, run_id=run_id, delete_after=delete_after)
    created = ec2.create_snapshots(InstanceSpecification={"InstanceId": instance_id}, TagSpecifications=[
        {"ResourceType": "snapshot", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}])["Snapshots"]
    for snapshot in created:
        ec2.create_tags(Resources=[snapshot["SnapshotId"]],
                        Tags=[{"Key": ss.TAG_DEVICE, "Value": devices[snapshot["VolumeId"]]}])
    return set_id, sorted(s["SnapshotId"] for s in created)


def aws_snapshot_ids(twins):
    return {s["SnapshotId"] for s in twins.aws_client("ec2").describe_snapshots(OwnerIds=["self"])["Snapshots"]}


def ali_region(twins):
    return twins.endpoints["alicloud"]["region"]


def ali_group(twins, group_id):
    body = twins.ecs_client().describe_snapshot_groups(ecs_models.DescribeSnapshotGroupsRequest(
        region_id=ali_region(twins), snapshot_group_id=[group_id])).body.to_map()
    groups = body["SnapshotGroups"]["SnapshotGroup"]
    return groups[0] if groups else None


def ali_set(twins, instance_id, consistency="application", run_id=None, delete_after=None, tag_members=None):
    """A snapshot-consistent group, its snapshots tagged with the set's tags (``tag_members``: how many)."""
    ecs = twins.ecs_client()
    region = ali_region(twins)
    group_id = ecs.create_snapshot_group(ecs_models.CreateSnapshotGroupRequest(
        region_id=region, instance_id=instance_id)).body.snapshot_group_id
    disks = ecs.describe_disks(ecs_models.DescribeDisksRequest(region_id=region, instance_id=instance_id)).body.to_map()
    devices = {d["DiskId"]: d["Device"] for d in disks["Disks"]["Disk"]}
    members = ali_group(twins, group_id)["Snapshots"]["Snapshot"]
    for member in members[:tag_members]:
        tags = ss.set_tags(group_id, instance_id, consistency, device=devices[member["SourceDiskId"]], run_id=run_id,
                           delete_after=delete_after)
        ecs.tag_resources(ecs_models.TagResourcesRequest(
            region_id=region, resource_type="snapshot", resource_id=[member["SnapshotId"]],
            tag=[ecs_models.TagResourcesRequestTag(key=k, value=v) for k, v in tags.items()]))
    return group_id, sorted(m["SnapshotId"] for m in members)


def ali_snapshot_ids(twins):
    body = twins.ecs_client().describe_snapshots(ecs_models.DescribeSnapshotsRequest(
        region_id=ali_region(twins), max_results=100)).body.to_map()
    return {s["SnapshotId"] for s in body["Snapshots"]["Snapshot"]}


def writes(twins, provider):
    """API calls that could have changed something."""
    return {action: n for action, n in twins.stats.counts(provider).items() if not action.startswith(("Describe", "List"))}


def set_ids(result):
    return [s["set_id"] for s in result["sets"]]


def test_aws_sets_are_grouped_from_their_tags_and_filtered(twin_factory, run_tasks):
    twins = twin_factory(alicloud=False)
    web, db = aws_instance(twins, "web-1"), aws_instance(twins, "db-1")
    old_web, old_web_snaps = aws_set(twins, "web-1", run_id="CHG1", delete_after=PAST)
    crash_db, _snaps = aws_set(twins, "db-1", consistency="crash", run_id="CHG2")
    time.sleep(TICK)
    new_web, new_web_snaps = aws_set(twins, "web-1", consistency="filesystem", run_id="CHG2", delete_after=FUTURE)
    ec2 = twins.aws_client("ec2")
    volume = ec2.describe_volumes()["Volumes"][0]["VolumeId"]
    stray = ec2.create_snapshot(VolumeId=volume, TagSpecifications=[{"ResourceType": "snapshot", "Tags": [
        {"Key": ss.TAG_DELETE_AFTER, "Value": PAST}]}])["SnapshotId"]
    twins.stats.reset()

    run = run_tasks([
        {INFO: {"provider": "aws"}, "register": "all"},
        {INFO: {"provider": "aws", "run_id": "CHG2"}, "register": "run"},
        {INFO: {"provider": "aws", "instance_ids": [web]}, "register": "web"},
        {INFO: {"provider": "aws", "set_ids": [crash_db]}, "register": "by_id"},
        {INFO: {"provider": "aws", "min_consistency": "filesystem"}, "register": "filesystem"},
        {INFO: {"provider": "aws", "newest_only": True}, "register": "newest"},
        {INFO: {"provider": "aws", "min_consistency": "application", "newest_only": True}, "register": "newest_app"},
        {INFO: {"provider": "aws", "run_id": "NO-SUCH-RUN"}, "register": "nothing"},
    ], twins.endpoints)

    everything = run["all"]
    assert everything["changed"] is False and not everything.get("failed"), everything
    assert sorted(set_ids(everything)) == sorted([old_web, crash_db, new_web])
    assert all(stray not in [m["snapshot_id"] for m in s["members"]] for s in everything["sets"])
    by_id = {s["set_id"]: s for s in everything["sets"]}
    old = by_id[old_web]
    assert (old["provider"], old["instance_id"], old["run_id"], old["consistency"]) == ("aws", web, "CHG1", "application")
    assert old["complete"] is True and old["expired"] is True and old["delete_after"] == PAST
    assert sorted(m["snapshot_id"] for m in old["members"]) == old_web_snaps
    assert sorted((m["device"], m["size_gib"]) for m in old["members"]) == [("/dev/xvda", 8), ("/dev/xvdf", 20)]
    assert old["size_gib"] == 28
    assert {m["state"] for m in old["members"]} == {"completed"}
    assert {m["storage_tier"] for m in old["members"]} == {"standard"}
    assert all(m["volume_id"].startswith("vol-") for m in old["members"])
    assert by_id[new_web]["expired"] is False and by_id[new_web]["consistency"] == "filesystem"
    assert by_id[crash_db]["delete_after"] is None and by_id[crash_db]["size_gib"] == 108
    # Newest first within an instance.
    web_sets = [s["set_id"] for s in everything["sets"] if s["instance_id"] == web]
    assert web_sets == [new_web, old_web]
    assert sorted(m["snapshot_id"] for m in by_id[new_web]["members"]) == new_web_snaps

    assert sorted(set_ids(run["run"])) == sorted([crash_db, new_web])
    assert set_ids(run["web"]) == [new_web, old_web]
    assert set_ids(run["by_id"]) == [crash_db]
    assert sorted(set_ids(run["filesystem"])) == sorted([old_web, new_web])
    assert {s["instance_id"]: s["set_id"] for s in run["newest"]["sets"]} == {web: new_web, db: crash_db}
    assert set_ids(run["newest_app"]) == [old_web]
    assert run["nothing"]["sets"] == [] and not run["nothing"].get("failed")
    assert writes(twins, "aws") == {}


def test_check_mode_lists_the_same_and_changes_nothing(twin_factory, run_tasks):
    twins = twin_factory(alicloud=False)
    set_id, _snaps = aws_set(twins, "web-1", delete_after=PAST)
    twins.stats.reset()
    run = run_tasks([{INFO: {"provider": "aws"}, "register": "info"}], twins.endpoints, check=True)
    assert run["info"]["changed"] is False
    assert set_ids(run["info"]) == [set_id]
    assert writes(twins, "aws") == {}


def test_alicloud_groups_are_sets_only_when_their_snapshots_carry_the_tags(twin_factory, run_tasks):
    twins = twin_factory(aws=False)
    old, old_snaps = ali_set(twins, ALI_WEB, consistency="application", run_id="CHG1", delete_after=PAST)
    time.sleep(TICK)
    new, _snaps = ali_set(twins, ALI_WEB, consistency="filesystem", run_id="CHG2")
    win, _snaps = ali_set(twins, ALI_WIN, consistency="crash", run_id="CHG2")
    foreign, _snaps = ali_set(twins, ALI_WIN, tag_members=0)  # a group some other tool made
    twins.stats.reset()

    run = run_tasks([
        {INFO: {"provider": "alicloud"}, "register": "all"},
        {INFO: {"provider": "alicloud", "instance_ids": [ALI_WEB]}, "register": "web"},
        {INFO: {"provider": "alicloud", "set_ids": [win, foreign]}, "register": "by_id"},
        {INFO: {"provider": "alicloud", "run_id": "CHG2", "min_consistency": "filesystem"}, "register": "run_fs"},
        {INFO: {"provider": "alicloud", "min_consistency": "application", "newest_only": True}, "register": "newest_app"},
        {INFO: {"provider": "alicloud", "newest_only": True}, "register": "newest"},
        {INFO: {"provider": "alicloud", "instance_ids": ["i-bp1nosuchinstance0"]}, "register": "nothing"},
    ], twins.endpoints)

    everything = run["all"]
    assert not everything.get("failed"), everything
    assert sorted(set_ids(everything)) == sorted([old, new, win])
    first = {s["set_id"]: s for s in everything["sets"]}[old]
    assert (first["provider"], first["instance_id"], first["run_id"]) == ("alicloud", ALI_WEB, "CHG1")
    assert (first["consistency"], first["complete"], first["expired"], first["group_status"]) == \
        ("application", True, True, "accomplished")
    assert sorted(m["snapshot_id"] for m in first["members"]) == old_snaps
    assert sorted((m["device"], m["size_gib"]) for m in first["members"]) == [("/dev/xvda", 40), ("/dev/xvdb", 100)]
    assert first["size_gib"] == 140 and first["untagged_snapshot_ids"] == []
    assert {m["state"] for m in first["members"]} == {"accomplished"}
    assert all(m["disk_id"].startswith("d-") for m in first["members"])
    assert first["created"].endswith("Z")

    assert set_ids(run["web"]) == [new, old]
    assert set_ids(run["by_id"]) == [win]
    assert set_ids(run["run_fs"]) == [new]
    assert set_ids(run["newest_app"]) == [old]
    assert {s["instance_id"]: s["set_id"] for s in run["newest"]["sets"]} == {ALI_WEB: new, ALI_WIN: win}
    assert run["nothing"]["sets"] == []
    assert writes(twins, "alicloud") == {}


def test_bad_input_is_refused_with_a_clear_message(twin_factory, run_tasks):
    twins = twin_factory(alicloud=False)
    run = run_tasks([{INFO: {"provider": "aws", "run_id": "has space"}, "register": "bad_run"},
                     {INFO: {"provider": "gcp"}, "register": "bad_provider"}], twins.endpoints)
    assert run["bad_run"]["failed"] is True and "invalid run_id" in run["bad_run"]["msg"]
    assert run["bad_provider"]["failed"] is True and "provider" in run["bad_provider"]["msg"]
