"""One distinctive secret through every channel dagsync takes one from (git password file and
URL user-info, OSS secret (environment and file) and STS token, Azure account key, SAS and
connection string, the trigger secret), with everything turned up: debug logs, every endpoint,
a failing sync that writes the error file, a check and an exec hook. Zero hits anywhere a
person or another process can read: the log, the endpoint bodies (/, /healthz, /readyz,
/status, /metrics), the error file, and ``/proc/<pid>/cmdline`` and ``/proc/<pid>/environ`` of
every child dagsync starts, sampled while they run (git, its helpers, the check, the hook).
dagsync's own argv and environment hold what the user put there and are not searched."""

from __future__ import annotations

import base64
import contextlib
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from tests.fakes.azure_server import FakeAzureFiles
from tests.fakes.oss_server import FakeOss
from tests.gitservers import GitHttpServer, Repo, free_port
from tests.helpers import client_env, descendants, start_dagsync, terminate, wait_for

MARK = "Zebra4711"  # in every secret; never in anything else dagsync could print
TRIGGER = f"trigger-{MARK}-c0ffee"
ENDPOINTS = ("/", "/healthz", "/readyz", "/status", "/metrics")
WAIT_SECONDS = 90.0


@dataclass
class Channel:
    """How one run gets its secrets, and how to make its next sync fail (error file)."""

    args: list[str]
    environ: dict[str, str]
    secrets: list[str]
    break_it: Callable[[], object]
    child_words: tuple[str, ...] = ("sleep",)  # children that must have been sampled


@dataclass
class Evidence:
    log: str = ""
    bodies: dict[str, bytes] = field(default_factory=dict)
    error_file: str = ""
    children: dict[tuple[int, bytes], bytes] = field(default_factory=dict)  # (pid, argv): env

    def places(self) -> Iterator[tuple[str, bytes]]:
        yield "log", self.log.encode()
        for path, body in self.bodies.items():
            yield f"GET {path}", body
        yield "error file", self.error_file.encode()
        for (pid, argv), environ in self.children.items():
            yield f"child {pid} cmdline {argv[:80]!r}", argv
            yield f"child {pid} environ", environ


class ChildSampler(threading.Thread):
    """Reads cmdline and environ of every descendant of ``pid`` until stopped."""

    def __init__(self, pid: int, evidence: Evidence) -> None:
        super().__init__(name="child-sampler", daemon=True)
        self.pid, self.evidence, self.stop = pid, evidence, threading.Event()

    def run(self) -> None:
        own = Path(f"/proc/{self.pid}/cmdline").read_bytes()
        while not self.stop.is_set():
            for child in descendants(self.pid):
                with contextlib.suppress(OSError):
                    argv = Path(f"/proc/{child}/cmdline").read_bytes()
                    environ = Path(f"/proc/{child}/environ").read_bytes()
                    # Between fork and exec a child is still a copy of dagsync (its argv and
                    # environment are the user's); what it execs is what is checked.
                    if argv and argv != own:
                        self.evidence.children.setdefault((child, argv), environ)
            self.stop.wait(0.005)


def forms(secret: str) -> set[bytes]:
    """The secret as it could leak: verbatim, URL-encoded (both ways), base64."""
    raw = secret.encode()
    return {
        raw,
        quote(secret, safe="").encode(),
        quote_plus(secret).encode(),
        base64.b64encode(raw),
    }


def fetch(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> bytes:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return bytes(reply.read())
    except urllib.error.HTTPError as exc:
        return bytes(exc.read())


def exercise(channel: Channel, tmp_path: Path) -> Evidence:
    """``dagsync run`` with this channel, through a publish, both kinds of trigger, a failing
    sync and every endpoint; then stopped. Returns everything that was readable."""
    root, log, error_file = tmp_path / "root", tmp_path / "dagsync.log", tmp_path / "error.json"
    trigger_file = tmp_path / "trigger-secret"
    trigger_file.write_text(TRIGGER + "\n")
    port = free_port()
    evidence = Evidence()
    proc = start_dagsync(
        "run", *channel.args, "--root", root, "--period", "1s", "--log-level", "debug",
        "--http-bind", f"127.0.0.1:{port}", "--trigger-secret-file", trigger_file,
        "--error-file", error_file, "--check", "cmd:sleep 0.3",
        "--exechook-command", "sleep 0.3", env=channel.environ, log=log,
    )  # fmt: skip
    sampler = ChildSampler(proc.pid, evidence)
    sampler.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: (root / "current").is_symlink(), WAIT_SECONDS, "the first publish")
        fetch(f"{base}/sync", b"{}", {"Authorization": f"Bearer {TRIGGER}"})
        fetch(f"{base}/sync", b"{}", {"Authorization": f"Bearer wrong-{MARK}"})
        channel.break_it()
        wait_for(error_file.exists, WAIT_SECONDS, "a failed sync writing the error file")
        evidence.error_file = error_file.read_text()
        for path in ENDPOINTS:
            evidence.bodies[path] = fetch(base + path)
        # dagsync's own argv is what the user gave it, unchanged (nothing added or rewritten).
        own = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")[:-1]
        assert own == [os.fsencode(a) for a in proc.args], own  # type: ignore[union-attr]
    finally:
        terminate(proc)
        sampler.stop.set()
        sampler.join()
        evidence.log = log.read_text(errors="replace")
    return evidence


def assert_no_secret_anywhere(channel: Channel, evidence: Evidence) -> None:
    secrets = [*channel.secrets, TRIGGER]
    hits = [
        (where, secret)
        for where, text in evidence.places()
        for secret in secrets
        for form in forms(secret)
        if form in text
    ]
    hits += [(where, MARK) for where, text in evidence.places() if MARK.encode() in text]
    assert hits == [], hits
    searched = sum(len(text) for _where, text in evidence.places())
    names = sorted(
        {argv.split(b"\0")[0].decode(errors="replace") for _p, argv in evidence.children}
    )
    print(
        f"\nsecrets {len(secrets)}: {len(evidence.children)} child processes sampled "
        f"({', '.join(names)}), {len(evidence.bodies)} endpoints, {searched} bytes searched, 0 hits"
    )
    seen = b" ".join(argv for _pid, argv in evidence.children)
    for word in channel.child_words:  # the sampler did see the children that hold secrets
        assert word.encode() in seen, (word, seen[:2000])
    assert "sync failed" in evidence.log and "published revision=" in evidence.log


# -- git ------------------------------------------------------------------------------------------

USER = "ci-bot"
GIT_PASSWORD = f"git-pw-{MARK}-8d7c"


@pytest.fixture
def git_server(git_served_root: Path, hermetic_git_env: dict[str, str]) -> Iterator[GitHttpServer]:
    # A little delay per request keeps git and its helpers alive long enough to be sampled.
    with GitHttpServer(
        git_served_root, hermetic_git_env, username=USER, password=GIT_PASSWORD, delay=0.2
    ) as server:
        yield server


def test_git_password_file(
    git_repo: Repo, git_server: GitHttpServer, hermetic_git_env: dict[str, str], tmp_path: Path
) -> None:
    password_file = tmp_path / "password"
    password_file.write_text(GIT_PASSWORD + "\n")
    channel = Channel(
        ["--repo", git_server.url_for(git_repo.bare_path), "--username", USER,
         "--password-file", str(password_file)],
        client_env(hermetic_git_env, tmp_path / "home"),
        [GIT_PASSWORD, f"rotated-{MARK}-wrong"],
        lambda: password_file.write_text(f"rotated-{MARK}-wrong\n"),
        child_words=("sleep", "git"),
    )  # fmt: skip
    assert_no_secret_anywhere(channel, exercise(channel, tmp_path))


def test_git_url_user_info(
    git_repo: Repo, git_server: GitHttpServer, hermetic_git_env: dict[str, str], tmp_path: Path
) -> None:
    # The form charts often use: https://user:TOKEN@host/repo.git. The token must not reach
    # git's argv (ls-remote, fetch) or environment; it is passed as --password-file is.
    url = git_server.url_for(git_repo.bare_path, USER, GIT_PASSWORD)
    channel = Channel(
        ["--repo", url],
        client_env(hermetic_git_env, tmp_path / "home"),
        [GIT_PASSWORD],
        lambda: git_server.__setattr__("password", f"server-side-{MARK}"),  # now it is wrong
        child_words=("sleep", "git"),
    )
    assert_no_secret_anywhere(channel, exercise(channel, tmp_path))


# -- OSS ------------------------------------------------------------------------------------------

OSS_KEY_ID = "LTAI5tSecretsKeyId"
OSS_SECRET = f"oss-secret-{MARK}-41a9"
STS_TOKEN = f"STS.token-{MARK}-77e1"
BUCKET = "dags"


@pytest.fixture
def oss() -> Iterator[FakeOss]:
    with FakeOss(OSS_KEY_ID, OSS_SECRET, STS_TOKEN) as fake:
        fake.put(BUCKET, "dags/a.py", b"a = 1\n")
        fake.latency = 0.05
        yield fake


def oss_args(fake: FakeOss) -> list[str]:
    return ["--source", "oss", "--oss-endpoint", fake.endpoint, "--oss-bucket", BUCKET]


def test_oss_secret_and_sts_token_from_the_environment(oss: FakeOss, tmp_path: Path) -> None:
    environ = client_env(
        {"PATH": "/usr/bin:/bin", "OSS_ACCESS_KEY_ID": OSS_KEY_ID,
         "OSS_ACCESS_KEY_SECRET": OSS_SECRET, "OSS_SESSION_TOKEN": STS_TOKEN},
        tmp_path / "home",
    )  # fmt: skip
    channel = Channel(
        oss_args(oss),
        environ,
        [OSS_SECRET, STS_TOKEN],
        lambda: oss.set_credentials(OSS_KEY_ID, f"server-side-{MARK}", STS_TOKEN),
    )
    assert_no_secret_anywhere(channel, exercise(channel, tmp_path))


def test_oss_secret_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "oss-secret"
    secret_file.write_text(OSS_SECRET + "\n")
    with FakeOss(OSS_KEY_ID, OSS_SECRET) as fake:
        fake.put(BUCKET, "dags/a.py", b"a = 1\n")
        channel = Channel(
            [*oss_args(fake), "--oss-access-key-id", OSS_KEY_ID,
             "--oss-access-key-secret-file", str(secret_file)],
            client_env({"PATH": "/usr/bin:/bin"}, tmp_path / "home"),
            [OSS_SECRET, f"rotated-{MARK}-wrong"],
            lambda: secret_file.write_text(f"rotated-{MARK}-wrong\n"),
        )  # fmt: skip
        assert_no_secret_anywhere(channel, exercise(channel, tmp_path))


# -- Azure Files ----------------------------------------------------------------------------------

# A base64 account key that carries the mark in its text (64 characters, 48 bytes).
AZURE_KEY = f"AzureKey{MARK}" + "A" * (64 - len(f"AzureKey{MARK}") - 1) + "="
SHARE = "dags"


@pytest.fixture
def az() -> Iterator[FakeAzureFiles]:
    base64.b64decode(AZURE_KEY, validate=True)
    fake = FakeAzureFiles(key=AZURE_KEY)
    fake.start()
    fake.create_share(SHARE)
    fake.put(SHARE, "a.py", b"a = 1\n")
    try:
        yield fake
    finally:
        fake.close()


def azure_args(extra: list[str]) -> list[str]:
    return ["--source", "azure", "--azure-share", SHARE,
            "--source-option", "retry_backoff=0.05", *extra]  # fmt: skip


def test_azure_account_key_file(az: FakeAzureFiles, tmp_path: Path) -> None:
    key_file = tmp_path / "account-key"
    key_file.write_text(AZURE_KEY + "\n")
    wrong = base64.b64encode(f"wrong-{MARK}-key-0123456789ab".encode()).decode()
    channel = Channel(
        azure_args(["--azure-account-url", az.account_url,
                    "--azure-account-key-file", str(key_file)]),
        client_env({"PATH": "/usr/bin:/bin"}, tmp_path / "home"),
        [AZURE_KEY, wrong],
        lambda: key_file.write_text(wrong + "\n"),
    )  # fmt: skip
    assert_no_secret_anywhere(channel, exercise(channel, tmp_path))


def test_azure_sas_token_file(az: FakeAzureFiles, tmp_path: Path) -> None:
    sas = az.make_sas(SHARE)
    signature = dict(p.split("=", 1) for p in sas.lstrip("?").split("&"))["sig"]
    sas_file = tmp_path / "sas"
    sas_file.write_text(sas + "\n")
    channel = Channel(
        azure_args(["--azure-account-url", az.account_url, "--azure-sas-token-file",
                    str(sas_file)]),
        client_env({"PATH": "/usr/bin:/bin"}, tmp_path / "home"),
        [sas, signature],
        lambda: sas_file.write_text(sas.replace(signature, quote(f"x{MARK}x", safe="")) + "\n"),
    )  # fmt: skip
    assert_no_secret_anywhere(channel, exercise(channel, tmp_path))


def test_azure_connection_string(az: FakeAzureFiles, tmp_path: Path) -> None:
    environ = client_env(
        {"PATH": "/usr/bin:/bin", "AZURE_STORAGE_CONNECTION_STRING": az.connection_string},
        tmp_path / "home",
    )
    channel = Channel(
        azure_args([]),
        environ,
        [az.connection_string, AZURE_KEY],
        lambda: az.rotate_key(base64.b64encode(b"rotated-key-0123456789abcdef").decode()),
    )
    assert_no_secret_anywhere(channel, exercise(channel, tmp_path))
