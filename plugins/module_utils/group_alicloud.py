# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Snapshot-consistent groups on Alibaba Cloud ECS, at the consistency asked for.

``crash``: CreateSnapshotGroup directly. ``application`` / ``filesystem``: the
Cloud Assistant app-snapshot-plugin, sent with one RunCommand per 100
instances that share a command line, followed with one DescribeInvocationResults
listing per invocation; the group id is read from the plug-in's output and the
consistency from the snapshots' own tags. ``offline``: the instance is stopped
for CreateSnapshotGroup and started again; with a list in ``mounts``, those data
filesystems are unmounted through Cloud Assistant instead, the disks in
``disk_ids`` grouped, and the filesystems mounted again.
"""

from __future__ import annotations

import time

from ansible_collections.appconsistent.snapshots.plugins.module_utils import app_plugin
from ansible_collections.appconsistent.snapshots.plugins.module_utils import pacing
from ansible_collections.appconsistent.snapshots.plugins.module_utils import snapshot_set as ss
from ansible_collections.appconsistent.snapshots.plugins.module_utils import validate
from ansible_collections.appconsistent.snapshots.plugins.module_utils.alicloud import AlibabaCloudError
from ansible_collections.appconsistent.snapshots.plugins.module_utils.alicloud import TagBatch
from ansible_collections.appconsistent.snapshots.plugins.module_utils.alicloud import tags_to_dict
from ansible_collections.appconsistent.snapshots.plugins.module_utils.cloud_assistant import RUN_COMMAND_BATCH
from ansible_collections.appconsistent.snapshots.plugins.module_utils.cloud_assistant import TERMINAL
from ansible_collections.appconsistent.snapshots.plugins.module_utils.cloud_assistant import InvocationRun
from ansible_collections.appconsistent.snapshots.plugins.module_utils.concurrency import chunks
from ansible_collections.appconsistent.snapshots.plugins.module_utils.polling import poll_until
from ansible_collections.appconsistent.snapshots.plugins.module_utils.polling import wait_for_all
from ansible_collections.appconsistent.snapshots.plugins.module_utils import unmount as unmounting
from ansible_collections.appconsistent.snapshots.plugins.module_utils.unmount import EXIT_MESSAGES as UNMOUNT_EXIT
from ansible_collections.appconsistent.snapshots.plugins.module_utils.unmount import parse_report
from ansible_collections.appconsistent.snapshots.plugins.module_utils.unmount import refused_mount
from ansible_collections.appconsistent.snapshots.plugins.module_utils.unmount import remount_command
from ansible_collections.appconsistent.snapshots.plugins.module_utils.unmount import unmount_command

ESSD_CATEGORIES = ("cloud_essd", "cloud_auto", "cloud_essd_entry")
GROUP_IDS_PER_CALL = 10
EVIDENCE_WAIT = 60
# Seconds between two readings of the snapshot groups that are not complete yet.
COMPLETION_POLL = 5
UNMOUNT_POLL = 0.5


# Added to a stop timeout message: what the operator can do about it.
STOP_HINT = {True: "", False: "; force_stop: true forces the stop after the timeout"}


class GroupInputError(ValueError):
    pass


class Outcome:
    """The result of one instance."""

    def __init__(self, instance_id, requested):
        self.instance_id = instance_id
        self.provider = "alicloud"
        self.platform = None
        self.requested = requested
        self.consistency = "none"
        self.status = None
        self.set_id = None
        self.snapshots = []
        self.disks = []
        self.exit_code = None
        self.invocation_id = None
        self.error = None
        self.changed = False
        self.plan = None
        self.freeze_window = None
        self.output = None
        self.downtime = None

    def fail(self, code, message):
        self.error = ss.merge_error(self.error, code, message)

    def to_dict(self):
        for member in self.snapshots:  # the plug-in quiesces the whole instance: every member is, or none
            member.setdefault("quiesced", ss.was_quiesced(member["tags"]))
        data = dict(instance_id=self.instance_id, provider=self.provider, platform=self.platform, status=self.status,
                    consistency_requested=self.requested, consistency=self.consistency, set_id=self.set_id,
                    snapshots=self.snapshots, changed=self.changed)
        if self.exit_code is not None:
            short, sentence = app_plugin.meaning(self.exit_code)
            data.update(exit_code=self.exit_code, exit_meaning=sentence, exit_name=short)
        for key in ("invocation_id", "error", "plan", "freeze_window", "output", "downtime"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        return data


class AlicloudGroupRun:
    def __init__(self, module, sleep=time.sleep, clock=time.monotonic):
        self.module = module
        self.params = module.params
        self.sleep = sleep
        self.clock = clock
        self.api = None
        self.requested = self.params["consistency"]
        self.outcomes = {}
        self.instances = {}
        self._attached = {}
        self.pacer = pacing.of(module, clock=clock, sleep=sleep)

    # --- input ------------------------------------------------------------------------------------

    def validate(self):
        p = self.params
        if self.requested in ("application", "filesystem") and not p.get("ram_role_name"):
            raise GroupInputError(f"consistency {self.requested} on Alibaba Cloud needs ram_role_name: the plug-in "
                                  "calls the ECS API from inside the instance with that RAM role")
        if p.get("ram_role_name"):
            app_plugin.check_role(p["ram_role_name"])
        app_plugin.check_name(self.group_name)
        app_plugin.check_description(p.get("description"))
        for disk_id in (p.get("disk_ids") or []) + (p.get("exclude_disk_ids") or []):
            app_plugin.check_disk_id(disk_id)
        if self.requested in ("application", "filesystem"):
            app_plugin.check_exclusions(p.get("exclude_disk_ids"))
        for label in ("pre_script_path", "post_script_path"):
            app_plugin.check_path(label, p[label])
        for label in ("freeze_timeout", "script_timeout"):
            if p[label] < 1:
                raise GroupInputError(f"{label} must be a positive number of seconds, not {p[label]}")
        self._validate_mounts()
        conflicts = ss.user_tags_conflicts(p.get("tags"))
        bad_prefix = [k for k in (p.get("tags") or {}) if str(k).lower().startswith(("aliyun", "acs:"))]
        if conflicts or bad_prefix:
            raise GroupInputError(f"tags: these keys are reserved: {', '.join(sorted(conflicts + bad_prefix))}")
        # Strings from here on (4711 becomes "4711"), within Alibaba's limits, before any Cloud Assistant command.
        p["tags"] = validate.user_tags(p.get("tags"), "alicloud", validate.SET_OWN_TAGS["alicloud"])
        ss.validate_run_id(p.get("run_id"))
        if p.get("delete_after"):
            ss.parse_duration(p["delete_after"])

    def _validate_mounts(self):
        mounts = self.params.get("mounts") or ["auto"]
        if mounts == ["auto"]:
            return
        if self.requested != "offline":
            raise GroupInputError("mounts is used on Alibaba Cloud only with consistency offline (to unmount those "
                                  f"filesystems instead of stopping the instance); with consistency {self.requested} the "
                                  "plug-in freezes every data filesystem itself: leave mounts out")
        for mount in mounts:
            problem = refused_mount(mount)
            if problem:
                raise GroupInputError(f"mounts: {problem}")
        if not self.params.get("disk_ids"):
            raise GroupInputError("consistency offline with mounts unmounts those filesystems instead of stopping the "
                                  "instance: give the disks behind them in disk_ids, so that the set holds only them")

    @property
    def unmounts(self):
        """offline with explicit mounts: unmount them through Cloud Assistant instead of stopping the instance."""
        mounts = self.params.get("mounts") or ["auto"]
        return self.requested == "offline" and mounts != ["auto"]

    @property
    def group_name(self):
        return self.params.get("name") or "appconsistent-" + ss.utcnow().strftime("%Y%m%dT%H%M%S")

    def _set_tags(self, set_id, instance_id, consistency, members=None):
        tags = dict(self.params.get("tags") or {})
        tags.update(ss.set_tags(set_id, instance_id, consistency, run_id=self.params.get("run_id"), members=members,
                                delete_after=ss.delete_after_instant(self.params["delete_after"])
                                if self.params.get("delete_after") else None))
        return tags

    # --- the run -----------------------------------------------------------------------------------

    def run(self):
        self.validate()
        name = self.group_name
        self.api = self.module.alicloud
        ids = list(dict.fromkeys(self.params["instance_ids"]))
        for instance in self.api.describe_instances(ids):
            self.instances[instance["InstanceId"]] = instance
        disks = self._disks_by_instance(ids)
        self._attached = disks
        ready = self._preflight(ids, disks)
        ready = self._skip_existing(ready)
        if not ready:
            return self.outcomes
        if self.module.check_mode:  # the plan's estimate of what the account's limits impose: a group per instance
            self.pacer.plan("ecs", "CreateSnapshotGroup", len(ready))
        if self.requested == "crash":
            self._crash(ready, name)
        elif self.requested == "offline":
            self._offline(ready, name)
        else:
            self._plugin(ready, name)
        if self.params.get("wait_for_completion") and not self.module.check_mode:
            self._wait_for_completion()
        return self.outcomes

    def _disks_by_instance(self, ids):
        # One listing of the instances' disks; DescribeDisks takes one InstanceId at a time otherwise.
        found = {}
        wanted = set(ids)
        for disk in self.api.describe_disks():
            if disk.get("InstanceId") in wanted:
                found.setdefault(disk["InstanceId"], []).append(disk)
        return found

    def _preflight(self, ids, disks):
        p = self.params
        needs_role = self.requested not in ("crash", "offline")
        needs_agent = needs_role or self.unmounts
        known_disks = {d["DiskId"] for ds in disks.values() for d in ds}
        unknown = [d for d in (p.get("disk_ids") or []) + (p.get("exclude_disk_ids") or []) if d not in known_disks]
        if unknown:
            raise GroupInputError(f"unknown disk id(s) {', '.join(unknown)}: not attached to any of the instances given")
        agents = {}
        roles = {}
        running = [i for i in ids if (self.instances.get(i) or {}).get("Status") == "Running"]
        if needs_agent and running:
            for status in self.api.describe_cloud_assistant_status(running):
                agents[status["InstanceId"]] = status
            if needs_role:
                roles = self.api.describe_instance_ram_roles(running)
        ready = []
        for instance_id in ids:
            outcome = self.outcomes[instance_id] = Outcome(instance_id, self.requested)
            instance = self.instances.get(instance_id)
            if instance is None:
                outcome.status = "NotSent"
                outcome.fail("InstanceNotFound", f"instance {instance_id} does not exist in {self.api.region}")
                continue
            outcome.platform = "windows" if str(instance.get("OSType")).lower() == "windows" else "linux"
            state = instance.get("Status")
            if self.unmounts and outcome.platform != "linux":
                outcome.status = "NotSent"
                outcome.fail("WrongPlatform", f"instance {instance_id} is Windows: mounts can only be unmounted on "
                                              "Linux; leave mounts out to take the set with the instance stopped")
                continue
            if self.unmounts and state != "Running":
                outcome.status = "NotSent"
                outcome.fail("InstanceNotRunning", f"instance {instance_id} is {state}: the filesystems are unmounted "
                                                   "through Cloud Assistant, which needs it Running (leave mounts out "
                                                   "to take the set of a stopped instance)")
                continue
            if needs_agent and state != "Running":
                outcome.status = "NotSent"
                outcome.fail("InstanceNotRunning", f"instance {instance_id} is {state}: the plug-in runs inside the "
                                                   "instance, which must be Running (consistency crash works on a "
                                                   "stopped instance)")
                continue
            if state not in ("Running", "Stopped"):
                outcome.status = "NotSent"
                outcome.fail("InstanceNotReady", f"instance {instance_id} is {state}")
                continue
            selected, problem = self._select_disks(instance_id, disks.get(instance_id, []))
            if problem:
                outcome.status = "NotSent"
                outcome.fail(*problem)
                continue
            outcome.disks = selected
            if needs_role:
                try:
                    app_plugin.check_exclusions(self._left_out(instance_id, selected), instance_id)
                except app_plugin.PluginParameterError as exc:
                    outcome.status = "NotSent"
                    outcome.fail("TooManyExcludedDisks", str(exc))
                    continue
            system = [d["disk_id"] for d in selected if d["boot"]]
            if self.unmounts and system:
                outcome.status = "NotSent"
                outcome.fail("SystemDiskOnline", f"disk {system[0]} is the system disk of instance {instance_id}, which "
                                                 "stays in use while the data filesystems are unmounted: leave it out of "
                                                 "disk_ids, or leave mounts out to take the set with the instance stopped")
                continue
            if needs_agent:
                agent = agents.get(instance_id) or {}
                if str(agent.get("CloudAssistantStatus")).lower() != "true":
                    outcome.status = "NotSent"
                    outcome.fail("AgentNotRunning", f"Cloud Assistant is not running on instance {instance_id}: "
                                                    "install or start the agent")
                    continue
            if needs_role:
                role = roles.get(instance_id)
                if not role:
                    outcome.status = "NotSent"
                    outcome.fail("NoRamRole", f"instance {instance_id} has no RAM role attached: attach "
                                              f"{p['ram_role_name']} (plug-in exit code 13)")
                    continue
                if role != p["ram_role_name"]:
                    outcome.status = "NotSent"
                    outcome.fail("WrongRamRole", f"instance {instance_id} has the RAM role {role}, not "
                                                 f"{p['ram_role_name']}: set ram_role_name to the attached role")
                    continue
            ready.append(instance_id)
        return ready

    def _select_disks(self, instance_id, disks):
        p = self.params
        chosen = list(disks)
        if p.get("disk_ids"):
            chosen = [d for d in chosen if d["DiskId"] in p["disk_ids"]]
        if p.get("exclude_disk_ids"):
            chosen = [d for d in chosen if d["DiskId"] not in p["exclude_disk_ids"]]
        if p.get("exclude_boot_disk"):
            chosen = [d for d in chosen if str(d.get("Type")).lower() != "system"]
        if not chosen:
            return None, ("NoDisks", f"no disk of instance {instance_id} is left to snapshot after the disk selection")
        not_essd = [f"{d['DiskId']} ({d.get('Category')})" for d in chosen if d.get("Category") not in ESSD_CATEGORIES]
        if not_essd:
            return None, ("NotESSD", f"snapshot-consistent groups take ESSD disks only; instance {instance_id} has "
                                     f"{', '.join(not_essd)}: leave them out with exclude_disk_ids")
        shared = [d["DiskId"] for d in chosen if str(d.get("MultiAttach")).lower() == "enabled"]
        if shared:
            return None, ("MultiAttachDisk", f"disks {', '.join(shared)} of instance {instance_id} have multi-attach "
                                             "enabled, which snapshot-consistent groups refuse: exclude them")
        return [dict(disk_id=d["DiskId"], device=d.get("Device"), size=d.get("Size"), category=d.get("Category"),
                     boot=str(d.get("Type")).lower() == "system") for d in chosen], None

    def _left_out(self, instance_id, selected):
        """The attached disks of an instance that its set leaves out."""
        chosen = {d["disk_id"] for d in selected}
        return sorted(d["DiskId"] for d in self._attached.get(instance_id, []) if d["DiskId"] not in chosen)

    def _skip_existing(self, ready):
        run_id = self.params.get("run_id")
        if not run_id or not ready:
            return ready
        members = []
        for snapshot in self.api.describe_snapshots(tags={ss.TAG_RUN_ID: run_id}):
            members.append(self._member(snapshot))
        existing = {}
        for found in ss.group_into_sets(members):
            if found.instance_id in ready:
                current = existing.get(found.instance_id)
                if current is None or (found.created or "") > (current.created or ""):
                    existing[found.instance_id] = found
        remaining = []
        for instance_id in ready:
            found = existing.get(instance_id)
            if not found:
                remaining.append(instance_id)
                continue
            outcome = self.outcomes[instance_id]
            outcome.status = "Existing"
            outcome.set_id = found.set_id
            outcome.consistency = found.consistency or "none"
            outcome.snapshots = found.members
            if ss.existing_set_error(found):
                outcome.fail(*ss.existing_set_error(found))
        return remaining

    def _member(self, snapshot, device=None):
        tags = tags_to_dict(snapshot.get("Tags"))
        return dict(snapshot_id=snapshot["SnapshotId"], disk_id=snapshot.get("SourceDiskId"),
                    device=device or tags.get(ss.TAG_DEVICE), size=snapshot.get("SourceDiskSize"),
                    state=snapshot.get("Status"), progress=snapshot.get("Progress"),
                    start_time=snapshot.get("CreationTime"), tags=tags)

    # --- crash: CreateSnapshotGroup directly -----------------------------------------------------------

    def _crash(self, ready, name, level="crash"):
        if self.module.check_mode:
            for instance_id in ready:
                outcome = self.outcomes[instance_id]
                outcome.status, outcome.changed = "WouldRun", True
                outcome.plan = dict(action="CreateSnapshotGroup", disks=outcome.disks, name=name)
            return
        groups = self._create_groups(ready, name, level)
        self._adopt_groups(groups, scripts_ok=False, fixed_level=None if level == "crash" else level)

    def _create_groups(self, ready, name, level, expires=None, in_time=None):
        """CreateSnapshotGroup for each instance, of its chosen disks; returns {group id: instance id}.

        ``level``: the consistency the group's own tags state, None when it is known only later (its members'
        tags say it then). ``expires``: the controller's clock after which the instances' filesystems may be back
        in use; an instance reached later gets no group, and ``in_time`` says for each instance whether its call
        returned before then (a group made later may postdate the remount).
        """
        groups = {}
        for instance_id in ready:
            outcome = self.outcomes[instance_id]
            if expires is not None and self.clock() >= expires:
                outcome.status = "Failed"
                outcome.fail("UnmountExpired", unmounting.expired_before_call(instance_id))
                continue
            group_tags = dict(self.params.get("tags") or {})
            group_tags.update({ss.TAG_INSTANCE_ID: instance_id, ss.TAG_MEMBERS: ss.members_value(len(outcome.disks))})
            if level:
                group_tags[ss.TAG_CONSISTENCY] = level
            try:
                group_id = self.api.create_snapshot_group(
                    instance_id, disk_ids=[d["disk_id"] for d in outcome.disks], name=name,
                    description=self.params.get("description"), tags=group_tags)
            except AlibabaCloudError as exc:
                outcome.status = "Failed"
                outcome.fail(exc.code, str(exc))
                continue
            outcome.status, outcome.changed, outcome.set_id = "Created", True, group_id
            groups[group_id] = instance_id
            if in_time is not None:
                in_time[instance_id] = self.clock() < expires
                if not in_time[instance_id]:
                    outcome.fail("UnmountExpired", unmounting.returned_late("CreateSnapshotGroup", instance_id))
        return groups

    # --- offline: stopped instances -----------------------------------------------------------------------

    def _status(self, ids):
        return {i["InstanceId"]: i.get("Status") for i in self.api.describe_instances(ids)}

    def _wait_status(self, ids, wanted, timeout):
        """Poll all of them together until each is ``wanted`` or ``timeout`` passed; returns those that are."""
        return wait_for_all(self._status, ids, wanted, timeout, self.sleep, self.clock)

    def _stop(self, ids, force):
        for instance_id in ids:
            # KeepCharging keeps the instance's resources, so that it can be started again for sure.
            self.api.stop_instance(instance_id, force=bool(force))

    def _offline(self, ready, name):
        if self.unmounts:
            self._offline_unmounted(ready, name)
            return
        p = self.params
        running = [i for i in ready if (self.instances[i] or {}).get("Status") == "Running"]
        if self.module.check_mode:
            for instance_id in ready:
                outcome = self.outcomes[instance_id]
                outcome.status, outcome.changed = "WouldRun", True
                outcome.plan = dict(stop=instance_id in running, action="CreateSnapshotGroup", start=instance_id in running,
                                    disks=outcome.disks)
            return
        stop_requested = self.clock()
        late = []
        try:
            if running:
                self._stop(running, force=False)
                for instance_id in running:
                    self.outcomes[instance_id].changed = True
                stopped = self._wait_status(running, "Stopped", p["stop_timeout"])
                late = [i for i in running if i not in stopped]
                if late and p.get("force_stop"):
                    self._stop(late, force=True)
                    forced = self._wait_status(late, "Stopped", p["stop_timeout"])
                    late = [i for i in late if i not in forced]
                for instance_id in late:
                    self.outcomes[instance_id].status = "NotStopped"
                    self.outcomes[instance_id].fail(
                        "StopTimeout", f"instance {instance_id} did not stop within stop_timeout ({p['stop_timeout']} s), "
                                       "so no set was taken" + STOP_HINT[bool(p.get("force_stop"))])
            self._crash([i for i in ready if i not in late], name, level="offline")
        finally:
            self._restart(running, late, stop_requested)

    # --- offline: unmounted data filesystems ---------------------------------------------------------------

    def _offline_unmounted(self, ready, name):
        """Unmount the filesystems in mounts through Cloud Assistant, group the disks in disk_ids, mount them again."""
        p = self.params
        mounts = p["mounts"]
        if self.module.check_mode:
            for instance_id in ready:
                outcome = self.outcomes[instance_id]
                outcome.status, outcome.changed = "WouldRun", True
                outcome.plan = dict(unmount=mounts, action="CreateSnapshotGroup", disks=outcome.disks, name=name,
                                    remount=mounts)
            return
        run_id = ss.new_set_id()
        # The filesystems come back by themselves after this long, whatever happens to the controller.
        deadline = max(p["freeze_timeout"], 60)
        common = dict(command_type="RunShellScript", timeout=deadline + 60, sleep=self.sleep, clock=self.clock)
        unmount = InvocationRun(self.api, unmount_command(run_id, mounts, deadline), name="appconsistent-unmount",
                                **common)
        remount = InvocationRun(self.api, remount_command(run_id), name="appconsistent-remount", **common)
        # The watchdog cannot fire before this: it is armed on the instance after the command was sent.
        expires = self.clock() + deadline - unmounting.UNMOUNT_MARGIN
        sent = self._send(unmount, ready, "unmount")
        reports = {}
        groups = {}
        in_time = {}
        confirmed = set()
        try:
            # Each instance is grouped as soon as it reports its filesystems unmounted; waiting past the
            # watchdog's deadline would be pointless.
            stop_at = min(self.clock() + p["wait_timeout"], expires)
            pending = list(sent)
            interval = UNMOUNT_POLL
            while pending:
                unmount.poll()
                finished = [i for i in pending if unmount.result(i)["status"] in TERMINAL]
                if finished:
                    pending = [i for i in pending if i not in finished]
                    offline = [i for i in finished if self._read_unmount(unmount, i, reports)]
                    groups.update(self._create_groups(offline, name, None, expires=expires, in_time=in_time))
                    continue
                if self.clock() >= stop_at:
                    break
                self.sleep(min(interval, max(0.0, stop_at - self.clock())))
                interval = min(interval * 1.5, 2.0)
            # An unmount still on its way would run after the remount: it is stopped first.
            if pending:
                unmount.stop(pending)
            for instance_id in pending:
                self._read_unmount(unmount, instance_id, reports)
        finally:
            if sent:
                confirmed = self._remount(remount, sent, reports, deadline, in_time)
        # Offline only where the group was made in time and the remount found the filesystems still unmounted.
        self._adopt_groups(groups, scripts_ok=False, fixed_level="offline", only=confirmed)

    def _send(self, run, instance_ids, what):
        """RunCommand per 100 instances; the instances of a batch that could not be sent fail, the others go on."""
        sent = []
        for chunk in chunks(instance_ids, RUN_COMMAND_BATCH):
            try:
                invoke_id = run.send(chunk)[0]
            except AlibabaCloudError as exc:
                for instance_id in chunk:
                    outcome = self.outcomes[instance_id]
                    outcome.status = outcome.status or "NotSent"
                    outcome.fail(exc.code, f"the {what} command could not be sent: {exc}")
                continue
            for instance_id in chunk:
                outcome = self.outcomes[instance_id]
                outcome.invocation_id = outcome.invocation_id or invoke_id
                outcome.changed = True
            sent.extend(chunk)
        return sent

    def _read_unmount(self, run, instance_id, reports):
        """True when the instance reports its filesystems unmounted."""
        outcome = self.outcomes[instance_id]
        result = run.result(instance_id)
        report = reports[instance_id] = parse_report(result["output"]) or {}
        outcome.status = result["status"]
        code = report.get("exit_code")
        if result["status"] == "Success" and code == 0:
            return True
        outcome.output = result["output"][-2000:] or None
        if code is not None:
            outcome.fail(f"Unmount{code}", f"{UNMOUNT_EXIT.get(code, 'the unmount did not complete')}: "
                                           f"{report.get('message') or result['status']}")
        elif result["status"] not in TERMINAL or result["stopped"]:
            outcome.fail("WaitTimeout", f"the unmount did not finish on {instance_id} within wait_timeout "
                                        f"({self.params['wait_timeout']} s) or before its watchdog's deadline"
                                        f"{': ' + result['stopped'] if result['stopped'] else ''}; a remount was sent")
        elif result["status"] in ("Success", "Failed"):
            outcome.fail("UnmountNoReport", f"the unmount on {instance_id} gave no report (exit code "
                                            f"{result['exit_code']}): the instance needs bash, findmnt, mountpoint and fuser")
        else:
            advice = result["advice"] or result["error_info"] or f"the command ended {result['status']}"
            outcome.fail(result["error_code"] or result["status"], f"the unmount did not run on {instance_id}: {advice}")
        return False

    def _remount(self, run, sent, reports, deadline, in_time):
        """Mount again on every instance the unmount was sent to; the downtime is measured on the instance.

        Returns the instances whose group the remount confirms offline: made in time, and the remount found this
        run's filesystems still unmounted. 205 means the watchdog had mounted them again before the remount came:
        nothing shows the group was made before that, so it stays crash and the instance says why."""
        later = f"they are mounted again at the latest {deadline} s after the unmount"
        remounting = self._send(run, sent, "remount")
        for instance_id in sent:
            if instance_id not in remounting:
                self.outcomes[instance_id].fail("RemountFailed", f"the remount could not be sent: check {instance_id} "
                                                                 f"now; {later}")
        run.wait(max(30.0, self.params["wait_timeout"]))
        confirmed = set()
        for _invoke_id, chunk in run.invocations:
            for instance_id in chunk:
                outcome = self.outcomes[instance_id]
                result = run.result(instance_id)
                report = parse_report(result["output"]) or {}
                unmounted = reports.get(instance_id) or {}
                code = report.get("exit_code")
                if in_time.get(instance_id) and code in (0, 209):  # 209: the record was found, some mount failed
                    confirmed.add(instance_id)
                if code == 205 and instance_id in in_time:
                    outcome.fail("RemountedByWatchdog", unmounting.remounted_by_watchdog(instance_id))
                if code == 0 and unmounted.get("t"):
                    outcome.downtime = round(float(report["t"]) - float(unmounted["t"]), 3)
                elif code != 205:  # 205: nothing of this run was unmounted
                    outcome.fail("RemountFailed", f"the filesystems were not mounted again on {instance_id} "
                                                  f"({report.get('message') or result['advice'] or result['status']}): "
                                                  f"check it now; {later}")
        return confirmed

    def _restart(self, running, late, stop_requested):
        p = self.params
        if not running:
            return
        restart = [i for i in running if i not in late]
        if late:
            restart += self._wait_status(late, "Stopped", p["stop_timeout"])
        for instance_id in restart:
            try:
                self.api.start_instance(instance_id)
            except AlibabaCloudError as exc:
                self.outcomes[instance_id].fail("StartFailed", f"instance {instance_id} could not be started again "
                                                               f"({exc.code}): {exc}; start it now")
        started = self._wait_status(restart, "Running", p["start_timeout"]) if restart else []
        for instance_id in restart:
            if instance_id in started:
                self.outcomes[instance_id].downtime = round(self.clock() - stop_requested, 3)
            else:
                self.outcomes[instance_id].fail("StartTimeout", f"instance {instance_id} is not running after "
                                                                f"start_timeout ({p['start_timeout']} s): check it now")
        for instance_id in late:
            if instance_id not in restart:
                self.outcomes[instance_id].fail("StillStopping", f"instance {instance_id} is still stopping: start it "
                                                                 "once it has stopped")

    # --- application / filesystem: the plug-in -------------------------------------------------------

    def _plugin(self, ready, name):
        p = self.params
        commands = {}
        for instance_id in ready:
            outcome = self.outcomes[instance_id]
            content = app_plugin.command_line(
                outcome.platform, p["ram_role_name"], name, description=p.get("description"),
                exclude_disk_ids=self._left_out(instance_id, outcome.disks),
                freeze=p.get("freeze", True) or self.requested == "filesystem",
                freeze_timeout=p["freeze_timeout"], script_timeout=p["script_timeout"],
                pre_script_path=p["pre_script_path"] if self.requested == "application" else None,
                post_script_path=p["post_script_path"] if self.requested == "application" else None,
                enable_writers=self.requested == "application" and p.get("enable_writers", True))
            command_type = "RunBatScript" if outcome.platform == "windows" else "RunShellScript"
            commands.setdefault((command_type, content), []).append(instance_id)
        if self.module.check_mode:
            for (command_type, content), ids in commands.items():
                for instance_id in ids:
                    outcome = self.outcomes[instance_id]
                    outcome.status, outcome.changed = "WouldRun", True
                    outcome.plan = dict(action="RunCommand", type=command_type, command=content, disks=outcome.disks)
            return
        timeout = 2 * p["script_timeout"] + p["freeze_timeout"] + 900
        runs = []
        for (command_type, content), ids in commands.items():
            run = InvocationRun(self.api, content, command_type=command_type, timeout=timeout,
                                name="appconsistent-snapshot", sleep=self.sleep, clock=self.clock)
            try:
                # The plug-in calls CreateSnapshotGroup from the instance, after its prescript, while the
                # filesystems are frozen: a batch goes out once the account's bucket holds a token for each.
                for batch in pacing.admitted_batches(self.pacer, "ecs", "CreateSnapshotGroup", ids, RUN_COMMAND_BATCH,
                                                     self.sleep, made_within=p["script_timeout"] + pacing.AGENT_CALL_WITHIN,
                                                     finished=run.ended):
                    run.send(batch)
            except AlibabaCloudError as exc:
                sent = {i for _invoke_id, chunk in run.invocations for i in chunk}
                for instance_id in ids:
                    if instance_id not in sent:  # the batches sent before the error run on
                        self.outcomes[instance_id].status = "NotSent"
                        self.outcomes[instance_id].fail(exc.code, str(exc))
                if not sent:
                    continue
            for invoke_id, chunk in run.invocations:
                for instance_id in chunk:
                    self.outcomes[instance_id].invocation_id = invoke_id
                    self.outcomes[instance_id].changed = True
            runs.append(run)
        if not p.get("wait", True):
            for run in runs:
                for _invoke_id, chunk in run.invocations:
                    for instance_id in chunk:
                        self.outcomes[instance_id].status = "InProgress"
            return
        deadline = self.clock() + p["wait_timeout"]
        groups = {}
        for run in runs:
            run.wait(max(0.0, deadline - self.clock()))
            # A plug-in run not started yet would freeze and snapshot after the task has given up on it.
            run.stop()
            for _invoke_id, chunk in run.invocations:
                for instance_id in chunk:
                    self._read_plugin_result(run, instance_id, groups)
        self._adopt_groups(groups, scripts_ok=True)

    def _read_plugin_result(self, run, instance_id, groups):
        outcome = self.outcomes[instance_id]
        result = run.result(instance_id)
        outcome.status = result["status"]
        outcome.exit_code = result["exit_code"]
        output = result["output"]
        group_id = app_plugin.group_id_from(output)
        if outcome.status not in ("Success", "Failed") and result["stopped"]:
            # A started plug-in run cannot be taken back; its own freeze timeout bounds the freeze.
            started = "" if outcome.status in TERMINAL else (f"; if it froze, the plug-in thaws by itself after "
                                                             f"freeze_timeout ({self.params['freeze_timeout']} s)")
            outcome.fail("WaitTimeout", f"the plug-in did not finish on {instance_id} within wait_timeout "
                                        f"({self.params['wait_timeout']} s): {result['stopped']}{started}")
            return
        if outcome.status not in ("Success", "Failed"):
            advice = result["advice"] or result["error_info"] or f"the command ended {outcome.status}"
            outcome.fail(result["error_code"] or outcome.status, f"the plug-in did not run on {instance_id}: {advice}")
            outcome.output = output[-2000:] or None
            return
        if outcome.exit_code not in (0, None):
            short, sentence = app_plugin.meaning(outcome.exit_code)
            detail = app_plugin.last_message(output)
            outcome.fail(f"PluginExit{outcome.exit_code}", f"{sentence} (exit code {outcome.exit_code}"
                                                           f"{': ' + detail if detail else ''})")
            outcome.output = output[-2000:]
        if group_id:
            outcome.set_id = group_id
            groups[group_id] = instance_id
        elif outcome.exit_code == 0:
            outcome.fail("NoGroupId", "the plug-in reported success but its output names no snapshot group")

    def _adopt_groups(self, groups, scripts_ok, fixed_level=None, only=None):
        """Read the groups' snapshots, classify each instance from their tags, and tag them as a set.

        ``fixed_level`` is the level of the groups of the instances in ``only`` (of every group when only is None)."""
        if not groups:
            return
        found = {}

        def all_listed():
            found.clear()
            for chunk in chunks(groups, GROUP_IDS_PER_CALL):
                for group in self.api.describe_snapshot_groups(snapshot_group_ids=chunk):
                    found[group["SnapshotGroupId"]] = group
            return all(((found.get(g) or {}).get("Snapshots") or {}).get("Snapshot") for g in groups)

        poll_until(all_listed, EVIDENCE_WAIT, self.sleep, self.clock, max_interval=10.0, growth=2)
        for group_id, instance_id in groups.items():
            outcome = self.outcomes[instance_id]
            group = found.get(group_id)
            snapshots = ((group or {}).get("Snapshots") or {}).get("Snapshot") or []
            if not snapshots:
                outcome.consistency = "none"
                if not outcome.error:
                    outcome.fail("GroupNotFound", f"snapshot group {group_id} has no snapshots")
                continue
            devices = {d["disk_id"]: d["device"] for d in outcome.disks}
            # DescribeSnapshotGroups gives no size: the disk's, from DescribeDisks, as _member gives it.
            sizes = {d["disk_id"]: d.get("size") for d in outcome.disks}
            members = [dict(snapshot_id=s["SnapshotId"], disk_id=s.get("SourceDiskId"),
                            device=devices.get(s.get("SourceDiskId")), size=sizes.get(s.get("SourceDiskId")),
                            state=group.get("Status"),
                            progress=s.get("Progress"), start_time=group.get("CreationTime"),
                            tags=tags_to_dict(s.get("Tags"))) for s in snapshots]
            ok = scripts_ok and outcome.exit_code == 0
            level = ss.classify([m["tags"] for m in members], scripts_succeeded=True, ceiling=self.requested)
            if not ok:
                level = ss.weakest([level, "crash"])
            if fixed_level and (only is None or instance_id in only):
                level = fixed_level  # taken while stopped or unmounted: the strongest level, whatever the tags say
            if str(group.get("Status")).lower() == "failed":
                outcome.fail("GroupFailed", f"snapshot group {group_id} failed: it cannot be restored")
            outcome.consistency = level if str(group.get("Status")).lower() != "failed" else "none"
            outcome.snapshots = members
            outcome.set_id = group_id
        self._tag_sets(groups)

    def _tag_sets(self, groups):
        """Tag the sets' snapshots: one TagResources per set, and the device tags shared by all the sets.

        The set tags name the set, so no two sets share a call; the device tag of one device name is
        the same in every set, so a fleet's device tags take a call per 50 snapshots of a device name.
        """
        batch = TagBatch("snapshot")
        written = {}
        for group_id, instance_id in groups.items():
            outcome = self.outcomes[instance_id]
            if not outcome.snapshots:
                continue
            level = outcome.consistency if outcome.consistency != "none" else "crash"
            # The group's own listing says how many snapshots the set has (CreateSnapshotGroup makes them at once).
            tags = self._set_tags(group_id, instance_id, level, members=len(outcome.snapshots))
            for member in outcome.snapshots:
                written[member["snapshot_id"]] = dict(tags, **{ss.TAG_DEVICE: member["device"]}) if member["device"] else tags
            if len(outcome.snapshots) == 1:
                # A set of one snapshot has one tag set: its device tag costs no call of its own.
                member = outcome.snapshots[0]
                batch.add([member["snapshot_id"]], written[member["snapshot_id"]])
                continue
            batch.add([m["snapshot_id"] for m in outcome.snapshots], tags)
            for member in outcome.snapshots:
                if member["device"]:
                    batch.add([member["snapshot_id"]], {ss.TAG_DEVICE: member["device"]})
        failed = batch.flush(self.api)
        for instance_id in groups.values():
            outcome = self.outcomes[instance_id]
            errors = [failed[m["snapshot_id"]] for m in outcome.snapshots if m["snapshot_id"] in failed]
            for member in outcome.snapshots:
                if member["snapshot_id"] not in failed:
                    member["tags"].update(written[member["snapshot_id"]])
            if errors:
                outcome.fail(errors[0].code, f"the set was made but tagging it failed: {errors[0]}")
            if outcome.snapshots:
                outcome.changed = True

    def _wait_for_completion(self):
        pending = {o.set_id: o for o in self.outcomes.values() if o.set_id and o.snapshots and o.status != "Existing"}

        def all_settled():
            for chunk in chunks(pending, GROUP_IDS_PER_CALL):
                for group in self.api.describe_snapshot_groups(snapshot_group_ids=chunk):
                    status = str(group.get("Status")).lower()
                    outcome = pending.get(group["SnapshotGroupId"])
                    if outcome and status in ("accomplished", "failed"):
                        for member in outcome.snapshots:
                            member["state"] = status
                        if status == "failed":
                            outcome.consistency = "none"
                            outcome.fail("GroupFailed", f"snapshot group {outcome.set_id} failed: it cannot be restored")
                        pending.pop(group["SnapshotGroupId"])
            return not pending

        poll_until(all_settled, self.params["completion_timeout"], self.sleep, self.clock, COMPLETION_POLL,
                   COMPLETION_POLL)
        for outcome in pending.values():
            if not outcome.error:
                outcome.fail("CompletionTimeout", f"snapshot group {outcome.set_id} did not complete within "
                                                  f"completion_timeout ({self.params['completion_timeout']} s)")
