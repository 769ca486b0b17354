"""Generated git repositories (cached), ``git daemon`` serving them, and a byte-counting proxy.

Repositories are written with ``git fast-import`` (no working tree, so even 100,000 files take
seconds) and cached under ``$DAGSYNC_BENCH_CACHE`` (default ``$TMPDIR/dagsync-bench-cache``),
named by their parameters, so a second run starts at once. Content is random base64 text in
comment lines, as ``git_clone_bench.make_repo`` writes it (git cannot compress it much).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from git_clone_bench import LINE_BYTES, free_port, git_env, start_daemon

GENERATOR_VERSION = 1  # bump when the content changes, so old caches are not reused
CACHE = Path(
    os.environ.get("DAGSYNC_BENCH_CACHE", Path(tempfile.gettempdir(), "dagsync-bench-cache"))
)
SERVER_CONFIG = {"uploadpack.allowFilter": "true", "uploadpack.allowAnySHA1InWant": "true"}
EPOCH = 1_700_000_000


@dataclass(frozen=True)
class RepoSpec:
    """``files`` files of ``total_mb`` MB under ``dags/`` (or, with ``dags_files``, that many
    files of ``dags_mb`` under ``dags/`` and the rest under ``data/``), ``commits`` commits."""

    files: int
    total_mb: float
    commits: int = 1
    dags_files: int | None = None
    dags_mb: float = 0.0

    @property
    def name(self) -> str:
        text = repr((GENERATOR_VERSION, self))
        return f"r{self.files}-{hashlib.sha256(text.encode()).hexdigest()[:10]}.git"

    def layout(self) -> list[tuple[str, int]]:
        """(path, size in bytes) of every file."""
        if self.dags_files is None:
            size = int(self.total_mb * 1024**2) // self.files
            return [(f"dags/team_{i % 40:02d}/dag_{i:06d}.py", size) for i in range(self.files)]
        dags_size = int(self.dags_mb * 1024**2) // self.dags_files
        rest = self.files - self.dags_files
        rest_size = int((self.total_mb - self.dags_mb) * 1024**2) // rest
        return [
            *(
                (f"dags/team_{i % 40:02d}/dag_{i:06d}.py", dags_size)
                for i in range(self.dags_files)
            ),
            *((f"data/part_{i % 200:03d}/file_{i:06d}.py", rest_size) for i in range(rest)),
        ]


def text_of(rnd: random.Random, index: int, size: int) -> bytes:
    raw = rnd.randbytes(max(1, (size - 40) * 3 // 4 * LINE_BYTES // (LINE_BYTES + 3)))
    text = base64.b64encode(raw).decode()
    lines = [f"# {text[j : j + LINE_BYTES]}" for j in range(0, len(text), LINE_BYTES)]
    return (f"# generated DAG {index}\n" + "\n".join(lines) + "\n").encode()


def _commit(n: int, parent: bool) -> list[bytes]:
    head = (
        f"commit refs/heads/main\ncommitter bench <bench@invalid> {EPOCH + n * 60} +0000\n"
        f"data {len(f'commit {n}')}\ncommit {n}\n"
    ).encode()
    return [head, b"from refs/heads/main^0\n" if parent else b""]


def _file(path: str, data: bytes) -> bytes:
    return f"M 100644 inline {path}\ndata {len(data)}\n".encode() + data + b"\n"


def ensure(spec: RepoSpec, log: bool = True) -> Path:
    """The cached bare repository of ``spec``, generated on first use."""
    target = CACHE / spec.name
    if target.is_dir():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix=".gen-", dir=CACHE)) / "repo.git"
    env = git_env(CACHE)
    subprocess.run(
        ["git", "init", "--quiet", "--bare", "--initial-branch=main", str(tmp)], env=env, check=True
    )
    rnd = random.Random(spec.name)  # str seeds are hashed with SHA-512: reproducible
    layout = spec.layout()
    proc = subprocess.Popen(
        ["git", "-C", str(tmp), "fast-import", "--quiet"], stdin=subprocess.PIPE, env=env
    )
    assert proc.stdin is not None
    for part in _commit(0, parent=False):
        proc.stdin.write(part)
    for i, (path, size) in enumerate(layout):
        proc.stdin.write(_file(path, text_of(rnd, i, size)))
    for n in range(1, spec.commits):
        for part in _commit(n, parent=False):  # fast-import chains them
            proc.stdin.write(part)
        for i in rnd.sample(range(len(layout)), min(5, len(layout))):
            proc.stdin.write(_file(layout[i][0], text_of(rnd, i + n * 7919, layout[i][1])))
    proc.stdin.close()
    if proc.wait() != 0:
        raise SystemExit(f"git fast-import failed for {spec}")
    for key, value in SERVER_CONFIG.items():
        subprocess.run(["git", "-C", str(tmp), "config", key, value], env=env, check=True)
    os.replace(tmp, target)
    shutil.rmtree(tmp.parent, ignore_errors=True)
    if log:
        print(f"  generated {spec} in {time.monotonic() - started:.0f} s -> {target}", flush=True)
    return target


def add_commit(repo: Path, path: str, data: bytes, n: int, env: dict[str, str]) -> None:
    """One commit on main changing ``path`` (no working tree)."""
    stream = b"".join([*_commit(1000 + n, parent=True), _file(path, data)])
    subprocess.run(
        ["git", "-C", str(repo), "fast-import", "--quiet"], input=stream, env=env, check=True
    )


class Served:
    """``git daemon`` on loopback over a folder of repositories (symlinks into the cache)."""

    def __init__(self, top: Path, env: dict[str, str]) -> None:
        self.base = top / "served"
        self.base.mkdir(parents=True, exist_ok=True)
        self.env = env
        self.daemon, self.port = start_daemon(self.base, env)

    def add(self, repo: Path, name: str, copy: bool = False) -> str:
        """Serve ``repo`` as ``name``; ``copy`` makes a writable clone (hard-linked objects)."""
        place = self.base / name
        if copy:
            subprocess.run(
                ["git", "clone", "--quiet", "--bare", "--local", str(repo), str(place)],
                env=self.env,
                check=True,
            )
            for key, value in SERVER_CONFIG.items():
                subprocess.run(
                    ["git", "-C", str(place), "config", key, value], env=self.env, check=True
                )
        else:
            place.symlink_to(repo)
        return f"git://127.0.0.1:{self.port}/{name}"

    def close(self) -> None:
        self.daemon.terminate()
        self.daemon.wait()


class CountingProxy:
    """A TCP proxy on loopback in front of ``port``, counting the bytes sent to its clients."""

    def __init__(self, port: int) -> None:
        self.upstream = port
        self.received = 0
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def take(self) -> int:
        """Bytes sent to clients since the last call."""
        with self._lock:
            value, self.received = self.received, 0
        return value

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            threading.Thread(target=self._pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        buf = bytearray(256 * 1024)
        view = memoryview(buf)
        try:
            while True:
                n = src.recv_into(buf)
                if not n:
                    break
                dst.sendall(view[:n])
                if count:
                    with self._lock:
                        self.received += n
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
            with contextlib.suppress(OSError):
                src.shutdown(socket.SHUT_RD)

    def close(self) -> None:
        self._stop = True
        self._server.close()


__all__ = ["CountingProxy", "RepoSpec", "Served", "add_commit", "ensure", "free_port", "git_env"]
