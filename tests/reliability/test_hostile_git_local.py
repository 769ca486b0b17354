"""Hostile and unusual names from git and a local folder, through ``dagsync once``: names Linux
and git can hold are published as committed (one odd name must not stop every DAG update);
symlinks leaving the tree and trees Airflow cannot walk are refused naming the symlink, with
the last good revision kept; and a file of the user's at the link is never replaced."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.gitservers import Repo, run_git
from tests.helpers import Result, client_env, dagsync, link_target, published, snapshot
from tests.reliability.hostile_common import error_lines

# Legal in a Linux name and in git: a backslash (not a separator here), a newline, quotes,
# and bytes that are not UTF-8 (0xE9 alone: "café" in Latin-1), kept as surrogate escapes.
ODD_NAMES = ["dags/back\\slash.py", "dags/new\nline.py", "dags/'q\" t.py", "dags/caf\udce9.py"]


@pytest.fixture
def env(hermetic_git_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return client_env(hermetic_git_env, tmp_path / "home")


def once(repo: Repo, root: Path, env: dict[str, str], *extra: str) -> Result:
    return dagsync("once", "--repo", repo.file_url, "--root", root, *extra, env=env)


def test_odd_but_legal_git_names_are_published_as_committed(
    git_repo: Repo, tmp_path: Path, env: dict[str, str]
) -> None:
    for name in ODD_NAMES:
        git_repo.write(name, f"# {name!r}\n")
    git_repo.commit("odd names")
    git_repo.push()
    root = tmp_path / "root"

    run = once(git_repo, root, env)

    assert run.returncode == 0, run
    _, folder = published(root)
    for name in ODD_NAMES:
        assert (folder / name).read_text() == f"# {name!r}\n"
    assert os.fsencode(folder / "dags/caf\udce9.py").endswith(b"caf\xe9.py")


def test_odd_but_legal_local_names_are_published(tmp_path: Path, env: dict[str, str]) -> None:
    src = tmp_path / "src"
    for name in ODD_NAMES:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(repr(name))
    root = tmp_path / "root"

    run = dagsync("once", "--source", "local", "--local-path", src, "--root", root, env=env)

    assert run.returncode == 0, run
    _, folder = published(root)
    assert {n: (folder / n).read_text() for n in ODD_NAMES} == {n: repr(n) for n in ODD_NAMES}


@pytest.mark.parametrize("target", ["/etc/passwd", "../../outside.py", "../.."])
def test_a_committed_symlink_leaving_the_tree_is_refused(
    git_repo: Repo, tmp_path: Path, env: dict[str, str], target: str
) -> None:
    root = tmp_path / "root"
    assert once(git_repo, root, env).returncode == 0
    before = (link_target(root), snapshot(published(root)[1]))
    git_repo.symlink("dags/escape.py", target)
    git_repo.commit("escape")
    git_repo.push()

    run = once(git_repo, root, env)

    assert run.returncode == 1, run
    errors = error_lines(run.stderr)
    assert len(errors) == 1 and "dags/escape.py" in errors[0] and "leaves the tree" in errors[0]
    assert "Traceback" not in run.stderr
    assert (link_target(root), snapshot(published(root)[1])) == before


def test_a_path_too_long_for_the_filesystem_is_one_clear_error(
    git_repo: Repo, tmp_path: Path, env: dict[str, str]
) -> None:
    # Each name is legal (200 bytes), the whole path (4,000+ bytes plus the root) is not:
    # git holds it in its tree, the kernel refuses it (ENAMETOOLONG) when the tree is written.
    long_path = "/".join(["d" * 200] * 20) + "/deep.py"
    blob = run_git(["hash-object", "-w", "--stdin"], cwd=git_repo.work, env=git_repo.env,
                   input="x = 1\n").stdout.strip()  # fmt: skip
    git_repo.git("update-index", "--add", "--cacheinfo", f"100644,{blob},{long_path}")
    git_repo.git("commit", "--quiet", "-m", "a very deep file")
    git_repo.push()
    root = tmp_path / "root"

    run = once(git_repo, root, env)

    assert run.returncode == 1, run
    errors = error_lines(run.stderr)
    assert len(errors) == 1, run.stderr
    assert "name too long for the filesystem" in errors[0] and "deep.py" in errors[0]
    assert "staging" not in run.stderr and "Traceback" not in run.stderr
    assert link_target(root) is None


@pytest.mark.parametrize("kind", ["file", "directory"])
def test_something_of_the_users_at_the_link_is_refused_before_fetching(
    git_repo: Repo, tmp_path: Path, env: dict[str, str], kind: str
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    mine = root / "repo"  # left by an old cron job
    if kind == "file":
        mine.write_text("precious\n")
    else:
        mine.mkdir()
        (mine / "precious.py").write_text("precious\n")

    run = once(git_repo, root, env, "--link", "repo")

    assert run.returncode == 1, run
    errors = error_lines(run.stderr)
    assert len(errors) == 1, run.stderr
    assert str(mine) in errors[0] and f"mv {mine} {mine}.old" in errors[0]
    assert "nothing was replaced" in errors[0]
    if kind == "file":
        assert mine.read_text() == "precious\n" and not mine.is_symlink()
    else:
        assert (mine / "precious.py").read_text() == "precious\n"
    # Refused before anything was fetched: no cached repository, no revision.
    assert not (root / ".dagsync" / "cache" / "git" / "repo.git").exists()
    assert os.listdir(root / ".dagsync" / "revisions") == []


def test_a_local_folder_with_a_loop_link_is_rejected_and_the_old_tree_kept(
    tmp_path: Path, env: dict[str, str]
) -> None:
    # The rule is a check on the manifest, so it holds for every source, not only git.
    src = tmp_path / "src"
    (src / "dags").mkdir(parents=True)
    (src / "dags" / "a.py").write_text("a = 1\n")
    root = tmp_path / "root"
    args = ("once", "--source", "local", "--local-path", src, "--root", root)
    assert dagsync(*args, env=env).returncode == 0
    good = link_target(root)
    os.symlink("..", src / "dags" / "up")

    run = dagsync(*args, env=env)

    assert run.returncode == 1, run
    errors = error_lines(run.stderr)
    assert len(errors) == 1 and "rejected" in errors[0] and "'dags/up'" in errors[0], run.stderr
    assert link_target(root) == good
