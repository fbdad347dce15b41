"""The collection's module class: one spec for both providers, clients, and failure messages."""

import contextlib
import json

import botocore.exceptions
import pytest

from ansible_collections.appconsistent.snapshots.plugins.module_utils.alicloud import AlibabaCloudError
from ansible_collections.appconsistent.snapshots.plugins.module_utils.module import AppConsistentModule
from ansible_collections.appconsistent.snapshots.plugins.module_utils.module import list_failed_instances

from ...utils import module_args

ENV_VARS = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
            "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_URL", "EC2_URL", "AWS_ENDPOINT_URL",
            "ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET", "ALIBABA_CLOUD_SECURITY_TOKEN",
            "ALIBABA_CLOUD_REGION_ID", "ALIBABA_CLOUD_ECS_METADATA", "ALIBABA_CLOUD_PROFILE", "ALIBABA_CLOUD_ECS_ENDPOINT"]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    # No shared config or credentials file of the machine may leak into the tests.
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def make_module():
    # The arguments stay in place for the whole test: exit_json and fail_json read them too.
    with contextlib.ExitStack() as stack:
        def make(args):
            stack.enter_context(module_args(args))
            return AppConsistentModule(argument_spec=dict(name=dict(type="str")), supports_check_mode=True)
        yield make


def _failure(capsys, func):
    with pytest.raises(SystemExit):
        func()
    return json.loads(capsys.readouterr().out)


def test_endpoint_url_applies_to_ec2_and_ssm_alike(make_module):
    module = make_module({"endpoint_url": "http://127.0.0.1:18080", "region": "us-east-1",
                         "access_key": "AKIDTEST", "secret_key": "secret"})
    ec2 = module.aws_client("ec2")
    ssm = module.aws_client("ssm")
    assert ec2.meta.endpoint_url == "http://127.0.0.1:18080"
    assert ssm.meta.endpoint_url == "http://127.0.0.1:18080"
    assert module.aws_client("ec2") is ec2  # one client per service and run


def test_both_providers_options_are_accepted_by_every_module(make_module):
    module = make_module({"region": "us-east-1", "alicloud_region": "cn-hangzhou", "alicloud_access_key": "LTAI",
                         "alicloud_secret_key": "s", "name": "x"})
    assert module.params["alicloud_region"] == "cn-hangzhou"
    assert module.params["region"] == "us-east-1"


def test_alicloud_secrets_are_no_log():
    from ansible_collections.appconsistent.snapshots.plugins.module_utils.alicloud import alicloud_argument_spec
    spec = alicloud_argument_spec()
    assert spec["alicloud_secret_key"]["no_log"] is True
    assert spec["alicloud_security_token"]["no_log"] is True


def test_missing_aws_credentials_is_one_plain_message(make_module, capsys):
    module = make_module({"region": "us-east-1", "endpoint_url": "http://127.0.0.1:9"})
    client = module.aws_client("ec2")
    with pytest.raises(botocore.exceptions.NoCredentialsError) as err:
        client.describe_instances()
    result = _failure(capsys, lambda: module.fail_aws(err.value))
    assert result["failed"] is True
    assert result["msg"].startswith("No AWS credentials found: set access_key and secret_key")
    assert "exception" not in result  # no traceback for a configuration problem


def test_unreachable_endpoint_is_one_plain_message(make_module, capsys):
    module = make_module({"region": "us-east-1", "endpoint_url": "http://127.0.0.1:9", "access_key": "AKIDTEST",
                         "secret_key": "secret"})
    client = module.aws_client("ec2")
    with pytest.raises(botocore.exceptions.EndpointConnectionError) as err:
        client.describe_instances()
    result = _failure(capsys, lambda: module.fail_aws(err.value))
    assert "Cannot reach the AWS endpoint" in result["msg"] and "endpoint_url" in result["msg"]
    assert "exception" not in result


def test_alicloud_error_becomes_a_failure_with_code_and_request_id(make_module, capsys):
    module = make_module({})
    error = AlibabaCloudError("CreateSnapshotGroup", "InvalidDiskCategory.NotSupported", "only ESSD", request_id="R-1",
                              status_code=400)
    result = _failure(capsys, lambda: module.fail_alicloud(error))
    assert result["msg"] == "CreateSnapshotGroup failed: InvalidDiskCategory.NotSupported: only ESSD (request id R-1)"
    assert result["error"] == {"action": "CreateSnapshotGroup", "code": "InvalidDiskCategory.NotSupported",
                               "message": "only ESSD", "request_id": "R-1", "status_code": 400}


def test_alicloud_without_credentials_names_what_to_set(make_module, capsys):
    module = make_module({"alicloud_region": "cn-hangzhou"})
    result = _failure(capsys, lambda: module.alicloud.client)
    assert result["msg"].startswith("No Alibaba Cloud credentials: set alicloud_access_key and alicloud_secret_key")
    assert "ALIBABA_CLOUD_ACCESS_KEY_ID" in result["msg"]


def test_run_or_fail_returns_the_result_and_fails_a_refusal_with_its_message(make_module, capsys):
    module = make_module({})
    assert module.run_or_fail(lambda: {"changed": False}) == {"changed": False}

    def refused():
        raise ValueError("set_id acs-1 names no set.")

    assert _failure(capsys, lambda: module.run_or_fail(refused))["msg"] == "set_id acs-1 names no set."


def test_run_or_fail_reports_a_cloud_error_as_fail_alicloud_does(make_module, capsys):
    module = make_module({})
    error = AlibabaCloudError("DescribeSnapshots", "Throttling", "slow down", request_id="R-2", status_code=400)

    def broken():
        raise error

    assert _failure(capsys, lambda: module.run_or_fail(broken)) == _failure(capsys, lambda: module.fail_alicloud(error))


def test_run_or_fail_lets_other_errors_through(make_module):
    module = make_module({})

    def refused():
        raise ValueError("not a refusal here")

    with pytest.raises(ValueError):
        module.run_or_fail(refused, refusals=(KeyError,))


def test_keep_diff_keeps_the_diff_only_with_diff_mode(make_module):
    module = make_module({})
    result = {"changed": True, "diff": {"before": "a", "after": "b"}}
    module.keep_diff(result)
    assert result == {"changed": True}
    module = make_module({"_ansible_diff": True})
    result = {"changed": True, "diff": {"before": "a", "after": "b"}}
    module.keep_diff(result)
    assert result == {"changed": True, "diff": {"before": "a", "after": "b"}}


def test_list_failed_instances_names_five_and_counts_the_rest():
    failed = [{"instance_id": f"i-{n}", "reason": "agent offline"} for n in range(7)]
    assert list_failed_instances(failed[:2]) == "i-0: agent offline; i-1: agent offline"
    assert list_failed_instances(failed) == "; ".join(f"i-{n}: agent offline" for n in range(5)) + " (and 2 more)"
