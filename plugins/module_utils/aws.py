# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Thin EC2 and SSM wrappers: one function per API call, error handler outside, retry inside.

Clients come from ``AnsibleAWSModule.client`` so ``endpoint_url``, profiles and
credentials behave as in every amazon.aws module, for EC2 and SSM alike.
"""

from __future__ import annotations

import concurrent.futures

try:
    import botocore
except ImportError:
    pass  # the module class reports the missing SDK

from ansible_collections.amazon.aws.plugins.module_utils.botocore import is_boto3_error_code
from ansible_collections.amazon.aws.plugins.module_utils.errors import AWSErrorHandler
from ansible_collections.amazon.aws.plugins.module_utils.exceptions import AnsibleAWSError
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry

# SSM throttles with ThrottlingException, which AWSRetry does not know by default.
THROTTLING_CODES = ["ThrottlingException"]
# CreateSnapshot(s) on a volume that was snapshotted moments ago: AWS asks for a
# much longer pause than for plain throttling (amazon.aws ec2_snapshot does the same).
SNAPSHOT_RATE_CODES = ["SnapshotCreationPerVolumeRateExceeded"]

SSM_INSTANCE_BATCH = 50  # SendCommand InstanceIds limit
DESCRIBE_PAGE = 1000

# Errors that mean "these credentials do not work", mapped to one clear message.
CREDENTIAL_ERROR_CODES = (
    "AuthFailure",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "InvalidAccessKeyId",
    "ExpiredToken",
    "ExpiredTokenException",
)


class AppConsistentAWSError(AnsibleAWSError):
    pass


class EC2ErrorHandler(AWSErrorHandler):
    _CUSTOM_EXCEPTION = AppConsistentAWSError

    @classmethod
    def _is_missing(cls):
        return is_boto3_error_code(["InvalidSnapshot.NotFound", "InvalidVolume.NotFound"])


class SSMErrorHandler(AWSErrorHandler):
    _CUSTOM_EXCEPTION = AppConsistentAWSError

    @classmethod
    def _is_missing(cls):
        return is_boto3_error_code(["InvalidCommandId", "InvocationDoesNotExist"])


def retry_decorator():
    """The decorator handed to ``module.client`` for calls made directly on the client."""
    return AWSRetry.jittered_backoff(retries=10, delay=1, max_delay=30, catch_extra_error_codes=THROTTLING_CODES)


def _paginate(client, operation, result_key, **params):
    paginator = client.get_paginator(operation)
    items = []
    for page in paginator.paginate(**params):
        items.extend(page.get(result_key) or [])
    return items


# --- EC2 ------------------------------------------------------------------------------


@EC2ErrorHandler.list_error_handler("describe instances", default_value=[])
@AWSRetry.jittered_backoff(catch_extra_error_codes=THROTTLING_CODES)
def describe_instances(client, instance_ids=None, filters=None):
    params = {}
    if instance_ids:
        params["InstanceIds"] = list(instance_ids)
    if filters:
        params["Filters"] = filters
    reservations = _paginate(client, "describe_instances", "Reservations", **params)
    return [instance for reservation in reservations for instance in reservation.get("Instances", [])]


# Reads of a large fleet split into chunks of ids; the chunks are read this many at a time.
READ_WORKERS = 4


def chunks(items, size):
    items = list(items)
    return [items[start:start + size] for start in range(0, len(items), size)]


def concurrently(call, items, workers):
    """[call(item) for item in items], at most workers calls at a time; every call is made before an error is raised."""
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        return [call(item) for item in items]
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        futures = [pool.submit(call, item) for item in items]
    return [future.result() for future in futures]


def in_chunks(read, ids, size):
    """read(chunk) for each chunk of size ids, READ_WORKERS at a time; the results joined in the order of ids."""
    return [item for part in concurrently(read, chunks(ids, size), READ_WORKERS) for item in part]


@EC2ErrorHandler.list_error_handler("describe volumes", default_value=[])
@AWSRetry.jittered_backoff(catch_extra_error_codes=THROTTLING_CODES)
def describe_volumes(client, volume_ids=None, filters=None):
    params = {}
    if volume_ids:
        params["VolumeIds"] = list(volume_ids)
    if filters:
        params["Filters"] = filters
    return _paginate(client, "describe_volumes", "Volumes", **params)


@EC2ErrorHandler.list_error_handler("describe snapshots", default_value=[])
@AWSRetry.jittered_backoff(catch_extra_error_codes=THROTTLING_CODES)
def describe_snapshots(client, snapshot_ids=None, filters=None):
    # Owner "self" and pagination: AWS warns unpaginated describes get throttled.
    params = {"OwnerIds": ["self"]}
    if snapshot_ids:
        params["SnapshotIds"] = list(snapshot_ids)
    else:
        params["MaxResults"] = DESCRIBE_PAGE
    if filters:
        params["Filters"] = filters
    return _paginate(client, "describe_snapshots", "Snapshots", **params)


@EC2ErrorHandler.list_error_handler("describe images", default_value=[])
@AWSRetry.jittered_backoff(catch_extra_error_codes=THROTTLING_CODES)
def describe_images(client, filters):
    return client.describe_images(Owners=["self"], Filters=filters).get("Images", [])


@EC2ErrorHandler.common_error_handler("create snapshots")
@AWSRetry.jittered_backoff(catch_extra_error_codes=THROTTLING_CODES + SNAPSHOT_RATE_CODES, delay=15)
def create_snapshots(client, instance_id, exclude_boot_volume=False, exclude_data_volume_ids=None, description=None,
                     tags=None, copy_tags_from_source=False):
    spec = {"InstanceId": instance_id, "ExcludeBootVolume": bool(exclude_boot_volume)}
    if exclude_data_volume_ids:
        spec["ExcludeDataVolumeIds"] = list(exclude_data_volume_ids)
    params = {"InstanceSpecification": spec}
    if description:
        params["Description"] = description
    if tags:
        params["TagSpecifications"] = [{"ResourceType": "snapshot",
                                        "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
    if copy_tags_from_source:
        params["CopyTagsFromSource"] = "volume"
    return client.create_snapshots(**params).get("Snapshots", [])


@EC2ErrorHandler.common_error_handler("tag resources")
@AWSRetry.jittered_backoff(catch_extra_error_codes=THROTTLING_CODES)
def create_tags(client, resource_ids, tags):
    client.create_tags(Resources=list(resource_ids), Tags=[{"Key": k, "Value": v} for k, v in tags.items()])
    return True


# CreateTags takes many resource ids per call; batches stay well inside the documented limit.
CREATE_TAGS_BATCH = 500
TAG_WORKERS = 8
TAG_SERIAL_MAX = 4


class TagBatch:
    """Tags to write, grouped so that every resource getting the same tags shares one CreateTags call.

    A fleet's sets differ only in a few values (set id, instance id), and every snapshot of the same
    device gets the same device tag: grouping turns one call per snapshot into one per distinct tag set.
    """

    def __init__(self):
        self._groups = {}

    def add(self, resource_ids, tags):
        if resource_ids and tags:
            self._groups.setdefault(tuple(sorted(tags.items())), []).extend(resource_ids)

    def flush(self, client):
        groups, self._groups = self._groups, {}
        calls = [(part, dict(items)) for items, resource_ids in groups.items()
                 for part in chunks(resource_ids, CREATE_TAGS_BATCH)]
        # A fleet of VSS sets has one tag set per instance: many calls, made TAG_WORKERS at a time.
        concurrently(lambda call: create_tags(client, *call), calls,
                     TAG_WORKERS if len(calls) > TAG_SERIAL_MAX else 1)


@EC2ErrorHandler.deletion_error_handler("delete snapshot")
@AWSRetry.jittered_backoff(catch_extra_error_codes=THROTTLING_CODES)
def delete_snapshot(client, snapshot_id):
    client.delete_snapshot(SnapshotId=snapshot_id)
    return True


@EC2ErrorHandler.deletion_error_handler("detach volume {volume_id}")
@AWSRetry.jittered_backoff(catch_extra_error_codes=THROTTLING_CODES)
def detach_volume(client, volume_id, instance_id=None, force=False):
    params = {"VolumeId": volume_id}
    if instance_id:
        params["InstanceId"] = instance_id
    if force:
        params["Force"] = True
    client.detach_volume(**params)
    return True


@EC2ErrorHandler.deletion_error_handler("delete volume {volume_id}")
@AWSRetry.jittered_backoff(catch_extra_error_codes=THROTTLING_CODES)
def delete_volume(client, volume_id):
    client.delete_volume(VolumeId=volume_id)
    return True


@EC2ErrorHandler.common_error_handler("stop instances")
@AWSRetry.jittered_backoff(catch_extra_error_codes=THROTTLING_CODES)
def stop_instances(client, instance_ids, force=False):
    client.stop_instances(InstanceIds=list(instance_ids), Force=bool(force))
    return True


@EC2ErrorHandler.common_error_handler("start instances")
@AWSRetry.jittered_backoff(catch_extra_error_codes=THROTTLING_CODES)
def start_instances(client, instance_ids):
    client.start_instances(InstanceIds=list(instance_ids))
    return True


# --- SSM ------------------------------------------------------------------------------


@SSMErrorHandler.common_error_handler("send command")
@AWSRetry.jittered_backoff(catch_extra_error_codes=THROTTLING_CODES)
def send_command(client, document_name, parameters, instance_ids=None, targets=None, comment=None,
                 timeout_seconds=None, max_concurrency=None, max_errors=None):
    if bool(instance_ids) == bool(targets):
        raise ValueError("send_command needs instance_ids or targets, not both")
    if instance_ids and len(instance_ids) > SSM_INSTANCE_BATCH:
        raise ValueError(f"SendCommand takes at most {SSM_INSTANCE_BATCH} instance ids, got {len(instance_ids)}")
    params = {"DocumentName": document_name, "Parameters": parameters}
    if instance_ids:
        params["InstanceIds"] = list(instance_ids)
    else:
        params["Targets"] = targets
    if comment:
        params["Comment"] = comment[:100]
    if timeout_seconds:
        params["TimeoutSeconds"] = int(timeout_seconds)
    if max_concurrency:
        params["MaxConcurrency"] = str(max_concurrency)
    if max_errors is not None:
        params["MaxErrors"] = str(max_errors)
    return client.send_command(**params)["Command"]


@SSMErrorHandler.list_error_handler("list command invocations", default_value=[])
@AWSRetry.jittered_backoff(catch_extra_error_codes=THROTTLING_CODES)
def list_command_invocations(client, command_id, details=True):
    # One paginated listing per command covers every instance of the batch,
    # instead of one GetCommandInvocation per instance.
    return _paginate(client, "list_command_invocations", "CommandInvocations", CommandId=command_id, Details=details)


@SSMErrorHandler.list_error_handler("get command invocation", default_value={})
@AWSRetry.jittered_backoff(catch_extra_error_codes=THROTTLING_CODES)
def get_command_invocation(client, command_id, instance_id):
    # Only for output: the listing cuts each plugin's output at 2500 characters, this call at 24000.
    return client.get_command_invocation(CommandId=command_id, InstanceId=instance_id)


@SSMErrorHandler.common_error_handler("describe SSM managed instances")
@AWSRetry.jittered_backoff(catch_extra_error_codes=THROTTLING_CODES)
def describe_instance_information(client, instance_ids):
    # The InstanceIds filter takes at most 50 values.
    return in_chunks(lambda chunk: _paginate(client, "describe_instance_information", "InstanceInformationList",
                                             Filters=[{"Key": "InstanceIds", "Values": chunk}]), instance_ids, 50)


@SSMErrorHandler.common_error_handler("list inventory entries")
@AWSRetry.jittered_backoff(catch_extra_error_codes=THROTTLING_CODES)
def list_inventory_entries(client, instance_id, type_name, filters=None):
    """(entries, capture time) of one instance's inventory; the capture time is None when none was collected."""
    params = dict(InstanceId=instance_id, TypeName=type_name, MaxResults=50)
    if filters:
        params["Filters"] = filters
    entries, capture_time = [], None
    while True:
        # No botocore paginator for this call: the answer carries the capture time beside the entries.
        page = client.list_inventory_entries(**params)
        entries.extend(page.get("Entries") or [])
        capture_time = capture_time or page.get("CaptureTime")
        if not page.get("NextToken"):
            return entries, capture_time
        params["NextToken"] = page["NextToken"]


@SSMErrorHandler.deletion_error_handler("cancel command")
@AWSRetry.jittered_backoff(catch_extra_error_codes=THROTTLING_CODES)
def cancel_command(client, command_id, instance_ids=None):
    params = {"CommandId": command_id}
    if instance_ids:
        params["InstanceIds"] = list(instance_ids)
    client.cancel_command(**params)
    return True


def error_code(exc):
    """The AWS error code of a wrapped or botocore error (``InvalidSnapshot.NotFound``...), or None."""
    cause = getattr(exc, "exception", None) or exc
    response = getattr(cause, "response", None) or {}
    return (response.get("Error") or {}).get("Code")


def describe_aws_failure(exc):
    """One operator-facing sentence for errors that are about the connection, not the request."""
    cause = getattr(exc, "exception", None) or exc
    if isinstance(cause, botocore.exceptions.NoCredentialsError):
        return ("No AWS credentials found: set access_key and secret_key (or AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY), a profile, or run where an instance role is available.")
    if isinstance(cause, botocore.exceptions.NoRegionError):
        return "No AWS region: set region (or AWS_REGION / AWS_DEFAULT_REGION)."
    if isinstance(cause, (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectTimeoutError)):
        return f"Cannot reach the AWS endpoint ({cause}): check endpoint_url, region and the network path."
    if isinstance(cause, botocore.exceptions.ClientError):
        code = cause.response.get("Error", {}).get("Code")
        if code in CREDENTIAL_ERROR_CODES:
            return (f"AWS rejected the credentials ({code}): check access_key, secret_key, session_token or the "
                    "profile in use.")
    return None
