"""Self-tests for tests/gitservers.py: every transport really serves clones and shallow fetches."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.gitservers import (
    HTTP_PASSWORD,
    HTTP_USERNAME,
    INITIAL_FILES,
    GitCommandError,
    GitDaemon,
    GitHttpServer,
    Repo,
    SshServer,
    parse_cgi_output,
    run_git,
)

TRANSPORTS = [
    "file",
    "git",
    "http",
    "http-auth",
    pytest.param("ssh", marks=pytest.mark.ssh),
    pytest.param("ssh-scp", marks=pytest.mark.ssh),
]


def remote_for(
    request: pytest.FixtureRequest, transport: str, repo: Repo, env: dict[str, str]
) -> tuple[str, dict[str, str]]:
    """(URL, env) that reach repo's bare origin over the named transport."""
    env = dict(env)
    if transport == "file":
        return repo.file_url, env
    if transport == "git":
        return request.getfixturevalue("git_daemon").url_for(repo.bare_path), env
    if transport == "http":
        return request.getfixturevalue("git_http").url_for(repo.bare_path), env
    if transport == "http-auth":
        server = request.getfixturevalue("git_http_auth")
        return server.url_for(repo.bare_path, HTTP_USERNAME, HTTP_PASSWORD), env
    sshd: SshServer = request.getfixturevalue("sshd")
    env["GIT_SSH_COMMAND"] = sshd.ssh_command()
    if transport == "ssh-scp":
        return sshd.scp_url_for(repo.bare_path), env
    return sshd.url_for(repo.bare_path), env


def clone(url: str, dest: Path, env: dict[str, str], *args: str) -> Path:
    run_git(["clone", "--quiet", *args, url, str(dest)], env=env)
    return dest


def assert_initial_checkout(work: Path) -> None:
    for relpath, content in INITIAL_FILES.items():
        assert (work / relpath).read_text() == content


def test_git_env_is_hermetic(hermetic_git: dict[str, str], git_home: Path) -> None:
    assert os.environ["HOME"] == str(git_home)
    assert os.environ["GIT_CONFIG_NOSYSTEM"] == "1"
    assert os.environ["GIT_TERMINAL_PROMPT"] == "0"
    assert hermetic_git["HOME"] == str(git_home)
    # inherits os.environ; cwd outside any repo so only system/global scopes can show up
    listing = run_git(["config", "--list", "--show-origin"], cwd=git_home).stdout
    origins = {line.split(":", 1)[1].split("\t")[0] for line in listing.splitlines()}
    assert origins == {str(git_home / ".gitconfig")}
    assert run_git(["config", "init.defaultBranch"]).stdout.strip() == "main"
    assert run_git(["config", "protocol.file.allow"]).stdout.strip() == "always"


def test_repo_helpers(git_repo: Repo) -> None:
    first = git_repo.head()
    assert run_git(["ls-remote", git_repo.file_url, "main"]).stdout.split()[0] == first

    git_repo.write("dags/run.sh", "#!/bin/sh\n", mode=0o755)
    git_repo.write("dags/blob.bin", b"\x00\x01")
    git_repo.symlink("dags/link.py", "a.py")
    git_repo.remove("README.md")
    second = git_repo.commit("second")
    git_repo.push()
    tree = run_git(["ls-tree", "-r", second], cwd=git_repo.bare_path).stdout
    assert "100755 blob" in tree and "dags/run.sh" in tree
    assert "120000 blob" in tree and "dags/link.py" in tree
    assert "README.md" not in tree

    git_repo.tag("v1")
    git_repo.tag("v1-annotated", annotated=True, sha=first)
    git_repo.tag("v1", sha=first, force=True)
    refs = run_git(["ls-remote", "--tags", git_repo.file_url]).stdout
    assert f"{first}\trefs/tags/v1\n" in refs
    assert f"{first}\trefs/tags/v1-annotated^{{}}" in refs
    git_repo.delete_tag("v1")
    assert "refs/tags/v1\n" not in run_git(["ls-remote", git_repo.file_url]).stdout

    git_repo.branch("feature", first)
    git_repo.checkout("feature")
    feature = git_repo.commit("on feature")
    git_repo.push("feature")
    git_repo.checkout("main")
    git_repo.reset_hard(first)
    with pytest.raises(GitCommandError, match="rejected"):
        git_repo.push()
    git_repo.push(force=True)
    heads = run_git(["ls-remote", "--heads", git_repo.file_url]).stdout
    assert f"{first}\trefs/heads/main" in heads and f"{feature}\trefs/heads/feature" in heads
    git_repo.delete_branch("feature")
    assert "feature" not in run_git(["ls-remote", "--heads", git_repo.file_url]).stdout


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_clone(
    request: pytest.FixtureRequest,
    transport: str,
    git_repo: Repo,
    hermetic_git_env: dict[str, str],
    tmp_path: Path,
) -> None:
    url, env = remote_for(request, transport, git_repo, hermetic_git_env)
    work = clone(url, tmp_path / "clone", env)
    assert_initial_checkout(work)
    assert run_git(["rev-parse", "HEAD"], cwd=work, env=env).stdout.strip() == git_repo.head()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_shallow_fetch_of_a_non_tip_sha(
    request: pytest.FixtureRequest,
    transport: str,
    git_repo: Repo,
    hermetic_git_env: dict[str, str],
    tmp_path: Path,
) -> None:
    old = git_repo.head()
    git_repo.write("dags/c.py", "C = 1\n")
    git_repo.commit("add c")
    git_repo.push()
    url, env = remote_for(request, transport, git_repo, hermetic_git_env)
    work = tmp_path / "shallow"
    run_git(["init", "--quiet", str(work)], env=env)
    run_git(["fetch", "--quiet", "--depth", "1", url, old], cwd=work, env=env)
    assert run_git(["rev-parse", "FETCH_HEAD"], cwd=work, env=env).stdout.strip() == old
    assert run_git(["rev-list", "--count", "FETCH_HEAD"], cwd=work, env=env).stdout.strip() == "1"
    assert (work / ".git" / "shallow").read_text().strip() == old


@pytest.mark.parametrize("transport", ["file", "git"])
def test_submodule_with_relative_url_clones_recursively(
    request: pytest.FixtureRequest,
    transport: str,
    git_repo: Repo,
    make_git_repo: Callable[..., Repo],
    hermetic_git_env: dict[str, str],
    tmp_path: Path,
) -> None:
    sub = make_git_repo("sub")
    assert sub.bare_path.parent == git_repo.bare_path.parent
    git_repo.add_submodule("../sub.git", "dags/shared")
    git_repo.commit("add submodule")
    git_repo.push()
    url, env = remote_for(request, transport, git_repo, hermetic_git_env)
    work = clone(url, tmp_path / "clone", env, "--recurse-submodules")
    assert (work / "dags/shared/dags/a.py").read_text() == INITIAL_FILES["dags/a.py"]
    assert "url = ../sub.git" in (work / ".gitmodules").read_text()


def test_http_basic_auth(
    git_http_auth: GitHttpServer, git_repo: Repo, hermetic_git_env: dict[str, str], tmp_path: Path
) -> None:
    env = hermetic_git_env
    bare = git_repo.bare_path
    no_creds = run_git(["ls-remote", git_http_auth.url_for(bare)], env=env, check=False)
    assert no_creds.returncode != 0
    assert "terminal prompts disabled" in no_creds.stderr
    wrong = git_http_auth.url_for(bare, HTTP_USERNAME, "wrong")
    failed = run_git(["ls-remote", wrong], env=env, check=False)
    assert failed.returncode != 0 and "Authentication failed" in failed.stderr
    assert {r.status for r in git_http_auth.requests} == {401}
    git_http_auth.clear_requests()

    clone(git_http_auth.url_for(bare, HTTP_USERNAME, HTTP_PASSWORD), tmp_path / "a", env)
    token = base64.b64encode(f"{HTTP_USERNAME}:{HTTP_PASSWORD}".encode()).decode()
    header = f"http.extraHeader=Authorization: Basic {token}"
    clone(git_http_auth.url_for(bare), tmp_path / "b", env, "--config", header)
    run_git(["-c", header, "fetch", "--quiet"], cwd=tmp_path / "b", env=env)
    assert_initial_checkout(tmp_path / "b")

    answered = [r for r in git_http_auth.requests if r.status == 200]
    assert answered and all(r.has_authorization and r.user == HTTP_USERNAME for r in answered)
    assert all(HTTP_PASSWORD not in r.target for r in git_http_auth.requests)


def test_http_protocol_v2_gzip_and_chunked_bodies(
    git_http_auth: GitHttpServer, git_repo: Repo, hermetic_git_env: dict[str, str], tmp_path: Path
) -> None:
    # Many distinct tips make the fetch request > 1 KiB, which git sends gzipped.
    base = git_repo.head()
    stream = "".join(
        f"commit refs/heads/b{i}\ncommitter t <t@x> {i} +0000\ndata 3\nb{i}\nfrom {base}\n\n"
        for i in range(60)
    )
    run_git(["fast-import", "--quiet"], cwd=git_repo.work, env=git_repo.env, input=stream)
    git_repo.git("push", "--quiet", "origin", "refs/heads/*:refs/heads/*")
    url = git_http_auth.url_for(git_repo.bare_path, HTTP_USERNAME, HTTP_PASSWORD)
    work = clone(url, tmp_path / "clone", hermetic_git_env, "--mirror")
    posts = [r for r in git_http_auth.requests if r.method == "POST"]
    assert any(r.content_encoding == "gzip" and r.status == 200 for r in posts)
    assert all(r.git_protocol == "version=2" for r in git_http_auth.requests if r.status == 200)

    # A push bigger than http.postBuffer (1 MiB) is sent with chunked transfer encoding.
    git_repo.write("big.bin", os.urandom(1_500_000))
    big = git_repo.commit("big")
    run_git(["push", "--quiet", url, "main"], cwd=git_repo.work, env=hermetic_git_env)
    assert any(r.chunked and r.target.endswith("git-receive-pack") for r in git_http_auth.requests)
    assert run_git(["rev-parse", "main"], cwd=git_repo.bare_path).stdout.strip() == big
    assert work.exists()


def test_http_delay_and_hang(
    git_http: GitHttpServer, git_repo: Repo, hermetic_git_env: dict[str, str]
) -> None:
    url = git_http.url_for(git_repo.bare_path)
    git_http.delay = 0.2
    started = time.monotonic()
    run_git(["ls-remote", url], env=hermetic_git_env)
    assert time.monotonic() - started >= 0.2 * len(git_http.requests) >= 0.4

    git_http.delay = 0.0
    git_http.hang.set()
    with pytest.raises(TimeoutError):
        urllib.request.urlopen(f"{url}/info/refs?service=git-upload-pack", timeout=0.3)
    with pytest.raises(subprocess.TimeoutExpired):
        run_git(["ls-remote", url], env=hermetic_git_env, timeout=0.5)
    assert [r.status for r in git_http.requests][-2:] == [None, None]


def test_servers_stop_promptly_and_release_their_ports(
    git_served_root: Path, git_repo: Repo, hermetic_git_env: dict[str, str]
) -> None:
    with GitDaemon(git_served_root, hermetic_git_env) as daemon:
        run_git(["ls-remote", daemon.url_for(git_repo.bare_path)], env=hermetic_git_env)
        port = daemon.port
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()

    server = GitHttpServer(git_served_root, hermetic_git_env).start()
    server.hang.set()
    client = threading.Thread(
        target=run_git,
        args=(["ls-remote", server.url_for(git_repo.bare_path)],),
        kwargs={"env": hermetic_git_env, "check": False},
    )
    client.start()
    deadline = time.monotonic() + 5
    while not server.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 1
    client.join(10)
    assert not client.is_alive()
    assert not [t for t in threading.enumerate() if t.name.startswith("git-http-")]


def test_url_for_rejects_paths_outside_the_served_root(
    git_daemon: GitDaemon, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="not under the served root"):
        git_daemon.url_for(tmp_path / "elsewhere.git")


def test_parse_cgi_output() -> None:
    status, headers, body = parse_cgi_output(
        b"Status: 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nno\n"
    )
    assert (status, headers, body) == (404, [("Content-Type", "text/plain")], b"no\n")
    assert parse_cgi_output(b"Expires: 0\n\nbody")[0::2] == (200, b"body")


@pytest.mark.ssh
def test_ssh_key_and_strict_known_hosts(
    sshd: SshServer, git_repo: Repo, hermetic_git_env: dict[str, str], tmp_path: Path
) -> None:
    def ls_remote(url: str, ssh_command: str) -> GitCommandError | None:
        env = {**hermetic_git_env, "GIT_SSH_COMMAND": ssh_command}
        try:
            run_git(["ls-remote", url], env=env)
        except GitCommandError as exc:
            return exc
        return None

    bare = git_repo.bare_path
    assert ls_remote(sshd.url_for(bare), sshd.ssh_command()) is None
    assert ls_remote(sshd.scp_url_for(bare), sshd.ssh_command()) is None
    assert sshd.alias_scp_url_for(bare).startswith(f"{sshd.user}@dagsync-test:/")
    assert ls_remote(sshd.alias_scp_url_for(bare), sshd.ssh_command(config=sshd.ssh_config)) is None

    wrong_key = ls_remote(sshd.url_for(bare), sshd.ssh_command(key=sshd.wrong_key))
    assert wrong_key is not None and "Permission denied (publickey)" in wrong_key.stderr
    wrong_host = ls_remote(sshd.url_for(bare), sshd.ssh_command(known_hosts=sshd.wrong_known_hosts))
    assert wrong_host is not None and "Host key verification failed" in wrong_host.stderr
    unknown = ls_remote(sshd.url_for(bare), sshd.ssh_command(known_hosts=tmp_path / "empty"))
    assert unknown is not None and "Host key verification failed" in unknown.stderr
    assert sshd.known_hosts.read_text().startswith(f"[127.0.0.1]:{sshd.port} ssh-ed25519 ")
