"""Readers never see a mix: while ``dagsync run`` publishes 100+ revisions, a reader process
resolves the link and reads every file, over and over.

Every file of generation G says G on its first and last line, so a tree mixing two revisions, a
partially written file, a missing file or a missing link are all visible to the reader.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.gitservers import Repo
from tests.helpers import (
    client_env,
    leftovers,
    link_target,
    start_dagsync,
    terminate,
    wait_for,
)

REVISIONS = 100
CHANGING = [f"dags/team{i % 4}/dag_{i}.py" for i in range(24)]
STATIC = {f"lib/helper_{i}.py": f"# helper {i}, never changes\n" * 50 for i in range(6)}
PAYLOAD_LINES = 200

READER = r"""
import json, os, sys
root, stop = sys.argv[1], sys.argv[2]
changing, static = json.loads(sys.argv[3]), json.loads(sys.argv[4])
link = os.path.join(root, "current")
errors, reads, generations = [], 0, set()
while not os.path.exists(stop):
    try:
        target = os.readlink(link)
    except FileNotFoundError:
        if generations:
            errors.append("missing link")
        continue
    folder = os.path.join(root, target)  # resolve once, then read everything through it
    seen = set()
    for path in changing:
        try:
            with open(os.path.join(folder, path)) as fh:
                lines = fh.read().splitlines()
        except OSError as exc:
            errors.append(f"{target}: {path}: {exc.strerror}")
            continue
        if len(lines) < 2 or lines[0] != lines[-1]:
            errors.append(f"{target}: {path}: partial file")
        seen.add(lines[0] if lines else "")
    for path, text in static.items():
        try:
            with open(os.path.join(folder, path)) as fh:
                if fh.read() != text:
                    errors.append(f"{target}: {path}: wrong content")
        except OSError as exc:
            errors.append(f"{target}: {path}: {exc.strerror}")
    listed = sum(len(files) for _, _, files in os.walk(folder))
    if listed != len(changing) + len(static):
        errors.append(f"{target}: {listed} files")
    if len(seen) != 1:
        errors.append(f"{target}: mixed generations {sorted(seen)}")
    generations |= seen
    reads += 1
    if len(errors) > 20:
        break
print(json.dumps({"errors": errors, "reads": reads, "generations": len(generations)}))
"""


def commit_generation(repo: Repo, generation: int) -> None:
    for path in CHANGING:
        marker = f"# generation {generation}"
        repo.write(path, "\n".join([marker, *([f"x = {generation}"] * PAYLOAD_LINES), marker]))
    repo.commit(f"generation {generation}")
    repo.push()


def published_count(log: Path) -> int:
    """How many revisions ``run`` published, from its JSON log."""
    count = 0
    for line in log.read_text(errors="replace").splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        count += (doc.get("logger"), doc.get("event")) == ("dagsync.syncer", "published")
    return count


@pytest.mark.timeout(120)
def test_readers_never_see_a_mix_while_run_publishes(
    make_git_repo: Callable[..., Repo], hermetic_git_env: dict[str, str], tmp_path: Path
) -> None:
    env = client_env(hermetic_git_env, tmp_path / "home")
    repo = make_git_repo("dags", initial=False)
    for path, text in STATIC.items():
        repo.write(path, text)
    commit_generation(repo, 0)
    root = tmp_path / "root"
    log = tmp_path / "run.log"
    proc = start_dagsync(
        "run", "--repo", repo.file_url, "--root", root, "--period", "50ms",
        "--revision-grace", "10s", "--http-bind", "", "--log-format", "json",
        env=env, log=log,
    )  # fmt: skip
    stop = tmp_path / "stop-reader"
    reader: subprocess.Popen[str] | None = None
    try:
        wait_for(lambda: link_target(root), what="the first publish")
        reader = subprocess.Popen(
            [sys.executable, "-c", READER, str(root), str(stop),
             json.dumps(CHANGING), json.dumps(STATIC)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        generation = 0
        while published_count(log) < REVISIONS:
            generation += 1
            commit_generation(repo, generation)
            assert proc.poll() is None, log.read_text()[-2000:]
            assert reader.poll() is None, "the reader stopped early"
            assert generation < REVISIONS * 3, "dagsync does not keep up"
        stop.touch()
        out, _ = reader.communicate(timeout=30)
        assert terminate(proc) == 0
    finally:
        stop.touch()
        for p in (proc, reader):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()

    stats = json.loads(out)
    assert stats["errors"] == []
    assert stats["reads"] > REVISIONS
    assert stats["generations"] > REVISIONS // 10  # the reader really saw the link move
    assert published_count(log) >= REVISIONS
    assert leftovers(root) == []
    # The cache does not keep every fetched revision forever (a sidecar runs for months).
    objects = root / ".dagsync" / "cache" / "git" / "repo.git" / "objects"
    packs = list((objects / "pack").glob("*.pack"))
    loose = list(objects.glob("??/*"))
    assert 1 <= len(packs) <= 21 and len(loose) < 100, (len(packs), len(loose))
