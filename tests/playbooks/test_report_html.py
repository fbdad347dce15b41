"""The HTML report of a real fleet_backup run, opened in headless Chromium, and the report filters' own rules."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from html.parser import HTMLParser

import pytest

from ansible_collections.appconsistent.snapshots.plugins.filter import report as report_filter

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium():
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


class RowParser(HTMLParser):
    """Rows of the hosts table as {field: text}, with the row's status class."""

    def __init__(self):
        super().__init__()
        self.rows, self.headers = [], []
        self._row = None
        self._field = None
        self._in_th = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr" and "data-host" in attrs:
            self._row = {"_class": attrs.get("class"), "_host": attrs["data-host"]}
        elif tag == "td" and self._row is not None:
            self._field = attrs.get("data-field")
            self._row[self._field] = ""
        elif tag == "th":
            self._in_th = True
            self.headers.append("")

    def handle_endtag(self, tag):
        if tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None
        elif tag == "td":
            self._field = None
        elif tag == "th":
            self._in_th = False

    def handle_data(self, data):
        if self._row is not None and self._field:
            self._row[self._field] += data
        elif self._in_th:
            self.headers[-1] += data


def rendered_rows(html_path):
    """The DOM as Chromium built it from the file, parsed into rows."""
    browser = chromium()
    if browser is None:
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom",
                               f"file://{html_path}"], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    parser = RowParser()
    parser.feed(proc.stdout)
    return parser


def test_chromium_shows_one_row_per_host_with_its_outcome(mixed_backup):
    _twins, _run, reports = mixed_backup
    parsed = rendered_rows(reports / "fleet_backup.html")
    rows = {row["_host"]: row for row in parsed.rows}
    assert set(rows) == {"sql-1", "legacy-1", "ali-web-1", "ali-sql-1", "mystery"}
    assert "Achieved" in parsed.headers and "Error" in parsed.headers
    for host in ("sql-1", "ali-web-1", "ali-sql-1"):
        row = rows[host]
        assert row["_class"] == "ok" and row["status"].strip() == "OK"
        assert row["consistency"].strip() == "application" and row["consistency_requested"].strip() == "application"
        assert row["set_id"].strip() and ("snap-" in row["snapshots"] or "s-" in row["snapshots"])
        assert not row["error"].strip()
    legacy = rows["legacy-1"]
    assert legacy["_class"] == "failed" and legacy["status"].strip() == "FAILED"
    assert legacy["consistency"].strip() == "none" and "ConnectionLost" in legacy["error"]
    assert rows["ali-sql-1"]["target"].strip() == "alicloud / windows"


def test_values_are_escaped_and_nothing_external_is_loaded():
    report = report_filter.backup_report(
        [{"provider": "aws", "duration": 1.5,
          "result": {"results": [{"instance_id": "i-0123456789abcdef0", "platform": "linux", "status": "Failed",
                                  "consistency_requested": "application", "consistency": "none", "set_id": None,
                                  "snapshots": [], "error": {"code": "Boom", "message": "<script>alert(1)</script>"}}],
                     "failed_instances": [{"instance_id": "i-0123456789abcdef0",
                                           "reason": "<img src=x onerror=alert(1)>"}]}}],
        [{"host": "web<1>", "instance_id": "i-0123456789abcdef0", "provider": "aws", "platform": "linux"}],
        {"title": "T & <b>", "run_id": "\"quoted\""})
    page = report_filter.report_html(report)
    assert "<script" not in page and "<img" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and 'data-host="web&lt;1&gt;"' in page
    assert "T &amp; &lt;b&gt;" in page
    assert "http://" not in page and "https://" not in page and "src=" not in page.replace("src=x", "")


def test_a_host_without_result_fails_with_the_module_message():
    calls = [{"provider": "alicloud", "duration": 0.2,
              "result": {"failed": False, "msg": "InvalidAccessKeyId: set alicloud_access_key"}}]
    hosts = [{"host": "a", "instance_id": "i-bp1abcdefghij0000001", "provider": "alicloud", "platform": "linux"},
             {"host": "b", "instance_id": "", "provider": "", "platform": "", "error": "the host has no instance_id"}]
    report = report_filter.backup_report(calls, hosts, {"consistency": "application"})
    rows = {r["host"]: r for r in report["hosts"]}
    assert rows["a"]["status"] == "failed" and "InvalidAccessKeyId" in rows["a"]["error"]
    assert rows["b"]["error"] == "the host has no instance_id"
    assert report["failed_hosts"] == ["a", "b"] and report["summary"]["failed"] == 2


def test_a_fallback_kept_by_on_fallback_warn_is_a_warning_not_a_failure():
    calls = [{"provider": "aws", "result": {"results": [
        {"instance_id": "i-0123456789abcdef0", "status": "Success", "consistency_requested": "application",
         "consistency": "filesystem", "set_id": "acs-1", "snapshots": [{"snapshot_id": "snap-1", "device": "/dev/xvdf"}],
         "error": {"code": "ScriptsNotRun", "message": "the prescript is not root-owned"}, "freeze_window": 0.4321}],
        "failed_instances": []}}]
    hosts = [{"host": "db", "instance_id": "i-0123456789abcdef0", "provider": "aws", "platform": "linux"}]
    report = report_filter.backup_report(calls, hosts)
    row = report["hosts"][0]
    assert (row["status"], row["consistency"], row["freeze_window"]) == ("warning", "filesystem", 0.432)
    assert "ScriptsNotRun" in row["error"]
    text = report_filter.report_text(report)
    assert "WARNING" in text.splitlines()[1] and "1 with warnings" in text


def test_unknown_report_kind_is_refused():
    with pytest.raises(report_filter.AnsibleFilterError):
        report_filter.restore_report([], {"kind": "backupz"})
