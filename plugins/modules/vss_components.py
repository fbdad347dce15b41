#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: vss_components
short_description: Install or remove the AWS VSS components on Windows instances through SSM
version_added: 0.1.0
description:
  - Makes sure the C(AwsVssComponents) package, which the C(AWSEC2-CreateVssSnapshot) document needs, is installed
    (or absent) on one or many Windows instances, by running C(AWS-ConfigureAWSPackage) through SSM Run Command.
  - What is installed is read from SSM Inventory (C(ListInventoryEntries), type C(AWS:Application)). An instance
    whose inventory names the package at the wanted version is left alone, so a rerun changes nothing.
  - An instance without collected inventory cannot tell what it has; the package is configured on it anyway
    (installing it again is harmless) and the result says C(inventory=false).
  - Each instance is checked before anything is sent (it exists, runs, is Windows, its SSM agent is Online);
    one that fails the check gets its own error and the others go on. The document goes to at most 50 instances
    per SendCommand and each batch is followed with one listing call.
author:
  - appconsistent.snapshots contributors (@appconsistent)
options:
  state:
    description:
      - V(present) installs the package where it is missing (or not at O(version)); V(absent) removes it.
    type: str
    choices: [present, absent]
    default: present
  version:
    description:
      - The package version to install, such as V(2.5.1); empty installs the current one and accepts any
        installed version.
    type: str
  wait_timeout:
    description:
      - How many seconds to wait for the command to finish on every instance.
    type: int
    default: 900
extends_documentation_fragment:
  - appconsistent.snapshots.ssm_command
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
      - Reads inventory and reports per instance what would be installed or removed; sends nothing.
  diff_mode:
    support: none
  platform:
    platforms: [aws]
notes:
  - The controller needs C(ssm:ListInventoryEntries), C(ssm:SendCommand) on the C(AWS-ConfigureAWSPackage)
    document and C(ssm:ListCommandInvocations); the instances need access to the package (C(AmazonSSMManagedInstanceCore)).
  - SSM Inventory is refreshed by its own association (every 30 minutes by default), so right after an install the
    inventory may still show the old state; the module reports the version it installed.
seealso:
  - module: appconsistent.snapshots.vss_snapshot
"""

EXAMPLES = r"""
- name: The VSS components on every SQL Server before the first backup
  appconsistent.snapshots.vss_components:
    targets:
      - key: tag:role
        values: [sql]

- name: Pin one version on two instances
  appconsistent.snapshots.vss_components:
    instance_ids:
      - i-0123456789abcdef0
      - i-0fedcba9876543210
    version: 2.5.1

- name: What would be installed, without sending anything
  appconsistent.snapshots.vss_components:
    instance_ids: [i-0123456789abcdef0]
  check_mode: true
  register: vss_components
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
results:
  description: One entry per instance, in the order they were given.
  returned: always
  type: list
  elements: dict
  contains:
    instance_id:
      description: The instance.
      type: str
      sample: i-0123456789abcdef0
    status:
      description:
        - C(Present) or C(Absent) when nothing had to change, C(Installed) or C(Uninstalled) when the command
          succeeded, C(WouldInstall) or C(WouldUninstall) in check mode, C(NotSent) when the preflight refused the
          instance, otherwise the SSM status of the failed command (C(Failed), C(TimedOut), C(DeliveryTimedOut)...).
      type: str
      sample: Installed
    action:
      description: C(install), C(uninstall), or null when nothing had to be done.
      type: str
      sample: install
    inventory:
      description: Whether SSM Inventory told what was installed on the instance.
      type: bool
      sample: true
    version_before:
      description: The package version inventory reported before the task, null when it was not installed or not known.
      type: str
      sample: 2.4.0
    version:
      description: The version now installed as far as the module knows (C(latest) when no O(version) was asked for).
      type: str
      sample: 2.5.1
    agent_version:
      description: The SSM agent's version, from DescribeInstanceInformation.
      type: str
      sample: 3.3.1000.0
    command_id:
      description: The SSM command that configured the package.
      type: str
    changed:
      description: Whether a command was sent to the instance.
      type: bool
    error:
      description: What went wrong (C(code) and C(message)).
      type: dict
      returned: on failure
    output:
      description: The tail of the command's standard output and error.
      type: dict
      returned: when the command did not succeed
failed_instances:
  description: Instances where the package could not be configured, with the reason.
  returned: always
  type: list
  elements: dict
command_ids:
  description: The SSM commands sent.
  returned: always
  type: list
  elements: str
"""

from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws_fleet import ssm_command_argument_spec
from ansible_collections.appconsistent.snapshots.plugins.module_utils.module import AppConsistentModule
from ansible_collections.appconsistent.snapshots.plugins.module_utils.module import list_failed_instances
from ansible_collections.appconsistent.snapshots.plugins.module_utils.vss_components import VssComponentsError
from ansible_collections.appconsistent.snapshots.plugins.module_utils.vss_components import VssComponentsRun


def argument_spec():
    return dict(
        ssm_command_argument_spec(),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        version=dict(type="str"),
        wait_timeout=dict(type="int", default=900),
    )


def main():
    module = AppConsistentModule(
        provider="aws",
        argument_spec=argument_spec(),
        required_one_of=[["instance_ids", "targets"]],
        mutually_exclusive=[["instance_ids", "targets"]],
        supports_check_mode=True,
    )
    outcome = module.run_or_fail(lambda: VssComponentsRun(module).run(), refusals=(VssComponentsError,))
    failed = outcome["failed_instances"]
    if failed:
        module.fail_json(msg=f"the VSS components could not be configured on {len(failed)} of "
                             f"{len(outcome['results'])} instances: {list_failed_instances(failed)}", **outcome)
    module.exit_json(**outcome)


if __name__ == "__main__":
    main()
