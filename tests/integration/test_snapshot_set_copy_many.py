"""snapshot_set_copy of many sets in one task (set_ids): one queue within the destination Region's copy quota."""

import copy

from test_snapshot_set_copy import DESTINATION
from test_snapshot_set_copy import destination_snapshots
from test_snapshot_set_copy import take_aws_set

from ansible_collections.appconsistent.snapshots.plugins.module_utils import set_copy
from ansible_collections.appconsistent.snapshots.plugins.module_utils import snapshot_set as ss

COPY = "appconsistent.snapshots.snapshot_set_copy"
NAMES = [f"copy-{n}" for n in range(6)]
TWO_DATA_VOLUMES = [{"device": "/dev/xvda", "size": 8, "boot": True}, {"device": "/dev/xvdf", "size": 1},
                    {"device": "/dev/xvdg", "size": 1}]
# The destination's CopySnapshot bucket holds 2 tokens refilling 8 a second (published: 50 and 5).
TIGHT = {"CopySnapshot": {"capacity": 2, "refill": 8}}
COPIES_PER_REGION = 20  # EBS quota: concurrent snapshot copies per destination Region


def fleet():
    instances = [{"provider": "aws", "name": name, "platform": "linux", "volumes": TWO_DATA_VOLUMES} for name in NAMES]
    instances.append({"provider": "aws", "name": "copy-broken", "platform": "linux", "volumes": TWO_DATA_VOLUMES,
                      "faults": {"snapshot_error": True}})
    return {"instances": instances}


def aws_pending_copies(twins):
    dest = twins.aws.cloud.ext_for(DESTINATION)
    return len([s for s in dest.own_snapshots() if getattr(s, "_twin_copy", False) and s.status == "pending"])


def copy_watched(twins, run_tasks, task, provider="aws", pending=aws_pending_copies):
    """Run the copy task, recording the destination's pending copies at every CopySnapshot: (result, seen)."""
    original = twins.faults.api_error
    seen = []

    def api_error(called, name):
        if called == provider and name == "CopySnapshot":
            seen.append(pending(twins))
        return original(called, name)
    twins.stats.reset()
    twins.faults.api_error = api_error
    try:
        result = run_tasks([dict(task, register="copied")], twins.endpoints)["copied"]
    finally:
        twins.faults.api_error = original
    return result, seen


def test_aws_many_sets_share_the_regions_copy_quota_and_one_refused_set_stops_no_other(twin_factory, run_tasks):
    twins = twin_factory(fleet(), alicloud=False, limits=TIGHT, latency="zero")
    ids = twins.endpoints["aws"]["instances"]
    sets = [take_aws_set(twins, ids[name])[0] for name in NAMES for _twice in range(2)]  # 12 sets, 24 snapshots
    broken, _members = take_aws_set(twins, ids["copy-broken"], wait=False)  # its snapshots end in error
    # A copy takes 4 s: the quota of 20, not the copies' speed, is what holds the last 4 back.
    twins.latency.update({"profile": "zero", "transitions": {"snapshot_complete": 4}})
    chosen = sets[:6] + [broken] + sets[6:]
    task = {COPY: {"provider": "aws", "set_ids": chosen, "destination_region": DESTINATION,
                   "max_concurrent_copies": COPIES_PER_REGION, "api_rate_limits": TIGHT}}

    plan = run_tasks([dict(task, register="plan")], twins.endpoints, check=True)["plan"]
    assert plan["failed_sets"] == [broken] and "not complete" in plan["msg"], plan["msg"]
    assert [r["source_set_id"] for r in plan["copies"]] == chosen
    assert all(r["changed"] and r["set_id"] is None for r in plan["copies"] if r["source_set_id"] != broken)
    assert destination_snapshots(twins) == []

    result, seen = copy_watched(twins, run_tasks, task)
    assert result["failed"] and result["failed_sets"] == [broken], result["msg"]
    by_source = {r["source_set_id"]: r for r in result["copies"]}
    for set_id in sets:
        row = by_source[set_id]
        assert not row["failed"] and row["complete"] is True and len(row["members"]) == 2, row
        made = destination_snapshots(twins, **{set_copy.TAG_COPIED_FROM: set_id})
        assert sorted(s["SnapshotId"] for s in made) == sorted(m["snapshot_id"] for m in row["members"])
        assert {t["Value"] for s in made for t in s["Tags"] if t["Key"] == ss.TAG_SET_ID} == {row["set_id"]}
    assert by_source[broken]["members"] == [] and not destination_snapshots(twins, **{set_copy.TAG_COPIED_FROM: broken})
    # 24 copies through one queue: never more in flight than the Region's quota, none refused for it
    assert max(seen) == COPIES_PER_REGION - 1, seen
    assert result["api_pacing"]["throttled_calls"] == {}, twins.stats.throttle_log("aws")
    assert len(seen) == 24, (seen, result["api_pacing"])
    assert sum(r.get("limit_waits") or 0 for r in result["copies"]) == 0
    assert twins.stats.throttled("aws") == {}, twins.stats.throttle_log("aws")
    assert result["api_pacing"]["calls"]["CopySnapshot"] == 24

    again = run_tasks([dict(task, register="again")], twins.endpoints)["again"]
    assert again["failed_sets"] == [broken] and not any(r["changed"] for r in again["copies"])


def test_aws_stop_on_failure_copies_nothing_after_a_refused_set(twin_factory, run_tasks):
    twins = twin_factory(fleet(), alicloud=False, latency={"profile": "zero", "transitions": {"snapshot_complete": 0.3}})
    ids = twins.endpoints["aws"]["instances"]
    good = take_aws_set(twins, ids[NAMES[0]])[0]
    broken, _members = take_aws_set(twins, ids["copy-broken"], wait=False)
    later = take_aws_set(twins, ids[NAMES[1]])[0]
    task = {COPY: {"provider": "aws", "set_ids": [good, broken, later], "destination_region": DESTINATION,
                   "stop_on_failure": True}, "register": "copied"}
    result = run_tasks([task], twins.endpoints)["copied"]
    assert result["failed_sets"] == [good, broken, later], result["msg"]
    assert "not complete" in result["copies"][1]["msg"]
    assert all("stop_on_failure" in result["copies"][n]["msg"] for n in (0, 2))
    assert destination_snapshots(twins) == []


def newest_copied(result, chosen, sources):
    """Checks a copy of instance_ids with latest where the second instance has no set and the others have one."""
    assert result["failed_sets"] == [chosen[1]], result["msg"]
    assert "no snapshot set of this instance was found" in result["copies"][1]["msg"]
    assert [r["source_set_id"] for r in result["copies"]] == sources
    assert [r["instance_id"] for r in result["copies"]] == chosen
    assert result["copies"][0]["complete"] and result["copies"][2]["complete"]


def test_aws_instance_ids_with_latest_copy_each_instances_newest_set(twin_factory, run_tasks):
    twins = twin_factory(fleet(), alicloud=False, latency={"profile": "zero", "transitions": {"snapshot_complete": 0.3}})
    ids = twins.endpoints["aws"]["instances"]
    take_aws_set(twins, ids[NAMES[0]])
    newest = take_aws_set(twins, ids[NAMES[0]])[0]
    other = take_aws_set(twins, ids[NAMES[1]])[0]
    chosen = [ids[NAMES[0]], ids[NAMES[2]], ids[NAMES[1]]]  # the second has no set at all
    task = {COPY: {"provider": "aws", "instance_ids": chosen, "latest": True, "destination_region": DESTINATION},
            "register": "copied"}
    newest_copied(run_tasks([task], twins.endpoints)["copied"], chosen, [newest, None, other])
    assert len(destination_snapshots(twins)) == 4


def test_set_ids_refusals_come_before_any_call(twin_factory, run_tasks):
    twins = twin_factory(copy.deepcopy(fleet()), alicloud=False)
    twins.stats.reset()
    base = {"provider": "aws", "destination_region": DESTINATION}
    tasks = [
        {COPY: dict(base, set_ids=[]), "register": "empty"},
        {COPY: dict(base, set_ids=["acs-20261123t060000-1a2b3c4d"] * 2), "register": "twice"},
        {COPY: dict(base, set_ids=["acs-20261123t060000-1a2b3c4d"], set_id="acs-20261123t060000-1a2b3c4d"),
         "register": "both"},
        {COPY: dict(base, set_ids=["acs-*"]), "register": "wildcard"},
        {COPY: dict(base, instance_ids=["i-0123456789abcdef0"]), "register": "no_latest"},
        {COPY: dict(base, set_id="acs-20261123t060000-1a2b3c4d", latest=True), "register": "latest_alone"},
    ]
    run = run_tasks(tasks, twins.endpoints)
    assert "set_ids is empty" in run["empty"]["msg"]
    assert "more than once" in run["twice"]["msg"]
    assert "mutually exclusive" in run["both"]["msg"]
    assert run["wildcard"].get("failed") and "acs-*" in run["wildcard"]["msg"]
    assert "give it with latest: true" in run["no_latest"]["msg"]
    assert "give instance_ids, or drop latest" in run["latest_alone"]["msg"]
    assert twins.stats.counts("aws") == {}
