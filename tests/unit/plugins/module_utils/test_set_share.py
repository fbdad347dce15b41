"""snapshot_set_share: requests checked against botocore's service model, whole-set checks, refusals."""

import datetime

import pytest

from ansible_collections.appconsistent.snapshots.plugins.module_utils import set_share
from ansible_collections.appconsistent.snapshots.plugins.module_utils import snapshot_set as ss

UTC = datetime.timezone.utc
ACCOUNT = "111122223333"
OTHER = "444455556666"
KEY = "arn:aws:kms:us-east-1:123456789012:key/0b1c2d3e-0000-4000-8000-000000000001"
SET_FILTER = {"OwnerIds": ["self"], "MaxResults": 1000,
              "Filters": [{"Name": "tag:appconsistent:set-id", "Values": ["acs-1"]}]}


pytestmark = pytest.mark.usefixtures("no_sleep")  # retries count their attempts without waiting


def params(**overrides):
    base = dict(provider="aws", set_id="acs-1", account_ids=[ACCOUNT], public=False, state="present")
    base.update(overrides)
    return base


def snapshot(snapshot_id, encrypted=False, key=None, device="/dev/xvdf"):
    item = {"SnapshotId": snapshot_id, "VolumeId": "vol-1", "State": "completed", "VolumeSize": 8, "Progress": "100%",
            "StartTime": datetime.datetime(2026, 11, 23, tzinfo=UTC), "OwnerId": "123456789012", "Description": "",
            "Encrypted": encrypted, "Tags": [{"Key": ss.TAG_SET_ID, "Value": "acs-1"}, {"Key": ss.TAG_DEVICE, "Value": device}]}
    if key:
        item["KmsKeyId"] = key
    return item


def expect_members(stub, *snapshots):
    stub.add_response("describe_snapshots", {"Snapshots": list(snapshots)}, SET_FILTER)


def expect_permissions(stub, snapshot_id, users=(), groups=()):
    permissions = [{"UserId": u} for u in users] + [{"Group": g} for g in groups]
    stub.add_response("describe_snapshot_attribute", {"SnapshotId": snapshot_id, "CreateVolumePermissions": permissions},
                      {"SnapshotId": snapshot_id, "Attribute": "createVolumePermission"})


def expect_modify(stub, snapshot_id, operation, users=None, groups=None):
    request = {"SnapshotId": snapshot_id, "Attribute": "createVolumePermission", "OperationType": operation}
    if users:
        request["UserIds"] = users
    if groups:
        request["GroupNames"] = groups
    stub.add_response("modify_snapshot_attribute", {}, request)


def share(ec2_client, kms_client=None, check_mode=False, **overrides):
    return set_share.SetShare(ec2_client, lambda: kms_client, params(**overrides), check_mode=check_mode).run()


def test_grants_only_what_is_missing_on_every_member(ec2):
    client, stub = ec2
    expect_members(stub, snapshot("snap-1"), snapshot("snap-2", device="/dev/xvdg"))
    expect_permissions(stub, "snap-1", users=[ACCOUNT])
    expect_permissions(stub, "snap-2")
    expect_modify(stub, "snap-1", "add", users=[OTHER])
    expect_modify(stub, "snap-2", "add", users=[ACCOUNT, OTHER])
    result = share(client, account_ids=[OTHER, ACCOUNT])
    assert result["changed"] is True
    assert result["account_ids"] == [ACCOUNT, OTHER]
    assert [m["added_account_ids"] for m in result["members"]] == [[OTHER], [ACCOUNT, OTHER]]
    assert result["diff"]["before"]["snap-2"] == {"account_ids": [], "public": False}
    assert result["diff"]["after"]["snap-2"] == {"account_ids": [ACCOUNT, OTHER], "public": False}


def test_a_snapshot_of_another_set_returned_by_the_filter_is_never_shared(ec2):
    # The tag filter is the cloud's reading of the value (EC2 filters take wildcards): only the set named is acted on.
    client, stub = ec2
    other = snapshot("snap-9")
    other["Tags"][0]["Value"] = "acs-10"
    expect_members(stub, snapshot("snap-1"), other)
    expect_permissions(stub, "snap-1")
    expect_modify(stub, "snap-1", "add", users=[ACCOUNT])
    result = share(client)
    assert [m["snapshot_id"] for m in result["members"]] == ["snap-1"]


def test_rerun_with_permissions_in_place_changes_nothing(ec2):
    client, stub = ec2
    expect_members(stub, snapshot("snap-1"))
    expect_permissions(stub, "snap-1", users=[ACCOUNT, OTHER])
    result = share(client)
    assert result["changed"] is False and result["members"][0]["account_ids"] == [ACCOUNT, OTHER]


def test_check_mode_reads_but_never_modifies(ec2):
    client, stub = ec2
    expect_members(stub, snapshot("snap-1"))
    expect_permissions(stub, "snap-1")
    result = share(client, check_mode=True)
    assert result["changed"] is True and result["members"][0]["account_ids"] == [ACCOUNT]


def test_revoke_removes_only_the_named_accounts_that_have_it(ec2):
    client, stub = ec2
    expect_members(stub, snapshot("snap-1"), snapshot("snap-2"))
    expect_permissions(stub, "snap-1", users=[ACCOUNT, OTHER])
    expect_permissions(stub, "snap-2", users=[OTHER])
    expect_modify(stub, "snap-1", "remove", users=[ACCOUNT])
    result = share(client, state="absent")
    assert result["changed"] is True and result["account_ids"] == [OTHER]
    assert [m["removed_account_ids"] for m in result["members"]] == [[ACCOUNT], []]


def test_public_is_added_and_withdrawn_only_with_public_true(ec2):
    client, stub = ec2
    expect_members(stub, snapshot("snap-1"))
    expect_permissions(stub, "snap-1")
    expect_modify(stub, "snap-1", "add", groups=["all"])
    assert share(client, account_ids=[], public=True)["public"] is True
    expect_members(stub, snapshot("snap-1"))
    expect_permissions(stub, "snap-1", groups=["all"], users=[ACCOUNT])
    expect_modify(stub, "snap-1", "remove", groups=["all"])
    result = share(client, account_ids=[], public=True, state="absent")
    assert result["public"] is False and result["members"][0]["account_ids"] == [ACCOUNT]


def test_unsharing_accounts_leaves_a_public_set_public(ec2):
    client, stub = ec2
    expect_members(stub, snapshot("snap-1"))
    expect_permissions(stub, "snap-1", groups=["all"], users=[ACCOUNT])
    expect_modify(stub, "snap-1", "remove", users=[ACCOUNT])
    assert share(client, state="absent")["public"] is True


@pytest.mark.parametrize("overrides, message", [
    (dict(account_ids=["all"]), "public: true"),
    (dict(account_ids=["ALL"]), "public: true"),
    (dict(account_ids=["1234"]), "12 digits"),
    (dict(account_ids=[]), "Nothing to share"),
    (dict(provider="alicloud"), "not supported on Alibaba Cloud"),
])
def test_refusals_before_any_call(overrides, message):
    with pytest.raises(set_share.ShareRefused, match=message):
        set_share.validate(params(**overrides))


def test_unknown_set_is_refused(ec2):
    client, stub = ec2
    expect_members(stub)
    with pytest.raises(set_share.ShareRefused, match="no snapshot carries appconsistent:set-id=acs-1"):
        share(client)


def test_encrypted_member_is_never_made_public_and_nothing_changes(ec2):
    client, stub = ec2
    expect_members(stub, snapshot("snap-1"), snapshot("snap-2", encrypted=True, key=KEY))
    expect_permissions(stub, "snap-1")
    expect_permissions(stub, "snap-2")
    with pytest.raises(set_share.ShareRefused, match="snap-2 is encrypted, and encrypted snapshots cannot be made public"):
        share(client, account_ids=[], public=True)


def test_member_on_the_aws_managed_key_refuses_the_whole_set(ec2, kms):
    client, stub = ec2
    kms_client, kms_stub = kms
    expect_members(stub, snapshot("snap-1"), snapshot("snap-2", encrypted=True, key=KEY))
    expect_permissions(stub, "snap-1")
    expect_permissions(stub, "snap-2")
    kms_stub.add_response("describe_key", {"KeyMetadata": {"KeyId": "k", "KeyManager": "AWS"}}, {"KeyId": KEY})
    with pytest.raises(set_share.ShareRefused, match="AWS managed key .* cannot be shared") as refused:
        share(client, kms_client)
    assert "no permission was changed" in str(refused.value)


def test_aws_managed_key_known_by_its_reserved_alias(ec2, kms):
    client, stub = ec2
    kms_client, kms_stub = kms
    expect_members(stub, snapshot("snap-1", encrypted=True, key=KEY))
    expect_permissions(stub, "snap-1")
    kms_stub.add_response("describe_key", {"KeyMetadata": {"KeyId": "k", "KeyManager": "CUSTOMER"}}, {"KeyId": KEY})
    kms_stub.add_response("list_aliases", {"Aliases": [{"AliasName": "alias/aws/ebs"}]}, {"KeyId": KEY})
    with pytest.raises(set_share.ShareRefused, match="AWS managed key"):
        share(client, kms_client)


def test_customer_managed_key_is_shared(ec2, kms):
    client, stub = ec2
    kms_client, kms_stub = kms
    expect_members(stub, snapshot("snap-1", encrypted=True, key=KEY), snapshot("snap-2", encrypted=True, key=KEY))
    expect_permissions(stub, "snap-1")
    expect_permissions(stub, "snap-2")
    kms_stub.add_response("describe_key", {"KeyMetadata": {"KeyId": "k", "KeyManager": "CUSTOMER"}}, {"KeyId": KEY})
    kms_stub.add_response("list_aliases", {"Aliases": [{"AliasName": "alias/dr-backups"}]}, {"KeyId": KEY})
    expect_modify(stub, "snap-1", "add", users=[ACCOUNT])
    expect_modify(stub, "snap-2", "add", users=[ACCOUNT])
    assert share(client, kms_client)["changed"] is True  # one key lookup serves both members


def test_kms_access_denied_is_a_warning_not_a_refusal(ec2, kms):
    client, stub = ec2
    kms_client, kms_stub = kms
    expect_members(stub, snapshot("snap-1", encrypted=True, key=KEY))
    expect_permissions(stub, "snap-1")
    kms_stub.add_client_error("describe_key", service_error_code="AccessDeniedException", http_status_code=400)
    expect_modify(stub, "snap-1", "add", users=[ACCOUNT])
    result = share(client, kms_client)
    assert result["changed"] is True and "was not checked" in result["warnings"][0]


def test_encrypted_member_without_a_reported_key_is_refused(ec2):
    client, stub = ec2
    expect_members(stub, snapshot("snap-1", encrypted=True))
    expect_permissions(stub, "snap-1")
    with pytest.raises(set_share.ShareRefused, match="KMS key is not reported"):
        share(client)


def test_revoking_from_encrypted_members_needs_no_key_check(ec2):
    client, stub = ec2
    expect_members(stub, snapshot("snap-1", encrypted=True, key=KEY))
    expect_permissions(stub, "snap-1", users=[ACCOUNT])
    expect_modify(stub, "snap-1", "remove", users=[ACCOUNT])
    assert share(client, state="absent")["changed"] is True


def test_sharing_a_set_that_proves_itself_incomplete_says_so(ec2):
    # Issue 18 line 4: a copy cut short, shared as if it were the whole set.
    client, stub = ec2
    partial = snapshot("snap-1")
    partial["Tags"].append({"Key": ss.TAG_MEMBERS, "Value": "2"})
    expect_members(stub, partial)
    expect_permissions(stub, "snap-1")
    expect_modify(stub, "snap-1", "add", users=[ACCOUNT])
    result = share(client)
    assert result["changed"] is True
    assert result["warnings"] == ["set acs-1 is incomplete (only 1 of its 2 snapshots exist): only the snapshots it "
                                  "has are shared"]
