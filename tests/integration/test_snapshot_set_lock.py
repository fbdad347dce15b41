"""snapshot_set_lock against both twins: each lock rule per mode and phase, the lock in snapshot_set_info, prune keeping locked sets."""

import datetime

import pytest
from alibabacloud_ecs20140526 import models as ecs_models
from botocore.exceptions import ClientError

from test_snapshot_set_info import ALI_WEB
from test_snapshot_set_info import PAST
from test_snapshot_set_info import ali_region
from test_snapshot_set_info import ali_set
from test_snapshot_set_info import ali_snapshot_ids
from test_snapshot_set_info import aws_set
from test_snapshot_set_info import aws_snapshot_ids
from test_snapshot_set_info import writes

from ansible_collections.appconsistent.snapshots.plugins.module_utils import snapshot_set as ss

LOCK = "appconsistent.snapshots.snapshot_set_lock"
INFO = "appconsistent.snapshots.snapshot_set_info"
PRUNE = "appconsistent.snapshots.snapshot_set_prune"
HOUR = 3600


def age_locks(twins, provider, seconds):
    """Make the twin's locks look older: the end of a cooling-off period without waiting for it."""
    if provider == "aws":
        twins.aws.cloud.ext_for(twins.aws.region).locks.age(seconds)
    else:
        twins.alicloud.cloud.ecs.locks.age(seconds)


def lock_calls(twins, provider):
    return {k: v for k, v in writes(twins, provider).items() if k in ("LockSnapshot", "UnlockSnapshot")}


def only_set(result):
    assert not result.get("failed"), result
    assert len(result["sets"]) == 1, result
    return result["sets"][0]


@pytest.mark.parametrize("provider", ["aws", "alicloud"])
def test_lock_check_mode_then_locked_then_unchanged_and_shown_by_info(twin_factory, run_tasks, provider):
    twins = twin_factory(alicloud=provider == "alicloud", aws=provider == "aws")
    set_id, members = aws_set(twins, "web-1") if provider == "aws" else ali_set(twins, ALI_WEB)
    ask = {"provider": provider, "set_ids": [set_id], "mode": "compliance", "duration_days": 10, "cool_off_hours": 2}
    twins.stats.reset()
    check = run_tasks([{LOCK: ask, "register": "lock", "diff": True}], twins.endpoints, check=True)["lock"]
    item = only_set(check)
    assert check["changed"] is True and item["action"] == "locked"
    assert item["lock"]["locked"] is True and item["lock"]["state"] == "compliance-cooloff"
    assert check["diff"]["before"][set_id]["locked"] is False and check["diff"]["after"][set_id]["locked"] is True
    assert writes(twins, provider) == {}

    run = run_tasks([{LOCK: ask, "register": "lock"}, {LOCK: ask, "register": "again"},
                     {INFO: {"provider": provider, "set_ids": [set_id]}, "register": "info"}], twins.endpoints)
    item = only_set(run["lock"])
    assert run["lock"]["changed"] is True and item["action"] == "locked"
    assert sorted(m["snapshot_id"] for m in item["members"]) == members
    assert all(m["lock"]["state"] == "compliance-cooloff" and m["lock"]["duration_days"] == 10 for m in item["members"])
    assert lock_calls(twins, provider) == {"LockSnapshot": len(members)}
    again = only_set(run["again"])
    assert run["again"]["changed"] is False and again["action"] == "unchanged"
    info = run["info"]["sets"][0]
    assert info["lock"]["locked"] is True and info["lock"]["mode"] == "compliance"
    assert info["lock"]["until"] == item["lock"]["until"] and info["lock"]["locked_members"] == len(members)
    assert all(m["lock"]["state"] == "compliance-cooloff" for m in info["members"])


@pytest.mark.parametrize("provider", ["aws", "alicloud"])
def test_compliance_after_cooling_off_extends_but_refuses_shortening_and_unlock(twin_factory, run_tasks, provider):
    twins = twin_factory(alicloud=provider == "alicloud", aws=provider == "aws")
    set_id, members = aws_set(twins, "web-1") if provider == "aws" else ali_set(twins, ALI_WEB)
    base = {"provider": provider, "set_ids": [set_id], "mode": "compliance"}
    run = run_tasks([{LOCK: dict(base, duration_days=5, cool_off_hours=1), "register": "lock"},
                     {LOCK: dict(base, duration_days=3, cool_off_hours=1), "register": "shorter_in_cool_off"}],
                    twins.endpoints)
    assert only_set(run["lock"])["lock"]["state"] == "compliance-cooloff"
    # Within the cooling-off period a compliance lock may still be shortened.
    assert only_set(run["shorter_in_cool_off"])["action"] == "locked"
    assert all(m["lock"]["duration_days"] == 3 for m in only_set(run["shorter_in_cool_off"])["members"])
    age_locks(twins, provider, HOUR + 1)
    twins.stats.reset()

    refused = run_tasks([{LOCK: dict(base, duration_days=2, acknowledge_no_cool_off=True), "register": "shorter"},
                         {LOCK: {"provider": provider, "set_ids": [set_id], "state": "unlocked"}, "register": "unlock"}],
                        twins.endpoints)
    for name in ("shorter", "unlock"):
        assert refused[name]["failed"] is True, refused[name]
        assert "Nothing was changed" in refused[name]["msg"] and "cooling-off period is over" in refused[name]["msg"]
    assert "can only be extended" in refused["shorter"]["msg"]
    assert lock_calls(twins, provider) == {}  # refused before any change

    extended = run_tasks([{LOCK: dict(base, duration_days=8, acknowledge_no_cool_off=True), "register": "longer"},
                          {LOCK: dict(base, duration_days=8, acknowledge_no_cool_off=True), "register": "again"},
                          {INFO: {"provider": provider, "set_ids": [set_id]}, "register": "info"}], twins.endpoints)
    item = only_set(extended["longer"])
    assert item["action"] == "extended" and item["lock"]["state"] == "compliance"
    assert all(m["lock"]["duration_days"] == 8 for m in item["members"])
    assert only_set(extended["again"])["action"] == "unchanged"
    assert extended["info"]["sets"][0]["lock"]["locked"] is True
    assert extended["info"]["sets"][0]["lock"]["until"] == item["lock"]["until"]


def test_aws_governance_lock_changes_and_unlocks_and_partly_locked_set_is_not_locked(twin_factory, run_tasks):
    twins = twin_factory(alicloud=False)
    set_id, members = aws_set(twins, "web-1")
    base = {"provider": "aws", "set_ids": [set_id]}
    run = run_tasks([{LOCK: dict(base, mode="governance", expires_at="2099-01-01T00:00:00Z"), "register": "lock"},
                     {LOCK: dict(base, mode="governance", expires_at="2099-01-01T00:00:00Z"), "register": "again"},
                     {LOCK: dict(base, mode="governance", duration_days=1), "register": "shorter"},
                     {LOCK: dict(base, state="unlocked"), "register": "unlock"},
                     {LOCK: dict(base, state="unlocked"), "register": "unlock_again"}], twins.endpoints)
    assert only_set(run["lock"])["lock"]["until"] == "2099-01-01T00:00:00Z"
    assert only_set(run["again"])["action"] == "unchanged"
    assert only_set(run["shorter"])["action"] == "locked"  # governance: shortened at any time
    assert only_set(run["unlock"])["action"] == "unlocked" and only_set(run["unlock"])["lock"]["locked"] is False
    assert run["unlock_again"]["changed"] is False
    # One member locked out of band: the set is not locked, and says how many are.
    twins.aws_client("ec2").lock_snapshot(SnapshotId=members[0], LockMode="governance", LockDuration=1)
    info = run_tasks([{INFO: dict(base), "register": "info"}], twins.endpoints)["info"]["sets"][0]
    assert info["lock"]["locked"] is False and info["lock"]["locked_members"] == 1


def test_bad_lock_requests_are_refused_before_any_call(twin_factory, run_tasks):
    twins = twin_factory()
    aws_id, _aws_members = aws_set(twins, "web-1")
    ali_id, _ali_members = ali_set(twins, ALI_WEB)
    twins.stats.reset()
    cases = {
        "no_ack": ({"provider": "aws", "set_ids": [aws_id], "mode": "compliance", "duration_days": 1}, "cool_off_hours"),
        "no_selection": ({"provider": "aws", "mode": "governance", "duration_days": 1}, "set_ids, instance_ids"),
        "ali_governance": ({"provider": "alicloud", "set_ids": [ali_id], "mode": "governance", "duration_days": 1},
                           "compliance mode only"),
        "ali_expires_at": ({"provider": "alicloud", "set_ids": [ali_id], "mode": "compliance",
                            "expires_at": "2099-01-01T00:00:00Z", "cool_off_hours": 1}, "duration_days"),
        "too_long": ({"provider": "aws", "set_ids": [aws_id], "mode": "governance", "duration_days": 36501}, "36500"),
        "cool_off_governance": ({"provider": "aws", "set_ids": [aws_id], "mode": "governance", "duration_days": 1,
                                 "cool_off_hours": 2}, "compliance mode only"),
        "cool_off_too_long": ({"provider": "aws", "set_ids": [aws_id], "mode": "compliance", "duration_days": 1,
                               "cool_off_hours": 73}, "between 0 and 72"),
        "past": ({"provider": "aws", "set_ids": [aws_id], "mode": "governance", "expires_at": PAST}, "future"),
        "unlock_with_mode": ({"provider": "aws", "set_ids": [aws_id], "state": "unlocked", "mode": "governance"},
                             "only apply to state=locked"),
    }
    run = run_tasks([{LOCK: args, "register": name} for name, (args, _text) in cases.items()], twins.endpoints)
    for name, (_args, text) in cases.items():
        assert run[name]["failed"] is True and text in run[name]["msg"], (name, run[name]["msg"])
    assert twins.stats.counts("aws") == {} and twins.stats.counts("alicloud") == {}
    # With the acknowledgement, a compliance lock holds at once.
    ok = run_tasks([{LOCK: dict(cases["no_ack"][0], acknowledge_no_cool_off=True), "register": "lock"}], twins.endpoints)
    assert only_set(ok["lock"])["lock"]["state"] == "compliance"


@pytest.mark.parametrize("provider", ["aws", "alicloud"])
def test_prune_keeps_a_locked_set_and_says_until_when(twin_factory, run_tasks, provider):
    twins = twin_factory(alicloud=provider == "alicloud", aws=provider == "aws")
    if provider == "aws":
        locked_id, locked_members = aws_set(twins, "web-1", consistency="crash", delete_after=PAST)
        free_id, free_members = aws_set(twins, "db-1", consistency="crash", delete_after=PAST)
        snapshot_ids = aws_snapshot_ids
    else:
        locked_id, locked_members = ali_set(twins, ALI_WEB, consistency="crash", delete_after=PAST)
        free_id, free_members = ali_set(twins, ALI_WEB, consistency="crash", delete_after=PAST)
        snapshot_ids = ali_snapshot_ids
    # Locked with the SDK, so that this test needs nothing of the collection but prune.
    if provider == "aws":
        ec2 = twins.aws_client("ec2")
        untils = [ec2.lock_snapshot(SnapshotId=s, LockMode="compliance", LockDuration=7)["LockExpiresOn"]
                  for s in locked_members]
        until = max(untils).astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    else:
        ecs = twins.ecs_client()
        untils = [ecs.lock_snapshot(ecs_models.LockSnapshotRequest(
            region_id=ali_region(twins), snapshot_id=s, lock_mode="compliance", lock_duration=7,
            cool_off_period=0)).body.locked_snapshot_info.lock_expired_time for s in locked_members]
        until = ss.format_instant(max(ss.parse_instant(u) for u in untils))
    twins.stats.reset()
    check = run_tasks([{PRUNE: {"provider": provider}, "register": "prune"}], twins.endpoints, check=True)["prune"]
    real = run_tasks([{PRUNE: {"provider": provider}, "register": "prune"}], twins.endpoints)["prune"]
    for result in (check, real):
        assert not result.get("failed") and not result["failed_sets"], result
        assert [e["set_id"] for e in result["deleted"]] == [free_id]
        kept = {e["set_id"]: e for e in result["kept"]}
        assert kept[locked_id]["reason_code"] == "locked" and kept[locked_id]["locked_until"] == until
        assert until in kept[locked_id]["reason"] and "compliance" in kept[locked_id]["reason"]
    assert set(locked_members) <= snapshot_ids(twins)
    # Only the free set's members were ever asked to go: none of the locked set's.
    deletes = writes(twins, provider)
    assert deletes == ({"DeleteSnapshot": len(free_members)} if provider == "aws" else {"DeleteSnapshotGroup": 1})
    # The cloud itself refuses to delete a locked member too.
    if provider == "aws":
        with pytest.raises(ClientError) as refused:
            twins.aws_client("ec2").delete_snapshot(SnapshotId=locked_members[0])
        assert refused.value.response["Error"]["Code"] == "SnapshotLocked"
    else:
        with pytest.raises(Exception) as refused:
            twins.ecs_client().delete_snapshot(ecs_models.DeleteSnapshotRequest(snapshot_id=locked_members[0], force=True))
        assert "OperationDenied.SnapshotLocked" in str(refused.value)
