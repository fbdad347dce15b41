# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

"""How a run report reads: the text printed at the end of a run and the HTML page written beside the JSON.

The page is for an operator reading a night's run on a 1280 px screen: the table has a fixed layout that
wraps every cell instead of widening the page, failed hosts come first, and each reason takes a full-width
row under its host so that it is never clipped. Restore, verify and prune rows read as sentences, with the
volumes, checks or sets in small tables.
"""

from __future__ import annotations

import html
import re
import shlex

STATUS_LABEL = {"ok": "OK", "warning": "WARNING", "failed": "FAILED", "planned": "CHECK MODE"}
# Why snapshot_set_prune kept a set, for results that carry only its reason code.
KEPT_REASON = {"not_expired": "not expired yet", "no_delete_after": "has no delete-after tag",
               "within_keep": "one of the newest sets that keep asks to keep",
               "newest_application": "the newest application-consistent set, which is always kept",
               "in_use_by_image": "an image uses its snapshots", "untagged_members": "some snapshots lack the set tags",
               "locked": "a snapshot lock has not expired", "schedule": "the retention schedule keeps it",
               "in_progress": "it is still being taken", "newest_verified": "the newest verified set, which is always kept"}
# A bare device name (xvdf, as Windows instances report it) and /dev/xvdf are the same device.
BARE_DEVICE = re.compile(r"^(?:[sx]?vd|sd|hd|nvme)[a-z0-9]+$")


def device_name(name):
    """A device name in the one form the report uses, /dev/...; anything else is left as it is."""
    if isinstance(name, str) and BARE_DEVICE.match(name):
        return "/dev/" + name
    return name


def _plural(count, word):
    return f"{count} {word}" + ("" if count == 1 else "s")


def seconds_text(value):
    if not isinstance(value, (int, float)):
        return "n/a"
    if value >= 120:
        minutes, seconds = divmod(int(round(value)), 60)
        return f"{minutes} min {seconds} s"
    return f"{value:.1f} s"


def size_text(gib):
    return f"{gib:g} GiB" if isinstance(gib, (int, float)) else "n/a"


def time_text(value):
    """An ISO instant as 2026-12-07 17:43:17Z, so that a narrow column breaks it between date and time."""
    return str(value).replace("T", " ") if value else "n/a"


def lock_text(lock):
    if not isinstance(lock, dict):
        return "n/a"
    planned = lock.get("planned")
    if isinstance(planned, dict):  # check mode: what a run would lock
        mode = planned.get("mode")
        span = (f" until {time_text(planned['expires_at'])}" if planned.get("expires_at") else
                f" for {planned['duration_days']} days" if planned.get("duration_days") else "")
        return "would be locked" + (f" ({mode})" if mode else "") + span
    if lock.get("locked") is None and not lock.get("state"):
        return "unknown (the locks could not be read)"
    if lock.get("locked") or lock.get("state") in ("governance", "compliance", "compliance-cooloff", "locked"):
        mode = lock.get("mode") or lock.get("state")
        until = lock.get("until") or lock.get("lock_expires")
        return "locked" + (f" ({mode})" if mode and mode != "locked" else "") + (f" until {time_text(until)}" if until else "")
    return "not locked"


def verification_text(record):
    """A set's last restore test (snapshot_set_info's verification, or what verify_restore recorded) as words."""
    if not isinstance(record, dict) or not record.get("result"):
        return "never tested"
    when = time_text(record.get("verified_at"))
    if record["result"] == "partial":
        return f"record incomplete ({when}): not verified"
    if record["result"] != "passed":
        return f"failed at {when}: not verified"
    seconds = record.get("seconds_to_application")
    ready = f", application working after {seconds_text(seconds)}" if isinstance(seconds, (int, float)) else ""
    return f"verified at {when}{ready}"


def restore_sentence(row, kind):
    """What happened to one host in a restore or verify run, as a sentence."""
    status, set_id = row.get("status"), row.get("set_id")
    what = f"set {set_id}" + (f" ({row['consistency']})" if row.get("consistency") else "") if set_id else "its newest set"
    volumes = _plural(len(row.get("volumes") or []), "volume")
    if kind == "verify":
        checks = row.get("checks") or []
        if status == "planned":
            return f"Would restore {what} to scratch volumes and check it."
        recorded = row.get("verification")
        note = f" Recorded on the set: {verification_text(recorded)}." if isinstance(recorded, dict) else ""
        if status == "failed":
            return (f"{what[0].upper() + what[1:]} did not verify." if set_id else "Nothing was verified.") + note
        return (f"Restored {what} to {volumes} and passed {_plural(len(checks), 'check')}; the scratch volumes are "
                f"removed.{note}")
    if status == "planned":
        return f"Would restore {what} onto {row.get('instance_id')}: {volumes}."
    if status == "failed":
        return f"{what[0].upper() + what[1:]} was not restored." if set_id else "Nothing was restored."
    took = f" in {seconds_text(row['duration'])}" if isinstance(row.get("duration"), (int, float)) else ""
    return f"Restored {what} onto {row.get('instance_id')}: {volumes}{took}."


def prune_sentence(row, names=False):
    """What a prune did (or would do, in check mode) to one host's sets; with names, which sets it deletes."""
    deleted, kept = row.get("deleted") or [], row.get("kept") or []
    planned = row.get("status") == "planned"
    if row.get("status") == "failed" and not deleted and not kept:
        return "Nothing was pruned."
    if not deleted:
        first = "Would delete no set" if planned else "Deleted no set"
    else:
        first = ("Would delete " if planned else "Deleted ") + _plural(len(deleted), "set")
        if names:
            first += " (" + ", ".join(map(str, deleted)) + ")"
    return f"{first}; {'keeps' if planned else 'kept'} {_plural(len(kept), 'set')}."


def prune_sets(row):
    """(set id, what was done, why) for each set of a prune row."""
    planned = row.get("status") == "planned"
    sets = [(str(s), "would delete" if planned else "deleted", "expired or beyond keep") for s in row.get("deleted") or []]
    for kept in row.get("kept") or []:
        kept = kept if isinstance(kept, dict) else {"set_id": kept}
        reasons = kept.get("reasons") if isinstance(kept.get("reasons"), list) else []
        why = ("; ".join(str(r) for r in reasons) or kept.get("reason")
               or KEPT_REASON.get(kept.get("reason_code"), kept.get("reason_code") or ""))
        if kept.get("locked_until") and "until" not in why:
            why += f" (until {time_text(kept['locked_until'])})"
        sets.append((str(kept.get("set_id")), "would keep" if planned else "kept", why))
    return sets


def totals(report):
    """The run totals as (label, value) pairs."""
    summary = report["summary"]
    outcome = ", ".join(f"{summary[key]} {label}" for key, label in
                        (("failed", "failed"), ("warning", "with warnings"), ("planned", "planned (check mode)"),
                         ("ok", "ok")) if summary.get(key) or key in ("failed", "ok"))
    pairs = [("Hosts", f"{summary['hosts']}: {outcome}"), ("Duration", seconds_text(summary.get("duration")))]
    if report.get("kind") == "backup":
        pairs += [("Snapshots", str(summary.get("snapshots", 0))), ("Total size", size_text(summary.get("size_gib")))]
        if summary.get("by_consistency"):
            pairs.append(("Achieved", ", ".join(f"{n} {level}" for level, n in sorted(summary["by_consistency"].items()))))
    return pairs


def calls_text(report):
    """The cloud calls of a backup, once: each covers all the hosts of its cloud."""
    calls = [c for c in report.get("calls") or [] if isinstance(c, dict) and c.get("provider")]
    if not calls:
        return ""
    parts = [f"{c['provider']}: {_plural(int(c.get('instances') or 0), 'instance')} in {seconds_text(c.get('duration'))}"
             for c in calls]
    return "One call per cloud for all its hosts: " + "; ".join(parts) + "."


def restore_text(report):
    """How to restore any set of a backup, once: (lead, command line with placeholders, follow-up), or None."""
    hint = next((row["restore"] for row in report["hosts"] if isinstance(row.get("restore"), dict)), None)
    if not hint:
        return None
    variables = hint.get("vars") or {}
    command = hint.get("command") or ""
    for key, placeholder in (("target", "HOST"), ("set_id", "SET")):
        if variables.get(key):
            command = command.replace(shlex.quote(f"{key}={variables[key]}"), f"{key}={placeholder}")
    return ("Restore a set with", command, "(the variables of each set are in its row), then again without --check.")


def _target(row):
    return " / ".join(str(v) for v in (row.get("provider"), row.get("platform")) if v)


def _consistency(row):
    return f"{row.get('consistency_requested') or 'n/a'} \N{RIGHTWARDS ARROW} {row.get('consistency') or 'none'}"


def _freeze(row):
    # A freeze window exists only where the freeze helper froze filesystems (AWS Linux).
    return seconds_text(row["freeze_window"]) if isinstance(row.get("freeze_window"), (int, float)) else "n/a"


def _summary_line(report):
    (_hosts, outcome), *rest = totals(report)
    outcome = f"{_plural(report['summary']['hosts'], 'host')}: {outcome.split(': ', 1)[1]}"  # 5 hosts: 2 failed, 3 ok
    return " \N{MIDDLE DOT} ".join([outcome] + [f"{label}: {value}" for label, value in rest])


def text(report):
    """The report as lines of text: a table of a backup's hosts, or one sentence per host of the other runs."""
    kind = report.get("kind", "backup")
    lines = []
    if report.get("error"):  # the run failed as a whole (a target that matches no host)
        lines.append(f"FAILED: {report['error']}")
    if kind == "backup":
        header = ["Host", "Instance", "Cloud / platform", "Status", "Requested", "Achieved", "Set", "Freeze window",
                  "Expiry", "Error"]
        table = [header] + [[str(row.get("host") or ""), str(row.get("instance_id") or ""), _target(row),
                             STATUS_LABEL.get(row["status"], str(row["status"]).upper()),
                             str(row.get("consistency_requested") or ""), str(row.get("consistency") or ""),
                             str(row.get("set_id") or ""), _freeze(row) if row.get("set_id") else "",
                             str(row.get("delete_after") or ""), str(row.get("error") or "")]
                            for row in report["hosts"]]
        widths = [max(len(line[i]) for line in table) for i in range(len(header))]
        lines += ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip() for line in table]
    else:
        for row in report["hosts"]:
            sentence = prune_sentence(row, names=True) if kind == "prune" else restore_sentence(row, kind)
            line = (f"{STATUS_LABEL.get(row['status'], row['status'])}  {row.get('host')} "
                    f"({row.get('instance_id') or 'no instance'}): {sentence}")
            if row.get("error"):
                line += f" Reason: {row['error']}"
            lines.append(line)
    lines.append(_summary_line(report))
    if calls_text(report):
        lines.append(calls_text(report))
    return "\n".join(lines)


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.2rem;color:#1d2329;font-size:14px}
h1{font-size:1.35rem;margin:0 0 .2rem} .meta{color:#555;margin-bottom:.6rem} .meta code,.nw{white-space:nowrap}
dl.totals{display:flex;flex-wrap:wrap;gap:.3rem 1.6rem;margin:.4rem 0} dl.totals div{display:flex;gap:.4rem}
dt{color:#555} dd{margin:0;font-weight:600} p.calls{color:#555;margin:.2rem 0 .8rem}
table{border-collapse:collapse;width:100%} table.hosts{table-layout:fixed}
th,td{border:1px solid #ccd;padding:.3rem .4rem;text-align:left;vertical-align:top;overflow-wrap:break-word}
th{background:#eef1f5;font-size:.85rem} tr.failed td{background:#fdecea} tr.warning td{background:#fff6e0}
td.status{font-weight:600} tr.ok td.status{color:#17692c} tr.failed td.status{color:#a4161a}
tr.warning td.status{color:#8a5a00} td.reason{border-top:none;padding-left:1.2rem}
td.reason b{color:#a4161a} tr.warning td.reason b{color:#8a5a00} small{color:#555;display:block}
code{font-size:.78rem} td table{font-size:.8rem} td table td,td table th{padding:.1rem .3rem}
td table td{overflow-wrap:anywhere}
ul{margin:0;padding:0;list-style:none} li+li{margin-top:.2rem} li code,td.restore code{display:block}
p.error{color:#a4161a;font-weight:600} .none{color:#888}
"""

# (field, heading, width in % of the table) per kind: a fixed layout at 1280 px has room for no more.
COLUMNS = {
    "backup": [("host", "Host / instance", 11), ("target", "Cloud", 6.5), ("status", "Status", 5.5),
               ("consistency", "Requested \N{RIGHTWARDS ARROW} achieved", 8.5), ("set_id", "Set", 11.5),
               ("snapshots", "Snapshots", 17), ("freeze_window", "Freeze window", 6.5), ("start", "Start", 7.5),
               ("end", "End", 7.5), ("delete_after", "Expiry", 7.5), ("restore", "Restore with", 11)],
    "restore": [("host", "Host / instance", 13), ("target", "Cloud", 8), ("status", "Status", 7),
                ("sentence", "What happened", 22), ("volumes", "Volumes", 50)],
    "verify": [("host", "Host / instance", 13), ("target", "Cloud", 8), ("status", "Status", 7),
               ("sentence", "What happened", 24), ("checks", "Checks", 20), ("volumes", "Volumes", 28)],
    "prune": [("host", "Host / instance", 14), ("target", "Cloud", 8), ("status", "Status", 8),
              ("sentence", "What happened", 20), ("sets", "Sets", 50)],
}
LOCK_COLUMN = ("lock", "Lock", 8)  # its room comes from the snapshots' and the restore variables' columns
# A set's last restore test, for the rows that carry one (a verify run, or sets listed with snapshot_set_info).
VERIFICATION_COLUMN = ("verification", "Last restore test", 9)


def _esc(value):
    return html.escape(str(value))


def _na(value):
    return _esc(value) if value not in (None, "", []) else '<span class="none">n/a</span>'


def _small_table(headings, rows):
    head = "".join(f"<th>{_esc(h)}</th>" for h in headings)
    body = "".join("<tr>" + "".join(f"<td>{_na(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(key, row, kind):
    value = row.get(key)
    if key == "host":
        return f"<b>{_esc(row.get('host'))}</b><small>{_na(row.get('instance_id'))}</small>"
    if key == "target":
        return _esc(_target(row))
    if key == "status":
        return _esc(STATUS_LABEL.get(value, str(value).upper()))
    if key == "consistency":
        if kind == "backup":
            return _esc(_consistency(row))
        return _na(value)
    if key == "set_id":
        return f"<code>{_esc(value)}</code>" if value else _na(None)
    if key == "snapshots":
        if not value:
            return _na(None)
        # Device and size stay on one line; the snapshot id goes on the next when the column is narrow.
        return "<ul>" + "".join(
            f'<li><span class="nw">{_esc(device_name(s.get("device")) or "?")}'
            + (f" \N{MIDDLE DOT} {_esc(size_text(s['size_gib']))}" if s.get("size_gib") is not None else "")
            + f"</span> <code>{_esc(s.get('snapshot_id'))}</code></li>" for s in value) + "</ul>"
    if key == "freeze_window":
        return _esc(_freeze(row))
    if key in ("start", "end", "delete_after"):
        if not value:
            return _na(None)
        # Date and time each on one line: a narrow column breaks between them, not inside them.
        return "".join(f'<span class="nw">{_esc(part)}</span> ' for part in time_text(value).split(" ")).strip()
    if key == "lock":
        return _esc(lock_text(value))
    if key == "verification":
        return _esc(verification_text(value))
    if key == "restore":
        if not isinstance(value, dict):
            return _na(None)
        # The playbook and its variables; the whole command line is above the table, once.
        variables = value.get("vars") or {}
        return (f"<small>{_esc(value.get('playbook'))}</small>"
                + "".join(f"<code>-e {_esc(k)}={_esc(v)}</code>" for k, v in variables.items()))
    if key == "sentence":
        return _esc(prune_sentence(row) if kind == "prune" else restore_sentence(row, kind))
    if key == "volumes":
        if not value:
            return _na(None)
        return _small_table(["Device", "Snapshot", "Volume", "Replaced", "Outcome"], [
            (device_name(v.get("device")), v.get("snapshot_id"), v.get("volume_id"), v.get("original_volume_id"),
             v.get("outcome")) if isinstance(v, dict) else (v, None, None, None, None) for v in value])
    if key == "checks":
        if not value:
            return _na(None)
        return _small_table(["Check", "Result"], [
            (c.get("name"), c.get("result")) if isinstance(c, dict) else (c, None) for c in value])
    if key == "sets":
        sets = prune_sets(row)
        return _small_table(["Set", "Action", "Why"], sets) if sets else _na(None)
    return _na(value)


def page(report):
    """The report as one self-contained HTML page (no scripts, no external assets, every value escaped)."""
    kind = report.get("kind", "backup")
    columns = list(COLUMNS[kind])
    if kind == "backup" and any(isinstance(row.get("lock"), dict) for row in report["hosts"]):
        # The lock is shown where the results carry it.
        columns = [(key, label, width - LOCK_COLUMN[2] / 2 if key in ("snapshots", "restore") else width)
                   for key, label, width in columns]
        columns.insert([key for key, _l, _w in columns].index("set_id") + 1, LOCK_COLUMN)
    if any(isinstance(row.get("verification"), dict) for row in report["hosts"]):
        # Where the results carry a set's last restore test; its room comes from the widest column.
        widest = max(columns, key=lambda column: column[2])[0]
        columns = [(key, label, width - VERIFICATION_COLUMN[2] if key == widest else width)
                   for key, label, width in columns]
        columns.insert([key for key, _l, _w in columns].index("status") + 1, VERIFICATION_COLUMN)
    title = report.get("title") or f"appconsistent.snapshots {kind} report"
    meta_keys = [k for k in ("playbook", "run_id", "target", "consistency", "retention", "started", "finished")
                 if report.get(k)]
    meta = " &middot; ".join(f"{_esc(k.replace('_', ' '))}: <code>{_esc(report[k])}</code>" for k in meta_keys)
    if report.get("check_mode"):
        meta += " &middot; <b>check mode: nothing was changed</b>"
    totals_html = "".join(f"<div><dt>{_esc(label)}</dt><dd>{_esc(value)}</dd></div>" for label, value in totals(report))
    calls = calls_text(report)
    restore = restore_text(report)
    colgroup = "".join(f'<col style="width:{width}%">' for _key, _label, width in columns)
    head = "".join(f"<th>{_esc(label)}</th>" for _key, label, _width in columns)
    body = []
    for row in report["hosts"]:
        status, host = _esc(row.get("status")), _esc(row.get("host"))
        cells = "".join(f'<td class="{key}" data-field="{key}">{_cell(key, row, kind)}</td>' for key, _l, _w in columns)
        body.append(f'<tr class="{status}" data-host="{host}">{cells}</tr>')
        if row.get("error"):
            label = "Reason" if row.get("status") == "failed" else "Warning"
            body.append(f'<tr class="{status} reason-row" data-reason-for="{host}"><td class="reason" data-field="error" '
                        f'colspan="{len(columns)}"><b>{label}:</b> {_esc(row["error"])}</td></tr>')
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{_esc(title)}</h1><div class=\"meta\">{meta}</div>"
            + (f"<p class=\"error\" id=\"run-error\">FAILED: {_esc(report['error'])}</p>" if report.get("error") else "")
            + f"<dl class=\"totals\" id=\"totals\">{totals_html}</dl>"
            + (f"<p class=\"calls\" id=\"calls\">{_esc(calls)}</p>" if calls else "")
            + (f"<p class=\"calls\" id=\"restore\">{_esc(restore[0])} <code>{_esc(restore[1])}</code> "
               f"{_esc(restore[2])}</p>" if restore else "")
            + f"<table class=\"hosts\" id=\"hosts\"><colgroup>{colgroup}</colgroup><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></body></html>\n")
