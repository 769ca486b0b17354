"""The composition root: one Config in, the store, source, syncer, reporter and loop wired."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from dagsync.config import Config
from dagsync.daemon import Daemon
from dagsync.reporting import Reporter
from dagsync.sources.base import Source, load_source_class
from dagsync.status import Status, StatusBoard
from dagsync.store import RevisionStore
from dagsync.syncer import Syncer

log = logging.getLogger(__name__)


@dataclass
class App:
    config: Config
    store: RevisionStore
    source: Source
    syncer: Syncer
    board: StatusBoard
    reporter: Reporter
    closers: list[Any] = field(default_factory=list)

    @classmethod
    def build(cls, config: Config) -> App:
        """Everything is validated and constructed here, before any network access."""
        source_cls = load_source_class(config.source)
        store = RevisionStore(config.root, config.link)
        source = source_cls(config, store.cache / config.source)
        board = StatusBoard(Status(source=config.source, started_at=time.time()))
        syncer = Syncer(config, source, store)
        reporter = Reporter(config, board)
        return cls(config, store, source, syncer, board, reporter)

    def _prepare(self) -> None:
        with self.store.locked():
            self.store.prepare()
        current = self.store.published()
        if current is not None:
            self.board.update(
                revision=current.revision,
                files=len(current.manifest),
                bytes=current.manifest.total_bytes,
                published_at=self.store.read_state().get("published_at"),
            )

    def once(self) -> int:
        self._prepare()
        result = self.syncer.run_pass()
        self.reporter(result)
        return 0 if result.ok else 1

    def run(self) -> int:
        self._prepare()
        daemon = Daemon(self.config, self.syncer, self.reporter)
        daemon.install_signal_handlers()
        watch = getattr(self.source, "watch", None)
        if callable(watch):
            watch(daemon.trigger)
        if self.config.first_sync_must_succeed:
            log.info(
                "git-sync max-failures 0: exit if the first sync fails; after the first "
                "publish keep serving the last good revision and retry with backoff"
            )
        return daemon.run()

    def close(self) -> None:
        for closer in reversed(self.closers):
            closer()
        self.source.close()
