"""http.py in-process: a real server on a loopback port, a status board, a registry and a clock
the test controls."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from dagsync.bind import BindAddress, parse_bind
from dagsync.errors import ConfigError
from dagsync.http import MAX_BODY_BYTES, OpsApi, OpsServer, TriggerSecret
from dagsync.metrics import Metrics
from dagsync.redact import register_secret
from dagsync.status import Status, StatusBoard

# GitHub's documented example (docs.github.com, "Validating webhook deliveries").
GITHUB_SECRET = "It's a Secret to Everybody"
GITHUB_PAYLOAD = b"Hello, World!"
GITHUB_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
STALE_AFTER = 100.0
STARTED_AT = 1000.0


@dataclass
class Served:
    server: OpsServer
    board: StatusBoard
    registry: CollectorRegistry
    now: list[float]
    triggers: list[float] = field(default_factory=list)

    @property
    def url(self) -> str:
        host = self.server.address.host or "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.server.port}"

    def get(self, path: str, **kw: Any) -> requests.Response:
        return requests.get(self.url + path, timeout=5, **kw)

    def post(self, path: str = "/sync", **kw: Any) -> requests.Response:
        return requests.post(self.url + path, timeout=5, **kw)


@pytest.fixture
def serve() -> Iterator[Callable[..., Served]]:
    started: list[OpsServer] = []

    def make(
        *,
        secret: Path | None = None,
        gitsync_root: bool = False,
        busy: Callable[[], bool] | None = None,
        bind: str = "127.0.0.1:0",
        request_timeout: float = 5.0,
    ) -> Served:
        board = StatusBoard(Status(source="git", started_at=STARTED_AT))
        registry = CollectorRegistry()
        Metrics(registry, "git")
        now = [STARTED_AT]
        triggers: list[float] = []
        api = OpsApi(
            board=board,
            registry=registry,
            trigger=lambda: triggers.append(time.monotonic()),
            stale_after=STALE_AFTER,
            secret=TriggerSecret(secret) if secret else None,
            gitsync_root=gitsync_root,
            busy=busy,
            clock=lambda: now[0],
        )
        address = parse_bind(bind)
        assert address is not None
        server = OpsServer(address, api, request_timeout=request_timeout).start()
        started.append(server)
        return Served(server, board, registry, now, triggers)

    yield make
    for server in started:
        server.close()


# -- --http-bind -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9797", BindAddress("127.0.0.1", 9797)),
        ("0.0.0.0:9797", BindAddress("0.0.0.0", 9797)),
        (":9797", BindAddress("", 9797)),
        ("[::1]:8080", BindAddress("::1", 8080)),
        ("[::]:0", BindAddress("::", 0)),
        ("localhost:80", BindAddress("localhost", 80)),
        (" 127.0.0.1:1 ", BindAddress("127.0.0.1", 1)),
        ("", None),
        (None, None),
    ],
)
def test_parse_bind(text: str | None, expected: BindAddress | None):
    assert parse_bind(text) == expected


@pytest.mark.parametrize(
    "text", ["9797", "::1:9797", "[::1]", "[::1]9797", "host:x", "host:70000", "host:", "[]:1"]
)
def test_parse_bind_refuses(text: str):
    with pytest.raises(ConfigError, match="--http-bind"):
        parse_bind(text)


def test_bind_address_str():
    assert str(BindAddress("::1", 1)) == "[::1]:1"
    assert str(BindAddress("", 1)) == ":1"


# -- GET endpoints -------------------------------------------------------------------------------
def test_metrics_endpoint(serve: Callable[..., Served]):
    s = serve()
    resp = s.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=")
    names = {f.name for f in text_string_to_metric_families(resp.text)}
    assert {"dagsync_sync", "dagsync_build_info", "dagsync_hook"} <= names


def test_metrics_openmetrics_when_asked(serve: Callable[..., Served]):
    resp = serve().get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
    assert resp.text.rstrip().endswith("# EOF")


def test_healthz_follows_the_last_attempt(serve: Callable[..., Served]):
    s = serve()
    assert s.get("/healthz").status_code == 200  # just started: no attempt expected yet
    s.now[0] = STARTED_AT + STALE_AFTER + 1
    resp = s.get("/healthz")
    assert resp.status_code == 503
    assert "no sync attempt completed for 101s" in resp.text
    s.board.update(last_attempt_at=STARTED_AT + STALE_AFTER)
    assert s.get("/healthz").status_code == 200
    s.now[0] = STARTED_AT + 2 * STALE_AFTER
    assert s.get("/healthz").status_code == 200  # exactly at the limit
    s.now[0] = STARTED_AT + 2 * STALE_AFTER + 0.5
    assert s.get("/healthz").status_code == 503


def test_healthz_is_not_readiness(serve: Callable[..., Served]):
    s = serve()
    s.board.update(last_attempt_at=STARTED_AT, last_result="failed", consecutive_failures=9)
    assert s.get("/healthz").status_code == 200  # a failing source is alive, not hung


def test_readyz_is_sticky_after_the_first_revision(serve: Callable[..., Served]):
    s = serve()
    resp = s.get("/readyz")
    assert resp.status_code == 503
    assert "not ready" in resp.text
    s.board.update(revision="abc")
    resp = s.get("/readyz")
    assert (resp.status_code, resp.text) == (200, "ok revision=abc\n")
    # a git outage afterwards: still ready, the old revision keeps serving
    s.board.update(last_result="failed", last_error="unreachable", consecutive_failures=5)
    s.now[0] += 10 * STALE_AFTER
    assert s.get("/readyz").status_code == 200


def test_status_json(serve: Callable[..., Served]):
    register_secret("hunter2-status-secret")
    s = serve(busy=lambda: True)
    s.board.update(
        revision="abc",
        published_at=1001.0,
        last_attempt_at=1002.0,
        last_result="failed",
        last_error="ls-remote https://bob:pw@example.com/r.git: hunter2-status-secret",
        consecutive_failures=2,
    )
    resp = s.get("/status")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/json"
    doc = resp.json()
    assert list(doc)[:6] == [
        "source",
        "revision",
        "published_at",
        "last_attempt_at",
        "last_error",
        "consecutive_failures",
    ]
    assert doc["source"] == "git"
    assert doc["revision"] == "abc"
    assert doc["published_at"] == 1001.0
    assert doc["last_attempt_at"] == 1002.0
    assert doc["consecutive_failures"] == 2
    assert doc["last_error"] == "ls-remote https://***@example.com/r.git: ***"
    assert doc["ready"] is True
    assert doc["sync_in_progress"] is True
    assert "hunter2" not in resp.text and "bob:pw" not in resp.text


def test_gitsync_root_endpoint(serve: Callable[..., Served]):
    s = serve(gitsync_root=True)
    resp = s.get("/")
    assert (resp.status_code, resp.text) == (503, "repo is not ready\n")
    s.board.update(revision="abc")
    resp = s.get("/")
    assert (resp.status_code, resp.text) == (200, "")


def test_root_is_not_found_outside_gitsync_mode(serve: Callable[..., Served]):
    s = serve()
    assert s.get("/").status_code == 404
    assert s.get("/nope").status_code == 404


def test_methods(serve: Callable[..., Served]):
    s = serve()
    resp = s.get("/sync")
    assert resp.status_code == 405
    assert resp.headers["Allow"] == "POST"
    assert s.post("/metrics").status_code == 405
    assert s.post("/elsewhere").status_code == 404
    head = requests.head(s.url + "/readyz", timeout=5)
    assert head.status_code == 503 and head.content == b""
    assert s.get("/readyz?verbose=1").status_code == 503  # the query string is ignored
    assert s.triggers == []


# -- POST /sync ----------------------------------------------------------------------------------
def test_post_sync_without_secret(serve: Callable[..., Served]):
    s = serve()
    resp = s.post(data=b"{}")
    assert resp.status_code == 202
    assert resp.json() == {"status": "accepted"}
    assert len(s.triggers) == 1


def test_post_sync_without_a_loop(serve: Callable[..., Served]):
    s = serve()
    s.server.api.trigger = None  # dagsync once with --http-bind
    resp = s.post()
    assert resp.status_code == 503
    assert "once" in resp.text


@pytest.fixture
def github_secret(tmp_path: Path) -> Path:
    path = tmp_path / "trigger-secret"
    path.write_text(GITHUB_SECRET + "\n")  # a trailing newline, as `echo` leaves it
    return path


def test_github_documented_signature_is_accepted(serve: Callable[..., Served], github_secret: Path):
    s = serve(secret=github_secret)
    resp = s.post(data=GITHUB_PAYLOAD, headers={"X-Hub-Signature-256": GITHUB_SIGNATURE})
    assert resp.status_code == 202
    assert len(s.triggers) == 1


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Hub-Signature-256": GITHUB_SIGNATURE.replace("757", "758")},
        {"X-Hub-Signature-256": GITHUB_SIGNATURE.removeprefix("sha256=")},
        {"X-Hub-Signature-256": "sha1=" + "0" * 40},
        {"X-Hub-Signature-256": "sha256=\u00e9"},
        {"X-Gitlab-Token": "wrong"},
        {"X-Gitlab-Token": ""},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic " + GITHUB_SECRET},
        {"Authorization": GITHUB_SECRET},
    ],
)
def test_wrong_or_missing_proof_is_refused(
    serve: Callable[..., Served], github_secret: Path, headers: dict[str, str]
):
    s = serve(secret=github_secret)
    resp = s.post(data=GITHUB_PAYLOAD, headers=headers)
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert s.triggers == []


def test_signature_covers_the_body(serve: Callable[..., Served], github_secret: Path):
    s = serve(secret=github_secret)
    resp = s.post(data=b"Hello, World?", headers={"X-Hub-Signature-256": GITHUB_SIGNATURE})
    assert resp.status_code == 401


def test_gitlab_token_and_bearer(serve: Callable[..., Served], github_secret: Path):
    s = serve(secret=github_secret)
    assert s.post(headers={"X-Gitlab-Token": GITHUB_SECRET}).status_code == 202
    assert s.post(headers={"Authorization": f"Bearer {GITHUB_SECRET}"}).status_code == 202
    assert s.post(headers={"Authorization": f"bearer  {GITHUB_SECRET}"}).status_code == 202
    assert len(s.triggers) == 3


def test_one_valid_proof_is_enough(serve: Callable[..., Served], github_secret: Path):
    s = serve(secret=github_secret)
    headers = {"X-Gitlab-Token": "wrong", "X-Hub-Signature-256": GITHUB_SIGNATURE}
    assert s.post(data=GITHUB_PAYLOAD, headers=headers).status_code == 202


def test_secret_file_is_reread_when_it_changes(serve: Callable[..., Served], tmp_path: Path):
    path = tmp_path / "secret"
    path.write_text("first-secret")
    s = serve(secret=path)
    assert s.post(headers={"X-Gitlab-Token": "first-secret"}).status_code == 202
    # rotate the way Kubernetes does: a new file swapped in by rename
    new = tmp_path / "secret.new"
    new.write_text("second-secret-longer")
    new.replace(path)
    assert s.post(headers={"X-Gitlab-Token": "first-secret"}).status_code == 401
    assert s.post(headers={"X-Gitlab-Token": "second-secret-longer"}).status_code == 202
    body = b'{"ref":"refs/heads/main"}'
    sig = "sha256=" + hmac.new(b"second-secret-longer", body, hashlib.sha256).hexdigest()
    assert s.post(data=body, headers={"X-Hub-Signature-256": sig}).status_code == 202


def test_unreadable_secret_keeps_the_last_one(serve: Callable[..., Served], tmp_path: Path):
    path = tmp_path / "secret"
    path.write_text("kept-secret")
    s = serve(secret=path)
    path.unlink()
    assert s.post(headers={"X-Gitlab-Token": "kept-secret"}).status_code == 202
    assert s.post(headers={"X-Gitlab-Token": "other"}).status_code == 401


def test_empty_secret_refuses_everything(serve: Callable[..., Served], tmp_path: Path):
    path = tmp_path / "secret"
    path.write_text("\n")
    s = serve(secret=path)
    assert s.post(headers={"X-Gitlab-Token": ""}).status_code == 401
    assert s.post(headers={"Authorization": "Bearer "}).status_code == 401
    assert s.triggers == []


def test_trigger_secret_is_registered_for_redaction(tmp_path: Path):
    from dagsync.redact import redact

    path = tmp_path / "secret"
    path.write_text("registered-trigger-secret\n")
    TriggerSecret(path)
    assert redact("x registered-trigger-secret y") == "x *** y"


def test_body_over_the_cap_is_refused(serve: Callable[..., Served]):
    s = serve()
    resp = s.post(data=b"x" * (MAX_BODY_BYTES + 1))
    assert resp.status_code == 413
    assert s.triggers == []
    assert s.post(data=b"x" * MAX_BODY_BYTES).status_code == 202


def raw_request(port: int, payload: bytes, *, timeout: float = 5.0) -> bytes:
    """Send bytes, half-close nothing, read the answer until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def test_declared_length_over_the_cap_is_refused_before_reading(serve: Callable[..., Served]):
    s = serve()
    head = f"POST /sync HTTP/1.1\r\nHost: x\r\nContent-Length: {MAX_BODY_BYTES + 1}\r\n\r\n"
    answer = raw_request(s.server.port, head.encode())
    assert answer.startswith(b"HTTP/1.0 413 ")
    assert s.triggers == []


def test_slow_body_times_out(serve: Callable[..., Served]):
    s = serve(request_timeout=0.3)
    t0 = time.monotonic()
    head = b"POST /sync HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly-part"
    answer = raw_request(s.server.port, head)
    assert answer.startswith(b"HTTP/1.0 408 ")
    assert time.monotonic() - t0 < 4
    assert s.triggers == []


def test_slow_headers_do_not_hold_the_server(serve: Callable[..., Served]):
    s = serve(request_timeout=0.3)
    with socket.create_connection(("127.0.0.1", s.server.port), timeout=5) as idle:
        idle.sendall(b"GET /readyz HTTP/1.1\r\n")  # never finishes its headers
        assert s.get("/healthz").status_code == 200  # others are served meanwhile
        assert idle.recv(1024) == b""  # and the idle one is dropped after the timeout


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"Transfer-Encoding: chunked\r\n", b"411"),
        (b"Content-Length: -1\r\n", b"400"),
        (b"Content-Length: 5\r\n", b"400"),  # closes before sending the body
    ],
)
def test_malformed_bodies(serve: Callable[..., Served], head: bytes, status: bytes):
    s = serve()
    with socket.create_connection(("127.0.0.1", s.server.port), timeout=5) as sock:
        sock.sendall(b"POST /sync HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n")
        sock.shutdown(socket.SHUT_WR)
        answer = sock.recv(65536)
    assert answer.split(b" ")[1] == status
    assert s.triggers == []


def test_concurrent_posts_each_trigger(serve: Callable[..., Served]):
    """The server does not coalesce (the loop does): every accepted request triggers."""
    s = serve()
    codes: list[int] = []
    lock = threading.Lock()

    def post() -> None:
        code = s.post().status_code
        with lock:
            codes.append(code)

    threads = [threading.Thread(target=post) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [202] * 20
    assert len(s.triggers) == 20


def test_ipv6_loopback(serve: Callable[..., Served]):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        s = serve(bind="[::1]:0")
    except Exception as exc:  # IPv6 configured off on this machine
        pytest.skip(f"cannot bind ::1: {exc}")
    assert s.get("/readyz").status_code == 503


def test_every_interface_includes_ipv4(serve: Callable[..., Served]):
    s = serve(bind=":0")
    resp = requests.get(f"http://127.0.0.1:{s.server.port}/healthz", timeout=5)
    assert resp.status_code == 200


def test_close_stops_and_joins(serve: Callable[..., Served]):
    s = serve()
    port = s.server.port
    s.server.close()
    assert not any(t.name == "dagsync-http" and t.is_alive() for t in threading.enumerate())
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
    s.server.close()  # idempotent


def test_port_in_use_is_one_clear_error(serve: Callable[..., Served]):
    from dagsync.errors import DagsyncError

    s = serve()
    api = s.server.api
    with pytest.raises(DagsyncError, match=r"--http-bind: cannot listen on 127.0.0.1:\d+"):
        OpsServer(BindAddress("127.0.0.1", s.server.port), api)


def test_status_doc_is_plain_json(serve: Callable[..., Served]):
    s = serve()
    doc = json.loads(s.get("/status").text)
    assert doc["revision"] is None
    assert doc["ready"] is False
    assert "sync_in_progress" not in doc  # no loop given (once)
