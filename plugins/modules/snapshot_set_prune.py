#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: snapshot_set_prune
short_description: Delete expired or surplus snapshot sets, whole sets at a time, or keep a retention schedule
version_added: 0.1.0
description:
  - Deletes the snapshot sets whose C(appconsistent:delete-after) instant has passed (O(expired=true)) and/or the sets
    beyond the O(keep) newest of each instance. A set goes when any rule that is turned on selects it.
  - With a retention schedule (any of O(keep_daily), O(keep_weekly), O(keep_monthly), O(keep_yearly)) the rules keep
    instead, as restic's C(forget) does; a set is kept when any rule keeps it, and goes when none does. The rules
    that keep are the generations, the O(keep) newest sets of the instance, and the set's own
    C(appconsistent:delete-after) while it has not passed. A set without that tag and outside the schedule goes.
    Every kept set lists in RV(kept[].reasons) each rule that keeps it.
  - Only sets are touched, found from their tags as M(appconsistent.snapshots.snapshot_set_info) finds them; a snapshot
    without the C(appconsistent:set-id) tag is never deleted.
  - Each instance's newest application-consistent (or offline) set is kept, whatever the rules say, unless
    O(protect_newest_application=false). A complete set is preferred to one still in progress or missing
    snapshots (a copy cut short, see C(appconsistent:members) in snapshot_set_info).
  - A set is removed whole or not at all. Before anything is deleted, every member is checked; a set with a member in
    use by an image (an AWS AMI, an Alibaba Cloud custom image) or, on Alibaba Cloud, a group that holds a snapshot
    without the set's tag, is kept and reported with the reason.
  - A set with any member whose snapshot lock has not expired (see M(appconsistent.snapshots.snapshot_set_lock)) is
    never deleted, whatever the rules say; it is reported in RV(kept) with V(locked) and the time the last member's
    lock ends. The locks are read with C(DescribeLockedSnapshots) before anything is deleted.
  - On AWS each member is deleted with C(DeleteSnapshot); a member that is already gone is no change. On Alibaba
    Cloud C(DeleteSnapshotGroup) deletes the group and its snapshots. A set of snapshots in no group (a copy made by
    M(appconsistent.snapshots.snapshot_set_copy)) is deleted with C(DeleteSnapshot) of each member and nothing else,
    with C(Force=true) as C(DeleteSnapshotGroup) does for a group's members, so disks created from them (by
    M(appconsistent.snapshots.restore_volumes)) are kept but can no longer be re-initialised. Should the provider
    still refuse a member at that point, the set is reported in RV(failed_sets) with the snapshots deleted and those
    left, and the task fails.
  - In check mode, lists what would be deleted and kept, and deletes nothing. C(estimated_floor_s) in
    RV(api_pacing) says how long the deletes take at least at the account's request limits. EC2's published
    C(DeleteSnapshot) bucket holds 100 tokens refilling 5 a second, so 10,000 snapshots are more than half an hour of
    calls ((snapshots - 100) / 5 seconds). The deletes wait for their tokens on the controller instead of being
    throttled.
author:
  - appconsistent.snapshots contributors (@appconsistent)
options:
  provider:
    description:
      - The cloud whose sets are pruned.
    type: str
    required: true
    choices: [aws, alicloud]
  instance_ids:
    description:
      - Only prune the sets of these instances.
    type: list
    elements: str
  run_id:
    description:
      - Only delete sets taken with this run id.
      - The O(keep) ranking and the protected newest application-consistent set are still worked out over all the sets
        of each instance concerned, so pruning one run never removes an instance's last good set.
    type: str
  expired:
    description:
      - Delete the sets whose C(appconsistent:delete-after) instant has passed.
      - Sets without the tag never expire.
      - With a retention schedule, a set is deleted when no rule keeps it, and a set whose delete-after has not
        passed is kept; V(false) means nothing there and is refused.
    type: bool
    default: true
  keep:
    description:
      - Delete the sets of each instance beyond the O(keep) newest, whatever their expiry.
      - With a retention schedule, keeps the O(keep) newest sets of each instance, of any consistency, beside those
        the schedule keeps (restic's C(keep-last)).
      - O(keep) limits how many sets an instance keeps; it does not stop O(expired=true) from deleting an expired set
        among the newest. The set that O(protect_newest_application) protects is kept in any case.
      - V(0) deletes every set in scope but the protected ones; the task then warns, in check mode too, naming the sets
        that are left.
    type: int
  keep_daily:
    description:
      - Keep the newest set of each of the O(keep_daily) most recent UTC days that have a set, per instance.
      - Only the sets O(min_consistency) counts fill a day; a day without one is skipped, not spent (so with a
        missed backup the schedule reaches one day further back).
      - Turns the retention schedule on (see the description); V(0) keeps no daily set.
    type: int
  keep_weekly:
    description:
      - Keep the newest set of each of the O(keep_weekly) most recent ISO 8601 weeks that have a set, per instance.
      - Weeks run Monday to Sunday in UTC and belong to their ISO year; 2026-12-31 and 2027-01-01 are both in
        2026-W53.
      - Turns the retention schedule on; V(0) keeps no weekly set.
    type: int
  keep_monthly:
    description:
      - Keep the newest set of each of the O(keep_monthly) most recent UTC calendar months that have a set, per
        instance.
      - Turns the retention schedule on; V(0) keeps no monthly set.
    type: int
  keep_yearly:
    description:
      - Keep the newest set of each of the O(keep_yearly) most recent UTC calendar years that have a set, per instance.
      - Turns the retention schedule on; V(0) keeps no yearly set.
    type: int
  min_consistency:
    description:
      - The sets the retention schedule counts, of at least this consistency; with a schedule and no value,
        V(application) (which V(offline) also meets).
      - The default is V(application) because a period's place should go to a set that restores into a working
        application; counting crash- or filesystem-consistent sets would let one of them take a day, week, month
        or year and push out the application-consistent set of that period.
      - Sets below it, sets missing members and restore safety sets fill no period; they are kept only by
        O(keep), their delete-after or a lock. A set still being taken is kept.
      - Only with a retention schedule; given alone, the task is refused.
    type: str
    choices: [crash, filesystem, application, offline]
  protect_newest_application:
    description:
      - Keep each instance's newest application- (or offline-) consistent set even when a rule selects it, and
        when no rule of a retention schedule keeps it.
      - A safety set (the group M(appconsistent.snapshots.restore_volumes) takes before C(ResetDisk), tagged
        C(appconsistent:safety-for)) is never that set, as it holds the data the restore replaced.
      - With V(false), the rules alone decide, and an instance can be left without any application-consistent set.
    type: bool
    default: true
  protect_newest_verified:
    description:
      - Keep each instance's newest verified set (its last restore test passed on every member, see
        O(appconsistent.snapshots.snapshot_set_info#module:verified)) even when a rule selects it, and when no rule of
        a retention schedule keeps it. Its reason code is V(newest_verified).
      - A set whose last test failed is never that set; safety sets never are.
    type: bool
    default: true
extends_documentation_fragment:
  - appconsistent.snapshots.alicloud
  - appconsistent.snapshots.api_limits
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details:
      - Returns in RV(deleted) the sets that would be deleted, with RV(ignore:changed=true) when there are any.
  diff_mode:
    support: full
    details:
      - The set ids in scope before and after.
  platform:
    platforms: [aws, alicloud]
"""

EXAMPLES = r"""
- name: Delete the sets whose retention has passed
  appconsistent.snapshots.snapshot_set_prune:
    provider: aws

- name: Keep the three newest sets of each instance, and none that has expired
  appconsistent.snapshots.snapshot_set_prune:
    provider: alicloud
    keep: 3

- name: Remove the pre-patch sets of a finished change, but never an instance's last application-consistent set
  appconsistent.snapshots.snapshot_set_prune:
    provider: aws
    run_id: CHG0042
    expired: false
    keep: 0
  register: pruned

- name: Show what was kept and why
  ansible.builtin.debug:
    msg: "{{ pruned.kept | map(attribute='reason') | list }}"

- name: See what 7 daily, 4 weekly, 12 monthly and 3 yearly application-consistent sets per instance would delete
  appconsistent.snapshots.snapshot_set_prune:
    provider: aws
    keep_daily: 7
    keep_weekly: 4
    keep_monthly: 12
    keep_yearly: 3
  check_mode: true
  register: planned

- name: List the sets that would go, and why each kept set stays
  ansible.builtin.debug:
    msg:
      would_delete: "{{ planned.would_delete }}"
      kept: "{{ planned.kept | items2dict(key_name='set_id', value_name='reasons') }}"

- name: Keep that schedule, counting filesystem-consistent sets too, and the two newest sets whatever they are
  appconsistent.snapshots.snapshot_set_prune:
    provider: alicloud
    keep_daily: 7
    keep_weekly: 4
    keep_monthly: 12
    keep_yearly: 3
    min_consistency: filesystem
    keep: 2
"""

RETURN = r"""
api_pacing:
  description:
    - What the account's API request limits cost this task on AWS (see O(api_rate_limits)).
    - C(calls) counts the attempts per API action, C(throttled_calls) those the cloud answered with a throttling
      error, C(waited_for_tokens_s) the seconds calls waited on the controller for their token, and
      C(rate_floor_s) the least time the task's calls take at the account's limits. In check mode,
      C(estimated_floor_s) is that least time for the calls the task would make.
  returned: when the task called AWS, or planned to in check mode
  type: dict
  sample: {"calls": {"CreateSnapshots": 250, "SendCommand": 12}, "throttled_calls": {}, "waited_for_tokens_s": 31.6,
           "rate_floor_s": 30.0, "share": 1.0}
deleted:
  description: The sets deleted (in check mode, the sets that would be deleted), by instance and newest first.
  returned: always
  type: list
  elements: dict
  contains:
    set_id:
      description: The set's id.
      type: str
      sample: acs-20261123t060000-1a2b3c4d
    instance_id:
      description: The instance the set was taken of.
      type: str
    run_id:
      description: The set's run id.
      type: str
    created:
      description: When the set was taken (UTC).
      type: str
    consistency:
      description: The set's consistency.
      type: str
    delete_after:
      description: The set's C(appconsistent:delete-after) instant.
      type: str
    snapshot_ids:
      description: The set's snapshots.
      type: list
      elements: str
    reasons:
      description: The rules that selected the set.
      type: list
      elements: str
      sample: ["expired at 2026-11-20T06:00:00Z"]
    deleted_snapshot_ids:
      description: The snapshots this run deleted.
      type: list
      elements: str
      returned: when not in check mode
    already_gone_snapshot_ids:
      description: Members that no longer existed when they were to be deleted.
      type: list
      elements: str
      returned: when not in check mode
kept:
  description: The sets in scope that were kept, with the reason.
  returned: always
  type: list
  elements: dict
  contains:
    set_id:
      description: The set's id.
      type: str
    instance_id:
      description: The instance the set was taken of.
      type: str
    snapshot_ids:
      description: The set's snapshots.
      type: list
      elements: str
    reason_code:
      description:
        - V(not_expired), V(no_delete_after), V(within_keep), V(schedule) (a generation of the retention schedule
          keeps it), V(in_progress) (still being taken, under a schedule), V(newest_application) (protected by
          O(protect_newest_application)), V(newest_verified) (the newest set whose last restore test passed, protected
          by O(protect_newest_verified)), V(in_use_by_image), V(untagged_members), V(locked) (a member's
          snapshot lock has not expired).
        - The first reason when several keep the set; RV(kept[].reasons) has them all.
      type: str
      sample: newest_application
    reason:
      description: The reason as a sentence.
      type: str
    reasons:
      description:
        - Every reason the set is kept, the rules first, then the protections. A generation of the schedule is
          written with its period (C(daily 2026-12-06), C(weekly 2026-W49), C(monthly 2026-12), C(yearly 2026));
          a lock as C(locked until) its end.
      type: list
      elements: str
      sample: ["daily 2026-12-06", "weekly 2026-W49", "locked until 2026-12-23T06:00:00Z",
               "the newest application-consistent set of i-0abc (protect_newest_application)"]
    locked_until:
      description: When the last locked member's lock ends (UTC); the set cannot be deleted before.
      type: str
      returned: when a member is locked
      sample: "2026-12-23T06:00:00Z"
would_delete:
  description: In check mode, the ids of the sets that would be deleted (the sets of RV(deleted)).
  returned: in check mode
  type: list
  elements: str
  sample: ["acs-20261123t060000-1a2b3c4d"]
failed_sets:
  description:
    - Sets the provider refused to delete completely. The task fails when there is any.
  returned: always
  type: list
  elements: dict
  contains:
    set_id:
      description: The set's id.
      type: str
    deleted_snapshot_ids:
      description: Members that were deleted before the refusal.
      type: list
      elements: str
    remaining_snapshot_ids:
      description: Members that still exist.
      type: list
      elements: str
    error:
      description: The provider's error (C(code), C(message)).
      type: dict
"""

from ansible_collections.appconsistent.snapshots.plugins.module_utils.module import AppConsistentModule
from ansible_collections.appconsistent.snapshots.plugins.module_utils.set_inventory import SetPrune


def argument_spec():
    return dict(
        provider=dict(type="str", required=True, choices=["aws", "alicloud"]),
        instance_ids=dict(type="list", elements="str"),
        run_id=dict(type="str"),
        expired=dict(type="bool", default=True),
        keep=dict(type="int"),
        keep_daily=dict(type="int"),
        keep_weekly=dict(type="int"),
        keep_monthly=dict(type="int"),
        keep_yearly=dict(type="int"),
        min_consistency=dict(type="str", choices=["crash", "filesystem", "application", "offline"]),
        protect_newest_application=dict(type="bool", default=True),
        protect_newest_verified=dict(type="bool", default=True),
    )


def main():
    module = AppConsistentModule(argument_spec=argument_spec(), supports_check_mode=True)
    result = module.run_or_fail(lambda: SetPrune(module).run())
    for warning in result.pop("warnings"):
        module.warn(warning)
    module.keep_diff(result)
    if result["failed_sets"]:
        failed = result["failed_sets"]
        names = "; ".join(f"{f['set_id']}: {f['error']['message']}" for f in failed[:5])
        module.fail_json(msg=f"{len(failed)} sets could not be deleted completely: {names}. "
                             "The snapshots left are listed in failed_sets[].remaining_snapshot_ids.", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
