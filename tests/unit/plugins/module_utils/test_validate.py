"""Input is checked whole and before anything changes: ids, tags, durations, timeouts."""

import contextlib
import json
import re
import types

import pytest

from ansible_collections.appconsistent.snapshots.plugins.module_utils import app_plugin
from ansible_collections.appconsistent.snapshots.plugins.module_utils import snapshot_set as ss
from ansible_collections.appconsistent.snapshots.plugins.module_utils import validate
from ansible_collections.appconsistent.snapshots.plugins.module_utils import vss
from ansible_collections.appconsistent.snapshots.plugins.module_utils import vss_components
from ansible_collections.appconsistent.snapshots.plugins.module_utils.group_alicloud import AlicloudGroupRun
from ansible_collections.appconsistent.snapshots.plugins.module_utils.group_aws import AwsGroupRun
from ansible_collections.appconsistent.snapshots.plugins.module_utils.module import AppConsistentModule
from ansible_collections.appconsistent.snapshots.plugins.module_utils.unmount import refused_mount
from ansible_collections.appconsistent.snapshots.plugins.module_utils.volume_remove import ID_PATTERNS
from ansible_collections.appconsistent.snapshots.plugins.modules import app_consistent_group
from ansible_collections.appconsistent.snapshots.plugins.modules import restore_volumes
from ansible_collections.appconsistent.snapshots.plugins.modules import snapshot_set_copy
from ansible_collections.appconsistent.snapshots.plugins.modules import snapshot_set_info
from ansible_collections.appconsistent.snapshots.plugins.modules import snapshot_set_prune
from ansible_collections.appconsistent.snapshots.plugins.modules import snapshot_set_share
from ansible_collections.appconsistent.snapshots.plugins.modules import vss_snapshot

from ...utils import module_args

AWS_INSTANCE = "i-0123456789abcdef0"
SET_ID = "acs-20261123t060000-1a2b3c4d"


# --- ids: a wildcard or a trailing newline never reaches a describe filter --------------------------------------


def _module_failure(capsys, spec, args, provider=None):
    """Build the module object as main() does; the JSON it failed with, or None when it did not fail."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(module_args(dict(args)))
        try:
            AppConsistentModule(argument_spec=spec, provider=provider, supports_check_mode=True)
        except SystemExit:
            return json.loads(capsys.readouterr().out)
    return None


@pytest.mark.parametrize("module, args, words", [
    (snapshot_set_share, dict(provider="aws", set_id="acs-*", public=True), "set_id: 'acs-*' is not"),
    (snapshot_set_copy, dict(provider="aws", set_id="acs-2026*", destination_region="eu-west-1"), "set_id"),
    (restore_volumes, dict(set_id="acs-*", mode="volumes"), "set_id: 'acs-*' is not"),
    (restore_volumes, dict(provider="aws", snapshot_ids=["snap-*"], mode="volumes"), "snapshot_ids"),
    (restore_volumes, dict(provider="alicloud", snapshot_group_id="ssg-*", mode="volumes"), "snapshot_group_id"),
    (restore_volumes, dict(provider="aws", instance_id="i-*", latest=True), "instance_id: 'i-*' is not"),
    (snapshot_set_prune, dict(provider="aws", instance_ids=["i-*"]), "instance_ids: 'i-*' is not"),
    (snapshot_set_prune, dict(provider="alicloud", instance_ids=["i-bp1*"]), "instance_ids"),
    (snapshot_set_info, dict(provider="aws", set_ids=["acs-?"]), "set_ids"),
    (app_consistent_group, dict(provider="aws", instance_ids=[AWS_INSTANCE], disk_ids=["vol-*"]), "disk_ids"),
    (app_consistent_group, dict(provider="aws", instance_ids=["i-0123456789abcdef0\n"]), "instance_ids"),
])
def test_wildcard_and_malformed_ids_are_refused_before_any_call(capsys, module, args, words):
    failure = _module_failure(capsys, module.argument_spec(), args)
    assert failure is not None, f"{args} was accepted"
    assert failure["failed"] and words in failure["msg"]


def test_account_ids_are_checked_whole_by_the_share_module():
    from ansible_collections.appconsistent.snapshots.plugins.module_utils import set_share

    for bad in ("1234567890*", "12345678901?", "all"):
        with pytest.raises(set_share.ShareRefused, match="account_ids"):
            set_share.validate(dict(provider="aws", account_ids=[bad], public=False))


def test_vss_modules_check_instance_ids_as_ec2_ids(capsys):
    failure = _module_failure(capsys, vss_snapshot.argument_spec(), dict(instance_ids=["i-bp1abc"]), provider="aws")
    assert "an EC2 instance id" in failure["msg"]


@pytest.mark.parametrize("args", [
    dict(provider="aws", set_id=SET_ID),
    dict(provider="alicloud", set_id="ssg-bp1abc0123456789"),
    dict(provider="alicloud", set_id=SET_ID),
])
def test_well_formed_ids_pass(capsys, args):
    assert _module_failure(capsys, snapshot_set_share.argument_spec(), args) is None


@pytest.mark.parametrize("kind, value, provider", [
    ("instance", AWS_INSTANCE, "aws"), ("instance", "i-12345678", "aws"), ("volume", "vol-0123456789abcdef0", "aws"),
    ("snapshot", "snap-0123456789abcdef0", "aws"), ("set", SET_ID, "aws"),
    ("instance", "i-bp1abc", "alicloud"), ("volume", "d-bp1abc", "alicloud"), ("snapshot", "s-bp1abc", "alicloud"),
    ("group", "ssg-bp1abc", "alicloud"), ("set", "ssg-bp1abc", "alicloud"), ("set", SET_ID, None),
])
def test_ids_of_the_providers_forms_pass_and_their_variants_do_not(kind, value, provider):
    assert validate.check_id("x", value, kind, provider) == value
    for variant in (value + "\n", value + "*", value[:-1] + "?", " " + value, value.upper()):
        with pytest.raises(ValueError, match=r"^x: "):
            validate.check_id("x", variant, kind, provider)


# --- trailing newlines: every validator matches the whole value ---------------------------------------------------


@pytest.mark.parametrize("check", [
    lambda: app_plugin.check_name("db01\n"),
    lambda: app_plugin.check_role("snaprole\n"),
    lambda: app_plugin.check_description("nightly\n"),
    lambda: app_plugin.check_path("pre_script_path", "/usr/local/pre.sh\n"),
    lambda: app_plugin.check_disk_id("d-bp1abc\n"),
    lambda: AwsGroupRun._check_path("mounts", "/data\n"),
    lambda: ss.validate_run_id("CHG-1\n"),
    lambda: ss.parse_duration("7d\n"),
    lambda: vss_components.validate("present", "2.4.0\n"),
    lambda: vss.build_parameters(vss_version="2.4.0\n", install=True),
    lambda: validate.user_tags({"db01\n": "x"}, "aws", 0),
])
def test_a_trailing_newline_is_refused(check):
    with pytest.raises(ValueError):
        check()


def test_a_trailing_newline_is_refused_in_mounts_and_volume_ids():
    assert refused_mount("/data\n")
    assert not ID_PATTERNS["aws"].fullmatch("vol-0123456789abcdef0\n")
    assert not ID_PATTERNS["alicloud"].fullmatch("d-bp1abcdef\n")


# --- durations and timeouts ------------------------------------------------------------------------------------------


def test_a_huge_delete_after_is_refused_in_validation_with_the_option_named():
    with pytest.raises(ValueError, match=r"^delete_after '1000000w' is too long: at most 36500d"):
        ss.parse_duration("1000000w")
    assert ss.parse_duration("36500d").days == 36500


@pytest.mark.parametrize("args, words", [
    (dict(provider="aws", instance_ids=[AWS_INSTANCE], delete_after="1000000w"), "delete_after '1000000w' is too long"),
    (dict(provider="aws", instance_ids=[AWS_INSTANCE], wait_timeout=10 ** 12), "wait_timeout 1000000000000 is too long"),
    (dict(provider="aws", instance_ids=[AWS_INSTANCE], delete_after="7 days"), "delete_after '7 days' is not a duration"),
])
def test_durations_and_timeouts_are_bounded_before_the_module_starts(capsys, args, words):
    failure = _module_failure(capsys, app_consistent_group.argument_spec(), args)
    assert failure is not None and words in failure["msg"]


def test_safety_snapshot_delete_after_is_bounded(capsys):
    failure = _module_failure(capsys, restore_volumes.argument_spec(),
                              dict(set_id=SET_ID, safety_snapshot_delete_after="99999999d"))
    assert "safety_snapshot_delete_after '99999999d' is too long" in failure["msg"]


# --- tags: strings within the provider's limits, checked before any agent command ---------------------------------


class NoCloud:
    """A module whose clouds must not be reached: validation has to refuse first."""

    def __init__(self, params):
        self.params = params
        self.check_mode = False
        self.region = "us-east-1"

    def aws_client(self, service):
        raise AssertionError(f"the {service} client was asked for before the input was refused")

    @property
    def alicloud(self):
        raise AssertionError("Alibaba Cloud was reached before the input was refused")


def _group_params(provider, **overrides):
    params = {name: spec.get("default") for name, spec in app_consistent_group.argument_spec().items()}
    params.update(provider=provider, instance_ids=[AWS_INSTANCE], consistency="crash")
    params.update(overrides)
    return params


def test_an_integer_tag_value_becomes_a_string_before_the_freeze():
    run = AwsGroupRun(NoCloud(_group_params("aws", tags={"cost-center": 4711, "backup": True})))
    run.validate()
    assert run.params["tags"] == {"cost-center": "4711", "backup": "true"}


@pytest.mark.parametrize("provider, tags, words", [
    ("aws", {"owners": ["a", "b"]}, "tags: the value of owners is a list"),
    ("aws", {"meta": {"a": 1}}, "tags: the value of meta is a dict"),
    ("aws", {f"k{n}": "v" for n in range(42)}, "tags: 42 tags are too many"),
    ("aws", {"k" * 129: "v"}, "is 129 characters long: at most 128"),
    ("aws", {"k": "v" * 257}, "the value of k is 257 characters long: at most 256"),
    ("aws", {"AWS:owner": "x"}, "reserved"),
    ("alicloud", {f"k{n}": "v" for n in range(13)}, "tags: 13 tags are too many"),
    ("alicloud", {"k": "v" * 129}, "the value of k is 129 characters long: at most 128"),
    ("alicloud", {"Aliyun-team": "x"}, "reserved"),
    ("alicloud", {"doc": "https://wiki"}, "cannot contain http:// or https://"),
])
def test_tags_the_provider_would_refuse_are_refused_before_any_call(provider, tags, words):
    params = _group_params(provider, tags=tags, instance_ids=["i-bp1abc"] if provider == "alicloud" else [AWS_INSTANCE])
    runner = AlicloudGroupRun if provider == "alicloud" else AwsGroupRun
    with pytest.raises(ValueError) as exc:
        runner(NoCloud(params), sleep=lambda s: None).run()
    assert words in str(exc.value)


def test_the_tag_count_leaves_room_for_the_collections_own_tags():
    room = validate.TAG_LIMITS["aws"]["count"] - validate.SET_OWN_TAGS["aws"]
    assert len(validate.user_tags({f"k{n}": "v" for n in range(room)}, "aws", validate.SET_OWN_TAGS["aws"])) == room
    with pytest.raises(ValueError, match=f"give at most {room}"):
        validate.user_tags({f"k{n}": "v" for n in range(room + 1)}, "aws", validate.SET_OWN_TAGS["aws"])


def test_tags_are_checked_in_every_module_that_writes_them():
    from ansible_collections.appconsistent.snapshots.plugins.module_utils import restore
    from ansible_collections.appconsistent.snapshots.plugins.module_utils import set_copy
    from ansible_collections.appconsistent.snapshots.plugins.module_utils.restore_run import check_tags
    from ansible_collections.appconsistent.snapshots.plugins.module_utils.vss_runner import VssSnapshotRun

    copy = {name: spec.get("default") for name, spec in snapshot_set_copy.argument_spec().items()}
    copy.update(provider="aws", set_id=SET_ID, destination_region="eu-west-1", tags={"team": ["a"]})
    with pytest.raises(set_copy.CopyRefused, match="the value of team is a list"):
        set_copy.validate(copy, "us-east-1")
    with pytest.raises(restore.RestoreRefused, match="the value of team is a list"):
        check_tags(dict(tags={"team": ["a"]}), None)
    params = {name: spec.get("default") for name, spec in vss_snapshot.argument_spec().items()}
    params.update(instance_ids=[AWS_INSTANCE], tags={"team": {"a": 1}})
    with pytest.raises(vss.VssParameterError, match="the value of team is a dict"):
        VssSnapshotRun(types.SimpleNamespace(params=params, check_mode=False)).validate()


def test_an_instance_the_id_filter_returns_but_was_not_named_is_never_acted_on():
    import boto3
    from botocore.stub import Stubber

    from ansible_collections.appconsistent.snapshots.plugins.module_utils import aws_fleet

    client = boto3.client("ec2", region_name="us-east-1", aws_access_key_id="AKIDTEST", aws_secret_access_key="secret")
    other = "i-0fedcba9876543210"
    with Stubber(client) as stub:
        stub.add_response("describe_instances", {"Reservations": [{"Instances": [
            {"InstanceId": AWS_INSTANCE}, {"InstanceId": other}]}]})
        found = aws_fleet.resolve_instances(client, instance_ids=[AWS_INSTANCE])
    assert list(found) == [AWS_INSTANCE]


@pytest.mark.parametrize("args, words", [
    (dict(instance_ids=[AWS_INSTANCE], max_concurrency="50\n"), "max_concurrency"),
    (dict(instance_ids=[AWS_INSTANCE], max_errors="-1"), "max_errors"),
    (dict(targets=[dict(key="InstanceIds", values=["i-*"])]), "targets InstanceIds: 'i-*' is not"),
])
def test_rate_controls_and_instance_targets_are_checked_before_the_first_command(capsys, args, words):
    failure = _module_failure(capsys, vss_snapshot.argument_spec(), args, provider="aws")
    assert failure is not None and words in failure["msg"]


def test_a_description_createsnapshots_would_refuse_is_refused_before_the_freeze():
    with pytest.raises(ValueError, match="description is 256 characters long: at most 255"):
        AwsGroupRun(NoCloud(_group_params("aws", description="d" * 256)), sleep=lambda s: None).run()


@pytest.mark.parametrize("name", ["db01\n", "ab", "a" * 129, "nightly;reboot"])
def test_an_ami_name_createimage_would_refuse_is_refused_before_the_document_runs(name):
    with pytest.raises(vss.VssParameterError, match="ami_name"):
        vss.build_parameters(create_ami=True, ami_name=name)
    assert vss.build_parameters(create_ami=True, ami_name="db01 (pre-patch) 2026-11-23")["AmiName"]


# --- digits and spaces are ASCII: Python's \d and \s match any script's digits and U+00A0 ---------------------------


NBSP = "\u00a0"
ARABIC_INDIC_THREE, ARABIC_INDIC_ZERO = "\u0663", "\u0660"


@pytest.mark.parametrize("args, words", [
    (dict(provider="aws", instance_ids=[AWS_INSTANCE], delete_after=ARABIC_INDIC_THREE + "d"),
     f"delete_after '{ARABIC_INDIC_THREE}d' is not a duration"),
    (dict(provider="aws", instance_ids=["i-0123456789abcdef" + ARABIC_INDIC_ZERO]),
     f"instance_ids: 'i-0123456789abcdef{ARABIC_INDIC_ZERO}' is not an EC2 instance id"),
    (dict(provider="aws", instance_ids=[AWS_INSTANCE], run_id="CHG" + NBSP + "1"), "invalid run_id 'CHG\\xa01'"),
    (dict(provider="aws", instance_ids=[AWS_INSTANCE], delete_after="7d" + NBSP), "delete_after '7d\\xa0' is not"),
    (dict(provider="aws", instance_ids=[AWS_INSTANCE], max_concurrency="5" + ARABIC_INDIC_ZERO), "max_concurrency"),
])
def test_digits_and_spaces_of_other_scripts_are_refused_in_one_sentence_before_the_module_starts(capsys, args, words):
    failure = _module_failure(capsys, app_consistent_group.argument_spec(), args)
    assert failure is not None, f"{args} was accepted"
    assert failure["msg"].startswith(words) and not re.search(r"[.:] [A-Z]|\n", failure["msg"]), failure["msg"]


@pytest.mark.parametrize("check", [
    lambda: AwsGroupRun(NoCloud(_group_params("aws", consistency="filesystem", mounts=["/data" + NBSP])),
                        sleep=lambda s: None).run(),
    lambda: AwsGroupRun(NoCloud(_group_params("aws", consistency="filesystem", mounts=["/data" + ARABIC_INDIC_ZERO])),
                        sleep=lambda s: None).run(),
    lambda: app_plugin.check_path("pre_script_path", "/usr/local/pre" + NBSP + ".sh"),
    lambda: app_plugin.check_disk_id("d-bp1abc" + ARABIC_INDIC_ZERO),
    lambda: validate.check_id("set_id", "acs-2026112" + ARABIC_INDIC_THREE + "t060000-1a2b3c4d", "set"),
    lambda: vss_components.validate("present", "2." + ARABIC_INDIC_THREE + ".0"),
])
def test_a_path_or_id_with_a_non_breaking_space_or_another_scripts_digit_is_refused(check):
    with pytest.raises(ValueError, match=r"is refused|is not"):
        check()


def test_an_unmount_path_with_a_non_breaking_space_is_refused():
    assert "is refused" in refused_mount("/data" + NBSP)
    assert "is refused" in refused_mount("/data" + ARABIC_INDIC_ZERO)


@pytest.mark.parametrize("value", [ARABIC_INDIC_THREE, "\u00b2", "2" + NBSP])
def test_a_member_count_tag_in_another_script_proves_nothing_and_never_raises(value):
    # "٣".isdigit() and int("٣") == 3; "²".isdigit() but int("²") raises: neither is a count this collection wrote.
    count, problem = ss.declared_members([{ss.TAG_MEMBERS: value}])
    assert count is None and "not a number of snapshots" in problem
    assert ss.declared_members([{ss.TAG_MEMBERS: "3"}]) == (3, None)


def _patterns():
    """Every regular expression the plugins hold, as (where, pattern, flags)."""
    import importlib
    import pathlib

    root = pathlib.Path(validate.__file__).resolve().parents[1]
    for path in sorted(root.glob("*_utils/*.py")):
        module = importlib.import_module(
            f"ansible_collections.appconsistent.snapshots.plugins.{path.parent.name}.{path.stem}")
        for name, value in vars(module).items():
            if isinstance(value, re.Pattern):
                yield f"{path.parent.name}/{path.name}:{name}", value.pattern, value.flags
    for provider, forms in validate.ID_FORMS.items():
        for kind, (pattern, _text) in forms.items():
            yield f"ID_FORMS[{provider}][{kind}]", pattern, 0
    for option, pattern, _text in validate.RATE_OPTIONS:
        yield f"RATE_OPTIONS[{option}]", pattern, 0


def test_no_pattern_of_the_plugins_uses_a_unicode_class_without_re_ascii():
    unicode_classes = re.compile(r"(?<!\\)(?:\\\\)*\\[dDsSwWb]")
    found = [where for where, pattern, flags in _patterns() if unicode_classes.search(pattern) and not flags & re.ASCII]
    assert not found, f"\\d, \\s, \\w or \\b without re.ASCII (they match other scripts' digits and U+00A0): {found}"
    assert len(list(_patterns())) > 20  # the walk found the patterns
