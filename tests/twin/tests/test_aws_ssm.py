"""SSM Run Command on the AWS twin, driven through boto3 as the collection drives it."""

import sys

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from twin.aws.testing import invocations, wait_command, wait_for

LINUX_VOLUMES = [{"device": "/dev/xvda", "size": 8, "boot": True}, {"device": "/dev/xvdf", "size": 10}]


def _fleet(*instances):
    return {"instances": [dict({"provider": "aws", "platform": "linux", "volumes": LINUX_VOLUMES}, **i) for i in instances]}


@pytest.fixture
def local_fleet(twin_factory):
    twins = twin_factory(_fleet(
        {"name": "loc-1", "execution": "local", "tags": {"grp": "a"}},
        {"name": "loc-2", "execution": "local", "tags": {"grp": "a"}},
        {"name": "loc-3", "execution": "local", "tags": {"grp": "b"}},
        {"name": "win-1", "platform": "windows", "tags": {"grp": "b"}},
        {"name": "lost-1", "agent": {"status": "connection_lost"}},
        {"name": "none-1", "agent": {"status": "not_installed"}},
        {"name": "off-1", "state": "stopped"},
    ), alicloud=False)
    return twins, twins.aws_client("ssm"), twins.aws.instances


def _send(ssm, ids, commands, **kwargs):
    return ssm.send_command(InstanceIds=ids, DocumentName="AWS-RunShellScript",
                            Parameters={"commands": commands, **kwargs.pop("parameters", {})}, **kwargs)["Command"]


def test_success_runs_for_real_with_output_and_environment(local_fleet):
    twins, ssm, ids = local_fleet
    cmd = _send(ssm, [ids["loc-1"]], ["echo out-$TWIN_INSTANCE_ID", "echo err >&2", "echo $TWIN_PROVIDER $AWS_ENDPOINT_URL"])
    inv = wait_command(ssm, cmd["CommandId"])[ids["loc-1"]]
    assert (inv["Status"], inv["StatusDetails"]) == ("Success", "Success")
    plugin = inv["CommandPlugins"][0]
    assert plugin["Name"] == "aws:runShellScript" and plugin["ResponseCode"] == 0
    got = ssm.get_command_invocation(CommandId=cmd["CommandId"], InstanceId=ids["loc-1"])
    assert got["StandardOutputContent"] == f"out-{ids['loc-1']}\naws {twins.aws.url}\n"
    assert got["StandardErrorContent"] == "err\n"
    assert got["ResponseCode"] == 0 and got["Status"] == "Success"


def test_instance_side_api_calls_reach_the_twin(local_fleet):
    twins, ssm, ids = local_fleet
    script = (f"{sys.executable} -c \"import boto3; "
              "print(boto3.client('ec2').describe_instances(InstanceIds=['$TWIN_INSTANCE_ID'])"
              "['Reservations'][0]['Instances'][0]['InstanceId'])\"")
    cmd = _send(ssm, [ids["loc-2"]], [script])
    wait_command(ssm, cmd["CommandId"])
    got = ssm.get_command_invocation(CommandId=cmd["CommandId"], InstanceId=ids["loc-2"])
    assert got["Status"] == "Success", got["StandardErrorContent"]
    assert got["StandardOutputContent"].strip() == ids["loc-2"]


def test_failed_exit_code(local_fleet):
    _twins, ssm, ids = local_fleet
    cmd = _send(ssm, [ids["loc-1"]], ["echo partial", "exit 7"])
    inv = wait_command(ssm, cmd["CommandId"])[ids["loc-1"]]
    assert (inv["Status"], inv["StatusDetails"]) == ("Failed", "Failed")
    assert inv["CommandPlugins"][0]["ResponseCode"] == 7
    assert "partial" in inv["CommandPlugins"][0]["Output"]
    assert ssm.list_commands(CommandId=cmd["CommandId"])["Commands"][0]["Status"] == "Failed"


def test_execution_timeout_kills_the_script(local_fleet, tmp_path):
    _twins, ssm, ids = local_fleet
    marker = tmp_path / "survived"
    cmd = _send(ssm, [ids["loc-1"]], [f"sleep 20; touch {marker}"], parameters={"executionTimeout": ["1"]})
    inv = wait_command(ssm, cmd["CommandId"])[ids["loc-1"]]
    assert (inv["Status"], inv["StatusDetails"]) == ("TimedOut", "ExecutionTimedOut")
    assert not marker.exists()


def test_pending_then_in_progress_then_cancelled(twin_factory, tmp_path):
    twins = twin_factory(_fleet({"name": "loc-1", "execution": "local"}),
                         latency={"profile": "zero", "delivery": {"aws": 1.0}}, alicloud=False)
    ssm, iid = twins.aws_client("ssm"), twins.aws.instances["loc-1"]
    started = tmp_path / "started"
    cmd = _send(ssm, [iid], [f"touch {started}", "sleep 30"])
    first = invocations(ssm, cmd["CommandId"])[0]
    assert (first["Status"], first["StatusDetails"]) == ("Pending", "Pending")
    wait_for(lambda: invocations(ssm, cmd["CommandId"])[0]["Status"] == "InProgress", what="InProgress")
    wait_for(started.exists, what="the script to start")
    ssm.cancel_command(CommandId=cmd["CommandId"])
    inv = wait_command(ssm, cmd["CommandId"])[iid]
    assert (inv["Status"], inv["StatusDetails"]) == ("Cancelled", "Cancelled")
    assert ssm.list_commands(CommandId=cmd["CommandId"])["Commands"][0]["Status"] == "Cancelled"


def test_hold_commands_delays_only_the_matching_command(twin_factory):
    twins = twin_factory(_fleet({"name": "loc-1", "execution": "local", "faults": {"hold_commands": {"held-one": 30}}}),
                         alicloud=False)
    ssm, iid = twins.aws_client("ssm"), twins.aws.instances["loc-1"]
    held = _send(ssm, [iid], ["echo held-one"])
    free = _send(ssm, [iid], ["echo free-one"])
    assert wait_command(ssm, free["CommandId"])[iid]["Status"] == "Success"
    assert invocations(ssm, held["CommandId"])[0]["Status"] == "Pending"  # still waiting for its delivery
    ssm.cancel_command(CommandId=held["CommandId"])


def test_cancel_before_delivery(twin_factory):
    twins = twin_factory(_fleet({"name": "sim-1"}), latency={"profile": "zero", "delivery": {"aws": 5.0}}, alicloud=False)
    ssm, iid = twins.aws_client("ssm"), twins.aws.instances["sim-1"]
    cmd = _send(ssm, [iid], ["true"])
    ssm.cancel_command(CommandId=cmd["CommandId"], InstanceIds=[iid])
    inv = invocations(ssm, cmd["CommandId"])[0]
    assert (inv["Status"], inv["StatusDetails"]) == ("Cancelled", "Cancelled")


def test_offline_agent_delivery_times_out_and_undeliverable(twin_factory):
    twins = twin_factory(_fleet({"name": "lost-1", "agent": {"status": "connection_lost"}},
                                {"name": "gone-1", "faults": {"undeliverable": True}},
                                {"name": "off-1", "state": "stopped"},
                                {"name": "ok-1"}),
                         faults={"ssm_delivery_timeout": 0.3}, alicloud=False)
    ssm, ids = twins.aws_client("ssm"), twins.aws.instances
    cmd = _send(ssm, [ids["lost-1"], ids["gone-1"], ids["off-1"], ids["ok-1"]], ["true"], MaxErrors="10")
    result = wait_command(ssm, cmd["CommandId"])
    assert (result[ids["lost-1"]]["Status"], result[ids["lost-1"]]["StatusDetails"]) == ("TimedOut", "DeliveryTimedOut")
    assert (result[ids["off-1"]]["Status"], result[ids["off-1"]]["StatusDetails"]) == ("TimedOut", "DeliveryTimedOut")
    assert result[ids["gone-1"]]["StatusDetails"] == "Undeliverable"
    assert result[ids["ok-1"]]["Status"] == "Success"
    summary = ssm.list_commands(CommandId=cmd["CommandId"])["Commands"][0]
    assert summary["TargetCount"] == 4 and summary["CompletedCount"] == 4 and summary["DeliveryTimedOutCount"] == 2


def test_instance_without_agent_is_an_invalid_instance_id(local_fleet):
    _twins, ssm, ids = local_fleet
    with pytest.raises(ClientError) as err:
        _send(ssm, [ids["loc-1"], ids["none-1"]], ["true"])
    assert err.value.response["Error"]["Code"] == "InvalidInstanceId"
    assert ssm.list_commands()["Commands"] == []


def test_unknown_document_and_bad_parameters_are_rejected(local_fleet):
    _twins, ssm, ids = local_fleet
    with pytest.raises(ClientError) as err:
        ssm.send_command(InstanceIds=[ids["loc-1"]], DocumentName="No-Such-Document", Parameters={})
    assert err.value.response["Error"]["Code"] == "InvalidDocument"
    with pytest.raises(ClientError) as err:
        ssm.send_command(InstanceIds=[ids["loc-1"]], DocumentName="AWS-RunShellScript", Parameters={"command": ["true"]})
    assert err.value.response["Error"]["Code"] == "InvalidParameters"
    with pytest.raises(ClientError) as err:
        ssm.send_command(InstanceIds=[ids["loc-1"]], DocumentName="AWS-RunShellScript", Parameters={})
    assert err.value.response["Error"]["Code"] == "InvalidParameters"


def test_send_command_needs_explicit_targets_and_at_most_50_ids(local_fleet):
    _twins, ssm, ids = local_fleet
    with pytest.raises(ClientError) as err:
        ssm.send_command(DocumentName="AWS-RunShellScript", Parameters={"commands": ["true"]})
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert ssm.list_commands()["Commands"] == []  # nothing was sent to "every instance"
    with pytest.raises(ClientError) as err:
        _send(ssm, [f"i-{n:017x}" for n in range(51)], ["true"])
    assert err.value.response["Error"]["Code"] == "ValidationException"
    with pytest.raises(ClientError) as err:  # 50 are within the limit: these fail only as unknown instances
        _send(ssm, [ids["loc-1"]] + [f"i-{n:017x}" for n in range(49)], ["true"])
    assert err.value.response["Error"]["Code"] == "InvalidInstanceId"


def test_timeout_seconds_bounds_and_is_the_delivery_timeout(local_fleet, monkeypatch):
    twins, ssm, ids = local_fleet
    unchecked = twins.aws_client("ssm", config=Config(parameter_validation=False))  # the twin's check, not botocore's
    for bad in (29, 2592001):
        with pytest.raises(ClientError) as err:
            _send(unchecked, [ids["loc-1"]], ["true"], TimeoutSeconds=bad)
        assert err.value.response["Error"]["Code"] == "ValidationException"
    delays = []
    scheduler = twins.aws.cloud.scheduler
    original = scheduler.call_later
    monkeypatch.setattr(scheduler, "call_later", lambda delay, func: (delays.append(delay), original(delay, func)))
    cmd = _send(ssm, [ids["lost-1"]], ["true"], TimeoutSeconds=45)
    assert cmd["TimeoutSeconds"] == 45
    # the offline agent's invocation is due to end DeliveryTimedOut after TimeoutSeconds, not the default hour
    assert delays == [45.0]
    assert invocations(ssm, cmd["CommandId"])[0]["Status"] == "Pending"
    ssm.cancel_command(CommandId=cmd["CommandId"])


def test_targets_by_tag_reach_exactly_the_tagged_managed_instances(local_fleet):
    _twins, ssm, ids = local_fleet
    cmd = ssm.send_command(Targets=[{"Key": "tag:grp", "Values": ["b"]}], DocumentName="AWS-RunShellScript",
                           Parameters={"commands": ["echo hi"]})["Command"]
    result = wait_command(ssm, cmd["CommandId"])
    assert set(result) == {ids["loc-3"], ids["win-1"]}
    assert result[ids["loc-3"]]["Status"] == "Success"
    # a shell script cannot run on Windows
    assert (result[ids["win-1"]]["Status"], result[ids["win-1"]]["StatusDetails"]) == ("Failed", "InvalidPlatform")
    assert cmd["InstanceIds"] == [] and cmd["Targets"] == [{"Key": "tag:grp", "Values": ["b"]}]


def test_max_concurrency_serialises_the_fleet(local_fleet, tmp_path):
    _twins, ssm, ids = local_fleet
    log = tmp_path / "log"
    targets = [ids["loc-1"], ids["loc-2"], ids["loc-3"]]
    cmd = _send(ssm, targets, [f"echo start >> {log}", "sleep 0.3", f"echo end >> {log}"], MaxConcurrency="1")
    result = wait_command(ssm, cmd["CommandId"])
    assert all(r["Status"] == "Success" for r in result.values())
    assert log.read_text().split() == ["start", "end"] * 3


def test_max_errors_stops_reaching_further_targets(local_fleet):
    _twins, ssm, ids = local_fleet
    targets = [ids["loc-1"], ids["loc-2"], ids["loc-3"]]
    cmd = _send(ssm, targets, ["exit 1"], MaxConcurrency="1", MaxErrors="0")
    result = wait_command(ssm, cmd["CommandId"])
    statuses = sorted(r["Status"] for r in result.values())
    assert statuses == ["Cancelled", "Cancelled", "Failed"]
    assert ssm.list_commands(CommandId=cmd["CommandId"])["Commands"][0]["Status"] == "Failed"


def test_list_command_invocations_paginates_with_details(twin_factory):
    twins = twin_factory({"generate": [{"count": 7, "provider": "aws", "name_prefix": "n-",
                                        "template": {"platform": "linux", "volumes": LINUX_VOLUMES,
                                                     "faults": {"command_stdout": "simulated output"}}}]}, alicloud=False)
    ssm = twins.aws_client("ssm")
    cmd = _send(ssm, list(twins.aws.instances.values()), ["true"])
    wait_command(ssm, cmd["CommandId"])
    pages = list(ssm.get_paginator("list_command_invocations").paginate(
        CommandId=cmd["CommandId"], Details=True, PaginationConfig={"PageSize": 3}))
    assert [len(p["CommandInvocations"]) for p in pages] == [3, 3, 1]
    seen = [i["InstanceId"] for p in pages for i in p["CommandInvocations"]]
    assert sorted(seen) == sorted(twins.aws.instances.values())
    assert all(i["CommandPlugins"][0]["Output"] == "simulated output" for p in pages for i in p["CommandInvocations"])


def test_simulated_results_come_from_faults(twin_factory):
    twins = twin_factory(_fleet({"name": "s-ok"}, {"name": "s-bad", "faults": {"command_exit_code": 4, "command_stderr": "boom"}},
                                {"name": "s-hang", "faults": {"command_hang": True}}), alicloud=False)
    ssm, ids = twins.aws_client("ssm"), twins.aws.instances
    cmd = _send(ssm, list(ids.values()), ["true"], MaxErrors="5", parameters={"executionTimeout": ["1"]})
    result = wait_command(ssm, cmd["CommandId"])
    assert result[ids["s-ok"]]["Status"] == "Success"
    assert result[ids["s-bad"]]["Status"] == "Failed" and result[ids["s-bad"]]["CommandPlugins"][0]["ResponseCode"] == 4
    got = ssm.get_command_invocation(CommandId=cmd["CommandId"], InstanceId=ids["s-bad"])
    assert (got["StandardOutputContent"], got["StandardErrorContent"], got["ResponseCode"]) == ("", "boom", 4)
    assert result[ids["s-hang"]]["StatusDetails"] == "ExecutionTimedOut"


def test_describe_instance_information(local_fleet):
    twins, ssm, ids = local_fleet
    pages = list(ssm.get_paginator("describe_instance_information").paginate(PaginationConfig={"PageSize": 5}))
    assert [len(p["InstanceInformationList"]) for p in pages] == [5, 1]
    infos = {i["InstanceId"]: i for p in pages for i in p["InstanceInformationList"]}
    assert ids["none-1"] not in infos
    assert len(infos) == 6
    assert infos[ids["loc-1"]]["PingStatus"] == "Online" and infos[ids["loc-1"]]["PlatformType"] == "Linux"
    assert infos[ids["win-1"]]["PlatformType"] == "Windows"
    assert infos[ids["lost-1"]]["PingStatus"] == "ConnectionLost"
    assert infos[ids["off-1"]]["PingStatus"] == "ConnectionLost"
    assert infos[ids["loc-1"]]["AgentVersion"] == "3.3.1000.0"
    online = ssm.describe_instance_information(Filters=[{"Key": "PingStatus", "Values": ["Online"]},
                                                        {"Key": "InstanceIds", "Values": [ids["loc-1"], ids["lost-1"]]}])
    assert [i["InstanceId"] for i in online["InstanceInformationList"]] == [ids["loc-1"]]
    windows = ssm.describe_instance_information(
        InstanceInformationFilterList=[{"key": "PlatformTypes", "valueSet": ["Windows"]}])["InstanceInformationList"]
    assert [i["InstanceId"] for i in windows] == [ids["win-1"]]
    by_version = ssm.describe_instance_information(Filters=[{"Key": "AgentVersion", "Values": ["3.3.1000.0"]}])
    assert len(by_version["InstanceInformationList"]) == 6
    assert ssm.describe_instance_information(Filters=[{"Key": "AgentVersion", "Values": ["2.0.0.0"]}])["InstanceInformationList"] == []
    with pytest.raises(ClientError):
        ssm.describe_instance_information(Filters=[{"Key": "Bogus", "Values": ["x"]}])


def test_custom_document_runs_its_steps(local_fleet):
    _twins, ssm, ids = local_fleet
    content = ('{"schemaVersion": "2.2", "parameters": {"word": {"type": "String", "default": "hello", '
               '"allowedValues": ["hello", "bye"]}}, "mainSteps": [{"action": "aws:runShellScript", "name": "sayit", '
               '"precondition": {"StringEquals": ["platformType", "Linux"]}, "inputs": {"runCommand": ["echo {{ word }}"]}}]}')
    ssm.create_document(Name="Twin-Say", Content=content, DocumentType="Command", DocumentFormat="JSON")
    assert ssm.describe_document(Name="Twin-Say")["Document"]["Parameters"][0]["Name"] == "word"
    cmd = ssm.send_command(InstanceIds=[ids["loc-1"]], DocumentName="Twin-Say", Parameters={"word": ["bye"]})["Command"]
    wait_command(ssm, cmd["CommandId"])
    got = ssm.get_command_invocation(CommandId=cmd["CommandId"], InstanceId=ids["loc-1"], PluginName="sayit")
    assert got["Status"] == "Success" and got["StandardOutputContent"] == "bye\n"
    with pytest.raises(ClientError) as err:
        ssm.send_command(InstanceIds=[ids["loc-1"]], DocumentName="Twin-Say", Parameters={"word": ["maybe"]})
    assert err.value.response["Error"]["Code"] == "InvalidParameters"
    with pytest.raises(ClientError) as err:
        ssm.create_document(Name="Twin-Say", Content=content, DocumentType="Command")
    assert err.value.response["Error"]["Code"] == "DocumentAlreadyExists"


def test_aws_documents_exist(local_fleet):
    ssm = local_fleet[1]
    for name in ("AWS-RunShellScript", "AWS-RunPowerShellScript", "AWS-ConfigureAWSPackage",
                 "AWSEC2-CreateVssSnapshot", "AWSEC2-VssInstallAndSnapshot"):
        assert ssm.describe_document(Name=name)["Document"]["Owner"] == "Amazon"
    with pytest.raises(ClientError):
        ssm.describe_document(Name="AWS-Nothing")


def test_get_command_invocation_errors(local_fleet):
    _twins, ssm, ids = local_fleet
    with pytest.raises(ClientError) as err:
        ssm.get_command_invocation(CommandId="00000000-0000-0000-0000-000000000000", InstanceId=ids["loc-1"])
    assert err.value.response["Error"]["Code"] == "InvalidCommandId"
    cmd = _send(ssm, [ids["loc-1"]], ["true"])
    with pytest.raises(ClientError) as err:
        ssm.get_command_invocation(CommandId=cmd["CommandId"], InstanceId=ids["loc-2"])
    assert err.value.response["Error"]["Code"] == "InvocationDoesNotExist"
    waiter = ssm.get_waiter("command_executed")
    waiter.wait(CommandId=cmd["CommandId"], InstanceId=ids["loc-1"], WaiterConfig={"Delay": 1, "MaxAttempts": 20})


def test_powershell_on_simulated_windows(local_fleet):
    ssm, ids = local_fleet[1:]
    cmd = ssm.send_command(InstanceIds=[ids["win-1"], ids["loc-1"]], DocumentName="AWS-RunPowerShellScript",
                           Parameters={"commands": ["Get-Volume"]})["Command"]
    result = wait_command(ssm, cmd["CommandId"])
    assert (result[ids["win-1"]]["Status"], result[ids["win-1"]]["CommandPlugins"][0]["Name"]) == ("Success", "aws:runPowerShellScript")
    assert result[ids["loc-1"]]["StatusDetails"] == "InvalidPlatform"
