"""Fixtures the module_utils unit tests share: botocore clients whose requests Stubber checks against the service
model, and retries that do not sleep."""

from unittest import mock

import boto3
import pytest
from botocore.stub import Stubber


def _stubbed(service):
    client = boto3.client(service, region_name="us-east-1", aws_access_key_id="AKIDTEST", aws_secret_access_key="secret")
    with Stubber(client) as stub:
        yield client, stub
        stub.assert_no_pending_responses()


@pytest.fixture
def ec2():
    """An EC2 client and its Stubber: (client, stub); every response the test adds must be used by its end."""
    yield from _stubbed("ec2")


@pytest.fixture
def ssm():
    """An SSM client and its Stubber, as ``ec2``."""
    yield from _stubbed("ssm")


@pytest.fixture
def kms():
    """A KMS client and its Stubber, as ``ec2``."""
    yield from _stubbed("kms")


@pytest.fixture
def no_sleep():
    """time.sleep as a mock: retries and waits count their attempts without waiting."""
    with mock.patch("time.sleep") as sleeper:
        yield sleeper
