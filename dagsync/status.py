"""An immutable snapshot of how the loop is doing: the HTTP server reads it, the loop
replaces it."""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, replace
from typing import Any

from dagsync.redact import redact


@dataclass(frozen=True)
class Status:
    """Times are Unix seconds (wall clock), as in state.json and the metrics."""

    source: str
    revision: str | None = None
    published_at: float | None = None
    last_attempt_at: float | None = None
    last_success_at: float | None = None
    last_result: str | None = None
    last_error: str | None = None
    rejected_revision: str | None = None
    consecutive_failures: int = 0
    files: int = 0
    bytes: int = 0
    started_at: float | None = None

    @property
    def ready(self) -> bool:
        """A revision is being served. Never goes back to False: the board only ever replaces
        the revision with another one (readiness is sticky, docs/reference.md §5)."""
        return self.revision is not None

    def seconds_since_attempt(self, now: float) -> float:
        """How long the loop has gone without completing a pass (from start-up before the
        first one)."""
        since = self.last_attempt_at or self.started_at
        return 0.0 if since is None else max(0.0, now - since)

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        if doc["last_error"]:
            doc["last_error"] = redact(doc["last_error"])
        return doc


class StatusBoard:
    """Holds the current snapshot; replacing it is atomic, reading needs no lock."""

    def __init__(self, initial: Status) -> None:
        self._lock = threading.Lock()
        self._status = initial

    @property
    def current(self) -> Status:
        return self._status

    def update(self, **changes: Any) -> Status:
        with self._lock:
            self._status = replace(self._status, **changes)
            return self._status
