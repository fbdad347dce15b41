"""`make check` picks the integration tests of the modules a change reaches: a missed module means a change
that passes `make check` and fails `make test`."""

from __future__ import annotations

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
SPEC = importlib.util.spec_from_file_location("changed_tests", ROOT / "tests" / "tools" / "changed_tests.py")
changed_tests = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(changed_tests)


def test_a_changed_module_runs_its_integration_tests() -> None:
    tests = changed_tests.integration_tests(["plugins/modules/app_consistent_group.py"])
    assert tests == ["tests/integration/test_app_consistent_group_alicloud.py",
                     "tests/integration/test_app_consistent_group_alicloud_plugin_limits.py",
                     "tests/integration/test_app_consistent_group_aws.py",
                     "tests/integration/test_app_consistent_group_aws_safety.py"]


def test_a_changed_module_utils_file_reaches_the_modules_that_import_it() -> None:
    assert changed_tests.reached_modules(["plugins/module_utils/set_share.py"]) == {"snapshot_set_share"}


def test_a_module_utils_file_imported_through_another_reaches_its_modules() -> None:
    # snapshot_set.py is imported by the other module_utils files (as `import snapshot_set as ss`), and
    # through them by every module.
    modules = {path.stem for path in (ROOT / "plugins" / "modules").glob("*.py")}
    assert changed_tests.reached_modules(["plugins/module_utils/snapshot_set.py"]) == modules


def test_a_changed_integration_test_runs_and_other_files_add_none() -> None:
    tests = changed_tests.integration_tests(["tests/integration/test_vss_components.py", "docs/guide.md", "Makefile"])
    assert tests == ["tests/integration/test_vss_components.py"]
