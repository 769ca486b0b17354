"""Google Cloud Storage through google-cloud-storage: objects.list pages are the listing, the
object's generation the change token, a media download with ``ifGenerationMatch`` the read.

Verification: the size always, and the body against the listing's ``md5Hash`` (objects
uploaded whole) or else its ``crc32c`` (composite objects have only that; google-crc32c comes
with the SDK). A replaced object fails the pass: the service answers 412 to the generation
precondition, and an endpoint that ignores it (an emulator) still fails the hash check.

Credentials: Application Default Credentials (``GOOGLE_APPLICATION_CREDENTIALS``, the gcloud
ADC file, GKE workload identity through the metadata server). With ``STORAGE_EMULATOR_HOST``
and no credentials found, requests go unauthenticated, as the SDK does for emulators. The
credentials file is compared at the start of every pass; when it changed, a new client is built.
The SDK's own retries are off: :func:`call_with_retries` retries transient errors within the
pass's deadline. Listing and downloads share one client.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

import google.auth
import google.auth.exceptions
import google_crc32c
import requests
import requests.adapters
import urllib3
from google.api_core import exceptions as api_exceptions
from google.auth.credentials import AnonymousCredentials
from google.auth.transport.requests import AuthorizedSession
from google.cloud import storage

from dagsync.config import Config
from dagsync.errors import SourceError
from dagsync.sources.cloudstore import (
    CredentialFiles,
    HashingWriter,
    check_bucket_name,
    folder_prefix,
    listing_prefix,
    pin_requests_environment,
    relative_key,
)
from dagsync.sources.objectstore import ObjectStoreSource, RemoteObject

log = logging.getLogger(__name__)

SCOPES = ["https://www.googleapis.com/auth/devstorage.read_only"]
LIST_PAGE_OBJECTS = 1000
LIST_FIELDS = "items(name,size,generation,md5Hash,crc32c),nextPageToken"
TIMEOUT_SECONDS = (10.0, 60.0)  # connect, read
CREDENTIAL_HINT = (
    "check GOOGLE_APPLICATION_CREDENTIALS or the workload identity (the GKE service account "
    "annotation and its roles/storage.objectViewer on the bucket)"
)


class _Truncated(Exception):
    """Fewer bytes arrived than the object holds."""


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, _Truncated | requests.exceptions.RequestException):
        return True
    if isinstance(exc, urllib3.exceptions.HTTPError | google.auth.exceptions.TransportError):
        return True
    if isinstance(exc, google.auth.exceptions.RefreshError):
        return bool(getattr(exc, "retryable", False))
    if isinstance(exc, api_exceptions.GoogleAPICallError):
        code = exc.code or 0
        return code >= 500 or code in (408, 429)
    return False


def _decode(value: str | None) -> bytes | None:
    return base64.b64decode(value) if value else None


class GcsSource(ObjectStoreSource):
    """Objects of one Google Cloud Storage bucket under a prefix."""

    name = "gcs"
    is_transient = staticmethod(is_transient)

    def __init__(self, config: Config, cache_dir: Path) -> None:
        super().__init__(config, cache_dir)
        self.bucket = check_bucket_name(config.gcs_bucket, "gcs-bucket", "gcs")
        self.prefix = folder_prefix(config.gcs_prefix)
        self.project = config.gcs_project
        self._lock = threading.Lock()
        self._client: Any = None
        env = config.sdk_env
        adc = Path(env.get("CLOUDSDK_CONFIG") or "~/.config/gcloud").expanduser()
        files = [adc / "application_default_credentials.json"]
        if env.get("GOOGLE_APPLICATION_CREDENTIALS"):
            files.append(Path(env["GOOGLE_APPLICATION_CREDENTIALS"]))
        self._files = CredentialFiles(lambda: files)

    def describe(self) -> str:
        return f"gs://{self.bucket}/{self.prefix}"

    # -- client ------------------------------------------------------------------------------

    def _build(self) -> Any:
        try:
            credentials, project = google.auth.default(scopes=SCOPES)
        except google.auth.exceptions.DefaultCredentialsError:
            credentials, project = None, None
        emulator = self.config.sdk_env.get("STORAGE_EMULATOR_HOST")
        if credentials is None:
            if not emulator:
                raise SourceError(
                    f"{self.describe()}: no Google credentials found; {CREDENTIAL_HINT}"
                )
            credentials = AnonymousCredentials()  # as the SDK does for an emulator
        # The SDK's kind of session, with a pool for every download thread and the
        # environment's proxy/CA/netrc settings read once (see pin_requests_environment);
        # ``_http`` is the client constructor's way to take it.
        session = AuthorizedSession(credentials)
        pool = max(10, self.config.concurrency + 2)
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=pool)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        endpoint = emulator if emulator and "://" in emulator else "https://storage.googleapis.com"
        pin_requests_environment(session, endpoint)
        return storage.Client(
            project=self.project or project, credentials=credentials, _http=session
        )

    def _refresh(self) -> Any:
        with self._lock:
            if self._client is None or self._files.changed():
                old, self._client = self._client, None
                if old is not None:
                    old.close()
                self._client = self._build()
            return self._client

    # -- listing -----------------------------------------------------------------------------

    def list_objects(self, deadline: float) -> Iterable[RemoteObject]:
        client = self._refresh()
        prefix = listing_prefix(self.prefix, self.selector.subpath)
        token: str | None = None
        while True:

            def page(token: str | None = token) -> tuple[list[Any], str | None]:
                found = client.list_blobs(
                    self.bucket,
                    prefix=prefix,
                    page_size=LIST_PAGE_OBJECTS,
                    page_token=token,
                    fields=LIST_FIELDS,
                    retry=None,
                    timeout=TIMEOUT_SECONDS,
                )
                first = next(found.pages, None)
                return (list(first) if first is not None else []), found.next_page_token

            try:
                blobs, token = self._retried(page, deadline, f"listing of {self.describe()}")
            except Exception as exc:
                raise self._error(exc, None) from None
            for blob in blobs:
                rel = relative_key(blob.name, self.prefix)
                if rel is not None:
                    yield RemoteObject(
                        rel,
                        int(blob.size or 0),
                        str(blob.generation),
                        handle=(blob.name, blob.md5_hash, blob.crc32c),
                    )
            if not token:
                return

    # -- downloads ---------------------------------------------------------------------------

    def download(self, obj: RemoteObject, out: BinaryIO, deadline: float) -> None:
        handle: tuple[str, str | None, str | None] = obj.handle  # type: ignore[assignment]
        name, md5_b64, crc_b64 = handle
        client = self._client or self._refresh()
        blob = storage.Blob(name, client.bucket(self.bucket))
        writer = HashingWriter(out, (), lambda: self.check_running(deadline, f"download of {name}"))
        digest: list[Any] = []

        def attempt() -> None:
            digest[:] = [
                hashlib.md5(usedforsecurity=False) if md5_b64 else google_crc32c.Checksum()
            ]
            writer.restart(digest)
            blob.download_to_file(
                writer,
                client=client,
                if_generation_match=int(obj.token),
                raw_download=True,  # the stored bytes, which the listed hashes cover
                checksum=None,  # checked below against the listing, across retries
                retry=None,
                timeout=TIMEOUT_SECONDS,
            )
            if writer.written > obj.size:  # an endpoint that ignored the precondition
                raise SourceError(
                    f"{self.describe()}: {name}: listed with {obj.size} bytes but served "
                    f"{writer.written}; changed during the sync",
                    name,
                )
            if writer.written < obj.size:
                raise _Truncated(
                    f"got {writer.written} bytes, expected {obj.size} (cut short, or changed "
                    "during the sync)"
                )

        try:
            self._retried(attempt, deadline, f"download of {name}")
        except Exception as exc:
            if isinstance(exc, SourceError):
                raise
            raise self._error(exc, name) from None
        expected = _decode(md5_b64) or _decode(crc_b64)
        if expected is not None and digest[0].digest() != expected:
            kind = "MD5" if md5_b64 else "CRC32C"
            raise SourceError(
                f"{self.describe()}: {name}: {kind} mismatch with the listing (corrupted, or "
                "changed during the sync)",
                name,
            )

    # -- errors ------------------------------------------------------------------------------

    def _error(self, exc: BaseException, key: str | None) -> SourceError:
        where = f"{self.describe()}: {key}" if key else self.describe()
        if isinstance(exc, google.auth.exceptions.RefreshError | api_exceptions.Unauthorized):
            return SourceError(f"{where}: access denied: {_reason(exc)}; {CREDENTIAL_HINT}", key)
        if isinstance(exc, google.auth.exceptions.DefaultCredentialsError):
            return SourceError(f"{where}: no usable Google credentials; {CREDENTIAL_HINT}", key)
        if isinstance(exc, api_exceptions.Forbidden):
            return SourceError(f"{where}: access denied: {_reason(exc)}; {CREDENTIAL_HINT}", key)
        if isinstance(exc, api_exceptions.NotFound) and key is None:
            return SourceError(f"{where}: bucket {self.bucket!r} does not exist", key)
        if isinstance(exc, api_exceptions.NotFound | api_exceptions.PreconditionFailed):
            return SourceError(f"{where}: changed during the sync ({_reason(exc)}); retry", key)
        if isinstance(exc, _Truncated):
            return SourceError(f"{where}: {exc}", key)
        return SourceError(f"{where}: request failed: {_reason(exc)}", key)

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()


def _reason(exc: BaseException) -> str:
    """Status and message, first line only, without the request URL the SDK puts in front."""
    code = getattr(exc, "code", None)
    message = getattr(exc, "message", None) or str(exc)
    text = str(message).splitlines()[0] if message else type(exc).__name__
    return f"{type(exc).__name__}{f' {code}' if code else ''}: {text}"[:300]
