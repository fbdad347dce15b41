"""HTTP front of the Alibaba twin: the ECS RPC endpoint the official SDK talks to, plus the ``/_twin/`` control API.

Usage::

    handle = start(fleet, port=0)
    config = Config(access_key_id=..., access_key_secret=..., endpoint=handle.url, protocol="http", region_id=handle.region)
    ...
    handle.stop()
"""

from __future__ import annotations

import json
from http import HTTPStatus
import os
import shutil
import tempfile
import threading
from socketserver import ThreadingMixIn
from typing import Any, Dict, List, Optional
from urllib.parse import parse_qsl
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from twin.core.blockstore import BlockStore
from twin.core.control import ControlApp, is_control
from twin.core.faults import as_faults
from twin.core.fleet import Fleet, load_fleet, parse_fleet
from twin.core.latency import as_model
from twin.core.limits import as_limits
from twin.core.stats import CallCounter

from .api import AliError, error_document, request_id
from .cloud import API_VERSION, AliCloud
from .ecs import PROVIDER
from .signing import verify_v2, verify_v3

# Common parameters of the legacy signature that are not parameters of the action.
V2_COMMON = ("Action", "Version", "Format", "Timestamp", "SignatureNonce", "SignatureMethod", "SignatureVersion",
             "AccessKeyId", "Signature", "SecurityToken", "SignatureType")


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
        """The twin does not log every request."""


def _headers(environ) -> Dict[str, List[str]]:
    out: Dict[str, List[str]] = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            out.setdefault(key[5:].replace("_", "-").lower(), []).append(value)
    if environ.get("CONTENT_TYPE"):
        out["content-type"] = [environ["CONTENT_TYPE"]]
    return out


class App:
    """WSGI application of one Alibaba twin."""

    def __init__(self, cloud: AliCloud, control: ControlApp) -> None:
        self.cloud = cloud
        self.control = control

    def __call__(self, environ, start_response):
        if is_control(environ):
            return self.control(environ, start_response)
        req_id = request_id()
        host = f"ecs.{self.cloud.region}.aliyuncs.com"
        try:
            body = self._handle(environ)
            body["RequestId"] = body.get("RequestId") or req_id
            req_id = body["RequestId"]
            status = "200 OK"
        except AliError as err:
            body = error_document(err, req_id, host)
            status = f"{err.status} {HTTPStatus(err.status).phrase}"
        except Exception as exc:  # pylint: disable=broad-except
            body = error_document(AliError("InternalError", f"The request processing has failed due to some unknown error: {exc}", 500),
                                  req_id, host)
            status = "500 Internal Server Error"
        payload = json.dumps(body).encode("utf-8")
        start_response(status, [("Content-Type", "application/json;charset=utf-8"), ("Content-Length", str(len(payload))),
                                ("x-acs-request-id", req_id)])
        return [payload]

    def _handle(self, environ) -> Dict[str, Any]:
        method = environ.get("REQUEST_METHOD", "GET")
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        raw = environ["wsgi.input"].read(length) if length else b""
        query = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
        headers = _headers(environ)
        form: Dict[str, str] = {}
        if raw and "application/x-www-form-urlencoded" in (headers.get("content-type") or [""])[0]:
            form = dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
        if "authorization" in headers:
            key = verify_v3(self.cloud.keys, method, environ.get("PATH_INFO") or "/", query, headers, raw)
            action = headers.get("x-acs-action", [""])[0]
            version = headers.get("x-acs-version", [""])[0]
            params = dict(query)
            params.update(form)
        elif "Signature" in query or "Signature" in form:
            merged = dict(query)
            merged.update(form)
            key = verify_v2(self.cloud.keys, method, merged)
            action = merged.get("Action", "")
            version = merged.get("Version", "")
            params = {k: v for k, v in merged.items() if k not in V2_COMMON}
        else:
            raise AliError("IncompleteSignature", "The request signature does not conform to Aliyun standards: no signature was sent.", 400)
        if version != API_VERSION:
            raise AliError("InvalidVersion", f"Specified parameter Version {version!r} is not valid.", 400)
        if not action:
            raise AliError("MissingAction", "Action is mandatory for this request.", 400)
        return self.cloud.call(action, params, principal=key.principal)


class Handle:
    """A running Alibaba twin."""

    def __init__(self, server: WSGIServer, thread: threading.Thread, cloud: AliCloud, owned: List[Any], fleet: Fleet) -> None:
        self._server = server
        self._thread = thread
        self.cloud = cloud
        self._owned = owned
        self.fleet = fleet
        self.host, self.port = server.server_address[:2]
        self.url = f"{self.host}:{self.port}"
        self.region = cloud.region
        self.regions = list(cloud.regions)
        self.access_key_id = cloud.access_key_id
        self.access_key_secret = cloud.access_key_secret
        self.security_token = cloud.security_token
        self.stats = cloud.stats
        self.faults = cloud.faults
        self.latency = cloud.latency
        self.limits = cloud.limits
        self.instances = {i.name: i.id for i in cloud.ecs.instances.values()}

    def endpoint(self) -> Dict[str, Any]:
        """This twin's entry of ``endpoints.json``."""
        out = {"endpoint": self.url, "protocol": "http", "region": self.region, "access_key_id": self.access_key_id,
               "access_key_secret": self.access_key_secret, "instances": dict(self.instances), "regions": list(self.regions)}
        if self.security_token:
            out["security_token"] = self.security_token
        return out

    def config(self, **overrides: Any):
        """An SDK ``Config`` for this twin (keyword arguments override its fields)."""
        from alibabacloud_tea_openapi import models as open_api_models  # pylint: disable=import-outside-toplevel
        values = {"access_key_id": self.access_key_id, "access_key_secret": self.access_key_secret, "security_token": self.security_token,
                  "endpoint": self.url, "protocol": "http", "region_id": self.region, "read_timeout": 60000, "connect_timeout": 5000}
        values.update(overrides)
        return open_api_models.Config(**values)

    def client(self, **overrides: Any):
        """An ``alibabacloud_ecs20140526`` client talking to this twin."""
        from alibabacloud_ecs20140526.client import Client  # pylint: disable=import-outside-toplevel
        return Client(self.config(**overrides))

    def state(self) -> Dict[str, Any]:
        return self.cloud.state()

    def hold(self, action: str) -> threading.Event:
        """Hold calls of ``action`` (CreateSnapshotGroup) inside the twin until the returned event is set."""
        return self.cloud.ecs.hold(action)

    def held(self, action: str) -> threading.Event:
        """Set when a call of ``action`` is being held."""
        return self.cloud.ecs.waiting(action)

    def trace(self, invoke_id: str, instance_id: str) -> List:
        return self.cloud.assistant.trace(invoke_id, instance_id)

    def stop(self) -> None:
        self.cloud.close()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
        for item in self._owned:
            if isinstance(item, BlockStore):
                item.close()
            elif isinstance(item, str):
                shutil.rmtree(item, ignore_errors=True)

    def __enter__(self) -> "Handle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _fleet(value: Any) -> Fleet:
    if isinstance(value, Fleet):
        return value
    if isinstance(value, dict):
        return parse_fleet(value)
    if isinstance(value, (str, os.PathLike)):
        return load_fleet(os.fspath(value))
    raise TypeError(f"fleet must be a Fleet, a dict or a path, got {type(value).__name__}")


def start(fleet: Any, host: str = "127.0.0.1", port: int = 0, latency: Any = None, faults: Any = None,
          blockstore: Optional[BlockStore] = None, stats: Optional[CallCounter] = None, limits: Any = None) -> Handle:
    """Start the Alibaba twin for the ``alicloud`` instances of ``fleet``; returns its handle."""
    fleet = _fleet(fleet)
    owned: List[Any] = []
    latency = as_model(latency if latency is not None else fleet.latency)
    faults = as_faults(faults if faults is not None else fleet.faults)
    stats = stats if stats is not None else CallCounter()
    if blockstore is None and any(v.image for i in fleet.by_provider(PROVIDER) for v in i.volumes):
        root = tempfile.mkdtemp(prefix="twin-alicloud-blocks-")
        blockstore = BlockStore(root)
        owned.extend([blockstore, root])
    limits = as_limits(limits if limits is not None else fleet.limits, latency=latency, faults=faults)
    cloud = AliCloud(fleet, latency, faults, blockstore, stats, limits=limits)
    control = ControlApp(stats, faults, latency, cloud.state, limits=limits)
    try:
        server = make_server(host, port, App(cloud, control), server_class=_ThreadingServer, handler_class=_QuietHandler)
    except OSError:
        cloud.close()
        for item in owned:
            if isinstance(item, BlockStore):
                item.close()
        raise
    cloud.url = f"{server.server_address[0]}:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"twin-alicloud-{server.server_address[1]}", daemon=True)
    thread.start()
    return Handle(server, thread, cloud, owned, fleet)


__all__ = ["start", "Handle"]
