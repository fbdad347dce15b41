"""The Cloud Assistant plug-in command line and exit codes, and the AWS freeze-helper command line."""

import base64
import shlex
import types

import pytest

from ansible_collections.appconsistent.snapshots.plugins.module_utils import app_plugin
from ansible_collections.appconsistent.snapshots.plugins.module_utils.group_aws import AwsGroupRun
from ansible_collections.appconsistent.snapshots.plugins.module_utils.group_aws import GroupInputError
from ansible_collections.appconsistent.snapshots.plugins.module_utils.group_aws import parse_helper_output
from ansible_collections.appconsistent.snapshots.plugins.modules.app_consistent_group import argument_spec


def test_linux_command_line_matches_the_documented_form():
    line = app_plugin.command_line("linux", "AppSnapshotRole", "LinuxApp1", pre_script_path="/usr/local/lib/a/pre.sh",
                                   post_script_path="/usr/local/lib/a/post.sh", exclude_disk_ids=["d-1"])
    assert line == ('acs-plugin-manager --exec --plugin app-snapshot-plugin --params=-RamRoleName="AppSnapshotRole",'
                    '-EnableFsFreeze=true,-TimeoutInSeconds=30,-ScriptTimeoutInSeconds=1800,'
                    '-PreScriptPath="/usr/local/lib/a/pre.sh",-PostScriptPath="/usr/local/lib/a/post.sh",'
                    '-ExcludeDiskId="d-1",-Name="LinuxApp1"')


@pytest.mark.parametrize("platform", ["linux", "windows"])
def test_two_excluded_disks_are_refused_as_the_plug_in_syntax_cannot_carry_a_comma(platform):
    # --params is split at every comma into the plug-in's arguments (the quotes are the shell's): "d-1,d-2"
    # would reach the plug-in as -ExcludeDiskId=d-1 and a stray argument d-2.
    with pytest.raises(app_plugin.PluginParameterError, match="-ExcludeDiskId parameter carries one disk id"):
        app_plugin.command_line(platform, "Role", "name", exclude_disk_ids=["d-1", "d-2"])
    with pytest.raises(app_plugin.PluginParameterError, match="leave out 3 disks of instance i-1 .d-1, d-2, d-3."):
        app_plugin.check_exclusions(["d-1", "d-2", "d-3"], "i-1")
    assert app_plugin.check_exclusions(["d-1"]) == ["d-1"] and app_plugin.check_exclusions(None) == []


def test_windows_command_line():
    line = app_plugin.command_line("windows", "AppSnapshotRole", "APPSnapshot-1", description="nightly",
                                   enable_writers=False)
    assert line == ('acs-plugin-manager --exec --plugin app-snapshot-plugin-win --params=-RamRoleName="AppSnapshotRole",'
                    '-EnableWriters=false,-Name="APPSnapshot-1",-Description="nightly"')


@pytest.mark.parametrize("name", ['a"b', "a,b", "x=1", "n$(reboot)", "n`id`", "a b", "9starts-with-digit", "a;b", "",
                                  'ok",-RamRoleName="Other'])
def test_names_that_could_escape_are_refused(name):
    with pytest.raises(app_plugin.PluginParameterError):
        app_plugin.command_line("linux", "Role", name)


@pytest.mark.parametrize("path", ["relative/p.sh", "/opt/my scripts/p.sh", "/opt/../etc/p.sh", '/opt/"p".sh', "/opt/p,x.sh"])
def test_script_paths_that_could_escape_are_refused(path):
    with pytest.raises(app_plugin.PluginParameterError):
        app_plugin.command_line("linux", "Role", "name", pre_script_path=path)


@pytest.mark.parametrize("role", ["", "Role Name", "Role,x", "R" * 65])
def test_bad_role_names_are_refused(role):
    with pytest.raises(app_plugin.PluginParameterError):
        app_plugin.check_role(role)


def test_disk_ids_are_checked():
    with pytest.raises(app_plugin.PluginParameterError):
        app_plugin.command_line("linux", "Role", "name", exclude_disk_ids=['d-1",-Name="x'])


def test_every_documented_exit_code_has_a_meaning():
    assert sorted(app_plugin.EXIT_CODES) == list(range(0, 17)) + [255]
    assert app_plugin.meaning(9)[0] == "prescript_failed"
    assert app_plugin.meaning(10)[0] == "postscript_failed"
    assert app_plugin.meaning(13)[0] == "no_ram_role"
    assert app_plugin.meaning(42)[0] == "unknown"


def test_output_is_decoded_and_the_group_read():
    text = '[INFO] done\n[snapshotgroup="ssg-bp170v57ca9j01jb1234"][message="Finish whole Processes of Snapshot successfully"]'
    decoded = app_plugin.decode_output(base64.b64encode(text.encode()).decode())
    assert decoded == text
    assert app_plugin.group_id_from(decoded) == "ssg-bp170v57ca9j01jb1234"
    assert app_plugin.last_message(decoded) == "Finish whole Processes of Snapshot successfully"
    assert app_plugin.group_id_from("[ERROR] x\n[message=\"failed\"]") is None


def _aws_run(**overrides):
    params = {name: spec.get("default") for name, spec in argument_spec().items()}
    params.update(provider="aws", instance_ids=["i-1"])
    params.update(overrides)
    return AwsGroupRun(types.SimpleNamespace(params=params, check_mode=False))


def test_freeze_command_quotes_every_value():
    run = _aws_run(mounts=["/data", "/data/logs"], pre_script_path="/usr/local/lib/appconsistent/pre.sh")
    run.validate()
    command = run._helper_command("freeze", "acs-20261123t000000-abcd")
    argv = shlex.split(command)
    assert argv[:2] == ["/usr/local/lib/appconsistent/appconsistent-freeze", "freeze"]
    assert argv[argv.index("--run-id") + 1] == "acs-20261123t000000-abcd"
    assert argv[argv.index("--prescript") + 1] == "/usr/local/lib/appconsistent/pre.sh"
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--mount"] == ["/data", "/data/logs"]
    assert shlex.split(run._helper_command("thaw", "r1"))[1:] == ["thaw", "--run-id", "r1"]


def test_filesystem_consistency_runs_no_script():
    run = _aws_run(consistency="filesystem", mounts=["/data"])
    argv = shlex.split(run._helper_command("freeze", "r1"))
    assert argv[argv.index("--prescript") + 1] == "" and argv[argv.index("--postscript") + 1] == ""


@pytest.mark.parametrize("mounts", [["/"], ["/boot"], ["/boot/efi"], ["data"], ["/data; reboot"], ["/a/../b"]])
def test_dangerous_mounts_are_refused(mounts):
    with pytest.raises(GroupInputError):
        _aws_run(mounts=mounts).validate()


def test_auto_mounts_discovery_never_lists_root():
    command = _aws_run()._helper_command("freeze", "r1")
    assert "auto_mounts" in command and "/|/boot|/boot/*) continue" in command


def test_auto_mounts_reach_the_helper_as_auto_mount_so_that_it_may_leave_some_out():
    # The helper leaves out what holds the agents' state, logs or temporary files; an explicit --mount it freezes.
    command = _aws_run()._helper_command("freeze", "r1")
    assert 'mounts+=(--auto-mount "$m")' in command and "--mount " not in command


def test_helper_report_is_the_last_json_line():
    assert parse_helper_output('noise\n{"exit_code": 0, "status": "frozen"}\n') == {"exit_code": 0, "status": "frozen"}
    assert parse_helper_output('{"exit_code": 0, "status": "fro') is None
    assert parse_helper_output("") is None
