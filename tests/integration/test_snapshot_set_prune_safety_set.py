"""The safety group restore_volumes takes before ResetDisk: an offline set of the replaced data, never a newest set."""

import time

from test_snapshot_set_info import ALI_WEB
from test_snapshot_set_info import TICK
from test_snapshot_set_info import ali_set

RESTORE = "appconsistent.snapshots.restore_volumes"
PRUNE = "appconsistent.snapshots.snapshot_set_prune"
INFO = "appconsistent.snapshots.snapshot_set_info"


def test_the_safety_group_is_neither_the_newest_set_nor_the_protected_one(twin_factory, run_tasks):
    twins = twin_factory(aws=False)
    backup, _members = ali_set(twins, ALI_WEB)  # an application-consistent set of the instance
    time.sleep(TICK)
    run = run_tasks([{RESTORE: {"provider": "alicloud", "snapshot_group_id": backup}, "register": "restore"}],
                    twins.endpoints)
    assert run["restore"]["changed"] is True and not run["restore"].get("failed"), run["restore"].get("msg")
    safety = run["restore"]["safety_snapshot_group_id"]
    run = run_tasks([
        {INFO: {"provider": "alicloud", "instance_ids": [ALI_WEB]}, "register": "all"},
        {INFO: {"provider": "alicloud", "instance_ids": [ALI_WEB], "newest_only": True, "min_consistency": "application"},
         "register": "newest"},
        {PRUNE: {"provider": "alicloud", "instance_ids": [ALI_WEB], "keep": 0, "expired": False}, "register": "prune"},
    ], twins.endpoints, check=True)
    # It is not the instance's newest set (restore latest, a copy of the newest) ...
    assert [s["set_id"] for s in run["newest"]["sets"]] == [backup]
    # ... nor the set protect_newest_application keeps while everything else goes.
    prune = run["prune"]
    assert {k["set_id"]: k["reason_code"] for k in prune["kept"]} == {backup: "newest_application"}, prune
    assert [d["set_id"] for d in prune["deleted"]] == [safety]
    listed = {s["set_id"]: s for s in run["all"]["sets"]}
    # The safety group is listed, as what it is: offline data of before the restore, saying which set it made room for.
    assert listed[safety]["consistency"] == "offline" and listed[safety]["safety_for"] == backup
    assert listed[backup]["safety_for"] is None
