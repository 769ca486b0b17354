"""A protocol-faithful fake of Alibaba Cloud OSS, driven in tests by the real ``oss2`` SDK.

It speaks plain HTTP/1.1 on 127.0.0.1 with path-style addressing (``/bucket/key``), which is what
oss2 uses for IP endpoints, verifies every request's signature (V1, V2 and V4, plus the STS
token), and answers with the headers and XML that oss2 parses. Fault knobs let tests provoke what
a real network and a real service do: errors, latency, resets, truncated and corrupted bodies.

    with FakeOss(access_key_id="AKID", access_key_secret="SECRET") as oss:
        oss.put("dags", "a/b.py", b"...")
        bucket = oss2.Bucket(oss2.Auth("AKID", "SECRET"), oss.endpoint, "dags")

The module depends on the standard library only, so it checks the SDK rather than trusting it.
"""

from __future__ import annotations

import base64
import bisect
import contextlib
import datetime as dt
import email.utils
import hashlib
import hmac
import importlib
import re
import secrets
import socket
import struct
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, quote, unquote

DEFAULT_MAX_KEYS = 100
MAX_MAX_KEYS = 1000
MAX_KEY_BYTES = 1023
DEFAULT_MAX_CLOCK_SKEW_SECONDS = 900.0
DEFAULT_REGION = "cn-hangzhou"
OWNER_ID = "1234567890123456"

# The V1 string-to-sign only carries these query parameters; this is oss2's
# ProviderAuth._subresource_key_set verbatim (a test keeps the two in step). Anything else, such as
# prefix or list-type, is left out by the client, so the server must leave it out too.
# fmt: off
V1_SIGNED_SUBRESOURCES = frozenset({
    "response-content-type", "response-content-language", "response-cache-control", "logging",
    "response-content-encoding", "acl", "uploadId", "uploads", "partNumber", "group", "link",
    "delete", "website", "location", "objectInfo", "objectMeta", "response-expires",
    "response-content-disposition", "cors", "lifecycle", "restore", "qos", "referer", "stat",
    "bucketInfo", "append", "position", "security-token", "live", "comp", "status", "vod",
    "startTime", "endTime", "x-oss-process", "symlink", "callback", "callback-var", "tagging",
    "encryption", "versions", "versioning", "versionId", "policy", "requestPayment",
    "x-oss-traffic-limit", "qosInfo", "asyncFetch", "x-oss-request-payer", "sequential",
    "inventory", "inventoryId", "continuation-token", "worm", "wormId", "wormExtend",
    "replication", "replicationLocation", "replicationProgress", "transferAcceleration",
    "cname", "metaQuery", "x-oss-ac-source-ip", "x-oss-ac-subnet-mask", "x-oss-ac-vpc-id",
    "x-oss-ac-forward-allow", "resourceGroup", "style", "styleName", "x-oss-async-process",
    "regionList", "x-oss-write-get-object-response", "bucketArchiveDirectRead", "httpsConfig",
    "redundancyTransition", "x-oss-target-redundancy-type",
    "x-oss-redundancy-transition-taskid", "accessPoint", "accessPointPolicy",
    "publicAccessBlock", "x-oss-access-point-name", "requesterQosInfo", "qosRequester",
    "resourcePoolInfo", "resourcePool", "resourcePoolBuckets",
})
# fmt: on
_RESPONSE_OVERRIDES = {
    "response-content-type": "Content-Type",
    "response-content-language": "Content-Language",
    "response-cache-control": "Cache-Control",
    "response-content-encoding": "Content-Encoding",
    "response-expires": "Expires",
    "response-content-disposition": "Content-Disposition",
}
# Sub-resources that select an operation this fake does not implement; answering them as a plain
# GET/PUT would silently succeed where the real service does something else entirely.
_UNSUPPORTED_SUBRESOURCES = V1_SIGNED_SUBRESOURCES - set(_RESPONSE_OVERRIDES) - {
    "security-token", "objectMeta", "bucketInfo", "location", "continuation-token",
}  # fmt: skip
_DEFAULT_ERROR_CODES = {
    403: "AccessDenied",
    404: "NoSuchKey",
    429: "TooManyRequests",
    500: "InternalError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


# --- CRC-64/ECMA-182 as OSS computes it (CRC-64/XZ: reflected, init and xor-out all ones) ---------

_CRC64_MASK = 0xFFFF_FFFF_FFFF_FFFF
_CRC64_POLY_REFLECTED = 0xC96C_5795_D787_0F42  # 0x42F0E1EBA9EA3693 bit-reversed


def _crc64_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _CRC64_POLY_REFLECTED if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC64_TABLE = _crc64_table()


def crc64_ecma_pure(data: bytes) -> int:
    """CRC-64/ECMA-182 in plain Python: the reference the fast path is tested against."""
    crc = _CRC64_MASK
    table = _CRC64_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ _CRC64_MASK


def _fast_crc64() -> Callable[[bytes], int] | None:
    # crcmod (an oss2 dependency) has a C extension that is ~100x faster, which matters for
    # benchmarks that put megabytes; the pure version keeps the fake usable without it.
    try:
        crcmod = importlib.import_module("crcmod.crcmod")
    except ImportError:
        return None
    fun: Callable[[bytes], int] = crcmod.mkCrcFun(
        0x1_42F0_E1EB_A9EA_3693, initCrc=0, rev=True, xorOut=_CRC64_MASK
    )
    return fun


crc64_ecma: Callable[[bytes], int] = _fast_crc64() or crc64_ecma_pure


# --- the store ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeObject:
    """One stored object, with its metadata exactly as the service reports it."""

    key: str
    data: bytes
    etag: str  # quoted, as on the wire: '"5EB63BBBE01EEED093CB22BB8F5ACDC3"'
    crc64: int
    last_modified: int  # whole seconds: OSS reports nothing finer
    content_type: str
    object_type: str  # "Normal" (simple upload) or "Multipart"
    content_md5: str | None  # base64 MD5; OSS has it for simple uploads only


def make_object(
    key: str,
    data: bytes,
    last_modified: float,
    content_type: str = "application/octet-stream",
    part_size: int | None = None,
) -> FakeObject:
    """Build the metadata OSS would record for ``data`` uploaded simply or in parts."""
    md5 = hashlib.md5(data)
    if part_size is None:
        etag, object_type, content_md5 = md5.hexdigest().upper(), "Normal", _b64(md5.digest())
    else:
        # Multipart ETags are the MD5 of the parts' binary MD5s plus "-<parts>", as in S3:
        # never the content's MD5, so clients must not verify downloads against them.
        parts = [data[i : i + part_size] for i in range(0, max(len(data), 1), part_size)]
        digests = b"".join(hashlib.md5(part).digest() for part in parts)
        etag = f"{hashlib.md5(digests).hexdigest().upper()}-{len(parts)}"
        object_type, content_md5 = "Multipart", None
    return FakeObject(
        key=key,
        data=data,
        etag=f'"{etag}"',
        crc64=crc64_ecma(data),
        last_modified=int(last_modified),
        content_type=content_type,
        object_type=object_type,
        content_md5=content_md5,
    )


class RecordedRequest(NamedTuple):
    """A request as received: decoded ``/bucket/key`` path and decoded query parameters."""

    method: str
    path: str
    query: dict[str, str]

    @property
    def bucket(self) -> str:
        return self.path[1:].partition("/")[0]

    @property
    def key(self) -> str:
        return self.path[1:].partition("/")[2]

    @property
    def kind(self) -> str:
        """One of list, get, head, meta, put, delete, bucket_info, location, other."""
        if set(self.query) & _UNSUPPORTED_SUBRESOURCES:
            return "other"
        if not self.key:
            if self.method != "GET":
                return "other"
            for param, kind in (("bucketInfo", "bucket_info"), ("location", "location")):
                if param in self.query:
                    return kind
            return "list"
        if self.method == "HEAD":
            return "meta" if "objectMeta" in self.query else "head"
        return {"GET": "get", "PUT": "put", "DELETE": "delete"}.get(self.method, "other")


@dataclass
class _Fault:
    action: str  # "status", "reset", "truncate" or "corrupt"
    remaining: int | None  # None: until cleared
    status: int = 500
    code: str = ""
    kind: str | None = None
    predicate: Callable[[RecordedRequest], bool] | None = None

    def matches(self, request: RecordedRequest) -> bool:
        if self.kind is not None and request.kind != self.kind:
            return False
        return self.predicate is None or self.predicate(request)


@dataclass(frozen=True)
class _Request:
    method: str
    bucket: str
    key: str
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    body: bytes
    request_id: str


@dataclass
class _Reply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    content_length: int | None = None  # HEAD announces the GET length without a body
    with_body: bool = True
    fault: str | None = None  # "truncate" or "corrupt", applied while sending


class OssError(Exception):
    """An error answered in OSS's XML format."""

    def __init__(self, status: int, code: str, message: str, **details: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.details = status, code, message, details


# --- signatures -----------------------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _uri_encode(text: str, keep_slash: bool) -> str:
    # RFC 3986 unreserved characters stay, everything else is %XX of its UTF-8 bytes; this is
    # oss2's v2_uri_encode / __v4_uri_encode (V4 keeps "/" in the path, V2 does not).
    return quote(text, safe="/" if keep_slash else "")


def _canonical_headers(headers: Mapping[str, str], extra: set[str]) -> str:
    signed = sorted((k, v) for k, v in headers.items() if k.startswith("x-oss-") or k in extra)
    return "".join(f"{k}:{v}\n" for k, v in signed)


def _join_params(params: list[tuple[str, str]]) -> str:
    return "&".join(f"{k}={v}" if v else k for k, v in sorted(params))


def string_to_sign_v1(request: _Request) -> str:
    """VERB, Content-MD5, Content-Type, Date, x-oss-* headers and the decoded resource."""
    subresources = [(k, v) for k, v in request.query.items() if k in V1_SIGNED_SUBRESOURCES]
    resource = f"/{request.bucket}/{request.key}"
    if subresources:
        resource += "?" + _join_params(subresources)
    h = request.headers
    date = h.get("x-oss-date") or h.get("date", "")
    head = [request.method, h.get("content-md5", ""), h.get("content-type", ""), date]
    return "\n".join(head) + "\n" + _canonical_headers(h, set()) + resource


def string_to_sign_v2(request: _Request, additional: list[str]) -> str:
    """Like V1 but every query parameter is signed, URI-encoded, plus the additional headers."""
    resource = _uri_encode(f"/{request.bucket}/{request.key}", keep_slash=False)
    params = [(_uri_encode(k, False), _uri_encode(v, False)) for k, v in request.query.items()]
    if params:
        resource += "?" + _join_params(params)
    h = request.headers
    head = [request.method, h.get("content-md5", ""), h.get("content-type", ""), h.get("date", "")]
    canonical = _canonical_headers(h, set(additional))
    return "\n".join(head) + "\n" + canonical + ";".join(sorted(additional)) + "\n" + resource


def canonical_request_v4(request: _Request, additional: list[str]) -> str:
    params = [(_uri_encode(k, False), _uri_encode(v, False)) for k, v in request.query.items()]
    extra = set(additional) | {"content-type", "content-md5"}
    return "\n".join(
        [
            request.method,
            _uri_encode(f"/{request.bucket}/{request.key}", keep_slash=True),
            _join_params(params),
            # Every canonical header line ends in "\n" and the join adds one more: the blank line
            # after the headers that V4 requires.
            _canonical_headers(request.headers, extra),
            ";".join(sorted(additional)),
            request.headers.get("x-oss-content-sha256", ""),
        ]
    )


def signature_v4(secret: str, scope: list[str], timestamp: str, canonical: str) -> str:
    date, region, product, terminator = scope
    key = hmac.new(f"aliyun_v4{secret}".encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, product, terminator):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    to_sign = f"OSS4-HMAC-SHA256\n{timestamp}\n{'/'.join(scope)}\n{digest}"
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class _Signed:
    """What a request claims (key id, signature) beside what the server computes."""

    access_key_id: str
    given: str
    expected: str
    signed_text: str  # string to sign (V1/V2) or canonical request (V4), for error details
    timestamp: str  # the Date or x-oss-date the signature covers
    region: str = ""


def _signed_v1(request: _Request, fields: str, secret: str) -> _Signed:
    access_key_id, colon, given = fields.partition(":")
    if not colon:
        raise OssError(400, "InvalidArgument", "Authorization header is invalid.")
    text = string_to_sign_v1(request)
    expected = _b64(hmac.new(secret.encode(), text.encode(), hashlib.sha1).digest())
    h = request.headers
    return _Signed(access_key_id, given, expected, text, h.get("x-oss-date") or h.get("date", ""))


def _signed_v2(request: _Request, fields: str, secret: str) -> _Signed:
    parsed = _parse_fields(fields, ":")
    additional = [h for h in parsed.get("AdditionalHeaders", "").split(";") if h]
    text = string_to_sign_v2(request, additional)
    expected = _b64(hmac.new(secret.encode(), text.encode(), hashlib.sha256).digest())
    given = parsed.get("Signature", "")
    date = request.headers.get("date", "")
    return _Signed(parsed.get("AccessKeyId", ""), given, expected, text, date)


def _signed_v4(request: _Request, fields: str, secret: str) -> _Signed:
    parsed = _parse_fields(fields, "=")
    access_key_id, _, scope_text = parsed.get("Credential", "").partition("/")
    scope = scope_text.split("/")
    timestamp = request.headers.get("x-oss-date", "")
    payload_hash = request.headers.get("x-oss-content-sha256")
    if len(scope) != 4 or scope[3] != "aliyun_v4_request" or not timestamp:
        raise OssError(400, "InvalidArgument", "Authorization header is invalid.")
    if payload_hash not in ("UNSIGNED-PAYLOAD", hashlib.sha256(request.body).hexdigest()):
        raise OssError(400, "InvalidArgument", "x-oss-content-sha256 is missing or wrong.")
    if scope[0] != timestamp[:8]:
        raise OssError(403, "SignatureDoesNotMatch", f"Invalid signing date in {scope_text}.")
    additional = [h for h in parsed.get("AdditionalHeaders", "").split(";") if h]
    canonical = canonical_request_v4(request, additional)
    expected = signature_v4(secret, scope, timestamp, canonical)
    given = parsed.get("Signature", "")
    return _Signed(access_key_id, given, expected, canonical, timestamp, region=scope[1])


def _parse_fields(text: str, separator: str) -> dict[str, str]:
    fields = {}
    for item in text.split(","):
        name, sep, value = item.strip().partition(separator)
        if not sep:
            raise OssError(400, "InvalidArgument", "Authorization header is invalid.")
        fields[name] = value
    return fields


# --- listing --------------------------------------------------------------------------------------


def _common_prefix(key: str, prefix: str, delimiter: str) -> str | None:
    if not delimiter:
        return None
    cut = key.find(delimiter, len(prefix))
    return None if cut < 0 else key[: cut + len(delimiter)]


def list_page(
    keys: list[str], prefix: str, delimiter: str, after: str, limit: int
) -> tuple[list[str], list[str], str | None]:
    """One page of sorted ``keys``: (objects, common prefixes, resume marker or None if done).

    Entries strictly after ``after`` are listed; a key whose common prefix sorts at or before
    ``after`` belongs to a group that was already reported, so it is skipped.
    """
    objects: list[str] = []
    prefixes: list[str] = []
    last = None
    i = max(bisect.bisect_left(keys, prefix), bisect.bisect_right(keys, after) if after else 0)
    while i < len(keys) and keys[i].startswith(prefix):
        key = keys[i]
        group = _common_prefix(key, prefix, delimiter)
        i += 1
        if group is not None and ((after and group <= after) or group == last):
            continue  # rolled into a common prefix already reported
        if len(objects) + len(prefixes) == limit:
            return objects, prefixes, last
        if group is None:
            objects.append(key)
        else:
            prefixes.append(group)
        last = key if group is None else group
    return objects, prefixes, None


def _xml(root: ET.Element) -> bytes:
    text = ET.tostring(root, encoding="unicode")
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{text}'.encode()


def _sub(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
    child = ET.SubElement(parent, tag)
    child.text = text
    return child


def _iso8601(seconds: int) -> str:
    # oss2 parses listing times with a regex that insists on the ".000Z" ending.
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(seconds))


def _http_date(seconds: float) -> str:
    return email.utils.formatdate(seconds, usegmt=True)


def _byte_range(header: str | None, size: int, standard: bool) -> tuple[int, int] | None:
    """The (first, last) bytes to send, None for the whole object, or OssError 416.

    By default OSS ignores a malformed or out-of-range Range and sends everything with 200;
    ``x-oss-range-behavior: standard`` clamps the end and rejects a start past the end with 416.
    Only the first of several ranges is honoured.
    """
    match = _RANGE.match(header.split(",")[0].strip()) if header else None
    if not match or match.groups() == ("", ""):
        return None
    first_text, last_text = match.groups()
    if not first_text:  # suffix: the last N bytes
        count = int(last_text)
        if count == 0 or (count > size and not standard):
            return None
        first, last = max(size - count, 0), size - 1
    else:
        first = int(first_text)
        last = int(last_text) if last_text else size - 1
        if first > last and last_text:
            return None
        if last >= size:
            if not standard:
                return None
            last = size - 1
    if first >= size or first > last:
        if standard:
            raise OssError(416, "InvalidRange", "The requested range cannot be satisfied.")
        return None
    return first, last


# --- the server -----------------------------------------------------------------------------------


class FakeOss:
    """A fake OSS endpoint on 127.0.0.1 that accepts one set of credentials.

    Operations: ListObjects (V1 and V2), GetObject (ranges, conditions), HeadObject,
    GetObjectMeta, PutObject, DeleteObject, GetBucketInfo, GetBucketLocation; anything else is
    answered 501. Tests seed state with ``put``/``delete``, read ``requests``, and arm faults.
    """

    def __init__(
        self,
        access_key_id: str = "AKID",
        access_key_secret: str = "SECRET",
        security_token: str | None = None,
        region: str | None = None,
    ) -> None:
        # Re-entrant: fault predicates run under it and may call back into count() or get().
        self._lock = threading.RLock()
        self._credentials = (access_key_id, access_key_secret, security_token)
        self.region = region  # when set, V4 requests must be scoped to it
        self._buckets: dict[str, dict[str, FakeObject]] = {}
        self._requests: list[RecordedRequest] = []
        self._faults: list[_Fault] = []
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        #: seconds added to every request before it is answered
        self.latency = 0.0
        #: send Content-MD5 on whole-object GET/HEAD of simple uploads, as OSS does
        self.send_content_md5 = True
        #: reject Date/x-oss-date further than this from the fake's clock (None: don't check)
        self.max_clock_skew_seconds: float | None = DEFAULT_MAX_CLOCK_SKEW_SECONDS
        #: hostile modes (tests/reliability): rewrite every listing's XML body, and answer
        #: every request with these raw bytes instead of an HTTP response
        self.mangle_listing: Callable[[bytes], bytes] | None = None
        self.raw_answer: bytes | None = None

    # lifecycle

    def start(self) -> FakeOss:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._server = server
        self._stopping.clear()
        # A short poll interval makes stop() quick: shutdown() waits for the loop to notice.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.01}, name="FakeOss-serve"
        )
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()  # cuts injected latency short
        self._server.shutdown()
        self._server.close_all()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = self._thread = None

    def __enter__(self) -> FakeOss:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeOss is not running")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # state

    def set_credentials(
        self, access_key_id: str, access_key_secret: str, security_token: str | None = None
    ) -> None:
        """Replace the only accepted credentials, as a key rotation does."""
        with self._lock:
            self._credentials = (access_key_id, access_key_secret, security_token)

    def create_bucket(self, name: str) -> None:
        if not _BUCKET_NAME.match(name):
            raise ValueError(f"invalid OSS bucket name: {name!r}")
        with self._lock:
            self._buckets.setdefault(name, {})

    def delete_bucket(self, name: str) -> None:
        with self._lock:
            self._buckets.pop(name, None)

    def put(
        self,
        bucket: str,
        key: str,
        data: bytes,
        last_modified: float | None = None,
        *,
        content_type: str = "application/octet-stream",
        part_size: int | None = None,
    ) -> FakeObject:
        """Store an object (creating the bucket); ``part_size`` makes it a multipart upload."""
        self.create_bucket(bucket)
        mtime = time.time() if last_modified is None else last_modified
        obj = make_object(key, data, mtime, content_type, part_size)
        with self._lock:
            self._buckets[bucket][key] = obj
        return obj

    def delete(self, bucket: str, key: str) -> None:
        with self._lock:
            self._buckets.get(bucket, {}).pop(key, None)

    def get(self, bucket: str, key: str) -> FakeObject:
        """The stored object; KeyError if absent."""
        with self._lock:
            return self._buckets[bucket][key]

    def keys(self, bucket: str) -> list[str]:
        with self._lock:
            return sorted(self._buckets.get(bucket, {}))

    # recorded requests

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received, in arrival order."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def count(self, method: str | None = None, kind: str | None = None) -> int:
        return sum(
            1
            for r in self.requests
            if (method is None or r.method == method) and (kind is None or r.kind == kind)
        )

    # fault knobs: each affects the next matching requests, then disarms itself

    def fail_next(
        self, n: int = 1, status: int = 500, *, code: str | None = None, kind: str | None = None
    ) -> None:
        """Answer the next ``n`` requests (of ``kind``, if given) with an OSS error."""
        self._add_fault(_Fault("status", n, status, code or "", kind))

    def fail_matching(
        self,
        predicate: Callable[[RecordedRequest], bool],
        status: int = 500,
        *,
        code: str | None = None,
        times: int | None = None,
    ) -> None:
        """Answer requests where ``predicate`` holds with an error, ``times`` times or forever."""
        self._add_fault(_Fault("status", times, status, code or "", predicate=predicate))

    def reset_next(self, n: int = 1, *, kind: str | None = None) -> None:
        """Drop the connection of the next ``n`` requests with a TCP reset and no response."""
        self._add_fault(_Fault("reset", n, kind=kind))

    def truncate_next_get(self, n: int = 1) -> None:
        """Send the full Content-Length but only half the body of the next ``n`` object GETs."""
        self._add_fault(_Fault("truncate", n, kind="get"))

    def corrupt_next_get(self, n: int = 1) -> None:
        """Flip a byte in the body of the next ``n`` object GETs; headers keep the true CRC/MD5."""
        self._add_fault(_Fault("corrupt", n, kind="get"))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _add_fault(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self, request: RecordedRequest, actions: set[str]) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.action in actions and fault.matches(request):
                    if fault.remaining is not None:
                        fault.remaining -= 1
                        if fault.remaining <= 0:
                            self._faults.remove(fault)
                    return fault
        return None

    # request handling

    def _handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> _Reply:
        """Answer one request; a reply with ``fault == "reset"`` means drop the connection."""
        raw_path, _, raw_query = target.partition("?")
        bucket, _, key = raw_path[1:].partition("/")
        request = _Request(
            method=method,
            bucket=unquote(bucket),
            key=unquote(key),
            query=dict(parse_qsl(raw_query, keep_blank_values=True)),
            headers=headers,
            body=body,
            request_id=secrets.token_hex(12).upper(),
        )
        record = RecordedRequest(method, f"/{request.bucket}/{request.key}", request.query)
        with self._lock:
            self._requests.append(record)
        if self.latency > 0:
            self._stopping.wait(self.latency)
        try:
            fault = self._take_fault(record, {"status", "reset"})
            if fault is not None and fault.action == "reset":
                return _Reply(0, fault="reset")
            if fault is not None:
                code = fault.code or _DEFAULT_ERROR_CODES.get(fault.status, "InjectedFault")
                raise OssError(fault.status, code, "Injected by FakeOss.")
            reply = self._dispatch(request, record)
        except OssError as exc:
            reply = _error_reply(exc, request)
        if reply.status == 200 and record.kind == "list" and self.mangle_listing is not None:
            reply.body = self.mangle_listing(reply.body)
        if reply.status in (200, 206) and record.kind == "get":
            fault = self._take_fault(record, {"truncate", "corrupt"})
            reply.fault = fault.action if fault else None
        reply.headers["x-oss-request-id"] = request.request_id
        return reply

    def _dispatch(self, request: _Request, record: RecordedRequest) -> _Reply:
        with self._lock:
            objects = self._buckets.get(request.bucket)
            obj = objects.get(request.key) if objects is not None and request.key else None
            keys = sorted(objects) if objects is not None and record.kind == "list" else []
            listed = {k: objects[k] for k in keys} if objects is not None else {}
        if not request.bucket:
            raise OssError(501, "NotImplemented", "FakeOss serves bucket and object requests only.")
        if objects is None:
            raise OssError(
                404,
                "NoSuchBucket",
                "The specified bucket does not exist.",
                BucketName=request.bucket,
            )
        self._authenticate(request)
        if len(request.key.encode()) > MAX_KEY_BYTES:
            raise OssError(400, "InvalidObjectName", "The length of object name is too long.")
        if record.kind == "other":
            raise OssError(501, "NotImplemented", f"FakeOss does not implement {record}.")
        if record.kind == "list":
            version = 2 if request.query.get("list-type") == "2" else 1
            return _list_reply(request, keys, listed, version)
        if record.kind == "bucket_info":
            return _bucket_info_reply(request.bucket, self.region or DEFAULT_REGION)
        if record.kind == "location":
            root = ET.Element("LocationConstraint")
            root.text = f"oss-{self.region or DEFAULT_REGION}"
            return _Reply(200, {"Content-Type": "application/xml"}, _xml(root))
        if record.kind == "put":
            return self._put_object(request)
        if record.kind == "delete":
            self.delete(request.bucket, request.key)
            return _Reply(204)
        if obj is None:
            raise OssError(404, "NoSuchKey", "The specified key does not exist.", Key=request.key)
        return self._object_reply(request, obj, record.kind)

    def _authenticate(self, request: _Request) -> None:
        access_key_id, secret, token = self._credentials
        scheme, _, fields = request.headers.get("authorization", "").partition(" ")
        if not scheme:
            raise OssError(403, "AccessDenied", "Anonymous access is forbidden for this bucket.")
        signers = {"OSS": _signed_v1, "OSS2": _signed_v2, "OSS4-HMAC-SHA256": _signed_v4}
        if scheme not in signers:
            raise OssError(400, "InvalidArgument", "Authorization header is invalid.")
        signed = signers[scheme](request, fields, secret)
        if scheme == "OSS4-HMAC-SHA256" and self.region not in (None, signed.region):
            raise OssError(403, "SignatureDoesNotMatch", f"Invalid signing region {signed.region}.")
        sent_token = request.headers.get("x-oss-security-token")
        # An STS key id means nothing without its token, so a missing token looks like an
        # unknown key id to the service.
        if signed.access_key_id != access_key_id or (token is not None and sent_token is None):
            message = "The OSS Access Key Id you provided does not exist in our records."
            raise OssError(403, "InvalidAccessKeyId", message, OSSAccessKeyId=signed.access_key_id)
        if sent_token != token:
            message = "The security token you provided is invalid."
            raise OssError(403, "InvalidSecurityToken", message)
        if not hmac.compare_digest(signed.given, signed.expected):
            message = (
                "The request signature we calculated does not match the signature you provided."
                " Check your key and signing method."
            )
            # Like OSS, show what was signed: a mismatch is then debuggable from the error alone.
            raise OssError(403, "SignatureDoesNotMatch", message, StringToSign=signed.signed_text)
        self._check_clock(signed.timestamp)

    def _check_clock(self, timestamp: str) -> None:
        if self.max_clock_skew_seconds is None:
            return
        try:
            if re.fullmatch(r"\d{8}T\d{6}Z", timestamp):
                when = dt.datetime.strptime(timestamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
            else:
                when = email.utils.parsedate_to_datetime(timestamp)
        except (TypeError, ValueError):
            raise OssError(403, "AccessDenied", f"Invalid date {timestamp!r}.") from None
        if abs(when.timestamp() - time.time()) > self.max_clock_skew_seconds:
            message = "The difference between the request time and the current time is too large."
            raise OssError(403, "RequestTimeTooSkewed", message, RequestTime=timestamp)

    def _put_object(self, request: _Request) -> _Reply:
        if "x-oss-copy-source" in request.headers:
            raise OssError(501, "NotImplemented", "FakeOss does not implement CopyObject.")
        given_md5 = request.headers.get("content-md5")
        if given_md5 is not None and given_md5 != _b64(hashlib.md5(request.body).digest()):
            raise OssError(400, "InvalidDigest", "The Content-MD5 you specified is not valid.")
        content_type = request.headers.get("content-type", "application/octet-stream")
        obj = self.put(request.bucket, request.key, request.body, content_type=content_type)
        headers = {"ETag": obj.etag, "x-oss-hash-crc64ecma": str(obj.crc64)}
        return _Reply(200, headers | {"Content-MD5": _b64(hashlib.md5(obj.data).digest())})

    def _object_reply(self, request: _Request, obj: FakeObject, kind: str) -> _Reply:
        headers = {"ETag": obj.etag, "Last-Modified": _http_date(obj.last_modified)}
        if kind == "meta":  # GetObjectMeta: the cheap subset, no CRC or type
            return _Reply(200, headers, content_length=len(obj.data), with_body=False)
        _check_conditions(request.headers, obj)
        headers.update(
            {
                "Content-Type": obj.content_type,
                "Accept-Ranges": "bytes",
                "x-oss-object-type": obj.object_type,
                "x-oss-storage-class": "Standard",
                # Always the whole object's CRC, also on a ranged GET.
                "x-oss-hash-crc64ecma": str(obj.crc64),
            }
        )
        for param, header in _RESPONSE_OVERRIDES.items():
            if param in request.query:
                headers[header] = request.query[param]
        standard = request.headers.get("x-oss-range-behavior") == "standard"
        span = _byte_range(request.headers.get("range"), len(obj.data), standard)
        if span is None:
            if obj.content_md5 and self.send_content_md5:
                headers["Content-MD5"] = obj.content_md5
            return _Reply(200, headers, obj.data, with_body=kind == "get")
        first, last = span
        headers["Content-Range"] = f"bytes {first}-{last}/{len(obj.data)}"
        return _Reply(206, headers, obj.data[first : last + 1], with_body=kind == "get")


def _check_conditions(headers: Mapping[str, str], obj: FakeObject) -> None:
    def since(name: str) -> float | None:
        value = headers.get(name)
        with contextlib.suppress(TypeError, ValueError):
            return email.utils.parsedate_to_datetime(value).timestamp() if value else None
        return None

    if "if-match" in headers and headers["if-match"] not in (obj.etag, "*"):
        raise OssError(412, "PreconditionFailed", "At least one of the pre-conditions failed.")
    unmodified_since = since("if-unmodified-since")
    if unmodified_since is not None and obj.last_modified > unmodified_since:
        raise OssError(412, "PreconditionFailed", "At least one of the pre-conditions failed.")
    modified_since = since("if-modified-since")
    if headers.get("if-none-match") in (obj.etag, "*") or (
        modified_since is not None and obj.last_modified <= modified_since
    ):
        raise OssError(304, "NotModified", "Not Modified", ETag=obj.etag)


def _list_reply(
    request: _Request, keys: list[str], objects: dict[str, FakeObject], version: int
) -> _Reply:
    q = request.query
    encoding = q.get("encoding-type", "")
    if encoding not in ("", "url"):
        raise OssError(400, "InvalidArgument", "The encoding-type must be url.")
    try:
        max_keys = int(q.get("max-keys") or DEFAULT_MAX_KEYS)
    except ValueError:
        max_keys = -1
    if not 0 < max_keys <= MAX_MAX_KEYS:
        raise OssError(400, "InvalidArgument", f"max-keys must be between 1 and {MAX_MAX_KEYS}.")
    prefix, delimiter = q.get("prefix", ""), q.get("delimiter", "")
    if version == 2:
        token = q.get("continuation-token", "")
        after = _decode_token(token) if token else q.get("start-after", "")
    else:
        after = q.get("marker", "")
    names, groups, resume = list_page(keys, prefix, delimiter, after, max_keys)

    def enc(text: str) -> str:
        # With encoding-type=url, every key-like field is percent-encoded and oss2 unquotes it.
        # (A key may carry bytes that are not UTF-8, as surrogate escapes: sent as those bytes.)
        return quote(text.encode("utf-8", "surrogateescape"), safe="/") if encoding else text

    root = ET.Element("ListBucketResult")
    _sub(root, "Name", request.bucket)
    _sub(root, "Prefix", enc(prefix))
    if version == 2:
        for param, tag in (
            ("start-after", "StartAfter"),
            ("continuation-token", "ContinuationToken"),
        ):
            if q.get(param):
                _sub(root, tag, enc(q[param]))
    else:
        _sub(root, "Marker", enc(after))
    _sub(root, "MaxKeys", str(max_keys))
    _sub(root, "Delimiter", enc(delimiter))
    if encoding:
        _sub(root, "EncodingType", encoding)
    _sub(root, "IsTruncated", "true" if resume is not None else "false")
    if resume is not None and version == 2:
        _sub(root, "NextContinuationToken", enc(_encode_token(resume)))
    elif resume is not None:
        _sub(root, "NextMarker", enc(resume))
    with_owner = version == 1 or q.get("fetch-owner") == "true"
    for name in names:
        _add_contents(root, objects[name], enc(name), with_owner)
    for group in groups:
        _sub(_sub(root, "CommonPrefixes"), "Prefix", enc(group))
    if version == 2:
        _sub(root, "KeyCount", str(len(names) + len(groups)))
    return _Reply(200, {"Content-Type": "application/xml"}, _xml(root))


def _add_contents(root: ET.Element, obj: FakeObject, key: str, with_owner: bool) -> None:
    contents = _sub(root, "Contents")
    _sub(contents, "Key", key)
    _sub(contents, "LastModified", _iso8601(obj.last_modified))
    _sub(contents, "ETag", obj.etag)
    _sub(contents, "Type", obj.object_type)
    _sub(contents, "Size", str(len(obj.data)))
    _sub(contents, "StorageClass", "Standard")
    if with_owner:
        owner = _sub(contents, "Owner")
        _sub(owner, "ID", OWNER_ID)
        _sub(owner, "DisplayName", OWNER_ID)


def _encode_token(marker: str) -> str:
    # Opaque like the real tokens, so clients can't get away with treating them as keys.
    return base64.urlsafe_b64encode(b"fake-oss:" + marker.encode()).decode("ascii")


def _decode_token(token: str) -> str:
    with contextlib.suppress(ValueError):
        raw = base64.urlsafe_b64decode(token.encode("ascii"))
        if raw.startswith(b"fake-oss:"):
            return raw[len(b"fake-oss:") :].decode()
    raise OssError(400, "InvalidArgument", "The continuation token provided is incorrect.")


def _bucket_info_reply(bucket: str, region: str) -> _Reply:
    root = ET.Element("BucketInfo")
    info = _sub(root, "Bucket")
    for tag, text in (
        ("AccessMonitor", "Disabled"),
        ("CreationDate", "2024-01-01T00:00:00.000Z"),
        ("ExtranetEndpoint", f"oss-{region}.aliyuncs.com"),
        ("IntranetEndpoint", f"oss-{region}-internal.aliyuncs.com"),
        ("Location", f"oss-{region}"),
        ("StorageClass", "Standard"),
        ("Name", bucket),
        ("DataRedundancyType", "LRS"),
    ):
        _sub(info, tag, text)
    owner = _sub(info, "Owner")
    _sub(owner, "DisplayName", OWNER_ID)
    _sub(owner, "ID", OWNER_ID)
    _sub(_sub(info, "AccessControlList"), "Grant", "private")
    return _Reply(200, {"Content-Type": "application/xml"}, _xml(root))


def _error_reply(error: OssError, request: _Request) -> _Reply:
    if error.status == 304:
        return _Reply(304, dict(error.details), with_body=False, content_length=-1)
    root = ET.Element("Error")
    _sub(root, "Code", error.code)
    _sub(root, "Message", error.message)
    _sub(root, "RequestId", request.request_id)
    _sub(root, "HostId", f"{request.bucket}.oss-{DEFAULT_REGION}.aliyuncs.com")
    for tag, text in error.details.items():
        _sub(root, tag, text)
    body = _xml(root)
    headers = {"Content-Type": "application/xml"}
    if request.method == "HEAD":
        # A HEAD error has no body; OSS puts the error document, base64, in x-oss-err, and
        # oss2 reads it from there to raise NoSuchKey instead of a bare NotFound.
        headers["x-oss-err"] = _b64(body)
    return _Reply(error.status, headers, body, with_body=request.method != "HEAD")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeOss

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._connections: set[socket.socket] = set()
        self._workers: list[threading.Thread] = []
        self._conn_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        # Own thread bookkeeping, so stop() can close idle keep-alive connections and join
        # their threads instead of leaking them past the test.
        worker = threading.Thread(
            target=self.process_request_thread, args=(request, client_address), daemon=True,
            name="FakeOss-conn",
        )  # fmt: skip
        with self._conn_lock:
            self._connections.add(request)
            self._workers = [w for w in self._workers if w.is_alive()] + [worker]
        worker.start()

    def shutdown_request(self, request: Any) -> None:
        with self._conn_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_all(self) -> None:
        with self._conn_lock:
            connections, workers = list(self._connections), list(self._workers)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        for worker in workers:
            worker.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so every reply carries a correct Content-Length
    # Headers and body are separate writes; with Nagle on, each keep-alive request would wait
    # ~40 ms for the client's delayed ACK.
    disable_nagle_algorithm = True
    server_version = "AliyunOSS"
    sys_version = ""
    server: _Server

    def do_GET(self) -> None:
        self._serve()

    do_HEAD = do_PUT = do_DELETE = do_POST = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        headers = {name.lower(): value for name, value in self.headers.items()}
        body = self._read_body(headers)
        raw = self.server.fake.raw_answer
        if raw is not None:  # not HTTP at all: a hostile or broken endpoint
            self.wfile.write(raw)
            self.close_connection = True
            return
        reply = self.server.fake._handle(self.command, self.path, headers, body)
        if reply.fault == "reset":
            self._reset()
            return
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        length = len(reply.body) if reply.content_length is None else reply.content_length
        if length >= 0:
            self.send_header("Content-Length", str(length))
        self.end_headers()
        if not reply.with_body:
            return
        body = reply.body
        if reply.fault == "corrupt" and body:
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        if reply.fault == "truncate":
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)

    def _read_body(self, headers: Mapping[str, str]) -> bytes:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        return self.rfile.read(int(headers.get("content-length") or 0))

    def _reset(self) -> None:
        # SO_LINGER 0 turns close() into a TCP RST: the client sees "connection reset" mid-request,
        # like a load balancer dropping it. rfile holds a reference that keeps the fd open.
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()
        self.connection.close()


__all__ = [
    "DEFAULT_MAX_KEYS",
    "MAX_MAX_KEYS",
    "V1_SIGNED_SUBRESOURCES",
    "FakeObject",
    "FakeOss",
    "OssError",
    "RecordedRequest",
    "crc64_ecma",
    "crc64_ecma_pure",
    "list_page",
    "make_object",
]
