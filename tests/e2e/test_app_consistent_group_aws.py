"""app_consistent_group on AWS Linux: the freeze helper really runs on a loop-mounted filesystem of a local twin instance."""

import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from e2e.conftest import HELPER, e2e_unavailable_reason, write_script

pytestmark = pytest.mark.skipif(e2e_unavailable_reason() is not None, reason=str(e2e_unavailable_reason()))

ACG = "appconsistent.snapshots.app_consistent_group"


def linux_fleet(mount):
    return {"instances": [{"provider": "aws", "name": "db-1", "platform": "linux", "execution": "local",
                           "volumes": [{"device": "/dev/xvda", "size": 8, "boot": True},
                                       {"device": "/dev/xvdf", "size": 1, "mount": str(mount)}]}]}


def scripts(script_dir, pre_body="exit 0\n", post_body="exit 0\n"):
    markers = script_dir / "markers"
    markers.mkdir(mode=0o700)
    pre = write_script(script_dir / "prescript.sh", f'echo pre >> "{markers}/log"\n' + pre_body)
    post = write_script(script_dir / "postscript.sh", f'echo post >> "{markers}/log"\n' + post_body)
    return pre, post, markers / "log"


def task(iid, mount, pre, post, **extra):
    args = {"provider": "aws", "instance_ids": [iid], "mounts": [str(mount)], "freeze_helper_path": str(HELPER),
            "pre_script_path": str(pre), "post_script_path": str(post), "freeze_timeout": 10, "delete_after": "1d"}
    args.update(extra)
    return {ACG: args}


@pytest.fixture
def db(fs_factory, twin_factory):
    mount = fs_factory.create("ext4")
    twins = twin_factory(linux_fleet(mount.mountpoint), alicloud=False)
    return twins, twins.endpoints["aws"]["instances"]["db-1"], mount


def test_application_consistent_set_with_scripts_and_a_real_freeze(db, script_dir, run_tasks, fs_factory):
    twins, iid, mount = db
    pre, post, log = scripts(script_dir)
    run = run_tasks([dict(task(iid, mount.mountpoint, pre, post, exclude_boot_disk=True), register="group")],
                    twins.endpoints)
    result = run["group"]
    assert not result.get("failed"), result.get("msg")
    entry = result["results"][0]
    assert entry["consistency"] == "application"
    assert entry["helper"]["freeze"]["scripts"]["status"] == "valid"
    assert entry["helper"]["freeze"]["t_frozen"] <= entry["helper"]["thaw"]["t_thawed"]
    assert 0 < entry["freeze_window"] < 10
    assert [s["device"] for s in entry["snapshots"]] == ["/dev/xvdf"]  # the boot volume left out
    assert log.read_text().split() == ["pre", "post"]
    assert fs_factory.writable(mount.mountpoint, within=2)
    ec2 = twins.aws_client("ec2")
    by_set = [{"Name": "tag:appconsistent:set-id", "Values": [entry["set_id"]]}]
    snaps = ec2.describe_snapshots(OwnerIds=["self"], Filters=by_set)["Snapshots"]
    tags = {t["Key"]: t["Value"] for t in snaps[0]["Tags"]}
    assert tags["appconsistent:consistency"] == "application"
    assert tags["appconsistent:device"] == "/dev/xvdf"
    assert len(entry["command_ids"]) == 2  # one freeze and one thaw command


def test_filesystem_consistency_freezes_without_scripts(db, script_dir, run_tasks):
    twins, iid, mount = db
    pre, post, log = scripts(script_dir)
    run = run_tasks([dict(task(iid, mount.mountpoint, pre, post, consistency="filesystem"), register="group")],
                    twins.endpoints)
    entry = run["group"]["results"][0]
    assert not run["group"].get("failed"), run["group"].get("msg")
    assert entry["consistency"] == "filesystem"
    assert not log.exists()


def test_missing_scripts_fall_back_to_filesystem_and_fail_the_host(db, script_dir, run_tasks):
    twins, iid, mount = db
    run = run_tasks([dict(task(iid, mount.mountpoint, script_dir / "none-pre.sh", script_dir / "none-post.sh"),
                          register="group")], twins.endpoints)
    result = run["group"]
    assert result["failed"] is True
    entry = result["results"][0]
    assert entry["consistency"] == "filesystem"
    assert entry["error"]["code"] == "ScriptsNotRun"


def test_a_world_writable_script_is_not_run(db, script_dir, run_tasks):
    twins, iid, mount = db
    pre, post, log = scripts(script_dir)
    os.chmod(pre, 0o777)
    run = run_tasks([dict(task(iid, mount.mountpoint, pre, post, on_fallback="warn"), register="group")],
                    twins.endpoints)
    entry = run["group"]["results"][0]
    assert not run["group"].get("failed")
    assert entry["consistency"] == "filesystem"
    assert entry["helper"]["freeze"]["scripts"]["status"] == "invalid"
    assert not log.exists()


def test_a_failing_prescript_freezes_nothing_and_makes_no_set(db, script_dir, run_tasks, fs_factory):
    twins, iid, mount = db
    pre, post, _log = scripts(script_dir, pre_body="exit 1\n")
    run = run_tasks([dict(task(iid, mount.mountpoint, pre, post), register="group")], twins.endpoints)
    entry = run["group"]["results"][0]
    assert run["group"]["failed"] is True
    assert entry["consistency"] == "none" and entry["error"]["code"] == "Freeze201"
    assert entry["snapshots"] == []
    assert fs_factory.writable(mount.mountpoint, within=2)


@pytest.mark.parametrize("mounts, words", [(["/"], "never frozen"), (["/boot"], "never frozen"),
                                           (["relative/dir"], "refused")])
def test_root_and_bad_mounts_are_refused_before_anything_is_sent(db, script_dir, run_tasks, mounts, words):
    twins, iid, mount = db
    pre, post, _log = scripts(script_dir)
    twins.stats.reset()
    run = run_tasks([dict(task(iid, mount.mountpoint, pre, post, mounts=mounts), register="group")], twins.endpoints)
    assert run["group"]["failed"] is True and words in run["group"]["msg"]
    assert not twins.stats.counts("aws").get("SendCommand")


def test_a_path_that_is_not_a_mount_point_is_refused_by_the_helper(db, script_dir, run_tasks, tmp_path):
    twins, iid, mount = db
    pre, post, _log = scripts(script_dir)
    plain = tmp_path / "not-a-mount"
    plain.mkdir()
    run = run_tasks([dict(task(iid, mount.mountpoint, pre, post, mounts=[str(plain)]), register="group")],
                    twins.endpoints)
    entry = run["group"]["results"][0]
    assert entry["error"]["code"] == "Freeze207" and entry["consistency"] == "none"


def _play(tmp_path, tasks, endpoints):
    from conftest import connection_defaults  # tests/ is on sys.path
    play = [{"hosts": "localhost", "gather_facts": False, "tasks": tasks,
             "module_defaults": {"group/appconsistent.snapshots.snapshots": connection_defaults(endpoints)}}]
    path = tmp_path / "kill.yml"
    path.write_text(yaml.safe_dump(play, sort_keys=False))
    return path


def _frozen(mount):
    """True while a write to the mount does not complete within half a second."""
    probe = subprocess.Popen(["sh", "-c", f"echo x > '{mount}/probe'"], start_new_session=True)
    try:
        probe.wait(timeout=0.5)
        return False
    except subprocess.TimeoutExpired:
        return True
    finally:
        if probe.poll() is None:
            os.killpg(probe.pid, signal.SIGKILL)


def test_sigkill_between_freeze_and_thaw_leaves_nothing_frozen(db, script_dir, run_tasks, tmp_path, fs_factory):
    twins, iid, mount = db
    pre, post, log = scripts(script_dir)
    freeze_timeout = 4
    # CreateSnapshots takes long enough for the controller to be killed while the instance is frozen.
    twins.latency.update({"profile": "zero", "api": {"CreateSnapshots": 30.0}})
    playbook = _play(tmp_path, [task(iid, mount.mountpoint, pre, post, freeze_timeout=freeze_timeout)], twins.endpoints)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), "build", "collections"), ANSIBLE_PYTHON_INTERPRETER=sys.executable)
    proc = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,",
                             "-c", "local", str(playbook)], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _frozen(mount.mountpoint):
            time.sleep(0.2)
        assert _frozen(mount.mountpoint), "the filesystem was never frozen"
        os.killpg(proc.pid, signal.SIGKILL)
        killed = time.monotonic()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert fs_factory.writable(mount.mountpoint, within=freeze_timeout + 2)
    thawed_after = time.monotonic() - killed
    assert thawed_after <= freeze_timeout + 2
    # The watchdog runs the postscript right after its thaw: the database lock would be released too.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and log.read_text().split() != ["pre", "post"]:
        time.sleep(0.1)
    assert log.read_text().split() == ["pre", "post"]
    twins.latency.update("zero")
    run = run_tasks([dict(task(iid, mount.mountpoint, pre, post), register="again")], twins.endpoints)
    assert not run["again"].get("failed"), run["again"].get("msg")
    assert run["again"]["results"][0]["consistency"] == "application"


def data_volume(twins, iid):
    ec2 = twins.aws_client("ec2")
    instance = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    return next(m["Ebs"]["VolumeId"] for m in instance["BlockDeviceMappings"] if m["DeviceName"] == "/dev/xvdf")


def _mounted(path):
    return subprocess.run(["mountpoint", "-q", str(path)], check=False).returncode == 0


def test_offline_by_unmounting_a_data_filesystem(db, run_tasks):
    twins, iid, mount = db
    (mount.mountpoint / "keep.txt").write_text("data")
    run = run_tasks([{ACG: {"provider": "aws", "consistency": "offline", "instance_ids": [iid],
                            "mounts": [str(mount.mountpoint)], "disk_ids": [data_volume(twins, iid)]},
                      "register": "group"}], twins.endpoints)
    result = run["group"]
    assert not result.get("failed"), result.get("msg")
    entry = result["results"][0]
    assert entry["consistency"] == "offline"
    assert entry["downtime"] > 0
    assert [s["device"] for s in entry["snapshots"]] == ["/dev/xvdf"]
    assert _mounted(mount.mountpoint) and (mount.mountpoint / "keep.txt").read_text() == "data"


def test_offline_refuses_a_busy_filesystem_and_names_the_process(db, run_tasks):
    twins, iid, mount = db
    holder = subprocess.Popen(["sleep", "120"], cwd=str(mount.mountpoint))
    try:
        run = run_tasks([{ACG: {"provider": "aws", "consistency": "offline", "instance_ids": [iid],
                                "mounts": [str(mount.mountpoint)], "disk_ids": [data_volume(twins, iid)]},
                          "register": "group"}], twins.endpoints)
    finally:
        holder.kill()
        holder.wait()
    entry = run["group"]["results"][0]
    assert run["group"]["failed"] is True
    assert entry["error"]["code"] == "Unmount3"
    assert f"sleep (pid {holder.pid})" in entry["error"]["message"]
    assert entry["snapshots"] == [] and entry["consistency"] == "none"
    assert _mounted(mount.mountpoint)


def test_initiator_instance_snapshots_from_inside_the_freeze(db, script_dir, run_tasks, fs_factory):
    twins, iid, mount = db
    pre, post, log = scripts(script_dir)
    twins.stats.reset()
    run = run_tasks([dict(task(iid, mount.mountpoint, pre, post, initiator="instance", exclude_boot_disk=True,
                               tags={"team": "dba"}), register="group")], twins.endpoints)
    result = run["group"]
    assert not result.get("failed"), result.get("msg")
    entry = result["results"][0]
    assert entry["consistency"] == "application"
    assert len(entry["command_ids"]) == 1  # one SSM command: freeze, snapshot, thaw
    assert 0 < entry["freeze_window"] < 10
    assert [s["device"] for s in entry["snapshots"]] == ["/dev/xvdf"]
    assert log.read_text().split() == ["pre", "post"]
    assert fs_factory.writable(mount.mountpoint, within=2)
    ec2 = twins.aws_client("ec2")
    by_set = [{"Name": "tag:appconsistent:set-id", "Values": [entry["set_id"]]}]
    tags = {t["Key"]: t["Value"] for t in ec2.describe_snapshots(OwnerIds=["self"], Filters=by_set)["Snapshots"][0]["Tags"]}
    assert tags["appconsistent:instance-id"] == iid and tags["appconsistent:consistency"] == "application"
    assert tags["team"] == "dba" and tags["appconsistent:device"] == "/dev/xvdf"
    counts = twins.stats.counts("aws")
    assert counts["SendCommand"] == 1
