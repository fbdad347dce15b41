"""The Alibaba twin as one object: the ECS and Cloud Assistant state, the accepted keys, and the call path every request takes
(the controller's and the plug-in's alike, so both spend the account's request buckets)."""

from __future__ import annotations

import copy
import json
import secrets
import shutil
import tempfile
import threading
from typing import Any, Dict, Optional

from twin.core.limits import THROTTLE_CODES, Limits
from twin.core.scheduler import Scheduler

from .api import AliError, Params, request_id
from .assistant import Assistant
from .ecs import PROVIDER, Ecs
from .signing import Key, KeyRing

API_VERSION = "2014-05-26"
ROLE_STATS = "alicloud-instance-role"
# The twin is one account; the buckets are keyed by it and the Region.
ACCOUNT = "twin-account"
FORBIDDEN_MESSAGE = "User not authorized to operate on the specified resource, or this API doesn't support RAM."


class AliCloud:
    """ECS + Cloud Assistant with latency, faults and call statistics applied to every call."""

    def __init__(self, fleet: Any, latency: Any, faults: Any, blockstore: Any, stats: Any, limits: Any = None) -> None:
        creds = fleet.credentials.get(PROVIDER, {})
        self.region = creds.get("region", "cn-hangzhou")
        self.access_key_id = creds.get("access_key_id")
        self.access_key_secret = creds.get("access_key_secret")
        self.security_token = creds.get("security_token")
        self.latency = latency
        self.faults = faults
        self.stats = stats
        self.limits = limits if limits is not None else Limits("none", faults=faults)
        self.url = ""
        self.keys = KeyRing()
        self.keys.add(Key(self.access_key_id, self.access_key_secret, self.security_token))
        self._role_keys: Dict[str, Key] = {}
        self._idempotent: Dict[tuple, tuple] = {}
        self._idempotent_lock = threading.Lock()
        self.scheduler = Scheduler(name="twin-alicloud")
        self.workdir = tempfile.mkdtemp(prefix="twin-alicloud-")
        regions = creds.get("regions")
        if isinstance(regions, str):
            regions = [r.strip() for r in regions.split(",") if r.strip()]
        self.ecs = Ecs(fleet, self.region, latency, faults, blockstore, regions=regions)
        self.regions = list(self.ecs.regions)
        self.assistant = Assistant(self)
        self.handlers = {}
        for name, func in Ecs.ACTIONS.items():
            self.handlers[name] = (self.ecs, func)
        for name, func in Assistant.ACTIONS.items():
            self.handlers[name] = (self.assistant, func)

    def role_credentials(self, inst: Any) -> Optional[Key]:
        """STS credentials of the instance's RAM role, as the metadata service would hand them out."""
        if not inst.ram_role:
            return None
        with self.ecs.lock:
            key = self._role_keys.get(inst.ram_role)
            if key is None:
                key = Key(access_key_id=f"STS.{secrets.token_hex(10)}", secret=secrets.token_urlsafe(24),
                          security_token=secrets.token_urlsafe(48), principal=f"role:{inst.ram_role}")
                self._role_keys[inst.ram_role] = key
                self.keys.add(key)
            return key

    def call(self, action: str, flat: Dict[str, str], principal: str = "account", instance: Any = None) -> Dict[str, Any]:
        """Run one API action as ``principal``; returns the response body or raises AliError."""
        entry = self.handlers.get(action)
        if entry is None:
            raise AliError("InvalidAction.NotFound", f"Specified api {action} is not found, please check your url and method.", 404)
        # Calls made on the instance with its RAM role (the plug-in's own calls) are counted apart, so that a
        # test of the collection can count the collection's calls alone; they spend the same buckets.
        caller = PROVIDER if not principal.startswith("role:") else ROLE_STATS
        self.stats.record(caller, action)
        self.latency.sleep_api(PROVIDER, action)
        code = self.faults.api_error(PROVIDER, action)
        if not code and not self.limits.take("ecs", action, ACCOUNT, flat.get("RegionId") or self.region):
            code = THROTTLE_CODES["ecs"]
        if code:
            if code.startswith("Throttling"):
                self.stats.record_throttle(caller, action, code)
            raise AliError(code)
        if principal.startswith("role:") and self._role_denied(principal[5:], instance):
            raise AliError("Forbidden.RAM", FORBIDDEN_MESSAGE, 403)
        token = flat.get("ClientToken")
        fingerprint = json.dumps(sorted((k, v) for k, v in flat.items() if k != "ClientToken"))
        if token:
            with self._idempotent_lock:
                earlier = self._idempotent.get((action, principal, token))
            if earlier is not None:
                # A retried call with the same ClientToken gets the first answer, not a second resource.
                if earlier[0] != fingerprint:
                    raise AliError("IdempotentParameterMismatch",
                                   "The request uses the same ClientToken as a previous, but non-identical request.", 400)
                body = copy.deepcopy(earlier[1])
                body["RequestId"] = request_id()
                return body
        owner, func = entry
        body = func(owner, Params(flat))
        if token:
            with self._idempotent_lock:
                self._idempotent[(action, principal, token)] = (fingerprint, copy.deepcopy(body))
        body["RequestId"] = request_id()
        return body

    def _role_denied(self, role: str, instance: Any) -> bool:
        """Whether the role's policy lacks the snapshot permissions (fault ``ram_role_no_permission`` of an instance holding it)."""
        holders = [instance] if instance is not None else [i for i in self.ecs.instances.values() if i.ram_role == role]
        return any(self.ecs.instance_faults(i).get("ram_role_no_permission") for i in holders)

    def state(self) -> Dict[str, Any]:
        return self.ecs.summary()

    def close(self) -> None:
        with self.ecs.lock:
            for gate in self.ecs.gates.values():
                gate.set()
        self.assistant.close()
        self.scheduler.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
