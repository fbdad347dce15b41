#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: snapshot_set_info
short_description: List application-consistent snapshot sets, found from their tags
version_added: 0.1.0
description:
  - Lists the snapshot sets of one provider, grouped from the C(appconsistent:*) tags of their member snapshots,
    so that any controller sees the same sets without a local state file.
  - On AWS, the snapshots of this account in the region are read with one paginated, tag-filtered
    C(DescribeSnapshots) listing; every snapshot that carries C(appconsistent:set-id) is a member of the set it names.
  - On Alibaba Cloud, a set is a snapshot-consistent group (its C(ssg-) id is the set id) whose snapshots carry the
    C(appconsistent:set-id) tag, or a set of snapshots in no group that carry the set's tags, such as a copy made by
    M(appconsistent.snapshots.snapshot_set_copy) (its id starts with C(acs-)). The groups are read with
    C(DescribeSnapshotGroups), the tagged snapshots with C(DescribeSnapshots) filtered by tag (one listing per set id
    or instance, up to 10, else one listing of the region), and the group members those listings do not give with
    C(DescribeSnapshots) by id (100 snapshots per request). Groups that are not sets are not listed, and a group's
    snapshots are listed in the group's set only.
  - Each set's snapshot lock is read with one C(DescribeLockedSnapshots) listing of the Region's locked snapshots.
  - Never changes anything. Returns an empty list when nothing matches.
author:
  - appconsistent.snapshots contributors (@appconsistent)
options:
  provider:
    description:
      - The cloud whose sets are listed.
      - V(aws) uses the AWS connection options (O(region), O(endpoint_url), ...), V(alicloud) the Alibaba Cloud ones
        (O(alicloud_region), O(alicloud_endpoint), ...).
    type: str
    required: true
    choices: [aws, alicloud]
  instance_ids:
    description:
      - Only the sets of these instances (the C(appconsistent:instance-id) tag).
    type: list
    elements: str
  run_id:
    description:
      - Only the sets taken with this run id (the C(appconsistent:run-id) tag).
    type: str
  set_ids:
    description:
      - Only these sets (AWS set ids such as C(acs-20261123t060000-1a2b3c4d), Alibaba C(ssg-) group ids, and the
        C(acs-) ids of copies made by M(appconsistent.snapshots.snapshot_set_copy)).
    type: list
    elements: str
  min_consistency:
    description:
      - Only sets at least this consistent, where V(crash) < V(filesystem) < V(application) < V(offline).
      - A set is as consistent as its weakest member.
    type: str
    choices: [crash, filesystem, application, offline]
  newest_only:
    description:
      - Return only the newest set of each instance, among the sets that pass the other filters (with
        O(min_consistency=application), the newest application-consistent set of each instance). A safety set
        (RV(sets[].safety_for)) is never an instance's newest, as it holds the data a restore replaced.
      - With O(verified=true), each instance's newest verified set.
    type: bool
    default: false
  verified:
    description:
      - V(true) lists only the sets whose last restore test passed on every member (recorded by
        M(appconsistent.snapshots.snapshot_set_verification), as the C(verify_restore) playbook does); V(false) only
        the others (never tested, last test failed, a record that reached only some members, or an incomplete set).
        Unset lists both.
      - A failed test after a passed one takes the set's verification back.
    type: bool
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
  diff_mode:
    support: N/A
    details:
      - The module changes nothing.
  platform:
    platforms: [aws, alicloud]
"""

EXAMPLES = r"""
- name: The newest application-consistent set of each instance of a run
  appconsistent.snapshots.snapshot_set_info:
    provider: aws
    run_id: "{{ awx_job_id }}"
    min_consistency: application
    newest_only: true
  register: backup

- name: Every set of two Alibaba Cloud instances
  appconsistent.snapshots.snapshot_set_info:
    provider: alicloud
    instance_ids:
      - i-bp1abcdefghijklmnop
      - i-bp1qrstuvwxyzabcdef
  register: sets

- name: The newest set of each instance whose restore test passed
  appconsistent.snapshots.snapshot_set_info:
    provider: aws
    instance_ids: "{{ instance_ids }}"
    verified: true
    newest_only: true
  register: verified

- name: Fail when an instance has no complete set
  ansible.builtin.assert:
    that: backup.sets | selectattr('complete') | list | length == backup.sets | length
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
sets:
  description: The sets that match, by instance and newest first.
  returned: always
  type: list
  elements: dict
  contains:
    provider:
      description: V(aws) or V(alicloud).
      type: str
      sample: aws
    set_id:
      description: The set's id (for Alibaba Cloud, the snapshot-consistent group id).
      type: str
      sample: acs-20261123t060000-1a2b3c4d
    instance_id:
      description: The instance the set was taken of.
      type: str
      sample: i-0123456789abcdef0
    run_id:
      description: The run id the set was taken with, if any.
      type: str
      sample: CHG0042
    created:
      description:
        - When the set was taken (UTC), from the group's creation time for an Alibaba Cloud group and from the earliest
          member start time otherwise (for a copy, when the copies were started).
      type: str
      sample: "2026-11-23T06:00:00Z"
    consistency:
      description:
        - The set's level (V(crash), V(filesystem), V(application) or V(offline)), which is the weakest
          C(appconsistent:set-consistency) tag of its members, that is the weakest level over the volumes that were to
          be quiesced. For a set made before that tag existed, the weakest member's C(appconsistent:consistency) tag.
          Null when a member has no consistency tag. O(min_consistency) selects by this level.
      type: str
      sample: application
    complete:
      description:
        - Whether every member snapshot has completed (AWS V(completed), Alibaba Cloud V(accomplished)) and none is
          missing. Every set made by this collection says on each member how many snapshots it has
          (C(appconsistent:members)); a set holding fewer, such as a copy cut short, is not complete. A set made by an
          earlier version, without that tag, is judged by the states of its snapshots alone.
      type: bool
      sample: true
    members_expected:
      description:
        - How many snapshots the set has, as its C(appconsistent:members) tag says; null for a set made before the tag.
      type: int
      sample: 2
    incomplete_reason:
      description: Why the set is not complete (missing or unfinished snapshots), or null when it is.
      type: str
      sample: only 1 of its 2 snapshots exist
    delete_after:
      description: The C(appconsistent:delete-after) instant, or null when the set has no expiry.
      type: str
      sample: "2026-11-30T06:00:00Z"
    expired:
      description: Whether O(ignore:delete_after) has passed.
      type: bool
      sample: false
    size_gib:
      description: The sum of the source volume (disk) sizes in GiB, as the provider gives them.
      type: int
      sample: 58
    full_snapshot_size_bytes:
      description:
        - The sum of the members' full snapshot sizes in bytes, when the provider gives it for every member
          (AWS and Alibaba Cloud C(FullSnapshotSizeInBytes)); null otherwise.
      type: int
      sample: 1073741824
    lock:
      description:
        - The set's snapshot lock, from C(DescribeLockedSnapshots) (one listing of the Region's locked snapshots).
          A set is locked only when every member is; see M(appconsistent.snapshots.snapshot_set_lock).
        - C(locked) is null when the credentials may not read locks (the task then warns).
      type: dict
      contains:
        locked:
          description: Whether every member is locked.
          type: bool
          sample: true
        mode:
          description: The locked members' mode (V(governance), V(compliance), or V(mixed)); null when none is locked.
          type: str
          sample: compliance
        until:
          description: When the first member's lock ends (UTC); null when none is locked.
          type: str
          sample: "2026-12-23T06:00:00Z"
        state:
          description:
            - The weakest phase among the locked members, V(governance), V(compliance-cooloff) (still in its
              cooling-off period) or V(compliance) (can only be extended).
          type: str
        locked_members:
          description: How many members are locked.
          type: int
    group_status:
      description: The snapshot-consistent group's own status (V(progressing), V(accomplished), V(failed)).
      type: str
      returned: for Alibaba Cloud sets that are snapshot-consistent groups
      sample: accomplished
    safety_for:
      description:
        - The set a safety set was taken for - the snapshot-consistent group M(appconsistent.snapshots.restore_volumes)
          takes on Alibaba Cloud of the disks it is about to reset (tag C(appconsistent:safety-for)); V(null) for
          every other set. A safety set is V(offline)-consistent data of before that restore; it is never an
          instance's newest set (O(newest_only)), nor the set O(appconsistent.snapshots.snapshot_set_prune#module:protect_newest_application)
          keeps; restore it by its set id.
      type: str
      returned: always
      sample: null
    verification:
      description:
        - The set's last restore test, from the C(appconsistent:verification) tag of its members; null when none was
          recorded.
      type: dict
      returned: always
      contains:
        verified:
          description: Whether the last test passed, every member carries its record and the set is complete (the
            members of an incomplete set may carry a record from the set they were copied from).
          type: bool
        result:
          description: V(passed), V(failed), or V(partial) (the members carry different records, or only some carry one).
          type: str
          sample: passed
        verified_at:
          description: When the test ended (UTC).
          type: str
          sample: "2026-12-07T06:12:40Z"
        seconds_to_application:
          description: Seconds from the start of the restore to a working application; null when it failed.
          type: float
          sample: 41.5
        checks:
          description: The checks the test ran, such as C(fs:ext4) and C(app:mysql).
          type: list
          elements: str
        note:
          description: Why a recorded test does not make the set verified (the members differ, or the set is incomplete).
          type: str
          returned: when the record does not make the set verified
    untagged_snapshot_ids:
      description:
        - Snapshots of the Alibaba Cloud group that do not carry the set's C(appconsistent:set-id) tag.
          M(appconsistent.snapshots.snapshot_set_prune) does not delete a group that holds any.
      type: list
      elements: str
      sample: []
    members:
      description: The set's snapshots.
      type: list
      elements: dict
      contains:
        snapshot_id:
          description: Snapshot ID.
          type: str
          sample: snap-0123456789abcdef0
        volume_id:
          description: Source volume.
          type: str
          returned: for AWS sets
        disk_id:
          description: Source disk.
          type: str
          returned: for Alibaba Cloud sets
        device:
          description: The device the volume was attached at (C(appconsistent:device), or AWS VSS's C(Device) tag).
          type: str
          sample: /dev/xvdf
        consistency:
          description:
            - What this member achieved (its C(appconsistent:consistency) tag). A volume beneath none of the frozen
              filesystems, such as the root volume of a set that froze C(/data), is V(crash) in an V(application) set.
          type: str
          sample: application
        size_gib:
          description: Size of the source volume or disk in GiB.
          type: int
          sample: 50
        state:
          description: The provider's snapshot state (AWS V(pending), V(completed), V(error); Alibaba Cloud
            V(progressing), V(accomplished), V(failed)).
          type: str
          sample: completed
        progress:
          description: The provider's progress, for example C(100%).
          type: str
        start_time:
          description: When the snapshot was started.
          type: str
        storage_tier:
          description: AWS C(StorageTier) (V(standard), V(archive)); Alibaba Cloud snapshot C(Category).
          type: str
        full_snapshot_size_bytes:
          description: The provider's C(FullSnapshotSizeInBytes), when it gives it.
          type: int
        usage:
          description: What uses the snapshot, as Alibaba Cloud says (V(none), V(image), V(disk), V(image_disk)).
          type: str
          returned: for Alibaba Cloud sets
        tags:
          description: The snapshot's tags as a dict.
          type: dict
        lock:
          description:
            - The member's lock (C(state), C(mode), C(until), C(duration_days), C(cool_off_hours), C(cool_off_until)),
              null when it has none, and a C(state) of V(unknown) when the locks cannot be read.
          type: dict
"""

from ansible_collections.appconsistent.snapshots.plugins.module_utils.module import AppConsistentModule
from ansible_collections.appconsistent.snapshots.plugins.module_utils.set_inventory import SetInfo


def argument_spec():
    return dict(
        provider=dict(type="str", required=True, choices=["aws", "alicloud"]),
        instance_ids=dict(type="list", elements="str"),
        run_id=dict(type="str"),
        set_ids=dict(type="list", elements="str"),
        min_consistency=dict(type="str", choices=["crash", "filesystem", "application", "offline"]),
        newest_only=dict(type="bool", default=False),
        verified=dict(type="bool"),
    )


def main():
    module = AppConsistentModule(argument_spec=argument_spec(), supports_check_mode=True)
    sets = module.run_or_fail(lambda: SetInfo(module).run())
    module.exit_json(changed=False, sets=sets)


if __name__ == "__main__":
    main()
