# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)


class ModuleDocFragment:
    # Options of the modules that create snapshot sets: identification, tags and retention.
    DOCUMENTATION = r"""
options:
  tags:
    description:
      - Tags to put on every snapshot of the set, in addition to the C(appconsistent:*) tags of the set.
      - Keys starting with C(appconsistent:) or C(aws:), and the keys the providers own
        (C(AppConsistent), C(FsConsistent), C(Device), C(AwsVssConfig)), are refused.
      - Values are written as strings (V(4711) becomes C("4711")); a list or a dictionary as a value is refused.
      - Checked against the provider's limits before anything is sent to an instance. AWS allows 50 tags on a
        snapshot, keys of up to 128 and values of up to 256 characters; Alibaba Cloud allows 20 tags, keys and values
        of up to 128 characters, no key starting with C(aliyun) or C(acs:) and no C(http://) or C(https://). Of the
        50 (or 20), the set's own C(appconsistent:*) tags and the provider's evidence tags take 9 (or 8), so at most
        41 (or 12) are left for these tags.
    type: dict
    default: {}
  run_id:
    description:
      - Idempotency key, for example an AWX job id or a change ticket.
      - When a set of the instance with this run id already exists, nothing is created and that set is
        returned with RV(ignore:changed=false).
      - Written to the C(appconsistent:run-id) tag.
    type: str
  delete_after:
    description:
      - Retention as a duration, a number followed by C(s), C(m), C(h), C(d) or C(w) (for example C(7d)), at most
        C(36500d) (100 years).
      - Written as the UTC instant C(appconsistent:delete-after) after which
        M(appconsistent.snapshots.snapshot_set_prune) may delete the set.
      - When not set, the set has no expiry.
    type: str
  on_fallback:
    description:
      - What an instance whose set is less consistent than requested does to the task.
      - V(fail) fails the instance (and the task); V(warn) reports the achieved consistency with a warning.
      - The achieved consistency is always the one written to the tags, never the requested one.
      - M(appconsistent.snapshots.app_consistent_group) fails an instance that needs the operator now whatever
        O(on_fallback) says - a thaw that failed (C(Thaw211) on AWS, C(PluginExit12) on Alibaba Cloud), filesystems
        not mounted again (C(RemountFailed)), an instance not started again (C(StartFailed), C(StartTimeout),
        C(StillStopping)).
    type: str
    choices: [fail, warn]
    default: fail
"""
