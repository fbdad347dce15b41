# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

"""VSS snapshot sets of many Windows instances through SSM Run Command.

The flow: preflight every instance (exists, running, Windows, SSM Online),
skip the ones that already have a set with this run id, send the document in
batches of 50, follow each batch with one listing call, find the snapshots by
the batch's set-id tag (one paginated describe), re-read those whose
AppConsistent tag is late, classify each instance from the provider's
evidence, and tag each set with its own id and the consistency achieved.
"""

from __future__ import annotations

import time

from ansible_collections.appconsistent.snapshots.plugins.module_utils import aws as aws_api
from ansible_collections.appconsistent.snapshots.plugins.module_utils import aws_fleet
from ansible_collections.appconsistent.snapshots.plugins.module_utils import pacing
from ansible_collections.appconsistent.snapshots.plugins.module_utils import snapshot_set as ss
from ansible_collections.appconsistent.snapshots.plugins.module_utils import validate
from ansible_collections.appconsistent.snapshots.plugins.module_utils import vss
from ansible_collections.appconsistent.snapshots.plugins.module_utils.polling import poll_until
from ansible_collections.appconsistent.snapshots.plugins.module_utils.ssm import STATUS_MESSAGES
from ansible_collections.appconsistent.snapshots.plugins.module_utils.ssm import CommandRun

# How long to keep re-reading snapshots whose AppConsistent tag has not appeared yet:
# the VSS agent adds it after creating the snapshots.
EVIDENCE_WAIT = 90


class InstanceResult:
    def __init__(self, instance_id):
        self.instance_id = instance_id
        self.status = None
        self.consistency = "none"
        self.set_id = None
        self.snapshots = []
        self.volumes = []
        self.ami_id = None
        self.command_id = None
        self.response_code = None
        self.error = None
        self.changed = False
        self.timings = {}
        self.output = None

    def fail(self, code, message):
        self.error = dict(code=code, message=message)

    def to_dict(self):
        data = dict(instance_id=self.instance_id, status=self.status, consistency=self.consistency, set_id=self.set_id,
                    snapshots=self.snapshots, command_id=self.command_id, changed=self.changed, timings=self.timings)
        if self.ami_id:
            data["ami_id"] = self.ami_id
        if self.error:
            data["error"] = self.error
        if self.response_code is not None:
            data["response_code"] = self.response_code
        if self.output:
            data["output"] = self.output
        return data


class VssSnapshotRun:
    """One vss_snapshot task. ``module`` is an AppConsistentModule."""

    def __init__(self, module, sleep=time.sleep, clock=time.monotonic, params=None, known=None):
        self.module = module
        # ({instance_id: description}, {instance_id: agent information}) already read by the caller
        self.known = known
        # app_consistent_group runs Windows instances through this class with its own options mapped.
        self.params = params if params is not None else module.params
        self.pacer = pacing.of(module, clock=clock, sleep=sleep)
        self.sleep = sleep
        self.clock = clock
        self.ec2 = None
        self.ssm = None
        self.results = {}
        self.instances = {}
        # Instances that targets matched but that are not Windows: left out, not failed.
        self.skipped = []
        self.install = bool(self.params.get("install_vss_components"))
        self.required = "application" if self.params.get("writers", True) else "filesystem"

    # --- input ----------------------------------------------------------------------------------

    def validate(self):
        """Everything that can be refused without asking AWS; returns the document parameters."""
        p = self.params
        conflicts = ss.user_tags_conflicts(p.get("tags"))
        if conflicts:
            raise vss.VssParameterError(f"tags: these keys are reserved: {', '.join(conflicts)}")
        try:
            p["tags"] = validate.user_tags(p.get("tags"), "aws", validate.SET_OWN_TAGS["aws"])
        except ValueError as exc:
            raise vss.VssParameterError(str(exc)) from None
        ss.validate_run_id(p.get("run_id"))
        if p.get("delete_after"):
            ss.parse_duration(p["delete_after"])
        if p.get("create_ami") and len(set(p.get("instance_ids") or [])) != 1:
            raise vss.VssParameterError("create_ami makes one AMI named ami_name and AMI names are unique: "
                                        "give exactly one instance in instance_ids")
        # The tags carried by the document are checked now, with placeholder set values of the real shape.
        probe = self._document_tags(ss.new_set_id())
        return vss.build_parameters(
            exclude_boot_volume=p.get("exclude_boot_volume"), writers=p.get("writers", True),
            copy_only=p.get("copy_only"), create_ami=p.get("create_ami"), ami_name=p.get("ami_name"),
            description=p.get("description"), tags=probe, execution_timeout=p.get("execution_timeout"),
            collect_diagnostic_logs=p.get("collect_diagnostic_logs"), save_vss_metadata=p.get("save_vss_metadata"),
            install=self.install, vss_version=p.get("vss_version"))

    def _document_tags(self, batch_id):
        tags = dict(self.params.get("tags") or {})
        tags[ss.TAG_SET_ID] = batch_id
        if self.params.get("run_id"):
            tags[ss.TAG_RUN_ID] = self.params["run_id"]
        if self.params.get("delete_after"):
            tags[ss.TAG_DELETE_AFTER] = ss.delete_after_instant(self.params["delete_after"])
        return tags

    @property
    def document(self):
        return vss.DOCUMENT_INSTALL_AND_SNAPSHOT if self.install else vss.DOCUMENT_SNAPSHOT

    # --- the run ---------------------------------------------------------------------------------

    def run(self):
        self.validate()
        self.ec2 = self.module.aws_client("ec2")
        self.ssm = self.module.aws_client("ssm")
        ready = self._preflight()
        ready = self._skip_existing(ready)
        if not ready:
            return self._summary()
        batch_id = ss.new_set_id()
        parameters = self.validate_with(batch_id)
        if self.module.check_mode:
            self.pacer.plan("ec2", "CreateSnapshots", len(ready))  # each agent calls it once
            for instance_id in ready:
                result = self.results[instance_id]
                result.status = "WouldRun"
                result.changed = True
                result.plan = dict(document=self.document, parameters=parameters,
                                   volumes=self._captured_volumes(instance_id))
            return self._summary()
        command = CommandRun(self.ssm, self.document, parameters, comment=f"appconsistent.snapshots {batch_id}",
                             timeout_seconds=self.params.get("delivery_timeout"),
                             max_concurrency=self.params.get("max_concurrency"),
                             max_errors=self.params.get("max_errors"), sleep=self.sleep, clock=self.clock)
        started = self.clock()
        sent = self._send(command, ready)
        if not sent:
            return self._summary()
        if not self.params.get("wait", True):
            for instance_id in sent:
                self.results[instance_id].status = "InProgress"
            return self._summary()
        finished = command.wait(self.params.get("wait_timeout"))
        for instance_id in sent:
            result = self.results[instance_id]
            outcome = command.result(instance_id)
            result.status = outcome["status"]
            result.response_code = outcome["response_code"]
            result.timings["command_seconds"] = round(self.clock() - started, 3)
            if result.status != "Success":
                result.output = dict(stdout=outcome["stdout"][-2000:], stderr=outcome["stderr"][-2000:])
        if not finished:
            # A command not yet delivered would take its shadow copy and snapshots after the task has given up on it,
            # so it is cancelled; one already running is left to end (cancelling it mid-snapshot helps nobody).
            undelivered = [i for i in sent if self.results[i].status in ("Pending", "Delayed")]
            refused = command.cancel(undelivered) if undelivered else {}
            for instance_id in sent:
                result = self.results[instance_id]
                if result.status not in ("Pending", "InProgress", "Delayed"):
                    continue
                if instance_id in undelivered:
                    fate = (f"it could not be cancelled ({refused[instance_id]}) and may still run" if instance_id in refused
                            else "it had not reached the instance and was cancelled")
                else:
                    fate = "it may still be running"
                result.fail("WaitTimeout", f"the VSS command did not finish within wait_timeout "
                                           f"({self.params.get('wait_timeout')} s); {fate} (command {result.command_id})")
        self._collect(batch_id, sent)
        if self.params.get("wait_for_completion"):
            self._wait_for_completion(sent)
        return self._summary()

    def validate_with(self, batch_id):
        p = self.params
        return vss.build_parameters(
            exclude_boot_volume=p.get("exclude_boot_volume"), writers=p.get("writers", True),
            copy_only=p.get("copy_only"), create_ami=p.get("create_ami"), ami_name=p.get("ami_name"),
            description=p.get("description"), tags=self._document_tags(batch_id),
            execution_timeout=p.get("execution_timeout"), collect_diagnostic_logs=p.get("collect_diagnostic_logs"),
            save_vss_metadata=p.get("save_vss_metadata"), install=self.install, vss_version=p.get("vss_version"))

    def _preflight(self):
        if self.known:
            self.instances, agents = self.known
        else:
            try:
                self.instances = aws_fleet.resolve_instances(self.ec2, self.params.get("instance_ids"),
                                                             self.params.get("targets"))
            except ValueError as exc:
                self.module.fail_json(msg=str(exc))
            self._leave_out_other_platforms()
            if not self.instances and self.skipped:
                named = ", ".join(s["instance_id"] for s in self.skipped[:5]) + (" ..." if len(self.skipped) > 5 else "")
                self.module.fail_json(msg=f"no Windows instance matches targets: the {len(self.skipped)} instances it "
                                          f"matches are not Windows ({named}); use app_consistent_group for them",
                                      results=[], failed_instances=[], skipped_instances=self.skipped)
            if not self.instances:
                self.module.fail_json(msg="no instance matches targets", results=[], failed_instances=[],
                                      skipped_instances=[])
            existing = [i for i, d in self.instances.items() if d is not None]
            agents = aws_fleet.agent_status(self.ssm, existing)
        ready = []
        for instance_id, instance in self.instances.items():
            result = self.results[instance_id] = InstanceResult(instance_id)
            problem = aws_fleet.preflight(instance_id, instance, agents.get(instance_id), "windows",
                                          region=self.module.region)
            if problem:
                result.status = "NotSent"
                result.fail(problem["code"], problem["message"])
                continue
            result.volumes = aws_fleet.attached_volumes(instance)
            ready.append(instance_id)
        return ready

    def _leave_out_other_platforms(self):
        """Leave out the instances that only a tag of targets selected and that are not Windows.

        A tag such as backup=daily usually spans Linux instances too: they are app_consistent_group's, not a
        failure of this task. Instances named by id (instance_ids, or InstanceIds in targets) are kept, so that
        the preflight refuses a named Linux instance with its hint.
        """
        if not self.params.get("targets"):
            return
        named = set(self.params.get("instance_ids") or []) | set(aws_fleet.targets_to_filters(self.params["targets"])[1])
        for instance_id, instance in list(self.instances.items()):
            if instance_id in named or instance is None:
                continue
            platform = aws_fleet.platform_of(instance)
            if platform != "windows":
                del self.instances[instance_id]
                self.skipped.append(dict(instance_id=instance_id, platform=platform,
                                         reason=f"instance {instance_id} is {platform.capitalize()}, not Windows: "
                                                "left out of this VSS task; use app_consistent_group for it"))

    def _skip_existing(self, ready):
        run_id = self.params.get("run_id")
        if not run_id or not ready:
            return ready
        owner = {v["volume_id"]: i for i in ready for v in self.results[i].volumes}
        existing = aws_fleet.sets_by_run_id(self.ec2, run_id, ready, volume_owner=owner)
        remaining = []
        tags = aws_api.TagBatch()
        for instance_id in ready:
            found = existing.get(instance_id)
            if found is None:
                remaining.append(instance_id)
                continue
            result = self.results[instance_id]
            result.status = "Existing"
            result.snapshots = found.members
            if found.instance_id == instance_id and found.consistency:
                result.set_id = found.set_id
                result.consistency = found.consistency
                if ss.existing_set_error(found):
                    result.fail(*ss.existing_set_error(found))
            else:
                # A run that stopped before it tagged its set: finish the tagging now.
                self._finish_set(result, found.members, True, tags)
        tags.flush(self.ec2)
        return remaining

    def _captured_volumes(self, instance_id):
        exclude_boot = self.params.get("exclude_boot_volume")
        return [v for v in self.results[instance_id].volumes if not (exclude_boot and v["boot"])]

    def _send(self, command, ready):
        sent = []
        # The VSS document calls CreateSnapshots from the instance while its writers are frozen (at most 10 s):
        # a batch goes out only when the account's bucket holds a token for every instance in it.
        for chunk in pacing.admitted_batches(self.pacer, "ec2", "CreateSnapshots", ready, aws_api.SSM_INSTANCE_BATCH,
                                             self.sleep, made_within=pacing.AGENT_CALL_WITHIN,
                                             finished=command.ended):
            try:
                command_id = command.send(chunk)[0]
            except aws_api.AppConsistentAWSError as exc:
                code = exc.exception.response["Error"]["Code"] if getattr(exc.exception, "response", None) else "SendCommand"
                if code in ("InvalidInstanceId",):
                    message = ("SSM refused the batch (InvalidInstanceId): an instance stopped being managed, running "
                               "or Windows after the preflight; " + aws_fleet.AGENT_ADVICE)
                else:
                    message = aws_api.describe_aws_failure(exc) or f"{exc.message}: {exc.exception}"
                for instance_id in chunk:
                    self.results[instance_id].status = "NotSent"
                    self.results[instance_id].fail(code, message)
                continue
            for instance_id in chunk:
                self.results[instance_id].command_id = command_id
                self.results[instance_id].changed = True
            sent.extend(chunk)
        return sent

    def _collect(self, batch_id, sent):
        """Find the snapshots of the batch, wait out the AppConsistent lag, classify and tag each set."""
        owner = {}
        for instance_id in sent:
            for volume in self.results[instance_id].volumes:
                owner[volume["volume_id"]] = (instance_id, volume["device"])
        filters = [{"Name": "tag:" + ss.TAG_SET_ID, "Values": [batch_id]}]
        members = {}

        def all_evident():
            members.clear()
            for snapshot in aws_api.describe_snapshots(self.ec2, filters=filters):
                instance_id, device = owner.get(snapshot.get("VolumeId"), (None, None))
                if instance_id:
                    members.setdefault(instance_id, []).append(aws_fleet.snapshot_member(snapshot, device))
            return not any(self._evidence_pending(i, members.get(i, [])) for i in sent)

        poll_until(all_evident, EVIDENCE_WAIT, self.sleep, self.clock, max_interval=10.0, growth=2)
        if self.params.get("create_ami"):
            self._find_ami(batch_id, sent)
        tags = aws_api.TagBatch()
        for instance_id in sent:
            result = self.results[instance_id]
            found = sorted(members.get(instance_id, []), key=lambda m: m["device"] or "")
            if not found:
                result.consistency = "none"
                if not result.error:
                    if result.status == "Success" and not self.params.get("create_ami"):
                        result.fail("NoSnapshots", "the VSS command succeeded but no snapshot carrying the set tag was "
                                                   "found; check the instance profile allows ec2:CreateTags")
                    elif result.status != "Success":
                        result.fail(result.status, self._status_message(result))
                continue
            self._finish_set(result, found, result.status == "Success", tags)
            if result.status != "Success" and not result.error:
                result.fail(result.status or "Unknown", self._status_message(result))
        tags.flush(self.ec2)

    def _evidence_pending(self, instance_id, members):
        """True while a successful run's snapshots are missing or do not carry AppConsistent yet."""
        result = self.results[instance_id]
        if result.status != "Success" or self.params.get("create_ami"):
            return False
        if len(members) < len(self._captured_volumes(instance_id)):
            return True
        return any(not any(k.lower() == "appconsistent" for k in m["tags"]) for m in members)

    def _status_message(self, result):
        base = STATUS_MESSAGES.get(result.status, f"the command ended with status {result.status}")
        if result.status == "Failed" and result.output:
            base += ": " + vss.failure_hint(result.output["stdout"], result.output["stderr"], self.install)
        elif result.status in ("TimedOut", "ExecutionTimedOut"):
            limit = self.params.get("execution_timeout")
            base += (f" ({limit} s execution_timeout)" if limit else "") + (
                "; a VSS writer or the VSS service may be hung: check the Application event log (source VSS) and "
                "'vssadmin list writers' on the instance, then retry, raising execution_timeout if the writers "
                "are only slow")
        return base

    def _finish_set(self, result, members, scripts_ok, batch):
        """Classify one instance's snapshots as a set; its tags go into ``batch``, written for all sets at once."""
        ceiling = self.required
        level = ss.classify([m["tags"] for m in members], scripts_succeeded=scripts_ok, ceiling=ceiling)
        set_id = ss.new_set_id()
        # VSS quiesces every volume it captures: each member achieved the set's level.
        tags = {ss.TAG_SET_ID: set_id, ss.TAG_INSTANCE_ID: result.instance_id}
        tags.update(ss.consistency_tags(level))
        missing = []
        if not self.params.get("create_ami"):
            # The document was asked for a snapshot of every captured volume: the set says how many that is, so a
            # set that lacks one proves itself incomplete wherever it is judged.
            captured = self._captured_volumes(result.instance_id)
            found = {m["volume_id"] for m in members}
            missing = [v for v in captured if v["volume_id"] not in found]
            tags[ss.TAG_MEMBERS] = ss.members_value(max(len(captured), len(members)))
            if missing:
                # Without all its volumes the application cannot be brought back from this set as it was.
                level = "crash"
                tags.update(ss.consistency_tags(level))
        batch.add([m["snapshot_id"] for m in members], tags)
        for member in members:
            member["tags"].update(tags)
            if member["device"]:
                batch.add([member["snapshot_id"]], {ss.TAG_DEVICE: member["device"]})
                member["tags"][ss.TAG_DEVICE] = member["device"]
        result.set_id = set_id
        result.snapshots = members
        result.consistency = level
        result.changed = True
        if missing:
            names = ", ".join(f"{v['volume_id']} ({v['device']})" for v in missing)
            result.fail("IncompleteSet", f"the VSS run left {len(missing)} of the {len(members) + len(missing)} "
                                         f"volumes it was to capture without a snapshot ({names}): the set "
                                         f"{set_id} is incomplete and labelled crash; take a new one")
        if any(str(m.get("state")).lower() == "error" for m in members):
            result.consistency = "none"
            bad = ", ".join(m["snapshot_id"] for m in members if str(m.get("state")).lower() == "error")
            result.fail("SnapshotError", f"snapshot {bad} entered the error state: this set cannot be restored; "
                                         "take a new one")

    def _find_ami(self, batch_id, sent):
        images = aws_api.describe_images(self.ec2, filters=[{"Name": "tag:" + ss.TAG_SET_ID, "Values": [batch_id]}])
        for image in images:
            if len(sent) == 1:
                self.results[sent[0]].ami_id = image["ImageId"]

    def _wait_for_completion(self, sent):
        aws_fleet.complete_sets(self.ec2, [self.results[i] for i in sent], self.params.get("completion_timeout"),
                                self.sleep, self.clock)

    # --- outcome -----------------------------------------------------------------------------------

    def _summary(self):
        results, failed, warnings = [], [], []
        for instance_id, result in self.results.items():
            data = result.to_dict()
            if getattr(result, "plan", None):
                data["plan"] = result.plan
            results.append(data)
            if result.status in ("WouldRun", "InProgress") and not result.error:
                continue
            incomplete = (result.error or {}).get("code") in ss.INCOMPLETE_ERRORS
            if result.consistency != "none" and ss.at_least(result.consistency, self.required) and not incomplete:
                if result.error:  # usable set, but something to know (e.g. completion still running)
                    warnings.append(f"{instance_id}: {result.error['message']}")
                continue
            reason = result.error["message"] if result.error else \
                f"the set is {result.consistency}-consistent, not {self.required}-consistent"
            if result.consistency != "none" and self.params.get("on_fallback") == "warn" and not incomplete:
                warnings.append(f"{instance_id}: only {result.consistency}-consistent ({reason}); kept because "
                                "on_fallback is warn")
            else:
                failed.append(dict(instance_id=instance_id, consistency=result.consistency, reason=reason))
        changed = any(r.changed for r in self.results.values())
        return dict(changed=changed, results=results, failed_instances=failed, skipped_instances=self.skipped,
                    warnings=warnings, command_ids=sorted({r.command_id for r in self.results.values() if r.command_id}))
