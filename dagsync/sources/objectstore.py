"""The pipeline shared by sources that list objects (OSS, Azure Files, a local folder).

``resolve`` turns a listing into a Manifest whose digest is the revision id; ``fetch`` hard-links
unchanged entries from the previous revision and downloads the rest in parallel, each streamed to
a temp file, verified and renamed into place. A subclass only says how to list and how to read.

The interface for subclasses (stable; later additions are optional and backward compatible):

- ``list_objects(deadline) -> Iterable[RemoteObject]`` and ``download(obj, out, deadline)``:
  the two abstract methods. ``RemoteObject.key`` is relative to the source's root (its prefix
  or directory); unsafe keys are refused here, before anything is downloaded.
- ``describe()``: where objects come from, for messages (no credentials).
- ``RemoteObject.target`` (optional): a symlink's link text, with ``mode=MODE_SYMLINK``; such
  entries are created as symlinks (refused if they leave the tree) and never downloaded.
- ``self.check_running(deadline, what)``: call it between chunks of a long download; it raises
  SyncTimeout past the deadline and :class:`Cancelled` once another download of the same fetch
  failed, so a failing pass does not wait for large transfers it will throw away.
- :func:`call_with_retries`: retries an SDK call on errors the subclass calls transient, with
  exponential backoff, bounded by the sync deadline and ``RETRY_ATTEMPTS``; the wait ends early
  when the fetch is cancelled.
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, ClassVar, TypeVar

from dagsync.config import Config
from dagsync.errors import LimitExceeded, SourceError, SyncTimeout, UnsafePath
from dagsync.manifest import (
    MODE_FILE,
    MODE_SYMLINK,
    Entry,
    Manifest,
    Selector,
    check_limits,
    diff,
    safe_path,
    safe_symlink_target,
)
from dagsync.sources.base import FetchStats, Plan, Published
from dagsync.timing import remaining
from dagsync.tree import TreeWriter

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_ATTEMPTS = 6  # one call and up to five retries: ~6 s of backoff in all
RETRY_FIRST_WAIT_SECONDS = 0.2
RETRY_MAX_WAIT_SECONDS = 5.0
IN_FLIGHT_PER_WORKER = 4  # downloads queued per worker thread


class Cancelled(SourceError):
    """Another download of the same fetch failed; this one stops early."""


@dataclass(frozen=True, slots=True)  # slots: 100,000 of them are held during a pass
class RemoteObject:
    """One listed object. ``key`` is relative to the source's prefix; ``token`` is its change
    token (ETag, CRC or size+mtime); ``handle`` is whatever the subclass needs to read it;
    ``target`` is the link text when ``mode`` is ``MODE_SYMLINK``."""

    key: str
    size: int
    token: str
    mode: int = MODE_FILE
    handle: object = None
    target: str = ""


def call_with_retries(
    call: Callable[[], T],
    *,
    transient: Callable[[BaseException], bool],
    deadline: float,
    what: str,
    attempts: int = RETRY_ATTEMPTS,
    stop: threading.Event | None = None,
    rand: Callable[[], float] = random.random,
) -> T:
    """``call()``, retried with jittered exponential backoff while it raises a transient error.

    Gives up (re-raising the last error) after ``attempts`` calls, or when the next wait would
    pass ``deadline``; the caller turns the error into a SourceError naming the object.
    """
    wait_seconds = RETRY_FIRST_WAIT_SECONDS
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as exc:
            if not transient(exc) or attempt == attempts:
                raise
            pause = wait_seconds * (0.5 + rand())
            if pause >= remaining(deadline, what):
                raise
            log.info("retrying what=%s attempt=%d error=%s", what, attempt, type(exc).__name__)
            waiter = stop or threading.Event()
            if waiter.wait(pause):
                raise
            wait_seconds = min(wait_seconds * 2, RETRY_MAX_WAIT_SECONDS)
    raise AssertionError("unreachable")  # pragma: no cover


class ObjectStoreSource(ABC):
    """Base of listing sources; subclasses implement :meth:`list_objects` and :meth:`download`."""

    name: ClassVar[str]
    retry_attempts: ClassVar[int] = RETRY_ATTEMPTS

    def __init__(self, config: Config, cache_dir: Path) -> None:
        self.config = config
        self.cache_dir = cache_dir
        self.selector = Selector(config.subpath, config.include, config.exclude)
        self._local = threading.local()
        # Set when one download of a fetch failed (or the fetch ends): the others stop early.
        self.cancelled = threading.Event()

    @staticmethod
    def is_transient(exc: BaseException) -> bool:
        """Whether ``exc`` from this source's SDK is worth another try (a subclass says)."""
        return False

    def _retried(
        self, call: Callable[[], T], deadline: float, what: str, stop: threading.Event | None = None
    ) -> T:
        """``call()`` retried while :meth:`is_transient` says so, never past ``deadline``,
        and not once ``stop`` is set (by default: once the fetch is cancelled)."""
        return call_with_retries(
            call,
            transient=self.is_transient,
            deadline=deadline,
            what=what,
            attempts=self.retry_attempts,
            stop=self.cancelled if stop is None else stop,
        )

    @abstractmethod
    def list_objects(self, deadline: float) -> Iterable[RemoteObject]:
        """Every object under the prefix (paged as the service requires)."""

    @abstractmethod
    def download(self, obj: RemoteObject, out: BinaryIO, deadline: float) -> None:
        """Write the object's bytes to ``out``; raise SourceError if they fail verification."""

    def describe(self) -> str:
        """Where objects come from, for messages (no credentials)."""
        return self.name

    def check_running(self, deadline: float, what: str) -> None:
        """Raise SyncTimeout past the deadline, Cancelled when the fetch is being abandoned."""
        if self.cancelled.is_set():
            raise Cancelled(f"{what}: cancelled", None)
        remaining(deadline, what)

    def resolve(self, deadline: float) -> Plan:
        objects: dict[str, RemoteObject] = {}
        entries: list[Entry] = []
        under_subpath = 0
        for obj in self.list_objects(deadline):
            try:
                key = safe_path(obj.key)  # refuse traversal before anything else
            except UnsafePath as exc:
                raise UnsafePath(f"{self.describe()}: {exc}", obj.key) from None
            if obj.size < 0:
                raise SourceError(f"{self.describe()}: {obj.key!r} listed with size {obj.size}")
            under_subpath += key.startswith(self.selector.subpath + "/")
            path = self.selector.select(key)
            if path is None:
                continue
            if obj.mode == MODE_SYMLINK:
                try:
                    safe_symlink_target(path, obj.target)
                except UnsafePath as exc:
                    where = f" (source key {obj.key!r})" if obj.key != path else ""
                    raise UnsafePath(f"{self.describe()}: {exc}{where}", obj.key) from None
            if len(entries) >= self.config.max_files:
                raise LimitExceeded(
                    f"{self.describe()} lists more than --max-files {self.config.max_files} "
                    "objects",
                    None,
                )
            objects[path] = obj
            entries.append(Entry(path, obj.size, obj.token, obj.mode, obj.target))
        if self.selector.subpath and not under_subpath:
            # A mistyped or moved --subpath must not publish an empty tree (as for git).
            raise SourceError(
                f"--subpath {self.selector.subpath!r}: nothing under it in {self.describe()}",
                self.selector.subpath,
            )
        manifest = Manifest.of(entries)
        check_limits(manifest, self.config.max_files, self.config.max_bytes)
        revision = self.revision_of(manifest)
        return Plan(revision=revision, manifest=manifest, detail={"objects": objects})

    def revision_of(self, manifest: Manifest) -> str:
        """The id of the listed state: the digest of its manifest (a relay knows the id)."""
        return manifest.digest()

    def fetch(
        self, plan: Plan, dest: Path, previous: Published | None, deadline: float
    ) -> FetchStats:
        assert plan.manifest is not None
        objects: dict[str, RemoteObject] = plan.detail["objects"]
        changes = diff(plan.manifest, previous.manifest if previous else None)
        writer = TreeWriter(dest, previous, need_bytes=sum(e.size for e in changes.fetch))
        stats = FetchStats(manifest=plan.manifest)
        todo: list[Entry] = []
        for entry in changes.fetch:
            if entry.mode == MODE_SYMLINK:
                writer.symlink(entry)
            else:
                todo.append(entry)
        # The unchanged files are linked while the changed ones download: one changed object
        # of 10,000 waits on the network about as long as the 9,999 links take.
        linker = _Linker(writer, changes.reuse)
        try:
            self._download_all(writer, todo, objects, deadline)
        except BaseException:
            linker.join(quiet=True)  # the download's error is the one to report
            raise
        missed = linker.join()
        self._download_all(writer, missed, objects, deadline)  # gone from the previous tree
        stats.reused_files = len(changes.reuse) - len(missed)
        stats.downloaded_files = len(todo) + len(missed)
        stats.downloaded_bytes = sum(e.size for e in todo) + sum(e.size for e in missed)
        writer.finish()
        return stats

    def _download_all(
        self,
        writer: TreeWriter,
        todo: list[Entry],
        objects: dict[str, RemoteObject],
        deadline: float,
    ) -> None:
        if not todo:
            return

        def one(entry: Entry) -> None:
            self.check_running(deadline, f"download of {entry.path}")
            with writer.open(entry) as out:
                self.download(objects[entry.path], out, deadline)

        workers = max(1, min(self.config.concurrency, len(todo)))
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"dagsync-{self.name}")
        # A few downloads per worker in flight, not one Future per file: 100,000 queued
        # Futures (a Condition each) took over 200 MB.
        queue = iter(todo)
        try:
            remaining(deadline, "download")
            pending: dict[Future[None], str] = {}

            def submit(count: int) -> None:
                for e in itertools.islice(queue, count):
                    pending[pool.submit(one, e)] = e.path

            submit(workers * IN_FLIGHT_PER_WORKER)
            while pending:
                left = max(0.0, deadline - time.monotonic())
                done, _ = wait(pending, timeout=left, return_when=FIRST_COMPLETED)
                failures = [f.exception() for f in done if f.exception() is not None]
                # Report the first real failure, not a download that stopped because of it.
                failures.sort(key=lambda exc: isinstance(exc, Cancelled))
                if failures:
                    raise failures[0]  # type: ignore[misc]
                if not done:
                    # Name what was still coming: an SDK's own waits (retries) may be the cause.
                    late = list(pending.values())
                    more = f" and {len(late) - 3} more" if len(late) > 3 else ""
                    raise SyncTimeout(
                        f"downloads from {self.describe()} exceeded --sync-timeout (unfinished: "
                        f"{', '.join(late[:3])}{more})"
                    )
                for f in done:
                    del pending[f]
                submit(len(done))
        finally:
            self.cancelled.set()
            pool.shutdown(wait=True, cancel_futures=True)
            self.cancelled.clear()

    def close(self) -> None:  # noqa: B027 - optional for subclasses
        """Subclasses release their clients here."""


class _Linker(threading.Thread):
    """Hard-links unchanged files from the previous revision in its own thread (``link(2)``
    lets the GIL go); :meth:`join` returns the entries that could not be linked, or raises
    what linking raised."""

    def __init__(self, writer: TreeWriter, entries: Iterable[Entry]) -> None:
        super().__init__(name="dagsync-link", daemon=True)
        self.writer = writer
        self.entries = entries
        self.missed: list[Entry] = []
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            for entry in self.entries:
                if not self.writer.reuse(entry):
                    self.missed.append(entry)
        except BaseException as exc:  # handed to the pass's thread by join()
            self.error = exc

    def join(self, timeout: float | None = None, quiet: bool = False) -> list[Entry]:  # type: ignore[override]
        super().join(timeout)
        if self.error is not None and not quiet:
            raise self.error
        return self.missed
