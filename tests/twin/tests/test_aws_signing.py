"""The AWS twin authenticates every API request with SigV4 as AWS does (moto alone accepts any secret).

A wrong secret or an unknown key is answered in each service's own words (EC2 AuthFailure, SSM
InvalidSignatureException / UnrecognizedClientException, IAM and STS SignatureDoesNotMatch / InvalidClientTokenId);
the SDK's own requests, the instances' (SSM agent, VSS agent, freeze helper) and the control API keep working.
"""

import datetime
import time
import urllib.error
import urllib.request

import boto3
import botocore.auth
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from twin.aws.testing import wait_command

FLEET = {"instances": [
    {"provider": "aws", "name": "lin-1", "platform": "linux",
     "volumes": [{"device": "/dev/xvda", "size": 8, "boot": True}, {"device": "/dev/xvdf", "size": 10}]},
    {"provider": "aws", "name": "win-1", "platform": "windows", "volumes": [{"device": "/dev/sda1", "size": 30, "boot": True}]},
]}
CALLS = {"ec2": "describe_instances", "ssm": "describe_instance_information", "sts": "get_caller_identity",
         "iam": "list_roles"}
ANSWERS = {  # service: ((code, HTTP status) for a wrong secret, for an unknown access key)
    "ec2": (("AuthFailure", 401), ("AuthFailure", 401)),
    "ssm": (("InvalidSignatureException", 400), ("UnrecognizedClientException", 400)),
    "sts": (("SignatureDoesNotMatch", 403), ("InvalidClientTokenId", 403)),
    "iam": (("SignatureDoesNotMatch", 403), ("InvalidClientTokenId", 403)),
}


@pytest.fixture
def aws(twin_factory):
    return twin_factory(FLEET, alicloud=False)


def client(twins, service, **credentials):
    ep = twins.endpoints["aws"]
    args = dict(aws_access_key_id=ep["access_key_id"], aws_secret_access_key=ep["secret_access_key"])
    args.update(credentials)
    return boto3.client(service, endpoint_url=ep["endpoint_url"], region_name=ep["region"],
                        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}), **args)


def rejected(call):
    with pytest.raises(ClientError) as err:
        call()
    return err.value.response["Error"]["Code"], err.value.response["ResponseMetadata"]["HTTPStatusCode"]


@pytest.mark.parametrize("service", sorted(CALLS))
def test_a_wrong_secret_or_an_unknown_key_is_answered_as_the_service_answers_it(aws, service):
    getattr(client(aws, service), CALLS[service])()  # the account's own key is accepted
    wrong_secret, unknown_key = ANSWERS[service]
    assert rejected(getattr(client(aws, service, aws_secret_access_key="not-the-secret"), CALLS[service])) == wrong_secret
    assert rejected(getattr(client(aws, service, aws_access_key_id="AKIDNOTKNOWN"), CALLS[service])) == unknown_key
    assert aws.stats.counts("aws").get("DescribeInstances", 0) <= 1  # a rejected request is not served


def signed(twins, body, monkeypatch=None, when=None):
    """An EC2 request signed by botocore's own SigV4 signer (at ``when``), as raw urllib request parts."""
    ep = twins.endpoints["aws"]
    request = AWSRequest(method="POST", url=ep["endpoint_url"] + "/", data=body,
                         headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    if when is not None:
        stamp = datetime.datetime.fromtimestamp(when, datetime.timezone.utc).replace(tzinfo=None)
        monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: stamp)
    SigV4Auth(Credentials(ep["access_key_id"], ep["secret_access_key"]), "ec2", ep["region"]).add_auth(request)
    return ep["endpoint_url"] + "/", dict(request.headers.items())


def post(url, headers, body):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers, method="POST"),
                                    timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_a_changed_body_an_old_request_and_a_missing_signature_are_refused(aws, monkeypatch):
    body = b"Action=DescribeInstances&Version=2016-11-15"
    url, headers = signed(aws, body)
    assert post(url, headers, body)[0] == 200
    status, text = post(url, headers, b"Action=TerminateInstances&Version=2016-11-15&InstanceId.1=i-1")
    assert (status, "<Code>AuthFailure</Code>" in text) == (401, True)
    url, headers = signed(aws, body, monkeypatch, when=time.time() - 3600)
    status, text = post(url, headers, body)
    assert (status, "<Code>RequestExpired</Code>" in text) == (400, True)
    status, text = post(url, {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}, body)
    assert (status, "<Code>AuthFailure</Code>" in text) == (401, True)


def test_the_instances_own_calls_still_sign_correctly(aws):
    """The SSM agent's commands (AWS CLI environment), the VSS agent's CreateSnapshots and the freeze helper's."""
    ssm = client(aws, "ssm")
    win = aws.aws.instances["win-1"]
    command = ssm.send_command(InstanceIds=[win], DocumentName="AWSEC2-CreateVssSnapshot",
                               Parameters={"ExcludeBootVolume": ["False"], "NoWriters": ["False"],
                                           "CopyOnly": ["False"], "CreateAmi": ["False"],
                                           "tags": ["Key=appconsistent:set-id,Value=acs-sig"]})["Command"]["CommandId"]
    assert wait_command(ssm, command, timeout=60)[win]["Status"] == "Success"
    snapshots = client(aws, "ec2").describe_snapshots(
        OwnerIds=["self"], Filters=[{"Name": "tag:appconsistent:set-id", "Values": ["acs-sig"]}])["Snapshots"]
    assert len(snapshots) == 1
