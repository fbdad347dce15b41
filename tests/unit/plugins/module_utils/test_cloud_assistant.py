"""InvocationRun: StopInvocation for the instances a Cloud Assistant run gives up on, and what it says it stopped."""

from ansible_collections.appconsistent.snapshots.plugins.module_utils.alicloud import AlibabaCloudError
from ansible_collections.appconsistent.snapshots.plugins.module_utils.cloud_assistant import InvocationRun


class FakeApi:
    """Per-instance InvocationStatus; StopInvocation behaves as documented: Pending is cancelled, a started run goes on."""

    def __init__(self, statuses, refuse=None):
        self.statuses = dict(statuses)
        self.refuse = refuse
        self.stops = []  # (invoke id, instance ids)

    def run_command(self, instance_ids, command, command_type="RunShellScript", timeout=60, name=None):
        return dict(command_id="c-1", invoke_id="t-1")

    def describe_invocation_results(self, invoke_id):
        return [dict(InstanceId=i, InvocationStatus=s) for i, s in self.statuses.items()]

    def stop_invocation(self, invoke_id, instance_ids):
        if self.refuse:
            raise AlibabaCloudError("StopInvocation", self.refuse, "The operation is not permitted.")
        self.stops.append((invoke_id, list(instance_ids)))
        for instance_id in instance_ids:
            if self.statuses[instance_id] == "Pending":
                self.statuses[instance_id] = "Cancelled"


def _run(api, ids):
    run = InvocationRun(api, "true", sleep=lambda seconds: None)
    run.send(ids)
    run.poll()
    return run


def test_stop_cancels_what_has_not_started_and_says_what_goes_on():
    api = FakeApi({"i-wait": "Pending", "i-busy": "Running", "i-done": "Success"})
    run = _run(api, ["i-wait", "i-busy", "i-done"])

    stopped = run.stop()

    # Only the runs that had not ended are named in StopInvocation.
    assert api.stops == [("t-1", ["i-wait", "i-busy"])]
    assert stopped["i-wait"] == "it had not started and StopInvocation cancelled it"
    assert "goes on to its end" in stopped["i-busy"] and "(Running)" in stopped["i-busy"]
    assert "i-done" not in stopped
    assert run.result("i-wait")["status"] == "Cancelled" and run.result("i-wait")["stopped"] == stopped["i-wait"]
    assert run.result("i-done")["stopped"] is None


def test_stop_sends_at_most_50_instances_a_call():
    ids = [f"i-{n:03d}" for n in range(120)]
    api = FakeApi({i: "Pending" for i in ids})
    run = _run(api, ids)  # one RunCommand of 100 and one of 20

    run.stop()

    assert [len(batch) for _invoke_id, batch in api.stops] == [50, 50, 20]
    assert all(run.result(i)["status"] == "Cancelled" for i in ids)


def test_a_refused_stop_is_reported_per_instance():
    api = FakeApi({"i-wait": "Pending"}, refuse="Operation.Forbidden")
    run = _run(api, ["i-wait"])

    stopped = run.stop(["i-wait"])

    assert stopped == {"i-wait": "it could not be stopped (Operation.Forbidden): The operation is not permitted."}
    assert run.result("i-wait")["status"] == "Pending"
