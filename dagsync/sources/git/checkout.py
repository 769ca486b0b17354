"""Writing blobs into the tree: one thread reads ``cat-file --batch``, a few write the files.

Creating a file costs far more than reading its bytes from git (directory updates, inode
allocation: about 0.6 ms per file on a slow disk), so the reading thread hands each blob to a
small pool of writers, as git's own parallel checkout does. Blobs in flight are bounded in
bytes, so memory stays flat however large the tree; a large blob is streamed straight to its
file by the reading thread.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from dagsync.manifest import Entry
from dagsync.sources.git.batch import BlobBatch
from dagsync.timing import remaining
from dagsync.tree import TreeWriter

WRITE_THREADS = 4
STREAM_BLOB_BYTES = 4 << 20  # larger blobs go straight from git to the file
IN_FLIGHT_BYTES = 16 << 20


class _ByteBudget:
    """Bytes read from git but not yet written; the reader waits while it is spent."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._cond = threading.Condition()

    def take(self, size: int, deadline: float) -> None:
        with self._cond:
            while self.used and self.used + size > self.limit:
                self._cond.wait(timeout=min(1.0, remaining(deadline)))
            self.used += size

    def give(self, size: int) -> None:
        with self._cond:
            self.used -= size
            self._cond.notify_all()


def write_blobs(
    writer: TreeWriter, blobs: BlobBatch, wanted: Sequence[tuple[Entry, str]], deadline: float
) -> None:
    """Write every ``(entry, blob sha)`` of ``wanted`` (in the order ``blobs`` streams them)."""
    if len(wanted) < 2 * WRITE_THREADS:
        for entry, sha in wanted:
            remaining(deadline)
            with writer.open(entry) as fh:
                blobs.copy_to(sha, fh)
        return
    budget = _ByteBudget(IN_FLIGHT_BYTES)
    failures: list[BaseException] = []
    pool = ThreadPoolExecutor(max_workers=WRITE_THREADS, thread_name_prefix="dagsync-git-write")

    def write(entry: Entry, data: bytes) -> None:
        try:
            writer.write_bytes(entry, data)
        finally:
            budget.give(entry.size)

    def done(future: Future[None]) -> None:
        if not future.cancelled() and future.exception() is not None:
            failures.append(future.exception())  # type: ignore[arg-type]

    try:
        for entry, sha in wanted:
            remaining(deadline)
            if failures:
                break
            if entry.size > STREAM_BLOB_BYTES:
                with writer.open(entry) as fh:
                    blobs.copy_to(sha, fh)
                continue
            budget.take(entry.size, deadline)
            data = blobs.read(sha)
            pool.submit(write, entry, data).add_done_callback(done)
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)  # a deadline, an error, a stop signal
        raise
    pool.shutdown(wait=True)
    if failures:
        raise failures[0]
