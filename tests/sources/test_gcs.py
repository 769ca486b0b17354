"""The gcs source beyond the shared contract: configuration errors (exit 2, before any request)
and an empty credential chain. Real google-cloud-storage against gcp-storage-emulator behind the
counting proxy (tests/sources/store_env_gcs.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.emulators import patched_environ
from tests.sources.store_contract import cli_args, link_target, run_cli
from tests.sources.store_env_gcs import BUCKET, GcsStoreEnv


@pytest.fixture
def gcs(tmp_path: Path) -> Iterator[GcsStoreEnv]:
    with GcsStoreEnv(tmp_path) as env:
        yield env


@pytest.mark.parametrize("bucket", ["", "bad/name"])
def test_bucket_errors_exit_2_naming_the_flag_before_any_request(
    gcs: GcsStoreEnv, tmp_path: Path, bucket: str
) -> None:
    args = cli_args(gcs, tmp_path / "root", gcs_bucket=bucket)
    gcs.clear_requests()

    proc = run_cli(args, gcs.environ())

    assert proc.returncode == 2, proc.stderr
    assert "--gcs-bucket" in proc.stderr.strip().splitlines()[-1]
    assert gcs.requests() == {}


def test_no_credentials_and_no_emulator_is_a_clear_error(gcs: GcsStoreEnv, tmp_path: Path) -> None:
    gcs.put("dag.py", b"x")
    nothing = {"GOOGLE_APPLICATION_CREDENTIALS": None, "STORAGE_EMULATOR_HOST": None}
    with patched_environ(nothing):
        proc = run_cli(cli_args(gcs, tmp_path / "root"), {})

    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert "no Google credentials found" in last and f"gs://{BUCKET}/" in last
    assert link_target(tmp_path / "root") is None
