"""Self-tests for tests/fakes/oss_server.py, driven by the real, unmodified oss2 SDK.

These pin down the protocol facts a source built on oss2 relies on, so a fake that drifts from
what oss2 sends or expects fails here rather than in a confusing source test.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import oss2
import pytest
import requests
from oss2.credentials import StaticCredentialsProvider

from tests.fakes.oss_server import (
    V1_SIGNED_SUBRESOURCES,
    FakeOss,
    RecordedRequest,
    crc64_ecma,
    crc64_ecma_pure,
    list_page,
)

AKID, SECRET, TOKEN = "AKID", "SECRET", "STS.TOKEN"
REGION = "cn-hangzhou"
AUTH_VERSIONS = ["v1", "v2", "v4"]
AWKWARD_KEYS = [
    "with space.py",
    "ünïcödé/日本語.py",
    "plus+sign.py",
    "percent%20literal.py",
    "deep/a/b/c/d/e.py",
    "tilde~quote'\"semi;amp&eq=.py",
    "question?mark#hash.py",
    "emoji😀.py",
]


@pytest.fixture
def oss() -> Iterator[FakeOss]:
    with FakeOss(access_key_id=AKID, access_key_secret=SECRET) as fake:
        fake.create_bucket("dags")
        yield fake


def make_auth(version: str, key: str = AKID, secret: str = SECRET) -> object:
    if version == "v1":
        return oss2.Auth(key, secret)
    if version == "v2":
        return oss2.AuthV2(key, secret)
    return oss2.ProviderAuthV4(StaticCredentialsProvider(key, secret))


def make_bucket(
    oss: FakeOss, version: str = "v1", name: str = "dags", **kwargs: object
) -> oss2.Bucket:
    # region is needed by V4 only; V1/V2 ignore it.
    return oss2.Bucket(make_auth(version), oss.endpoint, name, region=REGION, **kwargs)


# --- pure parts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 9, 1000, 65537])
def test_crc64_matches_oss2(size: int) -> None:
    data = b"123456789" if size == 9 else os.urandom(size)
    client = oss2.utils.Crc64()
    client.update(data)
    assert crc64_ecma(data) == crc64_ecma_pure(data) == client.crc


def test_crc64_check_value() -> None:
    # The published check value of CRC-64/XZ (= OSS's CRC-64/ECMA-182 flavour).
    assert crc64_ecma_pure(b"123456789") == 0x995DC9BBDF1939FA


def test_v1_signed_subresources_are_oss2s() -> None:
    assert oss2.auth.ProviderAuth._subresource_key_set == V1_SIGNED_SUBRESOURCES


def test_list_page_groups_never_overflow_a_page() -> None:
    # A page that is full only of one group's keys is the last page, not a truncated one.
    assert list_page(["a/1", "a/2"], "", "/", "", 1) == ([], ["a/"], None)
    assert list_page(["a/1", "a/2", "b"], "", "/", "", 1) == ([], ["a/"], "a/")
    assert list_page(["a/1", "a/2", "b"], "", "/", "a/", 1) == (["b"], [], None)


# --- listing ------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", AUTH_VERSIONS)
def test_iterator_pages_through_2500_keys(oss: FakeOss, version: str) -> None:
    keys = sorted(f"dags/{i // 100:02d}/file_{i:04d}.py" for i in range(2500))
    for key in keys:
        oss.put("dags", key, key.encode())
    bucket = make_bucket(oss, version)
    oss.clear_requests()

    assert [obj.key for obj in oss2.ObjectIteratorV2(bucket)] == keys
    lists = [r for r in oss.requests if r.kind == "list"]
    assert len(lists) == 25  # oss2's default max-keys is 100
    assert lists[0].query["continuation-token"] == ""
    assert all(r.query["continuation-token"] for r in lists[1:])
    assert all(r.query["encoding-type"] == "url" for r in lists)

    oss.clear_requests()
    assert len(list(oss2.ObjectIteratorV2(bucket, max_keys=1000))) == 2500
    assert oss.count(kind="list") == 3


def test_prefix_delimiter_and_start_after(oss: FakeOss) -> None:
    for key in ["a/1.py", "a/b/2.py", "a/b/c/3.py", "b/4.py", "top.py"]:
        oss.put("dags", key, b"x")
    bucket = make_bucket(oss)

    under_a = list(oss2.ObjectIteratorV2(bucket, prefix="a/", delimiter="/"))
    assert [(o.key, o.is_prefix()) for o in under_a] == [("a/1.py", False), ("a/b/", True)]
    # Paging one entry at a time must neither repeat nor drop a common prefix.
    top = [o.key for o in oss2.ObjectIteratorV2(bucket, delimiter="/", max_keys=1)]
    assert top == ["a/", "b/", "top.py"]
    after = bucket.list_objects_v2(start_after="a/b/c/3.py")
    assert [o.key for o in after.object_list] == ["b/4.py", "top.py"]
    assert [o.key for o in oss2.ObjectIterator(bucket, prefix="a/b/")] == ["a/b/2.py", "a/b/c/3.py"]


def test_listing_metadata(oss: FakeOss) -> None:
    simple = oss.put("dags", "simple.py", b"hello world", last_modified=1_700_000_000.75)
    parts = oss.put("dags", "parts.py", b"0123456789ab", last_modified=1_700_000_100, part_size=5)
    listed = {o.key: o for o in make_bucket(oss).list_objects_v2(fetch_owner=True).object_list}

    assert listed["simple.py"].etag == hashlib.md5(b"hello world").hexdigest().upper()
    assert listed["simple.py"].etag == simple.etag.strip('"')
    assert listed["simple.py"].last_modified == 1_700_000_000  # whole seconds
    assert listed["simple.py"].size == 11
    assert listed["simple.py"].type == "Normal"
    assert listed["simple.py"].owner is not None
    assert listed["parts.py"].type == "Multipart"
    assert listed["parts.py"].etag == parts.etag.strip('"')
    assert listed["parts.py"].etag.endswith("-3")


@pytest.mark.parametrize("version", AUTH_VERSIONS)
def test_awkward_keys_round_trip(oss: FakeOss, version: str) -> None:
    for key in AWKWARD_KEYS:
        oss.put("dags", key, key.encode())
    bucket = make_bucket(oss, version)

    assert sorted(o.key for o in oss2.ObjectIteratorV2(bucket)) == sorted(AWKWARD_KEYS)
    for key in AWKWARD_KEYS:
        assert bucket.get_object(key).read() == key.encode()
        assert bucket.head_object(key).content_length == len(key.encode())
    assert {r.key for r in oss.requests if r.kind == "get"} == set(AWKWARD_KEYS)


def test_bad_listing_arguments(oss: FakeOss) -> None:
    bucket = make_bucket(oss)
    with pytest.raises(oss2.exceptions.InvalidArgument):
        bucket.list_objects_v2(max_keys=1001)
    with pytest.raises(oss2.exceptions.InvalidArgument):
        bucket.list_objects_v2(continuation_token="not-a-token")


# --- objects -------------------------------------------------------------------------------------


def test_head_and_meta(oss: FakeOss) -> None:
    data = b"print('dag')\n"
    stored = oss.put("dags", "dag.py", data, last_modified=1_700_000_000)
    bucket = make_bucket(oss)

    head = bucket.head_object("dag.py")
    assert head.etag == hashlib.md5(data).hexdigest().upper()
    assert head.content_length == len(data)
    assert head.last_modified == 1_700_000_000
    assert head.server_crc == stored.crc64 == crc64_ecma(data)
    assert head.object_type == "Normal"
    assert head.headers["Content-MD5"] == base64.b64encode(hashlib.md5(data).digest()).decode()
    meta = bucket.get_object_meta("dag.py")
    assert (meta.etag, meta.content_length, meta.last_modified) == (
        head.etag,
        len(data),
        1_700_000_000,
    )
    assert bucket.get_bucket_info().name == "dags"


def test_content_md5_knob_and_multipart(oss: FakeOss) -> None:
    oss.put("dags", "simple.py", b"abc")
    oss.put("dags", "parts.py", b"abcdef", part_size=2)
    bucket = make_bucket(oss)
    assert "Content-MD5" in bucket.get_object("simple.py").headers
    assert "Content-MD5" not in bucket.head_object("parts.py").headers
    oss.send_content_md5 = False
    assert "Content-MD5" not in bucket.get_object("simple.py").headers


def test_ranged_get(oss: FakeOss) -> None:
    data = bytes(range(256)) * 4  # 1024 bytes
    oss.put("dags", "blob", data)
    bucket = make_bucket(oss)

    part = bucket.get_object("blob", byte_range=(10, 19))
    assert (part.status, part.content_range) == (206, "bytes 10-19/1024")
    assert part.read() == data[10:20]
    assert part.server_crc == crc64_ecma(data)  # the whole object's CRC, not the range's
    assert "Content-MD5" not in part.headers
    assert bucket.get_object("blob", byte_range=(None, 24)).read() == data[-24:]
    assert bucket.get_object("blob", byte_range=(1000, None)).read() == data[1000:]
    # Out of range: OSS ignores the Range and sends everything with 200 ...
    for span in [(500, 2000), (1024, 2000), (20, 10)]:
        whole = bucket.get_object("blob", byte_range=span)
        assert (whole.status, whole.read()) == (200, data)
    # ... unless asked for standard behaviour.
    standard = {"x-oss-range-behavior": "standard"}
    clamped = bucket.get_object("blob", byte_range=(1000, 2000), headers=standard)
    assert (clamped.status, clamped.read()) == (206, data[1000:])
    with pytest.raises(oss2.exceptions.ServerError) as caught:
        bucket.get_object("blob", byte_range=(1024, 2000), headers=standard)
    assert (caught.value.status, caught.value.code) == (416, "InvalidRange")


def test_crc_checked_by_oss2(oss: FakeOss, tmp_path: Path) -> None:
    data = os.urandom(50_000)
    oss.put("dags", "blob", data)
    bucket = make_bucket(oss, enable_crc=True)

    result = bucket.get_object("blob")
    assert result.read() == data
    assert result.client_crc == result.server_crc
    bucket.get_object_to_file("blob", str(tmp_path / "blob"))  # raises on a CRC mismatch
    oss.corrupt_next_get()
    with pytest.raises(oss2.exceptions.InconsistentError):
        bucket.get_object_to_file("blob", str(tmp_path / "blob"))


def test_put_and_delete_through_oss2(oss: FakeOss) -> None:
    bucket = make_bucket(oss, "v4", enable_crc=True)
    result = bucket.put_object("up/ü.txt", b"payload")  # oss2 checks the returned CRC
    assert result.crc == crc64_ecma(b"payload")
    assert oss.get("dags", "up/ü.txt").content_type == "text/plain"
    with pytest.raises(oss2.exceptions.InvalidDigest):
        bucket.put_object("bad", b"payload", headers={"Content-MD5": "AAAAAAAAAAAAAAAAAAAAAA=="})
    bucket.delete_object("up/ü.txt")
    bucket.delete_object("never-existed")  # OSS answers 204 either way
    assert oss.keys("dags") == []


def test_conditional_get(oss: FakeOss) -> None:
    stored = oss.put("dags", "dag.py", b"x")
    bucket = make_bucket(oss)
    with pytest.raises(oss2.exceptions.NotModified):
        bucket.get_object("dag.py", headers={"If-None-Match": stored.etag})
    with pytest.raises(oss2.exceptions.PreconditionFailed):
        bucket.get_object("dag.py", headers={"If-Match": '"0"'})


def test_missing_bucket_and_key(oss: FakeOss) -> None:
    bucket = make_bucket(oss)
    with pytest.raises(oss2.exceptions.NoSuchKey):
        bucket.get_object("absent.py")
    with pytest.raises(oss2.exceptions.NoSuchKey):  # HEAD: the error comes in x-oss-err
        bucket.head_object("absent.py")
    assert bucket.object_exists("absent.py") is False
    with pytest.raises(oss2.exceptions.NoSuchBucket):
        list(oss2.ObjectIteratorV2(make_bucket(oss, name="nope")))


# --- authentication -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", AUTH_VERSIONS)
def test_wrong_secret(oss: FakeOss, version: str) -> None:
    oss.put("dags", "dag.py", b"x")
    bucket = oss2.Bucket(make_auth(version, secret="WRONG"), oss.endpoint, "dags", region=REGION)
    with pytest.raises(oss2.exceptions.SignatureDoesNotMatch) as caught:
        bucket.get_object("dag.py")
    assert caught.value.status == 403
    assert "StringToSign" in caught.value.details
    with pytest.raises(oss2.exceptions.SignatureDoesNotMatch):
        list(oss2.ObjectIteratorV2(bucket, prefix="a b+c"))


def test_unknown_key_id_and_anonymous(oss: FakeOss) -> None:
    bucket = oss2.Bucket(oss2.Auth("OTHER", SECRET), oss.endpoint, "dags")
    with pytest.raises(oss2.exceptions.ServerError) as caught:
        bucket.list_objects_v2()
    assert (caught.value.status, caught.value.code) == (403, "InvalidAccessKeyId")
    with pytest.raises(oss2.exceptions.AccessDenied):
        oss2.Bucket(oss2.AnonymousAuth(), oss.endpoint, "dags").list_objects_v2()


def test_v4_region_is_checked_when_configured(oss: FakeOss) -> None:
    oss.region = "cn-beijing"
    with pytest.raises(oss2.exceptions.SignatureDoesNotMatch):
        make_bucket(oss, "v4").list_objects_v2()
    assert make_bucket(oss, "v1").list_objects_v2().status == 200


@pytest.mark.parametrize("version", ["v1", "v4"])
def test_sts_token(version: str) -> None:
    with FakeOss(access_key_id=AKID, access_key_secret=SECRET, security_token=TOKEN) as oss:
        oss.put("dags", "dag.py", b"x")

        def bucket(auth: object) -> oss2.Bucket:
            return oss2.Bucket(auth, oss.endpoint, "dags", region=REGION)

        good = bucket(oss2.StsAuth(AKID, SECRET, TOKEN, auth_version=version))
        assert good.get_object("dag.py").read() == b"x"
        assert oss.count(kind="get") == 1
        with pytest.raises(oss2.exceptions.ServerError) as caught:
            bucket(oss2.StsAuth(AKID, SECRET, "STS.OTHER", auth_version=version)).head_object("x")
        assert (caught.value.status, caught.value.code) == (403, "InvalidSecurityToken")
        with pytest.raises(oss2.exceptions.ServerError) as caught:
            bucket(oss2.Auth(AKID, SECRET)).get_object("dag.py")
        assert (caught.value.status, caught.value.code) == (403, "InvalidAccessKeyId")


def test_credential_rotation(oss: FakeOss) -> None:
    old = make_bucket(oss)
    oss.set_credentials("NEWID", "NEWSECRET")
    with pytest.raises(oss2.exceptions.ServerError, match="InvalidAccessKeyId"):
        old.list_objects_v2()
    new = oss2.Bucket(oss2.Auth("NEWID", "NEWSECRET"), oss.endpoint, "dags")
    assert new.list_objects_v2().status == 200


def test_request_time_too_skewed(oss: FakeOss) -> None:
    # oss2 always signs "now", so sign by hand to send a stale Date.
    date = email.utils.formatdate(time.time() - 3600, usegmt=True)
    to_sign = f"GET\n\n\n{date}\n/dags/"
    signature = base64.b64encode(hmac.new(b"SECRET", to_sign.encode(), "sha1").digest()).decode()
    headers = {"Date": date, "Authorization": f"OSS {AKID}:{signature}"}
    response = requests.get(f"{oss.endpoint}/dags/", headers=headers, timeout=5)
    assert response.status_code == 403
    assert b"<Code>RequestTimeTooSkewed</Code>" in response.content
    oss.max_clock_skew_seconds = None
    assert requests.get(f"{oss.endpoint}/dags/", headers=headers, timeout=5).status_code == 200


# --- fault knobs --------------------------------------------------------------------------------


def test_fail_next(oss: FakeOss) -> None:
    oss.put("dags", "dag.py", b"x")
    bucket = make_bucket(oss)
    oss.fail_next(1, status=500)
    with pytest.raises(oss2.exceptions.ServerError) as caught:
        bucket.get_object("dag.py")
    assert (caught.value.status, caught.value.code) == (500, "InternalError")
    assert bucket.get_object("dag.py").read() == b"x"  # oss2 itself never retries

    oss.fail_next(2, status=503, kind="get")
    assert bucket.list_objects_v2().status == 200  # not a get: unaffected
    for _ in range(2):
        with pytest.raises(oss2.exceptions.ServerError, match="503"):
            bucket.get_object("dag.py")
    assert bucket.get_object("dag.py").read() == b"x"


def test_iterators_retry_5xx_three_times(oss: FakeOss) -> None:
    oss.put("dags", "dag.py", b"x")
    bucket = make_bucket(oss)
    oss.fail_next(2, status=503, kind="list")
    assert [o.key for o in oss2.ObjectIteratorV2(bucket)] == ["dag.py"]
    oss.fail_next(3, status=503, kind="list")
    with pytest.raises(oss2.exceptions.ServerError):
        list(oss2.ObjectIteratorV2(bucket))


def test_fail_matching(oss: FakeOss) -> None:
    oss.put("dags", "good.py", b"g")
    oss.put("dags", "bad.py", b"b")
    bucket = make_bucket(oss)
    oss.fail_matching(lambda r: r.key == "bad.py", status=503, code="SlowDown")
    assert bucket.get_object("good.py").read() == b"g"
    for _ in range(2):
        with pytest.raises(oss2.exceptions.ServerError, match="SlowDown"):
            bucket.get_object("bad.py")
    oss.clear_faults()
    assert bucket.get_object("bad.py").read() == b"b"


def test_reset_next(oss: FakeOss) -> None:
    oss.put("dags", "dag.py", b"x")
    bucket = make_bucket(oss)
    oss.reset_next(1)
    with pytest.raises(oss2.exceptions.RequestError):
        bucket.head_object("dag.py")
    assert bucket.head_object("dag.py").status == 200


def test_truncate_next_get(oss: FakeOss, tmp_path: Path) -> None:
    data = os.urandom(20_000)
    oss.put("dags", "blob", data)
    bucket = make_bucket(oss)
    oss.truncate_next_get(2)
    # The error surfaces while reading the body, from requests rather than oss2.
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        bucket.get_object("blob").read()
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        bucket.get_object_to_file("blob", str(tmp_path / "blob"))
    assert bucket.get_object("blob").read() == data


def test_latency(oss: FakeOss) -> None:
    oss.put("dags", "dag.py", b"x")
    bucket = make_bucket(oss)
    oss.latency = 0.1
    started = time.monotonic()
    bucket.head_object("dag.py")
    assert time.monotonic() - started >= 0.1


def test_keep_alive_is_fast(oss: FakeOss) -> None:
    # With Nagle's algorithm on, each request would stall ~40 ms on the delayed ACK.
    oss.put("dags", "dag.py", b"x")
    bucket = make_bucket(oss)
    started = time.monotonic()
    for _ in range(100):
        bucket.get_object("dag.py").read()
    assert time.monotonic() - started < 2.0


def test_requests_are_recorded(oss: FakeOss) -> None:
    oss.put("dags", "a b.py", b"x")
    bucket = make_bucket(oss)
    bucket.get_object("a b.py").read()
    bucket.head_object("a b.py")
    bucket.list_objects_v2(prefix="a")
    first = oss.requests[0]
    assert first == RecordedRequest("GET", "/dags/a b.py", {})
    assert (first.bucket, first.key, first.kind) == ("dags", "a b.py", "get")
    assert oss.count(method="HEAD") == oss.count(kind="head") == 1
    assert oss.requests[-1].query["prefix"] == "a"
    oss.clear_requests()
    assert oss.requests == []


def test_stop_closes_kept_alive_connections() -> None:
    with FakeOss() as oss:
        oss.put("dags", "dag.py", b"x")
        bucket = make_bucket(oss)
        bucket.get_object("dag.py").read()  # leaves a pooled keep-alive connection
    assert not [t for t in threading.enumerate() if t.name.startswith("FakeOss")]
    with pytest.raises(oss2.exceptions.RequestError):
        bucket.get_object("dag.py")
