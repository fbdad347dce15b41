"""The Alibaba ali's ECS API through the official SDK: authentication, errors, constraints, pagination and tag shapes."""

from __future__ import annotations

import hashlib
import os
import time
import types
import uuid
from urllib.parse import urlencode

import pytest
import requests
from alibabacloud_ecs20140526 import models as m
from alibabacloud_tea_openapi.utils import Utils

from twin.tests.helpers import api_error, disk_images, read_block, wait_for

ROLE = "AppSnapshotRole"


def inst(name, categories=("cloud_essd", "cloud_essd"), sizes=None, **extra):
    vols = [{"device": f"/dev/xvd{'abcdefghijklmnopqrstuvwxyz'[n]}", "size": (sizes or [20] * len(categories))[n], "type": c}
            for n, c in enumerate(categories)]
    out = {"provider": "alicloud", "name": name, "role": ROLE, "volumes": vols}
    out.update(extra)
    return out


@pytest.fixture
def ali(start_twin):
    return start_twin({"instances": [inst("web-1"), inst("web-2", categories=("cloud_essd", "cloud_efficiency")),
                                     inst("web-3", categories=("cloud_essd", "cloud_essd"), tags={"env": "prod"})]})


def disks_of(client, region, iid):
    return {d.device: d for d in client.describe_disks(m.DescribeDisksRequest(region_id=region, instance_id=iid)).body.disks.disk}


# ---------------------------------------------------------------------------------------------- authentication

def test_v3_signature_is_accepted(ali):
    body = ali.client().describe_instances(m.DescribeInstancesRequest(region_id=ali.region)).body
    assert sorted(i.instance_name for i in body.instances.instance) == ["web-1", "web-2", "web-3"]
    assert body.request_id


def test_v2_hmac_sha1_signature_is_accepted_and_checked(ali):
    body = ali.client(signature_algorithm="v2").describe_disks(m.DescribeDisksRequest(region_id=ali.region)).body
    assert body.total_count == 6
    err = api_error(ali.client(signature_algorithm="v2", access_key_secret="wrong").describe_disks,
                    m.DescribeDisksRequest(region_id=ali.region))
    assert (err.code, err.status_code) == ("SignatureDoesNotMatch", 400)


def test_wrong_secret_is_rejected_with_alibabas_error(ali):
    err = api_error(ali.client(access_key_secret="not-the-secret").describe_instances, m.DescribeInstancesRequest(region_id=ali.region))
    assert (err.code, err.status_code) == ("SignatureDoesNotMatch", 400)
    assert "signature is not matched" in err.message
    assert err.request_id and err.request_id != "None"
    assert err.data["HostId"] == f"ecs.{ali.region}.aliyuncs.com" and err.data["Code"] == "SignatureDoesNotMatch"


def test_unknown_access_key_is_rejected(ali):
    err = api_error(ali.client(access_key_id="LTAIunknown").describe_instances, m.DescribeInstancesRequest(region_id=ali.region))
    assert (err.code, err.status_code) == ("InvalidAccessKeyId.NotFound", 404)


def test_sts_token_is_checked(start_twin):
    doc = {"credentials": {"alicloud": {"access_key_id": "STS.twinkey", "access_key_secret": "sts-secret", "security_token": "tok-123"}},
           "instances": [inst("web-1")]}
    ali = start_twin(doc)
    assert ali.client().describe_instances(m.DescribeInstancesRequest(region_id=ali.region)).body.total_count == 1
    err = api_error(ali.client(security_token="tok-999").describe_instances, m.DescribeInstancesRequest(region_id=ali.region))
    assert err.code == "InvalidSecurityToken.Malformed"
    err = api_error(ali.client(security_token=None).describe_instances, m.DescribeInstancesRequest(region_id=ali.region))
    assert err.code == "InvalidSecurityToken.MismatchWithAccessKey"


def test_v2_signature_checks_the_key_and_the_sts_token(start_twin):
    doc = {"credentials": {"alicloud": {"access_key_id": "STS.twinkey", "access_key_secret": "sts-secret", "security_token": "tok-123"}},
           "instances": [inst("web-1")]}
    ali = start_twin(doc)
    assert ali.client(signature_algorithm="v2").describe_instances(m.DescribeInstancesRequest(region_id=ali.region)).body.total_count == 1
    err = api_error(ali.client(signature_algorithm="v2", security_token="tok-999").describe_instances,
                    m.DescribeInstancesRequest(region_id=ali.region))
    assert (err.code, err.status_code) == ("InvalidSecurityToken.Malformed", 400)
    err = api_error(ali.client(signature_algorithm="v2", security_token=None).describe_instances,
                    m.DescribeInstancesRequest(region_id=ali.region))
    assert (err.code, err.status_code) == ("InvalidSecurityToken.MismatchWithAccessKey", 400)
    err = api_error(ali.client(signature_algorithm="v2", access_key_id="LTAIunknown", security_token=None).describe_instances,
                    m.DescribeInstancesRequest(region_id=ali.region))
    assert (err.code, err.status_code) == ("InvalidAccessKeyId.NotFound", 404)


def test_instance_role_sts_credentials_work(ali):
    creds = ali.cloud.role_credentials(ali.cloud.ecs.instances[ali.instances["web-1"]])
    client = ali.client(access_key_id=creds.access_key_id, access_key_secret=creds.secret, security_token=creds.security_token)
    assert client.describe_disks(m.DescribeDisksRequest(region_id=ali.region)).body.total_count == 6


def _signed_request(ali, query, action="DescribeInstances", nonce=None, when=None):
    """A V3 request signed exactly as the SDK signs it (its own signing function), for tampering tests."""
    headers = {"host": ali.url, "x-acs-version": "2014-05-26", "x-acs-action": action, "user-agent": "test",
               "x-acs-date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when)), "x-acs-signature-nonce": nonce or uuid.uuid4().hex,
               "accept": "application/json", "x-acs-content-sha256": hashlib.sha256(b"").hexdigest()}
    req = types.SimpleNamespace(pathname="/", query=dict(query), headers=headers, method="POST")
    headers["Authorization"] = Utils.get_authorization(req, "ACS3-HMAC-SHA256", headers["x-acs-content-sha256"],
                                                       ali.access_key_id, ali.access_key_secret)
    return headers


def _post(ali, query, headers):
    return requests.post(f"http://{ali.url}/?{urlencode(query)}", headers=headers, timeout=10)


def test_tampered_parameters_and_replayed_nonces_are_rejected(ali):
    query = {"RegionId": ali.region, "InstanceIds": '["%s"]' % ali.instances["web-1"]}
    headers = _signed_request(ali, query)
    ok = _post(ali, query, headers)
    assert ok.status_code == 200 and len(ok.json()["Instances"]["Instance"]) == 1
    replay = _post(ali, query, headers)
    assert (replay.status_code, replay.json()["Code"]) == (400, "SignatureNonceUsed")
    headers = _signed_request(ali, query)
    tampered = dict(query, InstanceIds='["%s"]' % ali.instances["web-2"])
    bad = _post(ali, tampered, headers)
    assert (bad.status_code, bad.json()["Code"]) == (400, "SignatureDoesNotMatch")
    headers = _signed_request(ali, query)
    headers["x-acs-action"] = "StopInstance"
    assert _post(ali, query, headers).json()["Code"] == "SignatureDoesNotMatch"


def test_a_stale_date_is_rejected(ali):
    query = {"RegionId": ali.region}
    fresh = _post(ali, query, _signed_request(ali, query, when=time.time() - 14 * 60))
    assert fresh.status_code == 200
    stale = _post(ali, query, _signed_request(ali, query, when=time.time() - 16 * 60))
    assert (stale.status_code, stale.json()["Code"]) == (400, "InvalidTimeStamp.Expired")


def test_unsigned_request_is_rejected(ali):
    reply = requests.post(f"http://{ali.url}/?RegionId={ali.region}", headers={"x-acs-action": "DescribeInstances"}, timeout=10)
    assert reply.status_code == 400 and reply.json()["Code"] == "IncompleteSignature" and reply.json()["RequestId"]


def test_missing_parameter_gets_missing_parameter_error(ali):
    err = api_error(ali.client().describe_instances, m.DescribeInstancesRequest())
    assert (err.code, err.status_code) == ("MissingParameter", 400)
    assert '"RegionId"' in err.message
    err = api_error(ali.client().describe_snapshot_groups, m.DescribeSnapshotGroupsRequest())
    assert err.code == "MissingParameter"


def test_unknown_action_is_rejected(ali):
    query = {"RegionId": ali.region}
    reply = _post(ali, query, _signed_request(ali, query, action="LaunchRockets"))
    assert (reply.status_code, reply.json()["Code"]) == (404, "InvalidAction.NotFound")


def test_injected_throttling_has_alibabas_shape(ali):
    ali.faults.update({"api_errors": [{"action": "DescribeDisks", "count": 1}]})
    err = api_error(ali.client().describe_disks, m.DescribeDisksRequest(region_id=ali.region))
    assert (err.code, err.status_code) == ("Throttling.User", 400)
    assert ali.client().describe_disks(m.DescribeDisksRequest(region_id=ali.region)).body.total_count == 6
    assert ali.stats.counts("alicloud")["DescribeDisks"] == 2


# ---------------------------------------------------------------------------------------------- instances

def test_describe_instances_filters_and_tag_shape(ali):
    client = ali.client()
    body = client.describe_instances(m.DescribeInstancesRequest(region_id=ali.region, tag=[m.DescribeInstancesRequestTag(key="env", value="prod")])).body
    assert [i.instance_name for i in body.instances.instance] == ["web-3"]
    assert {t.tag_key: t.tag_value for t in body.instances.instance[0].tags.tag} == {"env": "prod"}
    ids = '["%s","%s"]' % (ali.instances["web-1"], ali.instances["web-2"])
    body = client.describe_instances(m.DescribeInstancesRequest(region_id=ali.region, instance_ids=ids)).body
    assert body.total_count == 2


def test_describe_instances_pages_with_next_token_and_page_number(start_twin):
    ali = start_twin({"generate": [{"count": 23, "provider": "alicloud", "name_prefix": "fleet-", "template": {"role": ROLE}}]})
    client = ali.client()
    seen, token = [], None
    while True:
        body = client.describe_instances(m.DescribeInstancesRequest(region_id=ali.region, max_results=10, next_token=token)).body
        seen += [i.instance_id for i in body.instances.instance]
        token = body.next_token
        if not token:
            break
    assert len(seen) == 23 and len(set(seen)) == 23
    page3 = client.describe_instances(m.DescribeInstancesRequest(region_id=ali.region, page_number=3, page_size=10)).body
    assert (len(page3.instances.instance), page3.total_count, page3.page_number) == (3, 23, 3)
    err = api_error(client.describe_instances, m.DescribeInstancesRequest(region_id=ali.region, next_token="garbage!"))
    assert err.status_code == 400


def test_describe_instance_ram_role(start_twin):
    ali = start_twin({"instances": [inst("web-1"), inst("web-2", role=None)]})
    body = ali.client().describe_instance_ram_role(m.DescribeInstanceRamRoleRequest(region_id=ali.region)).body
    assert [(r.instance_id, r.ram_role_name) for r in body.instance_ram_role_sets.instance_ram_role_set] == [(ali.instances["web-1"], ROLE)]


def test_stop_and_start_go_through_transitional_states(start_twin):
    ali = start_twin({"instances": [inst("web-1")]}, latency={"profile": "zero", "transitions": {"instance_stop": 1.0, "instance_start": 1.0}})
    client = ali.client()
    iid = ali.instances["web-1"]

    def status():
        return client.describe_instances(m.DescribeInstancesRequest(region_id=ali.region, instance_ids=f'["{iid}"]')).body.instances.instance[0].status
    client.stop_instance(m.StopInstanceRequest(instance_id=iid))
    assert status() == "Stopping"
    assert api_error(client.stop_instance, m.StopInstanceRequest(instance_id=iid)).code == "IncorrectInstanceStatus"
    wait_for(lambda: status() == "Stopped")
    client.start_instance(m.StartInstanceRequest(instance_id=iid))
    assert status() == "Starting"
    wait_for(lambda: status() == "Running")
    assert api_error(client.start_instance, m.StartInstanceRequest(instance_id="i-doesnotexist")).code == "InvalidInstanceId.NotFound"


# ---------------------------------------------------------------------------------------------- snapshot-consistent groups

def test_create_snapshot_group_constraints(start_twin):
    ali = start_twin({"instances": [
        inst("web-1"), inst("web-2", categories=("cloud_essd", "cloud_efficiency")),
        inst("big", categories=("cloud_essd",) * 17), inst("huge", categories=("cloud_essd", "cloud_essd"), sizes=[17000, 17000]),
        {"provider": "alicloud", "name": "shared", "role": ROLE, "volumes": [
            {"device": "/dev/xvda", "size": 20, "type": "cloud_essd"},
            {"device": "/dev/xvdb", "size": 20, "type": "cloud_essd", "multi_attach": True}]}]})
    client = ali.client()
    ids = ali.instances
    d1 = disks_of(client, ali.region, ids["web-1"])
    d2 = disks_of(client, ali.region, ids["web-2"])
    ds = disks_of(client, ali.region, ids["shared"])

    def create(**kw):
        return client.create_snapshot_group(m.CreateSnapshotGroupRequest(region_id=ali.region, **kw))

    err = api_error(create, **{"instance_id": ids["web-1"], "disk_id": [d1["/dev/xvda"].disk_id], "exclude_disk_id": [d1["/dev/xvdb"].disk_id]})
    assert err.code == "InvalidParameter.Conflict"
    err = api_error(create, **{"instance_id": ids["web-1"], "disk_id": [d2["/dev/xvda"].disk_id]})
    assert err.code == "InvalidDiskIds.NotBelongToInstance"
    assert api_error(create, instance_id=ids["web-2"]).code == "InvalidDiskCategory.NotSupported"
    assert create(instance_id=ids["web-2"], exclude_disk_id=[d2["/dev/xvdb"].disk_id]).body.snapshot_group_id.startswith("ssg-")
    assert api_error(create, instance_id=ids["shared"]).code == "InvalidOperation.MultiAttachDisk"
    assert create(instance_id=ids["shared"], exclude_disk_id=[ds["/dev/xvdb"].disk_id]).body.snapshot_group_id
    assert api_error(create, instance_id=ids["big"]).code == "InvalidParameter.DiskCount"
    assert api_error(create, instance_id=ids["huge"]).code == "InvalidParameter.TotalSize"
    assert api_error(create, instance_id=ids["web-1"], name="9lives").code == "InvalidName"
    assert api_error(create).code == "MissingParameter"
    assert api_error(create, instance_id="i-nothere").code == "InvalidInstanceId.NotFound"
    group = create(instance_id=ids["web-1"], name="ok-1", tag=[m.CreateSnapshotGroupRequestTag(key="team", value="db")]).body.snapshot_group_id
    body = client.describe_snapshot_groups(m.DescribeSnapshotGroupsRequest(region_id=ali.region, snapshot_group_id=[group])).body
    (g,) = body.snapshot_groups.snapshot_group
    assert {t.key: t.value for t in g.tags.tag} == {"team": "db"}
    assert {s.source_disk_id for s in g.snapshots.snapshot} == {d.disk_id for d in d1.values()}


def test_group_status_progresses_to_accomplished_or_failed(start_twin):
    ali = start_twin({"instances": [inst("web-1"), inst("web-2", categories=("cloud_essd",), faults={"snapshot_error": True})]},
                     latency={"profile": "zero", "transitions": {"snapshot_group_complete": 1.0}})
    client = ali.client()
    ok = client.create_snapshot_group(m.CreateSnapshotGroupRequest(region_id=ali.region, instance_id=ali.instances["web-1"])).body.snapshot_group_id
    bad = client.create_snapshot_group(m.CreateSnapshotGroupRequest(region_id=ali.region, instance_id=ali.instances["web-2"])).body.snapshot_group_id

    def groups():
        body = client.describe_snapshot_groups(m.DescribeSnapshotGroupsRequest(region_id=ali.region, snapshot_group_id=[ok, bad])).body
        return {g.snapshot_group_id: g for g in body.snapshot_groups.snapshot_group}
    first = groups()
    assert first[ok].status == "progressing" and all(not s.available for s in first[ok].snapshots.snapshot)
    wait_for(lambda: groups()[ok].status != "progressing" and groups()[bad].status != "progressing")
    final = groups()
    assert final[ok].status == "accomplished" and all(s.progress == "100%" and s.available for s in final[ok].snapshots.snapshot)
    assert final[bad].status == "failed"
    snaps = client.describe_snapshots(m.DescribeSnapshotsRequest(region_id=ali.region, instance_id=ali.instances["web-2"])).body.snapshots.snapshot
    assert [s.status for s in snaps] == ["failed"]
    by_status = client.describe_snapshot_groups(m.DescribeSnapshotGroupsRequest(region_id=ali.region, status=["failed"])).body
    assert [g.snapshot_group_id for g in by_status.snapshot_groups.snapshot_group] == [bad]


def test_describe_snapshot_groups_pages_with_next_token(ali):
    client = ali.client()
    made = {client.create_snapshot_group(m.CreateSnapshotGroupRequest(region_id=ali.region, instance_id=ali.instances["web-1"])).body.snapshot_group_id
            for _n in range(7)}
    seen, token = [], None
    while True:
        body = client.describe_snapshot_groups(m.DescribeSnapshotGroupsRequest(region_id=ali.region, max_results=3, next_token=token)).body
        seen += [g.snapshot_group_id for g in body.snapshot_groups.snapshot_group]
        assert len(body.snapshot_groups.snapshot_group) <= 3
        token = body.next_token
        if not token:
            break
    assert sorted(seen) == sorted(made)
    err = api_error(client.describe_snapshot_groups, m.DescribeSnapshotGroupsRequest(region_id=ali.region, snapshot_group_id=[f"ssg-{n}" for n in range(11)]))
    assert err.status_code == 400


def test_delete_snapshot_group_removes_its_snapshots(ali):
    client = ali.client()
    iid = ali.instances["web-1"]
    group = client.create_snapshot_group(m.CreateSnapshotGroupRequest(region_id=ali.region, instance_id=iid)).body.snapshot_group_id
    body = client.delete_snapshot_group(m.DeleteSnapshotGroupRequest(region_id=ali.region, snapshot_group_id=group)).body
    items = body.operation_progress_set.operation_progress
    assert len(items) == 2 and all(i.operation_status == "Success" for i in items)
    assert client.describe_snapshots(m.DescribeSnapshotsRequest(region_id=ali.region, instance_id=iid)).body.total_count == 0
    err = api_error(client.delete_snapshot_group, m.DeleteSnapshotGroupRequest(region_id=ali.region, snapshot_group_id=group))
    assert (err.code, err.status_code) == ("InvalidSnapshotGroupId.NotFound", 404)


# ---------------------------------------------------------------------------------------------- snapshots, tags

def test_snapshot_and_tag_shapes(ali):
    client = ali.client()
    iid = ali.instances["web-1"]
    group = client.create_snapshot_group(m.CreateSnapshotGroupRequest(region_id=ali.region, instance_id=iid)).body.snapshot_group_id
    snaps = client.describe_snapshots(m.DescribeSnapshotsRequest(region_id=ali.region, instance_id=iid)).body.snapshots.snapshot
    ids = [s.snapshot_id for s in snaps]
    client.tag_resources(m.TagResourcesRequest(region_id=ali.region, resource_type="snapshot", resource_id=ids,
                                               tag=[m.TagResourcesRequestTag(key="appconsistent:set-id", value=group)]))
    # DescribeSnapshots and ListTagResources speak TagKey/TagValue; DescribeSnapshotGroups speaks Key/Value.
    snaps = client.describe_snapshots(m.DescribeSnapshotsRequest(region_id=ali.region, instance_id=iid,
                                                                 tag=[m.DescribeSnapshotsRequestTag(key="appconsistent:set-id", value=group)])).body
    assert snaps.total_count == 2
    assert all({t.tag_key: t.tag_value for t in s.tags.tag} == {"appconsistent:set-id": group} for s in snaps.snapshots.snapshot)
    (g,) = client.describe_snapshot_groups(m.DescribeSnapshotGroupsRequest(region_id=ali.region, snapshot_group_id=[group])).body.snapshot_groups.snapshot_group
    assert all({t.key: t.value for t in s.tags.tag} == {"appconsistent:set-id": group} for s in g.snapshots.snapshot)
    listed = client.list_tag_resources(m.ListTagResourcesRequest(region_id=ali.region, resource_type="snapshot", resource_id=ids)).body
    assert {(r.resource_id, r.tag_key, r.tag_value) for r in listed.tag_resources.tag_resource} == {(i, "appconsistent:set-id", group) for i in ids}
    err = api_error(client.tag_resources, m.TagResourcesRequest(region_id=ali.region, resource_type="snapshot", resource_id=["s-missing"],
                                                                tag=[m.TagResourcesRequestTag(key="a", value="b")]))
    assert (err.code, err.status_code) == ("InvalidResourceId.NotFound", 404)
    err = api_error(client.tag_resources, m.TagResourcesRequest(region_id=ali.region, resource_type="snapshotgroup", resource_id=[group],
                                                                tag=[m.TagResourcesRequestTag(key="a", value="b")]))
    assert err.code == "InvalidResourceType.NotSupported"
    err = api_error(client.tag_resources, m.TagResourcesRequest(region_id=ali.region, resource_type="snapshot", resource_id=ids,
                                                                tag=[m.TagResourcesRequestTag(key="acs:reserved", value="b")]))
    assert err.code == "InvalidTagKey.Malformed"


def test_list_tag_resources_pages_with_next_token(start_twin):
    ali = start_twin({"generate": [{"count": 30, "provider": "alicloud", "name_prefix": "n-", "template": {"tags": {"a": "1", "b": "2"}}}]})
    client = ali.client()
    rows, token = [], None
    while True:
        body = client.list_tag_resources(m.ListTagResourcesRequest(region_id=ali.region, resource_type="instance", next_token=token,
                                                                   tag=[m.ListTagResourcesRequestTag(key="a", value="1")])).body
        rows += body.tag_resources.tag_resource
        token = body.next_token
        if not token:
            break
    assert len(rows) == 60 and len({(r.resource_id, r.tag_key) for r in rows}) == 60


def test_describe_snapshots_and_disks_page_both_ways(ali):
    client = ali.client()
    for _n in range(6):
        client.create_snapshot_group(m.CreateSnapshotGroupRequest(region_id=ali.region, instance_id=ali.instances["web-1"]))
    token, seen = None, []
    while True:
        body = client.describe_snapshots(m.DescribeSnapshotsRequest(region_id=ali.region, max_results=5, next_token=token)).body
        seen += [s.snapshot_id for s in body.snapshots.snapshot]
        token = body.next_token
        if not token:
            break
    assert len(set(seen)) == 12
    page = client.describe_snapshots(m.DescribeSnapshotsRequest(region_id=ali.region, page_number=2, page_size=10)).body
    assert (len(page.snapshots.snapshot), page.total_count) == (2, 12)
    disks = client.describe_disks(m.DescribeDisksRequest(region_id=ali.region, page_number=2, page_size=4)).body
    assert (len(disks.disks.disk), disks.total_count) == (2, 6)
    essd = client.describe_disks(m.DescribeDisksRequest(region_id=ali.region, category="cloud_efficiency")).body.disks.disk
    assert [d.instance_id for d in essd] == [ali.instances["web-2"]]


def test_disks_and_invocations_page_with_next_token_and_bad_paging_is_refused(ali):
    client = ali.client()
    token, seen = None, []
    while True:
        body = client.describe_disks(m.DescribeDisksRequest(region_id=ali.region, max_results=4, next_token=token)).body
        assert len(body.disks.disk) <= 4
        seen += [d.disk_id for d in body.disks.disk]
        token = body.next_token
        if not token:
            break
    assert len(seen) == 6 and len(set(seen)) == 6
    iid = ali.instances["web-1"]
    made = {client.run_command(m.RunCommandRequest(region_id=ali.region, type="RunShellScript", command_content="true",
                                                   instance_id=[iid])).body.invoke_id for _n in range(5)}
    token, invocations = None, []
    while True:
        body = client.describe_invocations(m.DescribeInvocationsRequest(region_id=ali.region, instance_id=iid, max_results=2,
                                                                        next_token=token)).body
        assert len(body.invocations.invocation) <= 2
        invocations += [i.invoke_id for i in body.invocations.invocation]
        token = body.next_token
        if not token:
            break
    assert sorted(invocations) == sorted(made)
    err = api_error(client.describe_snapshots, m.DescribeSnapshotsRequest(region_id=ali.region, next_token="not-a-token"))
    assert (err.code, err.status_code) == ("InvalidParam.NextToken", 400)
    err = api_error(client.describe_instances, m.DescribeInstancesRequest(region_id=ali.region, max_results=101))
    assert (err.code, err.status_code) == ("InvalidParameter.MaxResults", 400)


# ---------------------------------------------------------------------------------------------- rollback and restore

@pytest.fixture
def image_twin(start_twin, tmp_path):
    images = disk_images(tmp_path, "original")
    doc = {"instances": [{"provider": "alicloud", "name": "db-1", "role": ROLE, "volumes": [
        {"device": "/dev/xvda", "size": 20, "type": "cloud_essd", "image": images[0]},
        {"device": "/dev/xvdb", "size": 20, "type": "cloud_essd", "image": images[1]}]}, inst("web-9")]}
    return start_twin(doc), images


def test_reset_disk_needs_a_stopped_instance_and_a_snapshot_of_that_disk(image_twin):
    ali, images = image_twin
    client = ali.client()
    iid = ali.instances["db-1"]
    disks = disks_of(client, ali.region, iid)
    group = client.create_snapshot_group(m.CreateSnapshotGroupRequest(region_id=ali.region, instance_id=iid)).body.snapshot_group_id
    (g,) = client.describe_snapshot_groups(m.DescribeSnapshotGroupsRequest(region_id=ali.region, snapshot_group_id=[group])).body.snapshot_groups.snapshot_group
    snaps = {s.source_disk_id: s.snapshot_id for s in g.snapshots.snapshot}
    with open(images[1], "r+b") as handle:
        handle.seek(4096)
        handle.write(b"data: changed!!")
    data, system = disks["/dev/xvdb"].disk_id, disks["/dev/xvda"].disk_id
    err = api_error(client.reset_disk, m.ResetDiskRequest(disk_id=data, snapshot_id=snaps[data]))
    assert err.code == "IncorrectInstanceStatus"
    client.stop_instance(m.StopInstanceRequest(instance_id=iid))
    err = api_error(client.reset_disk, m.ResetDiskRequest(disk_id=data, snapshot_id=snaps[system]))
    assert err.code == "InvalidSnapshotId.NotBelongToDisk"
    assert api_error(client.reset_disk, m.ResetDiskRequest(disk_id=data, snapshot_id=snaps[data], dry_run=True)).code == "DryRunOperation"
    assert read_block(images[1]) == "data: changed!!"
    client.reset_disk(m.ResetDiskRequest(disk_id=data, snapshot_id=snaps[data]))
    assert read_block(images[1]) == "data: original"


def test_a_progressing_snapshot_neither_resets_nor_makes_a_disk(start_twin):
    ali = start_twin({"instances": [inst("web-1")]}, latency={"profile": "zero", "transitions": {"snapshot_group_complete": 120}})
    client = ali.client()
    iid = ali.instances["web-1"]
    client.create_snapshot_group(m.CreateSnapshotGroupRequest(region_id=ali.region, instance_id=iid))
    data = disks_of(client, ali.region, iid)["/dev/xvdb"]
    (snap,) = client.describe_snapshots(m.DescribeSnapshotsRequest(region_id=ali.region, disk_id=data.disk_id)).body.snapshots.snapshot
    assert snap.status == "progressing"
    client.stop_instance(m.StopInstanceRequest(instance_id=iid))
    wait_for(lambda: client.describe_instances(m.DescribeInstancesRequest(region_id=ali.region, instance_ids=f'["{iid}"]'))
             .body.instances.instance[0].status == "Stopped")
    err = api_error(client.reset_disk, m.ResetDiskRequest(disk_id=data.disk_id, snapshot_id=snap.snapshot_id))
    assert (err.code, err.status_code) == ("IncorrectSnapshotStatus", 403)
    err = api_error(client.create_disk, m.CreateDiskRequest(region_id=ali.region, zone_id=data.zone_id, snapshot_id=snap.snapshot_id,
                                                            disk_category="cloud_essd"))
    assert (err.code, err.status_code) == ("IncorrectSnapshotStatus", 403)


def test_reset_disks_restores_several_disks(image_twin):
    ali, images = image_twin
    client = ali.client()
    iid = ali.instances["db-1"]
    group = client.create_snapshot_group(m.CreateSnapshotGroupRequest(region_id=ali.region, instance_id=iid)).body.snapshot_group_id
    (g,) = client.describe_snapshot_groups(m.DescribeSnapshotGroupsRequest(region_id=ali.region, snapshot_group_id=[group])).body.snapshot_groups.snapshot_group
    for path in images:
        with open(path, "r+b") as handle:
            handle.seek(4096)
            handle.write(b"XXXXXXXXXXXXXXXXXXXX")
    client.stop_instance(m.StopInstanceRequest(instance_id=iid))
    body = client.reset_disks(m.ResetDisksRequest(region_id=ali.region, disk=[
        m.ResetDisksRequestDisk(disk_id=s.source_disk_id, snapshot_id=s.snapshot_id) for s in g.snapshots.snapshot])).body
    assert [p.operation_status for p in body.operation_progress_set.operation_progress] == ["Success", "Success"]
    assert [read_block(p) for p in images] == ["sys: original", "data: original"]


def test_create_disk_from_snapshot_attach_and_detach(image_twin):
    ali, images = image_twin
    client = ali.client()
    iid, other = ali.instances["db-1"], ali.instances["web-9"]
    client.create_snapshot_group(m.CreateSnapshotGroupRequest(region_id=ali.region, instance_id=iid))
    data = disks_of(client, ali.region, iid)["/dev/xvdb"].disk_id
    (snap,) = client.describe_snapshots(m.DescribeSnapshotsRequest(region_id=ali.region, disk_id=data)).body.snapshots.snapshot
    zone = client.describe_instances(m.DescribeInstancesRequest(region_id=ali.region, instance_ids=f'["{other}"]')).body.instances.instance[0].zone_id
    new = client.create_disk(m.CreateDiskRequest(region_id=ali.region, zone_id=zone, snapshot_id=snap.snapshot_id, disk_category="cloud_essd")).body.disk_id
    (disk,) = client.describe_disks(m.DescribeDisksRequest(region_id=ali.region, disk_ids=f'["{new}"]')).body.disks.disk
    assert (disk.status, disk.source_snapshot_id, disk.size) == ("Available", snap.snapshot_id, 20)
    restored = next(v["image"] for v in ali.state()["volumes"] if v["id"] == new)
    assert read_block(restored) == "data: original" and restored not in images
    client.attach_disk(m.AttachDiskRequest(instance_id=other, disk_id=new))
    (disk,) = client.describe_disks(m.DescribeDisksRequest(region_id=ali.region, disk_ids=f'["{new}"]')).body.disks.disk
    assert (disk.status, disk.instance_id) == ("In_use", other) and disk.device
    assert api_error(client.attach_disk, m.AttachDiskRequest(instance_id=iid, disk_id=new)).code == "IncorrectDiskStatus"
    client.detach_disk(m.DetachDiskRequest(instance_id=other, disk_id=new))
    (disk,) = client.describe_disks(m.DescribeDisksRequest(region_id=ali.region, disk_ids=f'["{new}"]')).body.disks.disk
    assert (disk.status, disk.instance_id) == ("Available", "")
    system = disks_of(client, ali.region, iid)["/dev/xvda"].disk_id
    assert api_error(client.detach_disk, m.DetachDiskRequest(instance_id=iid, disk_id=system)).code == "IncorrectInstanceStatus"
    assert api_error(client.delete_disk, m.DeleteDiskRequest(disk_id=system)).code == "IncorrectDiskStatus"
    err = api_error(client.delete_snapshot, m.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id))
    assert err.code == "SnapshotCreatedDisk"
    snap_image = next(s["image"] for s in ali.state()["snapshots"] if s["id"] == snap.snapshot_id)
    assert os.path.exists(snap_image)
    client.delete_snapshot(m.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id, force=True))
    assert not os.path.exists(snap_image)
    assert client.describe_snapshots(m.DescribeSnapshotsRequest(region_id=ali.region, disk_id=data)).body.total_count == 0
    client.delete_disk(m.DeleteDiskRequest(disk_id=new))
    assert not os.path.exists(restored)
    assert client.describe_disks(m.DescribeDisksRequest(region_id=ali.region, disk_ids=f'["{new}"]')).body.total_count == 0


# ---------------------------------------------------------------------------------------------- shared launcher and control API

def test_runs_under_the_shared_launcher_with_the_control_api(twin_factory):
    twins = twin_factory(aws=False)
    client = twins.ecs_client()
    body = client.describe_instances(m.DescribeInstancesRequest(region_id=twins.endpoints["alicloud"]["region"])).body
    assert {i.instance_id for i in body.instances.instance} == set(twins.endpoints["alicloud"]["instances"].values())
    base = f"http://{twins.endpoints['alicloud']['endpoint']}/_twin"
    state = requests.get(f"{base}/state", timeout=10).json()
    assert {i["id"] for i in state["instances"]} == set(twins.endpoints["alicloud"]["instances"].values())
    assert requests.get(f"{base}/stats", timeout=10).json()["counts"]["alicloud"]["DescribeInstances"] == 1
    requests.post(f"{base}/faults", json={"api_errors": [{"provider": "alicloud", "action": "DescribeDisks", "count": 1}]}, timeout=10)
    err = api_error(client.describe_disks, m.DescribeDisksRequest(region_id=twins.endpoints["alicloud"]["region"]))
    assert err.code == "Throttling.User"


def test_client_token_makes_retries_idempotent(ali):
    client = ali.client()
    iid = ali.instances["web-1"]
    first = client.create_snapshot_group(m.CreateSnapshotGroupRequest(region_id=ali.region, instance_id=iid, client_token="run-42")).body
    again = client.create_snapshot_group(m.CreateSnapshotGroupRequest(region_id=ali.region, instance_id=iid, client_token="run-42")).body
    assert first.snapshot_group_id == again.snapshot_group_id and first.request_id != again.request_id
    assert len(ali.state()["snapshot_groups"]) == 1
    changed = m.CreateSnapshotGroupRequest(region_id=ali.region, instance_id=iid, name="other", client_token="run-42")
    err = api_error(client.create_snapshot_group, changed)
    assert err.code == "IdempotentParameterMismatch"


def test_role_without_permission_is_forbidden(start_twin):
    ali = start_twin({"instances": [inst("web-1", faults={"ram_role_no_permission": True})]})
    creds = ali.cloud.role_credentials(ali.cloud.ecs.instances[ali.instances["web-1"]])
    client = ali.client(access_key_id=creds.access_key_id, access_key_secret=creds.secret, security_token=creds.security_token)
    err = api_error(client.describe_disks, m.DescribeDisksRequest(region_id=ali.region))
    assert (err.code, err.status_code) == ("Forbidden.RAM", 403)
    assert ali.client().describe_disks(m.DescribeDisksRequest(region_id=ali.region)).body.total_count == 2


def _without_nulls(value):
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def test_every_response_field_is_a_field_of_the_sdk_model(ali):
    """Parsing with the SDK's from_map and writing back with to_map keeps every field: no misspelt or misplaced key."""
    client = ali.client()
    iid = ali.instances["web-1"]
    group = client.create_snapshot_group(m.CreateSnapshotGroupRequest(region_id=ali.region, instance_id=iid)).body.snapshot_group_id
    snap_ids = [s.snapshot_id for s in client.describe_snapshots(m.DescribeSnapshotsRequest(region_id=ali.region)).body.snapshots.snapshot]
    client.tag_resources(m.TagResourcesRequest(region_id=ali.region, resource_type="snapshot", resource_id=snap_ids,
                                               tag=[m.TagResourcesRequestTag(key="k", value="v")]))
    invoke = client.run_command(m.RunCommandRequest(region_id=ali.region, type="RunShellScript", command_content="echo hi",
                                                    instance_id=[iid, ali.instances["web-2"]])).body.invoke_id
    time.sleep(0.2)
    zone = client.describe_instances(m.DescribeInstancesRequest(region_id=ali.region)).body.instances.instance[0].zone_id
    r = ali.region
    calls = [
        ("DescribeInstances", {"RegionId": r}, m.DescribeInstancesResponseBody),
        ("DescribeInstanceRamRole", {"RegionId": r}, m.DescribeInstanceRamRoleResponseBody),
        ("DescribeDisks", {"RegionId": r}, m.DescribeDisksResponseBody),
        ("DescribeSnapshots", {"RegionId": r, "MaxResults": "10"}, m.DescribeSnapshotsResponseBody),
        ("DescribeSnapshotGroups", {"RegionId": r}, m.DescribeSnapshotGroupsResponseBody),
        ("ListTagResources", {"RegionId": r, "ResourceType": "snapshot", "ResourceId.1": snap_ids[0]}, m.ListTagResourcesResponseBody),
        ("DescribeInvocations", {"RegionId": r, "InvokeId": invoke, "IncludeOutput": "true"}, m.DescribeInvocationsResponseBody),
        ("DescribeInvocationResults", {"RegionId": r, "InvokeId": invoke}, m.DescribeInvocationResultsResponseBody),
        ("DescribeCloudAssistantStatus", {"RegionId": r, "InstanceId.1": iid}, m.DescribeCloudAssistantStatusResponseBody),
        ("RunCommand", {"RegionId": r, "Type": "RunShellScript", "CommandContent": "true", "InstanceId.1": iid}, m.RunCommandResponseBody),
        ("CreateSnapshotGroup", {"RegionId": r, "InstanceId": iid}, m.CreateSnapshotGroupResponseBody),
        ("CreateDisk", {"RegionId": r, "ZoneId": zone, "SnapshotId": snap_ids[0], "DiskCategory": "cloud_essd"}, m.CreateDiskResponseBody),
        ("StopInstance", {"InstanceId": iid}, m.StopInstanceResponseBody),
        ("ResetDisks", {"RegionId": r, "Disk.1.DiskId": disks_of(client, r, iid)["/dev/xvda"].disk_id,
                        "Disk.1.SnapshotId": next(s.snapshot_id for s in client.describe_snapshots(m.DescribeSnapshotsRequest(
                            region_id=r, disk_id=disks_of(client, r, iid)["/dev/xvda"].disk_id)).body.snapshots.snapshot)}, m.ResetDisksResponseBody),
        ("DeleteSnapshotGroup", {"RegionId": r, "SnapshotGroupId": group}, m.DeleteSnapshotGroupResponseBody),
    ]
    for action, query, model in calls:
        reply = _post(ali, query, _signed_request(ali, query, action=action))
        assert reply.status_code == 200, (action, reply.text)
        raw = _without_nulls(reply.json())
        assert model().from_map(raw).to_map() == raw, action


def test_untag_resources_and_disk_created_on_an_instance(start_twin):
    ali = start_twin({"instances": [inst("web-1", zone="cn-hangzhou-h"), inst("web-2", zone="cn-hangzhou-i")]})
    client = ali.client()
    iid, other = ali.instances["web-1"], ali.instances["web-2"]
    new = client.create_disk(m.CreateDiskRequest(region_id=ali.region, instance_id=iid, size=10, disk_category="cloud_essd",
                                                 tag=[m.CreateDiskRequestTag(key="a", value="1"), m.CreateDiskRequestTag(key="b", value="2")])).body.disk_id
    (disk,) = client.describe_disks(m.DescribeDisksRequest(region_id=ali.region, disk_ids=f'["{new}"]')).body.disks.disk
    assert (disk.status, disk.instance_id, disk.zone_id) == ("In_use", iid, "cn-hangzhou-h")
    client.untag_resources(m.UntagResourcesRequest(region_id=ali.region, resource_type="disk", resource_id=[new], tag_key=["a"]))
    (disk,) = client.describe_disks(m.DescribeDisksRequest(region_id=ali.region, disk_ids=f'["{new}"]')).body.disks.disk
    assert {t.tag_key: t.tag_value for t in disk.tags.tag} == {"b": "2"}
    client.detach_disk(m.DetachDiskRequest(instance_id=iid, disk_id=new))
    err = api_error(client.attach_disk, m.AttachDiskRequest(instance_id=other, disk_id=new))
    assert err.code == "InvalidDiskId.ZoneMismatch"
    err = api_error(client.describe_instance_ram_role, m.DescribeInstanceRamRoleRequest(region_id=ali.region, instance_ids='["i-nope"]'))
    assert err.status_code == 404


def test_local_instance_sees_an_attached_disk_image_under_the_store(start_twin, tmp_path):
    image = tmp_path / "data.img"
    image.write_bytes(b"\0" * 4096 + b"data: original")
    doc = {"instances": [{"provider": "alicloud", "name": "db-1", "role": ROLE, "volumes": [
        {"device": "/dev/xvda", "size": 20, "type": "cloud_essd"},
        {"device": "/dev/xvdb", "size": 20, "type": "cloud_essd", "image": str(image)}]},
        inst("check-1", categories=("cloud_essd",), execution="local")]}
    ali = start_twin(doc)
    client = ali.client()
    iid, local = ali.instances["db-1"], ali.instances["check-1"]
    client.create_snapshot_group(m.CreateSnapshotGroupRequest(region_id=ali.region, instance_id=iid))
    data = disks_of(client, ali.region, iid)["/dev/xvdb"].disk_id
    (snap,) = client.describe_snapshots(m.DescribeSnapshotsRequest(region_id=ali.region, disk_id=data)).body.snapshots.snapshot
    new = client.create_disk(m.CreateDiskRequest(region_id=ali.region, zone_id=disks_of(client, ali.region, local)["/dev/xvda"].zone_id,
                                                 snapshot_id=snap.snapshot_id, disk_category="cloud_essd")).body.disk_id
    client.attach_disk(m.AttachDiskRequest(instance_id=local, disk_id=new))
    device = disks_of(client, ali.region, local)
    (path,) = [d for d in device if d != "/dev/xvda"]
    store = os.path.dirname(os.path.dirname(next(v["image"] for v in ali.state()["volumes"] if v["id"] == new)))
    links = [os.path.join(root, name) for root, _dirs, files in os.walk(store) for name in files if os.path.islink(os.path.join(root, name))]
    (link,) = links
    assert link.endswith(os.path.join("instances", local, os.path.basename(path)))
    assert read_block(link) == "data: original"
    client.detach_disk(m.DetachDiskRequest(instance_id=local, disk_id=new))
    assert not os.path.lexists(link)
    client.delete_disk(m.DeleteDiskRequest(disk_id=new))
