# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Alibaba Cloud ECS access for every Alibaba code path of the collection.

Credentials are resolved in this order: module options, the ``ALIBABA_CLOUD_*``
environment variables (read through the module's ``env_fallback``, because the
credentials library reads its own environment only once, at import), an ECS
RAM role name, then a CLI profile. Retries are configured through the SDK's
``RetryOptions``; tea-openapi 0.4 ignores ``RuntimeOptions.autoretry``.
"""

from __future__ import annotations

import json
import traceback

from ansible.module_utils.basic import env_fallback
from ansible.module_utils.basic import missing_required_lib

from ansible_collections.appconsistent.snapshots.plugins.module_utils.concurrency import chunks

# The ECS SDK takes most of a second to import: it is loaded on first use, so that
# runs that never touch Alibaba Cloud do not pay for it.
_SDK = {}


def sdk():
    """The SDK's modules as a dict, or {"error": traceback} when it is not installed."""
    if not _SDK:
        try:
            from alibabacloud_ecs20140526 import models as ecs_models
            from alibabacloud_ecs20140526.client import Client as EcsClient
            from alibabacloud_tea_openapi import models as openapi_models
            from darabonba.policy.retry import RetryOptions
            from darabonba.runtime import RuntimeOptions
            from Tea.exceptions import TeaException
            from Tea.exceptions import UnretryableException
        except ImportError:
            _SDK["error"] = traceback.format_exc()
        else:
            _SDK.update(models=ecs_models, Client=EcsClient, openapi=openapi_models, RetryOptions=RetryOptions,
                        RuntimeOptions=RuntimeOptions, TeaException=TeaException,
                        UnretryableException=UnretryableException, error=None)
    return _SDK


# Error codes worth another attempt: throttling in its several spellings and a
# briefly unavailable service. Anything else is an answer, not a hiccup.
RETRYABLE_CODES = [
    "Throttling",
    "Throttling.User",
    "Throttling.Api",
    "Throttling.Resource",
    "Throttling.Concurrent",
    "ServiceUnavailable",
]
RETRYABLE_EXCEPTIONS = ["ThrottlingException"]

# Error codes that mean the credentials were refused, not the request.
CREDENTIAL_ERROR_CODES = ("InvalidAccessKeyId.NotFound", "SignatureDoesNotMatch", "InvalidAccessKeyId",
                          "InvalidSecurityToken.Expired", "InvalidSecurityToken.Malformed", "InvalidCredentials")

DEFAULT_MAX_ATTEMPTS = 6

# What to install for Alibaba Cloud (named in the task's failure when they are missing).
SDK_PACKAGES = "alibabacloud-ecs20140526 and alibabacloud-tea-openapi"


def alicloud_argument_spec():
    """Connection options shared by every module (documented in the alicloud doc fragment)."""
    return dict(
        alicloud_access_key=dict(type="str", aliases=["alicloud_access_key_id"], no_log=False,
                                 fallback=(env_fallback, ["ALIBABA_CLOUD_ACCESS_KEY_ID"])),
        alicloud_secret_key=dict(type="str", aliases=["alicloud_access_key_secret"], no_log=True,
                                 fallback=(env_fallback, ["ALIBABA_CLOUD_ACCESS_KEY_SECRET"])),
        alicloud_security_token=dict(type="str", no_log=True,
                                     fallback=(env_fallback, ["ALIBABA_CLOUD_SECURITY_TOKEN"])),
        alicloud_region=dict(type="str", fallback=(env_fallback, ["ALIBABA_CLOUD_REGION_ID"])),
        alicloud_ecs_role_name=dict(type="str", fallback=(env_fallback, ["ALIBABA_CLOUD_ECS_METADATA"])),
        alicloud_profile=dict(type="str", fallback=(env_fallback, ["ALIBABA_CLOUD_PROFILE"])),
        alicloud_endpoint=dict(type="str", fallback=(env_fallback, ["ALIBABA_CLOUD_ECS_ENDPOINT"])),
        alicloud_protocol=dict(type="str", default="https", choices=["https", "http"]),
        alicloud_max_attempts=dict(type="int", default=DEFAULT_MAX_ATTEMPTS),
    )


class AlibabaCloudError(Exception):
    """An Alibaba Cloud API error, reduced to what an operator needs to act on it."""

    def __init__(self, action, code, message, request_id=None, status_code=None, provider_message=None):
        self.action = action
        self.code = code
        self.message = message
        self.request_id = request_id
        self.status_code = status_code
        # The provider's own words when ``message`` says it better (a signature error dumps the string to sign).
        self.provider_message = provider_message
        super().__init__(f"{action} failed: {code}: {message}" + (f" (request id {request_id})" if request_id else ""))

    def to_dict(self):
        result = dict(action=self.action, code=self.code, message=self.message,
                      request_id=self.request_id, status_code=self.status_code)
        if self.provider_message is not None:
            result["provider_message"] = self.provider_message
        return result


class CredentialsMissing(Exception):
    pass


def resolve_credential_source(params):
    """Say which credential source the options select, in precedence order.

    Returns a tuple ``(kind, details)``; kind is ``access_key``, ``sts``,
    ``ecs_ram_role`` or ``profile``. Environment variables arrive here already
    merged into ``params`` by ``env_fallback``.
    """
    key = params.get("alicloud_access_key")
    secret = params.get("alicloud_secret_key")
    token = params.get("alicloud_security_token")
    if key or secret:
        if not (key and secret):
            missing = "alicloud_secret_key" if key else "alicloud_access_key"
            raise CredentialsMissing(f"Alibaba Cloud credentials are incomplete: {missing} is not set "
                                     "(or ALIBABA_CLOUD_ACCESS_KEY_ID / ALIBABA_CLOUD_ACCESS_KEY_SECRET).")
        if token:
            return "sts", dict(access_key_id=key, access_key_secret=secret, security_token=token)
        return "access_key", dict(access_key_id=key, access_key_secret=secret)
    if params.get("alicloud_ecs_role_name"):
        return "ecs_ram_role", dict(role_name=params["alicloud_ecs_role_name"])
    if params.get("alicloud_profile"):
        return "profile", dict(profile_name=params["alicloud_profile"])
    raise CredentialsMissing(
        "No Alibaba Cloud credentials: set alicloud_access_key and alicloud_secret_key "
        "(or ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET), "
        "alicloud_ecs_role_name for an instance RAM role, or alicloud_profile for an aliyun CLI profile.")


def retry_options(max_attempts=DEFAULT_MAX_ATTEMPTS, throttling=True):
    """The SDK's retries; throttling False leaves throttled answers to the caller (a paced run retries them itself,
    so that every attempt waits for its token and the pacer learns of every throttled answer)."""
    codes = RETRYABLE_CODES if throttling else [c for c in RETRYABLE_CODES if not is_throttling(c)]
    return sdk()["RetryOptions"]({
        "retryable": True,
        "retryCondition": [{
            "maxAttempts": max_attempts,
            "errorCode": codes,
            "exception": RETRYABLE_EXCEPTIONS if throttling else [],
            "backoff": {"policy": "ExponentialWithEqualJitter", "period": 200, "cap": 20000},
        }],
    })


def is_throttling(code):
    return str(code or "").startswith("Throttling")


def build_config(params, retry_throttling=True):
    """The SDK ``Config`` for these options; raises CredentialsMissing."""
    kind, details = resolve_credential_source(params)
    region = params.get("alicloud_region")
    if not region:
        raise CredentialsMissing("No Alibaba Cloud region: set alicloud_region (or ALIBABA_CLOUD_REGION_ID).")
    config = sdk()["openapi"].Config(region_id=region, protocol=params.get("alicloud_protocol") or "https",
                                     connect_timeout=10000, read_timeout=30000)
    if kind in ("access_key", "sts"):
        config.access_key_id = details["access_key_id"]
        config.access_key_secret = details["access_key_secret"]
        config.security_token = details.get("security_token")
    else:
        try:
            from alibabacloud_credentials.client import Client as CredentialClient
            from alibabacloud_credentials.models import Config as CredentialConfig
            from alibabacloud_credentials.provider.cli_profile import CLIProfileCredentialsProvider
        except ImportError:
            raise CredentialsMissing(missing_required_lib("alibabacloud-credentials")) from None
        if kind == "ecs_ram_role":
            cred = CredentialClient(CredentialConfig(type="ecs_ram_role", role_name=details["role_name"]))
        else:
            cred = CredentialClient(provider=CLIProfileCredentialsProvider(profile_name=details["profile_name"]))
        config.credential = cred
    if params.get("alicloud_endpoint"):
        config.endpoint = params["alicloud_endpoint"]
    config.retry_options = retry_options(params.get("alicloud_max_attempts") or DEFAULT_MAX_ATTEMPTS, retry_throttling)
    return config


def to_alibaba_error(action, exc):
    """Turn an SDK exception into an AlibabaCloudError with code, message and request id."""
    # Transport failures (refused, timed out) arrive as UnretryableException; API answers never do.
    if isinstance(exc, sdk()["UnretryableException"]):
        inner = getattr(exc, "inner_exception", None) or exc
        return AlibabaCloudError(action, "EndpointUnreachable",
                                 f"cannot reach the ECS endpoint ({inner}); check alicloud_endpoint, alicloud_region "
                                 "and the network path to Alibaba Cloud")
    code = getattr(exc, "code", None) or type(exc).__name__
    data = getattr(exc, "data", None) or {}
    message = data.get("Message") if isinstance(data, dict) else None
    if not message:
        message = str(getattr(exc, "message", None) or exc)
    request_id = getattr(exc, "request_id", None) or (data.get("RequestId") if isinstance(data, dict) else None)
    status = getattr(exc, "status_code", None) or (data.get("statusCode") if isinstance(data, dict) else None)
    if code in CREDENTIAL_ERROR_CODES:
        # Said first and on one line: the provider's message can go on with the whole string to sign, over several
        # lines, which is kept in the error's provider_message.
        said = message.splitlines()[0].split("server string to sign")[0].strip() if message.strip() else code
        return AlibabaCloudError(
            action, code, f"Alibaba Cloud rejected the credentials ({said}): check alicloud_access_key, "
            "alicloud_secret_key and alicloud_security_token (or ALIBABA_CLOUD_ACCESS_KEY_ID, "
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET and ALIBABA_CLOUD_SECURITY_TOKEN)", request_id=request_id,
            status_code=status, provider_message=message)
    return AlibabaCloudError(action, code, message, request_id=request_id, status_code=status)


class AlibabaCloud:
    """The ECS client of a module run, with one thin method per API action used.

    Every ECS, RAM and Cloud Assistant request of the collection is one of these
    methods, and every one of them goes through ``call``.

    ``module`` is any Ansible module object (it provides ``params``,
    ``fail_json`` and ``check_mode``). Methods raise ``AlibabaCloudError``;
    ``module.fail_alicloud(err)`` turns one into a task failure.
    """

    def __init__(self, module, client=None):
        self.module = module
        self._client = client

    def _sdk(self):
        """The SDK; without it the task fails naming the packages, before any request model is built."""
        if sdk()["error"]:
            self.module.fail_json(msg=missing_required_lib(SDK_PACKAGES), exception=sdk()["error"])
        return sdk()

    @property
    def models(self):
        """The SDK's request models (alibabacloud_ecs20140526.models)."""
        return self._sdk()["models"]

    @property
    def region(self):
        return self.module.params.get("alicloud_region")

    @property
    def client(self):
        if self._client is None:
            client_class = self._sdk()["Client"]
            try:
                paced = getattr(self.module, "pacer", None) is not None
                self._client = client_class(build_config(self.module.params, retry_throttling=not paced))
            except CredentialsMissing as exc:
                self.module.fail_json(msg=str(exc))
            except Exception as exc:  # pylint: disable=broad-except
                self.module.fail_json(msg=f"Cannot set up the Alibaba Cloud ECS client: {exc}")
        return self._client

    def call(self, action, request):
        """Send one request model, e.g. call("DescribeDisks", self.models.DescribeDisksRequest(...)).

        Every Alibaba request passes here; the SDK retries it (``retry_options``), except a throttled answer in
        a paced run: that is retried here, each attempt waiting for its token in the account's ECS buckets as this
        run models them (module_utils/pacing.py), which the throttled answer has just slowed down. Retried inside
        the SDK, it would reach the cloud unpaced and the model would never hear of it. Returns the response body
        as the API's PascalCase dict.
        """
        method = getattr(self.client, _snake(action) + "_with_options")
        pacer = getattr(self.module, "pacer", None)
        attempts = (self.module.params.get("alicloud_max_attempts") or DEFAULT_MAX_ATTEMPTS) if pacer is not None else 1
        for attempt in range(1, attempts + 1):
            if pacer is not None:
                pacer.before_call("ecs", action)
            try:
                response = method(request, sdk()["RuntimeOptions"]())
            except sdk()["TeaException"] as exc:
                error = to_alibaba_error(action, exc)
                if pacer is not None:
                    pacer.after_call("ecs", action, error_code=error.code)
                if is_throttling(error.code) and attempt < attempts:
                    continue
                raise error from None
            if pacer is not None:
                pacer.after_call("ecs", action)
            return response.body.to_map() if response.body is not None else {}
        return {}  # not reached: the last attempt returns or raises

    # --- thin wrappers, one per action ------------------------------------------------

    def describe_instances(self, instance_ids):
        return [instance for chunk in chunks(instance_ids, 100) for instance in listing(
            self.call, "DescribeInstances", lambda token, chunk=chunk: self.models.DescribeInstancesRequest(
                region_id=self.region, instance_ids=json.dumps(chunk), max_results=100, next_token=token),
            lambda body: (body.get("Instances") or {}).get("Instance"))]

    def describe_disks(self, instance_id=None, disk_ids=None, snapshot_id=None, status=None, tags=None):
        return listing(self.call, "DescribeDisks", lambda token: self.models.DescribeDisksRequest(
            region_id=self.region, instance_id=instance_id, max_results=100, next_token=token, snapshot_id=snapshot_id,
            status=status, disk_ids=json.dumps(list(disk_ids)) if disk_ids else None,
            tag=request_tags(self.models.DescribeDisksRequestTag, tags)),
            lambda body: (body.get("Disks") or {}).get("Disk"))

    def describe_cloud_assistant_status(self, instance_ids):
        result = []
        for chunk in chunks(instance_ids, 50):
            body = self.call("DescribeCloudAssistantStatus", self.models.DescribeCloudAssistantStatusRequest(
                region_id=self.region, instance_id=chunk))
            result.extend((body.get("InstanceCloudAssistantStatusSet") or {}).get("InstanceCloudAssistantStatus") or [])
        return result

    def create_snapshot_group(self, instance_id, disk_ids=None, exclude_disk_ids=None, name=None, description=None,
                              tags=None, client_token=None):
        req = self.models.CreateSnapshotGroupRequest(
            region_id=self.region, instance_id=instance_id, disk_id=list(disk_ids) if disk_ids else None,
            exclude_disk_id=list(exclude_disk_ids) if exclude_disk_ids else None, name=name, description=description,
            client_token=client_token,
            tag=request_tags(self.models.CreateSnapshotGroupRequestTag, tags))
        return self.call("CreateSnapshotGroup", req)["SnapshotGroupId"]

    def describe_snapshot_groups(self, snapshot_group_ids=None, instance_id=None, tags=None):
        return listing(self.call, "DescribeSnapshotGroups", lambda token: self.models.DescribeSnapshotGroupsRequest(
            region_id=self.region, instance_id=instance_id,
            snapshot_group_id=list(snapshot_group_ids) if snapshot_group_ids else None, max_results=100,
            next_token=token,
            tag=request_tags(self.models.DescribeSnapshotGroupsRequestTag, tags)),
            lambda body: (body.get("SnapshotGroups") or {}).get("SnapshotGroup"))

    def run_command(self, instance_ids, command, command_type="RunShellScript", timeout=60, name=None):
        req = self.models.RunCommandRequest(
            region_id=self.region, type=command_type, command_content=command, content_encoding="PlainText",
            instance_id=list(instance_ids), timeout=timeout, name=name)
        body = self.call("RunCommand", req)
        return dict(command_id=body.get("CommandId"), invoke_id=body.get("InvokeId"))

    def describe_invocation_results(self, invoke_id):
        return listing(self.call, "DescribeInvocationResults", lambda token: self.models.DescribeInvocationResultsRequest(
            region_id=self.region, invoke_id=invoke_id, content_encoding="Base64", max_results=50, next_token=token),
            lambda body: ((body.get("Invocation") or {}).get("InvocationResults") or {}).get("InvocationResult"),
            # The token of the next page is inside Invocation.
            lambda body: (body.get("Invocation") or {}).get("NextToken") or body.get("NextToken"))

    def stop_invocation(self, invoke_id, instance_ids):
        """StopInvocation for up to 50 instances of one invocation (InstanceId.N, N 1-50)."""
        self.call("StopInvocation", self.models.StopInvocationRequest(
            region_id=self.region, invoke_id=invoke_id, instance_id=list(instance_ids)))

    def detach_disk(self, disk_id, instance_id):
        self.call("DetachDisk", self.models.DetachDiskRequest(instance_id=instance_id, disk_id=disk_id))

    def delete_disk(self, disk_id):
        self.call("DeleteDisk", self.models.DeleteDiskRequest(disk_id=disk_id))

    def tag_resources(self, resource_type, resource_ids, tags):
        if len(tags) > TAG_RESOURCES_TAGS:
            # Spreading them over several requests would not help: a resource carries at most 20 tags.
            raise AlibabaCloudError("TagResources", "InvalidParameter.Tag",
                                    f"{len(tags)} tags to write, but TagResources takes at most {TAG_RESOURCES_TAGS} "
                                    "and a resource carries at most that many: write fewer tags")
        for chunk in chunks(resource_ids, TAG_RESOURCES_IDS):
            self.call("TagResources", self.models.TagResourcesRequest(
                region_id=self.region, resource_type=resource_type, resource_id=chunk,
                tag=request_tags(self.models.TagResourcesRequestTag, tags)))

    def describe_instance_ram_roles(self, instance_ids):
        """{instance id: RAM role name} (None without a role), 100 instances a request."""
        roles = {}
        for chunk in chunks(instance_ids, 100):
            body = self.call("DescribeInstanceRamRole", self.models.DescribeInstanceRamRoleRequest(
                region_id=self.region, instance_ids=json.dumps(chunk), page_size=100))
            for item in (body.get("InstanceRamRoleSets") or {}).get("InstanceRamRoleSet") or []:
                roles[item["InstanceId"]] = item.get("RamRoleName")
        return roles

    def stop_instance(self, instance_id, force=None):
        # KeepCharging keeps the instance's compute resources, so it can be started again whatever the stock.
        self.call("StopInstance", self.models.StopInstanceRequest(instance_id=instance_id, force_stop=force,
                                                                  stopped_mode="KeepCharging"))

    def start_instance(self, instance_id):
        self.call("StartInstance", self.models.StartInstanceRequest(instance_id=instance_id))

    def describe_snapshots(self, snapshot_ids=None, tags=None):
        """DescribeSnapshots by ids (100 a request) or tags, every page; a tag value of None matches any value.

        An empty list of ids finds nothing (it is not a listing of every snapshot).
        """
        if snapshot_ids is not None:
            requests = [dict(snapshot_ids=json.dumps(chunk)) for chunk in chunks(snapshot_ids, SNAPSHOT_IDS_MAX)]
        else:
            requests = [{}]

        return [snapshot for fields in requests for snapshot in listing(
            self.call, "DescribeSnapshots", lambda token, fields=fields: self.models.DescribeSnapshotsRequest(
                region_id=self.region, max_results=SNAPSHOT_IDS_MAX, next_token=token,
                tag=request_tags(self.models.DescribeSnapshotsRequestTag, tags), **fields),
            lambda body: (body.get("Snapshots") or {}).get("Snapshot"))]

    def copy_snapshot(self, snapshot_id, destination_region, name, description, tags=None, encrypted=None,
                      kms_key_id=None, client_token=None):
        """CopySnapshot, called in the source region; returns the new snapshot's id."""
        request = self.models.CopySnapshotRequest(
            region_id=self.region, snapshot_id=snapshot_id, destination_region_id=destination_region,
            destination_snapshot_name=name, destination_snapshot_description=description,
            encrypted=True if encrypted else None, kmskey_id=kms_key_id or None, client_token=client_token,
            tag=request_tags(self.models.CopySnapshotRequestTag, tags))
        return self.call("CopySnapshot", request)["SnapshotId"]

    def delete_snapshot(self, snapshot_id, force=False):
        self.call("DeleteSnapshot", self.models.DeleteSnapshotRequest(snapshot_id=snapshot_id, force=force))

    def describe_locked_snapshots(self, snapshot_ids=None):
        """The lock of each snapshot named (100 a request), or of every snapshot of the Region that has one."""
        requests = [dict(snapshot_ids=list(chunk)) for chunk in chunks(snapshot_ids, SNAPSHOT_IDS_MAX)] \
            if snapshot_ids else [{}]
        return [lock for fields in requests for lock in listing(
            self.call, "DescribeLockedSnapshots", lambda token, fields=fields: self.models.DescribeLockedSnapshotsRequest(
                region_id=self.region, max_results=SNAPSHOT_IDS_MAX, next_token=token, **fields),
            lambda body: body.get("LockedSnapshotsInfo"))]

    def lock_snapshot(self, snapshot_id, duration_days, cool_off_hours=0):
        """LockSnapshot in compliance mode, the only mode Alibaba Cloud has; CoolOffPeriod 0 locks at once."""
        return self.call("LockSnapshot", self.models.LockSnapshotRequest(
            region_id=self.region, snapshot_id=snapshot_id, lock_mode="compliance", lock_duration=int(duration_days),
            cool_off_period=int(cool_off_hours or 0)))

    def unlock_snapshot(self, snapshot_id):
        self.call("UnlockSnapshot", self.models.UnlockSnapshotRequest(region_id=self.region, snapshot_id=snapshot_id))

    def delete_snapshot_group(self, group_id):
        """DeleteSnapshotGroup; the answer names each member's outcome."""
        return self.call("DeleteSnapshotGroup", self.models.DeleteSnapshotGroupRequest(
            region_id=self.region, snapshot_group_id=group_id))

    def create_disk(self, zone, snapshot_id, category, size, tags, performance_level=None, encrypted=None,
                    kms_key_id=None):
        req = self.models.CreateDiskRequest(
            region_id=self.region, zone_id=zone, snapshot_id=snapshot_id, disk_category=category, size=size,
            performance_level=performance_level, encrypted=encrypted or None, kmskey_id=kms_key_id,
            tag=request_tags(self.models.CreateDiskRequestTag, tags))
        return self.call("CreateDisk", req)["DiskId"]

    def attach_disk(self, disk_id, instance_id, device=None):
        self.call("AttachDisk", self.models.AttachDiskRequest(instance_id=instance_id, disk_id=disk_id, device=device,
                                                              delete_with_instance=False))

    def reset_disk(self, disk_id, snapshot_id):
        self.call("ResetDisk", self.models.ResetDiskRequest(disk_id=disk_id, snapshot_id=snapshot_id))


# DescribeSnapshots takes SnapshotIds with up to 100 ids, and MaxResults up to 100.
SNAPSHOT_IDS_MAX = 100
# TagResources takes ResourceId.1-50 and Tag.1-20 in one request.
TAG_RESOURCES_IDS = 50
TAG_RESOURCES_TAGS = 20

# Errors of TagResources that belong to one of the resources of the request, not to the request: the others
# are tagged one at a time, so that one missing or full snapshot does not leave 49 others untagged.
RESOURCE_TAG_ERRORS = ("InvalidResourceId", "InvalidTagCount")


class TagBatch:
    """Tags to write on many resources of one type, in as few TagResources calls as the limits allow.

    Resources that get the same tags share calls, 50 to a call: the members of a set share the set's
    tags, and the snapshots of one device name, across all the sets of a fleet, share the device tag.
    ``flush`` goes on past a failed call, so that each resource's caller learns what became of its tags.
    """

    def __init__(self, resource_type):
        self.resource_type = resource_type
        self._groups = {}

    def add(self, resource_ids, tags):
        if resource_ids and tags:
            self._groups.setdefault(tuple(sorted(tags.items())), {}).update(dict.fromkeys(resource_ids))

    def flush(self, api):
        """Send the calls; returns {resource id: AlibabaCloudError} for the resources a call failed for."""
        groups, self._groups = self._groups, {}
        failed = {}
        for items, resource_ids in groups.items():
            tags = dict(items)
            for ids in chunks(resource_ids, TAG_RESOURCES_IDS):
                try:
                    api.tag_resources(self.resource_type, ids, tags)
                except AlibabaCloudError as exc:
                    if len(ids) > 1 and str(exc.code).startswith(RESOURCE_TAG_ERRORS):
                        self._one_by_one(api, ids, tags, failed)
                    else:
                        for resource_id in ids:
                            failed.setdefault(resource_id, exc)
        return failed

    def _one_by_one(self, api, ids, tags, failed):
        for resource_id in ids:
            try:
                api.tag_resources(self.resource_type, [resource_id], tags)
            except AlibabaCloudError as exc:
                failed.setdefault(resource_id, exc)


def request_tags(model, tags):
    """{key: value} as a request's list of ``model`` (e.g. models.CreateDiskRequestTag); None for no tags."""
    return [model(key=k, value=v) for k, v in (tags or {}).items()] or None


def listing(call, action, request, items, next_token=lambda body: body.get("NextToken")):
    """Every item of a paged listing sent through ``call`` (AlibabaCloud.call): ``request(token)`` is the request of
    a page (token None for the first), ``items(body)`` the page's items, ``next_token(body)`` the next page's token."""
    result = []
    token = None
    while True:
        body = call(action, request(token))
        result.extend(items(body) or [])
        token = next_token(body)
        if not token:
            return result


def _snake(name):
    out = []
    for index, char in enumerate(name):
        if char.isupper() and index and not name[index - 1].isupper():
            out.append("_")
        out.append(char.lower())
    return "".join(out)


def tags_to_dict(tags):
    """Alibaba tag lists come as Key/Value (groups) or TagKey/TagValue (disks, snapshots); return one dict."""
    if isinstance(tags, dict):
        tags = tags.get("Tag") or []
    result = {}
    for tag in tags or []:
        key = tag.get("Key", tag.get("TagKey"))
        if key is not None:
            result[key] = tag.get("Value", tag.get("TagValue", ""))
    return result
