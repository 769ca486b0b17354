"""Scenario 5 (one changed object of 10,000, OSS and Azure) and the store leg of the scale curve.

The fakes of ``tests/fakes`` run in their own process (``store_bench.ServerProcess``) with an
injected per-request latency; their request log counts the GETs dagsync made.
"""

from __future__ import annotations

import random
import shutil
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from store_bench import (
    AZURE_PATH,
    AZURE_SHARE,
    DRIVERS,
    OSS_BUCKET,
    OSS_PREFIX,
    CloudDriver,
    child_env,
)

from perfkit import measure
from perfkit.measure import Run, dagsync_argv, run

BASELINE = Path(__file__).with_name("store_baseline.py")
CONCURRENCY = 8


@dataclass
class ChangedOne:
    """Scenario 5 for one cloud: the warm passes, the baseline script, the GETs of each pass."""

    cloud: str
    dagsync: list[Run]
    baseline: list[Run]
    gets: list[int]  # GETs per dagsync pass (target: exactly 1 each)
    other: Counter[str]  # request kinds other than list and get, over all passes
    cold: Run


def once_argv(cloud: CloudDriver, root: Path, *extra: str, profile: str = "") -> list[str]:
    return dagsync_argv(
        "once", *cloud.dagsync_args(), "--root", str(root), "--concurrency", str(CONCURRENCY),
        "--sync-timeout", "30m", "--log-level", "warning", *extra, profile=profile,
    )  # fmt: skip


def baseline_argv(cloud: CloudDriver, key: str, dest: Path) -> list[str]:
    if cloud.name == "oss":
        endpoint: str = cloud.endpoint  # type: ignore[attr-defined]
        args = ["oss", endpoint, OSS_BUCKET, OSS_PREFIX, key, str(dest)]
    else:
        args = ["azure", AZURE_SHARE, AZURE_PATH, str(CONCURRENCY), key, str(dest)]
    return [sys.executable, str(BASELINE), *args]


def changed_one(name: str, files: int, size: int, latency: float, reps: int) -> ChangedOne:
    cloud = DRIVERS[name]()
    cloud.start(latency)
    work = Path(tempfile.mkdtemp(prefix=f"perf-s5-{name}-"))
    try:
        paths = cloud.populate(files, size, seed=1)
        env = child_env(cloud)
        root = work / "root"
        cold = run(once_argv(cloud, root), env)
        result = ChangedOne(name, [], [], [], Counter(), cold)
        rand = random.Random(5)
        for rep in range(reps):
            key = rand.choice(paths)
            cloud.modify([key], seed=100 + rep)
            order = ["dagsync", "baseline"] if rep % 2 == 0 else ["baseline", "dagsync"]
            for who in order:
                if who == "baseline":
                    result.baseline.append(run(baseline_argv(cloud, key, work / "one"), env))
                    continue
                cloud.clear()
                result.dagsync.append(run(once_argv(cloud, root), env))
                counts = cloud.counts()
                result.gets.append(counts.get(cloud.download_kind, 0))
                result.other.update(
                    {k: n for k, n in counts.items() if k not in ("list", cloud.download_kind)}
                )
        if measure.PROFILES is not None:
            cloud.modify([rand.choice(paths)], seed=99)
            run(once_argv(cloud, root, profile=f"store-one-changed-{name}"), env)
        return result
    finally:
        cloud.stop()
        shutil.rmtree(work, ignore_errors=True)


def scale(
    name: str, sizes: list[int], size: int, latency: float, reps: int
) -> dict[int, list[Run]]:
    """Cold ``dagsync once`` of ``n`` objects for each ``n`` (fewer repetitions above 10,000)."""
    out: dict[int, list[Run]] = {}
    for n in sizes:
        cloud = DRIVERS[name]()
        cloud.start(latency)
        work = Path(tempfile.mkdtemp(prefix=f"perf-scale-{name}-"))
        try:
            cloud.populate(n, size, seed=1)
            env = child_env(cloud)
            out[n] = []
            for rep in range(reps if n <= 10_000 else 1):
                root = work / f"root-{rep}"
                out[n].append(run(once_argv(cloud, root, "--max-files", str(n)), env))
                shutil.rmtree(root, ignore_errors=True)
        finally:
            cloud.stop()
            shutil.rmtree(work, ignore_errors=True)
    return out
