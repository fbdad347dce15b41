#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: restore_volumes
short_description: Restore an instance's volumes from a snapshot set (AWS EBS, Alibaba Cloud ECS)
version_added: 0.1.0
description:
  - Restores the volumes of one instance from a snapshot set made by this collection (or from loose snapshots).
  - The set is chosen by O(set_id), by O(snapshot_ids), by O(snapshot_group_id) (Alibaba Cloud) or as the newest
    set of O(instance_id) with O(latest=true) that is complete and at least O(min_consistency). A set that is
    incomplete or less consistent than O(min_consistency) is refused unless O(allow_incomplete) or
    O(allow_lower_consistency) says otherwise. A set is incomplete while a snapshot has not completed, and for good
    when it holds fewer snapshots than its C(appconsistent:members) tag says it has (a copy cut short); snapshots
    named in O(snapshot_ids) are judged one by one.
  - O(mode=replace) puts the set's data back at the devices recorded in the set. On AWS the module creates one
    volume per snapshot in the instance's zone (type, size, IOPS, throughput, encryption and KMS key of the volume
    it replaces unless overridden), stops the instance if it runs, detaches the current volumes, attaches the new
    ones at the same devices and starts the instance again if it was running. The volumes it replaced are kept,
    tagged C(appconsistent:replaced-by) and C(appconsistent:replaced-at).
  - On Alibaba Cloud, O(mode=replace) onto the set's own instance stops the instance, takes a I(safety)
    snapshot-consistent group of the disks it is about to reset (unless O(safety_snapshot=false)), rolls each disk
    back with C(ResetDisk) and starts the instance if it was running. The disks keep their ids; what they held
    before is in the safety group, an C(offline)-consistent set of its own that this module can restore.
  - O(mode=attach) creates the volumes and attaches them at free device names next to the current ones, for a
    file-level restore; the instance keeps running. O(mode=volumes) only creates the volumes and returns their ids.
  - All volumes are created at once and waited for together, with one listing call per poll; detaching and
    attaching work the same way.
  - A failure part-way (a volume that does not become available, an attach error, an instance that will not stop
    or start, throttling beyond O(aws_max_attempts) or O(alicloud_max_attempts)) rolls back. The new volumes are
    detached, the original volumes are attached again at their devices (on Alibaba Cloud the disks are reset back
    from the safety group) and the instance is started if it was running. The error says what happened to each
    device. New volumes of a failed restore are kept, tagged C(appconsistent:restore-failed).
  - This module never deletes a volume, a disk or a snapshot.
  - O(set_ids), or O(instance_ids) with O(latest=true), restore the sets of many instances in one task, each onto its
    own instance, with every rule above applied to each (its checks, its plan, its rollback). They share the task's
    pacing of the account's API limits and its polling; the volumes and instances waited for are read with one
    listing call per round for all of them. Every instance is planned, with read-only calls, before any is changed.
    One instance's failure (a refusal or a rolled-back restore) is reported in its RV(restores) entry and does not
    stop the others, unless O(stop_on_failure=true); the task fails when any instance failed.
  - Options of one cloud only are refused, before any change, when the set is on the other cloud, instead of being
    ignored. They are O(iops), O(throughput) and O(aws_max_attempts) for AWS, and O(safety_snapshot) and
    O(safety_snapshot_delete_after) for Alibaba Cloud. Their defaults do not count, only a value the task (or its
    C(module_defaults)) gives.
author:
  - appconsistent.snapshots contributors (@appconsistent)
options:
  provider:
    description:
      - The cloud of the set. When not given it is told from the ids. C(snap-) snapshot ids and AWS instance ids
        (C(i-) with 8 or 17 hexadecimal digits) are AWS; C(ssg-) group ids, C(s-) snapshot ids and other instance ids
        are Alibaba Cloud.
      - An C(acs-) O(set_id) names an AWS set or a copy made by M(appconsistent.snapshots.snapshot_set_copy), whose
        copies get a new C(acs-) id on both clouds. It is looked up on AWS when O(alicloud_region) is not set, and on
        Alibaba Cloud when O(alicloud_region) is set and none of O(region), O(profile), O(access_key) and O(endpoint_url) is
        (these options also come from their environment variables). When both clouds are configured, the cloud of
        O(target_instance_id) is taken if it is given; otherwise the set is looked up on AWS first, then on Alibaba
        Cloud, with read-only calls, and the task fails asking for O(provider) when neither has it.
      - Give O(provider) to skip all this, for example in a play whose C(module_defaults) configure both clouds.
    type: str
    choices: [aws, alicloud]
  set_id:
    description:
      - The set to restore, the value of its C(appconsistent:set-id) tag (on Alibaba Cloud the C(ssg-) group id, or
        the C(acs-) id of a copy made by M(appconsistent.snapshots.snapshot_set_copy)).
      - One of O(set_id), O(set_ids), O(snapshot_ids), O(snapshot_group_id), O(instance_id) and O(instance_ids) is
        required.
      - Every id option is checked against the provider's id form before anything is read; a wildcard such as
        C(acs-*) is refused.
    type: str
  set_ids:
    description:
      - Sets of several instances to restore in one task, each onto the instance it was taken of (its
        C(appconsistent:instance-id) tag), in the same form as O(set_id).
      - Several sets of the same instance are refused with O(mode=replace), as is O(target_instance_id). With
        O(mode=attach) they are attached one set after another, each at free device names of its own; with
        O(mode=volumes) their volumes are created side by side.
    type: list
    elements: str
  instance_ids:
    description:
      - With O(latest=true), restore the newest complete set, at least O(min_consistency), of each of these instances
        in one task, as O(instance_id) does for one.
    type: list
    elements: str
  stop_on_failure:
    description:
      - With O(set_ids) or O(instance_ids), start no further restore once one has failed, and change nothing when one
        is refused while planning. Restores already running go on to their end (or their rollback).
    type: bool
    default: false
  max_concurrent_instances:
    description:
      - With O(set_ids) or O(instance_ids), how many instances are planned and restored at once. The account's API
        limits, not this number, set the pace (see O(api_rate_limits)).
    type: int
    default: 50
  snapshot_ids:
    description:
      - Snapshots to restore. With O(mode=replace) each needs a device tag (C(appconsistent:device) or C(Device)).
    type: list
    elements: str
  snapshot_group_id:
    description:
      - An Alibaba Cloud snapshot-consistent group (C(ssg-...)) to restore.
    type: str
  instance_id:
    description:
      - With O(latest=true), restore the newest complete set of this instance that is at least O(min_consistency).
      - Copies made by M(appconsistent.snapshots.snapshot_set_copy) into the region count as sets of the instance they
        were taken of, so in a disaster recovery region O(latest=true) with O(mode=volumes) restores the newest copy.
    type: str
  latest:
    description:
      - Select the newest qualifying set of O(instance_id) (or of each of O(instance_ids)).
    type: bool
    default: false
  min_consistency:
    description:
      - The least consistency the set must have (C(crash) < C(filesystem) < C(application) < C(offline)).
      - With O(latest=true) it selects the set; otherwise a weaker set is refused unless O(allow_lower_consistency=true).
    type: str
    choices: [crash, filesystem, application, offline]
    default: application
  allow_lower_consistency:
    description:
      - Restore a set weaker than O(min_consistency) (or without a consistency tag), with a warning.
    type: bool
    default: false
  allow_incomplete:
    description:
      - Restore a set some of whose snapshots have not completed (or have failed), with a warning. Only the completed
        snapshots are restored.
    type: bool
    default: false
  mode:
    description:
      - V(replace) puts the data back at the set's devices, V(attach) adds the volumes to the instance next to its
        own, V(volumes) only creates them.
    type: str
    choices: [replace, attach, volumes]
    default: replace
  target_instance_id:
    description:
      - Restore onto this instance instead of the set's own (C(appconsistent:instance-id)).
      - It must be in the same region; the volumes are made in its zone.
    type: str
  zone:
    description:
      - The zone of the new volumes with O(mode=volumes). Defaults to the zone of the target instance.
    type: str
  volume_type:
    description:
      - Volume type (AWS, for example C(gp3), C(io2)) or disk category (Alibaba Cloud, for example C(cloud_essd)) of
        the new volumes. Defaults to that of the volume being replaced or, failing that, of the snapshot's source.
    type: str
  volume_size:
    description:
      - Size in GiB of the new volumes; it may be larger than the snapshots, not smaller. Defaults to the larger of the
        snapshot's size and the replaced volume's size.
    type: int
  iops:
    description:
      - Provisioned IOPS of the new AWS volumes (io1, io2, gp3). Defaults to that of the replaced volume of the same type.
    type: int
  throughput:
    description:
      - Throughput in MiB/s of the new AWS gp3 volumes. Defaults to that of the replaced gp3 volume.
    type: int
  kms_key_id:
    description:
      - KMS key to encrypt the new volumes with. Defaults to the key of the replaced volume, then of the snapshot.
    type: str
  tags:
    description:
      - Tags to put on the new volumes, in addition to C(appconsistent:restored-from) (the snapshot),
        C(appconsistent:restored-from-set), C(appconsistent:restored-at) and C(appconsistent:restore-mode) (the
        O(mode); M(appconsistent.snapshots.restored_volumes_remove) refuses an attached volume of a V(replace) restore).
      - Values are written as strings; a list or a dictionary as a value is refused, as are more tags, or longer keys
        or values, than the provider allows on a volume.
    type: dict
    default: {}
  force:
    description:
      - Restore even when the volumes already come from the set's snapshots.
      - Without it, a volume whose data comes from the set's snapshot is left alone (RV(ignore:changed=false)), even
        if it was written to since; use V(true) to throw those writes away and restore again.
    type: bool
    default: false
  safety_snapshot:
    description:
      - Alibaba Cloud O(mode=replace) in place only. Take a snapshot-consistent group of the disks before resetting them,
        and use it to roll back when the restore fails part-way.
      - The group is an V(offline) set of its own, tagged C(appconsistent:safety-for) with the set restored. It is
        never the instance's newest set (O(latest), O(appconsistent.snapshots.snapshot_set_info#module:newest_only)) nor
        the set O(appconsistent.snapshots.snapshot_set_prune#module:protect_newest_application) keeps; restore it by its
        set id to undo the restore.
      - With V(false) the disks' current data is lost once reset, and a failure part-way cannot be rolled back.
    type: bool
    default: true
  safety_snapshot_delete_after:
    description:
      - Retention of the safety group as a duration such as C(7d), written to its C(appconsistent:delete-after) tag
        for M(appconsistent.snapshots.snapshot_set_prune). When not set, it has no expiry. At most C(36500d).
    type: str
  volume_timeout:
    description:
      - Seconds to wait for the volumes of one step (creation, detach, attach, reset) to finish.
    type: int
    default: 600
  instance_timeout:
    description:
      - Seconds to wait for the instance to stop or to start.
    type: int
    default: 600
  aws_max_attempts:
    description:
      - How many times one EC2 call of the restore is attempted when AWS answers with throttling; the waits between
        attempts grow with jitter. A call still throttled after that fails the restore, which is then rolled back.
    type: int
    default: 10
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
      - Returns the plan (the device map with the volumes that would be created) and changes nothing.
      - With O(set_ids) or O(instance_ids) on AWS, RV(api_pacing) has C(estimated_floor_s), the least time the
        restores' calls take at the account's limits.
  diff_mode:
    support: full
    details:
      - Shows the device map (device to volume) before and after.
  platform:
    platforms: [aws, alicloud]
notes:
  - Idempotency looks at where the data of each volume comes from (AWS C(SnapshotId), or the
    C(appconsistent:restored-from) tag that the module writes, which is the only record on Alibaba Cloud because
    C(ResetDisk) keeps the disk id). It does not look at what was written to the volume since.
  - Alibaba Cloud instances are stopped with C(StoppedMode=KeepCharging) so that they can always be started again.
  - Restored EBS volumes load their blocks lazily from S3; the first reads are slower until the volume is initialised.
"""

EXAMPLES = r"""
- name: Put back the newest application-consistent set of an instance
  appconsistent.snapshots.restore_volumes:
    instance_id: i-0123456789abcdef0
    latest: true
  register: restored

- name: Restore a known set onto a scratch instance for a file-level restore
  appconsistent.snapshots.restore_volumes:
    set_id: acs-20261123t060000-1a2b3c4d
    mode: attach
    target_instance_id: i-0fedcba9876543210

- name: Roll an Alibaba Cloud instance back to a snapshot-consistent group, keeping the safety group a week
  appconsistent.snapshots.restore_volumes:
    snapshot_group_id: ssg-bp1abcdef0123456789
    safety_snapshot_delete_after: 7d

- name: Create disks from a set copied to another Alibaba Cloud region by snapshot_set_copy
  appconsistent.snapshots.restore_volumes:
    provider: alicloud
    alicloud_region: cn-shanghai
    set_id: "{{ copied.set_id }}"
    mode: volumes
    zone: cn-shanghai-b

- name: Put back the newest application-consistent set of three instances in one task
  appconsistent.snapshots.restore_volumes:
    instance_ids: [i-0123456789abcdef0, i-0123456789abcdef1, i-0123456789abcdef2]
    latest: true
  register: restored_fleet

- name: Only create the volumes of a crash-consistent set in another zone
  appconsistent.snapshots.restore_volumes:
    set_id: acs-20261123t060000-1a2b3c4d
    mode: volumes
    zone: eu-west-1b
    min_consistency: crash
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
provider:
  description: The cloud of the set.
  returned: with one set
  type: str
  sample: aws
mode:
  description: The mode used.
  returned: always
  type: str
  sample: replace
instance_id:
  description: The instance restored onto (none with O(mode=volumes) and no instance).
  returned: with one set
  type: str
  sample: i-0123456789abcdef0
set:
  description:
    - The set restored (C(set_id), C(source_instance_id), C(consistency), C(complete), C(members), each member with
      its own C(consistency)). C(consistency) is the set's level, which O(min_consistency) is compared with.
    - C(below_set_level) lists the restored snapshots labelled below the set's level, such as the root volume of a set
      that froze only C(/data), whose volumes come back crash-consistent.
  returned: with one set
  type: dict
device_map:
  description: One entry per restored snapshot.
  returned: with one set
  type: list
  elements: dict
  contains:
    device:
      description: Device the volume is (or would be) attached at; none with O(mode=volumes).
      type: str
      sample: /dev/xvdf
    snapshot_id:
      description: The snapshot restored.
      type: str
    volume_id:
      description: The restored volume (on Alibaba Cloud in-place replace, the reset disk itself). Empty in check mode
        when a new volume would be created.
      type: str
    original_volume_id:
      description: The volume that was at the device before (O(mode=replace)).
      type: str
    unchanged:
      description: True when the volume already held the snapshot's data and nothing was done.
      type: bool
    volume:
      description: The properties the new volume is created with (type, size, iops, throughput, encryption, zone).
      type: dict
    outcome:
      description: What happened (C(created), C(attached), C(replaced), C(reset), or what the rollback did).
      type: str
    safety_snapshot_id:
      description: The safety snapshot of the disk (Alibaba Cloud in-place replace).
      type: str
      returned: when a safety snapshot was taken
instance_state:
  description: State of the instance at the end (C(running), C(stopped)...).
  returned: when an instance is involved
  type: str
  sample: running
safety_snapshot_group_id:
  description: The snapshot-consistent group taken before ResetDisk (Alibaba Cloud in-place replace).
  returned: when one was taken
  type: str
timings:
  description: Seconds spent per step (C(create_seconds), C(attach_seconds), C(stop_seconds), C(swap_seconds),
    C(safety_snapshot_seconds), C(reset_seconds), C(start_seconds), C(total_seconds)).
  returned: with one set
  type: dict
rollback_problems:
  description: What the rollback could not undo, per device, after a failure.
  returned: on failure part-way
  type: list
  elements: str
restores:
  description:
    - With O(set_ids) or O(instance_ids), one entry per set or instance, in the order given. Each has the keys a
      restore of one set returns (RV(provider), RV(instance_id), RV(set), RV(device_map), RV(instance_state),
      RV(timings)...) as far as that restore got, C(set_id), C(failed), C(changed) and, when it failed, C(msg) (and
      RV(rollback_problems) after a failure part-way).
  returned: with set_ids or instance_ids
  type: list
  elements: dict
failed_instances:
  description: With O(set_ids) or O(instance_ids), the instances (or, when not known, the sets) whose restore failed.
  returned: with set_ids or instance_ids
  type: list
  elements: str
  sample: [i-0123456789abcdef1]
"""

from ansible_collections.appconsistent.snapshots.plugins.module_utils.module import AppConsistentModule
from ansible_collections.appconsistent.snapshots.plugins.module_utils.restore import RestoreFailed
from ansible_collections.appconsistent.snapshots.plugins.module_utils.restore import RestoreRefused
from ansible_collections.appconsistent.snapshots.plugins.module_utils.restore_many import RestoreMany
from ansible_collections.appconsistent.snapshots.plugins.module_utils.restore_run import RestoreRun


def argument_spec():
    return dict(
        provider=dict(type="str", choices=["aws", "alicloud"]),
        set_id=dict(type="str"),
        snapshot_ids=dict(type="list", elements="str"),
        snapshot_group_id=dict(type="str"),
        instance_id=dict(type="str"),
        latest=dict(type="bool", default=False),
        min_consistency=dict(type="str", default="application", choices=["crash", "filesystem", "application", "offline"]),
        allow_lower_consistency=dict(type="bool", default=False),
        allow_incomplete=dict(type="bool", default=False),
        mode=dict(type="str", default="replace", choices=["replace", "attach", "volumes"]),
        target_instance_id=dict(type="str"),
        zone=dict(type="str"),
        volume_type=dict(type="str"),
        volume_size=dict(type="int"),
        iops=dict(type="int"),
        throughput=dict(type="int"),
        kms_key_id=dict(type="str", no_log=False),
        tags=dict(type="dict", default={}),
        force=dict(type="bool", default=False),
        safety_snapshot=dict(type="bool", default=True),
        safety_snapshot_delete_after=dict(type="str"),
        volume_timeout=dict(type="int", default=600),
        instance_timeout=dict(type="int", default=600),
        aws_max_attempts=dict(type="int", default=10),
        set_ids=dict(type="list", elements="str"),
        instance_ids=dict(type="list", elements="str"),
        stop_on_failure=dict(type="bool", default=False),
        max_concurrent_instances=dict(type="int", default=50),
    )


def main():
    selectors = ["set_id", "set_ids", "snapshot_ids", "snapshot_group_id", "instance_id", "instance_ids"]
    module = AppConsistentModule(
        argument_spec=argument_spec(),
        required_one_of=[selectors],
        mutually_exclusive=[selectors],
        supports_check_mode=True,
    )
    # set_ids or instance_ids: every instance's restore in one task, which fails when any of them failed
    many = module.params.get("set_ids") is not None or module.params.get("instance_ids") is not None
    run = RestoreMany(module) if many else RestoreRun(module)
    try:
        result = run.run()
    except RestoreRefused as exc:
        module.fail_json(msg=str(exc), **run.failure_details())
    except RestoreFailed as exc:
        module.fail_json(msg=str(exc), **run.failure_details(), **exc.details)
    for warning in result.pop("warnings"):
        module.warn(warning)
    module.keep_diff(result)
    if result.pop("failed", False):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
