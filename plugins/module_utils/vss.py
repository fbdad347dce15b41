# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The contract of the AWSEC2-CreateVssSnapshot and AWSEC2-VssInstallAndSnapshot documents.

Every parameter is a string; booleans are the strings ``True``/``False``.
Values the document would refuse are refused here, before anything is sent.
"""

from __future__ import annotations

import re

DOCUMENT_SNAPSHOT = "AWSEC2-CreateVssSnapshot"
DOCUMENT_INSTALL_AND_SNAPSHOT = "AWSEC2-VssInstallAndSnapshot"

# Tags the document writes itself; passing one of them makes the run fail.
RESERVED_TAGS = ("AppConsistent", "Device", "AwsVssConfig")
# Characters the document accepts in its tags parameter, besides letters and digits.
TAG_EXTRA_CHARS = "() ./\\-\"'@_+:={}"
_TAG_CHARS = re.compile(r"[A-Za-z0-9" + re.escape(TAG_EXTRA_CHARS) + r"]*")
DESCRIPTION_MAX = 255
_VERSION = re.compile(r"[0-9]+(\.[0-9]+){1,3}")
# CreateImage's rule for AMI names; the document passes the name on to it, after the freeze.
_AMI_NAME = re.compile(r"[A-Za-z0-9()\[\] ./'@_-]{3,128}")


class VssParameterError(ValueError):
    pass


def as_flag(value):
    return "True" if value else "False"


def format_tags(tags):
    """{'k': 'v', 'k2': 'v2'} -> 'Key=k,Value=v;Key=k2,Value=v2', refusing what the document refuses."""
    parts = []
    for key, value in tags.items():
        key, value = str(key), "" if value is None else str(value)
        if not key:
            raise VssParameterError("tags: empty tag keys are not allowed")
        if key.lower() in (r.lower() for r in RESERVED_TAGS):
            raise VssParameterError(f"tags: {key!r} is written by the VSS document itself and may not be given "
                                    f"(reserved: {', '.join(RESERVED_TAGS)})")
        for label, text in (("key", key), ("value", value)):
            if not _TAG_CHARS.fullmatch(text):
                bad = sorted({c for c in text if not _TAG_CHARS.fullmatch(c)})
                raise VssParameterError(f"tags: the {label} {text!r} contains {''.join(bad)!r}; the VSS document accepts "
                                        f"letters, digits and {TAG_EXTRA_CHARS}")
        if len(key) > 128 or len(value) > 256:
            raise VssParameterError(f"tags: {key!r} is longer than EC2 allows (key 128, value 256 characters)")
        parts.append(f"Key={key},Value={value}")
    return ";".join(parts)


def build_parameters(exclude_boot_volume=False, writers=True, copy_only=False, create_ami=False, ami_name=None,
                     description=None, tags=None, execution_timeout=None, collect_diagnostic_logs=False,
                     save_vss_metadata=False, install=False, vss_version=None):
    """The SendCommand Parameters for one VSS run; raises VssParameterError for what the document refuses."""
    if exclude_boot_volume and create_ami:
        raise VssParameterError("exclude_boot_volume cannot be used with create_ami: an AMI always includes the boot volume")
    if not writers and save_vss_metadata:
        raise VssParameterError("save_vss_metadata needs the VSS writers: it cannot be used with writers: false")
    if create_ami and not ami_name:
        raise VssParameterError("create_ami needs ami_name")
    if ami_name and not create_ami:
        raise VssParameterError("ami_name is only used with create_ami: true")
    if ami_name and not _AMI_NAME.fullmatch(ami_name):
        raise VssParameterError(f"ami_name {ami_name!r} is refused: use 3-128 letters, digits, spaces and ( ) [ ] . / - ' @ _")
    if description and len(description) > DESCRIPTION_MAX:
        raise VssParameterError(f"description is longer than {DESCRIPTION_MAX} characters")
    if vss_version and not install:
        raise VssParameterError("vss_version is only used with install_vss_components: true")
    if vss_version and not _VERSION.fullmatch(vss_version):
        raise VssParameterError(f"vss_version {vss_version!r} is not a version number such as 2.5.0")
    params = {
        "ExcludeBootVolume": [as_flag(exclude_boot_volume)],
        "NoWriters": [as_flag(not writers)],
        "CopyOnly": [as_flag(copy_only)],
        "CreateAmi": [as_flag(create_ami)],
        "CollectDiagnosticLogs": [as_flag(collect_diagnostic_logs)],
        "SaveVssMetadata": [as_flag(save_vss_metadata)],
        "description": [description or ""],
        "tags": [format_tags(tags or {})],
    }
    if create_ami:
        params["AmiName"] = [ami_name]
    if execution_timeout:
        params["executionTimeout"] = [str(int(execution_timeout))]
    if install:
        params["VssVersion"] = [vss_version or ""]
    return params


def failure_hint(stdout, stderr, install_requested):
    """What to do about a failed VSS run, read from its output (for the message only)."""
    text = f"{stdout}\n{stderr}".lower()
    if ("not installed" in text or "awsvsscomponents" in text or "ec2-vss-agent" in text) and not install_requested:
        return "the AwsVssComponents package is missing or outdated on the instance: run with install_vss_components: true"
    if "writer" in text:
        return ("a VSS writer failed: see the instance's VSS event log (vssadmin list writers); use writers: false only "
                "if crash consistency is acceptable")
    if "thaw" in text or "freeze" in text:
        return ("VSS could not freeze and thaw within its 10-second window: retry at a quieter time, check I/O load and "
                "antivirus, and that the instance can reach the EC2 API quickly")
    return "see the command output and the VSS logs on the instance (collect_diagnostic_logs: true collects them)"
