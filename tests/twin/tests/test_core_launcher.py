"""Starting both twins: shared configuration, the endpoints file, ``python -m twin`` and the collection artifact."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request

import boto3
import pytest

from twin import __main__ as twin_main
from twin.aws.testing import wait_for
from twin.core.fleet import load_fleet
from twin.launcher import alicloud_module

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REPO_ROOT = os.path.dirname(TESTS_DIR)


def _post(url, path, body):
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def test_default_twin_fixture_and_endpoints(twin, tmp_path):
    ep = twin.endpoints["aws"]
    assert set(ep) >= {"endpoint_url", "region", "access_key_id", "secret_access_key", "instances"}
    assert ep["endpoint_url"].startswith("http://127.0.0.1:")
    assert set(ep["instances"]) == {"web-1", "db-1", "sql-1"}
    path = twin.write_endpoints(str(tmp_path / "build" / "endpoints.json"))
    with open(path, encoding="utf-8") as handle:
        assert json.load(handle) == twin.endpoints
    if twin.alicloud is not None:
        ali = twin.endpoints["alicloud"]
        assert set(ali) >= {"endpoint", "protocol", "region", "access_key_id", "access_key_secret", "instances"}
        assert set(ali["instances"]) == {"ali-web-1", "ali-win-1"}


def test_one_configuration_governs_both_twins(twin):
    if twin.alicloud is None:
        pytest.skip("the Alibaba twin is not available")
    _post(twin.aws.url, "/_twin/latency", {"profile": "realistic"})
    assert twin.latency.api("alicloud", "RunCommand") > 0
    _post(twin.aws.url, "/_twin/faults", {"throttle_rate": 0.5})
    assert twin.faults.get("throttle_rate") == 0.5
    ali_url = "http://" + twin.endpoints["alicloud"]["endpoint"]
    with urllib.request.urlopen(ali_url + "/_twin/faults", timeout=10) as resp:
        assert json.loads(resp.read())["throttle_rate"] == 0.5


def test_alicloud_module_is_optional():
    module = alicloud_module()
    assert module is None or hasattr(module, "start")


def test_make_twin_defaults_and_environment(monkeypatch):
    for name in ("TWIN_FLEET", "TWIN_AWS_PORT", "TWIN_ALICLOUD_PORT", "TWIN_HOST", "TWIN_ENDPOINTS", "TWIN_BLOCKSTORE",
                 "TWIN_LATENCY", "TWIN_LIMITS"):
        monkeypatch.delenv(name, raising=False)
    args = twin_main._args([])
    assert (args.aws_port, args.alicloud_port, args.host) == (18080, 18081, "127.0.0.1")
    assert args.fleet == os.path.join(TESTS_DIR, "twin", "fleets", "demo.yml")
    assert twin_main._path(args.endpoints) == os.path.join(REPO_ROOT, "build", "twin", "endpoints.json")
    assert args.latency is None and args.limits is None  # the fleet file's setting
    monkeypatch.setenv("TWIN_FLEET", "tests/twin/fleets/aws-1000.yml")
    monkeypatch.setenv("TWIN_AWS_PORT", "28080")
    monkeypatch.setenv("TWIN_ALICLOUD_PORT", "28081")
    args = twin_main._args([])
    assert (args.aws_port, args.alicloud_port) == (28080, 28081)
    assert twin_main._path(args.fleet) == os.path.join(REPO_ROOT, "tests", "twin", "fleets", "aws-1000.yml")
    assert twin_main._args(["--aws-port", "38080"]).aws_port == 38080  # options win over the environment
    monkeypatch.setenv("TWIN_LIMITS", "published")
    assert twin_main._args([]).limits == "published"
    assert twin_main._args(["--limits", '{"CreateSnapshots": {"capacity": 5, "refill": 1}}']).limits == \
        {"CreateSnapshots": {"capacity": 5, "refill": 1}}
    with pytest.raises(SystemExit):
        twin_main._args(["--limits", "fast"])


def test_python_dash_m_twin_help_describes_every_option():
    """Issue 19: `python -m twin --help` says what each option is, and which environment variable sets it."""
    help_text = subprocess.run([sys.executable, "-m", "twin", "--help"], cwd=TESTS_DIR, capture_output=True, text=True,
                               check=True).stdout
    options = re.findall(r"\[(--[a-z-]+)", help_text.split("\n\n")[0])
    assert len(options) == 8, options
    described, current = {}, None
    for line in help_text.split("options:", 1)[1].splitlines():
        match = re.match(r"^  (-[-a-z, ]+?)(?: [A-Z_]+)?(?:  +(.*))?$", line)
        if match and line.startswith("  -"):
            current = match.group(1).split(", ")[-1]
            described[current] = match.group(2) or ""
        elif current:
            described[current] += " " + line.strip()
    for option in options:
        text = " ".join(described.get(option, "").split())
        env = "TWIN_" + option[2:].upper().replace("-", "_")
        assert len(text) > 20 and env in text, f"{option}: {text!r} does not say what it is and that {env} sets it"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("custom_fleet", [False, True], ids=["demo-fleet", "TWIN_FLEET"])
def test_python_dash_m_twin_runs_in_the_foreground(tmp_path, custom_fleet):
    endpoints = tmp_path / "endpoints.json"
    env = dict(os.environ, TWIN_AWS_PORT="0", TWIN_ALICLOUD_PORT="0", TWIN_ENDPOINTS=str(endpoints),
               TWIN_BLOCKSTORE=str(tmp_path / "blocks"))
    env.pop("TWIN_FLEET", None)
    if custom_fleet:
        fleet = tmp_path / "fleet.yml"
        fleet.write_text("instances:\n  - {provider: aws, name: only-1, platform: linux, "
                         "volumes: [{device: /dev/xvda, size: 8, boot: true}]}\n", encoding="utf-8")
        env["TWIN_FLEET"] = str(fleet)
        expected = {"only-1"}
    else:
        demo = load_fleet(os.path.join(TESTS_DIR, "twin", "fleets", "demo.yml"))
        expected = {i.name for i in demo.instances if i.provider == "aws"}
    proc = subprocess.Popen([sys.executable, "-m", "twin"], cwd=TESTS_DIR, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: endpoints.exists() or proc.poll() is not None, timeout=90, what="endpoints.json")
        assert proc.poll() is None, proc.stdout.read().decode()
        ep = json.loads(endpoints.read_text())["aws"]
        assert set(ep["instances"]) == expected
        ec2 = boto3.client("ec2", endpoint_url=ep["endpoint_url"], region_name=ep["region"],
                           aws_access_key_id=ep["access_key_id"], aws_secret_access_key=ep["secret_access_key"])
        ids = {i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]}
        assert ids == set(ep["instances"].values())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert not endpoints.exists()
    mounted = subprocess.run(["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True, check=False).stdout
    assert str(tmp_path) not in mounted


def test_the_twin_is_not_in_the_collection_artifact(tmp_path):
    galaxy = os.path.join(REPO_ROOT, "galaxy.yml")
    if not os.path.exists(galaxy):
        pytest.skip("no galaxy.yml yet")
    ansible_galaxy = shutil.which("ansible-galaxy", path=os.path.dirname(sys.executable)) or shutil.which("ansible-galaxy")
    if not ansible_galaxy:
        pytest.skip("ansible-galaxy not installed")
    subprocess.run([ansible_galaxy, "collection", "build", REPO_ROOT, "--output-path", str(tmp_path)], check=True,
                   capture_output=True, env=dict(os.environ, ANSIBLE_NOCOLOR="1"))
    artifact = next(tmp_path.glob("*.tar.gz"))
    listing = subprocess.run(["tar", "-tzf", str(artifact)], check=True, capture_output=True, text=True).stdout.split()
    assert not [name for name in listing if name.startswith("tests/twin")], "the twin clouds are in the artifact"
