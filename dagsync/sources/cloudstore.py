"""What the s3, gcs and azureblob sources share, without any SDK: prefixes as folders, the
credential files watched for rotation, and a writer that hashes what it writes.

Those three sources take their credentials from each cloud's own chain (environment, shared
files, workload identity), which the SDK reads; dagsync only notices when a credential file it
can name has changed, and then builds a new client so the next pass signs with the new secret.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from dagsync.errors import ConfigError
from dagsync.redact import register_secret

log = logging.getLogger(__name__)

_BUCKET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]$")


def folder_prefix(prefix: str) -> str:
    """A prefix names a folder: "dags" publishes dags/a.py as a.py, never dags-old/b.py."""
    stripped = prefix.strip().strip("/")
    return stripped + "/" if stripped else ""


def listing_prefix(prefix: str, subpath: str | None) -> str:
    """What to list: the prefix, narrowed to --subpath (keys keep the subpath; the selector
    strips it as for every source)."""
    return prefix + (subpath + "/" if subpath else "")


def relative_key(key: str, prefix: str) -> str | None:
    """``key`` below ``prefix``; None for the prefix itself and "folder/" marker objects."""
    if not key.startswith(prefix):
        return None
    rel = key[len(prefix) :]
    if not rel or rel.endswith("/"):
        return None
    return rel


def check_bucket_name(value: str | None, flag: str, source: str) -> str:
    """The bucket/container option, required and plausible (the service checks the rest)."""
    name = (value or "").strip()
    if not name:
        raise ConfigError(f"--{flag} is required with --source {source}", flag)
    if not (_BUCKET_NAME.match(name) or name.startswith("arn:")):
        raise ConfigError(f"--{flag}: invalid name {name!r}", flag)
    return name


def check_http_url(value: str | None, flag: str, example: str) -> str | None:
    """An endpoint or account URL: http(s)://host[:port][/path], no query or credentials."""
    if value is None:
        return None
    from urllib.parse import urlsplit

    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--{flag}: expected a URL like {example}", flag)
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigError(f"--{flag}: must not carry a query or credentials", flag)
    return value.rstrip("/")


class CredentialFiles:
    """The contents of the credential files a cloud's chain reads, compared pass to pass.

    ``paths()`` names them (it may change with the environment); ``changed()`` is True when
    any of them was created, removed or rewritten since the last call. Contents, not mtimes,
    are compared: Kubernetes rotates a mounted secret by swapping a symlink.
    """

    def __init__(self, paths: Callable[[], Iterable[Path]]) -> None:
        self._paths = paths
        self._seen = self._fingerprint()

    def _fingerprint(self) -> dict[Path, str | None]:
        found: dict[Path, str | None] = {}
        for path in self._paths():
            try:
                found[path] = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError:
                found[path] = None
        return found

    def changed(self) -> bool:
        now = self._fingerprint()
        if now == self._seen:
            return False
        names = sorted(
            str(p) for p in set(now) | set(self._seen) if now.get(p) != self._seen.get(p)
        )
        log.info("credentials changed files=%s", ",".join(names))
        self._seen = now
        return True


def env_path(environ: os._Environ[str] | dict[str, str], name: str, default: str) -> Path:
    """A file an SDK reads from ``$name`` or a default under the home folder."""
    return Path(os.path.expanduser(environ.get(name) or default))


def register_secrets(*values: Any) -> None:
    for value in values:
        if isinstance(value, str) and value:
            register_secret(value)


def pin_requests_environment(session: Any, url: str) -> None:
    """Resolve the proxy, CA-bundle and netrc settings of the environment once, for ``url``:
    a ``requests`` session otherwise re-reads them (stat calls and all) on every request,
    which costs more CPU than the rest of a small download."""
    settings = session.merge_environment_settings(url, {}, None, None, None)
    session.proxies.update(settings["proxies"])
    if url.startswith("https:"):  # a CA-bundle path costs a stat per request; http needs none
        session.verify = settings["verify"]
    session.trust_env = False


class Digest(Protocol):
    def update(self, data: bytes, /) -> None: ...


class HashingWriter:
    """Writes to ``out`` and feeds every byte to ``digests``; ``check()`` runs before each
    chunk (the pass's deadline and cancellation), so a long download stops in time."""

    def __init__(self, out: BinaryIO, digests: Iterable[Digest], check: Callable[[], None]):
        self.out = out
        self.digests = list(digests)
        self.check = check
        self.written = 0

    def write(self, data: bytes) -> int:
        self.check()
        self.out.write(data)
        for digest in self.digests:
            digest.update(data)
        self.written += len(data)
        return len(data)

    def restart(self, digests: Iterable[Digest]) -> None:
        """Start over (a retried download): empty the file and the digests."""
        self.out.seek(0)
        self.out.truncate()
        self.digests = list(digests)
        self.written = 0
