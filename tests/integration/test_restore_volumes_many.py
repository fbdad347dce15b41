"""restore_volumes of many instances in one task (set_ids, instance_ids) against the AWS twin with tight buckets."""

from test_restore_volumes import aws_devices
from test_restore_volumes import aws_instance_spec
from test_restore_volumes import tags
from test_restore_volumes import take_aws_set

from ansible_collections.appconsistent.snapshots.plugins.module_utils import restore

RESTORE = "appconsistent.snapshots.restore_volumes"
NAMES = [f"many-{n}" for n in range(6)]
# Tighter than the account's published buckets (StartInstances 5 refilling 2 a second, CreateVolume 100 and 5,
# the other mutating actions 50 and 5, reads 100 and 20): calls that the task does not pace are answered
# RequestLimitExceeded.
TIGHT = {"StartInstances": {"capacity": 1, "refill": 2}, "StopInstances": {"capacity": 2, "refill": 4},
         "CreateVolume": {"capacity": 4, "refill": 4}, "AttachVolume": {"capacity": 4, "refill": 4},
         "DetachVolume": {"capacity": 4, "refill": 4}, "DescribeVolumes": {"capacity": 3, "refill": 3},
         "DescribeInstances": {"capacity": 3, "refill": 3}}
TRANSITIONS = {"profile": "zero", "transitions": {"volume_create": 0.5, "volume_attach": 0.3, "volume_detach": 0.3,
                                                  "instance_stop": 0.5, "instance_start": 0.5}}


def fleet(failing=False):
    instances = [aws_instance_spec(name) for name in NAMES]
    if failing:
        # its new volumes go to state error: its restore fails before its instance is touched
        instances.append(aws_instance_spec("many-fails", faults={"create_volume_error": True}))
    return {"instances": instances}


def instance_ids(twins):
    return twins.endpoints["aws"]["instances"]


def rows_when_one_failed(result, failed_id, cause, names, ids):
    """The result's rows by instance, checked: only failed_id failed (for cause), every one of names changed."""
    assert result.get("failed") and result["failed_instances"] == [failed_id], result.get("msg")
    assert f"1 of {len(names) + 1} restores failed" in result["msg"] and cause in result["msg"], result["msg"]
    by_instance = {r["instance_id"]: r for r in result["restores"]}
    for name in names:
        assert by_instance[ids[name]]["changed"] and not by_instance[ids[name]]["failed"], by_instance[ids[name]]
    return by_instance


def test_aws_many_instances_in_one_task_are_paced_and_one_failure_stops_no_other(twin_factory, run_tasks):
    twins = twin_factory(fleet(failing=True), latency=TRANSITIONS, alicloud=False, limits=TIGHT)
    ids = instance_ids(twins)
    ec2 = twins.aws_client("ec2")
    sets = {name: take_aws_set(twins, ids[name]) for name in NAMES + ["many-fails"]}
    before = {name: aws_devices(ec2, ids[name]) for name in sets}
    task = {RESTORE: {"set_ids": [sets[name][0] for name in sets], "api_rate_limits": TIGHT}}

    plan = run_tasks([dict(task, register="plan")], twins.endpoints, check=True)["plan"]
    assert not plan.get("failed"), plan.get("msg")
    assert [r["set_id"] for r in plan["restores"]] == [sets[name][0] for name in sets]
    assert all(r["changed"] and r["device_map"][0]["volume_id"] is None for r in plan["restores"])
    # 14 creations (two data volumes each) from a bucket of 4 refilling 4 a second take 2.5 s; 7 starts from 1
    # refilling 2 take 3 s, the slowest
    assert plan["api_pacing"]["estimated_floor_s"] == round((7 - 1) / 2, 1)
    assert {name: aws_devices(ec2, ids[name]) for name in sets} == before

    twins.stats.reset()
    result = run_tasks([dict(task, register="restore")], twins.endpoints)["restore"]
    by_instance = rows_when_one_failed(result, ids["many-fails"], "creating the volumes failed", NAMES, ids)
    for name in NAMES:
        row = by_instance[ids[name]]
        now = aws_devices(ec2, ids[name])
        assert len(row["device_map"]) == 2
        for entry in row["device_map"]:
            device = entry["device"]
            assert entry["outcome"] == "replaced" and entry["original_volume_id"] == before[name][device]
            assert now[device] == entry["volume_id"] != before[name][device]
        assert row["instance_state"] == "running"
    failed = by_instance[ids["many-fails"]]
    assert failed["failed"] and failed["instance_state"] == "running", failed
    assert aws_devices(ec2, ids["many-fails"]) == before["many-fails"]
    failed_volume = ec2.describe_volumes(VolumeIds=[failed["device_map"][0]["volume_id"]])["Volumes"][0]
    assert restore.TAG_RESTORE_FAILED in {t["Key"] for t in failed_volume.get("Tags") or []}
    assert twins.stats.throttled("aws") == {}, twins.stats.throttle_log("aws")
    assert result["api_pacing"]["throttled_calls"] == {}
    assert result["api_pacing"]["calls"]["StartInstances"] == len(NAMES)  # the failed one was never stopped


def all_refused_for_the_last(result, chosen):
    """Checks a stop_on_failure restore whose last instance has only a crash-consistent set: nothing is done."""
    assert result.get("failed") and not result["changed"], result
    assert result["failed_instances"] == chosen
    refused = {r["instance_id"]: r["msg"] for r in result["restores"]}
    assert "no complete set at least application-consistent" in refused[chosen[-1]]
    assert all("stop_on_failure" in refused[i] for i in chosen[:-1]), refused


def test_aws_instance_ids_with_latest_and_stop_on_failure_changes_nothing_when_one_is_refused(twin_factory, run_tasks):
    twins = twin_factory(fleet(), latency=TRANSITIONS, alicloud=False, limits=TIGHT)
    ids = instance_ids(twins)
    ec2 = twins.aws_client("ec2")
    for name in NAMES[:3]:
        take_aws_set(twins, ids[name])
    take_aws_set(twins, ids[NAMES[3]], consistency="crash")  # below the default min_consistency: refused
    chosen = [ids[name] for name in NAMES[:4]]
    before = {name: aws_devices(ec2, ids[name]) for name in NAMES[:4]}
    task = {RESTORE: {"instance_ids": chosen, "latest": True, "stop_on_failure": True, "api_rate_limits": TIGHT},
            "register": "restore"}
    all_refused_for_the_last(run_tasks([task], twins.endpoints)["restore"], chosen)
    assert {name: aws_devices(ec2, ids[name]) for name in NAMES[:4]} == before

    task[RESTORE].update(stop_on_failure=False)
    result = run_tasks([task], twins.endpoints)["restore"]
    assert result["failed_instances"] == [ids[NAMES[3]]]
    assert [r["changed"] for r in result["restores"]] == [True, True, True, False]
    assert twins.stats.throttled("aws") == {}, twins.stats.throttle_log("aws")


def test_many_instance_options_are_refused_before_any_call(twin_factory, run_tasks):
    twins = twin_factory(fleet(), alicloud=False)
    ids = instance_ids(twins)
    twins.stats.reset()
    tasks = [
        {RESTORE: {"instance_ids": [ids[NAMES[0]]]}, "register": "no_latest"},
        {RESTORE: {"set_ids": ["acs-20261123t060000-1a2b3c4d", "acs-20261123t060000-1a2b3c4d"]}, "register": "twice"},
        {RESTORE: {"set_ids": ["acs-20261123t060000-1a2b3c4d"], "target_instance_id": ids[NAMES[0]]},
         "register": "target"},
        {RESTORE: {"set_ids": ["acs-*"]}, "register": "wildcard"},
    ]
    run = run_tasks(tasks, twins.endpoints)
    assert "add latest: true" in run["no_latest"]["msg"]
    assert "more than once" in run["twice"]["msg"]
    assert "target_instance_id restores one set onto one instance" in run["target"]["msg"]
    assert run["wildcard"].get("failed") and "acs-*" in run["wildcard"]["msg"]
    assert twins.stats.counts("aws") == {}


def test_aws_sets_of_one_instance_attach_and_create_in_one_task_and_replace_still_refuses(twin_factory, run_tasks):
    twins = twin_factory({"instances": [aws_instance_spec("one")]}, latency=TRANSITIONS, alicloud=False)
    instance = instance_ids(twins)["one"]
    ec2 = twins.aws_client("ec2")
    set_ids = [take_aws_set(twins, instance)[0], take_aws_set(twins, instance)[0]]
    before = aws_devices(ec2, instance)

    # Two sets replacing the same devices would race: both are refused, before any change.
    twins.stats.reset()
    replace = run_tasks([{RESTORE: {"set_ids": set_ids, "mode": "replace"}, "register": "replace"}],
                        twins.endpoints)["replace"]
    assert replace.get("failed") and replace["failed_instances"] == [instance, instance], replace.get("msg")
    assert all("are all of instance" in r["msg"] and not r["changed"] for r in replace["restores"]), replace["restores"]
    assert "CreateVolume" not in twins.stats.counts("aws")
    assert aws_devices(ec2, instance) == before

    # Modes that replace nothing take both sets in one task: volumes side by side, attach at free device names.
    run = run_tasks([{RESTORE: {"set_ids": set_ids, "mode": "volumes"}, "register": "volumes"},
                     {RESTORE: {"set_ids": set_ids, "mode": "attach"}, "diff": True, "register": "attach"}],
                    twins.endpoints)
    for mode in ("volumes", "attach"):
        result = run[mode]
        assert not result.get("failed") and result["msg"] == "2 restores done", result.get("msg")
        assert [r["set_id"] for r in result["restores"]] == set_ids
        assert all(r["changed"] and r["instance_id"] == instance for r in result["restores"]), result["restores"]
        for row in result["restores"]:
            assert len(row["device_map"]) == len(before) - 1  # the boot volume is not in the sets
            for entry in row["device_map"]:
                volume = ec2.describe_volumes(VolumeIds=[entry["volume_id"]])["Volumes"][0]
                assert tags(volume)[restore.TAG_RESTORED_FROM_SET] == row["set_id"]
                assert volume["SnapshotId"] == entry["snapshot_id"]
                if mode == "volumes":
                    assert entry["device"] is None and volume["State"] == "available" and not volume["Attachments"]
                else:
                    assert entry["outcome"] == "attached"
                    assert volume["Attachments"][0]["InstanceId"] == instance
    attached = {e["device"]: e["volume_id"] for r in run["attach"]["restores"] for e in r["device_map"]}
    assert len(attached) == 2 * (len(before) - 1) and not set(attached) & set(before), attached
    assert aws_devices(ec2, instance) == dict(before, **attached)  # the originals stay where they were
    assert set(run["attach"]["diff"]["after"][instance]) == set(before) | set(attached)
