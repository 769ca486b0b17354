"""List Blobs and Get Blob without the SDK's request pipeline, for the credentials that allow it.

A 10 KB download through ``ContainerClient.download_blob`` costs ~3.5 ms of CPU in dagsync's
process: a BlobClient built per blob, a dozen pipeline policies, ~50 response headers turned
into BlobProperties. With 8 download threads sharing one interpreter that CPU, not the network,
set the pace (bench/store_bench.py --cloud azureblob); the SDK's listing turns each blob's XML
into a model object (~0.5 ms a blob). Here each request is one ``requests`` GET on
the client's own session (same pool, proxies, TLS settings), authorised by a SAS:

- an account key (connection string or key file): a read-only SAS for the container, signed
  locally with the SDK's ``generate_container_sas`` and renewed every hour (valid a day);
- a SAS (file or connection string): the SAS itself.

The default credential chain has no SAS to offer, so it keeps the SDK. The requests are the
ones the SDK sends (Get Blob with ``If-Match`` on the listed ETag, List Blobs pages with a
marker), with the SDK's ``x-ms-version``; failures
raise :class:`ReadFailed` with the service's status and error code, which the source maps to
the same messages as the SDK's errors.
"""

from __future__ import annotations

import base64
import datetime as dt
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode
from xml.etree import ElementTree

import requests

from dagsync.redact import register_secret

SAS_LIFETIME = dt.timedelta(days=1)
SAS_RENEW_SECONDS = 3600.0
CHUNK_BYTES = 256 * 1024

#: a listed blob: name, size, ETag (without quotes), Content-MD5 (None when it has none)
Listed = tuple[str, int, str, bytes | None]


class SizeChanged(Exception):
    """The blob is served with another size than it was listed with."""

    def __init__(self, served: int) -> None:
        super().__init__(f"served {served} bytes")
        self.served = served


class BadListing(Exception):
    """A List Blobs response that is not the XML the service documents."""


class ReadFailed(Exception):
    """A Get Blob that did not answer 200: ``status_code`` and ``error_code`` as the SDK's
    HttpResponseError carries them."""

    def __init__(self, status_code: int, error_code: str | None, reason: str) -> None:
        super().__init__(f"{status_code} {error_code or reason}")
        self.status_code = status_code
        self.error_code = error_code


def connection_string_sas(value: str) -> tuple[str, str] | str | None:
    """What a connection string authorises reads with: (account name, key), a SAS, or None."""
    parts: dict[str, str] = {}
    for part in value.split(";"):
        name, _, text = part.partition("=")
        parts[name.strip().lower()] = text.strip()
    if parts.get("accountname") and parts.get("accountkey"):
        return parts["accountname"], parts["accountkey"]
    return parts.get("sharedaccesssignature") or None


def container_sas(account: str, key: str, container: str) -> str:
    """A read-and-list SAS for ``container``, signed with the account key (registered as secret)."""
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    sas: str = generate_container_sas(
        account,
        container,
        account_key=key,
        permission=ContainerSasPermissions(read=True, list=True),
        expiry=dt.datetime.now(dt.UTC) + SAS_LIFETIME,
    )
    register_sas(sas)
    return sas


def register_sas(sas: str) -> None:
    register_secret(sas)
    for sig in parse_qs(sas.lstrip("?")).get("sig", []):
        register_secret(sig)


class BlobReader:
    """Get Blob on ``session`` for blobs of the container at ``container_url``.

    ``sas`` is a SAS string, or (account, key) to sign one (renewed every hour)."""

    def __init__(
        self,
        session: requests.Session,
        container_url: str,
        container: str,
        sas: str | tuple[str, str],
        api_version: str,
        timeouts: tuple[float, float],
    ) -> None:
        self.session = session
        self.container_url = container_url.split("?")[0].rstrip("/")
        self.container = container
        self.api_version = api_version
        self.timeouts = timeouts
        self._key = sas if isinstance(sas, tuple) else None
        self._sas = sas.lstrip("?") if isinstance(sas, str) else ""
        self._signed_at = -SAS_RENEW_SECONDS
        # The session's transport adapter with the session's pinned settings: what
        # session.get would pass it, as the environment was read once (pin_requests_environment).
        self._adapter = session.get_adapter(self.container_url)
        self._send_options: dict[str, Any] = {
            "stream": True,
            "timeout": timeouts,
            "verify": session.verify,
            "cert": session.cert,
            "proxies": session.proxies,
        }
        if isinstance(sas, str):
            register_sas(self._sas)

    def _query(self) -> str:
        if self._key is not None and time.monotonic() - self._signed_at >= SAS_RENEW_SECONDS:
            self._sas = container_sas(*self._key, self.container)
            self._signed_at = time.monotonic()
        return self._sas

    def read(self, name: str, etag: str, size: int, write: Callable[[bytes], object]) -> None:
        """GET the blob if it still has ``etag`` and ``size`` bytes; ``write`` each chunk."""
        url = f"{self.container_url}/{quote(name, safe='~/')}?{self._query()}"
        headers = {"x-ms-version": self.api_version, "If-Match": f'"{etag}"'}
        request = requests.Request("GET", url, headers=headers).prepare()
        response = self._adapter.send(request, **self._send_options)  # not session.send: its
        try:  # cookies, hooks and settings merging cost more CPU than the rest of a 10 KB read
            if response.status_code != 200:
                response.content  # noqa: B018 - read the error body: the connection is reused
                code = response.headers.get("x-ms-error-code")
                raise ReadFailed(response.status_code, code, response.reason or "")
            served = int(response.headers.get("Content-Length", "-1"))
            if served != size:
                raise SizeChanged(served)
            for chunk in response.iter_content(CHUNK_BYTES):
                write(chunk)
        finally:
            response.close()  # back to the pool once the body was read; closed otherwise

    def list_page(
        self, prefix: str, marker: str | None, page_size: int | None
    ) -> tuple[list[Listed], str | None]:
        """One List Blobs page under ``prefix``: its blobs and the next page's marker."""
        params = {"restype": "container", "comp": "list"}
        for name, value in (("prefix", prefix), ("marker", marker), ("maxresults", page_size)):
            if value:
                params[name] = str(value)
        url = f"{self.container_url}?{urlencode(params)}&{self._query()}"
        headers = {"x-ms-version": self.api_version}
        response = self.session.get(url, headers=headers, timeout=self.timeouts)
        if response.status_code != 200:
            code = response.headers.get("x-ms-error-code")
            raise ReadFailed(response.status_code, code, response.reason or "")
        return parse_listing(response.content)


def parse_listing(body: bytes) -> tuple[list[Listed], str | None]:
    """The blobs of a List Blobs response and its NextMarker (None on the last page)."""
    try:
        return _parse_listing(body)
    except (ElementTree.ParseError, ValueError) as exc:  # binascii.Error is a ValueError
        raise BadListing(f"malformed List Blobs response ({exc})") from None


def _parse_listing(body: bytes) -> tuple[list[Listed], str | None]:
    root = ElementTree.fromstring(body)
    blobs: list[Listed] = []
    for blob in root.iterfind("Blobs/Blob"):
        name_element = blob.find("Name")
        name = "" if name_element is None else name_element.text or ""
        if name_element is not None and name_element.get("Encoded") == "true":
            name = unquote(name)  # characters XML cannot carry arrive percent-encoded
        size = int(blob.findtext("Properties/Content-Length") or 0)
        etag = (blob.findtext("Properties/Etag") or "").strip('"')
        md5 = blob.findtext("Properties/Content-MD5")
        blobs.append((name, size, etag, base64.b64decode(md5) if md5 else None))
    return blobs, root.findtext("NextMarker") or None
