"""Cross-region CopySnapshot and snapshot sharing on the AWS twin (one endpoint, the client's region picks the backend)."""

import subprocess

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from twin.aws.testing import tags_of, wait_for

DESTINATION = "eu-west-1"
VOLUMES = [{"device": "/dev/xvda", "size": 8, "boot": True}, {"device": "/dev/xvdf", "size": 1, "image": None}]


def region_client(twins, region):
    ep = twins.endpoints["aws"]
    return boto3.client("ec2", endpoint_url=ep["endpoint_url"], region_name=region, aws_access_key_id=ep["access_key_id"],
                        aws_secret_access_key=ep["secret_access_key"], config=Config(retries={"total_max_attempts": 1}))


@pytest.fixture
def source(twin_factory, tmp_path):
    image = tmp_path / "data.img"
    subprocess.run(["truncate", "-s", "1G", str(image)], check=True)
    with open(image, "r+b") as handle:
        handle.seek(4096)
        handle.write(b"twin-copy-marker" * 256)
    volumes = [VOLUMES[0], dict(VOLUMES[1], image=str(image))]
    twins = twin_factory({"instances": [{"provider": "aws", "name": "src", "platform": "linux", "volumes": volumes}]},
                         latency={"profile": "zero", "transitions": {"snapshot_complete": 0.3}}, blockstore=True,
                         alicloud=False)
    ec2 = twins.aws_client("ec2")
    iid = twins.aws.instances["src"]
    snaps = ec2.create_snapshots(InstanceSpecification={"InstanceId": iid, "ExcludeBootVolume": True})["Snapshots"]
    wait_for(lambda: ec2.describe_snapshots(SnapshotIds=[snaps[0]["SnapshotId"]])["Snapshots"][0]["State"] == "completed")
    return twins, ec2, snaps[0]["SnapshotId"]


def test_copy_across_regions_copies_the_image_and_completes_later(source):
    twins, ec2, snap_id = source
    dest = region_client(twins, DESTINATION)
    copy = dest.copy_snapshot(SourceRegion=twins.aws.region, SourceSnapshotId=snap_id, Description="copy of the set",
                              Encrypted=True, KmsKeyId="alias/aws/ebs",
                              TagSpecifications=[{"ResourceType": "snapshot", "Tags": [{"Key": "set", "Value": "s1"}]}])
    copied = dest.describe_snapshots(SnapshotIds=[copy["SnapshotId"]])["Snapshots"][0]
    assert copied["State"] == "pending" and copied["Encrypted"] is True and tags_of(copied) == {"set": "s1"}
    assert copied["StartTime"].microsecond % 1000 == 0  # milliseconds, as AWS gives them
    wait_for(lambda: dest.describe_snapshots(SnapshotIds=[copy["SnapshotId"]])["Snapshots"][0]["State"] == "completed",
             what="copy completed")
    full = dest.describe_snapshots(SnapshotIds=[copy["SnapshotId"]])["Snapshots"][0]["FullSnapshotSizeInBytes"]
    assert 4096 <= full < 2 ** 30  # the allocated bytes of the sparse image, not the 1 GiB volume size
    # the copy lives in the destination region only
    with pytest.raises(ClientError):
        ec2.describe_snapshots(SnapshotIds=[copy["SnapshotId"]])
    ext = twins.aws.cloud.ext_for(DESTINATION)
    with open(ext.snapshot_images[copy["SnapshotId"]], "rb") as handle:
        handle.seek(4096)
        assert handle.read(16) == b"twin-copy-marker"
    # a volume restored in the destination region carries the data
    volume = dest.create_volume(SnapshotId=copy["SnapshotId"], AvailabilityZone=DESTINATION + "a")
    with open(ext.volume_images[volume["VolumeId"]], "rb") as handle:
        handle.seek(4096)
        assert handle.read(16) == b"twin-copy-marker"


def test_concurrent_copy_limit_per_destination_region(source):
    twins, _ec2, snap_id = source
    twins.faults.update({"copy_snapshot_limit": 2})
    # The copies must still be pending when the third one is asked for, however slow this machine is.
    twins.latency.update({"profile": "zero", "transitions": {"snapshot_complete": 5.0}})
    dest = region_client(twins, DESTINATION)
    for _attempt in range(2):
        dest.copy_snapshot(SourceRegion=twins.aws.region, SourceSnapshotId=snap_id)
    with pytest.raises(ClientError) as err:
        dest.copy_snapshot(SourceRegion=twins.aws.region, SourceSnapshotId=snap_id)
    assert err.value.response["Error"]["Code"] == "ResourceLimitExceeded"
    # another destination region has its own limit
    region_client(twins, "us-west-2").copy_snapshot(SourceRegion=twins.aws.region, SourceSnapshotId=snap_id)
    wait_for(lambda: all(s["State"] == "completed" for s in dest.describe_snapshots(OwnerIds=["self"])["Snapshots"]),
             what="copies completed")
    dest.copy_snapshot(SourceRegion=twins.aws.region, SourceSnapshotId=snap_id)


def test_share_and_unshare_create_volume_permission(source):
    _twins, ec2, snap_id = source

    def permissions():
        return ec2.describe_snapshot_attribute(SnapshotId=snap_id, Attribute="createVolumePermission")["CreateVolumePermissions"]
    assert permissions() == []
    ec2.modify_snapshot_attribute(SnapshotId=snap_id, Attribute="createVolumePermission", OperationType="add",
                                  UserIds=["111122223333"])
    assert permissions() == [{"UserId": "111122223333"}]
    ec2.modify_snapshot_attribute(SnapshotId=snap_id, CreateVolumePermission={"Add": [{"Group": "all"}]})
    assert {"Group": "all"} in permissions()
    ec2.modify_snapshot_attribute(SnapshotId=snap_id, CreateVolumePermission={"Remove": [{"Group": "all"},
                                                                                         {"UserId": "111122223333"}]})
    assert permissions() == []
