"""How the run reports read: restore and prune sentences, failed hosts first, one form of device name, locks."""

from __future__ import annotations

from ansible_collections.appconsistent.snapshots.plugins.filter import report as report_filter
from ansible_collections.appconsistent.snapshots.plugins.plugin_utils import report_render

AWS_ID, OTHER_ID = "i-0123456789abcdef0", "i-0fedcba9876543210"


def _entry(instance_id, **extra):
    entry = {"instance_id": instance_id, "platform": "linux", "status": "Success", "consistency_requested": "application",
             "consistency": "application", "set_id": "acs-20261207-1",
             "snapshots": [{"snapshot_id": "snap-1", "device": "/dev/xvdf", "volume_size": 50,
                            "start_time": "2026-12-07T02:00:03+00:00",
                            "tags": {"appconsistent:delete-after": "2026-12-14T02:00:00Z"}}]}
    entry.update(extra)
    return entry


def _prune(status, deleted, kept):
    return report_filter.restore_report([{"host": "web-1", "instance_id": AWS_ID, "provider": "aws", "platform": "linux",
                                          "status": status, "deleted": deleted, "kept": kept}],
                                        {"kind": "prune", "check_mode": status == "planned"})


def test_a_check_mode_prune_says_would_delete_and_names_each_set():
    report = _prune("planned", ["acs-1", "acs-2"], [{"set_id": "acs-3", "reason_code": "newest_application"}])
    text = report_filter.report_text(report)
    assert "Would delete 2 sets (acs-1, acs-2); keeps 1 set." in text
    page = report_filter.report_html(report)
    assert "Would delete 2 sets; keeps 1 set." in page
    assert "<td>acs-1</td><td>would delete</td>" in page
    assert "<td>acs-3</td><td>would keep</td><td>the newest application-consistent set, which is always kept</td>" in page
    assert "=" not in text.splitlines()[0]  # a sentence, not key=value


def test_a_prune_that_deleted_says_deleted_with_the_modules_own_reason_and_the_lock():
    report = _prune("ok", ["acs-1"], [{"set_id": "acs-3", "reason_code": "locked", "reason": "a member is locked",
                                       "locked_until": "2026-12-23T06:00:00Z"}])
    assert "Deleted 1 set (acs-1); kept 1 set." in report_filter.report_text(report)
    page = report_filter.report_html(report)
    assert "<td>acs-1</td><td>deleted</td>" in page
    assert "a member is locked (until 2026-12-23 06:00:00Z)" in page
    assert report_render.prune_sentence(dict(report["hosts"][0], deleted=[])) == "Deleted no set; kept 1 set."
    assert report_render.prune_sentence({"status": "failed", "deleted": [], "kept": []}) == "Nothing was pruned."
    assert report_filter.report_text(report).splitlines()[-1] == "1 host: 0 failed, 1 ok \N{MIDDLE DOT} Duration: n/a"


def test_restore_reads_as_a_sentence_with_a_table_of_volumes():
    rows = [{"host": "web-1", "instance_id": AWS_ID, "provider": "aws", "platform": "windows", "status": "ok",
             "set_id": "acs-1", "consistency": "application", "duration": 42.25,
             "volumes": [{"device": "xvdf", "snapshot_id": "snap-1", "volume_id": "vol-new", "original_volume_id": "vol-old",
                          "outcome": "replaced", "size": 50}]},
            {"host": "web-2", "instance_id": OTHER_ID, "provider": "aws", "platform": "linux", "status": "planned",
             "set_id": "acs-2", "consistency": "crash", "volumes": [{"device": "/dev/xvdf"}, {"device": "/dev/xvdg"}]}]
    report = report_filter.restore_report(rows, {"kind": "restore"})
    text = report_filter.report_text(report)
    assert f"OK  web-1 ({AWS_ID}): Restored set acs-1 (application) onto {AWS_ID}: 1 volume in 42.2 s." in text
    assert f"Would restore set acs-2 (crash) onto {OTHER_ID}: 2 volumes." in text
    page = report_filter.report_html(report)
    assert ("<th>Device</th><th>Snapshot</th><th>Volume</th><th>Replaced</th><th>Outcome</th>" in page
            and "<td>/dev/xvdf</td><td>snap-1</td><td>vol-new</td><td>vol-old</td><td>replaced</td>" in page)
    assert "outcome=" not in page and "outcome=" not in text
    # The JSON keeps the device as the cloud named it; only the reading is in one form.
    assert report["hosts"][1]["volumes"][0] == {"device": "xvdf", "snapshot_id": "snap-1", "volume_id": "vol-new",
                                                "original_volume_id": "vol-old", "outcome": "replaced"}


def test_a_failed_restore_or_verify_gives_its_reason_under_a_sentence():
    rows = [{"host": "db-1", "instance_id": AWS_ID, "provider": "aws", "platform": "linux", "set_id": "acs-1",
             "consistency": "application", "checks": [{"name": "mysql", "result": "InnoDB recovery failed"}],
             "error": "InnoDB recovery failed"}]
    report = report_filter.restore_report(rows, {"kind": "verify"})
    text = report_filter.report_text(report)
    assert f"FAILED  db-1 ({AWS_ID}): Set acs-1 (application) did not verify. Reason: InnoDB recovery failed" in text
    page = report_filter.report_html(report)
    assert '<td class="reason" data-field="error" colspan="6"><b>Reason:</b> InnoDB recovery failed</td>' in page
    assert "<td>mysql</td><td>InnoDB recovery failed</td>" in page


def test_failed_hosts_come_first_then_warnings_then_the_rest_in_inventory_order():
    calls = [{"provider": "aws", "duration": 3.0,
              "result": {"results": [_entry(AWS_ID),
                                     _entry(OTHER_ID, consistency="none", set_id=None, snapshots=[], status="Failed")],
                         "failed_instances": [{"instance_id": OTHER_ID, "reason": "ConnectionLost: the agent is offline"}]}}]
    hosts = [{"host": "a-ok", "instance_id": AWS_ID, "provider": "aws", "platform": "linux"},
             {"host": "b-bad", "instance_id": OTHER_ID, "provider": "aws", "platform": "linux"},
             {"host": "c-none", "instance_id": "", "provider": "", "platform": "", "error": "the host has no instance_id"}]
    report = report_filter.backup_report(calls, hosts)
    assert [row["host"] for row in report["hosts"]] == ["b-bad", "c-none", "a-ok"]
    page = report_filter.report_html(report)
    assert page.index('data-host="b-bad"') < page.index('data-host="c-none"') < page.index('data-host="a-ok"')
    assert page.index('data-reason-for="b-bad"') < page.index('data-host="c-none"')
    lines = report_filter.report_text(report).splitlines()
    assert [line.split()[0] for line in lines[1:4]] == ["b-bad", "c-none", "a-ok"]


def test_a_backup_row_has_times_expiry_size_and_the_command_that_restores_its_set():
    calls = [{"provider": "aws", "duration": 3.0,
              "summary": {"provider": "aws", "instances": 1, "duration": 3.0, "started": "2026-12-07T02:00:00Z",
                          "finished": "2026-12-07T02:04:10Z"},
              "result": {"results": [_entry(AWS_ID, freeze_window=0.81234,
                                            helper={"freeze": {"t_start": 1796608801.5}, "thaw": {"t_thawed": 1796608802.4}})],
                         "failed_instances": []}}]
    hosts = [{"host": "db 1", "instance_id": AWS_ID, "provider": "aws", "platform": "linux"}]
    report = report_filter.backup_report(calls, hosts, {"inventory": ["/srv/inv/prod.yml"], "started": "2026-12-07T02:00:00Z",
                                                        "finished": "2026-12-07T02:05:00Z",
                                                        "calls": [calls[0]["summary"]]})
    row = report["hosts"][0]
    assert (row["start"], row["end"]) == ("2026-12-07T02:00:01Z", "2026-12-07T02:04:10Z")
    assert (row["delete_after"], row["size_gib"], row["freeze_window"]) == ("2026-12-14T02:00:00Z", 50, 0.812)
    assert row["restore"]["command"] == ("ansible-playbook appconsistent.snapshots.restore -i /srv/inv/prod.yml "
                                         "-e 'target=db 1' -e set_id=acs-20261207-1 --check")
    assert report["summary"]["duration"] == 300 and report["summary"]["size_gib"] == 50
    page = report_filter.report_html(report)
    assert "One call per cloud for all its hosts: aws: 1 instance in 3.0 s." in page
    assert "<dt>Duration</dt><dd>5 min 0 s</dd>" in page and "<dt>Total size</dt><dd>50 GiB</dd>" in page
    assert '<td class="freeze_window" data-field="freeze_window">0.8 s</td>' in page
    assert "Lock" not in page  # no result carried a lock


def test_a_lock_the_result_carries_is_shown():
    calls = [{"provider": "aws", "result": {"results": [
        _entry(AWS_ID, lock={"locked": True, "mode": "compliance", "until": "2027-01-07T00:00:00Z"}),
        _entry(OTHER_ID, lock={"locked": False, "mode": None, "until": None})], "failed_instances": []}}]
    hosts = [{"host": "a", "instance_id": AWS_ID, "provider": "aws"}, {"host": "b", "instance_id": OTHER_ID, "provider": "aws"}]
    report = report_filter.backup_report(calls, hosts)
    assert report["hosts"][0]["lock"]["mode"] == "compliance"
    page = report_filter.report_html(report)
    assert "<th>Lock</th>" in page
    assert '<td class="lock" data-field="lock">locked (compliance) until 2027-01-07 00:00:00Z</td>' in page
    assert '<td class="lock" data-field="lock">not locked</td>' in page


def test_device_names_read_in_one_form():
    assert [report_render.device_name(d) for d in ("xvdf", "/dev/xvdf", "sda1", "nvme1n1", "xvdb", None, "C:")] == \
        ["/dev/xvdf", "/dev/xvdf", "/dev/sda1", "/dev/nvme1n1", "/dev/xvdb", None, "C:"]


def test_a_lock_check_mode_plans_reads_as_what_a_run_would_lock():
    # app_consistent_group, vss_snapshot and snapshot_set_copy give {locked: None, planned: {...}} in check mode.
    planned = {"locked": None, "planned": {"mode": "governance", "duration_days": 30, "expires_at": None,
                                           "cool_off_hours": None}}
    assert report_render.lock_text(planned) == "would be locked (governance) for 30 days"
    until = {"locked": None, "planned": {"mode": "compliance", "expires_at": "2027-01-07T00:00:00Z"}}
    assert report_render.lock_text(until) == "would be locked (compliance) until 2027-01-07 00:00:00Z"
    assert report_render.lock_text({"locked": None, "state": None}) == "unknown (the locks could not be read)"


def test_a_prune_under_a_schedule_says_which_generations_keep_each_set():
    rows = [{"host": "scope", "provider": "aws", "status": "planned", "deleted": ["set-old"],
             "kept": [{"set_id": "set-a", "reason_code": "schedule", "reasons": ["daily 2026-12-06", "weekly 2026-W49"]},
                      {"set_id": "set-b", "reason_code": "locked", "reasons": ["locked until 2027-01-07T00:00:00Z"],
                       "locked_until": "2027-01-07T00:00:00Z"}]}]
    page = report_filter.report_html(report_filter.restore_report(rows, {"kind": "prune", "check_mode": True}))
    assert "daily 2026-12-06; weekly 2026-W49" in page
    assert page.count("2027-01-07") == 1  # the lock's end once, not again after the reason that names it


def test_a_verify_row_shows_what_was_recorded_on_the_set():
    row = {"host": "db-1", "instance_id": AWS_ID, "provider": "aws", "platform": "linux", "status": "ok",
           "set_id": "acs-1", "consistency": "application", "checks": [{"name": "/dev/sdf filesystem", "result": "ok"}],
           "verification": {"result": "passed", "verified_at": "2026-12-07T06:12:40Z", "seconds_to_application": 41.5,
                            "checks": ["fs:ext4", "app:mysql"], "verified": True}}
    failed = dict(row, host="db-2", status="failed", error="application check failed",
                  verification={"result": "failed", "verified_at": "2026-12-07T06:13:00Z", "verified": False})
    report = report_filter.restore_report([row, failed], {"kind": "verify"})
    text = report_filter.report_text(report)
    assert "Recorded on the set: verified at 2026-12-07 06:12:40Z, application working after 41.5 s." in text
    assert "Recorded on the set: failed at 2026-12-07 06:13:00Z: not verified." in text
    page = report_filter.report_html(report)
    assert "<th>Last restore test</th>" in page
    assert 'data-field="verification">verified at 2026-12-07 06:12:40Z' in page
    assert 'data-field="verification">never tested' not in page


def test_rows_without_a_verification_get_no_column():
    report = report_filter.restore_report([{"host": "db-1", "instance_id": AWS_ID, "status": "ok", "set_id": "acs-1"}],
                                          {"kind": "verify"})
    assert "Last restore test" not in report_filter.report_html(report)
