"""snapshot_set_prune's retention schedule on both twins, over 400 days of daily sets per instance.

The history is seeded into each twin in one step (the twins' seeding), the sets to keep are worked out here
from the history itself, and the prune must keep exactly those, a locked set outside the schedule with them.
"""

import datetime

import pytest
from alibabacloud_ecs20140526 import models as ecs_models
from test_snapshot_set_info import ali_region
from test_snapshot_set_info import writes

from ansible_collections.appconsistent.snapshots.plugins.module_utils import snapshot_set as ss
from twin.alicloud.seeding import seed_snapshot_groups
from twin.aws.seeding import seed_snapshots

PRUNE = "appconsistent.snapshots.snapshot_set_prune"
DAYS = 400
SCHEDULE = {"keep_daily": 7, "keep_weekly": 4, "keep_monthly": 12, "keep_yearly": 3}
# The deletes are paced to the account's limits (published: 100 tokens refilling 5 a second, so the ~830 deletes
# of a run take almost three minutes). The twin and the task are both given a raised limit, as after a granted
# increase, so that the test is quick and the twin still refuses what the limit would refuse.
RAISED = {"DeleteSnapshot": {"capacity": 100, "refill": 100}, "DeleteSnapshotGroup": {"capacity": 100, "refill": 100}}
TWIN_RAISED = {"DeleteSnapshot": RAISED["DeleteSnapshot"], "alicloud:DeleteSnapshotGroup": RAISED["DeleteSnapshotGroup"]}
PUBLISHED_DELETES = (100, 5)
ALI_A = "i-bp1hist00000000001"
ALI_B = "i-bp1hist00000000002"
# One small volume per AWS instance; two ESSD disks per Alibaba instance, taken on alternate days, as a disk
# holds at most 256 snapshots and 400 days would be more.
FLEET = {"instances": [
    {"provider": "aws", "name": "hist-a", "platform": "linux", "volumes": [{"device": "/dev/xvda", "size": 1, "boot": True}]},
    {"provider": "aws", "name": "hist-b", "platform": "linux", "volumes": [{"device": "/dev/xvda", "size": 1, "boot": True}]},
] + [{"provider": "alicloud", "id": instance, "name": name, "platform": "linux", "zone": "cn-hangzhou-h",
      "volumes": [{"device": "/dev/xvda", "size": 20, "type": "cloud_essd", "boot": True},
                  {"device": "/dev/xvdb", "size": 20, "type": "cloud_essd"}]}
     for instance, name in ((ALI_A, "hist-ali-a"), (ALI_B, "hist-ali-b"))]}


def history(instances, today):
    """[(instance, created, consistency)]: a set at 06:00 UTC on each of the DAYS days before today.

    The second instance also has a crash-consistent set at 18:00 every fifth day (newer than that day's
    application-consistent set, so it would take the day if it were counted), and every tenth day its 06:00 set is
    only filesystem-consistent, so that day has no set the schedule counts.
    """
    sets = []
    for number, instance in enumerate(instances):
        for back in range(1, DAYS + 1):
            day = datetime.datetime.combine(today - datetime.timedelta(days=back), datetime.time(6),
                                            tzinfo=datetime.timezone.utc)
            sets.append((instance, day, "filesystem" if number and back % 10 == 0 else "application"))
            if number and back % 5 == 0:
                sets.append((instance, day + datetime.timedelta(hours=12), "crash"))
    return sets


def expected_schedule(sets):
    """{set_id} the schedule keeps, worked out from the history: per instance and generation, the newest
    application-consistent set of each period, then the periods newest first, as many as the generation keeps."""
    keys = {"keep_daily": lambda t: t.date(), "keep_weekly": lambda t: t.isocalendar()[:2],
            "keep_monthly": lambda t: (t.year, t.month), "keep_yearly": lambda t: t.year}
    kept = set()
    for instance in {s["instance"] for s in sets}:
        mine = [s for s in sets if s["instance"] == instance and s["consistency"] == "application"]
        for option, count in SCHEDULE.items():
            newest = {}
            for item in mine:
                key = keys[option](item["created"])
                if key not in newest or item["created"] > newest[key]["created"]:
                    newest[key] = item
            kept |= {newest[key]["set_id"] for key in sorted(newest, reverse=True)[:count]}
    return kept


def seed_aws(twins, today):
    ec2 = twins.aws_client("ec2")
    instances = [twins.endpoints["aws"]["instances"][n] for n in ("hist-a", "hist-b")]
    volume = {}
    for reservation in ec2.describe_instances(InstanceIds=instances)["Reservations"]:
        for described in reservation["Instances"]:
            volume[described["InstanceId"]] = described["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
    sets, specs = [], []
    for instance, created, consistency in history(instances, today):
        set_id = ss.new_set_id(created)
        sets.append(dict(set_id=set_id, instance=instance, created=created, consistency=consistency))
        specs.append(dict(volume_id=volume[instance], start_time=created,
                          tags=ss.set_tags(set_id, instance, consistency, device="/dev/xvda", members=1)))
    for item, snapshot_id in zip(sets, seed_snapshots(twins.aws, specs)):
        item["snapshot_ids"] = [snapshot_id]
    return sets


def seed_alicloud(twins, today):
    ecs = twins.ecs_client()
    disks = {}
    for instance in (ALI_A, ALI_B):
        body = ecs.describe_disks(ecs_models.DescribeDisksRequest(region_id=ali_region(twins), instance_id=instance))
        disks[instance] = sorted((d["DiskId"], d["Device"]) for d in body.body.to_map()["Disks"]["Disk"])
    sets, specs = [], []
    for number, (instance, created, consistency) in enumerate(history((ALI_A, ALI_B), today)):
        disk_id, device = disks[instance][number % 2]
        sets.append(dict(instance=instance, created=created, consistency=consistency))
        specs.append(dict(instance_id=instance, disk_ids=[disk_id], created=created.timestamp(),
                          tags=ss.set_tags("{group_id}", instance, consistency, device=device, members=1)))
    for item, group_id in zip(sets, seed_snapshot_groups(twins.alicloud, specs)):
        item["set_id"] = group_id
    return sets


def lock_set(twins, provider, item):
    """Lock a set's members with the provider's own call; returns when the lock ends."""
    if provider == "aws":
        ec2 = twins.aws_client("ec2")
        untils = [ec2.lock_snapshot(SnapshotId=s, LockMode="governance", LockDuration=3)["LockExpiresOn"]
                  for s in item["snapshot_ids"]]
        return ss.format_instant(max(untils))
    ecs = twins.ecs_client()
    group = ecs.describe_snapshot_groups(ecs_models.DescribeSnapshotGroupsRequest(
        region_id=ali_region(twins), snapshot_group_id=[item["set_id"]])).body.to_map()["SnapshotGroups"]["SnapshotGroup"][0]
    untils = [ecs.lock_snapshot(ecs_models.LockSnapshotRequest(
        region_id=ali_region(twins), snapshot_id=s["SnapshotId"], lock_mode="compliance", lock_duration=3,
        cool_off_period=1)).body.locked_snapshot_info.lock_expired_time for s in group["Snapshots"]["Snapshot"]]
    return ss.format_instant(max(ss.parse_instant(u) for u in untils))


def remaining_set_ids(twins, provider):
    if provider == "aws":
        pages = twins.aws_client("ec2").get_paginator("describe_snapshots").paginate(OwnerIds=["self"])
        return {t["Value"] for page in pages for s in page["Snapshots"] for t in s.get("Tags") or []
                if t["Key"] == ss.TAG_SET_ID}
    ecs = twins.ecs_client()
    found, token = set(), None
    while True:
        body = ecs.describe_snapshot_groups(ecs_models.DescribeSnapshotGroupsRequest(
            region_id=ali_region(twins), max_results=100, next_token=token)).body.to_map()
        found |= {g["SnapshotGroupId"] for g in body["SnapshotGroups"]["SnapshotGroup"]}
        token = body.get("NextToken")
        if not token:
            return found


@pytest.mark.parametrize("provider", ["aws", "alicloud"])
def test_a_400_day_history_keeps_exactly_the_schedule_and_a_locked_set(provider, twin_factory, run_tasks):
    twins = twin_factory(FLEET, alicloud=provider == "alicloud", aws=provider == "aws", limits=TWIN_RAISED)
    today = datetime.datetime.now(datetime.timezone.utc).date()
    sets = seed_aws(twins, today) if provider == "aws" else seed_alicloud(twins, today)
    assert len(sets) == 2 * DAYS + DAYS // 5
    by_id = {s["set_id"]: s for s in sets}
    expected = expected_schedule(sets)
    # A set the schedule does not keep, about 200 days back, locked.
    locked = next(s for s in sets if s["set_id"] not in expected and (today - s["created"].date()).days >= 200)
    locked_until = lock_set(twins, provider, locked)
    keep = expected | {locked["set_id"]}
    assert 40 < len(expected) < 60  # 7 + 4 + 12 + 2 (two calendar years) per instance, less the overlaps
    twins.stats.reset()

    task = {PRUNE: dict(provider=provider, **SCHEDULE)}
    check = run_tasks([dict(task, register="prune")], twins.endpoints, check=True)["prune"]
    assert not check.get("failed"), check.get("msg")
    assert set(check["would_delete"]) == set(by_id) - keep
    assert {e["set_id"] for e in check["kept"]} == keep
    assert writes(twins, provider) == {}
    # One delete call per set (one snapshot each on AWS, one group each on Alibaba Cloud), at the published pace.
    capacity, refill = PUBLISHED_DELETES
    assert check["api_pacing"]["estimated_floor_s"] == round((len(by_id) - len(keep) - capacity) / refill, 1)

    task[PRUNE]["api_rate_limits"] = RAISED
    run = run_tasks([dict(task, register="prune"), dict(task, register="again")], twins.endpoints)
    result = run["prune"]
    assert not result.get("failed") and not result["failed_sets"], result.get("msg")
    assert {e["set_id"] for e in result["deleted"]} == set(by_id) - keep
    assert remaining_set_ids(twins, provider) == keep
    kept = {e["set_id"]: e for e in result["kept"]}
    assert kept[locked["set_id"]]["reason_code"] == "locked"
    assert kept[locked["set_id"]]["reasons"] == [f"locked until {locked_until}"]
    assert kept[locked["set_id"]]["locked_until"] == locked_until
    # The newest set of an instance is the day's, the week's, the month's and the year's, and the protected one.
    newest = max((s for s in sets if s["instance"] == sets[0]["instance"]), key=lambda s: s["created"])
    day = newest["created"]
    assert kept[newest["set_id"]]["reasons"][:4] == [
        f"daily {day:%Y-%m-%d}", f"weekly {day.isocalendar()[0]}-W{day.isocalendar()[1]:02d}", f"monthly {day:%Y-%m}",
        f"yearly {day:%Y}"]
    assert "newest application-consistent" in kept[newest["set_id"]]["reasons"][4]
    # Counted sets only: no crash or filesystem set is kept, though some are the newest of their day.
    assert {by_id[s]["consistency"] for s in expected} == {"application"}
    assert run["again"]["changed"] is False and run["again"]["deleted"] == []


def test_a_schedule_that_means_nothing_is_refused_before_any_call(twin_factory, run_tasks):
    twins = twin_factory(alicloud=False)
    twins.stats.reset()
    asked = {"negative": {"keep_weekly": -2}, "empty": {"keep_daily": 0, "keep_yearly": 0},
             "alone": {"min_consistency": "filesystem"}, "contradiction": {"keep_daily": 7, "expired": False}}
    run = run_tasks([{PRUNE: dict(provider="aws", **options), "register": name} for name, options in asked.items()],
                    twins.endpoints)
    assert run["negative"]["msg"] == "keep_weekly must be 0 or more, got -2."
    assert run["empty"]["msg"].startswith("The retention schedule keeps nothing (keep_daily: 0, keep_yearly: 0)")
    assert run["alone"]["msg"].startswith("min_consistency chooses the sets a retention schedule counts")
    assert run["contradiction"]["msg"].startswith("expired: false has no meaning with a retention schedule")
    assert all(run[name]["failed"] is True for name in asked)
    assert twins.stats.counts("aws") == {}
