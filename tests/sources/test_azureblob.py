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


def test_sas_connection_string_publishes_with_one_get_per_blob(
    blob: AzureBlobStoreEnv, tmp_path: Path
) -> None:
    import datetime as dt

    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    blob.put("a.py", b"a\n")
    blob.put("sub/b.py", b"bb\n")
    sas = generate_container_sas(
        AZURITE_ACCOUNT,
        blob.bucket,
        account_key=AZURITE_KEY,
        permission=ContainerSasPermissions(read=True, list=True),
        expiry=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
    )
    connection = f"BlobEndpoint={account_url(blob)};SharedAccessSignature={sas}"
    blob.clear_requests()

    proc = run_cli(
        cli_args(blob, tmp_path / "root"), {"AZURE_STORAGE_CONNECTION_STRING": connection}
    )

    assert proc.returncode == 0, proc.stderr
    assert published_files(tmp_path / "root") == {"a.py": b"a\n", "sub/b.py": b"bb\n"}
    assert blob.requests().get("get") == 2
    assert sas not in proc.stderr and "sig=" not in proc.stderr


def test_percent_encoded_names_in_the_listing_are_decoded(
    blob: AzureBlobStoreEnv, tmp_path: Path
) -> None:
    """Azure sends a name XML cannot carry percent-encoded, marked Encoded="true"."""
    blob.put("odd name.py", b"odd\n")

    def encode(request: Any, body: bytes) -> bytes:
        if request.kind != "list":
            return body
        plain = b"<Name>team/dags/odd name.py</Name>"
        return body.replace(plain, b'<Name Encoded="true">team%2Fdags%2Fodd%20name.py</Name>')

    blob.fake.rewrites.append(encode)
    proc = run_cli(cli_args(blob, tmp_path / "root"), blob.environ())

    assert proc.returncode == 0, proc.stderr
    assert published_files(tmp_path / "root") == {"odd name.py": b"odd\n"}


def test_failed_download_names_the_blob_without_the_signed_sas(
    blob: AzureBlobStoreEnv, tmp_path: Path
) -> None:
    """With an account key dagsync signs a SAS for its reads; errors never show it."""
    blob.put("dag.py", b"x\n")
    blob.fake.reset_next(100, kind="get")

    proc = run_cli(cli_args(blob, tmp_path / "root"), blob.environ())

    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "dag.py" in last and "request failed" in last, last
    assert "sig=" not in proc.stderr and "sv=" not in proc.stderr, proc.stderr
    assert link_target(tmp_path / "root") is None


def test_malformed_listing_is_one_clear_error(blob: AzureBlobStoreEnv, tmp_path: Path) -> None:
    blob.put("dag.py", b"x\n")
    blob.fake.rewrites.append(lambda request, body: body[:-40] if request.kind == "list" else body)

    proc = run_cli(cli_args(blob, tmp_path / "root"), blob.environ())

    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "malformed List Blobs response" in last and "'dags'" in last, last
    assert "Traceback" not in proc.stderr
    assert link_target(tmp_path / "root") is None
