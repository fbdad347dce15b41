"""vss_snapshot against the AWS twin: real ansible-playbook runs, results checked as an operator would."""

import pytest

WINDOWS = {"provider": "aws", "platform": "windows", "state": "running",
           "volumes": [{"device": "/dev/sda1", "size": 30, "boot": True}, {"device": "xvdf", "size": 100}]}


def fleet(*instances):
    return {"instances": [dict(WINDOWS, **i) for i in instances]}


@pytest.fixture
def one_windows(twin_factory):
    return twin_factory(fleet({"name": "sql-1"}), alicloud=False)


def instance_id(twins, name):
    return twins.endpoints["aws"]["instances"][name]


def test_one_instance_gets_an_application_consistent_set(one_windows, run_tasks):
    iid = instance_id(one_windows, "sql-1")
    run = run_tasks([{"appconsistent.snapshots.vss_snapshot": {"instance_ids": [iid], "tags": {"purpose": "test"},
                                                               "delete_after": "7d"},
                      "register": "vss"}], one_windows.endpoints)
    result = run["vss"]
    assert result["changed"] is True and not result.get("failed"), result
    (entry,) = result["results"]
    assert entry["status"] == "Success"
    assert entry["consistency"] == "application"
    assert len(entry["snapshots"]) == 2
    ec2 = one_windows.aws_client("ec2")
    snaps = ec2.describe_snapshots(OwnerIds=["self"], Filters=[{"Name": "tag:appconsistent:set-id",
                                                                  "Values": [entry["set_id"]]}])["Snapshots"]
    assert len(snaps) == 2
    for snap in snaps:
        tags = {t["Key"]: t["Value"] for t in snap["Tags"]}
        assert tags["appconsistent:instance-id"] == iid
        assert tags["appconsistent:consistency"] == "application"
        assert tags["purpose"] == "test"
        assert tags["appconsistent:device"] in ("/dev/sda1", "xvdf")
        assert tags["AppConsistent"].lower() == "true"
        assert tags["appconsistent:delete-after"].endswith("Z")
