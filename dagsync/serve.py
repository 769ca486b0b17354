"""``run --serve-revisions``: the read-only ``/v1/`` endpoints other pods fetch revisions from
(SPEC section 8). ``http.py`` routes ``/v1/`` requests here and lends its socket.

    GET /v1/revisions                    the revisions on disk, newest first
    GET /v1/revisions/ID/manifest        entries with sha256 (from the revision's sidecar)
    GET /v1/revisions/ID/files/PATH      one file's bytes, ETag = its sha256
    GET /v1/revisions/ID/archive.tar     the whole revision as a tar stream (gzip on request)

Paths are checked before anything is opened; a streamed revision is leased so the clean-up
skips it; at most ``max_streams`` responses run at once (503 + Retry-After beyond that, which
keeps threads and memory bounded however many workers start together).
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import Message
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from dagsync.errors import UnsafePath
from dagsync.manifest import MODE_EXEC, Entry, safe_path
from dagsync.metrics import ServeMetrics
from dagsync.revision_sums import RevisionSums, ServedRevision
from dagsync.store import RevisionStore
from dagsync.tarstream import Channel, Sink, tar_headers, write_tar
from dagsync.trigger import SecretFile

log = logging.getLogger(__name__)

MAX_STREAMS = 32  # concurrent /v1/ responses; more get 503 and retry (the relay source does)
RETRY_AFTER_SECONDS = 1
MAX_LINK_HOPS = 40  # as the kernel's ELOOP limit
_REVISION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class Responder(Channel, Protocol):
    """The HTTP handler's side: status line and headers, then the body through Channel."""

    started: bool

    def start(self, status: int, headers: Sequence[tuple[str, str]]) -> None: ...


class BadRequest(Exception):
    def __init__(self, status: int, message: str, endpoint: str = "other") -> None:
        super().__init__(message)
        self.status = status
        self.endpoint = endpoint


@dataclass(frozen=True)
class Route:
    endpoint: str  # revisions | manifest | files | archive
    revision: str | None = None
    path: str | None = None


def route(target: str) -> Route:
    """The endpoint of a request target; BadRequest(400/404) for anything else."""
    parts = urlsplit(target).path.split("/", 5)  # "", v1, revisions, ID, kind, PATH
    if parts[1:3] != ["v1", "revisions"]:
        raise BadRequest(404, "not found (try /v1/revisions)")
    if len(parts) == 3:
        return Route("revisions")
    revision = unquote(parts[3], errors="surrogateescape")
    kind = parts[4] if len(parts) > 4 else ""
    endpoint = {"files": "files", "manifest": "manifest", "archive.tar": "archive"}.get(kind)
    try:
        if endpoint == "files" and len(parts) == 6:
            return Route("files", _revision_id(revision), file_path(parts[5]))
        if endpoint in ("manifest", "archive") and len(parts) == 5:
            return Route(endpoint, _revision_id(revision))
    except BadRequest as exc:
        exc.endpoint = endpoint or "other"
        raise
    raise BadRequest(404, "not found (manifest, files/PATH or archive.tar)")


def _revision_id(text: str) -> str:
    if not _REVISION_ID.match(text):
        raise BadRequest(400, f"invalid revision id {text!r}")
    return text


def file_path(raw: str) -> str:
    """The percent-decoded PATH of a files request: relative, no ``..``, no NUL (400)."""
    decoded = unquote(raw, errors="surrogateescape")
    try:
        return safe_path(decoded)
    except UnsafePath as exc:
        raise BadRequest(400, str(exc)) from None


def resolve_entry(by_path: dict[str, Entry], path: str) -> Entry | None:
    """The regular file ``path`` names, following symlinks that stay inside the revision."""
    entry = by_path.get(path)
    for _ in range(MAX_LINK_HOPS):
        if entry is None or not entry.is_symlink:
            return entry
        joined = posixpath.normpath(posixpath.join(posixpath.dirname(entry.path), entry.target))
        if entry.target.startswith("/") or joined == ".." or joined.startswith("../"):
            return None
        entry = by_path.get(joined)
    return None


def wants_gzip(accept_encoding: str | None) -> bool:
    """``Accept-Encoding`` names gzip with a q-value above zero (or none)."""
    for item in (accept_encoding or "").split(","):
        name, *params = (part.strip() for part in item.split(";"))
        if name.lower() != "gzip":
            continue
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                return _positive(value.strip())
        return True
    return False


def _positive(q: str) -> bool:
    try:
        return float(q) > 0
    except ValueError:
        return False


class RevisionServer:
    """Answers ``/v1/`` requests from the revisions a RevisionStore keeps."""

    def __init__(
        self,
        store: RevisionStore,
        metrics: ServeMetrics,
        token: SecretFile | None = None,
        max_streams: int = MAX_STREAMS,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.token = token
        self.sums = RevisionSums(store)
        self._slots = threading.BoundedSemaphore(max_streams)

    def prepare(self, revision: str) -> None:
        """Compute a new revision's sums now (after publish), not on the first request."""
        with self.store.lease(revision):
            self.sums.get(revision)

    def handle(self, target: str, headers: Message, out: Responder, head: bool = False) -> None:
        endpoint = "other"
        try:
            req = route(target)
            endpoint = req.endpoint
            if self.token is not None and not self.token.bearer_matches(
                headers.get("Authorization")
            ):
                raise BadRequest(401, "unauthorized: send Authorization: Bearer <token>")
            if not self._slots.acquire(blocking=False):
                raise BadRequest(503, "busy: too many downloads at once, retry shortly")
            try:
                code = self._answer(req, headers, out, head)
            finally:
                self._slots.release()
        except BadRequest as exc:
            code = exc.status
            endpoint = exc.endpoint if endpoint == "other" else endpoint
            self._error(out, exc.status, str(exc))
        except OSError as exc:  # the client went away, or the tree on disk is damaged
            log.info("served response aborted endpoint=%s error=%s", endpoint, exc)
            code = 200 if out.started else 500
            if not out.started:
                self._error(out, 500, f"cannot read the revision: {exc.strerror or exc}")
        self.metrics.request(endpoint, code)

    def _answer(self, req: Route, headers: Message, out: Responder, head: bool) -> int:
        if req.endpoint == "revisions":
            return self._json(out, self.listing(), head)
        assert req.revision is not None
        if not (self.store.revisions / req.revision).is_dir():  # no lease file for a stranger
            raise BadRequest(404, f"revision {req.revision} is not on disk")
        with self.store.lease(req.revision):
            served = self.sums.get(req.revision)
            if served is None:
                raise BadRequest(404, f"revision {req.revision} is not on disk")
            if req.endpoint == "manifest":
                return self._json(out, served.manifest_doc, head)
            if req.endpoint == "files":
                assert req.path is not None
                return self._file(served, req.path, out, head)
            return self._archive(served, wants_gzip(headers.get("Accept-Encoding")), out, head)

    def listing(self) -> dict[str, Any]:
        current = self.store.published()
        rows = []
        seen = set()
        for item in self.store.read_state().get("history", []):
            revision = item.get("revision") if isinstance(item, dict) else None
            if not isinstance(revision, str) or revision in seen:
                continue
            seen.add(revision)
            served = self.sums.manifest_only(revision)
            if served is None:
                continue
            rows.append(
                {
                    "id": revision,
                    "published_at": item.get("published_at"),
                    "files": len(served.manifest),
                    "bytes": served.manifest.total_bytes,
                }
            )
        return {"current": current.revision if current else None, "revisions": rows}

    def _file(self, served: ServedRevision, path: str, out: Responder, head: bool) -> int:
        entry = resolve_entry(served.by_path, path)
        if entry is None:
            raise BadRequest(404, f"no file {path!r} in revision {served.revision}")
        try:
            folder = os.open(served.folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            raise BadRequest(404, f"revision {served.revision} is not on disk") from None
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder)
        except OSError:
            raise BadRequest(404, f"no file {path!r} in revision {served.revision}") from None
        finally:
            os.close(folder)
        with open(fd, "rb", buffering=0) as fh:
            out.start(
                200,
                [
                    ("Content-Type", "application/octet-stream"),
                    ("Content-Length", str(entry.size)),
                    ("ETag", f'"{served.sha256[entry.path]}"'),
                    ("X-Dagsync-Mode", "exec" if entry.mode == MODE_EXEC else "file"),
                ],
            )
            if not head:
                sink = Sink(out)
                try:
                    sink.copy_file(fh, entry.size)
                    sink.close()
                finally:
                    self.metrics.sent(sink.sent)
        return 200

    def _archive(self, served: ServedRevision, gzip: bool, out: Responder, head: bool) -> int:
        try:
            folder = os.open(served.folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            raise BadRequest(404, f"revision {served.revision} is not on disk") from None
        try:
            headers = [("Content-Type", "application/x-tar"), ("Vary", "Accept-Encoding")]
            if gzip:
                headers.append(("Content-Encoding", "gzip"))
            headers.append(("X-Dagsync-Revision", served.revision))
            out.start(200, headers)  # no length: the body ends when the connection closes
            if not head:
                sink = Sink(out, gzip=gzip)
                try:
                    if served.tar_headers is None:
                        served.tar_headers = tar_headers(folder, served.manifest.entries)
                    write_tar(sink, folder, served.manifest.entries, served.tar_headers)
                finally:
                    self.metrics.sent(sink.sent)
        finally:
            os.close(folder)
        return 200

    def _json(self, out: Responder, doc: Any, head: bool) -> int:
        body = doc if isinstance(doc, bytes) else (json.dumps(doc) + "\n").encode()
        out.start(200, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        if not head:
            out.write(body)
            self.metrics.sent(len(body))
        return 200

    def _error(self, out: Responder, status: int, message: str) -> None:
        body = (message + "\n").encode("utf-8", "replace")
        headers = [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
        ]
        if status == 401:
            headers.append(("WWW-Authenticate", 'Bearer realm="dagsync"'))
        if status == 503:
            headers.append(("Retry-After", str(RETRY_AFTER_SECONDS)))
        try:
            out.start(status, headers)
            out.write(body)
        except OSError:
            pass
