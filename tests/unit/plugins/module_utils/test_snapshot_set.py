"""The snapshot-set model and tag schema."""

import datetime

import pytest

from ansible_collections.appconsistent.snapshots.plugins.module_utils import snapshot_set as ss

NOW = datetime.datetime(2026, 11, 23, 6, 0, 0, tzinfo=datetime.timezone.utc)


@pytest.mark.parametrize("text, seconds", [("30s", 30), ("90m", 5400), ("12h", 43200), ("7d", 604800), ("2w", 1209600),
                                           (" 7d ", 604800)])
def test_durations(text, seconds):
    assert ss.parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["7", "d", "-1d", "0d", "7 days", "1y", "", None, "7d12h"])
def test_bad_durations_name_the_accepted_forms(text):
    with pytest.raises(ValueError, match="s, m, h, d or w"):
        ss.parse_duration(text)


def test_delete_after_is_a_utc_instant():
    assert ss.delete_after_instant("7d", now=NOW) == "2026-11-30T06:00:00Z"
    assert ss.parse_instant("2026-11-30T06:00:00Z") == NOW + datetime.timedelta(days=7)


def test_set_ids_are_unique_and_sortable():
    first = ss.new_set_id(now=NOW)
    later = ss.new_set_id(now=NOW + datetime.timedelta(seconds=1))
    assert first.startswith("acs-20261123t060000-")
    assert first != ss.new_set_id(now=NOW)
    assert first < later


def test_set_tags_schema():
    tags = ss.set_tags("acs-1", "i-1", "application", device="/dev/sdf", run_id="CHG-1", delete_after="2026-11-30T06:00:00Z")
    assert tags == {"appconsistent:set-id": "acs-1", "appconsistent:instance-id": "i-1",
                    "appconsistent:consistency": "application", "appconsistent:set-consistency": "application",
                    "appconsistent:device": "/dev/sdf", "appconsistent:run-id": "CHG-1",
                    "appconsistent:delete-after": "2026-11-30T06:00:00Z"}
    with pytest.raises(ValueError):
        ss.set_tags("acs-1", "i-1", "app-ish")


@pytest.mark.parametrize("tags, level", [
    ({"AppConsistent": "true"}, "application"),
    ({"AppConsistent": "True"}, "application"),
    ({"APPConsistent": "True"}, "application"),
    ({"appconsistent": "TRUE"}, "application"),
    ({"AppConsistent": "false"}, "crash"),
    ({"AppConsistent": "False", "FsConsistent": "True"}, "filesystem"),
    ({"FsConsistent": "true"}, "filesystem"),
    ({"Device": "/dev/sda1"}, "crash"),
    ({}, "crash"),
])
def test_provider_evidence_is_read_case_insensitively(tags, level):
    assert ss.evidence_consistency(tags) == level


def test_a_set_is_as_consistent_as_its_weakest_member():
    members = [{"AppConsistent": "true"}, {"AppConsistent": "true"}, {"FsConsistent": "true"}]
    assert ss.classify(members) == "filesystem"
    assert ss.classify([{"AppConsistent": "true"}, {}]) == "crash"


def test_application_needs_our_scripts_too():
    members = [{"AppConsistent": "true"}] * 2
    assert ss.classify(members) == "application"
    assert ss.classify(members, scripts_succeeded=False) == "filesystem"


def test_never_more_than_attempted():
    assert ss.classify([{"AppConsistent": "true"}], ceiling="crash") == "crash"
    assert ss.classify([{}], ceiling="application") == "crash"
    assert ss.classify([]) is None


def test_levels_order():
    assert ss.at_least("offline", "application")
    assert ss.at_least("application", "application")
    assert not ss.at_least("filesystem", "application")
    assert not ss.at_least(None, "crash")


def test_reserved_user_tags():
    assert ss.user_tags_conflicts({"Device": "x", "owner": "me", "appconsistent:set-id": "y", "aws:foo": "z",
                                   "appconsistent": "t"}) == ["Device", "appconsistent", "appconsistent:set-id", "aws:foo"]


@pytest.mark.parametrize("run_id", ["awx-1234", "CHG0012345", "job:42/step=1"])
def test_run_ids(run_id):
    assert ss.validate_run_id(run_id) == run_id


@pytest.mark.parametrize("run_id", ["", "has space", "x" * 129, "semi;colon", "quote'"])
def test_bad_run_ids(run_id):
    with pytest.raises(ValueError, match="invalid run_id"):
        ss.validate_run_id(run_id)


def _member(snapshot_id, set_id, state="completed", consistency="application", when=NOW, **extra):
    tags = ss.set_tags(set_id, "i-1", consistency, run_id="r1", delete_after="2026-11-30T06:00:00Z")
    tags.update(extra)
    return {"snapshot_id": snapshot_id, "state": state, "start_time": when, "tags": tags}


def test_members_group_into_sets():
    members = [_member("snap-1", "acs-a"), _member("snap-2", "acs-a", state="pending"), _member("snap-3", "acs-b"),
               {"snapshot_id": "snap-x", "state": "completed", "tags": {"Name": "not ours"}}]
    sets = {s.set_id: s for s in ss.group_into_sets(members)}
    assert sorted(sets) == ["acs-a", "acs-b"]
    assert not sets["acs-a"].complete and sets["acs-b"].complete
    summary = sets["acs-a"].to_dict()
    assert (summary["instance_id"], summary["run_id"], summary["consistency"], summary["created"]) == ("i-1", "r1", "application", NOW)
    assert len(summary["members"]) == 2


def test_set_consistency_and_expiry():
    mixed = ss.SnapshotSet("acs-a", [_member("snap-1", "acs-a"), _member("snap-2", "acs-a", consistency="crash")])
    assert mixed.consistency == "crash"
    assert not mixed.expired(now=NOW)
    assert mixed.expired(now=NOW + datetime.timedelta(days=8))
    assert not ss.SnapshotSet("acs-c", [{"snapshot_id": "s", "state": "completed", "tags": {}}]).expired(now=NOW)


def test_the_first_error_stays_unless_a_later_one_is_urgent():
    first = ss.merge_error(None, "CreateSnapshots", "the snapshot call failed")
    assert ss.merge_error(first, "Thaw203", "the watchdog thawed") == first
    urgent = ss.merge_error(first, "RemountFailed", "not mounted again: check it now")
    assert urgent["code"] == "RemountFailed"
    assert urgent["message"] == "not mounted again: check it now (before that: the snapshot call failed)"
    assert ss.merge_error(urgent, "StartTimeout", "not running") == urgent  # the first urgent one stays


def test_a_set_says_how_many_members_it_has_and_is_judged_by_it():
    tags = ss.set_tags("acs-1", "i-1", "application", members=2)
    assert tags[ss.TAG_MEMBERS] == "2"
    assert ss.TAG_MEMBERS in ss.SET_TAG_KEYS and ss.user_tags_conflicts({ss.TAG_MEMBERS: "9"}) == [ss.TAG_MEMBERS]
    assert ss.incomplete_reason([tags, tags], ["completed", "completed"]) is None
    assert ss.incomplete_reason([tags], ["completed"]) == "only 1 of its 2 snapshots exist"
    assert "says 2" in ss.incomplete_reason([tags] * 3, ["completed"] * 3)
    assert "have not completed" in ss.incomplete_reason([tags, tags], ["completed", "pending"])
    other = dict(tags, **{ss.TAG_MEMBERS: "3"})
    assert "disagree" in ss.incomplete_reason([tags, other], ["completed"] * 2)
    assert "not a number" in ss.incomplete_reason([dict(tags, **{ss.TAG_MEMBERS: "two"})], ["completed"])
    # A set made before the tag existed is judged by its states, as it always was.
    legacy = ss.set_tags("acs-1", "i-1", "application")
    assert ss.incomplete_reason([legacy], ["completed"]) is None
    # A member without the tag (a copy begun by an older version) does not weaken the others' word.
    assert ss.incomplete_reason([legacy, tags], ["completed"] * 2) is None
    with pytest.raises(ValueError):
        ss.set_tags("acs-1", "i-1", "application", members=0)


def test_snapshot_set_complete_reads_the_member_count():
    members = [_member("snap-1", "acs-1", **{ss.TAG_MEMBERS: "2"})]
    found = ss.group_into_sets(members)[0]
    assert found.complete is False and found.incomplete_reason == "only 1 of its 2 snapshots exist"


# --- the set's level and each member's (issue 18 line 12) ----------------------------------------------------------

def _labelled(snapshot_id, level, set_level=None):
    tags = {ss.TAG_SET_ID: "acs-1", ss.TAG_CONSISTENCY: level}
    if set_level:
        tags[ss.TAG_SET_CONSISTENCY] = set_level
    return dict(snapshot_id=snapshot_id, state="completed", tags=tags)


def test_a_set_with_the_set_tag_is_read_by_it_and_names_the_members_below_it():
    found = ss.SnapshotSet("acs-1", [_labelled("snap-root", "crash", "application"),
                                     _labelled("snap-data", "application", "application")])
    assert found.consistency == "application"
    assert found.below_set_level == ["snap-root"]
    assert {m["snapshot_id"]: m["consistency"] for m in found.to_dict()["members"]} == \
        {"snap-root": "crash", "snap-data": "application"}


def test_a_set_made_before_the_set_tag_keeps_its_weakest_member_reading():
    found = ss.SnapshotSet("acs-1", [_labelled("snap-root", "crash"), _labelled("snap-data", "application")])
    assert found.consistency == "crash" and found.below_set_level == []


def test_members_that_disagree_on_the_set_level_give_the_weakest():
    """A raise cut short leaves some members with the new set level and some with crash: the set is crash."""
    found = ss.SnapshotSet("acs-1", [_labelled("a", "application", "application"), _labelled("b", "crash", "crash")])
    assert found.consistency == "crash"


def test_new_sets_carry_both_tags_and_the_set_tag_is_reserved():
    tags = ss.set_tags("acs-1", "i-1", "offline")
    assert (tags[ss.TAG_CONSISTENCY], tags[ss.TAG_SET_CONSISTENCY]) == ("offline", "offline")
    assert ss.user_tags_conflicts({"appconsistent:set-consistency": "x"}) == ["appconsistent:set-consistency"]
    with pytest.raises(ValueError):
        ss.consistency_tags("crash", "perfect")
