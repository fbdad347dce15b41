"""app_consistent_group on AWS Linux: every member is labelled with what it achieved, the set with its scope's level.

The freeze helper names the disks beneath each frozen filesystem (NVMe serials on Nitro, xvd names on Xen); the
controller maps them to the instance's volumes. A volume outside the frozen filesystems (the root volume of the
README's example) is labelled crash, the set application (issue 18 line 12).
"""

import pytest

ACG = "appconsistent.snapshots.app_consistent_group"
INFO = "appconsistent.snapshots.snapshot_set_info"
ROOT = {"device": "/dev/xvda", "size": 8, "boot": True}


def instance(name, volumes, hypervisor="nitro", faults=None):
    return {"provider": "aws", "name": name, "platform": "linux", "hypervisor": hypervisor, "volumes": volumes,
            "faults": faults or {}}


def volumes_of(twins, iid):
    ec2 = twins.aws_client("ec2")
    found = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    return {m["DeviceName"]: m["Ebs"]["VolumeId"] for m in found["BlockDeviceMappings"]}


def labels(twins, set_id):
    """{volume id: (its consistency tag, its set-consistency tag)} as the cloud holds them."""
    ec2 = twins.aws_client("ec2")
    snaps = ec2.describe_snapshots(OwnerIds=["self"], Filters=[{"Name": "tag:appconsistent:set-id",
                                                                "Values": [set_id]}])["Snapshots"]
    tags = {s["VolumeId"]: {t["Key"]: t["Value"] for t in s.get("Tags", [])} for s in snaps}
    return {v: (t.get("appconsistent:consistency"), t.get("appconsistent:set-consistency")) for v, t in tags.items()}


@pytest.mark.parametrize("hypervisor, data_device", [("nitro", "/dev/xvdf"), ("xen", "/dev/sdf"), ("xen", "/dev/xvdf")])
@pytest.mark.parametrize("initiator", ["controller", "instance"])
def test_the_readme_example_labels_the_root_volume_crash_in_an_application_set(twin_factory, run_tasks, hypervisor,
                                                                               data_device, initiator):
    fleet = {"instances": [instance("db", [ROOT, {"device": data_device, "size": 20, "mount": "/data"}], hypervisor)]}
    twins = twin_factory(fleet, alicloud=False)
    iid = twins.endpoints["aws"]["instances"]["db"]
    volumes = volumes_of(twins, iid)
    root, data = volumes["/dev/xvda"], volumes[data_device]
    run = run_tasks([{ACG: {"provider": "aws", "instance_ids": [iid], "mounts": ["/data"], "initiator": initiator},
                      "register": "group"},
                     {INFO: {"provider": "aws", "instance_ids": [iid], "min_consistency": "application"},
                      "register": "info"}], twins.endpoints)
    group = run["group"]
    assert not group.get("failed"), group.get("msg")
    entry = group["results"][0]
    assert entry["consistency"] == "application"
    assert labels(twins, entry["set_id"]) == {root: ("crash", "application"), data: ("application", "application")}
    assert {m["volume_id"]: m["quiesced"] for m in entry["snapshots"]} == {root: False, data: True}
    (found,) = run["info"]["sets"]
    assert (found["set_id"], found["consistency"]) == (entry["set_id"], "application")
    assert {m["volume_id"]: m["consistency"] for m in found["members"]} == {root: "crash", data: "application"}


def test_lvm_over_two_volumes_labels_both_and_nothing_else(twin_factory, run_tasks):
    volumes = [ROOT, {"device": "/dev/xvdf", "size": 10, "mount": "/data"},
               {"device": "/dev/xvdg", "size": 10, "mount": "/data"}, {"device": "/dev/xvdh", "size": 10, "mount": "/logs"}]
    twins = twin_factory({"instances": [instance("db", volumes)]}, alicloud=False)
    iid = twins.endpoints["aws"]["instances"]["db"]
    vols = volumes_of(twins, iid)
    run = run_tasks([{ACG: {"provider": "aws", "instance_ids": [iid], "mounts": ["/data"]}, "register": "group"}],
                    twins.endpoints)
    entry = run["group"]["results"][0]
    assert not run["group"].get("failed"), run["group"].get("msg")
    assert entry["consistency"] == "application"
    assert labels(twins, entry["set_id"]) == {
        vols["/dev/xvda"]: ("crash", "application"), vols["/dev/xvdf"]: ("application", "application"),
        vols["/dev/xvdg"]: ("application", "application"), vols["/dev/xvdh"]: ("crash", "application")}


def test_a_disk_that_maps_to_no_volume_leaves_every_member_crash_and_says_why(twin_factory, run_tasks):
    volumes = [ROOT, {"device": "/dev/xvdf", "size": 10, "mount": "/data"}]
    twins = twin_factory({"instances": [instance("db", volumes, faults={"unmapped_disk": True})]}, alicloud=False)
    iid = twins.endpoints["aws"]["instances"]["db"]
    run = run_tasks([{ACG: {"provider": "aws", "instance_ids": [iid], "mounts": ["/data"], "on_fallback": "warn"},
                      "register": "group"}], twins.endpoints)
    entry = run["group"]["results"][0]
    assert entry["consistency"] == "crash"
    assert entry["error"]["code"] == "QuiescedVolumesUnknown"
    assert "nvme9n1" in entry["error"]["message"] and "AWS1B2C3D4E5F6A7B8C9" in entry["error"]["message"]
    assert set(labels(twins, entry["set_id"]).values()) == {("crash", "crash")}
    assert not any(m["quiesced"] for m in entry["snapshots"])
