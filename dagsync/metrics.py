"""Every metric of docs/reference.md §6, on a registry passed in (never prometheus' global one), so
each test gets a fresh registry and reads values with ``registry.get_sample_value``.

The names and labels here are a contract with users' dashboards and alerts: change them only
together with the changelog.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from dagsync import __version__

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from dagsync.sources.base import Published
    from dagsync.syncer import SyncResult

RESULTS = ("published", "unchanged", "failed", "rejected")
SUCCESSES = ("published", "unchanged")
HOOKS = ("exec", "webhook")
HOOK_RESULTS = ("ok", "failed")
# From a no-op ls-remote (tens of ms) to a large first download bounded by --sync-timeout.
DURATION_BUCKETS_SECONDS = (
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)  # fmt: skip


class Metrics:
    """The metrics of one dagsync process for one source."""

    def __init__(self, registry: CollectorRegistry, source: str) -> None:
        from prometheus_client import Counter, Gauge, Histogram  # ~40 ms: only when exposed

        self.registry = registry
        self.source = source
        self._revision: str | None = None
        self._failures = 0
        src = ["source"]
        self.sync_total = Counter(
            "dagsync_sync_total",
            "Sync passes by result (published, unchanged, failed, rejected)",
            [*src, "result"],
            registry=registry,
        )
        self.sync_duration = Histogram(
            "dagsync_sync_duration_seconds",
            "Duration of sync passes",
            [*src, "result"],
            buckets=DURATION_BUCKETS_SECONDS,
            registry=registry,
        )
        self.last_success = Gauge(
            "dagsync_last_success_timestamp_seconds",
            "Unix time of the last pass that published or found the revision unchanged",
            src,
            registry=registry,
        )
        self.consecutive_failures = Gauge(
            "dagsync_consecutive_failures",
            "Failed passes since the last one that was not a failure",
            src,
            registry=registry,
        )
        self.revision_info = Gauge(
            "dagsync_revision_info",
            "The published revision (value always 1)",
            [*src, "revision"],
            registry=registry,
        )
        self.published_files = Gauge(
            "dagsync_published_files", "Files in the published revision", src, registry=registry
        )
        self.published_bytes = Gauge(
            "dagsync_published_bytes", "Bytes in the published revision", src, registry=registry
        )
        self.downloaded_bytes = Counter(
            "dagsync_downloaded_bytes_total",
            "Bytes downloaded from the source",
            src,
            registry=registry,
        )
        self.downloaded_files = Counter(
            "dagsync_downloaded_files_total",
            "Files downloaded from the source",
            src,
            registry=registry,
        )
        self.reused_files = Counter(
            "dagsync_reused_files_total",
            "Files taken from the previous revision without download",
            src,
            registry=registry,
        )
        self.hook_total = Counter(
            "dagsync_hook_total",
            "Hook runs by hook (exec, webhook) and result (ok, failed)",
            ["hook", "result"],
            registry=registry,
        )
        self.build_info = Gauge(
            "dagsync_build_info",
            "dagsync build (value always 1)",
            ["version", "python"],
            registry=registry,
        )
        python = ".".join(map(str, sys.version_info[:3]))  # platform.python_version()
        self.build_info.labels(__version__, python).set(1)
        # Every series exists from the start, so rate() and absent() behave from the first
        # scrape rather than after the first event of each kind.
        for result in RESULTS:
            self.sync_total.labels(source, result)
            self.sync_duration.labels(source, result)
        for hook in HOOKS:
            for hook_result in HOOK_RESULTS:
                self.hook_total.labels(hook, hook_result)
        self.consecutive_failures.labels(source).set(0)
        for counter in (self.downloaded_bytes, self.downloaded_files, self.reused_files):
            counter.labels(source)

    def found_on_disk(self, published: Published, published_at: float | None) -> None:
        """A revision already published when the process starts (state.json's time is the
        last success we know of)."""
        self._set_published(published)
        if published_at is not None:
            self.last_success.labels(self.source).set(published_at)

    def observe(self, result: SyncResult) -> None:
        """Update everything from one pass (a Reporter observer)."""
        src = self.source
        self.sync_total.labels(src, result.result).inc()
        self.sync_duration.labels(src, result.result).observe(result.duration)
        if result.result in SUCCESSES:
            self.last_success.labels(src).set(result.started_at + result.duration)
        # Like the loop's backoff: only a failed pass counts; a rejected revision is a verdict
        # on the content, not a failure to reach the source.
        self._failures = self._failures + 1 if result.result == "failed" else 0
        self.consecutive_failures.labels(src).set(self._failures)
        if result.stats is not None:
            self.downloaded_bytes.labels(src).inc(result.stats.downloaded_bytes)
            self.downloaded_files.labels(src).inc(result.stats.downloaded_files)
            self.reused_files.labels(src).inc(result.stats.reused_files)
        if result.published is not None:
            self._set_published(result.published)

    def hook(self, hook: str, ok: bool) -> None:
        self.hook_total.labels(hook, "ok" if ok else "failed").inc()

    def _set_published(self, published: Published) -> None:
        if self._revision != published.revision:
            if self._revision is not None:
                self.revision_info.remove(self.source, self._revision)
            self._revision = published.revision
            self.revision_info.labels(self.source, published.revision).set(1)
        self.published_files.labels(self.source).set(len(published.manifest))
        self.published_bytes.labels(self.source).set(published.manifest.total_bytes)


class NullMetrics(Metrics):
    """``once`` with no ``--http-bind``: nothing could ever read the metrics, so nothing is
    counted and prometheus_client is not imported (a worker pod's start-up pays for it)."""

    def __init__(self, source: str) -> None:  # no registry, no series
        self.source = source

    def found_on_disk(self, published: Published, published_at: float | None) -> None:
        pass

    def observe(self, result: SyncResult) -> None:
        pass

    def hook(self, hook: str, ok: bool) -> None:
        pass


SERVED_ENDPOINTS = ("revisions", "manifest", "files", "archive")


class ServeMetrics:
    """The relay's side (SPEC section 8): requests to ``/v1/`` and the body bytes sent."""

    def __init__(self, registry: CollectorRegistry) -> None:
        from prometheus_client import Counter

        self.requests = Counter(
            "dagsync_served_requests_total",
            "Requests to the /v1/ revision endpoints by endpoint and HTTP status code",
            ["endpoint", "code"],
            registry=registry,
        )
        self.bytes = Counter(
            "dagsync_served_bytes_total",
            "Body bytes sent by the /v1/ revision endpoints",
            registry=registry,
        )
        for endpoint in SERVED_ENDPOINTS:
            self.requests.labels(endpoint, "200")

    def request(self, endpoint: str, code: int) -> None:
        self.requests.labels(endpoint, str(code)).inc()

    def sent(self, count: int) -> None:
        if count:
            self.bytes.inc(count)
