"""app_consistent_group on Alibaba Cloud, against the Alibaba twin through ansible-playbook."""

import pytest

ACG = "appconsistent.snapshots.app_consistent_group"
ROLE = "AppSnapshotRole"
LINUX = {"provider": "alicloud", "platform": "linux", "state": "running", "role": ROLE, "zone": "cn-hangzhou-h",
         "volumes": [{"device": "/dev/xvda", "size": 40, "type": "cloud_essd", "boot": True},
                     {"device": "/dev/xvdb", "size": 100, "type": "cloud_essd"}]}
WINDOWS = dict(LINUX, platform="windows")


def fleet(*instances, **extra):
    doc = {"instances": [dict(LINUX, **i) for i in instances]}
    doc.update(extra)
    return doc


def ids(twins, *names):
    known = twins.endpoints["alicloud"]["instances"]
    return [known[n] for n in names]


def by_instance(result):
    return {r["instance_id"]: r for r in result["results"]}


def snapshot_tags(twins, snapshot_ids):
    import json
    from alibabacloud_ecs20140526 import models
    client = twins.ecs_client()
    body = client.describe_snapshots(models.DescribeSnapshotsRequest(
        region_id=twins.endpoints["alicloud"]["region"], snapshot_ids=json.dumps(snapshot_ids))).body.to_map()
    return {s["SnapshotId"]: {t["TagKey"]: t["TagValue"] for t in (s.get("Tags") or {}).get("Tag", [])}
            for s in body["Snapshots"]["Snapshot"]}


@pytest.mark.parametrize("platform, consistency, evidence", [
    ("linux", "application", "AppConsistent"),
    ("linux", "filesystem", "FsConsistent"),
    ("windows", "application", "AppConsistent"),
    ("windows", "filesystem", "FsConsistent"),
    ("linux", "crash", None),
    ("windows", "crash", None),
])
def test_each_consistency_level(twin_factory, run_tasks, platform, consistency, evidence):
    twins = twin_factory(fleet({"name": "db", "platform": platform}), aws=False)
    (iid,) = ids(twins, "db")
    run = run_tasks([{ACG: {"provider": "alicloud", "consistency": consistency, "instance_ids": [iid],
                            "ram_role_name": ROLE, "run_id": "CHG-1", "delete_after": "3d", "tags": {"team": "dba"}},
                      "register": "group"}], twins.endpoints)
    result = run["group"]
    assert not result.get("failed"), result.get("msg")
    entry = result["results"][0]
    assert entry["consistency"] == consistency and entry["consistency_requested"] == consistency
    assert entry["set_id"].startswith("ssg-")
    assert len(entry["snapshots"]) == 2
    assert sorted(s["device"] for s in entry["snapshots"]) == ["/dev/xvda", "/dev/xvdb"]
    for snap in entry["snapshots"]:
        assert snap["snapshot_id"].startswith("s-") and snap["disk_id"].startswith("d-") and snap["state"], snap
        assert snap["tags"]["appconsistent:set-id"] == entry["set_id"]
        assert snap["tags"]["appconsistent:consistency"] == consistency
    tags = snapshot_tags(twins, [s["snapshot_id"] for s in entry["snapshots"]])
    for snapshot_id, snap_tags in tags.items():
        assert snap_tags["appconsistent:set-id"] == entry["set_id"]
        assert snap_tags["appconsistent:instance-id"] == iid
        assert snap_tags["appconsistent:consistency"] == consistency
        assert snap_tags["appconsistent:run-id"] == "CHG-1"
        assert snap_tags["team"] == "dba"
        assert snap_tags["appconsistent:device"] in ("/dev/xvda", "/dev/xvdb")
        if evidence:
            assert snap_tags[evidence].lower() == "true"
    if consistency != "crash":
        assert entry["exit_code"] == 0 and entry["invocation_id"].startswith("t-")


def all_snapshot_tags(twins, snapshot_ids):
    """Every snapshot's tags as a user reads them: DescribeSnapshots, 100 ids a call, every page."""
    import json
    from alibabacloud_ecs20140526 import models
    client = twins.ecs_client()
    found = {}
    for start in range(0, len(snapshot_ids), 100):
        token = None
        while True:
            body = client.describe_snapshots(models.DescribeSnapshotsRequest(
                region_id=twins.endpoints["alicloud"]["region"], snapshot_ids=json.dumps(snapshot_ids[start:start + 100]),
                max_results=100, next_token=token)).body.to_map()
            for snap in body["Snapshots"]["Snapshot"]:
                found[snap["SnapshotId"]] = {t["TagKey"]: t["TagValue"] for t in (snap.get("Tags") or {}).get("Tag", [])}
            token = body.get("NextToken")
            if not token:
                break
    return found


def test_250_instances_take_three_run_commands(twin_factory, run_tasks):
    twins = twin_factory({"generate": [{"count": 250, "provider": "alicloud", "name_prefix": "ali-", "template": LINUX}]},
                         aws=False)
    every = sorted(twins.endpoints["alicloud"]["instances"].values())
    twins.stats.reset()
    # An account whose Quota Center grants more than the collection assumes (the twin has no limits here): the
    # batching alone is under test.
    raised = {"CreateSnapshotGroup": {"capacity": 500, "refill": 50}, "TagResources": {"capacity": 500, "refill": 50}}
    run = run_tasks([{ACG: {"provider": "alicloud", "instance_ids": every, "ram_role_name": ROLE, "name": "fleet-backup",
                            "run_id": "CHG-250", "delete_after": "7d", "tags": {"team": "dba"}, "api_rate_limits": raised},
                      "register": "group"}], twins.endpoints)
    result = run["group"]
    assert not result.get("failed"), result.get("msg")
    assert len(result["results"]) == 250
    assert {r["consistency"] for r in result["results"]} == {"application"}
    assert len({r["set_id"] for r in result["results"]}) == 250
    counts = twins.stats.counts("alicloud")
    assert counts["RunCommand"] == 3
    # Every snapshot carries exactly the set's tags, its device and the plug-in's evidence, read back as a user would.
    members = [(r, s) for r in result["results"] for s in r["snapshots"]]
    assert len(members) == 500
    tags = all_snapshot_tags(twins, [s["snapshot_id"] for _r, s in members])
    for entry, snap in members:
        found = dict(tags[snap["snapshot_id"]])
        assert found.pop("appconsistent:delete-after").endswith("Z")
        assert found == {"appconsistent:set-id": entry["set_id"], "appconsistent:instance-id": entry["instance_id"],
                         "appconsistent:consistency": "application", "appconsistent:set-consistency": "application",
                         "appconsistent:device": snap["device"],
                         "appconsistent:run-id": "CHG-250", "team": "dba", "AppConsistent": "True",
                         "appconsistent:members": str(len(entry["snapshots"]))}, snap
        assert snap["tags"] == tags[snap["snapshot_id"]]
    # The set tags name the set, so each set takes one TagResources; the device tags are shared across sets and
    # go 50 snapshots a call: 250 + 2 * 5, where one call per set and one per snapshot made 750.
    devices = {}
    for _entry, snap in members:
        devices[snap["device"]] = devices.get(snap["device"], 0) + 1
    assert sorted(devices.values()) == [250, 250]
    assert counts["TagResources"] == 250 + sum(-(-n // 50) for n in devices.values()) == 260, counts


def test_missing_scripts_give_filesystem_consistency_and_fail_the_host(twin_factory, run_tasks):
    twins = twin_factory(fleet({"name": "ok"}, {"name": "noscripts", "faults": {"scripts_invalid": True}}), aws=False)
    ok, bad = ids(twins, "ok", "noscripts")
    run = run_tasks([{ACG: {"provider": "alicloud", "instance_ids": [ok, bad], "ram_role_name": ROLE},
                      "register": "fail"},
                     {ACG: {"provider": "alicloud", "instance_ids": [bad], "ram_role_name": ROLE, "on_fallback": "warn"},
                      "register": "warn"}], twins.endpoints)
    got = by_instance(run["fail"])
    assert run["fail"]["failed"] is True
    assert got[ok]["consistency"] == "application"
    assert got[bad]["consistency"] == "filesystem"
    assert [f["instance_id"] for f in run["fail"]["failed_instances"]] == [bad]
    assert not run["warn"].get("failed")
    assert run["warn"]["results"][0]["consistency"] == "filesystem"
    tags = snapshot_tags(twins, [s["snapshot_id"] for s in got[bad]["snapshots"]])
    assert {t["appconsistent:consistency"] for t in tags.values()} == {"filesystem"}


EXIT_CASES = [
    (0, None, "application"),
    (1, "precondition", "none"),
    (2, "bad_parameters", "none"),
    (3, "not_eligible", "none"),
    (4, "group_not_created", "none"),
    (5, "group_failed", "none"),
    (6, "group_timeout", "none"),
    (7, "snapshot_failed", "none"),
    (8, "tagging_failed", "none"),
    (9, "prescript_failed", "none"),
    (10, "postscript_failed", "none"),
    (11, "freeze_failed", "none"),
    (12, "thaw_failed", "none"),
    (13, "no_ram_role", "none"),
    (14, "quota_exceeded", "none"),
    (15, "snapshot_unavailable", "none"),
    (16, "previous_snapshot_running", "none"),
    (255, "unknown", "none"),
]


@pytest.fixture(scope="module")
def exit_code_twins(request):
    from twin.launcher import start_twins
    instances = [dict(LINUX, name=f"exit-{code}", faults={"plugin_exit_code": code} if code else {})
                 for code, _n, _c in EXIT_CASES]
    twins = start_twins({"instances": instances}, aws=False)
    request.addfinalizer(twins.stop)
    return twins


def test_every_plugin_exit_code_has_its_meaning(exit_code_twins, run_tasks):
    names = [f"exit-{code}" for code, _n, _c in EXIT_CASES]
    iids = ids(exit_code_twins, *names)
    run = run_tasks([{ACG: {"provider": "alicloud", "instance_ids": iids, "ram_role_name": ROLE},
                      "register": "group"}], exit_code_twins.endpoints)
    result = run["group"]
    got = by_instance(result)
    from ansible_collections.appconsistent.snapshots.plugins.module_utils.app_plugin import EXIT_CODES
    for (code, name, consistency), iid in zip(EXIT_CASES, iids):
        entry = got[iid]
        assert entry["exit_code"] == code, (code, entry)
        assert entry["exit_meaning"] == EXIT_CODES[code][1]
        assert entry["consistency"] == consistency, (code, entry)
        if code:
            assert entry["exit_name"] == name
            assert f"exit code {code}" in entry["error"]["message"]
    assert sorted(f["instance_id"] for f in result["failed_instances"]) == sorted(iids[1:])


# Exit codes the plug-in gives after it created the group: the group exists, but without the plug-in's evidence tags
# it is only crash-consistent. A failed thaw needs the operator now, so it fails the host even with on_fallback: warn.
AFTER_GROUP = [
    ("tag_error", 8, "tagging_failed", False),
    ("postscript_fail", 10, "postscript_failed", False),
    ("freeze_timeout", 11, "freeze_failed", False),
    ("thaw_fail", 12, "thaw_failed", True),
]


def test_exit_codes_after_the_group_keep_a_crash_consistent_set(twin_factory, run_tasks):
    twins = twin_factory(fleet(*({"name": fault, "faults": {fault: True}} for fault, _c, _n, _u in AFTER_GROUP)),
                         aws=False)
    iids = ids(twins, *(fault for fault, _c, _n, _u in AFTER_GROUP))
    task = {"provider": "alicloud", "instance_ids": iids, "ram_role_name": ROLE}
    run = run_tasks([{ACG: task, "register": "fail"}, {ACG: dict(task, on_fallback="warn"), "register": "warn"}],
                    twins.endpoints)
    from ansible_collections.appconsistent.snapshots.plugins.module_utils.app_plugin import EXIT_CODES
    for name in ("fail", "warn"):
        got = by_instance(run[name])
        for (fault, code, short, _urgent), iid in zip(AFTER_GROUP, iids):
            entry = got[iid]
            assert (entry["exit_code"], entry["exit_name"]) == (code, short), (fault, entry)
            assert entry["exit_meaning"] == EXIT_CODES[code][1]
            assert entry["error"]["code"] == f"PluginExit{code}", (fault, entry)
            assert entry["set_id"].startswith("ssg-") and len(entry["snapshots"]) == 2, (fault, entry)
            assert entry["consistency"] == "crash", (fault, entry)
            tags = snapshot_tags(twins, [s["snapshot_id"] for s in entry["snapshots"]])
            assert {t["appconsistent:consistency"] for t in tags.values()} == {"crash"}, (fault, tags)
            assert {t["appconsistent:set-id"] for t in tags.values()} == {entry["set_id"]}
    assert run["fail"]["failed"] is True
    assert sorted(f["instance_id"] for f in run["fail"]["failed_instances"]) == sorted(iids)
    urgent = [iid for (_f, _c, _n, is_urgent), iid in zip(AFTER_GROUP, iids) if is_urgent]
    assert run["warn"]["failed"] is True
    assert [f["instance_id"] for f in run["warn"]["failed_instances"]] == urgent
    warned = " ".join(run["warn"].get("warnings") or [])
    for (_f, _c, _n, is_urgent), iid in zip(AFTER_GROUP, iids):
        assert (iid in warned) is not is_urgent, (iid, warned)


@pytest.mark.parametrize("args, words", [
    ({"name": 'bad"name'}, "name"),
    ({"name": "a,b"}, "name"),
    ({"name": "x=1"}, "name"),
    ({"name": "n$(reboot)"}, "name"),
    ({"pre_script_path": "relative/pre.sh"}, "pre_script_path"),
    ({"post_script_path": "/opt/my scripts/post.sh"}, "post_script_path"),
    ({"disk_ids": ["d-doesnotexist"]}, "unknown disk id"),
    ({"disk_ids": ["d-1"], "exclude_disk_ids": ["d-2"]}, "mutually exclusive"),
    ({"ram_role_name": None}, "needs ram_role_name"),
    ({"description": "it's"}, "description"),
    ({"freeze_timeout": 0}, "freeze_timeout"),
    ({"mounts": ["/data"]}, "only with consistency offline"),
    ({"consistency": "offline", "mounts": ["/data"]}, "disk_ids"),
    ({"consistency": "offline", "mounts": ["/"], "disk_ids": ["d-1"]}, "never unmounted"),
    ({"consistency": "offline", "mounts": ["data"], "disk_ids": ["d-1"]}, "refused"),
])
def test_bad_input_is_refused_before_any_change(twin_factory, run_tasks, args, words):
    twins = twin_factory(fleet({"name": "db"}), aws=False)
    (iid,) = ids(twins, "db")
    task = {"provider": "alicloud", "instance_ids": [iid], "ram_role_name": ROLE}
    task.update(args)
    task = {k: v for k, v in task.items() if v is not None}
    twins.stats.reset()
    run = run_tasks([{ACG: task, "register": "group"}], twins.endpoints)
    assert run["group"]["failed"] is True and words in run["group"]["msg"], run["group"]["msg"]
    counts = twins.stats.counts("alicloud")
    assert not any(counts.get(a) for a in ("RunCommand", "CreateSnapshotGroup", "TagResources")), counts


def test_a_non_essd_disk_is_named(twin_factory, run_tasks):
    twins = twin_factory(fleet({"name": "db", "volumes": [
        {"device": "/dev/xvda", "size": 40, "type": "cloud_essd", "boot": True},
        {"device": "/dev/xvdb", "size": 100, "type": "cloud_ssd"}]}), aws=False)
    (iid,) = ids(twins, "db")
    twins.stats.reset()
    run = run_tasks([{ACG: {"provider": "alicloud", "instance_ids": [iid], "ram_role_name": ROLE}, "register": "group"}],
                    twins.endpoints)
    assert run["group"]["failed"] is True
    entry = run["group"]["results"][0]
    assert entry["error"]["code"] == "NotESSD" and "cloud_ssd" in entry["error"]["message"]
    assert entry["status"] == "NotSent" and entry["consistency"] == "none"
    counts = twins.stats.counts("alicloud")
    assert not any(counts.get(a) for a in ("RunCommand", "CreateSnapshotGroup", "TagResources")), counts


def test_check_mode_and_rerun_with_run_id(twin_factory, run_tasks):
    twins = twin_factory(fleet({"name": "db"}), aws=False)
    (iid,) = ids(twins, "db")
    task = {ACG: {"provider": "alicloud", "instance_ids": [iid], "ram_role_name": ROLE, "run_id": "CHG-9",
                  "exclude_boot_disk": True}}
    twins.stats.reset()
    check = run_tasks([dict(task, register="check")], twins.endpoints, check=True)
    plan = check["check"]["results"][0]["plan"]
    assert check["check"]["changed"] is True and "app-snapshot-plugin" in plan["command"]
    assert "-ExcludeDiskId=" in plan["command"]
    assert not twins.stats.counts("alicloud").get("RunCommand")
    run = run_tasks([dict(task, register="first"), dict(task, register="second")], twins.endpoints)
    assert run["first"]["changed"] is True and run["second"]["changed"] is False
    assert run["second"]["results"][0]["status"] == "Existing"
    assert run["second"]["results"][0]["set_id"] == run["first"]["results"][0]["set_id"]
    assert len(run["first"]["results"][0]["snapshots"]) == 1
    assert twins.stats.counts("alicloud")["RunCommand"] == 1


def test_agent_offline_and_no_role_are_refused_per_instance(twin_factory, run_tasks):
    twins = twin_factory(fleet({"name": "ok"}, {"name": "offline", "agent": {"status": "connection_lost"}},
                               {"name": "norole", "role": None}), aws=False)
    ok, offline, norole = ids(twins, "ok", "offline", "norole")
    run = run_tasks([{ACG: {"provider": "alicloud", "instance_ids": [ok, offline, norole], "ram_role_name": ROLE},
                      "register": "group"}], twins.endpoints)
    got = by_instance(run["group"])
    assert got[ok]["consistency"] == "application"
    assert got[offline]["error"]["code"] == "AgentNotRunning"
    assert got[norole]["error"]["code"] == "NoRamRole"


def instance_status(twins, iid):
    import json
    from alibabacloud_ecs20140526 import models
    body = twins.ecs_client().describe_instances(models.DescribeInstancesRequest(
        region_id=twins.endpoints["alicloud"]["region"], instance_ids=json.dumps([iid]))).body.to_map()
    return body["Instances"]["Instance"][0]["Status"]


def test_offline_stops_snapshots_and_starts_a_running_instance_only(twin_factory, run_tasks):
    twins = twin_factory(fleet({"name": "up"}, {"name": "down", "state": "stopped"}), aws=False,
                         latency={"profile": "zero", "transitions": {"instance_stop": 1.0, "instance_start": 1.0}})
    up, down = ids(twins, "up", "down")
    task = {ACG: {"provider": "alicloud", "consistency": "offline", "instance_ids": [up, down], "run_id": "CHG-78"}}
    run = run_tasks([dict(task, register="group")], twins.endpoints)
    result = run["group"]
    assert not result.get("failed"), result.get("msg")
    got = by_instance(result)
    assert got[up]["consistency"] == "offline" and got[down]["consistency"] == "offline"
    assert got[up]["downtime"] >= 2.0 and "downtime" not in got[down]
    assert instance_status(twins, up) == "Running" and instance_status(twins, down) == "Stopped"
    tags = snapshot_tags(twins, [s["snapshot_id"] for s in got[up]["snapshots"]])
    assert {t["appconsistent:consistency"] for t in tags.values()} == {"offline"}
    # The same run id again: the sets are found, and nothing is stopped a second time.
    twins.stats.reset()
    again = run_tasks([dict(task, register="again")], twins.endpoints)["again"]
    assert not again.get("failed") and not again["changed"], again
    assert {r["instance_id"]: r["set_id"] for r in again["results"]} == {up: got[up]["set_id"], down: got[down]["set_id"]}
    counts = twins.stats.counts("alicloud")
    assert not counts.get("StopInstance") and not counts.get("CreateSnapshotGroup"), counts


def disk_of(twins, iid, device):
    from alibabacloud_ecs20140526 import models
    body = twins.ecs_client().describe_disks(models.DescribeDisksRequest(
        region_id=twins.endpoints["alicloud"]["region"], instance_id=iid)).body.to_map()
    return next(d["DiskId"] for d in body["Disks"]["Disk"] if d["Device"] == device)


def test_offline_with_mounts_refuses_windows_and_the_system_disk_per_instance(twin_factory, run_tasks):
    twins = twin_factory(fleet({"name": "win", "platform": "windows"}, {"name": "lin"}), aws=False)
    win, lin = ids(twins, "win", "lin")
    system = disk_of(twins, lin, "/dev/xvda")
    twins.stats.reset()
    run = run_tasks([{ACG: {"provider": "alicloud", "consistency": "offline", "instance_ids": [win, lin],
                            "mounts": ["/data"],
                            "disk_ids": [disk_of(twins, win, "/dev/xvdb"), system, disk_of(twins, lin, "/dev/xvdb")]},
                      "register": "group"}], twins.endpoints)
    got = by_instance(run["group"])
    assert run["group"]["failed"] is True
    assert got[win]["error"]["code"] == "WrongPlatform" and got[win]["status"] == "NotSent"
    assert got[lin]["error"]["code"] == "SystemDiskOnline" and system in got[lin]["error"]["message"]
    counts = twins.stats.counts("alicloud")
    assert not any(counts.get(a) for a in ("RunCommand", "CreateSnapshotGroup", "StopInstance")), counts


def test_plugin_runs_under_a_tight_bucket_are_sent_only_as_fast_as_the_groups_can_be_made(twin_factory, run_tasks):
    # The plug-in calls CreateSnapshotGroup from the instance while its filesystems are frozen. The account's bucket
    # holds 3 tokens and refills 1 a second: sent to 10 instances at once, most plug-ins would be throttled while
    # frozen; sent only as tokens allow, every set is application-consistent and no call is throttled.
    tight = {"CreateSnapshotGroup": {"capacity": 3, "refill": 1}}
    twins = twin_factory(fleet(*[{"name": f"db-{n}"} for n in range(10)]), aws=False,
                         limits={"alicloud:CreateSnapshotGroup": {"capacity": 3, "refill": 1}})
    every = ids(twins, *[f"db-{n}" for n in range(10)])
    task = {ACG: {"provider": "alicloud", "instance_ids": every, "ram_role_name": ROLE, "api_rate_limits": tight}}
    plan = run_tasks([dict(task, register="plan")], twins.endpoints, check=True)["plan"]
    assert plan["api_pacing"]["estimated_floor_s"] == 7.0  # 10 groups from a bucket of 3 refilling 1 a second
    twins.stats.reset()
    result = run_tasks([dict(task, register="group")], twins.endpoints)["group"]
    assert not result.get("failed"), result.get("msg")
    assert {r["consistency"] for r in result["results"]} == {"application"}
    assert twins.stats.throttled() == {}, twins.stats.throttle_log()
    assert result["api_pacing"]["throttled_calls"] == {}


def test_the_plugin_quiesces_every_member_so_each_carries_the_set_level(twin_factory, run_tasks):
    """Seed 004: the plug-in freezes every filesystem of the instance (EnableFsFreeze) and -ExcludeDiskId only leaves
    disks out of the group, so every member of the set was quiesced: each is labelled with the set's level."""
    import json
    from alibabacloud_ecs20140526 import models
    volumes = LINUX["volumes"] + [{"device": "/dev/xvdc", "size": 100, "type": "cloud_essd"}]
    twins = twin_factory(fleet({"name": "db", "volumes": volumes}), aws=False)
    (iid,) = ids(twins, "db")
    disks = twins.ecs_client().describe_disks(models.DescribeDisksRequest(
        region_id=twins.endpoints["alicloud"]["region"], instance_id=iid)).body.to_map()["Disks"]["Disk"]
    excluded = next(d["DiskId"] for d in disks if d["Device"] == "/dev/xvdc")
    run = run_tasks([{ACG: {"provider": "alicloud", "instance_ids": [iid], "ram_role_name": ROLE,
                            "exclude_disk_ids": [excluded]}, "register": "group"}], twins.endpoints)
    result = run["group"]
    assert not result.get("failed"), result.get("msg")
    entry = result["results"][0]
    assert entry["consistency"] == "application"
    assert sorted(s["device"] for s in entry["snapshots"]) == ["/dev/xvda", "/dev/xvdb"]
    assert all(s["quiesced"] for s in entry["snapshots"])
    tags = snapshot_tags(twins, [s["snapshot_id"] for s in entry["snapshots"]])
    assert {(t["appconsistent:consistency"], t["appconsistent:set-consistency"]) for t in tags.values()} == \
        {("application", "application")}
    assert json.dumps(excluded) not in json.dumps(entry["snapshots"])
