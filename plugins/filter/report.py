# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Filters that turn the collection's module results into the per-host run reports of its playbooks.

The playbooks call a module once per provider for the whole fleet; these filters give every host
its own row again, so that the JSON report, the HTML report and the summary printed at the end all
say the same thing per host. How a report reads (text and HTML) is plugin_utils/report_render.py.
"""

from __future__ import annotations

import shlex
from datetime import datetime, timezone

from ansible.errors import AnsibleFilterError

from ansible_collections.appconsistent.snapshots.plugins.plugin_utils import report_render

# What a report keeps of a restored volume (restore_volumes' device_map has much more).
VOLUME_KEYS = ("device", "snapshot_id", "volume_id", "original_volume_id", "outcome")
KINDS = ("backup", "restore", "verify", "prune")
# Failed hosts first: they are what an operator opens the report for.
STATUS_ORDER = {"failed": 0, "warning": 1, "planned": 2, "ok": 3}
TAG_DELETE_AFTER = "appconsistent:delete-after"
RESTORE_PLAYBOOK = "appconsistent.snapshots.restore"


def _error_text(error):
    if not error:
        return None
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message") or error.get("msg")
        if code and message:
            return f"{code}: {message}"
        return str(message or code)
    return str(error)


def _round(value):
    return round(float(value), 3) if isinstance(value, (int, float)) else None


def _instant(value):
    """An instant (epoch seconds or ISO 8601) as a UTC datetime, or None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(float(value), tz=timezone.utc)
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    return None


def _iso(instant):
    return instant.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if instant else None


def _snapshot_rows(snapshots):
    rows = []
    for snap in snapshots or []:
        size = snap.get("volume_size") if snap.get("volume_size") is not None else snap.get("size")
        rows.append({"snapshot_id": snap.get("snapshot_id"), "device": snap.get("device"),
                     "volume_id": snap.get("volume_id") or snap.get("disk_id"), "state": snap.get("state"),
                     "size_gib": size if isinstance(size, (int, float)) else None})
    return rows


def _host_times(entry, call):
    """When the host's own work began and ended, from its freeze helper and snapshots, else from its cloud call."""
    helper = entry.get("helper") or {}
    starts = [_instant((helper.get("freeze") or {}).get("t_start"))]
    starts += [_instant(snap.get("start_time")) for snap in entry.get("snapshots") or []]
    starts = [s for s in starts if s] or [_instant(call.get("started"))]
    ends = [_instant((helper.get("thaw") or {}).get("t_thawed")), _instant(call.get("finished"))]
    ends = [e for e in ends if e]
    start = min((s for s in starts if s), default=None)
    # The call returns when the host's set is taken (and complete, with wait): the host's result is no older.
    end = max(ends, default=None)
    return _iso(start), _iso(end)


def _delete_after(snapshots):
    for snap in snapshots or []:
        value = (snap.get("tags") or {}).get(TAG_DELETE_AFTER)
        if value:
            return value
    return None


def restore_hint(host, set_id, inventory=None):
    """How to restore one set: the restore playbook, its variables and the command line."""
    sources = [s for s in (inventory or []) if isinstance(s, str) and s]
    command = ["ansible-playbook", RESTORE_PLAYBOOK]
    for source in sources:
        command += ["-i", source]
    command += ["-e", f"target={host}", "-e", f"set_id={set_id}"]
    return {"playbook": RESTORE_PLAYBOOK, "vars": {"target": host, "set_id": set_id},
            "command": " ".join(shlex.quote(part) for part in command) + " --check"}


def backup_report(calls, hosts, meta=None):
    """The report of one backup run.

    ``calls``: one dict per module call, ``{"provider", "result", "duration", "summary"}`` with the registered
    result of app_consistent_group (``summary`` may carry the call's ``started`` and ``finished``). ``hosts``:
    ``{"host", "instance_id", "provider", "platform"}`` per inventory host. ``meta``: anything to keep at the top
    of the report (run id, times, playbook, ``inventory``: the inventory sources, for the restore commands).
    """
    if not isinstance(calls, list) or not isinstance(hosts, list):
        raise AnsibleFilterError("backup_report expects a list of module calls and a list of hosts")
    meta = dict(meta or {})
    entries, failures, call_errors, durations, call_times = {}, {}, {}, {}, {}
    for call in calls:
        if not isinstance(call, dict) or not call.get("provider"):
            continue
        provider = call["provider"]
        result = call.get("result") or {}
        durations[provider] = _round(call.get("duration"))
        call_times[provider] = call.get("summary") or {}
        for entry in result.get("results") or []:
            entries[(provider, entry.get("instance_id"))] = entry
        for failed in result.get("failed_instances") or []:
            failures[(provider, failed.get("instance_id"))] = failed.get("reason")
        if result.get("skipped"):
            call_errors[provider] = "the module call was skipped"
        elif not result.get("results"):
            # A module that fails before it looks at any instance (credentials, endpoint, a refused
            # option) returns no per-instance results, only its message.
            call_errors[provider] = result.get("msg") or "the module returned no result"
    rows = []
    for host in hosts:
        provider, instance_id = host.get("provider"), host.get("instance_id")
        entry = entries.get((provider, instance_id))
        # duration is the cloud call's, shared by every host of that cloud (kept for the JSON's readers).
        row = {"host": host.get("host"), "instance_id": instance_id, "provider": provider,
               "platform": (entry or {}).get("platform") or host.get("platform"),
               "consistency_requested": (entry or {}).get("consistency_requested") or meta.get("consistency"),
               "consistency": "none", "set_id": None, "snapshots": [], "duration": durations.get(provider),
               "freeze_window": None, "downtime": None, "agent_status": None, "error": None,
               "start": None, "end": None, "delete_after": None, "size_gib": None, "lock": None, "restore": None,
               "verification": None}
        if host.get("error"):
            row.update(status="failed", error=host["error"])
        elif entry is None:
            reason = call_errors.get(provider) or f"no result for {instance_id} from the {provider} backup"
            row.update(status="failed", error=reason)
        else:
            snapshots = _snapshot_rows(entry.get("snapshots"))
            sizes = [s["size_gib"] for s in snapshots if s["size_gib"] is not None]
            start, end = _host_times(entry, call_times.get(provider) or {})
            row.update(consistency=entry.get("consistency") or "none", set_id=entry.get("set_id"),
                       snapshots=snapshots, freeze_window=_round(entry.get("freeze_window")),
                       downtime=_round(entry.get("downtime")), agent_status=entry.get("status"),
                       start=start, end=end, delete_after=_delete_after(entry.get("snapshots")),
                       size_gib=sum(sizes) if sizes else None,
                       lock=entry.get("lock") if isinstance(entry.get("lock"), dict) else None,
                       verification=entry.get("verification") if isinstance(entry.get("verification"), dict) else None)
            if row["set_id"] and row["consistency"] != "none":
                row["restore"] = restore_hint(row["host"], row["set_id"], meta.get("inventory"))
            if (provider, instance_id) in failures:
                row.update(status="failed", error=failures[(provider, instance_id)] or _error_text(entry.get("error")))
            elif entry.get("status") == "WouldRun":
                row.update(status="planned")
            elif entry.get("error"):
                row.update(status="warning", error=_error_text(entry.get("error")))
            else:
                row.update(status="ok")
        rows.append(row)
    return _finish(dict(meta, kind="backup"), rows)


def _finish(report, rows):
    rows = sorted(rows, key=lambda row: STATUS_ORDER.get(row["status"], len(STATUS_ORDER)))
    counts, achieved = {}, {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
        if "consistency" in row:
            achieved[row["consistency"]] = achieved.get(row["consistency"], 0) + 1
    snapshots = [s for row in rows for s in row.get("snapshots") or [] if isinstance(s, dict)]
    sizes = [s["size_gib"] for s in snapshots if s.get("size_gib") is not None]
    started, finished = _instant(report.get("started")), _instant(report.get("finished"))
    report["summary"] = {"hosts": len(rows), "ok": counts.get("ok", 0), "warning": counts.get("warning", 0),
                         "failed": counts.get("failed", 0), "planned": counts.get("planned", 0),
                         "by_consistency": achieved, "snapshots": len(snapshots), "size_gib": sum(sizes),
                         "duration": (finished - started).total_seconds() if started and finished else None}
    report["hosts"] = rows
    report["failed_hosts"] = [row["host"] for row in rows if row["status"] == "failed"]
    return report


def restore_report(rows, meta=None):
    """The report of a restore, verify or prune run from rows the playbook assembled (one per host or scope)."""
    if not isinstance(rows, list):
        raise AnsibleFilterError("restore_report expects a list of rows")
    kind = (meta or {}).get("kind", "restore")
    if kind not in KINDS:
        raise AnsibleFilterError(f"unknown report kind {kind!r}; expected one of {', '.join(sorted(KINDS))}")
    clean = []
    for row in rows:
        row = dict(row)
        row.setdefault("status", "failed" if row.get("error") else "ok")
        row["error"] = _error_text(row.get("error"))
        if isinstance(row.get("volumes"), list):
            row["volumes"] = [{k: v.get(k) for k in VOLUME_KEYS if v.get(k) is not None} if isinstance(v, dict) else v
                              for v in row["volumes"]]
        clean.append(row)
    return _finish(dict(meta or {}, kind=kind), clean)


def report_text(report):
    """A plain-text account of the report, for the end of a run."""
    if not isinstance(report, dict) or "hosts" not in report:
        raise AnsibleFilterError("report_text expects a report made by backup_report or restore_report")
    return report_render.text(report)


def report_html(report):
    """The report as one self-contained HTML page (no scripts, no external assets, every value escaped)."""
    if not isinstance(report, dict) or "hosts" not in report:
        raise AnsibleFilterError("report_html expects a report made by backup_report or restore_report")
    return report_render.page(report)


class FilterModule:
    """Report filters of appconsistent.snapshots."""

    def filters(self):
        return {"backup_report": backup_report, "restore_report": restore_report, "report_text": report_text,
                "report_html": report_html}
