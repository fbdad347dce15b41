#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: snapshot_set_share
short_description: Share a snapshot set with other AWS accounts, or stop sharing it
version_added: 0.1.0
description:
  - Grants (O(state=present)) or revokes (O(state=absent)) the permission to create volumes from every snapshot of a
    set for the AWS accounts in O(account_ids).
  - A set is never made public by accident. The public permission (the C(all) group) is only granted with
    O(public=true) spelled out, and C(all) in O(account_ids) is refused. With O(state=absent) and O(public=true), the
    public permission is removed.
  - The current permissions of every member are read first (C(DescribeSnapshotAttribute)); only what differs is
    changed, so a rerun changes nothing. Permissions of accounts not named are left as they are.
  - The set is shared whole or not at all. Before any permission changes, every member is checked. Encrypted snapshots
    cannot be made public, and snapshots encrypted with the AWS managed key (C(aws/ebs)) cannot be shared with other
    accounts at all (copy the set with M(appconsistent.snapshots.snapshot_set_copy) and a customer managed
    O(appconsistent.snapshots.snapshot_set_copy#module:kms_key_id) first). The accounts also need use of the
    customer managed key; this module does not change key policies.
  - B(Alibaba Cloud) is not supported. ECS has no API that shares a snapshot with another account (only custom
    images can be shared), so the task fails with O(provider=alicloud) and says so.
author:
  - appconsistent.snapshots contributors (@appconsistent)
options:
  provider:
    description:
      - The cloud of the set. Only V(aws) supports sharing; V(alicloud) fails with the reason.
    type: str
    required: true
    choices: [aws, alicloud]
  set_id:
    description:
      - The set to share, the value of its C(appconsistent:set-id) tag, in O(region).
      - An id that is not exactly a set id (C(acs-YYYYMMDDtHHMMSS-xxxxxxxx)) is refused; a wildcard such as C(acs-*)
        never selects other sets.
    type: str
    required: true
  account_ids:
    description:
      - The AWS account ids (12 digits) to grant or revoke the permission for.
    type: list
    elements: str
    default: []
  public:
    description:
      - With O(state=present), also make every snapshot of the set public (anyone can create volumes from it).
      - With O(state=absent), remove the public permission.
    type: bool
    default: false
  state:
    description:
      - V(present) grants the permissions, V(absent) revokes them.
    type: str
    choices: [present, absent]
    default: present
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
      - Reads and checks the permissions and returns what would change; changes nothing.
  diff_mode:
    support: full
    details:
      - The account ids and public flag of every member before and after.
  platform:
    platforms: [aws]
"""

EXAMPLES = r"""
- name: Let the recovery account create volumes from the set
  appconsistent.snapshots.snapshot_set_share:
    provider: aws
    region: eu-west-1
    set_id: "{{ dr_copy.set_id }}"
    account_ids: ["210987654321"]

- name: Stop sharing it when the recovery test is over
  appconsistent.snapshots.snapshot_set_share:
    provider: aws
    region: eu-west-1
    set_id: "{{ dr_copy.set_id }}"
    account_ids: ["210987654321"]
    state: absent

- name: Publish a set of a demo environment (never done without public true)
  appconsistent.snapshots.snapshot_set_share:
    provider: aws
    set_id: acs-20261123t060000-1a2b3c4d
    public: true
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
  description: The set.
  returned: always
  type: str
provider:
  description: V(aws).
  returned: always
  type: str
account_ids:
  description: The accounts that may create volumes from every member of the set, after the task.
  returned: always
  type: list
  elements: str
public:
  description: Whether every member of the set is public after the task.
  returned: always
  type: bool
members:
  description: The permissions of each member after the task (in check mode, as they would be).
  returned: always
  type: list
  elements: dict
  contains:
    snapshot_id:
      description: The snapshot.
      type: str
    device:
      description: The device its volume was attached at.
      type: str
    account_ids:
      description: The accounts that may create volumes from it.
      type: list
      elements: str
    public:
      description: Whether it is public.
      type: bool
    added_account_ids:
      description: The accounts granted by this task.
      type: list
      elements: str
    removed_account_ids:
      description: The accounts revoked by this task.
      type: list
      elements: str
"""

from ansible_collections.appconsistent.snapshots.plugins.module_utils.module import AppConsistentModule
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import AppConsistentAWSError
from ansible_collections.appconsistent.snapshots.plugins.module_utils.set_share import SetShare
from ansible_collections.appconsistent.snapshots.plugins.module_utils.set_share import ShareRefused
from ansible_collections.appconsistent.snapshots.plugins.module_utils.set_share import validate


def argument_spec():
    return dict(
        provider=dict(type="str", required=True, choices=["aws", "alicloud"]),
        set_id=dict(type="str", required=True),
        account_ids=dict(type="list", elements="str", default=[]),
        public=dict(type="bool", default=False),
        state=dict(type="str", default="present", choices=["present", "absent"]),
    )


def main():
    module = AppConsistentModule(argument_spec=argument_spec(), supports_check_mode=True)
    try:
        validate(module.params)
        share = SetShare(module.aws_client("ec2"), lambda: module.aws_client("kms"), module.params,
                         check_mode=module.check_mode)
        result = share.run()
    except ShareRefused as exc:
        module.fail_json(msg=str(exc))
    except AppConsistentAWSError as exc:
        module.fail_aws(exc)
    for warning in result.pop("warnings"):
        module.warn(warning)
    module.keep_diff(result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
