"""Leases on published revisions: a revision that a response is streaming is not removed.

A lease is a shared ``flock`` on ``LEASES/<id>``; the clean-up removes a revision only while it
holds that lock exclusively, so readers in another process on the same root count too. Plain
functions on a folder, so ``store.py`` uses them without importing anything above it.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def held(leases: Path, revision: str) -> Iterator[None]:
    """Hold a shared lease on ``revision`` while the block runs."""
    leases.mkdir(exist_ok=True)
    with open(leases / revision, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def remove_unless_leased(leases: Path, revision: str, remove: Callable[[], None]) -> bool:
    """Call ``remove()`` unless a lease holds ``revision`` (then False); the lease file goes
    with it."""
    if not leases.is_dir():
        remove()
        return True
    lease = leases / revision
    with open(lease, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        try:
            remove()
            with contextlib.suppress(FileNotFoundError):
                lease.unlink()
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
    return True


def clear_stale(leases: Path, exists: Callable[[str], bool]) -> None:
    """Remove lease files of revisions that are gone (and not held)."""
    for lease in leases.iterdir() if leases.is_dir() else ():
        if not exists(lease.name):
            remove_unless_leased(leases, lease.name, lambda: None)
