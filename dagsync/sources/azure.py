"""Azure Files through azure-storage-file-share: a share directory's tree as an object store.

Azure lists one directory level per call, so the tree is walked by a pool of ``--concurrency``
threads, each listing one directory (all its pages) and handing sub-directories back to the
pool: a deep tree costs about one round trip per level, not one per folder in series.

The change token is the file's ETag, which the listing (``include=Etag``) and every GET carry
alike. Downloads stream in ``CHUNK_BYTES`` ranged GETs, so memory stays flat. The stored
Content-MD5, when the file has one, is checked without an extra HEAD: the service sends it on
ranged GETs as ``x-ms-content-md5`` (``Content-MD5`` on an un-ranged GET), read from the raw
response through ``raw_response_hook`` because the SDK hides it from ``properties``. Size is
always checked, and a file whose ETag moved since the listing fails the sync (the next one
relists). The SDK retries 5xx and dropped connections itself (``SDK_RETRIES``, a short
constant wait); what it gives up on or does not retry at all (a truncated body) dagsync retries
with the store pipeline's ``ObjectStoreSource._retried``. Socket timeouts share the time left,
so all of it stays within --sync-timeout.

Hidden tuning knobs (``--source-option KEY=VALUE``, for tests and benchmarks; not documented):
``page_size`` (listing entries per request, 1..5000; default the service's 5000) and
``retry_backoff`` (seconds the SDK waits between its own retries; default 1).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar, TypeVar

import requests
from azure.core.credentials import AzureSasCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.fileshare import LinearRetry, ShareClient
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from dagsync.config import Config
from dagsync.errors import ConfigError, LimitExceeded, SourceError, SyncTimeout, UnsafePath
from dagsync.redact import redact
from dagsync.sources.azure_auth import AUTH_HINTS, credential_route, register_connection_string
from dagsync.sources.objectstore import Cancelled, ObjectStoreSource, RemoteObject
from dagsync.timing import remaining

if TYPE_CHECKING:
    from azure.core.pipeline import PipelineResponse

log = logging.getLogger(__name__)
# The SDK's HTTP logging policy logs every request URL at INFO, SAS signature included.
logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)

CHUNK_BYTES = 4 * 1024 * 1024
MAX_PAGE_SIZE = 5000
CONNECT_TIMEOUT_SECONDS = 10.0
READ_TIMEOUT_SECONDS = 60.0
SDK_RETRIES = 3
DEFAULT_RETRY_BACKOFF_SECONDS = 1.0
_BAD_NAME_CHARS = ("/", "\\", "\x00")
T = TypeVar("T")


def _int_option(options: dict[str, str], key: str, low: int, high: int) -> int | None:
    if key not in options:
        return None
    try:
        value = int(options[key])
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ConfigError(f"--source-option {key}: expected {low}..{high}", "source-option")
    return value


class _Truncated(Exception):
    """Fewer bytes arrived than the file holds."""


# What _with_retries catches; _transient decides which of these are worth another attempt.
_RETRYABLE = (_Truncated, ServiceRequestError, ServiceResponseError, HttpResponseError)


def _transient(exc: BaseException) -> bool:
    if not isinstance(exc, _RETRYABLE):
        return False  # ours (verification, unsafe names, timeouts) or a bug: never retried
    if isinstance(exc, ClientAuthenticationError | ResourceNotFoundError | ResourceModifiedError):
        return False
    if isinstance(exc, _Truncated | ServiceRequestError | ServiceResponseError):
        return True
    status = getattr(exc, "status_code", None)
    interrupted = "stream interrupted" in str(exc).lower()
    return interrupted or status is None or status in (408, 429) or status >= 500


class AzureSource(ObjectStoreSource):
    """Azure Files: a directory of a share, listed concurrently, files by ETag."""

    name: ClassVar[str] = "azure"
    is_transient = staticmethod(_transient)

    def __init__(self, config: Config, cache_dir: Path) -> None:
        super().__init__(config, cache_dir)
        if not config.azure_share:
            raise ConfigError("--azure-share is required for --source azure", "azure-share")
        self.share_name = config.azure_share
        self.credential = credential_route(config)
        options = dict(config.source_option)
        self.page_size = _int_option(options, "page_size", 1, MAX_PAGE_SIZE)
        try:
            self.backoff = float(options.get("retry_backoff", DEFAULT_RETRY_BACKOFF_SECONDS))
        except ValueError:
            self.backoff = -1.0
        if not 0 <= self.backoff <= 60:
            raise ConfigError("--source-option retry_backoff: expected 0..60 s", "source-option")
        # Everything below the share that is published: --azure-path, then --subpath (listing
        # only the sub-folder; keys keep the subpath so the selector strips it as usual).
        self.base = config.azure_path.strip("/")
        subpath = self.selector.subpath
        self.list_root = "/".join(p for p in (self.base, subpath) if p)
        self.key_prefix = subpath + "/" if subpath else ""
        self._client: ShareClient | None = None
        self._client_secret: str | None = None
        self._client_lock = threading.Lock()
        self._listed = 0
        self._listed_lock = threading.Lock()
        self._url = self.credential.account_url or "the connection string's endpoint"
        if self.credential.route == "connection string":
            secret = self.credential.read(config)
            register_connection_string(secret)
        else:
            try:
                secret = self.credential.read(config)
            except SourceError as exc:
                raise ConfigError(str(exc), self.credential.flag) from None
        self._build_client(secret, ConfigError)  # validates, without any network access

    def describe(self) -> str:
        return f"azure share {self.share_name!r} at {redact(self._url)}"

    # -- client ---------------------------------------------------------------------------------
    def _build_client(self, secret: str, error: type[Exception]) -> ShareClient:
        cfg = self.config
        session = requests.Session()
        # Retries are the SDK's (and ours); a pool as large as the thread pool avoids urllib3
        # discarding connections when --concurrency is above its default of 10.
        adapter = HTTPAdapter(
            pool_connections=4,
            pool_maxsize=max(10, cfg.concurrency),
            max_retries=Retry(total=False, redirect=False, raise_on_status=False),
        )
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        transport = RequestsTransport(session=session, session_owner=True)
        options: dict[str, Any] = {
            "transport": transport,
            "max_single_get_size": CHUNK_BYTES,
            "max_chunk_get_size": CHUNK_BYTES,
            # The storage SDK's default waits 15 s, then 15 + 3^n: far too long inside one
            # pass. A short constant wait; dagsync's own retries back off exponentially.
            # (Typed int, used as float: random.uniform(backoff - jitter, backoff + jitter).)
            "retry_policy": LinearRetry(
                backoff=self.backoff,  # type: ignore[arg-type]
                random_jitter_range=self.backoff / 2,  # type: ignore[arg-type]
                retry_total=SDK_RETRIES,
            ),
            "connection_timeout": CONNECT_TIMEOUT_SECONDS,
            "read_timeout": READ_TIMEOUT_SECONDS,
        }
        route = self.credential
        try:
            if route.route == "connection string":
                client = ShareClient.from_connection_string(secret, self.share_name, **options)
                self._url = f"{client.scheme}://{client.primary_hostname}"
            elif route.route == "account key":
                base64.b64decode(secret, validate=True)
                client = ShareClient(
                    route.account_url or "", self.share_name, credential=secret, **options
                )
            else:
                sas = AzureSasCredential(secret)
                client = ShareClient(
                    route.account_url or "", self.share_name, credential=sas, **options
                )
        except (ValueError, binascii.Error) as exc:
            session.close()
            what = {"account key": "does not hold a base64 account key"}.get(route.route, exc)
            source = f"{route.file}" if route.file else "AZURE_STORAGE_CONNECTION_STRING"
            flag = f"--{route.flag}: " if route.file else ""
            raise error(f"{flag}{source}: {redact(str(what))}") from None
        _pin_environment(session, transport, client.url)
        old, self._client, self._client_secret = self._client, client, secret
        if old is not None:
            old.close()
        return client

    def _refresh(self) -> ShareClient:
        """The client, rebuilt when the key or SAS file changed since the last pass."""
        with self._client_lock:
            secret = self._client_secret
            if self.credential.file is not None:
                secret = self.credential.read(self.config)
            if self._client is None or secret != self._client_secret:
                if self._client is not None:
                    log.info("azure credential changed, reconnecting file=%s", self.credential.file)
                assert secret is not None
                return self._build_client(secret, SourceError)
            return self._client

    def _share(self) -> ShareClient:
        """The client of this pass (``resolve`` refreshed it)."""
        with self._client_lock:
            client = self._client
        return client if client is not None else self._refresh()

    def close(self) -> None:
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def _timeouts(self, deadline: float, what: str) -> dict[str, Any]:
        """Socket timeouts for one SDK call: the SDK may send it 1 + SDK_RETRIES times, so each
        try gets its share of the time left, and a dead connection cannot outlive the pass."""
        per_try = remaining(deadline, f"{what} in {self.describe()}") / (SDK_RETRIES + 1)
        return {
            "connection_timeout": min(CONNECT_TIMEOUT_SECONDS, per_try),
            "read_timeout": min(READ_TIMEOUT_SECONDS, per_try),
        }

    # -- listing --------------------------------------------------------------------------------
    def list_objects(self, deadline: float) -> list[RemoteObject]:
        share = self._refresh()
        found: list[RemoteObject] = []
        # Files of finished directories that the selection keeps: with those a directory
        # being listed counts, --max-files stops the walk as soon as it is passed, so a share
        # of millions of files never sits in memory.
        self._listed = 0
        stop = threading.Event()
        workers = max(1, self.config.concurrency)
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dagsync-azure-list")
        try:
            pending: set[Future[tuple[list[RemoteObject], list[str]]]] = {
                pool.submit(self._list_dir, share, "", deadline, stop)
            }
            while pending:
                done, pending = wait(
                    pending, timeout=remaining(deadline, "listing"), return_when=FIRST_COMPLETED
                )
                if not done:
                    raise SyncTimeout(f"listing of {self.describe()} exceeded --sync-timeout")
                for future in done:
                    files, subdirs = future.result()
                    found.extend(files)
                    with self._listed_lock:
                        self._listed += sum(1 for f in files if self.selector.select(f.key))
                    pending.update(
                        pool.submit(self._list_dir, share, rel, deadline, stop) for rel in subdirs
                    )
        finally:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
        log.debug("listed %s files=%d", self.describe(), len(found))
        return found

    def _list_dir(
        self, share: ShareClient, rel: str, deadline: float, stop: threading.Event
    ) -> tuple[list[RemoteObject], list[str]]:
        """One directory (every page): its files, and its sub-directories' relative paths."""
        path = "/".join(p for p in (self.list_root, rel) if p)
        directory = share.get_directory_client(path)

        def attempt() -> tuple[list[RemoteObject], list[str]]:
            files: list[RemoteObject] = []
            subdirs: list[str] = []
            items = directory.list_directories_and_files(
                results_per_page=self.page_size,
                include=["Etag"],
                **self._timeouts(deadline, "listing"),
            )
            selected = 0
            for item in items:
                if stop.is_set():
                    break
                child = _child(rel, item.name)
                if item["is_directory"]:
                    subdirs.append(child)
                    continue
                key = self.key_prefix + child
                if self.selector.select(key) is not None:
                    selected += 1
                    self._check_max_files(selected)
                files.append(
                    RemoteObject(
                        key=key,
                        size=int(item["size"]),
                        token=str(item.etag).strip('"'),
                        handle="/".join(p for p in (self.list_root, child) if p),
                    )
                )
            return files, subdirs

        what = f"directory {path!r}" if path else "the root directory"
        return self._with_retries(attempt, what, deadline, stop)

    def _check_max_files(self, in_progress: int) -> None:
        with self._listed_lock:
            listed = self._listed + in_progress
        if listed > self.config.max_files:
            raise LimitExceeded(
                f"{self.describe()} lists more than --max-files {self.config.max_files} "
                "files; stopped listing",
                None,
            )

    # -- downloads ------------------------------------------------------------------------------
    def download(self, obj: RemoteObject, out: BinaryIO, deadline: float) -> None:
        file = self._share().get_file_client(str(obj.handle))

        def attempt() -> None:
            out.seek(0)
            out.truncate()
            self._download_once(file, obj, out, deadline)

        self._with_retries(attempt, f"file {obj.handle!r}", deadline, self.cancelled)

    def _download_once(self, file: Any, obj: RemoteObject, out: BinaryIO, deadline: float) -> None:
        stored: list[str] = []

        def hook(response: PipelineResponse[Any, Any]) -> None:
            headers = response.http_response.headers
            value = headers.get("x-ms-content-md5")
            if value is None and response.http_response.status_code == 200:
                value = headers.get("Content-MD5")  # an un-ranged GET (an empty file)
            if value:
                stored.append(value)

        stream = file.download_file(
            raw_response_hook=hook, **self._timeouts(deadline, f"download of {obj.key}")
        )
        if str(stream.properties.etag).strip('"') != obj.token:
            raise SourceError(
                f"{obj.key}: changed in {self.describe()} since it was listed; the next "
                "sync will pick up the new version",
                obj.key,
            )
        if stream.size != obj.size:  # same ETag: the listing itself was wrong
            raise SourceError(
                f"{obj.key}: listed with {obj.size} bytes but {self.describe()} serves "
                f"{stream.size} with the same ETag",
                obj.key,
            )
        digest = hashlib.md5(usedforsecurity=False)
        written = 0
        for chunk in stream.chunks():
            out.write(chunk)
            digest.update(chunk)
            written += len(chunk)
            self.check_running(deadline, f"download of {obj.key}")
        if written != obj.size:
            raise _Truncated(f"{obj.key}: got {written} bytes, expected {obj.size}")
        if stored and base64.b64decode(stored[0]) != digest.digest():
            raise SourceError(
                f"{obj.key}: content does not match its stored Content-MD5 in "
                f"{self.describe()} (a stale Content-MD5 property?)",
                obj.key,
            )

    # -- errors ---------------------------------------------------------------------------------
    def _with_retries(
        self, call: Callable[[], T], what: str, deadline: float, stop: threading.Event
    ) -> T:
        """``call`` again after transient failures the SDK gave up on or does not retry (a
        truncated body), with the shared backoff, bounded by the deadline; then a SourceError."""
        try:
            return self._retried(call, deadline, f"{what} in {self.describe()}", stop)
        except _RETRYABLE as exc:
            if stop.is_set():
                raise Cancelled(f"{what}: cancelled", what) from exc
            raise self._error(exc, what) from exc

    def _error(self, exc: Exception, what: str) -> SourceError:
        status = getattr(exc, "status_code", None)
        where = f"{what} in {self.describe()}"
        if isinstance(exc, ClientAuthenticationError) or status in (401, 403):
            return SourceError(
                f"access denied to {where}: {_reason(exc)}; check the {self.credential.route} "
                f"({AUTH_HINTS[self.credential.route]})",
                what,
            )
        if isinstance(exc, ResourceNotFoundError):
            return SourceError(f"{where}: not found ({_reason(exc)})", what)
        return SourceError(f"{where} failed: {_reason(exc)}", what)


def _reason(exc: Exception) -> str:
    """A short, secret-free description: the service's status and code, not its message
    (which for auth failures echoes the string to sign)."""
    status = getattr(exc, "status_code", None)
    code = getattr(exc, "error_code", None)
    code = getattr(code, "value", code)  # the SDK's StorageErrorCode enum
    if status is not None and code:
        return f"{status} {code}"
    if isinstance(exc, ResourceModifiedError):
        return "the file changed while it was downloaded"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return redact(f"{type(exc).__name__}: {text}"[:300])


def _child(rel: str, name: str) -> str:
    """``rel/name``, refusing names that would escape the tree (the service forbids them, but
    a share is not the only thing that speaks this protocol)."""
    key = f"{rel}/{name}" if rel else name
    if name in ("", ".", "..") or any(c in name for c in _BAD_NAME_CHARS):
        raise UnsafePath(f"refusing unsafe path {key!r}", key)
    return key


def _pin_environment(session: requests.Session, transport: RequestsTransport, url: str) -> None:
    """Resolve the proxy and CA-bundle variables once for this endpoint: requests otherwise
    re-reads the whole environment on every request, a quarter of the CPU of a small GET."""
    settings = session.merge_environment_settings(url, {}, None, None, None)
    session.proxies.update(settings["proxies"])
    transport.connection_config.verify = settings["verify"]  # passed on every request
    session.trust_env = False
