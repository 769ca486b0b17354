"""``dagsync run``: when to run a pass. Period with jitter, triggers (POST /sync, SIGHUP, file
events), exponential backoff after failures, --max-failures, and a clean stop on SIGTERM."""

from __future__ import annotations

import logging
import random
import signal
import threading
from collections.abc import Callable
from types import FrameType

from dagsync.config import Config
from dagsync.errors import Abandoned
from dagsync.syncer import FAILED, Syncer, SyncResult

log = logging.getLogger(__name__)

JITTER_FRACTION = 0.1
BACKOFF_START_SECONDS = 1.0
# A trigger that wakes an idle loop waits this long before the pass starts, so a burst of
# requests (a push fanned out to several webhooks, a retrying sender) costs one pass, not one
# per request that happened to arrive between two quick passes.
TRIGGER_SETTLE_SECONDS = 0.1


def next_wait(period: float, failures: int, rand: Callable[[], float] = random.random) -> float:
    """Seconds until the next pass: the period (+-10%), or after failures a backoff that starts
    at 1 s and doubles, capped at the period, with the same jitter."""
    base = period if failures == 0 else min(period, BACKOFF_START_SECONDS * 2 ** (failures - 1))
    return max(0.0, base * (1 + JITTER_FRACTION * (2 * rand() - 1)))


class Daemon:
    """The long-running loop. Other threads only call :meth:`trigger` and :meth:`stop`."""

    def __init__(
        self,
        config: Config,
        syncer: Syncer,
        on_result: Callable[[SyncResult], None],
    ) -> None:
        self.config = config
        self.syncer = syncer
        self.on_result = on_result
        self._trigger = threading.Event()
        self._stop = threading.Event()
        self._in_pass = False
        self._busy = False  # from taking a trigger until the pass has been reported
        self.passes = 0

    def trigger(self) -> None:
        """Ask for a pass now; requests during a pass coalesce into exactly one more."""
        self._trigger.set()

    def stop(self) -> None:
        self._stop.set()
        self._trigger.set()

    @property
    def busy(self) -> bool:
        """A pass is running, being reported, or about to start (a trigger is pending)."""
        return self._busy or self._trigger.is_set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, lambda _s, _f: self.trigger())

    def _on_stop_signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("stopping signal=%s", signal.Signals(signum).name)
        self.stop()
        # Abandon a pass that is still downloading; one that is publishing may finish.
        if self._in_pass and not self.syncer.publishing:
            raise Abandoned()

    def run(self) -> int:
        """Loop until stopped (exit 0) or --max-failures is reached (exit 1)."""
        cfg = self.config
        failures = 0
        ever_published = self.syncer.store.published() is not None
        while not self._stop.is_set():
            self._busy = True  # before clearing the trigger, so busy never blinks off
            self._trigger.clear()
            try:
                self._in_pass = True
                result = self.syncer.run_pass()
            except Abandoned:
                log.info("sync abandoned: stopping")
                return 0
            finally:
                self._in_pass = False
            self.passes += 1
            self.on_result(result)
            self._busy = False
            if result.published is not None:
                ever_published = True
            failures = failures + 1 if result.result == FAILED else 0
            if self._should_exit(failures, ever_published):
                log.error(
                    "giving up consecutive_failures=%d max_failures=%d",
                    failures,
                    cfg.max_failures,
                )
                return 1
            wait = next_wait(cfg.period, failures)
            if failures:
                log.info("retrying in_seconds=%.2f consecutive_failures=%d", wait, failures)
            woken = self._trigger.wait(wait)
            if woken and self._stop.wait(TRIGGER_SETTLE_SECONDS):
                break
        log.info("stopped")
        return 0

    def _should_exit(self, failures: int, ever_published: bool) -> bool:
        if failures == 0:
            return False
        if self.config.first_sync_must_succeed:
            # git-sync's max-failures 0: crash-loop visibly on a wrong repo, but once a
            # revision is served keep serving it through an outage.
            return not ever_published
        # As git-sync counts: exit on the N-th failure in a row (0 and 1: on the first).
        return self.config.max_failures >= 0 and failures >= self.config.max_failures
