"""``dagsync once`` beside ``git clone --depth 1 --single-branch`` of the same repository.

A generated repository (default 2,000 files, ~30 MB of random text, which git cannot compress
much) is served by ``git daemon`` on loopback; then, alternating which goes first, each
repetition runs both into a fresh folder:

    dagsync once --repo git://127.0.0.1:PORT/bench.git --root FRESH
    git clone --quiet --depth 1 --single-branch git://127.0.0.1:PORT/bench.git FRESH

and prints wall time, CPU time and peak RSS of each, their medians and the ratios. Not a test:

    /work/venv/bin/python bench/git_clone_bench.py                 # 2000 files, 30 MB, 7 runs
    /work/venv/bin/python bench/git_clone_bench.py --repetitions 9 --profile

What is measured: each command is a child of this script, waited for with ``os.wait4``, so
``ru_utime + ru_stime`` is the CPU of the child *and every descendant it reaped* (git's
``index-pack``, ``fetch-pack`` …), and ``ru_maxrss`` is the peak resident set of the *largest
single process* in that tree (Linux reports the maximum, not the sum). The server side
(``git daemon`` and its ``upload-pack``) is not a descendant, so neither side is charged for it.
Target: median wall time of dagsync ≤ 1.3 × git clone's.
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

TARGET_RATIO = 1.3
LINE_BYTES = 76


@dataclass(frozen=True)
class Measure:
    wall: float
    cpu: float
    maxrss_kb: int


def git_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "DAGSYNC_"))}
    env.update(
        HOME=str(home), GIT_CONFIG_NOSYSTEM="1", GIT_TERMINAL_PROMPT="0",
        GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@invalid",
        GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@invalid",
    )  # fmt: skip
    return env


def make_repo(path: Path, files: int, total_bytes: int, env: dict[str, str], seed: int) -> None:
    """A bare repository with one commit of ``files`` files of random base64 text."""
    work = path.with_suffix(".work")
    rnd = random.Random(seed)
    per_file = total_bytes // files
    for i in range(files):
        raw = rnd.randbytes(per_file * 3 // 4)
        text = base64.b64encode(raw).decode()
        lines = [text[j : j + LINE_BYTES] for j in range(0, len(text), LINE_BYTES)]
        target = work / f"dags/team_{i % 40:02d}/dag_{i:05d}.py"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f"# generated DAG {i}\n" + "\n".join(f"# {line}" for line in lines))
    for args in (
        ["init", "--quiet", "--initial-branch=main", str(work)],
        ["-C", str(work), "add", "--all"],
        ["-C", str(work), "commit", "--quiet", "-m", "bench"],
        ["clone", "--quiet", "--bare", str(work), str(path)],
    ):
        subprocess.run(["git", *args], env=env, check=True)
    shutil.rmtree(work)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_daemon(base: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        ["git", "daemon", "--export-all", "--reuseaddr", f"--base-path={base}",
         "--listen=127.0.0.1", f"--port={port}", str(base)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, port
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise SystemExit("git daemon did not start") from None
            time.sleep(0.02)


def measure(argv: list[str], env: dict[str, str]) -> Measure:
    started = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} exited {proc.returncode}: {' '.join(argv)}")
    return Measure(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss)


def dagsync_argv(profile_to: Path | None) -> list[str]:
    if profile_to is not None:
        return [sys.executable, "-m", "cProfile", "-o", str(profile_to), "-m", "dagsync"]
    return [sys.executable, "-m", "dagsync"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--megabytes", type=float, default=30.0)
    parser.add_argument("--repetitions", type=int, default=7)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--profile", action="store_true", help="cProfile one dagsync run")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    args = parser.parse_args()

    top = Path(tempfile.mkdtemp(prefix="dagsync-bench-"))
    env = git_env(top / "home")
    (top / "home").mkdir()
    served = top / "served"
    served.mkdir()
    daemon: subprocess.Popen[bytes] | None = None
    try:
        t0 = time.monotonic()
        make_repo(served / "bench.git", args.files, int(args.megabytes * 1024**2), env, args.seed)
        size = sum(f.stat().st_size for f in (served / "bench.git").rglob("*") if f.is_file())
        made = time.monotonic() - t0
        print(f"repository: {args.files} files, {args.megabytes:.0f} MB of text, "
              f"{size / 1024**2:.1f} MB packed (made in {made:.1f} s)")  # fmt: skip
        daemon, port = start_daemon(served, env)
        url = f"git://127.0.0.1:{port}/bench.git"
        print(f"served by git daemon at {url}; git {_git_version()}; "
              f"python {sys.version.split()[0]}; {os.cpu_count()} CPUs")  # fmt: skip
        runs: dict[str, list[Measure]] = {"dagsync once": [], "git clone": []}
        for rep in range(args.repetitions):
            order = ["dagsync once", "git clone"]
            if rep % 2:
                order.reverse()
            for name in order:
                dest = top / f"{name.split()[0]}-{rep}"
                if name == "git clone":
                    argv = ["git", "clone", "--quiet", "--depth", "1", "--single-branch",
                            url, str(dest)]  # fmt: skip
                else:
                    profile = top / "dagsync.prof" if args.profile and rep == 0 else None
                    argv = [*dagsync_argv(profile), "once", "--repo", url, "--root", str(dest),
                            "--log-level", "warning"]  # fmt: skip
                m = measure(argv, env)
                runs[name].append(m)
                print(f"  run {rep + 1}: {name:<13} wall {m.wall:6.3f} s  cpu {m.cpu:6.3f} s  "
                      f"peak RSS {m.maxrss_kb / 1024:6.1f} MB")  # fmt: skip
                shutil.rmtree(dest, ignore_errors=True)
        _summary(runs)
        if args.profile:
            _print_profile(top / "dagsync.prof")
        ratio = _median(runs["dagsync once"], "wall") / _median(runs["git clone"], "wall")
        verdict = "met" if ratio <= TARGET_RATIO else "MISSED"
        print(f"target wall ratio <= {TARGET_RATIO}: {verdict} ({ratio:.2f})")
        return 0
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.wait()
        if args.keep:
            print(f"kept {top}")
        else:
            shutil.rmtree(top, ignore_errors=True)


def _median(ms: list[Measure], attr: str) -> float:
    return statistics.median(getattr(m, attr) for m in ms)


def _summary(runs: dict[str, list[Measure]]) -> None:
    print("median of", len(runs["git clone"]), "runs:")
    for name, ms in runs.items():
        print(f"  {name:<13} wall {_median(ms, 'wall'):6.3f} s  cpu {_median(ms, 'cpu'):6.3f} s  "
              f"peak RSS {_median(ms, 'maxrss_kb') / 1024:6.1f} MB")  # fmt: skip
    d, g = runs["dagsync once"], runs["git clone"]
    print(f"ratio dagsync / git clone (medians): wall {_median(d, 'wall') / _median(g, 'wall'):.2f}"
          f"  cpu {_median(d, 'cpu') / _median(g, 'cpu'):.2f}"
          f"  peak RSS {_median(d, 'maxrss_kb') / _median(g, 'maxrss_kb'):.2f}")  # fmt: skip
    best = min(m.wall for m in d) / min(m.wall for m in g)
    print(f"ratio of the fastest runs (least disturbed by other load): wall {best:.2f}")


def _print_profile(path: Path) -> None:
    import pstats

    print("dagsync profile (first run), by cumulative time:")
    pstats.Stats(str(path)).sort_stats("cumulative").print_stats(25)


def _git_version() -> str:
    out = subprocess.run(["git", "--version"], capture_output=True, text=True).stdout
    return out.split()[-1] if out else "?"


if __name__ == "__main__":
    sys.exit(main())
