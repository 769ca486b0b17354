"""--subpath over a partial clone: only the subtree's blobs are downloaded when the server allows
filters, the whole commit when it does not; the published tree is the same either way."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.gitservers import INITIAL_FILES, GitDaemon, Repo, run_git
from tests.helpers import client_env, dagsync, files_of, published

DATA_FILES = 12
DATA_BYTES = 64 * 1024


@pytest.fixture
def env(hermetic_git_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return client_env(hermetic_git_env, tmp_path / "home")


def with_data(repo: Repo, allow_filter: bool) -> dict[str, str]:
    """Add data/ (incompressible, much larger than dags/) and return dags/'s files."""
    rnd = random.Random(7)
    for i in range(DATA_FILES):
        repo.write(f"data/blob_{i}.bin", rnd.randbytes(DATA_BYTES))
    repo.write("dags/sub/c.py", "# c\n")
    repo.commit("data beside the dags")
    repo.push()
    if allow_filter:
        repo.git("--git-dir", str(repo.bare_path), "config", "uploadpack.allowFilter", "true")
    dags = {k.removeprefix("dags/"): v for k, v in INITIAL_FILES.items() if k.startswith("dags/")}
    return {**dags, "sub/c.py": "# c\n"}


def cache_of(root: Path) -> Path:
    return root / ".dagsync" / "cache" / "git" / "repo.git"


def missing_blobs(root: Path, env: dict[str, str]) -> set[str]:
    cache = cache_of(root)
    out = run_git(["--git-dir", str(cache), "rev-list", "--objects", "--missing=print",
                   "refs/dagsync/current"], env=env).stdout  # fmt: skip
    return {line[1:].split()[0] for line in out.splitlines() if line.startswith("?")}


def blob_ids(repo: Repo, folder: str) -> set[str]:
    out = repo.git("ls-tree", "-r", "HEAD", "--", folder)
    return {line.split()[2] for line in out.splitlines()}


def pack_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in (cache_of(root) / "objects").rglob("*") if p.is_file())


def test_subpath_downloads_only_its_blobs_then_more_as_needed(
    git_repo: Repo, git_daemon: GitDaemon, tmp_path: Path, env: dict[str, str]
) -> None:
    dags = with_data(git_repo, allow_filter=True)
    url = git_daemon.url_for(git_repo.bare_path)
    root = tmp_path / "root"
    result = dagsync("once", "--repo", url, "--root", root, "--subpath", "dags", env=env)
    assert result.returncode == 0, str(result)
    assert published(root)[0] == git_repo.head()
    assert files_of(published(root)[1]) == dags
    data = blob_ids(git_repo, "data")
    assert missing_blobs(root, env) >= data  # not one byte of data/ came over
    assert pack_bytes(root) < DATA_FILES * DATA_BYTES / 4

    # The next commit changes a file inside and one outside: only the inside one comes.
    git_repo.write("dags/a.py", "# a v3\n")
    git_repo.write("data/blob_0.bin", b"changed")
    git_repo.commit("both")
    git_repo.push()
    result = dagsync("once", "--repo", url, "--root", root, "--subpath", "dags", env=env)
    assert result.returncode == 0, str(result)
    assert files_of(published(root)[1]) == {**dags, "a.py": "# a v3\n"}
    assert missing_blobs(root, env) >= blob_ids(git_repo, "data")

    # Without --subpath the same cache serves the whole tree: the rest comes in one fetch.
    result = dagsync("once", "--repo", url, "--root", root, env=env)
    assert result.returncode == 0, str(result)
    tree = published(root)[1]
    assert (tree / "data" / "blob_0.bin").read_bytes() == b"changed"
    assert (tree / "dags" / "a.py").read_text() == "# a v3\n"
    assert len(list((tree / "data").iterdir())) == DATA_FILES
    assert missing_blobs(root, env) == set()


def test_subpath_from_a_server_without_filters_fetches_the_whole_commit(
    git_repo: Repo, git_daemon: GitDaemon, tmp_path: Path, env: dict[str, str]
) -> None:
    dags = with_data(git_repo, allow_filter=False)
    root = tmp_path / "root"
    url = git_daemon.url_for(git_repo.bare_path)
    result = dagsync("once", "--repo", url, "--root", root, "--subpath", "dags", env=env)
    assert result.returncode == 0, str(result)
    assert files_of(published(root)[1]) == dags
    assert missing_blobs(root, env) == set()  # the server ignored the filter: all came over
