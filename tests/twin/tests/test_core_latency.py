"""The latency model: zero for the fast suite, realistic defaults, overrides."""

import pytest

from twin.core.latency import LatencyModel, TRANSITION_KINDS


def test_zero_profile_makes_everything_instant():
    model = LatencyModel("zero")
    assert model.api("aws", "CreateSnapshots") == 0
    assert model.delivery("aws") == 0 and model.report("alicloud") == 0
    assert all(model.transition(kind) == 0 for kind in TRANSITION_KINDS)
    assert model.sleep_api("aws", "DescribeInstances") == 0


def test_realistic_profile_orders_costs_sensibly():
    model = LatencyModel("realistic")
    api = model.api("aws", "DescribeInstances")
    assert 0 < api < model.delivery("aws") < model.transition("snapshot_complete")
    for kind in ("snapshot_complete", "volume_create", "volume_attach", "volume_detach", "instance_stop",
                 "instance_start", "appconsistent_tag_lag", "snapshot_group_complete"):
        assert model.transition(kind) > 0, kind
    # the VSS pause is documented as at most ten seconds
    assert model.transition("vss_freeze") <= 10


def test_overrides_scale_and_provider_specific_actions():
    model = LatencyModel({"profile": "zero", "api": {"CreateSnapshots": 0.4, "alicloud:RunCommand": 0.2},
                          "delivery": {"aws": 1.5}, "transitions": {"snapshot_complete": 3}})
    assert model.api("aws", "CreateSnapshots") == pytest.approx(0.4)
    assert model.api("alicloud", "RunCommand") == pytest.approx(0.2)
    assert model.api("aws", "RunCommand") == 0
    assert model.delivery("aws") == pytest.approx(1.5) and model.delivery("alicloud") == 0
    assert model.transition("snapshot_complete") == 3
    scaled = LatencyModel({"profile": "realistic", "scale": 0.5})
    assert scaled.transition("instance_stop") == pytest.approx(LatencyModel("realistic").transition("instance_stop") / 2)


def test_update_at_runtime_and_bad_specs():
    model = LatencyModel("zero")
    model.update("realistic")
    assert model.api("aws", "SendCommand") > 0
    assert model.describe()["spec"] == {"profile": "realistic"}
    with pytest.raises(ValueError):
        model.update("glacial")
    with pytest.raises(ValueError):
        model.update(42)
