"""The sha256 of every file of a published revision, for the relay's manifest and ETags.

Computed once per revision and stored beside it as ``revisions/<id>.sha256.json`` (written
atomically), tagged with the digest of the manifest it describes, so a revision rebuilt under
the same id (another --subpath) is summed again; never recomputed per request. Revisions
published before serving was on are summed lazily, once, on their first request. Files a new
revision hard-links from the one summed before (same inode, size and mtime: published trees are
never modified) reuse its sums, so summing costs what changed, not the whole tree.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from dagsync.fsops import write_atomic
from dagsync.manifest import MODE_EXEC, Entry, Manifest
from dagsync.store import RevisionStore

CACHED_REVISIONS = 8
SUMS_VERSION = 1


@dataclass
class ServedRevision:
    """One revision as the relay serves it; ``sha256`` is empty until summed."""

    revision: str
    folder: Path
    manifest: Manifest
    stamp: tuple[int, int, int]
    source: str
    sha256: dict[str, str] = field(default_factory=dict)
    by_path: dict[str, Entry] = field(default_factory=dict)
    manifest_doc: bytes = b""
    tar_headers: list[bytes] | None = None  # computed on the first archive request


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def hash_file(folder_fd: int, path: str) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder_fd)
    with open(fd, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


class RevisionSums:
    """Loaded revisions and their sums, cached by the identity of their manifest file."""

    def __init__(self, store: RevisionStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._computing: dict[str, threading.Lock] = {}
        self._cache: OrderedDict[str, ServedRevision] = OrderedDict()
        self._known: dict[tuple[int, int, int, int], str] = {}  # file identity -> sha256

    def manifest_only(self, revision: str) -> ServedRevision | None:
        """The revision's manifest (cheap: no file is read)."""
        stamp = _stamp(self.store.manifest_path(revision))
        if stamp is None:
            return None
        with self._lock:
            cached = self._cache.get(revision)
            if cached is not None and cached.stamp == stamp:
                return cached
        published = self.store.load(revision)
        if published is None:
            return None
        source = str(self.store.read_state().get("source") or "")
        served = ServedRevision(revision, published.path, published.manifest, stamp, source)
        served.by_path = published.manifest.by_path()
        with self._lock:
            self._cache[revision] = served
            self._trim()
        return served

    def _trim(self) -> None:
        while len(self._cache) > CACHED_REVISIONS:
            self._cache.popitem(last=False)

    def get(self, revision: str) -> ServedRevision | None:
        """The revision with its sums (read from the sidecar, or computed and stored once)."""
        served = self.manifest_only(revision)
        if served is None or served.sha256 or not served.folder.is_dir():
            return served
        with self._lock:
            lock = self._computing.setdefault(revision, threading.Lock())
        with lock:  # one computation per revision, however many requests wait for it
            if not served.sha256:
                sums = self._read_or_compute(served)
                served.manifest_doc = self._manifest_doc(served, sums)
                served.sha256 = sums  # last: a non-empty sha256 means the record is complete
            with self._lock:
                self._cache[revision] = served
                self._cache.move_to_end(revision)
                self._trim()
                self._computing.pop(revision, None)
        return served

    def _read_or_compute(self, served: ServedRevision) -> dict[str, str]:
        digest = served.manifest.digest()
        path = self.store.sums_path(served.revision)
        try:
            doc = json.loads(path.read_text("utf-8"))
            if doc.get("version") == SUMS_VERSION and doc.get("manifest") == digest:
                sums = doc["sha256"]
                files = [e.path for e in served.manifest.entries if not e.is_symlink]
                if isinstance(sums, dict) and all(isinstance(sums.get(p), str) for p in files):
                    return {str(k): str(v) for k, v in sums.items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass
        folder = os.open(served.folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        sums = {}
        known: dict[tuple[int, int, int, int], str] = {}
        try:
            for e in served.manifest.entries:
                if e.is_symlink:
                    continue
                st = os.stat(e.path, dir_fd=folder, follow_symlinks=False)
                key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
                # An unchanged file is a hard link to the previous revision's: summed already.
                sums[e.path] = self._known.get(key) or hash_file(folder, e.path)
                known[key] = sums[e.path]
        finally:
            os.close(folder)
        self._known = known  # only the newest revision's, so memory stays one revision's
        doc = {"version": SUMS_VERSION, "manifest": digest, "sha256": sums}
        write_atomic(path, json.dumps(doc, separators=(",", ":")))
        return sums

    @staticmethod
    def _manifest_doc(served: ServedRevision, sums: dict[str, str]) -> bytes:
        entries = []
        for e in served.manifest.entries:
            if e.is_symlink:
                row = {"path": e.path, "size": e.size, "mode": "symlink", "target": e.target}
            else:
                mode = "exec" if e.mode == MODE_EXEC else "file"
                row = {"path": e.path, "size": e.size, "mode": mode, "sha256": sums[e.path]}
            entries.append(row)
        doc = {"id": served.revision, "source": served.source, "entries": entries}
        return (json.dumps(doc, separators=(",", ":")) + "\n").encode()
