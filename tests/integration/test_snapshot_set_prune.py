"""snapshot_set_prune against both twins: every rule, check mode, idempotent reruns, and what is never deleted."""

import time

from test_snapshot_set_info import ALI_WEB
from test_snapshot_set_info import ALI_WIN
from test_snapshot_set_info import FUTURE
from test_snapshot_set_info import PAST
from test_snapshot_set_info import TICK
from test_snapshot_set_info import ali_group
from test_snapshot_set_info import ali_set
from test_snapshot_set_info import ali_snapshot_ids
from test_snapshot_set_info import aws_instance
from test_snapshot_set_info import aws_set
from test_snapshot_set_info import aws_snapshot_ids
from test_snapshot_set_info import writes

from ansible_collections.appconsistent.snapshots.plugins.module_utils import snapshot_set as ss

PRUNE = "appconsistent.snapshots.snapshot_set_prune"
INFO = "appconsistent.snapshots.snapshot_set_info"


def ids(entries):
    return sorted(e["set_id"] for e in entries)


def kept_reasons(result):
    return {e["set_id"]: e["reason_code"] for e in result["kept"]}


def test_aws_expired_sets_go_check_mode_first_then_for_real_then_nothing(twin_factory, run_tasks):
    twins = twin_factory(alicloud=False)
    old_web, old_web_snaps = aws_set(twins, "web-1", delete_after=PAST, run_id="CHG1")
    db_crash, db_snaps = aws_set(twins, "db-1", consistency="crash", delete_after=PAST)
    time.sleep(TICK)
    new_web, new_web_snaps = aws_set(twins, "web-1", delete_after=FUTURE)
    forever, forever_snaps = aws_set(twins, "sql-1")
    ec2 = twins.aws_client("ec2")
    # Expired by its tag, but not a member of any set: never ours to delete.
    volume = ec2.describe_volumes()["Volumes"][0]["VolumeId"]
    stray = ec2.create_snapshot(VolumeId=volume, TagSpecifications=[{"ResourceType": "snapshot", "Tags": [
        {"Key": ss.TAG_DELETE_AFTER, "Value": PAST}, {"Key": ss.TAG_INSTANCE_ID, "Value": aws_instance(twins, "web-1")}]}])
    everything = aws_snapshot_ids(twins)
    twins.stats.reset()

    check = run_tasks([{PRUNE: {"provider": "aws"}, "register": "prune", "diff": True}], twins.endpoints, check=True)
    result = check["prune"]
    assert result["changed"] is True and not result.get("failed"), result
    assert ids(result["deleted"]) == sorted([old_web, db_crash])
    assert kept_reasons(result) == {new_web: "not_expired", forever: "no_delete_after"}
    assert aws_snapshot_ids(twins) == everything
    assert writes(twins, "aws") == {}
    assert sorted(result["diff"]["before"]["set_ids"]) == sorted([old_web, new_web, db_crash, forever])
    assert sorted(result["diff"]["after"]["set_ids"]) == sorted([new_web, forever])

    real = run_tasks([{PRUNE: {"provider": "aws"}, "register": "prune"},
                      {PRUNE: {"provider": "aws"}, "register": "again"}], twins.endpoints)
    result = real["prune"]
    assert result["changed"] is True and not result.get("failed"), result
    assert ids(result["deleted"]) == sorted([old_web, db_crash])
    deleted = {e["set_id"]: sorted(e["deleted_snapshot_ids"]) for e in result["deleted"]}
    assert deleted == {old_web: old_web_snaps, db_crash: db_snaps}
    assert aws_snapshot_ids(twins) == set(new_web_snaps) | set(forever_snaps) | {stray["SnapshotId"]}
    assert real["again"]["changed"] is False and real["again"]["deleted"] == []
    assert ids(real["again"]["kept"]) == sorted([new_web, forever])


def test_aws_newest_application_set_is_protected_unless_told_otherwise(twin_factory, run_tasks):
    twins = twin_factory(alicloud=False)
    only, only_snaps = aws_set(twins, "web-1", delete_after=PAST)
    filesystem, _snaps = aws_set(twins, "db-1", consistency="filesystem", delete_after=PAST)
    run = run_tasks([{PRUNE: {"provider": "aws"}, "register": "protected"}], twins.endpoints)
    result = run["protected"]
    assert result["changed"] is True, result
    assert ids(result["deleted"]) == [filesystem]  # protection is for application-consistent sets only
    assert kept_reasons(result) == {only: "newest_application"}
    assert "protect_newest_application" in result["kept"][0]["reason"]
    assert set(only_snaps) <= aws_snapshot_ids(twins)

    run = run_tasks([{PRUNE: {"provider": "aws", "protect_newest_application": False}, "register": "unprotected"}],
                    twins.endpoints)
    assert ids(run["unprotected"]["deleted"]) == [only]
    assert aws_snapshot_ids(twins) == set()


def test_aws_keep_n_newest_per_instance(twin_factory, run_tasks):
    twins = twin_factory(alicloud=False)
    oldest, _snaps = aws_set(twins, "web-1", delete_after=FUTURE)
    db_one, _snaps = aws_set(twins, "db-1", consistency="crash")
    time.sleep(TICK)
    newest_app, _snaps = aws_set(twins, "web-1", delete_after=FUTURE)
    db_two, _snaps = aws_set(twins, "db-1", consistency="crash")
    time.sleep(TICK)
    newest, _snaps = aws_set(twins, "web-1", consistency="filesystem", delete_after=FUTURE)
    run = run_tasks([{PRUNE: {"provider": "aws", "keep": 1, "expired": False}, "register": "keep_one"},
                     {PRUNE: {"provider": "aws", "keep": 1, "expired": False}, "register": "again"}], twins.endpoints)
    result = run["keep_one"]
    assert not result.get("failed"), result
    # web-1 keeps its newest set and, protected, its newest application-consistent one; db-1 keeps one.
    assert ids(result["deleted"]) == sorted([oldest, db_one])
    assert kept_reasons(result) == {newest: "within_keep", newest_app: "newest_application", db_two: "within_keep"}
    assert all("older than the 1 newest" in r for e in result["deleted"] for r in e["reasons"])
    assert run["again"]["changed"] is False


def test_aws_run_id_scopes_what_is_deleted_but_not_what_is_protected(twin_factory, run_tasks):
    twins = twin_factory(alicloud=False)
    earlier, _snaps = aws_set(twins, "web-1", run_id="CHG1", delete_after=PAST)
    time.sleep(TICK)
    later, _snaps = aws_set(twins, "web-1", run_id="CHG2", delete_after=PAST)
    run = run_tasks([{PRUNE: {"provider": "aws", "run_id": "CHG2"}, "register": "chg2"},
                     {PRUNE: {"provider": "aws", "run_id": "CHG1"}, "register": "chg1"}], twins.endpoints)
    # CHG2's set is web-1's newest application-consistent set: kept although it is the only one in scope.
    assert run["chg2"]["changed"] is False and run["chg2"]["deleted"] == []
    assert kept_reasons(run["chg2"]) == {later: "newest_application"}
    assert ids(run["chg1"]["deleted"]) == [earlier] and kept_reasons(run["chg1"]) == {}


def test_aws_set_with_a_member_in_use_by_an_ami_is_kept_whole(twin_factory, run_tasks):
    twins = twin_factory(alicloud=False)
    ec2 = twins.aws_client("ec2")
    web = aws_instance(twins, "web-1")
    image_id = ec2.create_image(InstanceId=web, Name="golden-web")["ImageId"]
    image = ec2.describe_images(ImageIds=[image_id])["Images"][0]
    in_image = image["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
    set_id, snaps = aws_set(twins, "web-1", delete_after=PAST)
    # The AMI's snapshot becomes a member of the set, as when an AMI is registered from a set.
    ec2.create_tags(Resources=[in_image], Tags=[{"Key": k, "Value": v} for k, v in ss.set_tags(
        set_id, web, "application", device="/dev/xvdg", delete_after=PAST).items()])
    other, _snaps = aws_set(twins, "db-1", consistency="crash", delete_after=PAST)
    run = run_tasks([{PRUNE: {"provider": "aws", "protect_newest_application": False}, "register": "prune"}],
                    twins.endpoints)
    result = run["prune"]
    assert not result.get("failed"), result
    assert ids(result["deleted"]) == [other]
    (kept,) = result["kept"]
    assert (kept["set_id"], kept["reason_code"]) == (set_id, "in_use_by_image")
    assert image_id in kept["reason"] and in_image in kept["reason"]
    assert set(snaps) | {in_image} <= aws_snapshot_ids(twins)


def test_aws_refusal_at_delete_time_is_reported_and_fails_the_task(twin_factory, run_tasks):
    twins = twin_factory(alicloud=False, faults={"api_errors": [
        {"provider": "aws", "action": "DeleteSnapshot", "code": "InvalidSnapshot.InUse", "count": 1}]})
    set_id, snaps = aws_set(twins, "db-1", consistency="crash", delete_after=PAST)
    run = run_tasks([{PRUNE: {"provider": "aws"}, "register": "prune"}], twins.endpoints)
    result = run["prune"]
    assert result["failed"] is True
    assert "1 sets could not be deleted completely" in result["msg"] and set_id in result["msg"]
    (failed,) = result["failed_sets"]
    assert failed["set_id"] == set_id and failed["error"]["code"] == "InvalidSnapshot.InUse"
    assert failed["deleted_snapshot_ids"] == [] and sorted(failed["remaining_snapshot_ids"]) == snaps
    assert set(snaps) <= aws_snapshot_ids(twins)


def test_nothing_to_prune_by_is_refused_before_any_call(twin_factory, run_tasks):
    twins = twin_factory(alicloud=False)
    aws_set(twins, "web-1", delete_after=PAST)
    twins.stats.reset()
    run = run_tasks([{PRUNE: {"provider": "aws", "expired": False}, "register": "nothing"},
                     {PRUNE: {"provider": "aws", "keep": -1}, "register": "negative"}], twins.endpoints)
    assert run["nothing"]["failed"] is True and "Nothing to prune by" in run["nothing"]["msg"]
    assert run["negative"]["failed"] is True and "keep must be 0 or more" in run["negative"]["msg"]
    assert twins.stats.counts("aws") == {}


def test_alicloud_expired_groups_are_deleted_with_their_snapshots(twin_factory, run_tasks):
    twins = twin_factory(aws=False)
    expired, expired_snaps = ali_set(twins, ALI_WEB, consistency="crash", delete_after=PAST)
    time.sleep(TICK)
    newest, newest_snaps = ali_set(twins, ALI_WEB, delete_after=PAST)
    foreign, foreign_snaps = ali_set(twins, ALI_WIN, tag_members=0)
    half, half_snaps = ali_set(twins, ALI_WIN, consistency="crash", delete_after=PAST, tag_members=1)
    twins.stats.reset()

    check = run_tasks([{PRUNE: {"provider": "alicloud"}, "register": "prune"}], twins.endpoints, check=True)
    assert check["prune"]["changed"] is True and ids(check["prune"]["deleted"]) == [expired]
    assert writes(twins, "alicloud") == {}

    run = run_tasks([{PRUNE: {"provider": "alicloud"}, "register": "prune"},
                     {PRUNE: {"provider": "alicloud"}, "register": "again"},
                     {INFO: {"provider": "alicloud"}, "register": "after"}], twins.endpoints)
    result = run["prune"]
    assert result["changed"] is True and not result.get("failed"), result
    assert ids(result["deleted"]) == [expired]
    assert sorted(result["deleted"][0]["deleted_snapshot_ids"]) == expired_snaps
    assert ali_group(twins, expired) is None
    remaining = ali_snapshot_ids(twins)
    assert not set(expired_snaps) & remaining
    assert set(newest_snaps) | set(foreign_snaps) | set(half_snaps) <= remaining
    reasons = kept_reasons(result)
    assert reasons == {newest: "newest_application", half: "untagged_members"}
    assert foreign not in reasons  # not a set at all
    assert run["again"]["changed"] is False and run["again"]["deleted"] == []
    assert sorted(s["set_id"] for s in run["after"]["sets"]) == sorted([newest, half])


def test_alicloud_keep_and_refusal(twin_factory, run_tasks):
    twins = twin_factory(aws=False, faults={"api_errors": [
        {"provider": "alicloud", "action": "DeleteSnapshotGroup", "code": "IncorrectSnapshotStatus", "count": 1}]})
    first, first_snaps = ali_set(twins, ALI_WIN, consistency="crash")
    time.sleep(TICK)
    second, _snaps = ali_set(twins, ALI_WIN, consistency="crash")
    task = {PRUNE: {"provider": "alicloud", "keep": 1, "expired": False}, "register": "prune"}
    refused = run_tasks([dict(task)], twins.endpoints)["prune"]
    assert refused["failed"] is True and first in refused["msg"]
    assert refused["failed_sets"][0]["error"]["code"] == "IncorrectSnapshotStatus"
    assert sorted(refused["failed_sets"][0]["remaining_snapshot_ids"]) == first_snaps
    assert set(first_snaps) <= ali_snapshot_ids(twins)
    retried = run_tasks([dict(task)], twins.endpoints)["prune"]
    assert not retried.get("failed") and ids(retried["deleted"]) == [first]
    assert kept_reasons(retried) == {second: "within_keep"}
    assert ali_group(twins, first) is None


def test_sets_made_by_app_consistent_group_are_listed_and_pruned_on_both_providers(twin_factory, run_tasks):
    twins = twin_factory()
    web = aws_instance(twins, "web-1")
    group = "appconsistent.snapshots.app_consistent_group"
    tasks = []
    for run_id in ("R1", "R2"):
        tasks += [{group: {"provider": "aws", "consistency": "crash", "instance_ids": [web], "run_id": run_id},
                   "register": f"aws_{run_id.lower()}"},
                  {group: {"provider": "alicloud", "consistency": "crash", "instance_ids": [ALI_WEB], "run_id": run_id},
                   "register": f"ali_{run_id.lower()}"}]
    tasks += [{INFO: {"provider": "aws", "run_id": "R1"}, "register": "aws_info"},
              {INFO: {"provider": "alicloud", "run_id": "R1"}, "register": "ali_info"},
              {PRUNE: {"provider": "aws", "keep": 1, "expired": False}, "register": "aws_prune"},
              {PRUNE: {"provider": "alicloud", "keep": 1, "expired": False}, "register": "ali_prune"}]
    run = run_tasks(tasks, twins.endpoints)
    for name in ("aws_r1", "aws_r2", "ali_r1", "ali_r2"):
        assert not run[name].get("failed"), run[name].get("msg")
    for provider in ("aws", "ali"):
        made = run[f"{provider}_r1"]["results"][0]
        (listed,) = run[f"{provider}_info"]["sets"]
        assert (listed["set_id"], listed["run_id"], listed["consistency"]) == (made["set_id"], "R1", "crash")
        assert sorted(m["snapshot_id"] for m in listed["members"]) == sorted(s["snapshot_id"] for s in made["snapshots"])
        pruned = run[f"{provider}_prune"]
        assert ids(pruned["deleted"]) == [made["set_id"]], pruned
        assert kept_reasons(pruned) == {run[f"{provider}_r2"]["results"][0]["set_id"]: "within_keep"}


def test_aws_prune_under_a_tight_delete_bucket_is_paced_and_says_how_long_it_takes(twin_factory, run_tasks):
    # The account's DeleteSnapshot bucket holds 2 tokens and refills 4 a second (published: 100 and 5, so 10,000
    # snapshots are over half an hour of calls). Check mode estimates the time from the limits; the prune waits for
    # its tokens instead of being answered RequestLimitExceeded, and deletes every set.
    tight = {"DeleteSnapshot": {"capacity": 2, "refill": 4}}
    twins = twin_factory(alicloud=False, limits=tight)
    made = [aws_set(twins, name, delete_after=PAST) for name in ("web-1", "db-1", "web-1", "db-1")]
    snapshots = sorted(s for _set_id, members in made for s in members)
    task = {PRUNE: {"provider": "aws", "protect_newest_application": False, "api_rate_limits": tight}}
    plan = run_tasks([dict(task, register="plan")], twins.endpoints, check=True)["plan"]
    assert not plan.get("failed"), plan
    assert plan["api_pacing"]["estimated_floor_s"] == round((len(snapshots) - 2) / 4, 1)
    assert aws_snapshot_ids(twins) >= set(snapshots)
    twins.stats.reset()
    result = run_tasks([dict(task, register="prune")], twins.endpoints)["prune"]
    assert not result.get("failed") and result["failed_sets"] == [], result
    assert sorted(s for e in result["deleted"] for s in e["deleted_snapshot_ids"]) == snapshots
    assert twins.stats.throttled("aws") == {}, twins.stats.throttle_log("aws")
    assert twins.stats.counts("aws")["DeleteSnapshot"] == len(snapshots)
    pacing = result["api_pacing"]
    assert pacing["throttled_calls"] == {} and pacing["calls"]["DeleteSnapshot"] == len(snapshots)
    assert pacing["rate_floor_s"] == round((len(snapshots) - 2) / 4, 1)
