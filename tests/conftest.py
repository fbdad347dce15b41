"""Test-suite wide setup.

The ``run_tasks`` fixture runs tasks with a real ansible-playbook against the twin clouds.

Makes the twin clouds importable as ``twin``, registers their fixtures, and
makes this checkout importable as ``ansible_collections.appconsistent.snapshots``
when it does not already sit in an ``ansible_collections`` tree.
"""

import json
import os
import subprocess
import sys

import pytest
import yaml

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TESTS_DIR)

if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)


def _collection_root():
    parts = REPO_ROOT.split(os.sep)
    if len(parts) >= 3 and parts[-3] == "ansible_collections":
        return os.sep.join(parts[:-3])
    root = os.path.join(REPO_ROOT, "build", "pytest-collections")
    link = os.path.join(root, "ansible_collections", "appconsistent", "snapshots")
    if not os.path.islink(link):
        os.makedirs(os.path.dirname(link), exist_ok=True)
        try:
            os.symlink(REPO_ROOT, link)
        except FileExistsError:  # another test process made it first
            pass
    return root


_ROOT = _collection_root()
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

COLLECTIONS = os.path.join(REPO_ROOT, "build", "collections")
# The test plays' own action (write_test_results), which hands registered results to the test without a module run.
TEST_ACTION_PLUGINS = os.path.join(TESTS_DIR, "plugins", "action")

try:  # the twin clouds need moto; the oldest-ansible environment runs unit tests without them
    from twin.fixtures import twin, twin_factory  # noqa: F401  pylint: disable=unused-import
except ImportError:
    pass


def connection_defaults(endpoints):
    """module_defaults for the collection's group, from the twins' endpoints."""
    defaults = {}
    aws = endpoints.get("aws")
    if aws:
        defaults.update(endpoint_url=aws["endpoint_url"], region=aws["region"], access_key=aws["access_key_id"],
                        secret_key=aws["secret_access_key"])
    ali = endpoints.get("alicloud")
    if ali:
        defaults.update(alicloud_endpoint=ali["endpoint"], alicloud_protocol=ali["protocol"],
                        alicloud_region=ali["region"], alicloud_access_key=ali["access_key_id"],
                        alicloud_secret_key=ali["access_key_secret"])
    return defaults


class PlaybookRun:
    def __init__(self, rc, results, stdout, stderr):
        self.rc = rc
        self.results = results
        self.stdout = stdout
        self.stderr = stderr

    def __getitem__(self, name):
        return self.results[name]


@pytest.fixture
def run_tasks(tmp_path):
    """run_tasks(tasks, endpoints, check=False) runs the tasks in one play on localhost.

    Every task that has ``register`` is run with ``ignore_errors`` so that its result,
    failures included, comes back in ``run[name]``.
    """
    counter = [0]

    def run(tasks, endpoints, check=False, extra_vars=None):
        counter[0] += 1
        out = tmp_path / f"results-{counter[0]}.json"
        names = [t["register"] for t in tasks if "register" in t]
        for task in tasks:
            if "register" in task:
                task.setdefault("ignore_errors", True)
        collect = {"name": "Collect the registered results", "write_test_results": {
            "dest": str(out), "content": "{{ {" + ", ".join(f"'{n}': {n}" for n in names) + "} | to_json }}"},
            "check_mode": False}
        play = [{"name": "integration", "hosts": "localhost", "gather_facts": False,
                 "module_defaults": {"group/appconsistent.snapshots.snapshots": connection_defaults(endpoints)},
                 "tasks": tasks + [collect]}]
        playbook = tmp_path / f"play-{counter[0]}.yml"
        playbook.write_text(yaml.safe_dump(play, sort_keys=False))
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_LOCALHOST_WARNING="false",
                   ANSIBLE_INVENTORY_UNPARSED_WARNING="false", ANSIBLE_NOCOLOR="1",
                   ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_ACTION_PLUGINS=TEST_ACTION_PLUGINS)
        cmd = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,", "-c", "local",
               str(playbook)]
        if check:
            cmd.append("--check")
        if extra_vars:
            cmd += ["-e", json.dumps(extra_vars)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)
        results = json.loads(out.read_text()) if out.exists() else {}
        if not out.exists():
            raise AssertionError(f"playbook did not finish (rc {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}")
        return PlaybookRun(proc.returncode, results, proc.stdout, proc.stderr)

    return run
