"""AWS Linux groups, initiator controller: the thaw follows every finished freeze, whatever fails in between."""

import json
import types

import pytest

from ansible_collections.appconsistent.snapshots.plugins.module_utils import group_aws
from ansible_collections.appconsistent.snapshots.plugins.module_utils.group_aws import AwsGroupRun
from ansible_collections.appconsistent.snapshots.plugins.module_utils.group_aws import GroupInputError
from ansible_collections.appconsistent.snapshots.plugins.module_utils.group_aws import Outcome
from ansible_collections.appconsistent.snapshots.plugins.modules.app_consistent_group import argument_spec


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


def _run(**overrides):
    params = {name: spec.get("default") for name, spec in argument_spec().items()}
    params.update(provider="aws", instance_ids=["i-1"], mounts=["/data"])
    params.update(overrides)
    module = types.SimpleNamespace(params=params, check_mode=False, region="us-east-1")
    run = AwsGroupRun(module, sleep=lambda seconds: None, clock=FakeClock())
    outcome = run.outcomes["i-1"] = Outcome("i-1", params["consistency"])
    outcome.platform = "linux"
    outcome.volumes = [dict(volume_id="vol-0123456789abcdef0", device="/dev/xvdf", boot=False)]
    return run


def test_the_thaw_is_sent_when_the_controller_fails_while_the_instance_is_frozen(monkeypatch):
    FakeRun.made = []
    monkeypatch.setattr(group_aws, "CommandRun", FakeRun)
    run = _run()

    def broken(instance_ids, consistency):
        raise RuntimeError("the controller failed while the instance was frozen")

    monkeypatch.setattr(run, "_snapshot_many", broken)
    with pytest.raises(RuntimeError):
        run._linux(["i-1"])
    freeze, thaw = FakeRun.made
    assert (freeze.action, freeze.sent) == ("freeze", ["i-1"])
    assert (thaw.action, thaw.sent) == ("thaw", ["i-1"])


@pytest.mark.parametrize("label", ["freeze_timeout", "script_timeout"])
def test_timeouts_must_be_positive(label):
    with pytest.raises(GroupInputError, match=label):
        _run(**{label: 0}).validate()
