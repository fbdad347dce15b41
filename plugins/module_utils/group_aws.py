# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Consistent sets of AWS instances: CreateSnapshots, framed by the freeze helper on Linux or VSS on Windows.

Linux, initiator ``controller``: one SSM command per 50 instances runs the
freeze helper's ``freeze``; as soon as an instance reports it is frozen the
controller calls CreateSnapshots for it, and the thaw follows in one SSM
command for the instances snapshotted in that round. The freeze is bounded
on the instance by the helper's watchdog, whatever happens to the controller.
A set is written ``crash`` at creation and raised to what the thaw confirmed,
so a set is never tagged more consistent than it is, even if the controller
dies between the two.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import hashlib
import json
import re
import secrets
import shlex
import threading
import time

from ansible_collections.appconsistent.snapshots.plugins.module_utils import aws as aws_api
from ansible_collections.appconsistent.snapshots.plugins.module_utils import aws_fleet
from ansible_collections.appconsistent.snapshots.plugins.module_utils import pacing
from ansible_collections.appconsistent.snapshots.plugins.module_utils import snapshot_set as ss
from ansible_collections.appconsistent.snapshots.plugins.module_utils.quiesced_volumes import quiesced_volumes
from ansible_collections.appconsistent.snapshots.plugins.module_utils import validate
from ansible_collections.appconsistent.snapshots.plugins.module_utils.concurrency import chunks
from ansible_collections.appconsistent.snapshots.plugins.module_utils.concurrency import concurrently
from ansible_collections.appconsistent.snapshots.plugins.module_utils.polling import wait_for_all
from ansible_collections.appconsistent.snapshots.plugins.module_utils.ssm import CommandRun
from ansible_collections.appconsistent.snapshots.plugins.module_utils.ssm import STATUS_MESSAGES
from ansible_collections.appconsistent.snapshots.plugins.module_utils.ssm import is_terminal
from ansible_collections.appconsistent.snapshots.plugins.module_utils import unmount as unmounting
from ansible_collections.appconsistent.snapshots.plugins.module_utils.unmount import EXIT_MESSAGES as UNMOUNT_EXIT
from ansible_collections.appconsistent.snapshots.plugins.module_utils.unmount import parse_report as parse_helper_output
from ansible_collections.appconsistent.snapshots.plugins.module_utils.unmount import remount_command
from ansible_collections.appconsistent.snapshots.plugins.module_utils.unmount import unmount_command
from ansible_collections.appconsistent.snapshots.plugins.module_utils.vss import DESCRIPTION_MAX
from ansible_collections.appconsistent.snapshots.plugins.module_utils.vss_runner import VssSnapshotRun

SHELL_DOCUMENT = "AWS-RunShellScript"
SNAPSHOT_WORKERS = 32
FREEZE_POLL = 0.25
# Instances freezing or frozen at a time (sent the freeze, not yet sent the thaw): at most four SendCommand waves.
FREEZE_IN_FLIGHT = 200
# Seconds between two waves: a wave's CreateSnapshots calls (50 instances, SNAPSHOT_WORKERS at once) and its thaw
# take well under this, so frozen instances do not queue behind each other.
WAVE_SPACING = 1.0
# Waves whose snapshots and thaw are under way at once, while the controller goes on polling and sending freezes.
WAVE_WORKERS = 4
_MOUNT = re.compile(r"/[A-Za-z0-9_./@+:\-]*")
_VOLUME = re.compile(r"vol-[0-9a-f]{8,32}")

# Freeze helper exit codes (roles/consistency_scripts/files/README.md), with what they mean here.
HELPER_EXIT = {
    0: "ok",
    2: "the freeze helper refused its command line",
    201: "the prescript failed or timed out; nothing was frozen",
    202: "the postscript failed; the filesystems are thawed but the application may still be quiesced",
    203: "the watchdog thawed before the thaw arrived (the freeze_timeout passed): the snapshot may not be consistent",
    204: "a filesystem was already frozen (another run is in progress?)",
    205: "the thaw found no frozen run",
    206: "the prescript says the application is not ready; nothing was frozen",
    207: "a mount was refused (/, /boot, not a mount point, or the filesystem of the helper's state)",
    208: "the freeze helper did not run as root",
    209: "the freeze failed (unsupported filesystem, or the helper was interrupted); everything was thawed",
    210: "the snapshot command failed while frozen",
    211: "the thaw failed: a filesystem may still be frozen - check the instance now",
    212: "the freeze helper's environment is unusable (a tool is missing or its state directory is unsafe)",
    127: "the freeze helper is not installed at freeze_helper_path (install it with the consistency_scripts role)",
}

# `mounts: auto`: every data filesystem on an EBS volume of the instance, never / or /boot.
AUTO_MOUNTS = r"""
auto_mounts() {
  local target source fstype disk model
  while read -r target source fstype; do
    case "$target" in /|/boot|/boot/*) continue ;; esac
    case "$fstype" in ext2|ext3|ext4|xfs|btrfs) ;; *) continue ;; esac
    [ -b "$source" ] || continue
    for disk in $(lsblk -nrso NAME,TYPE "$source" 2>/dev/null | awk '$2=="disk"{print $1}'); do
      model=$(cat "/sys/block/$disk/device/model" 2>/dev/null)
      case "$disk:$model" in
        *"Amazon Elastic Block Store"*|xvd*:*|sd*:) printf '%s\n' "$target"; break ;;
      esac
    done
  done < <(findmnt -rn -o TARGET,SOURCE,FSTYPE)
}
"""


# Initiator "instance": the instance learns its own id (SSM sets AWS_SSM_INSTANCE_ID for the commands it
# runs; the instance metadata service otherwise), names its set, and the freeze helper runs the snapshot
# call while frozen. The AWS CLI makes the call; python3 with boto3 is used where the CLI is missing.
INSTANCE_INITIATOR = r"""
set -u
iid=${AWS_SSM_INSTANCE_ID:-}
if [ -z "$iid" ]; then
  imds=${AWS_EC2_METADATA_SERVICE_ENDPOINT:-http://169.254.169.254}
  token=$(curl -s -m 2 -X PUT "${imds%%/}/latest/api/token" -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' 2>/dev/null)
  iid=$(curl -s -m 2 -H "X-aws-ec2-metadata-token: $token" "${imds%%/}/latest/meta-data/instance-id" 2>/dev/null)
fi
case "$iid" in
  i-*) ;;
  *) echo '{"exit_code": 212, "status": "environment_error", "message": "cannot tell the instance id: neither'\
' AWS_SSM_INSTANCE_ID nor the instance metadata service gave it"}'; exit 212 ;;
esac
# The set id comes from the run and the instance id: the controller derives the same one and keeps only the
# snapshots that carry it.
set_id="acs-%(stamp)s-$(printf '%%s' "%(nonce)s:$iid" | sha256sum | cut -c1-8)"
tags=%(tags)s
tags=${tags//@@SET_ID@@/$set_id}
tags=${tags//@@INSTANCE_ID@@/$iid}
spec=%(spec)s
spec=${spec//@@INSTANCE_ID@@/$iid}
# Absolute paths: the helper runs the command with a PATH of its own.
aws_cli=$(command -v aws 2>/dev/null)
python=$(command -v python3 2>/dev/null)
if [ -n "$aws_cli" ] && "$aws_cli" --version >/dev/null 2>&1; then
  snapshot=("$aws_cli" ec2 create-snapshots --region %(region)s --instance-specification "$spec"
            --tag-specifications "$tags" --copy-tags-from-source volume --output json %(description)s)
elif [ -n "$python" ] && "$python" -c 'import boto3' >/dev/null 2>&1; then
  snapshot=("$python" -c %(python)s %(region)s "$spec" "$tags" %(description_arg)s)
else
  echo '{"exit_code": 212, "status": "environment_error", "message": "neither the AWS CLI nor python3 with boto3 is installed on the instance"}'
  exit 212
fi
exec %(helper)s run %(args)s -- "${snapshot[@]}"
"""

# The same call through boto3, for instances without the AWS CLI.
PYTHON_CREATE_SNAPSHOTS = """import json, sys
import boto3
region, spec, tags = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
params = dict(InstanceSpecification=spec, TagSpecifications=tags, CopyTagsFromSource="volume")
if len(sys.argv) > 4:
    params["Description"] = sys.argv[4]
result = boto3.client("ec2", region_name=region).create_snapshots(**params)
print(json.dumps({"Snapshots": result.get("Snapshots", [])}, default=str))
"""


# Added to a stop timeout message: what the operator can do about it.
STOP_HINT = {True: "", False: "; force_stop: true forces the stop after the timeout"}


class GroupInputError(ValueError):
    pass


class Outcome:
    def __init__(self, instance_id, requested):
        self.instance_id = instance_id
        self.requested = requested
        self.platform = None
        self.status = None
        self.consistency = "none"
        self.set_id = None
        self.snapshots = []
        self.volumes = []
        self.exclude_boot = False
        self.exclude_data = []
        self.command_ids = []
        self.freeze = None
        self.thaw = None
        self.freeze_window = None
        self.error = None
        self.changed = False
        self.plan = None
        self.exit_code = None
        self.downtime = None
        self.refused_snapshots = None
        self.duplicates_deleted = None

    def fail(self, code, message):
        self.error = ss.merge_error(self.error, code, message)

    def to_dict(self):
        for member in self.snapshots:
            member.setdefault("quiesced", ss.was_quiesced(member["tags"]))
        data = dict(instance_id=self.instance_id, provider="aws", platform=self.platform, status=self.status,
                    consistency_requested=self.requested, consistency=self.consistency, set_id=self.set_id,
                    snapshots=self.snapshots, command_ids=self.command_ids, changed=self.changed)
        for key in ("freeze_window", "error", "plan", "exit_code", "downtime", "refused_snapshots",
                    "duplicates_deleted"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        if self.freeze is not None:
            data["helper"] = dict(freeze=_brief(self.freeze), thaw=_brief(self.thaw))
        return data


def _brief(report):
    if not report:
        return None
    keys = ("exit_code", "status", "message", "scripts", "t_start", "t_frozen", "t_thawed", "auto_thawed",
            "auto_thaw_reason", "auto_left_out")
    brief = {k: report.get(k) for k in keys if k in report}
    if isinstance(brief.get("scripts"), dict):
        brief["scripts"] = {k: brief["scripts"].get(k) for k in ("status", "reason")}
    return brief


class AwsGroupRun:
    def __init__(self, module, sleep=time.sleep, clock=time.monotonic):
        self.module = module
        self.params = module.params
        self.sleep = sleep
        self.clock = clock
        self.requested = self.params["consistency"]
        self.outcomes = {}
        self.instances = {}
        self.agents = {}
        self.ec2 = None
        self.ssm = None
        self.pacer = pacing.of(module, clock=clock, sleep=sleep)
        self._reserved = {}  # instances admitted to a freeze wave whose CreateSnapshots token is reserved
        self._set_stamp = self._set_nonce = None  # the instance-initiated run's set ids are derived from these
        self._attempts = threading.local()  # CreateSnapshots requests sent by this thread's current call

    # --- input ------------------------------------------------------------------------------------

    def validate(self):
        p = self.params
        for volume_id in (p.get("disk_ids") or []) + (p.get("exclude_disk_ids") or []):
            if not _VOLUME.fullmatch(volume_id):
                raise GroupInputError(f"{volume_id!r} is not an EBS volume id (vol-...)")
        for label in ("pre_script_path", "post_script_path", "freeze_helper_path"):
            self._check_path(label, p[label])
        # CreateSnapshots, called while the instances are frozen, refuses a longer description.
        if p.get("description") and len(p["description"]) > DESCRIPTION_MAX:
            raise GroupInputError(f"description is {len(p['description'])} characters long: at most {DESCRIPTION_MAX}")
        for label in ("freeze_timeout", "script_timeout"):
            if p[label] < 1:
                raise GroupInputError(f"{label} must be a positive number of seconds, not {p[label]}")
        mounts = p.get("mounts") or ["auto"]
        if mounts != ["auto"]:
            for mount in mounts:
                self._check_path("mounts", mount)
                if mount.rstrip("/") in ("", "/boot") or mount.startswith("/boot/"):
                    raise GroupInputError(f"mounts: {mount} is never frozen: freezing / or /boot can hang the instance; "
                                          "take an offline set for the root volume")
        if self.requested == "offline" and self.unmounts and not p.get("disk_ids"):
            raise GroupInputError("consistency offline with mounts unmounts those filesystems instead of stopping the "
                                  "instance: give the volumes behind them in disk_ids, so that the set holds only them")
        conflicts = ss.user_tags_conflicts(p.get("tags"))
        if conflicts:
            raise GroupInputError(f"tags: these keys are reserved: {', '.join(conflicts)}")
        # Strings from here on (4711 becomes "4711"): CreateSnapshots, after the freeze, would refuse anything else.
        p["tags"] = validate.user_tags(p.get("tags"), "aws", validate.SET_OWN_TAGS["aws"])
        ss.validate_run_id(p.get("run_id"))
        if p.get("delete_after"):
            ss.parse_duration(p["delete_after"])

    @property
    def unmounts(self):
        """offline with explicit mounts: unmount them through the agent instead of stopping the instance."""
        mounts = self.params.get("mounts") or ["auto"]
        return self.requested == "offline" and mounts != ["auto"]

    @staticmethod
    def _check_path(label, path):
        if not path or not _MOUNT.fullmatch(path) or "/../" in path + "/" or "/./" in path + "/":
            raise GroupInputError(f"{label} {path!r} is refused: give an absolute path of letters, digits and _ . / @ + : -, "
                                  "without spaces, quotes or '..'")

    def _set_tags(self, set_id, instance_id, consistency, members=None):
        tags = dict(self.params.get("tags") or {})
        tags.update(ss.set_tags(set_id, instance_id, consistency, run_id=self.params.get("run_id"), members=members,
                                delete_after=ss.delete_after_instant(self.params["delete_after"])
                                if self.params.get("delete_after") else None))
        return tags

    # --- the run -----------------------------------------------------------------------------------

    def run(self):
        self.validate()
        self.ec2 = self.module.aws_client("ec2")
        # CreateSnapshots has no ClientToken: an attempt retried (by botocore after a lost answer, or by the retry
        # policy) may have made a batch already. Attempts are counted per thread, so that only then is the set read back.
        self.ec2.meta.events.register("before-send.ec2.CreateSnapshots", self._count_attempt,
                                      unique_id="appconsistent-create-snapshots-attempts")
        self.instances = aws_fleet.resolve_instances(self.ec2, self.params["instance_ids"])
        needs_agent = self.requested not in ("crash", "offline") or self.unmounts
        if needs_agent:
            self.ssm = self.module.aws_client("ssm")
            self.agents = aws_fleet.agent_status(self.ssm, [i for i, d in self.instances.items() if d])
        ready = self._preflight(self.agents, needs_agent)
        ready = self._skip_existing(ready)
        windows = [i for i in ready if self.outcomes[i].platform == "windows"]
        linux = [i for i in ready if self.outcomes[i].platform == "linux"]
        if self.requested != "crash":
            self._refuse_a_run_longer_than_wait_timeout(ready)
        if self.module.check_mode:  # the plan's estimate of what the account's limits impose (VSS plans its own)
            self.pacer.plan("ec2", "CreateSnapshots", len(ready) - (len(windows) if self.requested not in ("crash", "offline") else 0))
        if self.requested == "crash":
            self._crash(ready)
        elif self.requested == "offline":
            self._offline(ready)
        else:
            self._agent_parts(windows, linux)
        if self.params.get("wait_for_completion") and not self.module.check_mode:
            made = [o for o in self.outcomes.values() if o.snapshots]
            aws_fleet.complete_sets(self.ec2, made, self.params["completion_timeout"], self.sleep, self.clock)
        return self.outcomes

    def _refuse_a_run_longer_than_wait_timeout(self, ready):
        """Every instance's CreateSnapshots (the VSS agent's too) spends the account's bucket, and an instance is
        quiesced only when its call can be made in time; a run whose calls outlast wait_timeout at the stated limits
        would freeze its first instances and give up on its last ones, so it is refused before anything is frozen."""
        floor = self.pacer.floor("ec2", "CreateSnapshots", len(ready))
        wait = self.params["wait_timeout"]
        if floor <= wait:
            return
        capacity, refill = self.pacer.stated_limit("ec2", "CreateSnapshots")
        raise GroupInputError(
            f"{len(ready)} instances need at least {floor:.0f} s of CreateSnapshots calls at the account's limits "
            f"({capacity:g} tokens refilling {refill:g} a second), more than wait_timeout ({wait} s): raise wait_timeout "
            f"to at least {int(floor * 1.25) + 60} s, split the instances between tasks, or state raised limits with "
            "api_rate_limits; nothing was frozen or unmounted.")

    def _preflight(self, agents, needs_agent):
        p = self.params
        known = {v["volume_id"] for d in self.instances.values() if d for v in aws_fleet.attached_volumes(d)}
        unknown = [v for v in (p.get("disk_ids") or []) + (p.get("exclude_disk_ids") or []) if v not in known]
        if unknown:
            raise GroupInputError(f"unknown volume id(s) {', '.join(unknown)}: not attached to any of the instances given")
        ready = []
        for instance_id, instance in self.instances.items():
            outcome = self.outcomes[instance_id] = Outcome(instance_id, self.requested)
            if instance is None:
                outcome.status = "NotSent"
                outcome.fail("InstanceNotFound", f"instance {instance_id} does not exist in {self.module.region}")
                continue
            outcome.platform = aws_fleet.platform_of(instance)
            if needs_agent:
                problem = aws_fleet.preflight(instance_id, instance, agents.get(instance_id), None, self.module.region)
            else:
                state = (instance.get("State") or {}).get("Name")
                problem = None if state in ("running", "stopped") else dict(
                    code="InstanceNotReady", message=f"instance {instance_id} is {state}")
            if problem:
                outcome.status = "NotSent"
                outcome.fail(problem["code"], problem["message"])
                continue
            outcome.volumes = aws_fleet.attached_volumes(instance)
            problem = self._select(outcome)
            if problem:
                outcome.status = "NotSent"
                outcome.fail(*problem)
                continue
            ready.append(instance_id)
        return ready

    def _select(self, outcome):
        p = self.params
        volumes = outcome.volumes
        chosen = [v for v in volumes if not p.get("disk_ids") or v["volume_id"] in p["disk_ids"]]
        chosen = [v for v in chosen if v["volume_id"] not in (p.get("exclude_disk_ids") or [])]
        if p.get("exclude_boot_disk"):
            chosen = [v for v in chosen if not v["boot"]]
        if not chosen:
            return ("NoDisks", f"no volume of instance {outcome.instance_id} is left to snapshot after the disk selection")
        if outcome.platform == "windows" and self.requested not in ("crash", "offline") and len(chosen) != len(volumes) and \
                not (p.get("exclude_boot_disk") and len(chosen) == len(volumes) - 1):
            return ("SelectionNotSupported", f"instance {outcome.instance_id} is Windows: VSS snapshots every attached "
                                             "volume (only the boot volume can be left out, with exclude_boot_disk)")
        chosen_ids = {v["volume_id"] for v in chosen}
        outcome.exclude_boot = any(v["boot"] and v["volume_id"] not in chosen_ids for v in volumes)
        outcome.exclude_data = [v["volume_id"] for v in volumes if not v["boot"] and v["volume_id"] not in chosen_ids]
        outcome.volumes = chosen
        return None

    def _skip_existing(self, ready):
        run_id = self.params.get("run_id")
        if not run_id or not ready:
            return ready
        owner = {v["volume_id"]: i for i in ready for v in aws_fleet.attached_volumes(self.instances[i])}
        existing = aws_fleet.sets_by_run_id(self.ec2, run_id, ready, volume_owner=owner)
        remaining = []
        for instance_id in ready:
            found = existing.get(instance_id)
            if not found or not found.consistency:
                remaining.append(instance_id)
                continue
            outcome = self.outcomes[instance_id]
            outcome.status, outcome.set_id = "Existing", found.set_id
            outcome.consistency, outcome.snapshots = found.consistency, found.members
            if ss.existing_set_error(found):
                outcome.fail(*ss.existing_set_error(found))
        return remaining

    # --- CreateSnapshots ---------------------------------------------------------------------------------

    def _create_set(self, instance_id, consistency):
        """CreateSnapshots for one instance, tagged as a set; returns (set_id, members) or raises."""
        outcome = self.outcomes[instance_id]
        set_id = ss.new_set_id()
        # A frozen instance's CreateSnapshots token was reserved when it was admitted to its freeze wave.
        self._attempts.sent = 0
        with self.pacer.prepaid("ec2", "CreateSnapshots", 1 if self._reserved.pop(instance_id, None) else 0):
            snapshots = aws_api.create_snapshots(
                self.ec2, instance_id, exclude_boot_volume=outcome.exclude_boot,
                exclude_data_volume_ids=outcome.exclude_data, description=self.params.get("description"),
                tags=self._set_tags(set_id, instance_id, consistency, members=len(outcome.volumes)),
                copy_tags_from_source=True)
        if self._attempts.sent > 1:
            self._drop_duplicates(outcome, set_id, {s["SnapshotId"] for s in snapshots})
        devices = {v["volume_id"]: v["device"] for v in outcome.volumes}
        members = [aws_fleet.snapshot_member(s, devices.get(s.get("VolumeId"))) for s in snapshots]
        for member in members:
            member["state"] = member["state"] or "pending"
        return set_id, members

    def _count_attempt(self, **_kwargs):
        self._attempts.sent = getattr(self._attempts, "sent", 0) + 1

    def _drop_duplicates(self, outcome, set_id, kept):
        """Delete the batch an earlier attempt of a retried CreateSnapshots made under the same set id: the set is the
        batch the answer names, one snapshot per volume. Such a batch is this run's own, made a moment before."""
        found = aws_api.describe_snapshots(self.ec2, filters=[{"Name": "tag:" + ss.TAG_SET_ID, "Values": [set_id]}])
        extra = sorted(s["SnapshotId"] for s in found if s["SnapshotId"] not in kept and
                       aws_api.tags_of(s).get(ss.TAG_INSTANCE_ID) == outcome.instance_id)
        left = []
        for snapshot_id in extra:
            try:
                aws_api.delete_snapshot(self.ec2, snapshot_id)
            except aws_api.AppConsistentAWSError as exc:
                left.append(f"{snapshot_id} ({_code(exc)})")
        if extra:
            outcome.duplicates_deleted = [i for i in extra if not any(x.startswith(i) for x in left)]
        if left:
            outcome.fail("DuplicateSnapshots", f"CreateSnapshots was retried and an earlier attempt had already made "
                                               f"snapshots under set {set_id}; these could not be deleted and make the "
                                               f"set look doubled: delete them: {', '.join(left)}")

    def _snapshot_many(self, instance_ids, consistency, pool=None):
        """CreateSnapshots for many instances at once; the calls run concurrently (in pool when given)."""
        if pool is None:
            workers = max(1, min(SNAPSHOT_WORKERS, len(instance_ids)))
            with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as own:
                return self._snapshot_many(instance_ids, consistency, own)
        done = {}
        futures = {pool.submit(self._create_set, i, consistency): i for i in instance_ids}
        for future in concurrent.futures.as_completed(futures):
            instance_id = futures[future]
            outcome = self.outcomes[instance_id]
            try:
                outcome.set_id, outcome.snapshots = future.result()
                outcome.changed = True
                done[instance_id] = True
            except aws_api.AppConsistentAWSError as exc:
                outcome.fail(_code(exc), aws_api.describe_aws_failure(exc) or f"CreateSnapshots failed: {_detail(exc)}")
        return [i for i in instance_ids if done.get(i)]

    def _tag_devices(self, instance_ids):
        """The device tags, after the thaw; and the member count of a set that holds more or fewer snapshots than the
        volumes read before (one attached or detached meanwhile): the set is what CreateSnapshots made."""
        batch = aws_api.TagBatch()
        for instance_id in instance_ids:
            snapshots = self.outcomes[instance_id].snapshots
            count = ss.members_value(len(snapshots)) if snapshots else None
            if any(m["tags"].get(ss.TAG_MEMBERS) not in (None, count) for m in snapshots):
                batch.add([m["snapshot_id"] for m in snapshots], {ss.TAG_MEMBERS: count})
                for member in snapshots:
                    member["tags"][ss.TAG_MEMBERS] = count
            for member in snapshots:
                if member["device"]:
                    batch.add([member["snapshot_id"]], {ss.TAG_DEVICE: member["device"]})
                    member["tags"][ss.TAG_DEVICE] = member["device"]
        batch.flush(self.ec2)

    def _crash(self, ready):
        if self.module.check_mode:
            for instance_id in ready:
                outcome = self.outcomes[instance_id]
                outcome.status, outcome.changed = "WouldRun", True
                outcome.plan = dict(action="CreateSnapshots", volumes=outcome.volumes,
                                    exclude_boot_volume=outcome.exclude_boot, exclude_data_volume_ids=outcome.exclude_data)
            return
        made = self._snapshot_many(ready, "crash")
        for instance_id in ready:
            outcome = self.outcomes[instance_id]
            outcome.status = "Created" if instance_id in made else "Failed"
            if instance_id in made:
                outcome.consistency = "crash"
        self._tag_devices(made)

    # --- offline: stopped instances --------------------------------------------------------------------

    def _states(self, instance_ids):
        states = {}
        for chunk in chunks(instance_ids, aws_fleet.FILTER_VALUES_MAX):
            for instance in aws_api.describe_instances(self.ec2, filters=[{"Name": "instance-id", "Values": chunk}]):
                states[instance["InstanceId"]] = (instance.get("State") or {}).get("Name")
        return states

    def _wait_state(self, instance_ids, wanted, timeout):
        """Poll all of them together until each is ``wanted`` or ``timeout`` passed; returns those that are."""
        return wait_for_all(self._states, instance_ids, wanted, timeout, self.sleep, self.clock)

    def _offline(self, ready):
        if self.unmounts:
            linux = [i for i in ready if self.outcomes[i].platform == "linux"]
            for instance_id in ready:
                if instance_id not in linux:
                    self.outcomes[instance_id].status = "NotSent"
                    self.outcomes[instance_id].fail("WrongPlatform", "mounts can only be unmounted on Linux; leave mounts "
                                                                     "out to take the set with the instance stopped")
            if linux:
                self._offline_unmounted(linux)
            return
        p = self.params
        running = [i for i in ready if (self.instances[i].get("State") or {}).get("Name") == "running"]
        if self.module.check_mode:
            for instance_id in ready:
                outcome = self.outcomes[instance_id]
                outcome.status, outcome.changed = "WouldRun", True
                outcome.plan = dict(stop=instance_id in running, action="CreateSnapshots", start=instance_id in running,
                                    volumes=outcome.volumes)
            return
        stop_requested = self.clock()
        late = []
        try:
            if running:
                aws_api.stop_instances(self.ec2, running)
                for instance_id in running:
                    self.outcomes[instance_id].changed = True
                stopped = self._wait_state(running, "stopped", p["stop_timeout"])
                late = [i for i in running if i not in stopped]
                if late and p.get("force_stop"):
                    aws_api.stop_instances(self.ec2, late, force=True)
                    forced = self._wait_state(late, "stopped", p["stop_timeout"])
                    late = [i for i in late if i not in forced]
                for instance_id in late:
                    self.outcomes[instance_id].status = "NotStopped"
                    self.outcomes[instance_id].fail(
                        "StopTimeout", f"instance {instance_id} did not stop within stop_timeout ({p['stop_timeout']} s), "
                                       "so no set was taken" + STOP_HINT[bool(p.get("force_stop"))])
            made = self._snapshot_many([i for i in ready if i not in late], "offline")
            for instance_id in ready:
                if instance_id in late:
                    continue
                outcome = self.outcomes[instance_id]
                outcome.status = "Created" if instance_id in made else "Failed"
                outcome.consistency = "offline" if instance_id in made else "none"
            self._tag_devices(made)
        finally:
            self._restart(running, late, stop_requested)

    def _offline_unmounted(self, ready):
        """Unmount the filesystems in mounts, snapshot each instance as soon as it reports them unmounted (and only
        while its remount watchdog cannot have fired), mount them again; a set is raised to offline only then."""
        p = self.params
        run_id = ss.new_set_id()
        mounts = p["mounts"]
        if self.module.check_mode:
            for instance_id in ready:
                outcome = self.outcomes[instance_id]
                outcome.status, outcome.changed = "WouldRun", True
                outcome.plan = dict(unmount=mounts, action="CreateSnapshots", volumes=outcome.volumes, remount=mounts)
            return
        common = dict(timeout_seconds=p.get("delivery_timeout"), max_concurrency=p.get("max_concurrency"),
                      max_errors=p.get("max_errors"), sleep=self.sleep, clock=self.clock)
        # The filesystems come back by themselves after this long, whatever happens to the controller.
        deadline = max(p["freeze_timeout"], 60)
        unmount = CommandRun(self.ssm, SHELL_DOCUMENT, {"commands": [unmount_command(run_id, mounts, deadline)]},
                             comment=f"appconsistent.snapshots unmount {run_id}", **common)
        remount = CommandRun(self.ssm, SHELL_DOCUMENT, {"commands": [remount_command(run_id)]},
                             comment=f"appconsistent.snapshots remount {run_id}", **common)
        # The watchdog is armed on the instance after the command was sent, so it cannot fire before this instant
        # of the controller's clock; a snapshot call must have returned by then to hold the filesystems unmounted.
        expires = self.clock() + deadline - unmounting.UNMOUNT_MARGIN
        sent = self._send(unmount, ready)
        made = {}  # instance id -> True when its CreateSnapshots returned before expires
        try:
            # Each instance is snapshotted as soon as it reports its filesystems unmounted: waiting for the
            # slowest of its batch could outlast its watchdog.
            stop_at = min(self.clock() + p["wait_timeout"], expires)
            pending = list(sent)
            while pending:
                unmount.poll()
                finished = [i for i in pending if i in unmount.invocations and is_terminal(unmount.invocations[i])]
                if finished:
                    pending = [i for i in pending if i not in finished]
                    offline = [i for i in finished if self._read_unmount(unmount, i)]
                    made.update(self._snapshot_unmounted(offline, expires))
                    continue
                if self.clock() >= stop_at:
                    break
                self.sleep(min(FREEZE_POLL, max(0.0, stop_at - self.clock())))
            # An unmount still on its way would run after the remount: it is cancelled first.
            refused = unmount.cancel(pending) if pending else {}
            for instance_id in pending:
                outcome = self.outcomes[instance_id]
                outcome.status = unmount.result(instance_id)["status"]
                outcome.fail("WaitTimeout", f"the unmount did not finish on {instance_id} within wait_timeout "
                                            f"({p['wait_timeout']} s) or before its watchdog's deadline; it was "
                                            + (f"not cancelled ({refused[instance_id]})" if instance_id in refused
                                               else "cancelled") + " and a remount was sent")
            self._tag_devices(list(made))
        finally:
            if sent:
                confirmed = self._remount(remount, sent, made, deadline)
                self._raise_consistency({"offline": confirmed})

    def _read_unmount(self, run, instance_id):
        """True when the instance reports its filesystems unmounted."""
        outcome = self.outcomes[instance_id]
        result = run.result(instance_id)
        report = self._report(run, instance_id, result) or {}
        outcome.status = result["status"]
        outcome.freeze = report
        if report.get("exit_code") == 0:
            return True
        code = report.get("exit_code")
        message = report.get("message") or STATUS_MESSAGES.get(result["status"], result["stderr"][-300:])
        outcome.fail(f"Unmount{code}" if code is not None else result["status"],
                     f"{UNMOUNT_EXIT.get(code, 'the unmount did not complete')}: {message}")
        return False

    def _snapshot_unmounted(self, instance_ids, expires):
        """CreateSnapshots for unmounted instances, written crash: {instance id: True if the call returned in time}.

        No call is made for an instance whose watchdog may fire before the call returns; a call that returned
        after ``expires`` made a set that may postdate the remount, so it is never raised to offline."""
        soon = self.clock() + self.pacer.seconds_until("ec2", "CreateSnapshots", len(instance_ids))
        late = [i for i in instance_ids if soon >= expires]
        for instance_id in late:
            self.outcomes[instance_id].fail("UnmountExpired", unmounting.expired_before_call(instance_id))
        made = {}
        for instance_id in self._snapshot_many([i for i in instance_ids if i not in late], "crash"):
            outcome = self.outcomes[instance_id]
            outcome.consistency = "crash"
            made[instance_id] = self.clock() < expires
            if not made[instance_id]:
                outcome.fail("UnmountExpired", unmounting.returned_late("CreateSnapshots", instance_id))
        return made

    def _remount(self, run, sent, made, deadline):
        """Mount again on every instance the unmount was sent to; returns the sets the remount confirms offline.

        205 means the watchdog had mounted the filesystems again before the remount came: nothing shows the
        snapshots were taken before that, so such a set stays crash and the instance says why."""
        later = f"they are mounted again at the latest {deadline} s after the unmount"
        remounting = self._send(run, sent)
        for instance_id in sent:
            if instance_id not in remounting:
                self.outcomes[instance_id].fail("RemountFailed", f"the remount could not be sent: check {instance_id} "
                                                                 f"now; {later}")
        run.wait(max(30.0, self.params["wait_timeout"]))
        confirmed = []
        for instance_id in remounting:
            outcome = self.outcomes[instance_id]
            result = run.result(instance_id)
            report = self._report(run, instance_id, result) or {}
            outcome.thaw = report
            code = report.get("exit_code")
            if code == 0 and outcome.freeze and outcome.freeze.get("t"):
                outcome.downtime = round(float(report["t"]) - float(outcome.freeze["t"]), 3)
            if code == 205 and outcome.freeze and outcome.freeze.get("exit_code") == 0:
                if outcome.snapshots:
                    outcome.fail("RemountedByWatchdog", unmounting.remounted_by_watchdog(instance_id))
                continue
            if code not in (0, 205):
                outcome.fail("RemountFailed", f"the filesystems were not mounted again on {instance_id} "
                                              f"({report.get('message') or result['status']}): check it now; {later}" +
                             ("; the set stays labelled crash" if made.get(instance_id) and code is None else ""))
            if made.get(instance_id) and code in (0, 209):
                # The remount found the run's record (the watchdog had not remounted) and the call returned in time.
                outcome.consistency = "offline"
                confirmed.append(instance_id)
        return confirmed

    def _restart(self, running, late, stop_requested):
        """Start again what was running, also after an error: an offline set must never leave an instance down."""
        p = self.params
        if not running:
            return
        restart = [i for i in running if i not in late]
        if late:  # a slow shutdown still ends in "stopped": wait for it, then start it too
            restart += self._wait_state(late, "stopped", p["stop_timeout"])
        if restart:
            aws_api.start_instances(self.ec2, restart)
            started = self._wait_state(restart, "running", p["start_timeout"])
            for instance_id in restart:
                outcome = self.outcomes[instance_id]
                if instance_id in started:
                    outcome.downtime = round(self.clock() - stop_requested, 3)
                else:
                    outcome.fail("StartTimeout", f"instance {instance_id} was started again but is not running after "
                                                 f"start_timeout ({p['start_timeout']} s): check it now")
        for instance_id in late:
            if instance_id not in restart:
                self.outcomes[instance_id].fail("StillStopping", f"instance {instance_id} is still stopping: start it "
                                                                 "once it has stopped")

    # --- Windows and Linux side by side -----------------------------------------------------------------

    def _agent_parts(self, windows, linux):
        """The Windows (VSS) and Linux (freeze helper) instances of a fleet do not wait for each other: the two parts
        run side by side, so a mixed fleet takes as long as its longer part rather than both."""
        # Everything either part could refuse is refused here, before the other part freezes or snapshots anything.
        vss_run = self._vss_run(windows) if windows else None
        if linux and self.params.get("initiator") == "instance" and (self.params.get("mounts") or ["auto"]) == ["auto"]:
            raise GroupInputError("initiator instance needs mounts listed explicitly")
        parts = ([lambda: self._windows(vss_run)] if windows else []) + ([lambda: self._linux(linux)] if linux else [])
        # Both parts have ended (every thaw of the Linux part is sent) before an error of either is raised.
        concurrently(lambda part: part(), parts, len(parts))

    # --- Windows: VSS -----------------------------------------------------------------------------------

    def _vss_run(self, instance_ids):
        """The VSS run of the Windows instances, its parameters checked."""
        p = self.params
        mapped = dict(
            instance_ids=instance_ids, targets=None, max_concurrency=p.get("max_concurrency"),
            max_errors=p.get("max_errors"), delivery_timeout=p.get("delivery_timeout"),
            exclude_boot_volume=bool(p.get("exclude_boot_disk")), writers=self.requested == "application",
            copy_only=False, create_ami=False, ami_name=None, description=p.get("description"), tags=p.get("tags"),
            execution_timeout=None, collect_diagnostic_logs=False, save_vss_metadata=False,
            install_vss_components=False, vss_version=None, run_id=p.get("run_id"), delete_after=p.get("delete_after"),
            on_fallback=p.get("on_fallback"), wait=p.get("wait"), wait_timeout=p.get("wait_timeout"),
            wait_for_completion=False, completion_timeout=p.get("completion_timeout"))
        # The VSS run works from the instances and agents this run has read, not from a second read of them.
        known = ({i: self.instances[i] for i in instance_ids}, {i: self.agents[i] for i in instance_ids if i in self.agents})
        vss_run = VssSnapshotRun(self.module, sleep=self.sleep, clock=self.clock, params=mapped, known=known)
        vss_run.validate()
        return vss_run

    def _windows(self, vss_run):
        summary = vss_run.run()
        for result in summary["results"]:
            outcome = self.outcomes[result["instance_id"]]
            outcome.status = result["status"]
            outcome.consistency = result["consistency"]
            outcome.set_id = result["set_id"]
            outcome.snapshots = result["snapshots"]
            outcome.changed = result["changed"]
            outcome.plan = result.get("plan")
            if result.get("command_id"):
                outcome.command_ids = [result["command_id"]]
            if result.get("error"):
                outcome.fail(result["error"]["code"], result["error"]["message"])

    # --- Linux: the freeze helper ---------------------------------------------------------------------

    def _helper_command(self, action, run_id):
        p = self.params
        helper = shlex.quote(p["freeze_helper_path"])
        if action == "thaw":
            return f"{helper} thaw --run-id {shlex.quote(run_id)}"
        args = ["--run-id", run_id, "--timeout", str(p["freeze_timeout"]), "--script-timeout", str(p["script_timeout"])]
        if self.requested == "application":
            args += ["--prescript", p["pre_script_path"], "--postscript", p["post_script_path"]]
        else:
            args += ["--prescript", "", "--postscript", ""]
        if not p.get("freeze", True) and self.requested == "application":
            args.append("--no-freeze")
        quoted = " ".join(shlex.quote(a) for a in args)
        mounts = p.get("mounts") or ["auto"]
        if mounts == ["auto"]:
            return (AUTO_MOUNTS + "\nset -u\nmounts=()\nwhile read -r m; do mounts+=(--auto-mount \"$m\"); done < <(auto_mounts)\n"
                    "if [ ${#mounts[@]} -eq 0 ]; then echo 'no data filesystem on an EBS volume was found: "
                    "set mounts explicitly' >&2; exit 207; fi\n"
                    f"{helper} freeze {quoted} \"${{mounts[@]}}\"")
        return f"{helper} freeze {quoted} " + " ".join(f"--mount {shlex.quote(m)}" for m in mounts)

    def _run_set_id(self, instance_id):
        """The set id an instance of this instance-initiated run gives its set (INSTANCE_INITIATOR computes the same)."""
        digest = hashlib.sha256(f"{self._set_nonce}:{instance_id}".encode()).hexdigest()[:8]
        return f"acs-{self._set_stamp}-{digest}"

    def _initiator_command(self, outcome, run_id):
        p = self.params
        tags = self._set_tags("@@SET_ID@@", "@@INSTANCE_ID@@", "crash", members=len(outcome.volumes))
        tag_spec = json.dumps([{"ResourceType": "snapshot", "Tags": aws_api.tag_list(tags)}])
        spec = {"InstanceId": "@@INSTANCE_ID@@", "ExcludeBootVolume": bool(outcome.exclude_boot)}
        if outcome.exclude_data:
            spec["ExcludeDataVolumeIds"] = list(outcome.exclude_data)
        # mounts are listed (checked in _agent_parts): the helper's own freeze arguments
        freeze = shlex.split(self._helper_command("freeze", run_id).splitlines()[-1])[2:]
        description = p.get("description")
        script = INSTANCE_INITIATOR % dict(
            tags=shlex.quote(tag_spec), spec=shlex.quote(json.dumps(spec)), region=shlex.quote(self.module.region),
            description=f"--description {shlex.quote(description)}" if description else "",
            description_arg=shlex.quote(description) if description else "",
            python=shlex.quote(PYTHON_CREATE_SNAPSHOTS), helper=shlex.quote(p["freeze_helper_path"]),
            stamp=self._set_stamp, nonce=self._set_nonce,
            args=" ".join(shlex.quote(a) for a in freeze))
        return "exec bash -c " + shlex.quote(script)

    def _linux_instance_initiated(self, instance_ids):
        """One SSM command per batch: the helper freezes, the instance itself calls CreateSnapshots, the helper thaws."""
        p = self.params
        run_id = ss.new_set_id()
        self._set_stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dt%H%M%S")
        self._set_nonce = secrets.token_hex(8)
        commands = {}
        for instance_id in instance_ids:
            commands.setdefault(self._initiator_command(self.outcomes[instance_id], run_id), []).append(instance_id)
        if self.module.check_mode:
            for command, ids in commands.items():
                for instance_id in ids:
                    outcome = self.outcomes[instance_id]
                    outcome.status, outcome.changed = "WouldRun", True
                    outcome.plan = dict(document=SHELL_DOCUMENT, command=command, volumes=outcome.volumes)
            return
        runs = []
        for command, ids in commands.items():
            run = CommandRun(self.ssm, SHELL_DOCUMENT, {"commands": [command],
                                                        "executionTimeout": [str(2 * p["script_timeout"] + 300)]},
                             comment=f"appconsistent.snapshots run {run_id}", timeout_seconds=p.get("delivery_timeout"),
                             max_concurrency=p.get("max_concurrency"), max_errors=p.get("max_errors"),
                             sleep=self.sleep, clock=self.clock)
            sent = []
            # The instances call CreateSnapshots themselves while frozen, after their prescript: each batch goes out
            # once the account's bucket holds a token for every instance in it.
            for batch in pacing.admitted_batches(self.pacer, "ec2", "CreateSnapshots", ids, aws_api.SSM_INSTANCE_BATCH,
                                                 self.sleep, made_within=p["script_timeout"] + pacing.AGENT_CALL_WITHIN,
                                                 finished=run.ended):
                made = self._send(run, batch)
                self.pacer.refund("ec2", "CreateSnapshots", len(batch) - len(made))  # not sent: no call will come
                sent.extend(made)
            runs.append((run, sent))
        confirmed = {}
        for run, sent in runs:
            run.wait(p["wait_timeout"])
            # An instance that has not run it by now would freeze and snapshot after the task has given up on it.
            late = [i for i in sent if not (i in run.invocations and is_terminal(run.invocations[i]))]
            refused = dict.fromkeys(late, "the controller failed before it could cancel it")
            try:
                refused = run.cancel(late) if late else {}
            finally:
                for instance_id in late:
                    outcome = self.outcomes[instance_id]
                    outcome.status = run.result(instance_id)["status"]
                    outcome.fail("WaitTimeout", "the run did not finish within wait_timeout; it was " +
                                 (f"not cancelled ({refused[instance_id]}), so it may still freeze and snapshot when it "
                                  "reaches the instance (its watchdog thaws at freeze_timeout)" if instance_id in refused
                                  else "cancelled, and any snapshot it made stays labelled crash"))
            for instance_id in sent:
                if instance_id in late:
                    continue
                level = self._read_run(run, instance_id)
                if level:
                    confirmed.setdefault(level, []).append(instance_id)
        kept = self._keep_own_members([i for ids in confirmed.values() for i in ids])
        confirmed = {level: [i for i in ids if i in kept] for level, ids in confirmed.items()}
        self._raise_consistency(confirmed)
        self._tag_devices([i for run, sent in runs for i in sent if self.outcomes[i].snapshots])

    def _keep_own_members(self, instance_ids):
        """The instances whose set, read back from the cloud, holds snapshots of their own volumes under this run's
        set id; each keeps only those. The ids an instance printed are never tagged as they are: a faulty or hostile
        instance could print another instance's (or an older set's) snapshots to have them raised."""
        expected = {i: self._run_set_id(i) for i in instance_ids if self.outcomes[i].snapshots}
        by_set = {}
        for attempt in range(3):  # a new snapshot may take a moment to be listed by its tags
            missing = [i for i in expected if not {m["snapshot_id"] for m in self.outcomes[i].snapshots} <=
                       {s["SnapshotId"] for s in by_set.get(expected[i], [])}]
            if not missing:
                break
            if attempt:
                self.sleep(1.0)
            for chunk in chunks([expected[i] for i in missing], aws_fleet.FILTER_VALUES_MAX):
                for snapshot in aws_api.describe_snapshots(self.ec2, filters=[{"Name": "tag:" + ss.TAG_SET_ID,
                                                                               "Values": chunk}]):
                    listed = by_set.setdefault(aws_api.tags_of(snapshot).get(ss.TAG_SET_ID), [])
                    if snapshot["SnapshotId"] not in {s["SnapshotId"] for s in listed}:
                        listed.append(snapshot)
        kept = []
        for instance_id, set_id in expected.items():
            outcome = self.outcomes[instance_id]
            own = {v["volume_id"]: v["device"] for v in outcome.volumes}
            members = [aws_fleet.snapshot_member(s, own[s.get("VolumeId")]) for s in by_set.get(set_id, [])
                       if s.get("VolumeId") in own and aws_api.tags_of(s).get(ss.TAG_INSTANCE_ID) == instance_id]
            # A call retried on the instance may have made two batches under the set id: the one it printed is the set.
            printed = {m["snapshot_id"] for m in outcome.snapshots}
            doubled = {m["volume_id"] for m in members if m["snapshot_id"] in printed}
            members = [m for m in members if m["volume_id"] not in doubled or m["snapshot_id"] in printed]
            member_ids = {m["snapshot_id"] for m in members}
            refused = sorted({m["snapshot_id"] for m in outcome.snapshots} - member_ids |
                             {s["SnapshotId"] for s in by_set.get(set_id, [])} - member_ids)
            for member in members:
                member["state"] = member["state"] or "pending"
            outcome.snapshots, outcome.set_id = members, set_id if members else None
            if refused:
                outcome.refused_snapshots = refused
                outcome.fail("ForeignSnapshots", f"the instance reported snapshots that are not of its own volumes "
                                                 f"under this run's set id {set_id}, so they were left as they are: "
                                                 f"{', '.join(refused)}")
            if members:
                kept.append(instance_id)
            else:
                outcome.consistency = "none"
        return kept

    def _read_run(self, run, instance_id):
        """The set an instance made while frozen, and the consistency its helper report confirms."""
        outcome = self.outcomes[instance_id]
        result = run.result(instance_id)
        report = self._report(run, instance_id, result)
        outcome.status = result["status"]
        outcome.freeze = outcome.thaw = report
        if not report:
            outcome.fail(result["status"], STATUS_MESSAGES.get(result["status"], "the instance gave no report") +
                         (f": {result['stderr'][-300:]}" if result["stderr"] else ""))
            return None
        code = outcome.exit_code = report.get("exit_code")
        created = {}
        try:
            created = json.loads((report.get("command") or {}).get("stdout") or "{}")
        except ValueError:
            pass
        snapshots = created.get("Snapshots") or []
        devices = {v["volume_id"]: v["device"] for v in outcome.volumes}
        outcome.snapshots = [aws_fleet.snapshot_member(s, devices.get(s.get("VolumeId"))) for s in snapshots]
        for member in outcome.snapshots:
            member["state"] = member["state"] or "pending"
        if outcome.snapshots:
            outcome.set_id = outcome.snapshots[0]["tags"].get(ss.TAG_SET_ID)
            outcome.changed = True
        if report.get("t_thawed") and report.get("t_frozen"):
            outcome.freeze_window = round(float(report["t_thawed"]) - float(report["t_frozen"]), 3)
        if not outcome.snapshots:
            detail = ((report.get("command") or {}).get("stderr") or report.get("message") or "")[-300:]
            outcome.fail(f"Run{code}", f"{HELPER_EXIT.get(code, f'the helper exited {code}')}"
                                       f"{': ' + detail if detail else ''} (the instance needs the AWS CLI or python3 "
                                       "with boto3, and an instance profile allowing ec2:CreateSnapshots and "
                                       "ec2:CreateTags)" if code == 210 else
                         f"{HELPER_EXIT.get(code, f'the helper exited {code}')}{': ' + detail if detail else ''}")
            outcome.consistency = "none"
            return None
        return self._confirmed_level(outcome, report, code)

    def _confirmed_level(self, outcome, freeze_report, code):
        """The consistency a finished freeze/thaw cycle supports, recording why when it is less than asked."""
        scripts = (freeze_report.get("scripts") or {}).get("status")
        if code == 0:
            if self.requested == "application" and scripts == "valid":
                level = "application"
            else:
                level = "filesystem"
                if self.requested == "application":
                    reason = (freeze_report.get("scripts") or {}).get("reason") or scripts
                    outcome.fail("ScriptsNotRun", f"the pre/post scripts were not run ({scripts}: {reason}): the set is "
                                                  "filesystem-consistent; install them with the consistency_scripts role")
            if not self.params.get("freeze", True) and self.requested == "application":
                level = "crash"
        elif code == 202:
            # The filesystems were frozen through the snapshot; only the application's resume failed.
            level = "filesystem"
            outcome.fail("Thaw202", HELPER_EXIT[202])
        else:
            level = "crash"
            outcome.fail(f"Thaw{code}", HELPER_EXIT.get(code, f"the thaw exited {code}"))
        outcome.consistency = level
        return level

    def _raise_consistency(self, confirmed):
        """Sets are written crash-consistent; raise each member to what it achieved and the set to what its quiesce
        scope achieved, one call per distinct pair of levels. A freeze raises only the volumes beneath the frozen
        filesystems; an offline set (the instance stopped, or every member's filesystems unmounted) raises them all."""
        batch = aws_api.TagBatch()
        for level, ids in confirmed.items():
            for instance_id in ids:
                outcome = self.outcomes[instance_id]
                quiesced = {m["volume_id"] for m in outcome.snapshots}
                if level not in ("crash", "offline"):
                    quiesced, level = self._quiesced(outcome, level)
                for member in outcome.snapshots:
                    member["quiesced"] = level != "crash" and member["volume_id"] in quiesced
                    tags = ss.consistency_tags(level if member["quiesced"] else "crash", level)
                    if level != "crash":
                        batch.add([member["snapshot_id"]], tags)
                    member["tags"].update(tags)
        batch.flush(self.ec2)

    def _quiesced(self, outcome, level):
        """(volume ids of the set that the freeze quiesced, the set's level): the level confirmed when the disks beneath
        every frozen filesystem map to the instance's volumes and the set holds at least one of them, else crash."""
        volumes, problem = quiesced_volumes(outcome.freeze, self.instances[outcome.instance_id].get("BlockDeviceMappings"))
        members = {m["volume_id"] for m in outcome.snapshots}
        if problem is None and not volumes & members:
            problem = "none of the volumes beneath the frozen filesystems is in the set"
        if problem:
            outcome.fail("QuiescedVolumesUnknown", f"cannot tell which volumes the freeze quiesced ({problem}), so no "
                                                   "member is labelled above crash")
            outcome.consistency = "crash"
            return set(), "crash"
        return volumes & members, level

    def _linux(self, instance_ids):
        if self.params.get("initiator") == "instance":
            self._linux_instance_initiated(instance_ids)
            return
        p = self.params
        run_id = ss.new_set_id()
        freeze_cmd = self._helper_command("freeze", run_id)
        if self.module.check_mode:
            for instance_id in instance_ids:
                outcome = self.outcomes[instance_id]
                outcome.status, outcome.changed = "WouldRun", True
                outcome.plan = dict(document=SHELL_DOCUMENT, freeze=freeze_cmd, thaw=self._helper_command("thaw", run_id),
                                    volumes=outcome.volumes, exclude_boot_volume=outcome.exclude_boot,
                                    exclude_data_volume_ids=outcome.exclude_data)
            return
        common = dict(timeout_seconds=p.get("delivery_timeout"), max_concurrency=p.get("max_concurrency"),
                      max_errors=p.get("max_errors"), sleep=self.sleep, clock=self.clock)
        limit = [str(p["script_timeout"] + 120)]
        freeze = CommandRun(self.ssm, SHELL_DOCUMENT, {"commands": [freeze_cmd], "executionTimeout": limit},
                            comment=f"appconsistent.snapshots freeze {run_id}", **common)
        thaw = CommandRun(self.ssm, SHELL_DOCUMENT, {"commands": [self._helper_command("thaw", run_id)],
                                                     "executionTimeout": limit},
                          comment=f"appconsistent.snapshots thaw {run_id}", **common)
        waiting = list(instance_ids)  # not sent the freeze yet
        pending = []  # sent the freeze, not finished freezing
        thawed_sent = []
        in_wave = {}  # finished freezing, snapshots and thaw under way: {future: instance ids}
        thaw_lock = threading.Lock()
        deadline = self.clock() + p["wait_timeout"]
        last_wave = None

        def snapshot_then_thaw(finished, frozen, snapshots):
            try:
                made = self._snapshot_many(frozen, "crash", snapshots) if frozen else []
                for instance_id in frozen:
                    if instance_id not in made:
                        self.outcomes[instance_id].consistency = "none"
            finally:
                self._release(frozen)  # a reservation left means its call was never made
                # The thaw goes to every finished instance, frozen or not, whatever went wrong on the
                # controller: it is harmless where nothing is frozen.
                with thaw_lock:
                    self._send(thaw, finished)
                    thawed_sent.extend(finished)

        # A wave's snapshots and thaw run beside the loop, so the loop keeps polling and sending the next
        # waves meanwhile; the snapshot calls of all waves share one pool of SNAPSHOT_WORKERS.
        waves = concurrent.futures.ThreadPoolExecutor(max_workers=WAVE_WORKERS)
        snapshots = concurrent.futures.ThreadPoolExecutor(max_workers=SNAPSHOT_WORKERS)
        try:
            while (pending or waiting) and self.clock() < deadline:
                for future in [f for f in in_wave if f.done()]:
                    in_wave.pop(future)
                    future.result()  # an unexpected error on the controller ends the run (its thaw was sent)
                frozen_now = len(pending) + sum(len(ids) for ids in in_wave.values())
                if waiting and frozen_now + aws_api.SSM_INSTANCE_BATCH <= FREEZE_IN_FLIGHT and \
                        (last_wave is None or self.clock() - last_wave >= WAVE_SPACING):
                    # Freezes go out in waves of one SendCommand, spaced so that each wave is frozen when the
                    # controller has snapshotted the one before: an instance frozen while the controller is busy
                    # with others stays frozen that long, and a whole fleet at once outlasts freeze_timeout.
                    # The spacing counts from the moment the cloud accepted the previous wave, not from when the
                    # controller sent it, so a slow SendCommand cannot bring two waves closer together.
                    wave = self._admit_wave(waiting)
                    if wave:
                        waiting = waiting[len(wave):]
                        sent = self._send(freeze, wave)
                        self._release([i for i in wave if i not in sent])
                        pending.extend(sent)
                        last_wave = self.clock()
                freeze.poll()
                finished = [i for i in pending if i in freeze.invocations and is_terminal(freeze.invocations[i])]
                if finished:
                    pending = [i for i in pending if i not in finished]
                    try:
                        frozen = [i for i in finished if self._read_freeze(freeze, i)]
                    except BaseException:
                        snapshot_then_thaw(finished, [], snapshots)
                        raise
                    self._release([i for i in finished if i not in frozen])
                    in_wave[waves.submit(snapshot_then_thaw, finished, frozen, snapshots)] = finished
                    continue
                self.sleep(FREEZE_POLL)
        finally:
            # Every submitted wave ends with its thaw sent; wait for them before anything else.
            waves.shutdown(wait=True)
            snapshots.shutdown(wait=True)
            for instance_id in waiting:  # never sent: nothing was frozen
                self.outcomes[instance_id].status = "NotSent"
                self.outcomes[instance_id].fail("WaitTimeout", "the freeze was not started within wait_timeout: the "
                                                               "instances before it took that long; raise wait_timeout")
            if pending:  # still not finished freezing: thaw anyway, the watchdog is the last resort
                # A freeze still on its way would freeze after the thaw: it is cancelled first.
                refused = dict.fromkeys(pending, "the controller failed before it could cancel it")
                try:
                    refused = freeze.cancel(pending)
                finally:
                    for instance_id in pending:
                        self.outcomes[instance_id].fail(
                            "WaitTimeout", "the freeze did not finish within wait_timeout; it was " +
                                           (f"not cancelled ({refused[instance_id]})" if instance_id in refused else
                                            "cancelled") + ", a thaw was sent and the watchdog thaws at freeze_timeout")
                    self._send(thaw, pending)
                    thawed_sent.extend(pending)
        for future in in_wave:
            future.result()
        thaw.wait(max(30.0, deadline - self.clock()))
        confirmed = {}
        for instance_id in thawed_sent:
            level = self._read_thaw(thaw, instance_id)
            if level:
                confirmed.setdefault(level, []).append(instance_id)
        self._raise_consistency(confirmed)
        self._tag_devices([i for i in thawed_sent if self.outcomes[i].snapshots])

    def _admit_wave(self, waiting):
        """The instances of the next freeze wave: no more than the account's buckets let the controller snapshot at
        once, so that none of them waits frozen for a token (their CreateSnapshots tokens are reserved now)."""
        # The wave's freeze and its thaw are SendCommand calls: both must be possible without a wait.
        if self.pacer.seconds_until("ssm", "SendCommand", 2) > 0:
            return []
        count = self.pacer.admit("ec2", "CreateSnapshots", min(aws_api.SSM_INSTANCE_BATCH, len(waiting)), within=0)
        self._reserved.update((i, True) for i in waiting[:count])
        return waiting[:count]

    def _release(self, instance_ids):
        """Give back the reserved tokens of instances that will not be snapshotted (not sent, or not frozen)."""
        released = [i for i in instance_ids if self._reserved.pop(i, None)]
        self.pacer.refund("ec2", "CreateSnapshots", len(released))

    def _send(self, run, instance_ids):
        sent = []
        for chunk in chunks(instance_ids, aws_api.SSM_INSTANCE_BATCH):
            try:
                command_id = run.send(chunk)[0]
            except aws_api.AppConsistentAWSError as exc:
                for instance_id in chunk:
                    self.outcomes[instance_id].fail(_code(exc), aws_api.describe_aws_failure(exc) or
                                                    f"SendCommand failed: {_detail(exc)}")
                    self.outcomes[instance_id].status = self.outcomes[instance_id].status or "NotSent"
                continue
            for instance_id in chunk:
                self.outcomes[instance_id].command_ids.append(command_id)
                self.outcomes[instance_id].changed = True
            sent.extend(chunk)
        return sent

    @staticmethod
    def _report(run, instance_id, result):
        """The helper's JSON report; the listing truncates long output, GetCommandInvocation does not."""
        report = parse_helper_output(result["stdout"])
        if report is None and result["status"] in ("Success", "Failed"):
            report = parse_helper_output(run.full_stdout(instance_id))
        return report

    def _read_freeze(self, run, instance_id):
        """True when the instance reports its filesystems frozen (or its scripts run, with freeze false)."""
        outcome = self.outcomes[instance_id]
        result = run.result(instance_id)
        report = self._report(run, instance_id, result)
        outcome.freeze = report
        outcome.status = result["status"]
        code = report.get("exit_code") if report else result["response_code"]
        outcome.exit_code = code
        if result["status"] == "Success" and report and report.get("exit_code") == 0:
            return True
        if result["status"] not in ("Success", "Failed"):
            outcome.fail(result["status"], STATUS_MESSAGES.get(result["status"], f"the freeze command ended {result['status']}"))
        else:
            meaning = HELPER_EXIT.get(code, f"the freeze helper exited {code}")
            detail = (report or {}).get("message") or result["stderr"][-300:]
            outcome.fail(f"Freeze{code}", f"{meaning}{': ' + detail if detail else ''}")
        return False

    def _read_thaw(self, run, instance_id):
        """The consistency the thaw confirms for an instance that has a set, or None."""
        outcome = self.outcomes[instance_id]
        result = run.result(instance_id)
        report = self._report(run, instance_id, result)
        outcome.thaw = report
        if not outcome.snapshots:
            return None
        outcome.status = result["status"]
        freeze_report = outcome.freeze or {}
        if report and report.get("t_thawed") and freeze_report.get("t_frozen"):
            outcome.freeze_window = round(float(report["t_thawed"]) - float(freeze_report["t_frozen"]), 3)
        code = report.get("exit_code") if report else None
        if code is None:
            outcome.fail("ThawNotConfirmed", "the thaw was not confirmed by the instance "
                                             f"({result['status']}); the watchdog thaws at freeze_timeout, and the "
                                             "set is only crash-consistent")
            outcome.consistency = "crash"
            return "crash"
        return self._confirmed_level(outcome, freeze_report, code)


def _code(exc):
    return aws_api.error_code(exc) or "AWSError"


def _detail(exc):
    cause = getattr(exc, "exception", None)
    return f"{exc.message}: {cause}" if cause else str(exc)
