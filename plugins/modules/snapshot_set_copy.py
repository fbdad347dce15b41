#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: snapshot_set_copy
short_description: Copy a whole snapshot set to another region (AWS EBS, Alibaba Cloud ECS)
version_added: 0.1.0
description:
  - Copies every snapshot of a set to O(destination_region), optionally encrypting the copies with a given KMS key.
  - The copy is a set of its own. Its snapshots keep the source set's tags (instance, device, consistency, run id,
    retention and the user's own tags) under a new C(appconsistent:set-id), and carry C(appconsistent:copied-from)
    (the source set id), C(appconsistent:source-region) and C(appconsistent:source-snapshot). In the destination
    region M(appconsistent.snapshots.snapshot_set_info), M(appconsistent.snapshots.restore_volumes) and
    M(appconsistent.snapshots.snapshot_set_prune) work with it as with any set.
  - The providers' own evidence tags (C(AppConsistent), C(FsConsistent), C(Device), C(AwsVssConfig)) are not copied;
    the set's consistency travels in C(appconsistent:consistency).
  - Idempotent by source set. When copies of O(set_id) already exist in the destination region, nothing is copied
    again; a copy cut short (a timeout, a controller that went away) is completed by running the task again, and a
    copy that ended in an error state is deleted and made anew.
  - Only a complete set is copied; a set still being taken, or one missing snapshots (its C(appconsistent:members) tag
    says how many it has), is refused. Every copied snapshot carries C(appconsistent:members), the number of snapshots
    of the source set, so that a copy cut short is known as incomplete in the destination until it is completed.
  - At most O(max_concurrent_copies) copies run at once; the others wait in a queue. When the provider refuses a copy
    because too many are running in the destination region (AWS C(ResourceLimitExceeded); Alibaba Cloud
    C(InvalidOperation.DiskHasUnfinishedSnapshotCopy)), the copy goes back into the queue instead of failing the task.
  - On AWS the source region is O(region) and the copies are made with C(CopySnapshot) in the destination region.
    O(endpoint_url), when set, is used for both regions.
  - On Alibaba Cloud the source region is O(alicloud_region); C(CopySnapshot) copies only to another region. The copy
    set is not a snapshot-consistent group (there is no API to make one from copies), so its id is an C(acs-) id,
    as an AWS set's is. M(appconsistent.snapshots.restore_volumes) tells the two apart from its connection options
    (see its O(appconsistent.snapshots.restore_volumes#module:provider) option); setting
    O(appconsistent.snapshots.restore_volumes#module:provider=alicloud) when restoring the copy is the surest.
    O(alicloud_endpoint), when set, is used for both regions.
author:
  - appconsistent.snapshots contributors (@appconsistent)
options:
  provider:
    description:
      - The cloud of the set.
    type: str
    required: true
    choices: [aws, alicloud]
  set_id:
    description:
      - The set to copy, the value of its C(appconsistent:set-id) tag (on Alibaba Cloud the C(ssg-) group id, or the
        C(acs-) id of a copy).
      - An id that is not exactly a set id (a wildcard such as C(acs-*), a trailing newline) is refused.
    type: str
  set_ids:
    description:
      - Sets to copy in one task, each in the same form as O(set_id); exactly one of O(set_id), O(set_ids) and
        O(instance_ids) is required.
      - Every set is copied as O(set_id) copies one, into a copy set of its own. Their copies share one queue, so
        O(max_concurrent_copies) counts the copies of all the sets together (copies still running from an earlier
        run of the task included), and they are read with one listing call per round.
      - A set that is refused, or whose copy fails, is reported in its RV(copies) entry and the others go on, unless
        O(stop_on_failure=true); the task fails when any set failed. A set cut short stays incomplete in the
        destination (see C(appconsistent:members)) until a rerun completes it.
    type: list
    elements: str
  instance_ids:
    description:
      - With O(latest=true), copy the newest complete set of each of these instances in the source region that is at
        least O(min_consistency), as O(set_ids) copies sets (the set is chosen as
        M(appconsistent.snapshots.restore_volumes) chooses it with
        O(appconsistent.snapshots.restore_volumes#module:latest)). An instance without such a set is reported in its
        RV(copies) entry and fails the task; the others are copied.
    type: list
    elements: str
  latest:
    description:
      - Select the newest qualifying set of each of O(instance_ids); required with O(instance_ids).
    type: bool
    default: false
  min_consistency:
    description:
      - With O(instance_ids), the least consistency the chosen sets have (C(crash) < C(filesystem) < C(application) <
        C(offline)).
    type: str
    choices: [crash, filesystem, application, offline]
    default: application
  stop_on_failure:
    description:
      - With O(set_ids) or O(instance_ids), start no further copy once the copy of one set failed or was refused. Copies already
        running are waited for (with O(wait)).
    type: bool
    default: false
  destination_region:
    description:
      - The region to copy the set to.
    type: str
    required: true
  encrypted:
    description:
      - Encrypt the copies. Copies of encrypted snapshots are always encrypted.
      - Without O(kms_key_id), the account's default key for EBS (Alibaba Cloud disks) in the destination region is
        used.
      - When not set, the copies are encrypted if O(kms_key_id) is given or the source snapshot is encrypted;
        V(false) together with O(kms_key_id) is refused.
    type: bool
  kms_key_id:
    description:
      - The KMS key (id, alias or ARN) in the destination region to encrypt the copies with; implies O(encrypted=true).
    type: str
  tags:
    description:
      - Tags to add to every copy, in addition to the source's.
      - Keys starting with C(appconsistent:), C(aws:), C(acs:) or C(aliyun), and the keys the providers own, are
        refused.
      - Values are written as strings; a list or a dictionary as a value is refused. Keys and values are checked
        against the provider's limits before the first copy (AWS 50 tags, keys of 128 and values of 256 characters;
        Alibaba Cloud 20 tags, keys and values of 128 characters), counting the copy's own tags.
    type: dict
    default: {}
  delete_after:
    description:
      - Retention of the copy as a duration (for example C(30d)), at most C(36500d), written as a new
        C(appconsistent:delete-after).
      - When not set, the copy keeps the source set's C(appconsistent:delete-after) (or has none).
    type: str
  max_concurrent_copies:
    description:
      - How many copies of this task may run at once, of all the sets of O(set_ids) together. AWS allows 20
        concurrent snapshot copies per destination region for the whole account (an EBS quota that cannot be
        raised), so the default leaves room for other copies, and a task that copies many sets is fastest with 20
        when nothing else copies into that region; a copy refused because of that quota waits in the queue. Alibaba
        Cloud allows one unfinished copy per disk and destination region; a copy refused for that waits while the
        copies of other disks go on.
      - Every call is also paced by the request token buckets of the region it goes to (on AWS, CopySnapshot and the
        reads of the copies go to the destination region, which has buckets of its own; see O(api_rate_limits)).
    type: int
    default: 5
  wait:
    description:
      - Wait until every copy has completed.
      - With V(false), the task returns once every copy has been started; with more members than
        O(max_concurrent_copies), that still means waiting for earlier copies to finish.
    type: bool
    default: true
  wait_timeout:
    description:
      - How many seconds to wait in all. Copies of large volumes across regions can take hours.
      - When it runs out, the task fails and says what is still running; running it again goes on from there.
    type: int
    default: 14400
extends_documentation_fragment:
  - appconsistent.snapshots.snapshot_lock
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
      - Finds the set and the copies already made and returns what would be copied; the new set id is then null.
  diff_mode:
    support: full
    details:
      - The copies in the destination region (source snapshot id to copy id) before and after.
  platform:
    platforms: [aws, alicloud]
"""

EXAMPLES = r"""
- name: Copy the newest pre-patch set to the disaster-recovery region, re-encrypted with its key
  appconsistent.snapshots.snapshot_set_copy:
    provider: aws
    region: eu-west-1
    set_id: "{{ backup.sets[0].set_id }}"
    destination_region: eu-central-1
    kms_key_id: alias/dr-backups
    delete_after: 30d
  register: dr_copy

- name: Copy the newest set of every instance of a backup run in one task, within the region's copy quota
  appconsistent.snapshots.snapshot_set_copy:
    provider: aws
    region: eu-west-1
    set_ids: "{{ backup.sets | map(attribute='set_id') | list }}"
    destination_region: eu-central-1
    max_concurrent_copies: 20
  register: dr_copies

- name: Restore the copy in the destination region
  appconsistent.snapshots.restore_volumes:
    provider: aws
    region: eu-central-1
    set_id: "{{ dr_copy.set_id }}"
    mode: volumes
    zone: eu-central-1a

- name: Copy a set to the disaster-recovery region and lock the copy there for 90 days
  appconsistent.snapshots.snapshot_set_copy:
    provider: aws
    region: eu-west-1
    set_id: "{{ backup.sets[0].set_id }}"
    destination_region: eu-central-1
    lock:
      mode: compliance
      duration_days: 90
      cool_off_hours: 24

- name: Start copying an Alibaba Cloud set and return without waiting for completion
  appconsistent.snapshots.snapshot_set_copy:
    provider: alicloud
    alicloud_region: cn-hangzhou
    set_id: ssg-bp1example00000001
    destination_region: cn-shanghai
    wait: false
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
set_id:
  description: The id of the copy set in the destination region (null in check mode when it does not exist yet).
  returned: with set_id
  type: str
  sample: acs-20261123t061500-9f8e7d6c
source_set_id:
  description: The set that was copied.
  returned: with set_id
  type: str
source_region:
  description: The region of the source set.
  returned: always
  type: str
destination_region:
  description: The region of the copy.
  returned: always
  type: str
provider:
  description: V(aws) or V(alicloud).
  returned: always
  type: str
instance_id:
  description: The instance the source set was taken of.
  returned: with set_id
  type: str
consistency:
  description: The consistency of the set, as recorded in its C(appconsistent:consistency) tags.
  returned: with set_id
  type: str
  sample: application
complete:
  description: Whether every copy has completed.
  returned: with set_id
  type: bool
members:
  description: One entry per member of the source set.
  returned: with set_id
  type: list
  elements: dict
  contains:
    source_snapshot_id:
      description: The member of the source set.
      type: str
    snapshot_id:
      description: Its copy in the destination region (null when not made yet).
      type: str
    device:
      description: The device the source volume was attached at.
      type: str
    state:
      description: The copy's state (V(completed)/V(accomplished) when done; V(not_started) in check mode).
      type: str
    progress:
      description: The copy's progress as the provider reports it.
      type: str
started_snapshot_ids:
  description: The copies started by this run.
  returned: with set_id
  type: list
  elements: str
discarded_snapshot_ids:
  description: Copies from an earlier run that had ended in an error state and were deleted to be made anew.
  returned: with set_id
  type: list
  elements: str
limit_waits:
  description: How often the provider's concurrent-copy limit sent a copy back into the queue.
  returned: with set_id
  type: int
lock:
  description:
    - The copy set's lock in the destination region (see O(lock)); a lock on the source set is not copied. C(locked) is
      true only when every member is; C(members) holds each member's C(snapshot_id) and C(lock), C(error) what stopped
      a member from being locked. In check mode, C(locked) is null and C(planned) holds the lock options.
  returned: with O(lock), once the copies exist
  type: dict
copies:
  description:
    - With O(set_ids) or O(instance_ids), one entry per set or instance, in the order given, with the keys a copy of
      one set returns (RV(set_id), RV(source_set_id), RV(instance_id), RV(complete), RV(members),
      RV(started_snapshot_ids)...), C(failed) and, when it failed, C(msg).
  returned: with set_ids or instance_ids
  type: list
  elements: dict
failed_sets:
  description:
    - With O(set_ids) or O(instance_ids), the source sets whose copy failed, was refused or was not started (the
      instance, for an instance without a qualifying set).
  returned: with set_ids or instance_ids
  type: list
  elements: str
"""

from ansible_collections.appconsistent.snapshots.plugins.module_utils import creation_lock
from ansible_collections.appconsistent.snapshots.plugins.module_utils.module import AppConsistentModule
from ansible_collections.appconsistent.snapshots.plugins.module_utils.alicloud import AlibabaCloudError
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import AppConsistentAWSError
from ansible_collections.appconsistent.snapshots.plugins.module_utils.set_copy import CopyFailed
from ansible_collections.appconsistent.snapshots.plugins.module_utils.set_copy import CopyRefused
from ansible_collections.appconsistent.snapshots.plugins.module_utils.set_copy import SetCopy
from ansible_collections.appconsistent.snapshots.plugins.module_utils.set_copy import copy_api
from ansible_collections.appconsistent.snapshots.plugins.module_utils.set_copy_many import ManyCopy


SELECTORS = ["set_id", "set_ids", "instance_ids"]


def argument_spec():
    return dict(
        provider=dict(type="str", required=True, choices=["aws", "alicloud"]),
        set_id=dict(type="str"),
        set_ids=dict(type="list", elements="str"),
        instance_ids=dict(type="list", elements="str"),
        latest=dict(type="bool", default=False),
        min_consistency=dict(type="str", default="application", choices=["crash", "filesystem", "application", "offline"]),
        stop_on_failure=dict(type="bool", default=False),
        destination_region=dict(type="str", required=True),
        encrypted=dict(type="bool"),
        kms_key_id=dict(type="str", no_log=False),
        tags=dict(type="dict", default={}),
        delete_after=dict(type="str"),
        max_concurrent_copies=dict(type="int", default=5),
        wait=dict(type="bool", default=True),
        wait_timeout=dict(type="int", default=14400),
        **creation_lock.lock_argument_spec(),
    )


def _finish(module, result):
    warnings = result.pop("warnings", [])
    for warning in warnings:
        module.warn(warning)
    diff = result.pop("diff")
    if module._diff:  # pylint: disable=protected-access
        result["diff"] = diff
    return result


def _lock_copies(module, until, result, destination):
    """Lock each set a many-set copy made; a set left unlocked fails as its copy would have."""
    made = [entry for entry in result["copies"] if not entry.get("failed") and entry.get("set_id")]
    for entry in made:
        entry.setdefault("changed", False)
    unlocked = creation_lock.lock_copies(module, until, made, destination)
    result["changed"] = result.get("changed") or any(entry["changed"] for entry in made)
    for entry in made:
        if entry["set_id"] in unlocked:
            error = unlocked[entry["set_id"]]
            entry.update(failed=True, msg=error[0].upper() + error[1:] + ".")
            result.setdefault("failed_sets", []).append(entry.get("source_set_id") or entry["set_id"])
    if unlocked:
        result["failed"] = True
        result["msg"] = "; ".join(([result["msg"]] if result.get("msg") else []) + list(unlocked.values()))


def main():
    module = AppConsistentModule(argument_spec=argument_spec(), supports_check_mode=True,
                                 required_one_of=[SELECTORS], mutually_exclusive=[SELECTORS])
    try:
        until = creation_lock.check_lock(module.params, module.params["provider"], needs_wait=False)
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    try:
        api = copy_api(module)
        # set_ids or instance_ids: every set's copy in one task, which fails when any of them failed
        copier = SetCopy if module.params.get("set_id") is not None else ManyCopy
        result = copier(api, module.params, check_mode=module.check_mode).run()
        if module.params["lock"]:
            destination = api.destination if module.params["provider"] == "aws" else api.destination_api
            if copier is SetCopy:
                lock_error = creation_lock.lock_copies(module, until, [result], destination).get(result["set_id"])
                if lock_error:
                    module.fail_json(msg=lock_error[0].upper() + lock_error[1:] + ".", **_finish(module, result))
            else:
                _lock_copies(module, until, result, destination)
    except CopyRefused as exc:
        module.fail_json(msg=str(exc))
    except CopyFailed as exc:
        module.fail_json(msg=str(exc), **_finish(module, exc.result))
    except AppConsistentAWSError as exc:
        module.fail_aws(exc)
    except AlibabaCloudError as exc:
        module.fail_alicloud(exc)
    result = _finish(module, result)
    if result.pop("failed", False):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
