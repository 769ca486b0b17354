"""The azure source, driven through the real SDK against FakeAzureFiles (tests/fakes).

User-visible behaviour goes through the CLI as a subprocess (``python -m dagsync once``);
internals a user cannot reach (a file changing between listing and download, key rotation in a
long-running process, listing concurrency) are driven in-process through the source itself.
"""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from dagsync import cli
from dagsync.config import Config, load
from dagsync.errors import SourceError, UnsafePath
from dagsync.sources.azure import CHUNK_BYTES, AzureSource
from dagsync.store import RevisionStore
from dagsync.syncer import Syncer
from tests.fakes.azure_server import FakeAzureFiles

SHARE = "dags"
OTHER_KEY = "a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U="
# Zero backoff keeps retry tests fast without changing what is retried.
FAST = ("--source-option", "retry_backoff=0")


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def __str__(self) -> str:
        return f"exit {self.returncode}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


@pytest.fixture
def az() -> Iterator[FakeAzureFiles]:
    with FakeAzureFiles() as fake:
        fake.create_share(SHARE)
        yield fake


def base_env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DAGSYNC_", "AZURE_", "GITSYNC_", "GIT_SYNC_"))
    }


def dagsync_once(
    az: FakeAzureFiles,
    root: Path,
    *args: str,
    env: dict[str, str] | None = None,
    connection_string: bool = True,
) -> Run:
    """``dagsync once --source azure`` as a user runs it (credentials from the environment)."""
    environ = base_env() if env is None else env
    if connection_string:
        environ["AZURE_STORAGE_CONNECTION_STRING"] = az.connection_string
    argv = [sys.executable, "-m", "dagsync", "once", "--source", "azure"]
    argv += ["--azure-share", SHARE, "--root", str(root), *FAST, *args]
    started = time.monotonic()
    proc = subprocess.run(argv, env=environ, capture_output=True, text=True, timeout=60)
    return Run(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)


def published_dir(root: Path) -> Path | None:
    link = root / "current"
    return (root / os.readlink(link)).resolve() if link.is_symlink() else None


def tree(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def put_all(az: FakeAzureFiles, files: dict[str, bytes], under: str = "") -> None:
    for path, data in files.items():
        az.put(SHARE, f"{under}{path}", data)


def config_for(az: FakeAzureFiles, root: Path, **flags: object) -> Config:
    env = {"AZURE_STORAGE_CONNECTION_STRING": az.connection_string}
    if flags.pop("no_connection_string", False):
        env = {}
    given = {
        "source": "azure",
        "azure_share": SHARE,
        "root": str(root),
        "source_option": ["retry_backoff=0"],
        **flags,
    }
    return load("once", given, env)


# -- what is published --------------------------------------------------------------------------
def test_publishes_a_deep_tree_with_unicode_space_empty_and_large_files(
    az: FakeAzureFiles, tmp_path: Path
) -> None:
    big = random.Random(5).randbytes(5 * 1024 * 1024)
    files = {
        "dag_a.py": b"print('a')\n",
        "Grüße dir/ñ file.py": "# ünïcödé\n".encode(),
        "with space/a b.py": b"x = 1\n",
        "empty.py": b"",
        "data/big.bin": big,
        "l1/l2/l3/l4/l5/l6/deep.py": b"deep = True\n",
    }
    put_all(az, files, under="team/dags/")
    az.put(SHARE, "team/other.py", b"outside --azure-path")
    az.mkdir(SHARE, "team/dags/empty_dir")

    run = dagsync_once(az, tmp_path / "root", "--azure-path", "team/dags")

    assert run.returncode == 0, run
    folder = published_dir(tmp_path / "root")
    assert folder is not None
    assert tree(folder) == files
    for path in folder.rglob("*"):
        expected = 0o755 if path.is_dir() else 0o644
        assert path.stat().st_mode & 0o777 == expected, path
    # The 5 MB file came in CHUNK_BYTES ranges (memory stays flat), nothing larger.
    big_gets = [r for r in az.requests if r.kind == "get" and r.path.endswith("/big.bin")]
    assert len(big_gets) == -(-len(big) // CHUNK_BYTES) == 2
    assert [r.headers["x-ms-range"] for r in big_gets] == [
        f"bytes=0-{CHUNK_BYTES - 1}",
        f"bytes={CHUNK_BYTES}-{len(big) - 1}",
    ]
    assert az.count("head") == 0  # the stored MD5 rides on the GETs, no HEAD per file
    status = json.loads(
        subprocess.run(
            [sys.executable, "-m", "dagsync", "status", "--root", str(tmp_path / "root")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert status["revision"] == folder.name and status["source"] == "azure"


def test_more_than_1000_files_across_directories_come_page_by_page(
    az: FakeAzureFiles, tmp_path: Path
) -> None:
    files = {f"d{d}/f{i:04d}.py": f"{d}/{i}\n".encode() for d in range(3) for i in range(350)}
    files.update({f"top{i}.py": b"t" for i in range(10)})
    put_all(az, files)

    run = dagsync_once(az, tmp_path / "root", "--source-option", "page_size=100")

    assert run.returncode == 0, run
    folder = published_dir(tmp_path / "root")
    assert folder is not None and tree(folder) == files
    lists = [r for r in az.requests if r.kind == "list"]
    assert {r.query.get("maxresults") for r in lists} == {"100"}
    assert sum("marker" in r.query for r in lists) == 3 * 3  # 350 entries: 4 pages, 3 markers
    assert az.count("get") == len(files)


def test_listing_walks_directories_concurrently(az: FakeAzureFiles, tmp_path: Path) -> None:
    for d in range(24):
        az.put(SHARE, f"a/b{d % 4}/c{d}/x.py", b"x")
    az.latency = 0.05
    source = AzureSource(config_for(az, tmp_path / "root", concurrency="8"), tmp_path)
    try:
        started = time.monotonic()
        objects = source.list_objects(time.monotonic() + 30)
        elapsed = time.monotonic() - started
    finally:
        source.close()
    assert len(objects) == 24
    lists = az.count("list")
    assert lists == 1 + 1 + 4 + 24
    # In series: 30 x 50 ms = 1.5 s. Level by level with 8 threads: 4 levels (the 24 leaves in
    # 3 rounds) = 6 round trips = 0.3 s; allow plenty for a slow machine.
    assert elapsed < 0.5 * lists * az.latency, elapsed


def test_subpath_lists_only_that_folder(az: FakeAzureFiles, tmp_path: Path) -> None:
    put_all(az, {"base/keep/a.py": b"a", "base/keep/sub/b.py": b"b", "base/skip/c.py": b"c"})
    run = dagsync_once(az, tmp_path / "root", "--azure-path", "base", "--subpath", "keep")
    assert run.returncode == 0, run
    folder = published_dir(tmp_path / "root")
    assert folder is not None and tree(folder) == {"a.py": b"a", "sub/b.py": b"b"}
    assert not any("skip" in r.path for r in az.requests)


# -- incremental syncs --------------------------------------------------------------------------
def test_resync_without_change_only_lists_and_keeps_the_revision(
    az: FakeAzureFiles, tmp_path: Path
) -> None:
    put_all(az, {f"d{i % 3}/f{i}.py": b"x" * i for i in range(30)})
    root = tmp_path / "root"
    assert dagsync_once(az, root).returncode == 0
    first = published_dir(root)
    assert first is not None
    before = first.stat().st_mtime_ns
    az.clear_requests()

    run = dagsync_once(az, root)

    assert run.returncode == 0, run
    assert {r.kind for r in az.requests} == {"list"}
    assert az.count("list") == 4
    assert published_dir(root) == first and first.stat().st_mtime_ns == before


def test_changing_one_of_200_files_downloads_one_and_keeps_the_other_inodes(
    az: FakeAzureFiles, tmp_path: Path
) -> None:
    files = {f"team{i % 5}/dag_{i:03d}.py": f"v1 {i}\n".encode() for i in range(200)}
    put_all(az, files)
    root = tmp_path / "root"
    assert dagsync_once(az, root).returncode == 0
    first = published_dir(root)
    assert first is not None
    inodes = {p: (first / p).stat().st_ino for p in files}
    az.put(SHARE, "team3/dag_003.py", b"v2\n")
    az.clear_requests()

    run = dagsync_once(az, root)

    assert run.returncode == 0, run
    second = published_dir(root)
    assert second is not None and second != first
    gets = [r for r in az.requests if r.kind == "get"]
    assert [r.path.rsplit("/", 2)[-2:] for r in gets] == [["team3", "dag_003.py"]]
    assert {r.kind for r in az.requests} == {"list", "get"}
    assert (second / "team3/dag_003.py").read_bytes() == b"v2\n"
    kept = {p for p in files if (second / p).stat().st_ino == inodes[p]}
    assert kept == set(files) - {"team3/dag_003.py"}


def test_a_deleted_file_disappears_from_the_next_revision(
    az: FakeAzureFiles, tmp_path: Path
) -> None:
    put_all(az, {"a.py": b"a", "sub/b.py": b"b", "sub/c.py": b"c"})
    root = tmp_path / "root"
    assert dagsync_once(az, root).returncode == 0
    az.delete(SHARE, "sub/b.py")

    run = dagsync_once(az, root)

    assert run.returncode == 0, run
    folder = published_dir(root)
    assert folder is not None and tree(folder) == {"a.py": b"a", "sub/c.py": b"c"}
    assert az.count("get") == 3  # nothing downloaded the second time


def test_a_file_changed_after_listing_fails_the_sync_and_the_next_one_publishes(
    az: FakeAzureFiles, tmp_path: Path
) -> None:
    az.put(SHARE, "a.py", b"v1")
    config = config_for(az, tmp_path / "root")
    store = RevisionStore(config.root, config.link)
    store.prepare()
    source = AzureSource(config, tmp_path / "cache")
    try:
        plan = source.resolve(time.monotonic() + 30)
        az.put(SHARE, "a.py", b"v2 longer")
        with pytest.raises(SourceError, match="changed .* since it was listed"):
            source.fetch(plan, store.new_staging(), None, time.monotonic() + 30)
        result = Syncer(config, source, store).run_pass()
    finally:
        source.close()
    assert result.result == "published", result
    assert result.published is not None
    assert (result.published.path / "a.py").read_bytes() == b"v2 longer"


# -- verification and faults --------------------------------------------------------------------
@pytest.mark.parametrize("fault", ["500", "503", "reset"])
def test_transient_failures_then_success_publish(
    az: FakeAzureFiles, tmp_path: Path, fault: str
) -> None:
    put_all(az, {"a.py": b"a", "sub/b.py": b"b" * 1000})
    if fault == "reset":
        az.reset_next(1, kind="list")
        az.reset_next(2, kind="get")
    else:
        az.fail_next(2, int(fault), kind="list")
        # More than the SDK's own 3 retries: dagsync's retry takes over.
        az.fail_next(6, int(fault), kind="get")

    run = dagsync_once(az, tmp_path / "root")

    assert run.returncode == 0, run
    folder = published_dir(tmp_path / "root")
    assert folder is not None and tree(folder) == {"a.py": b"a", "sub/b.py": b"b" * 1000}


def test_a_truncated_body_is_retried(az: FakeAzureFiles, tmp_path: Path) -> None:
    data = random.Random(1).randbytes(200_000)
    az.put(SHARE, "f.bin", data)
    az.truncate_next_get(2)

    run = dagsync_once(az, tmp_path / "root")

    assert run.returncode == 0, run
    folder = published_dir(tmp_path / "root")
    assert folder is not None and (folder / "f.bin").read_bytes() == data
    assert az.count("get") == 3
    assert "retrying" in run.stderr


def test_a_body_that_stays_truncated_is_never_published(az: FakeAzureFiles, tmp_path: Path) -> None:
    az.put(SHARE, "ok.py", b"fine")
    az.put(SHARE, "f.bin", os.urandom(100_000))
    az.truncate_next_get(1000)

    run = dagsync_once(az, tmp_path / "root", "--sync-timeout", "2s")

    assert run.returncode == 1, run
    assert "f.bin" in run.stderr or "ok.py" in run.stderr
    assert published_dir(tmp_path / "root") is None
    assert not list((tmp_path / "root/.dagsync/staging").iterdir())


def test_a_stale_content_md5_is_refused(az: FakeAzureFiles, tmp_path: Path) -> None:
    az.put(SHARE, "a.py", b"fresh", content_md5=b"\0" * 16)
    run = dagsync_once(az, tmp_path / "root")
    assert run.returncode == 1, run
    assert "a.py" in run.stderr and "Content-MD5" in run.stderr
    assert published_dir(tmp_path / "root") is None


def test_files_without_a_stored_md5_are_published(az: FakeAzureFiles, tmp_path: Path) -> None:
    az.put(SHARE, "a.py", b"no md5", store_md5=False)
    assert dagsync_once(az, tmp_path / "root").returncode == 0


@pytest.mark.parametrize("name", ["..", "a\\..\\b.py"])
def test_a_name_that_would_escape_the_tree_is_refused(
    az: FakeAzureFiles, tmp_path: Path, name: str
) -> None:
    # The real service forbids these names; the fake stores them, as a hostile or broken
    # endpoint could. The shared path safety of manifest.safe_path is tested on its own too.
    az.put(SHARE, "good.py", b"x")
    az.put(SHARE, f"dags/{name}/evil.py" if name == ".." else f"dags/{name}", b"evil")

    run = dagsync_once(az, tmp_path / "root")

    assert run.returncode == 1, run
    assert "refusing" in run.stderr and "dags/.." in run.stderr or "a\\\\..\\\\b.py" in run.stderr
    assert published_dir(tmp_path / "root") is None
    assert az.count("get") == 0


def test_a_slow_service_is_abandoned_at_the_sync_timeout(
    az: FakeAzureFiles, tmp_path: Path
) -> None:
    az.put(SHARE, "a.py", b"a")
    az.latency = 10.0

    run = dagsync_once(az, tmp_path / "root", "--sync-timeout", "1s")

    assert run.returncode == 1, run
    assert "sync-timeout" in run.stderr
    # Given up well before the service's first answer (10 s), not waited out: the margin holds
    # interpreter start-up on a loaded CI machine (3.5 s was exceeded at a load average of 28).
    assert run.seconds < 8.0, run.seconds


def test_a_missing_share_or_directory_is_named(az: FakeAzureFiles, tmp_path: Path) -> None:
    run = dagsync_once(az, tmp_path / "root", "--azure-path", "nope")
    assert run.returncode == 1, run
    assert "not found" in run.stderr and "'dags'" in run.stderr and "nope" in run.stderr


def test_proxy_variables_are_still_honoured(az: FakeAzureFiles, tmp_path: Path) -> None:
    # requests' per-request environment lookup is resolved once per client (it cost a quarter
    # of the CPU of a small download); the variables must keep their meaning.
    az.put(SHARE, "a.py", b"a")
    dead_proxy = {"HTTP_PROXY": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}
    env = {**base_env(), **dead_proxy}
    env.pop("NO_PROXY", None)
    env.pop("no_proxy", None)

    through_proxy = dagsync_once(az, tmp_path / "r1", "--sync-timeout", "2s", env=env)
    assert through_proxy.returncode == 1, through_proxy
    assert az.count() == 0  # it went to the (dead) proxy

    bypassed = dagsync_once(az, tmp_path / "r2", env={**env, "NO_PROXY": "127.0.0.1"})
    assert bypassed.returncode == 0, bypassed


# -- credentials ----------------------------------------------------------------------------------
def key_file(tmp_path: Path, key: str) -> Path:
    path = tmp_path / "secrets" / "azure-key"
    path.parent.mkdir(exist_ok=True)
    path.write_text(key + "\n")
    return path


def sas_file(tmp_path: Path, token: str) -> Path:
    path = tmp_path / "secrets" / "azure-sas"
    path.parent.mkdir(exist_ok=True)
    path.write_text(token + "\n")
    return path


@pytest.mark.parametrize("route", ["key", "sas", "sas-with-question-mark"])
def test_account_url_with_key_or_sas_file_publishes(
    az: FakeAzureFiles, tmp_path: Path, route: str
) -> None:
    az.put(SHARE, "dags/a.py", b"a")
    if route == "key":
        secret = ["--azure-account-key-file", str(key_file(tmp_path, az.key))]
    else:
        prefix = "?" if route.endswith("mark") else ""
        secret = ["--azure-sas-token-file", str(sas_file(tmp_path, prefix + az.make_sas(SHARE)))]

    run = dagsync_once(
        az,
        tmp_path / "root",
        "--azure-account-url",
        az.account_url,
        *secret,
        "--log-level",
        "debug",
        connection_string=False,
    )

    assert run.returncode == 0, run
    folder = published_dir(tmp_path / "root")
    assert folder is not None and tree(folder) == {"dags/a.py": b"a"}


def test_a_wrong_key_fails_fast_with_a_clear_error(az: FakeAzureFiles, tmp_path: Path) -> None:
    az.put(SHARE, "a.py", b"a")
    run = dagsync_once(
        az,
        tmp_path / "root",
        "--azure-account-url",
        az.account_url,
        "--azure-account-key-file",
        str(key_file(tmp_path, OTHER_KEY)),
        connection_string=False,
    )
    assert run.returncode == 1, run
    assert "access denied" in run.stderr and "403 AuthenticationFailed" in run.stderr
    assert f"'{SHARE}'" in run.stderr and az.account_url in run.stderr
    assert "account key" in run.stderr
    assert OTHER_KEY not in run.output
    assert published_dir(tmp_path / "root") is None
    assert az.count("list") == 1  # not retried


@pytest.mark.parametrize("kind", ["expired", "read-only", "other-share"])
def test_an_expired_or_insufficient_sas_fails_with_a_clear_error(
    az: FakeAzureFiles, tmp_path: Path, kind: str
) -> None:
    from datetime import UTC, datetime, timedelta

    az.put(SHARE, "a.py", b"a")
    az.create_share("other")
    token = {
        "expired": lambda: az.make_sas(SHARE, expiry=datetime.now(UTC) - timedelta(minutes=5)),
        "read-only": lambda: az.make_sas(SHARE, "r"),
        "other-share": lambda: az.make_sas("other"),
    }[kind]()
    run = dagsync_once(
        az,
        tmp_path / "root",
        "--azure-account-url",
        az.account_url,
        "--azure-sas-token-file",
        str(sas_file(tmp_path, token)),
        connection_string=False,
    )
    assert run.returncode == 1, run
    assert "access denied" in run.stderr and "SAS token" in run.stderr, run
    assert published_dir(tmp_path / "root") is None
    sig = token.split("sig=")[1].split("&")[0]
    assert sig not in run.output and token not in run.output


def test_a_rotated_key_file_is_picked_up_by_the_next_pass(
    az: FakeAzureFiles, tmp_path: Path
) -> None:
    az.put(SHARE, "a.py", b"a")
    path = key_file(tmp_path, OTHER_KEY)
    config = config_for(
        az,
        tmp_path / "root",
        no_connection_string=True,
        azure_account_url=az.account_url,
        azure_account_key_file=str(path),
    )
    source = AzureSource(config, tmp_path / "cache")
    try:
        with pytest.raises(SourceError, match="access denied"):
            source.resolve(time.monotonic() + 30)
        path.write_text(az.key)  # the secret is rotated in place (or its symlink swapped)
        plan = source.resolve(time.monotonic() + 30)
        assert plan.manifest is not None and [e.path for e in plan.manifest.entries] == ["a.py"]
        path.write_text("not base64!")
        with pytest.raises(SourceError, match="base64"):
            source.resolve(time.monotonic() + 30)
    finally:
        source.close()


def test_a_rotated_sas_file_is_picked_up_by_the_next_pass(
    az: FakeAzureFiles, tmp_path: Path
) -> None:
    from datetime import UTC, datetime, timedelta

    az.put(SHARE, "a.py", b"a")
    path = sas_file(tmp_path, az.make_sas(SHARE, expiry=datetime.now(UTC) - timedelta(hours=1)))
    config = config_for(
        az,
        tmp_path / "root",
        no_connection_string=True,
        azure_account_url=az.account_url,
        azure_sas_token_file=str(path),
    )
    source = AzureSource(config, tmp_path / "cache")
    try:
        with pytest.raises(SourceError, match="access denied"):
            source.resolve(time.monotonic() + 30)
        path.write_text(az.make_sas(SHARE))
        assert source.resolve(time.monotonic() + 30).manifest is not None
    finally:
        source.close()


@pytest.mark.parametrize(
    ("args", "env", "flag"),
    [
        ([], {"AZURE_STORAGE_CONNECTION_STRING": "x"}, "--azure-share"),
        (["--azure-share", SHARE], {}, "AZURE_STORAGE_CONNECTION_STRING"),
        (["--azure-share", SHARE, "--azure-account-url", "http://h/a"], {}, "key-file"),
        (
            ["--azure-share", SHARE, "--azure-account-key-file", "{key}"],
            {},
            "--azure-account-url",
        ),
        (
            [
                "--azure-share",
                SHARE,
                "--azure-account-url",
                "http://h/a",
                "--azure-account-key-file",
                "{key}",
                "--azure-sas-token-file",
                "{key}",
            ],
            {},
            "give only one",
        ),
        (
            ["--azure-share", SHARE, "--azure-account-url", "http://h/a"],
            {"AZURE_STORAGE_CONNECTION_STRING": "AccountName=a;AccountKey=b"},
            "not both",
        ),
        (
            [
                "--azure-share",
                SHARE,
                "--azure-account-url",
                "http://h/a",
                "--azure-account-key-file",
                "{missing}",
            ],
            {},
            "--azure-account-key-file: cannot read",
        ),
        (
            [
                "--azure-share",
                SHARE,
                "--azure-account-url",
                "http://h/a",
                "--azure-account-key-file",
                "{notkey}",
            ],
            {},
            "does not hold a base64 account key",
        ),
        (
            [
                "--azure-share",
                SHARE,
                "--azure-account-url",
                "h/a",
                "--azure-sas-token-file",
                "{key}",
            ],
            {},
            "--azure-account-url: expected https://",
        ),
        (
            [
                "--azure-share",
                SHARE,
                "--azure-account-url",
                "https://a.file.core.windows.net/?sv=1&sig=c2VjcmV0c2ln",
                "--azure-sas-token-file",
                "{key}",
            ],
            {},
            "must not carry a query",
        ),
        (["--azure-share", SHARE], {"AZURE_STORAGE_CONNECTION_STRING": "garbage"}, "malformed"),
        (
            ["--azure-share", SHARE, "--source-option", "page_size=0"],
            {"AZURE_STORAGE_CONNECTION_STRING": "AccountName=a;AccountKey=YWJj"},
            "page_size",
        ),
    ],
)
def test_bad_configuration_exits_2_before_any_request(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: Sequence[str],
    env: dict[str, str],
    flag: str,
) -> None:
    paths = {
        "key": key_file(tmp_path, "YWJj"),
        "missing": tmp_path / "missing",
        "notkey": sas_file(tmp_path, "sv=1&sig=c2VjcmV0c2ln"),
    }
    argv = ["once", "--source", "azure", "--root", str(tmp_path / "root")]
    argv += [a.format(**paths) for a in args]

    code = cli.main(argv, env)

    err = capsys.readouterr().err
    assert code == 2, err
    assert flag in err and err.count("\n") == 1, err
    assert "c2VjcmV0c2ln" not in err and "YWJj" not in err
    assert not (tmp_path / "root/current").exists()


# -- no credential in any output ----------------------------------------------------------------
@pytest.mark.parametrize("route", ["connection-string", "key", "sas"])
@pytest.mark.parametrize("outcome", ["ok", "denied", "truncated"])
def test_no_credential_appears_in_any_output(
    az: FakeAzureFiles, tmp_path: Path, route: str, outcome: str
) -> None:
    az.put(SHARE, "dags/a.py", b"a" * 5000)
    root = tmp_path / "root"
    args = ["--log-level", "debug", "--error-file", "error.json"]
    secrets: list[str] = []
    if route == "connection-string":
        secrets += [az.connection_string, az.key]
    elif route == "key":
        key = OTHER_KEY if outcome == "denied" else az.key
        args += ["--azure-account-url", az.account_url]
        args += ["--azure-account-key-file", str(key_file(tmp_path, key))]
        secrets += [key]
    else:
        token = az.make_sas(SHARE, "r" if outcome == "denied" else "rl")
        args += ["--azure-account-url", az.account_url]
        args += ["--azure-sas-token-file", str(sas_file(tmp_path, token))]
        secrets += [token, token.split("sig=")[1].split("&")[0]]
    env = base_env()
    if route == "connection-string":
        env["AZURE_STORAGE_CONNECTION_STRING"] = (
            az.connection_string.replace(az.key, OTHER_KEY)
            if outcome == "denied"
            else az.connection_string
        )
        secrets = [env["AZURE_STORAGE_CONNECTION_STRING"], OTHER_KEY, az.key]
    if outcome == "truncated":
        az.truncate_next_get(1000)
        args += ["--sync-timeout", "2s"]  # the retries give up when the next wait would not fit

    run = dagsync_once(az, root, *args, env=env, connection_string=False)

    assert run.returncode == (0 if outcome == "ok" else 1), run
    written = [run.stdout, run.stderr]
    if (root / "error.json").exists():
        written.append((root / "error.json").read_text())
    status = subprocess.run(
        [sys.executable, "-m", "dagsync", "status", "--root", str(root)],
        capture_output=True,
        text=True,
    )
    written += [status.stdout, status.stderr]
    for text in written:
        for secret in secrets:
            assert secret not in text, (secret, text)


def test_json_logs_at_debug_carry_no_credential(az: FakeAzureFiles, tmp_path: Path) -> None:
    az.put(SHARE, "a.py", b"a")
    token = az.make_sas(SHARE)
    run = dagsync_once(
        az,
        tmp_path / "root",
        "--log-level",
        "debug",
        "--log-format",
        "json",
        "--azure-account-url",
        az.account_url,
        "--azure-sas-token-file",
        str(sas_file(tmp_path, token)),
        connection_string=False,
    )
    assert run.returncode == 0, run
    sig = token.split("sig=")[1].split("&")[0]
    assert sig not in run.output and token not in run.output
    for line in run.stderr.splitlines():
        json.loads(line)


def test_the_sdk_request_logger_is_kept_quiet() -> None:
    http_logger = logging.getLogger("azure.core.pipeline.policies.http_logging_policy")
    assert http_logger.level == logging.WARNING


def test_names_the_fake_could_hold_are_checked_before_the_manifest(
    az: FakeAzureFiles, tmp_path: Path
) -> None:
    az.put(SHARE, "ok/../../x.py", b"x")  # a directory literally named ".." under "ok"
    source = AzureSource(config_for(az, tmp_path / "root"), tmp_path / "cache")
    try:
        with pytest.raises(UnsafePath) as info:
            source.resolve(time.monotonic() + 30)
    finally:
        source.close()
    assert info.value.obj == "ok/.."


def test_only_service_and_transport_errors_are_retried() -> None:
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ResourceModifiedError,
        ResourceNotFoundError,
        ServiceResponseError,
    )

    from dagsync.errors import SyncTimeout
    from dagsync.sources.azure import _transient

    assert _transient(HttpResponseError("Download stream interrupted."))
    assert _transient(ServiceResponseError("connection reset"))
    for never in (
        ClientAuthenticationError("403"),
        ResourceNotFoundError("404"),
        ResourceModifiedError("etag moved"),
        SourceError("a.py: content does not match its stored Content-MD5"),
        UnsafePath("refusing '..'", ".."),
        SyncTimeout("listing exceeded --sync-timeout"),
        ValueError("a bug"),
    ):
        assert not _transient(never), never
