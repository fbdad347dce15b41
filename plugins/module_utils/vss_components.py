# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The AwsVssComponents package on Windows instances, through SSM Run Command.

The flow: preflight every instance (exists, runs, Windows, SSM Online), read
what SSM Inventory says is installed, decide per instance, send
``AWS-ConfigureAWSPackage`` in batches of 50 (one command for the installs,
one for the removals), follow each batch with one listing call.
"""

from __future__ import annotations

import concurrent.futures
import re
import time

from ansible_collections.appconsistent.snapshots.plugins.module_utils import aws as aws_api
from ansible_collections.appconsistent.snapshots.plugins.module_utils import aws_fleet
from ansible_collections.appconsistent.snapshots.plugins.module_utils.concurrency import chunks
from ansible_collections.appconsistent.snapshots.plugins.module_utils.ssm import STATUS_MESSAGES
from ansible_collections.appconsistent.snapshots.plugins.module_utils.ssm import CommandRun

DOCUMENT = "AWS-ConfigureAWSPackage"
PACKAGE = "AwsVssComponents"
# Names under which inventory lists the package: the Distributor package name and the program's display name.
INVENTORY_NAMES = ["AwsVssComponents", "AWS VSS Components"]
INVENTORY_TYPE = "AWS:Application"
INVENTORY_WORKERS = 8
VERSION_PATTERN = re.compile(r"[0-9]+(\.[0-9]+){1,3}")


class VssComponentsError(ValueError):
    pass


def validate(state, version):
    """Refuse what can be refused without asking AWS."""
    if version and state == "absent":
        raise VssComponentsError("version is only used with state: present")
    if version and not VERSION_PATTERN.fullmatch(version):
        raise VssComponentsError(f"version {version!r} is not a package version such as 2.5.1")


def installed_version(entries):
    """The package version in an instance's AWS:Application inventory entries, or None when it is not there."""
    wanted = {name.replace(" ", "").lower() for name in INVENTORY_NAMES}
    for entry in entries:
        if str(entry.get("Name") or "").replace(" ", "").lower() in wanted:
            return entry.get("Version") or "unknown"
    return None


def decide(state, version, known, installed):
    """'install', 'uninstall' or None for one instance.

    Without inventory (``known`` false) nothing tells what is installed, so the
    package is configured anyway: AWS-ConfigureAWSPackage itself is safe to repeat.
    """
    if state == "absent":
        return "uninstall" if (not known or installed) else None
    if not known or installed is None:
        return "install"
    if version and installed != version:
        return "install"
    return None


class InstanceResult:
    def __init__(self, instance_id):
        self.instance_id = instance_id
        self.status = None
        self.action = None
        self.inventory = False
        self.version_before = None
        self.version = None
        self.agent_version = None
        self.command_id = None
        self.changed = False
        self.error = None
        self.output = None

    def fail(self, code, message):
        self.error = dict(code=code, message=message)

    def to_dict(self):
        data = dict(instance_id=self.instance_id, status=self.status, action=self.action, inventory=self.inventory,
                    version_before=self.version_before, version=self.version, agent_version=self.agent_version,
                    command_id=self.command_id, changed=self.changed)
        if self.error:
            data["error"] = self.error
        if self.output:
            data["output"] = self.output
        return data


class VssComponentsRun:
    """One vss_components task. ``module`` is an AppConsistentModule."""

    def __init__(self, module, sleep=time.sleep, clock=time.monotonic):
        self.module = module
        self.params = module.params
        self.sleep = sleep
        self.clock = clock
        self.results = {}

    def run(self):
        state, version = self.params["state"], self.params.get("version") or None
        validate(state, version)
        self.ec2 = self.module.aws_client("ec2")
        self.ssm = self.module.aws_client("ssm")
        ready = self._preflight()
        self._read_inventory(ready)
        todo = {"install": [], "uninstall": []}
        for instance_id in ready:
            result = self.results[instance_id]
            result.action = decide(state, version, result.inventory, result.version_before)
            if result.action is None:
                result.status = "Present" if state == "present" else "Absent"
                result.version = result.version_before
            else:
                todo[result.action].append(instance_id)
        if self.module.check_mode:
            for action, instance_ids in todo.items():
                for instance_id in instance_ids:
                    self.results[instance_id].status = "WouldInstall" if action == "install" else "WouldUninstall"
                    self.results[instance_id].changed = True
            return self._summary()
        for action, instance_ids in todo.items():
            if instance_ids:
                self._configure(action, version, instance_ids)
        return self._summary()

    def _preflight(self):
        try:
            instances = aws_fleet.resolve_instances(self.ec2, self.params.get("instance_ids"), self.params.get("targets"))
        except ValueError as exc:
            self.module.fail_json(msg=str(exc))
        if not instances:
            self.module.fail_json(msg="no instance matches targets", results=[], failed_instances=[])
        agents = aws_fleet.agent_status(self.ssm, [i for i, d in instances.items() if d is not None])
        ready = []
        for instance_id, instance in instances.items():
            result = self.results[instance_id] = InstanceResult(instance_id)
            agent = agents.get(instance_id)
            result.agent_version = (agent or {}).get("AgentVersion")
            problem = aws_fleet.preflight(instance_id, instance, agent, "windows", region=self.module.region)
            if problem:
                result.status = "NotSent"
                result.fail(problem["code"], problem["message"])
                continue
            ready.append(instance_id)
        return ready

    def _read_inventory(self, instance_ids):
        """One ListInventoryEntries per instance, several at once, filtered to the package's names."""
        filters = [{"Key": INVENTORY_TYPE + ".Name", "Values": INVENTORY_NAMES, "Type": "Equal"}]

        def read(instance_id):
            return aws_api.list_inventory_entries(self.ssm, instance_id, INVENTORY_TYPE, filters)

        if not instance_ids:
            return
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(INVENTORY_WORKERS, len(instance_ids))) as pool:
            answers = dict(zip(instance_ids, pool.map(read, instance_ids)))
        for instance_id, (entries, capture_time) in answers.items():
            result = self.results[instance_id]
            result.inventory = capture_time is not None
            result.version_before = installed_version(entries)

    def _configure(self, action, version, instance_ids):
        parameters = {"action": ["Install" if action == "install" else "Uninstall"], "name": [PACKAGE]}
        if version:
            parameters["version"] = [version]
        command = CommandRun(self.ssm, DOCUMENT, parameters, comment=f"appconsistent.snapshots {action} {PACKAGE}",
                             timeout_seconds=self.params.get("delivery_timeout"),
                             max_concurrency=self.params.get("max_concurrency"),
                             max_errors=self.params.get("max_errors"), sleep=self.sleep, clock=self.clock)
        sent = []
        for chunk in chunks(instance_ids, aws_api.SSM_INSTANCE_BATCH):
            try:
                command_id = command.send(chunk)[0]
            except aws_api.AppConsistentAWSError as exc:
                message = aws_api.describe_aws_failure(exc) or f"{exc.message}: {exc.exception}"
                for instance_id in chunk:
                    self.results[instance_id].status = "NotSent"
                    self.results[instance_id].fail(aws_api.error_code(exc) or "SendCommand", message)
                continue
            for instance_id in chunk:
                self.results[instance_id].command_id = command_id
                self.results[instance_id].changed = True
            sent.extend(chunk)
        if not sent:
            return
        finished = command.wait(self.params["wait_timeout"])
        for instance_id in sent:
            result = self.results[instance_id]
            outcome = command.result(instance_id)
            if outcome["status"] == "Success":
                result.status = "Installed" if action == "install" else "Uninstalled"
                result.version = (version or "latest") if action == "install" else None
                continue
            result.status = outcome["status"]
            result.output = dict(stdout=outcome["stdout"][-2000:], stderr=outcome["stderr"][-2000:])
            if not finished and outcome["status"] in ("Pending", "InProgress", "Delayed"):
                result.fail("WaitTimeout", f"{DOCUMENT} did not finish within wait_timeout "
                                           f"({self.params['wait_timeout']} s); it may still be running "
                                           f"(command {result.command_id})")
            else:
                # ListCommandInvocations carries stderr inside Output, after an "----------ERROR-------" line.
                detail = (outcome["stderr"] or outcome["stdout"]).strip().splitlines()[-1:] or [""]
                message = STATUS_MESSAGES.get(outcome["status"], f"the command ended with status {outcome['status']}")
                result.fail(outcome["status"], f"{action} of {PACKAGE} failed: {message}" +
                            (f": {detail[0]}" if detail[0] else ""))

    def _summary(self):
        results = [r.to_dict() for r in self.results.values()]
        failed = [dict(instance_id=r.instance_id, reason=r.error["message"]) for r in self.results.values() if r.error]
        return dict(changed=any(r.changed for r in self.results.values()), results=results, failed_instances=failed,
                    command_ids=sorted({r.command_id for r in self.results.values() if r.command_id}))
