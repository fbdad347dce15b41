"""The Alibaba twin's request buckets through the official SDK: Alibaba's throttling answer, shared with the plug-in."""

import pytest
from alibabacloud_ecs20140526 import models as m
from alibabacloud_tea_openapi.exceptions import ClientException

from twin.tests.test_alicloud_plugin import LINUX_PARAMS, instance, run_plugin, start_fleet  # noqa: F401  pylint: disable=unused-import


def bucket(capacity, refill=0):
    return {"capacity": capacity, "refill": refill}


def test_an_empty_bucket_answers_throttling_user_in_alibabas_shape(start_twin):
    twin = start_twin([instance("web-1")], limits={"profile": "none", "alicloud:DescribeDisks": bucket(1)})
    client = twin.client()
    client.describe_disks(m.DescribeDisksRequest(region_id=twin.region))
    with pytest.raises(ClientException) as err:
        client.describe_disks(m.DescribeDisksRequest(region_id=twin.region))
    assert (err.value.code, err.value.status_code) == ("Throttling.User", 400)
    client.describe_instances(m.DescribeInstancesRequest(region_id=twin.region))  # another API, another bucket
    assert twin.stats.throttled("alicloud") == {"DescribeDisks": 1}
    assert twin.limits.describe()["buckets"][0]["api"] == "DescribeDisks"


def test_the_plugins_calls_spend_the_accounts_buckets(start_twin):
    twin = start_twin([instance("web-1"), instance("web-2")],
                      limits={"profile": "none", "alicloud:CreateSnapshotGroup": bucket(1)})
    client, _iid, _invoke, result = run_plugin(twin, "web-1", LINUX_PARAMS)
    assert result.exit_code == 0
    # the plug-in took the only token: the controller's call is throttled
    with pytest.raises(ClientException) as err:
        client.create_snapshot_group(m.CreateSnapshotGroupRequest(region_id=twin.region, instance_id=twin.instances["web-2"]))
    assert err.value.code == "Throttling.User"
    # a plug-in run that finds the bucket empty cannot create its group (exit 4) and says why
    _client, _iid, _invoke, result = run_plugin(twin, "web-2", LINUX_PARAMS)
    assert result.exit_code == 4
    assert twin.stats.throttled("alicloud-instance-role") == {"CreateSnapshotGroup": 1}
    assert twin.stats.throttled("alicloud") == {"CreateSnapshotGroup": 1}


def test_published_profile_has_the_twins_chosen_defaults(start_twin):
    twin = start_twin([instance("web-1")], limits="published")
    client = twin.client()
    for _n in range(5):
        client.describe_disks(m.DescribeDisksRequest(region_id=twin.region))
    (state,) = twin.limits.describe()["buckets"]
    assert (state["api"], state["capacity"], state["refill"]) == ("DescribeDisks", 100, 20)
