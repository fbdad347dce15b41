"""The HTML report of a real fleet_backup run, opened in headless Chromium at 1280 px, and the report filters' own rules."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser

import pytest

from ansible_collections.appconsistent.snapshots.plugins.filter import report as report_filter

from playbooks.conftest import REPO_ROOT_DIR

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]
WIDTH, HEIGHT = 1280, 900
SCREENSHOTS = os.path.join(REPO_ROOT_DIR, "build", "report-screenshots")

# Appended to a copy of the report (the report itself has no script): it writes what Chromium laid out into
# an attribute of <html>, which --dump-dom then prints. Writing an attribute changes no layout.
MEASURE = """<script>
(function () {
  function box(el) { var r = el.getBoundingClientRect();
    return {left: r.left, right: r.right, top: r.top, bottom: r.bottom,
            clipped: el.scrollWidth > el.clientWidth + 1 || el.scrollHeight > el.clientHeight + 1}; }
  var rows = [].slice.call(document.querySelectorAll('tr[data-host]')).map(function (tr) {
    return {host: tr.getAttribute('data-host'), status: tr.className, top: tr.getBoundingClientRect().top}; });
  var reasons = [].slice.call(document.querySelectorAll('tr[data-reason-for] td[data-field=error]')).map(function (td) {
    var b = box(td); b.host = td.parentNode.getAttribute('data-reason-for'); b.text = td.textContent; return b; });
  var cells = [].slice.call(document.querySelectorAll('#hosts td')).map(box);
  document.documentElement.setAttribute('data-measure', JSON.stringify({
    width: window.innerWidth, height: window.innerHeight, scroll_width: document.documentElement.scrollWidth,
    rows: rows, reasons: reasons, cells_right: Math.max.apply(null, cells.map(function (c) { return c.right; }))}));
})();
</script>"""


def chromium():
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


class PageParser(HTMLParser):
    """The measurements MEASURE wrote, and the hosts table's rows as {field: text} with the row's status class."""

    def __init__(self):
        super().__init__()
        self.rows, self.headers, self.measure = [], [], None
        self._row = None
        self._field = None
        self._in_th = False
        self._depth = 0  # tables nested in a cell (snapshots, volumes) are part of the cell's text

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "html" and attrs.get("data-measure"):
            self.measure = json.loads(attrs["data-measure"])
        elif tag == "tr" and "data-host" in attrs and self._field is None:
            self._row = {"_class": attrs.get("class"), "_host": attrs["data-host"]}
        elif tag == "td" and self._row is not None and self._field is None:
            self._field = attrs.get("data-field")
            self._row[self._field] = ""
        elif tag == "td" and self._field is not None:
            self._depth += 1
        elif tag == "th" and self._row is None:
            self._in_th = True
            self.headers.append("")

    def handle_endtag(self, tag):
        if tag == "tr" and self._row is not None and self._field is None:
            self.rows.append(self._row)
            self._row = None
        elif tag == "td" and self._depth:
            self._depth -= 1
            self._row[self._field] += " "
        elif tag == "td":
            self._field = None
        elif tag == "th":
            self._in_th = False

    def handle_data(self, data):
        if self._row is not None and self._field:
            self._row[self._field] += data
        elif self._in_th:
            self.headers[-1] += data


def render(html_path, screenshot):
    """One Chromium start: a screenshot of the page at 1280 px, and the DOM with the layout MEASURE recorded."""
    browser = chromium()
    if browser is None:
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    with tempfile.TemporaryDirectory() as scratch:
        measured = os.path.join(scratch, "report.html")
        with open(html_path, encoding="utf-8") as source, open(measured, "w", encoding="utf-8") as copy:
            copy.write(source.read().replace("</body>", MEASURE + "</body>"))
        proc = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={scratch}/profile",
                               f"--window-size={WIDTH},{HEIGHT}", f"--screenshot={screenshot}", "--dump-dom",
                               f"file://{measured}"], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    parser = PageParser()
    parser.feed(proc.stdout)
    assert parser.measure, "the page's measurements are missing from Chromium's DOM"
    return parser


def check_json_report(reports):
    """The JSON beside the page keeps its keys and adds totals, times and restore commands."""
    with open(reports / "fleet_backup.json", encoding="utf-8") as handle:
        report = json.load(handle)
    assert [row["status"] for row in report["hosts"]][:2] == ["failed", "failed"]
    kept = {"host", "instance_id", "provider", "platform", "consistency_requested", "consistency", "set_id",
            "snapshots", "duration", "freeze_window", "downtime", "agent_status", "error", "status"}
    added = {"start", "end", "delete_after", "size_gib", "lock", "restore"}
    for row in report["hosts"]:
        assert kept | added <= set(row), row
    sql = next(row for row in report["hosts"] if row["host"] == "sql-1")
    assert sql["restore"]["playbook"] == "appconsistent.snapshots.restore"
    assert sql["restore"]["vars"] == {"target": "sql-1", "set_id": sql["set_id"]}
    assert sql["size_gib"] == 80 and sql["start"] <= sql["end"]
    summary = report["summary"]
    # sql-1 30 + 50 GiB, ali-web-1 and ali-sql-1 40 + 100 GiB each.
    assert (summary["snapshots"], summary["size_gib"]) == (6, 360)
    assert summary["duration"] >= 0 and {"hosts", "ok", "warning", "failed", "planned", "by_consistency"} <= set(summary)
    assert all(call["started"] <= call["finished"] for call in report["calls"])


def test_chromium_at_1280_px_shows_failed_hosts_first_with_their_whole_reason(mixed_backup):
    _twins, _run, reports = mixed_backup
    # Both reports of the one fleet run in this test, so that the run is not repeated on another worker.
    check_json_report(reports)
    os.makedirs(SCREENSHOTS, exist_ok=True)
    screenshot = os.path.join(SCREENSHOTS, "fleet_backup-1280.png")
    page = render(reports / "fleet_backup.html", screenshot)
    with open(screenshot, "rb") as image:
        assert image.read(8) == b"\x89PNG\r\n\x1a\n"
    measure = page.measure
    assert measure["width"] == WIDTH

    # Nothing wider than the window: no sideways scrolling, no cell beyond the right edge.
    assert measure["scroll_width"] <= measure["width"], measure
    assert measure["cells_right"] <= measure["width"], measure

    # Failed hosts first (mystery is the inventory's last host), then the rest.
    order = [(row["host"], row["status"]) for row in measure["rows"]]
    statuses = [status for _host, status in order]
    assert statuses[:2] == ["failed", "failed"] and "failed" not in statuses[2:], order
    assert {host for host, status in order if status == "failed"} == {"legacy-1", "mystery"}

    # Every failed host's reason lies inside the viewport, whole (not clipped), under its own row.
    reasons = {r["host"]: r for r in measure["reasons"]}
    assert set(reasons) >= {"legacy-1", "mystery"}
    for host in ("legacy-1", "mystery"):
        box = reasons[host]
        assert 0 <= box["left"] and box["right"] <= measure["width"], box
        assert 0 <= box["top"] and box["bottom"] <= measure["height"], box
        assert not box["clipped"], box
    assert "ConnectionLost" in reasons["legacy-1"]["text"] and "has no instance_id" in reasons["mystery"]["text"]

    rows = {row["_host"]: row for row in page.rows}
    assert set(rows) == {"sql-1", "legacy-1", "ali-web-1", "ali-sql-1", "mystery"}
    assert "Expiry" in page.headers and "Freeze window" in page.headers and "Restore with" in page.headers
    # The cloud call's time is the run's, not a host's: it is shown once, above the table.
    assert not any("Cloud call" in header for header in page.headers)
    for host in ("sql-1", "ali-web-1", "ali-sql-1"):
        row = rows[host]
        assert row["_class"] == "ok" and row["status"].strip() == "OK"
        assert row["consistency"].strip() == "application \N{RIGHTWARDS ARROW} application"
        assert row["set_id"].strip() and ("snap-" in row["snapshots"] or "s-" in row["snapshots"])
        assert f"-e target={host}" in row["restore"] and f"-e set_id={row['set_id'].strip()}" in row["restore"]
        assert row["delete_after"].strip().endswith("Z") and row["start"].strip() != "n/a"
        # Only the freeze helper (AWS Linux) has a freeze window; these hosts are Windows or Alibaba Cloud.
        assert row["freeze_window"].strip() == "n/a"
    # One form of device name: Windows' bare xvdf reads /dev/xvdf like the rest.
    assert "/dev/xvdf" in rows["sql-1"]["snapshots"] and " xvdf" not in rows["sql-1"]["snapshots"]
    legacy = rows["legacy-1"]
    assert legacy["_class"] == "failed" and legacy["status"].strip() == "FAILED"
    assert legacy["restore"].strip() == "n/a" and legacy["set_id"].strip() == "n/a"
    # The command line that restores a set, once, with the inventory the run was given.
    html_text = (reports / "fleet_backup.html").read_text()
    assert (f"ansible-playbook appconsistent.snapshots.restore -i {reports.parent}/hosts.yml -e target=HOST "
            "-e set_id=SET --check") in html_text
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
