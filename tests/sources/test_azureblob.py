"""The azureblob source beyond the shared contract: the account-key file route, configuration
errors (exit 2, before any request) and an empty default credential chain. Real
azure-storage-blob against Azurite behind the counting proxy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.emulators import AZURITE_ACCOUNT, AZURITE_KEY, patched_environ
from tests.sources.store_contract import (
    cli_args,
    link_target,
    published_files,
    run_cli,
    run_pass,
)
from tests.sources.store_env_azureblob import AzureBlobStoreEnv


@pytest.fixture
def blob(tmp_path: Path) -> Iterator[AzureBlobStoreEnv]:
    with AzureBlobStoreEnv(tmp_path) as env:
        yield env


def account_url(env: AzureBlobStoreEnv) -> str:
    return f"http://{env.fake.address}/{AZURITE_ACCOUNT}"


def test_account_key_file_route_publishes(blob: AzureBlobStoreEnv, tmp_path: Path) -> None:
    blob.put("dag.py", b"print(1)\n")
    key_file = tmp_path / "account-key"
    key_file.write_text(AZURITE_KEY + "\n")
    options = {"azureblob_account_url": account_url(blob), "azure_account_key_file": key_file}

    flags = {"source": "azureblob", "root": str(tmp_path / "root"), **blob.options(), **options}
    with patched_environ({"AZURE_STORAGE_CONNECTION_STRING": None}):
        result = run_pass(flags, {})

    assert result.result == "published", result.error
    assert published_files(tmp_path / "root") == {"dag.py": b"print(1)\n"}


@pytest.mark.parametrize(
    ("options", "environ", "flag"),
    [
        ({}, {}, "--azureblob-account-url"),
        ({"azureblob_account_url": "ftp://x"}, {}, "--azureblob-account-url"),
        ({"azureblob_account_url": "URL"}, {}, "--azureblob-account-url"),  # http, no key
        ({"azureblob_account_url": "URL"}, {"conn": True}, "--azureblob-account-url"),
        ({"azureblob_container": ""}, {"conn": True}, "--azureblob-container"),
        ({"source_option": "page_size=0"}, {"conn": True}, "page_size"),
        (
            {"azureblob_account_url": "URL", "azure_account_key_file": "KEY"},
            {},
            "--azure-account-key-file",
        ),
    ],
)
def test_configuration_errors_exit_2_naming_the_flag_before_any_request(
    blob: AzureBlobStoreEnv,
    tmp_path: Path,
    options: dict[str, Any],
    environ: dict[str, Any],
    flag: str,
) -> None:
    values = {k: account_url(blob) if v == "URL" else v for k, v in options.items()}
    if values.get("azure_account_key_file") == "KEY":
        values["azure_account_key_file"] = str(tmp_path / "missing-key-file")
    args = cli_args(blob, tmp_path / "root", **values)
    blob.clear_requests()

    proc = run_cli(args, blob.environ() if environ else {})

    assert proc.returncode == 2, proc.stderr
    assert flag in proc.stderr.strip().splitlines()[-1]
    assert blob.requests() == {}


def test_empty_default_credential_chain_is_a_clear_error(
    blob: AzureBlobStoreEnv, tmp_path: Path
) -> None:
    blob.put("dag.py", b"x")
    https = f"https://127.0.0.1:{blob.fake.address.rpartition(':')[2]}/{AZURITE_ACCOUNT}"
    args = cli_args(blob, tmp_path / "root", azureblob_account_url=https)

    proc = run_cli(args, {"AZURE_CONFIG_DIR": str(tmp_path / "az")}, timeout=120)

    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "access denied" in last and "default credential chain" in last, last
    assert link_target(tmp_path / "root") is None
