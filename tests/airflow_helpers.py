"""The Airflow side of the tests: the environment the Airflow Helm charts render for their
git-sync containers, and a cached virtualenv with a real Apache Airflow 3.

Chart environments are copied from the charts' own templates and template tests (official
chart 1.x ``git_sync_container`` in ``templates/_helpers.yaml``, which renders the v3 and v4
names side by side; community chart ``airflow.container.git_sync``, v3 names only). The only
substitutions a test makes are paths (``/git`` and ``/etc/git-secret/*`` become temp paths)
and the HTTP port.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Env = list[tuple[str, str]]

# The official chart's defaults (values.yaml, dags.gitSync.*).
CHART_REF = "v2-2-stable"
CHART_BRANCH = "v2-2-stable"
CHART_PERIOD = "5s"


def official_chart_env(
    *,
    repo: str,
    root: str = "/git",
    ref: str = CHART_REF,
    branch: str = CHART_BRANCH,
    rev: str = "HEAD",
    depth: int = 1,
    period: str = CHART_PERIOD,
    wait: int | None = None,
    max_failures: int = 0,
    init: bool = False,
    http_bind: str | None = ":8000",
    credentials: tuple[str, str] | None = None,
    ssh_key_file: str | None = None,
    known_hosts_file: str | None = None,
    extra: Sequence[tuple[str, str]] = (),
) -> Env:
    """``env:`` of the official chart's git-sync container, in the chart's order.

    ``init`` renders the init container (``-init``: ONE_TIME, no HTTP bind); otherwise the
    sidecar, whose HTTP bind (the chart's ``:<httpPort>``, probed at ``GET /``) the caller
    may move to a loopback port. ``ssh_key_file`` stands for ``sshKeySecret`` (the chart
    mounts it at ``/etc/git-secret/ssh``), ``known_hosts_file`` for ``knownHosts``,
    ``credentials`` for ``credentialsSecret``, ``extra`` for ``dags.gitSync.env``.
    """
    env: Env = []
    if ssh_key_file is not None:
        env += [
            ("GIT_SSH_KEY_FILE", ssh_key_file),
            ("GITSYNC_SSH_KEY_FILE", ssh_key_file),
            ("GIT_SYNC_SSH", "true"),
            ("GITSYNC_SSH", "true"),
        ]
        if known_hosts_file is not None:
            env += [
                ("GIT_KNOWN_HOSTS", "true"),
                ("GITSYNC_SSH_KNOWN_HOSTS", "true"),
                ("GIT_SSH_KNOWN_HOSTS_FILE", known_hosts_file),
                ("GITSYNC_SSH_KNOWN_HOSTS_FILE", known_hosts_file),
            ]
        else:
            env += [("GIT_KNOWN_HOSTS", "false"), ("GITSYNC_SSH_KNOWN_HOSTS", "false")]
    elif credentials is not None:
        user, password = credentials
        env += [
            ("GIT_SYNC_USERNAME", user),
            ("GITSYNC_USERNAME", user),
            ("GIT_SYNC_PASSWORD", password),
            ("GITSYNC_PASSWORD", password),
        ]
    env += [
        ("GIT_SYNC_REV", rev),
        ("GITSYNC_REF", ref),
        ("GIT_SYNC_BRANCH", branch),
        ("GIT_SYNC_REPO", repo),
        ("GITSYNC_REPO", repo),
        ("GIT_SYNC_DEPTH", str(depth)),
        ("GITSYNC_DEPTH", str(depth)),
        ("GIT_SYNC_ROOT", root),
        ("GITSYNC_ROOT", root),
        ("GIT_SYNC_DEST", "repo"),
        ("GITSYNC_LINK", "repo"),
        ("GIT_SYNC_ADD_USER", "true"),
        ("GITSYNC_ADD_USER", "true"),
        ("GITSYNC_PERIOD", period),
        ("GIT_SYNC_MAX_SYNC_FAILURES", str(max_failures)),
        ("GITSYNC_MAX_FAILURES", str(max_failures)),
    ]
    if wait is not None:
        env.append(("GIT_SYNC_WAIT", str(wait)))
    if init:
        env += [("GIT_SYNC_ONE_TIME", "true"), ("GITSYNC_ONE_TIME", "true")]
    elif http_bind is not None:
        env += [("GIT_SYNC_HTTP_BIND", http_bind), ("GITSYNC_HTTP_BIND", http_bind)]
    env += list(extra)
    return env


def community_chart_env(
    *,
    repo: str,
    root: str = "/dags",
    branch: str = "master",
    revision: str = "HEAD",
    depth: int = 1,
    sync_wait: int = 60,
    sync_timeout: int = 120,
    init: bool = False,
    ssh_key_file: str | None = None,
    known_hosts_file: str | None = None,
    credentials: tuple[str, str] | None = None,
) -> Env:
    """``env:`` of the community chart's (airflow-helm) git-sync container: v3 names only."""
    env: Env = [("GIT_SYNC_ONE_TIME", "true")] if init else []
    env += [
        ("GIT_SYNC_ROOT", root),
        ("GIT_SYNC_DEST", "repo"),
        ("GIT_SYNC_REPO", repo),
        ("GIT_SYNC_BRANCH", branch),
        ("GIT_SYNC_REV", revision),
        ("GIT_SYNC_DEPTH", str(depth)),
        ("GIT_SYNC_WAIT", str(sync_wait)),
        ("GIT_SYNC_TIMEOUT", str(sync_timeout)),
        ("GIT_SYNC_ADD_USER", "true"),
    ]
    if ssh_key_file is not None:
        env += [("GIT_SYNC_SSH", "true"), ("GIT_SSH_KEY_FILE", ssh_key_file)]
    if known_hosts_file is not None:
        env += [("GIT_KNOWN_HOSTS", "true"), ("GIT_SSH_KNOWN_HOSTS_FILE", known_hosts_file)]
    else:
        env.append(("GIT_KNOWN_HOSTS", "false"))
    if credentials is not None:
        env += [("GIT_SYNC_USERNAME", credentials[0]), ("GIT_SYNC_PASSWORD", credentials[1])]
    return env


def as_environ(env: Env) -> dict[str, str]:
    """A container's env list as the process sees it (a later duplicate wins, as in k8s)."""
    return dict(env)


# --- a real Airflow in its own cached virtualenv ------------------------------------------------

# Pinned so CI is reproducible; DAGSYNC_AIRFLOW_SPEC overrides (e.g. "apache-airflow==3.0.6").
AIRFLOW_SPEC = "apache-airflow==3.1.8"
INSTALL_TIMEOUT_SECONDS = 1800
AIRFLOW_CLI_TIMEOUT_SECONDS = 300
READY_MARKER = ".dagsync-ready"


class AirflowUnavailable(RuntimeError):
    """The Airflow virtualenv could not be created (no network, no PyPI)."""


def airflow_spec() -> str:
    return os.environ.get("DAGSYNC_AIRFLOW_SPEC", AIRFLOW_SPEC)


def default_venv_dir() -> Path:
    """``$DAGSYNC_AIRFLOW_VENV``, else ``$XDG_CACHE_HOME/dagsync-test/airflow-<spec>``."""
    explicit = os.environ.get("DAGSYNC_AIRFLOW_VENV")
    if explicit:
        return Path(explicit)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    tag = airflow_spec().replace("apache-airflow", "airflow").replace("==", "-")
    return cache / "dagsync-test" / "".join(c if c.isalnum() or c in ".-" else "_" for c in tag)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One installer at a time (pytest-xdist workers, two CI jobs on one machine)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@dataclass
class AirflowVenv:
    path: Path
    created_seconds: float | None  # None: reused from the cache

    @property
    def airflow(self) -> Path:
        return self.path / "bin" / "airflow"

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"


def base_python() -> str:
    """The interpreter to build the venv from: the one running the tests, outside its venv."""
    return getattr(sys, "_base_executable", None) or sys.executable


def ensure_airflow_venv(path: Path | None = None, log: Path | None = None) -> AirflowVenv:
    """Create (once) a virtualenv with Airflow; later calls reuse it. Raises AirflowUnavailable
    with the tail of pip's output when the install fails."""
    venv = path or default_venv_dir()
    marker = venv / READY_MARKER
    spec = airflow_spec()
    with _locked(venv.with_name(venv.name + ".lock")):
        if marker.is_file() and marker.read_text().strip() == spec:
            return AirflowVenv(venv, None)
        start = time.monotonic()
        if venv.exists():
            shutil.rmtree(venv)  # a half-made venv from an interrupted run
        log_path = log or venv.with_name(venv.name + ".install.log")
        with open(log_path, "w") as out:
            steps = [
                [base_python(), "-m", "venv", str(venv)],
                [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", spec],
            ]
            for argv in steps:
                try:
                    proc = subprocess.run(
                        argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                        timeout=INSTALL_TIMEOUT_SECONDS, check=False,
                    )  # fmt: skip
                except subprocess.TimeoutExpired:
                    raise AirflowUnavailable(f"{argv[-1]}: timed out; see {log_path}") from None
                if proc.returncode != 0:
                    tail = "\n".join(
                        line
                        for line in log_path.read_text(errors="replace").splitlines()
                        if "is ignored: it is neither a file nor a directory" not in line
                    )[-2000:]
                    raise AirflowUnavailable(f"{' '.join(argv[-2:])} failed:\n{tail}")
        marker.write_text(spec + "\n")
        return AirflowVenv(venv, time.monotonic() - start)


class AirflowHome:
    """One AIRFLOW_HOME (SQLite, no examples) and Airflow's CLI run against it."""

    def __init__(self, venv: AirflowVenv, home: Path, base_env: Mapping[str, str]) -> None:
        self.venv = venv
        self.home = home
        self.base_env = dict(base_env)
        home.mkdir(parents=True, exist_ok=True)

    def env(self, dags_folder: Path) -> dict[str, str]:
        env = {k: v for k, v in self.base_env.items() if not k.startswith("AIRFLOW")}
        env.update(
            AIRFLOW_HOME=str(self.home),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__CORE__DAGS_FOLDER=str(dags_folder),
            AIRFLOW__CORE__UNIT_TEST_MODE="False",
            AIRFLOW__LOGGING__LOGGING_LEVEL="WARNING",
            PYTHONWARNINGS="ignore",
            PATH=f"{self.venv.path / 'bin'}{os.pathsep}{self.base_env.get('PATH', '')}",
        )
        env.pop("PYTHONPATH", None)
        env.pop("VIRTUAL_ENV", None)
        return env

    def run(self, args: Sequence[str], dags_folder: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.venv.airflow), *args],
            env=self.env(dags_folder),
            cwd=self.home,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=AIRFLOW_CLI_TIMEOUT_SECONDS,
            check=False,
        )

    def migrate(self, dags_folder: Path) -> None:
        proc = self.run(["db", "migrate"], dags_folder)
        if proc.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed:\n{proc.stdout}\n{proc.stderr}")

    def parse(self, dags_folder: Path) -> ParsedFolder:
        """Load the folder as Airflow's DAG processor does: the ``dags-folder`` bundle, whose
        path goes on ``sys.path`` so DAG files can import their helper modules."""
        listed = self.run(
            ["dags", "list", "--local", "-B", "dags-folder", "-o", "json"], dags_folder
        )
        errors = self.run(
            ["dags", "list-import-errors", "--local", "-B", "dags-folder", "-o", "json"],
            dags_folder,
        )
        return ParsedFolder(
            dags=_json_rows(listed, "dags list"),
            import_errors=_json_rows(errors, "dags list-import-errors"),
            stderr=listed.stderr + errors.stderr,
        )


@dataclass
class ParsedFolder:
    dags: list[dict[str, Any]]
    import_errors: list[dict[str, Any]]
    stderr: str

    @property
    def dag_ids(self) -> list[str]:
        return sorted(str(row["dag_id"]) for row in self.dags)

    @property
    def error_files(self) -> list[str]:
        return sorted(str(row["filepath"]) for row in self.import_errors)

    def describe(self) -> str:
        errors = "\n".join(f"{e['filepath']}: {e['error']}" for e in self.import_errors)
        return f"dags={self.dag_ids}\nimport errors:\n{errors}\nstderr tail:\n{self.stderr[-3000:]}"


def _json_rows(proc: subprocess.CompletedProcess[str], what: str) -> list[dict[str, Any]]:
    """The JSON array Airflow prints (it prints a notice instead when there is nothing)."""
    out = proc.stdout.strip()
    start = out.find("[")
    if start < 0:
        if "No data found" in out or not out:
            return []
        raise RuntimeError(f"airflow {what}: unexpected output:\n{out}\n{proc.stderr[-3000:]}")
    rows = json.loads(out[start : out.rindex("]") + 1])
    if not isinstance(rows, list):
        raise RuntimeError(f"airflow {what}: expected a JSON list, got {out[:500]}")
    return rows


# --- dagsync inside the Airflow virtualenv (the DAG bundle) -------------------------------------

PROJECT = Path(__file__).resolve().parent.parent
DEPS_MARKER = ".dagsync-runtime-deps"


def project_dependencies() -> list[str]:
    """dagsync's runtime requirements, as ``pip install dagsync[airflow]`` would add them."""
    import tomllib

    with open(PROJECT / "pyproject.toml", "rb") as fh:
        return list(tomllib.load(fh)["project"]["dependencies"])


def ensure_dagsync_runtime(venv: AirflowVenv) -> None:
    """Install dagsync's dependencies (not dagsync itself: the worktree goes on PYTHONPATH)
    into the Airflow virtualenv, so the bundle and its ``python -m dagsync`` run there as in
    an Airflow image with dagsync installed. Skipped when the same list is already there."""
    deps = sorted(project_dependencies())
    marker = venv.path / DEPS_MARKER
    with _locked(venv.path.with_name(venv.path.name + ".lock")):
        if marker.is_file() and marker.read_text().splitlines() == deps:
            return
        proc = subprocess.run(
            [str(venv.python), "-m", "pip", "install", "--quiet", *deps],
            capture_output=True, text=True, stdin=subprocess.DEVNULL,
            timeout=INSTALL_TIMEOUT_SECONDS, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise AirflowUnavailable(f"pip install {' '.join(deps)} failed:\n{proc.stderr[-2000:]}")
        marker.write_text("\n".join(deps) + "\n")


def bundle_env(
    home: AirflowHome, bundle_config: Sequence[Mapping[str, Any]], storage: Path
) -> dict[str, str]:
    """The environment of an Airflow process whose bundles come from ``bundle_config`` (what
    ``[dag_processor] dag_bundle_config_list`` holds), with dagsync importable from the
    worktree."""
    env = home.env(storage)
    env.update(
        AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST=json.dumps(list(bundle_config)),
        AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_STORAGE_PATH=str(storage),
        PYTHONPATH=str(PROJECT),
    )
    return env
