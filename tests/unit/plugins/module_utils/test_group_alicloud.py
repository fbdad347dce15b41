"""Alibaba Cloud groups: the checks of consistency offline with mounts, and its unmount/group/remount run on a fake API."""

import base64
import json
import types

import pytest

from ansible_collections.appconsistent.snapshots.plugins.module_utils import unmount
from ansible_collections.appconsistent.snapshots.plugins.module_utils.alicloud import AlibabaCloudError
from ansible_collections.appconsistent.snapshots.plugins.module_utils.app_plugin import PluginParameterError
from ansible_collections.appconsistent.snapshots.plugins.module_utils.group_alicloud import AlicloudGroupRun
from ansible_collections.appconsistent.snapshots.plugins.module_utils.group_alicloud import GroupInputError
from ansible_collections.appconsistent.snapshots.plugins.module_utils.group_alicloud import Outcome
from ansible_collections.appconsistent.snapshots.plugins.modules.app_consistent_group import argument_spec
from ansible_collections.appconsistent.snapshots.plugins.modules.app_consistent_group import summarize

DATA = "d-bp1data000000000001"


def _params(**overrides):
    params = {name: spec.get("default") for name, spec in argument_spec().items()}
    params.update(provider="alicloud", instance_ids=["i-bp1a"], consistency="offline")
    params.update(overrides)
    return params


def _run(api=None, check_mode=False, **overrides):
    module = types.SimpleNamespace(params=_params(**overrides), check_mode=check_mode, alicloud=api)
    return AlicloudGroupRun(module, sleep=lambda seconds: None, clock=FakeClock())


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        self.now += 0.01
        return self.now


# --- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("consistency", ["offline", "application", "filesystem", "crash"])
def test_the_default_mounts_pass_with_every_consistency(consistency):
    _run(consistency=consistency, ram_role_name="AppSnapshotRole").validate()


def test_offline_with_mounts_and_disk_ids_passes():
    run = _run(mounts=["/data", "/data/logs"], disk_ids=[DATA])
    run.validate()
    assert run.unmounts


def test_offline_without_mounts_stops_the_instance():
    assert not _run().unmounts


@pytest.mark.parametrize("consistency", ["application", "filesystem", "crash"])
def test_mounts_with_another_consistency_are_refused(consistency):
    with pytest.raises(GroupInputError, match="only with consistency offline"):
        _run(consistency=consistency, mounts=["/data"], ram_role_name="AppSnapshotRole").validate()


def test_offline_with_mounts_needs_disk_ids():
    with pytest.raises(GroupInputError, match="disk_ids"):
        _run(mounts=["/data"]).validate()


@pytest.mark.parametrize("mounts, words", [
    (["/"], "never unmounted"), (["/boot"], "never unmounted"), (["/boot/efi"], "never unmounted"),
    (["//"], "never unmounted"), (["data"], "refused"), (["/data; reboot"], "refused"), (["/a/../b"], "refused"),
    (["/data", "auto"], "refused"), ([""], "refused"),
])
def test_dangerous_mounts_are_refused(mounts, words):
    with pytest.raises(GroupInputError, match=words):
        _run(mounts=mounts, disk_ids=[DATA]).validate()


def test_disk_ids_must_be_alibaba_disks():
    with pytest.raises(PluginParameterError):
        _run(mounts=["/data"], disk_ids=["vol-0123456789abcdef0"]).validate()


def test_the_report_is_the_last_json_line():
    assert unmount.parse_report('noise\n{"action":"unmount","exit_code":0,"t":1.5}\n') == \
        {"action": "unmount", "exit_code": 0, "t": 1.5}
    assert unmount.parse_report('{"exit_code": 0, "t') is None
    assert unmount.parse_report("") is None


# --- the run, on a fake Alibaba Cloud -----------------------------------------------------------------


def _encoded(report):
    return base64.b64encode((json.dumps(report) + "\n").encode()).decode()


class FakeApi:
    """Answers the calls of an unmount run; ``unmounts``/``remounts`` give each instance's exit code."""

    region = "cn-hangzhou"

    def __init__(self, instances, unmounts, remounts=None):
        self.instances = instances
        self.unmounts = unmounts
        self.remounts = remounts or {}
        self.commands = []  # (content, instance ids)
        self.groups = {}  # group id -> (instance id, disk ids)
        self.tagged = []
        self.stopped = []  # (invoke id, instance ids) of StopInvocation

    def describe_instances(self, ids):
        return [dict(InstanceId=i, Status="Running", OSType=self.instances[i]) for i in ids if i in self.instances]

    def describe_disks(self):
        disks = []
        for number, instance_id in enumerate(self.instances):
            disks.append(dict(DiskId=f"d-sys{number}", InstanceId=instance_id, Type="system", Device="/dev/xvda",
                              Category="cloud_essd", Size=40))
            disks.append(dict(DiskId=f"d-data{number}", InstanceId=instance_id, Type="data", Device="/dev/xvdb",
                              Category="cloud_essd", Size=20))
        return disks

    def describe_cloud_assistant_status(self, ids):
        return [dict(InstanceId=i, CloudAssistantStatus="true") for i in ids]

    def run_command(self, instance_ids, command, command_type="RunShellScript", timeout=60, name=None):
        assert command_type == "RunShellScript" and timeout >= 60
        self.commands.append((command, list(instance_ids), name))
        return dict(command_id="c-1", invoke_id=f"t-{len(self.commands)}")

    def describe_invocation_results(self, invoke_id):
        command, ids, name = self.commands[int(invoke_id[2:]) - 1]
        results = []
        for instance_id in ids:
            if name == "appconsistent-unmount" and self.unmounts[instance_id] is None:  # not started yet
                stopped = any(instance_id in ids for i, ids in self.stopped if i == invoke_id)
                results.append(dict(InstanceId=instance_id, InvocationStatus="Cancelled" if stopped else "Pending"))
                continue
            if name == "appconsistent-unmount":
                code, t = self.unmounts[instance_id], 100.0
                message = "in use, not unmounted: /data: sleep (pid 42);" if code == 3 else "unmounted: /data"
            else:
                code, t = self.remounts.get(instance_id, 0), 102.5
                message = "mounted again" if code == 0 else "nothing of this run is unmounted" \
                    if code == 205 else "some filesystems could not be mounted again"
            assert "run_id=" in command or "exec bash /run/appconsistent/offline/" in command
            results.append(dict(InstanceId=instance_id, InvocationStatus="Success" if code == 0 else "Failed",
                                ExitCode=code, Output=_encoded(dict(action=name, exit_code=code, message=message, t=t))))
        return results

    def stop_invocation(self, invoke_id, instance_ids):
        self.stopped.append((invoke_id, list(instance_ids)))

    def create_snapshot_group(self, instance_id, disk_ids=None, name=None, description=None, tags=None):
        group_id = f"ssg-{len(self.groups) + 1}"
        self.groups[group_id] = (instance_id, list(disk_ids))
        # Whether the group is offline is known only once the remount finds the filesystems still unmounted:
        # its members' tags say it then.
        assert "appconsistent:consistency" not in tags
        # The group says from its creation how many snapshots it holds.
        assert tags["appconsistent:members"] == str(len(disk_ids))
        return group_id

    def describe_snapshot_groups(self, snapshot_group_ids=None):
        return [dict(SnapshotGroupId=g, Status="accomplished", CreationTime="2026-01-01T00:00:00Z",
                     Snapshots={"Snapshot": [dict(SnapshotId=f"s-{g}-{d}", SourceDiskId=d, Progress="100%", Tags={})
                                             for d in self.groups[g][1]]}) for g in snapshot_group_ids]

    def tag_resources(self, resource_type, resource_ids, tags):
        self.tagged.append((resource_type, list(resource_ids), dict(tags)))


def test_unmounted_instances_are_grouped_and_mounted_again():
    api = FakeApi({"i-ok": "linux", "i-busy": "linux", "i-win": "windows", "i-stuck": "linux"},
                  unmounts={"i-ok": 0, "i-busy": 3, "i-stuck": 0}, remounts={"i-busy": 205, "i-stuck": 209})
    ids = ["i-ok", "i-busy", "i-win", "i-stuck"]
    run = _run(api, instance_ids=ids, mounts=["/data"], disk_ids=["d-data0", "d-data1", "d-data2", "d-data3"])
    outcomes = run.run()
    assert [(c[1], c[2]) for c in api.commands] == [(["i-ok", "i-busy", "i-stuck"], "appconsistent-unmount"),
                                                    (["i-ok", "i-busy", "i-stuck"], "appconsistent-remount")]
    assert sorted(api.groups.values()) == [("i-ok", ["d-data0"]), ("i-stuck", ["d-data3"])]
    ok, busy, win, stuck = (outcomes[i] for i in ids)
    assert ok.consistency == "offline" and ok.error is None and ok.downtime == 2.5
    assert [m["disk_id"] for m in ok.snapshots] == ["d-data0"]
    assert busy.error["code"] == "Unmount3" and "sleep (pid 42)" in busy.error["message"]
    assert busy.consistency == "none" and busy.downtime is None and busy.set_id is None
    assert win.error["code"] == "WrongPlatform" and win.status == "NotSent"
    assert stuck.error["code"] == "RemountFailed" and stuck.consistency == "offline"
    result, _warnings = summarize(outcomes, "offline", "warn")
    assert sorted(f["instance_id"] for f in result["failed_instances"]) == ["i-busy", "i-stuck", "i-win"]
    tags = {k: v for _t, _ids, t in api.tagged for k, v in t.items()}
    assert tags["appconsistent:consistency"] == "offline"
    assert tags["appconsistent:members"] == "1"


def test_an_unmount_not_started_when_the_wait_ends_is_cancelled_before_the_remount():
    # Left alone, the unmount would run after the remount and keep /data unmounted until its watchdog fires.
    api = FakeApi({"i-ok": "linux", "i-late": "linux"}, unmounts={"i-ok": 0, "i-late": None}, remounts={"i-late": 205})
    outcomes = _run(api, instance_ids=["i-ok", "i-late"], mounts=["/data"], disk_ids=["d-data0", "d-data1"],
                    wait_timeout=1).run()
    assert api.stopped == [("t-1", ["i-late"])]
    assert [c[2] for c in api.commands] == ["appconsistent-unmount", "appconsistent-remount"]
    late = outcomes["i-late"]
    assert late.status == "Cancelled" and late.error["code"] == "WaitTimeout"
    assert late.error["message"].endswith("it had not started and StopInvocation cancelled it; a remount was sent")
    assert [g[0] for g in api.groups.values()] == ["i-ok"] and outcomes["i-ok"].consistency == "offline"


class PluginApi(FakeApi):
    """A plug-in run per instance that stays as ``plugin`` says (Pending or Running); StopInvocation cancels Pending."""

    def __init__(self, plugin):
        super().__init__({i: "linux" for i in plugin}, unmounts={})
        self.plugin = dict(plugin)

    def describe_instance_ram_roles(self, ids):
        return {i: "AppSnapshotRole" for i in ids}

    def describe_invocation_results(self, invoke_id):
        return [dict(InstanceId=i, InvocationStatus=s) for i, s in self.plugin.items()]

    def stop_invocation(self, invoke_id, instance_ids):
        super().stop_invocation(invoke_id, instance_ids)
        self.plugin.update((i, "Cancelled") for i in instance_ids if self.plugin[i] == "Pending")


def test_a_plug_in_run_given_up_on_is_stopped_and_the_result_says_what_goes_on():
    api = PluginApi({"i-wait": "Pending", "i-busy": "Running"})
    outcomes = _run(api, consistency="application", instance_ids=["i-wait", "i-busy"], ram_role_name="AppSnapshotRole",
                    wait_timeout=1, exclude_boot_disk=True).run()
    assert sorted(i for _invoke_id, ids in api.stopped for i in ids) == ["i-busy", "i-wait"]
    wait, busy = outcomes["i-wait"], outcomes["i-busy"]
    assert wait.status == "Cancelled" and wait.error["code"] == "WaitTimeout"
    assert wait.error["message"].endswith("it had not started and StopInvocation cancelled it")
    assert busy.status == "Running" and busy.error["code"] == "WaitTimeout"
    assert "StopInvocation does not interrupt a started run" in busy.error["message"]
    assert busy.error["message"].endswith("the plug-in thaws by itself after freeze_timeout (30 s)")


def test_check_mode_sends_nothing():
    api = FakeApi({"i-ok": "linux"}, unmounts={"i-ok": 0})
    outcome = _run(api, check_mode=True, instance_ids=["i-ok"], mounts=["/data"], disk_ids=["d-data0"]).run()["i-ok"]
    assert api.commands == [] and api.groups == {}
    assert outcome.status == "WouldRun" and outcome.plan["unmount"] == ["/data"]
    assert outcome.plan["action"] == "CreateSnapshotGroup" and outcome.plan["remount"] == ["/data"]
    assert [d["disk_id"] for d in outcome.plan["disks"]] == ["d-data0"]


def test_the_system_disk_is_refused_while_the_instance_runs():
    api = FakeApi({"i-ok": "linux"}, unmounts={"i-ok": 0})
    outcome = _run(api, instance_ids=["i-ok"], mounts=["/data"], disk_ids=["d-sys0", "d-data0"]).run()["i-ok"]
    assert outcome.error["code"] == "SystemDiskOnline" and api.commands == []


def test_no_group_is_started_once_the_watchdog_may_have_remounted():
    api = FakeApi({"i-ok": "linux"}, unmounts={"i-ok": 0})
    run = _run(api, instance_ids=["i-ok"], mounts=["/data"], disk_ids=["d-data0"])
    run.clock.now = 0.0
    real_poll = api.describe_invocation_results

    def slow(invoke_id):
        run.clock.now += 120.0  # past max(freeze_timeout, 60)
        return real_poll(invoke_id)

    api.describe_invocation_results = slow
    outcome = run.run()["i-ok"]
    assert api.groups == {}
    assert outcome.error["code"] == "UnmountExpired" and outcome.consistency == "none"
    assert [c[2] for c in api.commands] == ["appconsistent-unmount", "appconsistent-remount"]


def test_a_group_whose_filesystems_the_watchdog_remounted_first_is_crash_not_offline():
    # Issue 18 line 2 on Alibaba Cloud: a remount answered 205 means the watchdog had mounted the filesystems
    # again first, so nothing shows the group was made while they were unmounted.
    api = FakeApi({"i-ok": "linux", "i-late": "linux"}, unmounts={"i-ok": 0, "i-late": 0}, remounts={"i-late": 205})
    ids = ["i-ok", "i-late"]
    outcomes = _run(api, instance_ids=ids, mounts=["/data"], disk_ids=["d-data0", "d-data1"]).run()
    ok, late = outcomes["i-ok"], outcomes["i-late"]
    assert ok.consistency == "offline" and ok.error is None
    assert late.consistency == "crash" and late.error["code"] == "RemountedByWatchdog"
    written = {tuple(ids): tags["appconsistent:consistency"] for _t, ids, tags in api.tagged
               if "appconsistent:consistency" in tags}
    assert written == {(f"s-{ok.set_id}-d-data0",): "offline", (f"s-{late.set_id}-d-data1",): "crash"}


def test_a_group_call_that_returned_after_the_watchdog_may_have_fired_is_crash_not_offline():
    api = FakeApi({"i-ok": "linux"}, unmounts={"i-ok": 0})
    run = _run(api, instance_ids=["i-ok"], mounts=["/data"], disk_ids=["d-data0"])
    run.clock.now = 0.0
    real_create = api.create_snapshot_group

    def slow(*args, **kwargs):
        group_id = real_create(*args, **kwargs)
        run.clock.now += 120.0  # the call returned past max(freeze_timeout, 60)
        return group_id

    api.create_snapshot_group = slow
    outcome = run.run()["i-ok"]
    assert list(api.groups) == [outcome.set_id]
    assert outcome.consistency == "crash" and outcome.error["code"] == "UnmountExpired"


# --- tagging the sets -------------------------------------------------------------------------------


class TaggingApi:
    """Keeps the tags TagResources writes; a request naming a snapshot in ``missing`` fails as the API does."""

    def __init__(self, missing=()):
        self.missing = set(missing)
        self.calls = []
        self.tags = {}

    def tag_resources(self, resource_type, resource_ids, tags):
        assert resource_type == "snapshot" and len(resource_ids) <= 50 and len(tags) <= 20
        self.calls.append((list(resource_ids), dict(tags)))
        if self.missing & set(resource_ids):
            raise AlibabaCloudError("TagResources", "InvalidResourceId.NotFound", "The specified resource does not exist.")
        for resource_id in resource_ids:
            self.tags.setdefault(resource_id, {}).update(tags)


def _tagging_run(api, disks):
    """A run whose instances each made a set (ssg-<instance>) of a snapshot s-<instance>-<device> per device."""
    run = _run(consistency="crash", run_id="CHG-7", tags={"team": "dba"})
    run.api = api
    groups = {}
    for instance_id, devices in disks.items():
        outcome = run.outcomes[instance_id] = Outcome(instance_id, "crash")
        outcome.consistency = "crash"
        outcome.snapshots = [dict(snapshot_id=f"s-{instance_id}-{d[-1]}", device=d, tags={"FsConsistent": "True"})
                             for d in devices]
        groups[f"ssg-{instance_id}"] = instance_id
    return run, groups


MEMBER_COUNTS = {"i-1": "2", "i-2": "2", "i-3": "1"}


def _expected(instance_id, device):
    return {"appconsistent:set-id": f"ssg-{instance_id}", "appconsistent:instance-id": instance_id,
            "appconsistent:consistency": "crash", "appconsistent:set-consistency": "crash",
            "appconsistent:run-id": "CHG-7", "team": "dba",
            "appconsistent:device": device, "appconsistent:members": MEMBER_COUNTS[instance_id]}


def test_sets_take_one_call_each_and_share_the_device_calls():
    api = TaggingApi()
    disks = {"i-1": ["/dev/xvda", "/dev/xvdb"], "i-2": ["/dev/xvda", "/dev/xvdb"], "i-3": ["/dev/xvdb"]}
    run, groups = _tagging_run(api, disks)
    run._tag_sets(groups)
    # One call per set (the set of one snapshot carries its device tag too), one per device name: 5, not 8.
    assert len(api.calls) == 5
    assert sorted(ids for ids, tags in api.calls if list(tags) == ["appconsistent:device"]) == \
        [["s-i-1-a", "s-i-2-a"], ["s-i-1-b", "s-i-2-b"]]
    for instance_id, devices in disks.items():
        outcome = run.outcomes[instance_id]
        assert outcome.error is None and outcome.changed
        for member in outcome.snapshots:
            assert api.tags[member["snapshot_id"]] == _expected(instance_id, member["device"])
            assert member["tags"] == dict(_expected(instance_id, member["device"]), FsConsistent="True")


def test_a_snapshot_that_cannot_be_tagged_fails_its_own_set_only():
    api = TaggingApi(missing=["s-i-2-a"])
    run, groups = _tagging_run(api, {"i-1": ["/dev/xvda", "/dev/xvdb"], "i-2": ["/dev/xvda", "/dev/xvdb"]})
    run._tag_sets(groups)
    ok, bad = run.outcomes["i-1"], run.outcomes["i-2"]
    assert ok.error is None
    assert all(api.tags[m["snapshot_id"]] == _expected("i-1", m["device"]) for m in ok.snapshots)
    assert bad.error["code"] == "InvalidResourceId.NotFound"
    assert "the set was made but tagging it failed" in bad.error["message"]
    assert bad.snapshots[0]["tags"] == {"FsConsistent": "True"}  # not reported as written
    assert bad.snapshots[1]["tags"] == dict(_expected("i-2", "/dev/xvdb"), FsConsistent="True")
