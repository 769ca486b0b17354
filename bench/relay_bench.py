"""Relay benchmark on loopback (not a test): workers fetching a revision from ``dagsync run
--serve-revisions``, and the relay under many slow downloads.

    .venv/bin/python bench/relay_bench.py                       # 2,000 files / 30 MB
    .venv/bin/python bench/relay_bench.py --workers 20 --slow-clients 200 --slow-seconds 5
    .venv/bin/python bench/relay_bench.py --dir /dev/shm       # the same without the disk

1. baselines in the same run: ``dagsync version`` (interpreter and import start-up) and ``dagsync
   once --source local`` of the same tree into a fresh root (the disk's cost of writing it);
2. one cold ``dagsync once --source relay`` (a fresh root), ``--repeat`` times: wall time
   including process start (target <= 1 s);
3. ``--workers`` cold workers started at once: p50/p95/max wall (target p95 <= 3 s on 2 cores)
   and the relay's RSS and threads, ``--rounds`` times, each round after as many
   ``curl | tar -x`` of the same archive at once (a hand-made relay's workers: the floor the
   machine's CPUs and disk put under a worker, with no checks and no atomic publish);
4. ``--slow-clients`` archive downloads at once, each reading ~``--slow-rate`` bytes/s for
   ``--slow-seconds`` and then the rest at full speed (from a separate process): the relay's
   threads and RSS over time, the number of 503s (clients retry after Retry-After), and the
   latency of ``/healthz`` probed every 100 ms meanwhile.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
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
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DAGSYNC = [sys.executable, "-m", "dagsync"]


def make_tree(root: Path, files: int, total_bytes: int, seed: int) -> None:
    """``files`` Python-looking files in folders of 50, ``total_bytes`` in all."""
    rng = random.Random(seed)
    size = total_bytes // files
    words = [f"name_{i}" for i in range(500)]
    for i in range(files):
        path = root / f"dags/team{i // 50:03d}/dag_{i:05d}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        text = " ".join(rng.choice(words) for _ in range(size // 8))
        path.write_text(f"# dag {i}\n" + text[: size - 12] + "\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_status(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "Threads"):
                out[key] = int(value.split()[0])
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a running process (its threads included)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def get(port: int, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def measured(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall, CPU seconds) of one child process, start-up included."""
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    took = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{err.decode(errors='replace')}")
    return took, usage.ru_utime + usage.ru_stime


def timed(argv: list[str], env: dict[str, str]) -> float:
    return measured(argv, env)[0]


def disk_floor(src: Path, dest: Path) -> float:
    """Writing the same files with plain open/write in this process: what the disk costs."""
    files = [p for p in src.rglob("*") if p.is_file()]
    t0 = time.monotonic()
    for path in files:
        target = dest / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    return time.monotonic() - t0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# -- slow clients, in their own process ---------------------------------------------------------
def slow_client(port: int, path: str, rate: int, slow_seconds: float, out: dict[str, Any]) -> None:
    busy = 0
    while True:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.settimeout(120)
        try:
            sock.connect(("127.0.0.1", port))
            sock.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
            head = sock.recv(12)
            if head.startswith(b"HTTP/1.0 503"):
                busy += 1
                sock.close()
                time.sleep(1.0 + random.random())
                continue
            if not head.startswith(b"HTTP/1.0 200"):
                out["error"] = head.decode(errors="replace")
                return
            total = len(head)
            slow_until = time.monotonic() + slow_seconds
            while time.monotonic() < slow_until:
                chunk = sock.recv(rate // 10)
                if not chunk:
                    break
                total += len(chunk)
                time.sleep(0.1)
            while chunk := sock.recv(1 << 20):
                total += len(chunk)
            out.update(bytes=total, busy=busy)
            return
        except OSError as exc:
            busy += 1  # refused by the connection bound: also a retry
            out["last_error"] = str(exc)
            time.sleep(1.0 + random.random())
        finally:
            sock.close()


def slow_clients_main(
    port: int, path: str, count: int, rate: int, slow_seconds: float, queue: Any
) -> None:
    results: list[dict[str, Any]] = [{} for _ in range(count)]
    threads = [
        threading.Thread(target=slow_client, args=(port, path, rate, slow_seconds, results[i]))
        for i in range(count)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    queue.put(results)


# -- the phases -----------------------------------------------------------------------------------
def at_once(commands: list[list[str]], env: dict[str, str] | None, what: str) -> list[float]:
    """Start every command at once; the wall time of each, from its own start to its exit."""
    procs = [
        (time.monotonic(), subprocess.Popen(argv, env=env, stderr=subprocess.PIPE))
        for argv in commands
    ]
    walls = []
    for t0, proc in procs:
        _, err = proc.communicate()
        walls.append(time.monotonic() - t0)
        if proc.returncode != 0:
            raise SystemExit(f"{what} failed: {err.decode(errors='replace')}")
    return walls


def cold_workers(n: int, url: str, tmp: Path, env: dict[str, str], tag: str) -> list[float]:
    base = [*DAGSYNC, "once", "--source", "relay", "--relay-url", url, "--root"]
    return at_once([[*base, str(tmp / f"{tag}-{i}")] for i in range(n)], env, "worker")


def tar_workers(n: int, url: str, revision: str, tmp: Path, tag: str) -> list[float]:
    """What a hand-made relay's workers do: ``curl URL/archive.tar | tar -x``, ``n`` at once
    (no checks, no atomic publish): the floor this machine and its disk put under a worker."""
    archive = f"{url}/v1/revisions/{revision}/archive.tar"
    scripts = []
    for i in range(n):
        dest = tmp / f"{tag}-{i}"
        dest.mkdir()
        script = f"curl -sf '{archive}' | tar --no-same-owner -xf - -C '{dest}'"
        scripts.append(["sh", "-c", script])
    return at_once(scripts, None, "curl | tar")


def sample_relay(pid: int, stop: threading.Event, samples: list[dict[str, int]]) -> None:
    while not stop.wait(0.05):
        try:
            samples.append(proc_status(pid))
        except OSError:
            return


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--megabytes", type=float, default=30.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=20)
    ap.add_argument(
        "--rounds", type=int, default=3, help="rounds of --workers at once (and of curl | tar)"
    )
    ap.add_argument("--slow-clients", type=int, default=200)
    ap.add_argument("--slow-seconds", type=float, default=5.0)
    ap.add_argument("--slow-rate", type=int, default=64 * 1024, help="bytes/s while slow")
    ap.add_argument(
        "--dir",
        default=None,
        help="where the trees are written (default: the system temp dir; /dev/shm takes the "
        "disk's per-file cost out of the figures)",
    )
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "bench"))
    from perfkit.bytecode import compile_dagsync

    print(compile_dagsync())
    tmp = Path(tempfile.mkdtemp(prefix="relay-bench-", dir=args.dir))
    print(f"trees under {tmp}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSYNC_")}
    env["PYTHONPATH"] = str(REPO)
    relay = None
    try:
        make_tree(tmp / "src", args.files, int(args.megabytes * 1e6), seed=1)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        relay = subprocess.Popen(
            [*DAGSYNC, "run", "--local-path", str(tmp / "src"), "--root", str(tmp / "relay")]
            + ["--serve-revisions", "--http-bind", f"127.0.0.1:{port}", "--period", "1h"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(tmp / "relay.log", "wb"),  # noqa: SIM115 - lives as long as the relay
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                if get(port, "/readyz")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or relay.poll() is not None:
                raise SystemExit((tmp / "relay.log").read_text())
            time.sleep(0.05)
        status, body = get(port, "/v1/revisions")
        revision = __import__("json").loads(body)["current"]
        get(port, f"/v1/revisions/{revision}/manifest")
        print(f"revision {revision}: {args.files} files, {args.megabytes:.0f} MB")

        start_up = min(timed([*DAGSYNC, "version"], env) for _ in range(args.repeat))
        floor = min(disk_floor(tmp / "src", tmp / f"floor{i}") for i in range(args.repeat))
        local = [
            measured(
                [*DAGSYNC, "once", "--local-path", str(tmp / "src"), "--root", str(tmp / f"l{i}")],
                env,
            )
            for i in range(args.repeat)
        ]
        cold = [
            measured(
                [*DAGSYNC, "once", "--source", "relay", "--relay-url", url]
                + ["--root", str(tmp / f"c{i}")],
                env,
            )
            for i in range(args.repeat)
        ]
        print(f"baseline  dagsync version (start-up)        {start_up:6.3f} s")
        print(f"baseline  plain write of the files (disk)   {floor:6.3f} s")
        for name, runs in (
            ("baseline  once --source local (same tree) ", local),
            ("cold      once --source relay             ", cold),
        ):
            walls = [w for w, _ in runs]
            cpus = [c for _, c in runs]
            print(
                f"{name} min {min(walls):6.3f} s  median {statistics.median(walls):6.3f} s  "
                f"CPU median {statistics.median(cpus):5.2f} s"
            )
        best_local = min(w for w, _ in local)
        print(
            f"          ratio cold relay / local (min wall) "
            f"{min(w for w, _ in cold) / best_local:.2f}"
        )

        fleet_phase(relay.pid, url, revision, tmp, env, args)

        slow_phase(relay.pid, port, revision, args)
    finally:
        if relay is not None:
            relay.terminate()
            relay.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)


def fleet_phase(
    pid: int, url: str, revision: str, tmp: Path, env: dict[str, str], args: argparse.Namespace
) -> None:
    """``--workers`` cold dagsync workers at once, ``--rounds`` times, alternating with as many
    ``curl | tar -x`` (a hand-made relay's workers) when curl and tar are installed."""
    baseline = shutil.which("curl") is not None and shutil.which("tar") is not None
    samples: list[dict[str, int]] = []
    stop = threading.Event()
    sampler = threading.Thread(target=sample_relay, args=(pid, stop, samples))
    sampler.start()
    ours: list[float] = []  # p95 of each round
    theirs: list[float] = []
    relay_cpu = 0.0
    for round_ in range(args.rounds):
        if baseline:
            walls = tar_workers(args.workers, url, revision, tmp, f"t{round_}")
            theirs.append(pct(walls, 0.95))
            print(
                f"{args.workers} x curl | tar -x at once      p50 {pct(walls, 0.5):6.3f} s  "
                f"p95 {pct(walls, 0.95):6.3f} s  max {max(walls):6.3f} s  (round {round_ + 1})"
            )
        before = cpu_seconds(pid)
        walls = cold_workers(args.workers, url, tmp, env, f"w{round_}")
        relay_cpu += cpu_seconds(pid) - before
        ours.append(pct(walls, 0.95))
        print(
            f"{args.workers} dagsync workers at once      p50 {pct(walls, 0.5):6.3f} s  "
            f"p95 {pct(walls, 0.95):6.3f} s  max {max(walls):6.3f} s  (round {round_ + 1})"
        )
        for i in range(args.workers):
            shutil.rmtree(tmp / f"w{round_}-{i}", ignore_errors=True)
            shutil.rmtree(tmp / f"t{round_}-{i}", ignore_errors=True)
    stop.set()
    sampler.join()
    summary = f"p95 median of {args.rounds} rounds: dagsync {statistics.median(ours):.3f} s"
    if theirs:
        summary += (
            f", curl | tar {statistics.median(theirs):.3f} s, ratio "
            f"{statistics.median(ours) / statistics.median(theirs):.2f}"
        )
    print(f"          {summary} (target: dagsync p95 <= 3 s)")
    print(
        f"          relay RSS max {max(s['VmRSS'] for s in samples) / 1024:.1f} MB, "
        f"threads max {max(s['Threads'] for s in samples)}, CPU "
        f"{relay_cpu / args.rounds:.2f} s per round "
        f"({relay_cpu / args.rounds / args.workers * 1000:.0f} ms per dagsync worker)"
    )


def slow_phase(pid: int, port: int, revision: str, args: argparse.Namespace) -> None:
    queue: Any = multiprocessing.Queue()
    clients = multiprocessing.Process(
        target=slow_clients_main,
        args=(
            port,
            f"/v1/revisions/{revision}/archive.tar",
            args.slow_clients,
            args.slow_rate,
            args.slow_seconds,
            queue,
        ),
    )
    idle = []
    for _ in range(20):
        t = time.monotonic()
        get(port, "/healthz")
        idle.append(time.monotonic() - t)
        time.sleep(0.05)
    print(
        f"          /healthz idle: p50 {pct(idle, 0.5) * 1000:.1f} ms, "
        f"max {max(idle) * 1000:.1f} ms"
    )
    before = proc_status(pid)
    t0 = time.monotonic()
    clients.start()
    probes: list[float] = []
    failed_probes = 0
    status: list[dict[str, int]] = []
    results = None
    while results is None:
        t = time.monotonic()
        try:
            code, _ = get(port, "/healthz", timeout=10)
            if code != 200:
                failed_probes += 1
            probes.append(time.monotonic() - t)
        except OSError:
            failed_probes += 1
        status.append(proc_status(pid))
        try:
            results = queue.get(timeout=max(0.0, 0.1 - (time.monotonic() - t)))
        except Exception:
            results = None
    clients.join()
    took = time.monotonic() - t0
    print(f"          load average now {os.getloadavg()[0]:.1f}")
    done = [r for r in results if "bytes" in r]
    busy = sum(r.get("busy", 0) for r in results)
    print(
        f"{args.slow_clients} slow archive downloads  all done in {took:.1f} s: "
        f"{len(done)} complete, {busy} answered 503/refused and retried, "
        f"errors {[r.get('error') for r in results if 'error' in r][:3]}"
    )
    threads = max(s["Threads"] for s in status)
    rss = max(s["VmRSS"] for s in status) / 1024
    print(
        f"          relay threads before {before['Threads']}, max {threads}; "
        f"RSS before {before['VmRSS'] / 1024:.1f} MB, max {rss:.1f} MB"
    )
    print(
        f"          /healthz during: {len(probes)} probes, p50 {pct(probes, 0.5) * 1000:.1f} ms, "
        f"p95 {pct(probes, 0.95) * 1000:.1f} ms, max {max(probes) * 1000:.1f} ms, "
        f"failed {failed_probes}"
    )


if __name__ == "__main__":
    main()
