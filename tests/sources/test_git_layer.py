"""The git source's git layer (GitPython): what it costs at start-up, what each git child
sees (environment, argv), its guards, its progress reports, timeouts and the ssh passwd check.

Each git invocation is observed through a ``git`` wrapper first on PATH that logs its argv
and environment and then runs the real git; processes are observed through /proc.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gitservers import INITIAL_FILES, GitDaemon, Repo
from tests.helpers import assert_published, client_env, dagsync, leftovers, link_target

PRIVATE_VALUE = "pr1vate-Value-7781"
WRAPPER = """#!/bin/sh
{{ printf 'ARGV'; for a in "$@"; do printf ' %s' "$a"; done; printf '\\n'; env; }} >> {log}
exec {git} "$@"
"""


@pytest.fixture
def env(hermetic_git_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return client_env(hermetic_git_env, tmp_path / "home")


def git_wrapper(tmp_path: Path, env: dict[str, str]) -> tuple[dict[str, str], Path]:
    """``env`` with a logging ``git`` first on PATH, and the log it writes."""
    real = shutil.which("git", path=env.get("PATH"))
    assert real is not None
    folder, log = tmp_path / "wrapper", tmp_path / "git-calls.log"
    folder.mkdir()
    script = folder / "git"
    script.write_text(WRAPPER.format(log=log, git=real))
    script.chmod(0o755)
    return {**env, "PATH": f"{folder}{os.pathsep}{env.get('PATH', '')}"}, log


def test_startup_does_not_import_gitpython(env: dict[str, str]) -> None:
    code = (
        "import sys\nfrom dagsync.cli import main\nrc = main(['version'])\n"
        "print('loaded:', sorted(m for m in sys.modules if m == 'git' or m.startswith('git.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "loaded: []"


def test_git_children_see_no_private_variable_of_dagsync(
    git_repo: Repo, tmp_path: Path, env: dict[str, str]
) -> None:
    """Neither GitPython's import-time ``git version`` nor any command of a sync sees a cloud
    credential or a DAGSYNC_* value from dagsync's own environment."""
    wrapped, log = git_wrapper(tmp_path, env)
    wrapped.update(OSS_ACCESS_KEY_SECRET=PRIVATE_VALUE, DAGSYNC_UNUSED_NOTE=PRIVATE_VALUE)
    root = tmp_path / "root"
    result = dagsync("once", "--repo", git_repo.file_url, "--root", root, env=wrapped)
    assert result.returncode == 0, str(result)
    assert_published(root, git_repo.head(), INITIAL_FILES)
    calls = log.read_text()
    assert "ARGV version" in calls  # GitPython's refresh went through the wrapper too
    assert "ARGV -c credential.helper=" in calls and "cat-file --batch" in calls
    assert PRIVATE_VALUE not in calls


def test_a_transport_that_runs_commands_is_refused(tmp_path: Path, env: dict[str, str]) -> None:
    marker = tmp_path / "pwned"
    for url in (f"ext::sh -c touch% {marker}", f"fd::17/{marker}"):
        result = dagsync("once", "--repo", url, "--root", tmp_path / "root", env=env)
        assert result.returncode == 2, str(result)
        [line] = result.stderr.strip().splitlines()
        assert line.startswith("dagsync: error: --repo ") and "refused" in line
        assert not marker.exists()
        assert link_target(tmp_path / "root") is None


def test_fetch_progress_reaches_the_callback(
    git_repo: Repo, git_daemon: GitDaemon, tmp_path: Path, env: dict[str, str]
) -> None:
    from dagsync.config import load
    from dagsync.sources.git import GitSource
    from dagsync.timing import deadline_in

    for i in range(30):
        git_repo.write(f"dags/gen_{i}.py", f"# {i}\n" + "x = 1\n" * i)
    head = git_repo.commit("more files")
    git_repo.push()
    cfg = load("once", {"repo": git_daemon.url_for(git_repo.bare_path)}, env)
    source = GitSource(cfg, tmp_path / "cache")
    seen: list[tuple[str, int, int | None]] = []
    source.on_fetch_progress = lambda stage, done, total, _msg: seen.append((stage, done, total))
    (tmp_path / "tree").mkdir()
    try:
        plan = source.resolve(deadline_in(60))
        assert plan.revision == head
        stats = source.fetch(plan, tmp_path / "tree", None, deadline_in(60))
    finally:
        source.close()
    assert len(stats.manifest) == len(INITIAL_FILES) + 30
    received = [(done, total) for stage, done, total in seen if stage == "receiving objects"]
    assert received, seen
    done, total = received[-1]
    assert total is not None and done == total >= 30  # every blob, tree and the commit


@contextlib.contextmanager
def silent_listener() -> Iterator[int]:
    """A port that accepts connections and never says a word (ssh waits for a banner)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield int(sock.getsockname()[1])


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


@pytest.mark.skipif(shutil.which("ssh") is None, reason="needs the ssh client")
def test_sync_timeout_kills_ssh_started_by_git(tmp_path: Path, env: dict[str, str]) -> None:
    """git's ssh child is in git's process group and dies with it at --sync-timeout."""
    with silent_listener() as port:
        url = f"ssh://git@127.0.0.1:{port}/repo.git"
        started = time.monotonic()
        result = dagsync("once", "--repo", url, "--root", tmp_path / "root",
                         "--ssh-known-hosts=false", "--sync-timeout", "1500ms",
                         env=env, timeout=60)  # fmt: skip
        assert result.returncode == 1, str(result)
        assert "sync-timeout" in result.stderr
        assert time.monotonic() - started < 20
        assert _pids_with(f"\0{port}\0") == []  # ssh -p PORT
    assert leftovers(tmp_path / "root") == []


# --- ssh for a uid without a passwd entry, on a machine without libnss_wrapper -----------------


def test_ssh_without_passwd_entry_or_nss_wrapper_is_one_clear_line(tmp_path: Path) -> None:
    from dagsync.config import load
    from dagsync.sources.git.auth import GitAuth

    def no_entry(uid: int) -> object:
        raise KeyError(uid)

    cfg = load("once", {"repo": "git@example.invalid:org/dags.git"}, {})
    missing = GitAuth(cfg, nss_wrapper_paths=[str(tmp_path / "libnss_wrapper.so")],
                      passwd_lookup=no_entry)  # fmt: skip
    problem = missing.ssh_problem()
    assert problem is not None and "no passwd entry" in problem
    assert "libnss-wrapper" in problem and "\n" not in problem
    lib = tmp_path / "libnss_wrapper.so"
    lib.write_bytes(b"")
    present = GitAuth(cfg, nss_wrapper_paths=[str(lib)], passwd_lookup=no_entry)
    assert present.ssh_problem() is None
    assert present.env()["LD_PRELOAD"] == str(lib)
    for auth in (missing, present):
        auth.close()


NO_PASSWD_UID = 65533
SYSTEM_PYTHON = Path("/usr/bin/python3")
NO_NSS_WRAPPER = (
    "import sys\n"
    "import dagsync.sources.git.auth as auth\n"
    "auth.NSS_WRAPPER_PATHS = ('/nonexistent/libnss_wrapper.so',)\n"
    "from dagsync.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to uid 65533")
def test_ssh_as_a_uid_without_passwd_entry_and_no_nss_wrapper_fails_before_ssh(
    tmp_path: Path,
) -> None:
    import pwd

    from tests.sources.test_git import _import_path_for_other_uids

    with contextlib.suppress(KeyError):
        pwd.getpwuid(NO_PASSWD_UID)
        pytest.skip(f"uid {NO_PASSWD_UID} has a passwd entry here")
    python_path = _import_path_for_other_uids()
    if python_path is None:
        pytest.skip("no world-readable Python 3 of this version with dagsync importable")
    top = Path(tempfile.mkdtemp(prefix="dagsync-uid-"))  # tmp_path's parents are 0700
    top.chmod(0o777)
    key = top / "key"
    key.write_text("not really a key\n")
    key.chmod(0o444)
    env = {"PATH": "/usr/bin:/bin", "HOME": "/", "GIT_CONFIG_NOSYSTEM": "1",
           "PYTHONPATH": python_path}  # fmt: skip
    try:
        _fails_before_ssh(top, key, env)
    finally:
        shutil.rmtree(top, ignore_errors=True)


def _fails_before_ssh(top: Path, key: Path, env: dict[str, str]) -> None:
    with silent_listener() as port:
        argv = ["setpriv", f"--reuid={NO_PASSWD_UID}", "--regid=0", "--clear-groups",
                str(SYSTEM_PYTHON), "-c", NO_NSS_WRAPPER, "once",
                "--repo", f"ssh://git@127.0.0.1:{port}/dags.git", "--root", str(top / "root"),
                "--ssh-key-file", str(key)]  # fmt: skip
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode == 2, proc.stderr
        [line] = proc.stderr.strip().splitlines()
        assert line.startswith("dagsync: error: --repo ssh://") and f":{port}/dags.git" in line
        assert "--ssh-key-file" in line and f"uid {NO_PASSWD_UID}" in line
        assert "no passwd entry" in line and "libnss-wrapper" in line
        assert _pids_with(f"\0{port}\0") == []  # ssh never ran


def test_many_files_big_and_small_are_written_with_their_bytes_and_modes(
    git_repo: Repo, tmp_path: Path, env: dict[str, str]
) -> None:
    """Enough files for the parallel writers, one blob large enough to be streamed, exec bits."""
    from tests.helpers import files_of, published

    for i in range(60):
        git_repo.write(f"dags/team_{i % 7}/dag_{i}.py", f"# dag {i}\n" + "v = 1\n" * (i * 40))
    for i in range(3):
        git_repo.write(f"bin/tool_{i}.sh", f"#!/bin/sh\necho {i}\n", mode=0o755)
    big = "".join(f"# line {n:08d} of a large generated module\n" for n in range(140_000))
    git_repo.write("dags/big_generated.py", big)
    head = git_repo.commit("many files")
    git_repo.push()
    root = tmp_path / "root"
    result = dagsync("once", "--repo", git_repo.file_url, "--root", root, env=env)
    assert result.returncode == 0, str(result)
    assert len(big) > 4 << 20
    assert published(root)[0] == head
    tree = published(root)[1]
    expected = dict(INITIAL_FILES)
    for line in git_repo.git("ls-tree", "-r", "--name-only", "HEAD").splitlines():
        expected[line] = (git_repo.work / line).read_text()
    assert files_of(tree) == expected
    for i in range(3):
        assert os.stat(tree / f"bin/tool_{i}.sh").st_mode & 0o777 == 0o755
    assert os.stat(tree / "dags/team_0/dag_0.py").st_mode & 0o777 == 0o644
