# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Granting and revoking create-volume permission on every member of a set (AWS).

A set is shared whole or not at all: every member is read and checked first
(it exists, it can be shared with these accounts), and only then are the
permissions changed. Making a set public needs ``public: true`` spelled out.

Alibaba Cloud ECS has no API that shares a snapshot with another account (only
custom images can be shared), so sharing is refused there with that reason.
"""

from __future__ import annotations

import re

from ansible_collections.appconsistent.snapshots.plugins.module_utils import snapshot_set as ss
from ansible_collections.appconsistent.snapshots.plugins.module_utils import validate as checks
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import AppConsistentAWSError
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import error_code as aws_error_code
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import describe_create_volume_permissions
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import describe_key
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import describe_snapshots
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import list_key_aliases
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import modify_create_volume_permissions
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import tags_of

PUBLIC_GROUP = "all"
_ACCOUNT = re.compile(r"[0-9]{12}")
ALICLOUD_NOT_SUPPORTED = (
    "Sharing snapshots is not supported on Alibaba Cloud: ECS has no API that grants another account access to a "
    "snapshot (only custom images can be shared, with ModifyImageSharePermission). Copy the set to the region where "
    "it is needed with snapshot_set_copy, or make a custom image from its system disk snapshot and share the image.")
# A customer cannot create aliases under this prefix: a key that has one is an AWS managed key.
AWS_MANAGED_ALIAS_PREFIX = "alias/aws/"
KMS_DENIED_CODES = ("AccessDeniedException", "AccessDenied", "UnauthorizedOperation")


class ShareRefused(Exception):
    """The permissions cannot be changed as asked; nothing was changed."""


def validate(params):
    """Refuse unclear requests before anything is looked up."""
    if params["provider"] == "alicloud":
        raise ShareRefused(ALICLOUD_NOT_SUPPORTED)
    accounts = [str(a).strip() for a in params.get("account_ids") or []]
    if any(a.lower() == PUBLIC_GROUP for a in accounts):
        raise ShareRefused("account_ids: 'all' would make the set public; to do that on purpose, set public: true "
                           "(and leave 'all' out of account_ids).")
    bad = [a for a in accounts if not _ACCOUNT.fullmatch(a)]
    if bad:
        raise ShareRefused(f"account_ids: {', '.join(bad)} are not AWS account ids (12 digits).")
    if not accounts and not params.get("public"):
        raise ShareRefused("Nothing to share or unshare: give account_ids, or public: true.")
    return sorted(set(accounts))


class SetShare:
    """One snapshot_set_share run on AWS."""

    def __init__(self, ec2, kms_client_factory, params, check_mode=False):
        self.ec2 = ec2
        self.kms_client_factory = kms_client_factory
        self.params = params
        self.check_mode = check_mode
        self.warnings = []

    def _members(self):
        set_id = self.params["set_id"]
        found = describe_snapshots(self.ec2, filters=[{"Name": "tag:" + ss.TAG_SET_ID, "Values": [set_id]}])
        if not found:
            raise ShareRefused(f"no snapshot carries {ss.TAG_SET_ID}={set_id} in this region: check the set id and the "
                               "region (snapshot_set_info lists the sets)")
        return sorted(found, key=lambda s: s["SnapshotId"])

    def _aws_managed(self, key_id, cache):
        """True when the key is an AWS managed key; None when KMS will not say."""
        if key_id in cache:
            return cache[key_id]
        kms = self.kms_client_factory()
        verdict = None
        try:
            if describe_key(kms, key_id).get("KeyManager") == "AWS":
                verdict = True
            else:
                verdict = any(a.startswith(AWS_MANAGED_ALIAS_PREFIX) for a in list_key_aliases(kms, key_id))
        except AppConsistentAWSError as exc:
            if aws_error_code(exc) not in KMS_DENIED_CODES:
                raise
            self.warnings.append(f"KMS does not let these credentials read key {key_id} ({aws_error_code(exc)}); it "
                                 "was not checked whether it is an AWS managed key, which cannot be shared")
        cache[key_id] = verdict
        return verdict

    def _check_shareable(self, snapshots, adding_accounts, adding_public):
        """Refuse the whole set if any member cannot get the permissions asked for."""
        problems = []
        cache = {}
        for snap in snapshots:
            if not snap.get("Encrypted"):
                continue
            snapshot_id = snap["SnapshotId"]
            if adding_public:
                problems.append(f"{snapshot_id} is encrypted, and encrypted snapshots cannot be made public")
                continue
            if not adding_accounts:
                continue
            key_id = snap.get("KmsKeyId")
            if not key_id:
                problems.append(f"{snapshot_id} is encrypted but its KMS key is not reported, so it cannot be checked "
                                "that the key can be shared")
            elif self._aws_managed(key_id, cache):
                problems.append(f"{snapshot_id} is encrypted with the AWS managed key {key_id}, which cannot be shared "
                                "with other accounts; copy the set with snapshot_set_copy and a customer managed "
                                "kms_key_id, then share the copy (and grant the accounts use of that key)")
        if problems:
            raise ShareRefused(f"Set {self.params['set_id']} cannot be shared as asked, so no permission was changed: "
                               + "; ".join(problems) + ".")

    def run(self):
        accounts = validate(self.params)
        present = self.params["state"] == "present"
        public = bool(self.params.get("public"))
        # Only the members of the set named: never a snapshot the filter matched otherwise.
        snapshots = checks.carrying(self._members(), tags_of,
                                    ss.TAG_SET_ID, [self.params["set_id"]])
        if not snapshots:
            raise ShareRefused(f"no snapshot carries {ss.TAG_SET_ID}={self.params['set_id']} in this region")
        incomplete = ss.incomplete_reason([tags_of(s) for s in snapshots], [s.get("State") for s in snapshots])
        if present and incomplete:
            # Permissions are per snapshot: sharing what there is harms nothing, but the receiver must know it is partial.
            self.warnings.append(f"set {self.params['set_id']} is incomplete ({incomplete}): only the snapshots it "
                                 "has are shared")
        plans = []
        for snap in snapshots:
            users, groups = describe_create_volume_permissions(self.ec2, snap["SnapshotId"])
            if present:
                add_users = [a for a in accounts if a not in users]
                add_groups = [PUBLIC_GROUP] if public and PUBLIC_GROUP not in groups else []
                remove_users, remove_groups = [], []
            else:
                add_users, add_groups = [], []
                remove_users = [a for a in accounts if a in users]
                remove_groups = [PUBLIC_GROUP] if public and PUBLIC_GROUP in groups else []
            after_users = sorted((set(users) | set(add_users)) - set(remove_users))
            after_groups = sorted((set(groups) | set(add_groups)) - set(remove_groups))
            plans.append(dict(snapshot=snap, users=users, groups=groups, add_users=add_users, add_groups=add_groups,
                              remove_users=remove_users, remove_groups=remove_groups, after_users=after_users,
                              after_groups=after_groups))
        if present:
            self._check_shareable([p["snapshot"] for p in plans if p["add_users"] or p["add_groups"]],
                                  adding_accounts=any(p["add_users"] for p in plans),
                                  adding_public=any(p["add_groups"] for p in plans))
        changed = any(p["add_users"] or p["add_groups"] or p["remove_users"] or p["remove_groups"] for p in plans)
        if changed and not self.check_mode:
            for plan in plans:
                snapshot_id = plan["snapshot"]["SnapshotId"]
                if plan["add_users"] or plan["add_groups"]:
                    modify_create_volume_permissions(self.ec2, snapshot_id, "add", plan["add_users"], plan["add_groups"])
                if plan["remove_users"] or plan["remove_groups"]:
                    modify_create_volume_permissions(self.ec2, snapshot_id, "remove", plan["remove_users"],
                                                     plan["remove_groups"])
        return self._result(changed, plans)

    def _result(self, changed, plans):
        members = []
        before, after = {}, {}
        for plan in plans:
            snap = plan["snapshot"]
            tags = tags_of(snap)
            snapshot_id = snap["SnapshotId"]
            members.append(dict(snapshot_id=snapshot_id, device=tags.get(ss.TAG_DEVICE) or tags.get("Device"),
                                account_ids=plan["after_users"], public=PUBLIC_GROUP in plan["after_groups"],
                                added_account_ids=plan["add_users"], removed_account_ids=plan["remove_users"]))
            before[snapshot_id] = dict(account_ids=plan["users"], public=PUBLIC_GROUP in plan["groups"])
            after[snapshot_id] = dict(account_ids=plan["after_users"], public=PUBLIC_GROUP in plan["after_groups"])
        everyone = [set(m["account_ids"]) for m in members]
        return dict(changed=changed, provider="aws", set_id=self.params["set_id"], members=members,
                    account_ids=sorted(set.intersection(*everyone)) if everyone else [],
                    public=bool(members) and all(m["public"] for m in members), warnings=list(self.warnings),
                    diff=dict(before=before, after=after))
