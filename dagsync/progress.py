"""How far a pass has got, for whoever shows it (``dagsync once`` on a terminal).

The syncer names the phases and, when the source listed its files up front, the total; the
:class:`~dagsync.tree.TreeWriter` that every source writes through counts what is written or
linked. A writer finds its observer by the folder it writes into (:func:`watching`), so sources
need not know about progress at all. Nothing here draws anything: see ``progress_display.py``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

RESOLVING, FETCHING, WRITING, CHECKING, PUBLISHING = (
    "resolving",
    "fetching",
    "writing",
    "checking",
    "publishing",
)


class Progress(Protocol):
    """Observer of one pass. ``advance`` may be called from several threads at once."""

    def phase(self, name: str) -> None:
        """The pass entered ``name`` (one of the constants above)."""

    def expect(self, files: int, nbytes: int) -> None:
        """The tree will hold this many files and bytes (written and linked together)."""

    def advance(self, files: int, nbytes: int, linked: bool = False) -> None:
        """``files`` more are in the tree; ``linked``: taken from the previous revision."""


_lock = threading.Lock()
_by_tree: dict[Path, Progress] = {}


@contextmanager
def watching(tree: Path, progress: Progress | None) -> Iterator[None]:
    """Within the block, a TreeWriter writing into ``tree`` reports to ``progress``."""
    if progress is None:
        yield
        return
    with _lock:
        _by_tree[tree] = progress
    try:
        yield
    finally:
        with _lock:
            _by_tree.pop(tree, None)


def for_tree(tree: Path) -> Progress | None:
    """The observer registered for ``tree``, if any."""
    with _lock:
        return _by_tree.get(tree)
