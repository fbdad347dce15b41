"""snapshot_set_copy logic: the queue, idempotency, tags, and every request checked against the SDKs' own models."""

import datetime
from unittest import mock

import boto3
import pytest
from botocore.stub import Stubber

from alibabacloud_ecs20140526 import models as ecs_models

from ansible_collections.appconsistent.snapshots.plugins.module_utils import set_copy
from ansible_collections.appconsistent.snapshots.plugins.module_utils import snapshot_set as ss
from ansible_collections.appconsistent.snapshots.plugins.module_utils.alicloud import AlibabaCloud
from ansible_collections.appconsistent.snapshots.plugins.module_utils.alicloud import AlibabaCloudError
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import AppConsistentAWSError

UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 11, 23, 6, 0, tzinfo=UTC)


pytestmark = pytest.mark.usefixtures("no_sleep")  # retries count their attempts without waiting


def params(**overrides):
    base = dict(provider="aws", set_id="acs-src", destination_region="eu-west-1", encrypted=None, kms_key_id=None,
                tags={}, delete_after=None, max_concurrent_copies=5, wait=True, wait_timeout=14400)
    base.update(overrides)
    return base


def source_member(snapshot_id, device, state="completed", **tags):
    base = dict(ss.set_tags("acs-src", "i-0abc", "application", device=device, run_id="CHG-1"))
    base.update(AppConsistent="true", Device=device, env="prod")
    base.update(tags)
    return dict(snapshot_id=snapshot_id, state=state, device=device, tags=base)


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def sleep(self, seconds):
        self.now += seconds

    def __call__(self):
        return self.now


class FakeCopyApi:
    """A destination where each copy completes after ``polls_to_complete`` describes; records what was asked."""

    provider = "aws"
    COMPLETE = ("completed",)
    FAILED = ("error",)
    TAGS_MAX = 50
    source_region = "us-east-1"
    destination_region = "eu-west-1"

    def __init__(self, members, existing=None, polls_to_complete=2, limited=0, fail=()):
        self.members = members
        self.existing = existing or []
        self.polls_to_complete = polls_to_complete
        self.limited = limited
        self.fail = set(fail)
        self.started = []
        self.tags = {}
        self.tokens = []
        self.discarded = []
        self.age = {}
        self.max_in_flight = 0
        self.calls = []

    def source_members(self, set_id):
        self.calls.append(("source", set_id))
        return [dict(m) for m in self.members]

    def existing_copies(self, source_set_id):
        self.calls.append(("existing", source_set_id))
        return [dict(m) for m in self.existing]

    def _in_flight(self):
        return sum(1 for copy_id, age in self.age.items() if age < self.polls_to_complete)

    def start(self, member, tags, description, encrypted, kms_key_id, token):
        if self.limited:
            self.limited -= 1
            raise set_copy.CopyLimited("ResourceLimitExceeded")
        copy_id = f"snap-copy-{len(self.started)}"
        self.started.append((member["snapshot_id"], encrypted, kms_key_id, description))
        self.tags[copy_id] = tags
        self.tokens.append(token)
        self.age[copy_id] = 0
        self.max_in_flight = max(self.max_in_flight, self._in_flight())
        return copy_id

    def describe(self, snapshot_ids):
        found = {}
        for copy_id in snapshot_ids:
            if copy_id not in self.age:
                continue
            self.age[copy_id] += 1
            source = self.tags[copy_id][set_copy.TAG_SOURCE_SNAPSHOT]
            if self.age[copy_id] >= self.polls_to_complete:
                state = "error" if source in self.fail else "completed"
            else:
                state = "pending"
            found[copy_id] = dict(snapshot_id=copy_id, state=state, progress="50%")
        return found

    def discard(self, snapshot_id):
        self.discarded.append(snapshot_id)


def run_copy(api, check_mode=False, **overrides):
    clock = FakeClock()
    copier = set_copy.SetCopy(api, params(**overrides), check_mode=check_mode, sleep=clock.sleep, clock=clock, now=NOW)
    return copier, copier.run(), clock


MEMBERS = [source_member(f"snap-{n}", f"/dev/xvd{chr(ord('f') + n)}") for n in range(7)]


# --- the queue ------------------------------------------------------------------------------


def test_no_more_than_max_concurrent_copies_run_at_once_and_all_complete():
    api = FakeCopyApi(MEMBERS, polls_to_complete=3)
    _copier, result, _clock = run_copy(api, max_concurrent_copies=2)
    assert api.max_in_flight == 2
    assert sorted(s[0] for s in api.started) == sorted(m["snapshot_id"] for m in MEMBERS)
    assert result["changed"] is True and result["complete"] is True
    assert {m["state"] for m in result["members"]} == {"completed"}
    assert result["set_id"].startswith("acs-20261123t060000-")


def test_provider_limit_puts_the_copy_back_in_the_queue():
    api = FakeCopyApi(MEMBERS[:3], limited=4)
    _copier, result, _clock = run_copy(api)
    assert result["limit_waits"] == 4 and result["complete"] is True
    assert len(api.started) == 3


def test_without_wait_returns_once_every_copy_started():
    api = FakeCopyApi(MEMBERS, polls_to_complete=2)
    _copier, result, _clock = run_copy(api, max_concurrent_copies=3, wait=False)
    assert len(api.started) == 7 and api.max_in_flight <= 3
    assert result["complete"] is False
    assert all(m["snapshot_id"] for m in result["members"])


def test_timeout_names_what_is_running_and_queued_and_keeps_the_copy_set():
    api = FakeCopyApi(MEMBERS, polls_to_complete=10 ** 6)
    with pytest.raises(set_copy.CopyFailed) as failed:
        run_copy(api, max_concurrent_copies=2, wait_timeout=60)
    message = str(failed.value)
    assert "did not finish within wait_timeout (60 s)" in message
    assert "2 copies still running" in message and "5 not started yet" in message
    assert "Run the task again" in message
    assert failed.value.result["set_id"] is not None and failed.value.result["changed"] is True
    states = [m["state"] for m in failed.value.result["members"]]
    assert states.count("not_started") == 5


def test_copy_that_ends_in_error_fails_the_task_naming_it():
    api = FakeCopyApi(MEMBERS[:2], fail={"snap-1"})
    with pytest.raises(set_copy.CopyFailed, match=r"snap-copy-1 \(copy of snap-1\)"):
        run_copy(api)


# --- idempotency ----------------------------------------------------------------------------------


def copy_of(source, copy_id, set_id="acs-copy", state="completed"):
    tags = set_copy.copy_tags(source["tags"], set_id, "acs-src", "us-east-1", source["snapshot_id"])
    return dict(snapshot_id=copy_id, state=state, device=source["device"], tags=tags)


def test_existing_complete_copy_is_returned_unchanged():
    existing = [copy_of(m, f"snap-c{n}") for n, m in enumerate(MEMBERS[:3])]
    api = FakeCopyApi(MEMBERS[:3], existing=existing)
    _copier, result, _clock = run_copy(api)
    assert result["changed"] is False and result["set_id"] == "acs-copy" and result["complete"] is True
    assert api.started == []
    assert [m["snapshot_id"] for m in result["members"]] == ["snap-c0", "snap-c1", "snap-c2"]


def test_partial_copy_is_completed_into_the_same_set_and_failed_copies_are_made_anew():
    existing = [copy_of(MEMBERS[0], "snap-c0"), copy_of(MEMBERS[1], "snap-bad", state="error")]
    api = FakeCopyApi(MEMBERS[:3], existing=existing)
    _copier, result, _clock = run_copy(api)
    assert result["set_id"] == "acs-copy" and result["changed"] is True
    assert sorted(s[0] for s in api.started) == ["snap-1", "snap-2"]
    assert api.discarded == ["snap-bad"] and result["discarded_snapshot_ids"] == ["snap-bad"]
    assert all(t[ss.TAG_SET_ID] == "acs-copy" for t in api.tags.values())


def test_two_copy_sets_the_larger_is_completed_with_a_warning():
    existing = [copy_of(MEMBERS[0], "snap-a0", set_id="acs-a"), copy_of(MEMBERS[0], "snap-b0", set_id="acs-b"),
                copy_of(MEMBERS[1], "snap-b1", set_id="acs-b")]
    api = FakeCopyApi(MEMBERS[:2], existing=existing)
    _copier, result, _clock = run_copy(api)
    assert result["set_id"] == "acs-b" and result["changed"] is False
    assert "acs-a" in result["warnings"][0]


def test_check_mode_starts_nothing_and_reports_the_plan():
    existing = [copy_of(MEMBERS[0], "snap-c0")]
    api = FakeCopyApi(MEMBERS[:2], existing=existing)
    _copier, result, _clock = run_copy(api, check_mode=True)
    assert api.started == [] and api.discarded == []
    assert result["changed"] is True and result["set_id"] == "acs-copy"
    assert [m["state"] for m in result["members"]] == ["completed", "not_started"]
    assert result["diff"]["before"]["copies"] == {"snap-0": "snap-c0"}
    assert result["diff"]["after"]["copies"] == {"snap-0": "snap-c0", "snap-1": "(new copy)"}


def test_check_mode_of_a_new_copy_has_no_set_id():
    api = FakeCopyApi(MEMBERS[:2])
    _copier, result, _clock = run_copy(api, check_mode=True)
    assert result["set_id"] is None and result["changed"] is True and api.started == []


def test_retried_alibaba_copy_gets_the_same_client_token():
    assert set_copy.client_token("acs-1", "s-1") == set_copy.client_token("acs-1", "s-1")
    assert set_copy.client_token("acs-1", "s-1") != set_copy.client_token("acs-1", "s-2")
    assert len(set_copy.client_token("acs-1", "s-1")) <= 64


# --- refusals -------------------------------------------------------------------------------------


def test_incomplete_source_set_is_refused_before_anything():
    api = FakeCopyApi([MEMBERS[0], dict(MEMBERS[1], state="pending")])
    with pytest.raises(set_copy.CopyRefused, match="not complete yet"):
        run_copy(api)
    assert api.started == [] and ("existing", "acs-src") not in api.calls


def test_unknown_set_is_refused():
    with pytest.raises(set_copy.CopyRefused, match="no snapshot carries appconsistent:set-id=acs-src in us-east-1"):
        run_copy(FakeCopyApi([]))


@pytest.mark.parametrize("overrides, message", [
    (dict(provider="alicloud", destination_region="cn-hangzhou"), "only to another region"),
    (dict(kms_key_id="alias/x", encrypted=False), "kms_key_id encrypts"),
    (dict(max_concurrent_copies=0), "max_concurrent_copies"),
    (dict(wait_timeout=0), "wait_timeout"),
    (dict(tags={"appconsistent:set-id": "x"}), "reserved"),
    (dict(tags={"Device": "x"}), "reserved"),
    (dict(tags={"acs:owner": "x"}), "reserved"),
    (dict(delete_after="soon"), "delete_after"),
])
def test_validation(overrides, message):
    with pytest.raises(set_copy.CopyRefused, match=message):
        set_copy.validate(params(**overrides), "cn-hangzhou")


def test_too_many_tags_for_the_provider_are_refused_before_the_first_copy():
    many = {f"k{n}": "v" for n in range(50)}
    api = FakeCopyApi([source_member("snap-0", "/dev/xvdf", **many)])
    with pytest.raises(set_copy.CopyRefused, match="more than the 50"):
        run_copy(api)
    assert api.started == []


# --- tags -------------------------------------------------------------------------------------------


def test_copy_tags_keep_the_set_drop_provider_evidence_and_say_where_from():
    source = source_member("snap-0", "/dev/xvdf", **{"aws:backup:source": "x", ss.TAG_DELETE_AFTER: "2027-01-01T00:00:00Z"})
    tags = set_copy.copy_tags(source["tags"], "acs-new", "acs-src", "us-east-1", "snap-0", extra={"purpose": "dr"})
    assert tags[ss.TAG_SET_ID] == "acs-new"
    assert tags[ss.TAG_INSTANCE_ID] == "i-0abc" and tags[ss.TAG_CONSISTENCY] == "application"
    assert tags[ss.TAG_RUN_ID] == "CHG-1" and tags[ss.TAG_DEVICE] == "/dev/xvdf"
    assert tags[ss.TAG_DELETE_AFTER] == "2027-01-01T00:00:00Z"
    assert tags[set_copy.TAG_COPIED_FROM] == "acs-src" and tags[set_copy.TAG_SOURCE_REGION] == "us-east-1"
    assert tags[set_copy.TAG_SOURCE_SNAPSHOT] == "snap-0"
    assert tags["env"] == "prod" and tags["purpose"] == "dr"
    assert not {"AppConsistent", "Device", "aws:backup:source"} & set(tags)


def test_a_copy_keeps_each_members_own_level_and_the_sets_level():
    """A root volume labelled crash in an application set stays so in the copy (issue 18 line 12)."""
    source = source_member("snap-0", "/dev/xvda", **ss.consistency_tags("crash", "application"))
    tags = set_copy.copy_tags(source["tags"], "acs-new", "acs-src", "us-east-1", "snap-0")
    assert (tags[ss.TAG_CONSISTENCY], tags[ss.TAG_SET_CONSISTENCY]) == ("crash", "application")


def test_device_from_the_vss_tag_when_ours_is_missing():
    tags = set_copy.copy_tags({"Device": "xvdf", ss.TAG_SET_ID: "acs-src"}, "acs-new", "acs-src", "us-east-1", "snap-0")
    assert tags[ss.TAG_DEVICE] == "xvdf" and "Device" not in tags


def test_delete_after_option_overrides_the_source_retention():
    api = FakeCopyApi([source_member("snap-0", "/dev/xvdf", **{ss.TAG_DELETE_AFTER: "2027-01-01T00:00:00Z"})])
    run_copy(api, delete_after="30d")
    tags = list(api.tags.values())[0]
    assert len(api.tags) == 1 and tags[ss.TAG_DELETE_AFTER] == "2026-12-23T06:00:00Z"


def test_encryption_options_reach_every_copy():
    api = FakeCopyApi(MEMBERS[:2])
    run_copy(api, kms_key_id="alias/dr")
    assert {(s[1], s[2]) for s in api.started} == {(True, "alias/dr")}


# --- AWS requests -----------------------------------------------------------------------------------


def _ec2(region):
    return boto3.client("ec2", region_name=region, aws_access_key_id="AKIDTEST", aws_secret_access_key="secret")


def _snapshot(snapshot_id, state="completed", tags=None):
    return {"SnapshotId": snapshot_id, "VolumeId": "vol-1", "State": state, "VolumeSize": 8, "Progress": "100%",
            "StartTime": NOW, "OwnerId": "123456789012", "Description": "", "Encrypted": False,
            "Tags": [{"Key": k, "Value": v} for k, v in (tags or {}).items()]}


def test_aws_copy_request_is_made_in_the_destination_region():
    client = _ec2("eu-west-1")
    with Stubber(client) as stub:
        stub.add_response("copy_snapshot", {"SnapshotId": "snap-new"}, {
            "SourceRegion": "us-east-1", "SourceSnapshotId": "snap-1", "Description": "d", "Encrypted": True,
            "KmsKeyId": "alias/dr",
            "TagSpecifications": [{"ResourceType": "snapshot", "Tags": [{"Key": "appconsistent:set-id", "Value": "acs-2"}]}]})
        api = set_copy.AwsCopyApi(_ec2("us-east-1"), client, "us-east-1", "eu-west-1")
        new_id = api.start({"snapshot_id": "snap-1"}, {"appconsistent:set-id": "acs-2"}, "d", True, "alias/dr", "tok")
        stub.assert_no_pending_responses()
    assert new_id == "snap-new"


def test_aws_copy_limit_error_becomes_copy_limited():
    client = _ec2("eu-west-1")
    with Stubber(client) as stub:
        stub.add_client_error("copy_snapshot", service_error_code="ResourceLimitExceeded",
                              service_message="too many concurrent copies", http_status_code=400)
        api = set_copy.AwsCopyApi(_ec2("us-east-1"), client, "us-east-1", "eu-west-1")
        with pytest.raises(set_copy.CopyLimited):
            api.start({"snapshot_id": "snap-1"}, {}, "d", False, None, "tok")


def test_aws_other_copy_errors_fail():
    client = _ec2("eu-west-1")
    with Stubber(client) as stub:
        stub.add_client_error("copy_snapshot", service_error_code="InvalidSnapshot.NotFound", http_status_code=400)
        api = set_copy.AwsCopyApi(_ec2("us-east-1"), client, "us-east-1", "eu-west-1")
        with pytest.raises(AppConsistentAWSError):
            api.start({"snapshot_id": "snap-1"}, {}, "d", False, None, "tok")


def test_aws_existing_copies_are_found_by_tag_in_the_destination():
    source, destination = _ec2("us-east-1"), _ec2("eu-west-1")
    with Stubber(destination) as stub:
        stub.add_response("describe_snapshots", {"Snapshots": [_snapshot("snap-c", tags={
            ss.TAG_SET_ID: "acs-copy", set_copy.TAG_SOURCE_SNAPSHOT: "snap-1"})]}, {
            "OwnerIds": ["self"], "MaxResults": 1000, "Filters": [
                {"Name": "tag:appconsistent:copied-from", "Values": ["acs-src"]},
                {"Name": "tag:appconsistent:source-region", "Values": ["us-east-1"]}]})
        found = set_copy.AwsCopyApi(source, destination, "us-east-1", "eu-west-1").existing_copies("acs-src")
    assert found[0]["snapshot_id"] == "snap-c" and found[0]["state"] == "completed"
    assert found[0]["tags"][set_copy.TAG_SOURCE_SNAPSHOT] == "snap-1"


def test_aws_source_members_are_found_by_set_tag_in_the_source_region():
    source = _ec2("us-east-1")
    with Stubber(source) as stub:
        stub.add_response("describe_snapshots", {"Snapshots": [_snapshot("snap-1", tags={ss.TAG_DEVICE: "/dev/xvdf"})]}, {
            "OwnerIds": ["self"], "MaxResults": 1000, "Filters": [{"Name": "tag:appconsistent:set-id", "Values": ["acs-src"]}]})
        found = set_copy.AwsCopyApi(source, _ec2("eu-west-1"), "us-east-1", "eu-west-1").source_members("acs-src")
    assert found[0]["device"] == "/dev/xvdf"


# --- Alibaba requests --------------------------------------------------------------------------------


class RecordingAli:
    """An AlibabaCloud stand-in: the real SDK request models, answers from a script."""

    def __init__(self, region, answers=None, errors=None):
        self.region = region
        self.models = ecs_models
        self.requests = []
        self.answers = answers or {}
        self.errors = errors or {}
        self.groups = []

    def call(self, action, request):
        # to_map lists the model's empty list fields too; the SDK leaves those out of the query
        self.requests.append((action, {k: v for k, v in request.to_map().items() if v != []}))
        if action in self.errors:
            raise self.errors[action]
        answer = self.answers.get(action, {})
        return answer(request) if callable(answer) else answer

    def describe_snapshot_groups(self, snapshot_group_ids=None):
        self.requests.append(("DescribeSnapshotGroups", {"SnapshotGroupId": snapshot_group_ids}))
        return self.groups

    # The real wrappers of AlibabaCloud, so that their requests are recorded too.
    describe_snapshots = AlibabaCloud.describe_snapshots
    copy_snapshot = AlibabaCloud.copy_snapshot
    delete_snapshot = AlibabaCloud.delete_snapshot


def test_alicloud_copy_request_uses_the_sdk_model_with_every_field():
    source = RecordingAli("cn-hangzhou", answers={"CopySnapshot": {"SnapshotId": "s-new"}})
    api = set_copy.AlicloudCopyApi(source, RecordingAli("cn-shanghai"))
    new_id = api.start({"snapshot_id": "s-bp1"}, {"appconsistent:set-id": "acs-2"}, "Copy of s-bp1", True, "key-1", "tok")
    assert new_id == "s-new"
    action, sent = source.requests[0]
    assert action == "CopySnapshot"
    assert sent == {"RegionId": "cn-hangzhou", "SnapshotId": "s-bp1", "DestinationRegionId": "cn-shanghai",
                    "DestinationSnapshotName": "copy-s-bp1", "DestinationSnapshotDescription": "Copy of s-bp1",
                    "Encrypted": True, "KMSKeyId": "key-1", "ClientToken": "tok",
                    "Tag": [{"Key": "appconsistent:set-id", "Value": "acs-2"}]}


def test_alicloud_unfinished_copy_of_the_disk_requeues():
    error = AlibabaCloudError("CopySnapshot", "InvalidOperation.DiskHasUnfinishedSnapshotCopy", "wait")
    api = set_copy.AlicloudCopyApi(RecordingAli("cn-hangzhou", errors={"CopySnapshot": error}), RecordingAli("cn-shanghai"))
    with pytest.raises(set_copy.CopyLimited):
        api.start({"snapshot_id": "s-1"}, {}, "d", False, None, "tok")


def test_alicloud_source_group_members_are_read_with_their_tags():
    snapshot = {"SnapshotId": "s-1", "Status": "accomplished", "Progress": "100%", "SourceDiskSize": "40",
                "Tags": {"Tag": [{"TagKey": ss.TAG_DEVICE, "TagValue": "/dev/xvdb"}]}}
    source = RecordingAli("cn-hangzhou", answers={"DescribeSnapshots": {"Snapshots": {"Snapshot": [snapshot]}}})
    source.groups = [{"SnapshotGroupId": "ssg-1", "Snapshots": {"Snapshot": [{"SnapshotId": "s-1"}]}}]
    members = set_copy.AlicloudCopyApi(source, RecordingAli("cn-shanghai")).source_members("ssg-1")
    assert members == [dict(snapshot_id="s-1", state="accomplished", progress="100%", size=40, encrypted=False,
                            kms_key_id=None, start_time=None, device="/dev/xvdb", tags={ss.TAG_DEVICE: "/dev/xvdb"})]
    assert source.requests[1] == ("DescribeSnapshots", {"RegionId": "cn-hangzhou", "SnapshotIds": '["s-1"]',
                                                        "MaxResults": 100})


def test_alicloud_copies_are_looked_up_by_tag_in_the_destination_region_every_page():
    pages = iter([{"Snapshots": {"Snapshot": [{"SnapshotId": "s-c1", "Status": "progressing"}]}, "NextToken": "t2"},
                  {"Snapshots": {"Snapshot": [{"SnapshotId": "s-c2", "Status": "accomplished"}]}, "NextToken": ""}])
    destination = RecordingAli("cn-shanghai", answers={"DescribeSnapshots": lambda request: next(pages)})
    found = set_copy.AlicloudCopyApi(RecordingAli("cn-hangzhou"), destination).existing_copies("ssg-1")
    assert [m["snapshot_id"] for m in found] == ["s-c1", "s-c2"]
    first, second = destination.requests
    assert first[1]["RegionId"] == "cn-shanghai"
    assert {"Key": set_copy.TAG_COPIED_FROM, "Value": "ssg-1"} in first[1]["Tag"]
    assert {"Key": set_copy.TAG_SOURCE_REGION, "Value": "cn-hangzhou"} in first[1]["Tag"]
    assert second[1]["NextToken"] == "t2"


def test_alicloud_snapshot_names_start_with_a_letter():
    assert set_copy.ali_name("s-bp1") == "s-bp1"
    assert set_copy.ali_name("1abc") == "copy-1abc"
    assert set_copy.ali_name("copy of/x") == "copy-of-x"


def test_only_members_of_the_set_named_are_copied():
    # The source is found with a tag filter, the cloud's reading of the id: a member of another set is left alone.
    stray = source_member("snap-9", "/dev/xvdh")
    stray["tags"][ss.TAG_SET_ID] = "acs-src2"
    api = FakeCopyApi([source_member("snap-1", "/dev/xvdf"), stray])
    _copier, result, _clock = run_copy(api)
    assert [started[0] for started in api.started] == ["snap-1"]
    assert result["changed"] is True


def test_every_copy_says_how_many_members_the_set_has_so_a_copy_cut_short_is_incomplete():
    # Issue 18 line 4: a copy that stopped part-way must prove itself partial in the destination.
    api = FakeCopyApi(MEMBERS[:3], polls_to_complete=10 ** 6)
    with pytest.raises(set_copy.CopyFailed):
        run_copy(api, max_concurrent_copies=1, wait_timeout=60)
    assert len(api.tags) == 1
    copied = list(api.tags.values())
    assert {tags[ss.TAG_MEMBERS] for tags in copied} == {"3"}
    assert ss.incomplete_reason(copied, ["completed"]) == "only 1 of its 3 snapshots exist"


def test_a_source_set_that_proves_itself_incomplete_is_not_copied():
    partial = [dict(m, tags=dict(m["tags"], **{ss.TAG_MEMBERS: "3"})) for m in MEMBERS[:2]]
    api = FakeCopyApi(partial)
    with pytest.raises(set_copy.CopyRefused, match="incomplete in us-east-1 \\(only 2 of its 3 snapshots exist\\)"):
        run_copy(api)
    assert api.started == []


def test_the_alibaba_destination_regions_calls_are_paced_by_that_regions_buckets():
    # ECS throttles per account and region: the destination's reads of the copies spend the destination's tokens.
    from ansible_collections.appconsistent.snapshots.plugins.module_utils import pacing  # pylint: disable=import-outside-toplevel
    pacer = pacing.Pacer(sleep=lambda seconds: None)
    module = mock.Mock(params=dict(alicloud_region="cn-hangzhou"), check_mode=False, pacer=pacer)
    destination = set_copy._RegionParams(module, "cn-shanghai")  # pylint: disable=protected-access
    assert destination.params["alicloud_region"] == "cn-shanghai"
    destination.pacer.before_call("ecs", "DescribeSnapshots")
    assert pacer.bucket("ecs", "DescribeSnapshots", "cn-shanghai").tokens == 99
    assert pacer.bucket("ecs", "DescribeSnapshots").tokens == 100
