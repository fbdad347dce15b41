"""restore_volumes: set checks, the plan, concurrent steps and rollback (fake cloud), and the provider requests."""

import datetime
import types

import pytest

from ansible_collections.appconsistent.snapshots.plugins.module_utils import restore
from ansible_collections.appconsistent.snapshots.plugins.module_utils import restore_alicloud
from ansible_collections.appconsistent.snapshots.plugins.module_utils import restore_aws
from ansible_collections.appconsistent.snapshots.plugins.module_utils.alicloud import AlibabaCloud
from ansible_collections.appconsistent.snapshots.plugins.module_utils.restore_run import RestoreRun
from ansible_collections.appconsistent.snapshots.plugins.module_utils.restore_run import infer_provider
from ansible_collections.appconsistent.snapshots.plugins.module_utils.restore_run import validate
from ansible_collections.appconsistent.snapshots.plugins.modules.restore_volumes import argument_spec


def params(**overrides):
    values = {name: spec.get("default") for name, spec in argument_spec().items()}
    values.update(overrides)
    return values


def member(snapshot_id, device, consistency="application", state="completed", size=10, created="2026-11-23T06:00:00"):
    return restore.Member(snapshot_id, device=device, size=size, state=state, source_volume_id="vol-src-" + device[-1],
                          tags={"appconsistent:consistency": consistency}, created=created)


# --- which set ------------------------------------------------------------------------------------


def test_a_weaker_set_is_refused_unless_allowed():
    selected = restore.SelectedSet("acs-1", [member("snap-1", "/dev/xvdf", "crash")])
    with pytest.raises(restore.RestoreRefused, match="crash, less than the required application.*allow_lower_consistency"):
        restore.check_set(selected, params())
    warnings = restore.check_set(selected, params(allow_lower_consistency=True))
    assert "allow_lower_consistency" in warnings[0]
    assert restore.check_set(selected, params(min_consistency="crash")) == []


def test_a_set_is_as_consistent_as_its_weakest_member():
    selected = restore.SelectedSet("acs-1", [member("snap-1", "/dev/xvdf", "application"),
                                             member("snap-2", "/dev/xvdg", "filesystem")])
    assert selected.consistency == "filesystem"
    with pytest.raises(restore.RestoreRefused):
        restore.check_set(selected, params())


def test_an_incomplete_set_is_refused_or_restored_without_the_unfinished_members():
    selected = restore.SelectedSet("acs-1", [member("snap-1", "/dev/xvdf"), member("snap-2", "/dev/xvdg", state="error")])
    with pytest.raises(restore.RestoreRefused, match=r"incomplete: snap-2 \(error\).*allow_incomplete"):
        restore.check_set(selected, params())
    warnings = restore.check_set(selected, params(allow_incomplete=True))
    assert [m.snapshot_id for m in selected.members] == ["snap-1"] and "snap-2" in warnings[0]


def test_an_alibaba_group_that_has_not_accomplished_is_incomplete():
    selected = restore.SelectedSet("ssg-1", [member("s-1", "/dev/xvdb", state="accomplished")], group_status="failed")
    assert not selected.complete


def test_latest_picks_the_newest_qualifying_set_and_explains_when_there_is_none():
    old = restore.SelectedSet("acs-old", [member("snap-1", "/dev/xvdf", created="2026-11-20T00:00:00")])
    new_crash = restore.SelectedSet("acs-new", [member("snap-2", "/dev/xvdf", "crash", created="2026-11-22T00:00:00")])
    newer = restore.SelectedSet("acs-newer", [member("snap-3", "/dev/xvdf", created="2026-11-21T00:00:00")])
    assert restore.newest_qualifying([old, new_crash, newer], "application")[0].set_id == "acs-newer"
    assert restore.newest_qualifying([old, new_crash, newer], "crash")[0].set_id == "acs-new"
    chosen, why = restore.newest_qualifying([new_crash], "application")
    assert chosen is None and "acs-new (crash, complete)" in why


@pytest.mark.parametrize("given, provider", [
    (dict(set_id="acs-20261123t060000-1a2b3c4d"), "aws"),
    (dict(set_id="ssg-bp1abc"), "alicloud"),
    (dict(snapshot_group_id="ssg-bp1abc"), "alicloud"),
    (dict(snapshot_ids=["snap-0123", "snap-4567"]), "aws"),
    (dict(snapshot_ids=["s-bp1abc"]), "alicloud"),
    (dict(instance_id="i-0123456789abcdef0", latest=True), "aws"),
    (dict(instance_id="i-12345678", latest=True), "aws"),
    (dict(instance_id="i-bp1hk2ytbk8ed2tnj7c0", latest=True), "alicloud"),
    (dict(set_id="nightly-7", provider="alicloud"), "alicloud"),
])
def test_the_provider_is_told_from_the_ids(given, provider):
    assert infer_provider(params(**given)) == provider


def test_an_ambiguous_selection_asks_for_the_provider():
    with pytest.raises(restore.RestoreRefused, match="set provider"):
        infer_provider(params(set_id="nightly-7"))


ACS = "acs-20261123t060000-1a2b3c4d"


@pytest.mark.parametrize("given, provider", [
    # AWS sets and Alibaba Cloud copies (snapshot_set_copy) both have acs- ids: the connection options tell them apart
    (dict(set_id=ACS), "aws"),
    (dict(set_id=ACS, region="eu-west-1"), "aws"),
    (dict(set_id=ACS, alicloud_region="cn-shanghai"), "alicloud"),
    (dict(set_id=ACS, alicloud_region="cn-shanghai", mode="volumes", zone="cn-shanghai-b"), "alicloud"),
    # both clouds configured: the target instance's form decides, else only a lookup can tell
    (dict(set_id=ACS, alicloud_region="cn-shanghai", region="eu-west-1"), None),
    (dict(set_id=ACS, alicloud_region="cn-shanghai", profile="dr"), None),
    (dict(set_id=ACS, alicloud_region="cn-shanghai", access_key="AKIA1"), None),
    (dict(set_id=ACS, alicloud_region="cn-shanghai", endpoint_url="http://127.0.0.1:5000"), None),
    (dict(set_id=ACS, alicloud_region="cn-shanghai", region="eu-west-1", target_instance_id="i-0123456789abcdef0"), "aws"),
    (dict(set_id=ACS, alicloud_region="cn-shanghai", region="eu-west-1", target_instance_id="i-uf6copy000000000001"),
     "alicloud"),
    # provider always wins
    (dict(set_id=ACS, alicloud_region="cn-shanghai", provider="aws"), "aws"),
    (dict(set_id=ACS, region="eu-west-1", provider="alicloud"), "alicloud"),
    # the other ids do not depend on the connection options
    (dict(set_id="ssg-bp1abc", region="eu-west-1"), "alicloud"),
    (dict(snapshot_ids=["snap-0123"], alicloud_region="cn-shanghai"), "aws"),
])
def test_an_acs_set_id_goes_by_the_configured_clouds(given, provider):
    assert infer_provider(params(**given)) == provider


class FinderApi:
    """A provider adapter that only finds sets: ``found`` is the set it returns, or the exception it raises."""

    def __init__(self, found):
        self.found = found
        self.asked = []

    def set_by_id(self, set_id):
        self.asked.append(set_id)
        if isinstance(self.found, Exception):
            raise self.found
        return self.found


def _run(apis, **given):
    module = types.SimpleNamespace(params=params(**given), check_mode=True)
    run = RestoreRun(module)
    run.api = lambda: apis[run.provider]
    return run


def _of_set(item, set_id=None):
    item.tags["appconsistent:set-id"] = set_id or ACS
    return item


def test_with_both_clouds_configured_an_acs_set_is_looked_up_on_aws_then_on_alibaba_cloud():
    copy = restore.SelectedSet(ACS, [_of_set(member("s-c1", "/dev/xvdb"))], "i-bp1")
    apis = {"aws": FinderApi(restore.RestoreRefused(f"no snapshot carries appconsistent:set-id={ACS} in this region")),
            "alicloud": FinderApi(copy)}
    run = _run(apis, set_id=ACS, region="us-east-1", alicloud_region="cn-shanghai")
    api, selected = run.find_either(ACS)
    assert (run.provider, api, selected) == ("alicloud", apis["alicloud"], copy)
    assert apis["aws"].asked == apis["alicloud"].asked == [ACS]
    # found on AWS: Alibaba Cloud is not asked
    aws_set = restore.SelectedSet(ACS, [_of_set(member("snap-1", "/dev/xvdf"))], "i-0123456789abcdef0")
    apis = {"aws": FinderApi(aws_set), "alicloud": FinderApi(copy)}
    run = _run(apis, set_id=ACS, region="us-east-1", alicloud_region="cn-shanghai")
    assert run.find_either(ACS) == (apis["aws"], aws_set) and run.provider == "aws"
    assert apis["alicloud"].asked == []


def test_a_snapshot_of_another_set_returned_by_the_tag_filter_is_not_restored():
    other = "acs-20261123t060000-ffffffff"
    found = restore.SelectedSet(ACS, [_of_set(member("snap-1", "/dev/xvdf")),
                                      _of_set(member("snap-9", "/dev/xvdg"), other)], "i-0123456789abcdef0")
    run = _run({"aws": FinderApi(found)}, set_id=ACS, provider="aws")
    run.provider = "aws"
    assert [m.snapshot_id for m in run.select(FinderApi(found)).members] == ["snap-1"]
    only_other = restore.SelectedSet(ACS, [_of_set(member("snap-9", "/dev/xvdg"), other)])
    with pytest.raises(restore.RestoreRefused, match="no snapshot carries"):
        run.select(FinderApi(only_other))


def test_an_acs_set_on_neither_cloud_is_refused_asking_for_the_provider():
    apis = {"aws": FinderApi(restore.StepFailed("AuthFailure: no credentials")),
            "alicloud": FinderApi(restore.RestoreRefused("no snapshot carries it in cn-shanghai"))}
    run = _run(apis, set_id=ACS, region="us-east-1", alicloud_region="cn-shanghai", mode="volumes")
    with pytest.raises(restore.RestoreRefused) as refused:
        run.run()
    text = str(refused.value)
    assert "found neither on AWS nor on Alibaba Cloud" in text and "set provider to aws or alicloud" in text
    assert "AWS: AuthFailure: no credentials" in text and "Alibaba Cloud: no snapshot carries it in cn-shanghai" in text
    assert run.provider is None


@pytest.mark.parametrize("given, words", [
    (dict(), "to restore an Alibaba Cloud copy, set provider to alicloud and alicloud_region"),
    (dict(alicloud_region="cn-shanghai"), "to restore an AWS set, set provider to aws"),
])
def test_a_set_not_found_on_the_cloud_told_from_the_options_says_how_to_choose(given, words):
    missing = FinderApi(restore.RestoreRefused(f"no snapshot carries appconsistent:set-id={ACS}"))
    run = _run({"aws": missing, "alicloud": missing}, set_id=ACS, mode="volumes", **given)
    with pytest.raises(restore.RestoreRefused, match=words):
        run.run()
    # a provider given is not second-guessed
    run = _run({"aws": missing, "alicloud": missing}, set_id=ACS, mode="volumes", provider="aws", **given)
    with pytest.raises(restore.RestoreRefused) as refused:
        run.run()
    assert "snapshot_set_copy" not in str(refused.value)


@pytest.mark.parametrize("given, words", [
    (dict(instance_id="i-0123456789abcdef0"), "latest: true"),
    (dict(set_id="acs-1", latest=True), "latest needs instance_id"),
    (dict(set_id="acs-1", tags={"appconsistent:set-id": "x"}), "reserved"),
    (dict(set_id="acs-1", volume_timeout=0), "volume_timeout"),
    (dict(set_id="acs-1", safety_snapshot_delete_after="soon"), "safety_snapshot_delete_after"),
])
def test_parameters_refused_before_anything_is_asked(given, words):
    with pytest.raises(restore.RestoreRefused, match=words):
        validate(params(**given))


# --- the engine, against a small in-memory cloud -----------------------------------------------------


class FakeCloud:
    """Volumes and one instance, with calls recorded; ``fail`` maps an action to the call numbers that fail."""

    def __init__(self, state="running", devices=None):
        self.calls = []
        self.fail = {}
        self.counts = {}
        self.vols = {}
        self.inst = dict(id="i-1", state=state, zone="az-1", root_device="/dev/xvda", platform="linux")
        for device, vid in (devices or {"/dev/xvda": "vol-root", "/dev/xvdf": "vol-f", "/dev/xvdg": "vol-g"}).items():
            self.vols[vid] = dict(id=vid, state="in-use", instance_id="i-1", device=device, attach_state="attached",
                                  size=10, type="gp3", iops=3000, throughput=125, tags={}, snapshot_id=None)
        self.sequence = 0

    def _call(self, action, *args):
        self.calls.append((action,) + args)
        self.counts[action] = self.counts.get(action, 0) + 1
        if self.counts[action] in self.fail.get(action, ()):
            raise restore.StepFailed(f"Failed to {action}: InjectedFault")

    def instance(self, instance_id):
        self.calls.append(("DescribeInstance",))
        devices = {v["device"]: v["id"] for v in self.vols.values() if v["instance_id"] == "i-1"}
        return dict(self.inst, devices=devices)

    def volumes(self, ids):
        self.calls.append(("DescribeVolumes", tuple(ids)))
        return {vid: dict(self.vols[vid]) for vid in ids}

    def restored_volumes(self, snapshot_ids):
        return {}

    def source_volume(self, m):
        return None

    def volume_spec(self, m, source, p, zone):
        return dict(snapshot_id=m.snapshot_id, zone=zone, size=max(m.size, (source or {}).get("size") or 0),
                    type=(source or {}).get("type"))

    def free_devices(self, instance, count):
        return ["/dev/sdf", "/dev/sdg", "/dev/sdh"][:count]

    def create_volume(self, spec, tags):
        self._call("CreateVolume", spec["snapshot_id"])
        self.sequence += 1
        vid = f"vol-new{self.sequence}"
        self.vols[vid] = dict(id=vid, state="available", instance_id=None, device=None, attach_state=None,
                              snapshot_id=spec["snapshot_id"], tags=dict(tags), size=spec["size"])
        return vid

    def attach(self, vid, instance_id, device):
        self._call("AttachVolume", vid, device)
        self.vols[vid].update(state="in-use", instance_id=instance_id, device=device, attach_state="attached")

    def detach(self, vid, instance_id, device):
        self._call("DetachVolume", vid)
        self.vols[vid].update(state="available", instance_id=None, device=None, attach_state=None)

    def stop(self, instance_id):
        self._call("StopInstances")
        self.inst["state"] = "stopped"

    def start(self, instance_id):
        self._call("StartInstances")
        self.inst["state"] = "running"

    def tag_volumes(self, ids, tags):
        self._call("CreateTags", tuple(ids))
        for vid in ids:
            self.vols[vid]["tags"].update(tags)

    def devices(self):
        return {v["device"]: v["id"] for v in self.vols.values() if v["instance_id"] == "i-1"}

    def actions(self):
        return [c[0] for c in self.calls if not c[0].startswith("Describe")]


def a_set():
    return restore.SelectedSet("acs-1", [member("snap-f", "/dev/xvdf"), member("snap-g", "/dev/xvdg")], "i-1")


def restore_with(cloud, check_mode=False, **overrides):
    engine = restore.VolumeRestore(cloud, params(**overrides), check_mode=check_mode, sleep=lambda s: None)
    engine.plan(a_set(), "i-1")
    return engine


def test_replace_creates_all_then_stops_swaps_and_starts():
    cloud = FakeCloud()
    result = restore_with(cloud).run(a_set())
    assert cloud.actions() == ["CreateVolume", "CreateVolume", "StopInstances", "DetachVolume", "DetachVolume",
                               "AttachVolume", "AttachVolume", "StartInstances", "CreateTags", "CreateTags"]
    assert cloud.devices() == {"/dev/xvda": "vol-root", "/dev/xvdf": "vol-new1", "/dev/xvdg": "vol-new2"}
    assert cloud.vols["vol-f"]["tags"]["appconsistent:replaced-by"] == "vol-new1"
    assert cloud.vols["vol-new1"]["tags"]["appconsistent:restored-from"] == "snap-f"
    assert cloud.vols["vol-new1"]["tags"]["appconsistent:restored-from-set"] == "acs-1"
    assert result["changed"] is True and result["instance_state"] == "running"
    assert [(e["device"], e["original_volume_id"], e["volume_id"]) for e in result["device_map"]] == [
        ("/dev/xvdf", "vol-f", "vol-new1"), ("/dev/xvdg", "vol-g", "vol-new2")]


def test_creation_is_waited_for_with_one_listing_for_all_volumes():
    cloud = FakeCloud()
    restore_with(cloud).run(a_set())
    listings = [c for c in cloud.calls if c[0] == "DescribeVolumes" and "vol-new1" in c[1]]
    assert listings[0][1] == ("vol-new1", "vol-new2")


def test_a_stopped_instance_is_not_started():
    cloud = FakeCloud(state="stopped")
    restore_with(cloud).run(a_set())
    assert "StopInstances" not in cloud.actions() and "StartInstances" not in cloud.actions()
    assert cloud.inst["state"] == "stopped"


def test_already_restored_volumes_are_unchanged_and_force_restores_again():
    cloud = FakeCloud()
    restore_with(cloud).run(a_set())
    cloud.calls.clear()
    result = restore_with(cloud).run(a_set())
    assert result["changed"] is False and cloud.actions() == []
    assert all(e["unchanged"] for e in result["device_map"])
    result = restore_with(cloud, force=True).run(a_set())
    assert result["changed"] is True and cloud.devices()["/dev/xvdf"] == "vol-new3"


def test_check_mode_plans_and_changes_nothing():
    cloud = FakeCloud()
    engine = restore_with(cloud, check_mode=True)
    result = engine.run(a_set())
    assert result["changed"] is True and cloud.actions() == []
    assert engine.diff() == {"before": {"/dev/xvda": "vol-root", "/dev/xvdf": "vol-f", "/dev/xvdg": "vol-g"},
                             "after": {"/dev/xvda": "vol-root", "/dev/xvdf": "(new volume from snap-f)",
                                       "/dev/xvdg": "(new volume from snap-g)"}}


def test_attach_failure_rolls_back_to_the_originals_and_starts_the_instance():
    cloud = FakeCloud()
    cloud.fail = {"AttachVolume": {2}}
    with pytest.raises(restore.RestoreFailed) as caught:
        restore_with(cloud).run(a_set())
    assert cloud.devices() == {"/dev/xvda": "vol-root", "/dev/xvdf": "vol-f", "/dev/xvdg": "vol-g"}
    assert cloud.inst["state"] == "running"
    assert cloud.vols["vol-new1"]["state"] == "available" and "appconsistent:restore-failed" in cloud.vols["vol-new1"]["tags"]
    assert "appconsistent:replaced-by" not in cloud.vols["vol-f"]["tags"]
    message = str(caught.value)
    assert "rolled back" in message and "InjectedFault" in message and "vol-new1, vol-new2 are kept" in message
    outcomes = {e["device"]: e["outcome"] for e in caught.value.details["device_map"]}
    assert outcomes == {"/dev/xvdf": "rolled back: original vol-f attached again",
                        "/dev/xvdg": "rolled back: original vol-g attached again"}
    assert caught.value.details["rollback_problems"] == []


def test_a_rollback_that_cannot_reattach_says_so_per_device():
    cloud = FakeCloud()
    cloud.fail = {"AttachVolume": {2, 4}}  # the second new volume, then the second original
    with pytest.raises(restore.RestoreFailed) as caught:
        restore_with(cloud).run(a_set())
    assert "ROLLBACK PROBLEMS" in str(caught.value) and "vol-g" in str(caught.value)
    outcomes = {e["device"]: e["outcome"] for e in caught.value.details["device_map"]}
    assert outcomes["/dev/xvdg"].startswith("ROLLBACK INCOMPLETE: original vol-g is detached")
    assert cloud.devices()["/dev/xvdf"] == "vol-f"


def test_a_stop_failure_changes_no_device():
    cloud = FakeCloud()
    cloud.fail = {"StopInstances": {1}}
    with pytest.raises(restore.RestoreFailed, match="did not stop.*no volume was detached"):
        restore_with(cloud).run(a_set())
    assert "DetachVolume" not in cloud.actions()
    assert cloud.devices()["/dev/xvdf"] == "vol-f"


def test_a_creation_failure_stops_nothing():
    cloud = FakeCloud()
    cloud.fail = {"CreateVolume": {2}}
    with pytest.raises(restore.RestoreFailed, match="creating the volumes failed"):
        restore_with(cloud).run(a_set())
    assert "StopInstances" not in cloud.actions()
    assert "appconsistent:restore-failed" in cloud.vols["vol-new1"]["tags"]


def test_a_volume_that_stays_creating_times_out():
    cloud = FakeCloud()
    clock = iter(range(0, 10000, 7))
    original = cloud.create_volume

    def slow(spec, tags):
        vid = original(spec, tags)
        cloud.vols[vid]["state"] = "creating"
        return vid
    cloud.create_volume = slow
    engine = restore.VolumeRestore(cloud, params(volume_timeout=30), sleep=lambda s: None, clock=lambda: next(clock))
    engine.plan(a_set(), "i-1")
    with pytest.raises(restore.RestoreFailed, match="volume creation did not finish within 30 s: vol-new1, vol-new2"):
        engine.run(a_set())


def test_attach_mode_uses_free_devices_and_leaves_the_instance_running():
    cloud = FakeCloud()
    result = restore_with(cloud, mode="attach").run(a_set())
    assert [e["device"] for e in result["device_map"]] == ["/dev/sdf", "/dev/sdg"]
    assert "StopInstances" not in cloud.actions() and "DetachVolume" not in cloud.actions()
    assert cloud.devices()["/dev/xvdf"] == "vol-f"


def test_an_attach_mode_failure_detaches_the_new_volumes_and_waits_for_them():
    cloud = FakeCloud()
    cloud.fail = {"AttachVolume": {2}}
    with pytest.raises(restore.RestoreFailed, match="attaching the restored volumes failed.*keeps its volumes") as caught:
        restore_with(cloud, mode="attach").run(a_set())
    assert cloud.devices() == {"/dev/xvda": "vol-root", "/dev/xvdf": "vol-f", "/dev/xvdg": "vol-g"}
    assert [c for c in cloud.actions() if c in ("DetachVolume", "StopInstances")] == ["DetachVolume"]
    assert [c[1] for c in cloud.calls if c[0] == "DescribeVolumes"][-1] == ("vol-new1",)  # waited for the detach
    assert caught.value.details["device_map"][0]["outcome"] == "rolled back: detached again"
    assert caught.value.details["rollback_problems"] == []
    assert "appconsistent:restore-failed" in cloud.vols["vol-new1"]["tags"]


def test_an_attach_mode_detach_that_never_finishes_is_a_rollback_problem():
    cloud = FakeCloud()
    cloud.fail = {"AttachVolume": {2}}
    detach = cloud.detach

    def stuck(vid, instance_id, device):
        detach(vid, instance_id, device)
        cloud.vols[vid].update(state="in-use", instance_id=instance_id, device=device, attach_state="detaching")
    cloud.detach = stuck
    clock = iter(range(0, 10000, 7))
    engine = restore.VolumeRestore(cloud, params(mode="attach", volume_timeout=30), sleep=lambda s: None,
                                   clock=lambda: next(clock))
    engine.plan(a_set(), "i-1")
    with pytest.raises(restore.RestoreFailed, match="ROLLBACK PROBLEMS: new volumes still attached") as caught:
        engine.run(a_set())
    assert caught.value.details["device_map"][0]["outcome"] == "created"


def test_replace_needs_device_tags():
    cloud = FakeCloud()
    loose = restore.SelectedSet(None, [restore.Member("snap-x", state="completed", size=1)], "i-1")
    engine = restore.VolumeRestore(cloud, params(), sleep=lambda s: None)
    with pytest.raises(restore.RestoreRefused, match="no device tag"):
        engine.plan(loose, "i-1")


# --- AWS requests, checked against the EC2 service model ------------------------------------------------


@pytest.fixture(name="ec2")
def ec2_parts(ec2):
    """Here the stubbed EC2 client and its Stubber are ec2.client and ec2.stub."""
    client, stub = ec2
    return types.SimpleNamespace(client=client, stub=stub)


def test_aws_create_volume_request(ec2):
    ec2.stub.add_response("create_volume", {"VolumeId": "vol-1"}, {
        "SnapshotId": "snap-1", "AvailabilityZone": "us-east-1a", "VolumeType": "io2", "Size": 20, "Iops": 4000,
        "Encrypted": True, "KmsKeyId": "alias/backup",
        "TagSpecifications": [{"ResourceType": "volume", "Tags": [{"Key": "appconsistent:restored-from", "Value": "snap-1"}]}]})
    api = restore_aws.AwsRestoreApi(ec2.client)
    spec = dict(snapshot_id="snap-1", zone="us-east-1a", type="io2", size=20, iops=4000, encrypted=True,
                kms_key_id="alias/backup")
    assert api.create_volume(spec, {"appconsistent:restored-from": "snap-1"}) == "vol-1"


def test_aws_attach_detach_stop_start_requests(ec2):
    ec2.stub.add_response("detach_volume", {}, {"VolumeId": "vol-1", "InstanceId": "i-1", "Device": "/dev/xvdf"})
    ec2.stub.add_response("attach_volume", {}, {"VolumeId": "vol-2", "InstanceId": "i-1", "Device": "/dev/xvdf"})
    ec2.stub.add_response("stop_instances", {}, {"InstanceIds": ["i-1"]})
    ec2.stub.add_response("start_instances", {}, {"InstanceIds": ["i-1"]})
    api = restore_aws.AwsRestoreApi(ec2.client)
    api.detach("vol-1", "i-1", "/dev/xvdf")
    api.attach("vol-2", "i-1", "/dev/xvdf")
    api.stop("i-1")
    api.start("i-1")


def test_aws_volumes_are_listed_with_one_filtered_call_and_late_ones_are_pending(ec2):
    ec2.stub.add_response("describe_volumes", {"Volumes": [
        {"VolumeId": "vol-1", "State": "in-use", "Size": 8, "VolumeType": "gp3", "SnapshotId": "snap-1",
         "Attachments": [{"InstanceId": "i-1", "Device": "/dev/xvdf", "State": "attached"}],
         "Tags": [{"Key": "appconsistent:restored-from", "Value": "snap-1"}]}]},
        {"Filters": [{"Name": "volume-id", "Values": ["vol-1", "vol-2"]}]})
    found = restore_aws.AwsRestoreApi(ec2.client).volumes(["vol-1", "vol-2"])
    assert found["vol-1"]["device"] == "/dev/xvdf" and found["vol-1"]["attach_state"] == "attached"
    assert restore.origin_of(found["vol-1"]) == "snap-1"
    assert found["vol-2"]["state"] == "unknown"


def test_aws_errors_become_step_failures_with_the_code(ec2):
    ec2.stub.add_client_error("attach_volume", "IncorrectState", "Volume is not available",
                              expected_params={"VolumeId": "vol-2", "InstanceId": "i-1", "Device": "/dev/xvdf"})
    with pytest.raises(restore.StepFailed, match="attach volume vol-2 to i-1 at /dev/xvdf: IncorrectState"):
        restore_aws.AwsRestoreApi(ec2.client, attempts=1).attach("vol-2", "i-1", "/dev/xvdf")


def test_aws_set_members_carry_device_and_source():
    snap = {"SnapshotId": "snap-1", "VolumeId": "vol-1", "VolumeSize": 20, "State": "completed", "Encrypted": True,
            "KmsKeyId": "arn:key", "StartTime": datetime.datetime(2026, 11, 23, tzinfo=datetime.timezone.utc),
            "Tags": [{"Key": "Device", "Value": "xvdf"}]}
    got = restore_aws.member_of(snap)
    assert (got.device, got.source_volume_id, got.size, got.encrypted, got.kms_key_id) == ("xvdf", "vol-1", 20, True, "arn:key")


def test_aws_volume_spec_keeps_the_replaced_volume_and_refuses_to_shrink():
    api = restore_aws.AwsRestoreApi(None)
    snap = restore.Member("snap-1", device="/dev/xvdf", size=20, state="completed")
    source = dict(type="io2", size=50, iops=6000, throughput=None, encrypted=True, kms_key_id="arn:k")
    spec = api.volume_spec(snap, source, params(), "az-1")
    assert spec == dict(snapshot_id="snap-1", zone="az-1", type="io2", size=50, iops=6000, throughput=None,
                        encrypted=True, kms_key_id="arn:k")
    assert api.volume_spec(snap, source, params(volume_type="gp3"), "az-1")["iops"] is None
    with pytest.raises(restore.RestoreRefused, match="smaller than snapshot"):
        api.volume_spec(snap, source, params(volume_size=10), "az-1")


def test_aws_free_devices_skip_every_letter_in_use():
    api = restore_aws.AwsRestoreApi(None)
    instance = dict(id="i-1", platform="linux", devices={"/dev/xvda": "v1", "/dev/sdf": "v2", "xvdg": "v3"})
    assert api.free_devices(instance, 2) == ["/dev/sdh", "/dev/sdi"]
    assert api.free_devices(dict(instance, platform="windows"), 1) == ["xvdh"]


# --- Alibaba requests, built with the SDK's request models -------------------------------------------------


class RecordingApi:
    """An AlibabaCloud stand-in that records (action, request model) and answers from ``answers``."""

    region = "cn-hangzhou"

    def __init__(self, answers=None):
        from alibabacloud_ecs20140526 import models
        self.models = models
        self.sent = []
        self.answers = answers or {}

    def call(self, action, request):
        self.sent.append((action, request))
        return self.answers.get(action, {})

    # The real wrappers of AlibabaCloud, so that their requests are recorded too.
    detach_disk = AlibabaCloud.detach_disk
    describe_snapshots = AlibabaCloud.describe_snapshots
    describe_disks = AlibabaCloud.describe_disks
    create_disk = AlibabaCloud.create_disk
    attach_disk = AlibabaCloud.attach_disk
    stop_instance = AlibabaCloud.stop_instance
    start_instance = AlibabaCloud.start_instance
    reset_disk = AlibabaCloud.reset_disk


def test_alicloud_create_disk_request():
    api = RecordingApi({"CreateDisk": {"DiskId": "d-1"}})
    adapter = restore_alicloud.AlicloudRestoreApi(api)
    spec = dict(snapshot_id="s-1", zone="cn-hangzhou-h", type="cloud_essd", size=100, performance_level="PL1",
                encrypted=False, kms_key_id=None)
    assert adapter.create_volume(spec, {"appconsistent:restored-from": "s-1"}) == "d-1"
    action, request = api.sent[0]
    assert action == "CreateDisk"
    body = request.to_map()
    assert body["ZoneId"] == "cn-hangzhou-h" and body["SnapshotId"] == "s-1" and body["DiskCategory"] == "cloud_essd"
    assert body["Size"] == 100 and body["RegionId"] == "cn-hangzhou" and "Encrypted" not in body
    assert body["Tag"] == [{"Key": "appconsistent:restored-from", "Value": "s-1"}]


def test_alicloud_reset_stop_start_attach_requests():
    api = RecordingApi()
    adapter = restore_alicloud.AlicloudRestoreApi(api)
    adapter.reset("d-1", "s-1")
    adapter.stop("i-1")
    adapter.start("i-1")
    adapter.attach("d-2", "i-1", None)
    adapter.detach("d-2", "i-1", "/dev/xvdc")
    sent = [(a, r.to_map()) for a, r in api.sent]
    assert sent[0] == ("ResetDisk", {"DiskId": "d-1", "SnapshotId": "s-1"})
    assert sent[1] == ("StopInstance", {"InstanceId": "i-1", "StoppedMode": "KeepCharging"})
    assert sent[2] == ("StartInstance", {"InstanceId": "i-1"})
    assert sent[3] == ("AttachDisk", {"InstanceId": "i-1", "DiskId": "d-2", "DeleteWithInstance": False})
    assert sent[4] == ("DetachDisk", {"InstanceId": "i-1", "DiskId": "d-2"})


def _tagged(snapshot_id, set_id, created, **extra):
    tags = dict({"appconsistent:set-id": set_id, "appconsistent:instance-id": "i-bp1", "appconsistent:consistency":
                 "application", "appconsistent:device": "/dev/xvdb"}, **extra)
    return {"SnapshotId": snapshot_id, "Status": "accomplished", "SourceDiskSize": "20", "SourceDiskId": "d-1",
            "CreationTime": created, "Tags": {"Tag": [{"TagKey": k, "TagValue": v} for k, v in tags.items()]}}


def test_alicloud_latest_set_counts_copies_in_no_group_and_lists_once():
    group = {"SnapshotGroupId": "ssg-1", "Status": "accomplished", "InstanceId": "i-bp1",
             "Snapshots": {"Snapshot": [{"SnapshotId": "s-1"}]}}
    listing = {"Snapshots": {"Snapshot": [
        _tagged("s-1", "ssg-1", "2026-11-22T06:00:00Z"),
        _tagged("s-c1", "acs-copy", "2026-11-22T07:00:00Z", **{"appconsistent:copied-from": "ssg-0"}),
        _tagged("s-x1", "acs-safety", "2026-11-22T08:00:00Z", **{"appconsistent:safety-for": "ssg-0"})]}}

    class Api(RecordingApi):
        def describe_snapshot_groups(self, instance_id=None, snapshot_group_ids=None):
            self.sent.append(("DescribeSnapshotGroups", instance_id))
            return [group]

    api = Api({"DescribeSnapshots": listing})
    chosen = restore_alicloud.AlicloudRestoreApi(api).latest_set("i-bp1", "application")
    assert (chosen.set_id, [m.snapshot_id for m in chosen.members], chosen.source_instance_id) == \
        ("acs-copy", ["s-c1"], "i-bp1")
    # the group's member came with the tag listing: one DescribeSnapshots in all
    assert [a for a, _r in api.sent] == ["DescribeSnapshotGroups", "DescribeSnapshots"]
    tags = [(t.key, t.value) for t in api.sent[1][1].tag]
    assert tags == [("appconsistent:set-id", None), ("appconsistent:instance-id", "i-bp1")]


def test_alicloud_disk_states_are_normalised_and_the_restored_from_tag_wins():
    disk = {"DiskId": "d-1", "Status": "In_use", "InstanceId": "i-1", "Device": "/dev/xvdb", "SourceSnapshotId": "s-old",
            "Category": "cloud_essd", "Size": 100, "Type": "data",
            "Tags": {"Tag": [{"TagKey": "appconsistent:restored-from", "TagValue": "s-new"}]}}
    got = restore_alicloud.normalise_disk(disk)
    assert (got["state"], got["attach_state"], got["device"]) == ("in-use", "attached", "/dev/xvdb")
    assert restore.origin_of(got) == "s-new"


def test_alicloud_iops_are_refused_and_system_disks_are_not_swapped():
    adapter = restore_alicloud.AlicloudRestoreApi(RecordingApi())
    snap = restore.Member("s-1", device="/dev/xvda", size=40, state="accomplished")
    with pytest.raises(restore.RestoreRefused, match="iops and throughput apply to AWS"):
        adapter.volume_spec(snap, None, params(iops=3000), "z")
    with pytest.raises(restore.RestoreRefused, match="system disk"):
        adapter.volume_spec(snap, dict(disk_type="system", size=40, type="cloud_essd"), params(), "z")


# --- Alibaba in place: Stop, safety group, ResetDisk, Start ------------------------------------------------


class FakeEcs(FakeCloud):
    """FakeCloud with ResetDisk and snapshot-consistent groups; ``data`` is what each disk holds."""

    def __init__(self, **kwargs):
        super().__init__(devices={"/dev/xvda": "d-root", "/dev/xvdb": "d-b", "/dev/xvdc": "d-c"}, **kwargs)
        self.data = {"d-root": "root-now", "d-b": "b-now", "d-c": "c-now"}
        self.snapshots = {"s-b": "b-then", "s-c": "c-then"}
        self.groups = {}

    def create_safety_group(self, instance_id, disk_ids, name, tags):
        self._call("CreateSnapshotGroup", tuple(disk_ids))
        snaps = []
        for disk_id in disk_ids:
            self.snapshots["safe-" + disk_id] = self.data[disk_id]
            snaps.append({"SnapshotId": "safe-" + disk_id, "SourceDiskId": disk_id})
        self.groups["ssg-safe"] = {"SnapshotGroupId": "ssg-safe", "Status": "accomplished", "Snapshots": {"Snapshot": snaps}}
        return "ssg-safe"

    def snapshot_group(self, group_id):
        return self.groups.get(group_id)

    def tag_snapshots(self, snapshot_ids, tags):
        self._call("TagSnapshots", tuple(snapshot_ids))

    def reset(self, disk_id, snapshot_id):
        self._call("ResetDisk", disk_id, snapshot_id)
        assert self.inst["state"] == "stopped"
        self.data[disk_id] = self.snapshots[snapshot_id]


def ecs_set():
    members = [restore.Member("s-b", device="/dev/xvdb", size=100, state="accomplished", source_volume_id="d-b",
                              tags={"appconsistent:consistency": "application"}),
               restore.Member("s-c", device="/dev/xvdc", size=100, state="accomplished", source_volume_id="d-c",
                              tags={"appconsistent:consistency": "application"})]
    return restore.SelectedSet("ssg-1", members, "i-1", group_status="accomplished")


def reset_with(cloud, **overrides):
    engine = restore_alicloud.ResetRestore(cloud, params(**overrides), sleep=lambda s: None)
    assert engine.applies(ecs_set(), "i-1")
    engine.plan(ecs_set(), "i-1")
    return engine


def test_in_place_restore_takes_a_safety_group_before_resetting():
    cloud = FakeEcs()
    result = reset_with(cloud).run(ecs_set())
    assert cloud.actions() == ["StopInstances", "CreateSnapshotGroup", "TagSnapshots", "TagSnapshots", "ResetDisk", "ResetDisk",
                               "CreateTags", "CreateTags", "StartInstances"]
    assert cloud.data == {"d-root": "root-now", "d-b": "b-then", "d-c": "c-then"}
    assert cloud.snapshots["safe-d-b"] == "b-now"
    assert result["safety_snapshot_group_id"] == "ssg-safe"
    assert [e["safety_snapshot_id"] for e in result["device_map"]] == ["safe-d-b", "safe-d-c"]
    assert cloud.vols["d-b"]["tags"]["appconsistent:restored-from"] == "s-b"
    cloud.calls.clear()
    assert reset_with(cloud).run(ecs_set())["changed"] is False and cloud.actions() == []


def test_a_reset_failure_part_way_resets_back_from_the_safety_group():
    cloud = FakeEcs()
    cloud.fail = {"ResetDisk": {2}}
    with pytest.raises(restore.RestoreFailed) as caught:
        reset_with(cloud).run(ecs_set())
    assert cloud.data == {"d-root": "root-now", "d-b": "b-now", "d-c": "c-now"}
    assert cloud.inst["state"] == "running"
    assert "rolled back" in str(caught.value) and "ssg-safe holds the disks" in str(caught.value)
    assert caught.value.details["rollback_problems"] == []


def test_without_a_safety_group_a_failure_part_way_says_what_cannot_be_undone():
    cloud = FakeEcs()
    cloud.fail = {"ResetDisk": {2}}
    with pytest.raises(restore.RestoreFailed) as caught:
        reset_with(cloud, safety_snapshot=False).run(ecs_set())
    assert "CreateSnapshotGroup" not in cloud.actions()
    assert "cannot be rolled back" in str(caught.value) and cloud.inst["state"] == "running"


def test_a_safety_group_that_fails_resets_nothing():
    cloud = FakeEcs()
    cloud.fail = {"CreateSnapshotGroup": {1}}
    with pytest.raises(restore.RestoreFailed, match="safety snapshot of the disks could not be taken.*no disk was reset"):
        reset_with(cloud).run(ecs_set())
    assert "ResetDisk" not in cloud.actions() and cloud.inst["state"] == "running"


def test_in_place_does_not_apply_to_another_instance():
    engine = restore_alicloud.ResetRestore(FakeEcs(), params(), sleep=lambda s: None)
    assert not engine.applies(ecs_set(), "i-2")


def counted(snapshot_id, device, count, **kwargs):
    found = member(snapshot_id, device, **kwargs)
    found.tags["appconsistent:members"] = str(count)
    return found


def test_latest_never_picks_a_set_that_proves_itself_partial():
    # Issue 18 line 4: a copy cut short after one of two members, newer than the whole set.
    whole = restore.SelectedSet("acs-whole", [counted("snap-1", "/dev/xvdf", 2, created="2026-11-20T00:00:00"),
                                              counted("snap-2", "/dev/xvdg", 2, created="2026-11-20T00:00:00")])
    partial = restore.SelectedSet("acs-partial", [counted("snap-3", "/dev/xvdf", 2, created="2026-11-22T00:00:00")])
    assert partial.complete is False and whole.complete is True
    assert restore.newest_qualifying([whole, partial], "application")[0].set_id == "acs-whole"
    with pytest.raises(restore.RestoreRefused, match="only 1 of its 2 snapshots exist; it will not become complete"):
        restore.check_set(partial, params())
    warnings = restore.check_set(partial, params(allow_incomplete=True))
    assert [m.snapshot_id for m in partial.members] == ["snap-3"] and "only 1 of its 2" in warnings[0]


def test_snapshots_named_one_by_one_are_not_judged_by_their_set_size():
    chosen = restore.SelectedSet("acs-whole", [counted("snap-1", "/dev/xvdf", 2)], whole=False)
    assert chosen.complete is True and restore.check_set(chosen, params()) == []
