"""The AWS twin's request buckets and EBS quotas, seen through boto3: answers, shared buckets, quotas, the off switch."""

import json
import time
import urllib.request

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.retries.standard import RetryContext, ThrottledRetryableChecker

from twin.aws.testing import tags_of, wait_command, wait_for
from twin.tests.test_aws_helper import initiator_cmd, send

VOLUMES = [{"device": "/dev/xvda", "size": 8, "boot": True}, {"device": "/dev/xvdf", "size": 10, "type": "gp3"},
           {"device": "/dev/xvdg", "size": 500, "type": "st1"}]
FLEET = {"instances": [
    {"provider": "aws", "name": "lin-1", "platform": "linux", "volumes": VOLUMES},
    {"provider": "aws", "name": "lin-2", "platform": "linux",
     "volumes": [VOLUMES[0], dict(VOLUMES[1], mount="/srv/db")]},
    {"provider": "aws", "name": "sql-1", "platform": "windows",
     "volumes": [{"device": "/dev/sda1", "size": 30, "boot": True}, {"device": "xvdf", "size": 100}]},
]}
# the instance-side SDKs' backoff, shortened so that a throttled agent gives up quickly
FAST_RETRY = {"attempts": 3, "base": 0.01}


def bucket(capacity, refill=0):
    return {"capacity": capacity, "refill": refill}


def start(twin_factory, limits, **kwargs):
    twins = twin_factory(FLEET, alicloud=False, limits=limits, **kwargs)
    return twins, twins.aws_client("ec2"), twins.aws_client("ssm"), twins.aws.instances


def throttled(call, **kwargs):
    with pytest.raises(ClientError) as err:
        call(**kwargs)
    return err.value.response


def control(twins, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(twins.aws.url + path, data=data, method="POST" if data else "GET",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def test_an_empty_bucket_answers_as_ec2_does(twin_factory):
    twins, ec2, _ssm, ids = start(twin_factory, {"profile": "none", "CreateTags": bucket(2)})
    for n in range(2):
        ec2.create_tags(Resources=[ids["lin-1"]], Tags=[{"Key": "n", "Value": str(n)}])
    before = time.time()
    response = throttled(ec2.create_tags, Resources=[ids["lin-1"]], Tags=[{"Key": "n", "Value": "x"}])
    assert response["Error"]["Code"] == "RequestLimitExceeded"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 503
    # botocore reads it as a throttling error, which its retry modes back off from
    assert ThrottledRetryableChecker().is_retryable(RetryContext(attempt_number=1, parsed_response=response))
    ec2.delete_tags(Resources=[ids["lin-1"]], Tags=[{"Key": "n"}])  # another API, another bucket
    assert twins.stats.throttled("aws") == {"CreateTags": 1}
    (event,) = twins.stats.throttle_log("aws")
    assert event["action"] == "CreateTags" and event["code"] == "RequestLimitExceeded" and before <= event["at"] <= time.time()
    stats = control(twins, "/_twin/stats")
    assert stats["throttled"] == {"aws": {"CreateTags": 1}} and stats["counts"]["aws"]["CreateTags"] == 3
    assert control(twins, "/_twin/stats/throttles")[0]["action"] == "CreateTags"
    (state,) = control(twins, "/_twin/limits")["buckets"]
    assert (state["api"], state["capacity"], state["tokens"]) == ("CreateTags", 2, 0)


def test_describes_without_filter_or_pagination_spend_the_smaller_bucket(twin_factory):
    # the published numbers with the small bucket's refill stopped, so that a slow machine sees the same
    twins, ec2, _ssm, _ids = start(twin_factory, {"profile": "published", "DescribeVolumes/unfiltered": bucket(3)})
    for _n in range(3):
        ec2.describe_volumes()
    assert throttled(ec2.describe_volumes)["Error"]["Code"] == "RequestLimitExceeded"
    filtered = ec2.describe_volumes(Filters=[{"Name": "size", "Values": ["10"]}])["Volumes"]
    assert len(filtered) == 2
    assert ec2.describe_volumes(MaxResults=5)["Volumes"]
    assert ec2.describe_snapshots(OwnerIds=["self"]) is not None  # DescribeSnapshots has buckets of its own
    assert twins.stats.throttled("aws") == {"DescribeVolumes": 1}


def test_ssm_answers_throttling_exception(twin_factory):
    twins, _ec2, ssm, _ids = start(twin_factory, {"profile": "none", "DescribeInstanceInformation": bucket(1)})
    ssm.describe_instance_information()
    response = throttled(ssm.describe_instance_information)
    assert (response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]) == ("ThrottlingException", 400)
    assert ThrottledRetryableChecker().is_retryable(RetryContext(attempt_number=1, parsed_response=response))
    assert twins.stats.throttled("aws") == {"DescribeInstanceInformation": 1}


def _vss(ssm, iid):
    command_id = ssm.send_command(InstanceIds=[iid], DocumentName="AWSEC2-CreateVssSnapshot",
                                  Parameters={"ExcludeBootVolume": ["False"]})["Command"]["CommandId"]
    inv = wait_command(ssm, command_id)[iid]
    return inv, ssm.get_command_invocation(CommandId=command_id, InstanceId=iid)


def test_the_vss_agent_spends_the_accounts_create_snapshots_bucket(twin_factory):
    twins, ec2, ssm, ids = start(twin_factory, {"profile": "none", "CreateSnapshots": bucket(2), "retry": FAST_RETRY})
    ec2.create_snapshots(InstanceSpecification={"InstanceId": ids["lin-2"]})
    inv, _got = _vss(ssm, ids["sql-1"])
    assert inv["Status"] == "Success"
    # the agent took the second token: the controller finds the bucket empty
    assert throttled(ec2.create_snapshots, InstanceSpecification={"InstanceId": ids["lin-2"]})["Error"]["Code"] == \
        "RequestLimitExceeded"
    # an agent that finds it empty retries as the SDK does, then fails the command without snapshots
    count = len(ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"])
    inv, got = _vss(ssm, ids["sql-1"])
    assert (inv["Status"], got["ResponseCode"]) == ("Failed", 1)
    assert "RequestLimitExceeded" in got["StandardErrorContent"]
    assert len(ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]) == count
    assert twins.stats.throttled("aws-instance-role") == {"CreateSnapshots": 3}
    assert twins.stats.counts("aws-instance-role")["CreateSnapshots"] == 4
    assert twins.stats.throttled("aws") == {"CreateSnapshots": 1}


def test_vss_evidence_tags_spend_the_create_tags_bucket(twin_factory):
    twins, ec2, ssm, ids = start(twin_factory, {"profile": "none", "CreateTags": bucket(0), "retry": FAST_RETRY})
    inv, _got = _vss(ssm, ids["sql-1"])
    assert inv["Status"] == "Success"
    wait_for(lambda: twins.stats.throttled("aws-instance-role").get("CreateTags") == 3, what="the agent's tag retries")
    snaps = ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]
    assert len(snaps) == 2 and all("AppConsistent" not in tags_of(s) for s in snaps)


def test_the_freeze_helpers_own_create_snapshots_spends_the_same_bucket(twin_factory):
    twins, ec2, ssm, ids = start(twin_factory, {"profile": "none", "CreateSnapshots": bucket(1)})
    inv, _got, report = send(ssm, ids["lin-2"], initiator_cmd("limits-1", mounts=("/srv/db",)))
    assert (inv["Status"], report["status"], report["command"]["exit_code"]) == ("Success", "ok", 0)
    assert throttled(ec2.create_snapshots, InstanceSpecification={"InstanceId": ids["lin-1"]})["Error"]["Code"] == \
        "RequestLimitExceeded"


def test_pending_snapshots_per_volume_are_bounded_by_volume_type(twin_factory):
    twins, ec2, _ssm, ids = start(twin_factory, "none",
                                  latency={"profile": "zero", "transitions": {"snapshot_complete": 600}})
    vols = {v["Attachments"][0]["Device"]: v["VolumeId"]
            for v in ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [ids["lin-1"]]}])["Volumes"]}
    for _n in range(5):
        ec2.create_snapshot(VolumeId=vols["/dev/xvdf"])
    response = throttled(ec2.create_snapshot, VolumeId=vols["/dev/xvdf"])
    assert response["Error"]["Code"] == "ConcurrentSnapshotLimitExceeded"
    ec2.create_snapshot(VolumeId=vols["/dev/xvdg"])  # st1: one pending snapshot at a time
    assert throttled(ec2.create_snapshot, VolumeId=vols["/dev/xvdg"])["Error"]["Code"] == "ConcurrentSnapshotLimitExceeded"
    # CreateSnapshots of an instance with one volume at its limit makes none
    count = len(ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"])
    assert throttled(ec2.create_snapshots, InstanceSpecification={"InstanceId": ids["lin-1"]})["Error"]["Code"] == \
        "ConcurrentSnapshotLimitExceeded"
    assert len(ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]) == count
    # the fault lowers it for every volume
    twins.faults.update({"pending_snapshot_limit": 1})
    ec2.create_snapshots(InstanceSpecification={"InstanceId": ids["lin-2"]})
    assert throttled(ec2.create_snapshots, InstanceSpecification={"InstanceId": ids["lin-2"]})["Error"]["Code"] == \
        "ConcurrentSnapshotLimitExceeded"


def test_pending_snapshots_stop_counting_once_completed(twin_factory):
    twins, ec2, _ssm, ids = start(twin_factory, "none", latency={"profile": "zero", "transitions": {"snapshot_complete": 0.3}})
    volume = ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [ids["lin-1"]]},
                                           {"Name": "attachment.device", "Values": ["/dev/xvdg"]}])["Volumes"][0]["VolumeId"]
    first = ec2.create_snapshot(VolumeId=volume)["SnapshotId"]
    wait_for(lambda: ec2.describe_snapshots(SnapshotIds=[first])["Snapshots"][0]["State"] == "completed")
    ec2.create_snapshot(VolumeId=volume)


def test_twenty_concurrent_copies_per_destination_region(twin_factory):
    twins, ec2, _ssm, ids = start(twin_factory, "none",
                                  latency={"profile": "zero", "transitions": {"snapshot_complete": 600}})
    snap_id = ec2.create_snapshot(VolumeId=ec2.describe_volumes()["Volumes"][0]["VolumeId"])["SnapshotId"]
    ep = twins.endpoints["aws"]
    dest = boto3.client("ec2", endpoint_url=ep["endpoint_url"], region_name="eu-west-1", aws_access_key_id=ep["access_key_id"],
                        aws_secret_access_key=ep["secret_access_key"], config=Config(retries={"total_max_attempts": 1}))
    for _n in range(20):
        dest.copy_snapshot(SourceRegion=twins.aws.region, SourceSnapshotId=snap_id)
    response = throttled(dest.copy_snapshot, SourceRegion=twins.aws.region, SourceSnapshotId=snap_id)
    assert response["Error"]["Code"] == "ResourceLimitExceeded"


def test_limits_none_throttles_nothing(twin_factory):
    twins = twin_factory(FLEET, alicloud=False)  # the fast suite's zero latency: no buckets
    ec2, ssm, ids = twins.aws_client("ec2"), twins.aws_client("ssm"), twins.aws.instances
    assert twins.limits.profile == "none"
    for _n in range(10):  # StartInstances publishes 5 tokens
        ec2.start_instances(InstanceIds=[ids["lin-1"]])
    for _n in range(25):  # the twin's SSM default is 20
        ssm.describe_instance_information()
    assert twins.stats.throttled() == {} and control(twins, "/_twin/limits")["buckets"] == []
    # a fault can still add a bucket at runtime
    twins.faults.update({"limits": {"StartInstances": bucket(1)}})
    ec2.start_instances(InstanceIds=[ids["lin-1"]])
    assert throttled(ec2.start_instances, InstanceIds=[ids["lin-1"]])["Error"]["Code"] == "RequestLimitExceeded"


def test_the_fleet_file_and_the_latency_profile_choose_the_limits(twin_factory):
    twins = twin_factory(dict(FLEET, limits={"CreateTags": bucket(7, 1)}), alicloud=False)
    assert twins.limits.profile == "published" and twins.limits.overrides == {"CreateTags": (7.0, 1.0)}
    realistic = twin_factory(FLEET, alicloud=False, latency={"profile": "realistic", "scale": 0.01})
    assert realistic.limits.profile == "published"
    control(realistic, "/_twin/limits", "none")
    assert realistic.limits.profile == "none"


def test_a_competing_consumer_spends_the_refill(twin_factory):
    twins, ec2, _ssm, ids = start(twin_factory, {"profile": "none", "CreateTags": bucket(1, 4)})
    tag = {"Resources": [ids["lin-1"]], "Tags": [{"Key": "k", "Value": "v"}]}
    twins.faults.update({"competing": {"CreateTags": 4}})
    ec2.create_tags(**tag)
    time.sleep(0.5)
    # the other tool spends every token the refill brings
    assert throttled(ec2.create_tags, **tag)["Error"]["Code"] == "RequestLimitExceeded"
    twins.faults.update({"competing": None})
    throttled(ec2.create_tags, **tag)
    time.sleep(0.5)
    ec2.create_tags(**tag)
