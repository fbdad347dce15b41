"""The request limits' arithmetic on a stepped clock: bucket math, the published table, overrides, faults."""

import threading

import pytest

from twin.core.faults import Faults
from twin.core.latency import LatencyModel
from twin.core.limits import Limits, TokenBucket, as_limits, bucket_name, ec2_unfiltered, published


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now

    def step(self, seconds):
        self.now += seconds


def drain(take, limit=10_000):
    """How many calls succeed in a row (without the clock moving)."""
    n = 0
    while n < limit and take():
        n += 1
    return n


def test_bucket_starts_full_spends_one_token_a_call_and_refills_to_its_capacity():
    clock = Clock()
    bucket = TokenBucket(100, 5, clock=clock)
    assert drain(bucket.take) == 100
    assert not bucket.take()
    clock.step(1)
    assert drain(bucket.take) == 5
    clock.step(0.1)
    assert not bucket.take()  # half a token
    clock.step(0.1)
    assert bucket.take()
    clock.step(3600)
    assert bucket.level() == 100  # never more than the capacity


def test_bucket_is_safe_under_concurrent_callers():
    bucket = TokenBucket(500, 0)
    granted = []

    def worker():
        granted.append(drain(bucket.take, 1000))
    threads = [threading.Thread(target=worker) for _n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(granted) == 500


def test_reconfiguring_keeps_the_tokens_held_cut_to_the_new_capacity():
    clock = Clock()
    bucket = TokenBucket(100, 5, clock=clock)
    drain(bucket.take, 90)
    bucket.configure(5, 1)
    assert bucket.level() == 5
    clock.step(2)
    assert bucket.level() == 5
    assert drain(bucket.take) == 5
    clock.step(2)
    assert drain(bucket.take) == 2


def test_a_competing_consumer_takes_its_share_of_the_refill():
    clock = Clock()
    bucket = TokenBucket(100, 5, drain=2.5, clock=clock)
    drain(bucket.take)
    clock.step(4)
    assert drain(bucket.take) == 10  # 4 s x (5 - 2.5)
    bucket.configure(100, 5, drain=6)
    clock.step(10)
    assert bucket.level() == 0  # spending more than the refill keeps the bucket empty


@pytest.mark.parametrize("api,capacity,refill", [
    ("CreateSnapshot", 100, 5), ("CreateSnapshots", 100, 5), ("CreateTags", 100, 10), ("DeleteTags", 100, 10),
    ("CreateVolume", 100, 5), ("DeleteVolume", 100, 5), ("DeleteSnapshot", 100, 5), ("ModifySnapshotAttribute", 100, 5),
    ("StartInstances", 5, 2), ("TerminateInstances", 100, 5), ("CopyImage", 100, 1),
    ("AttachVolume", 50, 5), ("DetachVolume", 50, 5), ("StopInstances", 50, 5), ("CopySnapshot", 50, 5),
    ("DescribeSnapshots", 100, 20), ("DescribeImages", 100, 20), ("GetEbsEncryptionByDefault", 100, 20),
    ("DescribeInstances/unfiltered", 50, 10), ("DescribeSnapshots/unfiltered", 50, 10),
    ("DescribeVolumes/unfiltered", 50, 10), ("DescribeInstanceStatus/unfiltered", 50, 10),
])
def test_each_published_ec2_bucket(api, capacity, refill):
    assert published("ec2", api) == (capacity, refill)
    clock = Clock()
    limits = Limits("published", clock=clock)
    action, _sep, kind = api.partition("/")
    assert drain(lambda: limits.take("ec2", action, "111122223333", "us-east-1", unfiltered=bool(kind))) == capacity
    clock.step(1)
    assert drain(lambda: limits.take("ec2", action, "111122223333", "us-east-1", unfiltered=bool(kind))) == refill


def test_the_small_bucket_is_for_describes_without_filter_or_pagination_only():
    assert ec2_unfiltered({"Action": ["DescribeInstances"], "InstanceId.1": ["i-1"]})
    assert not ec2_unfiltered({"Action": ["DescribeInstances"], "Filter.1.Name": ["tag:env"]})
    assert not ec2_unfiltered({"Action": ["DescribeSnapshots"], "MaxResults": ["100"]})
    assert not ec2_unfiltered({"Action": ["DescribeSnapshots"], "NextToken": ["x"]})
    assert bucket_name("ec2", "DescribeVolumes", unfiltered=True) == "DescribeVolumes/unfiltered"
    assert bucket_name("ec2", "DescribeImages", unfiltered=True) == "DescribeImages"  # not one of the four
    limits = Limits("published", clock=Clock())
    assert drain(lambda: limits.take("ec2", "DescribeInstances", "a", "r", unfiltered=True)) == 50
    assert drain(lambda: limits.take("ec2", "DescribeInstances", "a", "r", unfiltered=False)) == 100


def test_buckets_are_per_account_region_and_api():
    limits = Limits("published", clock=Clock())
    assert drain(lambda: limits.take("ec2", "StartInstances", "a", "us-east-1")) == 5
    assert drain(lambda: limits.take("ec2", "StartInstances", "a", "eu-west-1")) == 5
    assert drain(lambda: limits.take("ec2", "StartInstances", "b", "us-east-1")) == 5
    assert drain(lambda: limits.take("ec2", "CreateSnapshots", "a", "us-east-1")) == 100


def test_ssm_and_alibaba_have_documented_defaults_and_are_configurable():
    assert published("ssm", "SendCommand") == (20, 5) and published("ssm", "ListCommandInvocations") == (20, 5)
    assert published("ssm", "GetCommandInvocation") == (20, 10)
    assert published("ssm", "DescribeInstanceInformation") == (20, 5)
    assert published("ecs", "CreateSnapshotGroup") == (100, 5) and published("ecs", "DescribeSnapshotGroups") == (100, 20)
    assert published("ecs", "RunCommand") == (50, 5)
    limits = Limits({"SendCommand": {"capacity": 2, "refill": 1}, "alicloud:RunCommand": {"capacity": 3, "refill": 1}},
                    clock=Clock())
    assert limits.profile == "published"
    assert drain(lambda: limits.take("ssm", "SendCommand", "a", "r")) == 2
    assert drain(lambda: limits.take("ecs", "RunCommand", "a", "r")) == 3
    assert drain(lambda: limits.take("ssm", "ListCommandInvocations", "a", "r")) == 20


def test_none_limits_nothing_and_overrides_on_none_limit_only_themselves():
    limits = Limits("none", clock=Clock())
    assert drain(lambda: limits.take("ec2", "StartInstances", "a", "r"), 1000) == 1000
    only = Limits({"profile": "none", "CreateSnapshots": {"capacity": 5, "refill": 1}}, clock=Clock())
    assert drain(lambda: only.take("ec2", "CreateSnapshots", "a", "r")) == 5
    assert drain(lambda: only.take("ec2", "CreateTags", "a", "r"), 1000) == 1000


def test_the_default_follows_the_latency_profile():
    assert as_limits(None, latency=LatencyModel("zero")).profile == "none"
    assert as_limits(None, latency=LatencyModel("realistic")).profile == "published"
    assert as_limits(None, latency=LatencyModel({"profile": "realistic", "scale": 0.1})).profile == "published"
    assert as_limits("none", latency=LatencyModel("realistic")).profile == "none"


@pytest.mark.parametrize("spec", ["some", {"profile": "strict"}, {"CreateSnapshots": 5},
                                  {"CreateSnapshots": {"capacity": -1, "refill": 1}}, 42])
def test_bad_specs_are_refused(spec):
    with pytest.raises(ValueError):
        Limits(spec)


def test_faults_lower_a_bucket_at_runtime_and_add_a_competing_consumer():
    clock = Clock()
    faults = Faults()
    limits = Limits("published", faults=faults, clock=clock)
    assert limits.take("ec2", "CreateSnapshots", "a", "r")
    faults.update({"limits": {"CreateSnapshots": {"capacity": 3, "refill": 1}}})
    assert drain(lambda: limits.take("ec2", "CreateSnapshots", "a", "r")) == 3
    faults.update({"competing": {"CreateSnapshots": 0.5}})
    assert not limits.take("ec2", "CreateSnapshots", "a", "r")  # a changed fault counts from the bucket's next call
    clock.step(4)
    assert drain(lambda: limits.take("ec2", "CreateSnapshots", "a", "r")) == 2
    faults.reset()
    assert not limits.take("ec2", "CreateSnapshots", "a", "r")
    clock.step(1)
    assert drain(lambda: limits.take("ec2", "CreateSnapshots", "a", "r")) == 5  # the published refill again
    # a fault bucket applies where the profile has none
    none = Limits("none", faults=Faults({"limits": {"alicloud:RunCommand": {"capacity": 1, "refill": 0}}}), clock=clock)
    assert drain(lambda: none.take("ecs", "RunCommand", "a", "r")) == 1


def test_describe_lists_the_buckets_in_use():
    limits = Limits({"StartInstances": {"capacity": 4, "refill": 1}}, clock=Clock())
    limits.take("ec2", "StartInstances", "a", "us-east-1")
    (bucket,) = limits.describe()["buckets"]
    assert bucket == {"service": "ec2", "account": "a", "region": "us-east-1", "api": "StartInstances", "capacity": 4.0,
                      "refill": 1.0, "competing": 0.0, "tokens": 3.0}
