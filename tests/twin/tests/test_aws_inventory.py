"""SSM Inventory (ListInventoryEntries) and AWS-ConfigureAWSPackage on the AWS twin, through boto3."""

import pytest
from botocore.exceptions import ClientError

from twin.aws.testing import wait_command

WINDOWS_VOLUMES = [{"device": "/dev/sda1", "size": 30, "boot": True}]


@pytest.fixture
def fleet(twin_factory):
    twins = twin_factory({"instances": [
        dict({"provider": "aws", "platform": "windows", "volumes": WINDOWS_VOLUMES}, **i) for i in (
            {"name": "with", "agent": {"vss_components": True, "vss_version": "2.4.0"}},
            {"name": "without", "agent": {"vss_components": False}},
            {"name": "noinv", "agent": {"inventory": False}},
            {"name": "unmanaged", "agent": {"status": "not_installed"}},
            {"name": "lnx", "platform": "linux"},
        )]}, alicloud=False)
    return twins.aws_client("ssm"), twins.aws.instances


def apps(ssm, instance_id, **kwargs):
    return ssm.list_inventory_entries(InstanceId=instance_id, TypeName="AWS:Application", **kwargs)


def test_inventory_names_the_vss_components_and_the_agent(fleet):
    ssm, ids = fleet
    answer = apps(ssm, ids["with"])
    assert answer["CaptureTime"] and answer["InstanceId"] == ids["with"]
    assert {e["Name"]: e["Version"] for e in answer["Entries"]} == {"Amazon SSM Agent": "3.3.1000.0",
                                                                    "AwsVssComponents": "2.4.0"}
    assert [e["Name"] for e in apps(ssm, ids["without"])["Entries"]] == ["Amazon SSM Agent"]
    assert [e["Name"] for e in apps(ssm, ids["lnx"])["Entries"]] == ["amazon-ssm-agent"]


def test_no_inventory_collected_answers_no_entries_and_no_capture_time(fleet):
    ssm, ids = fleet
    for name in ("noinv", "unmanaged"):
        answer = apps(ssm, ids[name])
        assert answer["Entries"] == [] and "CaptureTime" not in answer


def test_filters_and_pagination(fleet):
    ssm, ids = fleet
    equal = apps(ssm, ids["with"], Filters=[{"Key": "AWS:Application.Name", "Values": ["AwsVssComponents", "x"],
                                             "Type": "Equal"}])
    assert [e["Name"] for e in equal["Entries"]] == ["AwsVssComponents"]
    begin = apps(ssm, ids["with"], Filters=[{"Key": "AWS:Application.Name", "Values": ["Amazon"], "Type": "BeginWith"}])
    assert [e["Name"] for e in begin["Entries"]] == ["Amazon SSM Agent"]
    first = apps(ssm, ids["with"], MaxResults=1)
    second = apps(ssm, ids["with"], MaxResults=1, NextToken=first["NextToken"])
    assert len(first["Entries"]) == len(second["Entries"]) == 1 and "NextToken" not in second
    assert first["Entries"][0]["Name"] != second["Entries"][0]["Name"]


@pytest.mark.parametrize("kwargs, code", [
    ({"InstanceId": "i-0000000000000dead", "TypeName": "AWS:Application"}, "InvalidInstanceId"),
    ({"InstanceId": "i-0000000000000dead", "TypeName": "Windows:Application"}, "ValidationException"),
    ({"InstanceId": "bogus", "TypeName": "AWS:Application"}, "ValidationException"),
    ({"InstanceId": "i-0000000000000dead", "TypeName": "AWS:Network"}, "InvalidTypeNameException"),
])
def test_bad_requests_get_the_aws_error(fleet, kwargs, code):
    ssm, ids = fleet
    if kwargs["TypeName"] == "AWS:Network":
        kwargs = dict(kwargs, InstanceId=ids["with"])
    with pytest.raises(ClientError) as err:
        ssm.list_inventory_entries(**kwargs)
    assert err.value.response["Error"]["Code"] == code


def test_configure_package_changes_what_inventory_reports(fleet):
    ssm, ids = fleet

    def configure(action, **extra):
        params = {"action": [action], "name": ["AwsVssComponents"], **extra}
        cmd = ssm.send_command(InstanceIds=[ids["without"]], DocumentName="AWS-ConfigureAWSPackage", Parameters=params)
        return wait_command(ssm, cmd["Command"]["CommandId"])[ids["without"]]

    assert configure("Install", version=["2.5.1"])["Status"] == "Success"
    assert {e["Name"]: e["Version"] for e in apps(ssm, ids["without"])["Entries"]}["AwsVssComponents"] == "2.5.1"
    assert configure("Uninstall")["Status"] == "Success"
    assert [e["Name"] for e in apps(ssm, ids["without"])["Entries"]] == ["Amazon SSM Agent"]


def test_install_failure_fault(twin_factory):
    twins = twin_factory({"instances": [{"provider": "aws", "platform": "windows", "name": "w", "volumes": WINDOWS_VOLUMES,
                                         "agent": {"vss_components": False}, "faults": {"vss_install_failure": True}}]},
                         alicloud=False)
    ssm, iid = twins.aws_client("ssm"), twins.aws.instances["w"]
    cmd = ssm.send_command(InstanceIds=[iid], DocumentName="AWS-ConfigureAWSPackage",
                           Parameters={"action": ["Install"], "name": ["AwsVssComponents"]})
    inv = wait_command(ssm, cmd["Command"]["CommandId"])[iid]
    assert (inv["Status"], inv["CommandPlugins"][0]["ResponseCode"]) == ("Failed", 1)
    assert [e["Name"] for e in apps(ssm, iid)["Entries"]] == ["Amazon SSM Agent"]
