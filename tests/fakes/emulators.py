"""Real protocol servers written by others, started on loopback for the s3, gcs and azureblob
tests and the store bench: moto's S3 server, gcp-storage-emulator and Azurite (npm).

Each has a ``start()``/``stop()`` pair and an ``address`` ("127.0.0.1:PORT"); tests reach them
through :class:`tests.fakes.counting_proxy.CountingProxy`, which counts and breaks requests.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's published development key (the same for every installation; not a secret).
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
AZURITE_CACHE = Path(os.environ.get("DAGSYNC_TEST_CACHE", "~/.cache/dagsync-test")).expanduser()
NO_AUTH = b"1000000000"  # moto authenticates only after this many requests
ALLOW_ALL_POLICY = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on 127.0.0.1:{port}") from None
            time.sleep(0.05)


@contextlib.contextmanager
def patched_environ(values: Mapping[str, str | None]) -> Iterator[None]:
    """Set (or, for None, remove) process environment variables, restoring them afterwards:
    the cloud SDKs read their credential chains from the process environment."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


# -- S3: moto's server mode --------------------------------------------------------------------


class MotoS3:
    """moto's S3 server on loopback, with IAM authentication switched on by ``enable_auth``.

    This is ``moto.server.ThreadedMotoServer`` with one change: its request handler sets
    TCP_NODELAY. werkzeug writes headers and body separately, and without it every keep-alive
    request stalls ~40 ms (Nagle and delayed ACKs), which swamps any count of requests.
    moto keeps its state per process, so ``start`` resets it; ``stop`` resets it and switches
    authentication off again for whoever starts the next one.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def start(self) -> MotoS3:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        class Handler(MotoRequestHandler):  # type: ignore[misc]
            disable_nagle_algorithm = True

            def log_request(self, *args: Any) -> None:
                pass

        app = DomainDispatcherApplication(create_backend_app)
        self._server = make_server("127.0.0.1", self.port, app, True, request_handler=Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        wait_for_port(self.port)
        self._post("/moto-api/reset", b"")
        self._post("/moto-api/reset-auth", NO_AUTH)
        return self

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._post("/moto-api/reset-auth", NO_AUTH)
            self._post("/moto-api/reset", b"")
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _post(self, path: str, body: bytes) -> None:
        request = urllib.request.Request(
            self.url + path, data=body, method="POST", headers={"Content-Type": "text/plain"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()

    def client(self, service: str, key_id: str = "admin", secret: str = "admin") -> object:
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
        )

    def create_user(self, user: str = "dagsync") -> tuple[str, str]:
        """Create an IAM user allowed everything; returns its access key id and secret."""
        iam = self.client("iam")
        iam.create_user(UserName=user)  # type: ignore[attr-defined]
        iam.put_user_policy(  # type: ignore[attr-defined]
            UserName=user, PolicyName="all", PolicyDocument=ALLOW_ALL_POLICY
        )
        key = iam.create_access_key(UserName=user)["AccessKey"]  # type: ignore[attr-defined]
        return key["AccessKeyId"], key["SecretAccessKey"]

    def enable_auth(self) -> None:
        """From now on moto checks every request's signature and the IAM policies (each
        request then costs more, so only the tests about credentials switch it on)."""
        self._post("/moto-api/reset-auth", b"0")


def s3_kind(method: str, path: str, query: Mapping[str, str]) -> str:
    """list (ListObjects), get (GetObject), head, or the method for anything else."""
    parts = path.lstrip("/").split("/", 1)
    if method == "GET" and (len(parts) == 1 or not parts[1]):
        return "list"
    if method == "GET":
        return "get"
    return f"other-{method.lower()}"


# -- GCS: gcp-storage-emulator -----------------------------------------------------------------


class GcsEmulator:
    """gcp-storage-emulator's storage and request handler, in memory, on loopback.

    Its own ``create_server`` serves one request at a time (``http.server.HTTPServer``), and
    its storage rewrites a JSON dump of every object's metadata after each write (quadratic
    when seeding thousands of objects). Here the same handler runs on a threading server and,
    the storage being in memory only, that dump (read back only at start-up) is skipped.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def start(self) -> GcsEmulator:
        from functools import partial
        from http.server import ThreadingHTTPServer

        from gcp_storage_emulator.server import RequestHandler
        from gcp_storage_emulator.storage import Storage

        class MemoryStorage(Storage):  # type: ignore[misc]
            def _write_config_to_file(self) -> None:
                pass  # in memory: nothing reads it back

        storage = MemoryStorage(use_memory_fs=True)
        self._server = ThreadingHTTPServer(
            ("127.0.0.1", self.port), partial(RequestHandler, storage)
        )
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)


def gcs_kind(method: str, path: str, query: Mapping[str, str]) -> str:
    """list (objects.list), get (a media download), stat (object metadata), token (OAuth)."""
    if path.endswith("/token"):
        return "token"
    if method == "GET" and path.startswith("/download/") or query.get("alt") == "media":
        return "get"
    if method == "GET" and path.rstrip("/").endswith("/o"):
        return "list"
    if method == "GET" and "/o/" in path:
        return "stat"
    if method == "GET" and path.rstrip("/").rsplit("/", 2)[-2] == "b":
        return "bucket"
    return f"other-{method.lower()}"


# -- Azure Blob: Azurite -----------------------------------------------------------------------


def azurite_binary() -> Path | None:
    """``azurite-blob`` from the test cache (``npm install azurite`` there, as .ci/run does),
    or on PATH."""
    cached = AZURITE_CACHE / "azurite" / "node_modules" / ".bin" / "azurite-blob"
    if cached.exists():
        return cached
    found = shutil.which("azurite-blob")
    return Path(found) if found else None


def install_azurite() -> Path | None:
    """Install Azurite into the cache when node and npm are there; None without node."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return None
    found = azurite_binary()
    if found is not None:
        return found
    folder = AZURITE_CACHE / "azurite"
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(folder), "azurite"],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return azurite_binary()


class Azurite:
    """``azurite-blob`` in memory on loopback (its own process)."""

    def __init__(self, binary: Path) -> None:
        self.binary = binary
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Azurite:
        self._proc = subprocess.Popen(
            [
                str(self.binary),
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(self.port),
                "--inMemoryPersistence",
                "--skipApiVersionCheck",
                "--silent",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def connection_string(self, address: str | None = None, key: str = AZURITE_KEY) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={key};"
            f"BlobEndpoint=http://{address or self.address}/{AZURITE_ACCOUNT};"
        )


def azure_kind(method: str, path: str, query: Mapping[str, str]) -> str:
    """list (List Blobs), get (Get Blob), or the method for anything else."""
    if method == "GET" and query.get("comp") == "list":
        return "list"
    if method == "GET" and not query.get("restype") and not query.get("comp"):
        return "get"
    return f"other-{method.lower()}"


# -- emulators in their own process (the store bench) ------------------------------------------


class SpawnedEmulator:
    """``python -m tests.fakes.emulators s3|gcs PORT`` as a child process: the emulator's CPU
    then runs beside the proxy's instead of sharing one interpreter's lock with it."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def start(self) -> SpawnedEmulator:
        repo = Path(__file__).resolve().parent.parent.parent
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fakes.emulators", self.kind, str(self.port)],
            cwd=repo,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)


def _serve_forever(kind: str, port: int) -> None:
    server: MotoS3 | GcsEmulator = MotoS3() if kind == "s3" else GcsEmulator()
    server.port = port
    server.start()
    try:
        while True:
            time.sleep(3600)
    finally:
        server.stop()


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    _serve_forever(sys.argv[1], int(sys.argv[2]))
