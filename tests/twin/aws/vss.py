"""AWSEC2-CreateVssSnapshot and AWSEC2-VssInstallAndSnapshot on a simulated Windows instance.

What the documents promise (the twin's contract): all attached volumes are snapshotted (the boot
volume left out on request) during an I/O pause of at most ten seconds; the snapshots carry the
user's tags, a ``Name`` tag and ``AwsVssConfig`` from creation, then ``AppConsistent`` and
``Device`` a little later (the managed policy allows tagging those two keys only after creation,
so a reader sees a short window without them); the command exits 0 when consistent and 1
otherwise, in which case the snapshots exist but ``AppConsistent`` is false.

The agent makes its EC2 calls itself with the instance role, so they spend the account's request
buckets: CreateSnapshots (CreateImage for an AMI) during the pause, CreateTags for the evidence.  It
retries a throttled call as the AWS SDKs' standard mode does (three attempts, jittered backoff).  A
CreateSnapshots still throttled fails the command with no snapshots; one that succeeds only after the
pause passed ten seconds leaves snapshots that are not application-consistent; evidence tags still
throttled are not written, so those snapshots never show ``AppConsistent``.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any, Dict, List, Optional, Tuple

from moto.ec2.exceptions import EC2ClientError

RESERVED_TAGS = ("AppConsistent", "Device", "AwsVssConfig")
DEFAULT_VSS_VERSION = "2.5.1"
MAX_PAUSE = 10.0


def parse_tags(text: str) -> List[Tuple[str, str]]:
    """``Key=k,Value=v;Key=k2,Value=v2`` → [(k, v), (k2, v2)] (format already checked by the document)."""
    out = []
    for part in (text or "").split(";"):
        if not part:
            continue
        match = re.fullmatch(r"[Kk]ey=(.*?),[Vv]alue=(.*)", part)
        if match:
            out.append((match.group(1), match.group(2)))
    return out


def _version_tuple(version: str) -> Tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version or "0"))


def tag_value(flag: bool, style: str) -> str:
    """``AppConsistent`` value; AWS has written both ``true`` and ``True``: compare case-insensitively."""
    if style == "title":
        return "True" if flag else "False"
    return "true" if flag else "false"


def agent_call(cloud, action: str) -> Optional[str]:
    """The agent's token for ``action``, retried with the SDK's backoff; the throttling code if never granted."""
    attempts = int(cloud.limits.retry["attempts"])
    code = None
    for attempt in range(1, attempts + 1):
        code = cloud.instance_spend(action)
        if code is None:
            return None
        if attempt < attempts:
            time.sleep(cloud.limits.backoff(attempt))
    return code


def run_vss(cloud, instance_id: str, params: Dict[str, Any], install: bool) -> Tuple[int, str, str]:
    """Run the document on one instance; returns (exit code, stdout, stderr)."""
    fleet_inst = cloud.fleet_instance(instance_id)
    agent = fleet_inst.agent
    faults = cloud.instance_faults(instance_id)
    out: List[str] = []
    if install:
        wanted = params.get("VssVersion") or DEFAULT_VSS_VERSION
        current = getattr(agent, "vss_version", None) if agent.vss_components else None
        if current == wanted:
            out.append(f"AwsVssComponents {wanted} is already installed; skipping the install step.")
        elif faults.get("vss_install_failure"):
            return 1, "\n".join(out), "Failed to install AwsVssComponents: the package could not be downloaded."
        else:
            agent.vss_components = True
            agent.vss_version = wanted
            out.append(f"Successfully installed AwsVssComponents {wanted}")
    if not agent.vss_components:
        return 1, "", ("AwsVssComponents is not installed: C:\\Program Files\\Amazon\\AwsVssComponents\\ec2-vss-agent.exe "
                       "not found. Install it with AWS-ConfigureAWSPackage (name AwsVssComponents) or use "
                       "AWSEC2-VssInstallAndSnapshot.")
    version = getattr(agent, "vss_version", None) or DEFAULT_VSS_VERSION
    user_tags = parse_tags(params["tags"])
    reserved = sorted({k for k, _value in user_tags if k in RESERVED_TAGS})
    if reserved:
        return 1, "", f"Invalid tags parameter: the tag key(s) {', '.join(reserved)} are reserved and cannot be specified."
    if params["NoWriters"] == "True" and params["SaveVssMetadata"] == "True":
        return 1, "", "NoWriters must be False when SaveVssMetadata is True."
    if params["ExcludeBootVolume"] == "True" and params["CreateAmi"] == "True":
        return 1, "", "ExcludeBootVolume can only be used for snapshots: it requires CreateAmi to be False."
    if params["SaveVssMetadata"] == "True" and _version_tuple(version) < (2, 4, 0):
        return 1, "", f"SaveVssMetadata requires AwsVssComponents 2.4.0 or later; {version} is installed."

    set_id = "{" + str(uuid.uuid4()) + "}"
    config = f"AwsVssComponentsVersion={version}:SnapshotSetId={set_id}"
    writer_failure = faults.get("vss_writer_failure")
    thaw_timeout = bool(faults.get("vss_thaw_timeout"))
    pause = min(MAX_PAUSE, cloud.latency.transition("vss_freeze"))
    started = time.monotonic()
    if pause > 0:
        time.sleep(pause)
    out.append(f"Freeze complete at {int((time.monotonic() - started) * 1000)} ms")
    tags = dict(user_tags)
    tags.setdefault("Name", "")
    tags["AwsVssConfig"] = config
    style = cloud.faults.get("vss_tag_style", "lower")
    throttled = agent_call(cloud, "CreateImage" if params["CreateAmi"] == "True" else "CreateSnapshots")
    if throttled:
        return 1, "\n".join(out), (f"Thaw successful, but creating snapshots failed: {throttled}: Request limit exceeded. "
                                   "No snapshots were created.")
    # the kernel cancels a flush-and-hold held longer than ten seconds: snapshots made after that are not consistent
    thaw_timeout = thaw_timeout or time.monotonic() - started > MAX_PAUSE
    consistent = not writer_failure and not thaw_timeout
    try:
        with cloud.lock:
            if params["CreateAmi"] == "True":
                name = params["AmiName"] or f"VSS-{instance_id}-{time.strftime('%Y%m%d%H%M%S')}"
                image = cloud.ec2.create_image(instance_id, name, params["description"],
                                               [{"ResourceType": "image", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}])
                created = [(image, None)]
                out.append(f"Created AMI {image.id} from {instance_id}")
            else:
                snaps = cloud.ext.create_snapshots({"InstanceId": instance_id, "ExcludeBootVolume": params["ExcludeBootVolume"] == "True"},
                                                   params["description"], {}, copy_tags_from_source="",
                                                   exclude_data_volume_ids=[], creation_tags=tags)
                created = [(s, s.twin_device) for s in snaps]
                for snap, device in created:
                    out.append(f"Created {snap.id} from {snap.volume.id}  device:  {device}")
    except EC2ClientError as exc:
        return 1, "\n".join(out), f"Thaw successful, but creating snapshots failed: {exc.code}: {exc.message}"

    def add_evidence(attempt: int = 1):
        if cloud.instance_spend("CreateTags"):
            if attempt < int(cloud.limits.retry["attempts"]):
                cloud.scheduler.call_later(cloud.limits.backoff(attempt), lambda: add_evidence(attempt + 1))
            return
        with cloud.lock:
            for resource, device in created:
                evidence = {"AppConsistent": tag_value(consistent, style)}
                if device:
                    evidence["Device"] = device
                if resource.id in cloud.ec2.snapshots or resource.id in getattr(cloud.ec2, "amis", {}):
                    cloud.ec2.create_tags([resource.id], evidence)
    lag = cloud.latency.transition("appconsistent_tag_lag")
    if lag > 0:
        cloud.scheduler.call_later(lag, add_evidence)
    else:
        add_evidence()
    if thaw_timeout:
        return 1, "\n".join(out), ("Thaw pipe connection timed out, error on thaw, the I/O pause exceeded 10 seconds. "
                                   "Snapshots were created but are not application-consistent.")
    if writer_failure:
        writer = writer_failure if isinstance(writer_failure, str) else "SqlServerWriter"
        return 1, "\n".join(out), (f"VSS writer '{writer}' failed (state: Failed, last error: non-retryable error). "
                                   "Snapshots were created but are not application-consistent.")
    out.append(f"Thaw successful at {int((time.monotonic() - started) * 1000)} ms")
    return 0, "\n".join(out), ""
