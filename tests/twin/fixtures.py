"""Pytest fixtures that start and stop the twin clouds.

``twin_factory(fleet=None, latency=None, faults=None, blockstore=False, aws=True, alicloud=True, limits=None)``
starts both twins on ephemeral loopback ports and returns a :class:`twin.launcher.Twins`
(``.aws`` / ``.alicloud`` handles, ``.endpoints``, ``.aws_client(service)``, ``.ecs_client()``,
``.faults``, ``.latency``, ``.limits``, ``.stats``, ``.blockstore``).  ``blockstore=True`` gives the twins a
block store in the test's temporary directory.  Everything is stopped at teardown, also when the
test fails.  ``twin`` is the same with :data:`DEFAULT_FLEET`.
"""

from __future__ import annotations

import copy

import pytest

from twin.launcher import start_twins

DEFAULT_FLEET = {
    "instances": [
        {"provider": "aws", "name": "web-1", "platform": "linux", "tags": {"env": "test", "role": "web"},
         "volumes": [{"device": "/dev/xvda", "size": 8, "boot": True}, {"device": "/dev/xvdf", "size": 20}]},
        {"provider": "aws", "name": "db-1", "platform": "linux", "tags": {"env": "test", "role": "db"},
         "volumes": [{"device": "/dev/xvda", "size": 8, "boot": True}, {"device": "/dev/xvdf", "size": 50},
                     {"device": "/dev/xvdg", "size": 50}]},
        {"provider": "aws", "name": "sql-1", "platform": "windows", "tags": {"env": "test", "role": "sql"},
         "volumes": [{"device": "/dev/sda1", "size": 30, "boot": True}, {"device": "xvdf", "size": 100}]},
        {"provider": "alicloud", "id": "i-bp1twin00000000001", "name": "ali-web-1", "platform": "linux",
         "zone": "cn-hangzhou-h", "tags": {"env": "test"},
         "volumes": [{"device": "/dev/xvda", "size": 40, "type": "cloud_essd", "boot": True},
                     {"device": "/dev/xvdb", "size": 100, "type": "cloud_essd"}]},
        {"provider": "alicloud", "id": "i-bp1twin00000000002", "name": "ali-win-1", "platform": "windows",
         "zone": "cn-hangzhou-h", "tags": {"env": "test"},
         "volumes": [{"device": "/dev/xvda", "size": 40, "type": "cloud_essd", "boot": True},
                     {"device": "/dev/xvdb", "size": 100, "type": "cloud_essd"}]},
    ],
}


@pytest.fixture
def twin_factory(tmp_path):
    started = []

    def factory(fleet=None, latency=None, faults=None, blockstore=False, aws=True, alicloud=True, seed=None, limits=None):
        store = str(tmp_path / f"blocks-{len(started)}") if blockstore else None
        twins = start_twins(copy.deepcopy(fleet) if isinstance(fleet, dict) else (fleet or copy.deepcopy(DEFAULT_FLEET)),
                            latency=latency, faults=faults, blockstore=store, aws=aws, alicloud=alicloud, seed=seed,
                            limits=limits)
        started.append(twins)
        return twins

    try:
        yield factory
    finally:
        for twins in reversed(started):
            twins.stop()


@pytest.fixture
def twin(twin_factory):
    return twin_factory()
