"""The gate before publish: ``python`` (every .py compiles) or ``cmd:SHELL COMMAND``.

A failed check raises CheckFailed: the syncer keeps the revision out, remembers it and does not
try it again until the source moves. A check that runs past the sync timeout raises
SyncTimeout instead (a failure, retried): a slow check says nothing about the revision.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from dagsync.errors import CheckFailed
from dagsync.procs import run_bounded
from dagsync.timing import remaining

OUTPUT_TAIL_CHARS = 400


def run_check(
    check: str | None, candidate: Path, deadline: float, environ: Mapping[str, str]
) -> None:
    """Raise CheckFailed when the candidate tree must not be published."""
    if not check:
        return
    if check == "python":
        check_python(candidate, deadline)
    elif check.startswith("cmd:"):
        check_command(check[4:], candidate, deadline, environ)
    else:  # config validation refuses this; a plug-in building Config by hand might not
        raise CheckFailed(f"--check: unknown check {check!r}")


def check_python(candidate: Path, deadline: float | None = None) -> None:
    """Every ``.py`` file must compile; the error names the file and the line.

    A symlinked ``.py`` is checked when it points at a file inside the candidate (Airflow
    would parse it); one that dangles or leaves the tree is not the revision's content.
    """
    root = candidate.resolve()
    for dirpath, dirnames, filenames in os.walk(candidate):
        dirnames.sort()
        if deadline is not None:
            remaining(deadline, "--check python")
        for name in sorted(filenames):
            if not name.endswith(".py"):
                continue
            path = Path(dirpath) / name
            if path.is_symlink():
                target = path.resolve()
                if not target.is_file() or not target.is_relative_to(root):
                    continue
            rel = path.relative_to(candidate).as_posix()
            try:
                source = path.read_bytes()
                compile(source, rel, "exec", dont_inherit=True)
            except SyntaxError as exc:  # IndentationError and TabError too
                raise CheckFailed(f"--check python: {rel}:{exc.lineno}: {exc.msg}") from None
            except (ValueError, OSError) as exc:  # NUL bytes, unreadable file
                raise CheckFailed(f"--check python: {rel}: {exc}") from None


def check_command(
    command: str, candidate: Path, deadline: float, environ: Mapping[str, str]
) -> None:
    """Run ``command`` in the candidate folder; a non-zero exit rejects the revision."""
    env = dict(environ)
    env["DAGSYNC_CANDIDATE"] = str(candidate)
    result = run_bounded(
        ["/bin/sh", "-c", command],
        cwd=candidate,
        env=env,
        timeout=remaining(deadline, "--check"),
        what="--check",
    )
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).decode(errors="replace").strip()
        tail = tail[-OUTPUT_TAIL_CHARS:].replace("\n", " | ")
        output = f": {tail}" if tail else " with no output"
        raise CheckFailed(f"--check command exited {result.returncode}{output}")
