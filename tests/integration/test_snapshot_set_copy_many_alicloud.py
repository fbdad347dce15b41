"""snapshot_set_copy of many Alibaba Cloud sets in one task: one queue within the destination region's copy limit."""

from test_snapshot_set_copy import ALI_DESTINATION
from test_snapshot_set_copy import ALI_REGION
from test_snapshot_set_copy import take_ali_set
from test_snapshot_set_copy_many import copy_watched
from test_snapshot_set_copy_many import newest_copied

from ansible_collections.appconsistent.snapshots.plugins.module_utils import set_copy
from ansible_collections.appconsistent.snapshots.plugins.module_utils import snapshot_set as ss

COPY = "appconsistent.snapshots.snapshot_set_copy"
NAMES = [f"ali-copy-{n}" for n in range(5)]
DISKS = [{"device": "/dev/xvda", "size": 40, "type": "cloud_essd", "boot": True},
         {"device": "/dev/xvdb", "size": 20, "type": "cloud_essd"}]
# Tighter than the bucket assumed for the account (CopySnapshot, a mutating action: 50 refilling 5 a second).
TIGHT = {"CopySnapshot": {"capacity": 2, "refill": 8}}
# Alibaba Cloud publishes no number of unfinished copies per destination region; the twin refuses the seventh.
REGION_COPIES = 6


def fleet():
    instances = [{"provider": "alicloud", "name": name, "platform": "linux", "zone": ALI_REGION + "-h",
                  "volumes": DISKS} for name in NAMES]
    instances.append({"provider": "alicloud", "name": "ali-copy-broken", "platform": "linux", "zone": ALI_REGION + "-h",
                      "volumes": DISKS, "faults": {"snapshot_error": True}})
    return {"instances": instances}


def copies_in(twins, region, **tags):
    ecs = twins.alicloud.cloud.ecs
    with ecs.lock:
        return [s for s in ecs.snapshots.values() if s.copied_from and s.region == region
                and all(s.tags.get(k) == v for k, v in tags.items())]


def unfinished_copies(twins):
    return len([s for s in copies_in(twins, ALI_DESTINATION) if s.status == "progressing"])


def test_alicloud_many_sets_share_the_regions_copy_limit_and_one_refused_set_stops_no_other(twin_factory, run_tasks):
    twins = twin_factory(fleet(), aws=False, latency="zero",
                         faults={"copy_concurrency_limit": {ALI_DESTINATION: REGION_COPIES}})
    ids = twins.endpoints["alicloud"]["instances"]
    sets = [take_ali_set(twins, ids[name])[0] for name in NAMES for _twice in range(2)]  # 10 sets, 20 snapshots
    broken = take_ali_set(twins, ids["ali-copy-broken"])[0]  # its group fails
    # A copy takes 3 s: the region's limit, not the copies' speed, is what holds the others back.
    twins.latency.update({"profile": "zero", "transitions": {"snapshot_complete": 3}})
    twins.limits.update(dict({f"alicloud:{k}": v for k, v in TIGHT.items()}, profile="none"))
    chosen = sets[:4] + [broken] + sets[4:]
    task = {COPY: {"provider": "alicloud", "set_ids": chosen, "destination_region": ALI_DESTINATION,
                   "max_concurrent_copies": REGION_COPIES, "api_rate_limits": TIGHT}}

    plan = run_tasks([dict(task, register="plan")], twins.endpoints, check=True)["plan"]
    assert plan["failed_sets"] == [broken] and "not complete" in plan["msg"], plan["msg"]
    assert [r["source_set_id"] for r in plan["copies"]] == chosen
    assert all(r["changed"] and r["set_id"] is None for r in plan["copies"] if r["source_set_id"] != broken)
    assert copies_in(twins, ALI_DESTINATION) == []

    result, seen = copy_watched(twins, run_tasks, task, provider="alicloud", pending=unfinished_copies)
    assert result["failed"] and result["failed_sets"] == [broken], result["msg"]
    by_source = {r["source_set_id"]: r for r in result["copies"]}
    for set_id in sets:
        row = by_source[set_id]
        assert not row["failed"] and row["complete"] is True and len(row["members"]) == 2, row
        made = copies_in(twins, ALI_DESTINATION, **{set_copy.TAG_COPIED_FROM: set_id})
        assert sorted(s.id for s in made) == sorted(m["snapshot_id"] for m in row["members"])
        assert {s.tags[ss.TAG_SET_ID] for s in made} == {row["set_id"]} and all(s.status == "accomplished" for s in made)
    assert by_source[broken]["members"] == [] and not copies_in(twins, ALI_DESTINATION, **{set_copy.TAG_COPIED_FROM: broken})
    # 20 copies through one queue: never more unfinished than the region takes, none refused for it or throttled
    assert len(seen) == 20 and max(seen) == REGION_COPIES - 1, seen
    assert twins.stats.throttled("alicloud") == {}, twins.stats.throttle_log("alicloud")
    assert result["api_pacing"]["throttled_calls"] == {}
    assert result["api_pacing"]["calls"]["CopySnapshot"] == 20

    again = run_tasks([dict(task, register="again")], twins.endpoints)["again"]
    assert again["failed_sets"] == [broken] and not any(r["changed"] for r in again["copies"])
    assert len(copies_in(twins, ALI_DESTINATION)) == 20


def test_alicloud_instance_ids_with_latest_copy_each_instances_newest_set(twin_factory, run_tasks):
    twins = twin_factory(fleet(), aws=False, latency="zero")
    ids = twins.endpoints["alicloud"]["instances"]
    take_ali_set(twins, ids[NAMES[0]])
    newest = take_ali_set(twins, ids[NAMES[0]])[0]
    other = take_ali_set(twins, ids[NAMES[1]])[0]
    twins.latency.update({"profile": "zero", "transitions": {"snapshot_complete": 0.3}})
    chosen = [ids[NAMES[0]], ids[NAMES[2]], ids[NAMES[1]]]  # the second has no set at all
    task = {COPY: {"provider": "alicloud", "instance_ids": chosen, "latest": True, "destination_region": ALI_DESTINATION},
            "register": "copied"}
    newest_copied(run_tasks([task], twins.endpoints)["copied"], chosen, [newest, None, other])
    assert len(copies_in(twins, ALI_DESTINATION)) == 4
