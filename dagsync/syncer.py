"""One pass of the pipeline: resolve -> compare -> fetch into staging -> check -> publish -> gc."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dagsync.checks import run_check
from dagsync.config import Config
from dagsync.errors import Abandoned, CheckFailed, DagsyncError
from dagsync.manifest import check_limits
from dagsync.progress import CHECKING, FETCHING, PUBLISHING, RESOLVING, Progress, watching
from dagsync.sources.base import FetchStats, Plan, Published, Source
from dagsync.store import RevisionStore
from dagsync.timing import deadline_in
from dagsync.walkable import check_walkable

log = logging.getLogger(__name__)

PUBLISHED, UNCHANGED, FAILED, REJECTED = "published", "unchanged", "failed", "rejected"


def selection_of(config: Config) -> dict[str, Any]:
    """The options that decide which files of a revision are published. A git revision id is
    the commit, which does not change with them, so a root published with other options is
    rebuilt (a fixed --subpath typo must not wait for the next commit)."""
    return {
        "subpath": config.subpath,
        "include": list(config.include),
        "exclude": list(config.exclude),
        "submodules": config.submodules,
    }


@dataclass(frozen=True)
class SyncResult:
    """How one pass went; what metrics, status, hooks and exit codes are derived from."""

    result: str
    source: str
    revision: str | None
    published: Published | None
    started_at: float
    duration: float
    stats: FetchStats | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.result in (PUBLISHED, UNCHANGED)


class Syncer:
    """Runs passes for one source into one store; remembers a rejected revision."""

    def __init__(
        self,
        config: Config,
        source: Source,
        store: RevisionStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.source = source
        self.store = store
        self.clock = clock
        self.rejected: tuple[str, str] | None = None  # (revision, reason) not to retry
        self.publishing = False  # a stop signal waits for the link swap instead of abandoning
        self.selection = selection_of(config)
        # Told of each phase and of every file written (dagsync once on a terminal).
        self.progress: Progress | None = None

    def run_pass(self) -> SyncResult:
        started = self.clock()
        t0 = time.monotonic()
        deadline = deadline_in(self.config.sync_timeout)
        revision: str | None = None

        def done(result: str, **kw: object) -> SyncResult:
            return SyncResult(
                result=result,
                source=self.source.name,
                revision=revision,
                published=self.store.published(),
                started_at=started,
                duration=time.monotonic() - t0,
                **kw,  # type: ignore[arg-type]
            )

        try:
            with self.store.locked():
                self.store.check_link_place()  # the user's file is refused before any download
                current = self.store.published()
                self._phase(RESOLVING)
                plan = self.source.resolve(deadline)
                revision = plan.revision
                if current is not None and current.revision == plan.revision:
                    if self.store.read_state().get("selection") == self.selection:
                        log.debug("unchanged revision=%s", plan.revision)
                        return done(UNCHANGED)
                    log.info("selection changed, rebuilding revision=%s", plan.revision)
                if self.rejected and self.rejected[0] == plan.revision:
                    return done(REJECTED, error=self.rejected[1])
                stats = self._build_and_publish(plan, deadline)
                return done(PUBLISHED, stats=stats)
        except CheckFailed as exc:
            if revision is not None:
                self.rejected = (revision, str(exc))
            log.error("revision rejected revision=%s error=%s", revision, exc)
            return done(REJECTED, error=str(exc))
        except DagsyncError as exc:
            log.error("sync failed revision=%s error=%s", revision, exc)
            return done(FAILED, error=str(exc))
        except Abandoned:
            raise
        except Exception as exc:  # a bug or an unexpected SDK error must not kill the loop
            log.exception("sync failed unexpectedly")
            return done(FAILED, error=f"{type(exc).__name__}: {exc}")

    def _phase(self, name: str) -> None:
        if self.progress is not None:
            self.progress.phase(name)

    def _build_and_publish(self, plan: Plan, deadline: float) -> FetchStats:
        cfg = self.config
        if plan.manifest is not None:
            check_limits(plan.manifest, cfg.max_files, cfg.max_bytes)
            check_walkable(plan.manifest, plan.revision)  # before anything is downloaded
            if self.progress is not None:
                self.progress.expect(len(plan.manifest), plan.manifest.total_bytes)
        staging = self.store.new_staging()
        try:
            self._phase(FETCHING)
            with watching(staging, self.progress):
                stats = self.source.fetch(plan, staging, self.store.reusable(), deadline)
            if stats.manifest is not plan.manifest:  # (a store's plan was checked above)
                check_limits(stats.manifest, cfg.max_files, cfg.max_bytes)
                check_walkable(stats.manifest, plan.revision)
            if cfg.check:
                self._phase(CHECKING)
            run_check(cfg.check, staging, deadline, cfg.child_env)
            now = self.clock()
            self._phase(PUBLISHING)
            self.publishing = True
            published = self.store.publish(
                staging, plan.revision, stats.manifest, self.source.name, now, self.selection
            )
        except BaseException:
            self.store.discard(staging)
            raise
        finally:
            self.publishing = False
        self.store.discard(staging)  # only the .parts sibling can be left at this point
        removed = self.store.collect_garbage(cfg.keep_revisions, cfg.revision_grace, now)
        log.info(
            "published revision=%s files=%d bytes=%d downloaded=%d reused=%d removed=%d",
            published.revision,
            len(stats.manifest),
            stats.manifest.total_bytes,
            stats.downloaded_files,
            stats.reused_files,
            len(removed),
        )
        self.rejected = None
        return stats
