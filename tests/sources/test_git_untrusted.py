"""What a repository or a URL may not make dagsync do: publish a local repository of this machine
through a submodule, or hand a token from ``--repo``'s user-info to git's argv or environment."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.gitservers import (
    HTTP_PASSWORD,
    HTTP_USERNAME,
    INITIAL_FILES,
    GitDaemon,
    GitHttpServer,
    Repo,
)
from tests.helpers import (
    assert_published,
    client_env,
    dagsync,
    descendants,
    leftovers,
    link_target,
    start_dagsync,
)
from tests.sources.test_git_layer import git_wrapper

CREDS = "aws_secret_access_key = do-not-publish-me\n"


@pytest.fixture
def env(hermetic_git_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return client_env(hermetic_git_env, tmp_path / "home")


def repo_with_local_submodule(make_git_repo: Callable[..., Repo], form: str) -> tuple[Repo, Repo]:
    """A superproject whose .gitmodules names a repository of this machine holding creds.txt
    (by plain path or file:// URL, as an attacker who controls the repository would)."""
    secret = make_git_repo("private", initial=False)
    secret.write("creds.txt", CREDS)
    secret.commit("creds")
    secret.push()
    top = make_git_repo("top")
    url = str(secret.bare_path) if form == "path" else secret.bare_path.as_uri()
    top.add_submodule(url, "dags/vendor")
    top.commit("a submodule on this machine")
    top.push()
    return top, secret


@pytest.mark.parametrize("form", ["path", "file-url"])
def test_remote_repository_may_not_publish_a_local_submodule(
    form: str, make_git_repo: Callable[..., Repo], git_daemon: GitDaemon, tmp_path: Path,
    env: dict[str, str],
) -> None:  # fmt: skip
    top, _ = repo_with_local_submodule(make_git_repo, form)
    root = tmp_path / "root"
    url = git_daemon.url_for(top.bare_path)
    result = dagsync("once", "--repo", url, "--root", root, env=env)
    assert result.returncode == 1, str(result)
    [line] = [x for x in result.stderr.splitlines() if "dags/vendor" in x]
    assert "submodule 'dags/vendor'" in line and "refused local url" in line
    assert link_target(root) is None and leftovers(root) == []
    assert not [p for p in root.rglob("creds.txt")]
    # With submodules off the same commit publishes (the refusal is about the submodule only).
    result = dagsync("once", "--repo", url, "--root", root, "--submodules", "off", env=env)
    assert result.returncode == 0, str(result)
    assert (root / "current" / "dags" / "a.py").is_file()
    assert not (root / "current" / "dags" / "vendor").exists()


def test_local_repository_may_have_a_local_submodule(
    make_git_repo: Callable[..., Repo], tmp_path: Path, env: dict[str, str]
) -> None:
    top, _ = repo_with_local_submodule(make_git_repo, "path")
    root = tmp_path / "root"
    result = dagsync("once", "--repo", top.bare_path.as_uri(), "--root", root, env=env)
    assert result.returncode == 0, str(result)
    gitmodules = top.work.joinpath(".gitmodules").read_text()
    expected = {**INITIAL_FILES, ".gitmodules": gitmodules, "dags/vendor/creds.txt": CREDS}
    assert_published(root, top.head(), expected)
    # A plain path is local too.
    other = tmp_path / "root-path"
    result = dagsync("once", "--repo", str(top.bare_path), "--root", other, env=env)
    assert result.returncode == 0, str(result)
    assert_published(other, top.head(), expected)


# --- a token in --repo's user-info --------------------------------------------------------------


def _sample_children(pid: int, seen: dict[str, bytes]) -> None:
    """Record the argv and environment of every descendant of ``pid`` alive right now. A child
    caught between fork and exec is still dagsync (same argv and environment, which hold what
    the user gave dagsync): it is skipped."""
    try:
        own = {w: Path(f"/proc/{pid}/{w}").read_bytes() for w in ("cmdline", "environ")}
    except OSError:
        return
    for child in descendants(pid):
        for what in ("cmdline", "environ"):
            try:
                data = Path(f"/proc/{child}/{what}").read_bytes()
            except OSError:
                continue
            if data != own[what]:
                seen[f"{child}/{what}/{len(seen)}"] = data


def test_token_in_repo_url_works_and_never_reaches_a_child(
    git_repo: Repo, git_http_auth: GitHttpServer, tmp_path: Path, env: dict[str, str]
) -> None:
    url = git_http_auth.url_for(git_repo.bare_path, HTTP_USERNAME, HTTP_PASSWORD)
    assert HTTP_PASSWORD in url
    wrapped, log = git_wrapper(tmp_path, env)
    root = tmp_path / "root"
    git_http_auth.delay = 0.3  # every request: time to look at the git children
    run_log = tmp_path / "once.log"
    proc = start_dagsync("once", "--repo", url, "--root", root, "--log-level", "debug",
                         env=wrapped, log=run_log)  # fmt: skip
    seen: dict[str, bytes] = {}
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        _sample_children(proc.pid, seen)
        time.sleep(0.002)  # sampling, not waiting: keeps the loop from starving git
    assert proc.wait(timeout=60) == 0, run_log.read_text()
    assert_published(root, git_repo.head(), INITIAL_FILES)
    assert [r for r in git_http_auth.requests if r.user == HTTP_USERNAME]  # it authenticated
    assert any(b"remote-http" in data for key, data in seen.items() if "cmdline" in key), (
        "no git-remote-http child was seen: the sampling proves nothing"
    )
    leaks = [key for key, data in seen.items() if HTTP_PASSWORD.encode() in data]
    assert leaks == []
    # A second pass resolves with ls-remote (the first, on an empty root, fetched at once).
    git_http_auth.delay = 0.0
    git_repo.write("dags/a.py", "# second\n")
    git_repo.commit("second")
    git_repo.push()
    result = dagsync("once", "--repo", url, "--root", root, env=wrapped)
    assert result.returncode == 0, str(result)
    assert HTTP_PASSWORD not in result.output
    calls = log.read_text()
    assert "ls-remote" in calls and "fetch" in calls
    assert HTTP_PASSWORD not in calls
    assert HTTP_PASSWORD not in run_log.read_text()
    own = Path(f"/proc/{os.getpid()}/cmdline")  # the test's argv: only what pytest was given
    assert HTTP_PASSWORD.encode() not in own.read_bytes()


def test_wrong_token_in_repo_url_fails_without_printing_it(
    git_repo: Repo, git_http_auth: GitHttpServer, tmp_path: Path, env: dict[str, str]
) -> None:
    wrong = "wr0ng-t0ken-4471"
    url = git_http_auth.url_for(git_repo.bare_path, HTTP_USERNAME, wrong)
    root = tmp_path / "root"
    result = dagsync("once", "--repo", url, "--root", root, env=env)
    assert result.returncode == 1, str(result)
    assert wrong not in result.output
    assert link_target(root) is None
