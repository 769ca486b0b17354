"""Running one measured command: wall time, CPU of its whole process tree, peak RSS.

Every command is a child of the harness, waited for with ``os.wait4``: ``ru_utime + ru_stime``
covers the child and every descendant it reaped. Peak RSS comes from ``/usr/bin/time -f %M``
wrapped around the command: the largest single process of its tree (Linux reports the
maximum). Not ``ru_maxrss`` of the harness's own child: that never reads below the harness's
RSS at fork time (matplotlib alone puts it above git's). For dagsync itself, ``launcher.py``
reports the process's own ``VmHWM``, without git's children.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

LAUNCHER = Path(__file__).with_name("launcher.py")
TIME = "/usr/bin/time"
# Where ``--profile`` puts one pyinstrument text profile per scenario (None: no profiling).
PROFILES: Path | None = None


@dataclass(frozen=True)
class Run:
    wall: float
    cpu: float
    tree_rss_mb: float  # largest process of the tree (see the module docstring)
    own_rss_mb: float | None = None  # dagsync's own process, from the launcher
    extra: dict[str, float] = field(default_factory=dict)


class CommandFailed(SystemExit):
    pass


def dagsync_argv(*args: str, profile: str = "") -> list[str]:
    """``dagsync ARGS`` through the launcher, so its own peak RSS is known; with ``profile``
    (and ``PROFILES`` set) under pyinstrument instead, its text report in PROFILES/NAME.txt."""
    if profile and PROFILES is not None:
        PROFILES.mkdir(parents=True, exist_ok=True)
        out = PROFILES / f"{profile}.txt"
        return [sys.executable, "-m", "pyinstrument", "-i", "0.002", "-r", "text", "-o", str(out),
                "-m", "dagsync", *args]  # fmt: skip
    return [sys.executable, str(LAUNCHER), *args]


def run(argv: Sequence[str], env: dict[str, str], cwd: Path | None = None) -> Run:
    """Run ``argv`` to completion; exit status other than 0 stops the harness with its output."""
    with (
        tempfile.NamedTemporaryFile(prefix="perf-rss-") as rss,
        tempfile.NamedTemporaryFile(prefix="perf-tree-rss-") as tree,
        tempfile.TemporaryFile() as log,
    ):
        child_env = {**env, "PERF_RSS_FILE": rss.name}
        timed = [TIME, "-f", "%M", "-o", tree.name, *argv] if os.path.exists(TIME) else list(argv)
        started = time.monotonic()
        proc = subprocess.Popen(
            timed, env=child_env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - started
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            log.seek(0)
            tail = log.read().decode(errors="replace")[-3000:]
            raise CommandFailed(f"exit {code}: {' '.join(argv)}\n{tail}")
        text = Path(rss.name).read_text().strip()
        peak = Path(tree.name).read_text().split()
    own = int(text) / 1024 if text else None
    tree_kb = int(peak[-1]) if peak and peak[-1].isdigit() else usage.ru_maxrss
    return Run(wall, usage.ru_utime + usage.ru_stime, tree_kb / 1024, own)


def alternate(reps: int, contenders: dict[str, Callable[[int], Run]]) -> dict[str, list[Run]]:
    """Each repetition runs every contender once; the order rotates so none always goes first."""
    names = list(contenders)
    out: dict[str, list[Run]] = {name: [] for name in names}
    for rep in range(reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            out[name].append(contenders[name](rep))
    return out


def median(runs: Sequence[Run], attr: str = "wall") -> float:
    values = [getattr(r, attr) if attr in Run.__dataclass_fields__ else r.extra[attr] for r in runs]
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else float("nan")


def spread(runs: Sequence[Run], attr: str = "wall") -> str:
    """``median (min–max)`` in seconds, for the detail lines."""
    values = sorted(getattr(r, attr) for r in runs)
    return f"{statistics.median(values):.2f} s ({values[0]:.2f}–{values[-1]:.2f}, n={len(values)})"
