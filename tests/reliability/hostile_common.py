"""What every hostile-input test checks after a refused sync: one clear error line, exit 1,
the previous revision still published and intact, nothing left in staging."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.sources.store_contract import link_target, published_files

TRACEBACK_MARK = "Traceback"


def error_lines(stderr: str) -> list[str]:
    """The lines dagsync logged at error level (text log format)."""
    return [line for line in stderr.splitlines() if line.split()[1:2] == ["error"]]


def assert_refused(
    run: subprocess.CompletedProcess[str],
    root: Path,
    before: tuple[str | None, dict[str, bytes]],
    *named: str,
) -> None:
    """Exit 1, the error names ``named``, no traceback, the old tree still served as it was,
    and no staging folder left behind."""
    assert run.returncode == 1, run.stderr
    assert TRACEBACK_MARK not in run.stderr, run.stderr
    assert "unexpectedly" not in run.stderr, run.stderr
    errors = error_lines(run.stderr)
    assert len(errors) == 1, run.stderr  # one line a person can act on
    for name in named:
        assert name in errors[0], (name, run.stderr)
    assert (link_target(root), published_files(root)) == before
    staging = root / ".dagsync" / "staging"
    assert not staging.exists() or os.listdir(staging) == []


def state(root: Path) -> tuple[str | None, dict[str, bytes]]:
    return link_target(root), published_files(root)
