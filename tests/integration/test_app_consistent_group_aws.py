"""app_consistent_group on AWS through the twin: crash sets and the Windows (VSS) path.

The Linux freeze path runs the real freeze helper on loop-mounted filesystems: tests/e2e.
"""

import datetime

import pytest

ACG = "appconsistent.snapshots.app_consistent_group"
VOLUMES = [{"device": "/dev/sda1", "size": 30, "boot": True}, {"device": "/dev/xvdf", "size": 10},
           {"device": "/dev/xvdg", "size": 20}]


def fleet(**platforms):
    return {"instances": [{"provider": "aws", "name": name, "platform": platform, "volumes": VOLUMES}
                          for name, platform in platforms.items()]}


def ids(twins, *names):
    return [twins.endpoints["aws"]["instances"][n] for n in names]


def volumes_of(twins, iid):
    ec2 = twins.aws_client("ec2")
    instance = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    return {m["DeviceName"]: m["Ebs"]["VolumeId"] for m in instance["BlockDeviceMappings"]}


def set_snapshots(twins, set_id):
    ec2 = twins.aws_client("ec2")
    by_set = [{"Name": "tag:appconsistent:set-id", "Values": [set_id]}]
    snaps = ec2.describe_snapshots(OwnerIds=["self"], Filters=by_set)["Snapshots"]
    return [dict(s, Tags={t["Key"]: t["Value"] for t in s.get("Tags", [])}) for s in snaps]


@pytest.mark.parametrize("platform", ["linux", "windows"])
def test_crash_set_of_the_selected_volumes(twin_factory, run_tasks, platform):
    twins = twin_factory(fleet(web=platform), alicloud=False)
    (iid,) = ids(twins, "web")
    volumes = volumes_of(twins, iid)
    run = run_tasks([{ACG: {"provider": "aws", "consistency": "crash", "instance_ids": [iid],
                            "exclude_disk_ids": [volumes["/dev/xvdg"]], "exclude_boot_disk": True,
                            "tags": {"team": "web"}, "run_id": "CHG-5"}, "register": "group"}], twins.endpoints)
    result = run["group"]
    assert not result.get("failed"), result.get("msg")
    entry = result["results"][0]
    assert (entry["status"], entry["consistency"]) == ("Created", "crash")
    (member,) = entry["snapshots"]
    assert (member["volume_id"], member["device"]) == (volumes["/dev/xvdf"], "/dev/xvdf")
    assert member["snapshot_id"].startswith("snap-") and member["state"]
    assert member["tags"]["appconsistent:set-id"] == entry["set_id"]
    snaps = set_snapshots(twins, entry["set_id"])
    assert [s["VolumeId"] for s in snaps] == [volumes["/dev/xvdf"]]
    tags = snaps[0]["Tags"]
    assert tags["appconsistent:consistency"] == "crash" and tags["appconsistent:device"] == "/dev/xvdf"
    assert tags["appconsistent:instance-id"] == iid and tags["team"] == "web" and tags["appconsistent:run-id"] == "CHG-5"
    assert "AppConsistent" not in tags
    # The set says how many snapshots it has, from its creation on (issue 18 line 4).
    assert tags["appconsistent:members"] == "1"


def test_crash_needs_no_agent_and_works_on_a_stopped_instance(twin_factory, run_tasks):
    twins = twin_factory({"instances": [{"provider": "aws", "name": "off", "platform": "linux", "state": "stopped",
                                         "agent": {"status": "not_installed"}, "volumes": VOLUMES}]}, alicloud=False)
    (iid,) = ids(twins, "off")
    twins.stats.reset()
    run = run_tasks([{ACG: {"provider": "aws", "consistency": "crash", "instance_ids": [iid]}, "register": "group"}],
                    twins.endpoints)
    assert not run["group"].get("failed"), run["group"].get("msg")
    assert len(run["group"]["results"][0]["snapshots"]) == 3
    assert not twins.stats.counts("aws").get("SendCommand")


@pytest.mark.parametrize("consistency, writers_tag", [("application", "application"), ("filesystem", "filesystem")])
def test_windows_goes_through_vss(twin_factory, run_tasks, consistency, writers_tag):
    twins = twin_factory(fleet(sql="windows"), alicloud=False)
    (iid,) = ids(twins, "sql")
    run = run_tasks([{ACG: {"provider": "aws", "consistency": consistency, "instance_ids": [iid]}, "register": "group"}],
                    twins.endpoints)
    result = run["group"]
    assert not result.get("failed"), result.get("msg")
    entry = result["results"][0]
    assert entry["consistency"] == writers_tag and entry["status"] == "Success"
    assert len(entry["command_ids"]) == 1
    snaps = set_snapshots(twins, entry["set_id"])
    assert {s["Tags"]["appconsistent:consistency"] for s in snaps} == {writers_tag}
    assert {s["Tags"]["appconsistent:members"] for s in snaps} == {str(len(VOLUMES))} and len(snaps) == len(VOLUMES)


def test_windows_disk_selection_is_refused_per_instance(twin_factory, run_tasks):
    twins = twin_factory(fleet(sql="windows"), alicloud=False)
    (iid,) = ids(twins, "sql")
    volumes = volumes_of(twins, iid)
    run = run_tasks([{ACG: {"provider": "aws", "instance_ids": [iid], "disk_ids": [volumes["/dev/xvdf"]]},
                      "register": "group"}], twins.endpoints)
    assert run["group"]["results"][0]["error"]["code"] == "SelectionNotSupported"


def test_unknown_volume_is_refused_before_any_change(twin_factory, run_tasks):
    twins = twin_factory(fleet(web="linux"), alicloud=False)
    (iid,) = ids(twins, "web")
    twins.stats.reset()
    run = run_tasks([{ACG: {"provider": "aws", "consistency": "crash", "instance_ids": [iid],
                            "disk_ids": ["vol-0123456789abcdef0"]}, "register": "group"}], twins.endpoints)
    assert run["group"]["failed"] is True and "unknown volume id" in run["group"]["msg"]
    assert not twins.stats.counts("aws").get("CreateSnapshots")


def test_check_mode_and_idempotent_rerun(twin_factory, run_tasks):
    twins = twin_factory(fleet(web="linux"), alicloud=False)
    (iid,) = ids(twins, "web")
    task = {ACG: {"provider": "aws", "consistency": "crash", "instance_ids": [iid], "run_id": "CHG-6"}}
    twins.stats.reset()
    check = run_tasks([dict(task, register="check")], twins.endpoints, check=True)
    assert check["check"]["changed"] is True
    assert check["check"]["results"][0]["plan"]["action"] == "CreateSnapshots"
    assert not twins.stats.counts("aws").get("CreateSnapshots")
    run = run_tasks([dict(task, register="first"), dict(task, register="second")], twins.endpoints)
    assert run["first"]["changed"] is True and run["second"]["changed"] is False
    assert run["second"]["results"][0]["set_id"] == run["first"]["results"][0]["set_id"]
    assert twins.stats.counts("aws")["CreateSnapshots"] == 1


def linux_fleet(**faults):
    return {"instances": [{"provider": "aws", "name": name, "platform": "linux", "volumes": VOLUMES,
                           "faults": fault} for name, fault in faults.items()]}


def test_linux_check_mode_and_idempotent_rerun_with_run_id(twin_factory, run_tasks):
    twins = twin_factory(linux_fleet(db={}), alicloud=False)
    (iid,) = ids(twins, "db")
    task = {ACG: {"provider": "aws", "instance_ids": [iid], "run_id": "CHG-7", "exclude_boot_disk": True,
                  "mounts": ["/data"]}}
    twins.stats.reset()
    check = run_tasks([dict(task, register="check")], twins.endpoints, check=True)["check"]
    assert not check.get("failed"), check.get("msg")
    entry = check["results"][0]
    assert check["changed"] is True and entry["status"] == "WouldRun"
    assert " freeze " in entry["plan"]["freeze"] and "--mount /data" in entry["plan"]["freeze"]
    assert " thaw --run-id " in entry["plan"]["thaw"] and entry["plan"]["exclude_boot_volume"] is True
    counts = twins.stats.counts("aws")
    assert not counts.get("SendCommand") and not counts.get("CreateSnapshots"), counts
    run = run_tasks([dict(task, register="first"), dict(task, register="second")], twins.endpoints)
    first, second = run["first"], run["second"]
    assert not first.get("failed") and not second.get("failed"), (first.get("msg"), second.get("msg"))
    assert first["changed"] is True and second["changed"] is False
    assert first["results"][0]["consistency"] == "application"
    assert second["results"][0]["status"] == "Existing" and second["results"][0]["consistency"] == "application"
    assert second["results"][0]["set_id"] == first["results"][0]["set_id"]
    counts = twins.stats.counts("aws")
    assert counts["SendCommand"] == 2 and counts["CreateSnapshots"] == 1, counts  # one freeze, one thaw, one set


def test_linux_missing_or_wrongly_permissioned_scripts_give_filesystem_consistency(twin_factory, run_tasks):
    twins = twin_factory(linux_fleet(ok={}, invalid={"scripts_invalid": True}, absent={"scripts_absent": True}),
                         alicloud=False)
    ok, invalid, absent = ids(twins, "ok", "invalid", "absent")
    task = {"provider": "aws", "instance_ids": [ok, invalid, absent], "mounts": ["/data"]}
    run = run_tasks([{ACG: task, "register": "fail"}, {ACG: dict(task, on_fallback="warn"), "register": "warn"}],
                    twins.endpoints)
    got = {r["instance_id"]: r for r in run["fail"]["results"]}
    assert run["fail"]["failed"] is True
    assert got[ok]["consistency"] == "application"
    for iid in (invalid, absent):
        assert got[iid]["consistency"] == "filesystem" and got[iid]["error"]["code"] == "ScriptsNotRun", got[iid]
        # The set is filesystem-consistent; its root volume, beneath no frozen filesystem, is crash (issue 18 line 12).
        snaps = set_snapshots(twins, got[iid]["set_id"])
        assert {s["Tags"]["appconsistent:set-consistency"] for s in snaps} == {"filesystem"}
        assert {s["Tags"]["appconsistent:consistency"] for s in snaps if s["VolumeId"] != volumes_of(twins, iid)["/dev/sda1"]} \
            == {"filesystem"}
    assert sorted(f["instance_id"] for f in run["fail"]["failed_instances"]) == sorted([invalid, absent])
    assert not run["warn"].get("failed"), run["warn"].get("msg")
    assert {r["instance_id"]: r["consistency"] for r in run["warn"]["results"]} == \
        {ok: "application", invalid: "filesystem", absent: "filesystem"}


def test_linux_thaw_is_sent_after_a_failed_snapshot_call(twin_factory, run_tasks):
    twins = twin_factory(linux_fleet(db={}), alicloud=False)
    (iid,) = ids(twins, "db")
    twins.faults.update({"api_errors": [{"provider": "aws", "action": "CreateSnapshots", "code": "UnauthorizedOperation",
                                         "count": 1}]})
    twins.stats.reset()
    run = run_tasks([{ACG: {"provider": "aws", "instance_ids": [iid], "mounts": ["/data"], "on_fallback": "warn"},
                      "register": "group"}], twins.endpoints)
    result = run["group"]
    assert result["failed"] is True
    entry = result["results"][0]
    assert entry["consistency"] == "none" and entry["snapshots"] == []
    assert entry["error"]["code"] == "UnauthorizedOperation", entry["error"]
    assert len(entry["command_ids"]) == 2  # the freeze, then the thaw all the same
    assert entry["helper"]["freeze"]["exit_code"] == 0 and entry["helper"]["thaw"]["exit_code"] == 0, entry["helper"]
    assert twins.stats.counts("aws")["SendCommand"] == 2


@pytest.mark.parametrize("args, words", [
    ({"pre_script_path": "relative/pre.sh"}, "pre_script_path"),
    ({"post_script_path": "/opt/my scripts/post.sh"}, "post_script_path"),
    ({"pre_script_path": "/opt/$(reboot).sh"}, "pre_script_path"),
    ({"disk_ids": ["vol-0123456789abcdef0"], "exclude_disk_ids": ["vol-0123456789abcdef1"]}, "mutually exclusive"),
    ({"disk_ids": ["d-bp1notavolume"]}, "not an EBS volume id"),
    ({"freeze_timeout": 0}, "freeze_timeout"),
])
def test_bad_linux_input_is_refused_before_any_change(twin_factory, run_tasks, args, words):
    twins = twin_factory(linux_fleet(db={}), alicloud=False)
    (iid,) = ids(twins, "db")
    twins.stats.reset()
    run = run_tasks([{ACG: dict({"provider": "aws", "instance_ids": [iid], "mounts": ["/data"]}, **args),
                      "register": "group"}], twins.endpoints)
    assert run["group"]["failed"] is True and words in run["group"]["msg"], run["group"]["msg"]
    counts = twins.stats.counts("aws")
    assert not any(counts.get(a) for a in ("SendCommand", "CreateSnapshots", "CreateTags")), counts


def instance_state(twins, iid):
    ec2 = twins.aws_client("ec2")
    return ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]["Name"]


def test_offline_stops_snapshots_and_starts_a_running_instance_only(twin_factory, run_tasks):
    twins = twin_factory({"instances": [
        {"provider": "aws", "name": "up", "platform": "linux", "volumes": VOLUMES},
        {"provider": "aws", "name": "down", "platform": "windows", "state": "stopped", "volumes": VOLUMES}]},
        alicloud=False, latency={"profile": "zero", "transitions": {"instance_stop": 1.0, "instance_start": 1.0}})
    up, down = ids(twins, "up", "down")
    twins.stats.reset()
    task = {ACG: {"provider": "aws", "consistency": "offline", "instance_ids": [up, down], "run_id": "CHG-77"}}
    run = run_tasks([dict(task, register="group")], twins.endpoints)
    result = run["group"]
    assert not result.get("failed"), result.get("msg")
    got = {r["instance_id"]: r for r in result["results"]}
    assert got[up]["consistency"] == "offline" and got[down]["consistency"] == "offline"
    assert got[up]["downtime"] >= 2.0  # one second to stop and one to start, at least
    assert "downtime" not in got[down]
    assert instance_state(twins, up) == "running" and instance_state(twins, down) == "stopped"
    assert {s["Tags"]["appconsistent:consistency"] for s in set_snapshots(twins, got[up]["set_id"])} == {"offline"}
    counts = twins.stats.counts("aws")
    assert counts["StopInstances"] == 1 and counts["StartInstances"] == 1
    # The same run id again: the sets are found, and nothing is stopped a second time.
    twins.stats.reset()
    again = run_tasks([dict(task, register="again")], twins.endpoints)["again"]
    assert not again.get("failed") and not again["changed"], again
    assert {r["instance_id"]: r["set_id"] for r in again["results"]} == {up: got[up]["set_id"], down: got[down]["set_id"]}
    counts = twins.stats.counts("aws")
    assert not counts.get("StopInstances") and not counts.get("CreateSnapshots"), counts


def test_offline_check_mode_stops_nothing(twin_factory, run_tasks):
    twins = twin_factory(fleet(up="linux"), alicloud=False)
    (up,) = ids(twins, "up")
    twins.stats.reset()
    run = run_tasks([{ACG: {"provider": "aws", "consistency": "offline", "instance_ids": [up]}, "register": "group"}],
                    twins.endpoints, check=True)
    plan = run["group"]["results"][0]["plan"]
    assert plan["stop"] is True and plan["start"] is True
    assert not twins.stats.counts("aws").get("StopInstances")
    assert instance_state(twins, up) == "running"


# An account granted higher limits than the published ones (the twin has none here): what bounds the waves
# below is the collection's own spacing, not the account's buckets.
RAISED_LIMITS = {"CreateSnapshots": {"capacity": 1000, "refill": 100}, "SendCommand": {"capacity": 100, "refill": 50},
                 "ListCommandInvocations": {"capacity": 200, "refill": 100}}


def test_a_large_linux_fleet_is_frozen_in_waves(twin_factory, run_tasks):
    # 300 simulated Linux instances: frozen all at once, most would wait frozen while the controller snapshots
    # the others; in waves of one SendCommand a second, at most four waves (200 instances) are frozen at any moment.
    names = {f"db-{n:03d}": "linux" for n in range(300)}
    twins = twin_factory(fleet(**names), alicloud=False,
                         latency={"profile": "zero", "api": {"CreateSnapshots": 0.02}, "transitions": {"freeze_duration": 0.05}})
    twins.stats.reset()
    run = run_tasks([{ACG: {"provider": "aws", "consistency": "application", "instance_ids": ids(twins, *names),
                            "exclude_boot_disk": True, "delete_after": "1d", "api_rate_limits": RAISED_LIMITS},
                      "register": "group"}], twins.endpoints)
    result = run["group"]
    assert not result.get("failed"), result.get("msg")
    rows = result["results"]
    assert len(rows) == 300 and {r["consistency"] for r in rows} == {"application"}
    events = sorted([(r["helper"]["freeze"]["t_frozen"], 1) for r in rows] + [(r["helper"]["thaw"]["t_thawed"], -1) for r in rows])
    frozen_at_once, most = 0, 0
    for _at, step in events:
        frozen_at_once += step
        most = max(most, frozen_at_once)
    assert 50 <= most <= 200, most
    counts = twins.stats.counts("aws")
    freeze_commands = {c for r in rows for c in r["command_ids"][:1]}
    assert len(freeze_commands) == 6  # 50 instances each
    listed = twins.aws_client("ssm").list_commands()["Commands"]
    sent = sorted(c["RequestedDateTime"].timestamp() for c in listed if c["CommandId"] in freeze_commands)
    # A wave a second: the twin stamps a SendCommand before it answers, and the controller sends the next wave a
    # second after that answer, so the gaps hold however busy the machine is (0.99: clock slew, not load).
    assert min(b - a for a, b in zip(sent, sent[1:])) >= 0.99, sent
    # The freezes, and one thaw per group of instances that finished freezing together (not one per instance):
    # the controller polls while earlier waves are snapshotted, so a wave may finish in up to three groups.
    assert counts["SendCommand"] <= 6 + 3 * 6


def test_a_mixed_fleet_runs_its_windows_and_linux_parts_side_by_side(twin_factory, run_tasks):
    # The VSS command holds the Windows instance for 6 s: the Linux freeze goes out while it runs, not after it.
    twins = twin_factory(fleet(sql="windows", db="linux"), alicloud=False,
                         latency={"profile": "zero", "transitions": {"vss_freeze": 6.0}})
    sql, db = ids(twins, "sql", "db")
    run = run_tasks([{ACG: {"provider": "aws", "instance_ids": [sql, db], "exclude_boot_disk": True},
                      "register": "group"}], twins.endpoints)
    result = run["group"]
    assert not result.get("failed"), result.get("msg")
    by_iid = {r["instance_id"]: r for r in result["results"]}
    assert by_iid[sql]["consistency"] == by_iid[db]["consistency"] == "application"
    ssm = twins.aws_client("ssm")
    vss = ssm.get_command_invocation(CommandId=by_iid[sql]["command_ids"][0], InstanceId=sql)
    vss_end = datetime.datetime.strptime(vss["ExecutionEndDateTime"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc)
    freeze_id = by_iid[db]["command_ids"][0]
    (freeze,) = [c for c in ssm.list_commands()["Commands"] if c["CommandId"] == freeze_id]
    assert freeze["RequestedDateTime"] < vss_end, (freeze["RequestedDateTime"], vss_end)
    for entry in by_iid.values():
        assert {s["Tags"]["appconsistent:consistency"] for s in set_snapshots(twins, entry["set_id"])} == {"application"}


def test_a_tag_the_vss_document_refuses_stops_a_mixed_fleet_before_any_linux_freeze(twin_factory, run_tasks):
    twins = twin_factory(fleet(sql="windows", db="linux"), alicloud=False)
    sql, db = ids(twins, "sql", "db")
    twins.stats.reset()
    run = run_tasks([{ACG: {"provider": "aws", "instance_ids": [sql, db], "tags": {"team": "ops;dba"}},
                      "register": "group", "ignore_errors": True}], twins.endpoints)
    result = run["group"]
    assert result.get("failed") and "tags" in result["msg"] and ";" in result["msg"], result.get("msg")
    counts = twins.stats.counts("aws")
    assert "SendCommand" not in counts and "CreateSnapshots" not in counts, counts


def test_wait_for_completion_waits_for_every_snapshot_of_the_set(twin_factory, run_tasks):
    # Snapshots take 2 s to complete; "slow" would take 600 s, more than completion_timeout.
    twins = twin_factory(linux_fleet(db={}, broken={"snapshot_error": True}), alicloud=False,
                         latency={"profile": "zero", "transitions": {"snapshot_complete": 2.0}})
    db, broken = ids(twins, "db", "broken")
    run = run_tasks([
        {ACG: {"provider": "aws", "consistency": "crash", "instance_ids": [db]}, "register": "nowait"},
        {ACG: {"provider": "aws", "instance_ids": [db, broken], "mounts": ["/data"], "wait_for_completion": True,
               "completion_timeout": 60}, "register": "waited", "ignore_errors": True},
    ], twins.endpoints)
    nowait, waited = run["nowait"], run["waited"]
    assert not nowait.get("failed"), nowait.get("msg")
    assert {m["state"] for m in nowait["results"][0]["snapshots"]} == {"pending"}
    by_iid = {r["instance_id"]: r for r in waited["results"]}
    good = by_iid[db]
    assert good["consistency"] == "application" and not good.get("error")
    assert {m["state"] for m in good["snapshots"]} == {"completed"}
    assert {s["State"] for s in set_snapshots(twins, good["set_id"])} == {"completed"}
    bad = by_iid[broken]
    assert bad["consistency"] == "none" and bad["error"]["code"] == "SnapshotError"
    assert [f["instance_id"] for f in waited["failed_instances"]] == [broken]


def test_completion_timeout_keeps_the_set_and_warns(twin_factory, run_tasks):
    twins = twin_factory(linux_fleet(db={}), alicloud=False,
                         latency={"profile": "zero", "transitions": {"snapshot_complete": 600.0}})
    (db,) = ids(twins, "db")
    run = run_tasks([{ACG: {"provider": "aws", "consistency": "crash", "instance_ids": [db],
                            "wait_for_completion": True, "completion_timeout": 1}, "register": "group"}], twins.endpoints)
    group = run["group"]
    assert not group.get("failed"), group.get("msg")
    entry = group["results"][0]
    assert entry["consistency"] == "crash" and entry["error"]["code"] == "CompletionTimeout"
    assert any("completion_timeout" in w for w in group.get("warnings", []))


def test_a_fleet_under_tight_buckets_is_frozen_only_as_fast_as_it_can_be_snapshotted(twin_factory, run_tasks):
    # The account's CreateSnapshots bucket holds 5 tokens and refills 1 a second; the Windows agents spend it too.
    # Frozen all at once, most instances would wait frozen for a token (or be answered RequestLimitExceeded while
    # frozen); admitted only as tokens allow, every set is application-consistent and no call is throttled.
    tight = {"CreateSnapshots": {"capacity": 5, "refill": 1}}
    names = dict({f"db-{n:02d}": "linux" for n in range(20)}, **{f"sql-{n}": "windows" for n in range(5)})
    twins = twin_factory(fleet(**names), alicloud=False, limits=tight,
                         latency={"profile": "zero", "transitions": {"freeze_duration": 0.05, "vss_freeze": 0.5}})
    task = {ACG: {"provider": "aws", "consistency": "application", "instance_ids": ids(twins, *names),
                  "exclude_boot_disk": True, "freeze_timeout": 10, "api_rate_limits": tight}}
    # Check mode says how long the limits make the run: 25 CreateSnapshots from a bucket of 5 refilling 1 a second.
    check = run_tasks([dict(task, register="plan")], twins.endpoints, check=True)["plan"]
    assert check["api_pacing"]["estimated_floor_s"] == 20.0
    twins.stats.reset()
    run = run_tasks([dict(task, register="group")], twins.endpoints)
    result = run["group"]
    assert not result.get("failed"), result.get("msg")
    rows = result["results"]
    assert len(rows) == 25 and {r["consistency"] for r in rows} == {"application"}, \
        sorted((r["instance_id"], r["consistency"], (r.get("error") or {}).get("code")) for r in rows)
    assert twins.stats.throttled("aws") == {}, twins.stats.throttle_log("aws")
    pacing = result["api_pacing"]
    assert pacing["throttled_calls"] == {}
    # 25 CreateSnapshots from a bucket of 5 refilling 1 a second: at least 20 s of calls, and the run said so.
    assert pacing["rate_floor_s"] == 20.0 and pacing["waited_for_tokens_s"] >= 0


def test_a_run_the_limits_make_longer_than_wait_timeout_is_refused_before_any_command(twin_factory, run_tasks):
    # 20 CreateSnapshots from a bucket of 5 refilling 1 a second take 15 s: with a wait_timeout of 10 s the first
    # instances would be frozen and the last ones given up on. Refused before anything is sent, in check mode too.
    tight = {"CreateSnapshots": {"capacity": 5, "refill": 1}}
    names = {f"db-{n:02d}": "linux" for n in range(20)}
    twins = twin_factory(fleet(**names), alicloud=False, limits=tight)
    args = {"provider": "aws", "consistency": "application", "instance_ids": ids(twins, *names),
            "exclude_boot_disk": True, "wait_timeout": 10, "api_rate_limits": tight}
    twins.stats.reset()
    plan = run_tasks([{ACG: args, "register": "plan"}], twins.endpoints, check=True)["plan"]
    run = run_tasks([{ACG: args, "register": "group"}, {ACG: dict(args, consistency="offline"), "register": "offline"}],
                    twins.endpoints)
    for result in (plan, run["group"], run["offline"]):
        assert result.get("failed"), result
        assert result["msg"].startswith("20 instances need at least 15 s of CreateSnapshots calls"), result["msg"]
        assert "raise wait_timeout to at least 78 s" in result["msg"] and "nothing was frozen" in result["msg"]
    calls = twins.stats.counts("aws")
    assert not any(calls.get(name) for name in ("SendCommand", "CreateSnapshots", "CreateTags")), calls
