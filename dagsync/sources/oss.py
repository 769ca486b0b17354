"""Alibaba Cloud OSS through the oss2 SDK: a paged ListObjectsV2 is the listing, GetObject the read.

Clients: requests' Session is not documented as thread-safe, so every oss2 ``Bucket`` (each with
its own ``Session`` of one connection) is used by one thread at a time, checked out of a small
pool that holds at most ``--concurrency`` + 1 of them; connections stay alive between passes.
Credentials are re-read from ``--oss-access-key-secret-file`` at the start of every pass; when
they change, idle clients are dropped and new ones sign with the new key.

Downloads are streamed in chunks with ``If-Match`` on the listed ETag (a replaced object fails
the pass instead of publishing bytes that do not match the manifest), verified against the
whole-object CRC-64 (always sent) and Content-MD5 (simple uploads), and resumed with a Range
request from the last byte received when the connection breaks mid-body.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar
from xml.etree import ElementTree

import crcmod
import oss2
import requests
import urllib3
from oss2.credentials import StaticCredentialsProvider

from dagsync.config import Config
from dagsync.errors import ConfigError, SourceError
from dagsync.redact import read_secret_file, register_secret
from dagsync.sources.objectstore import ObjectStoreSource, RemoteObject
from dagsync.timing import remaining

if TYPE_CHECKING:
    from oss2.models import GetObjectResult, ListObjectsV2Result

log = logging.getLogger(__name__)

T = TypeVar("T")

UNDECODABLE = "\ufffd"  # what oss2 puts where a listed name's bytes are not UTF-8
LIST_PAGE_KEYS = 1000  # the most ListObjectsV2 returns per page
CHUNK_BYTES = 256 * 1024
REQUEST_TIMEOUT_SECONDS = 60.0  # per connect and per socket read, never past the deadline
AUTH_CODES = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidSecurityToken",
        "SecurityTokenExpired",
        "RequestTimeTooSkewed",
    }
)
# CRC-64/ECMA-182 exactly as oss2.utils.Crc64 sets it up; building the table takes longer than
# checking a 10 KB file, so it is built once and copied for every download.
_CRC64 = crcmod.Crc(0x142F0E1EBA9EA3693, initCrc=0, rev=True, xorOut=0xFFFFFFFFFFFFFFFF)
CREDENTIAL_HINT = (
    "check OSS_ACCESS_KEY_ID/OSS_ACCESS_KEY_SECRET (and OSS_SESSION_TOKEN) or "
    "--oss-access-key-id/--oss-access-key-secret-file"
)


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    access_key_secret: str = field(repr=False)
    security_token: str = field(default="", repr=False)


def is_transient(exc: BaseException) -> bool:
    """Errors worth another try: 5xx/429, connection failures, a body cut short."""
    if isinstance(exc, oss2.exceptions.RequestError):  # reset, refused, timeout
        return True
    if isinstance(exc, requests.exceptions.RequestException | urllib3.exceptions.HTTPError):
        return True  # raised while reading a body, outside oss2's wrapper
    if isinstance(exc, oss2.exceptions.ServerError):
        return exc.status >= 500 or exc.status == 429
    return False


class OssSource(ObjectStoreSource):
    """Objects of one OSS bucket under a prefix."""

    name = "oss"
    is_transient = staticmethod(is_transient)

    def __init__(self, config: Config, cache_dir: Path) -> None:
        super().__init__(config, cache_dir)
        endpoint = (config.oss_endpoint or "").strip()
        if not endpoint:
            raise ConfigError("--oss-endpoint is required with --source oss", "oss-endpoint")
        if "://" not in endpoint:
            endpoint = "https://" + endpoint
        scheme = endpoint.split("://", 1)[0].lower()
        if scheme not in ("http", "https") or not oss2.utils.is_valid_endpoint(endpoint):
            raise ConfigError(f"--oss-endpoint: invalid endpoint {endpoint!r}", "oss-endpoint")
        bucket = (config.oss_bucket or "").strip()
        if not bucket:
            raise ConfigError("--oss-bucket is required with --source oss", "oss-bucket")
        if not oss2.utils.is_valid_bucket_name(bucket):
            raise ConfigError(f"--oss-bucket: invalid bucket name {bucket!r}", "oss-bucket")
        prefix = config.oss_prefix.strip().lstrip("/")
        self.endpoint = endpoint.rstrip("/")
        self.bucket_name = bucket
        # A prefix names a folder: "dags" publishes dags/a.py as a.py, never dags-old/b.py.
        self.prefix = prefix.rstrip("/") + "/" if prefix.strip("/") else ""
        self.region = config.oss_region
        self._lock = threading.Lock()
        self._credentials = self._read_credentials(startup=True)
        self._generation = 0
        self._idle: list[tuple[int, oss2.Bucket]] = []

    def describe(self) -> str:
        return f"oss://{self.bucket_name}/{self.prefix} at {self.endpoint}"

    # -- credentials and clients -------------------------------------------------------------

    def _read_credentials(self, startup: bool = False) -> Credentials:
        cfg = self.config
        access_key_id = cfg.oss_access_key_id or cfg.oss_env_access_key_id
        secret_file = cfg.oss_access_key_secret_file
        if secret_file is not None:
            flag = "oss-access-key-secret-file"
            try:
                secret = read_secret_file(secret_file)
            except OSError as exc:
                message = f"--{flag}: cannot read {secret_file}: {exc.strerror}"
                raise (ConfigError(message, flag) if startup else SourceError(message)) from None
            if not secret:
                message = f"--{flag}: {secret_file} is empty"
                raise ConfigError(message, flag) if startup else SourceError(message)
            token = ""
        else:
            secret = cfg.oss_env_access_key_secret or ""
            token = cfg.oss_env_session_token or ""
        if not access_key_id:
            raise ConfigError(
                "--source oss: missing credentials: set OSS_ACCESS_KEY_ID (or "
                "--oss-access-key-id) and OSS_ACCESS_KEY_SECRET",
                "oss-access-key-id",
            )
        if not secret:
            raise ConfigError(
                "--source oss: missing credentials: set OSS_ACCESS_KEY_SECRET (or "
                "--oss-access-key-secret-file)",
                "oss-access-key-secret-file",
            )
        for value in (access_key_id, secret, token):
            register_secret(value or None)
        return Credentials(access_key_id, secret, token)

    def _refresh_credentials(self) -> None:
        """Re-read the secret file (rotation); a change replaces every idle client."""
        if self.config.oss_access_key_secret_file is None:
            return
        fresh = self._read_credentials()
        with self._lock:
            if fresh == self._credentials:
                return
            self._credentials = fresh
            self._generation += 1
            stale, self._idle = self._idle, []
        log.info("credentials changed file=%s", self.config.oss_access_key_secret_file)
        for _generation, bucket in stale:
            bucket.session.session.close()

    def _new_bucket(self, credentials: Credentials) -> oss2.Bucket:
        provider = StaticCredentialsProvider(
            credentials.access_key_id, credentials.access_key_secret, credentials.security_token
        )
        auth = oss2.ProviderAuthV4(provider) if self.region else oss2.ProviderAuth(provider)
        session = oss2.Session(pool_size=1)  # one thread at a time uses it: see the docstring
        http = session.session
        # requests re-reads the proxy and CA-bundle variables on every request (~0.5 ms, more
        # than the rest of a small download): read them once, for this endpoint (NO_PROXY
        # included), and stop it.
        found = http.merge_environment_settings(self.endpoint, {}, None, None, None)
        http.proxies, http.verify, http.trust_env = found["proxies"], found["verify"], False
        return oss2.Bucket(
            auth,
            self.endpoint,
            self.bucket_name,
            session=session,
            connect_timeout=REQUEST_TIMEOUT_SECONDS,
            app_name="dagsync",
            enable_crc=False,  # verified here, also across resumed ranges
            region=self.region,
        )

    @contextlib.contextmanager
    def _client(self, deadline: float, what: str) -> Iterator[oss2.Bucket]:
        with self._lock:
            generation, credentials = self._generation, self._credentials
            bucket = None
            while self._idle and bucket is None:
                idle_generation, candidate = self._idle.pop()
                if idle_generation == generation:
                    bucket = candidate
        if bucket is None:
            bucket = self._new_bucket(credentials)
        bucket.timeout = min(REQUEST_TIMEOUT_SECONDS, remaining(deadline, what))
        try:
            yield bucket
        finally:
            with self._lock:
                keep = generation == self._generation and len(self._idle) <= self.config.concurrency
                if keep:
                    self._idle.append((generation, bucket))
            if not keep:
                bucket.session.session.close()

    def _call(self, call: Callable[[oss2.Bucket], T], deadline: float, what: str) -> T:
        def attempt() -> T:
            with self._client(deadline, what) as bucket:
                return call(bucket)

        return self._retried(attempt, deadline, what)

    # -- listing -----------------------------------------------------------------------------

    def list_objects(self, deadline: float) -> Iterable[RemoteObject]:
        self._refresh_credentials()
        subpath = self.selector.subpath
        list_prefix = self.prefix + (subpath + "/" if subpath else "")
        token = ""
        while True:
            page = self._list_page(list_prefix, token, deadline)
            for info in page.object_list:
                key: str = info.key
                relative = key[len(self.prefix) :] if key.startswith(self.prefix) else ""
                if not relative or relative.endswith("/"):
                    continue  # the prefix itself, or a "folder/" marker object
                yield RemoteObject(relative, int(info.size), info.etag, handle=key)
            if not page.is_truncated:
                return
            token = page.next_continuation_token

    def _list_page(self, prefix: str, token: str, deadline: float) -> ListObjectsV2Result:
        try:
            return self._call(
                lambda bucket: bucket.list_objects_v2(
                    prefix=prefix, continuation_token=token, max_keys=LIST_PAGE_KEYS
                ),
                deadline,
                f"listing of {self.describe()}",
            )
        except (oss2.exceptions.OssError, requests.exceptions.RequestException) as exc:
            raise self._error(exc, None) from None
        except urllib3.exceptions.HTTPError as exc:  # a listing body cut short
            raise self._error(exc, None) from None
        except (ElementTree.ParseError, RuntimeError, ValueError) as exc:
            # oss2 parses the page itself: malformed XML, a missing tag, a size not a number.
            raise SourceError(
                f"{self.describe()}: the service answered a listing that is not valid OSS XML "
                f"({type(exc).__name__}: {str(exc)[:120]})",
                None,
            ) from None

    # -- downloads ---------------------------------------------------------------------------

    def download(self, obj: RemoteObject, out: BinaryIO, deadline: float) -> None:
        key = str(obj.handle)
        progress = _Progress(obj.size, _CRC64.copy())

        def attempt(bucket: oss2.Bucket) -> None:
            self._read_into(bucket, obj, key, out, progress, deadline)

        try:
            self._call(attempt, deadline, f"download of {key}")
        except SourceError:
            raise
        except (oss2.exceptions.OssError, requests.exceptions.RequestException) as exc:
            raise self._error(exc, key) from None
        except urllib3.exceptions.HTTPError as exc:
            raise self._error(exc, key) from None
        progress.verify(f"{self.describe()}: {key}", key)

    def _read_into(
        self,
        bucket: oss2.Bucket,
        obj: RemoteObject,
        key: str,
        out: BinaryIO,
        progress: _Progress,
        deadline: float,
    ) -> None:
        headers = {"If-Match": f'"{obj.token}"'}
        resume_at = progress.received
        if resume_at:
            # The connection broke mid-body: ask only for the rest, and insist on a 206.
            headers["Range"] = f"bytes={resume_at}-"
            headers["x-oss-range-behavior"] = "standard"
        result: GetObjectResult = bucket.get_object(key, headers=headers)
        with contextlib.closing(result):  # a body left unread must not go back to the pool
            where = f"{self.describe()}: {key}"
            if resume_at and not (result.content_range or "").startswith(f"bytes {resume_at}-"):
                raise SourceError(f"{where}: the service ignored the resume range", key)
            progress.start(result, where, key)
            while True:
                self.check_running(deadline, f"download of {key}")
                chunk = result.read(CHUNK_BYTES)
                if not chunk:
                    break
                out.write(chunk)
                progress.update(chunk)

    def _error(self, exc: BaseException, key: str | None) -> SourceError:
        """One line naming the bucket/endpoint (and the key), never a credential."""
        where = f"{self.describe()}: {key}" if key else self.describe()
        if isinstance(exc, oss2.exceptions.ServerError):
            code = exc.code or str(exc.status)
            detail = f"{code} (HTTP {exc.status}, request id {exc.request_id or '-'})"
            if exc.status == 403 and (exc.code in AUTH_CODES or not exc.code):
                return SourceError(f"{where}: access denied: {detail}; {CREDENTIAL_HINT}", key)
            if exc.code == "NoSuchBucket":
                return SourceError(f"{where}: bucket {self.bucket_name!r} does not exist", key)
            if exc.code == "NoSuchKey" and key and UNDECODABLE in key:
                # oss2 decodes listed names with errors="replace": the name held bytes that
                # are not UTF-8, and the decoded name is not the object's.
                return SourceError(
                    f"{where}: the object's name is not valid UTF-8 (shown with U+FFFD where "
                    "its bytes do not decode), so it cannot be read by name; rename the object",
                    key,
                )
            if exc.code == "NoSuchKey" or exc.status == 412:
                return SourceError(f"{where}: changed during the sync ({detail}); retry", key)
            return SourceError(f"{where}: {detail}: {exc.message}", key)
        cause = exc.exception if isinstance(exc, oss2.exceptions.RequestError) else exc
        return SourceError(f"{where}: request failed: {_short(cause)}", key)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for _generation, bucket in idle:
            bucket.session.session.close()


def _short(exc: BaseException) -> str:
    """The gist of a network error (requests nests the OS error three levels deep)."""
    text = str(exc)
    found = _OS_ERROR.search(text) or _OS_ERROR_REPR.search(text)
    if found:
        return f"{type(exc).__name__}: {found.group(1)}"
    return f"{type(exc).__name__}: {text[:200]}"


_OS_ERROR = re.compile(r"\[Errno \d+\] ([^\"'()]+)")
_OS_ERROR_REPR = re.compile(r"\w+Error\(\d+, '([^']+)'\)")


class _Progress:
    """What one download has received so far, across resumed attempts, and its checks."""

    def __init__(self, size: int, crc: Any) -> None:
        self.size = size
        self.received = 0
        self.crc = crc
        self.server_crc: int | None = None
        self.content_md5: str | None = None
        self.md5: hashlib._Hash | None = None

    def start(self, result: GetObjectResult, where: str, key: str) -> None:
        if self.received == 0:
            # Content-MD5 covers the whole object: only a whole-object reply carries it.
            self.content_md5 = result.headers.get("Content-MD5")
            self.md5 = hashlib.md5(usedforsecurity=False) if self.content_md5 else None
        server_crc = result.server_crc
        if self.server_crc is not None and server_crc != self.server_crc:
            raise SourceError(f"{where}: changed during the download (CRC-64 differs)", key)
        self.server_crc = server_crc
        announced = self.received + int(result.content_length or 0)
        if announced != self.size:
            raise SourceError(
                f"{where}: listed with {self.size} bytes but served {announced} under the "
                "same ETag (If-Match held): the listing contradicts the object",
                key,
            )

    def update(self, chunk: bytes) -> None:
        self.received += len(chunk)
        self.crc.update(chunk)
        if self.md5 is not None:
            self.md5.update(chunk)

    def verify(self, where: str, key: str) -> None:
        if self.received != self.size:
            raise SourceError(f"{where}: got {self.received} bytes, expected {self.size}", key)
        if self.server_crc is not None and self.crc.crcValue != self.server_crc:
            raise SourceError(
                f"{where}: CRC-64 mismatch (got {self.crc.crcValue}, service says "
                f"{self.server_crc})",
                key,
            )
        if self.md5 is not None and self.content_md5 is not None:
            got = base64.b64encode(self.md5.digest()).decode("ascii")
            if got != self.content_md5:
                raise SourceError(
                    f"{where}: Content-MD5 mismatch (got {got}, service says {self.content_md5})",
                    key,
                )
