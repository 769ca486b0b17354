"""Every scenario of the performance table, each against its baseline in the same run, and the
report ``docs/performance.md`` with the scale-curve plot ``docs/performance-scale.png``.

    python bench/run_all.py              # the full table (over an hour on 2 busy CPUs)
    python bench/run_all.py --reps 3 --big-reps 2 --profile   # 42 min on 2 busy CPUs
    python bench/run_all.py --quick      # smaller inputs, one repetition (2-3 min, 10 if busy)
    python bench/run_all.py --only 1,5 --reps 3

Scenarios: 1 cold ``once`` of 2,000 files / 30 MB / 50 commits over ``git daemon`` against
``git clone --depth 1 --single-branch``; 2 the same for 20,000 files / 200 MB, and dagsync's own
peak RSS; 3 ``--subpath dags`` (1,000 files / 10 MB of that repository; the server allows
filters) against a full ``git clone --depth 1``, wall time and bytes received through a counting
proxy; 4 warm ``once`` after one file of 2,000 changed against ``git fetch`` + ``git checkout``;
5 one changed object of 10,000 (OSS and Azure fakes, 20 ms per request) against a list+GET
script with the same SDK, and the GETs dagsync made; 6 the scale curve: 1k / 10k / 100k files,
git and OSS, against ``git clone``; ``keep``: idle RSS and CPU of ``run``, start-up, no-change
pass against ``git ls-remote``, trigger-to-visible median.

Generated repositories are cached (``$DAGSYNC_BENCH_CACHE``, default
``$TMPDIR/dagsync-bench-cache``; the first full run spends a few minutes making them).
``--quick`` writes its report to ``$TMPDIR/dagsync-performance-quick.md`` unless ``--out`` says
otherwise, so it never replaces the committed one. Not a test: it prints figures and ratios.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import shlex
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

from perfkit import git_scenarios, keep, measure, notes, report, store_scenarios  # noqa: E402
from perfkit.bytecode import compile_dagsync  # noqa: E402
from perfkit.gitrepos import RepoSpec  # noqa: E402
from perfkit.measure import Run, median, spread  # noqa: E402
from perfkit.report import Report, Row, ratio_row  # noqa: E402


@dataclass(frozen=True)
class Profile:
    reps: int = 5
    big_reps: int = 3
    big: RepoSpec = git_scenarios.BIG
    store_files: int = 10_000
    store_size: int = 10 * 1024
    store_latency: float = 0.02
    scale_sizes: tuple[int, ...] = (1_000, 10_000, 100_000)
    scale_latency: float = 0.005
    idle_seconds: float = 20.0
    passes: int = 10
    pushes: int = 20


FULL = Profile()
QUICK = Profile(
    reps=1, big_reps=1, big=RepoSpec(4000, 40, dags_files=200, dags_mb=2), store_files=1000,
    scale_sizes=(500, 2_000), idle_seconds=5.0, passes=3, pushes=5,
)  # fmt: skip


class Harness:
    def __init__(self, profile: Profile, out: Path, plot_path: Path) -> None:
        self.p = profile
        self.report = Report(command="")
        self.out = out
        self.plot_path = plot_path
        self._git: git_scenarios.GitBench | None = None

    @property
    def git(self) -> git_scenarios.GitBench:
        if self._git is None:
            self._git = git_scenarios.GitBench()
        return self._git

    def detail(self, text: str) -> None:
        print(text, flush=True)
        self.report.details.append(text)

    def pair(self, title: str, runs: dict[str, list[Run]]) -> None:
        self.detail(title)
        for name, rs in runs.items():
            own = median(rs, "own_rss_mb")
            rss = (
                f"own peak RSS {own:.0f} MB"
                if not math.isnan(own)
                else f"peak RSS {median(rs, 'tree_rss_mb'):.0f} MB"
            )
            self.detail(f"  {name:<22} wall {spread(rs)}  cpu {median(rs, 'cpu'):.2f} s  {rss}")

    # -- scenarios ---------------------------------------------------------------------------
    def s1(self) -> list[Row]:
        runs = git_scenarios.cold(self.git, git_scenarios.SMALL, self.p.reps)
        self.pair("1: cold once, 2,000 files / 30 MB / 50 commits, git daemon", runs)
        return [
            ratio_row(
                "1",
                "cold `once`, 2,000 files / 30 MB, 50 commits",
                median(runs["dagsync"]),
                median(runs["git clone"]),
                "s",
                1.0,
                "`git clone --depth 1`",
            )
        ]

    def s2(self) -> list[Row]:
        big = self.p.big
        runs = git_scenarios.cold(self.git, big, self.p.big_reps)
        self.pair(f"2: cold once, {big.files:,} files / {big.total_mb:g} MB", runs)
        own = median(runs["dagsync"], "own_rss_mb")
        clone_rss = median(runs["git clone"], "tree_rss_mb")
        return [
            ratio_row(
                "2",
                f"cold `once`, {big.files:,} files / {big.total_mb:g} MB",
                median(runs["dagsync"]),
                median(runs["git clone"]),
                "s",
                1.0,
                "`git clone --depth 1`",
            ),
            Row(
                "2",
                "… dagsync's own peak RSS",
                f"{own:.0f} MB",
                f"{clone_rss:.0f} MB (largest git clone process)",
                "",
                "≤ 80 MB",
                own <= 80,
            ),
        ]

    def s3(self) -> list[Row]:
        big = self.p.big
        runs = git_scenarios.subpath(self.git, big, self.p.big_reps)
        self.pair(
            f"3: --subpath dags ({big.dags_files:,} files / {big.dags_mb:g} MB of "
            f"{big.files:,}), through the counting proxy",
            runs,
        )
        d_bytes, c_bytes = (
            median(runs["dagsync"], "bytes") / 1e6,
            median(runs["git clone"], "bytes") / 1e6,
        )
        self.detail(f"  bytes received: dagsync {d_bytes:.1f} MB, git clone {c_bytes:.1f} MB")
        name = f"`--subpath dags`, {big.dags_files:,} of {big.files:,} files"
        return [
            ratio_row(
                "3",
                name + ": wall",
                median(runs["dagsync"]),
                median(runs["git clone"]),
                "s",
                0.25,
                "full `git clone --depth 1`",
            ),
            ratio_row(
                "3",
                name + ": bytes received",
                d_bytes,
                c_bytes,
                "MB",
                0.25,
                "full `git clone --depth 1`",
            ),
        ]

    def s4(self) -> list[Row]:
        runs = git_scenarios.warm(self.git, self.p.reps)
        self.pair("4: warm once, one file of 2,000 changed", runs)
        return [
            ratio_row(
                "4",
                "warm `once`, 1 of 2,000 files changed",
                median(runs["dagsync"]),
                median(runs["git fetch + checkout"]),
                "s",
                1.5,
                "`git fetch` + `git checkout`",
            )
        ]

    def s5(self) -> list[Row]:
        rows = []
        for cloud in ("oss", "azure"):
            got = store_scenarios.changed_one(
                cloud, self.p.store_files, self.p.store_size, self.p.store_latency, self.p.reps
            )
            self.pair(
                f"5 ({cloud}): one changed object of {self.p.store_files:,} x "
                f"{self.p.store_size // 1024} KB, {self.p.store_latency * 1000:g} ms per request; "
                f"cold sync {got.cold.wall:.1f} s",
                {"dagsync": got.dagsync, "list+GET script": got.baseline},
            )
            self.detail(
                f"  GETs per dagsync pass: {got.gets}; other requests: {dict(got.other) or 'none'}"
            )
            row = ratio_row(
                "5",
                f"one changed object of {self.p.store_files:,}, "
                f"{'OSS' if cloud == 'oss' else 'Azure'}",
                median(got.dagsync),
                median(got.baseline),
                "s",
                1.5,
                "list+GET script, same SDK",
            )
            one_get = all(g == 1 for g in got.gets) and not got.other
            rows.append(
                replace(
                    row,
                    figure=f"{row.figure}, {'exactly 1 GET' if one_get else f'GETs {got.gets}'}",
                    target="≤ 1.5× and 1 GET",
                    met=bool(row.met and one_get),
                )
            )
        return rows

    def s6(self) -> list[Row]:
        sizes = list(self.p.scale_sizes)
        git = git_scenarios.scale(self.git, sizes, self.p.big_reps)
        oss = store_scenarios.scale(
            "oss",
            sizes,
            git_scenarios.SCALE_KB_PER_FILE * 1024,
            self.p.scale_latency,
            self.p.big_reps,
        )
        series: dict[str, dict[int, tuple[float, float]]] = {
            "dagsync (git)": {},
            "git clone --depth 1": {},
            "dagsync (oss)": {},
        }
        for n in sizes:
            self.pair(
                f"6: scale, {n:,} files x {git_scenarios.SCALE_KB_PER_FILE} KB",
                {**git[n], f"dagsync oss ({self.p.scale_latency * 1000:g} ms/request)": oss[n]},
            )
            series["dagsync (git)"][n] = (
                median(git[n]["dagsync"]),
                median(git[n]["dagsync"], "own_rss_mb"),
            )
            series["git clone --depth 1"][n] = (
                median(git[n]["git clone"]),
                median(git[n]["git clone"], "tree_rss_mb"),
            )
            series["dagsync (oss)"][n] = (median(oss[n]), median(oss[n], "own_rss_mb"))
        self.report.plot = report.plot(self.plot_path, series)
        top, mid = sizes[-1], sizes[-2]
        d, c = series["dagsync (git)"], series["git clone --depth 1"]
        time_growth = (d[top][0] / d[mid][0]) / (top / mid)
        rss_exp = math.log(d[top][1] / d[mid][1]) / math.log(top / mid)
        oss_exp = math.log(
            series["dagsync (oss)"][top][1] / series["dagsync (oss)"][mid][1]
        ) / math.log(top / mid)
        return [
            ratio_row(
                "6",
                f"scale: {top:,} files, git",
                d[top][0],
                c[top][0],
                "s",
                1.0,
                "`git clone --depth 1`",
            ),
            Row(
                "6",
                f"… own peak RSS at {top:,} files (git / oss)",
                f"{d[top][1]:.0f} / {series['dagsync (oss)'][top][1]:.0f} MB",
                f"{c[top][1]:.0f} MB (largest git clone process)",
                "",
                "≤ 100 MB",
                d[top][1] <= 100,
            ),
            Row(
                "6",
                f"… time linear, RSS sub-linear ({mid:,} → {top:,})",
                f"time per file ×{time_growth:.2f}; RSS ∝ n^{rss_exp:.2f} (oss n^{oss_exp:.2f})",
                "",
                "",
                "time per file ≤ ×1.3, RSS exponent < 1",
                time_growth <= 1.3 and rss_exp < 1 and oss_exp < 1,
            ),
        ]

    def keep(self) -> list[Row]:
        d = keep.daemon(self.git, self.p.idle_seconds, self.p.passes)
        ls = median(d.ls_remote)
        self.detail(
            f"keep: run idle {d.idle_seconds:g} s: RSS {d.idle_rss_mb:.1f} MB, "
            f"CPU {d.idle_cpu_percent:.2f} %; no-change pass {d.nochange_pass_s * 1000:.0f} ms "
            f"(mean of {d.nochange_passes}), git ls-remote {spread(d.ls_remote)}"
        )
        start, sdks = keep.startup(max(5, self.p.reps * 2))
        version, bare = (
            keep.median_ms(start["dagsync version"]),
            keep.median_ms(start["python -c pass"]),
        )
        self.detail(
            f"keep: start-up dagsync version {version:.0f} ms, python -c pass {bare:.0f} ms; "
            f"SDK modules imported: {sdks or 'none'}"
        )
        trig = keep.trigger(self.p.pushes)
        self.detail(
            f"keep: trigger -> visible median {trig:.0f} ms over {self.p.pushes} pushes "
            "(bench/trigger_latency.py, git daemon)"
        )
        return [
            Row(
                "keep",
                "idle RSS of `run`",
                f"{d.idle_rss_mb:.1f} MB",
                "",
                "",
                "≤ 50 MB",
                d.idle_rss_mb <= 50,
            ),
            Row(
                "keep",
                f"idle CPU of `run` (over {d.idle_seconds:g} s)",
                f"{d.idle_cpu_percent:.2f} %",
                "",
                "",
                "≤ 1 %",
                d.idle_cpu_percent <= 1,
            ),
            Row(
                "keep",
                "start-up `dagsync version`, SDKs imported",
                f"{version:.0f} ms, {', '.join(sdks) or 'none'}",
                f"{bare:.0f} ms (`python -c pass`)",
                f"+{version - bare:.0f} ms",
                "≤ +150 ms, none",
                version - bare <= 150 and not sdks,
            ),
            ratio_row(
                "keep",
                "no-change pass in `run`",
                d.nochange_pass_s,
                ls,
                "s",
                1.5,
                "`git ls-remote`",
            ),
            Row(
                "keep", "trigger to visible, median", f"{trig:.0f} ms", "", "", "< 1 s", trig < 1000
            ),
        ]

    SCENARIOS: dict[str, Callable[[Harness], list[Row]]] = {
        "1": s1,
        "2": s2,
        "3": s3,
        "4": s4,
        "5": s5,
        "6": s6,
        "keep": keep,
    }

    def run(self, only: list[str]) -> None:
        started = time.monotonic()
        try:
            for key in only:
                print(f"== {key}", flush=True)
                try:
                    self.report.rows += self.SCENARIOS[key](self)
                except (Exception, SystemExit) as exc:
                    traceback.print_exc()
                    message = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
                    failed = Row(key, f"scenario {key}", f"failed: {message}", "", "", "", False)
                    self.report.rows.append(failed)
                self.write(started)  # a report so far, should a later scenario hang
        finally:
            if self._git is not None:
                self._git.close()
        self.write(started)
        print(f"wrote {self.out} ({self.report.duration_s / 60:.1f} min)")
        for r in self.report.rows:
            print(
                f"  {r.num:>4} {r.scenario[:60]:<60} {r.ratio:>8} {r.target:<16} "
                f"{report.verdict(r.met)}"
            )

    def write(self, started: float) -> None:
        self.report.duration_s = time.monotonic() - started
        order = list(self.SCENARIOS)
        self.report.rows.sort(key=lambda r: order.index(r.num) if r.num in order else len(order))
        missed = dict.fromkeys(r.num for r in self.report.rows if r.met is False)
        self.report.notes = [
            f"- **{num}**: {notes.WHERE_THE_TIME_GOES[num]}"
            for num in missed
            if num in notes.WHERE_THE_TIME_GOES
        ]
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(report.markdown(self.report))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small inputs, one repetition")
    parser.add_argument("--only", default="", help="comma-separated scenarios: 1,2,3,4,5,6,keep")
    parser.add_argument("--reps", type=int, default=0, help="repetitions of the small scenarios")
    parser.add_argument(
        "--big-reps", type=int, default=0, help="repetitions of scenarios 2, 3 and 6 (default 3)"
    )
    parser.add_argument("--out", type=Path, help="the report (default docs/performance.md)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="one more dagsync run per scenario under pyinstrument, its text in docs/profiles/",
    )
    args = parser.parse_args(argv)
    profile = QUICK if args.quick else FULL
    if args.reps:
        profile = replace(
            profile, reps=args.reps, big_reps=max(1, min(args.reps, profile.big_reps))
        )
    if args.big_reps:
        profile = replace(profile, big_reps=args.big_reps)
    only = [s.strip() for s in args.only.split(",") if s.strip()] or list(Harness.SCENARIOS)
    unknown = [s for s in only if s not in Harness.SCENARIOS]
    if unknown:
        parser.error(
            f"--only: unknown scenario {unknown[0]!r}; choose from {', '.join(Harness.SCENARIOS)}"
        )
    tmp = Path(tempfile.gettempdir())
    out = args.out or (
        tmp / "dagsync-performance-quick.md" if args.quick else REPO / "docs" / "performance.md"
    )
    plot = out.with_name(out.stem + "-scale.png")
    if args.profile:
        measure.PROFILES = (
            (REPO / "docs" / "profiles") if not args.quick else tmp / "dagsync-profiles"
        )
    missing = [m for m in ("matplotlib", "pyinstrument") if importlib.util.find_spec(m) is None]
    if missing:  # the plot and --profile need them; fail before a long run, not inside it
        parser.error(f"missing {', '.join(missing)}: pip install -e '.[bench]'")
    print(compile_dagsync(), flush=True)
    harness = Harness(profile, out, plot)
    harness.report.command = "python bench/run_all.py " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    harness.run(only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
