"""restore_volumes of many instances: the waits' reads merged into rounds, and the checks before any call."""

import threading

import pytest

from ansible_collections.appconsistent.snapshots.plugins.module_utils import restore
from ansible_collections.appconsistent.snapshots.plugins.module_utils.restore_many import SharedReads
from ansible_collections.appconsistent.snapshots.plugins.module_utils.restore_many import validate_many


def test_reads_asked_for_while_a_call_is_on_its_way_share_the_next_call():
    calls = []
    first_call_started = threading.Event()
    release_first = threading.Event()

    def read_many(ids):
        calls.append(list(ids))
        if len(calls) == 1:
            first_call_started.set()
            release_first.wait(5)
        return {i: dict(id=i, state="available") for i in ids}

    reads = SharedReads(read_many)
    results = {}

    def read(name, ids):
        results[name] = reads.read(ids)

    first = threading.Thread(target=read, args=("first", ["vol-1"]))
    first.start()
    assert first_call_started.wait(5)
    others = [threading.Thread(target=read, args=(f"t{n}", [f"vol-{n}"])) for n in range(2, 12)]
    for thread in others:
        thread.start()
    release_first.set()
    for thread in [first] + others:
        thread.join(5)
    # ten threads that asked while the first call was on its way: one call for all of them (rarely two)
    assert calls[0] == ["vol-1"] and 2 <= len(calls) <= 3, calls
    assert sorted(i for call in calls[1:] for i in call) == sorted(f"vol-{n}" for n in range(2, 12))
    assert results["t7"] == {"vol-7": dict(id="vol-7", state="available")}


def test_a_failed_round_fails_its_readers_and_the_next_round_is_read_anew():
    answers = [restore.StepFailed("DescribeVolumes: RequestLimitExceeded"), None]

    def read_many(ids):
        answer = answers.pop(0)
        if answer is not None:
            raise answer
        return {i: dict(id=i) for i in ids}

    reads = SharedReads(read_many)
    with pytest.raises(restore.StepFailed, match="RequestLimitExceeded"):
        reads.read(["vol-1"])
    assert reads.read(["vol-1"]) == {"vol-1": dict(id="vol-1")}


@pytest.mark.parametrize("given, words", [
    (dict(set_ids=[]), "set_ids is empty"),
    (dict(set_ids=["acs-20261123t060000-1a2b3c4d"] * 2), "more than once"),
    (dict(instance_ids=["i-0123456789abcdef0"]), "add latest: true"),
    (dict(set_ids=["acs-20261123t060000-1a2b3c4d"], latest=True), "latest needs instance_id"),
    (dict(set_ids=["acs-20261123t060000-1a2b3c4d"], target_instance_id="i-0123456789abcdef0"), "target_instance_id"),
    (dict(set_ids=["acs-20261123t060000-1a2b3c4d"], max_concurrent_instances=0), "max_concurrent_instances"),
])
def test_many_instance_options_are_refused_in_one_sentence(given, words):
    with pytest.raises(restore.RestoreRefused, match=words):
        validate_many(dict(dict(set_ids=None, instance_ids=None, latest=False), **given))


def test_each_set_or_instance_is_one_restore():
    assert validate_many(dict(set_ids=["acs-a", "acs-b"], instance_ids=None)) == [dict(set_id="acs-a"), dict(set_id="acs-b")]
    assert validate_many(dict(set_ids=None, instance_ids=["i-1"], latest=True)) == [dict(instance_id="i-1", latest=True)]
