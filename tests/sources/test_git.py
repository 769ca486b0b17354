"""The git source end to end: ``dagsync`` as a subprocess against real servers on loopback.

Every scenario looks at what a user sees: the files under the link, the link's target (relative,
basename = commit SHA), the exit code and the output. Transports: file://, git daemon, smart HTTP
with basic auth (username + password file), sshd with key and strict known_hosts.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import sys
import sysconfig
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.gitservers import (
    HTTP_PASSWORD,
    HTTP_USERNAME,
    INITIAL_FILES,
    GitHttpServer,
    Repo,
    SshServer,
    run_git,
)
from tests.helpers import (
    Result,
    assert_published,
    assert_readable_by_others,
    client_env,
    dagsync,
    descendants,
    files_of,
    inode_mtime,
    leftovers,
    link_target,
    published,
    revision_folders,
    snapshot,
    start_dagsync,
    terminate,
    wait_for,
)

TRANSPORTS = ["file", "git", "http-auth", pytest.param("ssh", marks=pytest.mark.ssh)]


@dataclass
class Remote:
    """How dagsync reaches one repository: its URL, the auth flags, the secrets involved."""

    url: str
    args: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)


def key_secrets(key: Path) -> list[str]:
    """The lines of a private key that must never be printed."""
    return [line for line in key.read_text().splitlines() if line and not line.startswith("-")]


@pytest.fixture
def env(hermetic_git_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return client_env(hermetic_git_env, tmp_path / "home")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "root"  # missing: dagsync creates it


@pytest.fixture
def remote_for(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str, Repo], Remote]:
    def make(transport: str, repo: Repo) -> Remote:
        if transport == "file":
            return Remote(repo.file_url)
        if transport == "git":
            return Remote(request.getfixturevalue("git_daemon").url_for(repo.bare_path))
        if transport == "http":
            return Remote(request.getfixturevalue("git_http").url_for(repo.bare_path))
        if transport == "http-auth":
            server: GitHttpServer = request.getfixturevalue("git_http_auth")
            password_file = tmp_path / "password"
            password_file.write_text(HTTP_PASSWORD + "\n")
            return Remote(
                server.url_for(repo.bare_path),
                ["--username", HTTP_USERNAME, "--password-file", str(password_file)],
                [HTTP_PASSWORD],
            )
        sshd: SshServer = request.getfixturevalue("sshd")
        url = sshd.scp_url_for(repo.bare_path) if transport == "ssh-scp" else None
        return Remote(
            url or sshd.url_for(repo.bare_path),
            [
                "--ssh-key-file",
                str(sshd.client_key),
                "--ssh-known-hosts-file",
                str(sshd.known_hosts),
            ],
            key_secrets(sshd.client_key),
        )

    return make


def once(remote: Remote, root: Path, env: dict[str, str], *extra: str) -> Result:
    result = dagsync("once", "--repo", remote.url, "--root", root, *remote.args, *extra, env=env)
    for secret in remote.secrets:
        assert secret not in result.output, "a secret was printed"
    return result


def ok(result: Result) -> Result:
    assert result.returncode == 0, str(result)
    return result


# --- initial syncs ----------------------------------------------------------------------------


ALL_TRANSPORTS = [*TRANSPORTS, "http", pytest.param("ssh-scp", marks=pytest.mark.ssh)]


@pytest.mark.parametrize("transport", ALL_TRANSPORTS)
def test_initial_sync_into_a_missing_root(
    transport: str, git_repo: Repo, remote_for: Callable[[str, Repo], Remote], root: Path,
    env: dict[str, str],
) -> None:  # fmt: skip
    remote = remote_for(transport, git_repo)
    ok(once(remote, root, env))
    folder = assert_published(root, git_repo.head(), INITIAL_FILES)
    assert os.readlink(root / "current") == f".dagsync/revisions/{git_repo.head()}"
    assert (root / ".airflowignore").read_text() == ".dagsync\n"
    assert leftovers(root) == []
    status = dagsync("status", "--root", root, env=env)
    assert status.returncode == 0 and git_repo.head() in status.stdout
    assert_readable_by_others([folder, *folder.rglob("*")])


def test_initial_sync_into_an_existing_root_keeps_foreign_files(
    git_repo: Repo, root: Path, env: dict[str, str]
) -> None:
    root.mkdir()
    ok(once(Remote(git_repo.file_url), root, env))  # an empty existing root (a fresh volume)
    assert_published(root, git_repo.head(), INITIAL_FILES)

    other = root.parent / "mounted"
    other.mkdir()
    (other / "lost+found").mkdir()
    (other / "notes.txt").write_text("not dagsync's\n")
    (other / ".airflowignore").write_text("tmp")
    ok(once(Remote(git_repo.file_url), other, env, "--link", "dags/current"))
    assert (other / "notes.txt").read_text() == "not dagsync's\n"
    assert (other / "lost+found").is_dir()
    assert (other / ".airflowignore").read_text() == "tmp\n.dagsync\n"
    # A link given as a path stays relative to where it lives.
    assert os.readlink(other / "dags" / "current") == f"../.dagsync/revisions/{git_repo.head()}"
    assert_published(other, git_repo.head(), INITIAL_FILES, link="dags/current")


# --- refs moving ------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_branch_moves_forward_and_backward(
    transport: str, git_repo: Repo, remote_for: Callable[[str, Repo], Remote], root: Path,
    env: dict[str, str],
) -> None:  # fmt: skip
    remote = remote_for(transport, git_repo)
    first = git_repo.head()
    ok(once(remote, root, env, "--ref", "main"))
    assert_published(root, first, INITIAL_FILES)

    git_repo.write("dags/a.py", "# dag a, v2\n")
    git_repo.write("dags/c.py", "# dag c\n")
    git_repo.remove("README.md")
    second = git_repo.commit("second")
    git_repo.push()
    ok(once(remote, root, env, "--ref", "main"))
    expected = {"dags/a.py": "# dag a, v2\n", "dags/b.py": INITIAL_FILES["dags/b.py"]}
    assert_published(root, second, {**expected, "dags/c.py": "# dag c\n"})

    git_repo.reset_hard(first)  # a force-push back to the first commit
    git_repo.push(force=True)
    ok(once(remote, root, env, "--ref", "main"))
    assert_published(root, first, INITIAL_FILES)
    assert leftovers(root) == []


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_tags_lightweight_annotated_and_moved(
    transport: str, git_repo: Repo, remote_for: Callable[[str, Repo], Remote], root: Path,
    env: dict[str, str],
) -> None:  # fmt: skip
    remote = remote_for(transport, git_repo)
    first = git_repo.head()
    git_repo.tag("light")
    git_repo.tag("v1", annotated=True)
    git_repo.write("dags/a.py", "# moved on\n")
    second = git_repo.commit("second")
    git_repo.push()

    ok(once(remote, root, env, "--ref", "light"))
    assert_published(root, first, INITIAL_FILES)
    ok(once(remote, root, env, "--ref", "v1"))  # the commit, not the tag object
    assert_published(root, first, INITIAL_FILES)

    git_repo.tag("v1", annotated=True, force=True)  # moved to the second commit
    ok(once(remote, root, env, "--ref", "v1"))
    assert published(root)[0] == second
    git_repo.tag("light", sha=first, force=True)
    ok(once(remote, root, env, "--ref", "refs/tags/light"))
    assert_published(root, first, INITIAL_FILES)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_full_sha_that_is_not_a_branch_tip(
    transport: str, git_repo: Repo, remote_for: Callable[[str, Repo], Remote], root: Path,
    env: dict[str, str],
) -> None:  # fmt: skip
    remote = remote_for(transport, git_repo)
    first = git_repo.head()
    git_repo.write("dags/a.py", "# later\n")
    git_repo.commit("second")
    git_repo.push()
    ok(once(remote, root, env, "--ref", first))
    assert_published(root, first, INITIAL_FILES)
    ok(once(remote, root, env, "--ref", first.upper()))  # same commit: nothing to do
    assert published(root)[0] == first


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_branch_switch_and_repo_switch_on_one_root(
    transport: str, make_git_repo: Callable[..., Repo],
    remote_for: Callable[[str, Repo], Remote], root: Path, env: dict[str, str],
) -> None:  # fmt: skip
    repo = make_git_repo("origin")
    repo.git("checkout", "--quiet", "-b", "feature")
    repo.write("dags/feature.py", "# feature\n")
    feature = repo.commit("feature")
    repo.push("feature")
    repo.checkout("main")
    remote = remote_for(transport, repo)

    ok(once(remote, root, env, "--ref", "main"))
    assert_published(root, repo.head(), INITIAL_FILES)
    ok(once(remote, root, env, "--ref", "feature"))
    assert_published(root, feature, {**INITIAL_FILES, "dags/feature.py": "# feature\n"})

    other = make_git_repo("other", initial=False)
    other.write("only.py", "# another repository\n")
    other_head = other.commit("other")
    other.push()
    ok(once(remote_for(transport, other), root, env))
    assert_published(root, other_head, {"only.py": "# another repository\n"})
    assert leftovers(root) == []


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_wrong_ref_fails_and_publishes_nothing(
    transport: str, git_repo: Repo, remote_for: Callable[[str, Repo], Remote], root: Path,
    env: dict[str, str],
) -> None:  # fmt: skip
    remote = remote_for(transport, git_repo)
    result = once(remote, root, env, "--ref", "no-such-branch")
    assert result.returncode == 1, str(result)
    assert "no-such-branch" in result.stderr
    assert link_target(root) is None
    assert revision_folders(root) == []
    assert leftovers(root) == []
    status = dagsync("status", "--root", root, env=env)
    assert status.returncode == 1

    missing = "0123456789abcdef0123456789abcdef01234567"
    result = once(remote, root, env, "--ref", missing)
    assert result.returncode == 1, str(result)
    assert link_target(root) is None and leftovers(root) == []


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_deleted_link_or_revision_folder_is_rebuilt(
    transport: str, git_repo: Repo, remote_for: Callable[[str, Repo], Remote], root: Path,
    env: dict[str, str],
) -> None:  # fmt: skip
    remote = remote_for(transport, git_repo)
    head = git_repo.head()
    ok(once(remote, root, env))
    (root / "current").unlink()
    ok(once(remote, root, env))
    assert_published(root, head, INITIAL_FILES)

    shutil.rmtree(root / ".dagsync" / "revisions" / head)
    ok(once(remote, root, env))
    assert_published(root, head, INITIAL_FILES)

    (root / "current").unlink()  # a dangling temp link from a crash must not get in the way
    os.symlink(".dagsync/revisions/gone", root / ".current.tmp-dagsync-0123456789ab")
    os.symlink(".dagsync/revisions/gone", root / "current")  # dangling
    ok(once(remote, root, env))
    assert_published(root, head, INITIAL_FILES)
    assert leftovers(root) == []


@pytest.mark.parametrize(
    "damage",
    ["refs deleted", "half an init (HEAD only)", "leftover init folder"],
)
def test_a_damaged_cache_repository_is_made_anew(
    damage: str, git_repo: Repo, root: Path, env: dict[str, str]
) -> None:
    """A kill -9 during ``git init``, a full disk or a stray rm must not wedge every later sync."""
    ok(dagsync("once", "--repo", git_repo.file_url, "--root", root, env=env))
    cache = root / ".dagsync" / "cache" / "git" / "repo.git"
    if damage == "refs deleted":
        shutil.rmtree(cache / "refs")
    elif damage == "half an init (HEAD only)":
        shutil.rmtree(cache)
        cache.mkdir()
        (cache / "HEAD").write_text("ref: refs/heads/main\n")
    else:
        (cache.parent / "repo.git.init-0badc0de").mkdir()
    git_repo.write("dags/new.py", "N = 1\n")
    second = git_repo.commit("new")
    git_repo.push()
    result = dagsync("once", "--repo", git_repo.file_url, "--root", root, env=env)
    ok(result)
    assert published(root)[0] == second
    assert sorted(p.name for p in cache.parent.iterdir()) == ["repo.git"]


# --- auth -------------------------------------------------------------------------------------


def test_http_wrong_password_fails_without_printing_it(
    git_repo: Repo, git_http_auth: GitHttpServer, root: Path, env: dict[str, str], tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-s3cr3t\n")
    url = git_http_auth.url_for(git_repo.bare_path)
    for args in (
        ["--username", HTTP_USERNAME, "--password-file", str(wrong)],
        [],  # no credentials at all: git must not prompt
    ):
        result = dagsync("once", "--repo", url, "--root", root, *args, env=env, timeout=30)
        assert result.returncode == 1, str(result)
        assert "not-the-s3cr3t" not in result.output and HTTP_PASSWORD not in result.output
        assert link_target(root) is None and revision_folders(root) == []
    assert all(HTTP_PASSWORD not in r.target for r in git_http_auth.requests)


def test_http_password_file_is_reread_on_every_sync(
    git_repo: Repo, git_http_auth: GitHttpServer, root: Path, env: dict[str, str], tmp_path: Path
) -> None:
    password_file = tmp_path / "token"
    password_file.write_text(HTTP_PASSWORD)
    remote = Remote(
        git_http_auth.url_for(git_repo.bare_path),
        ["--username", HTTP_USERNAME, "--password-file", str(password_file)],
        [HTTP_PASSWORD, "rotated-t0ken"],
    )
    ok(once(remote, root, env))
    git_repo.write("dags/a.py", "# after rotation\n")
    second = git_repo.commit("second")
    git_repo.push()

    git_http_auth.password = "rotated-t0ken"  # the server rotates first: the old token fails
    assert once(remote, root, env).returncode == 1
    assert published(root)[0] == git_repo.rev_parse("HEAD~1")
    password_file.write_text("rotated-t0ken\n")  # then the mounted secret is updated
    ok(once(remote, root, env))
    assert published(root)[0] == second


@pytest.mark.ssh
def test_ssh_wrong_key_or_host_key_fails_without_printing_the_key(
    git_repo: Repo, sshd: SshServer, root: Path, env: dict[str, str]
) -> None:
    url = sshd.url_for(git_repo.bare_path)
    secrets = key_secrets(sshd.client_key) + key_secrets(sshd.wrong_key)
    cases = [
        ["--ssh-key-file", sshd.wrong_key, "--ssh-known-hosts-file", sshd.known_hosts],
        ["--ssh-key-file", sshd.client_key, "--ssh-known-hosts-file", sshd.wrong_known_hosts],
        ["--ssh-key-file", sshd.client_key],  # no known_hosts: the host is unknown
    ]
    for args in cases:
        result = dagsync("once", "--repo", url, "--root", root, *args, env=env, timeout=30)
        assert result.returncode == 1, str(result)
        assert not any(s in result.output for s in secrets)
        assert link_target(root) is None and revision_folders(root) == []
        assert leftovers(root) == []


@pytest.mark.ssh
def test_ssh_key_mounted_0440_and_known_hosts_checking_off(
    git_repo: Repo, sshd: SshServer, root: Path, env: dict[str, str], tmp_path: Path
) -> None:
    mounted = tmp_path / "git-secret"
    mounted.mkdir()
    key = mounted / "ssh"
    shutil.copyfile(sshd.client_key, key)
    key.chmod(0o440)  # as Kubernetes mounts a secret; ssh itself refuses such a key
    os.chown(key, 0, 0)
    url = sshd.url_for(git_repo.bare_path)
    result = dagsync(
        "once", "--repo", url, "--root", root, "--ssh-key-file", key,
        "--ssh-known-hosts-file", sshd.known_hosts, env=env,
    )  # fmt: skip
    ok(result)
    assert_published(root, git_repo.head(), INITIAL_FILES)
    assert stat.S_IMODE(key.stat().st_mode) == 0o440  # untouched

    git_repo.write("dags/a.py", "# v2\n")
    second = git_repo.commit("second")
    git_repo.push()
    ok(dagsync("once", "--repo", url, "--root", root, "--ssh-key-file", key,
               "--ssh-known-hosts=false", env=env))  # fmt: skip
    assert published(root)[0] == second


# --- what the tree holds ----------------------------------------------------------------------


def test_depth_one_and_full_history(git_repo: Repo, root: Path, env: dict[str, str]) -> None:
    remote = Remote(git_repo.file_url)
    for i in range(3):
        git_repo.write("dags/a.py", f"# v{i}\n")
        git_repo.commit(f"c{i}")
    git_repo.push()
    cache = root / ".dagsync" / "cache" / "git" / "repo.git"

    def commits_in_cache() -> int:
        out = run_git(["--git-dir", str(cache), "rev-list", "--count", git_repo.head()], env=env)
        return int(out.stdout)

    ok(once(remote, root, env, "--depth", "1"))
    assert_published(root, git_repo.head(), {**INITIAL_FILES, "dags/a.py": "# v2\n"})
    assert commits_in_cache() == 1
    git_repo.write("dags/b.py", "# b2\n")
    git_repo.commit("c3")
    git_repo.push()
    ok(once(remote, root, env, "--depth", "0"))
    assert commits_in_cache() == 5
    ok(once(remote, Path(str(root) + "-full"), env, "--depth", "0"))
    assert published(Path(str(root) + "-full"))[0] == git_repo.head()


@pytest.mark.parametrize("transport", ["file", "git"])
def test_submodules_recursive_shallow_and_off(
    transport: str, make_git_repo: Callable[..., Repo],
    remote_for: Callable[[str, Repo], Remote], tmp_path: Path, env: dict[str, str],
) -> None:  # fmt: skip
    inner = make_git_repo("inner", initial=False)
    inner.write("inner.py", "# inner\n")
    inner.commit("inner")
    inner.push()
    lib = make_git_repo("lib", initial=False)
    lib.write("lib.py", "# lib\n")
    lib.add_submodule("../inner.git", "vendor/inner")  # relative URLs, resolved by dagsync
    lib.commit("lib")
    lib.push()
    top = make_git_repo("top")
    top.add_submodule("../lib.git", "dags/lib")
    top.commit("with submodule")
    top.push()
    remote = remote_for(transport, top)
    gitmodules = top.work.joinpath(".gitmodules").read_text()
    base = {**INITIAL_FILES, ".gitmodules": gitmodules}
    lib_files = {
        "dags/lib/lib.py": "# lib\n",
        "dags/lib/.gitmodules": lib.work.joinpath(".gitmodules").read_text(),
    }

    expected = {
        "recursive": {**base, **lib_files, "dags/lib/vendor/inner/inner.py": "# inner\n"},
        "shallow": {**base, **lib_files},
        "off": base,
    }
    for mode, files in expected.items():
        root = tmp_path / f"root-{mode}"
        ok(once(remote, root, env, "--submodules", mode))
        assert_published(root, top.head(), files)

    # The submodule moves: the superproject's next commit is published with the new lib.
    lib.write("lib.py", "# lib v2\n")
    lib.commit("lib v2")
    lib.push()
    top.update_submodule("dags/lib")
    top.commit("bump lib")
    top.push()
    root = tmp_path / "root-recursive"
    ok(once(remote, root, env, "--submodules", "recursive"))
    moved = {**expected["recursive"], "dags/lib/lib.py": "# lib v2\n"}
    assert_published(root, top.head(), moved)
    # --subpath reaches into a submodule.
    sub_root = tmp_path / "root-subpath"
    ok(once(remote, sub_root, env, "--subpath", "dags/lib"))
    assert files_of(published(sub_root)[1]) == {
        "lib.py": "# lib v2\n",
        ".gitmodules": lib_files["dags/lib/.gitmodules"],
        "vendor/inner/inner.py": "# inner\n",
    }


def test_subpath_include_and_exclude(git_repo: Repo, tmp_path: Path, env: dict[str, str]) -> None:
    git_repo.write("dags/sub/c.py", "# c\n")
    git_repo.write("dags/sub/notes.md", "notes\n")
    git_repo.write("dags/tests/test_a.py", "# test\n")
    git_repo.commit("more")
    git_repo.push()
    remote = Remote(git_repo.file_url)
    head = git_repo.head()

    root = tmp_path / "subpath"
    ok(once(remote, root, env, "--subpath", "dags/"))
    assert_published(root, head, {
        "a.py": "# dag a\nDAG_ID = 'a'\n", "b.py": "# dag b\nDAG_ID = 'b'\n",
        "sub/c.py": "# c\n", "sub/notes.md": "notes\n", "tests/test_a.py": "# test\n",
    })  # fmt: skip

    root = tmp_path / "filtered"
    ok(once(remote, root, env, "--subpath", "dags", "--include", "*.py",
            "--exclude", "tests/", "--exclude", "b.py"))  # fmt: skip
    assert files_of(published(root)[1]) == {"a.py": INITIAL_FILES["dags/a.py"], "sub/c.py": "# c\n"}

    root = tmp_path / "negated"
    ok(once(remote, root, env, "--exclude", "*.md", "--exclude", "!README.md",
            "--exclude", "/dags/sub"))  # fmt: skip
    assert set(files_of(published(root)[1])) == {
        "README.md",
        "dags/a.py",
        "dags/b.py",
        "dags/tests/test_a.py",
    }

    # A mistyped (or moved) subpath is an error, not an empty tree that would make Airflow
    # drop every DAG; the previous revision stays.
    for wrong in ("nope", "dags/a.py", "dags/sub/c.py/x"):
        result = once(remote, root, env, "--subpath", wrong)
        assert result.returncode == 1, str(result)
        assert f"--subpath {wrong!r} not found" in result.stderr
        assert published(root)[0] == head
    # A subpath that exists but whose files the filters all leave out is the user's choice.
    ok(once(remote, tmp_path / "all-excluded", env, "--subpath", "dags/sub", "--exclude", "*"))
    assert files_of(published(tmp_path / "all-excluded")[1]) == {}


def test_changed_selection_rebuilds_the_same_commit(
    git_repo: Repo, root: Path, env: dict[str, str]
) -> None:
    remote = Remote(git_repo.file_url)
    head = git_repo.head()
    ok(once(remote, root, env))
    _, folder = published(root)
    before = inode_mtime(folder / "dags/a.py")
    ok(once(remote, root, env, "--exclude", "README.md"))  # same commit, other options
    rebuilt = assert_published(root, head, {k: v for k, v in INITIAL_FILES.items()
                                            if k != "README.md"})  # fmt: skip
    assert inode_mtime(rebuilt / "dags/a.py") == before  # still reused, not downloaded
    link, tree = _lstat(root / "current"), _lstat(rebuilt)
    ok(once(remote, root, env, "--exclude", "README.md"))  # and now nothing to do
    assert (_lstat(root / "current"), _lstat(rebuilt)) == (link, tree)
    assert leftovers(root) == []


def test_exec_bits_and_symlinks_as_committed(
    git_repo: Repo, root: Path, env: dict[str, str]
) -> None:
    git_repo.write("bin/run.sh", "#!/bin/sh\necho hi\n", mode=0o755)
    git_repo.symlink("dags/alias.py", "a.py")
    git_repo.symlink("shared.py", "dags/b.py")  # (a link to a folder is rejected: SPEC 3)
    git_repo.commit("modes")
    git_repo.push()
    ok(dagsync("once", "--repo", git_repo.file_url, "--root", root, env=env, umask=0o077))
    _, folder = published(root)
    tree = snapshot(folder)
    assert tree["bin/run.sh"] == ("file", "#!/bin/sh\necho hi\n", "x")
    assert tree["dags/a.py"][2] == "-"
    assert tree["dags/alias.py"] == ("link", "a.py")
    assert tree["shared.py"] == ("link", "dags/b.py")
    assert (folder / "shared.py").read_text() == INITIAL_FILES["dags/b.py"]
    # Readable by Airflow's uid whatever dagsync's umask was.
    assert_readable_by_others([root, root / ".dagsync", folder, *folder.rglob("*")])

    git_repo.write("bin/run.sh", "#!/bin/sh\necho hi\n", mode=0o644)  # only the mode changes
    git_repo.commit("not executable any more")
    git_repo.push()
    ok(once(Remote(git_repo.file_url), root, env))
    assert snapshot(published(root)[1])["bin/run.sh"][2] == "-"


def test_unchanged_files_keep_inode_and_mtime(
    git_repo: Repo, root: Path, env: dict[str, str]
) -> None:
    remote = Remote(git_repo.file_url)
    ok(once(remote, root, env))
    _, first = published(root)
    before = {p: inode_mtime(first / p) for p in INITIAL_FILES}
    git_repo.write("dags/a.py", "# changed\n")
    git_repo.commit("change a")
    git_repo.push()
    ok(once(remote, root, env))
    _, second = published(root)
    assert second != first
    assert inode_mtime(second / "dags/b.py") == before["dags/b.py"]
    assert inode_mtime(second / "README.md") == before["README.md"]
    assert inode_mtime(second / "dags/a.py")[0] != before["dags/a.py"][0]
    # The superseded revision is still complete for readers that hold it (--keep-revisions 2).
    assert files_of(first) == INITIAL_FILES


def test_no_change_pass_fetches_nothing_and_touches_nothing(
    git_repo: Repo, git_http: GitHttpServer, root: Path, env: dict[str, str]
) -> None:
    remote = Remote(git_http.url_for(git_repo.bare_path))
    ok(once(remote, root, env))
    git_repo.write("dags/a.py", "# two\n")
    git_repo.commit("two")
    git_repo.push()
    ok(once(remote, root, env))

    def disk() -> dict[str, tuple[int, int, int]]:
        watched = [root / ".dagsync" / "revisions", root / ".dagsync" / "cache"]
        out = {"link": _lstat(root / "current")}
        for top in watched:
            out[str(top)] = _lstat(top)
            for path in top.rglob("*"):
                out[str(path)] = _lstat(path)
        return out

    before = disk()
    git_http.clear_requests()
    ok(once(remote, root, env))
    assert disk() == before
    # Only the ref advertisement (GET info/refs, POST ls-refs); a fetch would add two more.
    assert 1 <= len(git_http.requests) <= 2


def _lstat(path: Path) -> tuple[int, int, int]:
    st = path.lstat()
    return st.st_ino, st.st_mtime_ns, st.st_size


# --- timeouts and the long-running mode -------------------------------------------------------


def test_sync_timeout_kills_a_hung_server(
    git_repo: Repo, git_http: GitHttpServer, root: Path, env: dict[str, str]
) -> None:
    url = git_http.url_for(git_repo.bare_path)
    git_http.hang.set()
    for ref in ("main", git_repo.head()):  # hangs in ls-remote, then (a SHA) in the fetch
        started = time.monotonic()
        result = dagsync("once", "--repo", url, "--root", root, "--ref", ref,
                         "--sync-timeout", "1500ms", env=env, timeout=30)  # fmt: skip
        assert result.returncode == 1, str(result)
        assert time.monotonic() - started < 10
        assert "sync-timeout" in result.stderr
        assert link_target(root) is None and leftovers(root) == []
    port = f":{git_http.port}/"
    assert not [pid for pid in _pids_with(port)], "a git process outlived dagsync"


def _pids_with(text: str) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                cmdline = Path(f"/proc/{entry.name}/cmdline").read_bytes()
            except OSError:
                continue
            if text.encode() in cmdline and b"pytest" not in cmdline:
                found.append(int(entry.name))
    return found


def test_run_syncs_on_sighup_and_stops_cleanly_on_sigterm(
    git_repo: Repo, git_http: GitHttpServer, root: Path, env: dict[str, str], tmp_path: Path
) -> None:
    log = tmp_path / "run.log"
    url = git_http.url_for(git_repo.bare_path)
    proc = start_dagsync("run", "--repo", url, "--root", root, "--period", "1h",
                         "--http-bind", "", env=env, log=log)  # fmt: skip
    try:
        first = git_repo.head()
        wait_for(lambda: link_target(root), what="the first publish")
        assert published(root)[0] == first

        git_repo.write("dags/a.py", "# hup\n")
        second = git_repo.commit("second")
        git_repo.push()
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: published(root)[0] == second, what="a sync after SIGHUP")

        # A SIGTERM in the middle of a (slow) sync abandons it: exit 0, no staging left.
        git_http.hang.set()  # requests are logged, then never answered
        git_repo.write("dags/a.py", "# never published\n")
        git_repo.commit("third")
        git_repo.push()
        git_http.clear_requests()
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: git_http.requests, what="the next sync to reach the server")
        started = time.monotonic()
        assert terminate(proc) == 0, log.read_text()
        assert time.monotonic() - started < 10
        assert published(root)[0] == second
        assert leftovers(root) == []
        assert descendants(proc.pid) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_run_gives_up_after_max_failures(root: Path, env: dict[str, str], tmp_path: Path) -> None:
    missing = (tmp_path / "no-such-repo.git").as_uri()
    started = time.monotonic()
    result = dagsync("run", "--repo", missing, "--root", root, "--period", "100ms",
                     "--max-failures", "2", "--http-bind", "", "--log-format", "json",
                     env=env, timeout=30)  # fmt: skip
    assert result.returncode == 1, str(result)
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    failed = [e for e in events if (e["logger"], e["event"]) == ("dagsync.syncer", "sync failed")]
    assert len(failed) == 2  # as git-sync counts: exit on the 2nd failure in a row
    assert time.monotonic() - started < 15
    assert link_target(root) is None


# --- an arbitrary uid with no passwd entry (the Airflow chart runs git-sync as 65533) ----------

NO_PASSWD_UID = 65533
SYSTEM_PYTHON = Path("/usr/bin/python3")


def _import_path_for_other_uids() -> str | None:
    """A PYTHONPATH that gives /usr/bin/python3 this dagsync and its dependencies, if every
    folder on it is readable by others; None when that cannot work here."""
    import dagsync

    if not SYSTEM_PYTHON.exists() or shutil.which("setpriv") is None:
        return None
    version = run_quiet([str(SYSTEM_PYTHON), "-c", "import sys; print(sys.version_info[:2])"])
    if version != str(sys.version_info[:2]):
        return None  # compiled dependencies are built for this interpreter's version
    folders = [Path(sysconfig.get_paths()["purelib"]), Path(dagsync.__file__).parent.parent]
    for folder in folders:
        for part in [folder, *folder.parents]:
            if part.stat().st_mode & 0o005 != 0o005:
                return None
    return os.pathsep.join(str(f) for f in folders)


def run_quiet(argv: list[str]) -> str:
    import subprocess

    return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()


@pytest.mark.ssh
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to uid 65533")
def test_ssh_as_a_uid_without_passwd_entry_with_a_root_owned_0440_key(
    git_repo: Repo, sshd: SshServer
) -> None:
    import pwd
    import subprocess
    import tempfile

    with contextlib.suppress(KeyError):
        pwd.getpwuid(NO_PASSWD_UID)
        pytest.skip(f"uid {NO_PASSWD_UID} has a passwd entry here")
    python_path = _import_path_for_other_uids()
    if python_path is None:
        pytest.skip("no world-readable Python 3 of this version with dagsync importable")
    top = Path(tempfile.mkdtemp(prefix="dagsync-uid-"))
    try:
        top.chmod(0o755)
        secret = top / "git-secret"  # as Kubernetes mounts a secret: root-owned, 0440
        secret.mkdir(mode=0o755)
        key, known_hosts = secret / "ssh", secret / "known_hosts"
        shutil.copyfile(sshd.client_key, key)
        shutil.copyfile(sshd.known_hosts, known_hosts)
        key.chmod(0o440)
        known_hosts.chmod(0o444)
        root = top / "root"
        root.mkdir()
        os.chown(root, NO_PASSWD_UID, 0)
        as_uid = ["setpriv", f"--reuid={NO_PASSWD_UID}", "--regid=0", "--clear-groups"]
        env = {"PATH": "/usr/bin:/bin", "HOME": "/", "GIT_CONFIG_NOSYSTEM": "1",
               "PYTHONPATH": python_path}  # fmt: skip

        # The control: plain OpenSSH refuses to run for this uid at all.
        control = subprocess.run(
            [*as_uid, "ssh", "-o", "BatchMode=yes", "-p", str(sshd.port), "127.0.0.1", "true"],
            capture_output=True, text=True, env=env, timeout=30,
        )  # fmt: skip
        assert control.returncode != 0 and "No user exists" in control.stderr

        expected = dict(INITIAL_FILES)
        for url in (sshd.url_for(git_repo.bare_path), sshd.scp_url_for(git_repo.bare_path)):
            proc = subprocess.run(
                [*as_uid, str(SYSTEM_PYTHON), "-m", "dagsync", "once", "--repo", url,
                 "--root", str(root), "--ssh-key-file", str(key),
                 "--ssh-known-hosts-file", str(known_hosts)],
                capture_output=True, text=True, env=env, timeout=60, cwd=top,
            )  # fmt: skip
            result = Result(proc.returncode, proc.stdout, proc.stderr)
            assert result.returncode == 0, str(result)
            assert not any(s in result.output for s in key_secrets(key))
            assert_published(root, git_repo.head(), expected)
            expected["dags/a.py"] = f"# after {url}\n"
            git_repo.write("dags/a.py", expected["dags/a.py"])
            git_repo.commit("next")
            git_repo.push()
        assert root.joinpath(".dagsync").stat().st_uid == NO_PASSWD_UID
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_blob_batch_reads_in_order_and_names_a_missing_blob(git_repo: Repo) -> None:
    import io

    from dagsync.errors import SourceError
    from dagsync.sources.git.batch import BlobBatch
    from dagsync.sources.git.command import GitCommand

    git = GitCommand(lambda: dict(git_repo.env or {}), [])
    listing = git_repo.git("ls-tree", "-r", "HEAD").splitlines()
    shas = {line.split("\t")[1]: line.split()[2] for line in listing}
    a, b = shas["dags/a.py"], shas["dags/b.py"]
    with BlobBatch(git, git_repo.bare_path, [a, b, a]) as blobs:
        assert blobs.read(a) == INITIAL_FILES["dags/a.py"].encode()
        out = io.BytesIO()
        assert blobs.copy_to(b, out) == len(INITIAL_FILES["dags/b.py"])
        assert out.getvalue() == INITIAL_FILES["dags/b.py"].encode()
        assert blobs.read(a) == INITIAL_FILES["dags/a.py"].encode()
    missing = "0" * 40
    wanted = f"wanted blob {missing}, got {missing} missing"
    with (
        BlobBatch(git, git_repo.bare_path, [missing]) as blobs,
        pytest.raises(SourceError, match=wanted),
    ):
        blobs.read(missing)
    with BlobBatch(git, git_repo.bare_path, [a, b]) as blobs:
        blobs.read(a)  # closed early (an error, a deadline): git is stopped, nothing hangs


# --- pure helpers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parent", "url", "expected"),
    [
        ("file:///srv/git/top.git", "../lib.git", "file:///srv/git/lib.git"),
        ("file:///srv/git/top.git", "./lib.git", "file:///srv/git/top.git/lib.git"),
        ("https://host/org/top.git", "../../other/lib.git", "https://host/other/lib.git"),
        ("https://host/org/top", "../lib", "https://host/org/lib"),
        ("git://127.0.0.1:9418/a/top.git/", "../lib.git", "git://127.0.0.1:9418/a/lib.git"),
        ("git@github.com:org/top.git", "../lib.git", "git@github.com:org/lib.git"),
        ("git@github.com:top.git", "../lib.git", "git@github.com:lib.git"),
        ("[git@host:2222]:/srv/top.git", "../lib.git", "[git@host:2222]:/srv/lib.git"),
        ("ssh://git@host:2222/srv/top.git", "../lib.git", "ssh://git@host:2222/srv/lib.git"),
        ("https://host/org/top.git", "https://elsewhere/x.git", "https://elsewhere/x.git"),
    ],
)
def test_relative_submodule_urls(parent: str, url: str, expected: str) -> None:
    from dagsync.sources.git.urls import resolve_submodule_url

    assert resolve_submodule_url(parent, url) == expected


def test_ref_names_and_error_detail() -> None:
    from dagsync.sources.git.command import git_error_detail
    from dagsync.sources.git.source import pick_ref_names

    assert pick_ref_names("HEAD") == ["HEAD"]
    assert pick_ref_names("main") == ["refs/heads/main", "refs/tags/main^{}", "refs/tags/main"]
    assert pick_ref_names("refs/tags/v1") == ["refs/tags/v1^{}", "refs/tags/v1"]
    stderr = (
        "No user exists for uid 65533\nfatal: Could not read from remote repository.\n\n"
        "Please make sure you have the correct access rights\nand the repository exists.\n"
    )
    assert git_error_detail(stderr) == (
        "No user exists for uid 65533 fatal: Could not read from remote repository."
    )
    long = "hint: " + "x" * 400 + "\nfatal: the real reason\n"
    assert git_error_detail(long) == "fatal: the real reason"
    assert len(git_error_detail("fatal: " + "y" * 1000)) == 300
    assert git_error_detail("") == "no error output"
