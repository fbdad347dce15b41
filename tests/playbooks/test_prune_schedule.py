"""The prune playbook passes the retention schedule through, as a command line or an AWX survey gives it."""

from __future__ import annotations

import datetime

from playbooks.conftest import fleet_inventory, playbook_vars, read_report

from ansible_collections.appconsistent.snapshots.plugins.module_utils import snapshot_set as ss
from twin.aws.seeding import seed_snapshots

WEB = {"provider": "aws", "name": "web-1", "platform": "linux", "zone": "us-east-1a",
       "volumes": [{"device": "/dev/xvda", "size": 1, "boot": True}]}
FLEET = {"instances": [WEB]}
DAYS = 10


def seed_days(twins):
    """One application-consistent set at 06:00 UTC on each of the DAYS days before today: [(set_id, created)]."""
    ec2 = twins.aws_client("ec2")
    iid = twins.endpoints["aws"]["instances"]["web-1"]
    volume = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["BlockDeviceMappings"][0]
    today = datetime.datetime.now(datetime.timezone.utc).date()
    sets = []
    for back in range(1, DAYS + 1):
        created = datetime.datetime.combine(today - datetime.timedelta(days=back), datetime.time(6),
                                            tzinfo=datetime.timezone.utc)
        sets.append((ss.new_set_id(created), created))
    seed_snapshots(twins.aws, [dict(volume_id=volume["Ebs"]["VolumeId"], start_time=created,
                                    tags=ss.set_tags(set_id, iid, "application", device="/dev/xvda", members=1))
                               for set_id, created in sets])
    return sets


def test_the_schedule_reaches_the_module_and_unanswered_survey_questions_do_not(twin_factory, run_playbook, tmp_path):
    twins = twin_factory(FLEET, alicloud=False)
    sets = seed_days(twins)
    inventory = fleet_inventory(tmp_path / "hosts.yml", twins, FLEET)
    base = dict(playbook_vars(twins), target="fleet")
    # As an AWX survey sends them: unanswered integers empty, the consistency question answered by its default.
    survey = dict(keep_daily=3, keep_weekly="", keep_monthly="", keep_yearly="", prune_min_consistency="application")
    check = run_playbook("prune", inventory, dict(base, appconsistent_report_dir=str(tmp_path / "s"), **survey),
                         check=True)
    assert check.rc == 0, check
    host = read_report(tmp_path / "s", "prune")["hosts"][0]
    assert host["status"] == "planned"
    assert sorted(host["deleted"]) == sorted(set_id for set_id, _created in sets[3:])
    kept = {k["set_id"]: k["reasons"] for k in host["kept"]}
    assert {set_id: reasons[0] for set_id, reasons in kept.items()} == {
        set_id: f"daily {created:%Y-%m-%d}" for set_id, created in sets[:3]}

    # No schedule: the survey's consistency answer alone is not passed (the module would refuse it), and sets
    # without a delete-after never expire.
    plain = run_playbook("prune", inventory, dict(base, appconsistent_report_dir=str(tmp_path / "p"),
                                                  keep_daily="", prune_min_consistency="application"), check=True)
    assert plain.rc == 0, plain
    host = read_report(tmp_path / "p", "prune")["hosts"][0]
    assert (host["status"], host["deleted"], len(host["kept"])) == ("planned", [], DAYS)
