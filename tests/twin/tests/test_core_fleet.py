"""Fleet files: the shipped ones load, mistakes are reported."""

import glob
import os

import pytest

from twin.core.fleet import FleetError, load_fleet, parse_fleet

FLEETS = sorted(glob.glob(os.path.join(os.path.dirname(os.path.dirname(__file__)), "fleets", "*.yml")))


@pytest.mark.parametrize("path", FLEETS, ids=os.path.basename)
def test_shipped_fleets_load(path):
    fleet = load_fleet(path)
    assert fleet.instances
    assert all(inst.volumes and sum(v.boot for v in inst.volumes) == 1 for inst in fleet.instances)


def test_generated_instances_and_defaults():
    fleet = parse_fleet({"generate": [{"count": 3, "provider": "aws", "name_prefix": "x-",
                                       "template": {"volumes": [{"device": "/dev/xvda"}, {"device": "/dev/xvdf", "size": 2}]}}]})
    assert [i.name for i in fleet.instances] == ["x-0000", "x-0001", "x-0002"]
    first = fleet.instances[0]
    assert first.platform == "linux" and first.execution == "simulated" and first.agent.status == "online"
    assert first.volumes[0].boot and not first.volumes[1].boot
    assert fleet.credentials["aws"]["region"] == "us-east-1"


@pytest.mark.parametrize("doc, words", [
    ({"instances": [{"provider": "gcp", "name": "a"}]}, "provider"),
    ({"instances": [{"provider": "aws"}]}, "name"),
    ({"instances": [{"provider": "aws", "name": "a", "platform": "bsd"}]}, "platform"),
    ({"instances": [{"provider": "aws", "name": "a", "agent": {"status": "asleep"}}]}, "agent.status"),
    ({"instances": [{"provider": "aws", "name": "a", "colour": "red"}]}, "colour"),
    ({"instances": [{"provider": "aws", "name": "a"}, {"provider": "aws", "name": "a"}]}, "duplicate"),
])
def test_mistakes_are_reported(doc, words):
    with pytest.raises(FleetError) as err:
        parse_fleet(doc)
    assert words in str(err.value)
