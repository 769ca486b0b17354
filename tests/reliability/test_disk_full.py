"""A full disk: the root on a small tmpfs. A revision that does not fit fails the sync cleanly,
for git and for a store (the OSS fake): exit 1, the old revision keeps serving, no partial
revision, staging or temp file survives, and the next sync after space returns publishes.

Needs root (``mount -t tmpfs``); skipped with the reason when mounting is not permitted.

Reproduce: ``pytest -q tests/reliability -s -k disk_full``.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.gitservers import Repo
from tests.helpers import (
    cache_debris,
    client_env,
    dagsync,
    files_of,
    leftovers,
    published,
    revision_folders,
)
from tests.reliability.campaign import Feed, GitFeed, StoreFeed, seeded, store_env, table

SMALL = "4m"  # the volume
ROOMY = "64m"  # after "space returns"
SMALL_GENERATION = (20, 2048)  # files, bytes per file: fits
BIG_GENERATION = (48, 96 * 1024)  # about 4.6 MB of incompressible text: does not fit
RESULTS: list[list[object]] = []


def _mount(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, check=False)


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    volume = tmp_path / "volume"
    volume.mkdir()
    mounted = _mount(["-t", "tmpfs", "-o", f"size={SMALL},mode=0755", "tmpfs", str(volume)])
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield volume
    finally:
        subprocess.run(["umount", "-l", str(volume)], check=False)


@pytest.fixture(params=["git", "oss"])
def feed(
    request: pytest.FixtureRequest, make_git_repo: Callable[..., Repo], tmp_path: Path
) -> Iterator[Feed]:
    if request.param == "git":
        yield GitFeed(make_git_repo("dags", initial=False), *SMALL_GENERATION)
        return
    env = store_env("oss", tmp_path)
    try:
        yield StoreFeed(env, *SMALL_GENERATION)
    finally:
        env.stop()


def used_kib(volume: Path) -> int:
    st = os.statvfs(volume)
    return (st.f_blocks - st.f_bfree) * st.f_frsize // 1024


@pytest.mark.timeout(180)
def test_disk_full_fails_cleanly_and_recovers(
    feed: Feed, small_volume: Path, hermetic_git_env: dict[str, str], tmp_path: Path
) -> None:
    rand = seeded(f"disk full {feed.name}", 4096)
    env = {**client_env(hermetic_git_env, tmp_path / "home"), **feed.environ()}
    root = small_volume / "root"
    args = ["once", *feed.args(), "--root", str(root)]

    small = feed.next_generation(rand)
    assert dagsync(*args, env=env).returncode == 0
    old_revision, _ = published(root)

    feed.files, feed.file_bytes = BIG_GENERATION
    big = feed.next_generation(rand)
    result = dagsync(*args, env=env)
    full_used = used_kib(small_volume)
    assert result.returncode == 1, str(result)
    revision, folder = published(root)  # the old revision keeps serving, whole
    assert revision == old_revision
    assert files_of(folder) == small
    assert revision_folders(root) == [old_revision]  # no partial revision
    assert leftovers(root) == []
    assert cache_debris(root) == []
    error_lines = [line for line in result.output.splitlines() if "error" in line.lower()]

    assert _mount(["-o", f"remount,size={ROOMY}", str(small_volume)]).returncode == 0
    again = dagsync(*args, env=env)
    assert again.returncode == 0, str(again)
    revision, folder = published(root)
    assert files_of(folder) == big
    if feed.revision() is not None:
        assert revision == feed.revision()
    assert leftovers(root) == []
    RESULTS.append([feed.name, SMALL, f"{sum(map(len, big.values())) // 1024} KiB",
                    result.returncode, f"{full_used} KiB", "kept", "none", again.returncode,
                    error_lines[-1].split(None, 2)[-1][:70] if error_lines else ""])  # fmt: skip


def test_disk_full_zz_table() -> None:
    if not RESULTS:
        pytest.skip("no disk-full case ran in this session")
    table("Disk full: a revision larger than the volume",
          ["source", "volume", "revision", "exit", "used after the failure", "old revision",
           "partial/staging left", "exit after space returns", "error line"], RESULTS)  # fmt: skip
