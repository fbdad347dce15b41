"""Request authentication as Alibaba's gateway does it: V3 (ACS3-HMAC-SHA256) and V2 RPC (HMAC-SHA1).

The canonical forms follow what the official SDK signs, so a request that the SDK sent unmodified
verifies, and any change to a signed header, parameter or body breaks the signature.
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import hmac
import threading
import time
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional
from urllib.parse import quote, quote_plus

from twin.core.authorization import authorization_fields

from .api import AliError

V3_ALGORITHM = "ACS3-HMAC-SHA256"
CLOCK_SKEW = 15 * 60


@dataclass
class Key:
    access_key_id: str
    secret: str
    security_token: Optional[str] = None  # required with this key when set (STS credentials)
    principal: str = "account"  # "account" or "role:<RamRoleName>"


class KeyRing:
    """The access keys (and STS tokens) the twin accepts; thread-safe, grows when roles get STS credentials."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: Dict[str, Key] = {}
        self._nonces: Dict[str, float] = {}

    def add(self, key: Key) -> None:
        with self._lock:
            self._keys[key.access_key_id] = key

    def get(self, access_key_id: str) -> Optional[Key]:
        with self._lock:
            return self._keys.get(access_key_id)

    def use_nonce(self, nonce: str) -> bool:
        """False when the nonce was seen within the replay window."""
        now = time.time()
        with self._lock:
            if len(self._nonces) > 50000:
                self._nonces = {n: t for n, t in self._nonces.items() if now - t < CLOCK_SKEW}
            if nonce in self._nonces and now - self._nonces[nonce] < CLOCK_SKEW:
                return False
            self._nonces[nonce] = now
            return True


def _canonical_query(query: Mapping[str, str]) -> str:
    return "&".join(f"{k}={quote(query[k], safe='~', encoding='utf-8')}" for k in sorted(query))


def _check_key(ring: KeyRing, access_key_id: Optional[str], token: Optional[str]) -> Key:
    if not access_key_id:
        raise AliError("MissingAccessKeyId", "AccessKeyId is mandatory for this action.", 400)
    key = ring.get(access_key_id)
    if key is None:
        raise AliError("InvalidAccessKeyId.NotFound", "Specified access key is not found.", 404)
    if key.security_token is not None:
        if not token:
            raise AliError("InvalidSecurityToken.MismatchWithAccessKey", "Specified SecurityToken mismatch with the AccessKey.", 400)
        if not hmac.compare_digest(token, key.security_token):
            raise AliError("InvalidSecurityToken.Malformed", "Specified SecurityToken is malformed.", 400)
    elif token:
        raise AliError("InvalidSecurityToken.MismatchWithAccessKey", "Specified SecurityToken mismatch with the AccessKey.", 400)
    return key


def _check_time(stamp: Optional[str]) -> None:
    if not stamp:
        raise AliError("MissingTimestamp", "Timestamp is mandatory for this action.", 400)
    try:
        when = calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        raise AliError("InvalidTimeStamp.Format", "Specified time stamp or date value is not well formatted.", 400) from None
    if abs(time.time() - when) > CLOCK_SKEW:
        raise AliError("InvalidTimeStamp.Expired", "Specified time stamp or date value is expired.", 400)


def _mismatch(string_to_sign: str) -> AliError:
    return AliError("SignatureDoesNotMatch",
                    f"Specified signature is not matched with our calculation. server string to sign is:{string_to_sign}", 400)


def verify_v3(ring: KeyRing, method: str, path: str, query: Mapping[str, str], headers: Mapping[str, List[str]], body: bytes) -> Key:
    """Check an ``Authorization: ACS3-HMAC-SHA256 ...`` request; headers are lower-cased names to values."""
    fields = authorization_fields(headers["authorization"][0])
    if fields["algorithm"] != V3_ALGORITHM:
        raise AliError("InvalidSignatureMethod", f"The signature algorithm {fields['algorithm']} is not supported.", 400)
    for name in ("Credential", "SignedHeaders", "Signature"):
        if not fields.get(name):
            raise AliError("IncompleteSignature", f"The Authorization header lacks {name}.", 400)
    token = (headers.get("x-acs-security-token") or [None])[0]
    key = _check_key(ring, fields["Credential"], token)
    signed = fields["SignedHeaders"].split(";")
    for required in ("host", "x-acs-action", "x-acs-version", "x-acs-date", "x-acs-signature-nonce", "x-acs-content-sha256"):
        if required not in signed or required not in headers:
            raise AliError("IncompleteSignature", f"The request must sign the header {required}.", 400)
    if token is not None and "x-acs-security-token" not in signed:
        raise AliError("IncompleteSignature", "The request must sign the header x-acs-security-token.", 400)
    payload_hash = hashlib.sha256(body).hexdigest()
    if headers["x-acs-content-sha256"][0].strip().lower() != payload_hash:
        raise AliError("ContentSHA256NotMatched", "The x-acs-content-sha256 header does not match the request body.", 400)
    canonical_headers = ""
    for name in signed:
        if name not in headers:
            raise AliError("IncompleteSignature", f"The signed header {name} is missing.", 400)
        canonical_headers += f"{name}:{','.join(sorted(v.strip() for v in headers[name]))}\n"
    canonical = f"{method}\n{path or '/'}\n{_canonical_query(query)}\n{canonical_headers}\n{';'.join(signed)}\n{payload_hash}"
    string_to_sign = f"{V3_ALGORITHM}\n{hashlib.sha256(canonical.encode('utf-8')).hexdigest()}"
    expected = hmac.new(key.secret.encode("utf-8"), string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, fields["Signature"].lower()):
        raise _mismatch(string_to_sign)
    _check_time(headers["x-acs-date"][0])
    if not ring.use_nonce(headers["x-acs-signature-nonce"][0]):
        raise AliError("SignatureNonceUsed", "Specified signature nonce was used already.", 400)
    return key


def verify_v2(ring: KeyRing, method: str, params: Mapping[str, str]) -> Key:
    """Check a legacy RPC request signed with ``Signature``/``SignatureMethod=HMAC-SHA1`` in the parameters."""
    if params.get("SignatureMethod") != "HMAC-SHA1":
        raise AliError("InvalidSignatureMethod", "Specified signature method is not supported.", 400)
    if params.get("SignatureVersion") != "1.0":
        raise AliError("InvalidSignatureVersion", "Specified signature version is not supported.", 400)
    key = _check_key(ring, params.get("AccessKeyId"), params.get("SecurityToken"))
    signed = {k: v for k, v in params.items() if k != "Signature"}
    canonical = "&".join(f"{quote(k, safe='~')}={quote(signed[k], safe='~')}" for k in sorted(signed))
    string_to_sign = f"{method}&%2F&{quote_plus(canonical, safe='~')}"
    digest = hmac.new(f"{key.secret}&".encode("utf-8"), string_to_sign.encode("utf-8"), hashlib.sha1).digest()
    if not hmac.compare_digest(base64.b64encode(digest).decode(), params.get("Signature", "")):
        raise _mismatch(string_to_sign)
    _check_time(params.get("Timestamp"))
    if not params.get("SignatureNonce"):
        raise AliError("MissingSignatureNonce", "SignatureNonce is mandatory for this action.", 400)
    if not ring.use_nonce(params["SignatureNonce"]):
        raise AliError("SignatureNonceUsed", "Specified signature nonce was used already.", 400)
    return key
