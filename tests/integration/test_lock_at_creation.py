"""The lock option of app_consistent_group, vss_snapshot and snapshot_set_copy, against both twins.

Sets made locked (AWS governance and compliance, Alibaba Cloud compliance), bad lock options refused before any
freeze, a lock the provider refuses reported with the set not locked, and check mode making no call.
"""

import copy

import pytest

from test_snapshot_set_copy import ALI_DESTINATION
from test_snapshot_set_copy import ALI_INSTANCE
from test_snapshot_set_copy import DESTINATION
from test_snapshot_set_copy import FLEET
from test_snapshot_set_copy import take_ali_set
from test_snapshot_set_copy import take_aws_set

ACG = "appconsistent.snapshots.app_consistent_group"
VSS = "appconsistent.snapshots.vss_snapshot"
COPY = "appconsistent.snapshots.snapshot_set_copy"
INFO = "appconsistent.snapshots.snapshot_set_info"
ROLE = "AppSnapshotRole"
AWS_LINUX = {"provider": "aws", "platform": "linux", "volumes": [
    {"device": "/dev/sda1", "size": 30, "boot": True}, {"device": "/dev/xvdf", "size": 10}]}
AWS_WINDOWS = dict(AWS_LINUX, platform="windows")
ALI_LINUX = {"provider": "alicloud", "platform": "linux", "state": "running", "role": ROLE, "zone": "cn-hangzhou-h",
             "volumes": [{"device": "/dev/xvda", "size": 40, "type": "cloud_essd", "boot": True},
                         {"device": "/dev/xvdb", "size": 100, "type": "cloud_essd"}]}
# What a freeze or a new set would have cost: none of it may happen when the lock options are refused.
CHANGES = ("SendCommand", "CreateSnapshots", "RunCommand", "CreateSnapshotGroup", "StopInstances", "StopInstance",
           "LockSnapshot", "CopySnapshot")
GOVERNANCE = {"mode": "governance", "expires_at": "2099-01-01T00:00:00Z"}
COMPLIANCE = {"mode": "compliance", "duration_days": 7, "cool_off_hours": 2}


def make_twins(twin_factory, provider, platform="linux", **extra):
    base = AWS_LINUX if provider == "aws" else ALI_LINUX
    fleet = {"instances": [dict(base, name="db", platform=platform)]}
    return twin_factory(fleet, alicloud=provider == "alicloud", aws=provider == "aws", **extra)


def instance_id(twins, provider):
    return twins.endpoints[provider]["instances"]["db"]


def group_task(twins, provider, lock, **extra):
    args = {"provider": provider, "instance_ids": [instance_id(twins, provider)], "lock": lock}
    if provider == "aws":
        args.update(mounts=["/data"], exclude_boot_disk=True)
    else:
        args.update(ram_role_name=ROLE)
    args.update(extra)
    return args


def calls(twins, provider, *actions):
    counts = twins.stats.counts(provider)
    return {a: counts[a] for a in actions if counts.get(a)}


@pytest.mark.parametrize("provider, lock, state", [
    ("aws", GOVERNANCE, "governance"),
    ("aws", COMPLIANCE, "compliance-cooloff"),
    ("alicloud", COMPLIANCE, "compliance-cooloff"),
    ("alicloud", {"mode": "compliance", "duration_days": 3, "acknowledge_no_cool_off": True}, "compliance"),
])
def test_group_sets_are_made_locked_and_a_rerun_leaves_the_lock_alone(twin_factory, run_tasks, provider, lock, state):
    twins = make_twins(twin_factory, provider)
    task = group_task(twins, provider, lock, run_id="CHG-21")
    run = run_tasks([{ACG: task, "register": "group"}, {ACG: task, "register": "again"},
                     {INFO: {"provider": provider, "run_id": "CHG-21"}, "register": "info"}], twins.endpoints)
    result = run["group"]
    assert not result.get("failed"), result.get("msg")
    (entry,) = result["results"]
    members = sorted(s["snapshot_id"] for s in entry["snapshots"])
    assert entry["lock"]["locked"] is True and entry["lock"]["state"] == state, entry["lock"]
    assert entry["lock"]["mode"] == lock["mode"] and entry["lock"]["locked_members"] == len(members)
    assert sorted(m["snapshot_id"] for m in entry["lock"]["members"]) == members
    assert all(m["lock"]["state"] == state for m in entry["lock"]["members"])
    if "expires_at" in lock:
        assert entry["lock"]["until"] == lock["expires_at"]
    again = run["again"]
    assert not again.get("failed"), again.get("msg")
    assert again["changed"] is False and again["results"][0]["status"] == "Existing"
    assert again["results"][0]["lock"]["locked"] is True
    assert calls(twins, provider, "LockSnapshot") == {"LockSnapshot": len(members)}  # the rerun locked nothing again
    (shown,) = run["info"]["sets"]
    assert shown["set_id"] == entry["set_id"] and shown["lock"]["locked"] is True and shown["lock"]["mode"] == lock["mode"]


def test_alicloud_members_are_locked_once_accomplished(twin_factory, run_tasks):
    twins = make_twins(twin_factory, "alicloud", latency={"profile": "zero", "transitions": {"snapshot_complete": 2.0}})
    run = run_tasks([{ACG: group_task(twins, "alicloud", COMPLIANCE, consistency="crash"), "register": "group"}],
                    twins.endpoints)
    result = run["group"]
    assert not result.get("failed"), result.get("msg")
    (entry,) = result["results"]
    assert entry["lock"]["locked"] is True
    assert {s["state"] for s in entry["snapshots"]} == {"progressing"}  # the set was made before its members completed
    ecs = twins.alicloud.cloud.ecs
    for member in entry["snapshots"]:
        snapshot = ecs.snapshots[member["snapshot_id"]]
        # Alibaba Cloud documents LockSnapshot for snapshots that exist, not for ones still being made.
        assert ecs.locks.get(member["snapshot_id"]).created >= snapshot.ready_at
    assert calls(twins, "alicloud", "DescribeSnapshots")


@pytest.mark.parametrize("provider, lock, words", [
    ("aws", {"mode": "compliance", "duration_days": 7}, "lock.acknowledge_no_cool_off"),
    ("aws", {"mode": "governance", "duration_days": 7, "expires_at": "2099-01-01T00:00:00Z"}, "lock.duration_days"),
    ("aws", {"mode": "governance", "duration_days": 0}, "lock.duration_days must be between 1 and 36500"),
    ("aws", {"mode": "governance", "expires_at": "2020-01-01T00:00:00Z"}, "lock.expires_at must be in the future"),
    ("aws", {"mode": "governance", "duration_days": 7, "cool_off_hours": 3}, "compliance mode only"),
    ("aws", {"duration_days": 7}, "lock needs lock.mode"),
    ("alicloud", {"mode": "governance", "duration_days": 7}, "compliance mode only"),
    ("alicloud", {"mode": "compliance", "expires_at": "2099-01-01T00:00:00Z", "acknowledge_no_cool_off": True},
     "use lock.duration_days"),
    ("alicloud", {"mode": "compliance", "duration_days": 7, "cool_off_hours": 73}, "lock.cool_off_hours"),
])
def test_bad_lock_options_are_refused_before_any_freeze(twin_factory, run_tasks, provider, lock, words):
    twins = make_twins(twin_factory, provider)
    twins.stats.reset()
    run = run_tasks([{ACG: group_task(twins, provider, lock), "register": "group"}], twins.endpoints)
    assert run["group"]["failed"] is True and words in run["group"]["msg"], run["group"]["msg"]
    assert calls(twins, provider, *CHANGES) == {}  # nothing frozen, no snapshot made, nothing locked


def test_bad_lock_options_are_refused_before_vss_and_copy(twin_factory, run_tasks):
    twins = make_twins(twin_factory, "aws", platform="windows")
    set_id = take_aws_set(twins, instance_id(twins, "aws"), wait=False)[0]
    twins.stats.reset()
    bad = {"mode": "compliance", "duration_days": 7}
    run = run_tasks([{VSS: {"instance_ids": [instance_id(twins, "aws")], "lock": bad}, "register": "vss"},
                     {COPY: {"provider": "aws", "set_id": set_id, "destination_region": DESTINATION, "lock": bad},
                      "register": "copy"}], twins.endpoints)
    for name in ("vss", "copy"):
        assert run[name]["failed"] is True and "lock.acknowledge_no_cool_off" in run[name]["msg"], run[name]
    assert calls(twins, "aws", *CHANGES) == {}


@pytest.mark.parametrize("provider", ["aws", "alicloud"])
def test_a_lock_without_waiting_for_the_sets_is_refused_before_any_freeze(twin_factory, run_tasks, provider):
    twins = make_twins(twin_factory, provider)
    twins.stats.reset()
    run = run_tasks([{ACG: group_task(twins, provider, COMPLIANCE, wait=False), "register": "group"}], twins.endpoints)
    assert run["group"]["failed"] is True and "lock needs wait: true" in run["group"]["msg"], run["group"]["msg"]
    assert calls(twins, provider, *CHANGES) == {}


@pytest.mark.parametrize("provider, code", [("aws", "UnauthorizedOperation"), ("alicloud", "Forbidden.RAM")])
def test_a_lock_the_provider_refuses_fails_the_instance_and_the_set_is_not_reported_locked(
        twin_factory, run_tasks, provider, code):
    twins = make_twins(twin_factory, provider)
    twins.faults.update({"api_errors": [{"provider": provider, "action": "LockSnapshot", "code": code, "count": 1}]})
    run = run_tasks([{ACG: group_task(twins, provider, COMPLIANCE, run_id="CHG-22"), "register": "group"},
                     {INFO: {"provider": provider, "run_id": "CHG-22"}, "register": "info"}], twins.endpoints)
    result = run["group"]
    assert result["failed"] is True
    (entry,) = result["results"]
    set_id = entry["set_id"]
    assert set_id and entry["lock"]["locked"] is False, entry["lock"]
    assert code in entry["lock"]["error"] and "snapshot_set_lock" in entry["lock"]["error"]
    assert set_id in result["msg"] and "snapshot_set_lock" in result["msg"] and f"set_ids: [{set_id}]" in result["msg"]
    assert [f["instance_id"] for f in result["failed_instances"]] == [instance_id(twins, provider)]
    # One member was refused, the other locked: the result says which.
    locked = [m for m in entry["lock"]["members"] if m["lock"]]
    assert len(locked) == len(entry["snapshots"]) - 1 and entry["lock"]["locked_members"] == len(locked)
    (shown,) = run["info"]["sets"]
    assert shown["set_id"] == set_id and shown["lock"]["locked"] is False  # the set is kept, and not locked


@pytest.mark.parametrize("provider", ["aws", "alicloud"])
def test_check_mode_with_a_lock_makes_no_call(twin_factory, run_tasks, provider):
    twins = make_twins(twin_factory, provider)
    twins.stats.reset()
    check = run_tasks([{ACG: group_task(twins, provider, COMPLIANCE), "register": "group"}], twins.endpoints,
                      check=True)["group"]
    assert not check.get("failed"), check.get("msg")
    (entry,) = check["results"]
    assert entry["lock"]["locked"] is None and entry["lock"]["planned"]["mode"] == "compliance"
    assert calls(twins, provider, *CHANGES, "DescribeLockedSnapshots") == {}


def test_vss_sets_are_made_locked(twin_factory, run_tasks):
    twins = make_twins(twin_factory, "aws", platform="windows")
    run = run_tasks([{VSS: {"instance_ids": [instance_id(twins, "aws")], "lock": GOVERNANCE}, "register": "vss"}],
                    twins.endpoints)
    result = run["vss"]
    assert not result.get("failed"), result.get("msg")
    (entry,) = result["results"]
    assert entry["consistency"] == "application"
    assert entry["lock"]["locked"] is True and entry["lock"]["mode"] == "governance"
    assert entry["lock"]["locked_members"] == len(entry["snapshots"]) == 2


@pytest.fixture
def copy_twins(twin_factory):
    """The copy tests' fleet, snapshots completing a moment after they are made."""
    return twin_factory(copy.deepcopy(FLEET), latency={"profile": "zero", "transitions": {"snapshot_complete": 0.3}})


def test_a_copy_is_locked_in_its_destination_region(copy_twins, run_tasks):
    twins = copy_twins
    source = twins.endpoints["aws"]["instances"]["db-2"]
    set_id = take_aws_set(twins, source, wait=False)[0]
    task = {COPY: {"provider": "aws", "set_id": set_id, "destination_region": DESTINATION, "lock": COMPLIANCE}}
    check = run_tasks([dict(task, register="check")], twins.endpoints, check=True)["check"]
    assert check["lock"]["locked"] is None and not calls(twins, "aws", "LockSnapshot", "CopySnapshot")
    run = run_tasks([dict(task, register="copy"), dict(task, register="again"),
                     {INFO: {"provider": "aws", "region": DESTINATION, "set_ids": ["{{ copy.set_id }}"]},
                      "register": "info"}], twins.endpoints)
    copied = run["copy"]
    assert not copied.get("failed"), copied.get("msg")
    assert copied["lock"]["locked"] is True and copied["lock"]["state"] == "compliance-cooloff"
    assert sorted(m["snapshot_id"] for m in copied["lock"]["members"]) == sorted(m["snapshot_id"] for m in copied["members"])
    assert run["again"]["changed"] is False and run["again"]["lock"]["locked"] is True
    assert calls(twins, "aws", "LockSnapshot") == {"LockSnapshot": len(copied["members"])}
    assert run["info"]["sets"][0]["lock"]["locked"] is True


def test_every_set_of_a_many_set_copy_is_locked_in_its_destination_region(copy_twins, run_tasks):
    twins = copy_twins
    set_ids = [take_aws_set(twins, twins.endpoints["aws"]["instances"][name], wait=False)[0] for name in ("db-1", "db-2")]
    task = {COPY: {"provider": "aws", "set_ids": set_ids, "destination_region": DESTINATION, "lock": COMPLIANCE}}
    copied = run_tasks([dict(task, register="copy")], twins.endpoints)["copy"]
    assert not copied.get("failed"), copied.get("msg")
    assert [c["source_set_id"] for c in copied["copies"]] == set_ids
    for copy in copied["copies"]:
        assert copy["lock"]["locked"] is True, copy
        assert sorted(m["snapshot_id"] for m in copy["lock"]["members"]) == sorted(m["snapshot_id"] for m in copy["members"])
    # A rerun finds every copy made and locked: one read of the existing locks serves all its sets.
    twins.stats.reset()
    again = run_tasks([dict(task, register="again")], twins.endpoints)["again"]
    assert not again.get("failed"), again.get("msg")
    assert [c["lock"]["locked"] for c in again["copies"]] == [True, True]
    assert calls(twins, "aws", "DescribeLockedSnapshots", "LockSnapshot") == {"DescribeLockedSnapshots": 1}


def test_an_alicloud_copy_returned_before_completion_is_locked_once_accomplished(copy_twins, run_tasks):
    twins = copy_twins
    group_id = take_ali_set(twins, ALI_INSTANCE)[0]
    task = {COPY: {"provider": "alicloud", "set_id": group_id, "destination_region": ALI_DESTINATION, "wait": False,
                   "lock": {"mode": "compliance", "duration_days": 30, "acknowledge_no_cool_off": True}}}
    run = run_tasks([dict(task, register="copy"),
                     {INFO: {"provider": "alicloud", "alicloud_region": ALI_DESTINATION, "set_ids": ["{{ copy.set_id }}"]},
                      "register": "info"}], twins.endpoints)
    copied = run["copy"]
    assert not copied.get("failed"), copied.get("msg")
    assert copied["lock"]["locked"] is True and copied["lock"]["state"] == "compliance"
    assert copied["lock"]["locked_members"] == len(copied["members"]) == 2
    assert {m["state"] for m in copied["members"]} == {"progressing"}  # returned before the copies completed
    assert twins.stats.counts("alicloud").get("DescribeSnapshots")
    (shown,) = run["info"]["sets"]
    assert shown["lock"]["locked"] is True and shown["lock"]["mode"] == "compliance"
