"""Proof of consistency with real databases.

MariaDB and PostgreSQL keep their data on loop-mounted filesystems that are the volumes of a local
twin instance (ext4 for MariaDB, XFS for PostgreSQL). A writer per database runs transactions
that keep two invariants (a constant total over transfers, a sequence without gaps) while sets
are taken through each path: AWS Linux with the controller and with the instance as initiator,
and the Alibaba Cloud plug-in. Every set is restored with ``restore_volumes`` (``mode: volumes``, the sets of
a path in one ``set_ids`` task), and a second server started on each restored volume must come up, pass its
integrity check (``mariadb-check``, ``pg_amcheck``) and find both invariants intact.

The same is done with ``consistency: crash`` (no scripts, no freeze) and only counted: how many
restored copies needed crash recovery, how many failed a check. The figures are written to
``build/test-results/db_consistency.json``.

Refusals (``/``, a path that is not a mount point) and nested mounts are covered by
``test_freeze_helper.py``; crash safety with the database lock by ``test_db_crash_safety.py``.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from e2e import db
from e2e.conftest import FilesystemFactory, e2e_unavailable_reason

REASON = e2e_unavailable_reason() or db.unavailable_reason()
# Twenty sets per path, each restored and checked by a second server, take longer than one
# ordinary test may.
pytestmark = [pytest.mark.skipif(REASON is not None, reason=str(REASON)), pytest.mark.timeout(1800)]

ACG = "appconsistent.snapshots.app_consistent_group"
RESTORE = "appconsistent.snapshots.restore_volumes"
# Sets per path; the issue asks for at least 20. Overridable for a quick local run.
SETS = int(os.environ.get("APPCONSISTENT_DB_SETS", "20"))
# Crash-consistent sets per path: a measurement to compare with, not a proof.
CRASH_SETS = int(os.environ.get("APPCONSISTENT_DB_CRASH_SETS", str(SETS)))
FREEZE_TIMEOUT = 20
RESULTS_FILE = Path(__file__).resolve().parents[2] / "build" / "test-results" / "db_consistency.json"
FIGURES: dict = {"sets_per_path": SETS, "crash_sets_per_path": CRASH_SETS, "paths": {}}


def write_figures():
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(FIGURES, indent=2, sort_keys=True) + "\n")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    the_lab = db.DbLab(tmp_path_factory.mktemp("dblab"), FilesystemFactory)
    try:
        the_lab.setup()
        the_lab.start_writers()
        yield the_lab
    finally:
        problems = the_lab.teardown()
        write_figures()
        summary(FIGURES)
    assert not problems, problems


def summary(figures):
    lines = [f"database consistency: {figures['sets_per_path']} application-consistent and "
             f"{figures['crash_sets_per_path']} crash-consistent sets per path"]
    for name, path in sorted(figures["paths"].items()):
        lines.append(f"  {name}: sets {path['sets']}, restored {path['restored']}, checks passed {path['passed']}, "
                     f"failed {path['failed']}, crash recovery {path['recovery']}, "
                     f"freeze window p50 {path.get('freeze_window_p50')} s p99 {path.get('freeze_window_p99')} s")
    print("\n".join(lines))  # shown with -s, next to the JSON file


def group_args(lab, provider, consistency, initiator=None):
    args = {"provider": provider, "instance_ids": [lab.aws_instance if provider == "aws" else db.ALI_INSTANCE_ID],
            "consistency": consistency, "exclude_boot_disk": True, "delete_after": "1d"}
    if consistency == "application":
        args.update(pre_script_path=str(lab.prescript), post_script_path=str(lab.postscript),
                    freeze_timeout=FREEZE_TIMEOUT)
    if provider == "aws" and consistency == "application":
        args.update(mounts=lab.mountpoints(), freeze_helper_path=str(lab.helper), initiator=initiator)
    if provider == "alicloud":
        args.update(ram_role_name=db.ROLE_NAME)
    return args


def take_and_restore(lab, run_tasks, provider, consistency, initiator=None, count=SETS):
    """One playbook: ``count`` sets in a loop while the writers run, then all of them restored (mode volumes).

    The sets are all of one instance; ``mode: volumes`` replaces nothing, so one ``set_ids`` task restores them
    together, each with its own checks, instead of one module run per set.
    """
    set_ids = "{{ sets.results | map(attribute='results', default=[]) | flatten | map(attribute='set_id', default='') | select | list }}"
    tasks = [
        {"name": "Take the sets", ACG: group_args(lab, provider, consistency, initiator),
         "loop": f"{{{{ range({count}) | list }}}}", "register": "sets"},
        {"name": "Restore every set as new volumes",
         RESTORE: {"provider": provider, "set_ids": set_ids, "mode": "volumes", "min_consistency": consistency},
         "register": "restores"},
    ]
    before = lab.committed()
    run = run_tasks(tasks, lab.twins.endpoints)
    after = lab.committed()
    assert not lab.writer_problems(), lab.writer_problems()
    for kind in before:  # the sets were taken while the databases were being written to
        assert after[kind] > before[kind], (kind, before, after)
    restores = run["restores"].get("restores")
    assert restores is not None, run["restores"].get("msg")
    return run["sets"]["results"], restores


def freeze_windows(lab, provider, entries):
    if provider == "aws":
        return [e["freeze_window"] for e in entries if e.get("freeze_window") is not None]
    windows = []
    for entry in entries:
        if not entry.get("invocation_id"):  # crash-consistent sets run no plug-in, so nothing was frozen
            continue
        steps = dict(lab.twins.alicloud.trace(entry["invocation_id"], entry["instance_id"]))
        thawed = steps.get("thawed", steps.get("auto-thawed"))
        if "frozen" in steps and thawed is not None:
            windows.append(round(thawed - steps["frozen"], 3))
    return windows


def check_path(lab, provider, sets, restores):
    """Checks every restored volume with a second server; returns the per-set findings."""
    entries = [s["results"][0] for s in sets if s.get("results")]
    images = []
    for restore in restores:
        if restore.get("skipped") or restore.get("failed"):
            continue
        for member in restore["device_map"]:
            images.append((restore["set"]["set_id"], lab.image_of(provider, member["volume_id"])))
    workdir = lab.public
    with ThreadPoolExecutor(max_workers=2) as pool:
        checks = list(pool.map(lambda item: (item[0], db.check_restored_image(item[1], workdir)
                                             if item[1] else db.CheckResult(errors=["no image"])), images))
    return entries, checks


def record(name, lab, provider, sets, restores, entries, checks):
    windows = freeze_windows(lab, provider, entries)
    by_kind: dict = {}
    for _set_id, check in checks:
        by_kind.setdefault(check.kind or "unknown", []).append(check)
    FIGURES["paths"][name] = {
        "sets": len(entries), "restored": sum(1 for r in restores if r.get("device_map") and not r.get("failed")),
        "volumes_checked": len(checks),
        "passed": sum(1 for _s, c in checks if c.passed), "failed": sum(1 for _s, c in checks if not c.passed),
        "recovery": sum(1 for _s, c in checks if c.recovery),
        "by_database": {kind: {"checked": len(items), "passed": sum(1 for c in items if c.passed),
                               "failed_check": sum(1 for c in items if not c.passed),
                               "crash_recovery": sum(1 for c in items if c.recovery),
                               "not_started": sum(1 for c in items if not c.started),
                               "integrity_failed": sum(1 for c in items if c.started and not c.integrity_ok),
                               "total_wrong": sum(1 for c in items if c.total is not None and c.total != db.TOTAL),
                               "gaps": sum(1 for c in items if c.gap)}
                        for kind, items in by_kind.items()},
        "consistency": sorted({e.get("consistency") for e in entries}),
        "freeze_window_p50": db.percentile(windows, 50), "freeze_window_p99": db.percentile(windows, 99),
        "freeze_window_max": max(windows) if windows else None,
        "failures": [dict(c.to_dict(), set_id=s) for s, c in checks if not c.passed][:10],
        "set_errors": [e.get("error") for e in entries if e.get("error")][:10],
    }
    write_figures()
    return FIGURES["paths"][name]


APPLICATION_PATHS = [("aws-controller", "aws", "controller"), ("aws-instance", "aws", "instance"),
                     ("alicloud-plugin", "alicloud", None)]


@pytest.mark.parametrize("name, provider, initiator", APPLICATION_PATHS, ids=[p[0] for p in APPLICATION_PATHS])
def test_application_consistent_sets_restore_to_intact_databases(lab, run_tasks, name, provider, initiator):
    sets, restores = take_and_restore(lab, run_tasks, provider, "application", initiator)
    entries, checks = check_path(lab, provider, sets, restores)
    figures = record(name, lab, provider, sets, restores, entries, checks)
    assert len(entries) == SETS
    assert [e["consistency"] for e in entries] == ["application"] * SETS, figures["set_errors"]
    assert all(not r.get("failed") for r in restores), [r.get("msg") for r in restores if r.get("failed")]
    assert sorted(c.kind for _s, c in checks) == sorted(list(lab.databases) * SETS)
    failures = [dict(c.to_dict(), set_id=s) for s, c in checks if not c.passed]
    assert not failures, failures[:3]
    # Each set is a different moment of a database that kept changing.
    for kind in lab.databases:
        tops = [c.seq_max for _s, c in checks if c.kind == kind]
        assert len(set(tops)) > 1, (kind, tops)
    windows = freeze_windows(lab, provider, entries)
    assert len(windows) == SETS and all(0 < w < FREEZE_TIMEOUT for w in windows), windows


CRASH_PATHS = [("aws-crash", "aws"), ("alicloud-crash", "alicloud")]


@pytest.mark.parametrize("name, provider", CRASH_PATHS, ids=[p[0] for p in CRASH_PATHS])
def test_crash_consistent_sets_are_measured(lab, run_tasks, name, provider):
    """No scripts, no freeze: an honest count of what a crash-consistent set gives, not a verdict."""
    sets, restores = take_and_restore(lab, run_tasks, provider, "crash", count=CRASH_SETS)
    entries, checks = check_path(lab, provider, sets, restores)
    figures = record(name, lab, provider, sets, restores, entries, checks)
    assert [e["consistency"] for e in entries] == ["crash"] * CRASH_SETS, figures["set_errors"]
    assert all(not r.get("failed") for r in restores), [r.get("msg") for r in restores if r.get("failed")]
    # Every restored volume was looked at; what the second server found is the measurement.
    assert len(checks) == CRASH_SETS * len(lab.databases)
    assert all(c.kind in lab.databases for _s, c in checks), [c.to_dict() for _s, c in checks if not c.kind][:3]
