#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: snapshot_set_verification
short_description: Record the outcome of a restore test on every member of a snapshot set
version_added: 0.1.0
description:
  - Writes the last restore test of one set on every member snapshot, as one tag, C(appconsistent:verification),
    whose value is C(<result> <verified at> <seconds to a working application>s <checks>), for example
    C(passed 2026-12-07T06:12:40Z 41.5s fs:ext4,app:mysql). The C(verify_restore) playbook calls it after each test.
  - One tag rather than one per field - an Alibaba Cloud snapshot carries at most 20 tags (AWS 50) and a set already
    uses eight, and one value written in one call never mixes one test's result with another's time. Tag values are
    at most 128 characters (Alibaba Cloud); checks that would not fit are counted (C(+N)).
  - A set is verified when every member carries the same record and its result is V(passed).
    M(appconsistent.snapshots.snapshot_set_info) reads the record (O(appconsistent.snapshots.snapshot_set_info#module:verified)),
    M(appconsistent.snapshots.snapshot_set_prune) keeps each instance's newest verified set, and the report shows it.
    A failed test replaces an earlier passed record, and the set is no longer verified.
  - Tags are written with C(CreateTags) (AWS) or C(TagResources) (Alibaba Cloud), one call for the set, paced like
    the collection's other tag writes. A locked snapshot can be tagged; the lock only forbids deleting it.
  - Every member is checked before anything is written - a member that already carries the most tags a snapshot can
    have fails the task with nothing recorded.
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
      - The set that was tested.
    type: str
    required: true
  result:
    description:
      - V(passed) when the restored volumes' filesystems were clean and the application check succeeded; V(failed)
        otherwise (a failed application check included).
      - V(passed) is refused for an incomplete set (a member missing, or a copy cut short), because a restore of
        what is there does not test the set.
    type: str
    required: true
    choices: [passed, failed]
  checks:
    description:
      - The checks the test ran, such as C(fs:ext4), C(fs:xfs), C(app:mysql), C(app:postgresql); each 1 to 40
        letters, digits, dots, underscores, colons, slashes and C(=+@-). Required when O(result=passed).
    type: list
    elements: str
    default: []
  seconds_to_application:
    description:
      - Seconds from the start of the restore to a working application (the application check succeeded).
        Required when O(result=passed); not recorded when O(result=failed).
    type: float
  verified_at:
    description:
      - When the test ended, as an ISO 8601 UTC instant; now when unset. Give it to make a rerun idempotent.
    type: str
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
      - Reads the set and returns the record that would be written; writes nothing.
  diff_mode:
    support: full
    details:
      - The set's verification before and after.
  platform:
    platforms: [aws, alicloud]
"""

EXAMPLES = r"""
- name: Record a passed restore test
  appconsistent.snapshots.snapshot_set_verification:
    provider: aws
    set_id: acs-20261207t060000-1a2b3c4d
    result: passed
    checks: [fs:ext4, app:mysql]
    seconds_to_application: 41.5

- name: Record a failed one on an Alibaba Cloud set
  appconsistent.snapshots.snapshot_set_verification:
    provider: alicloud
    set_id: ssg-bp1abcdefghijklmnop
    result: failed
    checks: [fs:xfs, app:postgresql]
"""

RETURN = r"""
set_id:
  description: The set.
  returned: always
  type: str
  sample: acs-20261207t060000-1a2b3c4d
instance_id:
  description: The instance the set was taken of.
  returned: always
  type: str
verification:
  description:
    - The record written (in check mode, that would be) - C(result), C(verified_at), C(seconds_to_application),
      C(checks) and C(verified), as RV(appconsistent.snapshots.snapshot_set_info#module:sets[].verification) reads it.
  returned: always
  type: dict
  sample: {"result": "passed", "verified_at": "2026-12-07T06:12:40Z", "seconds_to_application": 41.5,
           "checks": ["fs:ext4", "app:mysql"], "verified": true}
tag:
  description: The tag written on each member.
  returned: always
  type: dict
  sample: {"appconsistent:verification": "passed 2026-12-07T06:12:40Z 41.5s fs:ext4,app:mysql"}
snapshot_ids:
  description: The set's members.
  returned: always
  type: list
  elements: str
tagged_snapshot_ids:
  description: The members that did not carry this record yet, and were (in check mode, would be) tagged.
  returned: always
  type: list
  elements: str
api_pacing:
  description:
    - What the account's API request limits cost this task on AWS (see O(api_rate_limits)).
  returned: when the task called AWS
  type: dict
"""

from ansible_collections.appconsistent.snapshots.plugins.module_utils.module import AppConsistentModule
from ansible_collections.appconsistent.snapshots.plugins.module_utils.set_verification import SetVerification


def argument_spec():
    return dict(
        provider=dict(type="str", required=True, choices=["aws", "alicloud"]),
        set_id=dict(type="str", required=True),
        result=dict(type="str", required=True, choices=["passed", "failed"]),
        checks=dict(type="list", elements="str", default=[]),
        seconds_to_application=dict(type="float"),
        verified_at=dict(type="str"),
    )


def main():
    module = AppConsistentModule(argument_spec=argument_spec(), supports_check_mode=True)
    result = module.run_or_fail(lambda: SetVerification(module).run())
    module.keep_diff(result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
