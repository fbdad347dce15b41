#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: app_consistent_group
short_description: One point-in-time snapshot set per instance, at the consistency asked for, on Alibaba Cloud or AWS
version_added: 0.1.0
description:
  - Makes one point-in-time set of all (or selected) disks of each of one or many instances.
  - O(consistency=application) quiesces the applications (pre/post scripts and a filesystem freeze on Linux,
    VSS writers on Windows); V(filesystem) only freezes (Windows without writers); V(crash) involves no agent.
  - O(consistency=offline) stops a running instance (a clean shutdown, forced only with O(force_stop=true)), takes
    the set while it is stopped and starts it again; an instance that was stopped stays stopped. It is the only
    safe level for a root volume, and the strongest. The downtime is reported.
  - On B(Linux), on both providers, O(consistency=offline) with a list in O(mounts) unmounts those data filesystems
    through the agent (SSM on AWS, Cloud Assistant on Alibaba Cloud) instead of stopping the instance (refusing C(/),
    C(/boot), a filesystem in use, whose processes are named, a bind mount of a directory, and a filesystem also
    mounted at a path not given, such as another btrfs subvolume of it), snapshots only the disks or volumes given in
    O(disk_ids) (CreateSnapshots on AWS, CreateSnapshotGroup on Alibaba Cloud) and mounts them again; a detached
    remount on the instance brings them back after at most max(O(freeze_timeout), 60) seconds whatever happens to the
    controller. Each instance is snapshotted as soon as it reports its filesystems unmounted, never once its remount
    may have fired. No CreateSnapshots or CreateSnapshotGroup is made within 5 seconds of that deadline, and a set
    is V(offline) only when the call returned before the deadline and the remount found the filesystems
    still unmounted, V(crash) otherwise (a remount answering that the watchdog had already mounted them again leaves it V(crash), error
    C(RemountedByWatchdog)). An unmount or freeze command the controller gives up on (O(wait_timeout)) is cancelled
    (SSM CancelCommand; Cloud Assistant StopInvocation on Alibaba Cloud), so that a late delivery does not run it
    afterwards. StopInvocation cancels only a run that has not started; one already started goes on to its end,
    and the result says which it was.
    The downtime reported is the time the filesystems were unmounted, and a host whose filesystems could
    not be mounted again fails even with a set. Windows instances are refused.
  - On B(Alibaba Cloud), V(application) and V(filesystem) run the Cloud Assistant C(app-snapshot-plugin)
    (C(app-snapshot-plugin-win) on Windows) with one RunCommand per 100 instances that share a command line;
    the plug-in's exit code is mapped to its meaning, the group id read from its output, and the consistency
    from the snapshots' C(AppConsistent)/C(FsConsistent) tags. V(crash) calls CreateSnapshotGroup directly.
    A plug-in run not started when O(wait_timeout) ends is cancelled (StopInvocation); one already started
    goes on, and thaws by itself after O(freeze_timeout). The plug-in's parameters are separated by commas, so it
    can leave out at most one disk of an instance; an instance whose set would leave out more is refused before
    any command (error C(TooManyExcludedDisks)).
  - On B(AWS Linux), the freeze helper (installed by the C(consistency_scripts) role) runs the prescript and freezes
    the data filesystems through SSM; the controller calls CreateSnapshots as soon as an instance is frozen, and
    the thaw follows at once. With initiator V(controller) the freezes go out in waves of 50 instances (one
    SendCommand) a second apart, at most 200 instances freezing or frozen at a time, so that a large fleet never
    waits frozen for the controller. The helper's watchdog thaws on the instance at O(freeze_timeout) whatever happens
    to the controller. On B(AWS Windows), the VSS document runs, as M(appconsistent.snapshots.vss_snapshot) does.
    The Windows and Linux instances of one task run side by side; anything either part would refuse is refused
    before either part starts.
  - The consistency reported and tagged is what was achieved, never what was asked; O(on_fallback) decides what
    a shortfall does to the task.
  - Options of one cloud only are refused, before any call, in a task for the other O(provider), instead of being
    ignored. They are O(initiator), O(freeze_helper_path), O(max_concurrency), O(max_errors) and O(delivery_timeout)
    for AWS, and O(name), O(ram_role_name) and O(enable_writers) for Alibaba Cloud. Their defaults do not count, only
    a value the task (or its C(module_defaults)) gives.
author:
  - appconsistent.snapshots contributors (@appconsistent)
options:
  provider:
    description: The cloud of the instances.
    type: str
    required: true
    choices: [alicloud, aws]
  consistency:
    description:
      - The consistency to reach. V(application) needs the pre/post scripts on Linux (both providers) and the VSS
        writers on Windows. V(offline) stops the instance while the set is taken, or unmounts the filesystems in
        O(mounts).
    type: str
    default: application
    choices: [offline, application, filesystem, crash]
  instance_ids:
    description:
      - The instances. Cloud Assistant takes 100 per command and SSM 50; larger lists are sent in batches.
      - Each must be an instance id of O(provider) (AWS C(i-) and 8 or 17 hex digits); a wildcard is refused.
    type: list
    elements: str
    required: true
  disk_ids:
    description:
      - Only these disks (Alibaba C(d-...)) or volumes (AWS C(vol-...)) of the instances. Each must be attached to one
        of them.
    type: list
    elements: str
  exclude_disk_ids:
    description:
      - All disks of the instances but these.
      - On Alibaba Cloud with O(consistency=application) or O(consistency=filesystem), at most one, as the plug-in takes
        one disk id in its C(-ExcludeDiskId) parameter.
    type: list
    elements: str
  exclude_boot_disk:
    description:
      - Leave the system disk (boot volume) out of the set.
    type: bool
    default: false
  name:
    description:
      - Name of the snapshot-consistent group (Alibaba Cloud); a letter first, then letters, digits, C(_), C(.), C(:) and C(-).
      - Defaults to C(appconsistent-<UTC time>).
    type: str
  description:
    description:
      - Description of the group and its snapshots.
      - "At most 255 characters on AWS; on Alibaba Cloud at most 256 letters, digits, spaces and C(_ . : / @ + -)."
    type: str
  pre_script_path:
    description:
      - The prescript on Linux instances; it must be owned by root with mode 0700 in a directory that others cannot
        write, or it is not run and the set is only filesystem-consistent.
    type: path
    default: /usr/local/lib/appconsistent/prescript.sh
  post_script_path:
    description:
      - The postscript on Linux instances, with the same requirements as O(pre_script_path).
    type: path
    default: /usr/local/lib/appconsistent/postscript.sh
  freeze:
    description:
      - Freeze the filesystems on Linux (the plug-in's C(EnableFsFreeze)); with V(false) only the scripts quiesce the
        applications, and on AWS the set is then reported crash-consistent.
    type: bool
    default: true
  freeze_timeout:
    description:
      - The longest the filesystems may stay frozen, in seconds (the plug-in's C(TimeoutInSeconds); the freeze
        helper's watchdog deadline on AWS).
    type: int
    default: 30
  script_timeout:
    description:
      - The longest each pre/post script may run, in seconds (C(ScriptTimeoutInSeconds)).
    type: int
    default: 1800
  ram_role_name:
    description:
      - Alibaba Cloud, O(consistency=application) or V(filesystem) - the RAM role attached to the instances, which the
        plug-in uses to call the ECS API from inside them.
    type: str
  enable_writers:
    description:
      - Alibaba Cloud Windows - involve the VSS writers (C(EnableWriters)). Only used with O(consistency=application).
    type: bool
    default: true
  mounts:
    description:
      - AWS Linux - the data mount points to freeze, or V(auto) for every data filesystem on an EBS volume of the
        instance. C(/) and C(/boot) are never frozen, nor a btrfs subvolume or bind mount of their filesystems (the
        freeze helper compares filesystems, not paths).
      - V(auto) leaves out a filesystem that holds the SSM or Cloud Assistant agent's state, the freeze helper's state
        directory, C(/tmp), C(/var/tmp) or C(/var/log), and any filesystem mounted under C(/var/log) (a CIS layout's
        C(/var), C(/var/log), C(/var/log/audit) and C(/tmp)), as frozen they would stop the agent that delivers the thaw,
        or logging, for the whole O(freeze_timeout). The result's C(helper.freeze.auto_left_out) names each one left
        out and why; their volumes are not quiesced. A list given explicitly may name them. Needs the freeze helper
        1.2.0 or later (the C(consistency_scripts) role installs it).
      - Linux, both providers, with O(consistency=offline) - a list of absolute paths unmounts those data filesystems
        instead of stopping the instance; O(disk_ids) must then name the disks (Alibaba C(d-...)) or volumes (AWS
        C(vol-...)) behind them, and the system disk must not be among them on Alibaba Cloud.
      - Alibaba Cloud - only used with O(consistency=offline); a list given with another consistency is refused, as the
        plug-in freezes every data filesystem itself.
    type: list
    elements: str
    default: [auto]
  initiator:
    description:
      - AWS Linux - who calls CreateSnapshots while the filesystems are frozen.
      - V(controller) - SSM runs the freeze helper's C(freeze), the controller calls CreateSnapshots as soon as the
        instance reports it is frozen, and SSM runs C(thaw). The instance needs no AWS permission of its own.
      - V(instance) - one SSM command in which the freeze helper freezes, the instance itself calls CreateSnapshots
        (AWS CLI, or python3 with boto3) with its instance profile, and the helper thaws; the shortest freeze. Needs
        O(mounts) listed and an instance profile allowing C(ec2:CreateSnapshots) and C(ec2:CreateTags). The
        controller reads the set back (one tag-filtered C(DescribeSnapshots) per 200 instances) and keeps only the
        snapshots of the instance's own volumes that carry the set id of this run for that instance; any other
        snapshot the instance reports is left as it is and listed in RV(results[].refused_snapshots).
    type: str
    default: controller
    choices: [controller, instance]
  freeze_helper_path:
    description:
      - AWS Linux - where the C(consistency_scripts) role installed the freeze helper.
    type: path
    default: /usr/local/lib/appconsistent/appconsistent-freeze
  max_concurrency:
    description:
      - AWS - how many instances SSM runs a command on at the same time (number or percentage).
    type: str
    default: "50"
  max_errors:
    description:
      - AWS - how many failures make SSM stop sending a command to the rest of a batch. The default lets every
        instance run.
    type: str
    default: "100%"
  delivery_timeout:
    description:
      - AWS - seconds SSM waits for an instance to pick up a command.
    type: int
    default: 600
  stop_timeout:
    description:
      - O(consistency=offline) - seconds to wait for a clean shutdown.
    type: int
    default: 600
  start_timeout:
    description:
      - O(consistency=offline) - seconds to wait for an instance to run again.
    type: int
    default: 600
  force_stop:
    description:
      - O(consistency=offline) - force the stop of an instance that did not shut down within O(stop_timeout). A forced
        stop is like a power cut for the applications; the set is still taken from stopped disks.
    type: bool
    default: false
extends_documentation_fragment:
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
      - Reports per instance the command line or API call that would be made and the disks it would capture.
  diff_mode:
    support: none
  platform:
    platforms: [aws, alicloud]
"""

EXAMPLES = r"""
- name: Application-consistent groups of two Alibaba Cloud database servers
  appconsistent.snapshots.app_consistent_group:
    provider: alicloud
    instance_ids: [i-bp1example000000001, i-bp1example000000002]
    ram_role_name: AppSnapshotRole
    run_id: "{{ awx_job_id | default('manual') }}"
    delete_after: 7d

- name: Filesystem-consistent sets of AWS Linux instances, data volumes only
  appconsistent.snapshots.app_consistent_group:
    provider: aws
    consistency: filesystem
    instance_ids: [i-0123456789abcdef0]
    exclude_boot_disk: true
    mounts: [/data]

- name: Application-consistent sets locked in compliance mode for 30 days, with a day to change one's mind
  appconsistent.snapshots.app_consistent_group:
    provider: aws
    instance_ids: [i-0123456789abcdef0]
    run_id: "{{ awx_job_id | default('manual') }}"
    lock:
      mode: compliance
      duration_days: 30
      cool_off_hours: 24

- name: Crash-consistent group, no agent involved, a warning instead of a failure
  appconsistent.snapshots.app_consistent_group:
    provider: alicloud
    consistency: crash
    instance_ids: [i-bp1example000000001]
    on_fallback: warn
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
  description: One entry per instance, in the order given.
  returned: always
  type: list
  elements: dict
  contains:
    instance_id:
      description: The instance.
      type: str
    provider:
      description: C(alicloud) or C(aws).
      type: str
    platform:
      description: C(linux) or C(windows).
      type: str
    status:
      description:
        - The agent command's status on the instance (C(Success), C(Failed), ...), C(Created) for a crash set,
          C(NotSent) when the preflight refused the instance, C(Existing) when a set with the run id exists,
          C(WouldRun) in check mode.
      type: str
    set_id:
      description: The set's id (Alibaba Cloud - the C(ssg-...) group id).
      type: str
    consistency_requested:
      description: The consistency asked for.
      type: str
    consistency:
      description: What the set achieved (C(application), C(filesystem), C(crash)), or C(none) without a usable set.
      type: str
    snapshots:
      description:
        - The snapshots of the set (id, disk or volume id, device, state, tags), each with C(quiesced), whether that
          member was quiesced. On AWS Linux only the volumes beneath the frozen filesystems are (the root volume of a
          set that froze C(/data) is not); VSS and the Alibaba Cloud plug-in quiesce every member. A member that was
          not is labelled V(crash) in its C(appconsistent:consistency) tag; the set's level is in every member's
          C(appconsistent:set-consistency) tag and in RV(results[].consistency).
      type: list
      elements: dict
    exit_code:
      description: Alibaba Cloud - the plug-in's exit code; AWS - the freeze helper's.
      type: int
      returned: when the agent ran
    exit_meaning:
      description: Alibaba Cloud - what the plug-in's exit code means.
      type: str
      returned: when the plug-in ran
    invocation_id:
      description: Alibaba Cloud - the Cloud Assistant invocation (of the unmount with O(mounts) and V(offline)).
      type: str
      returned: when the plug-in or the unmount ran
    command_ids:
      description: AWS - the SSM commands sent to the instance.
      type: list
      elements: str
    freeze_window:
      description: AWS Linux - seconds the filesystems were frozen, from the helper's own timestamps.
      type: float
      returned: when measured
    downtime:
      description:
        - O(consistency=offline) - seconds from the stop request until the instance ran again; with O(mounts), seconds
          the filesystems were unmounted, from the instance's own timestamps.
      type: float
      returned: when an instance was stopped and started, or its filesystems unmounted and mounted again
    duplicates_deleted:
      description:
        - AWS - CreateSnapshots has no idempotency token, so a call retried after a lost answer can make a second batch
          under the same set id; the batch the answer did not name is deleted and its ids listed here (the set is one
          snapshot per volume).
      type: list
      elements: str
      returned: when a retried CreateSnapshots had made such a batch
    refused_snapshots:
      description:
        - AWS Linux, O(initiator=instance) - snapshots the instance reported that are not of its own volumes under
          this run's set id; they were not tagged or counted as members.
      type: list
      elements: str
      returned: when an instance reported such snapshots
    error:
      description: What went wrong (C(code), C(message)) and what to do about it.
      type: dict
      returned: on failure or fallback
    lock:
      description:
        - The set's lock after the task (see O(lock)) - C(locked) (true only when every member is), C(mode),
          C(until), C(state), C(locked_members), and C(members) (each member's C(snapshot_id) and C(lock)).
        - C(error) names what stopped a member from being locked and the task that locks the set.
        - In check mode, C(locked) is null and C(planned) holds the lock options.
      type: dict
      returned: with O(lock), for each instance with a set that is kept
      sample: {"locked": true, "mode": "compliance", "until": "2027-01-06T06:00:00Z", "state": "compliance-cooloff",
               "locked_members": 2, "members": [{"snapshot_id": "snap-0123456789abcdef0", "lock": {"state": "compliance-cooloff"}}]}
    plan:
      description: What would be done.
      type: dict
      returned: in check mode
failed_instances:
  description: Instances without a set of the requested consistency, with the reason.
  returned: always
  type: list
  elements: dict
"""

from ansible_collections.appconsistent.snapshots.plugins.module_utils import creation_lock
from ansible_collections.appconsistent.snapshots.plugins.module_utils import snapshot_set as ss
from ansible_collections.appconsistent.snapshots.plugins.module_utils.group_alicloud import AlicloudGroupRun
from ansible_collections.appconsistent.snapshots.plugins.module_utils.group_aws import AwsGroupRun
from ansible_collections.appconsistent.snapshots.plugins.module_utils.module import AppConsistentModule
from ansible_collections.appconsistent.snapshots.plugins.module_utils.module import list_failed_instances


# Options that only one cloud reads: given with the other provider they are refused, not ignored.
CLOUD_OPTIONS = dict(
    aws=["initiator", "freeze_helper_path", "max_concurrency", "max_errors", "delivery_timeout"],
    alicloud=["name", "ram_role_name", "enable_writers"],
)


def argument_spec():
    return dict(
        provider=dict(type="str", required=True, choices=["alicloud", "aws"]),
        consistency=dict(type="str", default="application", choices=["offline", "application", "filesystem", "crash"]),
        instance_ids=dict(type="list", elements="str", required=True),
        disk_ids=dict(type="list", elements="str"),
        exclude_disk_ids=dict(type="list", elements="str"),
        exclude_boot_disk=dict(type="bool", default=False),
        name=dict(type="str"),
        description=dict(type="str"),
        tags=dict(type="dict", default={}),
        run_id=dict(type="str"),
        delete_after=dict(type="str"),
        on_fallback=dict(type="str", default="fail", choices=["fail", "warn"]),
        wait=dict(type="bool", default=True),
        wait_timeout=dict(type="int", default=900),
        wait_for_completion=dict(type="bool", default=False),
        completion_timeout=dict(type="int", default=14400),
        pre_script_path=dict(type="path", default="/usr/local/lib/appconsistent/prescript.sh"),
        post_script_path=dict(type="path", default="/usr/local/lib/appconsistent/postscript.sh"),
        freeze=dict(type="bool", default=True),
        freeze_timeout=dict(type="int", default=30),
        script_timeout=dict(type="int", default=1800),
        ram_role_name=dict(type="str"),
        enable_writers=dict(type="bool", default=True),
        mounts=dict(type="list", elements="str", default=["auto"]),
        initiator=dict(type="str", default="controller", choices=["controller", "instance"]),
        freeze_helper_path=dict(type="path", default="/usr/local/lib/appconsistent/appconsistent-freeze"),
        max_concurrency=dict(type="str", default="50"),
        max_errors=dict(type="str", default="100%"),
        delivery_timeout=dict(type="int", default=600),
        stop_timeout=dict(type="int", default=600),
        start_timeout=dict(type="int", default=600),
        force_stop=dict(type="bool", default=False),
        **creation_lock.lock_argument_spec(),
    )


def summarize(outcomes, requested, on_fallback):
    results, failed, warnings = [], [], []
    for instance_id, outcome in outcomes.items():
        results.append(outcome.to_dict())
        if outcome.status in ("WouldRun", "InProgress") and not outcome.error:
            continue
        urgent = bool(outcome.error) and outcome.error.get("code") in ss.URGENT_ERRORS + ss.INCOMPLETE_ERRORS
        if not urgent and outcome.consistency != "none" and ss.at_least(outcome.consistency, requested):
            if outcome.error:
                warnings.append(f"{instance_id}: {outcome.error['message']}")
            continue
        reason = outcome.error["message"] if outcome.error else \
            f"the set is {outcome.consistency}-consistent, not {requested}-consistent"
        if not urgent and outcome.consistency != "none" and on_fallback == "warn":
            warnings.append(f"{instance_id}: only {outcome.consistency}-consistent ({reason}); kept because on_fallback "
                            "is warn")
        else:
            failed.append(dict(instance_id=instance_id, consistency=outcome.consistency, reason=reason))
    changed = any(o.changed for o in outcomes.values())
    return dict(changed=changed, results=results, failed_instances=failed), warnings


def main():
    module = AppConsistentModule(
        argument_spec=argument_spec(),
        mutually_exclusive=[["disk_ids", "exclude_disk_ids"]],
        required_if=[["provider", "alicloud", ["alicloud_region"]]],
        supports_check_mode=True,
    )
    provider = module.params["provider"]
    module.refuse_other_cloud_options(provider, CLOUD_OPTIONS)
    try:
        until = creation_lock.check_lock(module.params, provider)
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    runner = AlicloudGroupRun(module) if provider == "alicloud" else AwsGroupRun(module)
    outcomes = module.run_or_fail(runner.run)
    requested = module.params["consistency"]
    result, warnings = summarize(outcomes, requested, module.params["on_fallback"])
    for warning in warnings:
        module.warn(warning)
    if module.params["lock"]:
        creation_lock.lock_kept_sets(module, provider, until, result)
    if result["failed_instances"]:
        failed = result["failed_instances"]
        module.fail_json(msg=f"{len(failed)} of {len(result['results'])} instances have no {requested}-consistent set: "
                             f"{list_failed_instances(failed)}", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
