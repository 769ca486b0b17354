"""The relay for the contract suite: a local folder published by an in-process dagsync whose
``/v1/`` endpoints (the real RevisionServer on the real HTTP server) the relay source reads,
through a small HTTP proxy that injects the suite's faults into downloads (archive or file).

The relay publishes lazily, when dagsync is next pointed at it (``options()``), so a test that
puts 1,234 files costs one relay pass, not 1,234. Requests are counted from the relay's own
``dagsync_served_requests_total``: ``revisions``/``manifest`` list, ``get`` is one file."""

from __future__ import annotations

import http.client
import os
import socket
import struct
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry

from dagsync import config as config_module
from dagsync.http import BindAddress, OpsApi, OpsServer
from dagsync.metrics import ServeMetrics
from dagsync.serve import RevisionServer
from dagsync.sources.base import load_source_class
from dagsync.status import Status, StatusBoard
from dagsync.store import RevisionStore
from dagsync.syncer import Syncer
from dagsync.trigger import SecretFile
from tests.sources.store_contract import StoreEnv

TOKEN = "contract-relay-token-3e8a71"
KINDS = {"revisions": "revisions", "manifest": "manifest", "files": "get", "archive": "archive"}


ARCHIVE_FLIP_OFFSET = 600  # inside the first member's content (its header is 512 bytes)


class FaultProxy(ThreadingHTTPServer):
    """Forwards GETs to the relay; the next downloads can fail, reset, arrive cut in half or
    with a flipped byte (headers unchanged)."""

    daemon_threads = True

    def __init__(self, upstream_port: int) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream_port = upstream_port
        self.lock = threading.Lock()
        self.faults: list[tuple[str, int]] = []  # (kind, status), consumed in order
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    def add(self, kind: str, n: int, status: int = 0) -> None:
        with self.lock:
            self.faults.extend([(kind, status)] * n)

    def take(self) -> tuple[str, int] | None:
        with self.lock:
            return self.faults.pop(0) if self.faults else None


class _ProxyHandler(BaseHTTPRequestHandler):
    server: FaultProxy
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        download = "/files/" in self.path or self.path.endswith("/archive.tar")
        fault = self.server.take() if download else None
        if fault and fault[0] == "reset":
            linger = struct.pack("ii", 1, 0)  # close with RST
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            self.close_connection = True
            return
        if fault and fault[0] == "fail":
            self.send_response(fault[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        conn = http.client.HTTPConnection("127.0.0.1", self.server.upstream_port, timeout=30)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() == "authorization"}
            conn.request("GET", self.path, headers=headers)
            resp = conn.getresponse()
            body = bytearray(resp.read())
            passed = [(k, v) for k, v in resp.getheaders() if k.lower() != "connection"]
        finally:
            conn.close()
        if fault and fault[0] == "corrupt" and body:
            archive = self.path.endswith("/archive.tar") and len(body) > ARCHIVE_FLIP_OFFSET
            body[ARCHIVE_FLIP_OFFSET if archive else len(body) // 2] ^= 0x01
        if fault and fault[0] == "truncate":
            body = body[: len(body) // 2]
        self.send_response(resp.status)
        for name, value in passed:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(bytes(body))
        self.close_connection = True


class RelayStoreEnv(StoreEnv):
    source = "relay"
    listing_kinds = frozenset({"revisions", "manifest"})
    download_kind = "get"
    supports_faults = True
    supports_unsafe_keys = False  # the relay's own source refuses them before serving
    supports_credentials = True

    def start(self) -> None:
        self.folder = self.tmp_path / "relay-source"
        self.folder.mkdir()
        self._writes = 0
        cfg = config_module.load(
            "once",
            {
                "source": "local",
                "local_path": str(self.folder),
                "root": str(self.tmp_path / "relay-root"),
                "keep_revisions": "3",
                "max_files": "100000",
            },
            {},
        )
        self.store = RevisionStore(cfg.root, cfg.link)
        with self.store.locked():
            self.store.prepare()
        self.upstream = load_source_class("local")(cfg, self.store.cache / "local")
        self.syncer = Syncer(cfg, self.upstream, self.store)
        server_token = self.tmp_path / "relay-serve-token"
        server_token.write_text(TOKEN + "\n")
        self.token_file = self.tmp_path / "relay-worker-token"
        self.token_file.write_text(TOKEN + "\n")
        self.registry = CollectorRegistry()
        token = SecretFile(server_token, "--serve-token-file", "every /v1/ request")
        self.revisions = RevisionServer(self.store, ServeMetrics(self.registry), token)
        board = StatusBoard(Status(source="local", started_at=time.time()))
        api = OpsApi(board=board, registry=self.registry, trigger=None, stale_after=3600.0)
        self.server = OpsServer(BindAddress("127.0.0.1", 0), api, revisions=self.revisions)
        self.server.start()
        self.proxy = FaultProxy(self.server.port)
        self.proxy.thread.start()
        self.dirty = True
        self._baseline: Counter[str] = Counter()

    def stop(self) -> None:
        self.proxy.shutdown()
        self.proxy.thread.join()
        self.proxy.server_close()
        self.server.close()
        self.upstream.close()

    def put(self, path: str, data: bytes) -> None:
        target = self.folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        existed = target.exists()
        target.write_bytes(data)
        if existed:  # same size within one mtime tick would look unchanged to the local source
            self._writes += 1
            st = target.stat()
            os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + self._writes * 1_000_000))
        self.dirty = True

    def delete(self, path: str) -> None:
        (self.folder / path).unlink()
        self.dirty = True

    def options(self) -> dict[str, Any]:
        if self.dirty:  # the relay publishes what was put before a worker looks
            result = self.syncer.run_pass()
            assert result.ok and result.published is not None, result.error
            self.revisions.prepare(result.published.revision)
            self.dirty = False
        return {
            "relay_url": f"http://127.0.0.1:{self.proxy.server_address[1]}",
            "relay_token_file": str(self.token_file),
        }

    def fail_next(self, n: int, status: int = 500) -> None:
        self.proxy.add("fail", n, status)

    def reset_next(self, n: int) -> None:
        self.proxy.add("reset", n)

    def truncate_next_get(self, n: int) -> None:
        self.proxy.add("truncate", n)

    def corrupt_next_get(self, n: int) -> None:
        self.proxy.add("corrupt", n)

    def secrets(self) -> list[str]:
        return [TOKEN]

    def break_credentials(self) -> None:
        self.token_file.write_text("wrong-token-0000\n")

    def _counts(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name == "dagsync_served_requests_total":
                    counts[KINDS.get(sample.labels["endpoint"], "other")] += int(sample.value)
        return counts

    def requests(self) -> Counter[str]:
        counts = self._counts()
        counts.subtract(self._baseline)
        return +counts

    def clear_requests(self) -> None:
        self._baseline = self._counts()


STORE_ENV = RelayStoreEnv
