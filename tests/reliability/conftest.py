"""The reliability campaigns: every test here carries the ``reliability`` marker, so
``pytest -m 'not reliability'`` leaves them out. Seeds are fixed and printed (``-s`` shows them)."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.reliability)
