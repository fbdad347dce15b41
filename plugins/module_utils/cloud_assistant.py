# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Running one Cloud Assistant command on many instances: 100 per RunCommand, one listing per invocation to follow them,
StopInvocation for those the run gives up on."""

from __future__ import annotations

import time

from ansible_collections.appconsistent.snapshots.plugins.module_utils.alicloud import AlibabaCloudError
from ansible_collections.appconsistent.snapshots.plugins.module_utils.app_plugin import decode_output
from ansible_collections.appconsistent.snapshots.plugins.module_utils.concurrency import chunks
from ansible_collections.appconsistent.snapshots.plugins.module_utils.polling import poll_until

RUN_COMMAND_BATCH = 100
STOP_INVOCATION_BATCH = 50

# Per-instance InvocationStatus values after which nothing more happens.
TERMINAL = ("Success", "Failed", "Error", "Timeout", "Cancelled", "Terminated", "Invalid", "Aborted")

ERROR_ADVICE = {
    "ClientNotRunning": "the Cloud Assistant agent is not running on the instance: install or start it",
    "ClientNotResponse": "the Cloud Assistant agent does not respond: check that it runs and can reach Alibaba Cloud",
    "ClientIsUpgrading": "the Cloud Assistant agent is upgrading: retry in a few minutes",
    "ClientNeedUpgrade": "the Cloud Assistant agent is too old: upgrade it",
    "InstanceNotRunning": "the instance is not running",
    "InstanceNotExists": "the instance does not exist",
    "InstanceReleased": "the instance was released",
    "CommandNotApplicable": "the command type does not apply to the instance's operating system",
    "DeliveryTimeout": "the command was not delivered in time: check the Cloud Assistant agent",
    "ExecutionTimeout": "the command did not finish within its timeout",
    "ExecutionInterrupted": "the command was interrupted on the instance",
}


class InvocationRun:
    """One command content sent to many instances, followed to the end.

    ``api`` is the module's AlibabaCloud object.
    """

    def __init__(self, api, content, command_type="RunShellScript", timeout=60, name=None, sleep=time.sleep,
                 clock=time.monotonic):
        self.api = api
        self.content = content
        self.command_type = command_type
        self.timeout = timeout
        self.name = name
        self.sleep = sleep
        self.clock = clock
        self.invocations = []  # (invoke_id, [instance ids])
        self.results = {}  # instance id -> last InvocationResult seen
        self.stopped = {}  # instance id -> what StopInvocation did there, as a sentence

    def send(self, instance_ids):
        sent = []
        for chunk in chunks(instance_ids, RUN_COMMAND_BATCH):
            ids = self.api.run_command(chunk, self.content, command_type=self.command_type, timeout=self.timeout,
                                       name=self.name)
            self.invocations.append((ids["invoke_id"], chunk))
            sent.append(ids["invoke_id"])
        return sent

    def _finished(self, instance_ids):
        return all(self.results.get(i, {}).get("InvocationStatus") in TERMINAL for i in instance_ids)

    def ended(self):
        """The instances sent so far whose invocation has ended, read with one poll."""
        self.poll()
        return [i for _invoke_id, chunk in self.invocations for i in chunk if self._finished([i])]

    def poll(self):
        done = True
        for invoke_id, instance_ids in self.invocations:
            if self._finished(instance_ids):
                continue
            for result in self.api.describe_invocation_results(invoke_id):
                self.results[result["InstanceId"]] = result
            if not self._finished(instance_ids):
                done = False
        return done

    def wait(self, timeout, first_interval=1.0, max_interval=5.0):
        """Poll until every instance has finished or ``timeout`` seconds passed; True when all finished."""
        return poll_until(self.poll, timeout, self.sleep, self.clock, first_interval, max_interval)

    def stop(self, instance_ids=None):
        """StopInvocation for the instances (all sent when None) whose invocation has not ended, then one poll to
        read what it did; returns {instance id: sentence} for each instance it was sent for.

        Alibaba documents that stopping a one-time invocation cancels it on the instances where it has not started,
        and that a run already started goes on to its end. A Cloud Assistant command the agent has not picked up
        yet is cancelled; one already running (the plug-in past its freeze, an unmount under way) is not.
        """
        wanted = set(self.sent() if instance_ids is None else instance_ids)
        asked = []
        for invoke_id, chunk in self.invocations:
            open_ids = [i for i in chunk if i in wanted and not self._finished([i])]
            for batch in chunks(open_ids, STOP_INVOCATION_BATCH):
                try:
                    self.api.stop_invocation(invoke_id, batch)
                except AlibabaCloudError as exc:
                    self.stopped.update((i, f"it could not be stopped ({exc.code}): {exc.message}") for i in batch)
                    continue
                asked.extend(batch)
        if not asked:
            return {i: self.stopped[i] for i in wanted if i in self.stopped}
        self.poll()
        for instance_id in asked:
            status = self.results.get(instance_id, {}).get("InvocationStatus") or "Pending"
            if status == "Cancelled":
                self.stopped[instance_id] = "it had not started and StopInvocation cancelled it"
            elif status in TERMINAL:
                self.stopped[instance_id] = f"it ended {status} as StopInvocation was sent"
            elif status == "Pending":
                self.stopped[instance_id] = ("StopInvocation was sent before it started; it still showed Pending "
                                             "when last read")
            else:
                self.stopped[instance_id] = (f"it had started ({status}) and goes on to its end: StopInvocation "
                                             "does not interrupt a started run")
        return {i: self.stopped[i] for i in wanted if i in self.stopped}

    def sent(self):
        return [i for _invoke_id, chunk in self.invocations for i in chunk]

    def result(self, instance_id):
        raw = self.results.get(instance_id) or {}
        invoke_id = next((i for i, ids in self.invocations if instance_id in ids), None)
        code = raw.get("ErrorCode") or None
        exit_code = raw.get("ExitCode")
        status = raw.get("InvocationStatus") or "Pending"
        return dict(invoke_id=invoke_id, status=status, exit_code=exit_code if status in ("Success", "Failed") else None,
                    output=decode_output(raw.get("Output")), error_code=code, error_info=raw.get("ErrorInfo"),
                    advice=ERROR_ADVICE.get(code), stopped=self.stopped.get(instance_id))
