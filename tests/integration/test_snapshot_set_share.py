"""snapshot_set_share against the twins: real ansible-playbook runs; share, unshare, public only when asked."""

import pytest

from ansible_collections.appconsistent.snapshots.plugins.module_utils import snapshot_set as ss

SHARE = "appconsistent.snapshots.snapshot_set_share"
PARTNER = "111122223333"
AUDITOR = "444455556666"

FLEET = {
    "instances": [
        {"provider": "aws", "name": "app-1", "platform": "linux",
         "volumes": [{"device": "/dev/xvda", "size": 8, "boot": True}, {"device": "/dev/xvdf", "size": 20},
                     {"device": "/dev/xvdg", "size": 10}]},
        {"provider": "aws", "name": "other-1", "platform": "linux",
         "volumes": [{"device": "/dev/xvda", "size": 8, "boot": True}, {"device": "/dev/xvdf", "size": 5}]},
        {"provider": "aws", "name": "vault-1", "platform": "linux",
         "volumes": [{"device": "/dev/xvda", "size": 8, "boot": True},
                     {"device": "/dev/xvdf", "size": 5, "encrypted": True}]},
    ],
}


def take_set(twins, name):
    ec2 = twins.aws_client("ec2")
    instance_id = twins.aws.instances[name]
    set_id = ss.new_set_id()
    snaps = ec2.create_snapshots(
        InstanceSpecification={"InstanceId": instance_id, "ExcludeBootVolume": True},
        TagSpecifications=[{"ResourceType": "snapshot", "Tags": [
            {"Key": k, "Value": v} for k, v in ss.set_tags(set_id, instance_id, "application").items()]}])["Snapshots"]
    return set_id, sorted(s["SnapshotId"] for s in snaps)


def permissions(twins, snapshot_id):
    found = twins.aws_client("ec2").describe_snapshot_attribute(
        SnapshotId=snapshot_id, Attribute="createVolumePermission")["CreateVolumePermissions"]
    return sorted(p.get("UserId") or "group:" + p["Group"] for p in found)


def share(register, set_id, **extra):
    args = dict(provider="aws", set_id=set_id)
    args.update(extra)
    return {"name": register, SHARE: args, "register": register, "diff": True}


@pytest.fixture
def twins(twin_factory):
    return twin_factory(FLEET, alicloud=False)


def test_share_and_unshare_with_check_mode_and_idempotent_reruns(twins, run_tasks):
    set_id, members = take_set(twins, "app-1")
    other_set, other_members = take_set(twins, "other-1")

    planned = run_tasks([share("plan", set_id, account_ids=[PARTNER, AUDITOR])], twins.endpoints, check=True)["plan"]
    assert not planned.get("failed"), planned
    assert planned["changed"] is True and planned["account_ids"] == sorted([PARTNER, AUDITOR])
    assert planned["diff"]["before"][members[0]] == {"account_ids": [], "public": False}
    assert planned["diff"]["after"][members[0]]["account_ids"] == sorted([PARTNER, AUDITOR])
    assert all(permissions(twins, s) == [] for s in members)

    run = run_tasks([share("grant", set_id, account_ids=[PARTNER, AUDITOR]),
                     share("grant_again", set_id, account_ids=[PARTNER, AUDITOR])], twins.endpoints)
    grant, again = run["grant"], run["grant_again"]
    assert not grant.get("failed"), grant
    assert grant["changed"] is True and grant["public"] is False
    assert sorted(m["snapshot_id"] for m in grant["members"]) == members
    assert all(permissions(twins, s) == sorted([PARTNER, AUDITOR]) for s in members)
    assert again["changed"] is False
    # sharing one set leaves every other set alone
    assert all(permissions(twins, s) == [] for s in other_members) and other_set != set_id

    check_revoke = run_tasks([share("plan_revoke", set_id, account_ids=[AUDITOR], state="absent")], twins.endpoints,
                             check=True)["plan_revoke"]
    assert check_revoke["changed"] is True
    assert all(permissions(twins, s) == sorted([PARTNER, AUDITOR]) for s in members)

    run = run_tasks([share("revoke", set_id, account_ids=[AUDITOR], state="absent"),
                     share("revoke_again", set_id, account_ids=[AUDITOR], state="absent")], twins.endpoints)
    assert run["revoke"]["changed"] is True and run["revoke"]["account_ids"] == [PARTNER]
    assert all(m["removed_account_ids"] == [AUDITOR] for m in run["revoke"]["members"])
    assert run["revoke_again"]["changed"] is False
    assert all(permissions(twins, s) == [PARTNER] for s in members)


def test_public_needs_public_true_and_can_be_withdrawn(twins, run_tasks):
    set_id, members = take_set(twins, "app-1")
    vault_set, vault_members = take_set(twins, "vault-1")
    run = run_tasks([
        share("all_as_account", set_id, account_ids=["all"]),
        share("nothing", set_id),
        share("bad_account", set_id, account_ids=["12345"]),
        share("unknown", "acs-20200101t000000-00000000", account_ids=[PARTNER]),
        share("encrypted_public", vault_set, public=True),
    ], twins.endpoints)
    assert run["all_as_account"]["failed"] and "public: true" in run["all_as_account"]["msg"]
    assert run["nothing"]["failed"] and "Nothing to share" in run["nothing"]["msg"]
    assert run["bad_account"]["failed"] and "12 digits" in run["bad_account"]["msg"]
    assert run["unknown"]["failed"] and "no snapshot carries appconsistent:set-id" in run["unknown"]["msg"]
    # an encrypted set is never made public
    assert run["encrypted_public"]["failed"] and "cannot be made public" in run["encrypted_public"]["msg"]
    assert all(permissions(twins, s) == [] for s in members + vault_members)
    assert twins.stats.counts("aws").get("ModifySnapshotAttribute") is None

    run = run_tasks([share("publish", set_id, public=True), share("publish_again", set_id, public=True)],
                    twins.endpoints)
    assert run["publish"]["changed"] is True and run["publish"]["public"] is True
    assert run["publish_again"]["changed"] is False
    assert all(permissions(twins, s) == ["group:all"] for s in members)

    run = run_tasks([share("withdraw", set_id, public=True, state="absent")], twins.endpoints)
    assert run["withdraw"]["changed"] is True and run["withdraw"]["public"] is False
    assert all(permissions(twins, s) == [] for s in members)


def test_set_encrypted_with_the_aws_managed_key_is_not_shared(twins, run_tasks):
    set_id, members = take_set(twins, "vault-1")
    result = run_tasks([share("grant", set_id, account_ids=[PARTNER])], twins.endpoints)["grant"]
    assert result["failed"] and "AWS managed key" in result["msg"]
    assert all(permissions(twins, s) == [] for s in members)


def test_alicloud_sharing_fails_with_the_reason(twin_factory, run_tasks):
    twins = twin_factory(aws=False)
    result = run_tasks([{"name": "grant", SHARE: {"provider": "alicloud", "set_id": "ssg-bp1example0000001",
                                                  "account_ids": [PARTNER]}, "register": "grant"}],
                       twins.endpoints)["grant"]
    assert result["failed"] and "not supported on Alibaba Cloud" in result["msg"]
    assert twins.stats.counts("alicloud") == {}


def test_sharing_is_paced_by_the_modify_snapshot_attribute_bucket(twin_factory, run_tasks):
    # ModifySnapshotAttribute has a bucket of its own (published: 100 refilling 5 a second), here one token refilling
    # 2 a second: every member's permission change waits for its token instead of being throttled.
    tight = {"ModifySnapshotAttribute": {"capacity": 1, "refill": 2}}
    twins = twin_factory(FLEET, alicloud=False, limits=tight)
    set_id, members = take_set(twins, "app-1")
    twins.stats.reset()
    result = run_tasks([share("shared", set_id, account_ids=[PARTNER], api_rate_limits=tight)], twins.endpoints)["shared"]
    assert not result.get("failed"), result
    assert all(permissions(twins, m) == [PARTNER] for m in members)
    assert twins.stats.throttled("aws") == {}, twins.stats.throttle_log("aws")
    assert twins.stats.counts("aws")["ModifySnapshotAttribute"] == len(members) == 2
    assert result["api_pacing"]["throttled_calls"] == {}
    assert result["api_pacing"]["calls"]["ModifySnapshotAttribute"] == 2
