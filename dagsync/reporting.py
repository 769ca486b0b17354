"""What happens after every pass, whoever ran it: the status snapshot, touch and error files,
metrics and hooks. ``once`` and ``run`` share this, so they report alike."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from dagsync.config import Config
from dagsync.fsops import write_atomic
from dagsync.redact import redact
from dagsync.status import StatusBoard
from dagsync.syncer import FAILED, PUBLISHED, REJECTED, SyncResult

log = logging.getLogger(__name__)

PassObserver = Callable[[SyncResult], None]


class Reporter:
    """Applies a SyncResult to the status board, the files, and every registered observer."""

    def __init__(self, config: Config, board: StatusBoard) -> None:
        self.config = config
        self.board = board
        self.observers: list[PassObserver] = []

    def __call__(self, result: SyncResult) -> None:
        self._update_status(result)
        if result.result == PUBLISHED:
            self._touch()
        if result.ok:
            self._clear_error_file()
        elif result.result in (FAILED, REJECTED):
            self._write_error_file(result)
        for observer in self.observers:
            try:
                observer(result)
            except Exception:  # an observer must never break the loop
                log.exception("observer failed observer=%r", observer)

    def _update_status(self, result: SyncResult) -> None:
        current = self.board.current
        pub = result.published
        changes: dict[str, object] = {
            "last_attempt_at": result.started_at + result.duration,
            "last_result": result.result,
        }
        if pub is not None:
            changes.update(
                revision=pub.revision,
                files=len(pub.manifest),
                bytes=pub.manifest.total_bytes,
            )
            if result.result == PUBLISHED or current.revision != pub.revision:
                changes["published_at"] = result.started_at + result.duration
        if result.ok:
            changes.update(
                last_error=None,
                last_success_at=result.started_at + result.duration,
                rejected_revision=None,
            )
        else:
            changes["last_error"] = redact(result.error or result.result)
        if result.result == REJECTED:
            changes["rejected_revision"] = result.revision
        # As the loop's backoff counts them: a rejected revision is a verdict on the content,
        # not a failure to reach the source, so it does not count (nor does it hide failures
        # before it: the next failure starts again at 1, as the loop's backoff does).
        changes["consecutive_failures"] = (
            current.consecutive_failures + 1 if result.result == FAILED else 0
        )
        self.board.update(**changes)

    def _touch(self) -> None:
        path = self.config.resolve_under_root(self.config.touch_file)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
            os.utime(path)
        except OSError as exc:
            log.warning("cannot touch --touch-file path=%s error=%s", path, exc.strerror)

    def _error_path(self) -> Path | None:
        return self.config.resolve_under_root(self.config.error_file)

    def _write_error_file(self, result: SyncResult) -> None:
        path = self._error_path()
        if path is None:
            return
        when = result.started_at + result.duration
        doc = {
            "result": result.result,
            "message": redact(result.error or result.result),
            "revision": result.revision,
            "source": result.source,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when)),
            "timestamp": round(when, 3),
        }
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, json.dumps(doc) + "\n")
        except OSError as exc:
            log.warning("cannot write --error-file path=%s error=%s", path, exc.strerror)

    def _clear_error_file(self) -> None:
        path = self._error_path()
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
