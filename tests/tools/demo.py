"""`make demo`: a fleet-wide application-consistent backup, a restore and its verification, on the twin clouds.

The demo fleet has AWS Windows (VSS) and Linux instances, Alibaba Cloud Windows and Linux instances,
and one AWS instance whose SSM agent is offline. The AWS Linux instance `web-1` runs "locally": its data
volume is a real ext4 filesystem, loop-mounted on this machine, holding a small SQLite shop database.
Its set is made by the collection's freeze helper (prescript, fsfreeze, CreateSnapshots, thaw), exactly
as on a real instance.

Steps: start the twins, run `appconsistent.snapshots.fleet_backup` over the whole fleet, print a table
per host, damage the database, restore `web-1` from its set with `appconsistent.snapshots.restore`,
show that the data is back, then prove with `appconsistent.snapshots.verify_restore` that the set
restores to a clean filesystem whose database passes its integrity check. Everything the demo mounted
or started is removed at the end; the reports stay in build/demo/reports.

Needs root (loop devices, mount, fsfreeze). Run it through `make demo`, which prepares the environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TESTS = os.path.join(ROOT, "tests")
sys.path.insert(0, TESTS)

from twin.launcher import start_twins  # noqa: E402  pylint: disable=wrong-import-position

BUILD = os.path.join(ROOT, "build", "demo")
COLLECTIONS = os.path.join(ROOT, "build", "collections")
HELPER = os.path.join(ROOT, "roles", "consistency_scripts", "files", "appconsistent-freeze")
ROLE = "AppSnapshotRamRole"
BOLD, RED, GREEN, YELLOW, RESET = ("\033[1m", "\033[31m", "\033[32m", "\033[33m", "\033[0m") \
    if sys.stdout.isatty() else ("", "", "", "", "")


def say(text=""):
    print(text, flush=True)


def step(text):
    say(f"\n{BOLD}==> {text}{RESET}")


def sh(*argv, check=True):
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=120)


def demo_fleet(data_image, data_mount):
    return {
        "credentials": {"aws": {"access_key_id": "AKIDTWINEXAMPLE", "secret_access_key": "twin-secret-key",
                                "region": "us-east-1"},
                        "alicloud": {"access_key_id": "LTAItwinexample", "access_key_secret": "twin-secret-key",
                                     "region": "cn-hangzhou"}},
        "latency": "zero",
        # The account's request buckets as EC2 publishes them, on every caller (the instances' own calls too).
        "limits": "published",
        # An agent that is offline is reported as such within seconds instead of SSM's ten minutes.
        "faults": {"ssm_delivery_timeout": 3},
        "instances": [
            {"provider": "aws", "name": "web-1", "platform": "linux", "zone": "us-east-1a", "execution": "local",
             "role": "AppSnapshotRole", "tags": {"env": "demo", "app": "shop"},
             "volumes": [{"device": "/dev/xvda", "size": 8, "boot": True},
                         {"device": "/dev/xvdf", "size": 1, "image": data_image, "mount": data_mount}]},
            {"provider": "aws", "name": "sql-1", "platform": "windows", "zone": "us-east-1a", "role": "AppSnapshotRole",
             "tags": {"env": "demo", "app": "erp"},
             "volumes": [{"device": "/dev/sda1", "size": 50, "boot": True}, {"device": "xvdf", "size": 200}]},
            {"provider": "aws", "name": "legacy-1", "platform": "linux", "zone": "us-east-1a",
             "tags": {"env": "demo", "app": "legacy"}, "agent": {"status": "connection_lost"},
             "volumes": [{"device": "/dev/xvda", "size": 8, "boot": True}, {"device": "/dev/xvdf", "size": 10}]},
            # A scratch instance in web-1's zone for verify_restore, which never verifies on the production instance.
            {"provider": "aws", "name": "verify-1", "platform": "linux", "zone": "us-east-1a", "execution": "local",
             "tags": {"env": "demo", "app": "verification"}, "volumes": [{"device": "/dev/xvda", "size": 8, "boot": True}]},
            {"provider": "alicloud", "id": "i-bp1demo0000000000b1", "name": "ali-web-1", "platform": "linux",
             "zone": "cn-hangzhou-h", "role": ROLE, "tags": {"env": "demo", "app": "shop"},
             "volumes": [{"device": "/dev/xvda", "size": 40, "type": "cloud_essd", "boot": True},
                         {"device": "/dev/xvdb", "size": 100, "type": "cloud_essd"}]},
            {"provider": "alicloud", "id": "i-bp1demo0000000000b2", "name": "ali-sql-1", "platform": "windows",
             "zone": "cn-hangzhou-i", "role": ROLE, "tags": {"env": "demo", "app": "erp"},
             "volumes": [{"device": "/dev/xvda", "size": 60, "type": "cloud_essd", "boot": True},
                         {"device": "/dev/xvdb", "size": 200, "type": "cloud_essd"}]},
        ],
    }


class Demo:
    def __init__(self):
        self.twins = None
        self.mounted = []
        self.script_dir = None
        self.reports = os.path.join(BUILD, "reports")
        self.logs = os.path.join(BUILD, "logs")
        self.data_mount = os.path.join(BUILD, "mnt", "web-1-data")
        self.blocks = os.path.join(BUILD, "blocks")

    # --- set-up -----------------------------------------------------------------------------

    def prepare(self):
        if os.geteuid() != 0:
            raise SystemExit("make demo needs root: it loop-mounts the demo instance's data volume and freezes it.")
        for tool in ("mkfs.ext4", "losetup", "mount", "umount", "fsfreeze", "blkid", "e2fsck"):
            if shutil.which(tool) is None:
                raise SystemExit(f"{tool} is missing: install the Debian packages util-linux and e2fsprogs (make deb).")
        for path in (self.reports, self.logs, self.blocks):
            shutil.rmtree(path, ignore_errors=True)
        os.makedirs(self.data_mount, exist_ok=True)
        os.makedirs(self.reports)
        os.makedirs(self.logs)
        seed = os.path.join(BUILD, "web-1-data.img")
        with open(seed, "wb") as handle:
            handle.truncate(64 * 1024 * 1024)
        sh("mkfs.ext4", "-q", "-F", "-L", "shopdata", seed)
        # Scripts must be root-owned, 0700, in a directory nobody else can write, or they are not run.
        self.script_dir = tempfile.mkdtemp(prefix="appconsistent-demo-", dir="/run")
        database = os.path.join(self.data_mount, "shop", "orders.db")
        checkpoint = (f"{sys.executable} -c \"import sqlite3; "
                      f"sqlite3.connect('{database}').execute('PRAGMA wal_checkpoint(TRUNCATE)')\"")
        self._script("prescript.sh", f"{checkpoint}\necho \"$(date -u +%FT%TZ) prescript: database checkpointed\" "
                                     f">> {self.script_dir}/scripts.log\n")
        self._script("postscript.sh", f"echo \"$(date -u +%FT%TZ) postscript: writes resume\" >> {self.script_dir}/scripts.log\n")
        return seed

    def _script(self, name, body):
        path = os.path.join(self.script_dir, name)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write("#!/bin/sh\nset -e\n" + body)
        os.chmod(path, 0o700)

    def start(self, seed):
        self.twins = start_twins(demo_fleet(seed, self.data_mount), blockstore=self.blocks)
        self.twins.write_endpoints(os.path.join(BUILD, "endpoints.json"))
        self.mount_data()

    def data_link(self):
        iid = self.twins.endpoints["aws"]["instances"]["web-1"]
        return os.path.join(self.twins.blockstore.root, "instances", iid, "xvdf")

    def mount_data(self):
        sh("mount", "-o", "loop", self.data_link(), self.data_mount)
        self.mounted.append(self.data_mount)

    def unmount_data(self):
        result = sh("umount", self.data_mount, check=False)
        if result.returncode != 0:
            holders = sh("fuser", "-vm", self.data_mount, check=False)
            raise SystemExit(f"cannot unmount {self.data_mount}: {result.stderr.strip()} {holders.stderr.strip()}")
        self.mounted.remove(self.data_mount)

    def cleanup(self):
        for target in reversed(self.mounted):
            sh("fsfreeze", "-u", target, check=False)
            if sh("umount", target, check=False).returncode != 0:
                sh("umount", "-l", target, check=False)
        self.mounted = []
        if self.twins is not None:
            self.twins.stop()
            self.twins = None
        if self.script_dir:
            shutil.rmtree(self.script_dir, ignore_errors=True)

    # --- the shop database ---------------------------------------------------------------------

    @contextlib.contextmanager
    def connection(self):
        """A connection that commits on success and is always closed (the volume is unmounted later)."""
        db = sqlite3.connect(self.database())
        try:
            with db:
                yield db
        finally:
            db.close()

    def database(self):
        return os.path.join(self.data_mount, "shop", "orders.db")

    def fill_database(self, orders):
        os.makedirs(os.path.dirname(self.database()), exist_ok=True)
        with self.connection() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, item TEXT, amount REAL)")
            db.executemany("INSERT INTO orders (item, amount) VALUES (?, ?)",
                           [(f"item-{n}", n * 1.5) for n in range(orders)])
        return self.count_orders()

    def count_orders(self):
        with self.connection() as db:
            return db.execute("SELECT count(*) FROM orders").fetchone()[0]

    def damage_database(self):
        with self.connection() as db:
            db.execute("DELETE FROM orders WHERE id % 2 = 0")
        return self.count_orders()

    # --- playbooks ------------------------------------------------------------------------------

    def extra_vars(self):
        aws, ali = self.twins.endpoints["aws"], self.twins.endpoints["alicloud"]
        return {
            "appconsistent_aws": {"endpoint_url": aws["endpoint_url"], "region": aws["region"],
                                  "access_key": aws["access_key_id"], "secret_key": aws["secret_access_key"]},
            "appconsistent_alicloud": {"alicloud_endpoint": ali["endpoint"], "alicloud_protocol": ali["protocol"],
                                       "alicloud_region": ali["region"], "alicloud_access_key": ali["access_key_id"],
                                       "alicloud_secret_key": ali["access_key_secret"]},
            "appconsistent_backup_options": {
                "aws": {"mounts": [self.data_mount], "exclude_boot_disk": True, "freeze_helper_path": HELPER,
                        "pre_script_path": os.path.join(self.script_dir, "prescript.sh"),
                        "post_script_path": os.path.join(self.script_dir, "postscript.sh"), "freeze_timeout": 15},
                "alicloud": {"ram_role_name": ROLE}},
        }

    def inventory(self):
        ids = dict(self.twins.endpoints["aws"]["instances"])
        ids.update(self.twins.endpoints["alicloud"]["instances"])
        doc = {"all": {"children": {"demo_fleet": {"children": {
            "aws_fleet": {"hosts": {n: {"instance_id": ids[n], "provider": "aws"} for n in ("web-1", "sql-1", "legacy-1")}},
            "alicloud_fleet": {"hosts": {n: {"instance_id": ids[n], "provider": "alicloud"}
                                         for n in ("ali-web-1", "ali-sql-1")}}}}}}}
        path = os.path.join(BUILD, "inventory.json")
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(doc, handle, indent=2)
        return path

    def playbook(self, name, inventory, **extra):
        extra = dict(self.extra_vars(), appconsistent_report_dir=os.path.join(self.reports, name), **extra)
        vars_file = os.path.join(BUILD, f"{name}-vars.json")
        with open(vars_file, "w", encoding="utf-8") as handle:
            json.dump(extra, handle, indent=2)
        os.chmod(vars_file, 0o600)
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_NOCOLOR="1",
                   ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_LOCALHOST_WARNING="false",
                   PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
        cmd = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), f"appconsistent.snapshots.{name}",
               "-i", inventory, "-e", f"@{vars_file}"]
        say(f"    $ ansible-playbook appconsistent.snapshots.{name} -i build/demo/inventory.json "
            + " ".join(f"-e {k}={v if len(str(v)) < 40 else '<see ' + os.path.relpath(vars_file, ROOT) + '>'}"
                       for k, v in extra.items() if not k.startswith("appconsistent_"))
            + " -e @<connection settings>")
        started = time.monotonic()
        log = os.path.join(self.logs, f"{name}.log")
        with open(log, "w", encoding="utf-8") as handle:
            proc = subprocess.run(cmd, env=env, stdout=handle, stderr=subprocess.STDOUT, timeout=600, check=False,
                                  cwd=ROOT)
        report_path = os.path.join(self.reports, name, f"{name}.json")
        if not os.path.exists(report_path):
            with open(log, encoding="utf-8") as handle:
                tail = handle.read()[-3000:]
            raise SystemExit(f"{name} wrote no report (exit code {proc.returncode}); the end of {log}:\n{tail}")
        with open(report_path, encoding="utf-8") as handle:
            report = json.load(handle)
        say(f"    finished in {time.monotonic() - started:.0f} s, exit code {proc.returncode}; log: {os.path.relpath(log, ROOT)}")
        return proc.returncode, report


def status_text(status):
    colour = {"ok": GREEN, "failed": RED, "warning": YELLOW}.get(status, "")
    return f"{colour}{status.upper():<7}{RESET}"


def print_backup_table(report):
    say(f"    {'HOST':<10} {'CLOUD':<9} {'PLATFORM':<8} {'STATUS':<7} {'CONSISTENCY':<12} {'SET':<28} SNAPSHOTS  REASON")
    for row in report["hosts"]:
        reason = row.get("error") or ""
        if row.get("freeze_window") is not None:
            reason = f"filesystems frozen {row['freeze_window']:.2f} s" + (f"; {reason}" if reason else "")
        say(f"    {row['host']:<10} {row['provider']:<9} {row['platform'] or '':<8} {status_text(row['status'])} "
            f"{row['consistency']:<12} {row['set_id'] or '-':<28} {len(row['snapshots']):>9}  {reason}")


def main():
    demo = Demo()
    started = time.monotonic()
    try:
        step("Setting up: an ext4 data volume for web-1 and root-owned pre/post scripts")
        seed = demo.prepare()
        step("Starting the twin clouds (AWS: moto + SSM + VSS; Alibaba Cloud: ECS + Cloud Assistant)")
        demo.start(seed)
        say("    6 instances: web-1 (AWS Linux, real ext4 volume), sql-1 (AWS Windows, VSS), legacy-1 (AWS Linux, "
            "SSM agent offline),\n    ali-web-1 (Alibaba Linux) and ali-sql-1 (Alibaba Windows), both with the "
            "app-snapshot plug-in,\n    and verify-1, a scratch AWS instance for the verification")
        orders = demo.fill_database(1000)
        say(f"    web-1's shop database holds {orders} orders")
        inventory = demo.inventory()

        step("Backing up the whole fleet at application consistency (one module call per cloud)")
        rc, backup = demo.playbook("fleet_backup", inventory, target="demo_fleet", run_id="DEMO-1", retention="7d")
        print_backup_table(backup)
        ok = [r for r in backup["hosts"] if r["status"] == "ok" and r["consistency"] == "application"]
        failed = [r["host"] for r in backup["hosts"] if r["status"] == "failed"]
        if failed != ["legacy-1"] or len(ok) != 4 or rc == 0:
            raise SystemExit(f"unexpected backup outcome (exit code {rc}): failed hosts {failed}, "
                             f"{len(ok)} application-consistent")
        say(f"    -> {len(ok)} hosts application-consistent; legacy-1 failed because its agent is offline, "
            "and only legacy-1 failed (exit code 2).")

        step("Damaging web-1's data after the backup")
        say(f"    half of the orders deleted: {demo.damage_database()} orders left")

        step("Restoring web-1 from its set (volumes replaced at the same devices; the old ones are kept)")
        demo.unmount_data()
        rc, restore = demo.playbook("restore", inventory, target="web-1")
        row = restore["hosts"][0]
        for volume in row.get("volumes", []):
            say(f"    {volume.get('device')}: {volume.get('original_volume_id')} -> {volume.get('volume_id')} "
                f"({volume.get('outcome')})")
        if rc != 0 or row["status"] != "ok":
            raise SystemExit(f"the restore failed: {row.get('error')}")
        demo.mount_data()
        say(f"    web-1's shop database holds {demo.count_orders()} orders again (set {row['set_id']})")

        step("Verifying the set: restored to scratch volumes, fsck, read-only mount, database integrity check")
        integrity = (f"{sys.executable} -c \"import sqlite3,sys; db=sqlite3.connect('file:' + sys.argv[1] + "
                     "'/shop/orders.db?mode=ro&immutable=1', uri=True); "
                     "ok=db.execute('PRAGMA integrity_check').fetchone()[0]; "
                     "n=db.execute('SELECT count(*) FROM orders').fetchone()[0]; "
                     "print(ok, n, 'orders'); sys.exit(0 if ok == 'ok' and n > 0 else 1)\" \"$APPCONSISTENT_MOUNT\"")
        device_path = ("{{ appconsistent_twin_store }}/instances/{{ verify_instance_id }}/"
                       "{{ appconsistent_volume.device | basename }}")
        rc, verify = demo.playbook(
            "verify_restore", inventory, target="web-1",
            verify_instance_id=demo.twins.endpoints["aws"]["instances"]["verify-1"], verify_host="localhost",
            verify_profile="command", verify_command=integrity, verify_device_path=device_path,
            appconsistent_twin_store=demo.twins.blockstore.root)
        row = verify["hosts"][0]
        for check in row.get("checks", []):
            say(f"    {check['name']}: {check['result']}")
        if rc != 0 or row["status"] != "ok":
            raise SystemExit(f"the verification failed: {row.get('error')}")

        step(f"Done in {time.monotonic() - started:.0f} s. The reports:")
        for name in ("fleet_backup", "restore", "verify_restore"):
            say(f"    {os.path.relpath(os.path.join(demo.reports, name, name + '.html'), ROOT)}")
        say("    open the HTML reports in a browser; the .json next to each one holds the same data.")
        return 0
    finally:
        demo.cleanup()


if __name__ == "__main__":
    sys.exit(main())
