"""Finding, listing and pruning sets: AWS requests checked with Stubber, Alibaba requests as SDK models, rules with a fixed clock."""

import datetime
import json
import types

import pytest
from alibabacloud_ecs20140526 import models as ecs_models
from Tea.exceptions import TeaException

from ansible_collections.appconsistent.snapshots.plugins.module_utils import alicloud
from ansible_collections.appconsistent.snapshots.plugins.module_utils import pacing
from ansible_collections.appconsistent.snapshots.plugins.module_utils import set_inventory as inv
from ansible_collections.appconsistent.snapshots.plugins.module_utils import snapshot_set as ss

UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 11, 23, 6, 0, 0, tzinfo=UTC)
PAST = "2026-11-20T00:00:00Z"
FUTURE = "2026-12-01T00:00:00Z"


pytestmark = pytest.mark.usefixtures("no_sleep")  # retries count their attempts without waiting


def _tags(set_id, instance_id="i-1", consistency="application", **extra):
    tags = ss.set_tags(set_id, instance_id, consistency, **extra)
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def _snapshot(snapshot_id, set_id, volume_id="vol-1", device="/dev/xvda", size=8, state="completed", minute=0, **tag_args):
    snapshot = {"SnapshotId": snapshot_id, "VolumeId": volume_id, "State": state, "VolumeSize": size,
                "StartTime": datetime.datetime(2026, 11, 22, 6, minute, tzinfo=UTC), "Progress": "100%",
                "OwnerId": "123456789012", "Description": "", "Encrypted": False, "StorageTier": "standard",
                "Tags": _tags(set_id, **tag_args) + [{"Key": ss.TAG_DEVICE, "Value": device}]}
    return snapshot


# --- AWS: finding -------------------------------------------------------------------------------


def test_aws_sets_come_from_one_tag_filtered_listing_and_are_grouped(ec2):
    client, stub = ec2
    filters = [{"Name": "tag-key", "Values": [ss.TAG_SET_ID]},
               {"Name": "tag:" + ss.TAG_RUN_ID, "Values": ["CHG1"]},
               {"Name": "tag:" + ss.TAG_INSTANCE_ID, "Values": ["i-1", "i-2"]}]
    first = dict(_snapshot("snap-1", "acs-a", run_id="CHG1", delete_after=PAST), FullSnapshotSizeInBytes=1000)
    second = dict(_snapshot("snap-2", "acs-a", volume_id="vol-2", device="/dev/xvdf", size=20, minute=1,
                            run_id="CHG1", delete_after=PAST), FullSnapshotSizeInBytes=3000, StorageTier="archive")
    other = _snapshot("snap-3", "acs-b", instance_id="i-2", state="pending", run_id="CHG1", minute=5)
    stub.add_response("describe_snapshots", {"Snapshots": [second, other], "NextToken": "t"},
                      {"OwnerIds": ["self"], "MaxResults": 1000, "Filters": filters})
    stub.add_response("describe_snapshots", {"Snapshots": [first]},
                      {"OwnerIds": ["self"], "MaxResults": 1000, "Filters": filters, "NextToken": "t"})
    sets = inv.find_aws_sets(client, instance_ids=["i-1", "i-2"], run_id="CHG1", now=NOW)
    assert [s["set_id"] for s in sets] == ["acs-a", "acs-b"]
    a, b = sets
    assert (a["instance_id"], a["run_id"], a["consistency"], a["complete"], a["expired"]) == \
        ("i-1", "CHG1", "application", True, True)
    assert a["created"] == "2026-11-22T06:00:00Z" and a["delete_after"] == PAST
    assert [(m["snapshot_id"], m["device"], m["size_gib"], m["storage_tier"]) for m in a["members"]] == \
        [("snap-1", "/dev/xvda", 8, "standard"), ("snap-2", "/dev/xvdf", 20, "archive")]
    assert (a["size_gib"], a["full_snapshot_size_bytes"]) == (28, 4000)
    assert b["complete"] is False and b["full_snapshot_size_bytes"] is None and b["expired"] is False


def test_aws_filters_take_at_most_200_values_per_request(ec2):
    client, stub = ec2
    instances = [f"i-{n:04d}" for n in range(250)]
    for chunk in (instances[:200], instances[200:]):
        stub.add_response("describe_snapshots", {"Snapshots": []}, {"OwnerIds": ["self"], "MaxResults": 1000, "Filters": [
            {"Name": "tag-key", "Values": [ss.TAG_SET_ID]}, {"Name": "tag:" + ss.TAG_INSTANCE_ID, "Values": chunk}]})
    assert inv.find_aws_sets(client, instance_ids=instances) == []


def test_aws_set_ids_filter(ec2):
    client, stub = ec2
    stub.add_response("describe_snapshots", {"Snapshots": [_snapshot("snap-1", "acs-a")]}, {
        "OwnerIds": ["self"], "MaxResults": 1000, "Filters": [
            {"Name": "tag-key", "Values": [ss.TAG_SET_ID]}, {"Name": "tag:" + ss.TAG_SET_ID, "Values": ["acs-a"]}]})
    assert [s["set_id"] for s in inv.find_aws_sets(client, set_ids=["acs-a"])] == ["acs-a"]


def test_own_images_are_listed_once_disabled_ones_included(ec2):
    client, stub = ec2
    image = {"ImageId": "ami-1", "BlockDeviceMappings": [{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": "snap-1"}},
                                                         {"DeviceName": "/dev/sdb", "VirtualName": "ephemeral0"}]}
    stub.add_response("describe_images", {"Images": [image], "NextToken": "t"},
                      {"Owners": ["self"], "IncludeDisabled": True, "MaxResults": 1000})
    stub.add_response("describe_images", {"Images": [dict(image, ImageId="ami-2")]},
                      {"Owners": ["self"], "IncludeDisabled": True, "MaxResults": 1000, "NextToken": "t"})
    assert inv.aws_images_by_snapshot(client) == {"snap-1": ["ami-1", "ami-2"]}


# --- AWS: deleting ------------------------------------------------------------------------------


def _aws_set(*snapshot_ids):
    return inv.build_set("aws", "acs-a", [inv.aws_member(_snapshot(s, "acs-a", volume_id="vol-" + s)) for s in snapshot_ids],
                         now=NOW)


def test_aws_set_is_deleted_member_by_member_and_a_missing_member_is_already_gone(ec2):
    client, stub = ec2
    stub.add_response("delete_snapshot", {}, {"SnapshotId": "snap-1"})
    stub.add_client_error("delete_snapshot", service_error_code="InvalidSnapshot.NotFound",
                          expected_params={"SnapshotId": "snap-2"})
    outcome = inv.delete_aws_set(client, _aws_set("snap-1", "snap-2"))
    assert outcome == dict(deleted_snapshot_ids=["snap-1"], already_gone_snapshot_ids=["snap-2"],
                           remaining_snapshot_ids=[], error=None)


def test_aws_refusal_stops_the_set_and_says_what_is_left(ec2):
    client, stub = ec2
    stub.add_response("delete_snapshot", {}, {"SnapshotId": "snap-1"})
    stub.add_client_error("delete_snapshot", service_error_code="InvalidSnapshot.InUse",
                          service_message="The snapshot snap-2 is currently in use by ami-9",
                          expected_params={"SnapshotId": "snap-2"})
    outcome = inv.delete_aws_set(client, _aws_set("snap-1", "snap-2", "snap-3"))
    assert outcome["deleted_snapshot_ids"] == ["snap-1"]
    assert outcome["remaining_snapshot_ids"] == ["snap-2", "snap-3"]
    assert outcome["error"]["code"] == "InvalidSnapshot.InUse" and "snap-2" in outcome["error"]["message"]


# --- Alibaba Cloud ------------------------------------------------------------------------------


class RecordingClient:
    """Stands in for the SDK client: records each request model and answers from scripted bodies or errors."""

    def __init__(self, bodies):
        self.bodies = bodies
        self.requests = []

    def __getattr__(self, name):
        def call(request, runtime):  # pylint: disable=unused-argument
            self.requests.append((name, request))
            body = self.bodies.get(name, {})
            body = body.pop(0) if isinstance(body, list) else body
            if isinstance(body, Exception):
                raise body
            return types.SimpleNamespace(body=types.SimpleNamespace(to_map=lambda: body))
        return call


def _ali_params():
    params = {key: None for key in alicloud.alicloud_argument_spec()}
    params.update(alicloud_protocol="https", alicloud_max_attempts=6, alicloud_region="cn-hangzhou")
    return params


def _api(bodies):
    client = RecordingClient(bodies)
    module = types.SimpleNamespace(params=_ali_params(), fail_json=None, check_mode=False)
    return alicloud.AlibabaCloud(module, client=client), client


def _ali_tags(group_id, disk, **extra):
    tags = ss.set_tags(group_id, "i-1", "application", device="/dev/" + disk, **extra)
    return {"Tag": [{"TagKey": k, "TagValue": v} for k, v in tags.items()]}


def _group(group_id, snapshot_ids, created="2026-11-22T06:00:00Z"):
    return {"SnapshotGroupId": group_id, "InstanceId": "i-1", "Status": "accomplished", "CreationTime": created,
            "Tags": {"Tag": []},
            "Snapshots": {"Snapshot": [{"SnapshotId": s, "SourceDiskId": "d-" + s, "Progress": "100%",
                                        "Tags": {"Tag": []}} for s in snapshot_ids]}}


def _ali_snapshot(snapshot_id, group_id, tagged=True, usage="none", **extra):
    return {"SnapshotId": snapshot_id, "SourceDiskId": "d-" + snapshot_id, "SourceDiskSize": "40", "Status": "accomplished",
            "Progress": "100%", "CreationTime": "2026-11-22T06:00:00Z", "Category": "standard", "Usage": usage,
            "Tags": _ali_tags(group_id, snapshot_id, **extra) if tagged else {"Tag": []}}


def _tag_filter(request):
    return [(t.key, t.value) for t in request.tag or []]


def test_alicloud_groups_with_our_tags_are_sets_and_others_are_not():
    groups = {"SnapshotGroups": {"SnapshotGroup": [_group("ssg-1", ["s-1", "s-2"]), _group("ssg-2", ["s-3"]),
                                                   _group("ssg-3", ["s-4", "s-5"])]}}
    # the instance's tagged snapshots come with one tag listing; the untagged group members are asked for by id
    tagged = {"Snapshots": {"Snapshot": [
        _ali_snapshot("s-1", "ssg-1", delete_after=PAST), _ali_snapshot("s-2", "ssg-1", delete_after=PAST),
        _ali_snapshot("s-4", "ssg-3")]}}
    by_id = {"Snapshots": {"Snapshot": [
        _ali_snapshot("s-3", "ssg-2", tagged=False),  # a group some other tool made
        _ali_snapshot("s-5", "ssg-3", tagged=False)]}}
    api, client = _api({"describe_snapshot_groups_with_options": groups, "describe_snapshots_with_options": [tagged, by_id]})
    sets = inv.find_alicloud_sets(api, instance_ids=["i-1"], now=NOW)
    assert [s["set_id"] for s in sets] == ["ssg-1", "ssg-3"]
    first, half = sets
    assert (first["instance_id"], first["consistency"], first["complete"], first["expired"], first["size_gib"]) == \
        ("i-1", "application", True, True, 80)
    assert [(m["snapshot_id"], m["disk_id"], m["device"], m["state"]) for m in first["members"]] == \
        [("s-1", "d-s-1", "/dev/s-1", "accomplished"), ("s-2", "d-s-2", "/dev/s-2", "accomplished")]
    assert first["group_status"] == "accomplished"
    assert half["untagged_snapshot_ids"] == ["s-5"]
    (group_call, group_request), (tag_call, tag_request), (snap_call, snap_request) = client.requests
    assert group_call == "describe_snapshot_groups_with_options"
    assert isinstance(group_request, ecs_models.DescribeSnapshotGroupsRequest)
    assert (group_request.instance_id, group_request.region_id) == ("i-1", "cn-hangzhou")
    assert tag_call == snap_call == "describe_snapshots_with_options"
    assert isinstance(tag_request, ecs_models.DescribeSnapshotsRequest)
    assert _tag_filter(tag_request) == [(ss.TAG_SET_ID, None), (ss.TAG_INSTANCE_ID, "i-1")]
    assert (tag_request.snapshot_ids, tag_request.region_id, tag_request.max_results) == (None, "cn-hangzhou", 100)
    assert json.loads(snap_request.snapshot_ids) == ["s-3", "s-5"]


def test_alicloud_snapshot_details_are_asked_100_at_a_time_and_group_ids_10_at_a_time():
    ids = [f"s-{n}" for n in range(150)]
    group_ids = [f"ssg-{n}" for n in range(12)]
    api, client = _api({"describe_snapshot_groups_with_options": [
        {"SnapshotGroups": {"SnapshotGroup": [_group("ssg-0", ids)]}}, {"SnapshotGroups": {"SnapshotGroup": []}}],
        "describe_snapshots_with_options": {"Snapshots": {"Snapshot": []}}})
    inv.find_alicloud_sets(api, set_ids=group_ids)
    group_requests = [r for n, r in client.requests if n == "describe_snapshot_groups_with_options"]
    assert [r.snapshot_group_id for r in group_requests] == [group_ids[:10], group_ids[10:]]
    snapshot_requests = [r for n, r in client.requests if n == "describe_snapshots_with_options"]
    # group ids only: no tag listing, the members by id
    assert [len(json.loads(r.snapshot_ids)) for r in snapshot_requests] == [100, 50]
    assert all(r.max_results == 100 and not r.tag for r in snapshot_requests)


def test_many_alicloud_instances_are_found_with_one_region_listing():
    instances = [f"i-{n}" for n in range(inv.ALI_PER_INSTANCE_LISTING_MAX + 1)]
    api, client = _api({"describe_snapshot_groups_with_options": {"SnapshotGroups": {"SnapshotGroup": []}},
                        "describe_snapshots_with_options": {"Snapshots": {"Snapshot": []}}})
    assert inv.find_alicloud_sets(api, instance_ids=instances) == []
    assert [(n, r.instance_id) for n, r in client.requests] == [("describe_snapshot_groups_with_options", None),
                                                                ("describe_snapshots_with_options", None)]
    assert _tag_filter(client.requests[1][1]) == [(ss.TAG_SET_ID, None)]


def _copy_snapshot(snapshot_id, set_id, disk, source, minute=0, **extra):
    """A member of a set copied by snapshot_set_copy: the source's tags, a new set id, where it came from, in no group."""
    tags = dict(ss.set_tags(set_id, "i-1", "application", device="/dev/" + disk, **extra),
                **{"appconsistent:copied-from": "ssg-1", "appconsistent:source-region": "cn-hangzhou",
                   "appconsistent:source-snapshot": source})
    return {"SnapshotId": snapshot_id, "SourceDiskId": "d-" + disk, "SourceDiskSize": "20", "Status": "accomplished",
            "Progress": "100%", "CreationTime": f"2026-11-22T07:{minute:02d}:00Z", "Category": "standard", "Usage": "none",
            "Tags": {"Tag": [{"TagKey": k, "TagValue": v} for k, v in tags.items()]}}


def test_alicloud_tagged_snapshots_in_no_group_are_a_set_and_group_members_are_not_listed_twice():
    groups = {"SnapshotGroups": {"SnapshotGroup": [_group("ssg-1", ["s-1", "s-2"])]}}
    tagged = {"Snapshots": {"Snapshot": [
        _copy_snapshot("s-c2", "acs-copy", "vdc", "s-2", minute=1, delete_after=PAST), _ali_snapshot("s-1", "ssg-1"),
        _copy_snapshot("s-c1", "acs-copy", "vdb", "s-1", delete_after=PAST), _ali_snapshot("s-2", "ssg-1")]}}
    api, client = _api({"describe_snapshot_groups_with_options": groups, "describe_snapshots_with_options": [tagged]})
    sets = inv.find_alicloud_sets(api, instance_ids=["i-1"], now=NOW)
    assert sorted(s["set_id"] for s in sets) == ["acs-copy", "ssg-1"]
    by_id = {s["set_id"]: s for s in sets}
    group, copy = by_id["ssg-1"], by_id["acs-copy"]
    assert [m["snapshot_id"] for m in group["members"]] == ["s-1", "s-2"]
    assert [(m["snapshot_id"], m["disk_id"], m["device"], m["size_gib"]) for m in copy["members"]] == \
        [("s-c1", "d-vdb", "/dev/vdb", 20), ("s-c2", "d-vdc", "/dev/vdc", 20)]
    assert (copy["instance_id"], copy["consistency"], copy["complete"], copy["expired"], copy["created"]) == \
        ("i-1", "application", True, True, "2026-11-22T07:00:00Z")
    assert "group_status" not in copy and copy["untagged_snapshot_ids"] == []
    # every group member came with the tag listing: nothing is asked for by id
    assert [n for n, _r in client.requests] == ["describe_snapshot_groups_with_options", "describe_snapshots_with_options"]


def test_alicloud_set_ids_go_to_the_groups_or_to_the_tag_listing_by_their_form():
    groups = {"SnapshotGroups": {"SnapshotGroup": [_group("ssg-1", ["s-1"])]}}
    copies = {"Snapshots": {"Snapshot": [_copy_snapshot("s-c1", "acs-copy", "vdb", "s-1")]}}
    details = {"Snapshots": {"Snapshot": [_ali_snapshot("s-1", "ssg-1")]}}
    api, client = _api({"describe_snapshot_groups_with_options": groups,
                        "describe_snapshots_with_options": [copies, details]})
    sets = inv.find_alicloud_sets(api, set_ids=["ssg-1", "acs-copy"], run_id=None)
    assert sorted(s["set_id"] for s in sets) == ["acs-copy", "ssg-1"]
    (_g, group_request), (_t, tag_request), (_s, snap_request) = client.requests
    assert group_request.snapshot_group_id == ["ssg-1"]
    assert _tag_filter(tag_request) == [(ss.TAG_SET_ID, "acs-copy")]
    assert json.loads(snap_request.snapshot_ids) == ["s-1"]
    # copies only: no group listing at all
    api, client = _api({"describe_snapshots_with_options": [copies]})
    assert [s["set_id"] for s in inv.find_alicloud_sets(api, set_ids=["acs-copy"])] == ["acs-copy"]
    assert [n for n, _r in client.requests] == ["describe_snapshots_with_options"]


def test_alicloud_many_set_ids_are_one_tag_listing_narrowed_afterwards():
    wanted = [f"acs-{n}" for n in range(inv.ALI_PER_INSTANCE_LISTING_MAX + 1)]
    listing = {"Snapshots": {"Snapshot": [_copy_snapshot("s-a", "acs-3", "vdb", "s-1"),
                                          _copy_snapshot("s-b", "acs-other", "vdb", "s-2")]}}
    api, client = _api({"describe_snapshots_with_options": [listing]})
    assert [s["set_id"] for s in inv.find_alicloud_sets(api, set_ids=wanted, run_id="R1")] == []  # run id differs
    ((_n, request),) = client.requests
    assert _tag_filter(request) == [(ss.TAG_SET_ID, None), (ss.TAG_RUN_ID, "R1")]
    api, client = _api({"describe_snapshots_with_options": [listing]})
    assert [s["set_id"] for s in inv.find_alicloud_sets(api, set_ids=wanted)] == ["acs-3"]


def test_alicloud_tag_listing_follows_next_token():
    first = {"Snapshots": {"Snapshot": [_copy_snapshot("s-c1", "acs-copy", "vdb", "s-1", run_id="R1")]}, "NextToken": "t2"}
    second = {"Snapshots": {"Snapshot": [_copy_snapshot("s-c2", "acs-copy", "vdc", "s-2", run_id="R1")]}}
    api, client = _api({"describe_snapshot_groups_with_options": {"SnapshotGroups": {"SnapshotGroup": []}},
                        "describe_snapshots_with_options": [first, second]})
    (copy,) = inv.find_alicloud_sets(api, run_id="R1")
    assert (copy["set_id"], copy["run_id"]) == ("acs-copy", "R1")
    assert [m["snapshot_id"] for m in copy["members"]] == ["s-c1", "s-c2"]
    requests = [r for n, r in client.requests if n == "describe_snapshots_with_options"]
    assert [r.next_token for r in requests] == [None, "t2"]
    assert _tag_filter(requests[0]) == [(ss.TAG_SET_ID, None), (ss.TAG_RUN_ID, "R1")]


def _ali_set(api_snapshots=("s-1", "s-2")):
    members = [inv.alicloud_member({"SnapshotId": s, "SourceDiskId": "d-" + s}, _ali_snapshot(s, "ssg-1"))
               for s in api_snapshots]
    return inv.build_set("alicloud", "ssg-1", members, now=NOW)


def _progress(snapshot_id, ok=True):
    return {"OperationStatus": "Success" if ok else "Failed", "ErrorCode": "" if ok else "SnapshotInUse",
            "ErrorMsg": "" if ok else "used by image m-1",
            "RelatedItemSet": {"RelatedItem": [{"Name": "SnapshotId", "Value": snapshot_id}]}}


def test_alicloud_group_is_deleted_with_delete_snapshot_group():
    api, client = _api({"delete_snapshot_group_with_options": {"OperationProgressSet": {"OperationProgress": [
        _progress("s-1"), _progress("s-2")]}}})
    outcome = inv.delete_alicloud_set(api, _ali_set())
    assert outcome == dict(deleted_snapshot_ids=["s-1", "s-2"], already_gone_snapshot_ids=[], remaining_snapshot_ids=[],
                           error=None)
    ((name, request),) = client.requests
    assert isinstance(request, ecs_models.DeleteSnapshotGroupRequest)
    assert request.to_map() == {"RegionId": "cn-hangzhou", "SnapshotGroupId": "ssg-1"}


def test_alicloud_partial_deletion_is_reported_per_snapshot():
    api, _client = _api({"delete_snapshot_group_with_options": {"OperationProgressSet": {"OperationProgress": [
        _progress("s-1"), _progress("s-2", ok=False)]}}})
    outcome = inv.delete_alicloud_set(api, _ali_set())
    assert outcome["deleted_snapshot_ids"] == ["s-1"] and outcome["remaining_snapshot_ids"] == ["s-2"]
    assert outcome["error"]["code"] == "SnapshotInUse"
    assert "kept 1 of 2" in outcome["error"]["message"] and "used by image m-1" in outcome["error"]["message"]


def test_alicloud_group_already_gone_is_no_change():
    gone = TeaException({"code": "InvalidSnapshotGroupId.NotFound", "message": "not found",
                         "data": {"RequestId": "r-1", "statusCode": 404}})
    api, _client = _api({"delete_snapshot_group_with_options": [gone]})
    outcome = inv.delete_alicloud_set(api, _ali_set())
    assert outcome["deleted_snapshot_ids"] == [] and outcome["error"] is None
    assert outcome["already_gone_snapshot_ids"] == ["s-1", "s-2"]


def test_alicloud_refused_group_keeps_every_member_listed():
    refused = TeaException({"code": "IncorrectSnapshotStatus", "message": "busy", "data": {"RequestId": "r-2"}})
    api, _client = _api({"delete_snapshot_group_with_options": [refused]})
    outcome = inv.delete_alicloud_set(api, _ali_set())
    assert outcome["remaining_snapshot_ids"] == ["s-1", "s-2"] and outcome["error"]["code"] == "IncorrectSnapshotStatus"


def _ali_copy_set(*snapshot_ids):
    members = [inv.alicloud_member(c, c) for c in (_copy_snapshot(s, "acs-copy", "vd" + s[-1], "s-" + s[-1])
                                                   for s in snapshot_ids)]
    return inv.build_set("alicloud", "acs-copy", members, now=NOW)


def test_alicloud_set_in_no_group_is_deleted_snapshot_by_snapshot_and_nothing_else():
    gone = TeaException({"code": "InvalidSnapshotId.NotFound", "message": "not found", "data": {"statusCode": 404}})
    api, client = _api({"delete_snapshot_with_options": [{}, gone]})
    outcome = inv.delete_alicloud_set(api, _ali_copy_set("s-c1", "s-c2"))
    assert outcome == dict(deleted_snapshot_ids=["s-c1"], already_gone_snapshot_ids=["s-c2"], remaining_snapshot_ids=[],
                           error=None)
    assert [(n, r.snapshot_id, r.force) for n, r in client.requests] == [
        ("delete_snapshot_with_options", "s-c1", True), ("delete_snapshot_with_options", "s-c2", True)]
    assert all(isinstance(r, ecs_models.DeleteSnapshotRequest) for _n, r in client.requests)


def test_alicloud_refused_snapshot_stops_the_set_and_says_what_is_left():
    refused = TeaException({"code": "SnapshotCreatedImage", "message": "used by image m-1", "data": {"statusCode": 403}})
    api, client = _api({"delete_snapshot_with_options": [{}, refused]})
    outcome = inv.delete_alicloud_set(api, _ali_copy_set("s-c1", "s-c2", "s-c3"))
    assert outcome["deleted_snapshot_ids"] == ["s-c1"] and outcome["remaining_snapshot_ids"] == ["s-c2", "s-c3"]
    assert outcome["error"]["code"] == "SnapshotCreatedImage" and "s-c2" in outcome["error"]["message"]
    assert len(client.requests) == 2


# --- the rules ----------------------------------------------------------------------------------


def _set(set_id, instance_id="i-1", consistency="application", day=1, delete_after=None, run_id=None, state="completed"):
    member = dict(snapshot_id="snap-" + set_id, volume_id="vol-1", device="/dev/xvda", size_gib=8, state=state,
                  start_time=f"2026-11-{day:02d}T00:00:00+00:00", full_snapshot_size_bytes=None,
                  tags=ss.set_tags(set_id, instance_id, consistency, run_id=run_id, delete_after=delete_after))
    return inv.build_set("aws", set_id, [member], now=NOW)


def _decide(sets, **kwargs):
    delete, kept = inv.plan_prune(sets, NOW, **kwargs)
    return sorted(item["set_id"] for item, _reasons in delete), {item["set_id"]: code for item, code, *_reasons in kept}


def test_expired_rule_deletes_only_passed_delete_after():
    sets = [_set("a", day=1, delete_after=PAST), _set("b", day=2, delete_after=FUTURE), _set("c", day=3)]
    assert _decide(sets, protect_newest_application=False) == (["a"], {"b": "not_expired", "c": "no_delete_after"})


def test_newest_application_set_is_protected_even_when_expired():
    sets = [_set("a", day=1, delete_after=PAST), _set("b", day=2, delete_after=PAST),
            _set("c", day=3, consistency="crash", delete_after=PAST)]
    assert _decide(sets) == (["a", "c"], {"b": "newest_application"})


def test_offline_counts_as_application_for_protection():
    sets = [_set("a", day=1, consistency="offline", delete_after=PAST)]
    assert _decide(sets) == ([], {"a": "newest_application"})


def test_protection_prefers_the_newest_complete_set_to_one_still_in_progress():
    sets = [_set("done", day=1, delete_after=PAST), _set("running", day=2, state="pending", delete_after=PAST)]
    assert inv.protected_sets(sets) == {"i-1": "done"}
    assert _decide(sets) == (["running"], {"done": "newest_application"})


def test_keep_ranks_per_instance_newest_first():
    sets = [_set("a1", day=1, consistency="crash"), _set("a2", day=2, consistency="crash"),
            _set("a3", day=3, consistency="crash"), _set("b1", instance_id="i-2", day=1, consistency="crash")]
    assert _decide(sets, expired=False, keep=2) == (["a1"], {"a2": "within_keep", "a3": "within_keep", "b1": "within_keep"})
    assert _decide(sets, expired=False, keep=0)[0] == ["a1", "a2", "a3", "b1"]


def test_keep_and_expired_are_either_or():
    sets = [_set("a1", day=1, consistency="crash"), _set("a2", day=2, consistency="crash", delete_after=PAST),
            _set("a3", day=3, consistency="crash")]
    delete, _kept = inv.plan_prune(sets, NOW, expired=True, keep=2)
    reasons = {item["set_id"]: r for item, r in delete}
    assert sorted(reasons) == ["a1", "a2"]
    assert reasons["a2"] == [f"expired at {PAST}"] and "older than the 2 newest" in reasons["a1"][0]


def test_run_id_limits_deletion_but_ranks_over_every_set_of_the_instance():
    sets = [_set("old", day=1, run_id="R1", delete_after=PAST), _set("new", day=2, run_id="R2", delete_after=PAST)]
    assert _decide(sets, run_id="R2") == ([], {"new": "newest_application"})
    assert _decide(sets, run_id="R1") == (["old"], {})


def test_now_decides_what_has_expired():
    sets = [_set("a", delete_after="2026-11-23T06:00:01Z", consistency="crash")]
    assert _decide(sets) == ([], {"a": "not_expired"})
    later, _kept = inv.plan_prune(sets, NOW + datetime.timedelta(seconds=1))
    assert [item["set_id"] for item, _reasons in later] == ["a"]


def test_a_member_without_a_consistency_tag_makes_the_set_unknown_and_unprotected():
    item = _set("a", delete_after=PAST)
    item["members"][0]["tags"].pop(ss.TAG_CONSISTENCY)
    rebuilt = inv.build_set("aws", "a", item["members"], now=NOW)
    assert rebuilt["consistency"] is None
    assert _decide([rebuilt]) == (["a"], {})


def test_blockers_images_and_untagged_members():
    aws_item = _set("a")
    assert inv.blockers("aws", aws_item, {"snap-a": ["ami-1"]})[0] == inv.KEPT_IN_USE_BY_IMAGE
    assert "ami-1" in inv.blockers("aws", aws_item, {"snap-a": ["ami-1"]})[1]
    assert inv.blockers("aws", aws_item, {"snap-other": ["ami-1"]}) is None
    ali = _ali_set()
    assert inv.blockers("alicloud", ali) is None
    ali["members"][0]["usage"] = "image"
    assert inv.blockers("alicloud", ali)[0] == inv.KEPT_IN_USE_BY_IMAGE
    ali["untagged_snapshot_ids"] = ["s-9"]
    code, reason = inv.blockers("alicloud", ali)
    assert code == inv.KEPT_UNTAGGED_MEMBERS and "s-9" in reason


def test_select_sets_min_consistency_then_newest():
    sets = [_set("a", day=1), _set("b", day=2, consistency="filesystem"), _set("c", instance_id="i-2", consistency="crash")]
    assert [s["set_id"] for s in inv.select_sets(sets)] == ["b", "a", "c"]
    assert [s["set_id"] for s in inv.select_sets(sets, newest_only=True)] == ["b", "c"]
    assert [s["set_id"] for s in inv.select_sets(sets, min_consistency="application", newest_only=True)] == ["a"]
    assert inv.select_sets([], newest_only=True) == []


# --- a whole prune run, with a fake module -------------------------------------------------------


class FakeModule:
    def __init__(self, client, check_mode=False, **params):
        self.params = dict(provider="aws", instance_ids=None, run_id=None, expired=True, keep=None,
                           protect_newest_application=True, protect_newest_verified=True)
        self.params.update(params)
        self.check_mode = check_mode
        self.client = client

    def aws_client(self, service):
        assert service == "ec2"
        return self.client


def _listing(stub, snapshots, locks=()):
    stub.add_response("describe_snapshots", {"Snapshots": snapshots}, {
        "OwnerIds": ["self"], "MaxResults": 1000, "Filters": [{"Name": "tag-key", "Values": [ss.TAG_SET_ID]}]})
    _locks(stub, locks)


def _locks(stub, locks=()):
    """The one listing of the Region's locked snapshots that every set search ends with."""
    stub.add_response("describe_locked_snapshots", {"Snapshots": list(locks)}, {
        "MaxResults": 1000, "Filters": [{"Name": "lock-state", "Values": ["governance", "compliance-cooloff", "compliance"]}]})


def test_check_mode_lists_what_would_go_and_deletes_nothing(ec2):
    client, stub = ec2
    _listing(stub, [_snapshot("snap-1", "acs-a", consistency="crash", delete_after=PAST),
                    _snapshot("snap-2", "acs-b", minute=5, delete_after=FUTURE)])
    stub.add_response("describe_images", {"Images": []}, {"Owners": ["self"], "IncludeDisabled": True, "MaxResults": 1000})
    result = inv.SetPrune(FakeModule(client, check_mode=True), now=NOW).run()
    assert result["changed"] is True
    assert [e["set_id"] for e in result["deleted"]] == ["acs-a"] and result["deleted"][0]["snapshot_ids"] == ["snap-1"]
    assert [(e["set_id"], e["reason_code"]) for e in result["kept"]] == [("acs-b", "not_expired")]
    assert result["diff"] == {"before": {"set_ids": ["acs-b", "acs-a"]}, "after": {"set_ids": ["acs-b"]}}


def test_prune_never_deletes_a_set_of_an_instance_it_was_not_given(ec2):
    # Instance ids reach the listing as tag filter values: what comes back is checked against the ids named.
    client, stub = ec2
    stub.add_response("describe_snapshots", {"Snapshots": [
        _snapshot("snap-1", "acs-a", instance_id="i-1", consistency="crash", delete_after=PAST),
        _snapshot("snap-2", "acs-b", instance_id="i-10", consistency="crash", delete_after=PAST)]})
    _locks(stub)
    stub.add_response("describe_images", {"Images": []}, {"Owners": ["self"], "IncludeDisabled": True, "MaxResults": 1000})
    result = inv.SetPrune(FakeModule(client, check_mode=True, instance_ids=["i-1"]), now=NOW).run()
    assert [e["set_id"] for e in result["deleted"]] == ["acs-a"]
    assert result["diff"]["before"] == {"set_ids": ["acs-a"]}


def test_a_set_in_use_by_an_image_is_kept_and_nothing_of_it_deleted(ec2):
    client, stub = ec2
    _listing(stub, [_snapshot("snap-1", "acs-a", consistency="crash", delete_after=PAST),
                    _snapshot("snap-2", "acs-a", volume_id="vol-2", consistency="crash", delete_after=PAST)])
    stub.add_response("describe_images", {"Images": [{"ImageId": "ami-7", "BlockDeviceMappings": [
        {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": "snap-2"}}]}]},
        {"Owners": ["self"], "IncludeDisabled": True, "MaxResults": 1000})
    result = inv.SetPrune(FakeModule(client), now=NOW).run()
    assert result["changed"] is False and result["deleted"] == []
    (kept,) = result["kept"]
    assert kept["reason_code"] == "in_use_by_image" and "ami-7" in kept["reason"]


def test_a_set_with_a_locked_member_is_kept_whole_until_its_lock_ends(ec2):
    client, stub = ec2
    until = datetime.datetime(2026, 12, 1, tzinfo=datetime.timezone.utc)
    _listing(stub, [_snapshot("snap-1", "acs-a", consistency="crash", delete_after=PAST),
                    _snapshot("snap-2", "acs-a", volume_id="vol-2", consistency="crash", delete_after=PAST)],
             locks=[{"SnapshotId": "snap-2", "LockState": "compliance", "LockDuration": 30, "LockExpiresOn": until}])
    stub.add_response("describe_images", {"Images": []}, {"Owners": ["self"], "IncludeDisabled": True, "MaxResults": 1000})
    result = inv.SetPrune(FakeModule(client), now=NOW).run()  # no delete_snapshot stubbed: none may be sent
    assert result["changed"] is False and result["deleted"] == [] and result["failed_sets"] == []
    (kept,) = result["kept"]
    assert kept["reason_code"] == "locked" and kept["locked_until"] == "2026-12-01T00:00:00Z"
    assert "1 of 2 members" in kept["reason"] and "compliance" in kept["reason"]


def test_nothing_to_prune_by_is_refused_before_any_call(ec2):
    client, _stub = ec2
    with pytest.raises(ValueError, match="Nothing to prune by"):
        inv.SetPrune(FakeModule(client, expired=False)).run()
    with pytest.raises(ValueError, match="keep must be 0 or more"):
        inv.SetPrune(FakeModule(client, keep=-2)).run()


def test_info_run_filters_server_side_then_selects(ec2):
    client, stub = ec2
    stub.add_response("describe_snapshots", {"Snapshots": [
        _snapshot("snap-1", "acs-a", minute=1, run_id="R1"),
        _snapshot("snap-2", "acs-b", minute=2, consistency="crash", run_id="R1"),
        _snapshot("snap-3", "acs-c", minute=3, consistency="filesystem", run_id="R1")]}, {
        "OwnerIds": ["self"], "MaxResults": 1000, "Filters": [
            {"Name": "tag-key", "Values": [ss.TAG_SET_ID]}, {"Name": "tag:" + ss.TAG_RUN_ID, "Values": ["R1"]}]})
    _locks(stub)
    module = FakeModule(client, run_id="R1", set_ids=None, min_consistency="filesystem", newest_only=True)
    assert [s["set_id"] for s in inv.SetInfo(module, now=NOW).run()] == ["acs-c"]


def test_info_refuses_a_bad_run_id_before_any_call(ec2):
    client, _stub = ec2
    with pytest.raises(ValueError, match="invalid run_id"):
        inv.SetInfo(FakeModule(client, run_id="a b", set_ids=None, min_consistency=None, newest_only=False)).run()


def _partial_copy(set_id, day, delete_after=PAST):
    """A copy in the destination that stopped after one of the source's two members (issue 18 line 4)."""
    item = _set(set_id, day=day, delete_after=delete_after)
    item["members"][0]["tags"][ss.TAG_MEMBERS] = "2"
    return inv.build_set("aws", set_id, item["members"], now=NOW)


def test_a_partly_copied_set_is_incomplete_and_never_protected_over_a_whole_one():
    whole = _set("whole", day=1, delete_after=PAST)
    partial = _partial_copy("partial", day=2)
    assert whole["complete"] is True and whole["members_expected"] is None and whole["incomplete_reason"] is None
    assert partial["complete"] is False and partial["members_expected"] == 2
    assert partial["incomplete_reason"] == "only 1 of its 2 snapshots exist"
    assert inv.protected_sets([whole, partial]) == {"i-1": "whole"}
    assert _decide([whole, partial]) == (["partial"], {"whole": "newest_application"})


def test_an_alibaba_group_counts_its_members_from_the_group_tag_when_its_members_lack_it():
    member = dict(snapshot_id="s-1", disk_id="d-1", device="/dev/xvdb", size_gib=20, state="accomplished",
                  start_time="2026-11-01T00:00:00+00:00", tags=ss.set_tags("ssg-1", "i-1", "application"))
    group = dict(tags={ss.TAG_MEMBERS: "2"}, instance_id="i-1", created="2026-11-01T00:00:00Z", status="accomplished")
    item = inv.build_set("alicloud", "ssg-1", [member], group=group, now=NOW)
    assert item["complete"] is False and item["members_expected"] == 2


def test_check_mode_counts_the_delete_calls_a_prune_would_make():
    def item(set_id, members):
        return dict(set_id=set_id, members=[dict(snapshot_id=f"{set_id}-{n}") for n in range(members)])

    aws = types.SimpleNamespace(pacer=pacing.Pacer())
    inv.plan_deletes(aws, "aws", [item("acs-1", 2)] * 5000)
    # 10,000 DeleteSnapshot calls from the published bucket of 100 refilling 5 a second: 1980 s, over half an hour.
    assert aws.pacer.planned == {("ec2", "DeleteSnapshot", None): 10000}
    assert aws.pacer.summary()["estimated_floor_s"] == 1980.0
    ali = types.SimpleNamespace(pacer=pacing.Pacer())
    inv.plan_deletes(ali, "alicloud", [item("ssg-1", 3), item("ssg-2", 2), item("acs-copy", 2)])
    # a group goes with one DeleteSnapshotGroup, a copy (in no group) member by member
    assert ali.pacer.planned == {("ecs", "DeleteSnapshotGroup", None): 2, ("ecs", "DeleteSnapshot", None): 2}
    inv.plan_deletes(types.SimpleNamespace(), "aws", [item("acs-1", 2)])  # a stand-in module without a pacer
