# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

"""One restore_volumes task: pick the provider and the set, check it, plan, run."""

from __future__ import annotations

import re
import time

from ansible_collections.appconsistent.snapshots.plugins.module_utils import restore
from ansible_collections.appconsistent.snapshots.plugins.module_utils import snapshot_set as ss
from ansible_collections.appconsistent.snapshots.plugins.module_utils import validate as checks
from ansible_collections.appconsistent.snapshots.plugins.module_utils.alicloud import SDK_PACKAGES
from ansible_collections.appconsistent.snapshots.plugins.module_utils.alicloud import sdk as alicloud_sdk
from ansible_collections.appconsistent.snapshots.plugins.module_utils.module import other_cloud_options_message

_AWS_INSTANCE = re.compile(r"i-(?:[0-9a-f]{8}|[0-9a-f]{17})")


# Options that only one cloud reads: given with the other provider they are refused, not ignored.
CLOUD_OPTIONS = dict(
    aws=["iops", "throughput", "aws_max_attempts"],
    alicloud=["safety_snapshot", "safety_snapshot_delete_after"],
)

# Options that say the AWS connection is configured (region and profile also from AWS_REGION, AWS_PROFILE...).
AWS_CONNECTION_OPTIONS = ("region", "profile", "access_key", "endpoint_url")


def infer_provider(params):
    """aws or alicloud from the ids given; None when only a lookup can tell (see RestoreRun.find_either).

    AWS: snap-, i- with 8 or 17 hex digits. Alibaba Cloud: ssg-, s-, other instance ids. An acs- set id is an
    AWS set or an Alibaba Cloud copy (snapshot_set_copy gives a copy a new acs- id on both clouds), so it goes by the
    connection options: AWS when alicloud_region is not set (Alibaba Cloud cannot be reached without it), Alibaba
    Cloud when alicloud_region is set and no AWS option is; with both clouds configured, the cloud of
    target_instance_id, else None.
    """
    if params.get("provider"):
        return params["provider"]
    if params.get("snapshot_group_id"):
        return "alicloud"
    set_id = params.get("set_id") or ""
    if set_id.startswith("ssg-"):
        return "alicloud"
    if set_id.startswith("acs-"):
        if not params.get("alicloud_region"):
            return "aws"
        if not any(params.get(name) for name in AWS_CONNECTION_OPTIONS):
            return "alicloud"
        target = params.get("target_instance_id")
        if target:
            return "aws" if _AWS_INSTANCE.fullmatch(target) else "alicloud"
        return None
    snapshots = params.get("snapshot_ids") or []
    if snapshots and all(s.startswith("snap-") for s in snapshots):
        return "aws"
    if snapshots and all(s.startswith("s-") for s in snapshots):
        return "alicloud"
    instance = params.get("instance_id") or params.get("target_instance_id") or ""
    if instance:
        return "aws" if _AWS_INSTANCE.fullmatch(instance) else "alicloud"
    raise restore.RestoreRefused("cannot tell the provider from the ids given: set provider to aws or alicloud")


# The forms of a set id: acs- (AWS sets, and copies on both clouds) and ssg- (Alibaba Cloud snapshot-consistent groups).
SET_ID_PREFIXES = ("acs-", "ssg-")


def validate(params):
    set_id = params.get("set_id")
    if set_id is not None and not (set_id.startswith(SET_ID_PREFIXES) and len(set_id) > 4):
        raise restore.RestoreRefused(f"invalid set_id {set_id!r}: a set id starts with acs- (an AWS set, or a copy made "
                                     "by snapshot_set_copy) or ssg- (an Alibaba Cloud snapshot-consistent group), as "
                                     "snapshot_set_info lists them")
    if params.get("instance_id") and not params.get("latest"):
        raise restore.RestoreRefused("instance_id selects the instance's newest set: add latest: true "
                                     "(or give set_id, snapshot_ids or snapshot_group_id)")
    if params.get("latest") and not params.get("instance_id"):
        raise restore.RestoreRefused("latest needs instance_id")
    conflicts = ss.user_tags_conflicts(params.get("tags"))
    if conflicts:
        raise restore.RestoreRefused(f"tags: these keys are reserved: {', '.join(conflicts)}")
    for name in ("volume_timeout", "instance_timeout"):
        if params.get(name) is not None and params[name] <= 0:
            raise restore.RestoreRefused(f"{name} must be a positive number of seconds")
    if params.get("safety_snapshot_delete_after"):
        try:
            ss.parse_duration(params["safety_snapshot_delete_after"], "safety_snapshot_delete_after")
        except ValueError as exc:
            raise restore.RestoreRefused(str(exc)) from None


def named_set(selected, set_id):
    """The set found by its id, holding only members that carry that very id (a tag filter is the cloud's reading).

    A snapshot-consistent group is read by its own id, and its members need not carry our tags.
    """
    if not set_id.startswith("ssg-"):
        selected.members = checks.carrying(selected.members, lambda m: m.tags, ss.TAG_SET_ID, [set_id])
        if not selected.members:
            raise restore.RestoreRefused(f"no snapshot carries {ss.TAG_SET_ID}={set_id}: check the set id")
    return selected


def check_tags(params, provider):
    """The user's tags as strings within the provider's limits (both providers' when the set decides the provider)."""
    try:
        for name in [provider] if provider else sorted(checks.TAG_LIMITS):
            tags = checks.user_tags(params.get("tags"), name, checks.RESTORE_OWN_TAGS)
    except ValueError as exc:
        raise restore.RestoreRefused(str(exc)) from None
    params["tags"] = tags


class RestoreRun:
    """``module`` is an AppConsistentModule (or anything with params, check_mode, aws_client and alicloud)."""

    def __init__(self, module, sleep=time.sleep, clock=time.monotonic):
        self.module = module
        self.params = module.params
        self.sleep = sleep
        self.clock = clock
        self.provider = None
        self.selected = None
        self.restorer = None
        # A restore of many instances gives every instance's adapter the task's shared reads (restore_many).
        self.wrap_api = None

    def api(self):
        if self.provider == "aws":
            from ansible_collections.appconsistent.snapshots.plugins.module_utils.restore_aws import AwsRestoreApi
            api = AwsRestoreApi(self.module.aws_client("ec2"))
        else:
            from ansible_collections.appconsistent.snapshots.plugins.module_utils.restore_alicloud import AlicloudRestoreApi
            api = AlicloudRestoreApi(self.module.alicloud)
        return self.wrap_api(api) if self.wrap_api else api

    def select(self, api):
        p = self.params
        if p.get("snapshot_group_id"):
            return api.set_by_group(p["snapshot_group_id"])
        if p.get("set_id"):
            return named_set(api.set_by_id(p["set_id"]), p["set_id"])
        if p.get("snapshot_ids"):
            return api.set_by_snapshots(p["snapshot_ids"])
        return api.latest_set(p["instance_id"], p.get("min_consistency") or "application")

    def run(self):
        """The task's result dict; raises RestoreRefused before any change, RestoreFailed after a rollback."""
        warnings = self.prepare()
        return self.execute(warnings)

    def prepare(self):
        """Pick the provider and the set, check it and plan (read-only calls); the warnings so far.

        RestoreRefused when the restore cannot start; nothing was changed.
        """
        validate(self.params)
        self.provider = infer_provider(self.params)
        check_tags(self.params, self.provider)
        if self.params.get("snapshot_group_id") and self.provider != "alicloud":
            raise restore.RestoreRefused("snapshot_group_id is an Alibaba Cloud snapshot-consistent group: "
                                         "provider must be alicloud")
        if self.provider is None:
            api, self.selected = self.find_either(self.params["set_id"])
            self.refuse_other_cloud_options()
        else:
            self.refuse_other_cloud_options()
            api = self.api()
            try:
                self.selected = self.select(api)
            except restore.NotConnected as exc:
                raise restore.RestoreRefused(str(exc)) from None
            except restore.StepFailed as exc:
                raise restore.RestoreRefused(f"cannot find the snapshot set: {exc}") from None
            except restore.RestoreRefused as exc:
                raise restore.RestoreRefused(f"{exc}{self._acs_hint()}") from None
        warnings = restore.check_set(self.selected, self.params)
        mode = self.params["mode"]
        target = self.params.get("target_instance_id") or self.selected.source_instance_id
        if mode in ("replace", "attach") and not target:
            raise restore.RestoreRefused("the set does not name its instance (no appconsistent:instance-id tag): "
                                         "give target_instance_id")
        try:
            self.restorer = self._restorer(api, target)
            self.restorer.plan(self.selected, target)
        except restore.NotConnected as exc:
            raise restore.RestoreRefused(str(exc)) from None
        except restore.StepFailed as exc:
            raise restore.RestoreRefused(f"cannot plan the restore: {exc}") from None
        return warnings

    @property
    def target(self):
        """The instance restored onto, once prepared (None with mode volumes and no instance)."""
        return self.params.get("target_instance_id") or (self.selected.source_instance_id if self.selected else None)

    def execute(self, warnings):
        """Run the planned restore; RestoreFailed after a rollback."""
        mode = self.params["mode"]
        target = self.target
        result = self.restorer.run(self.selected)
        result["warnings"] = warnings + result.get("warnings", [])
        result.update(provider=self.provider, mode=mode, instance_id=target, set=self.selected.to_dict(),
                      diff=self.restorer.diff())
        return result

    def refuse_other_cloud_options(self):
        """Options the task gave that the set's cloud does not read are refused, before any change."""
        given = getattr(self.module, "given", ())
        for cloud, options in CLOUD_OPTIONS.items():
            names = [name for name in options if name in given]
            if cloud != self.provider and names:
                raise restore.RestoreRefused(other_cloud_options_message(names, cloud, self.provider))

    def find_either(self, set_id):
        """An acs- set id with both clouds configured: the cloud that holds the set, AWS first (read-only lookups)."""
        reasons = []
        for provider in ("aws", "alicloud"):
            if provider == "alicloud" and alicloud_sdk()["error"]:
                # An AWS-only controller: Alibaba Cloud cannot be asked, and that is no reason to fail the task
                # with a missing library when the set simply is not on AWS.
                reasons.append(f"Alibaba Cloud: not looked up, as its SDK ({SDK_PACKAGES}) is not installed")
                continue
            self.provider = provider
            api = self.api()
            try:
                return api, named_set(api.set_by_id(set_id), set_id)
            except (restore.RestoreRefused, restore.StepFailed) as exc:
                reasons.append(f"{'AWS' if provider == 'aws' else 'Alibaba Cloud'}: {exc}")
        self.provider = None
        raise restore.RestoreRefused(
            f"set {set_id} was found neither on AWS nor on Alibaba Cloud ({'; '.join(reasons)}). An acs- set id names an "
            "AWS set or an Alibaba Cloud copy made by snapshot_set_copy, and both clouds are configured here: check the "
            "set id and the regions (region, alicloud_region), and set provider to aws or alicloud")

    def _acs_hint(self):
        """What to add when a set given by an acs- id is not found on the cloud told from the options."""
        set_id = self.params.get("set_id") or ""
        if self.params.get("provider") or not set_id.startswith("acs-"):
            return ""
        what = "an acs- set id names an AWS set or an Alibaba Cloud copy made by snapshot_set_copy"
        if self.provider == "aws":
            return (f" ({what}; this one was looked up on AWS: to restore an Alibaba Cloud copy, set provider to "
                    "alicloud and alicloud_region to the copy's region)")
        return f" ({what}; this one was looked up on Alibaba Cloud: to restore an AWS set, set provider to aws)"

    def _restorer(self, api, target):
        kwargs = dict(check_mode=self.module.check_mode, sleep=self.sleep, clock=self.clock)
        if self.provider == "alicloud" and self.params["mode"] == "replace":
            from ansible_collections.appconsistent.snapshots.plugins.module_utils.restore_alicloud import ResetRestore
            reset = ResetRestore(api, self.params, **kwargs)
            if reset.applies(self.selected, target):
                return reset
        return restore.VolumeRestore(api, self.params, **kwargs)

    def failure_details(self):
        """What to return with a failure: the set and, after planning, the device map."""
        details = dict(provider=self.provider, mode=self.params.get("mode"))
        if self.selected is not None:
            details["set"] = self.selected.to_dict()
        return details
