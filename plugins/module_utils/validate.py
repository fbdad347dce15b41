# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Input checks shared by every module: ids, tags and durations, refused in one sentence before any call.

Ids are matched whole against the provider's own id forms. An id reaches the
clouds as a describe filter value, where ``*`` and ``?`` are wildcards: an id
that is not exactly an id could select sets, snapshots or instances the user
never named. Patterns are used with ``fullmatch`` only: ``re.match`` with
``$`` lets a trailing newline through, and a newline ends a command line.
"""

from __future__ import annotations

import re

from ansible_collections.appconsistent.snapshots.plugins.module_utils import snapshot_set as ss

# The id forms, per provider and kind. AWS: a prefix and 8 or 17 lowercase hex digits. Alibaba Cloud: a prefix
# and lowercase letters and digits. Set ids are written by this collection only: acs-<UTC stamp>-<8 hex digits>
# (AWS sets, and copies on both clouds) or the Alibaba snapshot-consistent group id.
_AWS_HEX = r"(?:[0-9a-f]{8}|[0-9a-f]{17})"
_ALI_TAIL = r"[0-9a-z]{1,64}"
ACS_SET_ID = r"acs-[0-9]{8}t[0-9]{6}-[0-9a-f]{8}"
ID_FORMS = {
    "aws": {
        "instance": (r"i-" + _AWS_HEX, "an EC2 instance id (i- and 8 or 17 hex digits)"),
        "volume": (r"vol-" + _AWS_HEX, "an EBS volume id (vol- and 8 or 17 hex digits)"),
        "snapshot": (r"snap-" + _AWS_HEX, "an EBS snapshot id (snap- and 8 or 17 hex digits)"),
        "set": (ACS_SET_ID, "a snapshot set id (acs-YYYYMMDDtHHMMSS-xxxxxxxx)"),
    },
    "alicloud": {
        "instance": (r"i-" + _ALI_TAIL, "an Alibaba Cloud instance id (i- and lowercase letters and digits)"),
        "volume": (r"d-" + _ALI_TAIL, "an Alibaba Cloud disk id (d- and lowercase letters and digits)"),
        "snapshot": (r"s-" + _ALI_TAIL, "an Alibaba Cloud snapshot id (s- and lowercase letters and digits)"),
        "set": (rf"(?:ssg-{_ALI_TAIL}|{ACS_SET_ID})",
                "a snapshot set id (a snapshot-consistent group ssg-..., or acs-YYYYMMDDtHHMMSS-xxxxxxxx)"),
        "group": (r"ssg-" + _ALI_TAIL, "an Alibaba Cloud snapshot-consistent group id (ssg-...)"),
    },
}

# Module options holding ids, and their kind. Every module's options go through check_params, so an id option
# added to a module is checked as soon as it is listed here.
ID_OPTIONS = {
    "instance_ids": "instance", "instance_id": "instance", "target_instance_id": "instance",
    "disk_ids": "volume", "exclude_disk_ids": "volume",
    "snapshot_ids": "snapshot", "set_id": "set", "set_ids": "set", "snapshot_group_id": "group",
}
# account_ids (snapshot_set_share) and volume_ids (restored_volumes_remove) are checked whole by their modules
# before any call, in their own words ('all' means public: true; which provider's volume ids are expected).
DURATION_OPTIONS = ("delete_after", "safety_snapshot_delete_after")
# SendCommand's own patterns for its rate controls: refused here rather than by the first freeze command.
RATE_OPTIONS = (
    ("max_concurrency", r"(?:[1-9][0-9]{0,6}|[1-9][0-9]?%|100%)", "give a number of instances (1 or more) or a percentage"),
    ("max_errors", r"(?:0|[1-9][0-9]{0,6}|[0-9]%|[1-9][0-9]%|100%)", "give a number of errors (0 or more) or a percentage"),
)
# The longest wait any *_timeout option may ask for: SendCommand's own bound on TimeoutSeconds (30 days). A longer
# one is a typo, and some of these values reach the agents' APIs, which refuse them only once the run has started.
TIMEOUT_MAX = 2592000

# Tag limits (AWS: "Tag restrictions" in the EC2 user guide; Alibaba Cloud: TagResources and the ECS tag limits).
# The user's tags share the per-resource count with the tags this collection writes itself.
TAG_LIMITS = {
    "aws": dict(count=50, key=128, value=256, reserved=("aws:",)),
    "alicloud": dict(count=20, key=128, value=128, reserved=("aliyun", "acs:")),
}
CLOUD_NAMES = {"aws": "AWS", "alicloud": "Alibaba Cloud"}
# How many tags a member of a set carries besides the user's: the set tags, and the evidence the provider's agent
# writes (AWS VSS: AppConsistent, Device, AwsVssConfig; the Alibaba plug-in: APPConsistent or FsConsistent).
SET_OWN_TAGS = {"aws": len(ss.SET_TAG_KEYS) + 3, "alicloud": len(ss.SET_TAG_KEYS) + 2}
# A copied member adds where it came from (copied-from, source-region, source-snapshot).
COPY_OWN_TAGS = len(ss.SET_TAG_KEYS) + 3
# A restored volume: restored-from, restored-from-set, restored-at, and restore-failed when a rollback marks it.
RESTORE_OWN_TAGS = 4


def fullmatch(pattern, text):
    """True when ``text`` is a string matched whole by ``pattern`` (a trailing newline is not matched)."""
    return isinstance(text, str) and re.fullmatch(pattern, text) is not None


# What an id of either provider looks like, where both have the kind: one sentence rather than two forms.
EITHER_FORMS = {
    "set": (ID_FORMS["alicloud"]["set"][0],
            "a snapshot set id: acs-YYYYMMDDtHHMMSS-xxxxxxxx (an AWS set, or a copy made by snapshot_set_copy) or ssg-... "
            "(an Alibaba Cloud snapshot-consistent group), as snapshot_set_info lists them"),
}


def check_id(option, value, kind, provider=None):
    """Refuse ``value`` unless it is an id of ``kind`` of the provider (of either provider when None).

    A kind the provider does not have (an Alibaba group id given with provider aws) is matched against the other
    provider's form: the module's own refusal of that option then explains the mismatch.
    """
    if provider and kind in ID_FORMS[provider]:
        forms = [ID_FORMS[provider][kind]]
    elif kind in EITHER_FORMS:
        forms = [EITHER_FORMS[kind]]
    else:
        forms = [ID_FORMS[p][kind] for p in sorted(ID_FORMS) if kind in ID_FORMS[p]]
    if not any(fullmatch(pattern, value) for pattern, _text in forms):
        raise ValueError(f"{option}: {value!r} is not {' or '.join(text for _pattern, text in forms)}")
    return value


def check_params(params, provider=None):
    """Check every id, run id, duration and timeout option present in ``params``; ValueError names the first bad one.

    ``provider`` is the module's provider when it has one (the VSS modules are AWS only); restore_volumes may
    leave it open, and then an id of either provider is accepted.
    """
    provider = params.get("provider") or provider
    for option, kind in ID_OPTIONS.items():
        value = params.get(option)
        if value is None:
            continue
        for item in value if isinstance(value, list) else [value]:
            check_id(option, item, kind, provider)
    for target in params.get("targets") or []:
        # Tag targets select instances by design; InstanceIds targets name them, and are ids like instance_ids.
        if isinstance(target, dict) and target.get("key") == "InstanceIds":
            for item in target.get("values") or []:
                check_id("targets InstanceIds", str(item), "instance", provider)
    for option, pattern, text in RATE_OPTIONS:
        value = params.get(option)
        if value is not None and not fullmatch(pattern, str(value)):
            raise ValueError(f"{option} {value!r} is refused: {text}")
    ss.validate_run_id(params.get("run_id"))
    for option in DURATION_OPTIONS:
        if params.get(option):
            ss.parse_duration(params[option], option)
    for option, value in params.items():
        if option.endswith("_timeout") and isinstance(value, int) and value > TIMEOUT_MAX:
            raise ValueError(f"{option} {value} is too long: at most {TIMEOUT_MAX} seconds (30 days)")


def user_tags(tags, provider, own, option="tags"):
    """The user's tags as strings, checked against the provider's limits; ValueError otherwise.

    ``own`` is how many tags the collection (and, for VSS, the provider's agent) writes on the same resource.
    Scalar values become strings as amazon.aws does (``cost-center: 4711`` is "4711"); lists and dicts are
    refused. Nothing here calls the cloud, so a refusal comes before any freeze.
    """
    limits = TAG_LIMITS[provider]
    cloud = CLOUD_NAMES[provider]
    if tags is None:
        return {}
    if not isinstance(tags, dict):
        raise ValueError(f"{option} must be a dictionary of tag keys and values")
    result = {}
    for key, value in tags.items():
        if not isinstance(key, str) or not key.strip():
            raise ValueError(f"{option}: the key {key!r} is refused: a tag key is a non-empty string")
        if isinstance(value, (list, dict, set, tuple)):
            raise ValueError(f"{option}: the value of {key} is a {type(value).__name__}: a tag value is one string "
                             "(quote it, or join the items)")
        if value is None:
            value = ""
        elif isinstance(value, bool):
            value = "true" if value else "false"
        value = str(value)
        if len(key) > limits["key"]:
            raise ValueError(f"{option}: the key {key[:40]!r}... is {len(key)} characters long: at most "
                             f"{limits['key']} on {cloud}")
        if len(value) > limits["value"]:
            raise ValueError(f"{option}: the value of {key} is {len(value)} characters long: at most {limits['value']} "
                             f"on {cloud}")
        if key.lower().startswith(limits["reserved"]):
            raise ValueError(f"{option}: the key {key} is refused: keys starting with "
                             f"{' or '.join(limits['reserved'])} are reserved for {cloud}")
        if "\n" in key or "\r" in key:
            raise ValueError(f"{option}: the key {key!r} is refused: a tag key holds no line break")
        if provider == "alicloud" and any(p in text.lower() for text in (key, value) for p in ("http://", "https://")):
            raise ValueError(f"{option}: the tag {key} is refused: Alibaba Cloud tags cannot contain http:// or https://")
        result[key] = value
    if len(result) + own > limits["count"]:
        raise ValueError(f"{option}: {len(result)} tags are too many: a resource on {cloud} holds at most "
                         f"{limits['count']} tags and this module writes {own} of its own, so give at most "
                         f"{limits['count'] - own}")
    return result


def carrying(items, tags_of, key, values):
    """The items whose tag ``key`` is exactly one of ``values``.

    A describe filtered on a tag value also matches wildcards and is the cloud's reading of the value; what the
    modules act on is checked again here against the ids the user named.
    """
    wanted = set(values)
    return [item for item in items if (tags_of(item) or {}).get(key) in wanted]
