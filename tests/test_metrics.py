"""metrics.py on a fresh registry per test: every SPEC section 6 metric, for every kind of pass."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dagsync import __version__
from dagsync.manifest import Entry, Manifest
from dagsync.metrics import Metrics
from dagsync.sources.base import FetchStats, Published
from dagsync.syncer import SyncResult

SRC = {"source": "git"}


def published(revision: str, sizes: tuple[int, ...] = (10, 20)) -> Published:
    manifest = Manifest.of(Entry(f"dags/f{i}.py", size, f"t{i}") for i, size in enumerate(sizes))
    return Published(revision, Path("/nonexistent") / revision, manifest)


def result(
    kind: str,
    pub: Published | None,
    *,
    started: float = 1000.0,
    duration: float = 0.5,
    stats: FetchStats | None = None,
) -> SyncResult:
    return SyncResult(
        result=kind,
        source="git",
        revision=pub.revision if pub else "r-x",
        published=pub,
        started_at=started,
        duration=duration,
        stats=stats,
        error=None if kind in ("published", "unchanged") else "boom",
    )


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> Metrics:
    return Metrics(registry, "git")


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def revision_labels(registry: CollectorRegistry) -> list[dict[str, str]]:
    families = text_string_to_metric_families(generate_latest(registry).decode())
    return [s.labels for f in families if f.name == "dagsync_revision_info" for s in f.samples]


def test_fresh_registry_has_every_series_at_zero(registry: CollectorRegistry, metrics: Metrics):
    for kind in ("published", "unchanged", "failed", "rejected"):
        assert value(registry, "dagsync_sync_total", result=kind, **SRC) == 0
        assert value(registry, "dagsync_sync_duration_seconds_count", result=kind, **SRC) == 0
    for hook in ("exec", "webhook"):
        for outcome in ("ok", "failed"):
            assert value(registry, "dagsync_hook_total", hook=hook, result=outcome) == 0
    assert value(registry, "dagsync_consecutive_failures", **SRC) == 0
    for name in ("downloaded_bytes", "downloaded_files", "reused_files"):
        assert value(registry, f"dagsync_{name}_total", **SRC) == 0
    assert value(registry, "dagsync_last_success_timestamp_seconds", **SRC) is None
    assert revision_labels(registry) == []
    assert (
        value(
            registry,
            "dagsync_build_info",
            version=__version__,
            python=platform.python_version(),
        )
        == 1
    )


def test_published_pass(registry: CollectorRegistry, metrics: Metrics):
    pub = published("aaa", (10, 20, 5))
    stats = FetchStats(pub.manifest, downloaded_files=2, downloaded_bytes=30, reused_files=1)
    metrics.observe(result("published", pub, started=1000.0, duration=0.25, stats=stats))
    assert value(registry, "dagsync_sync_total", result="published", **SRC) == 1
    assert value(registry, "dagsync_sync_duration_seconds_count", result="published", **SRC) == 1
    assert value(registry, "dagsync_sync_duration_seconds_sum", result="published", **SRC) == 0.25
    assert (
        value(
            registry, "dagsync_sync_duration_seconds_bucket", le="0.25", result="published", **SRC
        )
        == 1
    )
    assert value(registry, "dagsync_last_success_timestamp_seconds", **SRC) == 1000.25
    assert value(registry, "dagsync_revision_info", revision="aaa", **SRC) == 1
    assert value(registry, "dagsync_published_files", **SRC) == 3
    assert value(registry, "dagsync_published_bytes", **SRC) == 35
    assert value(registry, "dagsync_downloaded_files_total", **SRC) == 2
    assert value(registry, "dagsync_downloaded_bytes_total", **SRC) == 30
    assert value(registry, "dagsync_reused_files_total", **SRC) == 1


def test_new_revision_replaces_the_old_label_set(registry: CollectorRegistry, metrics: Metrics):
    metrics.observe(result("published", published("aaa")))
    metrics.observe(result("published", published("bbb", (1,))))
    assert revision_labels(registry) == [{"source": "git", "revision": "bbb"}]
    assert value(registry, "dagsync_published_files", **SRC) == 1
    assert value(registry, "dagsync_sync_total", result="published", **SRC) == 2


def test_unchanged_pass_is_a_success_and_downloads_nothing(
    registry: CollectorRegistry, metrics: Metrics
):
    pub = published("aaa")
    metrics.observe(result("published", pub, started=100.0, duration=1.0))
    metrics.observe(result("unchanged", pub, started=200.0, duration=0.1))
    assert value(registry, "dagsync_sync_total", result="unchanged", **SRC) == 1
    assert value(registry, "dagsync_last_success_timestamp_seconds", **SRC) == 200.1
    assert value(registry, "dagsync_downloaded_files_total", **SRC) == 0
    assert revision_labels(registry) == [{"source": "git", "revision": "aaa"}]


def test_failures_count_up_and_reset(registry: CollectorRegistry, metrics: Metrics):
    pub = published("aaa")
    metrics.observe(result("published", pub, started=100.0, duration=0.0))
    metrics.observe(result("failed", pub, started=200.0))
    metrics.observe(result("failed", pub, started=300.0))
    assert value(registry, "dagsync_consecutive_failures", **SRC) == 2
    assert value(registry, "dagsync_sync_total", result="failed", **SRC) == 2
    # a failure is not a success: the timestamp stays at the last good pass
    assert value(registry, "dagsync_last_success_timestamp_seconds", **SRC) == 100.0
    # the published revision keeps being reported through the outage
    assert revision_labels(registry) == [{"source": "git", "revision": "aaa"}]
    metrics.observe(result("unchanged", pub, started=400.0, duration=0.0))
    assert value(registry, "dagsync_consecutive_failures", **SRC) == 0


def test_failed_pass_before_anything_was_published(registry: CollectorRegistry, metrics: Metrics):
    metrics.observe(result("failed", None))
    assert value(registry, "dagsync_consecutive_failures", **SRC) == 1
    assert revision_labels(registry) == []
    assert value(registry, "dagsync_published_files", **SRC) is None
    assert value(registry, "dagsync_last_success_timestamp_seconds", **SRC) is None


def test_rejected_pass(registry: CollectorRegistry, metrics: Metrics):
    good = published("aaa")
    metrics.observe(result("published", good, started=100.0, duration=0.0))
    metrics.observe(result("failed", good))
    metrics.observe(result("rejected", good, started=300.0))
    assert value(registry, "dagsync_sync_total", result="rejected", **SRC) == 1
    # the loop does not back off for a rejected revision, and neither does this gauge
    assert value(registry, "dagsync_consecutive_failures", **SRC) == 0
    assert value(registry, "dagsync_last_success_timestamp_seconds", **SRC) == 100.0
    assert revision_labels(registry) == [{"source": "git", "revision": "aaa"}]


def test_revision_found_on_disk_at_start(registry: CollectorRegistry, metrics: Metrics):
    metrics.found_on_disk(published("ondisk", (7,)), 50.0)
    assert revision_labels(registry) == [{"source": "git", "revision": "ondisk"}]
    assert value(registry, "dagsync_published_files", **SRC) == 1
    assert value(registry, "dagsync_published_bytes", **SRC) == 7
    assert value(registry, "dagsync_last_success_timestamp_seconds", **SRC) == 50.0
    assert value(registry, "dagsync_sync_total", result="published", **SRC) == 0
    metrics.observe(result("published", published("next")))
    assert revision_labels(registry) == [{"source": "git", "revision": "next"}]


def test_hook_counts(registry: CollectorRegistry, metrics: Metrics):
    metrics.hook("exec", True)
    metrics.hook("webhook", False)
    metrics.hook("webhook", False)
    assert value(registry, "dagsync_hook_total", hook="exec", result="ok") == 1
    assert value(registry, "dagsync_hook_total", hook="webhook", result="failed") == 2


def test_two_instances_do_not_share_state():
    first, second = CollectorRegistry(), CollectorRegistry()
    Metrics(first, "git").observe(result("failed", None))
    Metrics(second, "oss")
    assert value(first, "dagsync_sync_total", result="failed", source="git") == 1
    assert value(second, "dagsync_sync_total", result="failed", source="oss") == 0
