"""The decisions of vss_components, and its inventory request checked against botocore's SSM model."""

import boto3
import pytest
from botocore.stub import Stubber

from ansible_collections.appconsistent.snapshots.plugins.module_utils import aws as aws_api
from ansible_collections.appconsistent.snapshots.plugins.module_utils import vss_components as vc


@pytest.mark.parametrize("state, version, known, installed, action", [
    ("present", None, True, None, "install"),          # inventory says it is missing
    ("present", None, True, "2.4.0", None),            # any version will do
    ("present", "2.5.1", True, "2.4.0", "install"),    # not the wanted version
    ("present", "2.5.1", True, "2.5.1", None),
    ("present", None, False, None, "install"),         # nothing tells: configure it anyway
    ("absent", None, True, "2.5.1", "uninstall"),
    ("absent", None, True, None, None),
    ("absent", None, False, None, "uninstall"),
])
def test_decide(state, version, known, installed, action):
    assert vc.decide(state, version, known, installed) == action


def test_installed_version_matches_both_inventory_names_case_and_space_insensitively():
    assert vc.installed_version([{"Name": "Amazon SSM Agent", "Version": "3.3"}]) is None
    assert vc.installed_version([{"Name": "AwsVssComponents", "Version": "2.5.1"}]) == "2.5.1"
    assert vc.installed_version([{"Name": "AWS VSS Components", "Version": "2.4.0"}]) == "2.4.0"
    assert vc.installed_version([{"Name": "awsvsscomponents"}]) == "unknown"


@pytest.mark.parametrize("state, version, message", [
    ("present", "2.5.1; rm -rf /", "not a package version"),
    ("present", "latest", "not a package version"),
    ("absent", "2.5.1", "only used with state: present"),
])
def test_validate_refuses(state, version, message):
    with pytest.raises(vc.VssComponentsError, match=message):
        vc.validate(state, version)


def test_validate_accepts():
    vc.validate("present", "2.5.1")
    vc.validate("present", None)
    vc.validate("absent", None)


def test_list_inventory_entries_follows_next_token_and_keeps_the_capture_time():
    client = boto3.client("ssm", region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b")
    filters = [{"Key": "AWS:Application.Name", "Values": vc.INVENTORY_NAMES, "Type": "Equal"}]
    base = {"InstanceId": "i-0123456789abcdef0", "TypeName": "AWS:Application", "MaxResults": 50, "Filters": filters}
    with Stubber(client) as stub:
        stub.add_response("list_inventory_entries", {"Entries": [{"Name": "AwsVssComponents", "Version": "2.5.1"}],
                                                     "CaptureTime": "2026-12-03T01:00:00Z", "NextToken": "t1"}, base)
        stub.add_response("list_inventory_entries", {"Entries": [{"Name": "AWS VSS Components", "Version": "2.5.1"}]},
                          dict(base, NextToken="t1"))
        entries, capture = aws_api.list_inventory_entries(client, "i-0123456789abcdef0", "AWS:Application", filters)
        stub.assert_no_pending_responses()
    assert len(entries) == 2 and capture == "2026-12-03T01:00:00Z"


def test_no_inventory_means_no_capture_time():
    client = boto3.client("ssm", region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b")
    with Stubber(client) as stub:
        stub.add_response("list_inventory_entries", {"Entries": [], "InstanceId": "i-0123456789abcdef0"})
        entries, capture = aws_api.list_inventory_entries(client, "i-0123456789abcdef0", "AWS:Application")
    assert entries == [] and capture is None
