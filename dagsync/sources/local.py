"""A local directory (a checkout, an NFS or ossfs mount) as a store: the walk is the listing.

The change token is ``size:mtime_ns``; a "download" is a copy, so a published revision never
shares an inode with the source folder (an edit in place there cannot change what Airflow
reads). The executable bit is kept. Symlinks are published as symlinks when their target stays
inside the published tree, and refused (the sync fails naming them; ``--exclude`` them) when it
would leave it, as for git. Folders named ``.git`` are not published, and neither is the dagsync
root when it lies inside the folder. FIFOs, sockets and devices are skipped with a warning.

In ``run``, a watchdog observer asks for a sync within about a second of a change: events are
debounced (300 ms of quiet, at most 1 s after the first event), so a burst of writes makes one
sync. The periodic rescan stays as the fallback (a missed event, an observer that cannot start).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from dagsync.config import Config
from dagsync.errors import ConfigError, SourceError
from dagsync.manifest import MODE_EXEC, MODE_FILE, MODE_SYMLINK
from dagsync.sources.objectstore import ObjectStoreSource, RemoteObject
from dagsync.timing import remaining

if TYPE_CHECKING:
    from watchdog.observers.api import BaseObserver

log = logging.getLogger(__name__)

COPY_CHUNK_BYTES = 1024 * 1024
DEBOUNCE_QUIET_SECONDS = 0.3
DEBOUNCE_MAX_SECONDS = 1.0
SKIPPED_DIRS = frozenset({".git"})


class Debouncer:
    """Turns a burst of :meth:`poke` calls into one ``notify()``: after ``quiet`` seconds
    without a poke, or ``max_wait`` seconds after the first one, whichever comes first."""

    def __init__(
        self,
        notify: Callable[[], None],
        quiet: float = DEBOUNCE_QUIET_SECONDS,
        max_wait: float = DEBOUNCE_MAX_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.notify = notify
        self.quiet = quiet
        self.max_wait = max_wait
        self.clock = clock
        self._lock = threading.Lock()
        self._first: float | None = None
        self._last = 0.0
        self._poked = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dagsync-debounce", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def poke(self) -> None:
        with self._lock:
            now = self.clock()
            if self._first is None:
                self._first = now
            self._last = now
        self._poked.set()

    def stop(self) -> None:
        self._stop.set()
        self._poked.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._poked.wait()
            if self._stop.is_set():
                return
            while True:
                with self._lock:
                    first, last = self._first, self._last
                    due = min(last + self.quiet, (first or last) + self.max_wait)
                    wait = due - self.clock()
                    if wait <= 0:
                        self._first = None
                        self._poked.clear()
                        break
                if self._stop.wait(wait):
                    return
            try:
                self.notify()
            except Exception:  # the watcher must outlive a failing callback
                log.exception("file-event trigger failed")


class LocalSource(ObjectStoreSource):
    """The files of a local directory."""

    name = "local"

    def __init__(self, config: Config, cache_dir: Path) -> None:
        super().__init__(config, cache_dir)
        if config.local_path is None:
            raise ConfigError("--local-path is required with --source local", "local-path")
        path = config.local_path.expanduser().absolute()
        if not path.is_dir():
            raise ConfigError(f"--local-path: {path} is not a directory", "local-path")
        if not os.access(path, os.R_OK | os.X_OK):
            raise ConfigError(f"--local-path: cannot read {path}", "local-path")
        real, root = Path(os.path.realpath(path)), Path(os.path.realpath(config.root))
        if real == root or real.is_relative_to(root / ".dagsync"):
            raise ConfigError("--local-path must not be the --root or inside it", "local-path")
        self.path = path
        # The dagsync root inside the watched folder: neither published nor watched.
        self._root_inside = root if root.is_relative_to(real) else None
        self._root_relative = root.relative_to(real).as_posix() if self._root_inside else None
        self._observer: BaseObserver | None = None
        self._debouncer: Debouncer | None = None

    def describe(self) -> str:
        return f"local folder {self.path}"

    # -- listing and copying -----------------------------------------------------------------

    def list_objects(self, deadline: float) -> Iterable[RemoteObject]:
        pending = [""]
        while pending:
            folder = pending.pop()
            remaining(deadline, f"listing of {self.describe()}")
            try:
                with os.scandir(self.path / folder if folder else self.path) as it:
                    found = sorted(it, key=lambda e: e.name)
            except OSError as exc:
                raise SourceError(
                    f"{self.describe()}: cannot list {folder or '.'}: {exc.strerror}", folder
                ) from None
            for entry in found:
                relative = f"{folder}/{entry.name}" if folder else entry.name
                obj = self._object(entry, relative)
                if obj is None:
                    if entry.is_dir(follow_symlinks=False) and self._walk_into(entry, relative):
                        pending.append(relative)
                    continue
                yield obj

    def _walk_into(self, entry: os.DirEntry[str], relative: str) -> bool:
        return entry.name not in SKIPPED_DIRS and relative != self._root_relative

    def _object(self, entry: os.DirEntry[str], relative: str) -> RemoteObject | None:
        try:
            if entry.is_symlink():
                target = os.readlink(entry.path)
                size = len(os.fsencode(target))
                return RemoteObject(
                    relative, size, f"link:{target}", MODE_SYMLINK, entry.path, target
                )
            if entry.is_dir(follow_symlinks=False):
                return None
            st = entry.stat(follow_symlinks=False)
        except OSError as exc:
            raise SourceError(
                f"{self.describe()}: cannot read {relative}: {exc.strerror}", relative
            ) from None
        if not entry.is_file(follow_symlinks=False):
            log.warning("skipping special file path=%s", relative)
            return None
        if not os.access(entry.path, os.R_OK):
            raise SourceError(
                f"{self.describe()}: cannot read {relative}: Permission denied", relative
            )
        mode = MODE_EXEC if st.st_mode & 0o111 else MODE_FILE
        return RemoteObject(
            relative, st.st_size, f"{st.st_size}:{st.st_mtime_ns}", mode, entry.path
        )

    def download(self, obj: RemoteObject, out: BinaryIO, deadline: float) -> None:
        where = f"{self.describe()}: {obj.key}"
        try:
            with open(str(obj.handle), "rb") as src:
                if _token(os.fstat(src.fileno())) != obj.token:
                    raise SourceError(f"{where}: changed during the sync; retry", obj.key)
                shutil.copyfileobj(src, out, COPY_CHUNK_BYTES)
                if _token(os.fstat(src.fileno())) != obj.token:
                    raise SourceError(f"{where}: changed while copying; retry", obj.key)
        except OSError as exc:
            raise SourceError(f"{where}: cannot read: {exc.strerror}", obj.key) from None

    # -- file events -------------------------------------------------------------------------

    def watch(self, notify: Callable[[], None]) -> None:
        """Start the observer; its events (debounced) call ``notify``."""
        from watchdog import events
        from watchdog.observers import Observer

        # Events name paths as the observer was given them: the root in the same spelling.
        ignored = str(self.path / self._root_relative) if self._root_relative else None
        debouncer = Debouncer(notify)

        class Handler(events.FileSystemEventHandler):
            def on_any_event(self, event: Any) -> None:
                paths = [os.fsdecode(event.src_path), os.fsdecode(event.dest_path or "")]
                if ignored and all(_under(p, ignored) for p in paths if p):
                    return
                debouncer.poke()

        # Only changes: opens and read-only closes (our own copies) must not trigger syncs.
        wanted = [
            events.FileCreatedEvent,
            events.FileDeletedEvent,
            events.FileModifiedEvent,
            events.FileMovedEvent,
            events.FileClosedEvent,
            events.FileAttribEvent,
            events.DirCreatedEvent,
            events.DirDeletedEvent,
            events.DirMovedEvent,
        ]
        observer = Observer()
        try:
            observer.schedule(Handler(), str(self.path), recursive=True, event_filter=wanted)
            observer.start()
        except OSError as exc:  # e.g. the inotify watch limit; the period still rescans
            log.warning(
                "file events unavailable, rescanning every period path=%s error=%s",
                self.path,
                exc,
            )
            return
        debouncer.start()
        self._observer, self._debouncer = observer, debouncer
        log.info("watching path=%s", self.path)

    def close(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join()
            self._observer = None
        if self._debouncer is not None:
            self._debouncer.stop()
            self._debouncer = None


def _token(st: os.stat_result) -> str:
    return f"{st.st_size}:{st.st_mtime_ns}"


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)
