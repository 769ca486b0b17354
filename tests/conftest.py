"""Shared fixtures. Git servers live in tests/gitservers.py, store fakes in tests/fakes/."""

from __future__ import annotations

import importlib.util
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Property tests assert values, not speed: on a loaded 2-core CI machine a first example can take
# longer than hypothesis' default 200 ms deadline, which is a flake, not a finding.
settings.register_profile("dagsync", deadline=None)
settings.load_profile("dagsync")

pytest_plugins = [
    name for name in ("tests.gitservers",) if importlib.util.find_spec(name) is not None
]


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """A test must join the threads it starts (watchdog's rule): stop must be immediate."""
    before = set(threading.enumerate())
    yield
    deadline_threads = [
        t for t in threading.enumerate() if t not in before and t.is_alive() and not t.daemon
    ]
    for t in deadline_threads:
        t.join(timeout=5)
    leaked = [t.name for t in deadline_threads if t.is_alive()]
    assert not leaked, f"threads left running: {leaked}"
