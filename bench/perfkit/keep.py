"""What must keep passing: idle RSS and CPU of ``run``, start-up cost and no SDK at start-up,
the no-change pass in ``run`` against ``git ls-remote``, the trigger-to-visible median."""

from __future__ import annotations

import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from trigger_latency import free_port, http_status, wait_until

from perfkit.git_scenarios import SMALL, GitBench
from perfkit.measure import Run, alternate, run

BENCH = Path(__file__).resolve().parent.parent
# Top-level modules of the SDKs dagsync may use; none may load for ``dagsync version``.
SDK_MODULES = (
    "oss2",
    "azure",
    "crcmod",
    "requests",
    "urllib3",
    "boto3",
    "botocore",
    "google",
    "git",
)
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Daemon:
    idle_rss_mb: float
    idle_cpu_percent: float
    idle_seconds: float
    nochange_pass_s: float
    nochange_passes: int
    ls_remote: list[Run]


def startup(reps: int) -> tuple[dict[str, list[Run]], list[str]]:
    """``dagsync version`` against ``python -c pass``; the SDK modules ``version`` imports."""
    env = dict(os.environ)
    got = alternate(
        reps,
        {
            "dagsync version": lambda _r: run([sys.executable, "-m", "dagsync", "version"], env),
            "python -c pass": lambda _r: run([sys.executable, "-c", "pass"], env),
        },
    )
    trace = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "dagsync", "version"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    names = {line.rsplit("|", 1)[-1].strip() for line in trace.splitlines() if "|" in line}
    return got, sorted(n for n in names if n.split(".")[0] in SDK_MODULES)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _metric(text: str, name: str, result: str) -> float:
    found = re.search(rf'^{name}{{[^}}]*result="{result}"[^}}]*}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def daemon(bench: GitBench, idle_seconds: float, passes: int) -> Daemon:
    """``dagsync run`` (default period) on the 2,000-file repository: its RSS and CPU while
    idle after the first sync, then ``passes`` triggered passes that find nothing new (the
    mean of dagsync_sync_duration_seconds{result="unchanged"}), and as many ``ls-remote``."""
    url = bench.url(SMALL)
    root, port = bench.fresh("run-root"), free_port()
    http = f"http://127.0.0.1:{port}"
    log = open(bench.top / "run.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "dagsync", "run", "--repo", url, "--root", str(root),
         "--http-bind", f"127.0.0.1:{port}", "--log-level", "warning"],
        env=bench.env, stdout=log, stderr=log,
    )  # fmt: skip
    try:
        wait_until(lambda: http_status(http + "/readyz") == 200, 300, "dagsync run ready")
        time.sleep(1.0)
        cpu0, t0 = _cpu_seconds(proc.pid), time.monotonic()
        time.sleep(idle_seconds)
        cpu = (_cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0) * 100
        rss = _rss_mb(proc.pid)

        def metrics() -> str:
            with urllib.request.urlopen(http + "/metrics", timeout=10) as r:
                return r.read().decode()

        name = "dagsync_sync_duration_seconds"
        before_sum, before_n = (
            _metric(metrics(), name + "_sum", "unchanged"),
            _metric(metrics(), name + "_count", "unchanged"),
        )
        ls: list[Run] = []
        for i in range(passes):
            if i % 2:
                ls.append(run(["git", "ls-remote", url], bench.env))
            if http_status(http + "/sync", "POST") != 202:
                raise SystemExit("POST /sync refused")
            wait_until(
                lambda i=i: _metric(metrics(), name + "_count", "unchanged") >= before_n + i + 1,
                60,
                "a no-change pass",
            )
            if not i % 2:
                ls.append(run(["git", "ls-remote", url], bench.env))
        mean = (_metric(metrics(), name + "_sum", "unchanged") - before_sum) / passes
        return Daemon(rss, cpu, idle_seconds, mean, passes, ls)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(root, ignore_errors=True)


def trigger(pushes: int) -> float:
    """Median trigger-to-visible of ``bench/trigger_latency.py`` over git daemon, in ms."""
    out = subprocess.run(
        [sys.executable, str(BENCH / "trigger_latency.py"), "--pushes", str(pushes),
         "--transport", "daemon"],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    found = re.search(r"median (\d+) ms", out)
    if not found:
        raise SystemExit(f"trigger_latency.py printed no median:\n{out}")
    return float(found.group(1))


def median_ms(runs: list[Run]) -> float:
    return statistics.median(r.wall for r in runs) * 1000
