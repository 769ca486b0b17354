"""The Azure Files fake, driven by the real, unmodified azure-storage-file-share SDK."""

from __future__ import annotations

import base64
import hashlib
import os
import random
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
)
from azure.storage.fileshare import ShareClient, ShareDirectoryClient, ShareServiceClient

from .azure_server import FakeAzureFiles, header_collation_key

SHARE = "dags"
# The SDK retries 5xx and dropped connections itself (ExponentialRetry); zero backoff keeps
# the retry tests fast without changing what is retried.
FAST_RETRY: dict[str, Any] = {
    "retry_total": 3,
    "initial_backoff": 0,
    "increment_base": 0,
    "random_jitter_range": 0,
}
OTHER_KEY = "a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U="


@pytest.fixture
def az() -> Iterator[FakeAzureFiles]:
    with FakeAzureFiles(account="devstoreaccount1") as fake:
        fake.create_share(SHARE)
        yield fake


def key_client(az: FakeAzureFiles, key: str | None = None) -> ShareClient:
    credential = AzureNamedKeyCredential(az.account, key or az.key)
    return ShareClient(az.account_url, SHARE, credential=credential, **FAST_RETRY)


def error_code(exc: HttpResponseError) -> str | None:
    """The service's x-ms-error-code, which the SDK attaches to its exceptions at run time."""
    return getattr(exc, "error_code", None)


def walk(directory: ShareDirectoryClient, prefix: str = "", page: int = 2) -> dict[str, int]:
    """Every file below ``directory`` as path -> size, listing ``page`` entries per request."""
    found: dict[str, int] = {}
    for item in directory.list_directories_and_files(results_per_page=page):
        path = f"{prefix}{item.name}"
        if item["is_directory"]:
            sub = directory.get_subdirectory_client(item.name)
            found.update(walk(sub, f"{path}/", page))
        else:
            found[path] = item["size"]
    return found


def test_connection_string_lists_a_nested_tree_page_by_page(az: FakeAzureFiles) -> None:
    tree = {f"dags/team{t}/dag_{i}.py": f"# {t}/{i}\n".encode() for t in range(3) for i in range(5)}
    tree["dags/common/util.py"] = b"X = 1\n"
    tree["README.md"] = b"hi"
    for path, data in tree.items():
        az.put(SHARE, path, data)
    az.mkdir(SHARE, "dags/empty")
    service = ShareServiceClient.from_connection_string(az.connection_string, **FAST_RETRY)
    root = service.get_share_client(SHARE).get_directory_client("")

    assert walk(root, page=2) == {path: len(data) for path, data in tree.items()}
    # 7 directories are listed; the three 5-file ones alone take 3 pages of 2 each.
    lists = [r for r in az.requests if r.kind == "list"]
    assert len(lists) > 7
    assert {r.query.get("maxresults") for r in lists} == {"2"}
    assert any("marker" in r.query for r in lists)


def test_listing_reports_sizes_etags_timestamps_and_file_ids(az: FakeAzureFiles) -> None:
    etag = az.put(SHARE, "dags/a.py", b"12345")
    az.mkdir(SHARE, "dags/sub")
    items = {
        item.name: item
        for item in key_client(az)
        .get_directory_client("dags")
        .list_directories_and_files(
            include=["timestamps", "Etag", "Attributes", "PermissionKey"],
            include_extended_info=True,
        )
    }
    info = az.stat(SHARE, "dags/a.py")
    assert items["a.py"]["size"] == 5
    assert items["a.py"].etag == etag == info.etag
    assert items["a.py"].etag.startswith('"0x8D')
    assert items["a.py"].file_id == info.file_id
    assert items["a.py"].last_modified == info.last_modified.replace(microsecond=0)
    assert items["a.py"].last_write_time is not None
    assert items["sub"]["is_directory"] and items["sub"].file_attributes == "Directory"


def test_listing_prefix_and_invalid_include(az: FakeAzureFiles) -> None:
    for name in ("alpha.py", "alps.py", "beta.py"):
        az.put(SHARE, f"d/{name}", b"x")
    directory = key_client(az).get_directory_client("d")
    assert [i.name for i in directory.list_directories_and_files("al")] == ["alpha.py", "alps.py"]
    with pytest.raises(HttpResponseError) as info:
        list(directory.list_directories_and_files(include=["Bogus"]))
    assert info.value.status_code == 400


def test_unicode_space_and_xml_hostile_names_round_trip(az: FakeAzureFiles) -> None:
    tree = {
        "dags/Grüße dir/ñ file.py": b"unicode",
        "dags/with space/a b.py": b"space",
        "dags/odd/x\ufffey.py": b"needs Encoded=true in XML",
    }
    for path, data in tree.items():
        az.put(SHARE, path, data)
    share = key_client(az)
    assert walk(share.get_directory_client(""), page=1) == {p: len(d) for p, d in tree.items()}
    # A ShareDirectoryClient sends its nested path as one "%2F"-encoded segment.
    nested = share.get_directory_client("dags/Grüße dir")
    assert nested.exists()
    assert [i.name for i in nested.list_directories_and_files()] == ["ñ file.py"]
    for path, data in tree.items():
        assert share.get_file_client(path).download_file().readall() == data


def test_named_key_and_dict_credentials_download_whole_and_ranged(az: FakeAzureFiles) -> None:
    data = bytes(range(256)) * 4
    az.put(SHARE, "dags/data.bin", data)
    by_dict = ShareClient(
        az.account_url,
        SHARE,
        credential={"account_name": az.account, "account_key": az.key},
        **FAST_RETRY,
    )
    for share in (key_client(az), by_dict):
        file = share.get_file_client("dags/data.bin")
        assert file.download_file().readall() == data
        assert file.download_file(offset=10, length=20).readall() == data[10:30]
        props = file.get_file_properties()
        assert props.size == len(data)
        assert props.etag == az.stat(SHARE, "dags/data.bin").etag
        assert props.content_settings.content_md5 == hashlib.md5(data).digest()
    ranges = [r.headers.get("x-ms-range") for r in az.requests if r.kind == "get"]
    assert "bytes=10-29" in ranges


def test_content_md5_can_be_left_unset(az: FakeAzureFiles) -> None:
    az.put(SHARE, "no_md5.py", b"abc", store_md5=False)
    props = key_client(az).get_file_client("no_md5.py").get_file_properties()
    assert props.content_settings.content_md5 is None


def test_empty_file_downloads_after_the_416_the_service_gives(az: FakeAzureFiles) -> None:
    az.put(SHARE, "empty.py", b"")
    assert key_client(az).get_file_client("empty.py").download_file().readall() == b""
    gets = [r for r in az.requests if r.kind == "get"]
    assert [r.status for r in gets] == [416, 200]
    assert "x-ms-range" in gets[0].headers and "x-ms-range" not in gets[1].headers


def test_large_file_comes_in_validated_ranged_chunks(az: FakeAzureFiles) -> None:
    data = random.Random(7).randbytes(5 * 1024 * 1024)
    az.put(SHARE, "big.bin", data)
    file = key_client(az).get_file_client("big.bin")
    assert file.download_file(validate_content=True).readall() == data
    gets = [r for r in az.requests if r.kind == "get"]
    # With MD5 validation the SDK asks for <= 4 MiB per GET, each with a transactional MD5.
    assert len(gets) == 2
    assert all(r.headers.get("x-ms-range-get-content-md5") == "true" for r in gets)
    assert [r.status for r in gets] == [206, 206]


def test_parallel_chunked_download_with_small_get_sizes(az: FakeAzureFiles) -> None:
    data = random.Random(8).randbytes(5 * 1024 * 1024)
    az.put(SHARE, "big.bin", data)
    chunk = 1024 * 1024
    share = ShareClient(
        az.account_url,
        SHARE,
        credential=az.key,
        max_single_get_size=chunk,
        max_chunk_get_size=chunk,
        **FAST_RETRY,
    )
    assert share.get_file_client("big.bin").download_file(max_concurrency=4).readall() == data
    assert az.count("get") == 5


def test_sas_tokens_are_verified_and_scoped(az: FakeAzureFiles) -> None:
    az.put(SHARE, "dags/x.py", b"abc")
    for credential in (az.make_sas(SHARE), AzureSasCredential(az.make_sas(SHARE))):
        share = ShareClient(az.account_url, SHARE, credential=credential, **FAST_RETRY)
        assert [i.name for i in share.list_directories_and_files()] == ["dags"]
        assert share.get_file_client("dags/x.py").download_file().readall() == b"abc"
        assert share.get_directory_client("dags").exists()

    read_only = ShareClient(az.account_url, SHARE, credential=az.make_sas(SHARE, "r"))
    with pytest.raises(HttpResponseError) as denied:
        list(read_only.list_directories_and_files())
    assert (denied.value.status_code, error_code(denied.value)) == (
        403,
        "AuthorizationPermissionMismatch",
    )
    with pytest.raises(HttpResponseError) as share_level:
        read_only.get_share_properties()  # share-level calls need the account key
    assert share_level.value.status_code == 403

    expired = az.make_sas(SHARE, expiry=datetime.now(UTC) - timedelta(minutes=1))
    tampered = az.make_sas(SHARE).replace("sp=rl", "sp=rwl")
    for token in (expired, tampered):
        share = ShareClient(az.account_url, SHARE, credential=token, **FAST_RETRY)
        with pytest.raises(ClientAuthenticationError) as failed:
            share.get_file_client("dags/x.py").download_file()
        assert failed.value.status_code == 403


def test_wrong_key_is_rejected_with_403(az: FakeAzureFiles) -> None:
    az.put(SHARE, "dags/x.py", b"abc")
    share = key_client(az, key=OTHER_KEY)
    with pytest.raises(ClientAuthenticationError) as info:
        list(share.list_directories_and_files())
    assert info.value.status_code == 403
    assert error_code(info.value) == "AuthenticationFailed"
    with pytest.raises(ClientAuthenticationError):
        share.get_file_client("dags/x.py").get_file_properties()  # HEAD: code in header only
    assert az.count("list") == 1  # auth failures are not retried


def test_missing_things_map_to_the_services_error_codes(az: FakeAzureFiles) -> None:
    az.put(SHARE, "dags/x.py", b"abc")
    share = key_client(az)
    assert not share.get_directory_client("nope").exists()
    assert not share.get_directory_client("dags/x.py").exists()
    with pytest.raises(ResourceNotFoundError) as info:
        share.get_file_client("dags/nope.py").download_file()
    assert error_code(info.value) == "ResourceNotFound"
    with pytest.raises(ResourceNotFoundError) as info:
        share.get_file_client("no/x.py").get_file_properties()  # HEAD: code in header only
    assert error_code(info.value) == "ParentNotFound"
    missing_share = ShareClient(az.account_url, "nope", credential=az.key, **FAST_RETRY)
    with pytest.raises(ResourceNotFoundError) as info:
        list(missing_share.list_directories_and_files())
    assert error_code(info.value) == "ShareNotFound"


def test_unimplemented_operations_fail_loudly(az: FakeAzureFiles) -> None:
    with pytest.raises(HttpResponseError) as info:
        key_client(az).get_directory_client("new").create_directory()
    assert (info.value.status_code, error_code(info.value)) == (501, "NotImplementedByFake")


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_are_retried_by_the_sdk(az: FakeAzureFiles, status: int) -> None:
    az.put(SHARE, "dags/x.py", b"abc")
    share = key_client(az)
    az.fail_next(1, status)
    assert [i.name for i in share.list_directories_and_files()] == ["dags"]
    az.fail_next(2, status, kind="get")
    assert share.get_file_client("dags/x.py").download_file().readall() == b"abc"
    assert [r.status for r in az.requests if r.kind == "get"] == [status, status, 206]


def test_dropped_connections_are_retried_by_the_sdk(az: FakeAzureFiles) -> None:
    az.put(SHARE, "dags/x.py", b"abc")
    az.reset_next(1, kind="get")
    assert key_client(az).get_file_client("dags/x.py").download_file().readall() == b"abc"
    assert [r.status for r in az.requests if r.kind == "get"] == [None, 206]


def test_truncated_body_is_an_error_never_short_data(az: FakeAzureFiles) -> None:
    data = os.urandom(100_000)
    az.put(SHARE, "f.bin", data)
    az.truncate_next_get(1)
    file = key_client(az).get_file_client("f.bin")
    try:
        got = file.download_file().readall()
    except HttpResponseError:
        got = None  # azure-storage-file-share 12.27 raises "Download stream interrupted."
    assert got in (None, data)
    assert file.download_file().readall() == data


def test_corrupted_body_keeps_the_true_stored_md5(az: FakeAzureFiles) -> None:
    data = b"the real bytes" * 10
    az.put(SHARE, "f.py", data)
    az.corrupt_next_get(1)
    seen: list[str | None] = []
    file = key_client(az).get_file_client("f.py")
    got = file.download_file(
        raw_response_hook=lambda r: seen.append(r.http_response.headers.get("x-ms-content-md5"))
    ).readall()
    assert len(got) == len(data) and got != data and got[1:] == data[1:]
    assert seen == [base64.b64encode(hashlib.md5(data).digest()).decode()]
    assert file.download_file().readall() == data


def test_latency_applies_to_every_request(az: FakeAzureFiles) -> None:
    az.put(SHARE, "x.py", b"abc")
    az.latency = 0.2
    started = time.monotonic()
    key_client(az).get_file_client("x.py").get_file_properties()
    assert time.monotonic() - started >= 0.2


def test_request_log_counts_and_clears(az: FakeAzureFiles) -> None:
    az.put(SHARE, "d/x.py", b"abc")
    share = key_client(az)
    list(share.list_directories_and_files())
    share.get_file_client("d/x.py").get_file_properties()
    share.get_file_client("d/x.py").download_file().readall()
    assert (az.count("list"), az.count("head"), az.count("get"), az.count()) == (1, 1, 1, 3)
    assert az.requests[1].method == "HEAD" and az.requests[1].path.endswith("/dags/d/x.py")
    az.clear_requests()
    assert az.count() == 0


def test_overwrite_changes_etag_and_names_are_case_insensitive(az: FakeAzureFiles) -> None:
    first = az.put(SHARE, "dags/Dag.py", b"v1")
    second = az.put(SHARE, "dags/dag.py", b"v2")  # same file on a case-insensitive share
    assert first != second
    share = key_client(az)
    assert [i.name for i in share.get_directory_client("dags").list_directories_and_files()] == [
        "Dag.py"
    ]
    assert share.get_file_client("dags/DAG.PY").download_file().readall() == b"v2"
    az.delete(SHARE, "dags/dag.py")
    assert list(share.get_directory_client("dags").list_directories_and_files()) == []


def test_header_collation_matches_the_service_not_ordinal_sort() -> None:
    names = ["x-ms-range", "x-ms-range-get-content-md5", "x-ms-a-z", "x-ms-ab", "x-ms-date"]
    assert sorted(names, key=header_collation_key) == [
        "x-ms-ab",
        "x-ms-a-z",
        "x-ms-date",
        "x-ms-range",
        "x-ms-range-get-content-md5",
    ]
    assert sorted(names) != sorted(names, key=header_collation_key)


def test_no_thread_outlives_the_fake() -> None:
    with FakeAzureFiles() as fake:
        fake.create_share(SHARE)
        fake.put(SHARE, "x.py", b"abc")
        key_client(fake).get_file_client("x.py").download_file().readall()  # keep-alive open
    leftovers = [t.name for t in threading.enumerate() if t.name.startswith("fake-azure")]
    assert leftovers == []
