"""The pipeline shared by sources that list objects (OSS, Azure Files, a local folder).

``resolve`` turns a listing into a Manifest whose digest is the revision id; ``fetch`` hard-links
unchanged entries from the previous revision and downloads the rest in parallel, each streamed to
a temp file, verified and renamed into place. A subclass only says how to list and how to read.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, ClassVar

from dagsync.config import Config
from dagsync.errors import SourceError, SyncTimeout
from dagsync.manifest import MODE_FILE, Entry, Manifest, Selector, check_limits, diff, safe_path
from dagsync.sources.base import FetchStats, Plan, Published
from dagsync.timing import remaining
from dagsync.tree import TreeWriter


@dataclass(frozen=True)
class RemoteObject:
    """One listed object. ``key`` is relative to the source's prefix; ``token`` is its change
    token (ETag, CRC or size+mtime); ``handle`` is whatever the subclass needs to read it."""

    key: str
    size: int
    token: str
    mode: int = MODE_FILE
    handle: object = None


class ObjectStoreSource(ABC):
    """Base of listing sources; subclasses implement :meth:`list_objects` and :meth:`download`."""

    name: ClassVar[str]

    def __init__(self, config: Config, cache_dir: Path) -> None:
        self.config = config
        self.cache_dir = cache_dir
        self.selector = Selector(config.subpath, config.include, config.exclude)
        self._local = threading.local()

    @abstractmethod
    def list_objects(self, deadline: float) -> Iterable[RemoteObject]:
        """Every object under the prefix (paged as the service requires)."""

    @abstractmethod
    def download(self, obj: RemoteObject, out: BinaryIO, deadline: float) -> None:
        """Write the object's bytes to ``out``; raise SourceError if they fail verification."""

    def describe(self) -> str:
        """Where objects come from, for messages (no credentials)."""
        return self.name

    def resolve(self, deadline: float) -> Plan:
        objects: dict[str, RemoteObject] = {}
        entries: list[Entry] = []
        for obj in self.list_objects(deadline):
            key = safe_path(obj.key)  # refuse traversal before anything else
            path = self.selector.select(key)
            if path is None:
                continue
            if len(entries) >= self.config.max_files:
                raise SourceError(
                    f"{self.describe()} lists more than --max-files {self.config.max_files} "
                    "objects",
                    None,
                )
            objects[path] = obj
            entries.append(Entry(path, obj.size, obj.token, obj.mode))
        manifest = Manifest.of(entries)
        check_limits(manifest, self.config.max_files, self.config.max_bytes)
        return Plan(revision=manifest.digest(), manifest=manifest, detail={"objects": objects})

    def fetch(
        self, plan: Plan, dest: Path, previous: Published | None, deadline: float
    ) -> FetchStats:
        assert plan.manifest is not None
        objects: dict[str, RemoteObject] = plan.detail["objects"]
        changes = diff(plan.manifest, previous.manifest if previous else None)
        writer = TreeWriter(dest, previous)
        stats = FetchStats(manifest=plan.manifest)
        todo = list(changes.fetch)
        for entry in changes.reuse:
            if writer.reuse(entry):
                stats.reused_files += 1
            else:
                todo.append(entry)
        self._download_all(writer, todo, objects, deadline)
        stats.downloaded_files = len(todo)
        stats.downloaded_bytes = sum(e.size for e in todo)
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
        cancelled = threading.Event()

        def one(entry: Entry) -> None:
            if cancelled.is_set():
                return
            remaining(deadline, f"download of {entry.path}")
            with writer.open(entry) as out:
                self.download(objects[entry.path], out, deadline)

        workers = max(1, min(self.config.concurrency, len(todo)))
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"dagsync-{self.name}")
        try:
            futures: list[Future[None]] = [pool.submit(one, e) for e in todo]
            done, _pending = wait(
                futures, timeout=remaining(deadline, "download"), return_when=FIRST_EXCEPTION
            )
            for future in done:
                exc = future.exception()
                if exc is not None:
                    raise exc
            if len(done) != len(futures):
                raise SyncTimeout(f"downloads from {self.describe()} exceeded --sync-timeout")
        finally:
            cancelled.set()
            pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:  # noqa: B027 - optional for subclasses
        """Subclasses release their clients here."""
