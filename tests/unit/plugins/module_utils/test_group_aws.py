"""AWS Linux groups, initiator controller: the thaw follows every finished freeze, whatever fails in between."""

import json
import threading
import time
import types

import pytest

from ansible_collections.appconsistent.snapshots.plugins.module_utils import group_aws
from ansible_collections.appconsistent.snapshots.plugins.module_utils.group_aws import AwsGroupRun
from ansible_collections.appconsistent.snapshots.plugins.module_utils.group_aws import GroupInputError
from ansible_collections.appconsistent.snapshots.plugins.module_utils.group_aws import Outcome
from ansible_collections.appconsistent.snapshots.plugins.modules.app_consistent_group import argument_spec
from ansible_collections.appconsistent.snapshots.plugins.modules.app_consistent_group import summarize


class FakeRun:
    """Stands in for CommandRun: every instance finishes at once with the helper's report for its action."""

    made = []

    def __init__(self, _client, _document, parameters, comment=None, **_kwargs):
        self.action = "thaw" if " thaw " in parameters["commands"][0] else "freeze"
        self.sent = []
        self.invocations = {}
        FakeRun.made.append(self)

    def send(self, instance_ids):
        self.sent.extend(instance_ids)
        for instance_id in instance_ids:
            self.invocations[instance_id] = {"Status": "Success"}
        return [f"cmd-{self.action}"]

    def poll(self):
        return True

    def wait(self, _timeout):
        return True

    def result(self, instance_id):
        report = {"exit_code": 0, "status": "frozen", "t_frozen": 10.0} if self.action == "freeze" else \
            {"exit_code": 0, "status": "thawed", "t_thawed": 10.5}
        return dict(command_id=f"cmd-{self.action}", status="Success", response_code=0, stdout=json.dumps(report),
                    stderr="")

    def full_stdout(self, _instance_id):
        return ""


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        self.now += 0.01
        return self.now


class YieldingClock(FakeClock):
    """A fake clock whose sleeps also give the run's other threads real time: a loop that polls while those
    threads work must not spend its whole fake wait_timeout before they are scheduled on a loaded machine."""

    def sleep(self, seconds):
        self.now += seconds
        time.sleep(0.001)


def _run(clock=None, **overrides):
    params = {name: spec.get("default") for name, spec in argument_spec().items()}
    params.update(provider="aws", instance_ids=["i-1"], mounts=["/data"])
    params.update(overrides)
    module = types.SimpleNamespace(params=params, check_mode=False, region="us-east-1")
    run = AwsGroupRun(module, sleep=clock.sleep if clock else lambda seconds: None, clock=clock or FakeClock())
    outcome = run.outcomes["i-1"] = Outcome("i-1", params["consistency"])
    outcome.platform = "linux"
    outcome.volumes = [dict(volume_id="vol-0123456789abcdef0", device="/dev/xvdf", boot=False)]
    return run


def test_the_thaw_is_sent_when_the_controller_fails_while_the_instance_is_frozen(monkeypatch):
    FakeRun.made = []
    monkeypatch.setattr(group_aws, "CommandRun", FakeRun)
    run = _run()

    def broken(instance_ids, consistency, pool=None):
        raise RuntimeError("the controller failed while the instance was frozen")

    monkeypatch.setattr(run, "_snapshot_many", broken)
    with pytest.raises(RuntimeError):
        run._linux(["i-1"])
    freeze, thaw = FakeRun.made
    assert (freeze.action, freeze.sent) == ("freeze", ["i-1"])
    assert (thaw.action, thaw.sent) == ("thaw", ["i-1"])


class WaveRun(FakeRun):
    """FakeRun that says when the freeze has gone to more than one wave of instances."""

    second_wave = threading.Event()

    def send(self, instance_ids):
        command_ids = super().send(instance_ids)
        if self.action == "freeze" and len(self.sent) > group_aws.aws_api.SSM_INSTANCE_BATCH:
            WaveRun.second_wave.set()
        return command_ids


def test_the_next_wave_is_frozen_while_the_controller_snapshots_the_one_before(monkeypatch):
    FakeRun.made = []
    WaveRun.second_wave = threading.Event()
    monkeypatch.setattr(group_aws, "CommandRun", WaveRun)
    batch = group_aws.aws_api.SSM_INSTANCE_BATCH
    ids = [f"i-{n:03d}" for n in range(2 * batch)]
    run = _run(instance_ids=ids, clock=YieldingClock())
    for instance_id in ids:
        outcome = run.outcomes[instance_id] = Outcome(instance_id, "application")
        outcome.platform = "linux"
        outcome.volumes = [dict(volume_id="vol-0123456789abcdef0", device="/dev/xvdf", boot=False)]
    overlapped = []
    # One deadline for all the first wave's calls: generous for a loaded machine, yet a run where the
    # second wave never goes out meanwhile still ends within it.
    deadline = time.monotonic() + 30

    def create_set(instance_id, consistency):
        if instance_id in ids[:batch]:  # the first wave's calls: does the second wave go out meanwhile?
            overlapped.append(WaveRun.second_wave.wait(timeout=max(0.0, deadline - time.monotonic())))
        return f"acs-{instance_id}", [dict(snapshot_id=f"snap-{instance_id}", device="/dev/xvdf", state="pending",
                                           tags={})]

    monkeypatch.setattr(run, "_create_set", create_set)
    monkeypatch.setattr(run, "_raise_consistency", lambda confirmed: None)
    monkeypatch.setattr(run, "_tag_devices", lambda instance_ids: None)
    run._linux(ids)
    freeze, thaw = FakeRun.made
    assert sorted(freeze.sent) == ids and sorted(thaw.sent) == ids
    assert len(overlapped) == batch and all(overlapped)
    assert all(run.outcomes[i].snapshots for i in ids)


@pytest.mark.parametrize("label", ["freeze_timeout", "script_timeout"])
def test_timeouts_must_be_positive(label):
    with pytest.raises(GroupInputError, match=label):
        _run(**{label: 0}).validate()


def test_an_error_of_the_windows_part_is_raised_once_the_linux_part_has_thawed(monkeypatch):
    FakeRun.made = []
    monkeypatch.setattr(group_aws, "CommandRun", FakeRun)
    run = _run()
    linux_frozen = threading.Event()
    monkeypatch.setattr(run, "_vss_run", lambda instance_ids: "vss run")

    def windows(vss_run):
        assert vss_run == "vss run"
        linux_frozen.wait(timeout=3)  # fail while the Linux instance is frozen
        raise RuntimeError("the VSS part failed")

    def create_set(instance_id, consistency):
        linux_frozen.set()
        return f"acs-{instance_id}", [dict(snapshot_id="snap-1", device="/dev/xvdf", state="pending", tags={})]

    monkeypatch.setattr(run, "_windows", windows)
    monkeypatch.setattr(run, "_create_set", create_set)
    monkeypatch.setattr(run, "_raise_consistency", lambda confirmed: None)
    monkeypatch.setattr(run, "_tag_devices", lambda instance_ids: None)
    with pytest.raises(RuntimeError, match="VSS part"):
        run._agent_parts(["i-win"], ["i-1"])
    assert linux_frozen.is_set()
    freeze, thaw = FakeRun.made
    assert freeze.sent == thaw.sent == ["i-1"]
    assert run.outcomes["i-1"].snapshots


def test_initiator_instance_without_mounts_is_refused_before_either_part_starts(monkeypatch):
    run = _run(initiator="instance", mounts=["auto"])
    started = []
    monkeypatch.setattr(run, "_vss_run", lambda instance_ids: "vss run")
    monkeypatch.setattr(run, "_windows", started.append)
    monkeypatch.setattr(run, "_linux", started.append)
    with pytest.raises(GroupInputError, match="mounts listed explicitly"):
        run._agent_parts(["i-win"], ["i-1"])
    assert started == []


@pytest.mark.parametrize("on_fallback", ["fail", "warn"])
def test_a_set_missing_a_volume_fails_its_host_whatever_on_fallback_says(on_fallback):
    outcome = Outcome("i-1", "application")
    outcome.status, outcome.consistency = "Success", "crash"
    outcome.fail("IncompleteSet", "the VSS run left 1 of the 2 volumes it was to capture without a snapshot")
    result, warnings = summarize({"i-1": outcome}, "application", on_fallback)
    assert [f["instance_id"] for f in result["failed_instances"]] == ["i-1"] and warnings == []


def test_a_set_that_differs_from_the_volumes_read_before_is_recounted_after_the_thaw(monkeypatch):
    # A volume attached between DescribeInstances and CreateSnapshots: the set is the three snapshots made.
    run = _run()
    written = []
    monkeypatch.setattr(group_aws.aws_api, "create_tags", lambda client, ids, tags: written.append((list(ids), tags)))
    outcome = run.outcomes["i-1"]
    outcome.snapshots = [dict(snapshot_id=f"snap-{n}", device=None, tags={"appconsistent:members": "2"})
                         for n in range(3)]
    run._tag_devices(["i-1"])
    assert written == [(["snap-0", "snap-1", "snap-2"], {"appconsistent:members": "3"})]
    assert {m["tags"]["appconsistent:members"] for m in outcome.snapshots} == {"3"}
    written.clear()
    run._tag_devices(["i-1"])  # a set whose count is right costs no call
    assert written == []
