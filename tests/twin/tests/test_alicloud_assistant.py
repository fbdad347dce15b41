"""Cloud Assistant of the Alibaba ali through the SDK: RunCommand, invocation statuses, output, agent status."""

from __future__ import annotations

import base64
import os
import time

import pytest
from alibabacloud_ecs20140526 import models as m
from alibabacloud_tea_openapi.exceptions import ClientException

from twin.alicloud.testing import decoded_output, run_command, wait_results


def inst(name, **extra):
    out = {"provider": "alicloud", "name": name, "role": "AppSnapshotRole",
           "volumes": [{"device": "/dev/xvda", "size": 20, "type": "cloud_essd"}]}
    out.update(extra)
    return out


@pytest.fixture
def ali(start_twin):
    return start_twin({"instances": [
        inst("local-1", execution="local"),
        inst("sim-1", faults={"command_exit_code": 3, "command_output": "simulated output"}),
        inst("sim-ok"),
        inst("win-1", platform="windows"),
        inst("gone", agent={"status": "not_installed"}),
        inst("lost", agent={"status": "connection_lost"}),
        inst("off", state="stopped"),
    ]})


def test_run_shell_script_really_runs_on_a_local_instance(ali, tmp_path):
    client = ali.client()
    iid = ali.instances["local-1"]
    marker = tmp_path / "ran-here"
    script = f'echo "hello from $TWIN_INSTANCE_ID"; echo "$TWIN_PROVIDER" > {marker}; echo oops >&2'
    invoke_id = run_command(client, ali.region, [iid], script)
    (result,) = wait_results(client, ali.region, invoke_id)
    assert (result.invocation_status, result.invoke_record_status, result.exit_code) == ("Success", "Finished", 0)
    # Output is Base64 by default, plain text on request.
    assert decoded_output(result) == f"hello from {iid}\noops\n"
    assert marker.read_text() == "alicloud\n"
    (plain,) = wait_results(client, ali.region, invoke_id, encoding="PlainText")
    assert plain.output == f"hello from {iid}\noops\n"


def test_special_characters_survive_signing_and_transport(ali):
    client = ali.client()
    script = "printf '%s\\n' 'a+b=c&d' \"ü ~*%20\" 'x,y;z'"
    invoke_id = run_command(client, ali.region, [ali.instances["local-1"]], script, description="spaces & + = ü")
    (result,) = wait_results(client, ali.region, invoke_id)
    assert decoded_output(result) == "a+b=c&d\nü ~*%20\nx,y;z\n"


def test_non_zero_exit_is_failed_with_exit_code_nonzero(ali):
    client = ali.client()
    invoke_id = run_command(client, ali.region, [ali.instances["local-1"]], "exit 7")
    (result,) = wait_results(client, ali.region, invoke_id)
    assert (result.invocation_status, result.exit_code, result.error_code) == ("Failed", 7, "ExitCodeNonzero")
    assert result.error_info


def test_output_keeps_the_last_24_kb(ali):
    client = ali.client()
    invoke_id = run_command(client, ali.region, [ali.instances["local-1"]], "head -c 30000 /dev/zero | tr '\\0' a; echo END")
    (result,) = wait_results(client, ali.region, invoke_id)
    out = decoded_output(result)
    assert len(out) == 24 * 1024 and out.endswith("aEND\n")
    assert result.dropped == 30000 + 4 - 24 * 1024


def test_base64_command_content(ali):
    client = ali.client()
    content = base64.b64encode(b"echo decoded").decode()
    invoke_id = run_command(client, ali.region, [ali.instances["local-1"]], content, content_encoding="Base64")
    (result,) = wait_results(client, ali.region, invoke_id)
    assert decoded_output(result) == "decoded\n"


def test_per_instance_statuses_and_whole_invocation_status(ali):
    client = ali.client()
    names = ["sim-ok", "sim-1", "gone", "lost", "off", "win-1"]
    invoke_id = run_command(client, ali.region, [ali.instances[n] for n in names], "echo hi")
    results = {r.instance_id: r for r in wait_results(client, ali.region, invoke_id)}
    by_name = {n: results[ali.instances[n]] for n in names}
    assert by_name["sim-ok"].invocation_status == "Success"
    assert (by_name["sim-1"].invocation_status, by_name["sim-1"].exit_code) == ("Failed", 3)
    assert decoded_output(by_name["sim-1"]) == "simulated output"
    assert (by_name["gone"].invocation_status, by_name["gone"].error_code) == ("Aborted", "ClientNotRunning")
    assert (by_name["lost"].invocation_status, by_name["lost"].error_code) == ("Aborted", "ClientNotResponse")
    assert (by_name["off"].invocation_status, by_name["off"].error_code) == ("Aborted", "InstanceNotRunning")
    assert (by_name["win-1"].invocation_status, by_name["win-1"].error_code) == ("Invalid", "CommandNotApplicable")
    body = client.describe_invocations(m.DescribeInvocationsRequest(region_id=ali.region, invoke_id=invoke_id, include_output=True)).body
    (invocation,) = body.invocations.invocation
    assert invocation.invocation_status == "PartialFailed" and invocation.invoke_status == "PartialFinished"
    assert base64.b64decode(invocation.command_content).decode() == "echo hi"
    rows = {r.instance_id: r for r in invocation.invoke_instances.invoke_instance}
    assert base64.b64decode(rows[ali.instances["sim-1"]].output).decode() == "simulated output"
    ok = run_command(client, ali.region, [ali.instances["sim-ok"]], "true")
    wait_results(client, ali.region, ok)
    (inv,) = client.describe_invocations(m.DescribeInvocationsRequest(region_id=ali.region, invoke_id=ok)).body.invocations.invocation
    assert (inv.invocation_status, inv.invoke_status) == ("Success", "Finished")


def test_bat_and_powershell_run_on_windows_only(ali):
    client = ali.client()
    invoke_id = run_command(client, ali.region, [ali.instances["win-1"], ali.instances["sim-ok"]], "dir", command_type="RunPowerShellScript")
    results = {r.instance_id: r.invocation_status for r in wait_results(client, ali.region, invoke_id)}
    assert results == {ali.instances["win-1"]: "Success", ali.instances["sim-ok"]: "Invalid"}


def test_run_command_limits(ali, start_twin):
    client = ali.client()
    with pytest.raises(ClientException) as info:
        run_command(client, ali.region, ["i-doesnotexist"], "true")
    assert (info.value.code, info.value.status_code) == ("InvalidInstance.NotFound", 404)
    big = start_twin({"generate": [{"count": 101, "provider": "alicloud", "name_prefix": "n-"}]})
    with pytest.raises(ClientException) as info:
        run_command(big.client(), big.region, list(big.instances.values()), "true")
    assert info.value.code == "InstanceIdCount.LimitExceeded"
    invoke_id = run_command(big.client(), big.region, list(big.instances.values())[:100], "true")
    assert len(wait_results(big.client(), big.region, invoke_id)) == 50  # first page of MaxResults=50
    with pytest.raises(ClientException) as info:
        run_command(client, ali.region, [ali.instances["sim-ok"]], "true", command_type="RunPerlScript")
    assert info.value.status_code == 400


def test_invocation_results_page_with_next_token(start_twin):
    ali = start_twin({"generate": [{"count": 30, "provider": "alicloud", "name_prefix": "n-"}]})
    client = ali.client()
    invoke_id = run_command(client, ali.region, list(ali.instances.values()), "true")
    wait_results(client, ali.region, invoke_id)
    seen, token = [], None
    while True:
        body = client.describe_invocation_results(m.DescribeInvocationResultsRequest(region_id=ali.region, invoke_id=invoke_id,
                                                                                     max_results=7, next_token=token)).body.invocation
        seen += [r.instance_id for r in body.invocation_results.invocation_result]
        token = body.next_token
        if not token:
            break
    assert sorted(seen) == sorted(ali.instances.values())


def test_timeout_kills_a_local_command(ali, tmp_path):
    client = ali.client()
    pid_file = tmp_path / "pid"
    invoke_id = run_command(client, ali.region, [ali.instances["local-1"]], f"echo $$ > {pid_file}; sleep 120", timeout=10)
    (result,) = wait_results(client, ali.region, invoke_id, limit=60)
    assert (result.invocation_status, result.error_code) == ("Timeout", "ExecutionTimeout")
    assert not os.path.exists(f"/proc/{pid_file.read_text().strip()}")


def test_stop_invocation_leaves_a_started_run_to_its_end(ali, tmp_path):
    """Alibaba documents that stopping a one-time invocation does not interrupt a run that has started."""
    client = ali.client()
    pid_file = tmp_path / "pid"
    go_on = tmp_path / "go-on"
    invoke_id = run_command(client, ali.region, [ali.instances["local-1"]],
                            f"echo $$ > {pid_file}; while [ ! -e {go_on} ]; do sleep 0.05; done; echo finished")
    deadline = time.monotonic() + 20
    while not (pid_file.exists() and pid_file.read_text().strip()):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    client.stop_invocation(m.StopInvocationRequest(region_id=ali.region, invoke_id=invoke_id))
    assert os.path.exists(f"/proc/{pid_file.read_text().strip()}")
    go_on.touch()
    (result,) = wait_results(client, ali.region, invoke_id)
    assert (result.invocation_status, result.exit_code) == ("Success", 0)
    assert decoded_output(result).strip() == "finished"
    with pytest.raises(ClientException) as info:
        client.stop_invocation(m.StopInvocationRequest(region_id=ali.region, invoke_id="t-nothere"))
    assert info.value.code == "InvalidInvokeId.NotFound"


def test_stop_invocation_cancels_a_run_not_started(start_twin, tmp_path):
    ali = start_twin({"instances": [inst("local-1", execution="local")]}, latency={"profile": "zero", "delivery": 3})
    client = ali.client()
    marker = tmp_path / "ran"
    invoke_id = run_command(client, ali.region, [ali.instances["local-1"]], f"touch {marker}")
    client.stop_invocation(m.StopInvocationRequest(region_id=ali.region, invoke_id=invoke_id,
                                                   instance_id=[ali.instances["local-1"]]))
    (result,) = wait_results(client, ali.region, invoke_id)
    assert (result.invocation_status, result.invoke_record_status) == ("Cancelled", "Stopped")
    time.sleep(4)  # past the delivery latency: a cancelled run never starts
    assert not marker.exists()
    too_many = [f"i-{n:020d}" for n in range(51)]
    with pytest.raises(ClientException) as info:
        client.stop_invocation(m.StopInvocationRequest(region_id=ali.region, invoke_id=invoke_id, instance_id=too_many))
    assert info.value.code == "InstanceIds.ExceedLimit"


def test_results_become_visible_after_delivery_and_report(start_twin):
    ali = start_twin({"instances": [inst("sim-ok")]}, latency={"profile": "zero", "delivery": 0.5, "report": 0.5})
    client = ali.client()
    invoke_id = run_command(client, ali.region, [ali.instances["sim-ok"]], "true")
    first = client.describe_invocation_results(m.DescribeInvocationResultsRequest(region_id=ali.region, invoke_id=invoke_id)).body
    assert first.invocation.invocation_results.invocation_result[0].invocation_status in ("Pending", "Running")
    (result,) = wait_results(client, ali.region, invoke_id)
    assert result.invocation_status == "Success"


def test_describe_cloud_assistant_status(ali):
    client = ali.client()
    names = ["sim-ok", "gone", "lost", "off", "win-1"]
    body = client.describe_cloud_assistant_status(m.DescribeCloudAssistantStatusRequest(
        region_id=ali.region, instance_id=[ali.instances[n] for n in names])).body
    rows = {r.instance_id: r for r in body.instance_cloud_assistant_status_set.instance_cloud_assistant_status}
    status = {n: rows[ali.instances[n]].cloud_assistant_status for n in names}
    assert status == {"sim-ok": "true", "gone": "false", "lost": "false", "off": "false", "win-1": "true"}
    assert rows[ali.instances["gone"]].cloud_assistant_version == ""
    assert rows[ali.instances["win-1"]].ostype == "Windows" and rows[ali.instances["sim-ok"]].ostype == "Linux"
    paged = client.describe_cloud_assistant_status(m.DescribeCloudAssistantStatusRequest(region_id=ali.region, max_results=3)).body
    assert len(paged.instance_cloud_assistant_status_set.instance_cloud_assistant_status) == 3 and paged.next_token
