"""Application against crash consistency on workloads whose crash-consistent copies break, and what quiescing costs.

The lab (``db_workloads.WorkloadLab``): MariaDB with a MyISAM journal beside InnoDB on one volume,
PostgreSQL with its accounts partitioned over two volumes (data directory and a tablespace), all
volumes of one twin AWS instance, written to all the time. Three ways of taking sets:

* ``aws-application``: ``app_consistent_group`` with the database profiles and the freeze helper;
* ``aws-crash-multi-volume``: ``consistency: crash``, one CreateSnapshots call per set (the
  point-in-time multi-volume call, the crash path's best case);
* ``aws-crash-per-volume``: a loop of CreateSnapshot calls, one per volume, ``APPCONSISTENT_DB_VOLUME_GAP``
  seconds apart.

Every set is restored as new volumes and checked with second servers (start, integrity check,
invariants, crash recovery). A latency probe per database times writes and reads before and during
the sets. Figures go to ``build/test-results/db_workloads.json``. ``APPCONSISTENT_DB_WORKLOAD_SETS`` sets
per path (2 in ``make test``, 20 in ``make consistency-proof``); ``APPCONSISTENT_DB_BASELINE`` seconds of
probe alone before each path.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from e2e import db, db_workloads
from e2e.conftest import FilesystemFactory, e2e_unavailable_reason

REASON = e2e_unavailable_reason() or db.unavailable_reason()
pytestmark = [pytest.mark.skipif(REASON is not None, reason=str(REASON)), pytest.mark.timeout(3600)]

ACG = "appconsistent.snapshots.app_consistent_group"
RESTORE = "appconsistent.snapshots.restore_volumes"
SETS = int(os.environ.get("APPCONSISTENT_DB_WORKLOAD_SETS", "2"))
BASELINE = float(os.environ.get("APPCONSISTENT_DB_BASELINE", "10"))
VOLUME_GAP = float(os.environ.get("APPCONSISTENT_DB_VOLUME_GAP", "1.0"))
FREEZE_TIMEOUT = 20
RESULTS_FILE = Path(__file__).resolve().parents[2] / "build" / "test-results" / "db_workloads.json"
FIGURES: dict = {"sets_per_path": SETS, "baseline_seconds": BASELINE, "per_volume_gap_seconds": VOLUME_GAP,
                 "workloads": list(db_workloads.WORKLOADS), "paths": {}}


def write_figures():
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(FIGURES, indent=2, sort_keys=True) + "\n")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    the_lab = db_workloads.WorkloadLab(tmp_path_factory.mktemp("workloads"), FilesystemFactory)
    try:
        the_lab.setup()
        the_lab.start_writers()
        yield the_lab
    finally:
        problems = the_lab.teardown()
        write_figures()
    assert not problems, problems


def baseline(lab) -> tuple:
    """Lets the probe run alone for BASELINE seconds: the interval the sets' latencies are compared with."""
    start = time.monotonic()
    time.sleep(BASELINE)
    return start, time.monotonic()


def take_sets(lab, run_tasks, consistency):
    args = {"provider": "aws", "instance_ids": [lab.aws_instance], "consistency": consistency,
            "exclude_boot_disk": True, "delete_after": "1d"}
    if consistency == "application":
        args.update(pre_script_path=str(lab.prescript), post_script_path=str(lab.postscript),
                    freeze_timeout=FREEZE_TIMEOUT, mounts=lab.mountpoints(), freeze_helper_path=str(lab.helper),
                    initiator="controller")
    tasks = [{"name": "Take the sets", ACG: args, "loop": f"{{{{ range({SETS}) | list }}}}", "register": "sets"}]
    start = time.monotonic()
    run = run_tasks(tasks, lab.twins.endpoints)
    end = time.monotonic()
    entries = [s["results"][0] for s in run["sets"]["results"] if s.get("results")]
    return entries, (start, end)


def restore_sets(lab, run_tasks, entries, consistency) -> list[list[str]]:
    tasks = [{"name": "Restore each set as new volumes",
              RESTORE: {"provider": "aws", "set_id": "{{ item }}", "mode": "volumes", "min_consistency": consistency},
              "loop": [e["set_id"] for e in entries if e.get("set_id")], "register": "restores"}]
    run = run_tasks(tasks, lab.twins.endpoints)
    restores = run["restores"]["results"]
    assert all(not r.get("failed") for r in restores), [r.get("msg") for r in restores if r.get("failed")][:3]
    return [[lab.image_of("aws", m["volume_id"]) for m in r["device_map"]] for r in restores]


def check_and_record(lab, name, image_sets, during, windows=None, freeze=None, base=None) -> dict:
    assert not lab.writer_problems(), lab.writer_problems()
    assert not lab.probe_problems(), lab.probe_problems()
    checks = [db_workloads.check_set(images, lab.public) for images in image_sets]
    figures = {"sets": len(image_sets), "workloads": db_workloads.tally(checks),
               "latency": db_workloads.latency_figures(lab, base, during, freeze or [])}
    if windows:
        quiesce = [w["post-end"] - w["pre-start"] for w in windows]
        figures["quiesce_window_s_p50"] = db.percentile([round(q, 3) for q in quiesce], 50)
        figures["quiesce_window_s_max"] = round(max(quiesce), 3)
    if freeze:
        figures["freeze_window_s_p50"] = db.percentile(freeze, 50)
        figures["freeze_window_s_max"] = max(freeze)
    FIGURES["paths"][name] = figures
    write_figures()
    return figures


def to_monotonic(stamp: float) -> float:
    return stamp - (time.time() - time.monotonic())


def test_application_consistent_sets_keep_every_invariant(lab, run_tasks):
    base = baseline(lab)
    seen = len(lab.windows())
    entries, _run = take_sets(lab, run_tasks, "application")
    made = [e for e in entries if e.get("consistency") == "application"]
    windows = lab.windows()[seen:]
    during = [(to_monotonic(w["pre-start"]), to_monotonic(w["post-end"])) for w in windows]
    freeze = [e["freeze_window"] for e in made]
    # The sets that were made are checked and their figures kept before the verdict on the others.
    figures = check_and_record(lab, "aws-application", restore_sets(lab, run_tasks, made, "application"),
                               during, windows, freeze, base)
    figures["set_errors"] = [e.get("error") for e in entries if e.get("consistency") != "application"]
    write_figures()
    assert len(made) == SETS, figures["set_errors"]
    assert len(windows) == SETS, windows
    for workload, counts in figures["workloads"].items():
        assert counts["passed"] == SETS, (workload, counts)
    # The probe saw the sets: writes were measured inside the quiesce windows.
    for kind, latency in figures["latency"].items():
        assert latency["write"]["ops_during"] > 0, (kind, latency)


def test_crash_consistent_multi_volume_sets_are_measured(lab, run_tasks):
    """One CreateSnapshots call per set: an honest count, not a verdict."""
    base = baseline(lab)
    entries, interval = take_sets(lab, run_tasks, "crash")
    assert [e.get("consistency") for e in entries] == ["crash"] * SETS, [e.get("error") for e in entries][:3]
    figures = check_and_record(lab, "aws-crash-multi-volume", restore_sets(lab, run_tasks, entries, "crash"),
                               [interval], base=base)
    assert all(c["checked"] == SETS for c in figures["workloads"].values()), figures["workloads"]


def test_crash_consistent_per_volume_sets_are_measured(lab):
    """A loop of single-volume calls: the copies of one set are of different instants."""
    base = baseline(lab)
    start = time.monotonic()
    image_sets = db_workloads.per_volume_copies(lab, SETS, VOLUME_GAP)
    figures = check_and_record(lab, "aws-crash-per-volume", image_sets, [(start, time.monotonic())], base=base)
    assert all(c["checked"] == SETS for c in figures["workloads"].values()), figures["workloads"]


def test_the_crash_path_breaks_where_the_application_path_holds(lab):
    """The proof is only a proof if the workloads break crash-consistent copies: with enough sets
    (``make consistency-proof``) each workload must fail at least one of them."""
    paths = FIGURES["paths"]
    if "aws-application" not in paths or SETS < 10:
        pytest.skip("needs the full run: every path, at least 10 sets each")
    for workload in db_workloads.WORKLOADS:
        assert paths["aws-application"]["workloads"][workload]["passed"] == SETS, workload
        crash_failed = sum(paths[p]["workloads"][workload]["checked"] - paths[p]["workloads"][workload]["passed"]
                           for p in ("aws-crash-multi-volume", "aws-crash-per-volume") if p in paths)
        assert crash_failed > 0, (workload, {p: f["workloads"][workload] for p, f in paths.items()})
