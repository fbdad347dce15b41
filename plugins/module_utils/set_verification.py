# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

"""One snapshot_set_verification run: record a restore test on every member of one set (the record: verification.py)."""

from __future__ import annotations

from ansible_collections.appconsistent.snapshots.plugins.module_utils import verification as vf
from ansible_collections.appconsistent.snapshots.plugins.module_utils.alicloud import TagBatch as AliTagBatch
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import TagBatch as AwsTagBatch
from ansible_collections.appconsistent.snapshots.plugins.module_utils.set_inventory import find_sets


class SetVerification:
    """One snapshot_set_verification run: find the set, check every member can take the tag, then tag them all."""

    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.provider = self.params["provider"]

    def run(self):
        verified_at, seconds, checks = vf.check_options(self.params)
        set_id = self.params["set_id"]
        found = find_sets(self.module, self.provider, set_ids=[set_id])
        if not found:
            raise ValueError(f"Set {set_id} was not found in the region: nothing was recorded.")
        item = found[0]
        if self.params["result"] == vf.PASSED and not item.get("complete", True):
            raise ValueError(f"Set {set_id} is incomplete ({item.get('incomplete_reason')}): a restore test of it cannot "
                             "pass for the set; nothing was recorded.")
        value = vf.format_record(self.params["result"], verified_at, seconds, checks)
        limit = vf.TAGS_PER_SNAPSHOT[self.provider]
        full = [m["snapshot_id"] for m in item["members"]
                if vf.TAG_VERIFICATION not in m["tags"] and len(m["tags"]) + 1 > limit]
        if full:
            raise ValueError(f"{', '.join(full)} of set {set_id} already carr{'ies' if len(full) == 1 else 'y'} {limit} "
                             f"tags, the most a snapshot can have: remove a tag of your own so that {vf.TAG_VERIFICATION} "
                             "fits; nothing was recorded.")
        before = vf.set_verification(item["members"])
        pending = [m["snapshot_id"] for m in item["members"] if m["tags"].get(vf.TAG_VERIFICATION) != value]
        if pending and not self.module.check_mode:
            self._write(pending, value)
        after = vf.parse_record(value)
        after["verified"] = after["result"] == vf.PASSED
        return dict(changed=bool(pending), set_id=set_id, instance_id=item["instance_id"], verification=after,
                    tag={vf.TAG_VERIFICATION: value}, snapshot_ids=[m["snapshot_id"] for m in item["members"]],
                    tagged_snapshot_ids=pending, diff=dict(before=dict(verification=before), after=dict(verification=after)))

    def _write(self, snapshot_ids, value):
        tags = {vf.TAG_VERIFICATION: value}
        if self.provider == "aws":
            batch = AwsTagBatch()
            batch.add(snapshot_ids, tags)
            batch.flush(self.module.aws_client("ec2"))
            return
        batch = AliTagBatch("snapshot")
        batch.add(snapshot_ids, tags)
        failed = batch.flush(self.module.alicloud)
        if failed:
            first = next(iter(failed.values()))
            raise first
