"""The command line: in-process through ``dagsync.cli.main(argv, environ)`` and as the
``python -m dagsync`` subprocess a user runs. Exit codes and one-line errors of SPEC section 4."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from dagsync import __version__
from dagsync.cli import main
from tests.gitservers import INITIAL_FILES, Repo
from tests.helpers import assert_published, client_env, dagsync


@pytest.fixture
def env(hermetic_git_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return client_env(hermetic_git_env, tmp_path / "home")


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """main() configures the root logger, as a process should; put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


# --- in-process ---------------------------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"], {}) == 0
    assert capsys.readouterr().out == f"dagsync {__version__}\n"


def test_once_and_status_in_process(
    git_repo: Repo, tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    assert main(["status", "--root", str(root)], env) == 1
    assert json.loads(capsys.readouterr().out)["revision"] is None

    assert main(["once", "--repo", git_repo.file_url, "--root", str(root)], env) == 0
    assert_published(root, git_repo.head(), INITIAL_FILES)
    capsys.readouterr()
    assert main(["status"], {**env, "DAGSYNC_ROOT": str(root)}) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["revision"] == git_repo.head()
    assert status["source"] == "git" and status["files"] == len(INITIAL_FILES)


def test_env_only_configuration_in_process(
    git_repo: Repo, tmp_path: Path, env: dict[str, str]
) -> None:
    root = tmp_path / "root"
    env = {**env, "DAGSYNC_REPO": git_repo.file_url, "DAGSYNC_ROOT": str(root),
           "DAGSYNC_LINK": "dags"}  # fmt: skip
    assert main(["once"], env) == 0
    assert_published(root, git_repo.head(), INITIAL_FILES, link="dags")


@pytest.mark.parametrize(
    ("argv", "environ", "needle"),
    [
        (["once"], {}, "--source is required"),
        (["once", "--source", "nope"], {}, "unknown source 'nope'"),
        (["once", "--source", "git"], {}, "--repo"),
        (["once", "--repo", "x", "--sync-timeout", "5x"], {}, "--sync-timeout"),
        (["run", "--repo", "x", "--period", "fast"], {}, "--period"),
        (["once", "--repo", "x"], {"DAGSYNC_MAX_BYTES": "huge"}, "--max-bytes"),
        (["once", "--repo", "x", "--password-file", "/nonexistent"], {}, "--username"),
        (["once", "--repo", "x", "--ssh-key-file", "/nonexistent/key"], {}, "--ssh-key-file"),
        (["once", "--repo", "x", "--no-such-flag"], {}, "--no-such-flag"),
        (["frobnicate"], {}, "frobnicate"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    argv: list[str], environ: dict[str, str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv, environ) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert len(err.strip().splitlines()) == 1, err


# --- as a subprocess ----------------------------------------------------------------------------


def test_python_m_dagsync(git_repo: Repo, tmp_path: Path, env: dict[str, str]) -> None:
    version = dagsync("version", env=env)
    assert (version.returncode, version.stdout) == (0, f"dagsync {__version__}\n")

    root = tmp_path / "root"
    result = dagsync("once", "--repo", git_repo.file_url, "--root", root, env=env)
    assert result.returncode == 0, str(result)
    assert_published(root, git_repo.head(), INITIAL_FILES)
    status = dagsync("status", "--root", root, env=env)
    assert status.returncode == 0 and json.loads(status.stdout)["revision"] == git_repo.head()

    nothing = dagsync(env=env)  # no sub-command and no git-sync variables: usage, exit 2
    assert nothing.returncode == 2 and "once" in nothing.stderr


def test_help_lists_options_with_env_names_and_defaults(env: dict[str, str]) -> None:
    for command, expected in (
        ("once", ["--repo", "DAGSYNC_REPO", "--sync-timeout", "DAGSYNC_SYNC_TIMEOUT",
                  "(default: 5m)", "--ssh-key-file", "--password-file"]),
        ("run", ["--period", "DAGSYNC_PERIOD", "(default: 60s)", "--max-failures"]),
    ):  # fmt: skip
        result = dagsync(command, "--help", env=env)
        assert result.returncode == 0
        text = " ".join(result.stdout.split())
        for needle in expected:
            assert needle in text, (command, needle)
    assert "--period" not in " ".join(dagsync("once", "--help", env=env).stdout.split())


def test_bad_duration_exits_2_before_any_network_access(env: dict[str, str]) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/repo.git"
        for args in (
            ["--sync-timeout", "5x"],
            ["--ssh-key-file", "/nonexistent/key"],
            ["--username", "u", "--password-file", "/nonexistent/token"],
        ):
            result = dagsync("once", "--repo", url, *args, env=env)
            assert result.returncode == 2, str(result)
            assert len(result.stderr.strip().splitlines()) == 1, result.stderr
            assert "Traceback" not in result.stderr
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected


def test_unknown_dagsync_variable_is_a_warning(
    git_repo: Repo, tmp_path: Path, env: dict[str, str]
) -> None:
    root = tmp_path / "root"
    result = dagsync("once", "--repo", git_repo.file_url, "--root", root,
                     env={**env, "DAGSYNC_REVISON_GRACE": "1m"})  # fmt: skip
    assert result.returncode == 0, str(result)
    assert "DAGSYNC_REVISON_GRACE" in result.stderr
    assert_published(root, git_repo.head(), INITIAL_FILES)


def test_config_file_and_failed_sync_exit_code(
    git_repo: Repo, tmp_path: Path, env: dict[str, str]
) -> None:
    root = tmp_path / "root"
    config = tmp_path / "dagsync.yaml"
    config.write_text(f"repo: {git_repo.file_url}\nroot: {root}\nref: main\n")
    result = dagsync("once", "--config", config, env=env)
    assert result.returncode == 0, str(result)
    assert_published(root, git_repo.head(), INITIAL_FILES)
    failed = dagsync("once", "--config", config, "--ref", "missing", env=env)
    assert failed.returncode == 1
    assert "missing" in failed.stderr
    assert_published(root, git_repo.head(), INITIAL_FILES)  # the last good one stays


def test_once_without_http_imports_no_server_metrics_or_yaml(tmp_path: Path) -> None:
    """A worker pod's ``once`` (no --http-bind, no --config) pays for none of the HTTP server,
    prometheus_client, PyYAML, pathspec or the entry-point scan; with --http-bind it serves
    metrics as before (tests/test_ops_e2e.py)."""
    import subprocess
    import sys

    src = tmp_path / "src"
    src.mkdir()
    (src / "dag.py").write_text("x = 1\n")
    script = (
        "import sys\n"
        "from dagsync.cli import main\n"
        f"rc = main(['once', '--source', 'local', '--local-path', {str(src)!r}, "
        f"'--root', {str(tmp_path / 'root')!r}])\n"
        "heavy = ('prometheus_client', 'yaml', 'pathspec', 'http.server', 'urllib.request',"
        " 'importlib.metadata', 'dagsync.daemon')\n"
        "print(rc, sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.stdout.split("\n")[-2] == "0 []", out.stdout + out.stderr
    assert (tmp_path / "root" / "current" / "dag.py").read_text() == "x = 1\n"
