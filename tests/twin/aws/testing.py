"""Helpers for tests that drive the AWS twin through boto3."""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List

TERMINAL = ("Success", "Failed", "TimedOut", "Cancelled")


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05, what: str = "condition") -> Any:
    """Poll until ``predicate()`` is truthy; returns its value.  The timeout is a hang guard, not a measurement."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def invocations(ssm, command_id: str, details: bool = True) -> List[Dict[str, Any]]:
    """All invocations of a command, through the paginator as the collection reads them."""
    pages = ssm.get_paginator("list_command_invocations").paginate(CommandId=command_id, Details=details)
    return [inv for page in pages for inv in page["CommandInvocations"]]


def wait_command(ssm, command_id: str, timeout: float = 30.0) -> Dict[str, Dict[str, Any]]:
    """Wait until every invocation of the command is terminal; returns {instance id: invocation}."""
    def done():
        invs = invocations(ssm, command_id)
        return invs and all(i["Status"] in TERMINAL for i in invs) and {i["InstanceId"]: i for i in invs}
    return wait_for(done, timeout, what=f"command {command_id}")


def tags_of(resource: Dict[str, Any]) -> Dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags") or []}
