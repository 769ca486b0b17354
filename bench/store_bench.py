"""Object-store sync benchmark against the protocol fakes on loopback (not a test).

    /work/venv/bin/python bench/store_bench.py --cloud oss     # or azure, s3, gcs, azureblob, all
    /work/venv/bin/python bench/store_bench.py --files 2000 --concurrency 8 --sequential-files 500

For each cloud: the fake server runs in its own process with an injected per-request latency
(default 20 ms, an in-region round trip), holding ``--files`` objects of ``--size`` bytes. Then:

1. a plain sequential download loop with the same SDK (list, then one GET per object), the
   baseline;
2. ``dagsync once`` (a fresh root) at each ``--concurrency``;
3. an incremental ``dagsync once`` after ``--changed`` objects changed, on the root of the
   default concurrency: the requests it made, by kind (target: exactly ``--changed`` GETs and
   otherwise only listing requests).

``--repeat N`` runs the baseline and each dagsync run N times and reports the fastest (on a
shared machine, others' load only adds time; every run's wall time is printed too).

Every measured run is a child process, so wall time, CPU seconds (user + system) and peak RSS
are that process's own (``os.wait4``), and the fake server's CPU is not counted.

Clouds are "drivers" in ``DRIVERS``: a :class:`CloudDriver` subclass decorated with
``@driver`` (see :class:`OssDriver`). The fake runs behind :class:`ServerProcess`, which calls
named handlers in the child over a pipe. s3, gcs and azureblob run real emulators (moto,
gcp-storage-emulator, Azurite) behind tests/fakes/counting_proxy, which adds the latency and
counts the requests: see bench/cloud_drivers.py.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import multiprocessing.connection
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.cloud_drivers import EMULATORS, EmulatorSpec  # noqa: E402 - after the path fix

DEFAULT_CONCURRENCY = 8
Handlers = dict[str, Callable[..., Any]]


# -- the fake server in its own process --------------------------------------------------------


def _serve(
    conn: multiprocessing.connection.Connection,
    factory: Callable[..., tuple[Handlers, Callable[[], None]]],
    args: tuple[Any, ...],
) -> None:
    handlers, cleanup = factory(*args)
    handlers["cpu_seconds"] = lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
    try:
        while True:
            name, call_args = conn.recv()
            if name == "stop":
                conn.send(None)
                return
            try:
                conn.send(("ok", handlers[name](*call_args)))
            except Exception as exc:  # report, keep serving
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        cleanup()


class ServerProcess:
    """Runs ``factory(*args) -> (handlers, cleanup)`` in a child; ``call(name, ...)`` runs a
    handler there. The child's CPU never mixes with the measured processes'."""

    def __init__(
        self, factory: Callable[..., tuple[Handlers, Callable[[], None]]], *args: Any
    ) -> None:
        context = multiprocessing.get_context("fork")
        self._conn, child = context.Pipe()
        self._proc = context.Process(target=_serve, args=(child, factory, args), daemon=True)
        self._proc.start()

    def call(self, name: str, *args: Any) -> Any:
        self._conn.send((name, args))
        status, value = self._conn.recv()
        if status != "ok":
            raise RuntimeError(f"fake server: {name}: {value}")
        return value

    def stop(self) -> None:
        if self._proc.is_alive():
            self._conn.send(("stop", ()))
            self._conn.recv()
        self._proc.join(timeout=10)


# -- drivers -----------------------------------------------------------------------------------


class CloudDriver(ABC):
    """One cloud: its fake (in a ServerProcess), how dagsync and a plain SDK loop reach it."""

    name: ClassVar[str]
    #: request kinds that only list (anything else in an incremental sync is a failure)
    listing_kinds: ClassVar[frozenset[str]] = frozenset({"list"})
    #: the request kind of a content download
    download_kind: ClassVar[str] = "get"

    @abstractmethod
    def start(self, latency: float) -> None:
        """Start the fake with ``latency`` seconds added to every request."""

    @abstractmethod
    def stop(self) -> None: ...

    @abstractmethod
    def populate(self, count: int, size: int, seed: int) -> list[str]:
        """Store ``count`` objects of ``size`` bytes; returns their published paths."""

    @abstractmethod
    def modify(self, paths: Sequence[str], seed: int) -> None:
        """Give these objects new content of the same size."""

    @abstractmethod
    def counts(self) -> Counter[str]:
        """Requests received since the last clear, by kind."""

    @abstractmethod
    def clear(self) -> None: ...

    @abstractmethod
    def server_cpu_seconds(self) -> float: ...

    @abstractmethod
    def dagsync_args(self) -> list[str]:
        """``dagsync once`` options naming the store (no secrets)."""

    @abstractmethod
    def dagsync_env(self) -> dict[str, str]:
        """Credentials for dagsync and the sequential loop."""

    @abstractmethod
    def sequential_argv(self, dest: Path, limit: int) -> list[str]:
        """A process that downloads the first ``limit`` objects into ``dest``, one at a time,
        with the same SDK and no dagsync code."""


DRIVERS: dict[str, type[CloudDriver]] = {}


def driver(cls: type[CloudDriver]) -> type[CloudDriver]:
    DRIVERS[cls.name] = cls
    return cls


OSS_KEY_ID = "LTAI5tBenchKeyId"
OSS_SECRET = "BenchSecret-0123456789"
OSS_BUCKET = "bench-dags"
OSS_PREFIX = "dags/"


def _oss_fake(latency: float) -> tuple[Handlers, Callable[[], None]]:
    from tests.fakes.oss_server import FakeOss

    fake = FakeOss(access_key_id=OSS_KEY_ID, access_key_secret=OSS_SECRET).start()
    fake.create_bucket(OSS_BUCKET)

    def populate(count: int, size: int, seed: int) -> list[str]:
        rand = random.Random(seed)
        paths = [f"d{i // 100:03d}/f{i:05d}.py" for i in range(count)]
        for path in paths:
            fake.put(OSS_BUCKET, OSS_PREFIX + path, rand.randbytes(size))
        fake.latency = latency  # seeding is not part of any measurement
        return paths

    def modify(paths: list[str], seed: int) -> None:
        rand = random.Random(seed)
        for path in paths:
            size = len(fake.get(OSS_BUCKET, OSS_PREFIX + path).data)
            fake.put(OSS_BUCKET, OSS_PREFIX + path, rand.randbytes(size))

    handlers: Handlers = {
        "endpoint": lambda: fake.endpoint,
        "populate": populate,
        "modify": modify,
        "counts": lambda: Counter(r.kind for r in fake.requests),
        "clear": fake.clear_requests,
    }
    return handlers, fake.stop


class FakeServerDriver(CloudDriver):
    """A cloud whose fake runs in a :class:`ServerProcess` answering the same calls."""

    server: ServerProcess

    def stop(self) -> None:
        self.server.stop()

    def populate(self, count: int, size: int, seed: int) -> list[str]:
        paths: list[str] = self.server.call("populate", count, size, seed)
        return paths

    def modify(self, paths: Sequence[str], seed: int) -> None:
        self.server.call("modify", list(paths), seed)

    def counts(self) -> Counter[str]:
        counts: Counter[str] = self.server.call("counts")
        return counts

    def clear(self) -> None:
        self.server.call("clear")

    def server_cpu_seconds(self) -> float:
        return float(self.server.call("cpu_seconds"))


@driver
class OssDriver(FakeServerDriver):
    """Alibaba Cloud OSS: tests/fakes/oss_server.FakeOss, the oss2 SDK."""

    name = "oss"

    def start(self, latency: float) -> None:
        self.server = ServerProcess(_oss_fake, latency)
        self.endpoint: str = self.server.call("endpoint")

    def dagsync_args(self) -> list[str]:
        return ["--oss-endpoint", self.endpoint, "--oss-bucket", OSS_BUCKET] + [
            "--oss-prefix",
            OSS_PREFIX,
        ]

    def dagsync_env(self) -> dict[str, str]:
        return {"OSS_ACCESS_KEY_ID": OSS_KEY_ID, "OSS_ACCESS_KEY_SECRET": OSS_SECRET}

    def sequential_argv(self, dest: Path, limit: int) -> list[str]:
        return [sys.executable, __file__, "_oss_sequential", self.endpoint, str(dest), str(limit)]


def oss_sequential_main(endpoint: str, dest: str, limit: str) -> None:
    """The baseline: oss2's own iterator and get_object_to_file (which checks the CRC)."""
    import oss2

    bucket = oss2.Bucket(
        oss2.Auth(os.environ["OSS_ACCESS_KEY_ID"], os.environ["OSS_ACCESS_KEY_SECRET"]),
        endpoint,
        OSS_BUCKET,
    )
    listing = oss2.ObjectIteratorV2(bucket, prefix=OSS_PREFIX, max_keys=1000)
    for info in itertools.islice(listing, int(limit)):
        path = Path(dest, info.key[len(OSS_PREFIX) :])
        path.parent.mkdir(parents=True, exist_ok=True)
        bucket.get_object_to_file(info.key, str(path))


AZURE_SHARE = "bench-dags"
AZURE_PATH = "dags"


def _azure_fake(latency: float) -> tuple[Handlers, Callable[[], None]]:
    from tests.fakes.azure_server import FakeAzureFiles

    fake = FakeAzureFiles()
    fake.start()
    fake.create_share(AZURE_SHARE)

    def populate(count: int, size: int, seed: int) -> list[str]:
        rand = random.Random(seed)
        paths = [f"d{i // 100:03d}/f{i:05d}.py" for i in range(count)]
        for path in paths:
            fake.put(AZURE_SHARE, f"{AZURE_PATH}/{path}", rand.randbytes(size))
        fake.latency = latency  # seeding is not part of any measurement
        return paths

    def modify(paths: list[str], seed: int) -> None:
        rand = random.Random(seed)
        for path in paths:
            size = fake.stat(AZURE_SHARE, f"{AZURE_PATH}/{path}").size
            fake.put(AZURE_SHARE, f"{AZURE_PATH}/{path}", rand.randbytes(size))

    handlers: Handlers = {
        "connection_string": lambda: fake.connection_string,
        "populate": populate,
        "modify": modify,
        "counts": lambda: Counter(r.kind for r in fake.requests),
        "clear": fake.clear_requests,
    }
    return handlers, fake.close


@driver
class AzureDriver(FakeServerDriver):
    """Azure Files: tests/fakes/azure_server.FakeAzureFiles, azure-storage-file-share. Listing
    is one request per directory page, a 10 KB file one GET."""

    name = "azure"

    def start(self, latency: float) -> None:
        self.server = ServerProcess(_azure_fake, latency)
        self.connection_string: str = self.server.call("connection_string")

    def dagsync_args(self) -> list[str]:
        return ["--source", "azure", "--azure-share", AZURE_SHARE, "--azure-path", AZURE_PATH]

    def dagsync_env(self) -> dict[str, str]:
        return {"AZURE_STORAGE_CONNECTION_STRING": self.connection_string}

    def sequential_argv(self, dest: Path, limit: int) -> list[str]:
        return [sys.executable, __file__, "_azure_sequential", str(dest), str(limit)]


def azure_sequential_main(dest: str, limit: str) -> None:
    """The baseline: walk the directory tree one listing at a time, then download_file() each
    file in turn (the SDK's defaults, as a script would)."""
    from azure.storage.fileshare import ShareClient

    share = ShareClient.from_connection_string(
        os.environ["AZURE_STORAGE_CONNECTION_STRING"], AZURE_SHARE
    )
    done = 0
    folders = [AZURE_PATH]
    while folders and done < int(limit):
        folder = folders.pop(0)
        for item in share.get_directory_client(folder).list_directories_and_files():
            if item["is_directory"]:
                folders.append(f"{folder}/{item.name}")
                continue
            if done >= int(limit):
                break
            path = Path(dest, folder, item.name)
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as fh:
                share.get_file_client(f"{folder}/{item.name}").download_file().readinto(fh)
            done += 1


HIDDEN_COMMANDS: dict[str, Callable[..., None]] = {
    "_oss_sequential": oss_sequential_main,
    "_azure_sequential": azure_sequential_main,
}


class EmulatorDriver(FakeServerDriver):
    """A cloud of bench/cloud_drivers.py: an emulator behind the counting proxy."""

    spec: ClassVar[EmulatorSpec]

    def start(self, latency: float) -> None:
        self.server = ServerProcess(self.spec.factory, latency)
        self.info: dict[str, str] = self.server.call("info")

    def dagsync_args(self) -> list[str]:
        return self.spec.dagsync_args(self.info)

    def dagsync_env(self) -> dict[str, str]:
        return self.spec.dagsync_env(self.info)

    def sequential_argv(self, dest: Path, limit: int) -> list[str]:
        command = f"_{self.name}_sequential"
        return [sys.executable, __file__, command, json.dumps(self.info), str(dest), str(limit)]


for _spec in EMULATORS:
    DRIVERS[_spec.name] = type(
        f"{_spec.name.capitalize()}Driver",
        (EmulatorDriver,),
        {"name": _spec.name, "spec": _spec, "listing_kinds": _spec.listing_kinds},
    )
    HIDDEN_COMMANDS[f"_{_spec.name}_sequential"] = _spec.sequential


# -- measuring ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    label: str
    wall: float
    cpu: float
    rss_mib: float
    requests: Counter[str]
    files: int
    walls: tuple[float, ...] = ()  # every run's wall time when repeated

    @property
    def files_per_second(self) -> float:
        return self.files / self.wall if self.wall else 0.0


def measure(
    label: str, argv: list[str], env: dict[str, str], cloud: CloudDriver, files: int
) -> Measured:
    """Run ``argv`` as a child; its own wall time, CPU and peak RSS, and the requests it made."""
    cloud.clear()
    with tempfile.TemporaryFile() as output:
        started = time.monotonic()
        proc = subprocess.Popen(argv, env=env, stdout=output, stderr=output, cwd=REPO)
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            output.seek(0)
            sys.exit(f"{label} failed ({proc.returncode}):\n{output.read().decode()[-3000:]}")
    return Measured(
        label,
        wall,
        usage.ru_utime + usage.ru_stime,
        usage.ru_maxrss / 1024,  # KiB on Linux
        cloud.counts(),
        files,
    )


def child_env(cloud: CloudDriver) -> dict[str, str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(
            (
                "DAGSYNC_",
                "GITSYNC_",
                "GIT_SYNC_",
                "OSS_",
                "AZURE_",
                "AWS_",
                "GOOGLE_",
                "STORAGE_EMULATOR_HOST",
            )
        )
    }
    return {**base, **cloud.dagsync_env()}


def dagsync_once(cloud: CloudDriver, root: Path, concurrency: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "dagsync",
        "once",
        *cloud.dagsync_args(),
        "--root",
        str(root),
        "--concurrency",
        str(concurrency),
        "--sync-timeout",
        "30m",
    ]


def best(runs: list[Measured]) -> Measured:
    """The fastest of repeated runs (``--repeat``): on a shared machine the others' load only
    ever adds time, so the minimum is the least disturbed figure; all walls are printed."""
    fastest = min(runs, key=lambda run: run.wall)
    return replace(fastest, walls=tuple(run.wall for run in runs)) if len(runs) > 1 else fastest


def kinds(counts: Counter[str]) -> str:
    return " ".join(f"{kind}={n}" for kind, n in sorted(counts.items())) or "-"


def bench_cloud(name: str, opts: argparse.Namespace, workdir: Path) -> None:
    cloud = DRIVERS[name]()
    cloud.start(opts.latency)
    try:
        seeded = time.monotonic()
        paths = cloud.populate(opts.files, opts.size, seed=1)
        print(
            f"\n== {name}: {opts.files} files x {opts.size} B, {opts.latency * 1000:.0f} ms per "
            f"request, fake server in its own process (seeded in {time.monotonic() - seeded:.1f}s)"
        )
        env = child_env(cloud)
        rows: list[Measured] = []

        seq_files = min(opts.sequential_files or opts.files, opts.files)
        seq_dest = workdir / f"{name}-sequential"
        seq_runs = []
        for _ in range(opts.repeat):
            seq_runs.append(
                measure(
                    "sequential loop (same SDK)",
                    cloud.sequential_argv(seq_dest, seq_files),
                    env,
                    cloud,
                    seq_files,
                )
            )
            shutil.rmtree(seq_dest, ignore_errors=True)
        seq = best(seq_runs)
        rows.append(seq)

        roots: dict[int, Path] = {}
        for concurrency in opts.concurrency:
            runs = []
            for attempt in range(opts.repeat):
                root = workdir / f"{name}-root-c{concurrency}-{attempt}"
                runs.append(
                    measure(
                        f"dagsync once --concurrency {concurrency}",
                        dagsync_once(cloud, root, concurrency),
                        env,
                        cloud,
                        opts.files,
                    )
                )
                roots[concurrency] = root  # a full root either way: the last one is kept
            rows.append(best(runs))

        baseline_rate = seq.files_per_second
        header = (
            f"{'run':<34} {'wall s':>8} {'cpu s':>7} {'RSS MiB':>8} {'files/s':>8} "
            f"{'speed-up':>9}  requests"
        )
        print(header)
        print("-" * len(header))
        for row in rows:
            extrapolated = ""
            if row is seq and seq.files != opts.files:
                estimate = opts.files / baseline_rate
                extrapolated = f"  ({seq.files} files; all {opts.files}: ~{estimate:.0f}s)"
            if row.walls:
                extrapolated += f"  (best of {'/'.join(f'{w:.1f}' for w in row.walls)}s)"
            print(
                f"{row.label:<34} {row.wall:>8.2f} {row.cpu:>7.2f} {row.rss_mib:>8.1f} "
                f"{row.files_per_second:>8.0f} {row.files_per_second / baseline_rate:>8.1f}x  "
                f"{kinds(row.requests)}{extrapolated}"
            )

        concurrency = DEFAULT_CONCURRENCY if DEFAULT_CONCURRENCY in roots else opts.concurrency[0]
        changed = random.Random(2).sample(paths, opts.changed)
        cloud.modify(changed, seed=3)
        incremental = measure(
            f"incremental, {opts.changed} changed",
            dagsync_once(cloud, roots[concurrency], concurrency),
            env,
            cloud,
            opts.changed,
        )
        downloads = incremental.requests[cloud.download_kind]
        others = {
            k: n
            for k, n in incremental.requests.items()
            if k not in cloud.listing_kinds and k != cloud.download_kind
        }
        verdict = "yes" if downloads == opts.changed and not others else "NO"
        print(
            f"\nincremental sync, {opts.changed} of {opts.files} changed (--concurrency "
            f"{concurrency}): wall {incremental.wall:.2f}s, cpu {incremental.cpu:.2f}s, "
            f"RSS {incremental.rss_mib:.1f} MiB, requests: {kinds(incremental.requests)}; "
            f"exactly {opts.changed} downloads and otherwise only listing: {verdict}"
        )
        print(f"fake server CPU over the whole run: {cloud.server_cpu_seconds():.1f}s")
    finally:
        cloud.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in HIDDEN_COMMANDS:
        HIDDEN_COMMANDS[args[0]](*args[1:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cloud", default="all", choices=[*sorted(DRIVERS), "all"])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=10 * 1024)
    parser.add_argument("--latency", type=float, default=0.02, help="seconds per request")
    parser.add_argument(
        "--concurrency",
        type=lambda text: [int(x) for x in text.split(",")],
        default=[8, 16, 32],
        help="comma-separated values (default 8,16,32)",
    )
    parser.add_argument("--changed", type=int, default=10)
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run the baseline and each dagsync run this many times and report the fastest "
        "(a shared machine's load only adds time)",
    )
    parser.add_argument(
        "--sequential-files",
        type=int,
        default=0,
        help="download only this many in the sequential baseline (0: all); its rate is what "
        "the speed-up compares",
    )
    opts = parser.parse_args(args)
    print(
        f"store bench: python {sys.version.split()[0]}, {os.cpu_count()} CPUs, clouds: {opts.cloud}"
    )
    with tempfile.TemporaryDirectory(prefix="dagsync-bench-") as workdir:
        for name in sorted(DRIVERS) if opts.cloud == "all" else [opts.cloud]:
            bench_cloud(name, opts, Path(workdir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
