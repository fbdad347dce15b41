"""The VSS document contract and the vss_snapshot flow, with every request checked by botocore's Stubber."""

import datetime
import types
from unittest import mock

import pytest
from botocore.stub import ANY

from ansible_collections.appconsistent.snapshots.plugins.module_utils import vss
from ansible_collections.appconsistent.snapshots.plugins.module_utils.vss_runner import VssSnapshotRun
from ansible_collections.appconsistent.snapshots.plugins.modules.vss_snapshot import argument_spec

CMD = "5c1d2e3f-0a1b-4c2d-8e3f-9a0b1c2d3e4f"
UTC = datetime.timezone.utc


# --- parameters -----------------------------------------------------------------------------


def test_flags_are_the_strings_true_and_false():
    params = vss.build_parameters(exclude_boot_volume=True, writers=False, copy_only=True)
    assert params["ExcludeBootVolume"] == ["True"]
    assert params["NoWriters"] == ["True"]  # writers: false is NoWriters: True
    assert params["CopyOnly"] == ["True"]
    assert params["CreateAmi"] == ["False"]
    assert params["SaveVssMetadata"] == ["False"]
    assert "AmiName" not in params and "VssVersion" not in params


def test_tags_are_in_the_document_format():
    assert vss.format_tags({"a": "1", "appconsistent:set-id": "acs-1"}) == "Key=a,Value=1;Key=appconsistent:set-id,Value=acs-1"
    assert vss.format_tags({}) == ""


@pytest.mark.parametrize("key", ["AppConsistent", "Device", "AwsVssConfig", "device"])
def test_reserved_tags_are_refused(key):
    with pytest.raises(vss.VssParameterError, match="reserved"):
        vss.format_tags({key: "x"})


@pytest.mark.parametrize("value", ["a,b", "a;b", "50%", "x#y", "naïve"])
def test_characters_the_document_refuses_are_refused(value):
    with pytest.raises(vss.VssParameterError, match="accepts letters, digits"):
        vss.format_tags({"k": value})


def test_characters_the_document_accepts_pass():
    assert vss.format_tags({"k": "(a) b./\\-\"'@_+:={}"})


def test_optional_parameters():
    params = vss.build_parameters(create_ami=True, ami_name="golden", execution_timeout=120, install=True,
                                  vss_version="2.5.1", description="pre-patch")
    assert params["AmiName"] == ["golden"]
    assert params["executionTimeout"] == ["120"]
    assert params["VssVersion"] == ["2.5.1"]
    assert params["description"] == ["pre-patch"]


@pytest.mark.parametrize("kwargs, words", [
    (dict(exclude_boot_volume=True, create_ami=True, ami_name="x"), "cannot be used with create_ami"),
    (dict(writers=False, save_vss_metadata=True), "needs the VSS writers"),
    (dict(create_ami=True), "needs ami_name"),
    (dict(ami_name="x"), "only used with create_ami"),
    (dict(description="d" * 256), "longer than 255"),
    (dict(vss_version="2.5"), "only used with install_vss_components"),
    (dict(vss_version="latest", install=True), "not a version number"),
])
def test_combinations_the_document_refuses(kwargs, words):
    with pytest.raises(vss.VssParameterError, match=words):
        vss.build_parameters(**kwargs)


# --- the flow, against stubbed clients --------------------------------------------------------


def _params(**overrides):
    params = {}
    for name, spec in argument_spec().items():
        params[name] = spec.get("default")
    params.update(overrides)
    return params


class FakeModule:
    def __init__(self, params, clients, check_mode=False):
        self.params = params
        self.check_mode = check_mode
        self.clients = clients
        self.region = "us-east-1"

    def aws_client(self, service):
        return self.clients[service]

    def fail_json(self, **kwargs):
        raise AssertionError(kwargs)


@pytest.fixture
def stubbed(ec2, ssm):
    return types.SimpleNamespace(ec2=ec2[0], ssm=ssm[0], ec2_stub=ec2[1], ssm_stub=ssm[1])


def _instance(instance_id, platform="windows", state="running"):
    return {"InstanceId": instance_id, "Platform": platform, "State": {"Name": state}, "RootDeviceName": "/dev/sda1",
            "BlockDeviceMappings": [{"DeviceName": "/dev/sda1", "Ebs": {"VolumeId": f"vol-{instance_id[2:]}a"}},
                                    {"DeviceName": "xvdf", "Ebs": {"VolumeId": f"vol-{instance_id[2:]}b"}}]}


def _snapshot(snapshot_id, volume_id, app_consistent="true"):
    tags = [{"Key": "appconsistent:set-id", "Value": "batch"}]
    if app_consistent is not None:
        tags.append({"Key": "AppConsistent", "Value": app_consistent})
    return {"SnapshotId": snapshot_id, "VolumeId": volume_id, "State": "pending", "VolumeSize": 30, "Progress": "0%",
            "StartTime": datetime.datetime(2026, 11, 23, tzinfo=UTC), "Tags": tags}


def test_flow_requests_match_the_models(stubbed):
    ec2_stub, ssm_stub = stubbed.ec2_stub, stubbed.ssm_stub
    ec2_stub.add_response("describe_instances", {"Reservations": [{"Instances": [_instance("i-01"), _instance("i-02", "linux")]}]},
                          {"Filters": [{"Name": "instance-id", "Values": ["i-01", "i-02"]}]})
    ssm_stub.add_response("describe_instance_information", {"InstanceInformationList": [
        {"InstanceId": "i-01", "PingStatus": "Online"}, {"InstanceId": "i-02", "PingStatus": "Online"}]},
        {"Filters": [{"Key": "InstanceIds", "Values": ["i-01", "i-02"]}]})
    ssm_stub.add_response("send_command", {"Command": {"CommandId": CMD}}, {
        "DocumentName": "AWSEC2-CreateVssSnapshot", "InstanceIds": ["i-01"], "Parameters": ANY, "Comment": ANY,
        "TimeoutSeconds": 600, "MaxConcurrency": "50", "MaxErrors": "100%"})
    ssm_stub.add_response("list_command_invocations", {"CommandInvocations": [
        {"InstanceId": "i-01", "Status": "Success", "StatusDetails": "Success",
         "CommandPlugins": [{"Name": "CreateVssSnapshot", "ResponseCode": 0, "Output": "ok"}]}]},
        {"CommandId": CMD, "Details": True})
    ec2_stub.add_response("describe_snapshots", {"Snapshots": [_snapshot("snap-1", "vol-01a"), _snapshot("snap-2", "vol-01b")]},
                          {"OwnerIds": ["self"], "MaxResults": 1000, "Filters": ANY})
    ec2_stub.add_response("create_tags", {}, {"Resources": ["snap-1", "snap-2"], "Tags": ANY})
    ec2_stub.add_response("create_tags", {}, {"Resources": ["snap-1"], "Tags": [{"Key": "appconsistent:device", "Value": "/dev/sda1"}]})
    ec2_stub.add_response("create_tags", {}, {"Resources": ["snap-2"], "Tags": [{"Key": "appconsistent:device", "Value": "xvdf"}]})
    module = FakeModule(_params(instance_ids=["i-01", "i-02"]), {"ec2": stubbed.ec2, "ssm": stubbed.ssm})
    outcome = VssSnapshotRun(module, sleep=lambda s: None).run()
    results = {r["instance_id"]: r for r in outcome["results"]}
    assert (results["i-01"]["status"], results["i-01"]["consistency"]) == ("Success", "application")
    assert results["i-02"]["error"]["code"] == "WrongPlatform"
    assert [f["instance_id"] for f in outcome["failed_instances"]] == ["i-02"]


def test_sent_parameters_carry_the_set_tags(stubbed):
    ec2_stub, ssm_stub = stubbed.ec2_stub, stubbed.ssm_stub
    ec2_stub.add_response("describe_instances", {"Reservations": [{"Instances": [_instance("i-01")]}]}, None)
    ssm_stub.add_response("describe_instance_information",
                          {"InstanceInformationList": [{"InstanceId": "i-01", "PingStatus": "Online"}]}, None)
    ec2_stub.add_response("describe_snapshots", {"Snapshots": []},
                          {"OwnerIds": ["self"], "MaxResults": 1000,
                           "Filters": [{"Name": "tag:appconsistent:run-id", "Values": ["CHG-7"]}]})
    sent = {}

    def capture(params):
        sent.update(params)
    module = FakeModule(_params(instance_ids=["i-01"], run_id="CHG-7", delete_after="7d", tags={"team": "dba"},
                                wait=False), {"ec2": stubbed.ec2, "ssm": stubbed.ssm})
    with mock.patch("ansible_collections.appconsistent.snapshots.plugins.module_utils.ssm.send_command",
                    side_effect=lambda client, document, parameters, **kw: (capture(parameters), {"CommandId": CMD})[1]):
        outcome = VssSnapshotRun(module, sleep=lambda s: None).run()
    tags = dict(part.split(",Value=") for part in sent["tags"][0].replace("Key=", "").split(";"))
    assert tags["team"] == "dba"
    assert tags["appconsistent:run-id"] == "CHG-7"
    assert tags["appconsistent:set-id"].startswith("acs-")
    assert tags["appconsistent:delete-after"].endswith("Z")
    assert outcome["results"][0]["status"] == "InProgress"


def test_a_missing_appconsistent_tag_is_re_read_not_judged(stubbed):
    ec2_stub, ssm_stub = stubbed.ec2_stub, stubbed.ssm_stub
    ec2_stub.add_response("describe_instances", {"Reservations": [{"Instances": [_instance("i-01")]}]}, None)
    ssm_stub.add_response("describe_instance_information",
                          {"InstanceInformationList": [{"InstanceId": "i-01", "PingStatus": "Online"}]}, None)
    ssm_stub.add_response("send_command", {"Command": {"CommandId": CMD}}, None)
    ssm_stub.add_response("list_command_invocations", {"CommandInvocations": [
        {"InstanceId": "i-01", "Status": "Success", "CommandPlugins": [{"ResponseCode": 0}]}]}, None)
    late = [_snapshot("snap-1", "vol-01a", None), _snapshot("snap-2", "vol-01b", None)]
    ec2_stub.add_response("describe_snapshots", {"Snapshots": late}, None)
    ec2_stub.add_response("describe_snapshots", {"Snapshots": [_snapshot("snap-1", "vol-01a"), _snapshot("snap-2", "vol-01b", "True")]}, None)
    for _tag_call in range(3):
        ec2_stub.add_response("create_tags", {}, None)
    sleeps = []
    module = FakeModule(_params(instance_ids=["i-01"]), {"ec2": stubbed.ec2, "ssm": stubbed.ssm})
    outcome = VssSnapshotRun(module, sleep=sleeps.append).run()
    assert outcome["results"][0]["consistency"] == "application"
    assert len(sleeps) == 1


def test_check_mode_plans_without_sending(stubbed):
    ec2_stub, ssm_stub = stubbed.ec2_stub, stubbed.ssm_stub
    ec2_stub.add_response("describe_instances", {"Reservations": [{"Instances": [_instance("i-01")]}]}, None)
    ssm_stub.add_response("describe_instance_information",
                          {"InstanceInformationList": [{"InstanceId": "i-01", "PingStatus": "Online"}]}, None)
    module = FakeModule(_params(instance_ids=["i-01"], exclude_boot_volume=True), {"ec2": stubbed.ec2, "ssm": stubbed.ssm},
                        check_mode=True)
    outcome = VssSnapshotRun(module, sleep=lambda s: None).run()
    plan = outcome["results"][0]["plan"]
    assert outcome["changed"] is True
    assert plan["parameters"]["ExcludeBootVolume"] == ["True"]
    assert [v["volume_id"] for v in plan["volumes"]] == ["vol-01b"]


@pytest.mark.parametrize("on_fallback", ["fail", "warn"])
def test_a_set_missing_a_captured_volume_is_not_application_and_fails_as_incomplete(stubbed, on_fallback):
    # Issue 18 line 6: the VSS run was to capture both volumes, only one snapshot appeared within the evidence wait.
    ec2_stub, ssm_stub = stubbed.ec2_stub, stubbed.ssm_stub
    ec2_stub.add_response("describe_instances", {"Reservations": [{"Instances": [_instance("i-01")]}]}, None)
    ssm_stub.add_response("describe_instance_information",
                          {"InstanceInformationList": [{"InstanceId": "i-01", "PingStatus": "Online"}]}, None)
    ssm_stub.add_response("send_command", {"Command": {"CommandId": CMD}}, None)
    ssm_stub.add_response("list_command_invocations", {"CommandInvocations": [
        {"InstanceId": "i-01", "Status": "Success", "CommandPlugins": [{"ResponseCode": 0}]}]}, None)
    now = [0.0]

    def sleep(seconds):
        now[0] += seconds
    # Re-read until the evidence wait has passed: 1 + 2 + 4 + 8 + 10 * 8 seconds of sleeps, then a last read.
    for _read in range(13):
        ec2_stub.add_response("describe_snapshots", {"Snapshots": [_snapshot("snap-1", "vol-01a")]}, None)
    ec2_stub.add_response("create_tags", {}, {"Resources": ["snap-1"], "Tags": ANY})
    ec2_stub.add_response("create_tags", {}, {"Resources": ["snap-1"], "Tags": [{"Key": "appconsistent:device",
                                                                                 "Value": "/dev/sda1"}]})
    module = FakeModule(_params(instance_ids=["i-01"], on_fallback=on_fallback), {"ec2": stubbed.ec2, "ssm": stubbed.ssm})
    outcome = VssSnapshotRun(module, sleep=sleep, clock=lambda: now[0]).run()
    result = outcome["results"][0]
    assert result["consistency"] == "crash"
    assert result["error"]["code"] == "IncompleteSet"
    assert "vol-01b" in result["error"]["message"]
    assert [f["instance_id"] for f in outcome["failed_instances"]] == ["i-01"]
    written = result["snapshots"][0]["tags"]
    assert written["appconsistent:consistency"] == "crash"
    assert written["appconsistent:members"] == "2"


def test_a_rerun_that_finds_an_incomplete_set_of_its_run_id_fails_instead_of_reporting_it_as_a_backup(stubbed):
    ec2_stub, ssm_stub = stubbed.ec2_stub, stubbed.ssm_stub
    ec2_stub.add_response("describe_instances", {"Reservations": [{"Instances": [_instance("i-01")]}]}, None)
    ssm_stub.add_response("describe_instance_information",
                          {"InstanceInformationList": [{"InstanceId": "i-01", "PingStatus": "Online"}]}, None)
    earlier = _snapshot("snap-1", "vol-01a")
    earlier["Tags"] = [{"Key": k, "Value": v} for k, v in {
        "appconsistent:set-id": "acs-20261123t060000-1a2b3c4d", "appconsistent:instance-id": "i-01",
        "appconsistent:consistency": "crash", "appconsistent:run-id": "CHG-7", "appconsistent:members": "2"}.items()]
    ec2_stub.add_response("describe_snapshots", {"Snapshots": [earlier]}, None)
    module = FakeModule(_params(instance_ids=["i-01"], run_id="CHG-7", on_fallback="warn"),
                        {"ec2": stubbed.ec2, "ssm": stubbed.ssm})
    outcome = VssSnapshotRun(module, sleep=lambda s: None).run()
    result = outcome["results"][0]
    assert result["status"] == "Existing" and result["error"]["code"] == "IncompleteSet"
    assert "only 1 of its 2 snapshots exist" in result["error"]["message"]
    assert [f["instance_id"] for f in outcome["failed_instances"]] == ["i-01"]
