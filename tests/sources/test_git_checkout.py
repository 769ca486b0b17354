"""Trees large enough that git's own checkout writes the new files (dagsync.sources.git.worktree):
what is published must be what the Python writer publishes, byte for byte and mode for mode,
whatever the user's git configuration, umask or the tree's .gitattributes say."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.gitservers import INITIAL_FILES, Repo
from tests.helpers import (
    assert_readable_by_others,
    client_env,
    dagsync,
    inode_mtime,
    published,
    start_dagsync,
    wait_for,
)

FILES = 150  # well above worktree.MIN_FILES
FALLBACK = "writing the files from Python instead"


@pytest.fixture
def env(hermetic_git_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    env = client_env(hermetic_git_env, tmp_path / "home")
    # A user whose git would rewrite line ends and expand nothing else: dagsync publishes the
    # committed bytes regardless.
    (tmp_path / "home" / ".gitconfig").write_text("[core]\n\tautocrlf = true\n")
    return env


def _fill(repo: Repo, version: str, count: int = FILES) -> dict[str, bytes]:
    for path in INITIAL_FILES:
        repo.remove(path)
    files: dict[str, bytes] = {}
    for i in range(count):
        path = f"dags/team_{i % 7}/sub_{i % 3}/dag_{i:03d}.py"
        files[path] = f"# {version} {i} $Id$\nline one\nline two\n".encode()
    for path, data in files.items():
        repo.write(path, data)
    return files


def _tree(folder: Path) -> dict[str, tuple[str, bytes | str, int]]:
    """Every entry under ``folder``: (kind, bytes or link text, permission bits)."""
    out: dict[str, tuple[str, bytes | str, int]] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in filenames + dirnames:
            path = Path(dirpath) / name
            rel = path.relative_to(folder).as_posix()
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(path), 0)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", b"", stat.S_IMODE(st.st_mode))
            else:
                out[rel] = ("file", path.read_bytes(), stat.S_IMODE(st.st_mode))
    return out


def _once(repo: Repo, root: Path, env: dict[str, str], *extra: str) -> str:
    result = dagsync(
        "once", "--repo", repo.file_url, "--root", root, "--log-level", "debug", *extra,
        env=env, umask=0o077,
    )  # fmt: skip
    assert result.returncode == 0, str(result)
    assert FALLBACK not in result.output, result.output
    return result.output


def test_large_tree_has_the_committed_bytes_modes_links_and_links_unchanged_files(
    git_repo: Repo, tmp_path: Path, env: dict[str, str]
) -> None:
    files = _fill(git_repo, "v1")
    git_repo.write("bin/run.sh", "#!/bin/sh\necho hi\n", mode=0o755)
    git_repo.symlink("dags/alias.py", "team_0/sub_0/dag_000.py")
    git_repo.commit("big")
    git_repo.push()
    root = tmp_path / "root"
    _once(git_repo, root, env)
    _, first = published(root)
    tree = _tree(first)
    for path, data in files.items():
        assert tree[path] == ("file", data, 0o644), path  # LF kept, 0644 under umask 077
    assert tree["bin/run.sh"] == ("file", b"#!/bin/sh\necho hi\n", 0o755)
    assert tree["dags/alias.py"] == ("link", "team_0/sub_0/dag_000.py", 0)
    assert tree["dags/team_3/sub_1"][0::2] == ("dir", 0o755)
    assert_readable_by_others([first, *first.rglob("*")])

    # Second revision: most files change (git writes them), the rest are hard links.
    changed = {p: d for i, (p, d) in enumerate(sorted(files.items())) if i % 10}
    for path in changed:
        git_repo.write(path, files[path] + b"# v2\n")
    git_repo.write("bin/run.sh", "#!/bin/sh\necho hi\n", mode=0o644)
    git_repo.commit("most change")
    git_repo.push()
    before = {p: inode_mtime(first / p) for p in files}
    _once(git_repo, root, env)
    _, second = published(root)
    assert second != first
    tree = _tree(second)
    for path, data in files.items():
        want = data + b"# v2\n" if path in changed else data
        assert tree[path] == ("file", want, 0o644), path
        same = inode_mtime(second / path) == before[path]
        assert same == (path not in changed), path
    assert tree["bin/run.sh"][2] == 0o644
    assert not (second.parent / (second.name + ".parts")).exists()


def test_gitattributes_do_not_change_published_bytes(
    git_repo: Repo, tmp_path: Path, env: dict[str, str]
) -> None:
    files = _fill(git_repo, "v1")
    files["dags/ident.py"] = b"# $Id$\n"
    files["dags/notes.txt"] = b"one\ntwo\n"
    git_repo.write("dags/ident.py", files["dags/ident.py"])
    git_repo.write("dags/notes.txt", files["dags/notes.txt"])
    git_repo.write(".gitattributes", "*.py ident\n*.txt text eol=crlf\n")
    git_repo.commit("attributes")
    git_repo.push()
    root = tmp_path / "root"
    _once(git_repo, root, env)
    _, folder = published(root)
    tree = _tree(folder)
    for path, data in files.items():
        assert tree[path][1] == data, path


def test_subpath_of_a_large_tree(git_repo: Repo, tmp_path: Path, env: dict[str, str]) -> None:
    files = _fill(git_repo, "v1")
    git_repo.write("dags/.gitattributes", "*.py ident\n")  # inside --subpath: raw bytes still
    git_repo.commit("attributes in dags")
    git_repo.push()
    root = tmp_path / "root"
    _once(git_repo, root, env, "--subpath", "dags", "--exclude", "team_6/")
    _, folder = published(root)
    tree = {p: v for p, v in _tree(folder).items() if v[0] == "file"}
    wanted = {
        p.removeprefix("dags/"): d for p, d in files.items() if not p.startswith("dags/team_6/")
    }
    assert {p: v[1] for p, v in tree.items()} == {**wanted, ".gitattributes": b"*.py ident\n"}
    # Without the attributes file git's checkout writes them: the same bytes again.
    git_repo.remove("dags/.gitattributes")
    for path in files:
        git_repo.write(path, files[path] + b"# $Id$\n")
    git_repo.commit("no attributes")
    git_repo.push()
    _once(git_repo, root, env, "--subpath", "dags", "--exclude", "team_6/")
    _, folder = published(root)
    tree = {p: v for p, v in _tree(folder).items() if v[0] == "file"}
    assert {p: v[1] for p, v in tree.items()} == {p: d + b"# $Id$\n" for p, d in wanted.items()}


def _checkouts_into(root: Path) -> list[int]:
    """Pids of git checkout-index processes writing under ``root``."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                cmdline = Path(f"/proc/{entry.name}/cmdline").read_bytes()
            except OSError:
                continue
            if b"checkout-index" in cmdline and str(root).encode() in cmdline:
                found.append(int(entry.name))
    return found


def test_git_checkout_dies_with_a_killed_dagsync(
    git_repo: Repo, tmp_path: Path, env: dict[str, str]
) -> None:
    """A pod killed mid-write (SIGKILL) leaves no git writing into a staging folder that the
    next start removes."""
    _fill(git_repo, "v1", count=6000)
    git_repo.commit("many")
    git_repo.push()
    root = tmp_path / "root"
    proc = start_dagsync(
        "once", "--repo", git_repo.file_url, "--root", root, env=env, log=tmp_path / "log"
    )
    try:
        wait_for(lambda: _checkouts_into(root), timeout=120, what="git checkout-index started")
    finally:
        proc.kill()
        proc.wait()
    wait_for(lambda: not _checkouts_into(root), timeout=30, what="checkout-index gone")
    # Killed with dagsync, not left to finish the tree in the abandoned staging folder.
    assert len(list(root.rglob("*.py"))) < 6000
    assert not (root / "current").exists()
    result = dagsync("once", "--repo", git_repo.file_url, "--root", root, env=env)
    assert result.returncode == 0, str(result)
    assert len([p for p in published(root)[1].rglob("*.py")]) == 6000
