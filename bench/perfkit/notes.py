"""What the report says under "Where the time goes" for a scenario whose target was missed:
where a profile of this code puts the time, and what would move it. Profiles themselves are
written by ``run_all.py --profile`` to ``docs/profiles/`` (pyinstrument text)."""

from __future__ import annotations

WHERE_THE_TIME_GOES: dict[str, str] = {
    "1": (
        "Cold git (`docs/profiles/cold-2000-files.txt`): about 0.2-0.3 s of Python start-up and "
        "imports before the first git command, then a separate `git ls-remote`, the fetch and "
        "`index-pack` as in a clone, then writing every file from Python through one "
        "`cat-file --batch` stream (the largest part; git's own checkout writes them from C, "
        "in parallel with `checkout.workers`). What would move it: skipping `ls-remote` on a "
        "cold root (fetch the ref and read FETCH_HEAD), letting git check the tree out "
        "(`checkout.workers`) instead of streaming blobs through Python, and lazy imports. "
        "That is the `git` source's work (issue 11, git helper)."
    ),
    "2": (
        "As for scenario 1 (`docs/profiles/cold-20000-files.txt`); with 20,000 files the "
        "per-file Python cost of writing the tree dominates. Own RSS grows with the manifest "
        "(one `Entry` per file, held twice while the previous revision's is compared)."
    ),
    "3": (
        "`--subpath` still fetches the whole pack (`docs/profiles/subpath.txt`): the bytes "
        "received equal the full clone's. What would move it: a partial clone "
        "(`--filter=blob:none`), then fetching only the subtree's blobs in one batch, with a "
        "fallback to the full fetch when the server refuses filters (git helper)."
    ),
    "4": (
        "A warm pass (`docs/profiles/warm-one-changed.txt`) is start-up and imports, "
        "`ls-remote`, a one-commit fetch, then hard-linking 1,999 unchanged files into the new "
        "revision (a new tree per revision is what makes the publish atomic); `git checkout` "
        "rewrites one file in place."
    ),
    "5": (
        "A warm store pass with one changed object (`docs/profiles/store-one-changed-oss.txt`, "
        "`-azure.txt`): both dagsync and the script spend most of their time importing the SDK "
        "and in the SDK's listing (oss2's XML parsing with a date conversion per object; the "
        "Azure SDK's model deserialisation, about 0.1 ms of CPU per listed file, more with the "
        "`include=Etag` dagsync needs for change tokens). What dagsync adds: its own imports "
        "(`prometheus_client` alone is ~0.15 s of CPU, loaded even by `once`), hard-linking "
        "10,000 unchanged files (one `link(2)` each, ~40 µs on this disk), and building and "
        "digesting the 10,000-entry manifest. Already cut on this branch: the manifest was "
        "parsed up to six times per pass (now once, cached by file identity), sorted by "
        "comparing dataclasses field by field (now by path: 0.25-0.45 s less when the listing "
        "comes unsorted, as Azure's concurrent walk does), and links went through pathlib with "
        "three stat calls (now one `lstat`). What would move it further: importing "
        "`prometheus_client`, `http.server` and YAML only when `--http-bind` or a config file "
        "needs them, and linking unchanged files while the download runs."
    ),
    "6": (
        "Git at 10,000 files and above (`docs/profiles/scale-git-10000-files.txt`): per file, "
        "`TreeWriter.open` creates a temp file under `.parts`, writes it and renames it into "
        "place; creating the files alone is about half the pass on this disk, and pathlib "
        "joins add a tenth; `git clone` creates each file once, in C. Own RSS is the manifest "
        "and the tree listing held as Python objects. What would move it: git's own checkout "
        "(`checkout.workers`) and a leaner listing (git helper); string paths in "
        "`TreeWriter.open` came after this run (see Changes measured). The OSS curve is "
        "CPU-bound: about 2 ms of CPU per object in oss2 and "
        "requests (signing, session, response parsing) at 8 downloads at a time; its RSS grew "
        "with one queued Future per object until commit a9ae308 (see Changes measured)."
    ),
    "keep": (
        "Start-up: `dagsync version` imports the CLI, the option table and the config loader "
        "(PyYAML) but no SDK; its extra CPU over `python -c pass` is about 0.1 s, and on a "
        "machine with a load average far above its CPU count every CPU-second is stretched "
        "several times in wall time, which is what pushes it past +150 ms here (the issue "
        "measured +54 ms on a quiet machine). What would move it: importing PyYAML only when "
        "a config file is given."
    ),
}


# Measured changes, kept in the report whatever this run finds (hand-written: the figures come
# from the run named in each entry, not from the current one).
CHANGES: list[str] = [
    "- **Scenario 5, before and after this branch's store changes** (one run, 2026-12-07 02:22 "
    "UTC, load average above 20 on 2 CPUs; 10,000 × 10 KB objects, 20 ms per request, one "
    "object changed per pass, 5 passes each, the old code, the new code and the list+GET "
    "script rotating): OSS 14.76 s → 8.97 s against the script's 5.86 s (2.52× → 1.53×; CPU "
    "2.00 s → 1.43 s against 0.77 s); Azure 16.85 s → 11.97 s against 7.09 s (2.37× → 1.69×; "
    "CPU 3.43 s → 2.34 s against 1.79 s). Exactly one GET per pass before and after. The "
    "changes: the published manifest parsed once per pass instead of up to six times "
    "(cached by inode, size and mtime), manifests sorted by path instead of by comparing "
    "`Entry` dataclasses, unchanged files linked with one `lstat` and plain strings instead "
    "of pathlib and three stats, a fast path in `safe_path`, `__slots__` on `Entry` and "
    "`RemoteObject`. The script is `bench/perfkit/store_baseline.py`; the "
    "old code was run from a copy of commit bf263bf on `PYTHONPATH`.",
    "- **Store memory** (commit a9ae308, measured 2026-12-07 03:00 UTC): "
    "a cold OSS sync of 30,000 × 2 KB objects (5 ms per request) peaked at 136 MB of own RSS "
    "with the code of bf263bf and at 78 MB with this branch: downloads are now handed to the "
    "pool a few per worker instead of one queued Future per object. The 100,000-object OSS "
    "point of the scale curve in the 2026-12-07 run (310 MB) was measured before that change.",
    "- **Peak RSS of the baselines** is measured with `/usr/bin/time` since commit d272932. "
    "The 2026-12-07 run predates it: in its details, git's peak RSS after scenario 6 reads no "
    "lower than the harness's own (81 MB once the plot was drawn), so those git figures are "
    "upper bounds. dagsync's own RSS comes from its own `VmHWM` and was not affected.",
    "- **Writing files** (after the 2026-12-07 run): `TreeWriter.open`, which every git "
    "checkout and store download goes through, joins plain strings instead of pathlib; "
    "writing 5,000 files of 100 bytes took 4.2-4.6 s of CPU instead of 4.9-5.0 s on the "
    "loaded machine (three alternating runs each).",
]
