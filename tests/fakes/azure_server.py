"""A protocol-faithful fake of the Azure Files REST API, driven by the real SDK in tests.

Azurite has no Azure Files service, so this threaded HTTP server speaks the part of the file
share REST API that ``azure-storage-file-share`` uses to read a share: List Directories and
Files, Get File (whole and ranged), Get File / Directory / Share Properties. Every request is
authenticated like the service does it (SharedKey or a service SAS), answers carry the headers
and XML the SDK's deserializers expect, and knobs inject latency, 5xx, resets and truncated
bodies. Everything else answers 501 ``NotImplementedByFake`` (the SDK does not retry 501), so
an unsupported call fails loudly instead of looking like a flaky service.

URLs are path style like Azurite: ``http://127.0.0.1:PORT/<account>/<share>/<path>``.
The namespace is case-insensitive and case-preserving, as on the real service (SMB semantics):
``put("s", "A.py")`` after ``put("s", "a.py")`` overwrites the same file.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import ipaddress
import itertools
import socket
import struct
import sys
import threading
import traceback
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import Message
from email.utils import format_datetime, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import cast
from urllib.parse import quote, unquote
from xml.sax.saxutils import escape, quoteattr

# The well-known Azurite/devstore key; public by design, so it is a safe default.
DEVSTORE_ACCOUNT = "devstoreaccount1"
DEVSTORE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
# Answered when a request carries no x-ms-version (the SDK always sends one; it is echoed).
DEFAULT_SERVICE_VERSION = "2026-10-06"
DEFAULT_MAX_RESULTS = 5000
# The service only computes a transactional MD5 for ranges up to 4 MiB.
MAX_RANGE_MD5_BYTES = 4 * 1024 * 1024
# SharedKey requests whose x-ms-date is further off than this are rejected by the service.
MAX_CLOCK_SKEW = timedelta(minutes=15)
SHUTDOWN_POLL_SECONDS = 0.02
VALID_INCLUDES = {
    "timestamps": "Timestamps",
    "etag": "Etag",
    "attributes": "Attributes",
    "permissionkey": "PermissionKey",
}
REQUEST_KINDS = ("list", "get", "head", "other")

_DOTNET_EPOCH = datetime(1, 1, 1, tzinfo=UTC)
_PERMISSION_KEY = "4066528134148476695*1"
_SERVER_ERROR_TEXT = {
    500: ("InternalError", "The server encountered an internal error. Please retry the request."),
    503: ("ServerBusy", "The server is currently unable to receive requests. Please retry."),
}


@dataclass
class RecordedRequest:
    """One request as the fake saw it; ``status`` is None when the connection was dropped."""

    method: str
    path: str  # decoded URL path, e.g. "/devstoreaccount1/share/dir/sub/file.py"
    query: dict[str, str]  # decoded, names as sent
    kind: str  # "list" | "get" | "head" | "other"
    headers: dict[str, str]  # lower-cased names
    status: int | None = None


@dataclass(frozen=True)
class FileInfo:
    """What the fake stores for a file, for assertions in tests."""

    path: str
    size: int
    etag: str
    last_modified: datetime
    content_md5: bytes | None
    file_id: str


@dataclass
class _Node:
    name: str
    is_dir: bool
    file_id: int
    parent_id: int
    etag: str
    created: datetime
    modified: datetime
    data: bytes = b""
    content_md5: bytes | None = None
    children: dict[str, _Node] = field(default_factory=dict)  # keyed by name.lower()


@dataclass
class _Share:
    name: str
    root: _Node
    etag: str
    modified: datetime


@dataclass
class _Fault:
    remaining: int
    action: str  # "fail" | "reset"
    status: int
    kind: str | None


@dataclass(frozen=True)
class _Route:
    op: str  # "list" | "dir_props" | "share_props" | "file_get" | "file_head" | "unsupported"
    kind: str
    share: str
    parts: tuple[str, ...]


@dataclass(frozen=True)
class _Grant:
    permissions: str | None  # None: account key, everything allowed


class _ServiceError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        detail: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail
        self.headers = headers or {}


def _not_found() -> _ServiceError:
    return _ServiceError(404, "ResourceNotFound", "The specified resource does not exist.")


def _parent_not_found() -> _ServiceError:
    return _ServiceError(404, "ParentNotFound", "The specified parent path does not exist.")


def _bad_query(name: str, value: str) -> _ServiceError:
    return _ServiceError(
        400,
        "InvalidQueryParameterValue",
        f"Value for one of the query parameters specified in the request URI "
        f"is invalid. {name}={value}",
    )


def header_collation_key(name: str) -> tuple[tuple[tuple[int, str], ...], str]:
    """Order x-ms-* header names like the service: hyphens ignored, case-insensitive.

    The service compares with a culture-aware collation, not ordinal order, so plain
    ``sorted()`` disagrees on names such as ``x-ms-a-z`` / ``x-ms-ab``. At the first level
    the collation ignores hyphens and apostrophes and ranks punctuation < digits < letters.
    """
    primary = tuple(
        (2 if char.isalpha() else 1 if char.isdigit() else 0, char)
        for char in name.lower()
        if char not in "-'"
    )
    # A name that is a prefix of another sorts first ("x-ms-range" < "x-ms-range-get-..."); names
    # equal but for hyphens tie-break deterministically, as the service's later levels do.
    return primary, name.lower()


def _parse_query(raw_query: str) -> list[tuple[str, str]]:
    # unquote, not unquote_plus: the SDK percent-encodes and signs values with unquote().
    pairs = []
    for item in raw_query.split("&"):
        if item:
            name, _, value = item.partition("=")
            pairs.append((unquote(name), unquote(value)))
    return pairs


def _rfc1123(moment: datetime) -> str:
    return format_datetime(moment, usegmt=True)


def _iso7(moment: datetime) -> str:
    # The service reports SMB times with 100 ns precision: seven fractional digits.
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}0Z"


def _parse_sas_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _xml_safe(text: str) -> bool:
    return all(
        char in "\t\n\r"
        or " " <= char <= "\ud7ff"
        or "\ue000" <= char <= "\ufffd"
        or char >= "\U00010000"
        for char in text
    )


def _name_element(tag: str, name: str) -> str:
    # Names XML cannot carry are percent-encoded and flagged, as the service does.
    if _xml_safe(name):
        return f"<{tag}>{escape(name)}</{tag}>"
    return f'<{tag} Encoded="true">{quote(name, safe="")}</{tag}>'


def _encode_marker(key: str) -> str:
    # Opaque like the service's markers, so callers cannot come to rely on their content.
    token = base64.urlsafe_b64encode(key.encode()).decode()
    return f"2!{len(token)}!{token}"


def _decode_marker(marker: str) -> str:
    try:
        _, _, token = marker.split("!", 2)
        return base64.urlsafe_b64decode(token.encode()).decode()
    except ValueError as exc:
        raise _bad_query("marker", marker) from exc


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeAzureFiles

    def handle_error(self, request: object, client_address: object) -> None:
        # A client hanging up on an idle keep-alive connection (the SDK's pool does, with RST)
        # is normal for a server; anything else escaping a handler is a bug in the fake.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        self.fake._internal_errors.append(traceback.format_exc())
        super().handle_error(request, client_address)  # type: ignore[arg-type]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; without TCP_NODELAY every keep-alive
    # request stalls ~40 ms on Nagle + delayed ACK.
    disable_nagle_algorithm = True
    server_version = "Windows-Azure-File/1.0"
    sys_version = "Microsoft-HTTPAPI/2.0"
    _record: RecordedRequest | None = None

    @property
    def fake(self) -> FakeAzureFiles:
        return cast(_Server, self.server).fake

    def setup(self) -> None:
        super().setup()
        self.fake._track_connection(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.fake._track_connection(self.connection, add=False)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base signature
        pass  # keep pytest output clean; tests inspect az.requests instead

    def do_GET(self) -> None:
        self._serve()

    do_HEAD = do_PUT = do_DELETE = do_POST = do_OPTIONS = do_PATCH = do_GET

    def _serve(self) -> None:
        fake = self.fake
        raw_path, _, raw_query = self.path.partition("?")
        pairs = _parse_query(raw_query)
        query = {name.lower(): value for name, value in pairs}
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)  # keep the keep-alive stream in sync
        route_error: _ServiceError | None = None
        try:
            route = fake._route(self.command, raw_path, query)
        except _ServiceError as exc:
            route, route_error = _Route("unsupported", "other", "", ()), exc
        self._record = fake._record_request(self, raw_path, pairs, route.kind)
        if fake.raw_answer is not None:  # not HTTP at all: a hostile or broken endpoint
            self.wfile.write(fake.raw_answer)
            self.close_connection = True
            return
        try:
            fake._delay()
            fault = fake._take_fault(route.kind)
            if fault is not None and fault.action == "reset":
                self._reset()
                return
            if fault is not None:
                code, message = _SERVER_ERROR_TEXT[fault.status]
                raise _ServiceError(fault.status, code, message)
            if route_error is not None:
                raise route_error
            grant = fake._authenticate(self, raw_path, pairs, route)
            fake._authorize(grant, route)
            status, headers, body, content_length = fake._dispatch(route, query, self.headers)
            if route.kind == "list" and status == 200 and fake.mangle_listing is not None:
                body = fake.mangle_listing(body)
            truncate = route.kind == "get" and fake._take_truncation()
            if route.kind == "get" and body and fake._take_corruption():
                body = bytes([body[0] ^ 0xFF]) + body[1:]  # headers keep the true MD5s
            self._send(status, headers, body, content_length=content_length, truncate=truncate)
        except _ServiceError as exc:
            self._send_error(exc)
        except ConnectionError:
            raise  # the client hung up first (its read timeout fired): handle_error ignores it
        except Exception:  # noqa: BLE001 - a fake bug must surface in the test, not hang it
            fake._internal_errors.append(traceback.format_exc())
            # 501 rather than 500: the SDK retries 5xx except 501, and a bug should fail fast.
            self._send_error(_ServiceError(501, "FakeServerBug", "Fake server bug, see stderr."))
            print(fake._internal_errors[-1], file=sys.stderr)

    def _reset(self) -> None:
        # SO_LINGER 0 makes close() send RST instead of FIN: the client sees a reset, no response.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def _send(
        self,
        status: int,
        headers: dict[str, str],
        body: bytes,
        *,
        content_length: int | None = None,
        truncate: bool = False,
    ) -> None:
        if self._record is not None:
            self._record.status = status
        self.send_response(status)
        self.send_header("x-ms-request-id", str(uuid.uuid4()))
        self.send_header("x-ms-version", self.headers.get("x-ms-version", DEFAULT_SERVICE_VERSION))
        client_request_id = self.headers.get("x-ms-client-request-id")
        if client_request_id:
            self.send_header("x-ms-client-request-id", client_request_id)
        for name, value in headers.items():
            self.send_header(name, value)
        length = len(body) if content_length is None else content_length
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if self.command == "HEAD" or not body:
            return
        if truncate:
            # Promise the full length, deliver half, hang up: the client sees a short read.
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        self.wfile.write(body)

    def _send_error(self, exc: _ServiceError) -> None:
        now = datetime.now(UTC)
        message = f"{exc.message}\nRequestId:{uuid.uuid4()}\nTime:{_iso7(now)}"
        detail = ""
        if exc.detail is not None:
            detail = f"<AuthenticationErrorDetail>{escape(exc.detail)}</AuthenticationErrorDetail>"
        body = (
            f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{exc.code}</Code>'
            f"<Message>{escape(message)}</Message>{detail}</Error>"
        ).encode()
        headers = {"Content-Type": "application/xml", "x-ms-error-code": exc.code, **exc.headers}
        if self.command == "HEAD":
            # HEAD answers carry no body, so the error code travels only in the header.
            self._send(exc.status, headers, b"", content_length=0)
        else:
            self._send(exc.status, headers, body)


class FakeAzureFiles:
    """An Azure Files endpoint on 127.0.0.1 holding shares in memory; use as a context manager."""

    def __init__(
        self, account: str = DEVSTORE_ACCOUNT, key: str = DEVSTORE_KEY, *, host: str = "127.0.0.1"
    ) -> None:
        self.account = account
        self.key = key
        self._key_bytes = base64.b64decode(key)
        self._host = host
        self._lock = threading.RLock()
        self._shares: dict[str, _Share] = {}
        self._records: list[RecordedRequest] = []
        self._faults: list[_Fault] = []
        self._truncate_gets = 0
        self._corrupt_gets = 0
        self._latency = 0.0
        #: hostile modes (tests/reliability): rewrite every listing's XML body, and answer
        #: every request with these raw bytes instead of an HTTP response
        self.mangle_listing: Callable[[bytes], bytes] | None = None
        self.raw_answer: bytes | None = None
        self._ids = itertools.count(9223372036854775808, 4096)
        self._last_ticks = 0
        self._stop = threading.Event()
        self._connections: set[socket.socket] = set()
        self._internal_errors: list[str] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> FakeAzureFiles:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
        if exc_type is None and self._internal_errors:
            raise AssertionError("fake Azure server hit a bug:\n" + self._internal_errors[0])

    def start(self) -> None:
        self._stop.clear()
        self._server = _Server((self._host, 0), _Handler)
        self._server.fake = self
        # serve_forever() only notices shutdown() between polls; the default 0.5 s poll would
        # add half a second to every test's teardown.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": SHUTDOWN_POLL_SECONDS},
            name="fake-azure-files",
            daemon=True,
        )
        self._thread.start()

    def close(self) -> None:
        """Stop serving and end every connection, so no handler thread outlives the fake."""
        if self._server is None or self._thread is None:
            return
        self._stop.set()
        self._server.shutdown()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            # Unblocks handlers waiting on idle keep-alive connections.
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._server.server_close()
        self._thread.join()
        for thread in threading.enumerate():
            if thread.name.startswith(f"fake-azure-conn-{id(self)}-"):
                thread.join(timeout=5)
        self._server = self._thread = None

    @property
    def port(self) -> int:
        assert self._server is not None, "FakeAzureFiles is not started"
        return int(self._server.server_address[1])

    @property
    def account_url(self) -> str:
        return f"http://{self._host}:{self.port}/{self.account}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={self.account};"
            f"AccountKey={self.key};FileEndpoint={self.account_url};"
        )

    def make_sas(
        self,
        share: str,
        permission: str = "rl",
        expiry: datetime | None = None,
        *,
        start: datetime | None = None,
    ) -> str:
        """A share SAS token signed with the account key, built by the SDK itself."""
        from azure.storage.fileshare import generate_share_sas

        expiry = expiry or datetime.now(UTC) + timedelta(hours=1)
        return generate_share_sas(
            self.account, share, self.key, permission=permission, expiry=expiry, start=start
        )

    def rotate_key(self, key: str) -> None:
        """Accept only ``key`` (base64) from now on, as an account key rotation does."""
        with self._lock:
            self._key_bytes = base64.b64decode(key)
            self.key = key

    # -- state ----------------------------------------------------------------------------------
    def create_share(self, name: str) -> None:
        with self._lock:
            if name not in self._shares:
                now = datetime.now(UTC)
                root = self._new_node("", is_dir=True, parent_id=0, now=now)
                self._shares[name] = _Share(name, root, self._next_etag(), now)

    def mkdir(self, share: str, path: str) -> None:
        """Create a directory and any missing parents (like ``mkdir -p``)."""
        with self._lock:
            self._ensure_dirs(share, self._split(path))

    def put(
        self,
        share: str,
        path: str,
        data: bytes,
        *,
        store_md5: bool = True,
        content_md5: bytes | None = None,
    ) -> str:
        """Create or replace a file (parents created); returns its new ETag.

        ``store_md5=False`` leaves the Content-MD5 property unset, as for files written over
        SMB or by tools that do not set it; ``content_md5`` stores a given (e.g. stale) value.
        """
        parts = self._split(path)
        if not parts:
            raise ValueError("a file path needs a name")
        with self._lock:
            parent = self._ensure_dirs(share, parts[:-1])
            now = datetime.now(UTC)
            node = parent.children.get(parts[-1].lower())
            if node is not None and node.is_dir:
                raise IsADirectoryError(path)
            if node is None:
                node = self._new_node(parts[-1], is_dir=False, parent_id=parent.file_id, now=now)
                parent.children[parts[-1].lower()] = node
                self._touch(parent, now)
            node.data = bytes(data)
            node.content_md5 = content_md5 or (hashlib.md5(data).digest() if store_md5 else None)
            self._touch(node, now)
            return node.etag

    def delete(self, share: str, path: str) -> None:
        """Remove a file or a whole directory tree."""
        parts = self._split(path)
        with self._lock:
            parent = self._lookup(share, parts[:-1])
            if not parts or parent is None or not parent.is_dir:
                raise FileNotFoundError(path)
            if parent.children.pop(parts[-1].lower(), None) is None:
                raise FileNotFoundError(path)
            self._touch(parent, datetime.now(UTC))

    def stat(self, share: str, path: str) -> FileInfo:
        with self._lock:
            node = self._lookup(share, self._split(path))
            if node is None or node.is_dir:
                raise FileNotFoundError(path)
            return FileInfo(
                path, len(node.data), node.etag, node.modified, node.content_md5, str(node.file_id)
            )

    def set_key(self, key: str) -> None:
        """Replace the account key, as a key rotation does: requests signed with the old key,
        and SAS tokens made with it, are refused from now on."""
        with self._lock:
            self.key = key
            self._key_bytes = base64.b64decode(key)

    # -- fault knobs ----------------------------------------------------------------------------
    @property
    def latency(self) -> float:
        """Seconds every request waits before it is answered."""
        with self._lock:
            return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        with self._lock:
            self._latency = seconds

    def fail_next(self, n: int = 1, status: int = 500, *, kind: str | None = None) -> None:
        """Answer the next ``n`` requests (of ``kind`` if given) with a 500/503 error."""
        if status not in _SERVER_ERROR_TEXT:
            raise ValueError(f"status must be one of {sorted(_SERVER_ERROR_TEXT)}")
        self._add_fault(_Fault(n, "fail", status, kind))

    def reset_next(self, n: int = 1, *, kind: str | None = None) -> None:
        """Drop the next ``n`` requests' connections (TCP reset) without any response."""
        self._add_fault(_Fault(n, "reset", 0, kind))

    def truncate_next_get(self, n: int = 1) -> None:
        """Send the next ``n`` file GET bodies half-way under a full Content-Length, then close."""
        with self._lock:
            self._truncate_gets += n

    def corrupt_next_get(self, n: int = 1) -> None:
        """Flip a byte in the next ``n`` non-empty file GET bodies; headers keep the true MD5s."""
        with self._lock:
            self._corrupt_gets += n

    def clear_faults(self) -> None:
        """Forget every pending fail/reset/truncate/corrupt knob."""
        with self._lock:
            self._faults.clear()
            self._truncate_gets = 0
            self._corrupt_gets = 0

    # -- request log ----------------------------------------------------------------------------
    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._records)

    def clear_requests(self) -> None:
        with self._lock:
            self._records.clear()

    def count(self, kind: str | None = None) -> int:
        if kind is not None and kind not in REQUEST_KINDS:
            raise ValueError(f"kind must be one of {REQUEST_KINDS}")
        with self._lock:
            return sum(1 for r in self._records if kind is None or r.kind == kind)

    # -- internals: tree ----------------------------------------------------------------------
    @staticmethod
    def _split(path: str) -> list[str]:
        return [part for part in path.split("/") if part]

    def _next_etag(self) -> str:
        # The service's ETags ("0x8D...") are .NET DateTime ticks (100 ns since 0001-01-01);
        # strictly increasing here so two writes in the same tick still differ.
        now = datetime.now(UTC)
        ticks = (now - _DOTNET_EPOCH) // timedelta(microseconds=1) * 10
        self._last_ticks = max(ticks, self._last_ticks + 1)
        return f'"0x{self._last_ticks:X}"'

    def _new_node(self, name: str, *, is_dir: bool, parent_id: int, now: datetime) -> _Node:
        return _Node(name, is_dir, next(self._ids), parent_id, self._next_etag(), now, now)

    def _touch(self, node: _Node, now: datetime) -> None:
        node.etag = self._next_etag()
        node.modified = now

    def _ensure_dirs(self, share: str, parts: list[str]) -> _Node:
        if share not in self._shares:
            raise KeyError(f"no share {share!r}; call create_share() first")
        node = self._shares[share].root
        for part in parts:
            child = node.children.get(part.lower())
            if child is None:
                now = datetime.now(UTC)
                child = self._new_node(part, is_dir=True, parent_id=node.file_id, now=now)
                node.children[part.lower()] = child
                self._touch(node, now)
            elif not child.is_dir:
                raise NotADirectoryError("/".join(parts))
            node = child
        return node

    def _lookup(self, share: str, parts: Iterable[str]) -> _Node | None:
        node: _Node | None = self._shares[share].root if share in self._shares else None
        for part in parts:
            if node is None or not node.is_dir:
                return None
            node = node.children.get(part.lower())
        return node

    def _resolve(self, route: _Route) -> _Node:
        """Walk a request path, failing with the error code the service would use."""
        share = self._shares.get(route.share)
        if share is None:
            raise _ServiceError(404, "ShareNotFound", "The specified share does not exist.")
        node = share.root
        for index, part in enumerate(route.parts):
            child = node.children.get(part.lower())
            last = index == len(route.parts) - 1
            if child is None:
                raise _not_found() if last else _parent_not_found()
            if not last and not child.is_dir:
                raise _parent_not_found()
            node = child
        return node

    # -- internals: request handling ------------------------------------------------------------
    def _track_connection(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
                threading.current_thread().name = f"fake-azure-conn-{id(self)}-{conn.fileno()}"
            else:
                self._connections.discard(conn)

    def _record_request(
        self, handler: _Handler, raw_path: str, pairs: list[tuple[str, str]], kind: str
    ) -> RecordedRequest:
        record = RecordedRequest(
            handler.command,
            unquote(raw_path),
            dict(pairs),
            kind,
            {k.lower(): v for k, v in handler.headers.items()},
        )
        with self._lock:
            self._records.append(record)
        return record

    def _delay(self) -> None:
        latency = self.latency
        if latency > 0:
            self._stop.wait(latency)  # an Event, so close() is never held up by the delay

    def _add_fault(self, fault: _Fault) -> None:
        if fault.kind is not None and fault.kind not in REQUEST_KINDS:
            raise ValueError(f"kind must be one of {REQUEST_KINDS}")
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self, kind: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.remaining > 0 and fault.kind in (None, kind):
                    fault.remaining -= 1
                    return fault
            return None

    def _take_corruption(self) -> bool:
        with self._lock:
            if self._corrupt_gets > 0:
                self._corrupt_gets -= 1
                return True
            return False

    def _take_truncation(self) -> bool:
        with self._lock:
            if self._truncate_gets > 0:
                self._truncate_gets -= 1
                return True
            return False

    def _route(self, method: str, raw_path: str, query: dict[str, str]) -> _Route:
        segments = raw_path.split("/", 3)
        if len(segments) < 2 or unquote(segments[1]) != self.account:
            raise _ServiceError(
                400,
                "InvalidUri",
                "The requested URI does not represent any resource on the server.",
            )
        share = unquote(segments[2]) if len(segments) > 2 else ""
        # A ShareDirectoryClient sends "dir/sub" as one segment "dir%2Fsub": decode, then split.
        parts = tuple(self._split(unquote(segments[3]))) if len(segments) > 3 else ()
        restype, comp = query.get("restype"), query.get("comp")
        readonly = method in ("GET", "HEAD")
        op = "unsupported"
        if share and readonly:
            if restype == "share" and comp is None and not parts:
                op = "share_props"
            elif restype == "directory" and comp == "list" and method == "GET":
                op = "list"
            elif restype == "directory" and comp is None:
                op = "dir_props"
            elif restype is None and comp is None and parts:
                op = "file_get" if method == "GET" else "file_head"
        kind = {"list": "list", "file_get": "get", "file_head": "head"}.get(op, "other")
        return _Route(op, kind, share, parts)

    def _authenticate(
        self, handler: _Handler, raw_path: str, pairs: list[tuple[str, str]], route: _Route
    ) -> _Grant:
        authorization = handler.headers.get("Authorization")
        if authorization is not None:
            self._check_shared_key(handler, authorization, raw_path, pairs)
            return _Grant(None)
        query = {name.lower(): value for name, value in pairs}
        if "sig" in query:
            return self._check_sas(handler, query, route)
        raise _ServiceError(
            401,
            "NoAuthenticationInformation",
            "Server failed to authenticate the request. Please refer to the "
            "information in the www-authenticate header.",
        )

    def _auth_failed(self, detail: str) -> _ServiceError:
        return _ServiceError(
            403,
            "AuthenticationFailed",
            "Server failed to authenticate the request. Make sure the value of "
            "Authorization header is formed correctly including the signature.",
            detail=detail,
        )

    def _sign(self, string_to_sign: str) -> str:
        digest = hmac.new(self._key_bytes, string_to_sign.encode("utf-8"), hashlib.sha256)
        return base64.b64encode(digest.digest()).decode()

    def _check_shared_key(
        self, handler: _Handler, authorization: str, raw_path: str, pairs: list[tuple[str, str]]
    ) -> None:
        scheme, _, credentials = authorization.partition(" ")
        account, _, signature = credentials.partition(":")
        if scheme != "SharedKey" or account != self.account or not signature:
            raise self._auth_failed(f"Unsupported or malformed Authorization: {scheme} {account}")
        headers = handler.headers
        date_value = headers.get("x-ms-date") or headers.get("Date")
        if not date_value:
            raise self._auth_failed("Request date header not specified.")
        try:
            skew = abs(datetime.now(UTC) - parsedate_to_datetime(date_value))
        except (TypeError, ValueError) as exc:
            raise self._auth_failed(f"Invalid date header: {date_value}") from exc
        if skew > MAX_CLOCK_SKEW:
            raise self._auth_failed(f"Request date header too old or in the future: {date_value}")
        content_length = headers.get("Content-Length", "")
        standard = [
            handler.command,
            headers.get("Content-Encoding", ""),
            headers.get("Content-Language", ""),
            "" if content_length == "0" else content_length,
            headers.get("Content-MD5", ""),
            headers.get("Content-Type", ""),
            headers.get("Date", ""),
            headers.get("If-Modified-Since", ""),
            headers.get("If-Match", ""),
            headers.get("If-None-Match", ""),
            headers.get("If-Unmodified-Since", ""),
            # The standard Range header; the SDK sends x-ms-range, so this stays empty.
            headers.get("Range", ""),
        ]
        x_ms: dict[str, list[str]] = {}
        for name, value in headers.items():
            if name.lower().startswith("x-ms-"):
                x_ms.setdefault(name.lower(), []).append(value.strip())
        canonical_headers = "".join(
            f"{name}:{','.join(x_ms[name])}\n" for name in sorted(x_ms, key=header_collation_key)
        )
        grouped: dict[str, list[str]] = {}
        for name, value in pairs:
            grouped.setdefault(name.lower(), []).append(value)
        canonical_query = "".join(
            f"\n{name}:{','.join(sorted(grouped[name]))}" for name in sorted(grouped)
        )
        prefix = "\n".join(standard) + "\n" + canonical_headers
        # The SDK prefixes "/<account>" to the URL path, which on a path-style (IP) endpoint
        # already starts with the account; the host-style form is accepted as well.
        candidates = [f"/{self.account}{raw_path}", raw_path]
        for resource in candidates:
            string_to_sign = prefix + resource + canonical_query
            if hmac.compare_digest(self._sign(string_to_sign), signature):
                return
        raise self._auth_failed(
            f"The MAC signature found in the HTTP request '{signature}' is not the same as any "
            f"computed signature. Server used following string to sign: "
            f"'{prefix + candidates[0] + canonical_query}'."
        )

    def _check_sas(self, handler: _Handler, query: dict[str, str], route: _Route) -> _Grant:
        if "si" in query:
            raise self._auth_failed("Stored access policies are not supported by the fake.")
        if not all(query.get(name) for name in ("sv", "sr", "sp", "se")):
            raise self._auth_failed("Missing sv, sr, sp or se in the SAS.")
        resource_type = query["sr"]
        if resource_type == "s":
            resource = f"/file/{self.account}/{route.share}"
        elif resource_type == "f":
            resource = f"/file/{self.account}/{route.share}/{'/'.join(route.parts)}"
        else:
            raise self._auth_failed(f"Unsupported signed resource sr={resource_type}.")
        string_to_sign = "\n".join(
            [
                query.get("sp", ""),
                query.get("st", ""),
                query.get("se", ""),
                resource,
                query.get("si", ""),
                query.get("sip", ""),
                query.get("spr", ""),
                query["sv"],
                query.get("rscc", ""),
                query.get("rscd", ""),
                query.get("rsce", ""),
                query.get("rscl", ""),
                query.get("rsct", ""),
            ]
        )
        if not hmac.compare_digest(self._sign(string_to_sign), query["sig"]):
            raise self._auth_failed(
                f"Signature did not match. String to sign used was {string_to_sign}"
            )
        now = datetime.now(UTC)
        try:
            expiry = _parse_sas_time(query["se"])
            start = _parse_sas_time(query["st"]) if query.get("st") else None
        except ValueError as exc:
            raise self._auth_failed("Invalid se or st in the SAS.") from exc
        if now >= expiry or (start is not None and now < start):
            raise self._auth_failed(
                "Signature not valid in the specified time frame: "
                f"Start [{query.get('st', '')}] - Expiry [{query['se']}] - "
                f"Current [{_rfc1123(now)}]"
            )
        if "spr" in query and "http" not in query["spr"].split(","):
            raise _ServiceError(
                403,
                "AuthorizationProtocolMismatch",
                "This request is not authorized to perform this operation using this protocol.",
            )
        if "sip" in query and not self._ip_allowed(query["sip"], handler.client_address[0]):
            raise _ServiceError(
                403,
                "AuthorizationSourceIPMismatch",
                "This request is not authorized to perform this operation using this source IP.",
            )
        return _Grant(query["sp"])

    @staticmethod
    def _ip_allowed(allowed: str, client: str) -> bool:
        low_text, _, high_text = allowed.partition("-")
        address = ipaddress.ip_address(client)
        low, high = ipaddress.ip_address(low_text), ipaddress.ip_address(high_text or low_text)
        if not low.version == high.version == address.version:
            return False
        return int(low) <= int(address) <= int(high)

    @staticmethod
    def _authorize(grant: _Grant, route: _Route) -> None:
        if grant.permissions is None:
            return
        if route.op == "share_props":
            # Share-level operations need the account key; a service SAS cannot do them.
            raise _ServiceError(
                403,
                "AuthorizationFailure",
                "This request is not authorized to perform this operation.",
            )
        needed = "l" if route.op == "list" else "r"
        if needed not in grant.permissions:
            raise _ServiceError(
                403,
                "AuthorizationPermissionMismatch",
                "This request is not authorized to perform this operation using this permission.",
            )

    def _dispatch(
        self, route: _Route, query: dict[str, str], request_headers: Message
    ) -> tuple[int, dict[str, str], bytes, int | None]:
        if route.op == "unsupported":
            raise _ServiceError(
                501,
                "NotImplementedByFake",
                "This operation is not implemented by the fake Azure Files server.",
            )
        with self._lock:
            if route.op == "share_props":
                share = self._shares.get(route.share)
                if share is None:
                    raise _ServiceError(404, "ShareNotFound", "The specified share does not exist.")
                return (
                    200,
                    {
                        "ETag": share.etag,
                        "Last-Modified": _rfc1123(share.modified),
                        "x-ms-share-quota": "5120",
                        "x-ms-enabled-protocols": "SMB",
                        "x-ms-access-tier": "TransactionOptimized",
                    },
                    b"",
                    None,
                )
            node = self._resolve(route)
            if route.op in ("list", "dir_props") and node.is_dir:
                if route.op == "dir_props":
                    return 200, self._node_headers(node), b"", None
                body = self._listing(route, node, query, request_headers)
                return 200, {"Content-Type": "application/xml"}, body, None
            if route.op in ("file_get", "file_head") and not node.is_dir:
                return self._file(node, route.op, request_headers)
            raise _not_found()

    @staticmethod
    def _node_headers(node: _Node) -> dict[str, str]:
        return {
            "ETag": node.etag,
            "Last-Modified": _rfc1123(node.modified),
            "x-ms-server-encrypted": "true",
            "x-ms-file-attributes": "Directory" if node.is_dir else "Archive",
            "x-ms-file-creation-time": _iso7(node.created),
            "x-ms-file-last-write-time": _iso7(node.modified),
            "x-ms-file-change-time": _iso7(node.modified),
            "x-ms-file-permission-key": _PERMISSION_KEY,
            "x-ms-file-id": str(node.file_id),
            "x-ms-file-parent-id": str(node.parent_id),
        }

    def _file(
        self, node: _Node, op: str, request_headers: Message
    ) -> tuple[int, dict[str, str], bytes, int | None]:
        size = len(node.data)
        out = {
            **self._node_headers(node),
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
            "x-ms-type": "File",
            "x-ms-lease-state": "available",
            "x-ms-lease-status": "unlocked",
        }
        stored_md5 = base64.b64encode(node.content_md5).decode() if node.content_md5 else None
        if op == "file_head":
            if stored_md5:
                out["Content-MD5"] = stored_md5
            return 200, out, b"", size
        byte_range = request_headers.get("x-ms-range") or request_headers.get("Range")
        range_md5 = (request_headers.get("x-ms-range-get-content-md5") or "").lower() == "true"
        if byte_range is None:
            if range_md5:
                raise _ServiceError(
                    400,
                    "InvalidHeaderValue",
                    "x-ms-range-get-content-md5 needs a range.",
                    headers={},
                )
            if stored_md5:
                out["Content-MD5"] = stored_md5
            return 200, out, node.data, None
        first, last = self._parse_range(byte_range)
        if range_md5 and (last if last is not None else size - 1) - first + 1 > MAX_RANGE_MD5_BYTES:
            raise _ServiceError(
                400,
                "InvalidHeaderValue",
                "The value for one of the HTTP headers is not in the correct "
                "format (x-ms-range-get-content-md5 needs a range <= 4 MiB).",
            )
        if first >= size:
            # This is also what an empty file answers to the SDK's first (ranged) GET.
            raise _ServiceError(
                416,
                "InvalidRange",
                "The range specified is invalid for the current size of the resource.",
                headers={"Content-Range": f"bytes */{size}"},
            )
        end = size - 1 if last is None else min(last, size - 1)
        chunk = node.data[first : end + 1]
        out["Content-Range"] = f"bytes {first}-{end}/{size}"
        if range_md5:
            out["Content-MD5"] = base64.b64encode(hashlib.md5(chunk).digest()).decode()
        if stored_md5:
            # On a ranged read the stored whole-file MD5 travels in x-ms-content-md5.
            out["x-ms-content-md5"] = stored_md5
        return 206, out, chunk, None

    @staticmethod
    def _parse_range(value: str) -> tuple[int, int | None]:
        unit, _, spec = value.partition("=")
        first_text, _, last_text = spec.partition("-")
        try:
            first = int(first_text)
            last = int(last_text) if last_text else None
        except ValueError:
            first, last = -1, None
        if unit.strip() != "bytes" or first < 0 or (last is not None and last < first):
            raise _ServiceError(
                400,
                "InvalidHeaderValue",
                f"The value for one of the HTTP headers is not in the correct "
                f"format. Range: {value}",
            )
        return first, last

    def _listing(
        self, route: _Route, node: _Node, query: dict[str, str], request_headers: Message
    ) -> bytes:
        includes: set[str] = set()
        for item in filter(None, (query.get("include") or "").split(",")):
            if item.strip().lower() not in VALID_INCLUDES:
                raise _bad_query("include", query["include"])
            includes.add(VALID_INCLUDES[item.strip().lower()])
        # The service implies x-ms-file-extended-info when include is non-empty.
        extended = bool(includes) or (
            (request_headers.get("x-ms-file-extended-info") or "").lower() == "true"
        )
        max_results = DEFAULT_MAX_RESULTS
        if "maxresults" in query:
            try:
                max_results = int(query["maxresults"])
            except ValueError as exc:
                raise _bad_query("maxresults", query["maxresults"]) from exc
            if not 1 <= max_results <= DEFAULT_MAX_RESULTS:
                raise _ServiceError(
                    400,
                    "OutOfRangeQueryParameterValue",
                    "One of the query parameters specified in the request URI "
                    f"is outside the permissible range. maxresults={max_results}",
                )
        prefix, marker = query.get("prefix"), query.get("marker")
        entries = sorted(node.children.values(), key=lambda n: (n.name.lower(), n.name))
        if prefix:
            entries = [e for e in entries if e.name.lower().startswith(prefix.lower())]
        if marker:
            start_key = _decode_marker(marker)
            entries = [e for e in entries if e.name.lower() >= start_key]
        page, rest = entries[:max_results], entries[max_results:]
        directory_path = "/".join(route.parts)
        attrs = (
            f"ServiceEndpoint={quoteattr(f'{self.account_url}/')} "
            f"ShareName={quoteattr(route.share)} "
            f"DirectoryPath={quoteattr(directory_path)}"
        )
        out = [f'<?xml version="1.0" encoding="utf-8"?><EnumerationResults {attrs}>']
        if marker:
            out.append(f"<Marker>{escape(marker)}</Marker>")
        if prefix is not None:
            out.append(_name_element("Prefix", prefix))
        if "maxresults" in query:
            out.append(f"<MaxResults>{max_results}</MaxResults>")
        if extended:
            out.append(f"<DirectoryId>{node.file_id}</DirectoryId>")
        out.append("<Entries>")
        out.extend(self._entry_xml(entry, includes, extended) for entry in page)
        out.append("</Entries>")
        out.append(
            f"<NextMarker>{_encode_marker(rest[0].name.lower())}</NextMarker>"
            if rest
            else "<NextMarker />"
        )
        out.append("</EnumerationResults>")
        return "".join(out).encode("utf-8")

    @staticmethod
    def _entry_xml(entry: _Node, includes: set[str], extended: bool) -> str:
        tag = "Directory" if entry.is_dir else "File"
        props = [] if entry.is_dir else [f"<Content-Length>{len(entry.data)}</Content-Length>"]
        if "Timestamps" in includes:
            props += [
                f"<CreationTime>{_iso7(entry.created)}</CreationTime>",
                f"<LastAccessTime>{_iso7(entry.modified)}</LastAccessTime>",
                f"<LastWriteTime>{_iso7(entry.modified)}</LastWriteTime>",
                f"<ChangeTime>{_iso7(entry.modified)}</ChangeTime>",
                f"<Last-Modified>{_rfc1123(entry.modified)}</Last-Modified>",
            ]
        if "Etag" in includes:
            props.append(f"<Etag>{escape(entry.etag)}</Etag>")
        parts = [f"<{tag}>", _name_element("Name", entry.name)]
        if extended:
            parts.append(f"<FileId>{entry.file_id}</FileId>")
        parts.append(f"<Properties>{''.join(props)}</Properties>" if props else "<Properties />")
        if "Attributes" in includes:
            parts.append(f"<Attributes>{'Directory' if entry.is_dir else 'Archive'}</Attributes>")
        if "PermissionKey" in includes:
            parts.append(f"<PermissionKey>{_PERMISSION_KEY}</PermissionKey>")
        parts.append(f"</{tag}>")
        return "".join(parts)
