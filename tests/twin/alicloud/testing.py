"""Helpers for tests that drive the Alibaba twin through the official SDK."""

from __future__ import annotations

import base64
import contextlib
import os
import subprocess
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

from alibabacloud_ecs20140526 import models as ecs_models

FINAL = ("Success", "Failed", "Invalid", "Aborted", "Error", "Timeout", "Cancelled", "Terminated")


def plugin_command(params: Dict[str, Any], plugin: str = "app-snapshot-plugin") -> str:
    """The CommandContent of seed 004 for the given plug-in parameters (values quoted as in Alibaba's example)."""
    parts = []
    for key, value in params.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        if isinstance(value, str):
            parts.append(f'-{key}="{value}"')
        else:
            parts.append(f"-{key}={value}")
    return f"acs-plugin-manager --exec --plugin {plugin} --params={','.join(parts)}"


def run_command(client, region: str, instance_ids: List[str], content: str, command_type: str = "RunShellScript",
                timeout: int = 600, **extra: Any) -> str:
    request = ecs_models.RunCommandRequest(region_id=region, type=command_type, command_content=content,
                                           instance_id=list(instance_ids), timeout=timeout, **extra)
    return client.run_command(request).body.invoke_id


def wait_results(client, region: str, invoke_id: str, limit: float = 60.0, encoding: Optional[str] = None) -> List[Any]:
    """Poll DescribeInvocationResults until every instance's result is final; returns the SDK result models."""
    deadline = time.monotonic() + limit
    while True:
        request = ecs_models.DescribeInvocationResultsRequest(region_id=region, invoke_id=invoke_id, content_encoding=encoding,
                                                              max_results=50)
        results = client.describe_invocation_results(request).body.invocation.invocation_results.invocation_result
        if results and all(r.invocation_status in FINAL for r in results):
            return results
        if time.monotonic() > deadline:
            raise AssertionError(f"invocation {invoke_id} not finished: {[r.invocation_status for r in results]}")
        time.sleep(0.02)


def decoded_output(result: Any) -> str:
    return base64.b64decode(result.output or "").decode("utf-8")


def group_snapshots(client, region: str, group_id: str) -> List[Any]:
    request = ecs_models.DescribeSnapshotGroupsRequest(region_id=region, snapshot_group_id=[group_id])
    groups = client.describe_snapshot_groups(request).body.snapshot_groups.snapshot_group
    assert len(groups) == 1, groups
    return groups[0].snapshots.snapshot


def snapshot_tags(client, region: str, instance_id: str) -> Dict[str, Dict[str, str]]:
    """{snapshot id: {tag key: value}} for every snapshot of an instance, read with DescribeSnapshots."""
    request = ecs_models.DescribeSnapshotsRequest(region_id=region, instance_id=instance_id, max_results=100)
    snaps = client.describe_snapshots(request).body.snapshots.snapshot
    return {s.snapshot_id: {t.tag_key: t.tag_value for t in (s.tags.tag if s.tags else [])} for s in snaps}


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False)


@contextlib.contextmanager
def loop_filesystem(directory: str, name: str = "data", size_mib: int = 64) -> Iterator[Tuple[str, str]]:
    """An ext4 filesystem in a sparse image, loop-mounted under ``directory``; yields (image, mount point).

    Always thawed, unmounted and detached on exit, also when the test fails.
    """
    image = os.path.join(directory, f"{name}.img")
    mount = os.path.join(directory, f"{name}-mnt")
    os.makedirs(mount, exist_ok=True)
    with open(image, "wb") as handle:
        handle.truncate(size_mib * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", image], check=True, capture_output=True)
    subprocess.run(["mount", "-o", "loop", image, mount], check=True, capture_output=True)
    try:
        yield image, mount
    finally:
        _run("fsfreeze", "-u", mount)
        if _run("umount", mount).returncode != 0:
            _run("umount", "-l", mount)
        for line in _run("losetup", "-j", image).stdout.splitlines():
            _run("losetup", "-d", line.split(":", 1)[0])


@contextlib.contextmanager
def mounted_readonly(image: str, directory: str) -> Iterator[str]:
    """Mount a snapshot image read-only (without journal replay) to look at its files."""
    mount = os.path.join(directory, f"ro-{os.path.basename(image)}")
    os.makedirs(mount, exist_ok=True)
    subprocess.run(["mount", "-o", "loop,ro,noload", image, mount], check=True, capture_output=True)
    try:
        yield mount
    finally:
        if _run("umount", mount).returncode != 0:
            _run("umount", "-l", mount)
        for line in _run("losetup", "-j", image).stdout.splitlines():
            _run("losetup", "-d", line.split(":", 1)[0])


def write_script(path: str, body: str, mode: int = 0o700) -> str:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("#!/bin/bash\n" + body + "\n")
    os.chown(path, 0, 0)
    os.chmod(path, mode)
    return path
