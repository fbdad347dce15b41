"""Alibaba Cloud base: credential precedence, SDK request models, retries and error mapping."""

import http.server
import json
import threading
import types
import urllib.parse

import pytest
from alibabacloud_ecs20140526 import models as ecs_models

from ansible_collections.appconsistent.snapshots.plugins.module_utils import alicloud


def params(**overrides):
    base = {key: None for key in alicloud.alicloud_argument_spec()}
    base.update(alicloud_protocol="https", alicloud_max_attempts=6, alicloud_region="cn-hangzhou")
    base.update(overrides)
    return base


# --- credential precedence -------------------------------------------------------------


def test_access_keys_win_over_role_and_profile():
    kind, details = alicloud.resolve_credential_source(params(
        alicloud_access_key="LTAI1", alicloud_secret_key="s1", alicloud_ecs_role_name="Role", alicloud_profile="p"))
    assert kind == "access_key" and details == {"access_key_id": "LTAI1", "access_key_secret": "s1"}


def test_security_token_makes_sts_credentials():
    kind, details = alicloud.resolve_credential_source(params(
        alicloud_access_key="STS.1", alicloud_secret_key="s1", alicloud_security_token="tok"))
    assert kind == "sts" and details["security_token"] == "tok"


def test_role_wins_over_profile():
    assert alicloud.resolve_credential_source(params(alicloud_ecs_role_name="Role", alicloud_profile="p")) == \
        ("ecs_ram_role", {"role_name": "Role"})


def test_profile_is_last():
    assert alicloud.resolve_credential_source(params(alicloud_profile="p")) == ("profile", {"profile_name": "p"})


def test_half_a_key_pair_is_refused_with_the_missing_half_named():
    with pytest.raises(alicloud.CredentialsMissing, match="alicloud_secret_key is not set"):
        alicloud.resolve_credential_source(params(alicloud_access_key="LTAI1", alicloud_ecs_role_name="Role"))


def test_environment_comes_between_options_and_role(monkeypatch):
    """Environment variables reach the params through env_fallback, so options beat them and they beat the role."""
    from ansible.module_utils.basic import env_fallback  # noqa: F401  (documents where the values come from)
    from ansible.module_utils.common.parameters import _set_defaults  # noqa: F401
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAIenv")
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "envsecret")
    validator = ArgumentSpecValidator(alicloud.alicloud_argument_spec())
    from_env = validator.validate({"alicloud_ecs_role_name": "Role", "alicloud_region": "cn-hangzhou"}).validated_parameters
    assert alicloud.resolve_credential_source(from_env)[1]["access_key_id"] == "LTAIenv"
    from_options = validator.validate({"alicloud_access_key": "LTAIopt", "alicloud_secret_key": "optsecret",
                                       "alicloud_region": "cn-hangzhou"}).validated_parameters
    assert alicloud.resolve_credential_source(from_options)[1] == {"access_key_id": "LTAIopt", "access_key_secret": "optsecret"}


def test_no_region_is_refused():
    with pytest.raises(alicloud.CredentialsMissing, match="alicloud_region"):
        alicloud.build_config(params(alicloud_access_key="a", alicloud_secret_key="b", alicloud_region=None))


def test_config_carries_endpoint_protocol_and_retry_options():
    config = alicloud.build_config(params(alicloud_access_key="a", alicloud_secret_key="b",
                                          alicloud_endpoint="127.0.0.1:18081", alicloud_protocol="http"))
    assert (config.endpoint, config.protocol, config.region_id) == ("127.0.0.1:18081", "http", "cn-hangzhou")
    condition = config.retry_options.retry_condition[0]
    assert "Throttling.User" in condition.error_code and "ServiceUnavailable" in condition.error_code
    assert condition.max_attempts == 6


def test_role_credentials_go_through_the_credentials_library():
    config = alicloud.build_config(params(alicloud_ecs_role_name="AppSnapshotRole"))
    assert config.access_key_id is None
    assert config.credential is not None


# --- request models --------------------------------------------------------------------


class RecordingClient:
    """Stands in for the SDK client: records the request model of each *_with_options call."""

    def __init__(self, bodies):
        self.bodies = bodies
        self.requests = []

    def __getattr__(self, name):
        def call(request, runtime):
            self.requests.append((name, request))
            body = self.bodies.get(name, {})
            body = body.pop(0) if isinstance(body, list) else body
            return types.SimpleNamespace(body=types.SimpleNamespace(to_map=lambda: body))
        return call


def _api(bodies=None):
    module = types.SimpleNamespace(params=params(), fail_json=None, check_mode=False)
    client = RecordingClient(bodies or {})
    return alicloud.AlibabaCloud(module, client=client), client


def test_create_snapshot_group_request_model():
    api, client = _api({"create_snapshot_group_with_options": {"SnapshotGroupId": "ssg-1"}})
    assert api.create_snapshot_group("i-1", exclude_disk_ids=["d-2"], name="n", description="d",
                                     tags={"appconsistent:set-id": "x"}) == "ssg-1"
    name, request = client.requests[0]
    assert name == "create_snapshot_group_with_options"
    assert isinstance(request, ecs_models.CreateSnapshotGroupRequest)
    assert request.to_map() == {"RegionId": "cn-hangzhou", "InstanceId": "i-1", "ExcludeDiskId": ["d-2"], "Name": "n",
                                "Description": "d", "Tag": [{"Key": "appconsistent:set-id", "Value": "x"}]}


def test_run_command_request_model():
    api, client = _api({"run_command_with_options": {"CommandId": "c-1", "InvokeId": "t-1"}})
    assert api.run_command(["i-1", "i-2"], "echo hi", timeout=600) == {"command_id": "c-1", "invoke_id": "t-1"}
    request = client.requests[0][1]
    assert isinstance(request, ecs_models.RunCommandRequest)
    sent = {key: value for key, value in request.to_map().items() if value != []}
    assert sent == {"RegionId": "cn-hangzhou", "Type": "RunShellScript", "CommandContent": "echo hi",
                                "ContentEncoding": "PlainText", "InstanceId": ["i-1", "i-2"], "Timeout": 600}


def test_stop_invocation_request_model():
    api, client = _api({"stop_invocation_with_options": {}})
    api.stop_invocation("t-1", ["i-1", "i-2"])
    name, request = client.requests[0]
    assert name == "stop_invocation_with_options" and isinstance(request, ecs_models.StopInvocationRequest)
    assert request.to_map() == {"RegionId": "cn-hangzhou", "InvokeId": "t-1", "InstanceId": ["i-1", "i-2"]}


def test_describe_snapshot_groups_follows_next_token():
    pages = [{"SnapshotGroups": {"SnapshotGroup": [{"SnapshotGroupId": "ssg-1"}]}, "NextToken": "n1"},
             {"SnapshotGroups": {"SnapshotGroup": [{"SnapshotGroupId": "ssg-2"}]}}]
    api, client = _api({"describe_snapshot_groups_with_options": pages})
    groups = api.describe_snapshot_groups(instance_id="i-1")
    assert [g["SnapshotGroupId"] for g in groups] == ["ssg-1", "ssg-2"]
    assert [r.next_token for _name, r in client.requests] == [None, "n1"]
    assert all(isinstance(r, ecs_models.DescribeSnapshotGroupsRequest) for _name, r in client.requests)


def test_describe_disks_sends_ids_as_a_json_array():
    api, client = _api({"describe_disks_with_options": {"Disks": {"Disk": [{"DiskId": "d-1"}]}}})
    assert api.describe_disks(disk_ids=["d-1", "d-2"]) == [{"DiskId": "d-1"}]
    assert json.loads(client.requests[0][1].to_map()["DiskIds"]) == ["d-1", "d-2"]


def test_cloud_assistant_status_is_asked_in_batches_of_50():
    api, client = _api({"describe_cloud_assistant_status_with_options": {
        "InstanceCloudAssistantStatusSet": {"InstanceCloudAssistantStatus": [{"CloudAssistantStatus": "true"}]}}})
    api.describe_cloud_assistant_status([f"i-{n}" for n in range(120)])
    assert [len(r.instance_id) for _name, r in client.requests] == [50, 50, 20]


def test_tag_resources_batches_of_50():
    api, client = _api()
    api.tag_resources("snapshot", [f"s-{n}" for n in range(60)], {"k": "v"})
    assert [len(r.resource_id) for _name, r in client.requests] == [50, 10]
    assert all(isinstance(r, ecs_models.TagResourcesRequest) for _name, r in client.requests)


def test_more_than_20_tags_are_refused_before_any_request():
    api, client = _api()
    with pytest.raises(alicloud.AlibabaCloudError, match="at most 20") as caught:
        api.tag_resources("snapshot", ["s-1"], {f"k{n}": "v" for n in range(21)})
    assert caught.value.code == "InvalidParameter.Tag" and client.requests == []
    api.tag_resources("snapshot", ["s-1"], {f"k{n}": "v" for n in range(20)})
    assert [len(r.tag) for _name, r in client.requests] == [20]


def _sent(client):
    """{tags: [resource ids, in request order]} of the TagResources requests a client received."""
    found = {}
    for name, request in client.requests:
        assert name == "tag_resources_with_options" and isinstance(request, ecs_models.TagResourcesRequest)
        assert request.resource_type == "snapshot" and request.region_id == "cn-hangzhou"
        assert 1 <= len(request.resource_id) <= 50 and 1 <= len(request.tag) <= 20
        found.setdefault(tuple(sorted((t.key, t.value) for t in request.tag)), []).append(list(request.resource_id))
    return found


def test_tag_batch_shares_a_call_between_resources_with_the_same_tags():
    api, client = _api()
    batch = alicloud.TagBatch("snapshot")
    batch.add(["s-1", "s-2"], {"appconsistent:set-id": "ssg-1", "team": "dba"})
    batch.add(["s-3"], {"team": "dba", "appconsistent:set-id": "ssg-2"})
    batch.add(["s-1"], {"appconsistent:device": "/dev/xvda"})
    batch.add(["s-3"], {"appconsistent:device": "/dev/xvda"})
    batch.add(["s-2", "s-1"], {"appconsistent:device": "/dev/xvda"})  # a resource added twice is tagged once
    batch.add(["s-9"], {})
    batch.add([], {"k": "v"})
    assert batch.flush(api) == {}
    assert _sent(client) == {
        (("appconsistent:set-id", "ssg-1"), ("team", "dba")): [["s-1", "s-2"]],
        (("appconsistent:set-id", "ssg-2"), ("team", "dba")): [["s-3"]],
        (("appconsistent:device", "/dev/xvda"),): [["s-1", "s-3", "s-2"]]}
    client.requests.clear()
    assert batch.flush(api) == {} and client.requests == []  # a flush empties the batch


def test_tag_batch_sends_at_most_50_resources_a_call():
    api, client = _api()
    batch = alicloud.TagBatch("snapshot")
    for n in range(120):
        batch.add([f"s-{n}"], {"appconsistent:device": "/dev/xvdb"})
    batch.add([f"s-{n}" for n in range(20)], {f"k{n}": "v" for n in range(20)})
    assert batch.flush(api) == {}
    sent = _sent(client)
    assert [len(ids) for ids in sent[(("appconsistent:device", "/dev/xvdb"),)]] == [50, 50, 20]
    assert sum(sent[(("appconsistent:device", "/dev/xvdb"),)], []) == [f"s-{n}" for n in range(120)]
    assert len(client.requests) == 4


class FailingApi:
    """tag_resources that fails a request naming one of ``bad`` with ``code``, and records the others."""

    def __init__(self, bad, code):
        self.bad = set(bad)
        self.code = code
        self.calls = []

    def tag_resources(self, resource_type, resource_ids, tags):
        self.calls.append(list(resource_ids))
        if self.bad & set(resource_ids):
            raise alicloud.AlibabaCloudError("TagResources", self.code, "refused")


def test_tag_batch_isolates_a_resource_the_api_names():
    """One missing snapshot in a call of 50 costs the 49 others one call each, not their tags."""
    api = FailingApi(["s-7"], "InvalidResourceId.NotFound")
    batch = alicloud.TagBatch("snapshot")
    batch.add([f"s-{n}" for n in range(60)], {"appconsistent:device": "/dev/xvda"})
    failed = batch.flush(api)
    assert list(failed) == ["s-7"] and failed["s-7"].code == "InvalidResourceId.NotFound"
    assert api.calls[0] == [f"s-{n}" for n in range(50)]
    assert api.calls[1:51] == [[f"s-{n}"] for n in range(50)]
    assert api.calls[51:] == [[f"s-{n}" for n in range(50, 60)]]


def test_tag_batch_fails_the_resources_of_a_refused_call_and_goes_on():
    api = FailingApi(["s-1"], "Forbidden.RAM")
    batch = alicloud.TagBatch("snapshot")
    batch.add(["s-1", "s-2"], {"appconsistent:set-id": "ssg-1"})
    batch.add(["s-3"], {"appconsistent:set-id": "ssg-2"})
    failed = batch.flush(api)
    assert sorted(failed) == ["s-1", "s-2"] and failed["s-2"].code == "Forbidden.RAM"
    assert api.calls == [["s-1", "s-2"], ["s-3"]]


def test_both_tag_shapes_read_the_same():
    assert alicloud.tags_to_dict({"Tag": [{"TagKey": "a", "TagValue": "1"}]}) == {"a": "1"}
    assert alicloud.tags_to_dict([{"Key": "a", "Value": "1"}]) == {"a": "1"}


# --- the real SDK against a local endpoint: retries and errors ---------------------------


class ScriptedECS(http.server.BaseHTTPRequestHandler):
    """Answers each request with the next scripted (status, body) pair."""

    script = []
    seen = []

    def do_POST(self):  # noqa: N802 (http.server naming)
        query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        self.seen.append((self.headers.get("x-acs-action"), query))
        status, body = self.script.pop(0)
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def scripted_ecs():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ScriptedECS)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    ScriptedECS.script, ScriptedECS.seen = [], []
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _real_api(port, **overrides):
    module = types.SimpleNamespace(params=params(alicloud_access_key="LTAItest", alicloud_secret_key="secret",
                                                 alicloud_endpoint=f"127.0.0.1:{port}", alicloud_protocol="http",
                                                 **overrides),
                                   fail_json=None, check_mode=False)
    return alicloud.AlibabaCloud(module)


def test_throttling_is_retried_by_the_sdk(scripted_ecs):
    throttled = {"Code": "Throttling.User", "Message": "Request was denied due to user flow control.", "RequestId": "R-t"}
    ScriptedECS.script = [(400, throttled), (503, {"Code": "ServiceUnavailable", "Message": "busy", "RequestId": "R-u"}),
                          (200, {"RequestId": "R-ok", "SnapshotGroupId": "ssg-42"})]
    api = _real_api(scripted_ecs.server_address[1])
    assert api.create_snapshot_group("i-1", name="n") == "ssg-42"
    assert [action for action, _query in ScriptedECS.seen] == ["CreateSnapshotGroup"] * 3


def test_retries_stop_after_max_attempts(scripted_ecs):
    throttled = {"Code": "Throttling.User", "Message": "flow control", "RequestId": "R-t"}
    ScriptedECS.script = [(400, throttled)] * 3
    api = _real_api(scripted_ecs.server_address[1], alicloud_max_attempts=2)
    with pytest.raises(alicloud.AlibabaCloudError) as err:
        api.create_snapshot_group("i-1", name="n")
    assert err.value.code == "Throttling.User"
    assert len(ScriptedECS.seen) == 2  # alicloud_max_attempts counts every attempt, the first included


def test_api_error_keeps_code_message_and_request_id(scripted_ecs):
    ScriptedECS.script = [(403, {"Code": "InvalidDiskCategory.ValueNotSupported", "Message": "only ESSD disks",
                                 "RequestId": "R-403"})]
    api = _real_api(scripted_ecs.server_address[1])
    with pytest.raises(alicloud.AlibabaCloudError) as err:
        api.create_snapshot_group("i-1", name="n")
    assert (err.value.code, err.value.message, err.value.request_id, err.value.status_code) == \
        ("InvalidDiskCategory.ValueNotSupported", "only ESSD disks", "R-403", 403)
    assert len(ScriptedECS.seen) == 1  # not a retryable answer


def test_unreachable_endpoint_is_named():
    api = _real_api(9, alicloud_max_attempts=1)
    with pytest.raises(alicloud.AlibabaCloudError) as err:
        api.describe_disks(instance_id="i-1")
    assert err.value.code == "EndpointUnreachable"
    assert "alicloud_endpoint" in err.value.message
