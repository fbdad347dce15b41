"""Request parameters, errors and pagination in the shapes of the ECS 2014-05-26 RPC API."""

from __future__ import annotations

import base64
import json
import re
import uuid
from typing import Any, Callable, Dict, List, Optional, Tuple

# HTTP status of error codes the twin can answer with (codes injected by the fault engine included).
STATUS_BY_CODE = {
    "Throttling": 400,
    "Throttling.User": 400,
    "Throttling.Api": 400,
    "ServiceUnavailable": 503,
    "InternalError": 500,
    "UnknownError": 500,
    "InvalidAccessKeyId.NotFound": 404,
    "InvalidInstanceId.NotFound": 404,
    "InvalidDiskId.NotFound": 404,
    "InvalidSnapshotId.NotFound": 404,
    "InvalidSnapshotGroupId.NotFound": 404,
    "InvalidInstance.NotFound": 404,
    "InvalidInvokeId.NotFound": 404,
    "Forbidden.RAM": 403,
    "Forbidden.NotEnoughPermission": 403,
    "InvalidAction.NotFound": 404,
}

MESSAGES = {
    "Throttling": "Request was denied due to request throttling.",
    "Throttling.User": "Request was denied due to user flow control.",
    "Throttling.Api": "Request was denied due to api flow control.",
    "ServiceUnavailable": "The request has failed due to a temporary failure of the server.",
    "InternalError": "The request processing has failed due to some unknown error, exception or failure.",
    "QuotaExceed.Snapshot": "The snapshot quota of the disk has been exceeded.",
    "IncorrectDiskStatus.CreatingSnapshot": "A previous snapshot of the disk is still being created.",
}


class AliError(Exception):
    """An API error answered as Alibaba's JSON error document."""

    def __init__(self, code: str, message: Optional[str] = None, status: Optional[int] = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message or MESSAGES.get(code) or code
        self.status = status or STATUS_BY_CODE.get(code) or (503 if code.startswith("ServiceUnavailable") else 400)


def request_id() -> str:
    return str(uuid.uuid4()).upper()


def error_document(err: AliError, req_id: str, host: str) -> Dict[str, Any]:
    return {
        "RequestId": req_id,
        "HostId": host,
        "Code": err.code,
        "Message": err.message,
        "Recommend": f"https://api.aliyun.com/troubleshoot?q={err.code}&product=Ecs&requestId={req_id}",
    }


def missing(name: str) -> AliError:
    return AliError("MissingParameter", f'The input parameter "{name}" that is mandatory for processing this request is not supplied.')


def invalid(name: str, why: str = "") -> AliError:
    text = f'The specified parameter "{name}" is not valid.'
    return AliError(f"InvalidParameter.{name}" if "." not in name else "InvalidParameter", f"{text} {why}".strip())


_INDEXED = re.compile(r"^([A-Za-z]+)\.(\d+)(?:\.([A-Za-z]+))?$")


class Params:
    """The flat parameter map of one call (query string and form body) with typed accessors."""

    def __init__(self, flat: Dict[str, str]):
        self.flat = dict(flat)

    def get(self, name: str, default: Any = None) -> Any:
        value = self.flat.get(name)
        return default if value is None or value == "" else value

    def require(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise missing(name)
        return value

    def int(self, name: str, default: Optional[int] = None, low: Optional[int] = None, high: Optional[int] = None) -> Optional[int]:
        value = self.get(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise invalid(name, f"{value!r} is not an integer.") from None
        if (low is not None and number < low) or (high is not None and number > high):
            raise invalid(name, f"The value must be between {low} and {high}.")
        return number

    def bool(self, name: str, default: bool = False) -> bool:
        value = self.get(name)
        if value is None:
            return default
        if str(value).lower() in ("true", "false"):
            return str(value).lower() == "true"
        raise invalid(name, f"{value!r} is not a boolean.")

    def indexed(self, name: str) -> List[str]:
        """``Name.1``, ``Name.2``, ... in index order."""
        found: List[Tuple[int, str]] = []
        for key, value in self.flat.items():
            match = _INDEXED.match(key)
            if match and match.group(1) == name and match.group(3) is None and value != "":
                found.append((int(match.group(2)), value))
        return [pair[1] for pair in sorted(found)]

    def indexed_records(self, name: str) -> List[Dict[str, str]]:
        """``Name.N.Field`` groups as a list of dicts, in index order."""
        records: Dict[int, Dict[str, str]] = {}
        for key, value in self.flat.items():
            match = _INDEXED.match(key)
            if match and match.group(1) == name and match.group(3):
                records.setdefault(int(match.group(2)), {})[match.group(3)] = value
        return [records[n] for n in sorted(records)]

    def json_list(self, name: str) -> List[str]:
        value = self.get(name)
        if value is None:
            return []
        try:
            items = json.loads(value)
        except ValueError:
            raise invalid(name, "It must be a JSON array.") from None
        if not isinstance(items, list):
            raise invalid(name, "It must be a JSON array.")
        return [str(i) for i in items]

    def tags(self, name: str = "Tag") -> List[Tuple[str, Optional[str]]]:
        out = []
        for rec in self.indexed_records(name):
            key = rec.get("Key")
            if key is None or key == "":
                raise invalid(f"{name}.N.Key", "The tag key must not be empty.")
            out.append((key, rec.get("Value")))
        return out


def encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"twin:{offset}".encode()).decode().rstrip("=")


def decode_token(token: str) -> int:
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        prefix, offset = text.split(":", 1)
        if prefix != "twin":
            raise ValueError(token)
        return int(offset)
    except (ValueError, UnicodeDecodeError):
        raise AliError("InvalidParam.NextToken", "The specified NextToken is not valid.") from None


def paginate(params: Params, items: List[Any], render: Callable[[Any], Dict[str, Any]], *,
             token_max: int = 100, token_min: int = 1, token_default: int = 10, page_max: int = 100,
             page_default: int = 10, pages: bool = True) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    """One page of ``items`` and the paging fields, NextToken/MaxResults or PageNumber/PageSize."""
    token = params.get("NextToken")
    max_results = params.get("MaxResults")
    if token is not None or max_results is not None or not pages:
        size = params.int("MaxResults", token_default, token_min, token_max)
        start = decode_token(token) if token else 0
        chunk = items[start:start + size]
        more = start + size < len(items)
        fields = {"NextToken": encode_token(start + size) if more else "", "TotalCount": len(items)}
        return [render(i) for i in chunk], fields
    number = params.int("PageNumber", 1, 1)
    size = params.int("PageSize", page_default, 1, page_max)
    chunk = items[(number - 1) * size:number * size]
    return [render(i) for i in chunk], {"PageNumber": number, "PageSize": size, "TotalCount": len(items)}


def tag_list(tags: Dict[str, str], shape: str = "TagKey") -> Dict[str, List[Dict[str, str]]]:
    """A tag map in one of the two shapes the API uses: TagKey/TagValue or Key/Value."""
    if shape == "TagKey":
        return {"Tag": [{"TagKey": k, "TagValue": v} for k, v in tags.items()]}
    return {"Tag": [{"Key": k, "Value": v} for k, v in tags.items()]}


def match_tags(tags: Dict[str, str], wanted: List[Tuple[str, Optional[str]]]) -> bool:
    for key, value in wanted:
        if key not in tags:
            return False
        if value is not None and value != "" and tags[key] != value:
            return False
    return True
