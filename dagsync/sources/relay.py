"""``--source relay``: fetch the exact revision another dagsync serves (``run --serve-revisions``).

On the object-store pipeline: the listing is the relay's manifest, the change token each file's
sha256, and the revision id the upstream's id (commit SHA or digest), so ``dagsync status`` on a
worker and on the relay agree. A cold fetch (nothing reusable) reads one ``archive.tar`` stream
and checks every member against the manifest (size, sha256, mode, symlink target) before it is
written; a warm fetch hard-links unchanged files and GETs the others (``--concurrency``).
The standard library's ``http.client`` keeps start-up cheap; the token is never logged.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import json
import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote, urlsplit

from dagsync import __version__
from dagsync.config import Config
from dagsync.errors import ConfigError, SourceError, UnsafePath
from dagsync.manifest import MODE_EXEC, MODE_FILE, MODE_SYMLINK, Entry, Manifest, diff, safe_path
from dagsync.redact import read_secret_file, redact_url, register_url_credentials
from dagsync.sources.base import FetchStats, Plan, Published
from dagsync.sources.objectstore import ObjectStoreSource, RemoteObject
from dagsync.tarstream import Member, TarFormatError, TarReader
from dagsync.timing import remaining
from dagsync.tree import TreeWriter

log = logging.getLogger(__name__)


REQUEST_TIMEOUT_SECONDS = 60.0  # per connect and per socket read, never past the deadline
CHUNK_BYTES = 256 * 1024
READ_BUFFER_BYTES = 1 << 20
WHOLE_MEMBER_BYTES = 1 << 20  # members up to this size are read, checked and written whole
DEADLINE_CHECK_MEMBERS = 64
# A busy relay answers 503 (Retry-After) and a restarting one refuses connections: keep trying
# for about two minutes (backoff capped at 5 s), never past --sync-timeout.
RETRY_ATTEMPTS = 30
MODES = {"file": MODE_FILE, "exec": MODE_EXEC, "symlink": MODE_SYMLINK}
_REVISION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class Unavailable(SourceError):
    """A 5xx/503 or a broken connection: worth another try."""


class NotOnRelay(SourceError):
    """404: the relay does not have this revision (any more)."""


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, Unavailable | OSError | http.client.HTTPException)


class RelaySource(ObjectStoreSource):
    """The revisions of a ``dagsync run --serve-revisions``."""

    name = "relay"
    is_transient = staticmethod(is_transient)
    retry_attempts = RETRY_ATTEMPTS  # a busy or restarting relay: about two minutes

    def __init__(self, config: Config, cache_dir: Path) -> None:
        super().__init__(config, cache_dir)
        url = (config.relay_url or "").strip()
        if not url:
            raise ConfigError("--relay-url is required with --source relay", "relay-url")
        register_url_credentials(url)
        parts = urlsplit(url if "://" in url else "http://" + url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"--relay-url: expected http(s)://HOST[:PORT], got {redact_url(url)!r}", "relay-url"
            )
        try:
            self.port = parts.port
        except ValueError:
            raise ConfigError(
                f"--relay-url: invalid port in {redact_url(url)!r}", "relay-url"
            ) from None
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.base = parts.path.rstrip("/")
        self.url = redact_url(f"{parts.scheme}://{parts.netloc}{self.base}")
        self.token_file = config.relay_token_file
        self.pinned = config.revision
        if self.pinned is not None and not _REVISION_ID.match(self.pinned):
            raise ConfigError(f"--revision: invalid revision id {self.pinned!r}", "revision")
        self._token: str | None = None
        self._listing: list[RemoteObject] = []
        self._revision = ""

    def describe(self) -> str:
        return f"relay {self.url}"

    # -- HTTP ------------------------------------------------------------------------------
    def _read_token(self) -> None:
        if self.token_file is None:
            return
        try:
            self._token = read_secret_file(self.token_file) or None
        except OSError as exc:
            raise SourceError(
                f"--relay-token-file: cannot read {self.token_file}: {exc.strerror}"
            ) from None

    def _open(self, path: str, deadline: float) -> http.client.HTTPResponse:
        """GET ``path`` (status 200), or SourceError saying what the relay answered."""
        timeout = min(REQUEST_TIMEOUT_SECONDS, remaining(deadline, f"{self.describe()} {path}"))
        cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        conn = cls(self.host, self.port, timeout=timeout)
        headers = {"User-Agent": f"dagsync/{__version__}", "Accept-Encoding": "identity"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            conn.request("GET", self.base + path, headers=headers)
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise Unavailable(f"{self.describe()}: cannot reach it: {exc}") from None
        if resp.status == 200:
            return resp
        body = resp.read(512).decode("utf-8", "replace").strip().splitlines()
        conn.close()
        said = f": {body[0]}" if body else ""
        if resp.status == 401:
            hint = "wrong token in" if self._token else "the relay needs"
            raise SourceError(f"{self.describe()}: 401 unauthorized ({hint} --relay-token-file)")
        if resp.status == 404:
            raise NotOnRelay(f"{self.describe()}: 404 for {path}{said}")
        if resp.status >= 500 or resp.status == 429:
            raise Unavailable(f"{self.describe()}: {resp.status} for {path}{said}")
        raise SourceError(f"{self.describe()}: {resp.status} for {path}{said}")

    def _json(self, path: str, deadline: float) -> Any:
        def get() -> Any:
            resp = self._open(path, deadline)
            try:
                return json.loads(resp.read())
            finally:
                resp.close()

        try:
            return self._retried(get, deadline, path)
        except ValueError as exc:
            raise SourceError(f"{self.describe()}: {path} is not JSON: {exc}") from None
        except (OSError, http.client.HTTPException) as exc:
            raise Unavailable(f"{self.describe()}: {path}: {exc}") from None

    # -- listing ---------------------------------------------------------------------------
    def resolve(self, deadline: float) -> Plan:
        self._read_token()
        revision = self.pinned or self._current(deadline)
        try:
            doc = self._json(f"/v1/revisions/{quote(revision)}/manifest", deadline)
        except NotOnRelay:
            raise SourceError(
                f"revision {revision} is not on {self.describe()} (it keeps only its newest "
                "revisions; see /v1/revisions)",
                revision,
            ) from None
        self._listing = parse_manifest(doc, revision, self.describe())
        self._revision = revision
        plan = super().resolve(deadline)
        upstream = {obj.key: obj for obj in self._listing}
        return Plan(revision, plan.manifest, {**plan.detail, "upstream": upstream})

    def revision_of(self, manifest: Manifest) -> str:
        return self._revision  # the upstream's id, never a digest of the listing

    def _current(self, deadline: float) -> str:
        try:
            doc = self._json("/v1/revisions", deadline)
        except NotOnRelay:
            raise SourceError(
                f"{self.describe()} does not serve revisions (is it a dagsync run "
                "--serve-revisions?)"
            ) from None
        current = doc.get("current") if isinstance(doc, dict) else None
        if not isinstance(current, str) or not _REVISION_ID.match(current):
            raise SourceError(f"{self.describe()} has no published revision yet")
        return current

    def list_objects(self, deadline: float) -> Iterable[RemoteObject]:
        return self._listing

    # -- fetching --------------------------------------------------------------------------
    def fetch(
        self, plan: Plan, dest: Path, previous: Published | None, deadline: float
    ) -> FetchStats:
        assert plan.manifest is not None
        changes = diff(plan.manifest, previous.manifest if previous else None)
        upstream: dict[str, RemoteObject] = plan.detail["upstream"]
        wanted = plan.manifest.total_bytes
        # Nothing to reuse (a cold worker): one archive request, unless the selection keeps
        # so little of the revision that single files cost less.
        if not changes.reuse and 2 * wanted >= sum(o.size for o in upstream.values()):
            return self._fetch_archive(plan, dest, deadline)
        return super().fetch(plan, dest, previous, deadline)

    def download(self, obj: RemoteObject, out: BinaryIO, deadline: float) -> None:
        path = f"/v1/revisions/{quote(str(obj.handle))}/files/{quote(obj.key)}"

        def get() -> None:
            out.seek(0)
            out.truncate()
            resp = self._open(path, deadline)
            try:
                etag = (resp.getheader("ETag") or "").strip('"')
                if etag and etag != obj.token:
                    raise SourceError(f"{obj.key}: the relay's ETag does not match its manifest")
                digest = hashlib.sha256()
                while chunk := resp.read(CHUNK_BYTES):
                    self.check_running(deadline, f"download of {obj.key}")
                    digest.update(chunk)
                    out.write(chunk)
            finally:
                resp.close()
            verify(obj, out.tell(), digest.hexdigest())

        try:
            self._retried(get, deadline, f"download of {obj.key}")
        except (OSError, http.client.HTTPException) as exc:
            raise SourceError(
                f"download of {obj.key} from {self.describe()} failed: {exc}"
            ) from None

    def _fetch_archive(self, plan: Plan, dest: Path, deadline: float) -> FetchStats:
        """One archive stream; should it break, the files it did not deliver are fetched one
        by one (what it delivered was verified already). A member that fails verification
        fails the pass."""
        assert plan.manifest is not None
        writer = TreeWriter(dest, None)
        stats = FetchStats(manifest=plan.manifest)
        done: set[str] = set()
        what = f"archive of {plan.revision} from {self.describe()}"
        try:
            resp = self._retried(
                lambda: self._open(f"/v1/revisions/{quote(plan.revision)}/archive.tar", deadline),
                deadline,
                what,
            )
            try:
                self._read_archive(plan, resp, writer, done, deadline)
            finally:
                resp.close()
        except (EOFError, OSError, http.client.HTTPException) as exc:
            log.info("archive broke, fetching the rest file by file what=%s error=%s", what, exc)
        todo = [e for e in plan.manifest.entries if e.path not in done]
        for entry in [e for e in todo if e.is_symlink]:
            writer.symlink(entry)
        files = [e for e in todo if not e.is_symlink]
        self._download_all(writer, files, plan.detail["objects"], deadline)
        stats.downloaded_files = sum(1 for e in plan.manifest.entries if not e.is_symlink)
        stats.downloaded_bytes = plan.manifest.total_bytes
        writer.finish()
        return stats

    def _read_archive(
        self,
        plan: Plan,
        resp: http.client.HTTPResponse,
        writer: TreeWriter,
        done: set[str],
        deadline: float,
    ) -> None:
        upstream: dict[str, RemoteObject] = plan.detail["upstream"]
        published_as = {obj.key: path for path, obj in plan.detail["objects"].items()}
        assert plan.manifest is not None
        by_path = plan.manifest.by_path()
        what = f"archive of {plan.revision} from {self.describe()}"
        encoding = (resp.getheader("Content-Encoding") or "identity").lower()
        if encoding != "identity":
            raise SourceError(f"{what}: unexpected Content-Encoding {encoding}")
        tar = TarReader(io.BufferedReader(resp, READ_BUFFER_BYTES))  # type: ignore[arg-type]
        seen: set[str] = set()
        try:
            for count, member in enumerate(tar.members()):
                if count % DEADLINE_CHECK_MEMBERS == 0:
                    remaining(deadline, what)
                key = checked_member(member, upstream, seen, self.describe())
                path = published_as.get(key)
                if path is None:
                    continue  # left out by --subpath/--include/--exclude
                entry = by_path[path]
                if entry.is_symlink:
                    writer.symlink(entry)
                elif entry.size <= WHOLE_MEMBER_BYTES:
                    data = tar.read_rest()
                    verify(upstream[key], len(data), hashlib.sha256(data).hexdigest())
                    writer.place(entry, data)
                else:
                    self._write_member(tar, entry, upstream[key], writer)
                done.add(path)
        except TarFormatError as exc:
            raise SourceError(f"{what} is damaged: {exc}") from None
        missing = sorted(set(upstream) - seen)
        if missing:
            raise SourceError(f"{what} ended without {missing[0]!r} ({len(missing)} missing)")

    @staticmethod
    def _write_member(tar: TarReader, entry: Entry, obj: RemoteObject, writer: TreeWriter) -> None:
        try:
            with writer.create(entry) as out:
                digest = hashlib.sha256()
                while chunk := tar.read(CHUNK_BYTES):
                    digest.update(chunk)
                    out.write(chunk)
                verify(obj, out.tell(), digest.hexdigest())
        except BaseException:
            with contextlib.suppress(FileNotFoundError):  # a partial file: fetched again later
                (writer.dest / entry.path).unlink()
            raise


def verify(obj: RemoteObject, size: int, sha256: str) -> None:
    """A downloaded file must be exactly what the manifest says."""
    if size != obj.size:
        raise SourceError(f"{obj.key}: got {size} bytes, the manifest says {obj.size}", obj.key)
    if sha256 != obj.token:
        raise SourceError(f"{obj.key}: sha256 {sha256} differs from the manifest's", obj.key)


def checked_member(
    member: Member, upstream: dict[str, RemoteObject], seen: set[str], where: str
) -> str:
    """The manifest key of an archive member whose type, mode and size match its entry."""
    key = member.name
    obj = upstream.get(key)  # the manifest's keys passed safe_path when it was listed
    if obj is None:
        try:
            key = safe_path(member.name)
        except UnsafePath as exc:
            raise UnsafePath(f"{where}: archive member: {exc}", member.name) from None
        obj = upstream.get(key)
    if obj is None or key in seen:
        reason = "twice" if obj is not None else "but not in the manifest"
        raise SourceError(f"{where}: archive holds {key!r} {reason}", key)
    seen.add(key)
    if obj.mode == MODE_SYMLINK:
        if member.kind != "symlink" or member.linkname != obj.target:
            raise SourceError(f"{where}: {key}: not the symlink the manifest names", key)
        return key
    if member.kind != "file":
        raise SourceError(f"{where}: {key}: archive member is not a regular file", key)
    if bool(member.mode & 0o111) != (obj.mode == MODE_EXEC):
        raise SourceError(f"{where}: {key}: mode {oct(member.mode)} differs from the manifest", key)
    if member.size != obj.size:
        raise SourceError(
            f"{where}: {key}: {member.size} bytes in the archive, the manifest says {obj.size}",
            key,
        )
    return key


def parse_manifest(doc: Any, revision: str, where: str) -> list[RemoteObject]:
    """The relay's manifest as listed objects (``handle`` = the revision id)."""
    if not isinstance(doc, dict) or doc.get("id") != revision:
        raise SourceError(f"{where}: manifest of {revision} names another revision", revision)
    entries = doc.get("entries")
    if not isinstance(entries, list):
        raise SourceError(f"{where}: manifest of {revision} has no entries", revision)
    out = []
    for row in entries:
        try:
            path, size, mode = row["path"], row["size"], MODES[row["mode"]]
            if not isinstance(path, str) or not isinstance(size, int) or size < 0:
                raise TypeError
            if mode == MODE_SYMLINK:
                target = row["target"]
                if not isinstance(target, str):
                    raise TypeError
                out.append(RemoteObject(path, size, "", mode, revision, target))
            else:
                sha256 = row["sha256"]
                if not isinstance(sha256, str) or not _SHA256.match(sha256):
                    raise TypeError
                out.append(RemoteObject(path, size, sha256, mode, revision))
        except (KeyError, TypeError):
            raise SourceError(f"{where}: malformed manifest entry {row!r:.200}", revision) from None
    return out
