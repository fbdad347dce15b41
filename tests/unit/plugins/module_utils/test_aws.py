"""EC2 and SSM wrappers: every request checked against botocore's own service model with Stubber."""

import datetime
import threading
from unittest import mock

import botocore.exceptions
import pytest
from botocore.stub import ANY

from ansible_collections.appconsistent.snapshots.plugins.module_utils import aws

UTC = datetime.timezone.utc
CMD = "0c6a8d1e-6a51-4c6f-9d3c-2b7f0a9e4d21"  # command ids are 36-character UUIDs


# AWSRetry sleeps between attempts; the tests only care about the attempts.
pytestmark = pytest.mark.usefixtures("no_sleep")


def _snapshot(snapshot_id, volume_id="vol-1", state="completed", tags=None):
    return {"SnapshotId": snapshot_id, "VolumeId": volume_id, "State": state, "VolumeSize": 8,
            "StartTime": datetime.datetime(2026, 11, 23, tzinfo=UTC), "Progress": "100%", "OwnerId": "123456789012",
            "Description": "", "Encrypted": False, "Tags": [{"Key": k, "Value": v} for k, v in (tags or {}).items()]}


def test_describe_snapshots_is_owner_self_paginated_and_tag_filtered(ec2):
    client, stub = ec2
    filters = [{"Name": "tag:appconsistent:set-id", "Values": ["acs-1"]}]
    stub.add_response("describe_snapshots", {"Snapshots": [_snapshot("snap-1")], "NextToken": "t1"},
                      {"OwnerIds": ["self"], "MaxResults": 1000, "Filters": filters})
    stub.add_response("describe_snapshots", {"Snapshots": [_snapshot("snap-2")]},
                      {"OwnerIds": ["self"], "MaxResults": 1000, "Filters": filters, "NextToken": "t1"})
    found = aws.describe_snapshots(client, filters=filters)
    assert [s["SnapshotId"] for s in found] == ["snap-1", "snap-2"]


def test_describe_snapshots_by_id_does_not_send_max_results(ec2):
    # The API refuses MaxResults together with SnapshotIds.
    client, stub = ec2
    stub.add_response("describe_snapshots", {"Snapshots": [_snapshot("snap-1")]},
                      {"OwnerIds": ["self"], "SnapshotIds": ["snap-1"]})
    assert aws.describe_snapshots(client, snapshot_ids=["snap-1"])[0]["SnapshotId"] == "snap-1"


def test_create_snapshots_request_shape(ec2):
    client, stub = ec2
    expected = {
        "InstanceSpecification": {"InstanceId": "i-1", "ExcludeBootVolume": True, "ExcludeDataVolumeIds": ["vol-9"]},
        "Description": "pre-patch",
        "TagSpecifications": [{"ResourceType": "snapshot", "Tags": [{"Key": "appconsistent:set-id", "Value": "acs-1"}]}],
        "CopyTagsFromSource": "volume",
    }
    stub.add_response("create_snapshots", {"Snapshots": [{"SnapshotId": "snap-1", "VolumeId": "vol-1"}]}, expected)
    result = aws.create_snapshots(client, "i-1", exclude_boot_volume=True, exclude_data_volume_ids=["vol-9"],
                                  description="pre-patch", tags={"appconsistent:set-id": "acs-1"},
                                  copy_tags_from_source=True)
    assert result == [{"SnapshotId": "snap-1", "VolumeId": "vol-1"}]


def test_throttling_is_retried(ec2, no_sleep):
    client, stub = ec2
    stub.add_client_error("describe_volumes", service_error_code="RequestLimitExceeded", http_status_code=503)
    stub.add_client_error("describe_volumes", service_error_code="Throttling", http_status_code=400)
    stub.add_response("describe_volumes", {"Volumes": [{"VolumeId": "vol-1"}]}, {"VolumeIds": ["vol-1"]})
    assert aws.describe_volumes(client, volume_ids=["vol-1"]) == [{"VolumeId": "vol-1"}]
    assert no_sleep.call_count == 2


def test_ssm_throttling_exception_is_retried(ssm, no_sleep):
    client, stub = ssm
    stub.add_client_error("list_command_invocations", service_error_code="ThrottlingException", http_status_code=400)
    stub.add_response("list_command_invocations", {"CommandInvocations": [{"InstanceId": "i-1", "Status": "Success"}]},
                      {"CommandId": CMD, "Details": True})
    result = aws.list_command_invocations(client, CMD)
    assert result == [{"InstanceId": "i-1", "Status": "Success"}]
    assert no_sleep.call_count == 1


def test_a_request_is_tried_as_often_as_the_task_says(ec2, no_sleep):
    client, stub = ec2
    aws.with_max_attempts(client, 2)
    stub.add_client_error("delete_volume", service_error_code="RequestLimitExceeded", http_status_code=503)
    stub.add_client_error("delete_volume", service_error_code="RequestLimitExceeded", http_status_code=503)
    with pytest.raises(aws.AppConsistentAWSError) as err:
        aws.delete_volume(client, "vol-1")
    assert aws.error_code(err.value) == "RequestLimitExceeded"
    assert no_sleep.call_count == 1


def test_a_throttled_page_is_retried_without_reading_the_listing_again(ec2, no_sleep):
    client, stub = ec2
    stub.add_response("describe_volumes", {"Volumes": [{"VolumeId": "vol-1"}], "NextToken": "t1"}, {})
    stub.add_client_error("describe_volumes", service_error_code="RequestLimitExceeded", http_status_code=503)
    stub.add_response("describe_volumes", {"Volumes": [{"VolumeId": "vol-2"}]}, {"NextToken": "t1"})
    assert [v["VolumeId"] for v in aws.describe_volumes(client)] == ["vol-1", "vol-2"]
    assert no_sleep.call_count == 1


def test_every_request_names_its_operation_where_it_is_made(ec2):
    client, stub = ec2
    stub.add_response("delete_snapshot", {}, {"SnapshotId": "snap-1"})
    with mock.patch.object(aws, "retry_policy", wraps=aws.retry_policy) as policy:
        aws.delete_snapshot(client, "snap-1")
    assert policy.call_args.args[0] == "DeleteSnapshot"


def _max_sleeps(call):
    """Run ``call`` with jitter pinned to its upper bound and return the sleeps requested."""
    with mock.patch("random.uniform", side_effect=lambda low, high: high), mock.patch("time.sleep") as sleeper:
        call()
    return [c.args[0] for c in sleeper.call_args_list]


def test_snapshot_rate_error_gets_a_longer_backoff(ec2):
    client, stub = ec2
    stub.add_client_error("create_snapshots", service_error_code="SnapshotCreationPerVolumeRateExceeded", http_status_code=400)
    stub.add_response("create_snapshots", {"Snapshots": []}, {"InstanceSpecification": {"InstanceId": "i-1", "ExcludeBootVolume": False}})
    stub.add_client_error("describe_volumes", service_error_code="RequestLimitExceeded", http_status_code=503)
    stub.add_response("describe_volumes", {"Volumes": []}, {})
    snapshot_sleeps = _max_sleeps(lambda: aws.create_snapshots(client, "i-1"))
    throttle_sleeps = _max_sleeps(lambda: aws.describe_volumes(client))
    assert len(snapshot_sleeps) == 1 and len(throttle_sleeps) == 1
    assert snapshot_sleeps[0] >= 15 > throttle_sleeps[0]


def test_snapshot_rate_error_is_not_retried_elsewhere(ec2):
    client, stub = ec2
    stub.add_client_error("create_tags", service_error_code="SnapshotCreationPerVolumeRateExceeded", http_status_code=400)
    with pytest.raises(aws.AppConsistentAWSError) as err:
        aws.create_tags(client, ["snap-1"], {"k": "v"})
    assert "Failed to tag resources" in str(err.value.message)


def test_other_errors_raise_with_the_action(ec2):
    client, stub = ec2
    stub.add_client_error("create_snapshots", service_error_code="InvalidInstanceID.NotFound", http_status_code=400)
    with pytest.raises(aws.AppConsistentAWSError) as err:
        aws.create_snapshots(client, "i-missing")
    assert err.value.message == "Failed to create snapshots"
    assert err.value.exception.response["Error"]["Code"] == "InvalidInstanceID.NotFound"


def test_delete_of_a_missing_snapshot_is_no_change(ec2):
    client, stub = ec2
    stub.add_client_error("delete_snapshot", service_error_code="InvalidSnapshot.NotFound", http_status_code=400)
    stub.add_response("delete_snapshot", {}, {"SnapshotId": "snap-2"})
    assert aws.delete_snapshot(client, "snap-1") is False
    assert aws.delete_snapshot(client, "snap-2") is True


def test_describe_instances_flattens_reservations(ec2):
    client, stub = ec2
    stub.add_response("describe_instances", {"Reservations": [{"Instances": [{"InstanceId": "i-1"}, {"InstanceId": "i-2"}]},
                                                              {"Instances": [{"InstanceId": "i-3"}]}]},
                      {"InstanceIds": ["i-1", "i-2", "i-3"]})
    assert [i["InstanceId"] for i in aws.describe_instances(client, ["i-1", "i-2", "i-3"])] == ["i-1", "i-2", "i-3"]


def test_send_command_with_instance_ids(ssm):
    client, stub = ssm
    params = {"ExcludeBootVolume": ["False"], "tags": ["Key=appconsistent:set-id,Value=acs-1"]}
    stub.add_response("send_command", {"Command": {"CommandId": CMD, "Status": "Pending"}},
                      {"DocumentName": "AWSEC2-CreateVssSnapshot", "Parameters": params, "InstanceIds": ["i-1", "i-2"],
                       "Comment": "appconsistent", "TimeoutSeconds": 600, "MaxConcurrency": "10", "MaxErrors": "0"})
    command = aws.send_command(client, "AWSEC2-CreateVssSnapshot", params, instance_ids=["i-1", "i-2"],
                               comment="appconsistent", timeout_seconds=600, max_concurrency=10, max_errors=0)
    assert command["CommandId"] == CMD


def test_send_command_with_targets(ssm):
    client, stub = ssm
    targets = [{"Key": "tag:backup", "Values": ["daily"]}]
    stub.add_response("send_command", {"Command": {"CommandId": CMD}},
                      {"DocumentName": "AWS-RunShellScript", "Parameters": {"commands": ["true"]}, "Targets": targets})
    assert aws.send_command(client, "AWS-RunShellScript", {"commands": ["true"]}, targets=targets)["CommandId"] == CMD


def test_send_command_refuses_more_than_50_instances(ssm):
    client, _stub = ssm
    with pytest.raises(ValueError, match="at most 50"):
        aws.send_command(client, "AWS-RunShellScript", {"commands": ["true"]}, instance_ids=[f"i-{n}" for n in range(51)])


def test_describe_instance_information_chunks_the_filter(ssm, monkeypatch):
    client, stub = ssm
    # The Stubber answers in the order it was given; chunks read side by side would ask in any order
    # (in_chunks' own test covers the side by side reading).
    monkeypatch.setattr(aws, "READ_WORKERS", 1)
    ids = [f"i-{n:017x}" for n in range(60)]
    stub.add_response("describe_instance_information", {"InstanceInformationList": [{"InstanceId": ids[0], "PingStatus": "Online"}]},
                      {"Filters": [{"Key": "InstanceIds", "Values": ids[:50]}]})
    stub.add_response("describe_instance_information", {"InstanceInformationList": [{"InstanceId": ids[55], "PingStatus": "ConnectionLost"}]},
                      {"Filters": [{"Key": "InstanceIds", "Values": ids[50:]}]})
    found = aws.describe_instance_information(client, ids)
    assert [(i["InstanceId"], i["PingStatus"]) for i in found] == [(ids[0], "Online"), (ids[55], "ConnectionLost")]


def test_list_command_invocations_paginates(ssm):
    client, stub = ssm
    stub.add_response("list_command_invocations", {"CommandInvocations": [{"InstanceId": "i-1"}], "NextToken": "n"},
                      {"CommandId": CMD, "Details": True})
    stub.add_response("list_command_invocations", {"CommandInvocations": [{"InstanceId": "i-2"}]},
                      {"CommandId": CMD, "Details": True, "NextToken": "n"})
    assert [i["InstanceId"] for i in aws.list_command_invocations(client, CMD)] == ["i-1", "i-2"]


def test_cancel_command(ssm):
    client, stub = ssm
    stub.add_response("cancel_command", {}, {"CommandId": CMD, "InstanceIds": ["i-1"]})
    assert aws.cancel_command(client, CMD, ["i-1"]) is True


@pytest.mark.parametrize("exc, words", [
    (botocore.exceptions.NoCredentialsError(), "No AWS credentials found"),
    (botocore.exceptions.NoRegionError(), "No AWS region"),
    (botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), "Cannot reach the AWS endpoint"),
    (botocore.exceptions.ClientError({"Error": {"Code": "AuthFailure", "Message": "x"}}, "DescribeInstances"),
     "AWS rejected the credentials (AuthFailure)"),
    # SSM (a JSON-protocol API) answers a wrong secret so, not with EC2's AuthFailure
    (botocore.exceptions.ClientError({"Error": {"Code": "InvalidSignatureException", "Message": "x"}}, "SendCommand"),
     "AWS rejected the credentials (InvalidSignatureException)"),
])
def test_connection_failures_have_one_plain_sentence(exc, words):
    assert words in aws.describe_aws_failure(exc)


def test_request_errors_are_not_called_connection_failures():
    exc = botocore.exceptions.ClientError({"Error": {"Code": "InvalidParameterValue", "Message": "x"}}, "CreateSnapshots")
    assert aws.describe_aws_failure(exc) is None


def test_stubbed_params_are_checked_against_the_model(ec2):
    # A parameter that the EC2 model does not know must fail before anything is sent.
    client, stub = ec2
    stub.add_response("create_tags", {}, {"Resources": ANY, "Tags": ANY})
    with pytest.raises(botocore.exceptions.ParamValidationError):
        client.create_tags(Resources=["snap-1"], Tags=[{"Key": 7, "Value": "v"}])
    assert aws.create_tags(client, ["snap-1"], {"k": "v"}) is True


class TagRecorder:
    """An EC2 client that records CreateTags calls (from any thread) and refuses the resources in ``refuse``."""

    def __init__(self, refuse=()):
        self.calls = []
        self.refuse = set(refuse)

    def create_tags(self, Resources, Tags):  # pylint: disable=invalid-name
        self.calls.append((tuple(Resources), tuple((t["Key"], t["Value"]) for t in Tags)))
        if self.refuse & set(Resources):
            raise botocore.exceptions.ClientError({"Error": {"Code": "InvalidSnapshot.Malformed", "Message": "no"}},
                                                  "CreateTags")


def test_tag_batch_writes_one_call_per_distinct_tag_set():
    client = TagRecorder()
    batch = aws.TagBatch()
    for n in range(3):  # three sets: each its own set tags, two devices shared by all
        batch.add([f"snap-{n}a", f"snap-{n}b"], {"appconsistent:set-id": f"acs-{n}", "appconsistent:consistency": "application"})
        batch.add([f"snap-{n}a"], {"appconsistent:device": "/dev/sda1"})
        batch.add([f"snap-{n}b"], {"appconsistent:device": "xvdf"})
    batch.flush(client)
    batch.flush(client)  # flushed once: nothing left to write
    set_tags = [(("appconsistent:consistency", "application"), ("appconsistent:set-id", f"acs-{n}")) for n in range(3)]
    expected = [((f"snap-{n}a", f"snap-{n}b"), set_tags[n]) for n in range(3)]
    expected += [(("snap-0a", "snap-1a", "snap-2a"), (("appconsistent:device", "/dev/sda1"),)),
                 (("snap-0b", "snap-1b", "snap-2b"), (("appconsistent:device", "xvdf"),))]
    assert sorted(client.calls) == sorted(expected)


def test_tag_batch_tries_every_call_and_raises_the_error():
    client = TagRecorder(refuse={"snap-7"})
    batch = aws.TagBatch()
    for n in range(20):  # a VSS fleet: one tag set per instance, more calls than are made one by one
        batch.add([f"snap-{n}"], {"appconsistent:set-id": f"acs-{n}"})
    with pytest.raises(aws.AppConsistentAWSError):
        batch.flush(client)
    assert sorted(resources for resources, _tags in client.calls) == sorted((f"snap-{n}",) for n in range(20))


def test_tag_batch_splits_large_groups(ec2):
    client, stub = ec2
    ids = [f"snap-{n:05d}" for n in range(aws.CREATE_TAGS_BATCH + 3)]
    batch = aws.TagBatch()
    batch.add(ids, {"appconsistent:consistency": "filesystem"})
    tags = [{"Key": "appconsistent:consistency", "Value": "filesystem"}]
    stub.add_response("create_tags", {}, {"Resources": ids[:aws.CREATE_TAGS_BATCH], "Tags": tags})
    stub.add_response("create_tags", {}, {"Resources": ids[aws.CREATE_TAGS_BATCH:], "Tags": tags})
    batch.flush(client)


def test_in_chunks_reads_chunks_side_by_side_and_keeps_the_order():
    both_in_flight = threading.Barrier(2, timeout=3)  # the first two chunks must be read at the same time

    def read(chunk):
        if chunk[0] in (0, 10):
            both_in_flight.wait()
        return [n * 2 for n in chunk]

    assert aws.in_chunks(read, range(35), 10) == [n * 2 for n in range(35)]
    assert aws.in_chunks(read, [], 10) == []
