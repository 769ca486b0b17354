"""The composition root: one Config in, the store, source, syncer, reporter, metrics, hooks, HTTP
endpoints and loop wired."""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from dagsync.bind import BindAddress, parse_bind
from dagsync.config import Config
from dagsync.errors import Abandoned
from dagsync.hooks import Hooks
from dagsync.metrics import Metrics, NullMetrics
from dagsync.redact import read_secret_file, register_secret, register_url_credentials
from dagsync.reporting import Reporter
from dagsync.rootprobe import probe_root
from dagsync.sources.base import Source, load_source_class
from dagsync.status import Status, StatusBoard
from dagsync.store import RevisionStore
from dagsync.syncer import PUBLISHED, Syncer, SyncResult
from dagsync.trigger import SecretFile, TriggerSecret

if TYPE_CHECKING:
    # Imported where used: a ``once`` without --http-bind (every worker pod's init container)
    # needs neither the HTTP server, nor prometheus_client, nor the loop.
    from prometheus_client import CollectorRegistry

    from dagsync.http import OpsServer
    from dagsync.serve import RevisionServer

log = logging.getLogger(__name__)

# Lines of a PEM body long enough to be worth masking should a tool ever echo a key.
PEM_LINE_MIN_CHARS = 16


@dataclass
class App:
    config: Config
    store: RevisionStore
    source: Source
    syncer: Syncer
    board: StatusBoard
    reporter: Reporter
    registry: CollectorRegistry | None
    metrics: Metrics
    hooks: Hooks
    http_bind: BindAddress | None = None
    trigger_secret: TriggerSecret | None = None
    clock: Callable[[], float] = time.time
    http: OpsServer | None = None
    revisions: RevisionServer | None = None
    closers: list[Callable[[], None]] = field(default_factory=list)

    @classmethod
    def build(
        cls,
        config: Config,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> App:
        """Everything is validated and constructed here, before any network access."""
        register_config_secrets(config)
        http_bind = parse_bind(config.http_bind)
        trigger_secret = (
            TriggerSecret(config.trigger_secret_file) if config.trigger_secret_file else None
        )
        source_cls = load_source_class(config.source)
        store = RevisionStore(config.root, config.link)
        source = source_cls(config, store.cache / config.source)
        board = StatusBoard(Status(source=config.source, started_at=clock()))
        syncer = Syncer(config, source, store)
        reporter = Reporter(config, board)
        if registry is None and http_bind is None and config.command != "run":
            metrics: Metrics = NullMetrics(source.name)  # nobody could ever scrape them
        else:
            from prometheus_client import CollectorRegistry

            registry = registry if registry is not None else CollectorRegistry()
            metrics = Metrics(registry, source.name)
        hooks = Hooks(config, metrics, background=config.command == "run")
        reporter.observers.append(metrics.observe)
        if config.command == "run":
            reporter.observers.append(hooks.on_result)
        revisions = serve_revisions(config, store, registry, reporter)
        return cls(
            config,
            store,
            source,
            syncer,
            board,
            reporter,
            registry,
            metrics,
            hooks,
            http_bind=http_bind,
            trigger_secret=trigger_secret,
            clock=clock,
            revisions=revisions,
        )

    def _prepare(self) -> None:
        with self.store.locked():
            self.store.prepare()
            probe_root(self.store.root, self.store.state_dir, self.store.link)
        current = self.store.published()
        if current is not None:
            published_at = self.store.read_state().get("published_at")
            published_at = published_at if isinstance(published_at, int | float) else None
            self.board.update(
                revision=current.revision,
                files=len(current.manifest),
                bytes=current.manifest.total_bytes,
                published_at=published_at,
            )
            self.metrics.found_on_disk(current, published_at)
            log.info("found published revision=%s", current.revision)

    def _start_http(
        self, trigger: Callable[[], None] | None, busy: Callable[[], bool] | None
    ) -> None:
        if self.http_bind is None:
            return
        from dagsync.http import OpsApi, OpsServer

        assert self.registry is not None  # built whenever there is an address to serve
        cfg = self.config
        api = OpsApi(
            board=self.board,
            registry=self.registry,
            trigger=trigger,
            stale_after=3 * cfg.period + cfg.sync_timeout,
            secret=self.trigger_secret,
            gitsync_root=cfg.gitsync_mode,
            busy=busy,
            clock=self.clock,
        )
        self.http = OpsServer(self.http_bind, api, revisions=self.revisions).start()
        self.closers.append(self.http.close)

    def once(self) -> int:
        from dagsync.progress_display import for_once

        self._prepare()
        self._start_http(trigger=None, busy=None)
        stop = OnceStop(self.syncer)
        stop.install()
        display = for_once(self.config)  # a progress bar when a person watches a terminal
        self.syncer.progress = display
        try:
            result = self.syncer.run_pass()
        finally:
            self.syncer.progress = None
            if display is not None:
                display.close()
        stop.raise_if_requested()  # a stop during the link swap let it finish; no hooks now
        self.reporter(result)
        if result.ok and result.published is not None and self.hooks:
            # The revision just published, or (unchanged) the one on disk: a consumer
            # started beside this initContainer is told either way.
            self.hooks.notify(result.published)
        return 0 if result.ok and not self.hooks.failed else 1

    def run(self) -> int:
        self._prepare()
        from dagsync.daemon import Daemon

        daemon = Daemon(self.config, self.syncer, self.reporter)
        self._start_http(trigger=daemon.trigger, busy=lambda: daemon.busy)
        current = self.store.published()
        if current is not None and self.hooks:
            # A restarted consumer learns about the revision it may have missed.
            self.hooks.notify(current)
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
            try:
                closer()
            except Exception:  # closing must reach every closer
                log.exception("close failed closer=%r", closer)
        self.closers.clear()
        self.hooks.close()
        self.source.close()


def serve_revisions(
    config: Config, store: RevisionStore, registry: CollectorRegistry | None, reporter: Reporter
) -> RevisionServer | None:
    """``run --serve-revisions``: the /v1/ endpoints, and the sums of each new revision
    computed right after it is published."""
    if config.serve_token_file is not None and not config.serve_revisions:
        log.warning("--serve-token-file is ignored without --serve-revisions")
    if not config.serve_revisions or config.command != "run":
        return None
    token = None
    if config.serve_token_file is not None:
        token = SecretFile(config.serve_token_file, "--serve-token-file", "every /v1/ request")
    from dagsync.metrics import ServeMetrics
    from dagsync.serve import RevisionServer

    assert registry is not None  # run always has one
    server = RevisionServer(store, ServeMetrics(registry), token)

    def prepare(result: SyncResult) -> None:
        if result.result == PUBLISHED and result.published is not None:
            server.prepare(result.published.revision)

    reporter.observers.append(prepare)
    return server


class OnceStop:
    """SIGTERM/SIGINT in ``once`` abandon the pass or the hooks: the exception unwinds through
    the code that started each child (git, the check, the exec hook), which kills the child's
    process group, so nothing outlives dagsync. A link swap in progress finishes first."""

    def __init__(self, syncer: Syncer) -> None:
        self.syncer = syncer
        self.requested = False

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("stopping signal=%s", signal.Signals(signum).name)
        self.requested = True
        if not self.syncer.publishing:
            raise Abandoned()

    def raise_if_requested(self) -> None:
        if self.requested:
            raise Abandoned()


def register_config_secrets(config: Config) -> None:
    """Register every secret the configuration names, so redaction masks it from the first log
    line on: credential variables, secret files (read once here; the modules that re-read
    them on rotation register again through ``redact.read_secret_file``), and passwords in
    URLs."""
    for value in (
        config.password,
        config.oss_env_access_key_secret,
        config.oss_env_session_token,
        config.azure_connection_string,
    ):
        register_secret(value)
    if config.azure_connection_string:
        for part in config.azure_connection_string.split(";"):
            key, sep, value = part.partition("=")
            if sep and key.strip().lower() in ("accountkey", "sharedaccesssignature"):
                register_secret(value)
    for path in (
        config.password_file,
        config.oss_access_key_secret_file,
        config.azure_account_key_file,
        config.azure_sas_token_file,
        config.trigger_secret_file,
        config.serve_token_file,
        config.relay_token_file,
    ):
        if path is not None:
            with contextlib.suppress(OSError):  # unreadable: the option's owner says so
                read_secret_file(path)
    if config.ssh_key_file is not None:
        _register_pem(config.ssh_key_file)
    for url in (
        config.repo,
        config.webhook_url,
        config.oss_endpoint,
        config.azure_account_url,
        config.relay_url,
    ):
        register_url_credentials(url)


def _register_pem(path: Path) -> None:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return
    for line in lines:
        line = line.strip()
        if len(line) >= PEM_LINE_MIN_CHARS and not line.startswith("-----"):
            register_secret(line)
