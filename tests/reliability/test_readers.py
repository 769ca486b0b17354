"""Readers never see a torn, missing or unimportable file: while ``dagsync run`` publishes 500
revisions of a local folder, 4 reader processes walk the link as Airflow does
(``os.walk(followlinks=True)``, read every file, import every module).

The writer replaces a few files per generation (each one atomically, as an editor or a CI job
does) and waits for the link to move before writing the next, so every generation is published.

Reproduce: ``pytest -q tests/reliability -s -k readers``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import client_env, leftovers, link_target, start_dagsync, terminate, wait_for
from tests.reliability.campaign import seeded, table

REVISIONS = int(os.environ.get("DAGSYNC_RELIABILITY_REVISIONS", "500"))
READERS = 4
FILES = 40
CHANGED_PER_GENERATION = 4
SEED = 500
READER = Path(__file__).with_name("airflow_reader.py")


def dag_text(name: str, generation: int) -> str:
    marker = f"# {name} generation {generation}"
    body = "\n".join(f"VALUE_{i} = {generation * 1000 + i}" for i in range(50))
    return f"{marker}\nimport json\n{body}\nDAG_ID = json.dumps({name!r})\n{marker}\n"


def write_atomically(path: Path, text: str, scratch: Path) -> None:
    """Write beside the source folder, then rename in: the folder never holds a temp file (the
    sync would rightly publish one it lists)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch.mkdir(exist_ok=True)
    tmp = scratch / path.name
    tmp.write_text(text)
    os.replace(tmp, path)


@pytest.mark.timeout(420)
def test_readers_see_whole_trees_while_run_publishes_500_revisions(
    hermetic_git_env: dict[str, str], tmp_path: Path
) -> None:
    rand = seeded("readers", SEED)
    source = tmp_path / "source"
    scratch = tmp_path / "scratch"  # same file system as the source: renames are atomic
    names = [f"dags/team{i % 4}/dag_{i}.py" for i in range(FILES)]
    for name in names:
        write_atomically(source / name, dag_text(name, 0), scratch)
    root = tmp_path / "root"
    log = tmp_path / "run.log"
    env = client_env(hermetic_git_env, tmp_path / "home")
    proc = start_dagsync("run", "--source", "local", "--local-path", source, "--root", root,
                         "--period", "20ms", "--revision-grace", "2s", "--http-bind", "",
                         env=env, log=log)  # fmt: skip
    stop = tmp_path / "stop-readers"
    readers: list[subprocess.Popen[str]] = []
    publishes = 0
    try:
        wait_for(lambda: link_target(root), what="the first publish")
        publishes = 1
        readers = [
            subprocess.Popen(
                [sys.executable, str(READER), str(root / "current"), str(stop), str(FILES)],
                stdout=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            for _ in range(READERS)
        ]
        for generation in range(1, REVISIONS):
            before = link_target(root)
            for name in rand.sample(names, CHANGED_PER_GENERATION):
                write_atomically(source / name, dag_text(name, generation), scratch)
            wait_for(lambda b=before: link_target(root) != b or proc.poll() is not None,
                     what=f"generation {generation} to be published")  # fmt: skip
            assert proc.poll() is None, log.read_text()[-2000:]
            assert all(r.poll() is None for r in readers), "a reader stopped early"
            publishes += 1
        stop.touch()
        outputs = [json.loads(r.communicate(timeout=60)[0]) for r in readers]
        assert terminate(proc) == 0
    finally:
        stop.touch()
        for p in [proc, *readers]:
            if p.poll() is None:
                p.kill()
                p.wait()

    errors = [e for out in outputs for e in out["errors"]]
    rows = [[i + 1, out["walks"], out["reads"], out["imports"], len(out["errors"])]
            for i, out in enumerate(outputs)]  # fmt: skip
    rows.append(["all", *(sum(int(r[c]) for r in rows) for c in (1, 2, 3, 4))])
    table(f"Readers: {READERS} Airflow-like readers while run published {publishes} revisions",
          ["reader", "walks", "files read", "modules imported", "errors"], rows)  # fmt: skip
    assert errors == []
    assert publishes >= REVISIONS
    assert all(out["walks"] > 0 for out in outputs)
    assert leftovers(root) == []
