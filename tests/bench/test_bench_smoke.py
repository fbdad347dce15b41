"""A tiny run of the benchmarks, so that `make bench` keeps working: no figure is judged here."""

import json

import pytest

from bench import runner

SIZE = 3
RUNS = 3


@pytest.mark.timeout(1800)
def test_bench_runs_end_to_end_and_writes_its_results(tmp_path):
    out = tmp_path / "bench"
    args = runner.parse_args(["--out", str(out), "--profile", "zero", "--limits", "published", "--fleet-sizes", str(SIZE),
                              "--baseline-max", str(SIZE), "--freeze-runs", str(RUNS), "--freeze-batch-alicloud", str(RUNS)])
    runner.run(args)

    report = json.loads((out / "results.json").read_text())
    (entry,) = report["fleet"]["sizes"]
    collection = entry["collection"]
    assert sum(collection["consistency"].values()) == SIZE
    assert set(collection["consistency"]) == {"application"}
    assert collection["api_calls"]["by_operation"]["aws"]["CreateSnapshots"] >= 1
    assert collection["cpu_s"] > 0 and collection["peak_rss_mib"] > 0
    # the measured part of the run ends before the bench saves the results
    assert 0 < collection["wall_s"] < collection["play_wall_s"]
    # Within the published limits: the Linux freeze windows, no throttled answer, and the floor the run reported.
    limits = collection["limits"]
    assert limits["throttled"] == limits["throttled_while_frozen"] == 0
    assert 0 <= limits["freeze_p50_s"] <= limits["freeze_p99_s"] <= limits["freeze_max_s"]
    assert limits["rate_floor_s"] == 0
    # The operators' way: one snapshot per volume, one call each.
    assert entry["baseline_ec2_snapshot"]["snapshots"] == 2 * SIZE
    assert entry["baseline_ec2_snapshot"]["api_calls"]["by_operation"]["aws"]["CreateSnapshot"] == 2 * SIZE
    assert sum(entry["baseline_per_host"]["consistency"].values()) == SIZE
    verdict = report["fleet"]["verdict"]
    assert verdict["baseline_extrapolated"] is False and verdict["n"] == SIZE

    assert set(report["freeze"]) == {"aws_controller", "aws_instance", "alicloud_plugin"}
    # The AWS paths run one instance per call; the Alibaba plug-in runs share one call.
    assert {name: path["instances_per_call"] for name, path in report["freeze"].items()} == {
        "aws_controller": 1, "aws_instance": 1, "alicloud_plugin": RUNS}
    for path in report["freeze"].values():
        assert path["runs"] == RUNS
        assert 0 <= path["p50_s"] <= path["p99_s"] <= path["max_s"]

    restore = report["restore"]
    assert restore["volumes_1"]["api_calls"]["by_operation"]["aws"]["CreateVolume"] == 1
    assert restore["volumes_8"]["api_calls"]["by_operation"]["aws"]["CreateVolume"] == 8

    text = (out / "summary.md").read_text()
    for heading in ("## Fleet backup", "Within the account's request limits", "## Freeze window on Linux", "## Restore"):
        assert heading in text


@pytest.mark.timeout(900)
def test_prune_restore_many_and_copy_many_scenarios_run_end_to_end(tmp_path):
    out = tmp_path / "bench"
    args = runner.parse_args(["--out", str(out), "--profile", "zero", "--limits", "published", "--scenarios", "prune",
                              "restore-many", "copy-many", "--prune-sizes", "8", "--compare-limits",
                              "--restore-instances", "2", "--copy-sets", "3"])
    runner.run(args)

    report = json.loads((out / "results.json").read_text())
    prune = report["prune"]
    assert prune["fixed_snapshots"] == 20
    (entry,) = prune["sizes"]
    for key in ("published", "none", "none, raised"):
        measured = entry[key]
        assert measured["snapshots"] == measured["deleted_snapshots"] == 8, measured
        assert measured["failed_sets"] == 0 and measured["throttled"] == 0
    assert entry["published"]["api_pacing"]["calls"]["DeleteSnapshot"] == 8
    # within the bucket: the floor is the fixed part alone
    assert entry["published"]["floor_s"] == round(prune["fixed_wall_s"], 1)
    many = report["restore_many"]
    assert many["instances"] == 2 and many["failed"] == 0 and many["one_task"] is True
    assert many["api_calls"]["aws"]["StartInstances"] == 2
    copies = report["copy_many"]
    assert (copies["sets"], copies["copies"], copies["complete_sets"], copies["failed"]) == (3, 6, 3, 0)
    assert copies["api_calls"]["aws"]["CopySnapshot"] == 4  # the two sets after the first, two snapshots each
    text = (out / "summary.md").read_text()
    assert "## Prune" in text and "## Restore of many instances in one task" in text
    assert "## Copy of many sets in one task" in text
