"""snapshot_set_copy of many sets: one queue and one limit for all the sets, per-set results and failures."""


import pytest

from .test_set_copy import NOW
from .test_set_copy import FakeClock
from .test_set_copy import FakeCopyApi
from .test_set_copy import params

from ansible_collections.appconsistent.snapshots.plugins.module_utils import set_copy
from ansible_collections.appconsistent.snapshots.plugins.module_utils import snapshot_set as ss
from ansible_collections.appconsistent.snapshots.plugins.module_utils.set_copy_many import ManyCopy

SETS = [f"acs-20261123t06000{n}-0000000{n}" for n in range(5)]


pytestmark = pytest.mark.usefixtures("no_sleep")  # retries count their attempts without waiting


def member(set_id, n, device, state="completed"):
    tags = dict(ss.set_tags(set_id, f"i-0abc{n}", "application", device=device), **{ss.TAG_MEMBERS: "2"})
    return dict(snapshot_id=f"snap-{set_id[-1]}{n}", state=state, device=device, tags=tags)


class ManySetsApi(FakeCopyApi):
    """FakeCopyApi with two members per set; ``broken`` sets have a snapshot that has not completed."""

    def __init__(self, broken=(), **kwargs):
        super().__init__([], **kwargs)
        self.broken = set(broken)
        self.describes = 0

    def source_members(self, set_id):
        self.calls.append(("source", set_id))
        state = "pending" if set_id in self.broken else "completed"
        return [member(set_id, 0, "/dev/xvdf"), member(set_id, 1, "/dev/xvdg", state)]

    def existing_copies(self, source_set_id):
        return []

    def describe(self, snapshot_ids):
        self.describes += 1
        return super().describe(snapshot_ids)


def run_many(api, check_mode=False, **overrides):
    clock = FakeClock()
    copier = ManyCopy(api, params(set_ids=list(SETS), **overrides), check_mode=check_mode, sleep=clock.sleep,
                      clock=clock, now=NOW)
    return copier.run()


def test_the_limit_counts_the_copies_of_every_set_and_one_listing_reads_them_all():
    api = ManySetsApi(polls_to_complete=2)
    result = run_many(api, max_concurrent_copies=3)
    assert api.max_in_flight == 3
    assert len(api.started) == 2 * len(SETS)
    assert not result["failed"] and result["failed_sets"] == []
    assert [r["source_set_id"] for r in result["copies"]] == SETS
    assert all(r["complete"] and not r["failed"] for r in result["copies"])
    # every copy set is a set of its own, whole: its members carry the source set's member count
    assert len({r["set_id"] for r in result["copies"]}) == len(SETS)
    assert {t[ss.TAG_MEMBERS] for t in api.tags.values()} == {"2"}
    # one describe per round for every set's copies, not one per set
    assert api.describes < len(api.started)


def test_a_refused_set_is_reported_and_the_others_are_copied():
    api = ManySetsApi(broken=[SETS[1]])
    result = run_many(api)
    assert result["failed"] and result["failed_sets"] == [SETS[1]]
    assert "not complete yet" in result["copies"][1]["msg"]
    assert {s[0][5] for s in api.started} == {"0", "2", "3", "4"}
    assert all(r["complete"] for n, r in enumerate(result["copies"]) if n != 1)


def test_a_failed_copy_fails_its_set_only_and_a_partial_set_stays_incomplete():
    api = ManySetsApi(fail=["snap-21"])
    result = run_many(api)
    assert result["failed_sets"] == [SETS[2]]
    row = result["copies"][2]
    assert "ended in state error" in row["msg"] and row["complete"] is False
    assert all(r["complete"] for n, r in enumerate(result["copies"]) if n != 2)


def test_stop_on_failure_starts_nothing_after_a_refused_set():
    api = ManySetsApi(broken=[SETS[1]])
    result = run_many(api, stop_on_failure=True)
    assert api.started == []
    assert result["failed_sets"] == SETS
    assert "not complete yet" in result["copies"][1]["msg"]
    assert all("stop_on_failure" in result["copies"][n]["msg"] for n in (0, 2, 3, 4))


def test_quota_refusals_requeue_and_check_mode_changes_nothing():
    api = ManySetsApi(limited=3)
    result = run_many(api, max_concurrent_copies=20)
    assert not result["failed"] and len(api.started) == 2 * len(SETS)
    assert sum(r["limit_waits"] for r in result["copies"]) == 3

    api = ManySetsApi()
    plan = run_many(api, check_mode=True)
    assert api.started == [] and plan["changed"] is True
    assert all(r["set_id"] is None and {m["state"] for m in r["members"]} == {"not_started"} for r in plan["copies"])


def test_the_same_set_twice_is_refused():
    with pytest.raises(set_copy.CopyRefused, match="more than once"):
        ManyCopy(ManySetsApi(), params(set_ids=[SETS[0], SETS[0]]))
