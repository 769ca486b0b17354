"""Deadlines of one pass, as ``time.monotonic()`` values."""

from __future__ import annotations

import time

from dagsync.errors import SyncTimeout


def remaining(deadline: float, what: str = "sync") -> float:
    """Seconds left before ``deadline``; SyncTimeout once it has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise SyncTimeout(f"{what} exceeded --sync-timeout")
    return left


def deadline_in(seconds: float) -> float:
    return time.monotonic() + seconds
