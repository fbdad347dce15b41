"""The client-side rate model: token buckets on a fake clock, admission, adaptation, and the botocore hook."""

import threading

import boto3
import pytest
from botocore.awsrequest import AWSResponse

from ansible_collections.appconsistent.snapshots.plugins.module_utils import pacing


class FakeClock:
    """A clock that only moves when something sleeps on it."""

    def __init__(self):
        self.now = 1000.0
        self.slept = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock():
    return FakeClock()


def _pacer(clock, **kwargs):
    # The bucket arithmetic, without the one-token cushion (tested on its own below).
    kwargs.setdefault("cushion", 0)
    return pacing.Pacer(clock=clock, sleep=clock.sleep, **kwargs)


def test_one_token_is_kept_as_a_cushion_against_bunched_arrivals(clock):
    pacer = pacing.Pacer(clock=clock, sleep=clock.sleep, limits={"CreateSnapshots": {"capacity": 5, "refill": 1}})
    assert pacer.admit("ec2", "CreateSnapshots", 50, within=0) == 4
    for _call in range(99):
        pacer.before_call("ec2", "CreateTags")
    assert clock.slept == []
    pacer.before_call("ec2", "CreateTags")  # the 100th of a bucket of 100 waits for a token to spare
    assert clock.slept == [pytest.approx(0.1)]
    small = pacing.Pacer(clock=clock, sleep=clock.sleep).bucket("ec2", "StartInstances")
    assert small.cushion == pytest.approx(0.5)  # a tenth of a small bucket


def test_published_buckets_are_the_defaults(clock):
    pacer = _pacer(clock)
    for operation, (capacity, refill) in [("CreateSnapshots", (100, 5)), ("CreateSnapshot", (100, 5)),
                                          ("CreateTags", (100, 10)), ("StartInstances", (5, 2)),
                                          ("DeleteSnapshot", (100, 5)), ("CopyImage", (100, 1))]:
        bucket = pacer.bucket("ec2", operation)
        assert (bucket.capacity, bucket.refill) == (capacity, refill), operation
    assert (pacer.bucket("ec2", "DetachVolume").capacity, pacer.bucket("ec2", "DetachVolume").refill) == (50, 5)
    assert (pacer.bucket("ec2", "DescribeVolumes").capacity, pacer.bucket("ec2", "DescribeVolumes").refill) == (100, 20)
    unfiltered = pacer.bucket("ec2", pacing.Pacer.bucket_name("DescribeInstances", {}))
    assert (unfiltered.capacity, unfiltered.refill) == (50, 10)


def test_only_unfiltered_unpaginated_describes_use_the_small_bucket():
    assert pacing.Pacer.bucket_name("DescribeSnapshots", {}) == "DescribeSnapshots:unfiltered"
    assert pacing.Pacer.bucket_name("DescribeSnapshots", {"Filters": [{"Name": "tag-key", "Values": ["x"]}]}) == "DescribeSnapshots"
    assert pacing.Pacer.bucket_name("DescribeInstances", {"MaxResults": 1000}) == "DescribeInstances"
    # Ids are neither a filter nor pagination (EC2 refuses MaxResults beside InstanceIds): the small bucket.
    assert pacing.Pacer.bucket_name("DescribeInstances", {"InstanceIds": ["i-0123456789abcdef0"]}) == \
        "DescribeInstances:unfiltered"
    assert pacing.Pacer.bucket_name("DescribeSnapshots", {"SnapshotIds": ["snap-0123456789abcdef0"]}) == \
        "DescribeSnapshots:unfiltered"
    assert pacing.Pacer.bucket_name("DescribeImages", {}) == "DescribeImages"


def test_a_full_bucket_lets_capacity_calls_through_then_paces_at_the_refill_rate(clock):
    pacer = _pacer(clock)
    for _call in range(100):
        pacer.before_call("ec2", "CreateSnapshots")
    assert clock.slept == []
    for _call in range(10):
        pacer.before_call("ec2", "CreateSnapshots")
    # Each further call waits for one token at 5 a second: 0.2 s apart.
    assert clock.slept == pytest.approx([0.2] * 10)
    assert pacer.summary()["waited_for_tokens_s"] == pytest.approx(2.0)
    assert pacer.summary()["calls"] == {"CreateSnapshots": 110}


def test_buckets_are_per_api(clock):
    pacer = _pacer(clock)
    for _call in range(100):
        pacer.before_call("ec2", "CreateSnapshots")
    pacer.before_call("ec2", "CreateSnapshot")  # a bucket of its own
    pacer.before_call("ec2", "CreateTags")
    assert clock.slept == []


def test_overrides_and_a_share_of_the_budget(clock):
    pacer = _pacer(clock, limits={"CreateSnapshots": {"capacity": 10, "refill": 2}}, share=0.5)
    bucket = pacer.bucket("ec2", "CreateSnapshots")
    assert (bucket.capacity, bucket.refill) == (5, 1)
    assert (pacer.bucket("ec2", "CreateTags").capacity, pacer.bucket("ec2", "CreateTags").refill) == (50, 5)
    with pytest.raises(ValueError):
        _pacer(clock, share=0)
    with pytest.raises(ValueError):
        _pacer(clock, share=1.5)


def test_admission_reserves_only_what_can_be_spent_within_the_window(clock):
    pacer = _pacer(clock, limits={"CreateSnapshots": {"capacity": 5, "refill": 1}})
    assert pacer.admit("ec2", "CreateSnapshots", 50, within=0) == 5
    assert pacer.admit("ec2", "CreateSnapshots", 50, within=0) == 0
    # The promised calls are made two seconds later. A full bucket does not refill, so the model spends their
    # tokens then, not when they were promised: no tokens are promised twice.
    clock.sleep(2)
    assert pacer.admit("ec2", "CreateSnapshots", 50, within=0) == 0
    with pacer.prepaid("ec2", "CreateSnapshots", 5):
        for _call in range(5):
            assert pacer.before_call("ec2", "CreateSnapshots") == 0.0
    assert pacer.admit("ec2", "CreateSnapshots", 50, within=3) == 3
    # Those 3 are promised: a call made without a promise waits for them to refill and for its own token.
    assert pacer.seconds_until("ec2", "CreateSnapshots") == pytest.approx(4.0)
    assert pacer.before_call("ec2", "CreateSnapshots") == pytest.approx(4.0)


def test_calls_instances_make_themselves_are_spent_at_the_latest_instant_they_can_come(clock):
    pacer = _pacer(clock, limits={"CreateSnapshots": {"capacity": 5, "refill": 1}})
    assert pacer.admit("ec2", "CreateSnapshots", 5, within=0, made_within=4) == 5
    # Until then the bucket may still be full in the cloud (a full bucket does not refill): nothing more.
    clock.sleep(3)
    assert pacer.admit("ec2", "CreateSnapshots", 50, within=0) == 0
    clock.sleep(1)
    assert pacer.admit("ec2", "CreateSnapshots", 50, within=0) == 0  # spent at 4 s: empty
    clock.sleep(2)
    assert pacer.admit("ec2", "CreateSnapshots", 50, within=0) == 2


def test_reserved_calls_do_not_pay_twice(clock):
    pacer = _pacer(clock, limits={"CreateSnapshots": {"capacity": 2, "refill": 1}})
    assert pacer.admit("ec2", "CreateSnapshots", 2, within=0) == 2
    with pacer.prepaid("ec2", "CreateSnapshots"):
        assert pacer.before_call("ec2", "CreateSnapshots") == 0.0
        # A second attempt (a retry) is not covered by the reservation.
        assert pacer.before_call("ec2", "CreateSnapshots") == pytest.approx(1.0)
    assert clock.slept == pytest.approx([1.0])


def test_prepaid_tokens_belong_to_the_thread_that_reserved_them(clock):
    pacer = _pacer(clock, limits={"CreateSnapshots": {"capacity": 1, "refill": 1}})
    pacer.admit("ec2", "CreateSnapshots", 1, within=0)
    waits = []
    with pacer.prepaid("ec2", "CreateSnapshots"):
        other = threading.Thread(target=lambda: waits.append(pacer.before_call("ec2", "CreateSnapshots")))
        other.start()
        other.join()
    assert waits == [pytest.approx(1.0)]


def test_throttling_halves_the_rate_and_successes_recover_it(clock):
    pacer = _pacer(clock)
    bucket = pacer.bucket("ec2", "CreateSnapshots")
    pacer.after_call("ec2", "CreateSnapshots", error_code="RequestLimitExceeded")
    assert bucket.refill == pytest.approx(2.5)
    assert bucket.tokens <= 0
    pacer.after_call("ec2", "CreateSnapshots", error_code="RequestLimitExceeded")
    assert bucket.refill == pytest.approx(1.25)
    for _call in range(20):
        pacer.after_call("ec2", "CreateSnapshots")
    assert bucket.refill == pytest.approx(1.25 + 20 * 5 * pacing.RECOVERY_SHARE)
    for _call in range(1000):
        pacer.after_call("ec2", "CreateSnapshots")
    assert bucket.refill == pytest.approx(5.0)
    for _call in range(40):
        pacer.after_call("ec2", "CreateSnapshots", error_code="RequestLimitExceeded")
    assert bucket.refill == pytest.approx(5.0 * pacing.SLOWEST_SHARE)
    assert pacer.summary()["throttled_calls"] == {"CreateSnapshots": 42}


def test_other_errors_neither_slow_nor_recover(clock):
    pacer = _pacer(clock)
    bucket = pacer.bucket("ec2", "CreateSnapshots")
    pacer.after_call("ec2", "CreateSnapshots", error_code="RequestLimitExceeded")
    pacer.after_call("ec2", "CreateSnapshots", error_code="InvalidInstanceID.NotFound")
    assert bucket.refill == pytest.approx(2.5)


def test_the_floor_of_a_number_of_calls(clock):
    pacer = _pacer(clock)
    assert pacer.floor("ec2", "CreateSnapshots", 100) == 0
    assert pacer.floor("ec2", "CreateSnapshots", 1000) == pytest.approx(180.0)
    assert _pacer(clock, share=0.5).floor("ec2", "CreateSnapshots", 1000) == pytest.approx(380.0)


# --- the botocore hook: a real client, its HTTP answered by a stand-in transport ----------------------------------

THROTTLED = (b'<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>RequestLimitExceeded</Code>'
             b'<Message>Request limit exceeded.</Message></Error></Errors><RequestID>r-1</RequestID></Response>')
TAGGED = b'<CreateTagsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><return>true</return></CreateTagsResponse>'
NO_SNAPSHOTS = (b'<DescribeSnapshotsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><snapshotSet/>'
                b'</DescribeSnapshotsResponse>')


def _client_answering(answers, sent):
    client = boto3.client("ec2", region_name="us-east-1", aws_access_key_id="AKIDTEST", aws_secret_access_key="secret")

    def answer(request, **kwargs):
        sent.append(request)
        status, body = answers.pop(0)
        return AWSResponse(request.url, status, {}, _Raw(body))

    client.meta.events.register("before-send.ec2", answer)
    return client


class _Raw:
    def __init__(self, body):
        self.body = body

    def stream(self, **kwargs):
        yield self.body


def test_every_attempt_of_a_client_call_is_paced_and_throttling_is_learnt(clock):
    pacer = _pacer(clock, limits={"CreateTags": {"capacity": 1, "refill": 1}})
    sent = []
    client = pacing.attach(_client_answering([(200, TAGGED), (503, THROTTLED), (200, TAGGED)], sent), pacer)
    client.create_tags(Resources=["snap-0123456789abcdef0"], Tags=[{"Key": "a", "Value": "b"}])
    assert clock.slept == []
    # The second call waits a second for its token; the cloud still says the bucket is empty (someone else
    # spends it), so botocore retries, and that attempt waits on the halved rate: 2 s.
    client.create_tags(Resources=["snap-0123456789abcdef0"], Tags=[{"Key": "a", "Value": "b"}])
    assert len(sent) == 3
    assert clock.slept == pytest.approx([1.0, 2.0])
    summary = pacer.summary()
    assert summary["throttled_calls"] == {"CreateTags": 1}
    assert summary["calls"] == {"CreateTags": 3}


def test_the_hook_puts_unfiltered_describes_in_their_own_bucket(clock):
    pacer = _pacer(clock)
    sent = []
    client = pacing.attach(_client_answering([(200, NO_SNAPSHOTS)] * 2, sent), pacer)
    client.describe_snapshots()
    client.describe_snapshots(Filters=[{"Name": "tag-key", "Values": ["appconsistent:set-id"]}])
    assert pacer.bucket("ec2", "DescribeSnapshots:unfiltered").tokens == pytest.approx(49)
    assert pacer.bucket("ec2", "DescribeSnapshots").tokens == pytest.approx(99)


def test_the_summary_counts_every_token_the_run_spent_once(clock):
    pacer = _pacer(clock)
    assert pacer.admit("ec2", "CreateSnapshots", 150, within=10) == 150  # 100 in the bucket, 50 refilled in 10 s
    pacer.refund("ec2", "CreateSnapshots", 10)  # ten instances were not frozen after all
    with pacer.prepaid("ec2", "CreateSnapshots", 140):
        for _call in range(140):
            pacer.before_call("ec2", "CreateSnapshots")
    for _call in range(60):
        pacer.before_call("ec2", "CreateSnapshots")  # the crash sets of another 60 instances
    summary = pacer.summary()
    assert summary["calls"] == {"CreateSnapshots": 200}
    # 200 tokens of a bucket of 100 refilling 5 a second: at least 20 s.
    assert summary["rate_floor_s"] == pytest.approx(20.0)
    assert "estimated_floor_s" not in summary
    pacer.plan("ec2", "CreateSnapshots", 1000)
    assert pacer.summary()["estimated_floor_s"] == pytest.approx(180.0)


def test_admitted_batches_go_out_as_the_bucket_refills(clock):
    pacer = _pacer(clock, limits={"CreateSnapshots": {"capacity": 5, "refill": 1}})
    stamps = []
    batches = []
    for batch in pacing.admitted_batches(pacer, "ec2", "CreateSnapshots", [f"i-{n}" for n in range(12)], 50, clock.sleep,
                                         made_within=0):
        stamps.append(clock.now)
        batches.append(len(batch))
    # The first batch waits a second for more tokens (the bucket holds 5 at most), then one instance a second:
    # never more quiesced than the bucket can serve at once, and no batch from an empty bucket.
    assert batches == [5] + [1] * 7
    assert stamps[-1] - stamps[0] == pytest.approx(7.0)
    assert pacer.bucket("ec2", "CreateSnapshots").tokens >= -1e-9


def test_instances_seen_done_free_their_promised_tokens_early(clock):
    pacer = _pacer(clock, limits={"CreateSnapshotGroup": {"capacity": 3, "refill": 1}})
    done = []
    batches = []
    # The instances could take half an hour (their prescripts) to call; each is seen done two seconds after it is sent.
    for batch in pacing.admitted_batches(pacer, "ecs", "CreateSnapshotGroup", [f"i-{n}" for n in range(7)], 100,
                                         clock.sleep, made_within=1800, finished=lambda: list(done)):
        batches.append((clock.now, len(batch)))
        clock.sleep(2)
        done.extend(f"i-{n}" for n in range(sum(n for _at, n in batches)))
    assert sum(n for _at, n in batches) == 7
    assert batches[-1][0] - batches[0][0] < 20  # not 1800 s


def test_refunded_promises_of_instance_calls_are_forgotten(clock):
    pacer = _pacer(clock, limits={"CreateSnapshots": {"capacity": 3, "refill": 1}})
    assert pacer.admit("ec2", "CreateSnapshots", 3, within=0, made_within=1800) == 3
    pacer.refund("ec2", "CreateSnapshots", 2)  # two instances could not be sent the command
    assert pacer.admit("ec2", "CreateSnapshots", 3, within=0) == 2
    clock.sleep(1800)
    pacer.seconds_until("ec2", "CreateSnapshots")
    assert pacer.bucket("ec2", "CreateSnapshots").reserved == 2  # the one sent is spent; the 2 promised later wait


def test_another_region_has_buckets_of_its_own(clock):
    # EC2 throttles per account and Region: a copy's destination client spends the destination's CopySnapshot tokens,
    # not the source Region's, and is paced by them.
    pacer = _pacer(clock, limits={"CopySnapshot": {"capacity": 2, "refill": 1}})
    destination = pacer.in_region("eu-west-1")
    for _call in range(2):
        destination.before_call("ec2", "CopySnapshot")
    assert clock.slept == []
    pacer.before_call("ec2", "CopySnapshot")  # the run's own Region: a full bucket
    assert clock.slept == []
    destination.before_call("ec2", "CopySnapshot")
    assert clock.slept == pytest.approx([1.0])
    assert pacer.bucket("ec2", "CopySnapshot", "eu-west-1") is not pacer.bucket("ec2", "CopySnapshot")
    summary = pacer.summary()
    assert summary["calls"] == {"CopySnapshot": 4}
    assert summary["rate_floor_s"] == pytest.approx(1.0)  # three calls of one Region's bucket of 2 refilling 1 a second


def test_a_client_of_another_region_is_paced_by_that_regions_buckets(clock):
    pacer = _pacer(clock, limits={"CreateTags": {"capacity": 1, "refill": 1}})
    sent = []
    home = pacing.attach(_client_answering([(200, TAGGED)], sent), pacer)
    other = pacing.attach(_client_answering([(200, TAGGED)] * 2, sent), pacer.in_region("eu-west-1"))
    home.create_tags(Resources=["snap-0123456789abcdef0"], Tags=[{"Key": "a", "Value": "b"}])
    other.create_tags(Resources=["snap-0123456789abcdef0"], Tags=[{"Key": "a", "Value": "b"}])
    assert clock.slept == []
    other.create_tags(Resources=["snap-0123456789abcdef0"], Tags=[{"Key": "a", "Value": "b"}])
    assert clock.slept == pytest.approx([1.0])


def test_check_mode_plans_count_per_region(clock):
    pacer = _pacer(clock)
    pacer.plan("ec2", "DeleteSnapshot", 10_000)
    # 10,000 DeleteSnapshot calls from the published bucket of 100 refilling 5 a second: 1980 s, over half an hour.
    assert pacer.summary()["estimated_floor_s"] == pytest.approx(1980.0)
