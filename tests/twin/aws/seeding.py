"""Seeding the AWS twin with snapshots taken in the past: a history an account holds, made in one step.

A test of what a long-lived account looks like (400 days of daily sets, say) cannot wait for the days to pass,
and making the history with one CreateSnapshot call per day would test the calls rather than the history.
Each seeded snapshot is made as CreateSnapshot makes it (the account's snapshot quota applies), completed,
with the given StartTime and tags.
"""

from __future__ import annotations

import datetime
from typing import Any, Dict, Iterable, List


def seed_snapshots(handle: Any, snapshots: Iterable[Dict[str, Any]]) -> List[str]:
    """Completed snapshots of ``{"volume_id", "start_time" (aware datetime), "tags" ({key: value})}``; their ids."""
    ext = handle.cloud.ext
    specs = list(snapshots)
    made = []
    with handle.cloud.lock:
        ext._check_quota(len(specs))  # pylint: disable=protected-access
        for spec in specs:
            start = spec["start_time"]
            if start.tzinfo is None:
                raise ValueError("start_time must be an aware datetime (UTC)")
            snapshot = ext._snapshot(spec["volume_id"], spec.get("description", ""))  # pylint: disable=protected-access
            snapshot._twin_status = "completed"  # pylint: disable=protected-access
            snapshot.start_time = start.astimezone(datetime.timezone.utc).replace(tzinfo=None)
            ext._pending.pop(spec["volume_id"], None)  # pylint: disable=protected-access
            if spec.get("tags"):
                ext.backend.create_tags([snapshot.id], dict(spec["tags"]))
            made.append(snapshot.id)
    return made
