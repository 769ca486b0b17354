"""What a pinned DAG bundle version costs a task (not a test): ``dagsync.pinned.materialize``
of one published revision (2,000 files / 30 MB by default) into an Airflow version folder.

    .venv/bin/python bench/pinned_bench.py
    .venv/bin/python bench/pinned_bench.py --files 200 --mb 3 --repeat 5

Three ways, each beside its baseline from the same run (median of ``--repeat``):
1. hard links (version folder on the root's filesystem)  vs  ``cp -al``;
2. copies (version folder on another filesystem, /dev/shm) vs ``cp -a``;
3. fetched from a relay (``run --serve-revisions`` on loopback, the root lacks the revision)
   vs one cold ``dagsync once --source relay`` (the same download without the bundle).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from relay_bench import free_port, get, make_tree  # noqa: E402

from dagsync.pinned import materialize, published_revision  # noqa: E402

DAGSYNC = [sys.executable, "-m", "dagsync"]


def median_seconds(run: Callable[[int], object], repeat: int) -> float:
    times = []
    for i in range(repeat):
        start = time.perf_counter()
        run(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def row(what: str, seconds: float, baseline: str, base_seconds: float) -> None:
    ratio = seconds / base_seconds if base_seconds else float("nan")
    print(f"{what:<34} {seconds * 1000:8.0f} ms   {baseline:<30} {base_seconds * 1000:8.0f} ms"
          f"   ratio {ratio:4.2f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--mb", type=float, default=30.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSYNC_")}
    with tempfile.TemporaryDirectory(prefix="pinned-bench-") as tmp_name:
        tmp = Path(tmp_name)
        make_tree(tmp / "src", args.files, int(args.mb * 1e6), seed=1)
        root = tmp / "root"
        subprocess.run([*DAGSYNC, "once", "--local-path", tmp / "src", "--root", root],
                       env=env, check=True, capture_output=True)  # fmt: skip
        revision = published_revision(root, "current")
        assert revision is not None
        tree = root / ".dagsync" / "revisions" / revision
        print(f"revision {revision[:12]}: {args.files} files, {args.mb:g} MB; "
              f"median of {args.repeat}")  # fmt: skip

        def pinned(parent: Path) -> Callable[[int], object]:
            return lambda i: materialize(revision, parent / str(i) / revision, root=root)

        def cp(flags: str, parent: Path) -> Callable[[int], object]:
            return lambda i: subprocess.run(["cp", flags, tree, parent / f"cp{i}"], check=True)

        linked = median_seconds(pinned(tmp / "versions"), args.repeat)
        base = median_seconds(cp("-al", tmp), args.repeat)
        row("hard links (same filesystem)", linked, "cp -al", base)
        other = Path("/dev/shm")
        if other.is_dir() and other.stat().st_dev != tmp.stat().st_dev:
            elsewhere = Path(tempfile.mkdtemp(prefix="pinned-bench-", dir=other))
            try:
                copied = median_seconds(pinned(elsewhere / "versions"), args.repeat)
                base = median_seconds(cp("-a", elsewhere), args.repeat)
                row("copies (/dev/shm)", copied, "cp -a", base)
            finally:
                shutil.rmtree(elsewhere)
        relay_phase(tmp, revision, env, args.repeat)


def relay_phase(tmp: Path, revision: str, env: dict[str, str], repeat: int) -> None:
    port = free_port()
    relay = subprocess.Popen(
        [*DAGSYNC, "run", "--local-path", str(tmp / "src"), "--root", str(tmp / "relay"),
         "--serve-revisions", "--http-bind", f"127.0.0.1:{port}", "--period", "1h"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while published_revision(tmp / "relay", "current") != revision:
            if time.monotonic() > deadline:
                raise SystemExit("the relay did not publish")
            time.sleep(0.05)
        get(port, "/v1/revisions")  # sums computed before timing
        url = f"http://127.0.0.1:{port}"

        def fetch(i: int) -> object:
            dest = tmp / "relay-versions" / str(i) / revision
            return materialize(revision, dest, root=tmp / "empty-root", relay_url=url)

        def cold_worker(i: int) -> object:
            argv = [*DAGSYNC, "once", "--source", "relay", "--relay-url", url]
            return subprocess.run(
                [*argv, "--root", tmp / f"cold{i}"], env=env, check=True, capture_output=True
            )

        fetched = median_seconds(fetch, repeat)
        row(
            "fetched from the relay",
            fetched,
            "dagsync once --source relay",
            median_seconds(cold_worker, repeat),
        )
    finally:
        relay.terminate()
        relay.wait(timeout=30)


if __name__ == "__main__":
    main()
