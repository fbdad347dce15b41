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
# states them, SSM calls are modelled with EC2's category numbers, and the adaptive back-off covers the rest.
SERVICE_DEFAULTS = {"ec2": (EC2_MUTATING, EC2_READ), "ssm": (EC2_MUTATING, EC2_READ)}

THROTTLING_CODES = frozenset(("RequestLimitExceeded", "Throttling", "ThrottlingException", "TooManyRequestsException"))

# A throttling answer halves the modelled refill rate, never below this share of the stated rate; each
# successful call gives back this share of it.
SLOWEST_SHARE = 0.05
RECOVERY_SHARE = 0.02


class TokenBucket:
    """One API's bucket as the controller models it: tokens may go below zero for calls already promised."""

    def __init__(self, capacity, refill, clock):
        if capacity <= 0 or refill <= 0:
            raise ValueError("a token bucket needs a positive capacity and refill rate")
        self.capacity = float(capacity)
        self.stated_refill = float(refill)
        self.refill = float(refill)
        self.clock = clock
        self.tokens = float(capacity)
        self.stamp = clock()

    def _update(self):
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.refill)
        self.stamp = now

    def take(self, count=1):
        """Spend count tokens now; the seconds to wait until they have really refilled."""
        self._update()
        self.tokens -= count
        return max(0.0, -self.tokens / self.refill)

    def seconds_until(self, count=1):
        """Seconds until count more tokens could be spent without waiting (0 when they can now)."""
        self._update()
        return max(0.0, (count - self.tokens) / self.refill)

    def available_within(self, seconds):
        """How many tokens can be spent, without a wait longer than seconds, from now."""
        self._update()
        return max(0, int(self.tokens + seconds * self.refill + 1e-9))

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

    def __init__(self, limits=None, share=1.0, clock=time.monotonic, sleep=time.sleep):
        if not 0 < share <= 1:
            raise ValueError("the share of the API budget must be above 0 and at most 1")
        self.limits = dict(limits or {})
        self.share = float(share)
        self.clock = clock
        self.sleep = sleep
        self._lock = threading.Lock()
        self._buckets = {}
        self._prepaid = threading.local()
        self.calls = {}
        self.throttled_calls = {}
        self.waited = 0.0

    # --- the model ------------------------------------------------------------------------------------------

    @staticmethod
    def bucket_name(operation, params=None):
        """The bucket an EC2/SSM call draws from; unfiltered, unpaginated describes share a smaller one."""
        if operation in EC2_UNFILTERED_APIS and params is not None:
            if not any(params.get(key) for key in ("Filters", "MaxResults", "NextToken", "InstanceIds",
                                                   "SnapshotIds", "VolumeIds")):
                return operation + ":unfiltered"
        return operation

    def _stated(self, service, name):
        operation = name.split(":")[0]
        override = self.limits.get(operation)
        if override:
            return override["capacity"], override["refill"]
        if name.endswith(":unfiltered"):
            return EC2_UNFILTERED
        if service == "ec2" and operation in EC2_BUCKETS:
            return EC2_BUCKETS[operation]
        mutating, read = SERVICE_DEFAULTS.get(service, (EC2_MUTATING, EC2_READ))
        return read if operation.startswith(READ_PREFIXES) else mutating

    def bucket(self, service, name):
        key = (service, name)
        with self._lock:
            if key not in self._buckets:
                capacity, refill = self._stated(service, name)
                self._buckets[key] = TokenBucket(capacity * self.share, refill * self.share, self.clock)
            return self._buckets[key]

    # --- what callers use -----------------------------------------------------------------------------------

    def before_call(self, service, operation, name=None):
        """Wait for the call's token (none when the engine reserved it beforehand); name is its bucket."""
        name = name or operation
        credits = getattr(self._prepaid, "credits", None)
        with self._lock:
            self.calls[operation] = self.calls.get(operation, 0) + 1
            if credits and credits.get((service, name), 0) > 0:
                credits[(service, name)] -= 1
                return 0.0
        bucket = self.bucket(service, name)
        with self._lock:
            delay = bucket.take()
            self.waited += delay
        if delay > 0:
            self.sleep(delay)
        return delay

    def after_call(self, service, operation, name=None, error_code=None):
        bucket = self.bucket(service, name or operation)
        with self._lock:
            if error_code in THROTTLING_CODES:
                self.throttled_calls[operation] = self.throttled_calls.get(operation, 0) + 1
                bucket.throttled()
            elif error_code is None:
                bucket.succeeded()

    def admit(self, service, operation, wanted, within):
        """Reserve up to wanted tokens that can be spent within seconds from now; how many were reserved.

        An engine asks before it quiesces instances: it freezes only as many as it can snapshot at once.
        """
        bucket = self.bucket(service, operation)
        with self._lock:
            count = min(wanted, bucket.available_within(within))
            if count > 0:
                bucket.take(count)
            return count

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

    def floor(self, service, operation, count):
        """Seconds that count calls of one API take at least, from a full bucket at the stated rate."""
        capacity, refill = self._stated(service, operation)
        return max(0.0, (count - capacity * self.share) / (refill * self.share))

    def summary(self):
        """What the run spent on pacing, for the module result."""
        with self._lock:
            return dict(calls=dict(sorted(self.calls.items())),
                        throttled_calls=dict(sorted(self.throttled_calls.items())),
                        waited_for_tokens_s=round(self.waited, 3), share=self.share)


# --- botocore: every attempt of every call of a client passes here ----------------------------------------------

_CONTEXT_KEY = "appconsistent_pacing"


def attach(client, pacer):
    """Pace every request attempt of a boto3 client, botocore's own retries included, with pacer."""
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
