"""A loopback HTTP reverse proxy that counts, delays and breaks requests to a real server.

The S3, GCS and Azure Blob emulators (moto, gcp-storage-emulator, Azurite) keep no request log
and have no fault knobs, so tests put this in front of them:

    with CountingProxy("127.0.0.1:9000", classify=s3_kind) as proxy:
        client = boto3.client("s3", endpoint_url=proxy.url, ...)
        ...
        assert proxy.count(kind="get") == 1

Every request is forwarded unchanged (the Host header too, so signatures that cover it still
verify) over a keep-alive connection per client connection. ``classify`` names each request's
kind ("list", "get", ...); the fault knobs (``fail_next``, ``reset_next``, ``truncate_next_get``,
``corrupt_next_get``) match on it, like the project's own fakes. ``latency`` is added to every
request; ``intercept`` hooks may answer a request themselves (a credential check, a token
endpoint) and ``rewrite`` hooks may change a response body. Standard library only.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, unquote, urlsplit

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "expect",
    }
)


class RecordedRequest(NamedTuple):
    """A request as the proxy received it; ``path`` is decoded, ``query`` parsed, ``headers``
    keyed by lower-case name."""

    kind: str
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass
class Reply:
    """An answer an intercept hook gives instead of forwarding."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Fault:
    action: str  # status | reset | truncate | corrupt
    remaining: int
    status: int = 500
    kind: str | None = None


Classifier = Callable[[str, str, dict[str, str]], str]
Intercept = Callable[[RecordedRequest, bytes], Reply | None]
Rewrite = Callable[[RecordedRequest, bytes], bytes]


def default_kind(method: str, path: str, query: dict[str, str]) -> str:
    return method.lower()


class CountingProxy:
    """Forwards to ``upstream`` ("host:port"); see the module docstring."""

    def __init__(
        self,
        upstream: str,
        classify: Classifier = default_kind,
        *,
        latency: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.upstream = upstream
        self.classify = classify
        self.latency = latency
        self.intercepts: list[Intercept] = []
        self.rewrites: list[Rewrite] = []
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._faults: list[_Fault] = []
        self._server = ThreadingHTTPServer((host, port), _make_handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # lifecycle
    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def start(self) -> CountingProxy:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="counting-proxy", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> CountingProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # the request log
    @property
    def requests(self) -> list[RecordedRequest]:
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
    def fail_next(self, n: int = 1, status: int = 500, *, kind: str | None = None) -> None:
        """Answer the next ``n`` requests (of ``kind``, if given) with ``status``."""
        self._add(_Fault("status", n, status, kind))

    def reset_next(self, n: int = 1, *, kind: str | None = None) -> None:
        """Drop the connection of the next ``n`` requests with a TCP reset and no response."""
        self._add(_Fault("reset", n, kind=kind))

    def truncate_next_get(self, n: int = 1, kind: str = "get") -> None:
        """Send the full Content-Length but only half the body of the next ``n`` downloads."""
        self._add(_Fault("truncate", n, kind=kind))

    def corrupt_next_get(self, n: int = 1, kind: str = "get") -> None:
        """Flip a byte in the body of the next ``n`` downloads; headers stay as they were."""
        self._add(_Fault("corrupt", n, kind=kind))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _add(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _record_and_take_fault(self, request: RecordedRequest) -> _Fault | None:
        with self._lock:
            self._requests.append(request)
            for fault in self._faults:
                if fault.remaining > 0 and fault.kind in (None, request.kind):
                    fault.remaining -= 1
                    return fault
        return None


def _make_handler(proxy: CountingProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(_ProxyHandler):
        owner = proxy

    return Handler


class _ProxyHandler(BaseHTTPRequestHandler):
    owner: CountingProxy
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: see TESTING notes
    _upstream: http.client.HTTPConnection | None = None

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    def do_GET(self) -> None:
        self._proxy()

    do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    def finish(self) -> None:
        with contextlib.suppress(Exception):
            super().finish()
        if self._upstream is not None:
            self._upstream.close()

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _proxy(self) -> None:
        owner = self.owner
        body = self._read_body()
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        path = unquote(parts.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        request = RecordedRequest(
            owner.classify(self.command, path, query), self.command, path, query, headers
        )
        if owner.latency:
            time.sleep(owner.latency)
        fault = owner._record_and_take_fault(request)
        if fault is not None and fault.action == "reset":
            self._reset()
            return
        if fault is not None and fault.action == "status":
            self._send(Reply(fault.status, b"injected fault", {"Content-Type": "text/plain"}))
            return
        for hook in owner.intercepts:
            reply = hook(request, body)
            if reply is not None:
                self._send(reply)
                return
        status, reason, out_headers, data = self._forward(body)
        for rewrite in owner.rewrites:
            data = rewrite(request, data)
        if fault is not None and fault.action == "corrupt" and data:
            middle = len(data) // 2
            data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]
        truncate = fault is not None and fault.action == "truncate"
        self.send_response(status, reason)
        for name, value in out_headers:
            if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        if truncate:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data[: len(data) // 2] if truncate else data)
        if truncate:
            self.wfile.flush()
            self.close_connection = True

    def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        if body or "Content-Length" in self.headers or "Transfer-Encoding" in self.headers:
            headers["Content-Length"] = str(len(body))
        for attempt in (1, 2):
            if self._upstream is None:
                host, _, port = self.owner.upstream.rpartition(":")
                self._upstream = http.client.HTTPConnection(host, int(port), timeout=120)
            try:
                self._upstream.request(self.command, self.path, body=body, headers=headers)
                response = self._upstream.getresponse()
                data = response.read()
                if response.will_close:
                    self._upstream.close()
                    self._upstream = None
                return response.status, response.reason, response.getheaders(), data
            except (http.client.HTTPException, OSError):
                self._upstream.close()
                self._upstream = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _send(self, reply: Reply) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)

    def _reset(self) -> None:
        """Close with RST (SO_LINGER 0): the client sees a connection reset, no response."""
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()  # it holds a reference that keeps the descriptor open
        self.connection.close()
