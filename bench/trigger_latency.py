"""How long from ``POST /sync`` until the new revision is visible under the link.

A small repository on loopback (``file://`` or ``git daemon``), ``dagsync run`` with a long
period so only the trigger starts syncs; N times: commit and push (not timed), then time
``POST /sync`` -> ``basename(readlink(ROOT/current)) == new SHA``. Prints min / median / p95 /
max. Not a test: run it by hand, e.g.

    /work/venv/bin/python bench/trigger_latency.py --pushes 20 --transport file
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

TARGET_SECONDS = 1.0
READY_TIMEOUT_SECONDS = 30.0
VISIBLE_TIMEOUT_SECONDS = 30.0
POLL_SECONDS = 0.001


def git(*args: str, cwd: Path | None = None, env: dict[str, str]) -> str:
    proc = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"git {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def hermetic_env(home: Path) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    (home / ".gitconfig").write_text(
        "[user]\n\tname = bench\n\temail = bench@dagsync.invalid\n"
        "[init]\n\tdefaultBranch = main\n[gc]\n\tauto = 0\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "DAGSYNC_"))}
    env.update(HOME=str(home), GIT_CONFIG_NOSYSTEM="1", GIT_TERMINAL_PROMPT="0")
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.01)


def http_status(url: str, method: str = "GET") -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def make_repo(base: Path, env: dict[str, str], files: int) -> tuple[Path, Path]:
    bare, work = base / "srv" / "dags.git", base / "work"
    git("init", "--quiet", "--bare", "--initial-branch=main", str(bare), env=env)
    git("config", "uploadpack.allowAnySHA1InWant", "true", cwd=bare, env=env)
    git("init", "--quiet", "--initial-branch=main", str(work), env=env)
    for i in range(files):
        path = work / "dags" / f"dag_{i:03d}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# dag {i}\nDAG_ID = 'dag_{i}'\n")
    git("add", "--all", cwd=work, env=env)
    git("commit", "--quiet", "-m", "initial", cwd=work, env=env)
    git("push", "--quiet", str(bare), "main", cwd=work, env=env)
    return bare, work


def start_git_daemon(base: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            "git",
            "daemon",
            "--export-all",
            "--reuseaddr",
            f"--base-path={base / 'srv'}",
            "--listen=127.0.0.1",
            f"--port={port}",
            str(base / "srv"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def accepting() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    wait_until(accepting, READY_TIMEOUT_SECONDS, "git daemon")
    return proc, f"git://127.0.0.1:{port}/dags.git"


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (p95 of 20 samples is the 19th smallest)."""
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))
    return ordered[index]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pushes", type=int, default=20)
    parser.add_argument("--files", type=int, default=50, help="DAG files in the repository")
    parser.add_argument("--transport", choices=("file", "daemon"), default="file")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="dagsync-bench-"))
    env = hermetic_env(base / "home")
    children: list[subprocess.Popen[bytes]] = []
    try:
        bare, work = make_repo(base, env, args.files)
        url = bare.as_uri()
        if args.transport == "daemon":
            daemon, url = start_git_daemon(base, env)
            children.append(daemon)
        root, port = base / "root", free_port()
        http = f"http://127.0.0.1:{port}"
        with open(base / "dagsync.log", "wb") as log:
            dagsync = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "dagsync",
                    "run",
                    "--repo",
                    url,
                    "--root",
                    str(root),
                    "--period",
                    "1h",
                    "--http-bind",
                    f"127.0.0.1:{port}",
                    "--log-level",
                    "warning",
                ],
                env=env,
                stdout=log,
                stderr=log,
            )
        children.append(dagsync)
        wait_until(lambda: http_status(http + "/readyz") == 200, READY_TIMEOUT_SECONDS, "ready")

        latencies: list[float] = []
        for n in range(args.pushes):
            (work / "dags" / f"dag_{n % args.files:03d}.py").write_text(f"# change {n}\n")
            git("commit", "--quiet", "-am", f"change {n}", cwd=work, env=env)
            git("push", "--quiet", str(bare), "main", cwd=work, env=env)
            sha = git("rev-parse", "HEAD", cwd=work, env=env)
            t0 = time.perf_counter()
            status = http_status(http + "/sync", "POST")
            if status != 202:
                raise SystemExit(f"POST /sync answered {status}")
            deadline = time.monotonic() + VISIBLE_TIMEOUT_SECONDS
            while True:
                try:
                    if os.path.basename(os.readlink(root / "current")) == sha:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"push {n} not visible after {VISIBLE_TIMEOUT_SECONDS}s")
                time.sleep(POLL_SECONDS)
            latencies.append(time.perf_counter() - t0)

        ms = [v * 1000 for v in latencies]
        print(
            f"trigger -> visible, {len(ms)} pushes, transport={args.transport}, "
            f"{args.files} files: min {min(ms):.0f} ms, median {statistics.median(ms):.0f} ms, "
            f"p95 {percentile(ms, 0.95):.0f} ms, max {max(ms):.0f} ms"
        )
        met = percentile(latencies, 0.95) < TARGET_SECONDS
        print(f"target p95 < {TARGET_SECONDS:g} s: {'met' if met else 'NOT met'}")
        return 0 if met else 1
    finally:
        for child in reversed(children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
                try:
                    child.wait(10)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
