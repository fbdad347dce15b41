"""Local command execution, call counters and the control API."""

import io
import json
import os
import signal
import time

from twin.core.control import ControlApp
from twin.core.faults import Faults
from twin.core.latency import LatencyModel
from twin.core.limits import Limits
from twin.core.runner import run_local
from twin.core.stats import CallCounter


def test_run_local_captures_output_exit_code_and_env():
    result = run_local('echo "out $TWIN_X"; echo err >&2; exit 3', env={"TWIN_X": "42"}, timeout=30)
    assert result.exit_code == 3 and not result.timed_out
    assert result.stdout == "out 42\n" and result.stderr == "err\n"
    assert result.finished >= result.started


def test_run_local_timeout_kills_the_whole_group(tmp_path):
    marker = tmp_path / "child.pid"
    result = run_local(f"sleep 30 & echo $! > {marker}; wait", timeout=1)
    assert result.timed_out and result.exit_code == -1
    child = int(marker.read_text())
    for _attempt in range(50):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.kill(child, signal.SIGKILL)
        raise AssertionError("child of a timed-out command survived")


def test_detached_helper_does_not_hold_the_command(tmp_path):
    marker = tmp_path / "helper.pid"
    result = run_local(f"setsid sleep 20 > /dev/null 2>&1 & echo $! > {marker}; echo done", timeout=10)
    try:
        assert result.exit_code == 0 and result.stdout == "done\n"
    finally:
        try:
            os.kill(int(marker.read_text()), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def test_call_counter_counts_per_provider():
    stats = CallCounter()
    for _attempt in range(3):
        stats.record("aws", "SendCommand")
    stats.record("alicloud", "RunCommand")
    assert stats.counts("aws") == {"SendCommand": 3}
    assert stats.counts() == {"aws": {"SendCommand": 3}, "alicloud": {"RunCommand": 1}}
    assert stats.total() == 4
    stats.reset()
    assert stats.counts() == {}


def test_call_counter_logs_throttled_answers_with_their_time():
    stats = CallCounter()
    stats.record_throttle("aws", "CreateSnapshots", "RequestLimitExceeded", at=100.0)
    stats.record_throttle("aws", "CreateSnapshots", "RequestLimitExceeded", at=101.5)
    stats.record_throttle("alicloud-instance-role", "CreateSnapshotGroup", "Throttling.User", at=102.0)
    assert stats.throttled("aws") == {"CreateSnapshots": 2}
    assert stats.throttled() == {"aws": {"CreateSnapshots": 2}, "alicloud-instance-role": {"CreateSnapshotGroup": 1}}
    assert [e["at"] for e in stats.throttle_log(since=101.0)] == [101.5, 102.0]
    assert [e["at"] for e in stats.throttle_log("aws", until=101.0)] == [100.0]
    stats.reset()
    assert stats.throttled() == {} and stats.throttle_log() == []


def _call(app, method, path, body=None):
    raw = json.dumps(body).encode() if body is not None else b""
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "CONTENT_LENGTH": str(len(raw)), "wsgi.input": io.BytesIO(raw)}
    seen = {}

    def start_response(status, headers):
        seen["status"] = status

    payload = b"".join(app(environ, start_response))
    return int(seen["status"].split()[0]), json.loads(payload)


def test_control_app_routes():
    stats, faults, latency = CallCounter(), Faults(), LatencyModel("zero")
    limits = Limits("none", faults=faults)
    app = ControlApp(stats, faults, latency, state=lambda: {"instances": [{"id": "i-1"}]}, limits=limits)
    stats.record("aws", "DescribeInstances")
    assert _call(app, "GET", "/_twin/stats") == (200, {"counts": {"aws": {"DescribeInstances": 1}}, "total": 1,
                                                       "throttled": {}})
    assert _call(app, "POST", "/_twin/stats/reset")[0] == 200 and stats.total() == 0
    status, body = _call(app, "POST", "/_twin/faults", {"throttle_rate": 1})
    assert status == 200 and body["throttle_rate"] == 1
    assert faults.api_error("aws", "X") == "RequestLimitExceeded"
    assert _call(app, "POST", "/_twin/faults/reset")[0] == 200 and faults.api_error("aws", "X") is None
    assert _call(app, "POST", "/_twin/latency", {"profile": "realistic"})[0] == 200 and latency.api("aws", "X") > 0
    assert _call(app, "POST", "/_twin/latency", {"profile": "nope"})[0] == 400
    assert _call(app, "GET", "/_twin/limits")[1]["profile"] == "none"
    status, body = _call(app, "POST", "/_twin/limits", {"CreateSnapshots": {"capacity": 5, "refill": 1}})
    assert status == 200 and body["profile"] == "published" and limits.overrides == {"CreateSnapshots": (5.0, 1.0)}
    assert _call(app, "POST", "/_twin/limits", {"profile": "nope"})[0] == 400
    assert _call(app, "GET", "/_twin/state")[1] == {"instances": [{"id": "i-1"}]}
    assert _call(app, "GET", "/_twin/nothing")[0] == 404
