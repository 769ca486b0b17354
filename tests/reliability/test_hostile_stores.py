"""Hostile input from object stores (real oss2 / azure-storage-file-share SDKs against the
fakes): unsafe keys, names Linux cannot hold, a file that is also a folder, a size the body
contradicts, malformed XML and HTTP, and listings past --max-files. Each fails the sync with one
error line naming the key (or the endpoint), publishes nothing and keeps the last good revision.
Names Linux can hold (a backslash, a newline) are published as stored."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.azure_server import FakeAzureFiles
from tests.fakes.oss_server import FakeOss
from tests.reliability.hostile_common import assert_refused, state
from tests.sources.store_contract import published_files, run_cli

KEY_ID = "LTAI5tHostileKeyId"
SECRET = "HostileTestSecret-9f8e7d"
BUCKET = "dags"
ENV = {"OSS_ACCESS_KEY_ID": KEY_ID, "OSS_ACCESS_KEY_SECRET": SECRET}
SHARE = "dags"


@pytest.fixture
def oss() -> Iterator[FakeOss]:
    with FakeOss(access_key_id=KEY_ID, access_key_secret=SECRET) as fake:
        fake.create_bucket(BUCKET)
        fake.put(BUCKET, "dags/good.py", b"good = 1\n")
        yield fake


def oss_once(fake: FakeOss, root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    args = ["once", "--source", "oss", "--oss-endpoint", fake.endpoint, "--oss-bucket", BUCKET]
    return run_cli([*args, "--root", str(root), "--sync-timeout", "20s", *extra], ENV)


def published_ok(fake: FakeOss, root: Path) -> tuple[str | None, dict[str, bytes]]:
    first = oss_once(fake, root)
    assert first.returncode == 0, first.stderr
    return state(root)


@pytest.mark.parametrize(
    ("key", "named"),
    [
        ("dags/../../etc/evil.py", "dags/../../etc/evil.py"),
        ("/abs/evil.py", "/abs/evil.py"),
        ("dags/nul\x00byte.py", "nul\\x00byte.py"),
        ("dags/" + "x" * 256 + ".py", "xxxxxxxx"),
    ],
    ids=["dotdot", "absolute", "nul", "segment-over-255-bytes"],
)
def test_unsafe_oss_keys_are_refused_before_any_download(
    oss: FakeOss, tmp_path: Path, key: str, named: str
) -> None:
    root = tmp_path / "root"
    before = published_ok(oss, root)
    oss.put(BUCKET, key, b"evil")
    oss.clear_requests()

    run = oss_once(oss, root)

    assert_refused(run, root, before, named)
    assert [r for r in oss.requests if r.kind == "get"] == []  # refused at the listing


def test_a_key_that_is_both_a_file_and_a_folder_is_refused_naming_it(
    oss: FakeOss, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    before = published_ok(oss, root)
    oss.put(BUCKET, "dags/util", b"a file")
    oss.put(BUCKET, "dags/util/helpers.py", b"and a folder")
    oss.clear_requests()

    run = oss_once(oss, root)

    assert_refused(run, root, before, "'dags/util'", "both a file and a folder")
    assert [r for r in oss.requests if r.kind == "get"] == []


def test_a_size_the_body_contradicts_fails_naming_the_key(oss: FakeOss, tmp_path: Path) -> None:
    root = tmp_path / "root"
    before = published_ok(oss, root)
    oss.put(BUCKET, "dags/liar.py", b"twelve bytes")
    # The listing says 5 bytes; the object (same ETag) holds 12.
    oss.mangle_listing = lambda body: body.replace(b"<Size>12</Size>", b"<Size>5</Size>")

    run = oss_once(oss, root)

    assert_refused(run, root, before, "dags/liar.py", "5 bytes")


@pytest.mark.parametrize(
    "mangle",
    [
        lambda body: body[: len(body) // 2],  # cut in the middle of a tag
        lambda body: body.replace(b"<IsTruncated>", b"<Nonsense>").replace(
            b"</IsTruncated>", b"</Nonsense>"
        ),
        lambda body: re.sub(rb"<Size>\d+</Size>", b"<Size>lots</Size>", body),
    ],
    ids=["cut", "missing-tag", "size-not-a-number"],
)
def test_malformed_listing_xml_is_one_clear_error(
    oss: FakeOss, tmp_path: Path, mangle: object
) -> None:
    root = tmp_path / "root"
    before = published_ok(oss, root)
    oss.put(BUCKET, "dags/new.py", b"new")
    oss.mangle_listing = mangle  # type: ignore[assignment]

    run = oss_once(oss, root)

    assert_refused(run, root, before, "not valid OSS XML", f"oss://{BUCKET}/")


def test_an_endpoint_that_does_not_speak_http_is_one_clear_error(
    oss: FakeOss, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    before = published_ok(oss, root)
    oss.raw_answer = b"SSH-2.0-OpenSSH_9.2\r\nnot http at all\r\n\r\n"

    run = oss_once(oss, root, "--sync-timeout", "3s")

    assert_refused(run, root, before, f"oss://{BUCKET}/", "request failed")


def test_a_key_whose_bytes_are_not_utf8_is_named_as_such(oss: FakeOss, tmp_path: Path) -> None:
    root = tmp_path / "root"
    before = published_ok(oss, root)
    oss.put(BUCKET, "dags/caf\udce9.py", b"latin-1 name")  # the byte 0xE9 alone

    run = oss_once(oss, root)

    assert_refused(run, root, before, "dags/caf\ufffd.py", "not valid UTF-8")
    assert "changed during the sync" not in run.stderr


def test_names_linux_can_hold_are_published_as_stored(oss: FakeOss, tmp_path: Path) -> None:
    root = tmp_path / "root"
    names = ["dags/back\\slash.py", "dags/new\nline.py", "dags/tab\tand 'quotes\".py"]
    for name in names:
        oss.put(BUCKET, name, name.encode())

    run = oss_once(oss, root)

    assert run.returncode == 0, run.stderr
    files = published_files(root)
    for name in names:
        assert files[name] == name.encode()


def test_oss_max_files_stops_the_listing_as_soon_as_it_is_passed(
    oss: FakeOss, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    before = published_ok(oss, root)
    for i in range(5000):  # five listing pages of 1,000
        oss.put(BUCKET, f"dags/many/{i:05d}.py", b"")
    oss.clear_requests()

    run = oss_once(oss, root, "--max-files", "1500")

    assert_refused(run, root, before, "--max-files 1500")
    assert sum(r.kind == "list" for r in oss.requests) == 2  # not all five pages


# -- Azure Files ---------------------------------------------------------------------------------


@pytest.fixture
def az() -> Iterator[FakeAzureFiles]:
    fake = FakeAzureFiles()
    fake.start()
    fake.create_share(SHARE)
    fake.put(SHARE, "good.py", b"good = 1\n")
    try:
        yield fake
    finally:
        fake.close()


def az_once(fake: FakeAzureFiles, root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    args = ["once", "--source", "azure", "--azure-share", SHARE, "--root", str(root)]
    args += ["--source-option", "retry_backoff=0.05", "--sync-timeout", "20s", *extra]
    return run_cli(args, {"AZURE_STORAGE_CONNECTION_STRING": fake.connection_string})


def test_azure_max_files_stops_the_listing_while_listing(
    az: FakeAzureFiles, tmp_path: Path
) -> None:
    # Today's limit applied after the whole walk: a share of millions of files would sit in
    # memory first. 3,000 files in one folder, 100 per page: the walk must stop early.
    root = tmp_path / "root"
    first = az_once(az, root)
    assert first.returncode == 0, first.stderr
    before = state(root)
    for i in range(3000):
        az.put(SHARE, f"many/{i:05d}.py", b"")
    az.clear_requests()

    run = az_once(az, root, "--max-files", "250", "--source-option", "page_size=100")

    assert_refused(run, root, before, "--max-files 250")
    assert az.count("list") <= 6, az.count("list")  # of the 31 pages the walk would read


@pytest.mark.parametrize(
    "mangle",
    [lambda body: body[: len(body) // 2], lambda body: b"<EnumerationResults><Oops"],
    ids=["cut", "garbage"],
)
def test_azure_malformed_listing_xml_is_one_clear_error(
    az: FakeAzureFiles, tmp_path: Path, mangle: object
) -> None:
    root = tmp_path / "root"
    first = az_once(az, root)
    assert first.returncode == 0, first.stderr
    before = state(root)
    az.mangle_listing = mangle  # type: ignore[assignment]

    run = az_once(az, root, "--sync-timeout", "4s")

    assert_refused(run, root, before, f"azure share '{SHARE}'")


def test_azure_endpoint_that_does_not_speak_http_is_one_clear_error(
    az: FakeAzureFiles, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    first = az_once(az, root)
    assert first.returncode == 0, first.stderr
    before = state(root)
    az.raw_answer = b"garbage that is not http\r\n\r\n"

    run = az_once(az, root, "--sync-timeout", "4s")

    assert_refused(run, root, before, f"azure share '{SHARE}'")


def test_a_file_at_the_link_is_refused_before_listing_or_downloading(
    oss: FakeOss, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "current").write_text("left by an old cron job\n")
    oss.clear_requests()

    run = oss_once(oss, root)

    assert run.returncode == 1, run.stderr
    assert f"--link: {root / 'current'} exists and is a regular file" in run.stderr
    assert (root / "current").read_text() == "left by an old cron job\n"
    assert oss.requests == []  # nothing listed, nothing downloaded


def test_azure_size_the_file_contradicts_fails_naming_it(
    az: FakeAzureFiles, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    first = az_once(az, root)
    assert first.returncode == 0, first.stderr
    before = state(root)
    az.put(SHARE, "liar.py", b"twelve bytes")
    az.mangle_listing = lambda body: body.replace(
        b"<Content-Length>12</Content-Length>", b"<Content-Length>5</Content-Length>"
    )

    run = az_once(az, root)

    assert_refused(run, root, before, "liar.py: listed with 5 bytes", "serves 12")
