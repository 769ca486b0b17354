"""The hooks after a publish: ``--exechook-command`` and ``--webhook-url``.

In ``run`` each hook kind has its own worker thread, so a slow or failing consumer never
delays the loop; a failed hook is retried with exponential backoff, and only ever for the
newest revision (a publish that arrives while an older one is being retried replaces it).
In ``once`` hooks run inline, once, and a failure becomes the exit code.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING

from dagsync import __version__
from dagsync.config import Config
from dagsync.procs import kill_group
from dagsync.sources.base import Published
from dagsync.syncer import PUBLISHED, SyncResult

if TYPE_CHECKING:
    from dagsync.metrics import Metrics

log = logging.getLogger(__name__)

BACKOFF_START_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 300.0
JITTER_FRACTION = 0.1
WEBHOOK_TIMEOUT_SECONDS = 30.0
OUTPUT_TAIL_CHARS = 400
POLL_SECONDS = 0.1
JOIN_TIMEOUT_SECONDS = 10.0


class HookFailed(Exception):
    """One hook attempt failed; the message says why (it is logged, redacted)."""


def backoff(attempt: int, start: float, cap: float, rand: Callable[[], float]) -> float:
    """Seconds before retry number ``attempt`` (1-based): start, doubling, capped, +-10%."""
    base = min(cap, start * 2 ** (attempt - 1))
    return max(0.0, base * (1 + JITTER_FRACTION * (2 * rand() - 1)))


# -- the two hooks: one attempt each, HookFailed on failure ------------------------------------
def hook_env(config: Config, published: Published) -> dict[str, str]:
    env = dict(config.child_env)
    env.update(
        DAGSYNC_REVISION=published.revision,
        DAGSYNC_PATH=str(published.path),
        GITSYNC_HASH=published.revision,
    )
    return env


def run_exec_hook(
    config: Config, published: Published, stop: threading.Event, timeout: float
) -> None:
    """``/bin/sh -c COMMAND`` in the published tree; non-zero exit, timeout or stop fail it."""
    assert config.exechook_command is not None
    try:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", config.exechook_command],
            cwd=published.path,
            env=hook_env(config, published),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its children are killed with it
        )
    except OSError as exc:
        raise HookFailed(f"cannot start: {exc}") from None
    deadline = time.monotonic() + timeout
    output = b""
    while True:
        try:
            output, _ = proc.communicate(timeout=POLL_SECONDS)
            break
        except subprocess.TimeoutExpired:
            if stop.is_set() or time.monotonic() > deadline:
                kill_group(proc)
                why = "stopped" if stop.is_set() else f"timed out after {timeout:g}s"
                raise HookFailed(why) from None
        except BaseException:  # SIGTERM in ``once`` (Abandoned): the hook must not outlive us
            kill_group(proc)
            raise
    text = output.decode(errors="replace").strip()
    if proc.returncode != 0:
        raise HookFailed(f"exited {proc.returncode}: {_tail(text)}")
    if text:
        log.debug("exechook output revision=%s output=%s", published.revision, _tail(text))


def _tail(text: str) -> str:
    return text[-OUTPUT_TAIL_CHARS:].replace("\n", " | ")


def run_webhook(config: Config, published: Published, timeout: float) -> None:
    """POST ``{"revision": …, "source": …}`` with git-sync's ``Gitsync-Hash`` header; any 2xx
    is success."""
    import urllib.error  # with urllib.request ~20 ms of start-up: only when a webhook fires
    import urllib.request

    assert config.webhook_url is not None
    body = json.dumps({"revision": published.revision, "source": config.source}).encode()
    url, authorization = split_userinfo(config.webhook_url)
    headers = {
        "Content-Type": "application/json",
        "Gitsync-Hash": published.revision,
        "User-Agent": f"dagsync/{__version__}",
    }
    if authorization:
        headers["Authorization"] = authorization
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = response.status
            response.read(64 * 1024)
    except urllib.error.HTTPError as exc:
        raise HookFailed(f"HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise HookFailed(f"request failed: {reason}") from None
    if not 200 <= status < 300:
        raise HookFailed(f"HTTP {status}")


def split_userinfo(url: str) -> tuple[str, str | None]:
    """``https://user:pass@host/x`` -> (``https://host/x``, a Basic Authorization header), as
    Go's HTTP client (and so git-sync) does; urllib would take the user-info for the host."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    netloc = parts.netloc.rpartition("@")[2]
    user = urllib.parse.unquote(parts.username or "")
    password = urllib.parse.unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc)), f"Basic {token}"


# -- running them ------------------------------------------------------------------------------
HookAction = Callable[[Published, threading.Event], None]


class HookWorker:
    """One hook kind in ``run``: a thread that runs it for the newest submitted revision and
    retries with backoff until it succeeds, a newer revision replaces it, or it is stopped."""

    def __init__(
        self,
        kind: str,
        action: HookAction,
        record: Callable[[str, bool], None],
        *,
        backoff_start: float = BACKOFF_START_SECONDS,
        backoff_cap: float = BACKOFF_CAP_SECONDS,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.kind = kind
        self.action = action
        self.record = record
        self.backoff_start = backoff_start
        self.backoff_cap = backoff_cap
        self.rand = rand
        self._lock = threading.Lock()
        self._pending: Published | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"dagsync-hook-{kind}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, published: Published) -> None:
        """Run the hook for ``published``; it replaces any revision not yet done."""
        with self._lock:
            self._pending = published
        self._wake.set()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(JOIN_TIMEOUT_SECONDS)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _take(self) -> Published | None:
        with self._lock:
            published, self._pending = self._pending, None
            self._wake.clear()
            return published

    def _loop(self) -> None:
        target: Published | None = None
        attempt = 0
        while not self._stop.is_set():
            newer = self._take()
            if newer is not None:
                target, attempt = newer, 0
            if target is None:
                self._wake.wait()
                continue
            attempt += 1
            if self._attempt(target, attempt):
                target = None
                continue
            # Wake early for a newer revision or a stop; otherwise retry the same one.
            self._wake.wait(backoff(attempt, self.backoff_start, self.backoff_cap, self.rand))

    def _attempt(self, published: Published, attempt: int) -> bool:
        try:
            self.action(published, self._stop)
        except HookFailed as exc:
            if self._stop.is_set():
                return False
            self.record(self.kind, False)
            log.warning(
                "hook failed hook=%s revision=%s attempt=%d error=%s",
                self.kind,
                published.revision,
                attempt,
                exc,
            )
            return False
        except Exception:
            self.record(self.kind, False)
            log.exception("hook failed unexpectedly hook=%s", self.kind)
            return False
        self.record(self.kind, True)
        log.info("hook ok hook=%s revision=%s attempt=%d", self.kind, published.revision, attempt)
        return True


class Hooks:
    """The configured hooks, run in the background (``run``) or inline (``once``)."""

    def __init__(
        self,
        config: Config,
        metrics: Metrics | None = None,
        *,
        background: bool,
        backoff_start: float = BACKOFF_START_SECONDS,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.background = background
        self.failed = False  # once: some hook failed, so the exit code is 1
        timeout = min(config.sync_timeout, WEBHOOK_TIMEOUT_SECONDS)
        self.actions: dict[str, HookAction] = {}
        if config.exechook_command:
            self.actions["exec"] = lambda p, stop: run_exec_hook(
                config, p, stop, config.sync_timeout
            )
        if config.webhook_url:
            self.actions["webhook"] = lambda p, _stop: run_webhook(config, p, timeout)
        cap = max(backoff_start, min(config.period, BACKOFF_CAP_SECONDS))
        self.workers = (
            [
                HookWorker(kind, action, self._record, backoff_start=backoff_start, backoff_cap=cap)
                for kind, action in self.actions.items()
            ]
            if background
            else []
        )
        self._started = False

    def __bool__(self) -> bool:
        return bool(self.actions)

    def start(self) -> None:
        if not self._started:
            self._started = True
            for worker in self.workers:
                worker.start()

    def on_result(self, result: SyncResult) -> None:
        """A Reporter observer: hooks follow every publish."""
        if result.result == PUBLISHED and result.published is not None:
            self.notify(result.published)

    def notify(self, published: Published) -> None:
        """Run every hook for ``published``: queued in ``run``, now in ``once``."""
        if self.background:
            self.start()
            for worker in self.workers:
                worker.submit(published)
            return
        never_stop = threading.Event()
        for kind, action in self.actions.items():
            try:
                action(published, never_stop)
            except HookFailed as exc:
                self.failed = True
                self._record(kind, False)
                log.error("hook failed hook=%s revision=%s error=%s", kind, published.revision, exc)
            else:
                self._record(kind, True)
                log.info("hook ok hook=%s revision=%s", kind, published.revision)

    def _record(self, kind: str, ok: bool) -> None:
        if self.metrics is not None:
            self.metrics.hook(kind, ok)

    def close(self) -> None:
        for worker in self.workers:
            worker.close()
