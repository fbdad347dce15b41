#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: vss_snapshot
short_description: VSS application-consistent EBS snapshot sets of Windows instances through SSM
version_added: 0.1.0
description:
  - Runs the C(AWSEC2-CreateVssSnapshot) SSM document (or C(AWSEC2-VssInstallAndSnapshot) with
    O(install_vss_components=true)) on one or many Windows instances through SSM Run Command, waits for it,
    finds the resulting snapshots by tag and reports, per instance, whether the set is application-consistent.
  - An instance's set is V(application)-consistent only when the command succeeded and every snapshot
    carries the provider's C(AppConsistent) evidence; otherwise it is reported (and tagged) as what it is.
  - A set must hold a snapshot of every volume the document was asked to capture (every attached volume, the boot
    volume aside with O(exclude_boot_volume)). A set that lacks one after the wait for the evidence is tagged
    V(crash), carries the number of snapshots it should have (C(appconsistent:members)), so that every module sees it
    as incomplete, and its instance fails with C(IncompleteSet) naming the missing volumes, whatever O(on_fallback)
    says.
  - Each instance is checked before anything is sent (it exists, runs, is Windows, and its SSM agent is
    Online). An instance that fails the check gets its own error and is not sent the command; the others are.
  - Instances that a tag in O(targets) selects but that are not Windows are left out and listed in
    RV(skipped_instances), not failed; a Linux instance named by id is refused with the hint to use
    M(appconsistent.snapshots.app_consistent_group).
  - The document is sent to at most 50 instances per SendCommand, and each batch is followed with one
    C(ListCommandInvocations) listing, not one call per instance.
  - Runs on the controller; the instances need the VSS components and an instance profile that allows
    the VSS document to create and tag snapshots (C(AWSEC2VssSnapshotPolicy)).
author:
  - appconsistent.snapshots contributors (@appconsistent)
options:
  exclude_boot_volume:
    description:
      - Do not snapshot the boot volume. Cannot be used with O(create_ami).
    type: bool
    default: false
  writers:
    description:
      - Involve the VSS writers of the applications (the document's C(NoWriters) is its negation).
      - With V(false), the best a set can be is V(filesystem)-consistent, and it is reported and tagged so.
    type: bool
    default: true
  copy_only:
    description:
      - Take a copy-only backup, which keeps the native SQL Server differential backup chain intact.
    type: bool
    default: false
  create_ami:
    description:
      - Create a VSS-based AMI instead of snapshots. Needs O(ami_name) and exactly one instance.
    type: bool
    default: false
  ami_name:
    description:
      - Name of the AMI made with O(create_ami=true).
      - 3 to 128 letters, digits, spaces and C(( ) [ ] . / - ' @ _), as EC2 allows for AMI names.
    type: str
  description:
    description:
      - Description of the snapshots (at most 255 characters).
    type: str
  execution_timeout:
    description:
      - Seconds the document may spend creating the snapshots or AMI (its C(executionTimeout)).
    type: int
  collect_diagnostic_logs:
    description:
      - Have the document collect VSS diagnostic logs on the instance.
    type: bool
    default: false
  save_vss_metadata:
    description:
      - Save the VSS metadata with the snapshots (needed for SQL Server restores with VSS). Needs O(writers=true)
        and AwsVssComponents 2.4.0 or later.
    type: bool
    default: false
  install_vss_components:
    description:
      - Install or update the AwsVssComponents package before the snapshot (runs C(AWSEC2-VssInstallAndSnapshot)).
    type: bool
    default: false
  vss_version:
    description:
      - AwsVssComponents version to install with O(install_vss_components=true); empty means the recommended one.
    type: str
extends_documentation_fragment:
  - appconsistent.snapshots.ssm_command
  - appconsistent.snapshots.snapshot_set
  - appconsistent.snapshots.snapshot_lock
  - appconsistent.snapshots.wait
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
      - Reports per instance the document, its parameters and the volumes that would be captured; sends nothing.
  diff_mode:
    support: none
  platform:
    platforms: [aws]
notes:
  - The AppConsistent tag appears on new snapshots a little after the command ends; the module re-reads the
    snapshots for up to 90 seconds before it decides that a set is not application-consistent.
  - Standard output of the document is returned for diagnostics only; the snapshots are found by the
    C(appconsistent:set-id) tag the module passes to the document.
"""

EXAMPLES = r"""
- name: Application-consistent sets of two SQL Server instances, kept for a week
  appconsistent.snapshots.vss_snapshot:
    instance_ids:
      - i-0123456789abcdef0
      - i-0fedcba9876543210
    run_id: "{{ awx_job_id | default('manual') }}"
    delete_after: 7d
    tags:
      purpose: pre-patch
  register: vss

- name: Every Windows instance tagged backup=daily, a warning instead of a failure on fallback
  appconsistent.snapshots.vss_snapshot:
    targets:
      - key: tag:backup
        values: [daily]
    on_fallback: warn
    max_concurrency: "10"

- name: SQL Server sets kept a year in governance mode, which an administrator allowed to may still remove
  appconsistent.snapshots.vss_snapshot:
    instance_ids: [i-0123456789abcdef0]
    lock:
      mode: governance
      duration_days: 365

- name: Install the VSS components on the way and wait until the snapshots complete
  appconsistent.snapshots.vss_snapshot:
    instance_ids: [i-0123456789abcdef0]
    install_vss_components: true
    wait_for_completion: true
    completion_timeout: 7200
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
        - The SSM status of the instance's invocation (C(Success), C(Failed), C(TimedOut), C(DeliveryTimedOut),
          C(Undeliverable), C(Cancelled)), or C(NotSent) when the preflight refused it, C(Existing) when a set with
          the same run id was found, C(WouldRun) in check mode, C(InProgress) with O(wait=false).
      type: str
      sample: Success
    consistency:
      description: What the set achieved (C(application), C(filesystem), C(crash)), or C(none) when there is no usable set.
      type: str
      sample: application
    set_id:
      description: The set's id (the C(appconsistent:set-id) tag of its snapshots).
      type: str
      sample: acs-20261123t060000-1a2b3c4d
    snapshots:
      description: The snapshots of the set.
      type: list
      elements: dict
      contains:
        snapshot_id:
          description: Snapshot ID.
          type: str
        volume_id:
          description: Source volume.
          type: str
        device:
          description: Device the volume was attached at.
          type: str
        volume_size:
          description: Size of the source volume in GiB.
          type: int
        state:
          description: Snapshot state (C(pending), C(completed), C(error)).
          type: str
        tags:
          description: The snapshot's tags as a dict.
          type: dict
    ami_id:
      description: The AMI made with O(create_ami=true).
      type: str
      returned: when an AMI was made
    command_id:
      description: The SSM command that ran on the instance.
      type: str
    response_code:
      description: Exit code of the document on the instance.
      type: int
      returned: when the instance ran the command
    error:
      description: What went wrong (C(code) and C(message)) and what to do about it.
      type: dict
      returned: on failure or fallback
      sample: {"code": "AgentNotOnline", "message": "the SSM agent of instance i-0123456789abcdef0 is ConnectionLost: ..."}
    output:
      description: The tail of the document's standard output and error, for diagnostics.
      type: dict
      returned: when the command did not succeed
    lock:
      description:
        - The set's lock (see O(lock)), in the form RV(appconsistent.snapshots.app_consistent_group#module:results[].lock)
          has; C(locked) is true only when every member is, and C(error) says why a set was left unlocked.
      type: dict
      returned: with O(lock), for each instance with a set that is kept
    plan:
      description: What would be run (C(document), C(parameters), C(volumes)).
      type: dict
      returned: in check mode
    timings:
      description: Seconds spent (C(command_seconds)).
      type: dict
failed_instances:
  description: Instances without a set of the required consistency, with the reason.
  returned: always
  type: list
  elements: dict
  sample: [{"instance_id": "i-0123456789abcdef0", "consistency": "none", "reason": "..."}]
skipped_instances:
  description:
    - Instances that a tag in O(targets) matched but that are not Windows, left out of the task instead of failed
      (a tag such as C(backup=daily) often spans Linux instances too; app_consistent_group snapshots them).
    - Instances named by id (O(instance_ids), or C(InstanceIds) in O(targets)) are never skipped; one that is
      not Windows fails with the hint to use app_consistent_group.
  returned: always
  type: list
  elements: dict
  contains:
    instance_id:
      description: The instance.
      type: str
    platform:
      description: Its platform (C(linux)).
      type: str
    reason:
      description: Why it was left out.
      type: str
  sample: [{"instance_id": "i-0123456789abcdef1", "platform": "linux",
            "reason": "instance i-0123456789abcdef1 is Linux, not Windows: left out of this VSS task; use app_consistent_group for it"}]
command_ids:
  description: The SSM commands sent (one per batch of up to 50 instances).
  returned: always
  type: list
  elements: str
"""

from ansible_collections.appconsistent.snapshots.plugins.module_utils import creation_lock
from ansible_collections.appconsistent.snapshots.plugins.module_utils.module import AppConsistentModule
from ansible_collections.appconsistent.snapshots.plugins.module_utils.module import list_failed_instances
from ansible_collections.appconsistent.snapshots.plugins.module_utils.vss import VssParameterError
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import AppConsistentAWSError
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws_fleet import ssm_command_argument_spec
from ansible_collections.appconsistent.snapshots.plugins.module_utils.vss_runner import VssSnapshotRun


def argument_spec():
    return dict(
        ssm_command_argument_spec(),
        exclude_boot_volume=dict(type="bool", default=False),
        writers=dict(type="bool", default=True),
        copy_only=dict(type="bool", default=False),
        create_ami=dict(type="bool", default=False),
        ami_name=dict(type="str"),
        description=dict(type="str"),
        tags=dict(type="dict", default={}),
        execution_timeout=dict(type="int"),
        collect_diagnostic_logs=dict(type="bool", default=False),
        save_vss_metadata=dict(type="bool", default=False),
        install_vss_components=dict(type="bool", default=False),
        vss_version=dict(type="str"),
        run_id=dict(type="str"),
        delete_after=dict(type="str"),
        on_fallback=dict(type="str", default="fail", choices=["fail", "warn"]),
        wait=dict(type="bool", default=True),
        wait_timeout=dict(type="int", default=900),
        wait_for_completion=dict(type="bool", default=False),
        completion_timeout=dict(type="int", default=14400),
        **creation_lock.lock_argument_spec(),
    )


def main():
    module = AppConsistentModule(
        provider="aws",
        argument_spec=argument_spec(),
        required_one_of=[["instance_ids", "targets"]],
        mutually_exclusive=[["instance_ids", "targets"]],
        required_if=[["create_ami", True, ["ami_name"]]],
        supports_check_mode=True,
    )
    try:
        until = creation_lock.check_lock(module.params, "aws")
        if module.params["lock"] and module.params["create_ami"]:
            raise ValueError("lock applies to snapshot sets; an AMI made with create_ami is not locked by this module.")
        outcome = VssSnapshotRun(module).run()
    except (VssParameterError, ValueError) as exc:
        module.fail_json(msg=str(exc))
    except AppConsistentAWSError as exc:
        module.fail_aws(exc)
    for warning in outcome.pop("warnings"):
        module.warn(warning)
    if module.params["lock"]:
        creation_lock.lock_kept_sets(module, "aws", until, outcome)
    if outcome["failed_instances"]:
        failed = outcome["failed_instances"]
        level = "application" if module.params["writers"] else "filesystem"
        module.fail_json(msg=f"{len(failed)} of {len(outcome['results'])} instances have no {level}-consistent set: "
                             f"{list_failed_instances(failed)}", **outcome)
    module.exit_json(**outcome)


if __name__ == "__main__":
    main()
