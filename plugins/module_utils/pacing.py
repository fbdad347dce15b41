# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Client-side pacing of AWS API calls: the account's published token buckets, modelled per API.

EC2 throttles every account per Region with one token bucket per API (EC2 developer guide, "Request
throttling for the Amazon EC2 API"). The buckets belong to the account: the instances' own calls (the VSS
agent's CreateSnapshots) and other tools spend the same tokens. A :class:`Pacer` keeps a model of those
buckets for one module run, shared by all its threads, so that:

- a call waits for a token on the controller instead of being answered ``RequestLimitExceeded``;
- an engine can *reserve* the calls that end a freeze before it freezes anything (admission control), so no
  instance waits frozen for a token;
- throttling answers (someone else spends part of the bucket) slow the model down, and successes let it
  recover towards the published rate (additive increase, multiplicative decrease).
"""

from __future__ import annotations

import contextlib
import re
import threading
import time

# EC2's published buckets: API -> (capacity, refill per second).
EC2_BUCKETS = {
    "CreateSnapshot": (100, 5),
    "CreateSnapshots": (100, 5),
    "CreateTags": (100, 10),
    "DeleteTags": (100, 10),
    "CreateVolume": (100, 5),
    "DeleteVolume": (100, 5),
    "DeleteSnapshot": (100, 5),
    "ModifySnapshotAttribute": (100, 5),
    "StartInstances": (5, 2),
    "TerminateInstances": (100, 5),
    "CopyImage": (100, 1),
}
EC2_MUTATING = (50, 5)  # the other mutating actions: AttachVolume, DetachVolume, StopInstances, CopySnapshot, ...
EC2_READ = (100, 20)  # non-mutating actions: Describe*, List*, Get*, Search*
# DescribeInstances and a few others called without a filter and without pagination have a smaller bucket.
EC2_UNFILTERED = (50, 10)
EC2_UNFILTERED_APIS = frozenset(("DescribeInstances", "DescribeInstanceStatus", "DescribeSnapshots", "DescribeVolumes"))
READ_PREFIXES = ("Describe", "List", "Get", "Search")

# SSM publishes no per-API table in this form (Service Quotas shows the account's values). Until an operator
# states them, SSM calls are paced at the refill of EC2's mutating actions with a small burst: a fleet run that
# sends 50 instances per SendCommand and reads status once per command fits in them, and the adaptive back-off
# covers an account whose numbers are lower.
SSM_BUCKETS = {
    "SendCommand": (20, 5),
    "ListCommandInvocations": (20, 5),
    "GetCommandInvocation": (20, 10),
    "DescribeInstanceInformation": (20, 5),
}
SSM_OTHER = (20, 5)
# Alibaba Cloud shows its ECS thresholds only in the account's Quota Center. Until an operator states them, ECS
# actions are paced in EC2's published shape for the matching actions: the snapshot group like CreateSnapshots,
# tags like CreateTags, reads like EC2's reads.
ECS_BUCKETS = {
    "CreateSnapshotGroup": (100, 5),
    "CreateSnapshot": (100, 5),
    "DeleteSnapshot": (100, 5),
    "DeleteSnapshotGroup": (100, 5),
    "TagResources": (100, 10),
    "UntagResources": (100, 10),
    "CreateDisk": (100, 5),
    "StartInstance": (5, 2),
}
SERVICE_BUCKETS = {"ec2": (EC2_BUCKETS, EC2_MUTATING, EC2_READ), "ssm": (SSM_BUCKETS, SSM_OTHER, SSM_OTHER),
                   "ecs": (ECS_BUCKETS, EC2_MUTATING, EC2_READ)}

THROTTLING_CODES = frozenset(("RequestLimitExceeded", "Throttling", "ThrottlingException", "TooManyRequestsException",
                              "Throttling.User", "Throttling.Api", "Throttling.Resource"))

# Seconds within which an agent that was sent a command makes the API call the command makes (the VSS document
# calls CreateSnapshots within its pause of at most 10 s, after a delivery of a few seconds). The model spends
# the call's token then, so that it never counts on a token the cloud has not refilled.
AGENT_CALL_WITHIN = 15.0

# A throttling answer halves the modelled refill rate, never below this share of the stated rate; each
# successful call gives back this share of it.
SLOWEST_SHARE = 0.05
RECOVERY_SHARE = 0.02


_API_NAME = re.compile(r"[A-Z][A-Za-z0-9]{2,63}")


def parse_limits(limits):
    """The api_rate_limits option checked: {API: {capacity: > 0, refill: > 0}}; ValueError with one sentence."""
    parsed = {}
    for name, bucket in (limits or {}).items():
        if not isinstance(name, str) or not _API_NAME.fullmatch(name):
            raise ValueError(f"api_rate_limits: {name!r} is not an API action name such as CreateSnapshots.")
        try:
            capacity, refill = float(bucket["capacity"]), float(bucket["refill"])
        except (TypeError, KeyError, ValueError):
            capacity = refill = 0
        if not (0 < capacity <= 1e6 and 0 < refill <= 1e6) or set(bucket) - {"capacity", "refill"}:
            raise ValueError(f"api_rate_limits.{name} needs a positive capacity and refill (tokens a second) and "
                             f"nothing else, for example {{capacity: 100, refill: 5}}; got {bucket!r}.")
        parsed[name] = dict(capacity=capacity, refill=refill)
    return parsed


class TokenBucket:
    """One API's bucket as the controller models it.

    ``tokens`` follows the calls made (it may go below zero for calls already waiting their turn); ``reserved``
    counts the calls an engine promised to make soon (admission). A reserved token is spent when its call is
    made, not when it is promised: while the real bucket is full it does not refill, so spending it early in
    the model would let the model run ahead of the cloud.
    """

    def __init__(self, capacity, refill, clock, cushion=None):
        if capacity <= 0 or refill <= 0:
            raise ValueError("a token bucket needs a positive capacity and refill rate")
        self.capacity = float(capacity)
        self.stated_refill = float(refill)
        self.refill = float(refill)
        self.clock = clock
        self.tokens = float(capacity)
        # One token (a tenth of a small bucket) is never counted on: calls paced exactly at the refill rate reach the
        # cloud a little bunched (threads, network), and the cloud's bucket would have nothing to spare for them.
        # At least a tenth of a second of refill, as arrivals are bunched in time, whatever the bucket's size.
        self.cushion = max(min(1.0, self.capacity / 10.0), self.refill * 0.1) if cushion is None else cushion
        self.reserved = 0
        self.due = []  # [(when, count)]: promised calls that instances make themselves, spent at the latest then
        self.stamp = clock()

    def _refill_to(self, when):
        if when > self.stamp:
            self.tokens = min(self.capacity, self.tokens + (when - self.stamp) * self.refill)
            self.stamp = when

    def _update(self):
        now = self.clock()
        # Calls made by instances are not seen: their tokens are spent at the latest instant the call can come.
        # Spending them later than the cloud did keeps the model below the real bucket, never above it.
        for when, count in sorted(self.due):
            if when > now:
                break
            self._refill_to(when)
            self.tokens -= count
            self.reserved = max(0, self.reserved - count)
        self.due = [(when, count) for when, count in self.due if when > now]
        self._refill_to(now)

    def take(self, count=1):
        """Spend count tokens when the call is sent; the seconds to wait until then (after the reserved ones).

        The call waits until the bucket holds it, the reserved tokens and the cushion. Its tokens are spent at the
        instant it is sent, not when it asks: a full bucket does not refill meanwhile, so spending them early would
        let the model run ahead of the cloud by the wait (all of the cushion of a bucket of one token).
        """
        self._update()
        now = self.clock()
        send = max(now, self.stamp) + max(0.0, (count + self.reserved + self.cushion - self.tokens) / self.refill)
        self._refill_to(send)
        self.tokens -= count
        return max(0.0, send - now)

    def _level_now(self):
        """Tokens held now, counting as spent the calls still waiting to be sent (the model's stamp ahead of now)."""
        return self.tokens - max(0.0, self.stamp - self.clock()) * self.refill

    def seconds_until(self, count=1):
        """Seconds until count more tokens could be spent without waiting (0 when they can now)."""
        self._update()
        return max(0.0, (count + self.reserved + self.cushion - self._level_now()) / self.refill)

    def available_within(self, seconds):
        """How many tokens can be promised, to be spent without a wait longer than seconds from now."""
        self._update()
        return max(0, int(self._level_now() - self.reserved - self.cushion + seconds * self.refill + 1e-9))

    def reserve(self, count, spent_by=None):
        """Promise count calls; spent_by: the instant by which calls that the model does not see are made."""
        self.reserved += count
        if spent_by is not None:
            self.due.append((spent_by, count))

    def settle(self, count=1):
        """A promised call is made: its token is spent now."""
        self._update()
        self.reserved = max(0, self.reserved - count)
        self.tokens -= count

    def release(self, count):
        """Promised calls that will not be made."""
        self.reserved = max(0, self.reserved - count)
        self._drop_due(count, latest_first=True)

    def settle_due(self, count):
        """Promised calls of instances seen done: spent now, not at the latest instant they could have come."""
        self._update()
        self.settle(self._drop_due(count, latest_first=False))

    def _drop_due(self, count, latest_first):
        """Take up to count promises off the due list; how many were taken."""
        left, due = count, []
        for when, promised in sorted(self.due, reverse=latest_first):
            taken = min(left, promised)
            left -= taken
            if promised > taken:
                due.append((when, promised - taken))
        self.due = due
        return count - left

    def throttled(self):
        """The cloud said the bucket is empty: someone else spends it too."""
        self._update()
        self.tokens = min(self.tokens, 0.0)
        self.refill = max(self.stated_refill * SLOWEST_SHARE, self.refill / 2.0)

    def succeeded(self):
        if self.refill < self.stated_refill:
            self._update()
            self.refill = min(self.stated_refill, self.refill + self.stated_refill * RECOVERY_SHARE)


class Pacer:
    """The token buckets of one account and Region as one module run models them.

    ``limits`` overrides buckets per API (``{"CreateSnapshots": {"capacity": 50, "refill": 2.5}}``);
    ``share`` is the part of every bucket this run may spend (another controller, or another team's jobs,
    spending the rest).
    """

    def __init__(self, limits=None, share=1.0, clock=time.monotonic, sleep=time.sleep, cushion=None):
        if not 0 < share <= 1:
            raise ValueError(f"api_budget_share must be above 0 and at most 1; got {share}.")
        self.limits = dict(limits or {})
        self.share = float(share)
        self.cushion = cushion
        self.clock = clock
        self.sleep = sleep
        self._lock = threading.Lock()
        self._buckets = {}
        self._prepaid = threading.local()
        self.calls = {}
        self.throttled_calls = {}
        self.planned = {}
        self.bucket_calls = {}
        self.waited = 0.0

    # --- the model ------------------------------------------------------------------------------------------

    @staticmethod
    def bucket_name(operation, params=None):
        """The bucket an EC2/SSM call draws from; describes without a filter and without pagination (ids are
        neither) share a smaller one."""
        if operation in EC2_UNFILTERED_APIS and params is not None:
            if not any(params.get(key) for key in ("Filters", "MaxResults", "NextToken")):
                return operation + ":unfiltered"
        return operation

    def _stated(self, service, name):
        operation = name.split(":")[0]
        override = self.limits.get(operation)
        if override:
            return override["capacity"], override["refill"]
        if name.endswith(":unfiltered"):
            return EC2_UNFILTERED
        named, mutating, read = SERVICE_BUCKETS.get(service, SERVICE_BUCKETS["ec2"])
        if operation in named:
            return named[operation]
        return read if operation.startswith(READ_PREFIXES) else mutating

    def bucket(self, service, name, region=None):
        """The bucket of one API; region None is the run's own Region, another Region has buckets of its own."""
        key = (service, name, region)
        with self._lock:
            if key not in self._buckets:
                capacity, refill = self._stated(service, name)
                self._buckets[key] = TokenBucket(capacity * self.share, refill * self.share, self.clock, self.cushion)
            return self._buckets[key]

    # --- what callers use -----------------------------------------------------------------------------------

    def before_call(self, service, operation, name=None, region=None):
        """Wait for the call's token (none when the engine reserved it beforehand); name is its bucket, region the
        Region of a client made for another Region than the run's (a copy's destination)."""
        name = name or operation
        credits = getattr(self._prepaid, "credits", None) if region is None else None
        with self._lock:
            self.calls[operation] = self.calls.get(operation, 0) + 1
            prepaid = bool(credits and credits.get((service, name), 0) > 0)
            if prepaid:
                credits[(service, name)] -= 1  # counted when it was reserved
            else:
                self.bucket_calls[(service, name, region)] = self.bucket_calls.get((service, name, region), 0) + 1
        bucket = self.bucket(service, name, region)
        with self._lock:
            if prepaid:
                bucket.settle()
                return 0.0
            delay = bucket.take()
            self.waited += delay
        if delay > 0:
            self.sleep(delay)
        return delay

    def after_call(self, service, operation, name=None, error_code=None, region=None):
        bucket = self.bucket(service, name or operation, region)
        with self._lock:
            if error_code in THROTTLING_CODES:
                self.throttled_calls[operation] = self.throttled_calls.get(operation, 0) + 1
                bucket.throttled()
            elif error_code is None:
                bucket.succeeded()

    def admit(self, service, operation, wanted, within, made_within=None):
        """Promise up to wanted calls that can be made within seconds from now; how many were promised.

        An engine asks before it quiesces instances: it freezes only as many as it can snapshot at once. The
        controller's own promised calls then run in :meth:`prepaid`. Calls an instance makes itself (the VSS
        agent's) are not seen here: ``made_within`` is the longest the instance can take to make them.
        """
        bucket = self.bucket(service, operation)
        with self._lock:
            count = min(wanted, bucket.available_within(within))
            if count > 0:
                bucket.reserve(count, None if made_within is None else self.clock() + made_within)
                key = (service, operation, None)
                self.bucket_calls[key] = self.bucket_calls.get(key, 0) + count
            return count

    def refund(self, service, operation, count):
        """Promised controller calls that will not be made (the instance was not frozen after all)."""
        if count > 0:
            bucket = self.bucket(service, operation)
            with self._lock:
                bucket.release(count)
                key = (service, operation, None)
                self.bucket_calls[key] = self.bucket_calls.get(key, 0) - count

    def settle(self, service, operation, count):
        """Calls promised with made_within that are known to be made (their command ended): spent now."""
        if count > 0:
            bucket = self.bucket(service, operation)
            with self._lock:
                bucket.settle_due(count)

    def seconds_until(self, service, operation, count=1):
        bucket = self.bucket(service, operation)
        with self._lock:
            return bucket.seconds_until(count)

    @contextlib.contextmanager
    def prepaid(self, service, operation, count=1):
        """Calls made in this block by this thread spend tokens reserved with :meth:`admit` first."""
        credits = getattr(self._prepaid, "credits", None)
        if credits is None:
            credits = self._prepaid.credits = {}
        key = (service, operation)
        credits[key] = credits.get(key, 0) + count
        try:
            yield
        finally:
            credits.pop(key, None)

    def stated_limit(self, service, operation):
        """(capacity, refill a second) of one API's bucket that this run may spend: the stated numbers times its share."""
        capacity, refill = self._stated(service, operation)
        return capacity * self.share, refill * self.share

    def floor(self, service, operation, count):
        """Seconds that count calls of one API take at least, from a full bucket at the stated rate."""
        capacity, refill = self.stated_limit(service, operation)
        return max(0.0, (count - capacity) / refill)  # the cloud's floor, without cushion

    def plan(self, service, operation, count, region=None):
        """Count calls a check-mode run would make, for its estimate of the time the limits impose."""
        with self._lock:
            key = (service, operation, region)
            self.planned[key] = self.planned.get(key, 0) + count

    def in_region(self, region):
        """This run's buckets of another Region, for a client of that Region (a copy's destination)."""
        return RegionPacer(self, region)

    def summary(self):
        """What the run spent on pacing, for the module result: its calls, the floor the buckets put under them
        (the slowest API's calls beyond a full bucket, at the stated refill rate), the waits and the throttling."""
        with self._lock:
            floor = max([self.floor(service, name, count) for (service, name, _region), count in self.bucket_calls.items()]
                        or [0.0])
            summary = dict(calls=dict(sorted(self.calls.items())), throttled_calls=dict(sorted(self.throttled_calls.items())),
                           waited_for_tokens_s=round(self.waited, 3), rate_floor_s=round(floor, 1), share=self.share)
            if self.planned:
                summary["estimated_floor_s"] = round(max(self.floor(s, o, n) for (s, o, _r), n in self.planned.items()), 1)
            return summary


class RegionPacer:
    """A Pacer's buckets of one other Region: EC2 throttles per account and Region, so the calls of a client made
    for another Region (CopySnapshot and the describes of a copy's destination) spend that Region's tokens."""

    def __init__(self, pacer, region):
        self.pacer = pacer
        self.region = region

    def before_call(self, service, operation, name=None):
        return self.pacer.before_call(service, operation, name, region=self.region)

    def after_call(self, service, operation, name=None, error_code=None):
        self.pacer.after_call(service, operation, name, error_code=error_code, region=self.region)


def admitted_batches(pacer, service, operation, items, size, sleep, made_within, finished=None):
    """items in batches of at most size, each given once the calls of operation it will make are reserved; each
    instance makes its call itself within made_within seconds, or before finished() (the instances already sent
    whose command has ended) names it.

    For instances that call the API themselves while quiesced (the VSS agent's CreateSnapshots, the freeze
    helper with initiator instance): they are quiesced only as fast as the account's bucket lets them finish.
    """
    items = list(items)
    settled = set()
    while items:
        wanted = min(size, len(items))
        wait = pacer.seconds_until(service, operation, wanted)
        if wait > 0 and finished is not None:
            done = set(finished()) - settled
            if done:
                settled |= done
                pacer.settle(service, operation, len(done))
                wait = pacer.seconds_until(service, operation, wanted)
        if wait > 0:
            # Up to a second for more tokens: fewer, fuller commands (SendCommand has a bucket of its own).
            sleep(max(0.05, min(wait, 1.0)))
        count = pacer.admit(service, operation, wanted, within=0, made_within=made_within)
        if count:
            batch, items = items[:count], items[count:]
            yield batch


def of(module, clock=time.monotonic, sleep=time.sleep):
    """The module run's pacer; a fresh one (the published buckets) for a stand-in module that has none."""
    return getattr(module, "pacer", None) or Pacer(clock=clock, sleep=sleep)


# --- botocore: every attempt of every call of a client passes here ----------------------------------------------

_CONTEXT_KEY = "appconsistent_pacing"


def attach(client, pacer):
    """Pace every request attempt of a boto3 client, botocore's own retries included, with pacer (a Pacer, or its
    :meth:`Pacer.in_region` for a client of another Region)."""
    service = client.meta.service_model.service_id.hyphenize()
    events = client.meta.events

    def remember_bucket(params, model, context, **kwargs):
        context[_CONTEXT_KEY] = Pacer.bucket_name(model.name, params)

    def wait_for_token(request, operation_name, **kwargs):
        pacer.before_call(service, operation_name, getattr(request, "context", {}).get(_CONTEXT_KEY))

    def record_answer(response, operation, request_dict, caught_exception=None, **kwargs):
        if response is None:
            return None  # a connection error: no answer from the bucket either way
        http, parsed = response
        code = (parsed.get("Error") or {}).get("Code") if http.status_code >= 300 else None
        pacer.after_call(service, operation.name, request_dict.get("context", {}).get(_CONTEXT_KEY), error_code=code or None)
        return None

    events.register(f"before-parameter-build.{service}", remember_bucket, unique_id=f"appconsistent-pacing-params-{service}")
    events.register_first(f"request-created.{service}", wait_for_token, unique_id=f"appconsistent-pacing-wait-{service}")
    events.register(f"needs-retry.{service}", record_answer, unique_id=f"appconsistent-pacing-answer-{service}")
    return client
