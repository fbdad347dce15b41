# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

"""One restore_volumes task: pick the provider and the set, check it, plan, run."""

from __future__ import annotations

import re
import time

from ansible_collections.appconsistent.snapshots.plugins.module_utils import restore
from ansible_collections.appconsistent.snapshots.plugins.module_utils import snapshot_set as ss

_AWS_INSTANCE = re.compile(r"^i-(?:[0-9a-f]{8}|[0-9a-f]{17})$")


def infer_provider(params):
    """aws or alicloud from the ids given (AWS: snap-, acs-, i- with 8 or 17 hex digits; Alibaba: ssg-, s-)."""
    if params.get("provider"):
        return params["provider"]
    if params.get("snapshot_group_id"):
        return "alicloud"
    set_id = params.get("set_id") or ""
    if set_id.startswith("ssg-"):
        return "alicloud"
    if set_id.startswith("acs-"):
        return "aws"
    snapshots = params.get("snapshot_ids") or []
    if snapshots and all(s.startswith("snap-") for s in snapshots):
        return "aws"
    if snapshots and all(s.startswith("s-") for s in snapshots):
        return "alicloud"
    instance = params.get("instance_id") or params.get("target_instance_id") or ""
    if instance:
        return "aws" if _AWS_INSTANCE.match(instance) else "alicloud"
    raise restore.RestoreRefused("cannot tell the provider from the ids given: set provider to aws or alicloud")


def validate(params):
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
            ss.parse_duration(params["safety_snapshot_delete_after"])
        except ValueError as exc:
            raise restore.RestoreRefused(f"safety_snapshot_delete_after: {exc}") from None


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

    def api(self):
        if self.provider == "aws":
            from ansible_collections.appconsistent.snapshots.plugins.module_utils.restore_aws import AwsRestoreApi
            return AwsRestoreApi(self.module.aws_client("ec2"), attempts=self.params.get("aws_max_attempts") or 10)
        from ansible_collections.appconsistent.snapshots.plugins.module_utils.restore_alicloud import AlicloudRestoreApi
        return AlicloudRestoreApi(self.module.alicloud)

    def select(self, api):
        p = self.params
        if p.get("snapshot_group_id"):
            return api.set_by_group(p["snapshot_group_id"])
        if p.get("set_id"):
            return api.set_by_id(p["set_id"])
        if p.get("snapshot_ids"):
            return api.set_by_snapshots(p["snapshot_ids"])
        return api.latest_set(p["instance_id"], p.get("min_consistency") or "application")

    def run(self):
        """The task's result dict; raises RestoreRefused before any change, RestoreFailed after a rollback."""
        validate(self.params)
        self.provider = infer_provider(self.params)
        if self.params.get("snapshot_group_id") and self.provider != "alicloud":
            raise restore.RestoreRefused("snapshot_group_id is an Alibaba Cloud snapshot-consistent group: "
                                         "provider must be alicloud")
        api = self.api()
        try:
            self.selected = self.select(api)
        except restore.StepFailed as exc:
            raise restore.RestoreRefused(f"cannot find the snapshot set: {exc}") from None
        warnings = restore.check_set(self.selected, self.params)
        mode = self.params["mode"]
        target = self.params.get("target_instance_id") or self.selected.source_instance_id
        if mode in ("replace", "attach") and not target:
            raise restore.RestoreRefused("the set does not name its instance (no appconsistent:instance-id tag): "
                                         "give target_instance_id")
        try:
            self.restorer = self._restorer(api, target)
            self.restorer.plan(self.selected, target)
        except restore.StepFailed as exc:
            raise restore.RestoreRefused(f"cannot plan the restore: {exc}") from None
        result = self.restorer.run(self.selected)
        result["warnings"] = warnings + result.get("warnings", [])
        result.update(provider=self.provider, mode=mode, instance_id=target, set=self.selected.to_dict(),
                      diff=self.restorer.diff())
        return result

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
