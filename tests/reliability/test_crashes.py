"""SIGKILL at seeded random moments of a sync, for git and both clouds, in ``once`` and ``run``.

Each kill lands at a seeded moment of a sync: one un-killed pass is watched first to learn when
each phase runs (in ``once`` from taking the root's lock; in ``run`` from SIGHUP), and the kills
take turns over the phases, at a uniform moment inside the turn's window. The whole process
tree is frozen first, what it was doing is recorded (the phase: idle, resolve, fetch,
write, check, publish, clean-up), then it is killed as a container's kill does. After each
kill the next sync must succeed, the link must name a complete revision equal to the source,
and nothing may be left in staging, temp links, temp files or the git cache. Between the kill
and the next sync, the link (if any) names a complete tree.

Reproduce: ``pytest -q tests/reliability -s -k crash``: 30 kills (5 per source and mode);
``DAGSYNC_RELIABILITY_KILLS=60`` makes it 60 per source (30 once, 30 run). The seeds
are printed.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.gitservers import Repo
from tests.helpers import (
    cache_debris,
    client_env,
    dagsync,
    descendants,
    files_in_staging,
    files_of,
    kill_tree,
    leftovers,
    link_target,
    published,
    start_dagsync,
    terminate,
    wait_for,
)
from tests.reliability.campaign import Feed, GitFeed, StoreFeed, seeded, store_env, table

SEED = 20261207
# 30 kills in all by default (5 per source and mode: the CI budget); more with the variable.
KILLS_PER_SOURCE = int(os.environ.get("DAGSYNC_RELIABILITY_KILLS", "10"))  # half once, half run
CHECK_MARK = "sleep 0.1"
SIZES = {"git": (120, 2048), "oss": (60, 2048), "azure": (60, 2048)}  # files, bytes per file
STORE_LATENCY_SECONDS = 0.002  # per request: widens the listing and download windows
PASS_DONE = re.compile(r"^\S+ +\w+ +(published|unchanged) revision=", re.MULTILINE)
PHASES = ["idle", "resolve", "fetch", "write", "check", "publish", "clean-up"]
OUTCOMES: list[tuple[str, str, str, str]] = []  # source, mode, phase, outcome


@pytest.fixture(params=["git", "oss", "azure"])
def feed(
    request: pytest.FixtureRequest, make_git_repo: Callable[..., Repo], tmp_path: Path
) -> Iterator[Feed]:
    files, size = SIZES[request.param]
    if request.param == "git":
        yield GitFeed(make_git_repo("dags", initial=False), files, size)
        return
    env = store_env(request.param, tmp_path)
    env.fake.latency = STORE_LATENCY_SECONDS
    try:
        yield StoreFeed(env, files, size)
    finally:
        env.stop()


# --- what a frozen tree was doing ----------------------------------------------------------


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _in_pass(pid: int, root: Path) -> bool:
    """A pass holds ROOT/.dagsync/lock open from before resolve to after clean-up."""
    lock = str(root / ".dagsync" / "lock")
    try:
        return any(
            os.readlink(f"/proc/{pid}/fd/{fd}") == lock for fd in os.listdir(f"/proc/{pid}/fd")
        )
    except OSError:
        return False


def _generation(folder: Path) -> str | None:
    try:
        return (folder / "dags" / "d0" / "f0.py").read_text().split("\n", 1)[0]
    except OSError:
        return None


def phase_of(pids: list[int], root: Path, feed: Feed) -> str:
    children = " ".join(_cmdline(pid) for pid in pids[1:])
    if "ls-remote" in children:
        return "resolve"
    if any(word in children for word in (" fetch ", "upload-pack", "index-pack", "remote-")):
        return "fetch"
    if "cat-file --batch" in children:
        return "write"  # blobs streamed into staging
    if "cat-file" in children:
        return "fetch"  # is the commit in the cache already?
    if CHECK_MARK in children:
        return "check"
    if not _in_pass(pids[0], root):
        return "idle"  # starting, between passes or exiting: the root's lock is not held
    new = f"# generation {feed.generation}"
    if _generation(root / "current") == new:
        return "clean-up"
    revisions = root / ".dagsync" / "revisions"
    if any(_generation(p) == new for p in revisions.iterdir() if p.is_dir()):
        return "publish"
    staged = files_in_staging(root)
    if staged >= feed.files:
        return "check"  # written, before or after the check command
    staging = root / ".dagsync" / "staging"
    if staged or any(staging.iterdir()):
        return "write" if feed.name == "git" else "fetch"  # a store downloads into staging
    return "resolve"


# --- what must hold -------------------------------------------------------------------------


def assert_complete_or_none(root: Path, feed: Feed) -> None:
    """What a reader sees right after a kill: no link yet, or a whole single generation."""
    if link_target(root) is None:
        return
    _revision, folder = published(root)
    files = files_of(folder)
    assert len(files) == feed.files, f"{len(files)} files under the link"
    firsts = {text.split("\n", 1)[0] for text in files.values()}
    assert len(firsts) == 1, f"mixed generations under the link: {sorted(firsts)}"


def assert_recovered(root: Path, feed: Feed) -> None:
    revision, folder = published(root)
    if feed.revision() is not None:
        assert revision == feed.revision()
    assert files_of(folder) == feed.expected
    assert leftovers(root) == []
    assert cache_debris(root) == []


def first_pass_done(log: Path) -> bool:
    """``run`` finished its first pass (and so handles SIGHUP: before, SIGHUP kills it)."""
    return passes_done(log) > 0


def passes_done(log: Path) -> int:
    return len(PASS_DONE.findall(log.read_text(errors="replace")))


# --- the campaign ---------------------------------------------------------------------------


class Timeline:
    """When each phase of one un-killed pass was seen (seconds from the pass's start), so the
    kills can be spread over every phase, not only the longest (a seeded moment inside the
    window of the phase whose turn it is; what was really hit is recorded at the kill)."""

    def __init__(self) -> None:
        self.windows: dict[str, list[float]] = {}
        self.total = 0.0

    def observe(
        self, proc: subprocess.Popen[str], root: Path, feed: Feed, done: Callable[[], bool]
    ) -> None:
        started = time.monotonic()
        while proc.poll() is None and not done():
            phase = phase_of([proc.pid, *descendants(proc.pid)], root, feed)
            now = time.monotonic() - started
            self.windows.setdefault(phase, [now, now])[1] = now
            if phase == "idle" and "check" in self.windows and not self.total:
                self.total = now  # the pass let go of the root's lock
            time.sleep(0.005)
        self.total = self.total or time.monotonic() - started

    def moment(self, turn: int, rand: random.Random) -> float:
        phases = [p for p in PHASES if p in self.windows and p != "idle"]
        targets = [(self.windows[p][0], self.windows[p][1]) for p in phases]
        core_end = max([end for _, end in targets] or [0.0])
        targets.append((core_end, self.total))  # publish and clean-up, often too quick to see
        start, end = targets[turn % len(targets)]
        return rand.uniform(start, max(end, start + 0.02))

    def __str__(self) -> str:
        seen = ", ".join(f"{p} {w[0]:.2f}-{w[1]:.2f}s" for p, w in self.windows.items())
        return f"{self.total:.2f}s ({seen})"


@pytest.mark.timeout(600)
def test_crash_kill_9_at_seeded_points(
    feed: Feed, hermetic_git_env: dict[str, str], tmp_path: Path
) -> None:
    rand = seeded(f"crash {feed.name}", SEED + sum(map(ord, feed.name)))
    env = {**client_env(hermetic_git_env, tmp_path / "home"), **feed.environ()}
    root = tmp_path / "root"
    common = [*feed.args(), "--root", str(root), "--check", f"cmd:{CHECK_MARK}; true",
              "--keep-revisions", "1", "--revision-grace", "0s"]  # fmt: skip
    log = tmp_path / "dagsync.log"
    kills = {"once": KILLS_PER_SOURCE // 2, "run": KILLS_PER_SOURCE - KILLS_PER_SOURCE // 2}

    # Calibrate: the phases of one ``once`` pass here, now (start-up excluded).
    feed.next_generation(rand)
    once = Timeline()
    proc = start_dagsync("once", *common, env=env, log=log)
    wait_for(lambda: _in_pass(proc.pid, root) or proc.poll() is not None)
    once.observe(proc, root, feed, lambda: False)
    assert proc.wait(timeout=60) == 0, log.read_text()
    assert_recovered(root, feed)

    for turn in range(kills["once"]):
        feed.next_generation(rand)
        proc = start_dagsync("once", *common, env=env, log=log)
        try:
            wait_for(lambda p=proc: _in_pass(p.pid, root) or p.poll() is not None,
                     what="once to start its pass")  # fmt: skip
            phase = _kill_after(proc, once.moment(turn, rand), root, feed)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert_complete_or_none(root, feed)
        result = dagsync("once", *common, env=env)
        assert result.returncode == 0, str(result)
        assert_recovered(root, feed)
        OUTCOMES.append((feed.name, "once", phase, "recovered"))

    run_args = ["run", *common, "--period", "1h", "--http-bind", "", "--log-level", "debug"]
    run = Timeline()
    for turn in range(kills["run"] + 1):
        kill = None if turn == kills["run"] else (run, turn)
        _run_then_kill(run_args, env, tmp_path / f"run-{turn}.log", root, feed, rand, kill)
    print(f"[crash {feed.name}] once pass {once}\n[crash {feed.name}] run pass {run}")


def _run_then_kill(
    args: list[str],
    env: dict[str, str],
    log: Path,
    root: Path,
    feed: Feed,
    rand: random.Random,
    kill: tuple[Timeline, int] | None,
) -> None:
    """Start ``run``; its first pass must recover from the previous kill. Then (unless
    ``kill`` is None: stop there) commit a generation, SIGHUP, and kill the pass at a seeded
    moment of the timeline; an empty timeline is measured first on one un-killed pass."""
    proc = start_dagsync(*args, env=env, log=log)
    try:
        wait_for(lambda: first_pass_done(log) or proc.poll() is not None,
                 timeout=60, what="run's first pass")  # fmt: skip
        assert proc.poll() is None, log.read_text()
        assert_recovered(root, feed)
        if kill is None:
            assert terminate(proc) == 0
            return
        timeline, turn = kill
        if not timeline.windows:
            feed.next_generation(rand)
            passes = passes_done(log)
            proc.send_signal(signal.SIGHUP)
            # Done when the pass logs its end: that line comes after clean-up (the link and
            # an empty staging are seen earlier, while the old revision is being removed).
            timeline.observe(proc, root, feed, lambda: passes_done(log) > passes)
            assert_recovered(root, feed)
        feed.next_generation(rand)
        proc.send_signal(signal.SIGHUP)
        phase = _kill_after(proc, timeline.moment(turn, rand), root, feed)
        assert_complete_or_none(root, feed)
        OUTCOMES.append((feed.name, "run", phase, "recovered"))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _kill_after(proc: subprocess.Popen[str], delay: float, root: Path, feed: Feed) -> str:
    """Freeze and SIGKILL ``proc``'s tree ``delay`` seconds from now; returns the phase."""
    time.sleep(delay)  # the seeded kill moment itself, not a wait for a condition
    if proc.poll() is not None:
        return "after exit"
    seen: list[str] = []
    kill_tree(proc, inspect=lambda pids: seen.append(phase_of(pids, root, feed)))
    return seen[0] if seen else "after exit"


def test_crash_zz_table() -> None:
    """kills x sources x outcomes, printed for docs/reliability.md."""
    if not OUTCOMES:
        pytest.skip("no crash campaign ran in this session")
    counts = Counter(OUTCOMES)
    phases = [*PHASES, "after exit"]
    rows = []
    for source in ("git", "oss", "azure"):
        for mode in ("once", "run"):
            per = {p: counts[(source, mode, p, "recovered")] for p in phases}
            total = sum(1 for o in OUTCOMES if o[:2] == (source, mode))
            if total:
                rows.append([source, mode, total, *per.values(), total])
    table("Crashes: SIGKILL by phase (every one recovered)",
          ["source", "mode", "kills", *phases, "recovered"], rows)  # fmt: skip
