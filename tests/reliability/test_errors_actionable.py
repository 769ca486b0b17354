"""Errors a person can act on: a full disk while a revision is written is one error line naming
the published path (not the staging folder) and the cause, for a store and for git; nothing
partial is published and the previous revision keeps serving. (Non-UTF-8 OSS keys, names too
long for the filesystem and a file that is also a folder: test_hostile_stores.py and
test_hostile_git_local.py.)"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.oss_server import FakeOss
from tests.gitservers import Repo
from tests.helpers import client_env, dagsync, link_target, published, snapshot
from tests.reliability.hostile_common import assert_refused, error_lines, state
from tests.sources.store_contract import run_cli

KEY_ID = "LTAI5tDiskFullKeyId"
SECRET = "DiskFullSecret-0a1b2c"
BUCKET = "dags"


def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"CI runs as root and must mount a tmpfs: {proc.stderr.strip()}")
        pytest.skip(f"cannot mount a tmpfs here (not root?): {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def tiny_root(tmp_path: Path) -> Iterator[Path]:
    yield from small_tmpfs(tmp_path / "mnt", "1m")


def test_a_full_disk_writing_a_store_revision_is_one_clear_line(tiny_root: Path) -> None:
    root = tiny_root / "root"
    with FakeOss(access_key_id=KEY_ID, access_key_secret=SECRET) as oss:
        oss.put(BUCKET, "dags/small.py", b"small = 1\n")
        args = ["once", "--source", "oss", "--oss-endpoint", oss.endpoint]
        args += ["--oss-bucket", BUCKET, "--root", str(root)]
        env = {"OSS_ACCESS_KEY_ID": KEY_ID, "OSS_ACCESS_KEY_SECRET": SECRET}
        assert run_cli(args, env).returncode == 0
        before = state(root)
        oss.put(BUCKET, "dags/big.bin", os.urandom(3 * 1024 * 1024))

        run = run_cli(args, env)

        assert_refused(run, root, before, "no space left on device writing dags/big.bin", "~3 MB")
        assert "staging" not in run.stderr

        oss.delete(BUCKET, "dags/big.bin")  # space comes back: the next sync publishes
        oss.put(BUCKET, "dags/next.py", b"next = 1\n")
        assert run_cli(args, env).returncode == 0
        assert (root / "current" / "dags" / "next.py").read_bytes() == b"next = 1\n"


def test_a_full_disk_writing_a_git_tree_is_one_clear_line(
    git_repo: Repo, hermetic_git_env: dict[str, str], tmp_path: Path
) -> None:
    # 4 MB: the fetched pack (~3 MB of random bytes) fits in the cache, the tree does not.
    # (A pack that does not fit fails in git fetch, with git's own message.)
    mnt = small_tmpfs(tmp_path / "mnt", "4m")
    mount = next(mnt)
    try:
        env = client_env(hermetic_git_env, tmp_path / "home")
        root = mount / "root"
        args = ("once", "--repo", git_repo.file_url, "--root", root)
        assert dagsync(*args, env=env).returncode == 0
        before = (link_target(root), snapshot(published(root)[1]))
        git_repo.write("dags/big.bin", os.urandom(3 * 1024 * 1024))
        git_repo.commit("big")
        git_repo.push()

        run = dagsync(*args, env=env)

        assert run.returncode == 1, run
        errors = error_lines(run.stderr)
        assert len(errors) == 1, run.stderr
        assert "no space left on device writing dags/big.bin" in errors[0], errors[0]
        # 3 MiB of big.bin plus the small files, rounded up
        assert "this revision needs ~4 MB" in errors[0], errors[0]
        assert "Traceback" not in run.stderr and "unexpectedly" not in run.stderr
        assert "staging" not in run.stderr
        assert (link_target(root), snapshot(published(root)[1])) == before
        assert os.listdir(root / ".dagsync" / "staging") == []
    finally:
        next(mnt, None)
