"""The loop's arithmetic: waits with jitter and backoff, and when --max-failures gives up."""

from __future__ import annotations

import dataclasses

import pytest

from dagsync.config import build
from dagsync.daemon import Daemon, next_wait


def test_period_has_ten_percent_jitter() -> None:
    assert next_wait(60, 0, rand=lambda: 0.0) == pytest.approx(54)
    assert next_wait(60, 0, rand=lambda: 1.0) == pytest.approx(66)


def test_backoff_doubles_from_one_second_capped_at_the_period() -> None:
    waits = [next_wait(10, n, rand=lambda: 0.5) for n in range(1, 7)]
    assert waits == [1, 2, 4, 8, 10, 10]


def _daemon(**changes: object) -> Daemon:
    raw = {"repo": "file:///x", "period": "60s", "sync_timeout": "5m"}
    from dagsync.config import OPTIONS

    merged = {o.attr: o.default for o in OPTIONS} | raw
    config = dataclasses.replace(build("run", merged, {}), **changes)  # type: ignore[arg-type]
    return Daemon(config, syncer=None, on_result=lambda _r: None)  # type: ignore[arg-type]


@pytest.mark.parametrize(("max_failures", "exits_at"), [(-1, None), (0, 1), (1, 1), (3, 3)])
def test_max_failures_counts_like_git_sync(max_failures: int, exits_at: int | None) -> None:
    daemon = _daemon(max_failures=max_failures)
    exits = [n for n in range(1, 10) if daemon._should_exit(n, ever_published=False)]
    assert (exits[0] if exits else None) == exits_at


def test_first_sync_must_succeed_only_before_the_first_publish() -> None:
    daemon = _daemon(max_failures=-1, first_sync_must_succeed=True)
    assert daemon._should_exit(1, ever_published=False)
    assert not daemon._should_exit(50, ever_published=True)
