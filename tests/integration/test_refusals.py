"""What a new operator runs into first, through real ansible-playbook runs against the twins: a controller without
the Alibaba Cloud SDK, options of the other cloud, rejected or missing credentials, a malformed set id, keep: 0."""

import os
import subprocess
import sys
import time

import pytest

from test_snapshot_set_info import ALI_WEB
from test_snapshot_set_info import TICK
from test_snapshot_set_info import aws_instance
from test_snapshot_set_info import aws_set

ACG = "appconsistent.snapshots.app_consistent_group"
INFO = "appconsistent.snapshots.snapshot_set_info"
PRUNE = "appconsistent.snapshots.snapshot_set_prune"
RESTORE = "appconsistent.snapshots.restore_volumes"
COPY = "appconsistent.snapshots.snapshot_set_copy"
SHARE = "appconsistent.snapshots.snapshot_set_share"
REMOVE = "appconsistent.snapshots.restored_volumes_remove"
VSS = "appconsistent.snapshots.vss_snapshot"
VSS_COMPONENTS = "appconsistent.snapshots.vss_components"

# The packages the collection's Alibaba Cloud code imports (meta/ee-requirements.txt).
ALIBABA_PACKAGES = ("alibabacloud_ecs20140526", "alibabacloud_tea_openapi", "alibabacloud_credentials")


@pytest.fixture
def no_alibaba_sdk(tmp_path, monkeypatch):
    """ansible-playbook and its modules run as on a controller where the Alibaba Cloud SDK was never installed.

    Packages of the same names, first on PYTHONPATH, fail to import as a missing package does; the twins, already
    running in this process, keep the real SDK.
    """
    stubs = tmp_path / "no-alibaba-sdk"
    for name in ALIBABA_PACKAGES:
        (stubs / name).mkdir(parents=True)
        (stubs / name / "__init__.py").write_text(f"raise ModuleNotFoundError(\"No module named '{name}'\", name={name!r})\n")
    path = os.pathsep.join(p for p in (str(stubs), os.environ.get("PYTHONPATH")) if p)
    monkeypatch.setenv("PYTHONPATH", path)
    for name in ALIBABA_PACKAGES:
        probe = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True, check=False)
        assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr, f"{name} is still importable"


def first_line(result):
    return (result.get("msg") or "").splitlines()[0]


# --- issue 19.1: no Alibaba Cloud SDK on the controller --------------------------------------------


def test_without_the_alibaba_sdk_alibaba_use_names_the_packages_to_install(twin_factory, run_tasks, no_alibaba_sdk):
    twins = twin_factory(aws=False)
    run = run_tasks([
        {INFO: {"provider": "alicloud"}, "register": "info"},
        {ACG: {"provider": "alicloud", "instance_ids": [ALI_WEB], "consistency": "crash"}, "register": "group"},
        {RESTORE: {"provider": "alicloud", "set_id": "ssg-bp1twin0000000001"}, "register": "restore"},
        {RESTORE: {"snapshot_group_id": "ssg-bp1twin0000000001"}, "register": "restore_group"},
        {PRUNE: {"provider": "alicloud", "keep": 3}, "register": "prune"},
        {COPY: {"provider": "alicloud", "set_id": "ssg-bp1twin0000000001", "destination_region": "cn-shanghai"},
         "register": "copy"},
        {REMOVE: {"provider": "alicloud", "volume_ids": ["d-bp1twin0000000001"]}, "register": "remove"},
    ], twins.endpoints)
    for name, result in run.results.items():
        assert result.get("failed"), name
        assert "alibabacloud-ecs20140526 and alibabacloud-tea-openapi" in first_line(result), (name, result["msg"])
        assert "'models'" not in result["msg"], name
    assert twins.stats.counts("alicloud") == {}


def test_without_the_alibaba_sdk_aws_use_works_in_every_module(twin_factory, run_tasks, no_alibaba_sdk):
    # Both clouds configured, as a play whose module_defaults carry both connections does.
    twins = twin_factory()
    web = aws_instance(twins, "web-1")
    sql = aws_instance(twins, "sql-1")
    run = run_tasks([
        {ACG: {"provider": "aws", "instance_ids": [web], "consistency": "crash"}, "register": "group"},
        {VSS: {"instance_ids": [sql]}, "register": "vss"},
        {VSS_COMPONENTS: {"instance_ids": [sql]}, "register": "components", "check_mode": True},
        {INFO: {"provider": "aws", "instance_ids": [web]}, "register": "info"},
        # An acs- id with both clouds configured is looked up on AWS first, and here found there.
        {RESTORE: {"set_id": "{{ group.results[0].set_id }}", "mode": "volumes", "min_consistency": "crash"},
         "register": "restore", "check_mode": True},
        # Not on AWS: Alibaba Cloud cannot be asked without its SDK, which the refusal says.
        {RESTORE: {"set_id": "acs-20990101t000000-00000000", "mode": "volumes"}, "register": "restore_missing"},
        {COPY: {"provider": "aws", "set_id": "{{ group.results[0].set_id }}", "destination_region": "us-west-2"},
         "register": "copy", "check_mode": True},
        {SHARE: {"provider": "aws", "set_id": "{{ group.results[0].set_id }}", "account_ids": ["210987654321"]},
         "register": "share", "check_mode": True},
        {PRUNE: {"provider": "aws", "keep": 5}, "register": "prune"},
        {REMOVE: {"provider": "aws", "volume_ids": []}, "register": "remove"},
    ], twins.endpoints)
    for name in ("group", "vss", "components", "info", "restore", "copy", "share", "prune", "remove"):
        assert not run[name].get("failed"), (name, run[name].get("msg"))
    assert run["group"]["results"][0]["consistency"] == "crash"
    assert [s["set_id"] for s in run["info"]["sets"]] == [run["group"]["results"][0]["set_id"]]
    assert run["restore"]["provider"] == "aws"
    missing = run["restore_missing"]
    assert missing.get("failed")
    assert "was found neither on AWS nor on Alibaba Cloud" in missing["msg"]
    assert "Alibaba Cloud: not looked up, as its SDK (alibabacloud-ecs20140526 and alibabacloud-tea-openapi) is not " \
           "installed" in missing["msg"]
    assert twins.stats.counts("alicloud") == {}


# --- issue 19.3: options of the other cloud ---------------------------------------------------------


@pytest.mark.parametrize("provider, options, message", [
    ("aws", {"ram_role_name": "AppSnapshotRole"},
     "ram_role_name is an Alibaba Cloud option and provider is aws: remove it, as it would be ignored."),
    ("aws", {"name": "nightly", "enable_writers": True},
     "name and enable_writers are Alibaba Cloud options and provider is aws: remove them, as they would be ignored."),
    ("alicloud", {"initiator": "instance", "ram_role_name": "AppSnapshotRole"},
     "initiator is an AWS option and provider is alicloud: remove it, as it would be ignored."),
    ("alicloud", {"max_concurrency": "10", "delivery_timeout": 60, "ram_role_name": "AppSnapshotRole"},
     "max_concurrency and delivery_timeout are AWS options and provider is alicloud: remove them, as they would be "
     "ignored."),
])
def test_app_consistent_group_refuses_options_of_the_other_cloud_before_any_call(twin_factory, run_tasks, provider,
                                                                                 options, message):
    twins = twin_factory()
    instance = aws_instance(twins, "web-1") if provider == "aws" else ALI_WEB
    run = run_tasks([{ACG: dict({"provider": provider, "instance_ids": [instance]}, **options), "register": "group"}],
                    twins.endpoints)
    assert run["group"].get("failed")
    assert run["group"]["msg"] == message
    assert twins.stats.counts() == {}


def test_the_documented_defaults_of_the_other_cloud_are_not_refused(twin_factory, run_tasks):
    twins = twin_factory()
    run = run_tasks([
        {ACG: {"provider": "aws", "instance_ids": [aws_instance(twins, "web-1")], "consistency": "crash"},
         "register": "aws"},
        {ACG: {"provider": "alicloud", "instance_ids": [ALI_WEB], "consistency": "crash"}, "register": "alicloud"},
    ], twins.endpoints, check=True)
    assert not run["aws"].get("failed"), run["aws"].get("msg")
    assert not run["alicloud"].get("failed"), run["alicloud"].get("msg")


def test_restore_volumes_refuses_options_of_the_other_cloud_before_any_change(twin_factory, run_tasks):
    twins = twin_factory()
    set_id, _snapshots = aws_set(twins, "web-1")
    before = twins.stats.counts("aws")
    run = run_tasks([
        {RESTORE: {"set_id": set_id, "mode": "volumes", "safety_snapshot": False}, "register": "aws"},
        {RESTORE: {"provider": "alicloud", "set_id": "ssg-bp1twin0000000001", "iops": 3000, "aws_max_attempts": 3},
         "register": "alicloud"},
    ], twins.endpoints)
    assert run["aws"]["msg"] == ("safety_snapshot is an Alibaba Cloud option and provider is aws: remove it, as it "
                                 "would be ignored.")
    assert run["alicloud"]["msg"] == ("iops and aws_max_attempts are AWS options and provider is alicloud: remove them, "
                                      "as they would be ignored.")
    assert twins.stats.counts("alicloud") == {}
    assert {a: n for a, n in twins.stats.counts("aws").items() if not a.startswith("Describe")} == \
        {a: n for a, n in before.items() if not a.startswith("Describe")}


# --- issue 19.5: messages ---------------------------------------------------------------------------


def test_rejected_alibaba_credentials_are_said_first_and_on_one_line(twin_factory, run_tasks):
    twins = twin_factory(aws=False)
    run = run_tasks([
        {INFO: {"provider": "alicloud", "alicloud_secret_key": "not-the-secret"}, "register": "bad_secret"},
        {INFO: {"provider": "alicloud", "alicloud_access_key": "LTAInotakey", "alicloud_secret_key": "x"},
         "register": "bad_key"},
        {RESTORE: {"provider": "alicloud", "set_id": "ssg-bp1twin0000000001", "alicloud_secret_key": "not-the-secret"},
         "register": "restore"},
    ], twins.endpoints)
    for name, result in run.results.items():
        assert result.get("failed"), name
        assert "\n" not in result["msg"], (name, result["msg"])
        assert "string to sign" not in result["msg"], name
        assert "Alibaba Cloud rejected the credentials" in result["msg"], (name, result["msg"])
        assert "check alicloud_access_key, alicloud_secret_key and alicloud_security_token" in result["msg"], name
        assert not result["msg"].startswith("cannot find"), name
    assert run["bad_secret"]["error"]["code"] == "SignatureDoesNotMatch"
    assert "string to sign" in run["bad_secret"]["error"]["provider_message"]
    assert "rejected the credentials" in run.stdout.split("[ERROR]")[1].splitlines()[0]


def test_rejected_aws_credentials_are_said_in_one_sentence(twin_factory, run_tasks):
    """Issue 19.6: the AWS twin verifies SigV4, so a wrong secret is rejected as EC2 and SSM reject it."""
    twins = twin_factory(alicloud=False)
    set_id, _snapshots = aws_set(twins, "web-1")
    iid = aws_instance(twins, "web-1")
    twins.stats.reset()
    run = run_tasks([
        {INFO: {"provider": "aws", "instance_ids": [iid], "secret_key": "not-the-secret"}, "register": "bad_secret"},
        {INFO: {"provider": "aws", "instance_ids": [iid], "access_key": "AKIDNOTAKEY", "secret_key": "x"},
         "register": "bad_key"},
        {RESTORE: {"set_id": set_id, "mode": "volumes", "secret_key": "not-the-secret"}, "register": "restore"},
        {ACG: {"provider": "aws", "instance_ids": [iid], "consistency": "crash", "secret_key": "not-the-secret"},
         "register": "backup"},
        {VSS: {"instance_ids": [iid], "secret_key": "not-the-secret"}, "register": "vss"},
    ], twins.endpoints)
    for name, result in run.results.items():
        assert result.get("failed"), name
        assert result["msg"] == ("AWS rejected the credentials (AuthFailure): check access_key, secret_key, "
                                 "session_token or the profile in use."), (name, result["msg"])
    assert "rejected the credentials" in run.stdout.split("[ERROR]")[1].splitlines()[0]
    assert not any(action.startswith(("Create", "Delete", "Send", "Stop")) for action in twins.stats.counts("aws"))


def test_restore_volumes_without_aws_credentials_says_so(twin_factory, run_tasks, monkeypatch, tmp_path):
    twins = twin_factory(alicloud=False)
    set_id, _snapshots = aws_set(twins, "web-1")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    endpoints = dict(twins.endpoints, aws=dict(twins.endpoints["aws"], access_key_id=None, secret_access_key=None))
    run = run_tasks([{RESTORE: {"set_id": set_id, "mode": "volumes"}, "register": "restore"}], endpoints)
    assert run["restore"]["msg"].startswith("No AWS credentials found: set access_key and secret_key"), \
        run["restore"]["msg"]


def test_a_set_id_of_no_known_form_is_an_invalid_id(twin_factory, run_tasks):
    twins = twin_factory()
    run = run_tasks([
        {RESTORE: {"set_id": "my-backup"}, "register": "inferred"},
        {RESTORE: {"provider": "aws", "set_id": "my-backup"}, "register": "aws"},
    ], twins.endpoints)
    assert run["inferred"]["msg"] == (
        "set_id: 'my-backup' is not a snapshot set id: acs-YYYYMMDDtHHMMSS-xxxxxxxx (an AWS set, or a copy made by "
        "snapshot_set_copy) or ssg-... (an Alibaba Cloud snapshot-consistent group), as snapshot_set_info lists them")
    assert run["aws"]["msg"] == "set_id: 'my-backup' is not a snapshot set id (acs-YYYYMMDDtHHMMSS-xxxxxxxx)"
    assert twins.stats.counts() == {}


def test_keep_zero_says_that_only_the_protected_sets_are_left(twin_factory, run_tasks):
    twins = twin_factory(alicloud=False)
    older, _s = aws_set(twins, "web-1")
    crash, _s = aws_set(twins, "db-1", consistency="crash")
    time.sleep(TICK)
    newest, _s = aws_set(twins, "web-1")
    web = aws_instance(twins, "web-1")
    task = {PRUNE: {"provider": "aws", "keep": 0, "expired": False}}
    run = run_tasks([dict(task, register="check")], twins.endpoints, check=True)
    expected = ("keep is 0: every set in scope {} deleted but each instance's newest application-consistent set, "
                f"which protect_newest_application keeps ({newest} of {web}).")
    assert sorted(e["set_id"] for e in run["check"]["deleted"]) == sorted([older, crash])
    assert run["check"]["warnings"] == [expected.format("would be")]
    run = run_tasks([dict(task, register="real")], twins.endpoints)
    assert sorted(e["set_id"] for e in run["real"]["deleted"]) == sorted([older, crash])
    assert run["real"]["warnings"] == [expected.format("was")]
