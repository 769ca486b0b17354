"""Amazon S3 and S3-compatible stores (MinIO, Ceph, OSS's S3 API) through boto3.

A paged ListObjectsV2 is the listing and the ETag the change token; GetObject with ``If-Match``
on the listed ETag is the read, so an object replaced mid-sync fails that pass (the next one
relists). Verification: the size always; the MD5 of the body against a single-part ETag (a
32-hex ETag that is not SSE-KMS/SSE-C); multipart ETags (``…-N``) cannot be checked that way,
so they rely on the size, ``If-Match`` and, where the object was stored with one, the checksum
that ``ChecksumMode=ENABLED`` makes the service return and botocore verify.

Credentials: the standard AWS chain, read by botocore (environment, shared credentials and
config files, ``AWS_PROFILE``, web identity / IRSA, container and instance metadata). The
shared files are compared at the start of every pass; when they changed, a new session and
client are built (the web identity token file botocore re-reads on its own). botocore's own
retries are off: transient errors are retried by :func:`call_with_retries`, bounded by the
pass's deadline. A low-level boto3 client is thread-safe, so one serves all download threads.

Hidden knob (``--source-option``): ``addressing_style=path|virtual`` (botocore picks by default;
MinIO or Ceph reached by host name usually want ``path``; AWS_CONFIG_FILE's ``s3`` section is
honoured too).
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

import boto3
import botocore.session
import urllib3
from botocore.config import Config as BotoConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    FlexibleChecksumError,
    HTTPClientError,
    IncompleteReadError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from dagsync.config import Config
from dagsync.errors import ConfigError, SourceError
from dagsync.sources.cloudstore import (
    CredentialFiles,
    HashingWriter,
    check_bucket_name,
    check_http_url,
    folder_prefix,
    listing_prefix,
    register_secrets,
    relative_key,
)
from dagsync.sources.objectstore import ObjectStoreSource, RemoteObject

log = logging.getLogger(__name__)
# botocore's DEBUG records dump every request's headers (the access key id with them) and are
# far too many; its INFO lines (which credential provider it used) stay.
for _name in ("botocore", "boto3", "s3transfer"):
    logging.getLogger(_name).setLevel(logging.INFO)

CHUNK_BYTES = 256 * 1024
LIST_PAGE_KEYS = 1000
CONNECT_TIMEOUT_SECONDS = 10.0
READ_TIMEOUT_SECONDS = 60.0
AUTH_CODES = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "RequestTimeTooSkewed",
        "AllAccessDisabled",
    }
)
TRANSIENT_CODES = frozenset(
    {"SlowDown", "RequestTimeout", "Throttling", "ThrottlingException", "InternalError"}
)
CREDENTIAL_HINT = (
    "check the AWS credential chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE and "
    "the shared credentials file, or the IRSA role annotation of the ServiceAccount)"
)
_MD5_ETAG = re.compile(r"[0-9a-fA-F]{32}")
_CREDENTIAL_ERRORS = tuple(
    getattr(botocore.exceptions, name)
    for name in (
        "NoCredentialsError",
        "PartialCredentialsError",
        "CredentialRetrievalError",
        "ProfileNotFound",
        "TokenRetrievalError",
        "SSOError",
    )
    if hasattr(botocore.exceptions, name)
)


class _Truncated(Exception):
    """Fewer bytes arrived than the object holds."""


def is_transient(exc: BaseException) -> bool:
    """Worth another try: 5xx/429/throttling, connection failures, a body cut short."""
    if isinstance(exc, _Truncated | HTTPClientError | BotoConnectionError | IncompleteReadError):
        return True
    if isinstance(exc, urllib3.exceptions.HTTPError):
        return True
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        code = exc.response.get("Error", {}).get("Code", "")
        return status >= 500 or status == 429 or code in TRANSIENT_CODES
    return False


class S3Source(ObjectStoreSource):
    """Objects of one S3 bucket under a prefix."""

    name = "s3"
    is_transient = staticmethod(is_transient)

    def __init__(self, config: Config, cache_dir: Path) -> None:
        super().__init__(config, cache_dir)
        self.bucket = check_bucket_name(config.s3_bucket, "s3-bucket", "s3")
        self.endpoint_url = check_http_url(
            config.s3_endpoint_url, "s3-endpoint-url", "https://minio.example:9000"
        )
        self.region = config.s3_region
        self.prefix = folder_prefix(config.s3_prefix)
        style = dict(config.source_option).get("addressing_style")
        if style not in (None, "path", "virtual", "auto"):
            raise ConfigError(
                "--source-option addressing_style: expected path, virtual or auto", "source-option"
            )
        self.addressing_style = style
        self._lock = threading.Lock()
        self._client: Any = None
        self._files: CredentialFiles | None = None

    def describe(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"s3://{self.bucket}/{self.prefix}{where}"

    # -- client and credentials --------------------------------------------------------------

    def _build(self) -> Any:
        core = botocore.session.get_session()
        # Timestamps stay strings (as the AWS CLI does): parsing every listed object's and every
        # download's LastModified with dateutil costs more CPU than the rest of a small GET.
        core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=str)
        session = boto3.session.Session(botocore_session=core, region_name=self.region)
        config = BotoConfig(
            max_pool_connections=max(10, self.config.concurrency + 2),
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            read_timeout=READ_TIMEOUT_SECONDS,
            retries={"total_max_attempts": 1},  # dagsync retries, within the deadline
            user_agent_extra="dagsync",
            s3={"addressing_style": self.addressing_style} if self.addressing_style else None,
        )
        credentials = session.get_credentials()
        if credentials is None:
            raise SourceError(f"{self.describe()}: no AWS credentials found; {CREDENTIAL_HINT}")
        frozen = credentials.get_frozen_credentials()  # may ask STS (web identity)
        register_secrets(frozen.access_key, frozen.secret_key, frozen.token)
        files = [
            Path(str(core.get_config_variable(name))).expanduser()
            for name in ("credentials_file", "config_file")
        ]
        if self._files is None:
            self._files = CredentialFiles(lambda: files)
        return session.client("s3", endpoint_url=self.endpoint_url, config=config)

    def _refresh(self) -> Any:
        """The client for this pass: built anew when a shared credentials file changed."""
        with self._lock:
            stale = self._client is not None and self._files is not None and self._files.changed()
            if self._client is None or stale:
                old, self._client = self._client, None
                if old is not None:
                    old.close()
                try:
                    self._client = self._build()
                except _CREDENTIAL_ERRORS as exc:
                    raise self._error(exc, None) from None
            return self._client

    # -- listing -----------------------------------------------------------------------------

    def list_objects(self, deadline: float) -> Iterable[RemoteObject]:
        client = self._refresh()
        request: dict[str, Any] = {
            "Bucket": self.bucket,
            "Prefix": listing_prefix(self.prefix, self.selector.subpath),
            "MaxKeys": LIST_PAGE_KEYS,
        }
        what = f"listing of {self.describe()}"
        while True:
            try:
                page = self._retried(lambda: client.list_objects_v2(**request), deadline, what)
            except (ClientError, BotoCoreError, urllib3.exceptions.HTTPError) as exc:
                raise self._error(exc, None) from None
            for item in page.get("Contents", ()):
                key: str = item["Key"]
                rel = relative_key(key, self.prefix)
                if rel is not None:
                    etag = str(item.get("ETag", "")).strip('"')
                    yield RemoteObject(rel, int(item["Size"]), etag, handle=key)
            if not page.get("IsTruncated"):
                return
            request["ContinuationToken"] = page["NextContinuationToken"]

    # -- downloads ---------------------------------------------------------------------------

    def download(self, obj: RemoteObject, out: BinaryIO, deadline: float) -> None:
        key = str(obj.handle)
        client = self._client or self._refresh()
        writer = HashingWriter(out, (), lambda: self.check_running(deadline, f"download of {key}"))
        md5s: list[Any] = []
        plain = [False]  # whether a 32-hex ETag is the body's MD5 (not SSE-KMS or SSE-C)

        def attempt() -> None:
            md5s[:] = [hashlib.md5(usedforsecurity=False)]
            writer.restart(md5s)
            plain[0] = self._read_into(client, obj, key, writer)

        try:
            self._retried(attempt, deadline, f"download of {key}")
        except (ClientError, BotoCoreError, urllib3.exceptions.HTTPError, _Truncated) as exc:
            raise self._error(exc, key) from None
        etag = obj.token
        if plain[0] and _MD5_ETAG.fullmatch(etag):
            got = md5s[0].hexdigest()
            if got != etag.lower():
                raise SourceError(
                    f"{self.describe()}: {key}: MD5 mismatch (got {got}, ETag says {etag})", key
                )

    def _read_into(self, client: Any, obj: RemoteObject, key: str, writer: HashingWriter) -> bool:
        """Stream the object into ``writer``; True when its ETag may be its MD5."""
        conditions = {"IfMatch": f'"{obj.token}"'} if obj.token else {}  # some stores list none
        response = client.get_object(
            Bucket=self.bucket, Key=key, ChecksumMode="ENABLED", **conditions
        )
        body = response["Body"]
        complete = False
        try:
            if int(response.get("ContentLength", -1)) != obj.size:
                raise SourceError(
                    f"{self.describe()}: {key}: listed with {obj.size} bytes but served "
                    f"{response.get('ContentLength')}; changed during the sync",
                    key,
                )
            encrypted = response.get("ServerSideEncryption", "").startswith("aws:kms") or bool(
                response.get("SSECustomerAlgorithm")
            )
            for chunk in body.iter_chunks(CHUNK_BYTES):
                writer.write(chunk)
            complete = True
        finally:
            if not complete:
                body.close()  # a half-read connection must not go back to the pool
        # Read to the end, the connection went back to the pool by itself (close() drops it).
        if writer.written != obj.size:
            raise _Truncated(f"got {writer.written} bytes, expected {obj.size}")
        return not encrypted

    # -- errors ------------------------------------------------------------------------------

    def _error(self, exc: BaseException, key: str | None) -> SourceError:
        """One line naming the bucket (and key), never a credential."""
        where = f"{self.describe()}: {key}" if key else self.describe()
        if isinstance(exc, ClientError):
            meta = exc.response.get("ResponseMetadata", {})
            status = meta.get("HTTPStatusCode")
            code = exc.response.get("Error", {}).get("Code") or str(status)
            detail = f"{code} (HTTP {status}, request id {meta.get('RequestId') or '-'})"
            if code in AUTH_CODES or status in (401, 403):
                return SourceError(f"{where}: access denied: {detail}; {CREDENTIAL_HINT}", key)
            if code == "NoSuchBucket":
                return SourceError(f"{where}: bucket {self.bucket!r} does not exist", key)
            if code in ("NoSuchKey", "PreconditionFailed") or status == 412:
                return SourceError(f"{where}: changed during the sync ({detail}); retry", key)
            if code in ("PermanentRedirect", "AuthorizationHeaderMalformed") or status == 301:
                region = meta.get("HTTPHeaders", {}).get("x-amz-bucket-region", "another region")
                return SourceError(
                    f"{where}: bucket {self.bucket!r} is in {region}: set --s3-region", key
                )
            return SourceError(f"{where}: {detail}", key)
        if isinstance(exc, _CREDENTIAL_ERRORS):
            return SourceError(f"{where}: AWS credentials: {exc}; {CREDENTIAL_HINT}", key)
        if isinstance(exc, FlexibleChecksumError):
            return SourceError(f"{where}: checksum mismatch ({exc})", key)
        if isinstance(exc, _Truncated):
            return SourceError(f"{where}: {exc}", key)
        return SourceError(f"{where}: request failed: {type(exc).__name__}: {exc}"[:400], key)

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()
