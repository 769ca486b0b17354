"""Serving revisions to other pods, end to end: an upstream ``dagsync run --serve-revisions``
(over a real git repository and over the OSS fake driven by oss2) and workers as separate
``dagsync once --source relay`` processes, observed through their published trees, ``dagsync
status``, exit codes, output and the relay's metrics."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import json
import os
import socket
import stat
import tarfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.oss_server import FakeOss
from tests.gitservers import Repo
from tests.helpers import Result, client_env, dagsync, published, wait_for
from tests.test_ops_e2e import Dagsync

TOKEN = "relay-token-5f1d2c9e7a"
BIG_BYTES = 1 << 20


def tree(folder: Path) -> dict[str, tuple[str, ...]]:
    """Every entry under ``folder``: bytes digest and mode bits, or symlink target."""
    out: dict[str, tuple[str, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = Path(dirpath) / name
            rel = path.relative_to(folder).as_posix()
            if path.is_symlink():
                out[rel] = ("link", os.readlink(path))
            else:
                mode = oct(stat.S_IMODE(path.stat().st_mode))
                out[rel] = ("file", hashlib.sha256(path.read_bytes()).hexdigest(), mode)
    return out


def status_of(root: Path, env: Mapping[str, str]) -> dict[str, Any]:
    result = dagsync("status", "--root", root, env=env)
    assert result.returncode == 0, result
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


class Relay:
    """The upstream dagsync with ``--serve-revisions`` and the requests workers make to it."""

    def __init__(self, d: Dagsync, token: str | None) -> None:
        self.d = d
        self.token = token

    @property
    def url(self) -> str:
        return self.d.url

    def headers(self, token: str | None = "default") -> dict[str, str]:
        token = self.token if token == "default" else token
        return {"Authorization": f"Bearer {token}"} if token else {}

    def raw(self, target: str, token: str | None = "default", **headers: str) -> tuple[int, bytes]:
        """GET ``target`` exactly as written (no client-side normalisation of ``..``)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.d.port, timeout=30)
        try:
            conn.request("GET", target, headers={**self.headers(token), **headers})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def json(self, target: str) -> Any:
        status, body = self.raw(target)
        assert status == 200, (status, body)
        return json.loads(body)

    def current(self) -> str | None:
        current: str | None = self.json("/v1/revisions")["current"]
        return current

    def served(self, endpoint: str, code: str = "200") -> float:
        value = self.d.metric("dagsync_served_requests_total", endpoint=endpoint, code=code)
        return value or 0.0

    def served_bytes(self) -> float:
        return self.d.metric("dagsync_served_bytes_total") or 0.0

    def sync_to_new_revision(self) -> str:
        before = self.current()
        assert self.d.post().status_code == 202
        new = str(wait_for(lambda: (c := self.current()) != before and c, what="a new revision"))
        self.d.wait_idle()  # the clean-up after the publish has run too
        return new


@pytest.fixture
def env(hermetic_git_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return client_env(hermetic_git_env, tmp_path / "home")


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "relay-token"
    path.write_text(TOKEN + "\n")
    return path


@pytest.fixture
def start_relay(
    tmp_path: Path, env: dict[str, str], token_file: Path
) -> Iterator[Callable[..., Relay]]:
    procs: list[Dagsync] = []

    def start(*args: str, token: bool = True, extra_env: Mapping[str, str] | None = None) -> Relay:
        work = tmp_path / "relay"
        work.mkdir(exist_ok=True)
        argv = ["--root", str(work / "root"), "--period", "1h", "--serve-revisions"]
        argv += ["--http-bind", "127.0.0.1:{port}", "--revision-grace", "0s", *args]
        if token:
            argv += ["--serve-token-file", str(token_file)]
        d = Dagsync(work, argv, {**env, **(extra_env or {})})
        d.root = work / "root"
        procs.append(d)
        relay = Relay(d, TOKEN if token else None)
        wait_for(lambda: d.get("/readyz").status_code == 200, what="the relay's first publish")
        return relay

    yield start
    for d in procs:
        if d.returncode is None and d.proc.poll() is None:
            d.stop()


def worker(
    relay: Relay,
    root: Path,
    env: Mapping[str, str],
    *args: str,
    token: Path | None = None,
    umask: int = -1,
) -> Result:
    argv: list[str | Path] = ["once", "--source", "relay", "--relay-url", relay.url]
    argv += ["--root", root, *args]
    if token is not None:
        argv += ["--relay-token-file", token]
    return dagsync(*argv, env=env, umask=umask)


def dag_repo(repo: Repo) -> str:
    repo.write("dags/big.bin", os.urandom(BIG_BYTES))
    repo.write("bin/run.sh", "#!/bin/sh\necho run\n", mode=0o755)
    repo.write("dags/unicodé name.py", "# é\n")
    repo.symlink("dags/alias.py", "a.py")
    sha = repo.commit("tree with modes, symlinks, a large file")
    repo.push()
    return sha


# -- identical trees and ids, warm downloads, pinning ---------------------------------------------
def test_git_upstream_workers_get_the_same_tree_and_id_and_warm_ones_fetch_only_changes(
    start_relay: Callable[..., Relay],
    git_repo: Repo,
    env: dict[str, str],
    token_file: Path,
    tmp_path: Path,
):
    first = dag_repo(git_repo)
    relay = start_relay("--repo", git_repo.file_url, "--keep-revisions", "3")
    assert relay.current() == first
    worker_root = tmp_path / "worker"
    result = worker(relay, worker_root, env, token=token_file)
    assert result.returncode == 0, result
    assert TOKEN not in result.output
    revision, folder = published(worker_root)
    assert revision == first
    assert tree(folder) == tree(published(relay.d.root)[1])
    assert status_of(worker_root, env)["revision"] == status_of(relay.d.root, env)["revision"]
    assert relay.served("archive") == 1 and relay.served("files") == 0  # cold: one archive

    # A second commit changes one file and adds one; the big file stays.
    git_repo.write("dags/a.py", "# dag a, changed\nDAG_ID = 'a2'\n")
    git_repo.write("dags/new.py", "# new\n")
    git_repo.commit("change a, add new")
    git_repo.push()
    second = relay.sync_to_new_revision()
    big_before = (folder / "dags/big.bin").stat().st_ino
    bytes_before = relay.served_bytes()
    result = worker(relay, worker_root, env, token=token_file)
    assert result.returncode == 0, result
    revision, folder = published(worker_root)
    assert revision == second
    assert tree(folder) == tree(published(relay.d.root)[1])
    assert relay.served("files") == 2 and relay.served("archive") == 1
    # Only the two small files (plus the listing and the manifest) crossed the wire.
    assert relay.served_bytes() - bytes_before < BIG_BYTES / 4
    assert (folder / "dags/big.bin").stat().st_ino == big_before  # hard-linked

    # Pinning: another worker asks for the first revision, which the relay still keeps.
    pinned_root = tmp_path / "pinned"
    result = worker(relay, pinned_root, env, "--revision", first, token=token_file)
    assert result.returncode == 0, result
    assert published(pinned_root)[0] == first
    assert tree(published(pinned_root)[1]) == tree(relay.d.root / ".dagsync/revisions" / first)
    gone = "0" * 40
    result = worker(relay, tmp_path / "gone", env, "--revision", gone, token=token_file)
    assert result.returncode == 1
    assert gone in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "gone" / "current").exists()


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_a_cold_worker_writes_the_relays_modes_whatever_its_umask(
    start_relay: Callable[..., Relay],
    git_repo: Repo,
    env: dict[str, str],
    token_file: Path,
    tmp_path: Path,
    umask: int,
):
    """Small members are written whole, with the mode set only when the umask took bits away:
    under 077 as under 022, files are 0644 and executables 0755, as on the relay."""
    dag_repo(git_repo)
    relay = start_relay("--repo", git_repo.file_url)
    result = worker(relay, tmp_path / "worker", env, token=token_file, umask=umask)
    assert result.returncode == 0, result
    got = tree(published(tmp_path / "worker")[1])
    assert got == tree(published(relay.d.root)[1])
    assert got["bin/run.sh"][2] == "0o755" and got["dags/a.py"][2] == "0o644"


def test_oss_upstream_workers_get_the_same_tree_and_id(
    start_relay: Callable[..., Relay], env: dict[str, str], token_file: Path, tmp_path: Path
):
    key_id, secret = "LTAI5tRelayTestKeyId", "RelayTestSecret-9c2f"
    with FakeOss(access_key_id=key_id, access_key_secret=secret) as fake:
        fake.create_bucket("dags")
        fake.put("dags", "team/a.py", b"# a\n")
        fake.put("dags", "team/sub/b.py", b"# b\n" * 1000)
        fake.put("dags", "other/c.py", b"# not published\n")
        relay = start_relay(
            "--oss-endpoint",
            fake.endpoint,
            "--oss-bucket",
            "dags",
            "--oss-prefix",
            "team",
            extra_env={"OSS_ACCESS_KEY_ID": key_id, "OSS_ACCESS_KEY_SECRET": secret},
        )
        result = worker(relay, tmp_path / "w", env, token=token_file)
        assert result.returncode == 0, result
        assert secret not in result.output
        upstream_id, upstream_folder = published(relay.d.root)
        revision, folder = published(tmp_path / "w")
        assert revision == upstream_id == status_of(tmp_path / "w", env)["revision"]
        assert tree(folder) == tree(upstream_folder)
        assert sorted(tree(folder)) == ["a.py", "sub/b.py"]
        # --subpath applies on top of what the relay serves.
        result = worker(relay, tmp_path / "sub", env, "--subpath", "sub", token=token_file)
        assert result.returncode == 0, result
        assert published(tmp_path / "sub")[0] == upstream_id
        assert sorted(tree(published(tmp_path / "sub")[1])) == ["b.py"]


# -- verification ---------------------------------------------------------------------------------
def flip_a_byte(path: Path) -> None:
    """Corrupt a published file in place (same size), as a bad disk or a proxy would."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.chmod(0o644)
    path.write_bytes(bytes(data))


def test_a_flipped_byte_between_relay_and_worker_fails_the_sync(
    start_relay: Callable[..., Relay],
    git_repo: Repo,
    env: dict[str, str],
    token_file: Path,
    tmp_path: Path,
):
    first = dag_repo(git_repo)
    relay = start_relay("--repo", git_repo.file_url, "--keep-revisions", "3")
    assert relay.current() == first
    relay.json(f"/v1/revisions/{first}/manifest")  # the sums are taken from the good tree
    served_first = relay.d.root / ".dagsync/revisions" / first

    # Cold (archive): the big file is corrupted on the relay's disk after it was summed.
    flip_a_byte(served_first / "dags/big.bin")
    cold = tmp_path / "cold"
    result = worker(relay, cold, env, token=token_file)
    assert result.returncode == 1, result
    assert "dags/big.bin" in result.stderr and "sha256" in result.stderr
    assert not (cold / "current").exists()

    # Warm (single files): a worker on a good first revision, then a changed file corrupted.
    flip_a_byte(served_first / "dags/big.bin")  # flipped back: the first revision is good again
    warm = tmp_path / "warm"
    assert worker(relay, warm, env, token=token_file).returncode == 0
    git_repo.write("dags/b.py", "# b changed\n" * 100)
    git_repo.commit("change b")
    git_repo.push()
    second = relay.sync_to_new_revision()
    relay.json(f"/v1/revisions/{second}/manifest")
    flip_a_byte(relay.d.root / ".dagsync/revisions" / second / "dags/b.py")
    result = worker(relay, warm, env, token=token_file)
    assert result.returncode == 1, result
    assert "dags/b.py" in result.stderr
    assert published(warm)[0] == first  # the last good revision stays


# -- paths and tokens -----------------------------------------------------------------------------
def test_traversal_is_refused_before_any_file_is_opened(
    start_relay: Callable[..., Relay], git_repo: Repo
):
    first = dag_repo(git_repo)
    relay = start_relay("--repo", git_repo.file_url)
    files = f"/v1/revisions/{first}/files/"
    for target, expected in [
        (files + "dags/a.py", 200),
        (files + "dags%2Fa.py", 200),
        (files + "dags/alias.py", 200),  # a symlink inside the tree: its target's bytes
        (files + "dags/unicod%C3%A9%20name.py", 200),
        (files + "../../../../etc/passwd", 400),
        (files + "dags/../../etc/passwd", 400),
        (files + "..%2F..%2Fetc%2Fpasswd", 400),
        (files + "%2Fetc%2Fpasswd", 400),
        (files + "/etc/passwd", 400),
        (files + "dags/a.py%00.txt", 400),
        (files + "dags", 404),
        (files + "nope.py", 404),
        (f"/v1/revisions/{'0' * 40}/files/dags/a.py", 404),
        (f"/v1/revisions/{'0' * 40}/manifest", 404),
        ("/v1/revisions/..%2F..%2Fetc/manifest", 400),
        ("/v1/revisions/../manifest", 400),
        (f"/v1/revisions/{first}/other", 404),
    ]:
        status, body = relay.raw(target)
        assert status == expected, (target, status, body[:200])
    status, body = relay.raw(files + "dags/alias.py")
    assert body == (git_repo.work / "dags/a.py").read_bytes()
    assert relay.served("files", "400") == 6
    # gzip on request: the same tar, compressed.
    status, plain = relay.raw(f"/v1/revisions/{first}/archive.tar")
    status_gz, packed = relay.raw(
        f"/v1/revisions/{first}/archive.tar", **{"Accept-Encoding": "gzip"}
    )
    assert status == status_gz == 200 and len(packed) < len(plain)
    assert gzip.decompress(packed) == plain


def test_a_dagsync_that_does_not_serve_is_named(
    git_repo: Repo, env: dict[str, str], tmp_path: Path
):
    (tmp_path / "plain").mkdir()
    plain = Dagsync(
        tmp_path / "plain",
        ["--repo", git_repo.file_url, "--root", str(tmp_path / "plain-root"), "--period", "1h"]
        + ["--http-bind", "127.0.0.1:{port}"],
        env,
    )
    try:
        result = worker(Relay(plain, None), tmp_path / "w", env)
    finally:
        plain.stop()
    assert result.returncode == 1, result
    assert "--serve-revisions" in result.stderr and "Traceback" not in result.output


def test_bearer_token_required_and_rotated(
    start_relay: Callable[..., Relay],
    git_repo: Repo,
    env: dict[str, str],
    token_file: Path,
    tmp_path: Path,
):
    relay = start_relay("--repo", git_repo.file_url)
    assert relay.raw("/v1/revisions", token=None)[0] == 401
    assert relay.raw("/v1/revisions", token="wrong")[0] == 401
    assert relay.raw("/v1/revisions")[0] == 200
    for open_path in ("/metrics", "/healthz", "/readyz"):
        assert relay.d.get(open_path).status_code == 200
    no_token = worker(relay, tmp_path / "a", env)
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-token\n")
    wrong_token = worker(relay, tmp_path / "b", env, token=wrong)
    for result in (no_token, wrong_token):
        assert result.returncode == 1, result
        assert "401 unauthorized" in result.stderr and "--relay-token-file" in result.stderr
        assert "Traceback" not in result.output and TOKEN not in result.output
        assert "not-the-token" not in result.output
    # Rotation: the relay re-reads its token file; the old token stops working.
    token_file.write_text("rotated-token-b81e\n")
    assert wait_for(lambda: relay.raw("/v1/revisions", token=TOKEN)[0] == 401)
    assert relay.raw("/v1/revisions", token="rotated-token-b81e")[0] == 200
    assert worker(relay, tmp_path / "c", env, token=token_file).returncode == 0
    assert TOKEN not in relay.d.stdout + relay.d.stderr


# -- a streamed revision survives the clean-up ----------------------------------------------------
def test_a_revision_being_streamed_survives_cleanup(
    start_relay: Callable[..., Relay], git_repo: Repo, tmp_path: Path
):
    git_repo.write("dags/huge.bin", os.urandom(24 << 20))
    first = git_repo.commit("big")
    git_repo.push()
    relay = start_relay("--repo", git_repo.file_url, "--keep-revisions", "1")
    manifest = relay.json(f"/v1/revisions/{first}/manifest")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the relay blocks on us
    sock.connect(("127.0.0.1", relay.d.port))
    sock.settimeout(30)
    sock.sendall(
        f"GET /v1/revisions/{first}/archive.tar HTTP/1.0\r\n"
        f"Authorization: Bearer {TOKEN}\r\n\r\n".encode()
    )
    received = bytearray(sock.recv(65536))
    revisions = relay.d.root / ".dagsync/revisions"
    try:
        for n in range(3):  # several new revisions while the slow reader holds the stream
            git_repo.write("dags/a.py", f"# version {n}\n")
            git_repo.commit(f"v{n}")
            git_repo.push()
            newest = relay.sync_to_new_revision()
        assert (revisions / first).is_dir()  # leased
        assert sorted(p.name for p in revisions.iterdir() if p.is_dir()) == sorted([first, newest])
        while chunk := sock.recv(1 << 20):
            received += chunk
    finally:
        sock.close()
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200")
    entries = {e["path"]: e for e in manifest["entries"]}
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:") as tar:
        members = tar.getmembers()
        assert sorted(m.name for m in members) == sorted(entries)
        for member in members:
            data = tar.extractfile(member).read()  # type: ignore[union-attr]
            assert hashlib.sha256(data).hexdigest() == entries[member.name]["sha256"]
    # Released: the next clean-up removes it.
    git_repo.write("dags/a.py", "# final\n")
    git_repo.commit("final")
    git_repo.push()
    relay.sync_to_new_revision()
    assert not (revisions / first).exists()
    assert not (revisions / f"{first}.sha256.json").exists()


# -- configuration --------------------------------------------------------------------------------
def test_configuration_errors_exit_2_naming_the_option(env: dict[str, str], tmp_path: Path):
    root = tmp_path / "root"
    cases = [
        (["once", "--source", "relay", "--root", root], "--relay-url"),
        (["once", "--relay-url", "ftp://host", "--root", root], "--relay-url"),
        (["once", "--relay-url", "http://h:1", "--revision", "../x", "--root", root], "--revision"),
        (
            ["once", "--relay-url", "http://h:1", "--relay-token-file", tmp_path / "nope"],
            "--relay-token-file",
        ),
        (
            [
                "run",
                "--local-path",
                tmp_path,
                "--serve-revisions",
                "--http-bind",
                "",
                "--root",
                root,
            ],
            "--http-bind",
        ),
    ]
    for argv, option in cases:
        result = dagsync(*argv, env=env)
        assert result.returncode == 2, (argv, result)
        assert option in result.stderr and len(result.stderr.strip().splitlines()) == 1
