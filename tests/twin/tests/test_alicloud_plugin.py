"""The app-snapshot-plugin emulation of the Alibaba twin: one test per exit code of seed 004, consistency tags, and a real freeze."""

from __future__ import annotations

import os
import subprocess
import threading
import time

import pytest
from alibabacloud_ecs20140526 import models as ecs_models

from twin.alicloud import server
from twin.alicloud.plugin import EXIT_CODES, SUCCESS_MESSAGE, parse_params
from twin.alicloud.testing import (decoded_output, group_snapshots, loop_filesystem, mounted_readonly, plugin_command,
                                   run_command, snapshot_tags, wait_results, write_script)

ROLE = "AppSnapshotRole"
LINUX_PARAMS = {"RamRoleName": ROLE, "EnableFsFreeze": True, "TimeoutInSeconds": 30, "PreScriptPath": "/tmp/prescript.sh",
                "PostScriptPath": "/tmp/postscript.sh", "ExcludeDiskId": "", "Name": "LinuxApp1"}


def instance(name, role=ROLE, categories=("cloud_essd", "cloud_essd"), faults=None, platform="linux", execution="simulated",
             volumes=None, **extra):
    iid = "i-bp1" + name.replace("-", "").ljust(17, "0")[:17]
    vols = volumes or [{"device": f"/dev/xvd{'abcdefghijklmnopqrstuvwxyz'[n]}", "size": 20, "type": cat}
                       for n, cat in enumerate(categories)]
    out = {"provider": "alicloud", "id": iid, "name": name, "role": role, "platform": platform, "execution": execution,
           "volumes": vols, "faults": faults or {}}
    out.update(extra)
    return out


@pytest.fixture(name="start_twin")
def start_fleet(start_twin):
    """Here ``start_twin`` takes the list of instances rather than the whole fleet document."""
    return lambda instances, **kwargs: start_twin({"instances": instances}, **kwargs)


def run_plugin(twin, inst_name, params, plugin="app-snapshot-plugin", command_type="RunShellScript"):
    client = twin.client()
    iid = twin.instances[inst_name]
    invoke_id = run_command(client, twin.region, [iid], plugin_command(params, plugin), command_type=command_type)
    (result,) = wait_results(client, twin.region, invoke_id)
    return client, iid, invoke_id, result


def steps_of(twin, invoke_id, iid):
    return [step for step, _when in twin.trace(invoke_id, iid)]


def consistency_tags(client, region, iid):
    """The provider evidence tags of every snapshot of the instance (only AppConsistent / FsConsistent)."""
    return {sid: {k: v for k, v in tags.items() if k in ("AppConsistent", "FsConsistent")}
            for sid, tags in snapshot_tags(client, region, iid).items()}


# ---------------------------------------------------------------------------------------------- success paths

def test_exit_0_app_consistent_output_names_the_group(start_twin):
    twin = start_twin([instance("web-1")])
    client, _iid, _invoke_id, result = run_plugin(twin, "web-1", LINUX_PARAMS)
    out = decoded_output(result)
    assert (result.invocation_status, result.exit_code) == ("Success", 0)
    marker = out.strip().splitlines()[-1]
    assert marker.startswith('[snapshotgroup="ssg-') and marker.endswith(f'[message="{SUCCESS_MESSAGE}"]')
    group_id = marker.split('"')[1]
    snaps = group_snapshots(client, twin.region, group_id)
    assert len(snaps) == 2 and all(s.available for s in snaps)
    assert all({t.key: t.value for t in s.tags.tag} == {"AppConsistent": "True"} for s in snaps)


def test_without_scripts_snapshots_are_fs_consistent(start_twin):
    twin = start_twin([instance("web-1")])
    params = {k: v for k, v in LINUX_PARAMS.items() if not k.endswith("ScriptPath")}
    client, iid, _invoke_id, result = run_plugin(twin, "web-1", params)
    assert result.exit_code == 0
    tags = consistency_tags(client, twin.region, iid)
    assert tags and all(t == {"FsConsistent": "True"} for t in tags.values())


def test_invalid_scripts_fall_back_to_fs_consistent(start_twin):
    twin = start_twin([instance("web-1", faults={"scripts_invalid": True})])
    client, iid, _invoke_id, result = run_plugin(twin, "web-1", LINUX_PARAMS)
    assert result.exit_code == 0
    assert "Pre/Post-Script have no Expected Permission" in decoded_output(result)
    assert set(map(frozenset, (t.items() for t in consistency_tags(client, twin.region, iid).values()))) == {frozenset({("FsConsistent", "True")})}


def test_windows_writers_decide_app_or_fs_consistency(start_twin):
    twin = start_twin([instance("win-1", platform="windows"), instance("win-2", platform="windows")])
    params = {"RamRoleName": ROLE, "Description": "AppSnapshot", "ExcludeDiskId": "", "Name": "APPSnapshot-1"}
    client, iid1, _invoke_id, r1 = run_plugin(twin, "win-1", dict(params, EnableWriters=True), plugin="app-snapshot-plugin-win", command_type="RunBatScript")
    _client, iid2, _invoke_id, r2 = run_plugin(twin, "win-2", dict(params, EnableWriters=False), plugin="app-snapshot-plugin-win", command_type="RunBatScript")
    assert (r1.exit_code, r2.exit_code) == (0, 0)
    assert all(t == {"AppConsistent": "True"} for t in consistency_tags(client, twin.region, iid1).values())
    assert all(t == {"FsConsistent": "True"} for t in consistency_tags(client, twin.region, iid2).values())


def test_excluded_and_non_essd_disks_are_left_out(start_twin):
    twin = start_twin([instance("web-1", categories=("cloud_essd", "cloud_essd", "cloud_efficiency"))])
    client = twin.client()
    disks = client.describe_disks(ecs_models.DescribeDisksRequest(region_id=twin.region, instance_id=twin.instances["web-1"])).body.disks.disk
    by_cat = {d.device: d for d in disks}
    excluded = by_cat["/dev/xvdb"].disk_id
    _client, _iid, _invoke_id, result = run_plugin(twin, "web-1", dict(LINUX_PARAMS, ExcludeDiskId=excluded))
    group_id = decoded_output(result).strip().splitlines()[-1].split('"')[1]
    assert {s.source_disk_id for s in group_snapshots(client, twin.region, group_id)} == {by_cat["/dev/xvda"].disk_id}


# ---------------------------------------------------------------------------------------------- one test per exit code

def _no_app_consistent_tag(client, region, iid):
    return all("AppConsistent" not in t for t in consistency_tags(client, region, iid).values())


CASES = {
    # code: (instance kwargs, plugin params, twin kwargs) -- the cause that produces the code
    1: ({}, dict(LINUX_PARAMS, RamRoleName="SomeOtherRole"), {}),
    2: ({}, {"RamRoleName": ROLE, "Name": "x1", "TimeoutInSeconds": "soon"}, {}),
    3: ({"categories": ("cloud_efficiency", "cloud_ssd")}, LINUX_PARAMS, {}),
    4: ({"categories": ("cloud_essd",) * 17}, LINUX_PARAMS, {}),
    5: ({"faults": {"snapshot_group_error": True}}, LINUX_PARAMS, {}),
    6: ({"faults": {"snapshot_group_hang": True, "group_wait_timeout": 0.3}}, LINUX_PARAMS, {}),
    7: ({"faults": {"snapshot_error": True}}, LINUX_PARAMS, {}),
    8: ({}, LINUX_PARAMS, {"faults": {"api_errors": [{"action": "TagResources", "code": "Throttling.User", "count": 1}]}}),
    9: ({"faults": {"prescript_fail": True}}, LINUX_PARAMS, {}),
    10: ({"faults": {"postscript_fail": True}}, LINUX_PARAMS, {}),
    11: ({"faults": {"freeze_fail": True}}, LINUX_PARAMS, {}),
    12: ({"faults": {"thaw_fail": True}}, LINUX_PARAMS, {}),
    13: ({"role": None}, LINUX_PARAMS, {}),
    15: ({"faults": {"snapshot_unavailable": True}}, LINUX_PARAMS, {}),
    255: ({"faults": {"plugin_crash": True}}, LINUX_PARAMS, {}),
}


@pytest.mark.parametrize("code", sorted(CASES))
def test_exit_code_cause(start_twin, code):
    inst_kwargs, params, twin_kwargs = CASES[code]
    twin = start_twin([instance("web-1", **inst_kwargs)], **twin_kwargs)
    client, iid, _invoke_id, result = run_plugin(twin, "web-1", params)
    out = decoded_output(result)
    assert result.exit_code == code, out
    assert result.invocation_status == "Failed" and result.error_code == "ExitCodeNonzero"
    assert "Finish whole Processes of Snapshot successfully" not in out
    assert _no_app_consistent_tag(client, twin.region, iid)
    groups = [g["id"] for g in twin.state()["snapshot_groups"]]
    last = out.strip().splitlines()[-1]
    if code in (5, 6, 7, 8, 10, 12, 15):
        # The group exists; the plug-in names it next to the error so that it can be cleaned up or classified.
        assert len(groups) == 1 and last.startswith(f'[snapshotgroup="{groups[0]}"][message="')
    elif code in (1, 2, 3, 9, 11, 13, 255):
        assert not groups and last.startswith('[message="')


def test_exit_1_for_an_invalid_snapshot_name(start_twin):
    twin = start_twin([instance("web-1")])
    _client, _iid, _invoke_id, result = run_plugin(twin, "web-1", dict(LINUX_PARAMS, Name="1-starts-with-a-digit"))
    assert result.exit_code == 1 and "invalid snapshot name" in decoded_output(result)


@pytest.mark.parametrize("raw", [
    "-RamRoleName=AppSnapshotRole",                                  # Name missing
    "-RamRoleName=AppSnapshotRole,-Name=a1,-Bogus=1",                 # unknown parameter
    "-RamRoleName=AppSnapshotRole,-Name=a1,-EnableFsFreeze=maybe",    # not a boolean
    "-RamRoleName=AppSnapshotRole,-Name=a1,-Name=a2",                 # repeated
    "RamRoleName=AppSnapshotRole,Name=a1",                            # no leading dash
])
def test_exit_2_for_malformed_params(start_twin, raw):
    twin = start_twin([instance("web-1")])
    client = twin.client()
    invoke_id = run_command(client, twin.region, [twin.instances["web-1"]],
                            f"acs-plugin-manager --exec --plugin app-snapshot-plugin --params={raw}")
    (result,) = wait_results(client, twin.region, invoke_id)
    assert result.exit_code == 2
    assert not twin.state()["snapshot_groups"]


def test_params_parse_as_the_shell_hands_them_over():
    params = parse_params('-RamRoleName=R,-EnableFsFreeze=false,-TimeoutInSeconds=20,-ExcludeDiskId=d-1,d-2,-Name=n1,-Description=two words')
    assert params["ExcludeDiskId"] == ["d-1", "d-2"] and params["EnableFsFreeze"] is False and params["TimeoutInSeconds"] == 20
    assert params["ScriptTimeoutInSeconds"] == 1800 and params["Description"] == "two words"


def test_exit_3_when_the_ram_role_lacks_permission(start_twin):
    twin = start_twin([instance("web-1", faults={"ram_role_no_permission": True})])
    _client, _iid, _invoke_id, result = run_plugin(twin, "web-1", LINUX_PARAMS)
    assert result.exit_code == 3 and "permission" in decoded_output(result)


def test_exit_14_when_the_snapshot_quota_is_used_up(start_twin):
    twin = start_twin([instance("web-1", faults={"snapshot_quota": 1})])
    client = twin.client()
    client.create_snapshot_group(ecs_models.CreateSnapshotGroupRequest(region_id=twin.region, instance_id=twin.instances["web-1"], name="first"))
    _client, _iid, _invoke_id, result = run_plugin(twin, "web-1", LINUX_PARAMS)
    assert result.exit_code == 14 and "QuotaExceed.Snapshot" in decoded_output(result)


def test_exit_16_while_a_previous_snapshot_is_being_created(start_twin):
    twin = start_twin([instance("web-1")], latency={"profile": "zero", "transitions": {"snapshot_group_complete": 120}})
    client = twin.client()
    client.create_snapshot_group(ecs_models.CreateSnapshotGroupRequest(region_id=twin.region, instance_id=twin.instances["web-1"], name="first"))
    _client, _iid, _invoke_id, result = run_plugin(twin, "web-1", LINUX_PARAMS)
    assert result.exit_code == 16 and "IncorrectDiskStatus.CreatingSnapshot" in decoded_output(result)
    assert len(twin.state()["snapshot_groups"]) == 1


def test_exit_11_for_windows_vss_writer_failure(start_twin):
    twin = start_twin([instance("win-1", platform="windows", faults={"vss_writer_failure": True})])
    params = {"RamRoleName": ROLE, "EnableWriters": True, "Name": "w1"}
    _client, _iid, _invoke_id, result = run_plugin(twin, "win-1", params, plugin="app-snapshot-plugin-win", command_type="RunBatScript")
    assert result.exit_code == 11


# The other causes the twin's README gives for a code (the test above shows one cause per code).
WIN_PARAMS = {"RamRoleName": ROLE, "EnableWriters": True, "Name": "w1"}
MORE_CAUSES = [
    # (id, code, instance kwargs, plug-in params, plug-in, twin kwargs, text of the error)
    ("plugin-for-the-other-os", 1, {}, WIN_PARAMS, "app-snapshot-plugin-win", {}, "does not support the operating system"),
    ("linux-plugin-on-windows", 1, {"platform": "windows"}, LINUX_PARAMS, "app-snapshot-plugin", {},
     "does not support the operating system"),
    ("unsupported-os", 1, {"faults": {"unsupported_os": True}}, LINUX_PARAMS, "app-snapshot-plugin", {}, "not supported"),
    ("network-unreachable", 1, {"faults": {"network_unreachable": True}}, LINUX_PARAMS, "app-snapshot-plugin", {},
     "network connectivity"),
    ("describe-disks-error", 1, {}, LINUX_PARAMS, "app-snapshot-plugin",
     {"faults": {"api_errors": [{"action": "DescribeDisks", "code": "Throttling.User", "count": 1}]}}, "DescribeDisks failed"),
    ("only-multi-attach-essd", 3, {"volumes": [{"device": "/dev/xvda", "size": 20, "type": "cloud_efficiency"},
                                               {"device": "/dev/xvdb", "size": 20, "type": "cloud_essd", "multi_attach": True}]},
     LINUX_PARAMS, "app-snapshot-plugin", {}, "No ESSD disks"),
    ("create-group-rejected", 4, {}, LINUX_PARAMS, "app-snapshot-plugin",
     {"faults": {"api_errors": [{"action": "CreateSnapshotGroup", "code": "InvalidParameter", "count": 1}]}},
     "CreateSnapshotGroup failed: InvalidParameter"),
    ("freeze-timeout", 11, {"faults": {"freeze_timeout": True}}, LINUX_PARAMS, "app-snapshot-plugin", {}, "Timedout to receive Thaw"),
    ("create-group-5xx", 255, {}, LINUX_PARAMS, "app-snapshot-plugin",
     {"faults": {"api_errors": [{"action": "CreateSnapshotGroup", "code": "InternalError", "count": 1}]}},
     "CreateSnapshotGroup failed: InternalError"),
    ("unknown-plugin", 255, {}, LINUX_PARAMS, "app-snapshot-plugin-nonesuch", {}, "not found"),
]


@pytest.mark.parametrize("code, inst_kwargs, params, plugin, twin_kwargs, text",
                         [case[1:] for case in MORE_CAUSES], ids=[case[0] for case in MORE_CAUSES])
def test_exit_code_other_causes(start_twin, code, inst_kwargs, params, plugin, twin_kwargs, text):
    twin = start_twin([instance("web-1", **inst_kwargs)], **twin_kwargs)
    command_type = "RunBatScript" if inst_kwargs.get("platform") == "windows" else "RunShellScript"
    client, iid, _invoke_id, result = run_plugin(twin, "web-1", params, plugin=plugin, command_type=command_type)
    out = decoded_output(result)
    assert result.exit_code == code, out
    assert text in out, out
    assert _no_app_consistent_tag(client, twin.region, iid)
    groups = [g["id"] for g in twin.state()["snapshot_groups"]]
    last = out.strip().splitlines()[-1]
    if code == 11:
        # The freeze timed out after the group was created: the untagged group is named for the caller.
        assert len(groups) == 1 and last.startswith(f'[snapshotgroup="{groups[0]}"][message="')
    else:
        assert not groups and last.startswith('[message="')


def test_exit_1_when_every_essd_disk_is_excluded(start_twin):
    twin = start_twin([instance("web-1", categories=("cloud_essd", "cloud_essd", "cloud_efficiency"))])
    client = twin.client()
    disks = client.describe_disks(ecs_models.DescribeDisksRequest(region_id=twin.region, instance_id=twin.instances["web-1"])).body.disks.disk
    essd = [d.disk_id for d in disks if d.category == "cloud_essd"]
    _client, _iid, _invoke_id, result = run_plugin(twin, "web-1", dict(LINUX_PARAMS, ExcludeDiskId=",".join(essd)))
    assert result.exit_code == 1 and "All attached ESSD Disks were excluded" in decoded_output(result)
    assert not twin.state()["snapshot_groups"]


def test_exit_5_when_the_group_disappears_while_the_plugin_waits(start_twin):
    twin = start_twin([instance("web-1", faults={"snapshot_group_hang": True, "group_wait_timeout": 60})])
    client = twin.client()
    iid = twin.instances["web-1"]
    invoke_id = run_command(client, twin.region, [iid], plugin_command(LINUX_PARAMS))
    deadline = time.monotonic() + 20
    while not twin.state()["snapshot_groups"]:
        assert time.monotonic() < deadline, "the plug-in never created its group"
        time.sleep(0.02)
    (group,) = [g["id"] for g in twin.state()["snapshot_groups"]]
    client.delete_snapshot_group(ecs_models.DeleteSnapshotGroupRequest(region_id=twin.region, snapshot_group_id=group))
    (result,) = wait_results(client, twin.region, invoke_id)
    out = decoded_output(result)
    assert result.exit_code == 5 and "disappeared" in out, out
    assert out.strip().splitlines()[-1].startswith(f'[snapshotgroup="{group}"]')


# The checks run in the order of the real plug-in: the first one that fails decides the exit code.
ORDER_CASES = [
    # (id, instance kwargs, plug-in params, code)
    ("parameters-before-the-role", {"role": None, "categories": ("cloud_efficiency",)},
     {"RamRoleName": ROLE, "Name": "x1", "Bogus": "1"}, 2),
    ("role-attached-before-disks", {"role": None, "categories": ("cloud_efficiency",), "faults": {"prescript_fail": True}},
     LINUX_PARAMS, 13),
    ("role-named-before-disks", {"categories": ("cloud_efficiency",), "faults": {"prescript_fail": True}},
     dict(LINUX_PARAMS, RamRoleName="SomeOtherRole"), 1),
    ("disks-before-the-prescript", {"categories": ("cloud_efficiency",), "faults": {"prescript_fail": True}}, LINUX_PARAMS, 3),
    ("script-check-before-the-prescript", {"faults": {"scripts_invalid": True, "prescript_fail": True}}, LINUX_PARAMS, 0),
    ("prescript-before-the-freeze", {"faults": {"prescript_fail": True, "freeze_fail": True}}, LINUX_PARAMS, 9),
    ("freeze-before-the-group", {"categories": ("cloud_essd",) * 17, "faults": {"freeze_fail": True}}, LINUX_PARAMS, 11),
]


@pytest.mark.parametrize("inst_kwargs, params, code", [case[1:] for case in ORDER_CASES], ids=[case[0] for case in ORDER_CASES])
def test_checks_run_in_the_order_of_the_plugin(start_twin, inst_kwargs, params, code):
    twin = start_twin([instance("web-1", **inst_kwargs)])
    client, iid, _invoke_id, result = run_plugin(twin, "web-1", params)
    assert result.exit_code == code, decoded_output(result)
    if code == 0:
        # The invalid scripts were never run (so the injected prescript failure never happened): file-system consistent.
        tags = consistency_tags(client, twin.region, iid)
        assert tags and all(t == {"FsConsistent": "True"} for t in tags.values())
    else:
        assert not twin.state()["snapshot_groups"]


def test_app_consistent_tag_key_can_be_the_older_spelling(start_twin):
    twin = start_twin([instance("web-1", faults={"app_consistent_tag_key": "APPConsistent"})])
    client, iid, _invoke_id, result = run_plugin(twin, "web-1", LINUX_PARAMS)
    assert result.exit_code == 0
    assert all(tags.get("APPConsistent") == "True" for tags in snapshot_tags(client, twin.region, iid).values())


def test_injected_exit_code_fault(start_twin):
    twin = start_twin([instance("web-1")])
    twin.faults.update({"instances": {"web-1": {"plugin_exit_code": 7}}})
    _client, _iid, _invoke_id, result = run_plugin(twin, "web-1", LINUX_PARAMS)
    assert result.exit_code == 7


def test_every_documented_exit_code_is_covered():
    covered = set(CASES) | {0, 14, 16}
    assert covered == set(EXIT_CODES)


# ---------------------------------------------------------------------------------------------- local instances, real I/O

@pytest.fixture
def local_fs(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root for loop devices and fsfreeze")
    with loop_filesystem(str(tmp_path)) as (image, mount):
        yield image, mount


def local_instance(image, mount, role=ROLE, **extra):
    return instance("db-1", role=role, execution="local", volumes=[
        {"device": "/dev/xvda", "size": 20, "type": "cloud_essd", "boot": True},
        {"device": "/dev/xvdb", "size": 1, "type": "cloud_essd", "image": image, "mount": mount}], **extra)


def _scripts(tmp_path, pre_body="", post_body="", mode=0o700):
    pre = write_script(str(tmp_path / "prescript.sh"), pre_body, mode)
    post = write_script(str(tmp_path / "postscript.sh"), post_body, mode)
    return pre, post


@pytest.fixture
def as_root():
    if os.geteuid() != 0:
        pytest.skip("needs root: the scripts must be owned by root")


def scripts_only_instance():
    """A local instance whose only disk is its system disk: the scripts run for real, nothing is frozen."""
    return instance("app-1", execution="local", volumes=[{"device": "/dev/xvda", "size": 20, "type": "cloud_essd", "boot": True}])


@pytest.mark.parametrize("which, code", [("prescript", 9), ("postscript", 10)])
def test_local_script_timeout_gives_its_exit_code(start_twin, as_root, tmp_path, which, code):
    pid_file = tmp_path / f"{which}.pid"
    slow = f"echo $$ > {pid_file}; sleep 60"
    pre, post = _scripts(tmp_path, slow if which == "prescript" else "true", slow if which == "postscript" else "true")
    twin = start_twin([scripts_only_instance()])
    params = dict(LINUX_PARAMS, PreScriptPath=pre, PostScriptPath=post, ScriptTimeoutInSeconds=1)
    started = time.monotonic()
    client, iid, _invoke_id, result = run_plugin(twin, "app-1", params)
    out = decoded_output(result)
    assert result.exit_code == code, out
    assert f"the {which} {pre if which == 'prescript' else post} timed out after 1 s" in out
    assert time.monotonic() - started < 30
    assert not os.path.exists(f"/proc/{pid_file.read_text().strip()}"), f"the {which} was not killed"
    assert _no_app_consistent_tag(client, twin.region, iid)


@pytest.mark.parametrize("problem", ["missing", "symlink", "directory", "group-not-root"])
def test_local_scripts_that_fail_the_lstat_check_give_fs_consistency(start_twin, as_root, tmp_path, problem):
    marker = tmp_path / "ran"
    pre, post = _scripts(tmp_path, f"touch {marker}", f"touch {marker}")
    if problem == "missing":
        os.unlink(pre)
    elif problem == "symlink":
        real = tmp_path / "real-prescript.sh"
        os.rename(pre, real)
        os.symlink(real, pre)
    elif problem == "directory":
        os.unlink(pre)
        os.mkdir(pre, 0o700)
    else:
        os.chown(pre, 0, 65534)
    twin = start_twin([scripts_only_instance()])
    client, iid, _invoke_id, result = run_plugin(twin, "app-1", dict(LINUX_PARAMS, PreScriptPath=pre, PostScriptPath=post))
    out = decoded_output(result)
    assert result.exit_code == 0 and "Pre/Post-Script have no Expected Permission" in out, out
    assert not marker.exists()
    tags = consistency_tags(client, twin.region, iid)
    assert tags and all(t == {"FsConsistent": "True"} for t in tags.values())


def test_local_valid_scripts_run_and_give_app_consistency(start_twin, as_root, tmp_path):
    """The counterpart of the test above: the same scripts, valid, really run, in order."""
    log = tmp_path / "log"
    pre, post = _scripts(tmp_path, f"echo pre >> {log}", f"echo post >> {log}")
    twin = start_twin([scripts_only_instance()])
    client, iid, _invoke_id, result = run_plugin(twin, "app-1", dict(LINUX_PARAMS, PreScriptPath=pre, PostScriptPath=post))
    assert result.exit_code == 0, decoded_output(result)
    assert log.read_text() == "pre\npost\n"
    tags = consistency_tags(client, twin.region, iid)
    assert tags and all(t == {"AppConsistent": "True"} for t in tags.values())


def test_local_write_blocks_while_the_group_is_created(start_twin, local_fs, tmp_path):
    image, mount = local_fs
    marks = tmp_path / "marks"
    marks.mkdir()
    pre, post = _scripts(tmp_path, f"echo before-freeze > {mount}/pre.txt && sync && touch {marks}/pre-ran",
                         f"touch {marks}/post-ran")
    twin = start_twin([local_instance(image, mount)])
    client = twin.client()
    gate = twin.hold("CreateSnapshotGroup")
    iid = twin.instances["db-1"]
    invoke_id = run_command(client, twin.region, [iid], plugin_command(dict(LINUX_PARAMS, PreScriptPath=pre, PostScriptPath=post)))
    writer_done = threading.Event()
    written_at = []

    def writer():
        with open(os.path.join(mount, "during.txt"), "w", encoding="utf-8") as handle:
            handle.write("written during the freeze\n")
            handle.flush()
            os.fsync(handle.fileno())
        written_at.append(time.time())
        writer_done.set()

    try:
        assert twin.held("CreateSnapshotGroup").wait(30), "the plug-in never reached CreateSnapshotGroup"
        assert steps_of(twin, invoke_id, iid)[-1] == "frozen"
        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        assert not writer_done.wait(0.5), "a write went through while the filesystem should be frozen"
        assert (marks / "pre-ran").exists() and not (marks / "post-ran").exists()
    finally:
        gate.set()
    (result,) = wait_results(client, twin.region, invoke_id)
    assert result.exit_code == 0, decoded_output(result)
    assert writer_done.wait(10)
    steps = dict(twin.trace(invoke_id, iid))
    assert written_at[0] >= steps["thawing"], "the blocked write completed before the thaw"
    assert (marks / "post-ran").exists()
    group_id = decoded_output(result).strip().splitlines()[-1].split('"')[1]
    snaps = {s.source_disk_id: s for s in group_snapshots(client, twin.region, group_id)}
    state = twin.state()
    data_disk = next(v for v in state["volumes"] if v["mount"] == mount)
    snap_image = next(s["image"] for s in state["snapshots"] if s["id"] == snaps[data_disk["id"]].snapshot_id)
    with mounted_readonly(snap_image, str(tmp_path)) as ro:
        with open(os.path.join(ro, "pre.txt"), encoding="utf-8") as handle:
            assert handle.read() == "before-freeze\n"
        assert not os.path.exists(os.path.join(ro, "during.txt"))
    assert os.path.exists(os.path.join(mount, "during.txt"))
    assert all(t == {"AppConsistent": "True"} for t in consistency_tags(client, twin.region, iid).values())


def test_local_watchdog_thaws_when_the_group_creation_hangs(start_twin, local_fs, tmp_path):
    image, mount = local_fs
    pre, post = _scripts(tmp_path)
    twin = start_twin([local_instance(image, mount)])
    client = twin.client()
    gate = twin.hold("CreateSnapshotGroup")
    iid = twin.instances["db-1"]
    params = dict(LINUX_PARAMS, PreScriptPath=pre, PostScriptPath=post, TimeoutInSeconds=1)
    invoke_id = run_command(client, twin.region, [iid], plugin_command(params))
    try:
        assert twin.held("CreateSnapshotGroup").wait(30)
        # While the group creation still hangs, the watchdog armed before the freeze thaws the filesystem.
        done = threading.Event()

        def write():
            with open(os.path.join(mount, "after-timeout.txt"), "w", encoding="utf-8") as handle:
                handle.write("x")
                os.fsync(handle.fileno())
            done.set()
        threading.Thread(target=write, daemon=True).start()
        assert done.wait(20), "the filesystem stayed frozen past TimeoutInSeconds"
        assert "snapshot group created" not in steps_of(twin, invoke_id, iid)
    finally:
        gate.set()
    (result,) = wait_results(client, twin.region, invoke_id)
    assert result.exit_code == 11, decoded_output(result)
    assert "auto-thawed" in steps_of(twin, invoke_id, iid)
    assert _no_app_consistent_tag(client, twin.region, iid)


def test_local_scripts_with_wrong_mode_are_not_run(start_twin, local_fs, tmp_path):
    image, mount = local_fs
    marker = tmp_path / "ran"
    pre, post = _scripts(tmp_path, f"touch {marker}", f"touch {marker}", mode=0o755)
    twin = start_twin([local_instance(image, mount)])
    client, iid, _invoke_id, result = run_plugin(twin, "db-1", dict(LINUX_PARAMS, PreScriptPath=pre, PostScriptPath=post))
    assert result.exit_code == 0
    assert "expected 0700" in decoded_output(result)
    assert not marker.exists()
    assert all(t == {"FsConsistent": "True"} for t in consistency_tags(client, twin.region, iid).values())


def test_local_scripts_not_owned_by_root_are_not_run(start_twin, local_fs, tmp_path):
    image, mount = local_fs
    marker = tmp_path / "ran"
    pre, post = _scripts(tmp_path, f"touch {marker}", f"touch {marker}")
    os.chown(pre, 65534, 65534)
    twin = start_twin([local_instance(image, mount)])
    client, iid, _invoke_id, result = run_plugin(twin, "db-1", dict(LINUX_PARAMS, PreScriptPath=pre, PostScriptPath=post))
    assert result.exit_code == 0 and "not owned by root:root" in decoded_output(result)
    assert not marker.exists()
    assert all(t == {"FsConsistent": "True"} for t in consistency_tags(client, twin.region, iid).values())


def test_local_exit_9_prescript_fails_and_nothing_is_frozen(start_twin, local_fs, tmp_path):
    image, mount = local_fs
    pre, post = _scripts(tmp_path, "echo cannot lock the database >&2; exit 3", f"touch {tmp_path}/post-ran")
    twin = start_twin([local_instance(image, mount)])
    _client, iid, invoke_id, result = run_plugin(twin, "db-1", dict(LINUX_PARAMS, PreScriptPath=pre, PostScriptPath=post))
    assert result.exit_code == 9
    assert "cannot lock the database" in decoded_output(result)
    assert "frozen" not in steps_of(twin, invoke_id, iid)
    assert not twin.state()["snapshot_groups"]


def test_stop_invocation_does_not_stop_a_plug_in_run_that_has_started(start_twin, local_fs, tmp_path):
    # Alibaba documents that a one-time run already started goes on to its end: a caller cannot take back a
    # plug-in run once its prescript runs, and the group is still made.
    image, mount = local_fs
    pid_file = tmp_path / "prescript.pid"
    go_on = tmp_path / "go-on"
    pre, post = _scripts(tmp_path, f"echo $$ > {pid_file}; while [ ! -e {go_on} ]; do sleep 0.05; done", "true")
    twin = start_twin([local_instance(image, mount)])
    client = twin.client()
    iid = twin.instances["db-1"]
    invoke_id = run_command(client, twin.region, [iid], plugin_command(dict(LINUX_PARAMS, PreScriptPath=pre, PostScriptPath=post)))
    deadline = time.monotonic() + 20
    while not (pid_file.exists() and pid_file.read_text().strip()):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    client.stop_invocation(ecs_models.StopInvocationRequest(region_id=twin.region, invoke_id=invoke_id))
    assert os.path.exists(f"/proc/{pid_file.read_text().strip()}")
    go_on.touch()
    (result,) = wait_results(client, twin.region, invoke_id)
    assert (result.invocation_status, result.exit_code) == ("Success", 0)
    assert "frozen" in steps_of(twin, invoke_id, iid)
    assert len(twin.state()["snapshot_groups"]) == 1


def test_local_exit_10_postscript_fails_after_the_thaw(start_twin, local_fs, tmp_path):
    image, mount = local_fs
    pre, post = _scripts(tmp_path, "true", "exit 1")
    twin = start_twin([local_instance(image, mount)])
    client, iid, invoke_id, result = run_plugin(twin, "db-1", dict(LINUX_PARAMS, PreScriptPath=pre, PostScriptPath=post))
    assert result.exit_code == 10
    steps = steps_of(twin, invoke_id, iid)
    assert steps.index("thawed") < steps.index("postscript")
    assert _no_app_consistent_tag(client, twin.region, iid)


def test_local_exit_11_for_a_path_that_is_not_a_mount_point(start_twin, local_fs, tmp_path):
    image = local_fs[0]
    not_mounted = tmp_path / "plain-dir"
    not_mounted.mkdir()
    pre, post = _scripts(tmp_path)
    twin = start_twin([local_instance(image, str(not_mounted))])
    _client, _iid, _invoke_id, result = run_plugin(twin, "db-1", dict(LINUX_PARAMS, PreScriptPath=pre, PostScriptPath=post))
    assert result.exit_code == 11 and "not a mount point" in decoded_output(result)


def test_local_fs_is_writable_after_every_run(start_twin, local_fs, tmp_path):
    """Nothing stays frozen: after a failed and a successful run, writes go straight through."""
    image, mount = local_fs
    pre, post = _scripts(tmp_path, "true", "exit 1")
    twin = start_twin([local_instance(image, mount)])
    run_plugin(twin, "db-1", dict(LINUX_PARAMS, PreScriptPath=pre, PostScriptPath=post))
    probe = subprocess.run(["timeout", "5", "sh", "-c", f"echo ok > {mount}/probe && sync -f {mount}/probe"], check=False)
    assert probe.returncode == 0


def test_plugin_calls_are_counted_apart_from_the_callers(start_twin):
    twin = start_twin([instance("web-1")])
    run_plugin(twin, "web-1", LINUX_PARAMS)
    counts = twin.stats.counts()
    assert counts["alicloud"].get("CreateSnapshotGroup") is None and counts["alicloud"]["RunCommand"] == 1
    role = counts["alicloud-instance-role"]
    assert role["DescribeDisks"] == 1 and role["CreateSnapshotGroup"] == 1 and role["TagResources"] == 1 and role["DescribeSnapshotGroups"] >= 1


def test_stopping_the_twin_mid_freeze_leaves_nothing_frozen(local_fs, tmp_path):
    image, mount = local_fs
    pre, post = _scripts(tmp_path)
    twin = server.start({"instances": [local_instance(image, mount)]})
    try:
        twin.hold("CreateSnapshotGroup")
        iid = twin.instances["db-1"]
        run_command(twin.client(), twin.region, [iid], plugin_command(dict(LINUX_PARAMS, PreScriptPath=pre, PostScriptPath=post)))
        assert twin.held("CreateSnapshotGroup").wait(30)
    finally:
        twin.stop()
    probe = subprocess.run(["timeout", "5", "sh", "-c", f"echo ok > {mount}/probe && sync -f {mount}/probe"], check=False)
    assert probe.returncode == 0
