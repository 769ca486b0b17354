"""SIGTERM while dagsync waits on a child: a slow exec hook, a slow ``--check cmd:``, a slow git
(smart HTTP that never answers, an ssh server that never speaks), in ``once`` and in ``run``.
dagsync exits promptly and no process it started (hook, check, git and its remote helper, ssh)
outlives it.

Reproduce: ``pytest -q tests/reliability -s -k signals``.
"""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.gitservers import GitHttpServer, Repo
from tests.helpers import client_env, start_dagsync, wait_for
from tests.reliability.campaign import ChildWatch, table
from tests.reliability.faultproxy import FaultProxy

STOP_SECONDS = 10.0  # "promptly": the children would run for 300 s
SLOW = "sleep 300; true"  # "; true" keeps sh alive as the group leader, like a real script
RESULTS: list[tuple[str, str, int, float, int, int]] = []

CASES = {
    # case: (extra args, what to wait for among the children, exit code of once)
    "exec hook": (["--exechook-command", SLOW], "sleep 300"),
    "check cmd": (["--check", f"cmd:{SLOW}"], "sleep 300"),
    "git over http": ([], "remote-http"),
    # ssh waits forever for the banner of a server that accepts and never speaks; the remote
    # command in ssh's argv tells the ssh process apart from git's own.
    "git over ssh": (["--ssh-known-hosts", "false"], "git-upload-pack"),
}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("command", ["once", "run"])
@pytest.mark.parametrize("case", list(CASES))
def test_sigterm_leaves_no_child_behind(
    case: str,
    command: str,
    make_git_repo: Callable[..., Repo],
    git_http: GitHttpServer,
    hermetic_git_env: dict[str, str],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    extra, needle = CASES[case]
    repo = make_git_repo("dags")
    url = repo.file_url
    if case == "git over http":
        git_http.hang.set()  # every request is read and never answered
        url = git_http.url_for(repo.bare_path)
    if case == "git over ssh":
        if shutil.which("ssh") is None:
            pytest.skip("no ssh client (apt-get install -y openssh-client)")
        silent = FaultProxy(git_http.port).start()
        silent.mode = "hang"
        request.addfinalizer(silent.stop)
        url = f"ssh://git@127.0.0.1:{silent.port}/dags.git"
    args = ["--repo", url, "--root", str(tmp_path / "root"), "--sync-timeout", "300s", *extra]
    if command == "run":
        args += ["--period", "1h", "--http-bind", ""]
    env = client_env(hermetic_git_env, tmp_path / "home")
    log = tmp_path / "dagsync.log"
    proc = start_dagsync(command, *args, env=env, log=log)
    try:
        with ChildWatch(proc.pid) as watch:
            wait_for(lambda: watch.running(needle) or proc.poll() is not None,
                     timeout=60, what=f"{needle} to run")  # fmt: skip
            assert proc.poll() is None, log.read_text()
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=STOP_SECONDS)
            took = time.monotonic() - started
        survivors = watch.survivors()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    RESULTS.append((case, command, code, round(took, 2), len(watch.children), len(survivors)))
    assert survivors == [], f"outlived dagsync: {survivors}\n{log.read_text()}"
    # run: a stop is not a failure; once: the sync (or its hooks) did not finish
    assert code == (0 if command == "run" else 1), log.read_text()
    assert "stopping signal=SIGTERM" in log.read_text()


def test_zz_signals_table() -> None:
    """Prints what the campaign saw (run after the cases, in file order)."""
    if not RESULTS:
        pytest.skip("no signal case ran in this session")
    table(
        "Signals: SIGTERM while a child runs",
        ["child", "command", "exit", "seconds to exit", "children seen", "survivors"],
        RESULTS,
    )
