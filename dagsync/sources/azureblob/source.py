"""Azure Blob Storage through azure-storage-blob: List Blobs pages under the prefix are the
listing, the blob's ETag the change token, Get Blob with ``If-Match`` on it the read (a blob
replaced mid-sync fails that pass with 412; the next one relists).

Verification: the size always, and the body's MD5 against the blob's Content-MD5 when it has
one (the service stores it for single-shot uploads; tools set it for block lists).

Credentials, exactly one route (chosen before any network access):
``AZURE_STORAGE_CONNECTION_STRING``; or ``--azureblob-account-url`` with
``--azure-account-key-file`` or ``--azure-sas-token-file`` (re-read every pass: a rotated key
or SAS builds a new client); or the account URL alone, with azure-identity's
``DefaultAzureCredential`` (environment, workload identity with its federated token file,
managed identity, Azure CLI). The SDK's own retries are off: :func:`call_with_retries` retries
transient errors within the pass's deadline.

Hidden knob (``--source-option``, for tests): ``page_size`` (1..5000, blobs per listing page).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import logging
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import requests
import requests.adapters
from azure.core import MatchConditions
from azure.core.credentials import AzureSasCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import ContainerClient
from requests.exceptions import ChunkedEncodingError

from dagsync.config import Config
from dagsync.errors import ConfigError, SourceError
from dagsync.redact import redact
from dagsync.sources.azure_auth import AUTH_HINTS, Credential, register_connection_string
from dagsync.sources.azureblob.reads import (
    BadListing,
    BlobReader,
    Listed,
    ReadFailed,
    SizeChanged,
    connection_string_sas,
)
from dagsync.sources.cloudstore import (
    HashingWriter,
    check_bucket_name,
    check_http_url,
    folder_prefix,
    listing_prefix,
    pin_requests_environment,
    relative_key,
)
from dagsync.sources.objectstore import ObjectStoreSource, RemoteObject

log = logging.getLogger(__name__)
# The SDK's HTTP logging policy logs every request URL at INFO, SAS signature included.
logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)
logging.getLogger("azure.identity").setLevel(logging.WARNING)

MAX_PAGE_SIZE = 5000
CONNECT_TIMEOUT_SECONDS = 10.0
READ_TIMEOUT_SECONDS = 60.0
DEFAULT_CHAIN = "default credential chain"
HINTS = {
    **AUTH_HINTS,
    DEFAULT_CHAIN: "the workload identity client-id annotation and pod label, AZURE_CLIENT_ID/"
    "AZURE_TENANT_ID/AZURE_FEDERATED_TOKEN_FILE, and the Storage Blob Data Reader role?",
}


def credential_route(config: Config) -> Credential:
    """The connection string, or the account URL with a key file, a SAS file or nothing (the
    default credential chain)."""
    url = check_http_url(
        config.azureblob_account_url,
        "azureblob-account-url",
        "https://ACCOUNT.blob.core.windows.net",
    )
    key_file, sas_file = config.azure_account_key_file, config.azure_sas_token_file
    if key_file and sas_file:
        raise ConfigError(
            "--azure-account-key-file and --azure-sas-token-file: give only one",
            "azure-account-key-file",
        )
    if config.azure_connection_string and url:
        raise ConfigError(
            "--azureblob-account-url: give either AZURE_STORAGE_CONNECTION_STRING or "
            "--azureblob-account-url, not both",
            "azureblob-account-url",
        )
    if config.azure_connection_string:
        if key_file or sas_file:
            raise ConfigError(
                "--azure-account-key-file/--azure-sas-token-file need --azureblob-account-url "
                "(not AZURE_STORAGE_CONNECTION_STRING)",
                "azureblob-account-url",
            )
        return Credential("connection string", None, None, "azure-connection-string")
    if url is None:
        raise ConfigError(
            "--azureblob-account-url is required with --source azureblob (or set "
            "AZURE_STORAGE_CONNECTION_STRING)",
            "azureblob-account-url",
        )
    if key_file is not None:
        return Credential("account key", url, key_file, "azure-account-key-file")
    if sas_file is not None:
        return Credential("SAS token", url, sas_file, "azure-sas-token-file")
    if not url.startswith("https://"):
        raise ConfigError(
            "--azureblob-account-url: the default credential chain (no key or SAS file) needs "
            "an https:// account URL",
            "azureblob-account-url",
        )
    return Credential(DEFAULT_CHAIN, url, None, "azureblob-account-url")


def account_name(url: str) -> str:
    """ACCOUNT of https://ACCOUNT.blob.core.windows.net, or of http://127.0.0.1:P/ACCOUNT."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        ipaddress.ip_address(host)
        path_style = True
    except ValueError:
        path_style = host == "localhost"
    return parts.path.strip("/").split("/")[0] if path_style else host.split(".")[0]


def _page_size(options: dict[str, str]) -> int | None:
    if "page_size" not in options:
        return None
    value = options["page_size"]
    if not value.isdigit() or not 1 <= int(value) <= MAX_PAGE_SIZE:
        raise ConfigError(
            f"--source-option page_size: expected 1..{MAX_PAGE_SIZE}", "source-option"
        )
    return int(value)


class _Truncated(Exception):
    """Fewer bytes arrived than the blob holds."""


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, ClientAuthenticationError | ResourceNotFoundError | ResourceModifiedError):
        return False
    if isinstance(exc, _Truncated | ServiceRequestError | ServiceResponseError):
        return True
    if isinstance(exc, requests.ConnectionError | requests.Timeout | ChunkedEncodingError):
        return True
    if isinstance(exc, HttpResponseError | ReadFailed):
        status = exc.status_code
        return status is None or status in (408, 429) or status >= 500
    return False


class AzureBlobSource(ObjectStoreSource):
    """Blobs of one Azure Blob container under a prefix."""

    name = "azureblob"
    is_transient = staticmethod(is_transient)

    def __init__(self, config: Config, cache_dir: Path) -> None:
        super().__init__(config, cache_dir)
        self.container = check_bucket_name(
            config.azureblob_container, "azureblob-container", "azureblob"
        )
        self.prefix = folder_prefix(config.azureblob_prefix)
        self.page_size = _page_size(dict(config.source_option))
        self.route = credential_route(config)
        self._lock = threading.Lock()
        self._client: ContainerClient | None = None
        self._reader: BlobReader | None = None
        self._secret: str | None = None
        self._where = self.route.account_url or "the connection string's endpoint"
        if self.route.route == "connection string":
            register_connection_string(self.route.read(config))
        elif self.route.file is not None:
            try:
                self.route.read(config)  # readable and not empty, now (exit 2)
            except SourceError as exc:
                raise ConfigError(str(exc), self.route.flag) from None

    def describe(self) -> str:
        return f"azureblob container {self.container!r} ({self.prefix or '/'}) at {self._where}"

    # -- client ------------------------------------------------------------------------------

    def _build(self, secret: str | None) -> ContainerClient:
        session = requests.Session()
        # A pool as large as the download threads; retries are dagsync's.
        adapter = requests.adapters.HTTPAdapter(
            pool_connections=4, pool_maxsize=max(10, self.config.concurrency + 2), max_retries=0
        )
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        transport = RequestsTransport(session=session, session_owner=True)
        options: dict[str, Any] = {
            "transport": transport,
            "retry_total": 0,  # dagsync retries, within the deadline
            "connection_timeout": CONNECT_TIMEOUT_SECONDS,
            "read_timeout": READ_TIMEOUT_SECONDS,
            "connection_data_block_size": 256 * 1024,
        }
        route = self.route
        if route.route == "connection string":
            assert secret is not None
            client = ContainerClient.from_connection_string(secret, self.container, **options)
            self._where = redact(f"{client.scheme}://{client.primary_hostname}")
            _pin(session, transport, client.url)
            self._reader = self._reader_for(session, client, connection_string_sas(secret))
            return client
        url = route.account_url or ""
        credential: Any
        if route.route == "account key":
            assert secret is not None
            try:
                base64.b64decode(secret, validate=True)
            except (ValueError, binascii.Error):
                raise SourceError(
                    f"--{route.flag}: {route.file} does not hold a base64 account key"
                ) from None
            credential = {"account_name": account_name(url), "account_key": secret}
        elif route.route == "SAS token":
            assert secret is not None
            credential = AzureSasCredential(secret)
        else:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential()
        client = ContainerClient(url, self.container, credential=credential, **options)
        _pin(session, transport, client.url)
        sas = {"account key": (account_name(url), secret), "SAS token": secret}.get(route.route)
        self._reader = self._reader_for(session, client, sas)  # type: ignore[arg-type]
        return client

    def _reader_for(
        self, session: requests.Session, client: ContainerClient, sas: str | tuple[str, str] | None
    ) -> BlobReader | None:
        """The lean Get Blob when the credential yields a SAS; None keeps the SDK's read."""
        if not sas:
            return None
        timeouts = (CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS)
        return BlobReader(session, client.url, self.container, sas, client.api_version, timeouts)

    def _refresh(self) -> ContainerClient:
        """The client for this pass: rebuilt when the key or SAS file changed."""
        with self._lock:
            secret = self._secret
            if self.route.route == "connection string":
                secret = self.config.azure_connection_string
            elif self.route.file is not None:
                secret = self.route.read(self.config)
            if self._client is None or secret != self._secret:
                if self._client is not None:
                    log.info("azureblob credential changed, reconnecting file=%s", self.route.file)
                    self._client.close()
                self._client = self._build(secret)
                self._secret = secret
            return self._client

    # -- listing -----------------------------------------------------------------------------

    def list_objects(self, deadline: float) -> Iterable[RemoteObject]:
        client = self._refresh()
        reader = self._reader
        prefix = listing_prefix(self.prefix, self.selector.subpath)
        token: str | None = None
        while True:

            def page(token: str | None = token) -> tuple[list[Listed], str | None]:
                if reader is not None:
                    return reader.list_page(prefix, token, self.page_size)
                return self._sdk_page(client, prefix, token)

            try:
                items, token = self._retried(page, deadline, f"listing of {self.describe()}")
            except (AzureError, ReadFailed, BadListing, requests.RequestException) as exc:
                raise self._error(exc, None) from None
            for name, size, etag, md5 in items:
                rel = relative_key(name, self.prefix)
                if rel is not None:
                    yield RemoteObject(rel, size, etag, handle=(name, md5))
            if not token:
                return

    def _sdk_page(
        self, client: ContainerClient, prefix: str, token: str | None
    ) -> tuple[list[Listed], str | None]:
        """One page of the SDK's listing (the default credential chain)."""
        pages = client.list_blobs(
            name_starts_with=prefix or None,
            results_per_page=self.page_size,
            timeout=int(READ_TIMEOUT_SECONDS),
        ).by_page(continuation_token=token)
        items: list[Listed] = []
        for blob in next(pages, []):
            md5 = blob.content_settings.content_md5
            items.append(
                (blob.name, int(blob.size), str(blob.etag).strip('"'), bytes(md5) if md5 else None)
            )
        return items, pages.continuation_token  # type: ignore[attr-defined]

    # -- downloads ---------------------------------------------------------------------------

    def download(self, obj: RemoteObject, out: BinaryIO, deadline: float) -> None:
        handle: tuple[str, bytes | None] = obj.handle  # type: ignore[assignment]
        name, content_md5 = handle
        client = self._client or self._refresh()
        reader = self._reader
        writer = HashingWriter(out, (), lambda: self.check_running(deadline, f"download of {name}"))
        digest: list[Any] = []

        def attempt() -> None:
            digest[:] = [hashlib.md5(usedforsecurity=False)]
            writer.restart(digest)
            try:
                if reader is not None:
                    reader.read(name, obj.token, obj.size, writer.write)
                else:
                    self._sdk_read(client, obj, writer)
            except SizeChanged as exc:
                raise SourceError(
                    f"{self.describe()}: {name}: listed with {obj.size} bytes but served "
                    f"{exc.served}; changed during the sync",
                    name,
                ) from None
            if writer.written != obj.size:
                raise _Truncated(f"got {writer.written} bytes, expected {obj.size}")

        try:
            self._retried(attempt, deadline, f"download of {name}")
        except (AzureError, _Truncated, ReadFailed, requests.RequestException) as exc:
            raise self._error(exc, name) from None
        if content_md5 is not None and digest[0].digest() != content_md5:
            raise SourceError(
                f"{self.describe()}: {name}: content does not match its Content-MD5 "
                "(corrupted in transit, or a stale Content-MD5 property)",
                name,
            )

    @staticmethod
    def _sdk_read(client: ContainerClient, obj: RemoteObject, writer: HashingWriter) -> None:
        """The SDK's Get Blob (the default credential chain: no SAS for the lean read)."""
        stream = client.download_blob(
            obj.handle[0],  # type: ignore[index]
            etag=f'"{obj.token}"',
            match_condition=MatchConditions.IfNotModified,
            max_concurrency=1,
            timeout=int(READ_TIMEOUT_SECONDS),
        )
        if stream.size != obj.size:
            raise SizeChanged(stream.size)
        for chunk in stream.chunks():
            writer.write(chunk)

    # -- errors ------------------------------------------------------------------------------

    def _error(self, exc: BaseException, key: str | None) -> SourceError:
        where = f"{self.describe()}: {key}" if key else self.describe()
        status = getattr(exc, "status_code", None)
        code = getattr(exc, "error_code", None)
        code = getattr(code, "value", code)
        reason = f"{status} {code}" if status and code else _first_line(exc)
        if isinstance(exc, ClientAuthenticationError) or status in (401, 403):
            hint = HINTS.get(self.route.route, "")
            return SourceError(
                f"{where}: access denied ({reason}); check the {self.route.route} ({hint})", key
            )
        if code == "ContainerNotFound" or (status == 404 and key is None):
            return SourceError(f"{where}: container {self.container!r} does not exist", key)
        if isinstance(exc, ResourceNotFoundError | ResourceModifiedError) or status in (404, 412):
            return SourceError(f"{where}: changed during the sync ({reason}); retry", key)
        return SourceError(f"{where}: request failed: {reason}", key)

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()


def _pin(session: requests.Session, transport: RequestsTransport, url: str) -> None:
    pin_requests_environment(session, url)
    transport.connection_config.verify = session.verify  # passed on every request


def _first_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return redact(f"{type(exc).__name__}: {text}"[:300])
