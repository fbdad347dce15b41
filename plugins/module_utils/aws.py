# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Every EC2, SSM and KMS request of the collection: one thin function per API call, error handler outside.

Each request goes through ``call`` (pages through ``paginate``), the one place
that decides how a throttled or briefly failing request is retried. Clients
come from ``AnsibleAWSModule.client`` so ``endpoint_url``, profiles and
credentials behave as in every amazon.aws module, for EC2, SSM and KMS alike.
"""

from __future__ import annotations

try:
    import botocore
    from botocore import xform_name
except ImportError:
    pass  # the module class reports the missing SDK

from ansible_collections.amazon.aws.plugins.module_utils.botocore import is_boto3_error_code
from ansible_collections.amazon.aws.plugins.module_utils.errors import AWSErrorHandler
from ansible_collections.amazon.aws.plugins.module_utils.exceptions import AnsibleAWSError
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry
from ansible_collections.amazon.aws.plugins.module_utils.tagging import ansible_dict_to_boto3_tag_list
from ansible_collections.amazon.aws.plugins.module_utils.tagging import boto3_tag_list_to_ansible_dict

from ansible_collections.appconsistent.snapshots.plugins.module_utils.concurrency import chunks
from ansible_collections.appconsistent.snapshots.plugins.module_utils.concurrency import concurrently

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
    "InvalidSignatureException",  # SSM and the other JSON-protocol APIs: the secret does not match the key
    "IncompleteSignature",
    "IncompleteSignatureException",
    "MissingAuthenticationToken",
    "MissingAuthenticationTokenException",
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


# --- the one way a request is made ----------------------------------------------------

# Attempts per request (the first included) unless the task sets aws_max_attempts.
DEFAULT_MAX_ATTEMPTS = 10
_MAX_ATTEMPTS_ATTRIBUTE = "appconsistent_max_attempts"
# Operations whose own rate-limit answer asks for a much longer first pause than throttling does.
SLOW_RETRY_OPERATIONS = {"CreateSnapshots": SNAPSHOT_RATE_CODES, "CreateSnapshot": SNAPSHOT_RATE_CODES}
SLOW_RETRY_DELAY = 15
RETRY_DELAY = 3
RETRY_MAX_DELAY = 60


def with_max_attempts(client, attempts):
    """The client, its requests retried up to ``attempts`` times (the task's aws_max_attempts); None keeps the default."""
    if attempts:
        setattr(client, _MAX_ATTEMPTS_ATTRIBUTE, max(1, int(attempts)))
    return client


def retry_policy(operation, attempts=DEFAULT_MAX_ATTEMPTS):
    """Jittered backoff on throttling and transient errors only; anything else is an answer, not a hiccup."""
    slow_codes = SLOW_RETRY_OPERATIONS.get(operation)
    return AWSRetry.jittered_backoff(retries=attempts, delay=SLOW_RETRY_DELAY if slow_codes else RETRY_DELAY,
                                     max_delay=RETRY_MAX_DELAY,
                                     catch_extra_error_codes=THROTTLING_CODES + list(slow_codes or []))


def call(client, operation, **params):
    """One AWS request, e.g. call(ec2, "CreateSnapshots", InstanceSpecification=...): every request passes here."""
    attempts = getattr(client, _MAX_ATTEMPTS_ATTRIBUTE, DEFAULT_MAX_ATTEMPTS)
    return retry_policy(operation, attempts)(getattr(client, xform_name(operation)))(**params)


def pages(client, operation, input_token="NextToken", output_token="NextToken", **params):
    """Every page of a listing, each page one request through ``call`` (a throttled page does not restart the listing)."""
    while True:
        page = call(client, operation, **params)
        yield page
        token = page.get(output_token)
        if not token or page.get("Truncated") is False:
            return
        params[input_token] = token


def paginate(client, operation, result_key, **params):
    return [item for page in pages(client, operation, **params) for item in page.get(result_key) or []]


def tag_list(tags):
    """{key: value} as the API's [{"Key": key, "Value": value}]."""
    return ansible_dict_to_boto3_tag_list(tags)


def tags_of(resource):
    """The tags of a described resource (snapshot, volume, image) as {key: value}."""
    return boto3_tag_list_to_ansible_dict(resource.get("Tags") or [])


# --- EC2 ------------------------------------------------------------------------------


@EC2ErrorHandler.list_error_handler("describe instances", default_value=[])
def describe_instances(client, instance_ids=None, filters=None):
    params = {}
    if instance_ids:
        params["InstanceIds"] = list(instance_ids)
    if filters:
        params["Filters"] = filters
    reservations = paginate(client, "DescribeInstances", "Reservations", **params)
    return [instance for reservation in reservations for instance in reservation.get("Instances", [])]


# Reads of a large fleet split into chunks of ids; the chunks are read this many at a time.
READ_WORKERS = 4


def in_chunks(read, ids, size):
    """read(chunk) for each chunk of size ids, READ_WORKERS at a time; the results joined in the order of ids."""
    return [item for part in concurrently(read, chunks(ids, size), READ_WORKERS) for item in part]


@EC2ErrorHandler.list_error_handler("describe volumes", default_value=[])
def describe_volumes(client, volume_ids=None, filters=None):
    params = {}
    if volume_ids:
        params["VolumeIds"] = list(volume_ids)
    if filters:
        params["Filters"] = filters
    return paginate(client, "DescribeVolumes", "Volumes", **params)


@EC2ErrorHandler.list_error_handler("describe snapshots", default_value=[])
def describe_snapshots(client, snapshot_ids=None, filters=None):
    # Owner "self" and pagination: AWS warns unpaginated describes get throttled.
    params = {"OwnerIds": ["self"]}
    if snapshot_ids:
        params["SnapshotIds"] = list(snapshot_ids)
    else:
        params["MaxResults"] = DESCRIBE_PAGE
    if filters:
        params["Filters"] = filters
    return paginate(client, "DescribeSnapshots", "Snapshots", **params)


@EC2ErrorHandler.list_error_handler("describe images", default_value=[])
def describe_images(client, filters=None, include_disabled=False):
    """This account's AMIs in the region; include_disabled for the disabled ones too (they hold their snapshots)."""
    params = {"Owners": ["self"], "MaxResults": DESCRIBE_PAGE}
    if include_disabled:
        params["IncludeDisabled"] = True
    if filters:
        params["Filters"] = filters
    return paginate(client, "DescribeImages", "Images", **params)


@EC2ErrorHandler.common_error_handler("create volume")
def create_volume(client, snapshot_id, zone, volume_type, size, tags, iops=None, throughput=None, encrypted=None,
                  kms_key_id=None):
    params = {"SnapshotId": snapshot_id, "AvailabilityZone": zone, "VolumeType": volume_type, "Size": int(size),
              "TagSpecifications": [{"ResourceType": "volume", "Tags": tag_list(tags)}]}
    if iops:
        params["Iops"] = int(iops)
    if throughput:
        params["Throughput"] = int(throughput)
    if encrypted:
        params["Encrypted"] = True
    if kms_key_id:
        params["KmsKeyId"] = kms_key_id
    return call(client, "CreateVolume", **params)["VolumeId"]


@EC2ErrorHandler.common_error_handler("attach volume")
def attach_volume(client, volume_id, instance_id, device):
    return call(client, "AttachVolume", VolumeId=volume_id, InstanceId=instance_id, Device=device)


@EC2ErrorHandler.common_error_handler("copy snapshot")
def copy_snapshot(client, source_region, source_snapshot_id, description=None, encrypted=None, kms_key_id=None,
                  tags=None):
    """CopySnapshot, called on a client of the destination region."""
    params = {"SourceRegion": source_region, "SourceSnapshotId": source_snapshot_id}
    if description:
        params["Description"] = description[:255]
    if encrypted:
        params["Encrypted"] = True
    if kms_key_id:
        params["KmsKeyId"] = kms_key_id
    if tags:
        params["TagSpecifications"] = [{"ResourceType": "snapshot", "Tags": tag_list(tags)}]
    return call(client, "CopySnapshot", **params)["SnapshotId"]


# The snapshot attribute that says who may create volumes from a snapshot.
CREATE_VOLUME_PERMISSION = "createVolumePermission"


@EC2ErrorHandler.common_error_handler("describe snapshot attribute")
def describe_create_volume_permissions(client, snapshot_id):
    """(account ids, groups) allowed to create volumes from the snapshot."""
    response = call(client, "DescribeSnapshotAttribute", SnapshotId=snapshot_id, Attribute=CREATE_VOLUME_PERMISSION)
    permissions = response.get("CreateVolumePermissions") or []
    users = sorted({p["UserId"] for p in permissions if p.get("UserId")})
    groups = sorted({p["Group"] for p in permissions if p.get("Group")})
    return users, groups


@EC2ErrorHandler.common_error_handler("modify snapshot attribute")
def modify_create_volume_permissions(client, snapshot_id, operation, user_ids=None, groups=None):
    params = {"SnapshotId": snapshot_id, "Attribute": CREATE_VOLUME_PERMISSION, "OperationType": operation}
    if user_ids:
        params["UserIds"] = list(user_ids)
    if groups:
        params["GroupNames"] = list(groups)
    call(client, "ModifySnapshotAttribute", **params)
    return True


@EC2ErrorHandler.common_error_handler("create snapshots")
def create_snapshots(client, instance_id, exclude_boot_volume=False, exclude_data_volume_ids=None, description=None,
                     tags=None, copy_tags_from_source=False):
    spec = {"InstanceId": instance_id, "ExcludeBootVolume": bool(exclude_boot_volume)}
    if exclude_data_volume_ids:
        spec["ExcludeDataVolumeIds"] = list(exclude_data_volume_ids)
    params = {"InstanceSpecification": spec}
    if description:
        params["Description"] = description
    if tags:
        params["TagSpecifications"] = [{"ResourceType": "snapshot", "Tags": tag_list(tags)}]
    if copy_tags_from_source:
        params["CopyTagsFromSource"] = "volume"
    return call(client, "CreateSnapshots", **params).get("Snapshots", [])


@EC2ErrorHandler.common_error_handler("tag resources")
def create_tags(client, resource_ids, tags):
    call(client, "CreateTags", Resources=list(resource_ids), Tags=tag_list(tags))
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
def delete_snapshot(client, snapshot_id):
    call(client, "DeleteSnapshot", SnapshotId=snapshot_id)
    return True


# --- snapshot locks (EBS snapshot lock) ----------------------------------------------------

# The lock states of a snapshot that cannot be deleted; "expired" is a lock that no longer holds.
ACTIVE_LOCK_STATES = ("governance", "compliance-cooloff", "compliance")


@EC2ErrorHandler.list_error_handler("describe locked snapshots", default_value=[])
def describe_locked_snapshots(client, snapshot_ids=None, lock_states=ACTIVE_LOCK_STATES):
    """The lock of each snapshot named, or of every locked snapshot of the Region (one paginated listing)."""
    params = {}
    if snapshot_ids:
        params["SnapshotIds"] = list(snapshot_ids)
    else:
        params["MaxResults"] = DESCRIBE_PAGE
    if lock_states:
        params["Filters"] = [{"Name": "lock-state", "Values": list(lock_states)}]
    return paginate(client, "DescribeLockedSnapshots", "Snapshots", **params)


@EC2ErrorHandler.common_error_handler("lock snapshot")
def lock_snapshot(client, snapshot_id, mode, duration_days=None, expiration_date=None, cool_off_hours=None):
    """LockSnapshot: a new lock, or a change of the snapshot's lock (AWS decides what its phase allows)."""
    params = {"SnapshotId": snapshot_id, "LockMode": mode}
    if duration_days is not None:
        params["LockDuration"] = int(duration_days)
    else:
        params["ExpirationDate"] = expiration_date
    if cool_off_hours:
        params["CoolOffPeriod"] = int(cool_off_hours)
    return call(client, "LockSnapshot", **params)


@EC2ErrorHandler.common_error_handler("unlock snapshot")
def unlock_snapshot(client, snapshot_id):
    return call(client, "UnlockSnapshot", SnapshotId=snapshot_id)


@EC2ErrorHandler.deletion_error_handler("detach volume {volume_id}")
def detach_volume(client, volume_id, instance_id=None, force=False, device=None):
    """True when detached; False when the volume is already gone."""
    params = {"VolumeId": volume_id}
    if instance_id:
        params["InstanceId"] = instance_id
    if device:
        params["Device"] = device
    if force:
        params["Force"] = True
    call(client, "DetachVolume", **params)
    return True


@EC2ErrorHandler.deletion_error_handler("delete volume {volume_id}")
def delete_volume(client, volume_id):
    call(client, "DeleteVolume", VolumeId=volume_id)
    return True


@EC2ErrorHandler.common_error_handler("stop instances")
def stop_instances(client, instance_ids, force=False):
    params = {"InstanceIds": list(instance_ids)}
    if force:
        params["Force"] = True
    call(client, "StopInstances", **params)
    return True


@EC2ErrorHandler.common_error_handler("start instances")
def start_instances(client, instance_ids):
    call(client, "StartInstances", InstanceIds=list(instance_ids))
    return True


# --- SSM ------------------------------------------------------------------------------


@SSMErrorHandler.common_error_handler("send command")
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
    return call(client, "SendCommand", **params)["Command"]


@SSMErrorHandler.list_error_handler("list command invocations", default_value=[])
def list_command_invocations(client, command_id, details=True):
    # One paginated listing per command covers every instance of the batch,
    # instead of one GetCommandInvocation per instance.
    return paginate(client, "ListCommandInvocations", "CommandInvocations", CommandId=command_id, Details=details)


@SSMErrorHandler.list_error_handler("get command invocation", default_value={})
def get_command_invocation(client, command_id, instance_id):
    # Only for output: the listing cuts each plugin's output at 2500 characters, this call at 24000.
    return call(client, "GetCommandInvocation", CommandId=command_id, InstanceId=instance_id)


@SSMErrorHandler.common_error_handler("describe SSM managed instances")
def describe_instance_information(client, instance_ids):
    # The InstanceIds filter takes at most 50 values.
    return in_chunks(lambda chunk: paginate(client, "DescribeInstanceInformation", "InstanceInformationList",
                                            Filters=[{"Key": "InstanceIds", "Values": chunk}]), instance_ids, 50)


@SSMErrorHandler.common_error_handler("list inventory entries")
def list_inventory_entries(client, instance_id, type_name, filters=None):
    """(entries, capture time) of one instance's inventory; the capture time is None when none was collected."""
    params = dict(InstanceId=instance_id, TypeName=type_name, MaxResults=50)
    if filters:
        params["Filters"] = filters
    entries, capture_time = [], None
    # The answer carries the capture time beside the entries.
    for page in pages(client, "ListInventoryEntries", **params):
        entries.extend(page.get("Entries") or [])
        capture_time = capture_time or page.get("CaptureTime")
    return entries, capture_time


@SSMErrorHandler.deletion_error_handler("cancel command")
def cancel_command(client, command_id, instance_ids=None):
    params = {"CommandId": command_id}
    if instance_ids:
        params["InstanceIds"] = list(instance_ids)
    call(client, "CancelCommand", **params)
    return True


# --- KMS ------------------------------------------------------------------------------


@EC2ErrorHandler.common_error_handler("describe KMS key")
def describe_key(client, key_id):
    return call(client, "DescribeKey", KeyId=key_id)["KeyMetadata"]


@EC2ErrorHandler.common_error_handler("list KMS aliases")
def list_key_aliases(client, key_id):
    aliases = paginate(client, "ListAliases", "Aliases", input_token="Marker", output_token="NextMarker", KeyId=key_id)
    return [a["AliasName"] for a in aliases if a.get("AliasName")]


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
