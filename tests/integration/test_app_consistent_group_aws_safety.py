"""app_consistent_group on AWS through the twin: what the controller may label offline, and what it may believe."""

import time

ACG = "appconsistent.snapshots.app_consistent_group"
VOLUMES = [{"device": "/dev/xvda", "size": 8, "boot": True}, {"device": "/dev/xvdf", "size": 10, "mount": "/data"}]


def data_volume(twins, iid):
    ec2 = twins.aws_client("ec2")
    instance = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    return next(m["Ebs"]["VolumeId"] for m in instance["BlockDeviceMappings"] if m["DeviceName"] == "/dev/xvdf")


def test_offline_never_labels_a_set_taken_after_the_watchdog_remounted(twin_factory, run_tasks):
    # db-slow's unmount reaches it only after 65 s: past the 60 s remount watchdog of db-fast, which unmounted at once.
    fleet = {"instances": [
        {"provider": "aws", "name": "db-fast", "platform": "linux", "volumes": VOLUMES},
        {"provider": "aws", "name": "db-slow", "platform": "linux", "volumes": VOLUMES,
         "faults": {"hold_commands": {"report unmount": 65}}}]}
    twins = twin_factory(fleet, alicloud=False)
    fast, slow = (twins.endpoints["aws"]["instances"][n] for n in ("db-fast", "db-slow"))
    started = time.time()
    run = run_tasks([{ACG: {"provider": "aws", "consistency": "offline", "instance_ids": [fast, slow],
                            "mounts": ["/data"], "disk_ids": [data_volume(twins, fast), data_volume(twins, slow)],
                            "freeze_timeout": 30, "on_fallback": "warn"}, "register": "group"}], twins.endpoints)
    results = {r["instance_id"]: r for r in run["group"]["results"]}
    ec2 = twins.aws_client("ec2")
    snapshots = ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]
    offline = [s for s in snapshots if {"Key": "appconsistent:consistency", "Value": "offline"} in s.get("Tags", [])]
    # Every set labelled offline was taken while its filesystems were unmounted: before the 60 s watchdog.
    assert offline and all(s["StartTime"].timestamp() < started + 60 for s in offline), \
        [(s["SnapshotId"], s["StartTime"].timestamp() - started) for s in offline]
    assert results[fast]["consistency"] == "offline" and [s["device"] for s in results[fast]["snapshots"]] == ["/dev/xvdf"]
    assert results[slow]["snapshots"] == [] and results[slow]["error"]["code"] == "WaitTimeout"
    assert "cancelled" in results[slow]["error"]["message"]
    # The unmount that reached db-slow late was cancelled: nothing of it unmounts db-slow after the task.
    time.sleep(max(0.0, started + 70 - time.time()))
    assert twins.aws.ssm.helper.unmounted(slow) == {}


def _tags(snapshot):
    return {t["Key"]: t["Value"] for t in snapshot.get("Tags", [])}


def test_initiator_instance_gets_only_its_own_snapshots_of_this_run_raised(twin_factory, run_tasks):
    fleet = {"instances": [{"provider": "aws", "name": n, "platform": "linux", "volumes": VOLUMES}
                           for n in ("db", "victim")]}
    twins = twin_factory(fleet, alicloud=False)
    db, victim = (twins.endpoints["aws"]["instances"][n] for n in ("db", "victim"))
    ec2 = twins.aws_client("ec2")

    def crash_set(instance_id):
        tags = [{"Key": "appconsistent:set-id", "Value": f"acs-20260101t000000-{instance_id[-8:]}"},
                {"Key": "appconsistent:consistency", "Value": "crash"}]
        return [s["SnapshotId"] for s in ec2.create_snapshots(
            InstanceSpecification={"InstanceId": instance_id, "ExcludeBootVolume": True},
            TagSpecifications=[{"ResourceType": "snapshot", "Tags": tags}])["Snapshots"]]

    foreign = crash_set(victim)  # another instance's snapshot
    older = crash_set(db)  # the instance's own volume, but an older set
    twins.faults.update({"instances": {"db": {"print_snapshots": foreign + older}}})
    run = run_tasks([{ACG: {"provider": "aws", "consistency": "filesystem", "initiator": "instance",
                            "instance_ids": [db], "mounts": ["/data"], "exclude_boot_disk": True,
                            "on_fallback": "warn"}, "register": "group"}], twins.endpoints)
    entry = run["group"]["results"][0]
    by_id = {s["SnapshotId"]: s for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    # Neither the other instance's snapshot nor the older set was raised or re-tagged with the controller's rights.
    for snapshot_id in foreign + older:
        assert _tags(by_id[snapshot_id]) == {"appconsistent:set-id": _tags(by_id[snapshot_id])["appconsistent:set-id"],
                                             "appconsistent:consistency": "crash"}, snapshot_id
    assert sorted(entry.get("refused_snapshots") or []) == sorted(foreign + older)
    assert entry["error"]["code"] == "ForeignSnapshots" and foreign[0] in entry["error"]["message"]
    (member,) = entry["snapshots"]
    assert member["snapshot_id"] not in foreign + older and member["device"] == "/dev/xvdf"
    assert entry["consistency"] == "filesystem" and entry["set_id"] == member["tags"]["appconsistent:set-id"]
    assert _tags(by_id[member["snapshot_id"]])["appconsistent:consistency"] == "filesystem"
    assert _tags(by_id[member["snapshot_id"]])["appconsistent:instance-id"] == db


def test_a_freeze_given_up_on_is_cancelled_and_never_freezes_after_the_task(twin_factory, run_tasks):
    # The freeze reaches the instance 12 s after it was sent; the task gives up on it after 4 s.
    fleet = {"instances": [{"provider": "aws", "name": "db", "platform": "linux", "volumes": VOLUMES,
                            "faults": {"hold_commands": {"freeze --run-id": 12}}}]}
    twins = twin_factory(fleet, alicloud=False)
    db = twins.endpoints["aws"]["instances"]["db"]
    started = time.time()
    run = run_tasks([{ACG: {"provider": "aws", "consistency": "filesystem", "instance_ids": [db], "mounts": ["/data"],
                            "wait_timeout": 4, "freeze_timeout": 60}, "register": "group"}], twins.endpoints)
    entry = run["group"]["results"][0]
    time.sleep(max(0.0, started + 15 - time.time()))
    # Had it not been cancelled, the late freeze would hold /data frozen for freeze_timeout after the task ended.
    assert twins.aws.ssm.helper.frozen(db) == {}
    assert entry["error"]["code"] == "WaitTimeout" and "cancelled" in entry["error"]["message"], entry["error"]
    assert entry["snapshots"] == []
    ssm = twins.aws_client("ssm")
    freeze_id = entry["command_ids"][0]
    (invocation,) = ssm.list_command_invocations(CommandId=freeze_id)["CommandInvocations"]
    assert invocation["Status"] == "Cancelled"


def test_an_instance_initiated_run_given_up_on_is_cancelled_and_never_freezes_or_snapshots_after_the_task(
        twin_factory, run_tasks):
    # The run (freeze, the instance's own CreateSnapshots, thaw) reaches the instance 12 s after it was sent; the
    # task gives up on it after 4 s.
    fleet = {"instances": [{"provider": "aws", "name": "db", "platform": "linux", "volumes": VOLUMES,
                            "faults": {"hold_commands": {"run --run-id": 12}}}]}
    twins = twin_factory(fleet, alicloud=False)
    db = twins.endpoints["aws"]["instances"]["db"]
    run = run_tasks([{ACG: {"provider": "aws", "consistency": "filesystem", "initiator": "instance",
                            "instance_ids": [db], "mounts": ["/data"], "exclude_boot_disk": True,
                            "wait_timeout": 4, "freeze_timeout": 60, "on_fallback": "warn"}, "register": "group"}],
                    twins.endpoints)
    entry = run["group"]["results"][0]
    ssm = twins.aws_client("ssm")
    (invocation,) = ssm.list_command_invocations(CommandId=entry["command_ids"][0])["CommandInvocations"]
    # Past the instant the held run would have reached the instance and finished there.
    time.sleep(max(0.0, invocation["RequestedDateTime"].timestamp() + 15 - time.time()))
    # Had it not been cancelled, the late run would freeze /data and snapshot db after the task had ended.
    assert twins.aws.ssm.helper.runs.get(db, {}) == {}
    ec2 = twins.aws_client("ec2")
    assert ec2.describe_snapshots(OwnerIds=["self"], Filters=[
        {"Name": "volume-id", "Values": [data_volume(twins, db)]}])["Snapshots"] == []
    assert entry["error"]["code"] == "WaitTimeout" and "cancelled" in entry["error"]["message"], entry["error"]
    assert entry["snapshots"] == [] and entry["consistency"] == "none"
    (invocation,) = ssm.list_command_invocations(CommandId=entry["command_ids"][0])["CommandInvocations"]
    assert invocation["Status"] == "Cancelled"


def test_a_retried_create_snapshots_leaves_one_member_per_volume(twin_factory, run_tasks):
    # The first CreateSnapshots takes effect but its answer is lost (HTTP 500): the SDK sends it again, with the
    # same tags, and there is no ClientToken to tell EC2 it is the same request.
    fleet = {"instances": [{"provider": "aws", "name": "db", "platform": "linux", "volumes": VOLUMES}]}
    twins = twin_factory(fleet, alicloud=False, faults={"api_errors": [
        {"provider": "aws", "action": "CreateSnapshots", "code": "InternalError", "after": True, "count": 1}]})
    db = twins.endpoints["aws"]["instances"]["db"]
    twins.stats.reset()
    run = run_tasks([{ACG: {"provider": "aws", "consistency": "filesystem", "instance_ids": [db], "mounts": ["/data"],
                            "exclude_boot_disk": True}, "register": "group"}], twins.endpoints)
    entry = run["group"]["results"][0]
    assert twins.stats.counts("aws")["CreateSnapshots"] == 2  # the lost answer was retried
    ec2 = twins.aws_client("ec2")
    members = ec2.describe_snapshots(OwnerIds=["self"], Filters=[
        {"Name": "tag:appconsistent:set-id", "Values": [entry["set_id"]]}])["Snapshots"]
    assert [s["VolumeId"] for s in members] == [data_volume(twins, db)], members
    assert [s["SnapshotId"] for s in members] == [m["snapshot_id"] for m in entry["snapshots"]]
    assert entry["consistency"] == "filesystem" and not run["group"].get("failed"), entry
    assert len(entry["duplicates_deleted"]) == 1
