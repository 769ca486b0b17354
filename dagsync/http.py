"""The operations endpoints (docs/reference.md §5): metrics, health, readiness, status, and the sync
trigger a git host's push webhook calls.

The server runs in its own daemon thread and only reads: the status snapshot the loop
replaces after every pass, the metrics registry, and the trigger secret file. The one thing it
does is ``trigger()``, which the loop coalesces.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from dagsync.bind import BindAddress
from dagsync.errors import DagsyncError
from dagsync.httpguard import HeaderDeadlines
from dagsync.serve_http import HandlerResponder
from dagsync.status import StatusBoard
from dagsync.trigger import TriggerSecret

if TYPE_CHECKING:
    from dagsync.serve import RevisionServer

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20
REQUEST_TIMEOUT_SECONDS = 10.0
READ_CHUNK_BYTES = 64 * 1024
JOIN_TIMEOUT_SECONDS = 10.0
SHUTDOWN_POLL_SECONDS = 0.05
DRAIN_SECONDS = 1.0
DRAIN_IDLE_SECONDS = 0.25
LISTEN_BACKLOG = 128  # a burst of webhook deliveries must not wait for SYN retransmits
DRAIN_LIMIT_BYTES = 4 * MAX_BODY_BYTES
GITSYNC_NOT_READY = b"repo is not ready\n"
# Connection threads at once; beyond that a connection gets a canned 503 from the accept loop.
# (Downloads are limited further by serve.MAX_STREAMS, so /healthz keeps its threads.)
MAX_CONNECTIONS = 256
BUSY_REPLY = (
    b"HTTP/1.0 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 5\r\n"
    b"Connection: close\r\n\r\nbusy\n"
)


# -- the server ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


def text(status: int, message: str) -> Reply:
    return Reply(status, (message + "\n").encode())


def as_json(status: int, doc: Any) -> Reply:
    return Reply(status, (json.dumps(doc, indent=1) + "\n").encode(), "application/json")


class OpsApi:
    """What each endpoint answers; the handler below only moves bytes."""

    def __init__(
        self,
        *,
        board: StatusBoard,
        registry: CollectorRegistry,
        trigger: Callable[[], None] | None,
        stale_after: float,
        secret: TriggerSecret | None = None,
        gitsync_root: bool = False,
        busy: Callable[[], bool] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.board = board
        self.registry = registry
        self.trigger = trigger
        self.stale_after = stale_after
        self.secret = secret
        self.gitsync_root = gitsync_root
        self.busy = busy
        self.clock = clock

    def get(self, path: str, accept: str | None) -> Reply:
        if path == "/metrics":
            encoder, content_type = choose_encoder(accept or "")
            return Reply(200, encoder(self.registry), content_type)
        if path == "/healthz":
            return self.healthz()
        if path == "/readyz":
            status = self.board.current
            if status.ready:
                return text(200, f"ok revision={status.revision}")
            return text(503, "not ready: no revision published yet")
        if path == "/status":
            return as_json(200, self.status())
        if path == "/" and self.gitsync_root:
            # git-sync's --http-bind answers on /: 503 until the first sync, 200 after.
            return Reply(200) if self.board.current.ready else Reply(503, GITSYNC_NOT_READY)
        if path == "/sync":
            return Reply(405, b"use POST\n", headers=(("Allow", "POST"),))
        return text(404, "not found (try /metrics, /healthz, /readyz, /status, POST /sync)")

    def healthz(self) -> Reply:
        age = self.board.current.seconds_since_attempt(self.clock())
        if age > self.stale_after:
            return text(
                503,
                f"unhealthy: no sync attempt completed for {age:.0f}s "
                f"(limit 3 x period + sync-timeout = {self.stale_after:.0f}s)",
            )
        return text(200, "ok")

    def status(self) -> dict[str, Any]:
        status = self.board.current
        doc = status.to_json()
        ordered = {
            key: doc.pop(key)
            for key in (
                "source",
                "revision",
                "published_at",
                "last_attempt_at",
                "last_error",
                "consecutive_failures",
            )
        }
        ordered.update(doc)
        ordered["ready"] = status.ready
        if self.busy is not None:
            ordered["sync_in_progress"] = self.busy()
        return ordered

    def post_sync(self, headers: Message, body: bytes) -> Reply:
        if self.trigger is None:
            return text(503, "no sync loop to trigger (dagsync once)")
        if self.secret is not None and not self.secret.verify(headers, body):
            log.warning("refused POST /sync: missing or wrong trigger secret")
            return Reply(
                401,
                b"unauthorized: prove --trigger-secret-file (X-Hub-Signature-256, "
                b"X-Gitlab-Token or Authorization: Bearer)\n",
                headers=(("WWW-Authenticate", 'Bearer realm="dagsync"'),),
            )
        self.trigger()
        log.info("sync requested event=%s", headers.get("X-GitHub-Event") or "post")
        return as_json(202, {"status": "accepted"})


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    disable_nagle_algorithm = True
    server_version = "dagsync"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.request_timeout)  # for headers and body

    def handle_one_request(self) -> None:
        # The request line and headers must be in within the request timeout as a whole.
        self.server.deadlines.watch(self.connection)
        try:
            super().handle_one_request()
        finally:
            self.server.deadlines.forget(self.connection)

    def parse_request(self) -> bool:
        parsed = super().parse_request()
        self.server.deadlines.forget(self.connection)  # a body has its own deadline
        return parsed

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.debug(
            "http request method=%s path=%s status=%s remote=%s",
            self.command,
            urlsplit(self.path or "").path,
            int(code) if isinstance(code, int) else code,
            self.client_address[0],
        )

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http message=%s", format % args)

    def do_GET(self) -> None:
        if not self._served():
            self._send(self.server.api.get(self._path(), self.headers.get("Accept")))

    def do_HEAD(self) -> None:
        if not self._served(head=True):
            self._send(self.server.api.get(self._path(), self.headers.get("Accept")), head=True)

    def _served(self, head: bool = False) -> bool:
        """``/v1/`` goes to the revision server when ``--serve-revisions`` is on."""
        revisions = self.server.revisions
        if revisions is None or not self._path().startswith("/v1/"):
            return False
        self.close_connection = True
        revisions.handle(self.path, self.headers, HandlerResponder(self), head)
        return True

    def do_POST(self) -> None:
        path = self._path()
        if path != "/sync":
            if path in _GET_PATHS:
                self._send(Reply(405, b"use GET\n", headers=(("Allow", "GET, HEAD"),)))
            else:
                self._send(text(404, "not found"))
            return
        body = self._read_body()
        if isinstance(body, Reply):
            self.close_connection = True
            self._send(body)
            self._drain()
            return
        self._send(self.server.api.post_sync(self.headers, body))

    def _path(self) -> str:
        return urlsplit(self.path).path or "/"

    def _read_body(self) -> bytes | Reply:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return text(411, "send Content-Length")
        length_text = self.headers.get("Content-Length") or "0"
        if not length_text.strip().isdigit():
            return text(400, "bad Content-Length")
        length = int(length_text)
        if length > MAX_BODY_BYTES:
            return text(413, f"body larger than {MAX_BODY_BYTES} bytes")
        # The socket timeout bounds each read; the deadline bounds a client that trickles.
        deadline = time.monotonic() + self.server.request_timeout
        chunks: list[bytes] = []
        left = length
        try:
            while left > 0:
                if time.monotonic() > deadline:
                    raise TimeoutError
                chunk = self.rfile.read1(min(left, READ_CHUNK_BYTES))
                if not chunk:
                    return text(400, "body shorter than Content-Length")
                chunks.append(chunk)
                left -= len(chunk)
        except TimeoutError:
            return text(408, "request body not received in time")
        return b"".join(chunks)

    def _drain(self) -> None:
        """Read (a bounded amount of) what the client is still sending before closing: a
        close with unread data resets the connection and the client may never see the 413."""
        deadline = time.monotonic() + DRAIN_SECONDS
        budget = DRAIN_LIMIT_BYTES
        try:
            self.connection.settimeout(DRAIN_IDLE_SECONDS)
            while budget > 0 and time.monotonic() < deadline:
                chunk = self.rfile.read1(min(budget, READ_CHUNK_BYTES))
                if not chunk:
                    break
                budget -= len(chunk)
        except OSError:
            pass

    def _send(self, reply: Reply, head: bool = False) -> None:
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            self.send_header("Cache-Control", "no-store")
            for name, value in reply.headers:
                self.send_header(name, value)
            self.end_headers()
            if not head:
                self.wfile.write(reply.body)
        except OSError:  # the client went away; nothing to tell it
            self.close_connection = True


_GET_PATHS = frozenset({"/metrics", "/healthz", "/readyz", "/status", "/"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(
        self,
        address: BindAddress,
        api: OpsApi,
        request_timeout: float,
        revisions: RevisionServer | None = None,
    ) -> None:
        self.api = api
        self.revisions = revisions
        self.request_timeout = request_timeout
        self._connections = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.deadlines = HeaderDeadlines(request_timeout)
        if revisions is not None:
            self.block_on_close = False  # close() must not wait for a slow client's download
        self._dual_stack = address.host == "" and socket.has_ipv6
        if address.ipv6 or self._dual_stack:
            self.address_family = socket.AF_INET6
        host = "::" if self._dual_stack else address.host
        super().__init__((host, address.port), _Handler)
        self.deadlines.start()  # listening now (a failed bind closes the server first)

    def server_close(self) -> None:
        super().server_close()
        self.deadlines.close()

    def server_bind(self) -> None:
        if self._dual_stack:
            # ":PORT" means every interface, IPv4 included, as in Go's net.Listen.
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

    def process_request(self, request: Any, client_address: Any) -> None:
        # One thread per connection, but never more than MAX_CONNECTIONS of them.
        if not self._connections.acquire(blocking=False):
            with contextlib.suppress(OSError):
                request.setblocking(False)
                request.send(BUSY_REPLY)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._connections.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._connections.release()


class OpsServer:
    """The endpoints on ``--http-bind``, served from a daemon thread until :meth:`close`."""

    def __init__(
        self,
        address: BindAddress,
        api: OpsApi,
        request_timeout: float = REQUEST_TIMEOUT_SECONDS,
        revisions: RevisionServer | None = None,
    ) -> None:
        self.address = address
        self.api = api
        try:
            self._server = _Server(address, api, request_timeout, revisions)
        except OSError as exc:
            if address.host == "" and exc.errno in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                # ":PORT" on a machine without IPv6: every IPv4 interface then.
                self._server = _Server(
                    BindAddress("0.0.0.0", address.port), api, request_timeout, revisions
                )
            else:
                raise DagsyncError(f"--http-bind: cannot listen on {address}: {exc}") from None
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": SHUTDOWN_POLL_SECONDS},
            name="dagsync-http",
            daemon=True,
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> OpsServer:
        self._thread.start()
        log.info("http listening address=%s port=%d", self.address, self.port)
        return self

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(JOIN_TIMEOUT_SECONDS)
        self._server.server_close()
