"""The s3 source beyond the shared contract: multipart ETags, conditional GETs, configuration
errors (exit 2, before any request) and a missing credential chain. Real boto3 against moto's
S3 server behind the counting proxy."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.emulators import patched_environ
from tests.sources.store_contract import cli_args, link_target, published_files, run_cli, sync
from tests.sources.store_env_s3 import BUCKET, PREFIX, S3StoreEnv

PART = 5 * 1024 * 1024  # S3's smallest part but the last


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[S3StoreEnv]:
    with S3StoreEnv(tmp_path) as env:
        yield env


def put_multipart(env: S3StoreEnv, path: str, data: bytes) -> str:
    admin: Any = env.admin
    upload = admin.create_multipart_upload(Bucket=BUCKET, Key=PREFIX + path)["UploadId"]
    parts = []
    for number, start in enumerate(range(0, len(data), PART), 1):
        etag = admin.upload_part(
            Bucket=BUCKET,
            Key=PREFIX + path,
            UploadId=upload,
            PartNumber=number,
            Body=data[start : start + PART],
        )["ETag"]
        parts.append({"ETag": etag, "PartNumber": number})
    done = admin.complete_multipart_upload(
        Bucket=BUCKET, Key=PREFIX + path, UploadId=upload, MultipartUpload={"Parts": parts}
    )
    return str(done["ETag"])


def test_multipart_object_is_verified_by_size_and_fetched_with_if_match(
    s3: S3StoreEnv, tmp_path: Path
) -> None:
    data = random.Random(3).randbytes(PART + 12345)
    etag = put_multipart(s3, "big/model.bin", data)
    assert etag.strip('"').endswith("-2")
    s3.truncate_next_get(1)  # a cut body is retried, never published

    result = sync(s3, tmp_path / "root")

    assert result.result == "published", result.error
    assert published_files(tmp_path / "root") == {"big/model.bin": data}
    gets = [r for r in s3.fake.requests if r.kind == "get"]
    assert len(gets) == 2 and all(r.headers.get("if-match") == etag for r in gets)


def test_single_part_body_is_checked_against_its_md5_etag(s3: S3StoreEnv, tmp_path: Path) -> None:
    s3.put("dag.py", b"print('real')\n" * 50)
    s3.corrupt_next_get(1)

    result = sync(s3, tmp_path / "root")

    assert result.result == "failed"
    assert "dag.py" in (result.error or "")
    assert "mismatch" in (result.error or "").lower()


@pytest.mark.parametrize(
    ("options", "flag"),
    [
        ({"s3_bucket": None}, "--s3-bucket"),
        ({"s3_bucket": "bad/name"}, "--s3-bucket"),
        ({"s3_endpoint_url": "ftp://127.0.0.1:1"}, "--s3-endpoint-url"),
        ({"s3_endpoint_url": "http://user:pw@127.0.0.1:1"}, "--s3-endpoint-url"),
        ({"source_option": "addressing_style=sideways"}, "addressing_style"),
    ],
)
def test_configuration_errors_exit_2_naming_the_flag_before_any_request(
    s3: S3StoreEnv, tmp_path: Path, options: dict[str, Any], flag: str
) -> None:
    args = cli_args(s3, tmp_path / "root", **{k: v for k, v in options.items() if v})
    if options.get("s3_bucket", "") is None:
        at = args.index("--s3-bucket")
        del args[at : at + 2]
    s3.clear_requests()

    proc = run_cli(args, s3.environ())

    assert proc.returncode == 2, proc.stderr
    assert flag in proc.stderr.strip().splitlines()[-1]
    assert s3.requests() == {}


def test_no_credentials_anywhere_is_a_clear_error(s3: S3StoreEnv, tmp_path: Path) -> None:
    s3.put("dag.py", b"x")
    empty = {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None}
    with patched_environ(empty):
        proc = run_cli(cli_args(s3, tmp_path / "root"), {})

    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert "no AWS credentials found" in last and f"s3://{BUCKET}/" in last
    assert link_target(tmp_path / "root") is None
