# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Running one SSM document on many instances: batches of 50, one listing call per batch to follow them.

Shared by every module that reaches instances through SSM Run Command.
"""

from __future__ import annotations

import concurrent.futures
import time

from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import SSM_INSTANCE_BATCH
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import AppConsistentAWSError
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import cancel_command
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import get_command_invocation
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import list_command_invocations
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import send_command
from ansible_collections.appconsistent.snapshots.plugins.module_utils.concurrency import chunks
from ansible_collections.appconsistent.snapshots.plugins.module_utils.polling import poll_until

# Commands listed at once in one polling round.
POLL_WORKERS = 8

# Invocation statuses after which nothing more happens on the instance.
TERMINAL_STATUSES = ("Success", "Failed", "TimedOut", "Cancelled", "DeliveryTimedOut", "Undeliverable",
                     "Terminated", "InvalidPlatform", "AccessDenied", "ExecutionTimedOut")

AGENT_HINT = ("check that the SSM agent runs on the instance, that it can reach the SSM endpoints, and that its "
              "instance profile allows Systems Manager (AmazonSSMManagedInstanceCore)")

# What each terminal status means for an operator, and what to do about it.
STATUS_MESSAGES = {
    "Failed": "the command failed on the instance",
    "TimedOut": "the command did not finish in time on the instance",
    "ExecutionTimedOut": "the command did not finish within its execution timeout on the instance",
    "Cancelled": "the command was cancelled before it finished (by an operator, or because max_errors was reached)",
    "Terminated": "the command was terminated on the instance",
    "DeliveryTimedOut": "the command never reached the instance before the delivery timeout; " + AGENT_HINT,
    "Undeliverable": "the command could not be delivered: the instance is not reachable by SSM; " + AGENT_HINT,
    "InvalidPlatform": "the document does not apply to the instance's platform",
    "AccessDenied": "the SSM agent was denied access; check the instance profile",
}


def effective_status(invocation):
    """The most precise status SSM gives: StatusDetails names DeliveryTimedOut and Undeliverable, Status does not."""
    details = invocation.get("StatusDetails")
    if details in TERMINAL_STATUSES:
        return details
    return invocation.get("Status")


def is_terminal(invocation):
    return effective_status(invocation) in TERMINAL_STATUSES or invocation.get("Status") in TERMINAL_STATUSES


def plugin_output(invocation):
    """stdout and stderr of the invocation's plugins, for diagnostics only (never the source of truth)."""
    out, err = [], []
    for plugin in invocation.get("CommandPlugins") or []:
        if plugin.get("Output"):
            out.append(plugin["Output"])
        if plugin.get("StandardErrorContent"):
            err.append(plugin["StandardErrorContent"])
    return "\n".join(out), "\n".join(err)


def response_code(invocation):
    codes = [p.get("ResponseCode") for p in invocation.get("CommandPlugins") or [] if p.get("ResponseCode") is not None]
    return codes[-1] if codes else None


class CommandRun:
    """One document sent to many instances, followed to the end."""

    def __init__(self, client, document, parameters, comment=None, timeout_seconds=None, max_concurrency=None,
                 max_errors=None, sleep=time.sleep, clock=time.monotonic):
        self.client = client
        self.document = document
        self.parameters = parameters
        self.comment = comment
        self.timeout_seconds = timeout_seconds
        self.max_concurrency = max_concurrency
        self.max_errors = max_errors
        self.sleep = sleep
        self.clock = clock
        self.commands = []  # (command_id, [instance ids])
        self.invocations = {}  # instance id -> last invocation seen

    def send(self, instance_ids, parameters=None):
        """Send the document to these instances, in batches; returns the command ids."""
        sent = []
        for chunk in chunks(instance_ids, SSM_INSTANCE_BATCH):
            command = send_command(self.client, self.document, parameters or self.parameters, instance_ids=chunk,
                                   comment=self.comment, timeout_seconds=self.timeout_seconds,
                                   max_concurrency=self.max_concurrency, max_errors=self.max_errors)
            self.commands.append((command["CommandId"], chunk))
            sent.append(command["CommandId"])
        return sent

    def _finished(self, instance_ids):
        return all(i in self.invocations and is_terminal(self.invocations[i]) for i in instance_ids)

    def ended(self):
        """The instances sent so far whose invocation has ended, read with one poll."""
        if not self.commands:
            return []
        self.poll()
        return [i for _command_id, chunk in self.commands for i in chunk if self._finished([i])]

    def poll(self):
        """One listing per unfinished command, side by side; returns True when every instance has finished."""
        open_commands = [command_id for command_id, instance_ids in self.commands if not self._finished(instance_ids)]
        if len(open_commands) > 1:
            # The listings of several commands run at once, so that a round costs one listing's time.
            with concurrent.futures.ThreadPoolExecutor(max_workers=min(POLL_WORKERS, len(open_commands))) as pool:
                listings = list(pool.map(lambda command_id: list_command_invocations(self.client, command_id),
                                         open_commands))
        else:
            listings = [list_command_invocations(self.client, command_id) for command_id in open_commands]
        for listing in listings:
            for invocation in listing:
                self.invocations[invocation["InstanceId"]] = invocation
        return all(self._finished(instance_ids) for _command_id, instance_ids in self.commands)

    def wait(self, timeout, first_interval=1.0, max_interval=5.0):
        """Poll until every instance has finished or ``timeout`` seconds passed; True when all finished."""
        return poll_until(self.poll, timeout, self.sleep, self.clock, first_interval, max_interval)

    def cancel(self, instance_ids):
        """Cancel the command on these instances where it has not ended, so that a late delivery (SSM keeps trying
        until the delivery timeout) does not run it after the controller has given up; returns those it could not
        cancel, with the reason."""
        refused = {}
        for command_id, chunk in self.commands:
            open_ids = [i for i in chunk if i in instance_ids and not self._finished([i])]
            if not open_ids:
                continue
            try:
                cancel_command(self.client, command_id, open_ids)
            except AppConsistentAWSError as exc:
                refused.update((i, str(exc)) for i in open_ids)
        return refused

    def full_stdout(self, instance_id):
        """The instance's standard output as GetCommandInvocation gives it (24000 characters, not 2500)."""
        command_id = next((c for c, ids in self.commands if instance_id in ids), None)
        if not command_id:
            return ""
        return get_command_invocation(self.client, command_id, instance_id).get("StandardOutputContent") or ""

    def result(self, instance_id):
        """Status, response code and output of one instance ('Pending' when nothing was seen yet)."""
        invocation = self.invocations.get(instance_id) or {}
        stdout, stderr = plugin_output(invocation)
        command_id = next((c for c, ids in self.commands if instance_id in ids), None)
        return dict(command_id=command_id, status=effective_status(invocation) or "Pending",
                    response_code=response_code(invocation), stdout=stdout, stderr=stderr,
                    requested=_iso(invocation.get("RequestedDateTime")))


def _iso(value):
    return value.isoformat() if hasattr(value, "isoformat") else value
