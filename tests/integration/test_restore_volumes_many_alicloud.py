"""restore_volumes of many Alibaba Cloud instances in one task (set_ids, instance_ids) with tight buckets."""

from test_restore_volumes import ali_disks
from test_restore_volumes import ali_instance_spec
from test_restore_volumes import ali_instance_status
from test_restore_volumes import disk_tags
from test_restore_volumes import failing_calls
from test_restore_volumes import take_ali_set
from test_restore_volumes_many import all_refused_for_the_last
from test_restore_volumes_many import rows_when_one_failed

from ansible_collections.appconsistent.snapshots.plugins.module_utils import restore

RESTORE = "appconsistent.snapshots.restore_volumes"
NAMES = [f"ali-many-{n}" for n in range(6)]
# Tighter than the buckets assumed for the account (StartInstance 5 refilling 2 a second, CreateSnapshotGroup 100
# and 5, the other mutating actions 50 and 5, reads 100 and 20): calls the task does not pace are answered
# Throttling.User.
TIGHT = {"StartInstance": {"capacity": 1, "refill": 2}, "StopInstance": {"capacity": 2, "refill": 4},
         "ResetDisk": {"capacity": 2, "refill": 4}, "CreateSnapshotGroup": {"capacity": 2, "refill": 4},
         "TagResources": {"capacity": 4, "refill": 8}, "DescribeDisks": {"capacity": 8, "refill": 8},
         "DescribeInstances": {"capacity": 8, "refill": 8}, "DescribeSnapshotGroups": {"capacity": 8, "refill": 8},
         "CreateDisk": {"capacity": 2, "refill": 4}, "AttachDisk": {"capacity": 2, "refill": 4}}
TWIN_LIMITS = dict({f"alicloud:{name}": bucket for name, bucket in TIGHT.items()}, profile="none")
TRANSITIONS = {"profile": "zero", "transitions": {"instance_stop": 0.5, "instance_start": 0.5, "volume_create": 0.3,
                                                  "volume_attach": 0.3, "snapshot_group_complete": 0.3}}


def fleet(failing=False):
    instances = [ali_instance_spec(name) for name in NAMES]
    if failing:
        # ResetDisk of its disk fails: its restore is rolled back from its safety group, the others go on
        instances.append(dict(ali_instance_spec("ali-many-fails"), faults={"reset_error": True}))
    return {"instances": instances}


def instance_ids(twins):
    return twins.endpoints["alicloud"]["instances"]


def data_disk(twins, iid):
    return ali_disks(twins, iid)["/dev/xvdb"].disk_id


def test_alicloud_many_instances_in_one_task_are_paced_and_one_failure_stops_no_other(twin_factory, run_tasks):
    twins = twin_factory(fleet(failing=True), latency=TRANSITIONS, aws=False)
    ids = instance_ids(twins)
    names = NAMES + ["ali-many-fails"]
    disks = {ids[name]: data_disk(twins, ids[name]) for name in names}
    sets = {name: take_ali_set(twins, ids[name], disk_ids=[disks[ids[name]]]) for name in names}
    twins.limits.update(TWIN_LIMITS)
    task = {RESTORE: {"provider": "alicloud", "set_ids": [sets[name][0] for name in names],
                      "api_rate_limits": TIGHT}}

    twins.stats.reset()
    plan = run_tasks([dict(task, register="plan")], twins.endpoints, check=True)["plan"]
    assert not plan.get("failed"), plan.get("msg")
    assert [r["set_id"] for r in plan["restores"]] == [sets[name][0] for name in names]
    assert [r["instance_id"] for r in plan["restores"]] == [ids[name] for name in names]
    assert all(r["changed"] and r["device_map"][0]["volume_id"] == disks[r["instance_id"]] for r in plan["restores"])
    # 7 stops and 7 starts of a running instance each; 7 starts from a bucket of 1 refilling 2 take 3 s, the slowest
    assert plan["api_pacing"]["estimated_floor_s"] == round((7 - 1) / 2, 1)
    assert not any(n for action, n in twins.stats.counts("alicloud").items()
                   if not action.startswith(("Describe", "List"))), twins.stats.counts("alicloud")

    twins.stats.reset()
    # Another tool of the account empties the StopInstance bucket twice: the task hears of it and slows down.
    with failing_calls(twins, "alicloud", "StopInstance", "Throttling.User", 2, 3):
        result = run_tasks([dict(task, register="restore")], twins.endpoints)["restore"]
    throttled = twins.stats.throttled("alicloud"), twins.stats.throttle_log("alicloud")
    twins.limits.update("none")  # the checks below read freely
    by_instance = rows_when_one_failed(result, ids["ali-many-fails"], "rolled back", NAMES, ids)
    for name in NAMES:
        row = by_instance[ids[name]]
        (entry,) = row["device_map"]
        assert entry["outcome"] == "reset" and entry["snapshot_id"] == sets[name][1]["/dev/xvdb"]
        assert entry["volume_id"] == disks[ids[name]] == data_disk(twins, ids[name])
        assert disk_tags(ali_disks(twins, ids[name])["/dev/xvdb"])[restore.TAG_RESTORED_FROM] == entry["snapshot_id"]
        assert row["instance_state"] == "running" and ali_instance_status(twins, ids[name]) == "Running"
        assert row["safety_snapshot_group_id"]
    failed = by_instance[ids["ali-many-fails"]]
    assert failed["failed"] and failed["instance_state"] == "running", failed
    assert ali_instance_status(twins, ids["ali-many-fails"]) == "Running"
    # Every throttled answer was one the task's pacer heard of and waited after (none retried unpaced by the SDK),
    # and the only ones were those of the other tool.
    assert result["api_pacing"]["throttled_calls"] == throttled[0], throttled[1]
    assert {a: n for a, n in throttled[0].items() if not a.startswith("Describe")} == {"StopInstance": 2}, throttled[1]
    assert result["api_pacing"]["calls"]["StartInstance"] == len(NAMES) + 1  # the failed one was started again
    assert result["api_pacing"]["calls"]["ResetDisk"] == len(NAMES) + 2  # its reset and its reset back both refused
    assert "resetting the disks back from safety group" in " ".join(failed["rollback_problems"])


def test_alicloud_instance_ids_with_latest_and_stop_on_failure_changes_nothing_when_one_is_refused(
        twin_factory, run_tasks):
    twins = twin_factory(fleet(), latency=TRANSITIONS, aws=False)
    ids = instance_ids(twins)
    for name in NAMES[:3]:
        take_ali_set(twins, ids[name])
    take_ali_set(twins, ids[NAMES[3]], consistency="crash")  # below the default min_consistency: refused
    chosen = [ids[name] for name in NAMES[:4]]
    before = {name: data_disk(twins, ids[name]) for name in NAMES[:4]}
    twins.limits.update(TWIN_LIMITS)
    task = {RESTORE: {"provider": "alicloud", "instance_ids": chosen, "latest": True, "stop_on_failure": True,
                      "mode": "attach", "api_rate_limits": TIGHT}, "register": "restore"}
    twins.stats.reset()
    all_refused_for_the_last(run_tasks([task], twins.endpoints)["restore"], chosen)
    assert not any(n for action, n in twins.stats.counts("alicloud").items()
                   if not action.startswith(("Describe", "List"))), twins.stats.counts("alicloud")

    task[RESTORE].update(stop_on_failure=False)
    result = run_tasks([task], twins.endpoints)["restore"]
    throttled = twins.stats.throttled("alicloud"), twins.stats.throttle_log("alicloud")
    twins.limits.update("none")
    assert result["failed_instances"] == [ids[NAMES[3]]]
    assert [r["changed"] for r in result["restores"]] == [True, True, True, False]
    for name in NAMES[:3]:
        disks = ali_disks(twins, ids[name])
        assert disks["/dev/xvdb"].disk_id == before[name]  # attach leaves the instance's own disks where they are
        assert len(disks) == 4  # and adds one disk per member: the system disk's and the data disk's
    assert result["api_pacing"]["throttled_calls"] == throttled[0]
    assert not [a for a in throttled[0] if not a.startswith("Describe")], throttled[1]
