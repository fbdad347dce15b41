"""A MariaDB set (AWS) and a PostgreSQL set (Alibaba Cloud) verified end to end, the record read back.

Each database keeps its data on a loop-mounted filesystem that is a volume of a local twin instance (db.DbLab,
as the consistency proof uses it), with its writer running. An application-consistent set is taken with
app_consistent_group, then the verify_restore playbook restores it to scratch volumes on a second local
instance, checks the filesystem read-only, runs the database profile's check on the read-only mount, removes
the scratch volumes and records the outcome on the set; snapshot_set_info then lists it as the instance's newest
verified set.
"""

from __future__ import annotations

import pytest

from e2e import db
from e2e.conftest import FilesystemFactory, e2e_unavailable_reason
from playbooks.conftest import fleet_inventory
from playbooks.conftest import playbook_vars
from playbooks.conftest import read_report
from playbooks.conftest import run_playbook  # noqa: F401  pylint: disable=unused-import

REASON = e2e_unavailable_reason() or db.unavailable_reason()
pytestmark = [pytest.mark.skipif(REASON is not None, reason=str(REASON)), pytest.mark.timeout(1200)]

ACG = "appconsistent.snapshots.app_consistent_group"
INFO = "appconsistent.snapshots.snapshot_set_info"
DEVICE_PATH = "{{ appconsistent_twin_store }}/instances/{{ verify_instance_id }}/{{ appconsistent_volume.device | basename }}"
VERIFIER_ID = "i-bp1dbverify00000001"


class VerifyLab(db.DbLab):
    """The lab with a verification instance per cloud beside the database instances."""

    def fleet(self) -> dict:
        spec = super().fleet()
        spec["instances"] += [
            {"provider": "aws", "name": "verify-1", "platform": "linux", "execution": "local",
             "volumes": [{"device": "/dev/xvda", "size": 8, "boot": True}]},
            {"provider": "alicloud", "name": "ali-verify-1", "id": VERIFIER_ID, "platform": "linux",
             "execution": "local", "zone": "cn-hangzhou-h",
             "volumes": [{"device": "/dev/xvda", "size": 40, "type": "cloud_essd", "boot": True}]},
        ]
        return spec


@pytest.mark.parametrize("database,provider,host,verifier,profile,datadir,fstype", [
    ("mariadb", "aws", "db-1", "verify-1", "mysql", "mysql", "ext4"),
    # XFS keeps the log of a frozen filesystem to be replayed: the check replays it on the scratch copy first.
    ("postgresql", "alicloud", "ali-db-1", "ali-verify-1", "postgresql", "pgdata", "xfs"),
])
def test_a_database_set_is_verified_and_its_record_read_back(
        tmp_path, run_tasks, run_playbook, database, provider, host, verifier, profile, datadir, fstype):
    lab = VerifyLab(tmp_path / "lab", FilesystemFactory, databases=(database,), fstypes={database: fstype})
    try:
        lab.setup()
        lab.start_writers()
        ids = dict(lab.twins.endpoints["aws"]["instances"], **lab.twins.endpoints["alicloud"]["instances"])
        take = {"provider": provider, "instance_ids": [ids[host]], "consistency": "application",
                "exclude_boot_disk": True, "delete_after": "1d", "pre_script_path": str(lab.prescript),
                "post_script_path": str(lab.postscript), "freeze_timeout": 20}
        if provider == "aws":
            take.update(mounts=lab.mountpoints(), freeze_helper_path=str(lab.helper))
        else:
            take.update(ram_role_name=db.ROLE_NAME)
        taken = run_tasks([{ACG: take, "register": "sets"}], lab.twins.endpoints)["sets"]
        assert not taken.get("failed"), taken
        set_id = taken["results"][0]["set_id"]
        assert taken["results"][0]["consistency"] == "application", taken["results"][0]
        assert not lab.writer_problems(), lab.writer_problems()

        spec = lab.fleet()
        inventory = fleet_inventory(tmp_path / "hosts.yml", lab.twins, spec)
        reports = tmp_path / "reports"
        run = run_playbook("verify_restore", inventory, dict(
            playbook_vars(lab.twins, reports), target=host, verify_instance_id=ids[verifier], verify_host="localhost",
            verify_profile=profile, verify_datadir=datadir, verify_device_path=DEVICE_PATH,
            appconsistent_twin_store=lab.twins.blockstore.root))
        assert run.rc == 0, "\n".join(line for line in run.stdout.splitlines() if "FAILED" in line)[-6000:]
        (row,) = read_report(reports, "verify_restore")["hosts"]
        assert row["status"] == "ok" and row["set_id"] == set_id, row
        assert [c["result"] for c in row["checks"]][0] == f"{fstype} clean", row["checks"]

        info = run_tasks([{INFO: {"provider": provider, "instance_ids": [ids[host]], "verified": True,
                                  "newest_only": True}, "register": "info"}], lab.twins.endpoints)["info"]
        (found,) = info["sets"]
        assert found["set_id"] == set_id
        record = found["verification"]
        assert record["verified"] is True and record["result"] == "passed", record
        assert record["checks"] == [f"fs:{fstype}", f"app:{profile}"], record
        assert record["seconds_to_application"] > 0
        assert all(m["tags"]["appconsistent:verification"].startswith("passed ") for m in found["members"])
    finally:
        problems = lab.teardown()
    assert not problems, problems
