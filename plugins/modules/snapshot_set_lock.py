#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: snapshot_set_lock
short_description: Lock snapshot sets against deletion, extend their locks, or unlock them
version_added: 0.1.0
description:
  - Locks every member snapshot of the sets selected as M(appconsistent.snapshots.snapshot_set_info) selects them
    (O(set_ids), O(instance_ids), O(run_id), O(min_consistency), O(newest_only)), extends their locks, or removes them,
    with the providers' snapshot lock (AWS C(LockSnapshot) / C(UnlockSnapshot); Alibaba Cloud C(LockSnapshot) /
    C(UnlockSnapshot)). The current locks are read with C(DescribeLockedSnapshots).
  - A locked snapshot cannot be deleted by anyone until its lock expires. In V(governance) mode (AWS only) anyone
    allowed to can shorten, change or remove the lock at any time. In V(compliance) mode, the lock may be changed or
    removed during its cooling-off period (O(cool_off_hours)); after it, the lock can only be extended, and nobody,
    the account's root user included, can shorten or remove it.
  - A set is locked only when every member is. Every member of every selected set is checked before anything is
    changed; a change the provider forbids (shortening, unlocking or changing the mode of a compliance lock whose
    cooling-off period is over) fails the task with nothing changed.
  - Idempotent. A member already locked in the mode and for the duration (or until the instant) asked is left as it is;
    a longer duration asked for a compliance lock past its cooling-off period extends it.
  - M(appconsistent.snapshots.snapshot_set_prune) never deletes a set with a locked member; it reports it as kept,
    with the lock's end.
author:
  - appconsistent.snapshots contributors (@appconsistent)
options:
  provider:
    description:
      - The cloud whose sets are locked or unlocked.
    type: str
    required: true
    choices: [aws, alicloud]
  set_ids:
    description:
      - Only these sets.
      - At least one of O(set_ids), O(instance_ids) and O(run_id) is required.
    type: list
    elements: str
  instance_ids:
    description:
      - Only the sets of these instances.
    type: list
    elements: str
  run_id:
    description:
      - Only the sets taken with this run id.
    type: str
  min_consistency:
    description:
      - Only sets at least this consistent, as in M(appconsistent.snapshots.snapshot_set_info).
    type: str
    choices: [crash, filesystem, application, offline]
  newest_only:
    description:
      - Only the newest set of each instance among the sets that pass the other filters.
    type: bool
    default: false
  state:
    description:
      - V(locked) locks every member as asked (or extends its lock); V(unlocked) removes the members' locks.
      - An unlock is refused, with nothing changed, when any member is locked in compliance mode past its cooling-off
        period.
    type: str
    choices: [locked, unlocked]
    default: locked
  mode:
    description:
      - The lock mode. Required with O(state=locked).
      - V(governance) (AWS only) holds at once and can be removed or shortened by anyone allowed to
        (C(ec2:UnlockSnapshot), C(ec2:LockSnapshot)).
      - V(compliance) cannot be shortened or removed by anyone once its cooling-off period is over. Alibaba Cloud
        has compliance mode only.
    type: str
    choices: [governance, compliance]
  duration_days:
    description:
      - How long the lock holds, in days from when it was made (1 to 36500). Exactly one of O(duration_days) and
        O(expires_at) is required with O(state=locked).
    type: int
  expires_at:
    description:
      - When the lock ends, as an ISO 8601 UTC instant such as C(2027-01-31T00:00:00Z) (AWS only; Alibaba Cloud locks
        for a number of days).
    type: str
  cool_off_hours:
    description:
      - The cooling-off period of a compliance lock, in hours (1 to 72), during which it may still be changed or
        removed. V(0) or unset means none, which needs O(acknowledge_no_cool_off=true).
      - Not sent when a compliance lock past its cooling-off period is extended (the providers refuse one then).
    type: int
  acknowledge_no_cool_off:
    description:
      - Confirms a compliance lock without a cooling-off period, which nobody can shorten or remove until it expires
        (the AWS console asks for the same acknowledgement).
    type: bool
    default: false
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
      - Reads the locks and returns what would change, with each member's lock as it would be; changes nothing.
  diff_mode:
    support: full
    details:
      - Each set's lock (locked, mode, until) before and after.
  platform:
    platforms: [aws, alicloud]
"""

EXAMPLES = r"""
- name: Lock the newest application-consistent set of each instance for 30 days, with a day to change one's mind
  appconsistent.snapshots.snapshot_set_lock:
    provider: aws
    instance_ids: "{{ instance_ids }}"
    min_consistency: application
    newest_only: true
    mode: compliance
    duration_days: 30
    cool_off_hours: 24

- name: Keep a change's sets until the audit, in governance mode
  appconsistent.snapshots.snapshot_set_lock:
    provider: aws
    run_id: CHG0042
    mode: governance
    expires_at: "2027-03-31T00:00:00Z"

- name: Lock an Alibaba Cloud set at once for a year
  appconsistent.snapshots.snapshot_set_lock:
    provider: alicloud
    set_ids: [ssg-bp1abcdefghijklmnop]
    mode: compliance
    duration_days: 365
    acknowledge_no_cool_off: true

- name: Remove a governance lock
  appconsistent.snapshots.snapshot_set_lock:
    provider: aws
    set_ids: [acs-20261123t060000-1a2b3c4d]
    state: unlocked
"""

RETURN = r"""
api_pacing:
  description:
    - What the account's API request limits cost this task on AWS (see O(api_rate_limits)).
  returned: when the task called AWS, or planned to in check mode
  type: dict
  sample: {"calls": {"DescribeSnapshots": 1, "DescribeLockedSnapshots": 1, "LockSnapshot": 4}, "throttled_calls": {},
           "waited_for_tokens_s": 0.0, "rate_floor_s": 0.6, "share": 1.0}
sets:
  description: The selected sets, by instance and newest first.
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
      description: The set's run id, if any.
      type: str
    created:
      description: When the set was taken (UTC).
      type: str
    consistency:
      description: The set's consistency.
      type: str
    action:
      description:
        - What this run did to the set (in check mode, would do) - V(locked) (a new lock, or a change allowed in
          governance mode or within the cooling-off period), V(extended) (a compliance lock past its cooling-off period
          made longer), V(unlocked), V(unchanged), or V(failed) (the provider refused a member; see RV(errors)).
      type: str
      sample: locked
    lock:
      description: The set's lock after this run (in check mode, as it would be).
      type: dict
      contains:
        locked:
          description: Whether every member is locked.
          type: bool
        mode:
          description: The members' lock mode (V(governance), V(compliance), or V(mixed)); null when none is locked.
          type: str
        until:
          description: When the first member's lock ends (UTC); the set is locked until then.
          type: str
          sample: "2026-12-23T06:00:00Z"
        state:
          description: The weakest phase among the locked members (V(governance), V(compliance-cooloff), V(compliance)).
          type: str
        locked_members:
          description: How many members are locked.
          type: int
    members:
      description: Each member's snapshot id, the action and its lock (C(state), C(mode), C(until), C(duration_days),
        C(cool_off_hours), C(cool_off_until)), null when it has none.
      type: list
      elements: dict
errors:
  description: Members the provider refused while the run changed others; the task fails when there is any.
  returned: always
  type: list
  elements: str
"""

from ansible_collections.appconsistent.snapshots.plugins.module_utils.module import AppConsistentModule
from ansible_collections.appconsistent.snapshots.plugins.module_utils.set_lock import SetLock


def argument_spec():
    return dict(
        provider=dict(type="str", required=True, choices=["aws", "alicloud"]),
        set_ids=dict(type="list", elements="str"),
        instance_ids=dict(type="list", elements="str"),
        run_id=dict(type="str"),
        min_consistency=dict(type="str", choices=["crash", "filesystem", "application", "offline"]),
        newest_only=dict(type="bool", default=False),
        state=dict(type="str", choices=["locked", "unlocked"], default="locked"),
        mode=dict(type="str", choices=["governance", "compliance"]),
        duration_days=dict(type="int"),
        expires_at=dict(type="str"),
        cool_off_hours=dict(type="int"),
        acknowledge_no_cool_off=dict(type="bool", default=False),
    )


def main():
    module = AppConsistentModule(argument_spec=argument_spec(), supports_check_mode=True,
                                 mutually_exclusive=[("duration_days", "expires_at")])
    result = module.run_or_fail(lambda: SetLock(module).run())
    module.keep_diff(result)
    if result["errors"]:
        module.fail_json(msg=f"{len(result['errors'])} members could not be changed: {'; '.join(result['errors'][:3])}.",
                         **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
