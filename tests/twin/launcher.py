"""Start and stop both twin clouds together with one shared configuration.

Used by ``python -m twin`` (``make twin``) and by the pytest fixtures.  One LatencyModel, one
Faults, one Limits (the account's request buckets), one CallCounter and (when needed) one BlockStore
are made here and given to both twins.
"""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Union

from twin.core.blockstore import BlockStore
from twin.core.faults import Faults, as_faults
from twin.core.fleet import Fleet, load_fleet, parse_fleet
from twin.core.latency import LatencyModel, as_model
from twin.core.limits import Limits, as_limits
from twin.core.stats import CallCounter


def alicloud_module():
    """The Alibaba twin's server module, or None while it does not exist."""
    try:
        return importlib.import_module("twin.alicloud.server")
    except ImportError as exc:
        if "twin.alicloud" in str(exc) or getattr(exc, "name", "") in ("twin.alicloud", "twin.alicloud.server"):
            return None
        raise


@dataclass
class Twins:
    """Running twins: ``aws`` and ``alicloud`` handles (None when not started) and the shared objects."""

    fleet: Fleet
    latency: LatencyModel
    faults: Faults
    stats: CallCounter
    limits: Limits
    blockstore: Optional[BlockStore] = None
    aws: Any = None
    alicloud: Any = None
    endpoints: Dict[str, Any] = field(default_factory=dict)

    def aws_client(self, service: str, **kwargs):
        """A boto3 client for the AWS twin."""
        return self.aws.client(service, **kwargs)

    def ecs_client(self):
        """An official Alibaba ECS SDK client for the Alibaba twin."""
        if hasattr(self.alicloud, "client"):
            return self.alicloud.client()
        from alibabacloud_ecs20140526.client import Client  # pylint: disable=import-outside-toplevel
        from alibabacloud_tea_openapi.models import Config  # pylint: disable=import-outside-toplevel
        ep = self.endpoints["alicloud"]
        return Client(Config(access_key_id=ep["access_key_id"], access_key_secret=ep["access_key_secret"],
                             endpoint=ep["endpoint"], protocol=ep["protocol"], region_id=ep["region"]))

    def write_endpoints(self, path: str) -> str:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(self.endpoints, handle, indent=2, sort_keys=True)
            handle.write("\n")
        os.replace(tmp, path)
        return path

    def stop(self) -> None:
        """Stop both twins and release the block store; safe to call twice."""
        errors = []
        for name in ("alicloud", "aws"):
            handle = getattr(self, name)
            if handle is not None:
                try:
                    handle.stop()
                except Exception as exc:  # pylint: disable=broad-except
                    errors.append(f"{name}: {exc}")
                setattr(self, name, None)
        if self.blockstore is not None:
            self.blockstore.close()
            self.blockstore = None
        if errors:
            raise RuntimeError("stopping the twins: " + "; ".join(errors))


def _alicloud_endpoint(handle, fleet: Fleet, host: str) -> Dict[str, Any]:
    if hasattr(handle, "endpoint") and callable(handle.endpoint):
        return handle.endpoint()
    creds = fleet.credentials.get("alicloud", {})
    return {"endpoint": f"{host}:{handle.port}", "protocol": "http", "region": creds.get("region"),
            "access_key_id": creds.get("access_key_id"), "access_key_secret": creds.get("access_key_secret"),
            "instances": dict(getattr(handle, "instances", {}) or {})}


def start_twins(fleet: Union[Fleet, Dict[str, Any], str], host: str = "127.0.0.1", aws_port: int = 0,
                alicloud_port: int = 0, latency=None, faults=None, blockstore: Union[None, bool, str, BlockStore] = None,
                aws: bool = True, alicloud: bool = True, seed: Optional[int] = None, limits=None) -> Twins:
    """Start the twins for ``fleet``.

    ``limits``: ``none``, ``published``, a mapping (see core/limits.py) or None for the fleet's setting,
    else the latency profile's default (published with realistic latency, none with zero).

    ``blockstore``: a BlockStore, a directory for one, True (required: raises without a directory)
    or None (made only when a volume of the fleet has an ``image``; needs a directory then).
    """
    if isinstance(fleet, str):
        fleet = load_fleet(fleet)
    elif isinstance(fleet, dict):
        fleet = parse_fleet(fleet)
    latency = as_model(latency if latency is not None else fleet.latency)
    faults = as_faults(faults if faults is not None else fleet.faults, seed=seed)
    limits = as_limits(limits if limits is not None else fleet.limits, latency=latency, faults=faults)
    stats = CallCounter()
    store = blockstore if isinstance(blockstore, BlockStore) else None
    if isinstance(blockstore, str):
        store = BlockStore(blockstore)
    elif store is None and any(v.image for i in fleet.instances for v in i.volumes):
        raise ValueError("the fleet has volumes backed by images: pass a block store (or a directory for one)")
    twins = Twins(fleet=fleet, latency=latency, faults=faults, stats=stats, limits=limits, blockstore=store)
    try:
        if aws:
            from twin.aws import server as aws_server  # pylint: disable=import-outside-toplevel
            twins.aws = aws_server.start(fleet, host=host, port=aws_port, latency=latency, faults=faults,
                                         blockstore=store, stats=stats, limits=limits)
            twins.endpoints["aws"] = twins.aws.endpoint()
        module = alicloud_module() if alicloud else None
        if module is not None:
            twins.alicloud = module.start(fleet, host=host, port=alicloud_port, latency=latency, faults=faults,
                                          blockstore=store, stats=stats, limits=limits)
            twins.endpoints["alicloud"] = _alicloud_endpoint(twins.alicloud, fleet, host)
    except BaseException:
        twins.stop()
        raise
    return twins
