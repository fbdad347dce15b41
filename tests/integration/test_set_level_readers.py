"""info, restore and prune read a set's level: appconsistent:set-consistency on new sets, the weakest member on old.

A set that froze /data is application-consistent although its root volume is labelled crash; a set made before
the set tag existed, with a crash member, is crash-consistent as it always was (issue 18 line 12).
"""

import time

from ansible_collections.appconsistent.snapshots.plugins.module_utils import snapshot_set as ss

INFO = "appconsistent.snapshots.snapshot_set_info"
RESTORE = "appconsistent.snapshots.restore_volumes"
PRUNE = "appconsistent.snapshots.snapshot_set_prune"
PAST = "2020-01-01T00:00:00Z"
TICK = 1.1  # creation times are to the second: sets ranked by age are taken a second apart
FLEET = {"instances": [{"provider": "aws", "name": "db", "platform": "linux",
                        "volumes": [{"device": "/dev/xvda", "size": 8, "boot": True},
                                    {"device": "/dev/xvdf", "size": 10, "mount": "/data"}]}]}


def labelled_set(twins, root_level, data_level, set_level=None):
    """A set of the instance's two volumes, each member with its own level and (a new set) the set's level."""
    ec2 = twins.aws_client("ec2")
    instance_id = twins.endpoints["aws"]["instances"]["db"]
    described = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    devices = {m["Ebs"]["VolumeId"]: m["DeviceName"] for m in described["BlockDeviceMappings"]}
    set_id = ss.new_set_id()
    tags = {ss.TAG_SET_ID: set_id, ss.TAG_INSTANCE_ID: instance_id, ss.TAG_MEMBERS: "2", ss.TAG_DELETE_AFTER: PAST}
    created = ec2.create_snapshots(InstanceSpecification={"InstanceId": instance_id}, TagSpecifications=[
        {"ResourceType": "snapshot", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}])["Snapshots"]
    by_device = {}
    for snapshot in created:
        device = devices[snapshot["VolumeId"]]
        own = {ss.TAG_DEVICE: device, ss.TAG_CONSISTENCY: root_level if device == "/dev/xvda" else data_level}
        if set_level:
            own[ss.TAG_SET_CONSISTENCY] = set_level
        ec2.create_tags(Resources=[snapshot["SnapshotId"]], Tags=[{"Key": k, "Value": v} for k, v in own.items()])
        by_device[device] = snapshot["SnapshotId"]
    return set_id, by_device


def test_info_restore_and_prune_read_the_set_level_of_new_sets_and_the_weakest_member_of_old_ones(twin_factory,
                                                                                                  run_tasks):
    twins = twin_factory(FLEET, alicloud=False)
    iid = twins.endpoints["aws"]["instances"]["db"]
    old_whole, _snaps = labelled_set(twins, "application", "application")
    time.sleep(TICK)
    new, new_snaps = labelled_set(twins, "crash", "application", set_level="application")
    time.sleep(TICK)
    old_mixed, _snaps = labelled_set(twins, "crash", "application")

    run = run_tasks([
        {INFO: {"provider": "aws", "instance_ids": [iid]}, "register": "all"},
        {INFO: {"provider": "aws", "instance_ids": [iid], "min_consistency": "application"}, "register": "app"},
        {RESTORE: {"instance_id": iid, "latest": True, "mode": "volumes"}, "register": "restore"},
        {PRUNE: {"provider": "aws"}, "register": "prune"},
    ], twins.endpoints)

    levels = {s["set_id"]: s["consistency"] for s in run["all"]["sets"]}
    assert levels == {old_whole: "application", new: "application", old_mixed: "crash"}
    members = {m["snapshot_id"]: m["consistency"] for s in run["all"]["sets"] if s["set_id"] == new for m in s["members"]}
    assert members == {new_snaps["/dev/xvda"]: "crash", new_snaps["/dev/xvdf"]: "application"}
    assert sorted(s["set_id"] for s in run["app"]["sets"]) == sorted([old_whole, new])

    restore = run["restore"]
    assert not restore.get("failed"), restore.get("msg")
    assert (restore["set"]["set_id"], restore["set"]["consistency"]) == (new, "application")
    assert restore["set"]["below_set_level"] == [new_snaps["/dev/xvda"]]

    prune = run["prune"]
    assert not prune.get("failed"), prune.get("msg")
    assert {e["set_id"]: e["reason_code"] for e in prune["kept"]} == {new: "newest_application"}
    assert sorted(e["set_id"] for e in prune["deleted"]) == sorted([old_whole, old_mixed])
