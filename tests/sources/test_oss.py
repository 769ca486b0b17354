"""The oss source beyond the shared contract: auth flavours, rotation, prefixes, verification,
deadlines, configuration errors and lazy imports. Real oss2 against tests/fakes/oss_server."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dagsync.errors import ConfigError, SourceError
from dagsync.sources.objectstore import RemoteObject
from tests.fakes.oss_server import FakeOss, RecordedRequest
from tests.sources.store_contract import (
    REPO,
    link_target,
    published_files,
    run_cli,
    run_pass,
    syncer_for,
)

KEY_ID = "LTAI5tOssTestKeyId"
SECRET = "OssTestSecret-2b7e151628"
TOKEN = "STS.OssTestSessionToken-a1b2c3d4e5"
BUCKET = "dags"
REGION = "cn-beijing"
ENV = {"OSS_ACCESS_KEY_ID": KEY_ID, "OSS_ACCESS_KEY_SECRET": SECRET}


@pytest.fixture
def oss() -> Iterator[FakeOss]:
    with FakeOss(access_key_id=KEY_ID, access_key_secret=SECRET) as fake:
        fake.create_bucket(BUCKET)
        yield fake


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "root"


def flags(fake: FakeOss, root: Path, **options: Any) -> dict[str, Any]:
    return {
        "source": "oss",
        "root": str(root),
        "oss_endpoint": fake.endpoint,
        "oss_bucket": BUCKET,
        **options,
    }


def gets(fake: FakeOss) -> list[RecordedRequest]:
    return [r for r in fake.requests if r.kind == "get"]


# -- authentication ----------------------------------------------------------------------------


@pytest.mark.parametrize("signing", ["v1", "v4"])
def test_signature_versions(signing: str, root: Path) -> None:
    # The fake insists on the region when set: a V4 scope for another region is refused.
    with FakeOss(KEY_ID, SECRET, region=REGION) as fake:
        fake.put(BUCKET, "dag.py", b"print(1)\n")
        options = {"oss_region": REGION} if signing == "v4" else {}

        result = run_pass(flags(fake, root, **options), ENV)

        assert result.result == "published", result.error
        assert published_files(root) == {"dag.py": b"print(1)\n"}
        if signing == "v4":
            wrong = run_pass(flags(fake, root, oss_region="cn-hangzhou"), ENV)
            assert wrong.result == "failed"
            assert "SignatureDoesNotMatch" in (wrong.error or "")


@pytest.mark.parametrize("signing", ["v1", "v4"])
def test_sts_session_token_from_the_environment(signing: str, tmp_path: Path) -> None:
    with FakeOss(KEY_ID, SECRET, security_token=TOKEN) as fake:
        fake.put(BUCKET, "dag.py", b"print(1)\n")
        options = {"oss_region": REGION} if signing == "v4" else {}
        sts_env = {**ENV, "OSS_SESSION_TOKEN": TOKEN}

        result = run_pass(flags(fake, tmp_path / "a", **options), sts_env)
        without_token = run_pass(flags(fake, tmp_path / "b", **options), ENV)

        assert result.result == "published", result.error
        assert without_token.result == "failed"
        assert "InvalidAccessKeyId" in (without_token.error or "")


def test_cli_sts_v4_prints_no_credential(tmp_path: Path) -> None:
    with FakeOss(KEY_ID, SECRET, security_token=TOKEN, region=REGION) as fake:
        fake.put(BUCKET, "dag.py", b"print(1)\n")
        root = tmp_path / "root"
        args = ["once", "--oss-endpoint", fake.endpoint, "--oss-bucket", BUCKET]
        args += ["--oss-region", REGION, "--root", str(root), "--log-level", "debug"]

        ok = run_cli(args, {**ENV, "OSS_SESSION_TOKEN": TOKEN})
        bad = run_cli(args, {**ENV, "OSS_SESSION_TOKEN": TOKEN + "-expired"})

        assert ok.returncode == 0, ok.stderr
        assert bad.returncode == 1
        assert "InvalidSecurityToken" in bad.stderr
        for proc in (ok, bad):
            for secret in (KEY_ID, SECRET, TOKEN):
                assert secret not in proc.stdout + proc.stderr


def test_unknown_key_id_fails_fast_naming_bucket_and_endpoint(oss: FakeOss, root: Path) -> None:
    oss.put(BUCKET, "dag.py", b"x")

    result = run_pass(flags(oss, root), {**ENV, "OSS_ACCESS_KEY_ID": "LTAI5tSomebodyElse"})

    assert result.result == "failed"
    error = result.error or ""
    assert "InvalidAccessKeyId" in error and "access denied" in error
    assert f"oss://{BUCKET}/" in error and oss.endpoint in error
    assert SECRET not in error
    assert oss.count(kind="list") == 1  # a 403 is not retried
    assert link_target(root) is None


def test_secret_file_is_reread_when_it_changes(oss: FakeOss, tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    oss.put(BUCKET, "dag.py", b"v1")
    options = flags(
        oss, tmp_path / "root", oss_access_key_id=KEY_ID, oss_access_key_secret_file=secret_file
    )
    with syncer_for(options, {}) as syncer:
        assert syncer.run_pass().result == "published"

        rotated = "OssRotatedSecret-9c8d7e"
        oss.set_credentials(KEY_ID, rotated)
        oss.put(BUCKET, "dag.py", b"v2")
        stale = syncer.run_pass()
        secret_file.write_text(rotated)
        fresh = syncer.run_pass()

    assert stale.result == "failed" and "SignatureDoesNotMatch" in (stale.error or "")
    assert fresh.result == "published", fresh.error
    assert published_files(tmp_path / "root") == {"dag.py": b"v2"}


# -- configuration: one line, exit 2, before any network access --------------------------------


@pytest.mark.parametrize(
    ("options", "environ", "flag"),
    [
        ({"oss_endpoint": None}, ENV, "oss-endpoint"),
        ({"oss_bucket": None}, ENV, "oss-bucket"),
        ({"oss_bucket": "Not_A_Bucket"}, ENV, "oss-bucket"),
        ({"oss_endpoint": "ftp://example.com"}, ENV, "oss-endpoint"),
        ({}, {}, "oss-access-key-id"),
        ({}, {"OSS_ACCESS_KEY_ID": KEY_ID}, "oss-access-key-secret-file"),
        ({"oss_access_key_secret_file": "/nonexistent/secret"}, ENV, "oss-access-key-secret-file"),
    ],
)
def test_configuration_errors_name_the_flag(
    root: Path, options: dict[str, Any], environ: dict[str, str], flag: str
) -> None:
    base = {"oss_endpoint": "http://127.0.0.1:9", "oss_bucket": BUCKET}
    merged = {"source": "oss", "root": str(root), **base, **options}
    with pytest.raises(ConfigError) as caught, syncer_for(merged, environ):
        pass
    assert caught.value.option == flag
    assert f"--{flag}" in str(caught.value)


def test_cli_configuration_error_exits_2(tmp_path: Path) -> None:
    proc = run_cli(["once", "--source", "oss", "--oss-bucket", BUCKET], ENV)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "dagsync: error: --oss-endpoint is required with --source oss"
    ]


def test_missing_sdk_gives_an_install_hint(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        from importlib.abc import MetaPathFinder

        class NoOss2(MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "oss2" or name.startswith("oss2."):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
                return None

        sys.meta_path.insert(0, NoOss2())
        from dagsync.cli import main
        sys.exit(main(sys.argv[1:]))
        """
    )
    args = ["once", "--oss-endpoint", "http://127.0.0.1:9", "--oss-bucket", BUCKET]
    args += ["--root", str(tmp_path / "root")]
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        env={"PATH": "/usr/bin:/bin", **ENV},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "install dagsync[oss]" in proc.stderr


# -- what is listed and how it is read ---------------------------------------------------------


def test_prefix_is_a_folder_and_markers_are_skipped(oss: FakeOss, root: Path) -> None:
    for key, data in {
        "team/": b"",
        "team/dags/": b"",
        "team/dags/a.py": b"a",
        "team/dags/sub/": b"",
        "team/dags/sub/b.py": b"b",
        "team/dags-old/c.py": b"c",
        "team/dagsfile.py": b"d",
    }.items():
        oss.put(BUCKET, key, data)

    result = run_pass(flags(oss, root, oss_prefix="/team/dags"), ENV)

    assert result.result == "published", result.error
    assert published_files(root) == {"a.py": b"a", "sub/b.py": b"b"}
    listing = [r for r in oss.requests if r.kind == "list"]
    assert {r.query["prefix"] for r in listing} == {"team/dags/"}
    assert {r.query["max-keys"] for r in listing} == {"1000"}


def test_subpath_narrows_the_listing(oss: FakeOss, root: Path) -> None:
    oss.put(BUCKET, "p/dags/a.py", b"a")
    oss.put(BUCKET, "p/tools/t.py", b"t")

    result = run_pass(flags(oss, root, oss_prefix="p", subpath="dags"), ENV)

    assert result.result == "published", result.error
    assert published_files(root) == {"a.py": b"a"}
    assert {r.query["prefix"] for r in oss.requests if r.kind == "list"} == {"p/dags/"}


def test_multipart_objects_are_verified_by_crc(oss: FakeOss, root: Path) -> None:
    data = bytes(range(256)) * 4000
    stored = oss.put(BUCKET, "big.bin", data, part_size=300_000)
    assert stored.etag.strip('"').endswith("-4") and stored.content_md5 is None

    result = run_pass(flags(oss, root), ENV)

    assert result.result == "published", result.error
    assert published_files(root) == {"big.bin": data}


def test_truncated_large_object_resumes_with_a_range(oss: FakeOss, root: Path) -> None:
    data = bytes(range(256)) * 20_000  # 5 MB
    oss.put(BUCKET, "big.bin", data)
    oss.truncate_next_get(1)

    result = run_pass(flags(oss, root), ENV)

    assert result.result == "published", result.error
    assert published_files(root) == {"big.bin": data}
    assert len(gets(oss)) == 2


def test_object_replaced_after_listing_is_not_published(oss: FakeOss, root: Path) -> None:
    oss.put(BUCKET, "dag.py", b"listed version")
    replaced = []

    def replace_on_first_get(request: RecordedRequest) -> bool:
        if request.kind == "get" and not replaced:
            replaced.append(oss.put(BUCKET, "dag.py", b"replaced version!"))
        return False

    oss.fail_matching(replace_on_first_get)

    first = run_pass(flags(oss, root), ENV)
    second = run_pass(flags(oss, root), ENV)

    assert first.result == "failed"
    assert "dag.py" in (first.error or "") and "changed during the sync" in (first.error or "")
    assert second.result == "published"
    assert published_files(root) == {"dag.py": b"replaced version!"}


def test_persistent_server_errors_fail_within_the_deadline(oss: FakeOss, root: Path) -> None:
    oss.put(BUCKET, "dag.py", b"x")
    oss.fail_matching(lambda r: r.kind == "get", status=503, code="ServiceUnavailable")
    started = time.monotonic()

    result = run_pass(flags(oss, root, sync_timeout="2s"), ENV)

    assert time.monotonic() - started < 4
    assert result.result == "failed"
    assert "dag.py" in (result.error or "") and "ServiceUnavailable" in (result.error or "")
    assert 2 <= len(gets(oss)) <= 6


def test_a_failed_download_stops_the_others(oss: FakeOss, root: Path) -> None:
    for i in range(60):
        oss.put(BUCKET, f"f{i:02d}.py", b"x" * 1000)
    oss.latency = 0.05
    oss.corrupt_next_get(1)

    result = run_pass(flags(oss, root, concurrency=4), ENV)

    assert result.result == "failed" and "CRC-64 mismatch" in (result.error or "")
    assert len(gets(oss)) < 20  # the queued downloads were cancelled, not all 60 made
    assert list((root / ".dagsync" / "staging").iterdir()) == []


def test_a_slow_service_is_bounded_by_the_sync_timeout(oss: FakeOss, root: Path) -> None:
    oss.put(BUCKET, "dag.py", b"x")
    oss.latency = 5.0
    started = time.monotonic()

    result = run_pass(flags(oss, root, sync_timeout="1s"), ENV)

    assert time.monotonic() - started < 3
    assert result.result == "failed"
    assert link_target(root) is None


def test_content_md5_mismatch_is_refused(oss: FakeOss, tmp_path: Path) -> None:
    # The fake's corruption also breaks the CRC-64; here the CRC header is missing (as from a
    # proxy that drops it), so the Content-MD5 is what catches it.
    from dagsync.sources.oss import _CRC64, _Progress

    class Reply:
        headers = {"Content-MD5": "1B2M2Y8AsgTpgAmY7PhCfg=="}  # MD5 of b""
        server_crc = None
        content_length = 3

    progress = _Progress(3, _CRC64.copy())
    progress.start(Reply(), "oss://dags/x.py", "x.py")
    progress.update(b"abc")
    with pytest.raises(SourceError, match="Content-MD5 mismatch") as caught:
        progress.verify("oss://dags/x.py", "x.py")
    assert caught.value.obj == "x.py"


def test_concurrency_one_and_idle_clients_are_reused(oss: FakeOss, root: Path) -> None:
    for i in range(20):
        oss.put(BUCKET, f"f{i}.py", b"x" * i)
    with syncer_for(flags(oss, root, concurrency=1), ENV) as syncer:
        assert syncer.run_pass().result == "published"
        source: Any = syncer.source
        assert len(source._idle) == 1  # one worker, one client, kept for the next pass
        assert isinstance(source.describe(), str)


def test_download_names_the_key_on_a_missing_object(oss: FakeOss, root: Path) -> None:
    oss.put(BUCKET, "gone.py", b"x")
    with syncer_for(flags(oss, root), ENV) as syncer:
        source: Any = syncer.source
        oss.delete(BUCKET, "gone.py")
        with pytest.raises(SourceError, match="gone.py") as caught:
            source.download(RemoteObject("gone.py", 1, "E", handle="gone.py"), _Sink(), 1e12)
        assert caught.value.obj == "gone.py"


class _Sink:
    def write(self, data: bytes) -> int:
        return len(data)


# -- lazy imports ------------------------------------------------------------------------------

LOADED_SDKS = """
import json, sys
from dagsync.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
loaded = sorted(
    {m.split(".")[0] for m in sys.modules}
    & {"oss2", "azure", "watchdog", "boto3", "botocore", "google", "moto"}
)
print(json.dumps({"code": code, "loaded": loaded}))
"""


def loaded_sdks(args: list[str], cwd: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", LOADED_SDKS, *args],
        env={"PATH": "/usr/bin:/bin", "HOME": str(cwd), "GIT_CONFIG_NOSYSTEM": "1"},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_help_and_a_git_sync_import_no_cloud_sdk_or_watchdog(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    (repo / "dag.py").write_text("print(1)\n")
    subprocess.run([*git, "add", "dag.py"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "one"], check=True)

    assert loaded_sdks(["--help"], tmp_path) == {"code": 0, "loaded": []}
    assert loaded_sdks(["once", "--help"], tmp_path) == {"code": 0, "loaded": []}
    git_once = loaded_sdks(["once", "--repo", f"file://{repo}", "--root", "r"], tmp_path)
    assert git_once == {"code": 0, "loaded": []}
    assert (tmp_path / "r" / "current" / "dag.py").read_text() == "print(1)\n"
