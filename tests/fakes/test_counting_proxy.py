"""The counting proxy itself, in front of a tiny upstream server: it forwards unchanged, counts
by kind, and its fault knobs, hooks and latency do what the store tests rely on."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.fakes.counting_proxy import CountingProxy, Reply

BODY = bytes(range(256)) * 40


class Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:
        body = BODY if self.path.startswith("/obj") else f"host={self.headers['Host']}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Echo", self.headers.get("X-Test", ""))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def proxy() -> Iterator[CountingProxy]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kind = lambda method, path, query: "get" if path.startswith("/obj") else "list"  # noqa: E731
    with CountingProxy(f"127.0.0.1:{server.server_address[1]}", kind) as proxy:
        yield proxy
    server.shutdown()
    server.server_close()


def get(proxy: CountingProxy, path: str) -> tuple[int, bytes, dict[str, str]]:
    host, _, port = proxy.address.partition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path, headers={"X-Test": "t"})
        response = conn.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        conn.close()


def test_forwards_unchanged_and_counts_by_kind(proxy: CountingProxy) -> None:
    status, body, headers = get(proxy, "/obj/a")
    assert (status, body, headers["X-Echo"]) == (200, BODY, "t")
    _status, echoed, _headers = get(proxy, "/list?prefix=x")
    assert echoed == f"host={proxy.address}".encode()  # the Host header is the client's
    kinds = [(r.kind, r.path, r.query) for r in proxy.requests]
    assert kinds[-2:] == [("get", "/obj/a", {}), ("list", "/list", {"prefix": "x"})]
    proxy.clear_requests()
    assert proxy.requests == []


def test_faults_hit_only_their_kind_then_disarm(proxy: CountingProxy) -> None:
    proxy.fail_next(1, 503, kind="get")
    proxy.corrupt_next_get(1)
    assert get(proxy, "/list")[0] == 200
    assert get(proxy, "/obj")[0] == 503
    corrupted = get(proxy, "/obj")[1]
    assert len(corrupted) == len(BODY) and corrupted != BODY
    assert get(proxy, "/obj")[1] == BODY

    proxy.truncate_next_get(1)
    with pytest.raises(http.client.IncompleteRead):
        get(proxy, "/obj")
    proxy.reset_next(1, kind="get")
    with pytest.raises((ConnectionError, http.client.RemoteDisconnected)):
        get(proxy, "/obj")
    assert get(proxy, "/obj")[1] == BODY


def test_intercepts_rewrites_and_latency(proxy: CountingProxy) -> None:
    proxy.intercepts.append(
        lambda request, body: Reply(401, b"no") if request.kind == "list" else None
    )
    proxy.rewrites.append(lambda request, body: body.upper() if request.kind == "get" else body)
    assert get(proxy, "/list")[:2] == (401, b"no")
    assert get(proxy, "/obj")[1] == BODY.upper()

    proxy.latency = 0.2
    started = time.monotonic()
    get(proxy, "/obj")
    assert time.monotonic() - started >= 0.2
