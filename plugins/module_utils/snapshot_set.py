# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The snapshot set and its tags: the one place that knows the tag schema.

A set is the snapshots of one instance taken at one point in time. Its state
lives in the cloud as tags on every member, so any controller can find,
restore or prune it. The consistency written is what was achieved, never what
was asked for.
"""

from __future__ import annotations

import datetime
import re
import secrets

TAG_PREFIX = "appconsistent:"
TAG_SET_ID = TAG_PREFIX + "set-id"
TAG_INSTANCE_ID = TAG_PREFIX + "instance-id"
TAG_DEVICE = TAG_PREFIX + "device"
TAG_CONSISTENCY = TAG_PREFIX + "consistency"
TAG_RUN_ID = TAG_PREFIX + "run-id"
TAG_DELETE_AFTER = TAG_PREFIX + "delete-after"
# How many snapshots the whole set has, written on every member when the set is made (and kept by a copy): a set
# that holds fewer (a copy cut short, a VSS run that missed a volume) proves itself incomplete.
TAG_MEMBERS = TAG_PREFIX + "members"
# The set's own level, on every member: the weakest level over the members in the quiesce scope (those backing the
# filesystems that were to be frozen). appconsistent:consistency is what each member itself achieved, so the root
# volume of a set that froze /data is crash while the set is application. Sets made before this tag existed carry
# only appconsistent:consistency, the same on every member, and are read as they always were.
TAG_SET_CONSISTENCY = TAG_PREFIX + "set-consistency"
# A set's last restore test (verification.py): written after the set is made, so not counted among the tags a
# set is made with, but no user tag may take its key.
TAG_VERIFICATION = TAG_PREFIX + "verification"
SET_TAG_KEYS = (TAG_SET_ID, TAG_INSTANCE_ID, TAG_DEVICE, TAG_CONSISTENCY, TAG_RUN_ID, TAG_DELETE_AFTER, TAG_MEMBERS,
                TAG_SET_CONSISTENCY)

# Weakest first. "offline" (instance stopped or volumes unmounted) is the strongest.
CONSISTENCY_LEVELS = ("crash", "filesystem", "application", "offline")

# Evidence tags owned by the providers; we read them and never write them.
EVIDENCE_APPLICATION = ("appconsistent",)  # AWS AppConsistent, Alibaba AppConsistent / APPConsistent
EVIDENCE_FILESYSTEM = ("fsconsistent",)
PROVIDER_OWNED_TAGS = ("AppConsistent", "APPConsistent", "FsConsistent", "Device", "AwsVssConfig")

# Errors that leave an instance needing the operator now (a filesystem frozen or unmounted, an instance down):
# they fail the host even with a good set, and they are reported over an earlier error. PluginExit12 is the
# Alibaba plug-in's "I/O could not be resumed", the counterpart of the AWS freeze helper's Thaw211.
URGENT_ERRORS = ("RemountFailed", "Thaw211", "PluginExit12", "StartTimeout", "StartFailed", "StillStopping")
# Errors that say the set lacks a member it was to have: the host fails whatever on_fallback says, since a set that
# cannot bring the instance back whole is not a weaker fallback but no backup of it.
INCOMPLETE_ERRORS = ("IncompleteSet",)

# Matched whole (fullmatch): "7d\n" is not a duration.
_DURATION = re.compile(r" *([0-9]+) *([smhdw]) *")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# The longest retention: a hundred years. Beyond a few thousand years the instant no longer fits a date at all.
DURATION_MAX_DAYS = 36500
_RUN_ID = re.compile(r"[A-Za-z0-9._:/=+@-]{1,128}")
# ASCII digits only: str.isdigit() takes other scripts' digits (int() reads "\u0663" as 3) and superscripts (int()
# raises on "\u00b2"), and str.strip() takes U+00A0; neither is a count this collection wrote.
_MEMBERS = re.compile(r" *([0-9]+) *")


def existing_set_error(found):
    """(code, message) when a set found by its run id proves itself incomplete, else None.

    Such a set is not taken again under the same run id (a rerun never makes a second set), but it is no backup
    of the instance, and the host fails saying so.
    """
    reason = found.missing_reason
    if reason is None:
        return None
    return ("IncompleteSet", f"set {found.set_id}, made earlier with this run_id, is incomplete ({reason}): it "
                             "cannot bring the instance back whole; take a new set with another run_id")


def merge_error(current, code, message):
    """The error an instance reports: the first is the cause, unless a later one needs the operator now."""
    if current is None:
        return dict(code=code, message=message)
    if code in URGENT_ERRORS and current.get("code") not in URGENT_ERRORS:
        return dict(code=code, message=f"{message} (before that: {current['message']})")
    return current


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


def consistency_rank(level):
    """Position of a level in CONSISTENCY_LEVELS; unknown or missing levels rank below crash."""
    try:
        return CONSISTENCY_LEVELS.index(level)
    except ValueError:
        return -1


def at_least(level, minimum):
    return consistency_rank(level) >= consistency_rank(minimum)


def weakest(levels):
    """The consistency of a set is that of its weakest member."""
    levels = list(levels)
    if not levels:
        return None
    return min(levels, key=consistency_rank)


def consistency_tags(member_level, set_level=None):
    """The two consistency tags of one member: what it achieved and what its set achieved (the same by default)."""
    for level in (member_level, set_level):
        if level is not None and level not in CONSISTENCY_LEVELS:
            raise ValueError(f"unknown consistency {level!r}")
    return {TAG_CONSISTENCY: member_level, TAG_SET_CONSISTENCY: set_level or member_level}


def was_quiesced(member_tags):
    """Whether a member was quiesced: its own label is above crash."""
    return consistency_rank((member_tags or {}).get(TAG_CONSISTENCY)) > consistency_rank("crash")


def set_consistency(member_tags):
    """The level of a set from its members' tags: the weakest appconsistent:set-consistency its members carry, or,
    for a set made before that tag existed, the weakest appconsistent:consistency (every member carried the set's)."""
    member_tags = [tags or {} for tags in member_tags]
    stated = [tags.get(TAG_SET_CONSISTENCY) for tags in member_tags if tags.get(TAG_SET_CONSISTENCY) is not None]
    if stated:
        return weakest(stated)
    return weakest(tags.get(TAG_CONSISTENCY) for tags in member_tags)


def parse_duration(text, option="delete_after"):
    """'7d', '12h', '90m', '2w', '30s' -> timedelta, at most DURATION_MAX_DAYS.

    Raises ValueError with a message naming the option and the accepted forms.
    """
    match = _DURATION.fullmatch(text) if isinstance(text, str) else None
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f"{option} {text!r} is not a duration: use a positive number followed by s, m, h, d or w "
                         "(for example 7d)")
    seconds = int(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds > DURATION_MAX_DAYS * 86400:
        raise ValueError(f"{option} {text!r} is too long: at most {DURATION_MAX_DAYS}d (100 years)")
    return datetime.timedelta(seconds=seconds)


def format_instant(moment):
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_instant(text):
    """An ISO-8601 UTC instant written by format_instant (or with an offset); None when unparsable."""
    if not text:
        return None
    value = str(text).strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment


def instant(value):
    """A datetime (UTC) from a datetime (naive ones are UTC, as boto3 and the SDKs give them) or an ISO-8601
    string; None when there is none."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime.datetime):
        return value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)
    return parse_instant(value)


def format_instant_or_none(value):
    """format_instant of what instant() reads from value, or None."""
    moment = instant(value)
    return format_instant(moment) if moment else None


def int_or_none(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def delete_after_instant(duration, now=None):
    """The appconsistent:delete-after value for a retention such as '7d'."""
    return format_instant((now or utcnow()) + parse_duration(duration))


def validate_run_id(run_id):
    if run_id is None:
        return None
    if not _RUN_ID.fullmatch(str(run_id)):
        raise ValueError(f"invalid run_id {run_id!r}: use 1-128 letters, digits and . _ : / = + @ -")
    return str(run_id)


def new_set_id(now=None):
    """A unique AWS set id; sortable by time so that a listing reads in order."""
    stamp = (now or utcnow()).astimezone(datetime.timezone.utc).strftime("%Y%m%dt%H%M%S")
    return f"acs-{stamp}-{secrets.token_hex(4)}"


def set_tags(set_id, instance_id, consistency, device=None, run_id=None, delete_after=None, members=None):
    """The tags every member of a set carries (delete_after is the already formatted instant).

    ``members`` is the number of snapshots the set is made of; every set made by this collection carries it.
    """
    if consistency not in CONSISTENCY_LEVELS:
        raise ValueError(f"unknown consistency {consistency!r}")
    tags = {TAG_SET_ID: set_id, TAG_INSTANCE_ID: instance_id}
    tags.update(consistency_tags(consistency))
    if members is not None:
        tags[TAG_MEMBERS] = members_value(members)
    if device:
        tags[TAG_DEVICE] = device
    if run_id:
        tags[TAG_RUN_ID] = run_id
    if delete_after:
        tags[TAG_DELETE_AFTER] = delete_after
    return tags


def members_value(count):
    """The appconsistent:members value of a set of ``count`` snapshots."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"a set has at least one member, not {count!r}")
    return str(count)


def declared_members(member_tags):
    """The number of members a set's snapshots say it has.

    Returns (count, problem): (None, None) when no member carries appconsistent:members (a set made before the
    tag existed), (n, None) when the members that carry it say n, and (None, reason) when they disagree or the
    value is not a positive number: such a set cannot prove it is whole. A member without the tag does not
    weaken the others' word (a copy begun by an older version and finished by this one).
    """
    present = [(tags or {}).get(TAG_MEMBERS) for tags in member_tags]
    present = [v for v in present if v is not None]
    if not present:
        return None, None
    if len(set(present)) > 1:
        return None, f"its snapshots disagree on {TAG_MEMBERS} ({', '.join(sorted(set(map(str, present))))})"
    match = _MEMBERS.fullmatch(str(present[0]))
    if not match or int(match.group(1)) < 1:
        return None, f"{TAG_MEMBERS} is {present[0]!r}, not a number of snapshots"
    return int(match.group(1)), None


def missing_reason(member_tags):
    """Why the snapshots found are not the whole set their appconsistent:members tag names, or None.

    Unlike an unfinished snapshot, this never resolves by waiting.
    """
    member_tags = list(member_tags)
    if not member_tags:
        return "it has no snapshots"
    expected, problem = declared_members(member_tags)
    if problem:
        return problem
    if expected is not None and len(member_tags) < expected:
        return f"only {len(member_tags)} of its {expected} snapshots exist"
    if expected is not None and len(member_tags) > expected:
        return f"it holds {len(member_tags)} snapshots but its {TAG_MEMBERS} tag says {expected}"
    return None


def incomplete_reason(member_tags, states):
    """Why a set is not complete, or None when it is: the one judgement of completeness for every module.

    ``member_tags`` and ``states`` are the tags and provider states of the snapshots found with the set's id. A set
    is complete when every snapshot has completed and, when its snapshots say how many the set has
    (appconsistent:members), exactly that many are there. A set made before that tag existed is judged by the
    states alone, as it always was.
    """
    member_tags, states = list(member_tags), list(states)
    missing = missing_reason(member_tags)
    if missing:
        return missing
    unfinished = [s for s in states if str(s or "").lower() not in SnapshotSet.COMPLETE_STATES]
    if unfinished:
        return f"{len(unfinished)} of its {len(states)} snapshots have not completed"
    return None


def _truthy(value):
    return str(value).strip().lower() == "true"


def evidence_consistency(tags):
    """What a provider's own tags on one snapshot say: application, filesystem or crash.

    Keys and values are compared case-insensitively: AWS writes AppConsistent
    true or True depending on the document version, Alibaba AppConsistent or
    APPConsistent.
    """
    lowered = {str(k).lower(): v for k, v in (tags or {}).items()}
    if any(_truthy(lowered.get(key)) for key in EVIDENCE_APPLICATION):
        return "application"
    if any(_truthy(lowered.get(key)) for key in EVIDENCE_FILESYSTEM):
        return "filesystem"
    return "crash"


def classify(member_tags, scripts_succeeded=True, ceiling=None):
    """The consistency achieved by a set, from the evidence on each member.

    application needs the provider's evidence on every member *and* our
    scripts to have succeeded; otherwise the set is filesystem- or
    crash-consistent. ``ceiling`` caps the result at what was attempted (a set
    taken with ``consistency: crash`` is crash-consistent whatever the tags say).
    """
    members = list(member_tags)
    if not members:
        return None
    levels = [evidence_consistency(tags) for tags in members]
    level = weakest(levels)
    if level == "application" and not scripts_succeeded:
        level = "filesystem"
    if ceiling is not None and consistency_rank(level) > consistency_rank(ceiling):
        level = ceiling
    return level


def user_tags_conflicts(tags):
    """Keys the user may not set: our schema's and the providers' evidence keys."""
    reserved = {k.lower() for k in SET_TAG_KEYS + (TAG_VERIFICATION,) + PROVIDER_OWNED_TAGS}
    return sorted(k for k in (tags or {}) if str(k).lower() in reserved or str(k).lower().startswith("aws:"))


class SnapshotSet:
    """A set assembled from member snapshots that carry our tags.

    ``members`` are dicts with at least ``snapshot_id``, ``state`` and
    ``tags``; provider code adds volume or disk id, size and start time.
    """

    COMPLETE_STATES = ("completed", "accomplished")

    def __init__(self, set_id, members):
        self.set_id = set_id
        self.members = list(members)

    @property
    def instance_id(self):
        return self._common(TAG_INSTANCE_ID)

    @property
    def run_id(self):
        return self._common(TAG_RUN_ID)

    @property
    def delete_after(self):
        return self._common(TAG_DELETE_AFTER)

    @property
    def consistency(self):
        """The set's level (see set_consistency); each member's own is in its appconsistent:consistency tag."""
        return set_consistency(m["tags"] for m in self.members)

    @property
    def below_set_level(self):
        """The members whose own level is below the set's (volumes outside what was quiesced), by snapshot id."""
        level = self.consistency
        return [m.get("snapshot_id") for m in self.members
                if consistency_rank(m["tags"].get(TAG_CONSISTENCY)) < consistency_rank(level)]

    @property
    def missing_reason(self):
        return missing_reason(m["tags"] for m in self.members)

    @property
    def incomplete_reason(self):
        return incomplete_reason([m["tags"] for m in self.members], [m.get("state") for m in self.members])

    @property
    def complete(self):
        return self.incomplete_reason is None

    @property
    def created(self):
        times = [m.get("start_time") for m in self.members if m.get("start_time")]
        return min(times) if times else None

    def expired(self, now=None):
        moment = parse_instant(self.delete_after)
        return moment is not None and moment <= (now or utcnow())

    def _common(self, key):
        values = {m["tags"].get(key) for m in self.members}
        values.discard(None)
        return values.pop() if len(values) == 1 else None

    def to_dict(self):
        members = [dict(m, consistency=m["tags"].get(TAG_CONSISTENCY)) for m in self.members]
        return dict(set_id=self.set_id, instance_id=self.instance_id, run_id=self.run_id, created=self.created,
                    consistency=self.consistency, complete=self.complete, delete_after=self.delete_after,
                    members=members)


def group_into_sets(members):
    """Group member dicts by their appconsistent:set-id tag; members without it are ignored."""
    groups = {}
    for member in members:
        set_id = (member.get("tags") or {}).get(TAG_SET_ID)
        if set_id:
            groups.setdefault(set_id, []).append(member)
    return [SnapshotSet(set_id, items) for set_id, items in groups.items()]
