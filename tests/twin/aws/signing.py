"""Request authentication as AWS does it: Signature Version 4 (AWS4-HMAC-SHA256) in the Authorization header.

moto accepts any key and any signature; the twin checks every API request against the account's access key and
secret before moto or the twin's own SSM sees it, so a wrong secret is answered as the service answers it. The
canonical request follows the SigV4 specification as botocore builds it, so a request the SDK (or the AWS CLI)
sent unmodified verifies, and any change to a signed header, the query or the body breaks the signature.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import time
from typing import Dict, Mapping, Optional, Tuple
from urllib.parse import quote, unquote

from twin.core.authorization import authorization_fields

ALGORITHM = "AWS4-HMAC-SHA256"
# The request time may differ from the service's clock by at most this much (RequestExpired).
CLOCK_SKEW = 15 * 60

# What each protocol answers, by failure: (error code, HTTP status, message). EC2 answers every credential
# failure with AuthFailure (its common client errors); IAM and STS (query protocol) with the common errors;
# SSM (JSON protocol) with its own exception names.
_EC2_AUTH = ("AuthFailure", 401, "AWS was not able to validate the provided access credentials")
ANSWERS: Dict[str, Dict[str, Tuple[str, int, str]]] = {
    "ec2": {"missing": _EC2_AUTH, "incomplete": _EC2_AUTH, "unknown_key": _EC2_AUTH, "mismatch": _EC2_AUTH,
            "expired": ("RequestExpired", 400, "Request has expired.")},
    "query": {
        "missing": ("MissingAuthenticationToken", 403, "Request is missing Authentication Token"),
        "incomplete": ("IncompleteSignature", 400, "The request signature does not conform to AWS standards."),
        "unknown_key": ("InvalidClientTokenId", 403, "The security token included in the request is invalid."),
        "mismatch": ("SignatureDoesNotMatch", 403, "The request signature we calculated does not match the signature "
                                                   "you provided. Check your AWS Secret Access Key and signing method. "
                                                   "Consult the service documentation for details."),
        "expired": ("RequestExpired", 400, "Request has expired."),
    },
    "json": {
        "missing": ("MissingAuthenticationTokenException", 400, "Missing Authentication Token"),
        "incomplete": ("IncompleteSignatureException", 400, "The request signature does not conform to AWS standards."),
        "unknown_key": ("UnrecognizedClientException", 400, "The security token included in the request is invalid."),
        "mismatch": ("InvalidSignatureException", 400, "The request signature we calculated does not match the signature "
                                                       "you provided. Check your AWS Secret Access Key and signing "
                                                       "method. Consult the service documentation for details."),
        "expired": ("InvalidSignatureException", 400, "Signature expired."),
    },
}


class SignatureRejected(Exception):
    """A request that AWS would not authenticate; ``kind`` is a key of ANSWERS' entries."""

    def __init__(self, kind: str, detail: str = ""):
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind

    def answer(self, protocol: str) -> Tuple[str, int, str]:
        return ANSWERS[protocol][self.kind]


def _header(environ: Mapping[str, str], name: str) -> Optional[str]:
    if name == "content-type":
        return environ.get("CONTENT_TYPE")
    if name == "content-length":
        return environ.get("CONTENT_LENGTH")
    return environ.get("HTTP_" + name.upper().replace("-", "_"))


def _canonical_uri(environ: Mapping[str, str]) -> str:
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI") or quote(environ.get("PATH_INFO") or "/")
    path = raw.split("?", 1)[0] or "/"
    return quote(unquote(path), safe="/~")


def _canonical_query(query: str) -> str:
    pairs = []
    for part in query.split("&") if query else []:
        key, _sep, value = part.partition("=")
        pairs.append((key, value))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def _key(secret: str, day: str, region: str, service: str) -> bytes:
    key = ("AWS4" + secret).encode("utf-8")
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode("utf-8"), hashlib.sha256).digest()
    return key


def verify(environ: Mapping[str, str], body: bytes, secrets: Mapping[str, str], now: Optional[float] = None) -> str:
    """Check the request's SigV4 signature; returns the access key id, raises SignatureRejected.

    ``secrets`` maps the access key ids the account knows to their secret access keys.
    """
    authorization = environ.get("HTTP_AUTHORIZATION") or ""
    if not authorization:
        raise SignatureRejected("missing", "no Authorization header")
    fields = authorization_fields(authorization)
    if fields["algorithm"] != ALGORITHM or not all(k in fields for k in ("Credential", "SignedHeaders", "Signature")):
        raise SignatureRejected("incomplete", f"unsupported Authorization {fields['algorithm']!r}")
    scope = fields["Credential"].split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        raise SignatureRejected("incomplete", "malformed Credential")
    access_key_id, day, region, service, _terminal = scope
    secret = secrets.get(access_key_id)
    if secret is None:
        raise SignatureRejected("unknown_key", f"unknown access key {access_key_id}")
    stamp = _header(environ, "x-amz-date") or ""
    try:
        when = calendar.timegm(time.strptime(stamp, "%Y%m%dT%H%M%SZ"))
    except ValueError:
        raise SignatureRejected("incomplete", "missing or malformed X-Amz-Date") from None
    if abs((time.time() if now is None else now) - when) > CLOCK_SKEW or not stamp.startswith(day):
        raise SignatureRejected("expired", f"request time {stamp}")
    signed = fields["SignedHeaders"].split(";")
    if "host" not in signed:
        raise SignatureRejected("incomplete", "host is not signed")
    headers = []
    for name in signed:
        value = _header(environ, name)
        if value is None:
            raise SignatureRejected("incomplete", f"signed header {name} is missing")
        headers.append(f"{name}:{' '.join(value.split())}\n")
    payload = _header(environ, "x-amz-content-sha256") or hashlib.sha256(body).hexdigest()
    canonical = "\n".join([environ.get("REQUEST_METHOD", "GET"), _canonical_uri(environ),
                           _canonical_query(environ.get("QUERY_STRING", "")), "".join(headers), fields["SignedHeaders"],
                           payload])
    string_to_sign = "\n".join([ALGORITHM, stamp, "/".join(scope[1:]), hashlib.sha256(canonical.encode("utf-8")).hexdigest()])
    expected = hmac.new(_key(secret, day, region, service), string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, fields["Signature"]):
        raise SignatureRejected("mismatch", "signature does not match")
    return access_key_id
