#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: restored_volumes_remove
short_description: Detach and delete volumes that restore_volumes created
version_added: 0.1.0
description:
  - Removes the volumes (AWS EBS volumes, Alibaba Cloud disks) listed in O(volume_ids) that
    M(appconsistent.snapshots.restore_volumes) created, such as the scratch volumes of a restore verification.
    Each one attached to an instance is detached first (O(detach=true)), the detach is waited for, and then the
    volume is deleted.
  - Safety first. Every listed volume is read and checked before anything is changed, and the task fails without
    changing anything when any of them is refused. Refused are a volume without the C(appconsistent:restored-from)
    tag (restore_volumes writes it on every volume it creates), a volume that was not created from the snapshot that
    tag names (an Alibaba Cloud disk rolled back in place with C(ResetDisk) carries the tag but is an instance's own
    disk), a volume that a O(appconsistent.snapshots.restore_volumes#module:mode=replace) restore put in service and
    that is still attached (the replaced volume's C(appconsistent:replaced-by) tag names it, or its own
    C(appconsistent:restore-mode) tag says V(replace)), the boot (system) disk of an instance, and a volume attached
    to several instances.
  - Only the listed volumes are touched; the module never looks for volumes to remove by itself.
  - A listed volume that no longer exists is reported as V(absent) and is no change, so a rerun is idempotent.
  - On AWS the calls are C(DescribeVolumes), C(DescribeInstances) (for the root devices), C(DetachVolume) and
    C(DeleteVolume); on Alibaba Cloud C(DescribeDisks), C(DetachDisk) and C(DeleteDisk).
  - "Tag filters find what a replace restore put in service: one C(DescribeVolumes) on AWS, one C(DescribeDisks) per
    attached listed disk on Alibaba Cloud."
author:
  - appconsistent.snapshots contributors (@appconsistent)
options:
  provider:
    description:
      - The cloud the volumes are in.
    type: str
    required: true
    choices: [aws, alicloud]
  volume_ids:
    description:
      - The volumes to remove, C(vol-...) ids on AWS and C(d-...) disk ids on Alibaba Cloud.
      - Duplicates are removed. An empty list is no change.
    type: list
    elements: str
    required: true
  detach:
    description:
      - Detach each listed volume that is attached to an instance before deleting it.
      - With V(false), a listed volume that is attached is refused, and nothing is changed.
    type: bool
    default: true
  wait_timeout:
    description:
      - How many seconds to wait for the detach of the attached volumes to finish.
      - When the time is up, no volume is deleted and the task fails; run it again to finish.
    type: int
    default: 300
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
      - The volumes are read and checked as in a real run; RV(volumes) says which would be detached (RV(volumes[].detached_from))
        and deleted (V(would_delete)). Nothing is changed.
  diff_mode:
    support: full
    details:
      - The listed volumes that exist before, none after.
  platform:
    platforms: [aws, alicloud]
"""

EXAMPLES = r"""
- name: Restore a set to scratch volumes on a verification instance
  appconsistent.snapshots.restore_volumes:
    provider: aws
    instance_id: i-0123456789abcdef0
    latest: true
    mode: attach
    target_instance_id: i-0fedcba9876543210
    force: true
  register: restored

- name: Remove the scratch volumes again, detaching them first
  appconsistent.snapshots.restored_volumes_remove:
    provider: aws
    volume_ids: "{{ restored.device_map | rejectattr('unchanged') | map(attribute='volume_id') | select | list }}"

- name: Delete two Alibaba Cloud disks made by restore_volumes in mode volumes (not attached)
  appconsistent.snapshots.restored_volumes_remove:
    provider: alicloud
    volume_ids: [d-bp1abcdefghijklmnop0, d-bp1abcdefghijklmnop1]
    alicloud_region: cn-hangzhou
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
volumes:
  description: What was done to each listed volume, in the order given.
  returned: always
  type: list
  elements: dict
  contains:
    volume_id:
      description: The volume's id.
      type: str
      sample: vol-0123456789abcdef0
    action:
      description:
        - V(deleted) (detached first when RV(volumes[].detached_from) is set), V(absent) (it did not exist, no change),
          V(would_delete) (check mode).
        - V(kept) when the task failed before this volume was deleted.
      type: str
      sample: deleted
    detached_from:
      description:
        - The instance the volume was attached to and detached from (in check mode, would be detached from).
        - V(null) when it was not attached.
      type: str
      sample: i-0fedcba9876543210
"""

from ansible_collections.appconsistent.snapshots.plugins.module_utils.module import AppConsistentModule
from ansible_collections.appconsistent.snapshots.plugins.module_utils.alicloud import AlibabaCloudError
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import AppConsistentAWSError
from ansible_collections.appconsistent.snapshots.plugins.module_utils.volume_remove import AlicloudDisks
from ansible_collections.appconsistent.snapshots.plugins.module_utils.volume_remove import AwsVolumes
from ansible_collections.appconsistent.snapshots.plugins.module_utils.volume_remove import RemovalFailed
from ansible_collections.appconsistent.snapshots.plugins.module_utils.volume_remove import RemovalRefused
from ansible_collections.appconsistent.snapshots.plugins.module_utils.volume_remove import VolumeRemoval


def argument_spec():
    return dict(
        provider=dict(type="str", required=True, choices=["aws", "alicloud"]),
        volume_ids=dict(type="list", elements="str", required=True),
        detach=dict(type="bool", default=True),
        wait_timeout=dict(type="int", default=300),
    )


def main():
    module = AppConsistentModule(argument_spec=argument_spec(), supports_check_mode=True)
    params = module.params
    if params["wait_timeout"] < 0:
        module.fail_json(msg="wait_timeout must be 0 or more seconds")
    api = AwsVolumes(module.aws_client("ec2")) if params["provider"] == "aws" else AlicloudDisks(module.alicloud)
    removal = VolumeRemoval(api, params["volume_ids"], detach=params["detach"], wait_timeout=params["wait_timeout"],
                            check_mode=module.check_mode)
    try:
        result = removal.run()
    except RemovalRefused as exc:
        module.fail_json(msg=f"Refused: {exc}", volumes=[])
    except RemovalFailed as exc:
        module.fail_json(msg=f"Removing the restored volumes failed: {exc}", changed=exc.changed, volumes=exc.volumes)
    except AppConsistentAWSError as exc:
        module.fail_aws(exc, volumes=[])
    except AlibabaCloudError as exc:
        module.fail_alicloud(exc, volumes=[])
    module.keep_diff(result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
