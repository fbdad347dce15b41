"""app_consistent_group on Alibaba Cloud: a plug-in run the task gives up on, and parameters the plug-in cannot take."""

import time

from twin.alicloud.testing import wait_results

ACG = "appconsistent.snapshots.app_consistent_group"
ROLE = "AppSnapshotRole"
LINUX = {"provider": "alicloud", "platform": "linux", "state": "running", "role": ROLE, "zone": "cn-hangzhou-h",
         "volumes": [{"device": "/dev/xvda", "size": 40, "type": "cloud_essd", "boot": True},
                     {"device": "/dev/xvdb", "size": 100, "type": "cloud_essd"}]}


def instance_id(twins, name):
    return twins.endpoints["alicloud"]["instances"][name]


def groups_of(twins, iid):
    from alibabacloud_ecs20140526 import models
    body = twins.ecs_client().describe_snapshot_groups(models.DescribeSnapshotGroupsRequest(
        region_id=twins.endpoints["alicloud"]["region"], instance_id=iid)).body.to_map()
    return (body.get("SnapshotGroups") or {}).get("SnapshotGroup") or []


def disks_of(twins, iid):
    from alibabacloud_ecs20140526 import models
    body = twins.ecs_client().describe_disks(models.DescribeDisksRequest(
        region_id=twins.endpoints["alicloud"]["region"], instance_id=iid)).body.to_map()
    return {d["Device"]: d["DiskId"] for d in body["Disks"]["Disk"]}


def test_a_plug_in_run_not_started_when_the_task_gives_up_is_cancelled(twin_factory, run_tasks):
    # Cloud Assistant delivers the command after 8 s; the task gives up after 1 s. Left alone, the plug-in
    # would freeze the instance and make a group after the task has reported it failed.
    twins = twin_factory({"instances": [dict(LINUX, name="db")]}, aws=False, latency={"profile": "zero", "delivery": 8})
    iid = instance_id(twins, "db")
    run = run_tasks([{ACG: {"provider": "alicloud", "instance_ids": [iid], "ram_role_name": ROLE, "wait_timeout": 1},
                      "register": "group"}], twins.endpoints)
    entry = run["group"]["results"][0]
    assert run["group"]["failed"] is True
    assert entry["error"]["code"] == "WaitTimeout", entry["error"]
    assert entry["error"]["message"].endswith("it had not started and StopInvocation cancelled it")
    assert entry["status"] == "Cancelled" and entry["consistency"] == "none"
    assert twins.stats.counts("alicloud").get("StopInvocation") == 1
    # Past the delivery time the run has still not started, and no group was made.
    (result,) = wait_results(twins.ecs_client(), twins.endpoints["alicloud"]["region"], entry["invocation_id"])
    assert result.invocation_status == "Cancelled"
    time.sleep(9)
    assert groups_of(twins, iid) == []


def test_a_set_that_would_leave_out_two_disks_is_refused_before_any_command(twin_factory, run_tasks):
    # --params is split at every comma, so "-ExcludeDiskId=d-1,d-2" cannot carry two disks.
    three = dict(LINUX, name="db", volumes=LINUX["volumes"] + [{"device": "/dev/xvdc", "size": 50, "type": "cloud_essd"}])
    twins = twin_factory({"instances": [three, dict(LINUX, name="web")]}, aws=False)
    db, web = instance_id(twins, "db"), instance_id(twins, "web")
    db_disks, web_disks = disks_of(twins, db), disks_of(twins, web)
    twins.stats.reset()
    run = run_tasks([{ACG: {"provider": "alicloud", "instance_ids": [db, web], "ram_role_name": ROLE,
                            "disk_ids": [db_disks["/dev/xvdb"], web_disks["/dev/xvdb"]]}, "register": "group"}],
                    twins.endpoints)
    got = {r["instance_id"]: r for r in run["group"]["results"]}
    assert got[db]["status"] == "NotSent" and got[db]["error"]["code"] == "TooManyExcludedDisks"
    assert f"leave out 2 disks of instance {db}" in got[db]["error"]["message"]
    assert got[web]["consistency"] == "application", got[web].get("error")
    assert twins.stats.counts("alicloud").get("RunCommand") == 1
    assert groups_of(twins, db) == []


def test_two_exclude_disk_ids_are_refused_before_any_call(twin_factory, run_tasks):
    twins = twin_factory({"instances": [dict(LINUX, name="db")]}, aws=False)
    iid = instance_id(twins, "db")
    twins.stats.reset()
    run = run_tasks([{ACG: {"provider": "alicloud", "instance_ids": [iid], "ram_role_name": ROLE,
                            "exclude_disk_ids": ["d-aaaa", "d-bbbb"]}, "register": "group"}], twins.endpoints)
    assert run["group"]["failed"] is True and "-ExcludeDiskId parameter carries one disk id" in run["group"]["msg"]
    assert not any(twins.stats.counts("alicloud").values())
