"""The AWS twin's HTTP endpoint: one port for EC2, IAM, STS (moto) and SSM (the twin's own).

Each request goes through the twin's middleware first: it counts the call, waits the latency
model's time, injects configured API errors, spends a token of the account's bucket for the API
(an empty bucket is answered as the cloud answers it), answers SSM actions itself and hands
everything else to moto's WSGI application in the twin's own account.
"""

from __future__ import annotations

import io
import json
import logging
import re
import threading
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional
from xml.sax.saxutils import escape

from werkzeug.serving import WSGIRequestHandler, make_server

from moto.backends import get_backend
from moto.ec2.exceptions import EC2ClientError
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

from twin.aws.cloud import AwsCloud
from twin.aws.documents import DocumentError
from twin.aws.signing import SignatureRejected, verify as verify_signature
from twin.aws.ec2 import REQUEST
from twin.aws.ssm import SsmService
from twin.core.control import ControlApp, is_control
from twin.core.faults import as_faults
from twin.core.fleet import Fleet, load_fleet, parse_fleet
from twin.core.latency import as_model
from twin.core.limits import as_limits, ec2_unfiltered
from twin.core.stats import CallCounter

LOG = logging.getLogger(__name__)
PROVIDER = "aws"
SERVICES = ("ec2", "iam", "sts", "ssm")
SNAPSHOT_ACTIONS = ("DescribeSnapshots", "CreateSnapshot", "CreateSnapshots", "CopySnapshot")
XML_TAG = re.compile(rb"<(/?)([A-Za-z][A-Za-z0-9]*)(?:\s[^>]*)?>")
START_TIME = re.compile(rb"<startTime>[^<]*</startTime>")
THROTTLE_MESSAGES = {
    "RequestLimitExceeded": "Request limit exceeded.",
    "SnapshotCreationPerVolumeRateExceeded": "The maximum per volume CreateSnapshot request rate has been exceeded. "
                                             "Use an increasing or variable sleep interval between requests.",
    "ThrottlingException": "Rate exceeded",
}
THROTTLE_ANSWERS = ("RequestLimitExceeded", "ThrottlingException")


def _service_of(environ) -> str:
    auth = environ.get("HTTP_AUTHORIZATION", "")
    if "Credential=" in auth:
        parts = auth.split("Credential=", 1)[1].split(",", 1)[0].split("/")
        if len(parts) >= 4:
            return parts[3]
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target.startswith("AmazonSSM."):
        return "ssm"
    return "ec2"


def _region_of(environ) -> Optional[str]:
    auth = environ.get("HTTP_AUTHORIZATION", "")
    if "Credential=" in auth:
        parts = auth.split("Credential=", 1)[1].split(",", 1)[0].split("/")
        if len(parts) >= 4:
            return parts[2]
    return None


def _xml_error(service: str, code: str, message: str) -> bytes:
    request_id = str(uuid.uuid4())
    if service == "ec2":
        return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{escape(code)}</Code>'
                f'<Message>{escape(message)}</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>').encode()
    return (f'<ErrorResponse><Error><Type>Sender</Type><Code>{escape(code)}</Code><Message>{escape(message)}</Message>'
            f'</Error><RequestId>{request_id}</RequestId></ErrorResponse>').encode()


class QuietHandler(WSGIRequestHandler):
    """No access log on stderr: a fleet run makes thousands of calls."""

    def log_request(self, code="-", size="-") -> None:
        return None


class AwsTwinApp:
    """WSGI middleware in front of moto for one twin."""

    def __init__(self, cloud: AwsCloud, ssm: SsmService, control: ControlApp):
        self.cloud = cloud
        self.ssm = ssm
        self.control = control
        self.moto = DomainDispatcherApplication(create_backend_app)

    def __call__(self, environ, start_response):
        if is_control(environ):
            return self.control(environ, start_response)
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        # every twin is its own account in moto, so twins in one process never see each other
        environ["HTTP_X_MOTO_ACCOUNT_ID"] = self.cloud.account_id
        service = _service_of(environ)
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        region = _region_of(environ)
        try:
            verify_signature(environ, body, self.secrets)
        except SignatureRejected as exc:
            return self._rejected(exc, service, target, start_response)
        if service == "ssm" and target.startswith("AmazonSSM."):
            return self._ssm(target.split(".", 1)[1], body, region, start_response)
        params = urllib.parse.parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
        if not params and environ.get("QUERY_STRING"):
            params = urllib.parse.parse_qs(environ["QUERY_STRING"], keep_blank_values=True)
        action = (params.get("Action") or ["Unknown"])[0]
        self.cloud.stats.record(PROVIDER, action)
        self.cloud.latency.sleep_api(PROVIDER, action)
        code = self.cloud.faults.api_error(PROVIDER, action)
        if not code and service == "ec2":
            code = self.cloud.spend("ec2", action, region, unfiltered=ec2_unfiltered(params))
        if code in THROTTLE_ANSWERS:
            self.cloud.stats.record_throttle(PROVIDER, action, code)
        if code:
            status = "503 Service Unavailable" if code == "RequestLimitExceeded" else "400 Bad Request"
            payload = _xml_error(service, code, THROTTLE_MESSAGES.get(code, f"Injected fault: {code}"))
            start_response(status, [("Content-Type", "text/xml"), ("Content-Length", str(len(payload)))])
            return [payload]
        ext = self.cloud.ext_for(region) if service == "ec2" else self.cloud.ext
        REQUEST.params = params
        REQUEST.action = action
        REQUEST.next_token = None
        captured: Dict[str, Any] = {}

        def capture(status, headers, exc_info=None):
            captured["status"], captured["headers"] = status, headers
            return lambda data: None
        try:
            with self.cloud.lock:
                try:
                    own = ext.intercept(action) if service == "ec2" else None
                except EC2ClientError as exc:
                    own = None
                    captured["status"], captured["headers"] = "400 Bad Request", [("Content-Type", "text/xml")]
                    payload = _xml_error(service, exc.code, exc.message)
                else:
                    if own is not None:
                        captured["status"], captured["headers"] = "200 OK", [("Content-Type", "text/xml")]
                        payload = own
                    else:
                        payload = b"".join(self.moto(environ, capture))
            token = REQUEST.next_token
        finally:
            REQUEST.params = None
            REQUEST.action = None
            REQUEST.next_token = None
        if token and captured["status"].startswith("200"):
            # moto answers these describes in one page; the twin pages them and adds the token
            closing = f"</{action}Response>".encode()
            payload = payload.replace(closing, f"<nextToken>{token}</nextToken>".encode() + closing)
        if action in SNAPSHOT_ACTIONS and captured["status"].startswith("200"):
            payload = self._snapshot_details(payload, ext)
        lost = self.cloud.faults.api_error_after(PROVIDER, action) if captured["status"].startswith("200") else None
        if lost:  # the call took effect, its answer is an error (a 500 the SDKs retry)
            payload = _xml_error(service, lost, f"Injected fault after the call took effect: {lost}")
            captured["status"], captured["headers"] = "500 Internal Server Error", [("Content-Type", "text/xml")]
        headers = [(k, v) for k, v in captured["headers"] if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(payload))))
        start_response(captured["status"], headers)
        return [payload]

    @property
    def secrets(self) -> Dict[str, str]:
        """The access keys of the account (the fleet's credentials, which its instances' roles use too)."""
        return {self.cloud.access_key_id: self.cloud.secret_access_key or ""} if self.cloud.access_key_id else {}

    @staticmethod
    def _rejected(exc: SignatureRejected, service: str, target: str, start_response):
        """A request AWS would not authenticate, answered in the protocol of its service."""
        if target:  # the JSON protocol (SSM, KMS) names the operation in X-Amz-Target
            code, status, message = exc.answer("json")
            payload = json.dumps({"__type": code, "message": message}).encode()
            headers = [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-RequestId", str(uuid.uuid4()))]
        else:
            code, status, message = exc.answer("ec2" if service == "ec2" else "query")
            payload = _xml_error(service, code, message)
            headers = [("Content-Type", "text/xml")]
        LOG.debug("rejected %s request: %s", service, exc)
        reason = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden"}[status]
        start_response(f"{status} {reason}", headers + [("Content-Length", str(len(payload)))])
        return [payload]

    @staticmethod
    def _snapshot_details(payload: bytes, ext) -> bytes:
        """What moto's snapshot answers lack: millisecond StartTime (sets are ranked by it) and FullSnapshotSizeInBytes."""
        stack: List[List[Any]] = []  # [tag, start offset, snapshot id]
        edits = []
        for match in XML_TAG.finditer(payload):
            closing, tag = match.group(1), match.group(2)
            if not closing:
                if tag == b"snapshotId" and stack:
                    end = payload.find(b"<", match.end())
                    stack[-1][2] = payload[match.end():end].decode()
                stack.append([tag, match.end(), None])
                continue
            if not stack:
                continue
            opened_tag, begin, snapshot_id = stack.pop()
            if opened_tag != tag or not snapshot_id:
                continue
            details = ext.snapshot_details(snapshot_id)
            if details:
                body = payload[begin:match.start()]
                body = START_TIME.sub(b"<startTime>" + details[0].encode() + b"</startTime>", body, count=1)
                if b"<fullSnapshotSizeInBytes>" not in body:
                    body += f"<fullSnapshotSizeInBytes>{details[1]}</fullSnapshotSizeInBytes>".encode()
                edits.append((begin, match.start(), body))
        for begin, end, body in reversed(edits):
            payload = payload[:begin] + body + payload[end:]
        return payload

    def _ssm(self, action: str, body: bytes, region: Optional[str], start_response):
        self.cloud.stats.record(PROVIDER, action)
        self.cloud.latency.sleep_api(PROVIDER, action)
        code = self.cloud.faults.api_error(PROVIDER, action)
        if code == "RequestLimitExceeded":
            code = "ThrottlingException"
        code = code or self.cloud.spend("ssm", action, region)
        if code in THROTTLE_ANSWERS:
            self.cloud.stats.record_throttle(PROVIDER, action, code)
        try:
            if code:
                raise DocumentError(code, THROTTLE_MESSAGES.get(code, f"Injected fault: {code}"))
            if not self.ssm.handles(action):
                raise DocumentError("InvalidAction", f"The twin does not implement SSM {action}.")
            params = json.loads(body.decode("utf-8") or "{}")
            result = self.ssm.call(action, params)
            payload = json.dumps(result, default=str).encode()
            status = "200 OK"
        except DocumentError as exc:
            payload = json.dumps({"__type": exc.code, "message": exc.message}).encode()
            status = "400 Bad Request"
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            LOG.exception("SSM %s failed", action)
            payload = json.dumps({"__type": "ValidationException", "message": str(exc)}).encode()
            status = "400 Bad Request"
        start_response(status, [("Content-Type", "application/x-amz-json-1.1"), ("Content-Length", str(len(payload))),
                                ("x-amzn-RequestId", str(uuid.uuid4()))])
        return [payload]


@dataclass
class AwsTwinHandle:
    """A running AWS twin: ``url``, ``port``, credentials, ``instances`` (fleet name → id) and ``stop()``."""

    url: str
    port: int
    host: str
    region: str
    account_id: str
    access_key_id: str
    secret_access_key: str
    cloud: AwsCloud
    ssm: SsmService
    instances: Dict[str, str] = field(default_factory=dict)
    _server: Any = None
    _thread: Any = None

    def endpoint(self) -> Dict[str, Any]:
        """The ``aws`` entry of endpoints.json."""
        return {"endpoint_url": self.url, "region": self.region, "access_key_id": self.access_key_id,
                "secret_access_key": self.secret_access_key, "account_id": self.account_id,
                "instances": dict(self.instances)}

    def client(self, service: str, **kwargs):
        """A boto3 client for this twin (``ec2``, ``ssm``, ``iam``, ``sts``)."""
        import boto3  # pylint: disable=import-outside-toplevel
        from botocore.config import Config  # pylint: disable=import-outside-toplevel
        kwargs.setdefault("config", Config(retries={"total_max_attempts": 1, "mode": "standard"}))
        return boto3.client(service, endpoint_url=self.url, region_name=self.region, aws_access_key_id=self.access_key_id,
                            aws_secret_access_key=self.secret_access_key, **kwargs)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=10)
            self._server = None
        self.ssm.close()
        self.cloud.close()
        for service in SERVICES:
            try:
                backends = get_backend(service)
                if self.account_id in backends:
                    del backends[self.account_id]
            except (KeyError, ValueError):
                pass


def start(fleet, host: str = "127.0.0.1", port: int = 0, latency=None, faults=None, blockstore=None,
          stats: Optional[CallCounter] = None, limits=None) -> AwsTwinHandle:
    """Start the AWS twin for ``fleet`` (a Fleet, a fleet dict or a path) on a background thread."""
    if isinstance(fleet, str):
        fleet = load_fleet(fleet)
    elif isinstance(fleet, dict):
        fleet = parse_fleet(fleet)
    elif not isinstance(fleet, Fleet):
        raise TypeError("fleet must be a Fleet, a mapping or a path")
    latency = as_model(latency if latency is not None else fleet.latency)
    faults = as_faults(faults if faults is not None else fleet.faults)
    stats = stats if stats is not None else CallCounter()
    limits = as_limits(limits if limits is not None else fleet.limits, latency=latency, faults=faults)
    cloud = AwsCloud(fleet, latency, faults, stats, blockstore=blockstore, limits=limits)
    ssm = SsmService(cloud)
    control = ControlApp(stats, faults, latency, state=cloud.state, limits=limits)
    app = AwsTwinApp(cloud, ssm, control)
    server = make_server(host, port, app, threaded=True, request_handler=QuietHandler)
    actual_port = server.server_address[1]
    url = f"http://{host}:{actual_port}"
    cloud.endpoint_url = url
    # A short poll: stop() waits for the serving loop's next look, and every test stops its twins.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"aws-twin-{actual_port}",
                              daemon=True)
    thread.start()
    creds = fleet.credentials.get("aws", {})
    return AwsTwinHandle(url=url, port=actual_port, host=host, region=cloud.region, account_id=cloud.account_id,
                         access_key_id=creds.get("access_key_id", ""), secret_access_key=creds.get("secret_access_key", ""),
                         cloud=cloud, ssm=ssm, instances=cloud.names(), _server=server, _thread=thread)
