"""Mapping the disks the freeze helper names to the instance's EBS volumes (NVMe serials, Xen names)."""

import pytest

from ansible_collections.appconsistent.snapshots.plugins.module_utils.quiesced_volumes import quiesced_volumes
from ansible_collections.appconsistent.snapshots.plugins.module_utils.quiesced_volumes import volume_of_disk

ROOT, DATA, LOGS = "vol-0aaaaaaaaaaaaaaa1", "vol-0bbbbbbbbbbbbbbb2", "vol-0ccccccccccccccc3"


def mappings(*pairs):
    return [{"DeviceName": device, "Ebs": {"VolumeId": volume}} for device, volume in pairs]


NITRO = mappings(("/dev/xvda", ROOT), ("/dev/sdf", DATA), ("/dev/sdg", LOGS))


@pytest.mark.parametrize("serial, volume", [("vol0bbbbbbbbbbbbbbb2", DATA), ("vol-0bbbbbbbbbbbbbbb2", DATA),
                                            ("vol0ccccccccccccccc3  ", LOGS), ("vol0ddddddddddddddd4", None),
                                            ("AWS1B2C3D4E5F6A7B8C9", None), ("", None)])
def test_an_nvme_disk_is_its_volume_by_serial_whatever_its_name(serial, volume):
    assert volume_of_disk({"name": "nvme1n1", "serial": serial}, NITRO) == volume


@pytest.mark.parametrize("device", ["/dev/sdf", "/dev/xvdf", "sdf", "xvdf"])
def test_a_xen_disk_is_the_mapping_of_its_letters_with_sd_or_xvd(device):
    assert volume_of_disk({"name": "xvdf", "serial": None}, mappings(("/dev/sda1", ROOT), (device, DATA))) == DATA


def test_the_xen_root_device_sda1_is_xvda():
    assert volume_of_disk({"name": "xvda"}, mappings(("/dev/sda1", ROOT), ("/dev/sdf", DATA))) == ROOT


@pytest.mark.parametrize("name", ["xvdz", "loop3", "md0", "", "xvd"])
def test_a_name_that_matches_no_mapping_is_no_volume(name):
    assert volume_of_disk({"name": name}, mappings(("/dev/sda1", ROOT), ("/dev/sdf", DATA))) is None


def test_two_mappings_of_one_letter_are_not_guessed_between():
    assert volume_of_disk({"name": "xvdf"}, mappings(("/dev/sdf", DATA), ("/dev/xvdf", LOGS))) is None


def report(*mounts):
    return {"mounts": [dict(canonical=path, status=status, disks=disks) for path, status, disks in mounts]}


def test_the_volumes_beneath_every_frozen_filesystem():
    frozen = report(("/data", "frozen", [{"name": "nvme1n1", "serial": "vol0bbbbbbbbbbbbbbb2"},
                                         {"name": "nvme2n1", "serial": "vol0ccccccccccccccc3"}]),
                    ("/data/again", "duplicate", []))
    assert quiesced_volumes(frozen, NITRO) == ({DATA, LOGS}, None)


@pytest.mark.parametrize("mount, words", [
    (("/data", "frozen", [{"name": "nvme1n1", "serial": "vol0bbbbbbbbbbbbbbb2"}, {"name": "nvme9n1", "serial": "AWS9"}]),
     ["/data on nvme9n1", "serial AWS9"]),
    (("/data", "thawed", []), ["/data", "named no disk"]),
    (("/data", "frozen", None), ["/data", "predates version 1.2.0"]),
])
def test_any_disk_that_cannot_be_mapped_is_a_problem_named_in_full(mount, words):
    _volumes, problem = quiesced_volumes(report(mount), NITRO)
    assert problem and all(word in problem for word in words), problem


def test_a_report_with_nothing_frozen_is_a_problem():
    assert quiesced_volumes(report(("/data", "refused", [])), NITRO)[1]
    assert quiesced_volumes(None, NITRO)[1]
