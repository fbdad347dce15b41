"""AWS offline with mounts: a set is offline only if it was taken before the instance's remount watchdog could fire."""

import json
import types

from ansible_collections.appconsistent.snapshots.plugins.module_utils import group_aws
from ansible_collections.appconsistent.snapshots.plugins.module_utils.group_aws import AwsGroupRun
from ansible_collections.appconsistent.snapshots.plugins.module_utils.group_aws import Outcome
from ansible_collections.appconsistent.snapshots.plugins.modules.app_consistent_group import argument_spec


class Clock:
    """The controller's clock; sleeping moves it on."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += max(seconds, 0.01)


class AgentRun:
    """Stands in for CommandRun: each instance's unmount ends at its own instant; the remount answers remount_code."""

    clock = None
    unmounted_at = {}
    remount_code = {}
    cancelled = []

    def __init__(self, _client, _document, parameters, comment=None, **_kwargs):
        self.action = "unmount" if "report unmount" in parameters["commands"][0] else "remount"
        self.sent = []
        self.invocations = {}

    def send(self, instance_ids):
        self.sent.extend(instance_ids)
        return [f"cmd-{self.action}"]

    def _ended(self, instance_id):
        return self.action == "remount" or AgentRun.unmounted_at.get(instance_id, 0.0) <= AgentRun.clock.now

    def poll(self):
        for instance_id in self.sent:
            if self._ended(instance_id):
                self.invocations[instance_id] = {"Status": "Success"}
        return all(self._ended(i) for i in self.sent)

    def wait(self, timeout):
        start = AgentRun.clock.now
        while not self.poll() and AgentRun.clock.now - start < timeout:
            AgentRun.clock.sleep(1.0)
        return self.poll()

    def result(self, instance_id):
        if instance_id not in self.invocations:
            return dict(command_id="cmd", status="InProgress", response_code=None, stdout="", stderr="")
        if self.action == "unmount":
            report = {"action": "unmount", "exit_code": 0, "message": "unmounted: /data", "t": 100.0}
        else:
            code = AgentRun.remount_code.get(instance_id, 0)
            report = {"action": "remount", "exit_code": code, "t": 160.0,
                      "message": "mounted again" if code == 0 else "nothing of this run is unmounted"}
        return dict(command_id=f"cmd-{self.action}", status="Success", response_code=report["exit_code"],
                    stdout=json.dumps(report), stderr="")

    def cancel(self, instance_ids):
        AgentRun.cancelled.extend(instance_ids)
        return {}

    def full_stdout(self, _instance_id):
        return ""


def _offline_run(monkeypatch, instance_ids, call_seconds=0.2):
    clock = AgentRun.clock = Clock()
    AgentRun.cancelled = []
    monkeypatch.setattr(group_aws, "CommandRun", AgentRun)
    params = {name: spec.get("default") for name, spec in argument_spec().items()}
    params.update(provider="aws", instance_ids=instance_ids, consistency="offline", mounts=["/data"],
                  disk_ids=["vol-0123456789abcdef0"], freeze_timeout=30)
    module = types.SimpleNamespace(params=params, check_mode=False, region="us-east-1")
    run = AwsGroupRun(module, sleep=clock.sleep, clock=clock)
    for instance_id in instance_ids:
        outcome = run.outcomes[instance_id] = Outcome(instance_id, "offline")
        outcome.platform = "linux"
        outcome.volumes = [dict(volume_id="vol-0123456789abcdef0", device="/dev/xvdf", boot=False)]
    calls = []  # (instance id, level written at creation, controller clock when the call was made)

    def create_set(instance_id, consistency):
        calls.append((instance_id, consistency, clock.now))
        clock.now += call_seconds
        tags = {"appconsistent:consistency": consistency}
        return f"acs-{instance_id}", [dict(snapshot_id=f"snap-{instance_id}", device="/dev/xvdf", state="pending",
                                           tags=tags)]

    raised = {}

    def raise_consistency(confirmed):
        for level, ids in confirmed.items():
            for instance_id in ids:
                raised[instance_id] = level
                for member in run.outcomes[instance_id].snapshots:
                    member["tags"]["appconsistent:consistency"] = level

    monkeypatch.setattr(run, "_create_set", create_set)
    monkeypatch.setattr(run, "_raise_consistency", raise_consistency)
    monkeypatch.setattr(run, "_tag_devices", lambda instance_ids: None)
    return run, calls, raised


def _labels(run, instance_id):
    return {m["tags"]["appconsistent:consistency"] for m in run.outcomes[instance_id].snapshots}


def test_an_instance_is_snapshotted_before_its_watchdog_not_after_the_slowest_of_its_batch(monkeypatch):
    AgentRun.unmounted_at = {"i-fast": 0.0, "i-slow": 70.0}  # i-slow reports after the watchdogs' 60 s
    AgentRun.remount_code = {"i-fast": 0, "i-slow": 205}
    run, calls, raised = _offline_run(monkeypatch, ["i-fast", "i-slow"])
    run._offline_unmounted(["i-fast", "i-slow"])
    # No call for an instance whose watchdog (60 s after the unmount was sent) may have remounted it.
    assert all(at < 55 for _i, _level, at in calls), calls  # 60 s, less a margin for the call itself
    assert [i for i, _level, _at in calls] == ["i-fast"]
    fast, slow = run.outcomes["i-fast"], run.outcomes["i-slow"]
    assert fast.consistency == "offline" and _labels(run, "i-fast") == {"offline"} and raised == {"i-fast": "offline"}
    assert slow.snapshots == [] and slow.consistency == "none" and slow.error["code"] == "WaitTimeout"
    assert AgentRun.cancelled == ["i-slow"]  # its unmount, should it arrive now, must not run after the remount


def test_a_remount_answered_205_means_the_set_is_not_offline(monkeypatch):
    AgentRun.unmounted_at = {"i-1": 0.0}
    AgentRun.remount_code = {"i-1": 205}  # the watchdog had already mounted the filesystems again
    run, calls, raised = _offline_run(monkeypatch, ["i-1"])
    run._offline_unmounted(["i-1"])
    outcome = run.outcomes["i-1"]
    assert [level for _i, level, _at in calls] == ["crash"]  # written crash, raised only on evidence
    assert outcome.consistency == "crash" and _labels(run, "i-1") == {"crash"} and raised == {}
    assert outcome.error["code"] == "RemountedByWatchdog"
    assert "labelled crash" in outcome.error["message"]


def test_a_snapshot_call_returning_after_the_deadline_is_not_offline(monkeypatch):
    AgentRun.unmounted_at = {"i-1": 0.0}
    AgentRun.remount_code = {"i-1": 0}
    run, calls, raised = _offline_run(monkeypatch, ["i-1"], call_seconds=58.0)  # a slow, retried CreateSnapshots
    run._offline_unmounted(["i-1"])
    outcome = run.outcomes["i-1"]
    assert len(calls) == 1
    assert outcome.consistency == "crash" and _labels(run, "i-1") == {"crash"} and raised == {}
    assert outcome.error["code"] == "UnmountExpired"
