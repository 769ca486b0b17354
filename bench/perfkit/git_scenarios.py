"""Scenarios 1-4 and the git leg of the scale curve: ``dagsync once`` against plain git,
both talking to the same ``git daemon`` on loopback, alternating, in the same run."""

from __future__ import annotations

import random
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from perfkit import gitrepos, measure
from perfkit.gitrepos import CountingProxy, RepoSpec, Served
from perfkit.measure import Run, alternate, dagsync_argv, run

SMALL = RepoSpec(files=2000, total_mb=30, commits=50)
BIG = RepoSpec(files=20_000, total_mb=200, commits=1, dags_files=1000, dags_mb=10)
SCALE_KB_PER_FILE = 2


def scale_spec(files: int) -> RepoSpec:
    return RepoSpec(files=files, total_mb=files * SCALE_KB_PER_FILE / 1024)


@dataclass
class GitBench:
    """A temp folder, a hermetic git environment and one ``git daemon`` for every scenario."""

    top: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="perf-git-")))

    def __post_init__(self) -> None:
        (self.top / "home").mkdir()
        self.env = gitrepos.git_env(self.top / "home")
        self.served = Served(self.top, self.env)
        self.urls: dict[str, str] = {}
        self._n = 0

    def url(self, spec: RepoSpec) -> str:
        if spec.name not in self.urls:
            self.urls[spec.name] = self.served.add(gitrepos.ensure(spec), spec.name)
        return self.urls[spec.name]

    def fresh(self, what: str) -> Path:
        self._n += 1
        return self.top / f"{what}-{self._n}"

    def dagsync(self, url: str, root: Path, *extra: str, profile: str = "") -> Run:
        args = ("once", "--repo", url, "--root", str(root), "--log-level", "warning", *extra)
        return run(dagsync_argv(*args, profile=profile), self.env)

    def profile_cold(self, name: str, url: str, *extra: str) -> None:
        """One more cold run under pyinstrument (``--profile``), not counted."""
        if measure.PROFILES is not None:
            root = self.fresh("root")
            self.dagsync(url, root, *extra, profile=name)
            shutil.rmtree(root, ignore_errors=True)

    def cold_pair(self, url: str, reps: int, *extra: str) -> dict[str, list[Run]]:
        """Cold ``dagsync once`` and ``git clone --depth 1 --single-branch`` into new folders."""

        def dagsync(_rep: int) -> Run:
            root = self.fresh("root")
            try:
                return self.dagsync(url, root, *extra)
            finally:
                shutil.rmtree(root, ignore_errors=True)

        def clone(_rep: int) -> Run:
            dest = self.fresh("clone")
            try:
                return run(
                    ["git", "clone", "--quiet", "--depth", "1", "--single-branch", url, str(dest)],
                    self.env,
                )
            finally:
                shutil.rmtree(dest, ignore_errors=True)

        return alternate(reps, {"dagsync": dagsync, "git clone": clone})

    def close(self) -> None:
        self.served.close()
        shutil.rmtree(self.top, ignore_errors=True)


def cold(bench: GitBench, spec: RepoSpec, reps: int) -> dict[str, list[Run]]:
    """Scenarios 1 and 2."""
    runs = bench.cold_pair(bench.url(spec), reps)
    bench.profile_cold(f"cold-{spec.files}-files", bench.url(spec))
    return runs


def subpath(bench: GitBench, big: RepoSpec, reps: int) -> dict[str, list[Run]]:
    """Scenario 3: ``--subpath dags`` against a full ``git clone --depth 1``, through the
    counting proxy; each run's bytes received are in ``Run.extra['bytes']``."""
    bench.url(big)
    proxy = CountingProxy(bench.served.port)
    url = f"git://127.0.0.1:{proxy.port}/{big.name}"
    try:

        def dagsync(_rep: int) -> Run:
            root = bench.fresh("root")
            proxy.take()
            try:
                got = bench.dagsync(url, root, "--subpath", "dags")
                files = sum(1 for p in (root / "current").rglob("*") if p.is_file())
            finally:
                shutil.rmtree(root, ignore_errors=True)
            if files != big.dags_files:
                raise SystemExit(f"--subpath dags published {files} files, not {big.dags_files}")
            return Run(got.wall, got.cpu, got.tree_rss_mb, got.own_rss_mb, {"bytes": proxy.take()})

        def clone(_rep: int) -> Run:
            dest = bench.fresh("clone")
            proxy.take()
            try:
                got = run(["git", "clone", "--quiet", "--depth", "1", url, str(dest)], bench.env)
            finally:
                shutil.rmtree(dest, ignore_errors=True)
            return Run(got.wall, got.cpu, got.tree_rss_mb, None, {"bytes": proxy.take()})

        runs = alternate(reps, {"dagsync": dagsync, "git clone": clone})
        bench.profile_cold("subpath", url, "--subpath", "dags")
        return runs
    finally:
        proxy.close()


def warm(bench: GitBench, reps: int) -> dict[str, list[Run]]:
    """Scenario 4: one file of 2,000 changed, a warm root against fetch + checkout in a clone."""
    repo_url = bench.served.add(gitrepos.ensure(SMALL), "warm.git", copy=True)
    repo = bench.served.base / "warm.git"
    root, clone = bench.fresh("warm-root"), bench.fresh("warm-clone")
    bench.dagsync(repo_url, root)
    run(["git", "clone", "--quiet", "--single-branch", repo_url, str(clone)], bench.env)
    layout = SMALL.layout()
    update = (
        f"git -C {clone} fetch --quiet origin && "
        f"git -C {clone} checkout --quiet --detach FETCH_HEAD"
    )
    changes = iter(range(10**6))

    def change() -> None:
        n = next(changes)
        path, size = layout[(n * 37) % len(layout)]
        gitrepos.add_commit(repo, path, gitrepos.text_of(random.Random(n), n, size), n, bench.env)

    results: dict[str, list[Run]] = {"dagsync": [], "git fetch + checkout": []}
    for rep in range(reps):
        change()
        order = list(results) if rep % 2 == 0 else list(reversed(results))
        for name in order:
            if name == "dagsync":
                results[name].append(bench.dagsync(repo_url, root))
            else:
                results[name].append(run(["sh", "-c", update], bench.env))
    if measure.PROFILES is not None:
        change()
        bench.dagsync(repo_url, root, profile="warm-one-changed")
    return results


def scale(bench: GitBench, sizes: list[int], reps: int) -> dict[int, dict[str, list[Run]]]:
    """Cold ``dagsync once`` and ``git clone`` at each size (one repetition above 10,000)."""
    out = {}
    for n in sizes:
        url, limit = bench.url(scale_spec(n)), str(max(n, 100_000))
        out[n] = bench.cold_pair(url, reps if n <= 10_000 else 1, "--max-files", limit)
        if n == sizes[-2]:  # the largest size is too slow to profile as well
            bench.profile_cold(f"scale-git-{n}-files", url, "--max-files", limit)
    return out
