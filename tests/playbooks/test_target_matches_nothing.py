"""Issue 19.2: a target that matches no host fails the run in one sentence and still writes its report.

Ansible only warns about a play whose pattern matches nothing and exits 0, so a nightly job whose group was
renamed would back up nothing and succeed. No cloud is called on this path, so no twin is started.
"""

from __future__ import annotations

import html

import pytest
import yaml

from playbooks.conftest import read_report

# Every playbook that takes target, with what else it needs to get past its own checks.
PLAYBOOKS = {
    "fleet_backup": ("backup", {}),
    "pre_patch_backup": ("backup", {"change_ticket": "CHG-1"}),
    "restore": ("restore", {}),
    "verify_restore": ("verify", {"verify_instance_id": "i-0123456789abcdef0", "verify_host": "localhost"}),
    "prune": ("prune", {}),
}


def inventory(path):
    doc = {"all": {"children": {
        "backup_daily": {"hosts": {"web-1": {"instance_id": "i-0123456789abcdef0", "platform": "linux"}}},
        "databases": {"hosts": {"db-1": {"instance_id": "i-0fedcba9876543210", "platform": "linux"}}}}}}
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize("name", sorted(PLAYBOOKS))
def test_a_target_that_matches_no_host_fails_and_writes_its_report(run_playbook, tmp_path, name):
    kind, extra = PLAYBOOKS[name]
    reports = tmp_path / "reports"
    run = run_playbook(name, inventory(tmp_path / "hosts.yml"),
                       dict(extra, target="backup_dialy", appconsistent_report_dir=str(reports)))
    assert run.rc != 0, run
    sentence = ("target 'backup_dialy' matches no host of the inventory, so nothing was done: check the host pattern "
                "and the inventory given with -i.")
    assert sentence in run.stdout, run
    report = read_report(reports, name)
    assert (report["kind"], report["target"], report["error"]) == (kind, "backup_dialy", sentence)
    assert report["hosts"] == [] and report["summary"]["hosts"] == 0
    assert f"FAILED: {html.escape(sentence)}" in (reports / f"{name}.html").read_text()


@pytest.mark.parametrize("name", sorted(PLAYBOOKS))
def test_a_limit_that_leaves_out_every_target_host_fails_and_writes_its_report(run_playbook, tmp_path, name):
    # --limit db-1 leaves out localhost and every host of target: Ansible skips every play and exits 0.
    kind, extra = PLAYBOOKS[name]
    reports = tmp_path / "reports"
    run = run_playbook(name, inventory(tmp_path / "hosts.yml"),
                       dict(extra, target="backup_daily", appconsistent_report_dir=str(reports)),
                       extra_args=["--limit", "db-1"])
    assert run.rc != 0, run
    sentence = ("target 'backup_daily' matches no host within --limit 'db-1', so nothing was done: check the host "
                "pattern, the inventory given with -i and the limit.")
    assert sentence in run.stdout, run
    report = read_report(reports, name)
    assert (report["kind"], report["target"], report["error"]) == (kind, "backup_daily", sentence)
    assert report["hosts"] == []


@pytest.mark.parametrize("name", ["fleet_backup", "prune"])
def test_a_mistyped_target_is_refused_also_when_the_limit_leaves_out_localhost(run_playbook, tmp_path, name):
    # --limit web-1 leaves out localhost, where the request used to be checked.
    kind, extra = PLAYBOOKS[name]
    reports = tmp_path / "reports"
    run = run_playbook(name, inventory(tmp_path / "hosts.yml"),
                       dict(extra, target="backup_dialy", appconsistent_report_dir=str(reports)),
                       extra_args=["--limit", "web-1"])
    assert run.rc != 0, run
    assert "target 'backup_dialy' matches no host within --limit 'web-1'" in run.stdout, run
    assert read_report(reports, name)["kind"] == kind
