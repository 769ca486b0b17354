"""kill -9 in the middle of ``dagsync once``, several times, then a ``once`` that completes.

A pod killed during a sync loses dagsync and every git it started at once; the next start must
publish a complete tree and leave nothing behind (staging, temp links, ``.parts``, git locks).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.gitservers import Repo
from tests.helpers import (
    assert_published,
    cache_debris,
    client_env,
    dagsync,
    descendants,
    files_in_staging,
    files_of,
    kill_tree,
    leftovers,
    link_target,
    published,
    start_dagsync,
    terminate,
    wait_for,
)

FILES = 1200
FILE_BYTES = 8 * 1024


def rewrite_everything(repo: Repo, generation: int) -> dict[str, str]:
    """Commit FILES files of incompressible content (so fetching and writing take a while)."""
    files = {}
    for i in range(FILES):
        path = f"dags/d{i % 30}/f{i}.py"
        text = f"# generation {generation}\n" + os.urandom(FILE_BYTES // 2).hex()
        repo.write(path, text)
        files[path] = text
    repo.commit(f"generation {generation}")
    repo.push()
    return files


def git_fetch_running(pid: int) -> bool:
    for child in descendants(pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"fetch" in cmdline or b"upload-pack" in cmdline or b"index-pack" in cmdline:
            return True
    return False


@pytest.mark.timeout(120)
def test_kill_9_mid_sync_then_once_completes(
    make_git_repo: Callable[..., Repo],
    hermetic_git_env: dict[str, str],
    tmp_path: Path,
) -> None:
    env = client_env(hermetic_git_env, tmp_path / "home")
    repo = make_git_repo("big", initial=False)
    root = tmp_path / "root"
    args = ("once", "--repo", repo.file_url, "--root", root)
    complete: dict[str, dict[str, str]] = {}  # revision -> files, for whatever was published

    def kill_when(condition: Callable[[int], object], what: str) -> None:
        proc = start_dagsync(*args, env=env, log=tmp_path / "once.log")
        try:
            wait_for(lambda: condition(proc.pid) or proc.poll() is not None, what=what)
            assert proc.poll() is None, f"once finished before it could be killed ({what})"
            kill_tree(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        kills.append(what)
        # Whatever the moment of the kill, a reader sees a complete tree or none.
        if link_target(root) is not None:
            revision, folder = published(root)
            assert files_of(folder) == complete[revision]

    kills: list[str] = []
    for generation in range(2):
        files = rewrite_everything(repo, generation)
        head = repo.head()
        kill_when(git_fetch_running, f"generation {generation}: git fetch")
        kill_when(lambda _pid: files_in_staging(root) >= FILES // 4, "writing the tree")
        kill_when(lambda _pid: files_in_staging(root) >= FILES * 3 // 4, "writing, later")
        result = dagsync(*args, env=env)
        assert result.returncode == 0, str(result)
        complete[head] = files
        assert_published(root, head, files)
        assert leftovers(root) == []
        assert cache_debris(root) == []

    assert len(kills) == 6
    # And once more with nothing to do: still complete, still clean.
    assert dagsync(*args, env=env).returncode == 0
    assert_published(root, repo.head(), complete[repo.head()])
    assert leftovers(root) == []


@pytest.mark.timeout(120)
def test_sigterm_mid_write_exits_0_and_leaves_no_staging(
    make_git_repo: Callable[..., Repo],
    hermetic_git_env: dict[str, str],
    tmp_path: Path,
) -> None:
    env = client_env(hermetic_git_env, tmp_path / "home")
    repo = make_git_repo("big", initial=False)
    root = tmp_path / "root"
    first = rewrite_everything(repo, 0)
    first_head = repo.head()
    log = tmp_path / "run.log"
    proc = start_dagsync("run", "--repo", repo.file_url, "--root", root, "--period", "1h",
                         "--http-bind", "", env=env, log=log)  # fmt: skip
    try:
        wait_for(lambda: link_target(root), what="the first publish")
        rewrite_everything(repo, 1)
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: files_in_staging(root) >= FILES // 4 or proc.poll() is not None,
                 what="the second sync to be writing")  # fmt: skip
        started = time.monotonic()
        assert terminate(proc) == 0, log.read_text()
        assert time.monotonic() - started < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert_published(root, first_head, first)  # the sync was abandoned, not half-published
    assert leftovers(root) == []
    assert descendants(proc.pid) == []
    assert "abandoned" in log.read_text()
