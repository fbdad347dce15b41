"""Snapshot locks on both twins, through the official SDKs: each provider's rules per mode and phase, and DeleteSnapshot refused."""

import datetime

import pytest
from alibabacloud_ecs20140526 import models as m
from botocore.config import Config
from botocore.exceptions import ClientError

from twin.core import limits as lim
from twin.core.snapshot_locks import HOUR

VOLUMES = [{"device": "/dev/xvda", "size": 8, "boot": True}, {"device": "/dev/xvdf", "size": 1}]
FLEET = {"instances": [
    {"provider": "aws", "name": "web-1", "platform": "linux", "volumes": VOLUMES},
    {"provider": "alicloud", "name": "ali-1", "id": "i-bp1lockstwin00001", "platform": "linux", "volumes": VOLUMES},
]}


def code_of(excinfo):
    return excinfo.value.response["Error"]["Code"]


@pytest.fixture
def aws(twin_factory):
    twins = twin_factory(FLEET, alicloud=False)
    ec2 = twins.aws_client("ec2")
    iid = twins.aws.instances["web-1"]
    snaps = [s["SnapshotId"] for s in ec2.create_snapshots(InstanceSpecification={"InstanceId": iid})["Snapshots"]]
    return twins, ec2, snaps


def lock_state(ec2, snapshot_id):
    found = ec2.describe_locked_snapshots(SnapshotIds=[snapshot_id])["Snapshots"]
    return found[0] if found else None


def age_aws(twins, seconds):
    twins.aws.cloud.ext_for(twins.aws.region).locks.age(seconds)


def test_aws_governance_lock_blocks_delete_and_may_be_changed_or_removed(aws):
    twins, ec2, (snap, other) = aws
    answer = ec2.lock_snapshot(SnapshotId=snap, LockMode="governance", LockDuration=7)
    assert answer["LockState"] == "governance" and answer["LockDuration"] == 7
    assert answer["LockExpiresOn"] - answer["LockCreatedOn"] == datetime.timedelta(days=7)
    with pytest.raises(ClientError) as refused:
        ec2.delete_snapshot(SnapshotId=snap)
    assert code_of(refused) == "SnapshotLocked"
    # Governance: shortened, and mode changed, at any time.
    assert ec2.lock_snapshot(SnapshotId=snap, LockMode="governance", LockDuration=2)["LockDuration"] == 2
    age_aws(twins, 12 * HOUR)
    assert ec2.lock_snapshot(SnapshotId=snap, LockMode="governance", LockDuration=1)["LockDuration"] == 1
    ec2.unlock_snapshot(SnapshotId=snap)
    assert lock_state(ec2, snap) is None
    ec2.delete_snapshot(SnapshotId=snap)
    # Listing: the lock-state filter, and only locked snapshots.
    ec2.lock_snapshot(SnapshotId=other, LockMode="compliance", LockDuration=3, CoolOffPeriod=1)
    listed = ec2.describe_locked_snapshots(Filters=[{"Name": "lock-state", "Values": ["compliance-cooloff"]}])["Snapshots"]
    assert [s["SnapshotId"] for s in listed] == [other] and listed[0]["CoolOffPeriod"] == 1
    assert ec2.describe_locked_snapshots(Filters=[{"Name": "lock-state", "Values": ["governance"]}])["Snapshots"] == []


def test_aws_compliance_within_cooling_off_may_change_after_it_only_extend(aws):
    twins, ec2, (snap, _other) = aws
    answer = ec2.lock_snapshot(SnapshotId=snap, LockMode="compliance", LockDuration=10, CoolOffPeriod=2)
    assert answer["LockState"] == "compliance-cooloff"
    assert answer["CoolOffPeriodExpiresOn"] - answer["LockCreatedOn"] == datetime.timedelta(hours=2)
    # Cooling-off: shortened, then the cooling-off period ends.
    assert ec2.lock_snapshot(SnapshotId=snap, LockMode="compliance", LockDuration=5, CoolOffPeriod=1)["LockDuration"] == 5
    with pytest.raises(ClientError) as refused:
        ec2.delete_snapshot(SnapshotId=snap)
    assert code_of(refused) == "SnapshotLocked"
    age_aws(twins, 1 * HOUR + 1)
    assert lock_state(ec2, snap)["LockState"] == "compliance"
    for change in (dict(LockMode="compliance", LockDuration=4), dict(LockMode="governance", LockDuration=30)):
        with pytest.raises(ClientError) as refused:
            ec2.lock_snapshot(SnapshotId=snap, **change)
        assert code_of(refused) == "IncorrectState", change
    with pytest.raises(ClientError) as refused:
        ec2.lock_snapshot(SnapshotId=snap, LockMode="compliance", LockDuration=8, CoolOffPeriod=1)
    assert code_of(refused) == "InvalidParameterCombination"
    with pytest.raises(ClientError) as refused:
        ec2.unlock_snapshot(SnapshotId=snap)
    assert code_of(refused) == "IncorrectState"
    extended = ec2.lock_snapshot(SnapshotId=snap, LockMode="compliance", LockDuration=8)
    assert extended["LockDuration"] == 8 and extended["LockState"] == "compliance"
    until = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=20)
    assert ec2.lock_snapshot(SnapshotId=snap, LockMode="compliance", ExpirationDate=until)["LockExpiresOn"] > extended["LockExpiresOn"]
    with pytest.raises(ClientError) as refused:
        ec2.delete_snapshot(SnapshotId=snap)
    assert code_of(refused) == "SnapshotLocked"


def test_aws_lock_requests_outside_the_documented_ranges_are_refused(aws):
    twins, ec2, (snap, _other) = aws
    # botocore checks some ranges itself; the twin must refuse them too.
    unchecked = twins.aws_client("ec2", config=Config(retries={"total_max_attempts": 1}, parameter_validation=False))
    bad = [dict(LockMode="governance"),
           dict(LockMode="governance", LockDuration=1, ExpirationDate=datetime.datetime(2099, 1, 1)),
           dict(LockMode="governance", LockDuration=0), dict(LockMode="governance", LockDuration=36501),
           dict(LockMode="governance", LockDuration=1, CoolOffPeriod=1),
           dict(LockMode="compliance", LockDuration=1, CoolOffPeriod=73),
           dict(LockMode="compliance", ExpirationDate=datetime.datetime(2001, 1, 1))]
    for request in bad:
        with pytest.raises(ClientError):
            unchecked.lock_snapshot(SnapshotId=snap, **request)
    assert lock_state(ec2, snap) is None
    with pytest.raises(ClientError) as refused:
        ec2.lock_snapshot(SnapshotId="snap-0123456789abcdef0", LockMode="governance", LockDuration=1)
    assert code_of(refused) == "InvalidSnapshot.NotFound"
    # No cooling-off period: compliance at once.
    assert ec2.lock_snapshot(SnapshotId=snap, LockMode="compliance", LockDuration=1)["LockState"] == "compliance"


def test_aws_expired_lock_no_longer_blocks_delete(aws):
    twins, ec2, (snap, _other) = aws
    ec2.lock_snapshot(SnapshotId=snap, LockMode="compliance", LockDuration=1)
    age_aws(twins, 24 * HOUR + 1)
    assert lock_state(ec2, snap)["LockState"] == "expired"
    ec2.delete_snapshot(SnapshotId=snap)


def test_lock_actions_spend_the_default_ec2_buckets():
    assert lim.published("ec2", "LockSnapshot") == lim.EC2_MUTATING
    assert lim.published("ec2", "UnlockSnapshot") == lim.EC2_MUTATING
    assert lim.published("ec2", "DescribeLockedSnapshots") == lim.EC2_NON_MUTATING
    assert lim.published("ecs", "LockSnapshot") == lim.ALICLOUD_MUTATING
    assert lim.published("ecs", "DescribeLockedSnapshots") == lim.ALICLOUD_NON_MUTATING


def test_aws_lock_calls_are_throttled_from_their_bucket(twin_factory):
    twins = twin_factory(FLEET, alicloud=False, limits={"LockSnapshot": {"capacity": 1, "refill": 0.001}})
    ec2 = twins.aws_client("ec2")
    iid = twins.aws.instances["web-1"]
    snaps = [s["SnapshotId"] for s in ec2.create_snapshots(InstanceSpecification={"InstanceId": iid})["Snapshots"]]
    ec2.lock_snapshot(SnapshotId=snaps[0], LockMode="governance", LockDuration=1)
    with pytest.raises(ClientError) as refused:
        ec2.lock_snapshot(SnapshotId=snaps[1], LockMode="governance", LockDuration=1)
    assert code_of(refused) == "RequestLimitExceeded"


# --- Alibaba Cloud -------------------------------------------------------------------------------


@pytest.fixture
def ali(twin_factory):
    twins = twin_factory(FLEET, aws=False)
    ecs = twins.ecs_client()
    region = twins.endpoints["alicloud"]["region"]
    group = ecs.create_snapshot_group(m.CreateSnapshotGroupRequest(region_id=region, instance_id="i-bp1lockstwin00001"))
    group_id = group.body.snapshot_group_id
    listed = ecs.describe_snapshot_groups(m.DescribeSnapshotGroupsRequest(region_id=region, snapshot_group_id=[group_id]))
    snaps = [s.snapshot_id for s in listed.body.snapshot_groups.snapshot_group[0].snapshots.snapshot]
    return twins, ecs, region, group_id, snaps


def ali_lock(ecs, region, snapshot_id, days, cool_off=None, mode="compliance"):
    return ecs.lock_snapshot(m.LockSnapshotRequest(region_id=region, snapshot_id=snapshot_id, lock_mode=mode,
                                                   lock_duration=days, cool_off_period=cool_off)).body


def ali_state(ecs, region, snapshot_id):
    found = ecs.describe_locked_snapshots(m.DescribeLockedSnapshotsRequest(region_id=region, snapshot_ids=[snapshot_id]))
    rows = found.body.locked_snapshots_info or []
    return rows[0] if rows else None


def age_ali(twins, seconds):
    twins.alicloud.cloud.ecs.locks.age(seconds)


def test_alicloud_compliance_lock_rules_by_phase_and_delete_refused(ali):
    twins, ecs, region, group_id, (snap, other) = ali
    info = ali_lock(ecs, region, snap, 10, cool_off=2).locked_snapshot_info
    assert info.lock_status == "compliance-cooloff" and info.lock_duration == 10 and info.cool_off_period == 2
    for refused_request in (dict(days=0), dict(days=36501), dict(days=1, cool_off=73), dict(days=1, mode="governance")):
        with pytest.raises(Exception) as refused:
            ali_lock(ecs, region, other, **refused_request)
        assert "InvalidParameter" in str(refused.value), refused_request
    # Within the cooling-off period: a relock resets every setting, shorter is fine.
    assert ali_lock(ecs, region, snap, 3, cool_off=1).locked_snapshot_info.lock_duration == 3
    with pytest.raises(Exception) as refused:
        ecs.delete_snapshot(m.DeleteSnapshotRequest(snapshot_id=snap, force=True))
    assert "OperationDenied.SnapshotLocked" in str(refused.value)
    age_ali(twins, 1 * HOUR + 1)
    assert ali_state(ecs, region, snap).lock_status == "compliance"
    with pytest.raises(Exception) as refused:
        ali_lock(ecs, region, snap, 2, cool_off=0)
    assert "OperationDenied.SnapshotLocked" in str(refused.value)
    with pytest.raises(Exception) as refused:
        ali_lock(ecs, region, snap, 5, cool_off=1)
    assert "InvalidParameter.CoolOffPeriod" in str(refused.value)
    with pytest.raises(Exception) as refused:
        ecs.unlock_snapshot(m.UnlockSnapshotRequest(region_id=region, snapshot_id=snap))
    assert "OperationDenied.SnapshotLocked" in str(refused.value)
    assert ali_lock(ecs, region, snap, 5, cool_off=0).locked_snapshot_info.lock_duration == 5
    # The group goes but for its locked member, which stays with the group.
    answer = ecs.delete_snapshot_group(m.DeleteSnapshotGroupRequest(region_id=region, snapshot_group_id=group_id)).body
    outcomes = {p.related_item_set.related_item[0].value: (p.operation_status, p.error_code)
                for p in answer.operation_progress_set.operation_progress}
    assert outcomes == {snap: ("Failed", "OperationDenied.SnapshotLocked"), other: ("Success", "")}
    left = ecs.describe_snapshot_groups(m.DescribeSnapshotGroupsRequest(region_id=region, snapshot_group_id=[group_id]))
    assert [s.snapshot_id for s in left.body.snapshot_groups.snapshot_group[0].snapshots.snapshot] == [snap]


def test_alicloud_unlock_within_cooling_off_and_zero_cool_off_locks_at_once(ali):
    twins, ecs, region, _group_id, (snap, other) = ali
    ali_lock(ecs, region, snap, 1, cool_off=1)
    ecs.unlock_snapshot(m.UnlockSnapshotRequest(region_id=region, snapshot_id=snap))
    assert ali_state(ecs, region, snap) is None
    ecs.delete_snapshot(m.DeleteSnapshotRequest(snapshot_id=snap, force=True))
    assert ali_lock(ecs, region, other, 1, cool_off=0).locked_snapshot_info.lock_status == "compliance"
    listed = ecs.describe_locked_snapshots(m.DescribeLockedSnapshotsRequest(region_id=region, lock_status="compliance"))
    assert [r.snapshot_id for r in listed.body.locked_snapshots_info] == [other]
    age_ali(twins, 24 * HOUR + 1)
    assert ali_state(ecs, region, other).lock_status == "expired"
    ecs.delete_snapshot(m.DeleteSnapshotRequest(snapshot_id=other, force=True))
