"""The twins' control API, mounted by both servers under ``/_twin/``.

=======  =========================  ==============================================================
GET      /_twin/stats               ``{"counts": {provider: {action: n}}, "total": n, "throttled": {provider: {action: n}}}``
GET      /_twin/stats/throttles     the throttled answers in time order: ``[{"at", "provider", "action", "code"}]``
POST     /_twin/stats/reset         zero the counters
GET      /_twin/faults              current fault settings
POST     /_twin/faults              JSON fault spec, merged (see faults.py)
POST     /_twin/faults/reset        remove every fault
GET      /_twin/latency             latency spec and effective values
POST     /_twin/latency             JSON latency spec (replaces the current one)
GET      /_twin/limits              request limits: spec, profile, the buckets in use and their tokens
POST     /_twin/limits              JSON limits spec (replaces the current one)
GET      /_twin/state               the twin's instances, volumes and snapshots (incl. image paths)
=======  =========================  ==============================================================

The statistics, faults, latency and limits objects are shared by both twins, so a change posted to either
one governs both.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, Iterable, Optional, Tuple

PREFIX = "/_twin/"


def json_body(environ) -> Any:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    raw = environ["wsgi.input"].read(length) if length else b""
    return json.loads(raw.decode("utf-8")) if raw.strip() else {}


def respond(start_response, status: str, payload: Any, content_type: str = "application/json") -> Iterable[bytes]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload, default=str, sort_keys=True).encode("utf-8")
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


def is_control(environ) -> bool:
    return environ.get("PATH_INFO", "").startswith(PREFIX)


class ControlApp:
    """WSGI app for ``/_twin/*``; ``state`` is a callable returning the twin's state summary.

    ``routes`` adds twin-specific endpoints: ``{("POST", "/_twin/x"): handler(body) -> payload}``.
    """

    def __init__(self, stats, faults, latency, state: Callable[[], Dict[str, Any]],
                 routes: Optional[Dict[Tuple[str, str], Callable[[Any], Any]]] = None, limits=None):
        self.stats = stats
        self.faults = faults
        self.latency = latency
        self.limits = limits
        self.state = state
        self.routes = dict(routes or {})

    def handle(self, method: str, path: str, body: Any) -> Tuple[str, Any]:
        """Dispatch one control request; returns (HTTP status line, JSON payload)."""
        path = path.rstrip("/")
        if (method, path) in self.routes:
            return "200 OK", self.routes[(method, path)](body)
        if path == "/_twin/stats" and method == "GET":
            return "200 OK", {"counts": self.stats.counts(), "total": self.stats.total(), "throttled": self.stats.throttled()}
        if path == "/_twin/stats/throttles" and method == "GET":
            return "200 OK", self.stats.throttle_log()
        if path == "/_twin/stats/reset" and method == "POST":
            self.stats.reset()
            return "200 OK", {"reset": True}
        if path == "/_twin/faults" and method == "GET":
            return "200 OK", self.faults.describe()
        if path == "/_twin/faults" and method == "POST":
            self.faults.update(body or {})
            return "200 OK", self.faults.describe()
        if path == "/_twin/faults/reset" and method == "POST":
            self.faults.reset()
            return "200 OK", self.faults.describe()
        if path == "/_twin/latency" and method == "GET":
            return "200 OK", self.latency.describe()
        if path == "/_twin/latency" and method == "POST":
            self.latency.update(body)
            return "200 OK", self.latency.describe()
        if path == "/_twin/limits" and self.limits is not None:
            if method == "POST":
                self.limits.update(body)
            return "200 OK", self.limits.describe()
        if path == "/_twin/state" and method == "GET":
            return "200 OK", self.state()
        return "404 Not Found", {"error": f"no control endpoint {method} {path}"}

    def __call__(self, environ, start_response) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        try:
            body = json_body(environ) if method in ("POST", "PUT") else None
            status, payload = self.handle(method, environ.get("PATH_INFO", ""), body)
        except (ValueError, TypeError, KeyError) as exc:
            status, payload = "400 Bad Request", {"error": str(exc)}
        return respond(start_response, status, payload)
