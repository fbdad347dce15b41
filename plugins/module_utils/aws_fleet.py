# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

"""What the AWS code paths need to know about a fleet before they send anything.

Instances are described with filters rather than InstanceIds, because one
unknown id makes DescribeInstances fail for all of them; each instance then
gets its own verdict.
"""

from __future__ import annotations

from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import describe_instance_information
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import describe_instances
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import describe_snapshots
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import in_chunks
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import tags_of
from ansible_collections.appconsistent.snapshots.plugins.module_utils import snapshot_set as ss
from ansible_collections.appconsistent.snapshots.plugins.module_utils.polling import poll_until

FILTER_VALUES_MAX = 200
SNAPSHOT_POLL = 5
AGENT_ADVICE = ("check that the SSM agent is installed and running, that the instance can reach the SSM endpoints, "
                "and that its instance profile allows Systems Manager (AmazonSSMManagedInstanceCore)")


def ssm_command_argument_spec():
    """The options of modules that send one SSM document to Windows instances (doc fragment ssm_command)."""
    return dict(
        instance_ids=dict(type="list", elements="str"),
        targets=dict(type="list", elements="dict", options=dict(
            key=dict(type="str", required=True, no_log=False),
            values=dict(type="list", elements="str", required=True),
        )),
        max_concurrency=dict(type="str", default="50"),
        max_errors=dict(type="str", default="100%"),
        delivery_timeout=dict(type="int", default=600),
    )


def targets_to_filters(targets):
    """SSM-style targets ({key: tag:Name, values: [...]}) as EC2 DescribeInstances filters."""
    filters = []
    ids = []
    for target in targets:
        key, values = target["key"], [str(v) for v in target["values"]]
        if key == "InstanceIds":
            ids.extend(values)
        elif key.startswith("tag:"):
            filters.append({"Name": key, "Values": values})
        elif key == "tag-key":
            filters.append({"Name": "tag-key", "Values": values})
        else:
            raise ValueError(f"targets: unsupported key {key!r}; use tag:<name>, tag-key or InstanceIds")
    return filters, ids


def resolve_instances(client, instance_ids=None, targets=None):
    """{instance_id: description} for the requested instances; ids that do not exist map to None."""
    found = {}
    if targets:
        filters, ids = targets_to_filters(targets)
        states = {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}
        if filters:
            for instance in describe_instances(client, filters=filters + [states]):
                found[instance["InstanceId"]] = instance
        instance_ids = list(instance_ids or []) + ids
    requested = list(dict.fromkeys(instance_ids or []))
    named = set(requested)
    for instance in in_chunks(lambda chunk: describe_instances(client, filters=[{"Name": "instance-id", "Values": chunk}]),
                              requested, FILTER_VALUES_MAX):
        # An instance-id filter only looks up the instances named; anything else it returns is not acted on.
        if instance["InstanceId"] in named:
            found[instance["InstanceId"]] = instance
    order = requested + [i for i in found if i not in requested]
    return {instance_id: found.get(instance_id) for instance_id in order}


def agent_status(client, instance_ids):
    """{instance_id: InstanceInformation} for the instances SSM manages."""
    if not instance_ids:
        return {}
    return {info["InstanceId"]: info for info in describe_instance_information(client, instance_ids)}


def platform_of(instance):
    return "windows" if str(instance.get("Platform") or "").lower() == "windows" or \
        "windows" in str(instance.get("PlatformDetails") or "").lower() else "linux"


def preflight(instance_id, instance, agent, platform, region=None):
    """None when the instance can be sent an agent command, else the reason it cannot."""
    if instance is None:
        where = f" in {region}" if region else ""
        return dict(code="InstanceNotFound", message=f"instance {instance_id} does not exist{where}")
    state = (instance.get("State") or {}).get("Name")
    if state != "running":
        return dict(code="InstanceNotRunning",
                    message=f"instance {instance_id} is {state}: an application-consistent set needs it running")
    actual = platform_of(instance)
    if platform and actual != platform:
        hint = "use app_consistent_group for Linux instances" if platform == "windows" else \
            "use vss_snapshot (or app_consistent_group) for Windows instances"
        return dict(code="WrongPlatform", message=f"instance {instance_id} is {actual.capitalize()}, not "
                                                  f"{platform.capitalize()}: {hint}")
    if agent is None:
        return dict(code="InvalidInstanceId",
                    message=f"instance {instance_id} is not managed by Systems Manager: {AGENT_ADVICE}")
    ping = agent.get("PingStatus")
    if ping != "Online":
        return dict(code="AgentNotOnline",
                    message=f"the SSM agent of instance {instance_id} is {ping}: {AGENT_ADVICE}")
    return None


def attached_volumes(instance):
    """[{device, volume_id, boot}] of the EBS volumes attached to the instance."""
    root = instance.get("RootDeviceName")
    volumes = []
    for mapping in instance.get("BlockDeviceMappings") or []:
        ebs = mapping.get("Ebs") or {}
        if ebs.get("VolumeId"):
            volumes.append(dict(device=mapping.get("DeviceName"), volume_id=ebs["VolumeId"],
                                boot=mapping.get("DeviceName") == root))
    return volumes


def snapshot_member(snapshot, device=None):
    """A snapshot as a set member (snake_case, tags as a dict)."""
    tags = tags_of(snapshot)
    start = snapshot.get("StartTime")
    return dict(snapshot_id=snapshot["SnapshotId"], volume_id=snapshot.get("VolumeId"),
                device=device or tags.get(ss.TAG_DEVICE) or tags.get("Device"),
                volume_size=snapshot.get("VolumeSize"), state=snapshot.get("State"),
                progress=snapshot.get("Progress"),
                start_time=start.isoformat() if hasattr(start, "isoformat") else start, tags=tags)


def complete_sets(client, outcomes, timeout, sleep, clock):
    """Wait for the snapshots of several sets (objects with snapshots, consistency, error and fail()).

    The members' state and progress are updated in place. A set with a snapshot in error can never be
    restored: its consistency becomes none. A set still pending at the deadline keeps its consistency
    (the data is fixed) and says so in its error.
    """
    pending = {m["snapshot_id"]: m for o in outcomes for m in o.snapshots if m.get("state") not in ("completed", "error")}

    def all_settled():
        for snapshot in in_chunks(lambda chunk: describe_snapshots(client, snapshot_ids=chunk), pending, FILTER_VALUES_MAX):
            member = pending.get(snapshot["SnapshotId"])
            if member is None:
                continue
            member["state"], member["progress"] = snapshot.get("State"), snapshot.get("Progress")
            if member["state"] in ("completed", "error"):
                pending.pop(snapshot["SnapshotId"])
        return not pending

    poll_until(all_settled, timeout, sleep, clock, SNAPSHOT_POLL, SNAPSHOT_POLL)
    for outcome in outcomes:
        errors = [m["snapshot_id"] for m in outcome.snapshots if m.get("state") == "error"]
        if errors:
            outcome.consistency = "none"
            outcome.fail("SnapshotError", f"snapshot {', '.join(errors)} entered the error state: this set cannot "
                                          "be restored; take a new one")
        elif any(m["snapshot_id"] in pending for m in outcome.snapshots) and not outcome.error:
            outcome.fail("CompletionTimeout", f"the snapshots did not complete within completion_timeout ({timeout} s); "
                                              "they are still being created and the set can be used once they complete")


def sets_by_run_id(client, run_id, instance_ids, volume_owner=None):
    """{instance_id: SnapshotSet} of existing sets with this run id (the newest per instance).

    A member whose instance-id tag is missing (a run cut off before it finished
    tagging) is attributed through ``volume_owner`` ({volume_id: instance_id}).
    """
    filters = [{"Name": "tag:" + ss.TAG_RUN_ID, "Values": [run_id]}]
    wanted = set(instance_ids)
    groups = {}
    for snapshot in describe_snapshots(client, filters=filters):
        member = snapshot_member(snapshot)
        instance_id = member["tags"].get(ss.TAG_INSTANCE_ID) or (volume_owner or {}).get(member["volume_id"])
        set_id = member["tags"].get(ss.TAG_SET_ID)
        if instance_id in wanted and set_id:
            groups.setdefault((set_id, instance_id), []).append(member)
    result = {}
    for (set_id, instance_id), members in groups.items():
        candidate = ss.SnapshotSet(set_id, members)
        current = result.get(instance_id)
        if current is None or (candidate.created or "") > (current.created or ""):
            result[instance_id] = candidate
    return result
