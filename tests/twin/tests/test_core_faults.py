"""Fault injection: counted and rate-based API errors, per-instance faults."""

from types import SimpleNamespace

import pytest

from twin.core.faults import Faults


def test_no_faults_by_default():
    faults = Faults()
    assert all(faults.api_error("aws", "CreateSnapshots") is None for _attempt in range(200))


def test_next_n_calls_fail_then_recover():
    faults = Faults({"api_errors": [{"action": "CreateSnapshots", "code": "SnapshotCreationPerVolumeRateExceeded", "count": 2}]})
    assert faults.api_error("aws", "DescribeSnapshots") is None
    assert faults.api_error("aws", "CreateSnapshots") == "SnapshotCreationPerVolumeRateExceeded"
    assert faults.api_error("aws", "CreateSnapshots") == "SnapshotCreationPerVolumeRateExceeded"
    assert faults.api_error("aws", "CreateSnapshots") is None
    assert faults.describe()["api_errors"] == []


def test_rate_is_roughly_honoured_and_seeded():
    spec = {"api_errors": [{"provider": "alicloud", "action": "*", "rate": 0.3}]}
    first = Faults(spec, seed=7)
    second = Faults(spec, seed=7)
    outcomes = [first.api_error("alicloud", "RunCommand") for _attempt in range(1000)]
    assert outcomes == [second.api_error("alicloud", "RunCommand") for _attempt in range(1000)]
    hits = [o for o in outcomes if o]
    assert set(hits) == {"Throttling.User"}
    assert 200 < len(hits) < 400
    assert all(first.api_error("aws", "RunCommand") is None for _attempt in range(100))


def test_throttle_rate_shorthand_uses_provider_code():
    faults = Faults({"throttle_rate": 1.0})
    assert faults.api_error("aws", "DescribeVolumes") == "RequestLimitExceeded"
    assert faults.api_error("alicloud", "DescribeDisks") == "Throttling.User"
    faults.update({"throttle_rate": None})
    assert faults.api_error("aws", "DescribeVolumes") is None


def test_per_instance_faults_merge_fleet_and_runtime():
    inst = SimpleNamespace(id="i-1", name="web-1", faults={"vss_writer_failure": True, "thaw_timeout": False})
    faults = Faults()
    assert faults.for_instance(inst) == {"vss_writer_failure": True, "thaw_timeout": False}
    faults.update({"instances": {"web-1": {"thaw_timeout": True}}})
    faults.update({"instances": {"i-1": {"vss_writer_failure": False}}})
    assert faults.for_instance(inst) == {"vss_writer_failure": False, "thaw_timeout": True}
    faults.update({"instances": {"web-1": None, "i-1": None}})
    assert faults.for_instance(inst)["thaw_timeout"] is False
    faults.reset()
    assert faults.describe() == {"api_errors": []}


def test_invalid_specs_are_rejected():
    with pytest.raises(ValueError):
        Faults({"api_errors": [{"code": "X"}]})
    with pytest.raises(ValueError):
        Faults().update(["not", "a", "mapping"])
