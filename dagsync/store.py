"""The on-disk layout under ROOT/.dagsync: staging, publishing by symlink swap, state, cleanup.

    ROOT/LINK -> .dagsync/revisions/<id>     relative symlink, replaced with rename(2)
    ROOT/.dagsync/revisions/<id>/            complete published trees
    ROOT/.dagsync/revisions/<id>.manifest.json
    ROOT/.dagsync/revisions/<id>.sha256.json  sha256 of each file (written when serving)
    ROOT/.dagsync/leases/<id>                 flock'ed (shared) while a response streams <id>
    ROOT/.dagsync/staging/<random>/          trees being built
    ROOT/.dagsync/cache/<source>/            source caches
    ROOT/.dagsync/state.json                 published revision and history

Published trees are never modified: a new revision is built beside them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import secrets
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dagsync.errors import ConfigError, PublishError
from dagsync.fsops import exchange, mkdirs, remove_tree, write_atomic
from dagsync.leases import clear_stale, held, remove_unless_leased
from dagsync.manifest import Manifest
from dagsync.sources.base import Published

log = logging.getLogger(__name__)

STATE_DIR = ".dagsync"
AIRFLOWIGNORE_LINE = ".dagsync"
TMP_LINK_MARK = ".tmp-dagsync-"
# Files kept beside a revision folder, removed together with it.
SIDECAR_SUFFIXES = (".manifest.json", ".sha256.json")
MANIFESTS_CACHED = 2


@dataclass(frozen=True)
class HistoryItem:
    revision: str
    published_at: float
    superseded_at: float | None = None


class RevisionStore:
    """Everything dagsync keeps under its root, and the only code that changes it."""

    def __init__(self, root: Path, link: str) -> None:
        self.root = root
        link_path = Path(link)
        self.link = link_path if link_path.is_absolute() else root / link_path
        self.state_dir = root / STATE_DIR
        self.revisions = self.state_dir / "revisions"
        self.staging = self.state_dir / "staging"
        # Trees replaced under their own id wait here for --revision-grace, like superseded
        # revisions, so a reader inside one keeps working.
        self.retired = self.state_dir / "retired"
        self.cache = self.state_dir / "cache"
        self.leases = self.state_dir / "leases"
        self.state_file = self.state_dir / "state.json"
        # The last manifest read, by revision and the file's identity: one pass asks for the
        # published revision several times, and a 10,000-entry manifest takes ~50 ms to parse.
        self._loaded: dict[str, tuple[tuple[int, int, int], Manifest]] = {}

    # -- set-up and recovery -------------------------------------------------------------
    def prepare(self) -> None:
        """Create the layout and clear what a crash or kill -9 left behind."""
        try:
            self._make_root()
            for folder in (self.revisions, self.staging, self.cache):
                folder.mkdir(parents=True, exist_ok=True)
            os.chmod(self.state_dir, 0o755)
            os.chmod(self.revisions, 0o755)
        except OSError as exc:
            raise cannot_create(exc) from None
        self._write_airflowignore()
        self.clear_staging()
        stale = [
            *self.link.parent.glob(f".{self.link.name}{TMP_LINK_MARK}*"),
            *self.state_dir.glob(".*.tmp"),  # write_atomic's temp files (state.json)
            *self.revisions.glob(".*.tmp"),  # (manifests)
        ]
        for path in stale:
            with contextlib.suppress(OSError):
                path.unlink()
        self._remove_unclaimed_trees()

    def _remove_unclaimed_trees(self) -> None:
        """A revision folder without its manifest is what a kill in the middle of clean-up
        leaves (the manifest went first). Publishing writes the manifest before the folder
        moves in, so such a folder was never published; a pass that finds the source unchanged
        does not clean up, so it would stay until the next publish."""
        current = os.path.realpath(self.link)
        for path in self.revisions.iterdir():
            if path.name.startswith(".") or not path.is_dir() or path.is_symlink():
                continue
            if not self._manifest_path(path.name).exists() and os.path.realpath(path) != current:
                remove_tree(path)

    def _make_root(self) -> None:
        # Folders on the way to a published tree must be traversable by Airflow's uid,
        # whatever our umask; folders that already existed are the user's, left alone.
        for folder in (self.root, self.link.parent, self.state_dir):
            for created in mkdirs(folder):
                os.chmod(created, 0o755)

    def _write_airflowignore(self) -> None:
        # Airflow pointed at the root would otherwise walk every kept revision.
        path = self.root / ".airflowignore"
        try:
            existing = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            existing = None
        if existing is None:
            write_atomic(path, AIRFLOWIGNORE_LINE + "\n")
        elif AIRFLOWIGNORE_LINE not in existing.splitlines():
            sep = "" if existing.endswith("\n") or not existing else "\n"
            write_atomic(path, existing + sep + AIRFLOWIGNORE_LINE + "\n")

    def clear_staging(self) -> None:
        for leftover in self.staging.iterdir() if self.staging.exists() else ():
            remove_tree(leftover)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One dagsync at a time per root (e.g. two sidecars on one shared volume)."""
        try:
            self._make_root()
        except OSError as exc:
            raise cannot_create(exc) from None
        with open(self.state_dir / "lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- reading -------------------------------------------------------------------------
    def published(self) -> Published | None:
        """The revision the link points at, if the link and its complete folder exist."""
        try:
            target = os.readlink(self.link)
        except OSError:
            return None
        folder = (self.link.parent / target).resolve()
        if folder.parent != self.revisions.resolve() or not folder.is_dir():
            return None
        return self._load(folder.name)

    def reusable(self) -> Published | None:
        """A complete revision to take unchanged files from: the published one, or the last
        one recorded in state.json when the link was deleted."""
        current = self.published()
        if current is not None:
            return current
        revision = self.read_state().get("revision")
        return self._load(revision) if isinstance(revision, str) else None

    def _load(self, revision: str) -> Published | None:
        folder = self.revisions / revision
        try:
            manifest = self._read_manifest(revision)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return Published(revision, folder, manifest) if folder.is_dir() else None

    def _read_manifest(self, revision: str) -> Manifest:
        """The revision's manifest, parsed again only when its file was replaced (a manifest
        is written whole and renamed into place, so inode, size and mtime name one text)."""
        with open(self._manifest_path(revision), encoding="utf-8") as fh:
            st = os.fstat(fh.fileno())
            identity = (st.st_ino, st.st_size, st.st_mtime_ns)
            cached = self._loaded.get(revision)
            if cached is not None and cached[0] == identity:
                return cached[1]
            manifest = Manifest.from_json(fh.read())
        self._remember(revision, identity, manifest)
        return manifest

    def _remember(self, revision: str, identity: tuple[int, int, int], manifest: Manifest) -> None:
        # The published revision and the one being published; a third evicts the oldest.
        self._loaded.pop(revision, None)
        while len(self._loaded) >= MANIFESTS_CACHED:
            del self._loaded[next(iter(self._loaded))]
        self._loaded[revision] = (identity, manifest)

    def _manifest_path(self, revision: str) -> Path:
        return self.revisions / f"{revision}.manifest.json"

    def manifest_path(self, revision: str) -> Path:
        return self._manifest_path(revision)

    def sums_path(self, revision: str) -> Path:
        """The sha256 of every file of ``revision`` (written by whoever serves it)."""
        return self.revisions / f"{revision}.sha256.json"

    def load(self, revision: str) -> Published | None:
        """A complete revision on disk by id (published or still kept)."""
        return self._load(revision)

    def lease(self, revision: str) -> contextlib.AbstractContextManager[None]:
        """Keep ``revision`` on disk while the block runs (see :mod:`dagsync.leases`)."""
        return held(self.leases, revision)

    def read_state(self) -> dict[str, Any]:
        try:
            data = json.loads(self.state_file.read_text("utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    # -- building and publishing ---------------------------------------------------------
    def new_staging(self) -> Path:
        path = self.staging / secrets.token_hex(8)
        try:
            path.mkdir(parents=True)
        except OSError as exc:
            raise PublishError(f"--root: cannot create a staging folder: {exc.strerror}") from None
        return path

    def discard(self, staging: Path) -> None:
        remove_tree(staging)
        remove_tree(staging.with_name(staging.name + ".parts"))

    def publish(
        self,
        staging: Path,
        revision: str,
        manifest: Manifest,
        source: str,
        now: float,
        selection: Mapping[str, Any] | None = None,
    ) -> Published:
        """Move the finished tree into place and swap the link to it atomically."""
        folder = self.revisions / revision
        try:
            manifest_path = self._manifest_path(revision)
            write_atomic(manifest_path, manifest.json_chunks())
            st = manifest_path.stat()
            self._remember(revision, (st.st_ino, st.st_size, st.st_mtime_ns), manifest)
            current = self.published()
            if current is not None and current.path == folder and exchange(staging, folder):
                # The published id rebuilt (another --subpath/--include for the same commit):
                # the link never changes and the folder it names becomes the new tree in one
                # step; the old tree, now at ``staging``, is retired.
                self._retire(staging, now)
            else:
                if folder.exists():
                    # Same id but not published (link deleted, or an old revision still
                    # kept): retire the old copy so the new one gets fresh mtimes.
                    self._retire(folder, now)
                os.replace(staging, folder)
            self._swap_link(folder)
        except OSError as exc:
            raise PublishError(
                f"cannot publish {revision}: {exc.strerror}: {exc.filename}"
            ) from exc
        self._record(revision, manifest, source, now, selection)
        return Published(revision, folder, manifest)

    def _retire(self, tree: Path, now: float) -> None:
        self.retired.mkdir(exist_ok=True)
        os.replace(tree, self.retired / f"{int(now)}-{secrets.token_hex(6)}")

    def check_link_place(self) -> None:
        """Refuse to replace anything of the user's at the link: only a symlink (ours, or
        git-sync's) or nothing may be there. Checked before every pass downloads anything."""
        try:
            st = os.lstat(self.link)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise PublishError(f"--link: cannot inspect {self.link}: {exc.strerror}") from None
        if stat.S_ISLNK(st.st_mode):
            return
        kind = "a real directory" if stat.S_ISDIR(st.st_mode) else "a regular file"
        if not stat.S_ISDIR(st.st_mode) and not stat.S_ISREG(st.st_mode):
            kind = "not a symlink"
        raise PublishError(
            f"--link: {self.link} exists and is {kind}, not a symlink dagsync made; "
            f"nothing was replaced: move it away (e.g. mv {self.link} {self.link}.old) "
            "or choose another --link"
        )

    def _swap_link(self, folder: Path) -> None:
        target = os.path.relpath(folder, self.link.parent)
        tmp = self.link.parent / f".{self.link.name}{TMP_LINK_MARK}{secrets.token_hex(6)}"
        os.symlink(target, tmp)
        try:
            self.check_link_place()  # again: it may have appeared during the pass
            os.replace(tmp, self.link)
        finally:
            if tmp.is_symlink():
                tmp.unlink()

    def _record(
        self,
        revision: str,
        manifest: Manifest,
        source: str,
        now: float,
        selection: Mapping[str, Any] | None,
    ) -> None:
        state = self.read_state()
        history = [
            HistoryItem(**item) for item in state.get("history", []) if isinstance(item, dict)
        ]
        history = [h for h in history if h.revision != revision]
        history = [HistoryItem(h.revision, h.published_at, h.superseded_at or now) for h in history]
        history.insert(0, HistoryItem(revision, now))
        state = {
            "revision": revision,
            "source": source,
            "published_at": now,
            "files": len(manifest),
            "bytes": manifest.total_bytes,
            "link": str(self.link),
            "path": str(self.revisions / revision),
            "selection": dict(selection or {}),
            "history": [h.__dict__ for h in history[:50]],
        }
        write_atomic(self.state_file, json.dumps(state, indent=1))

    # -- cleanup -------------------------------------------------------------------------
    def collect_garbage(self, keep: int, grace: float, now: float) -> list[str]:
        """Remove revisions beyond the newest ``keep`` that were superseded ``grace`` ago,
        folders no revision claims, and leftover staging. Returns the removed ids."""
        history = [HistoryItem(**h) for h in self.read_state().get("history", [])]
        current = self.published()
        keep_ids = {h.revision for h in history[:keep]}
        keep_ids |= {
            h.revision for h in history if h.superseded_at is None or now - h.superseded_at < grace
        }
        if current is not None:
            keep_ids.add(current.revision)
        removed = []
        doomed: dict[str, list[Path]] = {}
        for path in self.revisions.iterdir() if self.revisions.exists() else ():
            name = path.name
            for suffix in SIDECAR_SUFFIXES:
                name = name.removesuffix(suffix)
            if name in keep_ids or name.startswith("."):
                continue
            doomed.setdefault(name, []).append(path)
        for name, paths in sorted(doomed.items()):
            is_tree = any(p.name == name and p.is_dir() for p in paths)
            # A revision a response is still streaming stays until the next clean-up.
            if not remove_unless_leased(self.leases, name, _remover(paths)):
                log.info("kept revision=%s reason=being served", name)
                continue
            if is_tree:
                removed.append(name)
        clear_stale(self.leases, lambda name: (self.revisions / name).exists())
        for tree in self.retired.iterdir() if self.retired.exists() else ():
            retired_at = tree.name.partition("-")[0]
            if not retired_at.isdigit() or now - int(retired_at) >= grace:
                remove_tree(tree)
        self.clear_staging()
        return removed


def cannot_create(exc: OSError) -> ConfigError:
    """The root (or a folder in it) could not be made: say which, and why in plain words. A
    usage error (exit 2, before any network access), like a root the start-up probe refuses."""
    reason = "a file is in the way" if exc.errno == errno.EEXIST else exc.strerror
    return ConfigError(f"--root: cannot create {exc.filename}: {reason}", "root")


def _remover(paths: list[Path]) -> Callable[[], None]:
    # The manifest and the other sidecars go before the tree: a kill in between leaves a
    # folder nothing claims (removed at the next start-up), never a manifest naming a tree
    # that is half gone (which the revision server or a pinned bundle would trust).
    ordered = sorted(paths, key=lambda p: not p.name.endswith(SIDECAR_SUFFIXES))

    def remove() -> None:
        for path in ordered:
            remove_tree(path)

    return remove


def now_wall() -> float:
    return time.time()
