"""``dagsync.airflow.DagsyncDagBundle`` in a real Apache Airflow 3.

Airflow runs in its own cached virtualenv (tests/airflow_helpers.py) with dagsync's
dependencies added and the worktree on PYTHONPATH, as in an Airflow image with
``dagsync[airflow]`` installed. The bundle is configured only through
``AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST`` and obtained from Airflow's
``DagBundlesManager().get_bundle(name, version)``; DAGs are loaded as Airflow's task runner
loads them (tests/airflow_bundle_driver.py). dagsync itself runs from the project's
interpreter, as the sidecar and the relay do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from dagsync.options import OPTIONS_BY_ATTR
from tests.airflow_helpers import (
    AIRFLOW_CLI_TIMEOUT_SECONDS,
    INSTALL_TIMEOUT_SECONDS,
    AirflowHome,
    AirflowUnavailable,
    AirflowVenv,
    airflow_spec,
    bundle_env,
    ensure_airflow_venv,
    ensure_dagsync_runtime,
)
from tests.gitservers import Repo, free_port
from tests.helpers import (
    client_env,
    dagsync,
    published,
    snapshot,
    start_dagsync,
    terminate,
    wait_for,
)

pytestmark = pytest.mark.airflow

DRIVER = Path(__file__).resolve().parent / "airflow_bundle_driver.py"
CLASSPATH = "dagsync.airflow.DagsyncDagBundle"
BUNDLE = "dags"
HELPER_MODULE = 'DEFAULT_OWNER = "platform"\n'
USES_HELPER = """from datetime import datetime

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

from dag_helpers import DEFAULT_OWNER

with DAG(dag_id="uses_helper", start_date=datetime(2026, 1, 1), schedule=None,
         default_args={"owner": DEFAULT_OWNER}):
    BashOperator(task_id="run", bash_command="echo helper")
"""


def simple_dag(dag_id: str, owner: str = "airflow") -> str:
    return f"""from datetime import datetime

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

with DAG(dag_id="{dag_id}", start_date=datetime(2026, 1, 1), schedule=None,
         default_args={{"owner": "{owner}"}}):
    BashOperator(task_id="run", bash_command="echo {dag_id}")
"""


@pytest.fixture(scope="session")
def bundle_venv() -> Iterator[AirflowVenv]:
    try:
        venv = ensure_airflow_venv()
        ensure_dagsync_runtime(venv)
    except AirflowUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the Airflow bundle test, but the virtualenv failed: {exc}")
        pytest.skip(f"cannot create the Airflow virtualenv ({airflow_spec()}): {exc}")
    yield venv


@pytest.fixture
def env(hermetic_git_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return client_env(hermetic_git_env, tmp_path / "home")


class Airflow:
    """Airflow processes whose only DAG bundle is a DagsyncDagBundle with ``kwargs``."""

    def __init__(self, venv: AirflowVenv, tmp: Path, base_env: Mapping[str, str]) -> None:
        self.venv = venv
        self.home = AirflowHome(venv, tmp / "airflow-home", base_env)
        self.storage = tmp / "bundle-storage"
        self.kwargs: dict[str, Any] = {}

    def versions(self) -> Path:
        return self.storage / BUNDLE / "versions"

    def env(self) -> dict[str, str]:
        config = [{"name": BUNDLE, "classpath": CLASSPATH, "kwargs": self.kwargs}]
        return bundle_env(self.home, config, self.storage)

    def start(self) -> subprocess.Popen[str]:
        """A long-lived Airflow process (the DAG processor's view: one bundle instance)."""
        return subprocess.Popen(
            [str(self.venv.python), str(DRIVER)], env=self.env(), cwd=self.home.home,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip

    def run(self, *requests: dict[str, Any]) -> list[dict[str, Any]]:
        """A fresh Airflow process (a task's view) answering ``requests`` in order."""
        proc = subprocess.run(
            [str(self.venv.python), str(DRIVER)], env=self.env(), cwd=self.home.home,
            input="".join(json.dumps(r) + "\n" for r in requests), capture_output=True,
            text=True, timeout=AIRFLOW_CLI_TIMEOUT_SECONDS, check=False,
        )  # fmt: skip
        answers = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
        assert len(answers) == len(requests), f"driver exit {proc.returncode}:\n{proc.stderr}"
        return answers


def ask(proc: subprocess.Popen[str], request: dict[str, Any]) -> dict[str, Any]:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps(request) + "\n")
    proc.stdin.flush()
    line = proc.stdout.readline()
    assert line, f"the Airflow driver exited ({proc.poll()})"
    answer: dict[str, Any] = json.loads(line)
    return answer


def ok(answer: dict[str, Any]) -> dict[str, Any]:
    assert answer["ok"], answer.get("traceback", answer)
    return answer


def pinned_task(version: str) -> Sequence[dict[str, Any]]:
    """What a task does: get the bundle at its version, initialise it, load its DAGs."""
    return (
        {"op": "get", "key": "t", "name": BUNDLE, "version": version},
        {"op": "initialize", "key": "t"},
        {"op": "dagbag", "key": "t"},
    )


def assert_loads(answer: dict[str, Any], dag_ids: list[str], under: Path) -> None:
    ok(answer)
    assert answer["import_errors"] == {}, answer
    assert answer["dag_ids"] == sorted(dag_ids), answer
    assert all(loc.startswith(f"{under}/") for loc in answer["filelocs"]), answer


def listing(root: Path) -> list[tuple[str, int, int]]:
    """Every name under ``root`` with its inode and mtime: what a write would change."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            out.append((os.path.join(dirpath, name), st.st_ino, st.st_mtime_ns))
    return sorted(out)


def first_dags(repo: Repo) -> str:
    repo.write("README.md", "outside the published subpath\n")
    repo.write("dags/alpha.py", simple_dag("alpha"))
    repo.write("dags/dag_helpers.py", HELPER_MODULE)
    repo.write("dags/uses_helper.py", USES_HELPER)
    sha = repo.commit("first DAGs")
    repo.push()
    return sha


def second_dags(repo: Repo) -> str:
    repo.write("dags/alpha.py", simple_dag("alpha", owner="team-b"))
    repo.write("dags/beta.py", simple_dag("beta"))
    sha = repo.commit("beta added, alpha now owned by team-b")
    repo.push()
    return sha


@pytest.mark.timeout(INSTALL_TIMEOUT_SECONDS + 900)
def test_bundle_follows_publishes_and_pins_from_local_disk(
    bundle_venv: AirflowVenv,
    make_git_repo: Callable[..., Repo],
    env: dict[str, str],
    tmp_path: Path,
) -> None:
    repo = make_git_repo("dags-repo", initial=False)
    root = tmp_path / "root"
    airflow = Airflow(bundle_venv, tmp_path, env)
    airflow.kwargs = {"root": str(root), "link": "repo"}

    def publish() -> None:
        result = dagsync(
            "once", "--repo", repo.file_url, "--root", root, "--link", "repo", "--subpath",
            "dags", "--keep-revisions", "2", "--revision-grace", "0", env=env,
        )  # fmt: skip
        assert result.returncode == 0, result

    # The DAG processor's bundle, before the first publish and after it.
    processor = airflow.start()
    try:
        got = ok(ask(processor, {"op": "get", "key": "p", "name": BUNDLE, "version": None}))
        assert got["class"].rsplit(".", 1)[1] == "DagsyncDagBundle"
        assert got["supports_versioning"] is True
        assert got["refresh_interval"] == 10
        assert got["path"] == str(root / "repo")
        assert ok(ask(processor, {"op": "current", "key": "p"}))["version"] is None

        c1 = first_dags(repo)
        publish()
        current = ok(ask(processor, {"op": "current", "key": "p"}))
        assert current["version"] == c1
        # Airflow 3.2+ takes a BundleVersion (a bare str is deprecated there); 3.0/3.1 a str.
        wanted = "BundleVersion" if got["airflow_has_bundle_version"] else "str"
        assert current["version_type"] == wanted
        ok(ask(processor, {"op": "initialize", "key": "p"}))
        parsed = ask(processor, {"op": "dagbag", "key": "p"})
        assert_loads(parsed, ["alpha", "uses_helper"], root / "repo")
        assert parsed["owners"]["uses_helper"] == "platform"  # the helper module imported

        # The current version follows each publish; refresh() reads, never writes.
        c2 = second_dags(repo)
        publish()
        before = listing(root)
        assert ok(ask(processor, {"op": "refresh", "key": "p"}))["version"] == c2
        assert listing(root) == before
        assert ok(ask(processor, {"op": "current", "key": "p"}))["version"] == c2
    finally:
        assert processor.stdin is not None
        processor.stdin.close()
        assert processor.wait(timeout=60) == 0

    # A task pinned to the previous revision, still on local disk: exactly that tree, hard
    # linked into Airflow's own version folder.
    kept = root / ".dagsync" / "revisions" / c1
    got, init, bag = airflow.run(*pinned_task(c1))
    pinned = airflow.versions() / c1
    assert ok(got)["path"] == str(pinned)
    assert ok(init)["path"] == str(pinned)
    assert_loads(bag, ["alpha", "uses_helper"], pinned)
    assert bag["owners"]["alpha"] == "airflow"  # c1's alpha, not c2's
    assert snapshot(pinned) == snapshot(kept)
    assert (pinned / "alpha.py").stat().st_ino == (kept / "alpha.py").stat().st_ino

    # Airflow's version lock keeps its stale clean-up off a version in use; unlocked, the
    # clean-up removes Airflow's copy and nothing of dagsync's.
    answers = airflow.run(
        {"op": "get", "key": "t", "name": BUNDLE, "version": c1},
        {"op": "lock", "key": "t"},
        {"op": "cleanup", "min_versions": 0, "age_seconds": 0},
    )
    assert all(a["ok"] for a in answers), answers
    assert (pinned / "alpha.py").is_file()
    answers = airflow.run({"op": "cleanup", "min_versions": 0, "age_seconds": 0})
    assert answers[0]["ok"], answers
    assert not pinned.exists()
    assert (kept / "alpha.py").read_text() == simple_dag("alpha")

    # A newer publish drops c1 from the root (keep 2): without a relay, a task pinned to it
    # fails with an error naming it, and nothing is left in Airflow's folder.
    repo.write("dags/gamma.py", simple_dag("gamma"))
    repo.commit("gamma")
    repo.push()
    publish()
    assert not kept.exists()
    _, init, _ = airflow.run(*pinned_task(c1))
    assert not init["ok"]
    assert init["error"] == "dagsync.pinned.RevisionUnavailable"
    assert c1 in init["message"] and "no relay_url" in init["message"]
    assert sorted(p.name for p in airflow.versions().iterdir()) == []


relay_available = pytest.mark.skipif(
    "relay_url" not in OPTIONS_BY_ATTR, reason="the relay source (--source relay) is not here"
)


@relay_available
@pytest.mark.timeout(INSTALL_TIMEOUT_SECONDS + 900)
def test_pinned_version_gone_from_the_worker_comes_from_the_relay(
    bundle_venv: AirflowVenv,
    make_git_repo: Callable[..., Repo],
    env: dict[str, str],
    tmp_path: Path,
) -> None:
    repo = make_git_repo("dags-repo", initial=False)
    upstream, worker = tmp_path / "upstream", tmp_path / "worker"
    token = tmp_path / "relay-token"
    token.write_text("bundle-relay-token-8c1f\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    relay = start_dagsync(
        "run", "--repo", repo.file_url, "--subpath", "dags", "--root", upstream,
        "--serve-revisions", "--serve-token-file", token, "--http-bind", f"127.0.0.1:{port}",
        "--period", "1s", "--keep-revisions", "5", env=env, log=tmp_path / "relay.log",
    )  # fmt: skip
    try:

        def served(sha: str) -> None:
            wait_for(
                lambda: (upstream / "current").is_symlink() and published(upstream)[0] == sha,
                timeout=60,
                what=f"the relay to publish {sha}",
            )
            result = dagsync(
                "once", "--source", "relay", "--relay-url", url, "--relay-token-file", token,
                "--root", worker, "--keep-revisions", "1", "--revision-grace", "0", env=env,
            )  # fmt: skip
            assert result.returncode == 0, result
            assert published(worker)[0] == sha

        c1 = first_dags(repo)
        served(c1)
        c2 = second_dags(repo)
        served(c2)
        assert not (worker / ".dagsync" / "revisions" / c1).exists()  # gone from the worker
        assert (upstream / ".dagsync" / "revisions" / c1).is_dir()  # still kept upstream

        airflow = Airflow(bundle_venv, tmp_path, env)
        airflow.kwargs = {"root": str(worker), "relay_url": url, "relay_token_file": str(token)}
        # A task pinned to c1: fetched from the relay, exactly c1's tree, its DAGs load.
        answers = airflow.run(
            *pinned_task(c1),
            {"op": "get", "key": "p", "name": BUNDLE, "version": None},
            {"op": "current", "key": "p"},
        )
        _, init, bag, _, current = answers
        pinned = airflow.versions() / c1
        assert ok(init)["path"] == str(pinned)
        assert snapshot(pinned) == snapshot(upstream / ".dagsync" / "revisions" / c1)
        assert sorted(snapshot(pinned)) == ["alpha.py", "dag_helpers.py", "uses_helper.py"]
        assert_loads(bag, ["alpha", "uses_helper"], pinned)
        assert bag["owners"] == {"alpha": "airflow", "uses_helper": "platform"}
        assert ok(current)["version"] == c2
        assert sorted(p.name for p in airflow.versions().iterdir()) == [c1]  # no temp left

        # A task pinned to the worker's own revision is linked from its disk, not fetched.
        _, init, bag = airflow.run(*pinned_task(c2))
        assert_loads(bag, ["alpha", "beta", "uses_helper"], airflow.versions() / c2)
        local = worker / ".dagsync" / "revisions" / c2 / "beta.py"
        assert (airflow.versions() / c2 / "beta.py").stat().st_ino == local.stat().st_ino

        # A revision neither has: an error naming it.
        missing = "0" * 40
        _, init, _ = airflow.run(*pinned_task(missing))
        assert not init["ok"]
        assert missing in init["message"] and url in init["message"], init
        assert "bundle-relay-token" not in init["message"]
        assert sorted(p.name for p in airflow.versions().iterdir()) == sorted([c1, c2])
    finally:
        terminate(relay)


def test_importing_dagsync_in_airflows_interpreter_loads_airflow_only_for_the_class(
    bundle_venv: AirflowVenv, tmp_path: Path
) -> None:
    code = (
        "import sys\n"
        "import dagsync, dagsync.cli, dagsync.app, dagsync.airflow, dagsync.pinned\n"
        "before = sorted(m for m in sys.modules if m.split('.')[0] == 'airflow')\n"
        "cls = dagsync.airflow.DagsyncDagBundle\n"
        "from airflow.dag_processing.bundles.base import BaseDagBundle\n"
        "print(before, issubclass(cls, BaseDagBundle), cls.supports_versioning)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "DAGSYNC_"))}
    env.update(
        PYTHONPATH=str(Path(__file__).resolve().parent.parent),
        AIRFLOW_HOME=str(tmp_path / "airflow-home"),
    )
    proc = subprocess.run(
        [str(bundle_venv.python), "-c", code], env=env, capture_output=True, text=True,
        timeout=AIRFLOW_CLI_TIMEOUT_SECONDS, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["[]", "True", "True"], proc.stdout + proc.stderr[-2000:]
    assert sys.modules.get("airflow") is None
