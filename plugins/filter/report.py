# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Filters that turn the collection's module results into the per-host run reports of its playbooks.

The playbooks call a module once per provider for the whole fleet; these filters give every host
its own row again, so that the JSON report, the HTML report and the summary printed at the end all
say the same thing per host.
"""

from __future__ import annotations

import html

from ansible.errors import AnsibleFilterError

STATUS_LABEL = {"ok": "OK", "warning": "WARNING", "failed": "FAILED", "planned": "CHECK MODE"}

COLUMNS = {
    "backup": [("host", "Host"), ("instance_id", "Instance"), ("target", "Cloud / platform"), ("status", "Status"),
               ("consistency_requested", "Requested"), ("consistency", "Achieved"), ("set_id", "Set"),
               ("snapshots", "Snapshots"), ("duration", "Cloud call (s)"), ("freeze_window", "Freeze window (s)"),
               ("error", "Error")],
    "restore": [("host", "Host"), ("instance_id", "Instance"), ("target", "Cloud"), ("status", "Status"),
                ("set_id", "Set"), ("consistency", "Set consistency"), ("volumes", "Volumes"),
                ("duration", "Duration (s)"), ("error", "Error")],
    "verify": [("host", "Host"), ("instance_id", "Instance"), ("target", "Cloud"), ("status", "Status"),
               ("set_id", "Set"), ("consistency", "Set consistency"), ("checks", "Checks"),
               ("duration", "Duration (s)"), ("error", "Error")],
    "prune": [("host", "Host"), ("instance_id", "Instance"), ("target", "Cloud"), ("status", "Status"),
              ("deleted", "Deleted sets"), ("kept", "Kept sets"), ("error", "Error")],
}


# What a report keeps of a restored volume (restore_volumes' device_map has much more).
VOLUME_KEYS = ("device", "snapshot_id", "volume_id", "original_volume_id", "outcome")


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


def _snapshot_rows(snapshots):
    rows = []
    for snap in snapshots or []:
        rows.append({"snapshot_id": snap.get("snapshot_id"), "device": snap.get("device"),
                     "volume_id": snap.get("volume_id") or snap.get("disk_id"), "state": snap.get("state")})
    return rows


def backup_report(calls, hosts, meta=None):
    """The report of one backup run.

    ``calls``: one dict per module call, ``{"provider", "result", "duration"}`` with the registered result of
    app_consistent_group. ``hosts``: ``{"host", "instance_id", "provider", "platform"}`` per inventory host.
    ``meta``: anything to keep at the top of the report (run id, times, playbook).
    """
    if not isinstance(calls, list) or not isinstance(hosts, list):
        raise AnsibleFilterError("backup_report expects a list of module calls and a list of hosts")
    entries, failures, call_errors, durations = {}, {}, {}, {}
    for call in calls:
        if not isinstance(call, dict) or not call.get("provider"):
            continue
        provider = call["provider"]
        result = call.get("result") or {}
        durations[provider] = _round(call.get("duration"))
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
        row = {"host": host.get("host"), "instance_id": instance_id, "provider": provider,
               "platform": (entry or {}).get("platform") or host.get("platform"),
               "consistency_requested": (entry or {}).get("consistency_requested") or (meta or {}).get("consistency"),
               "consistency": "none", "set_id": None, "snapshots": [], "duration": durations.get(provider),
               "freeze_window": None, "downtime": None, "agent_status": None, "error": None}
        if host.get("error"):
            row.update(status="failed", error=host["error"])
        elif entry is None:
            reason = call_errors.get(provider) or f"no result for {instance_id} from the {provider} backup"
            row.update(status="failed", error=reason)
        else:
            row.update(consistency=entry.get("consistency") or "none", set_id=entry.get("set_id"),
                       snapshots=_snapshot_rows(entry.get("snapshots")), freeze_window=_round(entry.get("freeze_window")),
                       downtime=_round(entry.get("downtime")), agent_status=entry.get("status"))
            if (provider, instance_id) in failures:
                row.update(status="failed", error=failures[(provider, instance_id)] or _error_text(entry.get("error")))
            elif entry.get("status") == "WouldRun":
                row.update(status="planned")
            elif entry.get("error"):
                row.update(status="warning", error=_error_text(entry.get("error")))
            else:
                row.update(status="ok")
        rows.append(row)
    return _finish(dict(meta or {}, kind="backup"), rows)


def _finish(report, rows):
    counts = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    achieved = {}
    for row in rows:
        if "consistency" in row:
            achieved[row["consistency"]] = achieved.get(row["consistency"], 0) + 1
    report["summary"] = {"hosts": len(rows), "ok": counts.get("ok", 0), "warning": counts.get("warning", 0),
                         "failed": counts.get("failed", 0), "planned": counts.get("planned", 0),
                         "by_consistency": achieved}
    report["hosts"] = rows
    report["failed_hosts"] = [row["host"] for row in rows if row["status"] == "failed"]
    return report


def restore_report(rows, meta=None):
    """The report of a restore, verify or prune run from rows the playbook assembled (one per host or scope)."""
    if not isinstance(rows, list):
        raise AnsibleFilterError("restore_report expects a list of rows")
    kind = (meta or {}).get("kind", "restore")
    if kind not in COLUMNS:
        raise AnsibleFilterError(f"unknown report kind {kind!r}; expected one of {', '.join(sorted(COLUMNS))}")
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


def _cell_text(key, row):
    value = row.get(key)
    if key == "target":
        return " / ".join(str(v) for v in (row.get("provider"), row.get("platform")) if v)
    if key == "status":
        return STATUS_LABEL.get(value, str(value).upper())
    if key == "snapshots":
        return ", ".join(f"{s.get('device') or '?'}={s.get('snapshot_id')}" for s in value or [])
    if key in ("volumes", "checks", "deleted", "kept"):
        if isinstance(value, list):
            return ", ".join(_item_text(v) for v in value)
    if value is None:
        return ""
    return str(value)


def _item_text(item):
    if isinstance(item, dict):
        if "name" in item and "result" in item:
            return f"{item['name']}: {item['result']}"
        return " ".join(f"{k}={v}" for k, v in item.items() if v is not None)
    return str(item)


def report_text(report):
    """A plain-text table of the report's hosts, one line per host, for the end of a run."""
    if not isinstance(report, dict) or "hosts" not in report:
        raise AnsibleFilterError("report_text expects a report made by backup_report or restore_report")
    keys = [k for k, _label in COLUMNS[report.get("kind", "backup")] if k not in ("snapshots", "duration")]
    labels = dict(COLUMNS[report.get("kind", "backup")])
    table = [[labels[k] for k in keys]] + [[_cell_text(k, row) for k in keys] for row in report["hosts"]]
    widths = [max(len(line[i]) for line in table) for i in range(len(keys))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip() for line in table]
    if report.get("error"):  # the run failed as a whole (a target that matches no host)
        lines.insert(0, f"FAILED: {report['error']}")
    summary = report["summary"]
    lines.append(f"{summary['hosts']} hosts: {summary['ok']} ok, {summary['warning']} with warnings, "
                 f"{summary['failed']} failed" + (f", {summary['planned']} planned (check mode)" if summary["planned"] else ""))
    return "\n".join(lines)


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem;color:#1d2329}
h1{font-size:1.4rem;margin-bottom:.2rem} .meta{color:#555;margin-bottom:1rem}
table{border-collapse:collapse;width:100%;font-size:.9rem} th,td{border:1px solid #ccd;padding:.35rem .5rem;
text-align:left;vertical-align:top} th{background:#eef1f5} tr.failed td{background:#fdecea}
tr.warning td{background:#fff6e0} tr.ok td.status{color:#17692c;font-weight:600}
tr.failed td.status{color:#a4161a;font-weight:600} tr.warning td.status{color:#8a5a00;font-weight:600}
.summary span{display:inline-block;margin-right:1.2rem} code{font-size:.85rem}
p.error{color:#a4161a;font-weight:600} ul{margin:0;padding-left:1.1rem} td.host,td.instance_id,td.set_id,td.snapshots code{white-space:nowrap}
"""


def _cell_html(key, row):
    value = row.get(key)
    if key == "snapshots" and value:
        items = "".join(f"<li><code>{html.escape(str(s.get('snapshot_id')))}</code> "
                        f"{html.escape(str(s.get('device') or ''))}</li>" for s in value)
        return f"<ul>{items}</ul>"
    if key in ("volumes", "checks", "deleted", "kept") and isinstance(value, list) and value:
        return "<ul>" + "".join(f"<li>{html.escape(_item_text(v))}</li>" for v in value) + "</ul>"
    return html.escape(_cell_text(key, row))


def report_html(report):
    """The report as one self-contained HTML page (no scripts, no external assets, every value escaped)."""
    if not isinstance(report, dict) or "hosts" not in report:
        raise AnsibleFilterError("report_html expects a report made by backup_report or restore_report")
    kind = report.get("kind", "backup")
    columns = COLUMNS[kind]
    title = report.get("title") or f"appconsistent.snapshots {kind} report"
    meta_keys = [k for k in ("playbook", "run_id", "consistency", "started", "finished", "target") if report.get(k)]
    meta = " &middot; ".join(f"{html.escape(k.replace('_', ' '))}: <code>{html.escape(str(report[k]))}</code>"
                             for k in meta_keys)
    summary = report["summary"]
    spans = [f"<span>hosts: <b>{summary['hosts']}</b></span>", f"<span>ok: <b>{summary['ok']}</b></span>",
             f"<span>warnings: <b>{summary['warning']}</b></span>", f"<span>failed: <b>{summary['failed']}</b></span>"]
    spans += [f"<span>{html.escape(str(k))}: <b>{v}</b></span>" for k, v in sorted(summary["by_consistency"].items())]
    head = "".join(f"<th>{html.escape(label)}</th>" for _key, label in columns)
    body = []
    for row in report["hosts"]:
        cells = "".join(f'<td class="{key}" data-field="{key}">{_cell_html(key, row)}</td>' for key, _label in columns)
        body.append(f'<tr class="{html.escape(str(row.get("status")))}" data-host="{html.escape(str(row.get("host")))}">'
                    f"{cells}</tr>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><div class=\"meta\">{meta}</div>"
            + (f"<p class=\"error\" id=\"run-error\">FAILED: {html.escape(str(report['error']))}</p>"
               if report.get("error") else "")
            + f"<div class=\"summary\">{''.join(spans)}</div>"
            f"<table id=\"hosts\"><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            "</body></html>\n")


class FilterModule:
    """Report filters of appconsistent.snapshots."""

    def filters(self):
        return {"backup_report": backup_report, "restore_report": restore_report, "report_text": report_text,
                "report_html": report_html}
