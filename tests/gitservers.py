"""Real git servers on loopback for tests: git daemon, smart HTTP (git http-backend) and sshd.

Plain helpers usable outside pytest, plus fixtures; load them with
``pytest_plugins = ["tests.gitservers"]`` (or ``-p tests.gitservers``).

Layout: every repository the fixtures create lives under one session-wide served root, one
directory per test, so the session-scoped daemon and sshd serve all of them and a relative
submodule URL (``../sub.git``) resolves to a sibling over every transport.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote, unquote, urlsplit

import pytest

LOOPBACK = "127.0.0.1"
READY_TIMEOUT_SECONDS = 10.0
GIT_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 5.0
SSHD = Path("/usr/sbin/sshd")
SSH_HOST_ALIAS = "dagsync-test"
HTTP_USERNAME = "alice"
HTTP_PASSWORD = "s3cr3t-token"
GIT_USER_NAME = "dagsync tests"
GIT_USER_EMAIL = "tests@dagsync.invalid"
INITIAL_FILES: dict[str, str] = {
    "dags/a.py": "# dag a\nDAG_ID = 'a'\n",
    "dags/b.py": "# dag b\nDAG_ID = 'b'\n",
    "README.md": "# test dags\n",
}

# Variables through which the machine or the calling shell would reach into git or ssh.
LEAKY_ENV_VARS = (
    "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_CONFIG", "GIT_CONFIG_GLOBAL", "GIT_CONFIG_SYSTEM",
    "GIT_CONFIG_COUNT", "GIT_CONFIG_PARAMETERS", "GIT_SSH", "GIT_SSH_COMMAND", "GIT_SSH_VARIANT",
    "GIT_ASKPASS", "SSH_ASKPASS", "SSH_AUTH_SOCK", "GIT_PROXY_COMMAND", "GIT_PROTOCOL",
    "GIT_TRACE", "GIT_TRACE_PACKET", "GIT_CURL_VERBOSE", "XDG_CONFIG_HOME", "http_proxy",
    "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
)  # fmt: skip

_GLOBAL_GITCONFIG = f"""\
[user]
\tname = {GIT_USER_NAME}
\temail = {GIT_USER_EMAIL}
[init]
\tdefaultBranch = main
[protocol "file"]
\tallow = always
[uploadpack]
\tallowAnySHA1InWant = true
[advice]
\tdetachedHead = false
[gc]
\tauto = 0
[maintenance]
\tauto = false
"""


class GitServerError(RuntimeError):
    """A loopback server failed to start; the message carries its log."""


class GitCommandError(subprocess.CalledProcessError):
    """``git`` exited non-zero; unlike the base class, str() shows stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstderr:\n{self.stderr}"


# --- hermetic git -------------------------------------------------------------------------------


def hermetic_env_vars(home: Path) -> dict[str, str]:
    """The variables that make git hermetic (what ``hermetic_git`` sets in os.environ)."""
    return {
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": GIT_USER_NAME,
        "GIT_AUTHOR_EMAIL": GIT_USER_EMAIL,
        "GIT_COMMITTER_NAME": GIT_USER_NAME,
        "GIT_COMMITTER_EMAIL": GIT_USER_EMAIL,
        "NO_PROXY": "*",
        "no_proxy": "*",
    }


def git_env(home: Path) -> dict[str, str]:
    """Full environment for git subprocesses: os.environ minus leaks, plus a temp HOME.

    Writes ``home/.gitconfig`` (init.defaultBranch=main, protocol.file.allow=always, ...).
    """
    home.mkdir(parents=True, exist_ok=True)
    (home / ".gitconfig").write_text(_GLOBAL_GITCONFIG)
    env = {k: v for k, v in os.environ.items() if k not in LEAKY_ENV_VARS}
    env.update(hermetic_env_vars(home))
    return env


def run_git(
    args: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    timeout: float = GIT_TIMEOUT_SECONDS,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``git *args``; with check, raise GitCommandError (stderr included) on failure."""
    proc = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env=None if env is None else dict(env),
        input=input,
        stdin=subprocess.DEVNULL if input is None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise GitCommandError(proc.returncode, proc.args, proc.stdout, proc.stderr)
    return proc


# --- Repo ---------------------------------------------------------------------------------------


class Repo:
    """A bare "origin" (``<dir>/<name>.git``) and a work tree (``<dir>/<name>.work``)."""

    def __init__(self, work: Path, bare_path: Path, env: Mapping[str, str] | None) -> None:
        self.work = work
        self.bare_path = bare_path
        self.env: dict[str, str] = dict(os.environ if env is None else env)

    @classmethod
    def create(
        cls, path: Path, env: Mapping[str, str] | None = None, *, name: str = "origin"
    ) -> Self:
        """Make ``path/<name>.git`` (allowAnySHA1InWant) and a work tree with it as origin."""
        path.mkdir(parents=True, exist_ok=True)
        path = path.resolve()
        repo = cls(path / f"{name}.work", path / f"{name}.git", env)
        repo._git("init", "--quiet", "--bare", "--initial-branch=main", str(repo.bare_path))
        repo._git("config", "uploadpack.allowAnySHA1InWant", "true", cwd=repo.bare_path)
        repo._git("config", "uploadpack.allowReachableSHA1InWant", "true", cwd=repo.bare_path)
        repo._git("init", "--quiet", "--initial-branch=main", str(repo.work))
        repo.git("remote", "add", "origin", repo.file_url)
        return repo

    @property
    def file_url(self) -> str:
        return self.bare_path.as_uri()

    def _git(self, *args: str, cwd: Path | None = None) -> str:
        return run_git(args, cwd=cwd, env=self.env).stdout

    def git(self, *args: str) -> str:
        """Run git in the work tree and return its stdout."""
        return self._git(*args, cwd=self.work)

    def _path(self, relpath: str) -> Path:
        path = self.work / relpath
        if path.is_symlink() or path.is_file():
            path.unlink()
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def write(self, relpath: str, content: str | bytes, mode: int | None = None) -> Path:
        path = self._path(relpath)
        if isinstance(content, str):
            path.write_text(content)
        else:
            path.write_bytes(content)
        if mode is not None:
            path.chmod(mode)
        return path

    def symlink(self, relpath: str, target: str) -> Path:
        path = self._path(relpath)
        path.symlink_to(target)
        return path

    def remove(self, relpath: str) -> None:
        path = self.work / relpath
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()

    def commit(self, msg: str, *, allow_empty: bool = True) -> str:
        """Stage everything in the work tree, commit, return the new HEAD sha."""
        self.git("add", "--all")
        self.git("commit", "--quiet", "--no-verify", "-m", msg, *(["--allow-empty"] * allow_empty))
        return self.head()

    def push(self, branch: str = "main", force: bool = False) -> None:
        refspec = f"{branch}:refs/heads/{branch}"
        self.git("push", "--quiet", *(["--force"] * force), "origin", refspec)

    def tag(
        self,
        name: str,
        annotated: bool = False,
        sha: str | None = None,
        *,
        force: bool = False,
        push: bool = True,
    ) -> None:
        """Create (force: move) a tag at sha or HEAD and, by default, push it."""
        opts = (["-a", "-m", f"tag {name}"] if annotated else []) + (["-f"] if force else [])
        self.git("tag", *opts, name, *([sha] if sha else []))
        if push:
            self.git("push", "--quiet", *(["--force"] * force), "origin", f"refs/tags/{name}")

    def delete_tag(self, name: str) -> None:
        self.git("tag", "-d", name)
        self.git("push", "--quiet", "origin", f":refs/tags/{name}")

    def branch(self, name: str, start: str | None = None) -> None:
        self.git("branch", name, *([start] if start else []))

    def delete_branch(self, name: str) -> None:
        """Delete the branch on origin (and locally when it exists and is not checked out)."""
        self.git("push", "--quiet", "origin", f":refs/heads/{name}")
        run_git(["branch", "-D", name], cwd=self.work, env=self.env, check=False)

    def checkout(self, name: str) -> None:
        self.git("checkout", "--quiet", name)

    def reset_hard(self, sha: str) -> None:
        self.git("reset", "--quiet", "--hard", sha)

    def add_submodule(self, url: str, path: str) -> None:
        """``git submodule add``; relative URLs ("../sub.git") resolve against origin's URL."""
        self.git("submodule", "--quiet", "add", url, path)

    def update_submodule(self, path: str) -> None:
        """Move the submodule at path to its remote branch tip (commit afterwards)."""
        self.git("submodule", "--quiet", "update", "--remote", "--", path)

    def head(self) -> str:
        return self.rev_parse("HEAD")

    def rev_parse(self, rev: str) -> str:
        return self.git("rev-parse", "--verify", f"{rev}^{{commit}}").strip()


def make_initial_repo(path: Path, env: Mapping[str, str] | None, *, name: str = "origin") -> Repo:
    """Repo.create plus one pushed commit holding INITIAL_FILES."""
    repo = Repo.create(path, env, name=name)
    for relpath, content in INITIAL_FILES.items():
        repo.write(relpath, content)
    repo.commit("initial")
    repo.push()
    return repo


# --- process and port plumbing ------------------------------------------------------------------


def free_port() -> int:
    """A port that was free a moment ago (bind to 0); callers retry if they lose the race."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int,
    proc: subprocess.Popen[bytes] | None = None,
    timeout: float = READY_TIMEOUT_SECONDS,
) -> None:
    """Poll until the port accepts connections; fail early when proc exits."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise GitServerError(f"process exited with {proc.returncode} before port {port}")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise GitServerError(f"port {port} not accepting after {timeout}s") from None
            time.sleep(0.01)


def _stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _relative_to_root(root: Path, bare_path: Path) -> str:
    try:
        return bare_path.resolve().relative_to(root).as_posix()
    except ValueError:
        raise ValueError(f"{bare_path} is not under the served root {root}") from None


class _ProcessServer:
    """Start/stop plumbing shared by GitDaemon and SshServer (a subprocess on a port)."""

    port: int

    def __init__(self, workdir: Path | None) -> None:
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="gitserver-")) if workdir is None else workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "server.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def _argv(self, port: int) -> list[str]:
        raise NotImplementedError

    def _spawn(self, env: Mapping[str, str] | None, attempts: int = 3) -> None:
        for _ in range(attempts):
            port = free_port()
            argv = self._argv(port)
            with self.log_path.open("ab") as log:
                self._proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                    env=None if env is None else dict(env),
                )  # fmt: skip
            try:
                wait_for_port(port, self._proc)
            except GitServerError:
                _stop_process(self._proc)
                continue  # most likely lost the port race; the log says if not
            self.port = port
            return
        raise GitServerError(f"{argv[0]} did not start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        _stop_process(self._proc)
        self._proc = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def start(self) -> Self:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# --- git daemon ---------------------------------------------------------------------------------


class GitDaemon(_ProcessServer):
    """``git daemon`` exporting everything under base_path on 127.0.0.1:port."""

    def __init__(
        self, base_path: Path, env: Mapping[str, str] | None = None, workdir: Path | None = None
    ) -> None:
        super().__init__(workdir)
        self.base_path = base_path.resolve()
        self.env = env

    def _argv(self, port: int) -> list[str]:
        return [
            "git", "daemon", "--export-all", "--reuseaddr", "--informative-errors",
            f"--base-path={self.base_path}", f"--listen={LOOPBACK}", f"--port={port}",
            str(self.base_path),
        ]  # fmt: skip

    def start(self) -> Self:
        self._spawn(self.env)
        return self

    def url_for(self, bare_path: Path) -> str:
        return f"git://{LOOPBACK}:{self.port}/{_relative_to_root(self.base_path, bare_path)}"


# --- smart HTTP ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class HttpRequestRecord:
    """One request as the server saw it; status is None while/when the server hung."""

    method: str
    target: str  # the raw request target: path and query, exactly as sent
    headers: dict[str, str]  # lower-cased names
    has_authorization: bool
    user: str | None  # the authenticated user, None without (valid) credentials
    status: int | None
    content_encoding: str | None
    chunked: bool
    git_protocol: str | None


class _HttpServer(ThreadingHTTPServer):
    owner: GitHttpServer


class _GitHttpHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _HttpServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection, add=True)

    def finish(self) -> None:
        self.server.owner._track(self.connection, add=False)
        super().finish()

    def do_GET(self) -> None:
        self.server.owner._handle(self)

    do_POST = do_GET

    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip(), 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def reply(self, status: int, headers: Sequence[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def parse_cgi_output(output: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """Split CGI output into (status, headers, body); ``Status:`` defaults to 200."""
    match = re.search(rb"\r?\n\r?\n", output)
    if match is None:
        return 500, [], output
    status, headers = 200, []
    for line in output[: match.start()].decode("latin-1").splitlines():
        name, _, value = line.partition(":")
        if name.lower() == "status":
            status = int(value.split()[0])
        elif name.lower() != "content-length":
            headers.append((name.strip(), value.strip()))
    return status, headers, output[match.end() :]


class GitHttpServer:
    """Smart HTTP: ``git http-backend`` as CGI behind a threaded http.server on 127.0.0.1.

    ``delay`` (seconds per request) and ``hang`` (an Event: while set, requests are read and
    logged but never answered) may be changed while running; ``requests`` is the log.
    """

    def __init__(
        self,
        project_root: Path,
        env: Mapping[str, str] | None = None,
        *,
        username: str | None = None,
        password: str | None = None,
        delay: float = 0.0,
    ) -> None:
        self.project_root = project_root.resolve()
        self.env = dict(os.environ if env is None else env)
        self.username = username
        self.password = password
        self.delay = delay
        self.hang = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._requests: list[HttpRequestRecord] = []
        self._connections: set[socket.socket] = set()
        self._server: _HttpServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def requests(self) -> list[HttpRequestRecord]:
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def url_for(
        self, bare_path: Path, username: str | None = None, password: str | None = None
    ) -> str:
        """URL of bare_path; username/password are embedded only when given."""
        userinfo = ""
        if username is not None:
            userinfo = quote(username, safe="")
            userinfo += f":{quote(password, safe='')}@" if password is not None else "@"
        rel = _relative_to_root(self.project_root, bare_path)
        return f"http://{userinfo}{LOOPBACK}:{self.port}/{rel}"

    def start(self) -> Self:
        self._server = _HttpServer((LOOPBACK, 0), _GitHttpHandler)
        self._server.owner = self
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"git-http-{self.port}", daemon=True,
        )  # fmt: skip
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # releases hung and delayed handlers
        if self._server is None:
            return
        self._server.shutdown()
        with self._lock:
            for conn in self._connections:  # idle keep-alive readers would block the join
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        self._server.server_close()  # joins the handler threads
        if self._thread is not None:
            self._thread.join()
        self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            (self._connections.add if add else self._connections.discard)(conn)

    def _authenticated_user(self, authorization: str | None) -> str | None:
        scheme, _, encoded = (authorization or "").partition(" ")
        if scheme.lower() != "basic" or self.username is None:
            return None
        try:
            given = base64.b64decode(encoded.strip(), validate=True)
        except ValueError:
            return None
        expected = f"{self.username}:{self.password or ''}".encode()
        return self.username if hmac.compare_digest(given, expected) else None

    def _handle(self, handler: _GitHttpHandler) -> None:
        body = handler.read_body()
        headers = {k.lower(): v for k, v in handler.headers.items()}
        user = self._authenticated_user(headers.get("authorization"))
        if self.hang.is_set() or (self.delay and self._stopping.wait(self.delay)):
            self._record(handler, headers, user, None)  # logged before it hangs
            self._stopping.wait()
            handler.close_connection = True
            return
        if self.username is not None and user is None:
            self._record(handler, headers, user, 401)
            realm = [("WWW-Authenticate", 'Basic realm="git"'), ("Content-Type", "text/plain")]
            handler.reply(401, realm, b"authentication required\n")
            return
        status, cgi_headers, payload = self._run_backend(handler, headers, body, user)
        self._record(handler, headers, user, status)
        handler.reply(status, cgi_headers, payload)

    def _record(
        self,
        handler: _GitHttpHandler,
        headers: dict[str, str],
        user: str | None,
        status: int | None,
    ) -> None:
        record = HttpRequestRecord(
            method=handler.command,
            target=handler.path,
            headers=headers,
            has_authorization="authorization" in headers,
            user=user,
            status=status,
            content_encoding=headers.get("content-encoding"),
            chunked=headers.get("transfer-encoding", "").lower() == "chunked",
            git_protocol=headers.get("git-protocol"),
        )
        with self._lock:
            self._requests.append(record)

    def _run_backend(
        self, handler: _GitHttpHandler, headers: dict[str, str], body: bytes, user: str | None
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        url = urlsplit(handler.path)
        env = {k: v for k, v in self.env.items() if not k.startswith(("HTTP_", "REMOTE_"))}
        env.update(
            GIT_PROJECT_ROOT=str(self.project_root),
            GIT_HTTP_EXPORT_ALL="1",
            GATEWAY_INTERFACE="CGI/1.1",
            SERVER_PROTOCOL="HTTP/1.1",
            SERVER_NAME=LOOPBACK,
            SERVER_PORT=str(self.port),
            PATH_INFO=unquote(url.path),
            QUERY_STRING=url.query,
            REQUEST_METHOD=handler.command,
            CONTENT_TYPE=headers.get("content-type", ""),
            CONTENT_LENGTH=str(len(body)),
            REMOTE_ADDR=handler.client_address[0],
        )
        optional = {
            "REMOTE_USER": user,
            "HTTP_GIT_PROTOCOL": headers.get("git-protocol"),
            "HTTP_CONTENT_ENCODING": headers.get("content-encoding"),  # http-backend inflates
        }
        env.update({k: v for k, v in optional.items() if v is not None})
        proc = subprocess.run(
            ["git", "http-backend"], input=body, capture_output=True, env=env,
            timeout=GIT_TIMEOUT_SECONDS,
        )  # fmt: skip
        if proc.returncode != 0 and not proc.stdout:
            return 500, [("Content-Type", "text/plain")], proc.stderr
        return parse_cgi_output(proc.stdout)


# --- sshd ---------------------------------------------------------------------------------------


def _keygen(path: Path, comment: str) -> str:
    """Make an ed25519 key pair at path; return the public key line."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=GIT_TIMEOUT_SECONDS,
    )  # fmt: skip
    return path.with_name(path.name + ".pub").read_text().strip()


class SshServer(_ProcessServer):
    """``sshd`` on 127.0.0.1 accepting ``client_key`` for the current user (root in CI).

    Files: ``client_key`` (authorized), ``wrong_key`` (not), ``known_hosts`` (the real host
    key), ``wrong_known_hosts`` (another key for the same host), ``ssh_config`` (a
    ``Host dagsync-test`` alias for the scp-like form; ssh reads ``~`` from passwd, not $HOME,
    so the alias only works with ``ssh -F ssh_config``). Sessions get ``SetEnv`` HOME and
    GIT_CONFIG_NOSYSTEM from ``env`` so upload-pack on the server side is hermetic too.
    """

    def __init__(self, env: Mapping[str, str] | None = None, workdir: Path | None = None) -> None:
        super().__init__(workdir)
        self.env = env
        self.user = pwd.getpwuid(os.getuid()).pw_name
        d = self.workdir
        self.config_path = d / "sshd_config"
        self.host_key = d / "ssh_host_ed25519_key"
        self.client_key = d / "id_ed25519"
        self.wrong_key = d / "id_ed25519_wrong"
        self.authorized_keys = d / "authorized_keys"
        self.known_hosts = d / "known_hosts"
        self.wrong_known_hosts = d / "known_hosts_wrong"
        self.ssh_config = d / "ssh_config"

    @staticmethod
    def available() -> bool:
        return SSHD.is_file() and shutil.which("ssh") is not None

    def _argv(self, port: int) -> list[str]:
        session_env = ""
        if self.env is not None:
            session_env = f'SetEnv GIT_CONFIG_NOSYSTEM=1 "HOME={self.env["HOME"]}"\n'
        self.config_path.write_text(
            f"ListenAddress {LOOPBACK}\nPort {port}\nHostKey {self.host_key}\n"
            f"PidFile {self.workdir / 'sshd.pid'}\nAuthorizedKeysFile {self.authorized_keys}\n"
            "PubkeyAuthentication yes\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPermitRootLogin yes\nStrictModes no\nUsePAM no\n"
            "AllowTcpForwarding no\nX11Forwarding no\nPrintMotd no\nAcceptEnv GIT_PROTOCOL\n"
            f"MaxStartups 100:30:200\nLogLevel VERBOSE\n{session_env}"
        )
        check = subprocess.run(
            [str(SSHD), "-t", "-f", str(self.config_path)], capture_output=True, text=True
        )
        if check.returncode != 0:
            raise GitServerError(f"sshd -t rejected {self.config_path}:\n{check.stderr}")
        return [str(SSHD), "-D", "-e", "-f", str(self.config_path)]

    def start(self) -> Self:
        if not self.available():
            raise GitServerError(f"{SSHD} or ssh is not installed (apt-get install openssh-server)")
        Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
        host_pub = _keygen(self.host_key, "dagsync-test-host")
        other_host_pub = _keygen(self.workdir / "other_host_key", "dagsync-test-other-host")
        self.authorized_keys.write_text(_keygen(self.client_key, "dagsync-test-client") + "\n")
        _keygen(self.wrong_key, "dagsync-test-unauthorized")
        self._spawn(self.env)
        host = f"[{LOOPBACK}]:{self.port}"
        self.known_hosts.write_text(f"{host} {' '.join(host_pub.split()[:2])}\n")
        self.wrong_known_hosts.write_text(f"{host} {' '.join(other_host_pub.split()[:2])}\n")
        self.ssh_config.write_text(
            f"Host {SSH_HOST_ALIAS}\n  HostName {LOOPBACK}\n  Port {self.port}\n"
            f"  User {self.user}\n"
        )
        return self

    def url_for(self, bare_path: Path) -> str:
        return f"ssh://{self.user}@{LOOPBACK}:{self.port}{bare_path.resolve().as_posix()}"

    def scp_url_for(self, bare_path: Path) -> str:
        """scp-like form; git's bracket syntax ``[user@host:port]:path`` carries the port."""
        return f"[{self.user}@{LOOPBACK}:{self.port}]:{bare_path.resolve().as_posix()}"

    def alias_scp_url_for(self, bare_path: Path) -> str:
        """Plain ``user@host:path`` via the ``dagsync-test`` alias; needs ``-F ssh_config``."""
        return f"{self.user}@{SSH_HOST_ALIAS}:{bare_path.resolve().as_posix()}"

    def ssh_command(
        self,
        key: Path | None = None,
        known_hosts: Path | None = None,
        config: Path | None = None,
    ) -> str:
        """A GIT_SSH_COMMAND: only this key, only this known_hosts, strict, no prompts."""
        args = [
            "ssh", "-F", str(config or "/dev/null"), "-i", str(key or self.client_key),
            "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={known_hosts or self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10",
        ]  # fmt: skip
        return shlex.join(args)


# --- pytest fixtures ----------------------------------------------------------------------------


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use the sshd fixture get the ``ssh`` marker even if not marked by hand."""
    for item in items:
        if "sshd" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ssh)


@pytest.fixture(scope="session")
def git_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The temp HOME holding the hermetic global .gitconfig."""
    return tmp_path_factory.mktemp("git-home")


@pytest.fixture(scope="session")
def hermetic_git_env(git_home: Path) -> dict[str, str]:
    """Full hermetic environment for git subprocesses (see git_env)."""
    return git_env(git_home)


@pytest.fixture
def hermetic_git(
    monkeypatch: pytest.MonkeyPatch, git_home: Path, hermetic_git_env: dict[str, str]
) -> dict[str, str]:
    """Make os.environ hermetic for this test, so the code under test inherits it."""
    for name in LEAKY_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in hermetic_env_vars(git_home).items():
        monkeypatch.setenv(name, value)
    return hermetic_git_env


@pytest.fixture(scope="session")
def git_served_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory every fixture-made repo lives under; served by daemon, HTTP and sshd."""
    return tmp_path_factory.mktemp("git-served").resolve()


@pytest.fixture
def git_repo_dir(git_served_root: Path, request: pytest.FixtureRequest) -> Path:
    """This test's directory under the served root (repos in it are siblings)."""
    prefix = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:40] + "-"
    return Path(tempfile.mkdtemp(prefix=prefix, dir=git_served_root))


@pytest.fixture
def make_git_repo(git_repo_dir: Path, hermetic_git_env: dict[str, str]) -> Callable[..., Repo]:
    """Factory: make_git_repo(name="sub", initial=True) -> Repo at <test dir>/sub.git."""

    def make(name: str, initial: bool = True) -> Repo:
        if initial:
            return make_initial_repo(git_repo_dir, hermetic_git_env, name=name)
        return Repo.create(git_repo_dir, hermetic_git_env, name=name)

    return make


@pytest.fixture
def git_repo(make_git_repo: Callable[..., Repo]) -> Repo:
    """origin.git with one pushed commit on main: dags/a.py, dags/b.py, README.md."""
    return make_git_repo("origin")


@pytest.fixture(scope="session")
def git_daemon(git_served_root: Path, hermetic_git_env: dict[str, str]) -> Iterator[GitDaemon]:
    with GitDaemon(git_served_root, hermetic_git_env) as daemon:
        yield daemon


@pytest.fixture
def git_http(git_served_root: Path, hermetic_git_env: dict[str, str]) -> Iterator[GitHttpServer]:
    """Smart HTTP without auth; per test, so delay/hang/requests start fresh."""
    with GitHttpServer(git_served_root, hermetic_git_env) as server:
        yield server


@pytest.fixture
def git_http_auth(
    git_served_root: Path, hermetic_git_env: dict[str, str]
) -> Iterator[GitHttpServer]:
    """Smart HTTP requiring Basic auth alice / s3cr3t-token (HTTP_USERNAME/HTTP_PASSWORD)."""
    server = GitHttpServer(
        git_served_root, hermetic_git_env, username=HTTP_USERNAME, password=HTTP_PASSWORD
    )
    with server:
        yield server


@pytest.fixture(scope="session")
def sshd(
    tmp_path_factory: pytest.TempPathFactory, hermetic_git_env: dict[str, str]
) -> Iterator[SshServer]:
    """sshd on loopback (session-wide); skips when openssh-server is not installed."""
    if not SshServer.available():
        pytest.skip(f"{SSHD} not installed (apt-get install -y openssh-server)")
    with SshServer(hermetic_git_env, tmp_path_factory.mktemp("sshd")) as server:
        yield server
