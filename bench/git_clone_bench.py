"""``dagsync once`` beside plain git on the same generated repository, served by ``git daemon``.

Scenarios (``--scenario``), each against its baseline in the same run, alternating which goes
first, in fresh folders:

- ``cold`` (default): ``dagsync once --repo URL --root FRESH`` against
  ``git clone --depth 1 --single-branch URL FRESH``. With ``--subpath dags`` dagsync publishes
  only ``dags/`` (``--subpath-files`` files, ``--subpath-megabytes`` MB of the repository) and
  the server allows filters (``--no-filter`` to refuse them), against the same full clone.
- ``warm``: one file changes per repetition; ``dagsync once`` on its existing root against
  ``git fetch --depth 1 origin main && git checkout FETCH_HEAD`` in an existing clone.

Printed per run and as medians: wall time, CPU time (the command and every descendant it
reaped: git's index-pack, fetch-pack …), bytes received from the server (counted by a loopback
proxy in front of ``git daemon``), and dagsync's own peak RSS (``VmHWM`` of the dagsync
process itself, read at exit; git children are not in it). Then the ratios. Not a test:

    python bench/git_clone_bench.py                                  # 2,000 files, 30 MB
    python bench/git_clone_bench.py --commits 50 --repetitions 5
    python bench/git_clone_bench.py --files 20000 --megabytes 200 --subpath dags \\
        --subpath-files 1000 --subpath-megabytes 10 --repetitions 3
    python bench/git_clone_bench.py --scenario warm
    python bench/git_clone_bench.py --files 100000 --megabytes 100 --repetitions 1
    python bench/git_clone_bench.py --profile                        # cProfile one dagsync run
    python bench/git_clone_bench.py --repo-dir /tmp/dagsync-bench-cache/r100000-*.git \\
        --files 100000 --repetitions 1 --compare-with /tmp/dagsync-e001f19   # before/after

``--compare-with DIR`` adds a third contender: the dagsync package found in ``DIR`` (e.g.
``git archive <older commit> dagsync | tar -x -C DIR``), run with ``DIR`` first on
``PYTHONPATH``, so an optimisation is measured against the code before it in the same run.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

LINE_BYTES = 76
# Runs dagsync and writes its own peak RSS (VmHWM: this process only, reset at exec) at exit.
LAUNCHER = """import atexit, runpy, sys
out = sys.argv.pop(1)
def peak():
    with open("/proc/self/status") as fh:
        kb = next(line.split()[1] for line in fh if line.startswith("VmHWM:"))
    with open(out, "w") as fh:
        fh.write(kb)
atexit.register(peak)
sys.argv[0] = "dagsync"
runpy.run_module("dagsync", run_name="__main__", alter_sys=True)
"""
TARGETS = {"cold": 1.0, "cold-subpath": 0.25, "warm": 1.5}


@dataclass(frozen=True)
class Measure:
    wall: float
    cpu: float
    maxrss_kb: int  # the largest process of the tree (ru_maxrss of the reaped children)
    own_rss_kb: int  # dagsync's own process; 0 for git
    received: int  # bytes from the server


def git_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "DAGSYNC_"))}
    env.update(
        HOME=str(home), GIT_CONFIG_NOSYSTEM="1", GIT_TERMINAL_PROMPT="0",
        GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@invalid",
        GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@invalid",
    )  # fmt: skip
    return env


def _text(rnd: random.Random, nbytes: int, header: str) -> str:
    raw = rnd.randbytes(max(1, nbytes * 3 // 4))
    text = base64.b64encode(raw).decode()
    lines = [text[j : j + LINE_BYTES] for j in range(0, len(text), LINE_BYTES)]
    return header + "\n".join(f"# {line}" for line in lines)


def layout(args: argparse.Namespace) -> list[tuple[str, int]]:
    """(path, bytes) of every file: with --subpath, its files and the rest under data/."""
    total = int(args.megabytes * 1024**2)
    if not args.subpath:
        per = total // args.files
        return [(f"dags/team_{i % 40:02d}/dag_{i:06d}.py", per) for i in range(args.files)]
    inside = int(args.subpath_megabytes * 1024**2)
    n_in, n_out = args.subpath_files, args.files - args.subpath_files
    files = [(f"{args.subpath}/team_{i % 20:02d}/dag_{i:06d}.py", inside // n_in)
             for i in range(n_in)]  # fmt: skip
    files += [(f"data/part_{i % 100:03d}/rows_{i:06d}.py", (total - inside) // max(1, n_out))
              for i in range(n_out)]  # fmt: skip
    return files


def make_repo(path: Path, args: argparse.Namespace, env: dict[str, str]) -> Path:
    """A bare repository: one commit of every file, then ``--commits - 1`` commits that each
    change a few files. Returns a work clone to commit more from."""
    work = path.parent.parent / "work"  # outside the folder git daemon serves
    rnd = random.Random(args.seed)
    files = layout(args)
    for i, (rel, size) in enumerate(files):
        target = work / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(_text(rnd, size, f"# generated file {i}\n"))
    run(["git", "init", "--quiet", "--initial-branch=main", str(work)], env)
    run(["git", "-C", str(work), "add", "--all"], env)
    run(["git", "-C", str(work), "commit", "--quiet", "-m", "c1"], env)
    for c in range(2, args.commits + 1):
        for rel, size in rnd.sample(files, min(10, len(files))):
            (work / rel).write_text(_text(rnd, size, f"# commit {c}\n"))
        run(["git", "-C", str(work), "commit", "--quiet", "-am", f"c{c}"], env)
    run(["git", "clone", "--quiet", "--bare", str(work), str(path)], env)
    run(["git", "-C", str(work), "remote", "add", "origin", str(path)], env)
    return work


def run(argv: list[str], env: dict[str, str]) -> None:
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)


class CountingProxy:
    """A loopback TCP proxy in front of the server that counts the bytes sent to clients."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = upstream_port
        self.received = 0
        self._lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = int(self._sock.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def take(self) -> int:
        with self._lock:
            count, self.received = self.received, 0
        return count

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
                if count:
                    with self._lock:
                        self.received += len(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._sock.close()


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


def measure(
    argv: list[str], env: dict[str, str], proxy: CountingProxy, rss: Path | None
) -> Measure:
    proxy.take()
    started = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} exited {proc.returncode}: {' '.join(argv)}")
    own = int(rss.read_text()) if rss is not None and rss.exists() else 0
    return Measure(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, own, proxy.take())


def _code_env(env: dict[str, str], args: argparse.Namespace, name: str) -> dict[str, str]:
    """The environment of one dagsync contender: the compared one imports from its tree."""
    if name != "dagsync (compared)":
        return env
    return {**env, "PYTHONPATH": str(args.compare_with.resolve())}


def dagsync_argv(rss: Path, profile_to: Path | None) -> list[str]:
    if profile_to is not None:
        return [sys.executable, "-m", "cProfile", "-o", str(profile_to), "-m", "dagsync"]
    return [sys.executable, "-c", LAUNCHER, str(rss)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=["cold", "warm"], default="cold")
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--megabytes", type=float, default=30.0)
    parser.add_argument("--commits", type=int, default=1, help="commits of history")
    parser.add_argument("--subpath", default="", help="dagsync publishes only this folder")
    parser.add_argument("--subpath-files", type=int, default=1000)
    parser.add_argument("--subpath-megabytes", type=float, default=10.0)
    parser.add_argument("--no-filter", action="store_true", help="server refuses filters")
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--profile", action="store_true", help="cProfile one dagsync run")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    parser.add_argument("--repo-dir", type=Path, help="serve this bare repository (cold only)")
    parser.add_argument("--compare-with", type=Path, help="older dagsync source tree to run too")
    args = parser.parse_args()

    top = Path(tempfile.mkdtemp(prefix="dagsync-bench-"))
    env = git_env(top / "home")
    (top / "home").mkdir()
    daemon: subprocess.Popen[bytes] | None = None
    proxy: CountingProxy | None = None
    try:
        served = top / "served"
        served.mkdir()
        t0 = time.monotonic()
        if args.repo_dir:
            (served / "bench.git").symlink_to(args.repo_dir.resolve())
            work = top / "work"
        else:
            work = make_repo(served / "bench.git", args, env)
        filters = "false" if args.no_filter else "true"
        run(["git", "--git-dir", str(served / "bench.git"), "config", "uploadpack.allowFilter",
             filters], env)  # fmt: skip
        size = sum(f.stat().st_size for f in (served / "bench.git").rglob("*") if f.is_file())
        made = (
            f"{args.repo_dir}"
            if args.repo_dir
            else f"{args.files} files, {args.megabytes:g} MB of text, {args.commits} commits"
        )
        print(f"repository: {made}, {size / 1024**2:.1f} MB packed "
              f"(made in {time.monotonic() - t0:.1f} s)"
              + (f"; --subpath {args.subpath}: {args.subpath_files} files, "
                 f"{args.subpath_megabytes:g} MB; filters {'refused' if args.no_filter else 'ok'}"
                 if args.subpath else ""))  # fmt: skip
        daemon, port = start_daemon(served, env)
        proxy = CountingProxy(port)
        url = f"git://127.0.0.1:{proxy.port}/bench.git"
        print(f"served by git daemon (behind a counting proxy) at {url}; git {_git_version()}; "
              f"python {sys.version.split()[0]}; {os.cpu_count()} CPUs; load "
              f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")  # fmt: skip
        if args.scenario == "warm":
            runs = warm(args, top, url, work, env, proxy)
        else:
            runs = cold(args, top, url, env, proxy)
        key = "cold-subpath" if args.subpath and args.scenario == "cold" else args.scenario
        _summary(runs, TARGETS[key])
        if args.profile:
            _print_profile(top / "dagsync.prof")
        return 0
    finally:
        if proxy is not None:
            proxy.close()
        if daemon is not None:
            daemon.terminate()
            daemon.wait()
        if args.keep:
            print(f"kept {top}")
        else:
            shutil.rmtree(top, ignore_errors=True)


def cold(
    args: argparse.Namespace, top: Path, url: str, env: dict[str, str], proxy: CountingProxy
) -> dict[str, list[Measure]]:
    runs: dict[str, list[Measure]] = {"dagsync once": [], "git clone": []}
    if args.compare_with:
        runs["dagsync (compared)"] = []
    extra = ["--subpath", args.subpath] if args.subpath else []
    for rep in range(args.repetitions):
        order = list(runs) if rep % 2 == 0 else list(reversed(runs))
        for name in order:
            dest = top / f"{name.split()[0]}-{rep}"
            rss = top / "rss"
            rss.unlink(missing_ok=True)
            if name == "git clone":
                argv = ["git", "clone", "--quiet", "--depth", "1", "--single-branch", url,
                        str(dest)]  # fmt: skip
                m = measure(argv, env, proxy, None)
            else:
                profile = top / "dagsync.prof" if args.profile and rep == 0 else None
                argv = [*dagsync_argv(rss, profile), "once", "--repo", url, "--root", str(dest),
                        "--log-level", "warning", "--max-files", str(args.files + 1),
                        *extra]  # fmt: skip
                m = measure(argv, _code_env(env, args, name), proxy, rss)
            runs[name].append(m)
            _print_run(rep, name, m)
            shutil.rmtree(dest, ignore_errors=True)
    return runs


def warm(
    args: argparse.Namespace, top: Path, url: str, work: Path, env: dict[str, str],
    proxy: CountingProxy,
) -> dict[str, list[Measure]]:  # fmt: skip
    root, clone = top / "root", top / "clone"
    rss = top / "rss"
    base = ["once", "--repo", url, "--root", str(root), "--log-level", "warning",
            "--max-files", str(args.files + 1)]  # fmt: skip
    measure([*dagsync_argv(rss, None), *base], env, proxy, rss)
    run(["git", "clone", "--quiet", "--depth", "1", "--single-branch", url, str(clone)], env)
    refresh = (f"git -C {clone} fetch --quiet --depth 1 origin main && "
               f"git -C {clone} checkout --quiet FETCH_HEAD")  # fmt: skip
    runs: dict[str, list[Measure]] = {"dagsync once": [], "git fetch+checkout": []}
    rnd = random.Random(args.seed + 1)
    files = [p for p in work.rglob("*.py") if ".git" not in p.parts]
    for rep in range(args.repetitions):
        changed = rnd.choice(files)
        changed.write_text(_text(rnd, changed.stat().st_size, f"# warm {rep}\n"))
        run(["git", "-C", str(work), "commit", "--quiet", "-am", f"warm {rep}"], env)
        run(["git", "-C", str(work), "push", "--quiet", "origin", "main"], env)
        order = list(runs) if rep % 2 == 0 else list(reversed(runs))
        for name in order:
            rss.unlink(missing_ok=True)
            if name == "dagsync once":
                m = measure([*dagsync_argv(rss, None), *base], env, proxy, rss)
            else:
                m = measure(["sh", "-c", refresh], env, proxy, None)
            runs[name].append(m)
            _print_run(rep, name, m)
    return runs


def _print_run(rep: int, name: str, m: Measure) -> None:
    own = f"  own RSS {m.own_rss_kb / 1024:6.1f} MB" if m.own_rss_kb else ""
    print(f"  run {rep + 1}: {name:<18} wall {m.wall:7.3f} s  cpu {m.cpu:6.3f} s  "
          f"received {m.received / 1024**2:7.2f} MB  peak RSS {m.maxrss_kb / 1024:6.1f} MB{own}",
          flush=True)  # fmt: skip


def _median(ms: list[Measure], attr: str) -> float:
    return statistics.median(getattr(m, attr) for m in ms)


def _summary(runs: dict[str, list[Measure]], target: float) -> None:
    (dname, d), (gname, g), *compared = runs.items()
    print(f"median of {len(d)} runs:")
    for name, ms in runs.items():
        own = _median(ms, "own_rss_kb")
        print(f"  {name:<18} wall {_median(ms, 'wall'):7.3f} s  cpu {_median(ms, 'cpu'):6.3f} s  "
              f"received {_median(ms, 'received') / 1024**2:7.2f} MB"
              + (f"  own peak RSS {own / 1024:6.1f} MB" if own else ""))  # fmt: skip
    ratio = _median(d, "wall") / _median(g, "wall")
    received = _median(d, "received") / max(1.0, _median(g, "received"))
    print(
        f"ratio {dname} / {gname} (medians): wall {ratio:.2f}  "
        f"cpu {_median(d, 'cpu') / _median(g, 'cpu'):.2f}  bytes received {received:.2f}"
    )
    best = min(m.wall for m in d) / min(m.wall for m in g)
    print(f"ratio of the fastest runs (least disturbed by other load): wall {best:.2f}")
    for cname, c in compared:
        print(f"ratio {cname} / {gname} (medians): wall "
              f"{_median(c, 'wall') / _median(g, 'wall'):.2f}  "
              f"cpu {_median(c, 'cpu') / _median(g, 'cpu'):.2f}")  # fmt: skip
    verdict = "met" if ratio <= target else "MISSED"
    print(f"target wall ratio <= {target}: {verdict} ({ratio:.2f})")


def _print_profile(path: Path) -> None:
    import pstats

    print("dagsync profile (first run), by cumulative time:")
    pstats.Stats(str(path)).sort_stats("cumulative").print_stats(25)


def _git_version() -> str:
    out = subprocess.run(["git", "--version"], capture_output=True, text=True).stdout
    return out.split()[-1] if out else "?"


if __name__ == "__main__":
    sys.exit(main())
