# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The Cloud Assistant app-snapshot-plugin(-win) contract: its command line and its exit codes.

Every value placed on the command line is validated against a narrow
pattern and quoted, so that no value can add a plug-in parameter (a comma
followed by ``-Key=``) or reach a shell; no value holds a comma, which
separates the plug-in's parameters.
"""

from __future__ import annotations

import base64
import re

PLUGIN_LINUX = "app-snapshot-plugin"
PLUGIN_WINDOWS = "app-snapshot-plugin-win"

# Alibaba's table gives 9 and 10 the same text and names the RAM role under 1, 3 and 13.
# The reading used here (and by the twin): 9 is the prescript, 10 the postscript; 13 is
# "no role attached", 3 "the role lacks permission or no eligible disk", 1 "a precondition".
EXIT_CODES = {
    0: ("ok", "the snapshots were created"),
    1: ("precondition", "a precondition is not met: the RAM role named is not the one attached to the instance, "
                        "the group name is invalid, every ESSD disk was excluded, the OS is not supported, or the "
                        "instance cannot reach the ECS API"),
    2: ("bad_parameters", "the plug-in refused its parameters"),
    3: ("not_eligible", "no ESSD disk without multi-attach is attached, or the instance's RAM role lacks the snapshot "
                        "permissions (ecs:DescribeSnapshot*, ecs:CreateSnapshot*, ecs:TagResources, ecs:DescribeDisks)"),
    4: ("group_not_created", "the snapshot-consistent group could not be created"),
    5: ("group_failed", "the snapshot-consistent group did not reach the expected state"),
    6: ("group_timeout", "creating the snapshot-consistent group timed out"),
    7: ("snapshot_failed", "a snapshot of the group did not reach the expected state"),
    8: ("tagging_failed", "the plug-in could not tag the snapshots with their consistency"),
    9: ("prescript_failed", "the prescript failed or timed out; nothing was frozen"),
    10: ("postscript_failed", "the postscript failed or timed out; the application may still be quiesced"),
    11: ("freeze_failed", "I/O could not be suspended (the freeze failed or its timeout fired before the group was "
                          "created)"),
    12: ("thaw_failed", "I/O could not be resumed: check the instance now"),
    13: ("no_ram_role", "no RAM role is attached to the instance"),
    14: ("quota_exceeded", "the snapshot quota is exhausted"),
    15: ("snapshot_unavailable", "a snapshot is not in the expected state"),
    16: ("previous_snapshot_running", "a previous snapshot of a disk is still being created and instant access is off; "
                                      "retry later"),
    255: ("unknown", "the plug-in failed with an unknown error"),
}

_ROLE = re.compile(r"[A-Za-z0-9.\-]{1,64}")
# Group names: a letter first, 2-128 characters; nothing that can end a quoted value,
# start another parameter or reach a shell.
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.:\-]{1,127}")
_DESCRIPTION = re.compile(r"[A-Za-z0-9 _.:/@+\-]{0,256}")
_PATH = re.compile(r"/[A-Za-z0-9_./\-]*")
_DISK = re.compile(r"d-[a-z0-9]{1,64}")
_GROUP_MARK = re.compile(r'\[snapshotgroup="(ssg-[A-Za-z0-9]+)"\]')
_MESSAGE_MARK = re.compile(r'\[message="([^"]*)"\]')


class PluginParameterError(ValueError):
    pass


def check_role(name):
    if not name or not _ROLE.fullmatch(name):
        raise PluginParameterError(f"ram_role_name {name!r} is not a RAM role name (1-64 letters, digits, '.' and '-')")
    return name


def check_name(name):
    if not _NAME.fullmatch(name or ""):
        raise PluginParameterError(f"name {name!r} is refused: use 2-128 characters, a letter first, then letters, "
                                   "digits, '_', '.', ':' or '-' (no spaces, quotes, commas, '=' or '$')")
    return name


def check_description(text):
    if text and not _DESCRIPTION.fullmatch(text):
        raise PluginParameterError(f"description {text!r} is refused: use letters, digits, spaces and _ . : / @ + - "
                                   "(no quotes, commas, '=' or '$'; at most 256 characters)")
    return text


def check_path(label, path):
    if not path or not _PATH.fullmatch(path) or "/../" in path + "/" or "/./" in path + "/":
        raise PluginParameterError(f"{label} {path!r} is refused: give an absolute path of letters, digits, '_', '.', "
                                   "'-' and '/', without spaces, quotes or '..'")
    return path


def check_disk_id(disk_id):
    if not _DISK.fullmatch(disk_id or ""):
        raise PluginParameterError(f"{disk_id!r} is not an Alibaba Cloud disk id (d-...)")
    return disk_id


def check_exclusions(disk_ids, instance_id=None):
    """The disks the plug-in leaves out: at most one.

    acs-plugin-manager hands the plug-in each comma-separated piece of --params as its own argument, and the
    quotes around a value are the shell's, gone before it splits: a second disk id after a comma would reach
    the plug-in as a stray argument, not as part of -ExcludeDiskId, so a list of disks cannot be passed.
    """
    disk_ids = [check_disk_id(d) for d in disk_ids or []]
    if len(disk_ids) > 1:
        where = f" of instance {instance_id}" if instance_id else ""
        raise PluginParameterError(
            f"the plug-in would have to leave out {len(disk_ids)} disks{where} ({', '.join(disk_ids)}), but its "
            "-ExcludeDiskId parameter carries one disk id (the plug-in's parameters are separated by commas): "
            "select all of the instance's disks but at most one, or take consistency crash or offline, which "
            "exclude any number of disks")
    return disk_ids


def command_line(platform, ram_role_name, name, description=None, exclude_disk_ids=None, freeze=True,
                 freeze_timeout=30, script_timeout=1800, pre_script_path=None, post_script_path=None,
                 enable_writers=True):
    """The RunCommand content that runs the plug-in, every value checked first."""
    params = [f'-RamRoleName="{check_role(ram_role_name)}"']
    if platform == "windows":
        params.append(f"-EnableWriters={'true' if enable_writers else 'false'}")
    else:
        params.append(f"-EnableFsFreeze={'true' if freeze else 'false'}")
        params.append(f"-TimeoutInSeconds={int(freeze_timeout)}")
        params.append(f"-ScriptTimeoutInSeconds={int(script_timeout)}")
        if pre_script_path:
            params.append(f'-PreScriptPath="{check_path("pre_script_path", pre_script_path)}"')
        if post_script_path:
            params.append(f'-PostScriptPath="{check_path("post_script_path", post_script_path)}"')
    if exclude_disk_ids:
        params.append(f'-ExcludeDiskId="{check_exclusions(exclude_disk_ids)[0]}"')
    params.append(f'-Name="{check_name(name)}"')
    if description:
        params.append(f'-Description="{check_description(description)}"')
    plugin = PLUGIN_WINDOWS if platform == "windows" else PLUGIN_LINUX
    return f"acs-plugin-manager --exec --plugin {plugin} --params={','.join(params)}"


def decode_output(output):
    """DescribeInvocationResults returns Output base64-encoded by default."""
    if not output:
        return ""
    try:
        return base64.b64decode(output).decode("utf-8", errors="replace")
    except (ValueError, TypeError):
        return str(output)


def group_id_from(output):
    match = _GROUP_MARK.search(output or "")
    return match.group(1) if match else None


def last_message(output):
    found = _MESSAGE_MARK.findall(output or "")
    return found[-1] if found else None


def meaning(exit_code):
    """(short name, sentence) for a plug-in exit code."""
    if exit_code is None:
        return ("none", "the plug-in did not run")
    return EXIT_CODES.get(int(exit_code), ("unknown", f"the plug-in exited {exit_code}, which is not in its documented table"))
