"""Restore tests recorded on sets against both twins: the record on every member, info's verified filter, prune's
protection of the newest verified set, and a failed application check that takes the verification back."""

import pytest
from alibabacloud_ecs20140526 import models as ecs_models

from test_snapshot_set_info import ALI_WEB
from test_snapshot_set_info import TICK
from test_snapshot_set_info import ali_region
from test_snapshot_set_info import ali_set
from test_snapshot_set_info import aws_set
from test_snapshot_set_info import set_ids
from test_snapshot_set_info import writes

import time

RECORD = "appconsistent.snapshots.snapshot_set_verification"
INFO = "appconsistent.snapshots.snapshot_set_info"
PRUNE = "appconsistent.snapshots.snapshot_set_prune"
LOCK = "appconsistent.snapshots.snapshot_set_lock"
TAG = "appconsistent:verification"
AT = "2026-12-01T06:12:40Z"


def make_set(twins, provider, instance="web-1"):
    return aws_set(twins, instance) if provider == "aws" else ali_set(twins, ALI_WEB)


def instance_of(twins, provider):
    return twins.endpoints["aws"]["instances"]["web-1"] if provider == "aws" else ALI_WEB


def passed(provider, set_id, at=AT):
    return {"provider": provider, "set_id": set_id, "result": "passed", "checks": ["fs:ext4", "app:mysql"],
            "seconds_to_application": 41.53, "verified_at": at}


def ali_tag(twins, snapshot_id, tags):
    twins.ecs_client().tag_resources(ecs_models.TagResourcesRequest(
        region_id=ali_region(twins), resource_type="snapshot", resource_id=[snapshot_id],
        tag=[ecs_models.TagResourcesRequestTag(key=k, value=v) for k, v in tags.items()]))


def tag_one(twins, provider, snapshot_id, tags):
    if provider == "aws":
        twins.aws_client("ec2").create_tags(Resources=[snapshot_id], Tags=[{"Key": k, "Value": v} for k, v in tags.items()])
    else:
        ali_tag(twins, snapshot_id, tags)


@pytest.mark.parametrize("provider", ["aws", "alicloud"])
def test_record_on_every_member_check_mode_idempotent_and_read_by_info(twin_factory, run_tasks, provider):
    twins = twin_factory(alicloud=provider == "alicloud", aws=provider == "aws")
    set_id, members = make_set(twins, provider)
    twins.stats.reset()
    check = run_tasks([{RECORD: passed(provider, set_id), "register": "rec", "diff": True}], twins.endpoints,
                      check=True)["rec"]
    assert not check.get("failed"), check
    assert check["changed"] is True and sorted(check["tagged_snapshot_ids"]) == members
    assert check["diff"]["before"]["verification"] is None and check["diff"]["after"]["verification"]["verified"] is True
    assert writes(twins, provider) == {}

    run = run_tasks([{RECORD: passed(provider, set_id), "register": "rec"},
                     {RECORD: passed(provider, set_id), "register": "again"},
                     {INFO: {"provider": provider, "set_ids": [set_id]}, "register": "info"}], twins.endpoints)
    assert run["rec"]["changed"] is True, run["rec"]
    value = "passed 2026-12-01T06:12:40Z 41.5s fs:ext4,app:mysql"
    assert run["rec"]["tag"] == {TAG: value}
    # One tag call for the whole set, on every member.
    assert writes(twins, provider) == {"CreateTags" if provider == "aws" else "TagResources": 1}
    assert run["again"]["changed"] is False and run["again"]["tagged_snapshot_ids"] == []
    item = run["info"]["sets"][0]
    assert all(m["tags"][TAG] == value for m in item["members"]) and len(item["members"]) == len(members)
    assert item["verification"] == {"result": "passed", "verified_at": AT, "seconds_to_application": 41.5,
                                    "checks": ["fs:ext4", "app:mysql"], "verified": True}


@pytest.mark.parametrize("provider", ["aws", "alicloud"])
def test_failed_application_check_records_a_failure_and_takes_the_verification_back(twin_factory, run_tasks, provider):
    twins = twin_factory(alicloud=provider == "alicloud", aws=provider == "aws")
    set_id, _members = make_set(twins, provider)
    failed = {"provider": provider, "set_id": set_id, "result": "failed", "checks": ["fs:ext4", "app:mysql"],
              "seconds_to_application": 12.0, "verified_at": "2026-12-02T06:00:00Z"}
    instance = instance_of(twins, provider)
    run = run_tasks([{RECORD: passed(provider, set_id), "register": "passed"},
                     {INFO: {"provider": provider, "instance_ids": [instance], "verified": True}, "register": "before"},
                     {RECORD: failed, "register": "failed"},
                     {INFO: {"provider": provider, "instance_ids": [instance], "verified": True}, "register": "verified"},
                     {INFO: {"provider": provider, "instance_ids": [instance], "verified": False},
                      "register": "unverified"}], twins.endpoints)
    assert set_ids(run["before"]) == [set_id]
    assert run["failed"]["changed"] is True and run["failed"]["verification"]["verified"] is False
    assert set_ids(run["verified"]) == []
    item = run["unverified"]["sets"][0]
    assert item["set_id"] == set_id
    # The application never came up: no time to it is recorded.
    assert item["verification"] == {
        "result": "failed", "verified_at": "2026-12-02T06:00:00Z", "seconds_to_application": None,
        "checks": ["fs:ext4", "app:mysql"], "verified": False}


@pytest.mark.parametrize("provider", ["aws", "alicloud"])
def test_newest_verified_per_instance_and_a_partial_record_is_not_verified(twin_factory, run_tasks, provider):
    twins = twin_factory(alicloud=provider == "alicloud", aws=provider == "aws")
    older = make_set(twins, provider)[0]
    time.sleep(TICK)
    middle = make_set(twins, provider)[0]
    time.sleep(TICK)
    newest, newest_members = make_set(twins, provider)
    run = run_tasks([{RECORD: passed(provider, older), "register": "a"},
                     {RECORD: passed(provider, middle), "register": "b"}], twins.endpoints)
    assert not run["a"].get("failed") and not run["b"].get("failed"), run
    # A record cut short: one member of the newest set carries it, the others not.
    tag_one(twins, provider, newest_members[0], {TAG: "passed 2026-12-03T06:00:00Z 30.0s fs:ext4"})
    instance = instance_of(twins, provider)
    run = run_tasks([{INFO: {"provider": provider, "instance_ids": [instance], "verified": True, "newest_only": True},
                      "register": "newest"},
                     {INFO: {"provider": provider, "set_ids": [newest]}, "register": "partial"}], twins.endpoints)
    assert set_ids(run["newest"]) == [middle]
    record = run["partial"]["sets"][0]["verification"]
    assert record["result"] == "partial" and record["verified"] is False


@pytest.mark.parametrize("provider", ["aws", "alicloud"])
def test_prune_keeps_the_newest_verified_set_unless_told_not_to(twin_factory, run_tasks, provider):
    twins = twin_factory(alicloud=provider == "alicloud", aws=provider == "aws")
    verified = make_set(twins, provider)[0]
    time.sleep(TICK)
    failed = make_set(twins, provider)[0]
    time.sleep(TICK)
    newest = make_set(twins, provider)[0]
    fail = {"provider": provider, "set_id": failed, "result": "failed", "checks": ["fs:ext4"]}
    prune = {"provider": provider, "keep": 1, "protect_newest_application": False}
    run = run_tasks([{RECORD: passed(provider, verified), "register": "a"}, {RECORD: fail, "register": "b"},
                     {PRUNE: prune, "register": "planned"}], twins.endpoints, check=True)
    # Check mode wrote nothing, so nothing is verified yet.
    assert sorted(run["planned"]["would_delete"]) == sorted([verified, failed])
    run = run_tasks([{RECORD: passed(provider, verified), "register": "a"}, {RECORD: fail, "register": "b"},
                     {PRUNE: prune, "register": "planned"}], twins.endpoints, check=False)
    assert not run["a"].get("failed") and not run["b"].get("failed"), run
    kept = {k["set_id"]: k for k in run["planned"]["kept"]}
    assert set(kept) == {newest, verified}
    assert kept[verified]["reason_code"] == "newest_verified"
    assert "restore test passed at 2026-12-01T06:12:40Z" in kept[verified]["reason"]
    assert [d["set_id"] for d in run["planned"]["deleted"]] == [failed]
    run = run_tasks([{PRUNE: dict(prune, protect_newest_verified=False), "register": "unprotected"}], twins.endpoints)
    assert [d["set_id"] for d in run["unprotected"]["deleted"]] == [verified]


@pytest.mark.parametrize("provider", ["aws", "alicloud"])
def test_a_locked_set_is_recorded_on(twin_factory, run_tasks, provider):
    twins = twin_factory(alicloud=provider == "alicloud", aws=provider == "aws")
    set_id, members = make_set(twins, provider)
    lock = {"provider": provider, "set_ids": [set_id], "mode": "compliance", "duration_days": 3,
            "acknowledge_no_cool_off": True}
    run = run_tasks([{LOCK: lock, "register": "lock"}, {RECORD: passed(provider, set_id), "register": "rec"},
                     {INFO: {"provider": provider, "set_ids": [set_id], "verified": True}, "register": "info"}],
                    twins.endpoints)
    assert run["lock"]["sets"][0]["lock"]["locked"] is True, run["lock"]
    assert run["rec"]["changed"] is True and sorted(run["rec"]["tagged_snapshot_ids"]) == members, run["rec"]
    assert run["info"]["sets"][0]["lock"]["locked"] is True and run["info"]["sets"][0]["verification"]["verified"]


@pytest.mark.parametrize("provider", ["aws", "alicloud"])
def test_refusals_before_any_call(twin_factory, run_tasks, provider):
    twins = twin_factory(alicloud=provider == "alicloud", aws=provider == "aws")
    set_id, members = make_set(twins, provider)
    # A member with the most tags a snapshot can carry (20 on Alibaba Cloud, 50 on AWS).
    limit = 20 if provider == "alicloud" else 50
    have = len(run_tasks([{INFO: {"provider": provider, "set_ids": [set_id]}, "register": "i"}],
                         twins.endpoints)["i"]["sets"][0]["members"][0]["tags"])
    full = {f"owner:t{n}": "x" for n in range(limit - have)}
    for start in range(0, len(full), 20):
        tag_one(twins, provider, members[0], dict(list(full.items())[start:start + 20]))
    twins.stats.reset()
    run = run_tasks([
        {RECORD: dict(passed(provider, set_id), checks=[]), "register": "no_checks"},
        {RECORD: dict(passed(provider, set_id), seconds_to_application=None), "register": "no_seconds"},
        {RECORD: dict(passed(provider, set_id), checks=["app mysql"]), "register": "bad_check"},
        {RECORD: dict(passed(provider, set_id), verified_at="yesterday"), "register": "bad_at"},
        {RECORD: passed(provider, "acs-20200101t000000-00000000"), "register": "missing"},
        {RECORD: passed(provider, set_id), "register": "full"}], twins.endpoints)
    assert "names the checks it ran" in run["no_checks"]["msg"]
    assert "seconds_to_application" in run["no_seconds"]["msg"]
    assert "cannot be recorded" in run["bad_check"]["msg"]
    assert "ISO 8601" in run["bad_at"]["msg"]
    assert "was not found" in run["missing"]["msg"]
    assert f"{members[0]} of set {set_id} already carries {limit} tags" in run["full"]["msg"], run["full"]
    assert writes(twins, provider) == {}


def test_an_incomplete_set_is_never_verified_nor_recorded_as_passed(twin_factory, run_tasks):
    # A set that lost a member (or a copy cut short) whose remaining member carries a passed record, as a copy of a
    # verified set does: it must not read as verified, nor be protected as the newest verified set.
    twins = twin_factory(alicloud=False)
    ec2 = twins.aws_client("ec2")
    older, _older_members = make_set(twins, "aws")
    time.sleep(TICK)
    set_id, members = make_set(twins, "aws")
    ec2.create_tags(Resources=members, Tags=[{"Key": "appconsistent:members", "Value": str(len(members))}])
    ec2.delete_snapshot(SnapshotId=members[0])
    run = run_tasks([{RECORD: passed("aws", older), "register": "older"},
                     {RECORD: passed("aws", set_id), "register": "refused"},
                     {RECORD: dict(passed("aws", set_id), result="failed", checks=[]), "register": "failed"}],
                    twins.endpoints)
    assert not run["older"].get("failed"), run["older"]
    assert run["refused"]["failed"] and "is incomplete" in run["refused"]["msg"], run["refused"]
    assert not run["failed"].get("failed") and run["failed"]["changed"] is True, run["failed"]
    tag_one(twins, "aws", members[1], {TAG: "passed 2026-12-02T06:12:40Z 12.0s fs:ext4"})
    prune = {"provider": "aws", "keep": 1, "protect_newest_application": False}
    run = run_tasks([{INFO: {"provider": "aws", "set_ids": [set_id]}, "register": "info"},
                     {INFO: {"provider": "aws", "verified": True}, "register": "verified"},
                     {PRUNE: prune, "register": "planned"}], twins.endpoints, check=True)
    (item,) = run["info"]["sets"]
    assert item["complete"] is False and item["verification"]["result"] == "passed", item
    assert item["verification"]["verified"] is False and "incomplete" in item["verification"]["note"]
    assert set_ids(run["verified"]) == [older]
    # keep 1 keeps the newest set (the incomplete one); the older one stays only as the newest verified set.
    kept = {k["set_id"]: k for k in run["planned"]["kept"]}
    assert kept.get(older, {}).get("reason_code") == "newest_verified", run["planned"]
    assert run["planned"]["would_delete"] == [], run["planned"]
