"""A real Apache Airflow 3 reads what dagsync publishes.

Airflow lives in its own virtualenv, created once and cached (tests/airflow_helpers.py:
``$DAGSYNC_AIRFLOW_VENV`` or ``~/.cache/dagsync-test/airflow-<version>``); dagsync runs from the
project's interpreter. After each publish Airflow loads the folder as its DAG processor does
(the ``dags-folder`` bundle, which puts the folder on ``sys.path``) and must see exactly the
expected DAGs and no import errors.

Outside CI a failed virtualenv install (no network) skips; with ``CI`` set it fails, because
CI must run this test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.airflow_helpers import (
    INSTALL_TIMEOUT_SECONDS,
    AirflowHome,
    AirflowUnavailable,
    AirflowVenv,
    ParsedFolder,
    airflow_spec,
    ensure_airflow_venv,
)
from tests.gitservers import Repo

pytestmark = pytest.mark.airflow

EXAMPLE_DAG = Path(__file__).resolve().parent.parent / "examples" / "dags" / "hello_dagsync.py"
DAGSYNC_TIMEOUT_SECONDS = 120

HELPER_MODULE = '''"""Shared code that DAG files import; it is no DAG itself."""

DEFAULT_OWNER = "platform"


def greeting(name: str) -> str:
    return f"echo hello {name}"
'''
USES_HELPER = """from datetime import datetime

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

from dag_helpers import DEFAULT_OWNER, greeting

with DAG(
    dag_id="uses_helper",
    start_date=datetime(2026, 1, 1),
    schedule=None,
    default_args={"owner": DEFAULT_OWNER},
):
    BashOperator(task_id="greet", bash_command=greeting("helper"))
"""


def simple_dag(dag_id: str, owner: str = "airflow") -> str:
    return f'''from datetime import datetime

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

with DAG(
    dag_id="{dag_id}",
    start_date=datetime(2026, 1, 1),
    schedule=None,
    default_args={{"owner": "{owner}"}},
):
    BashOperator(task_id="run", bash_command="echo {dag_id}")
'''


@pytest.fixture(scope="session")
def airflow_venv() -> Iterator[AirflowVenv]:
    try:
        venv = ensure_airflow_venv()
    except AirflowUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the Airflow test, but the virtualenv failed: {exc}")
        pytest.skip(f"cannot create the Airflow virtualenv ({airflow_spec()}): {exc}")
    made = "reused" if venv.created_seconds is None else f"created in {venv.created_seconds:.0f}s"
    print(f"\nairflow virtualenv {venv.path} ({airflow_spec()}): {made}")
    yield venv


@pytest.fixture
def airflow(
    airflow_venv: AirflowVenv, tmp_path: Path, hermetic_git_env: dict[str, str]
) -> AirflowHome:
    home = AirflowHome(airflow_venv, tmp_path / "airflow-home", hermetic_git_env)
    home.migrate(tmp_path)
    return home


@pytest.fixture
def dagsync_once(
    hermetic_git_env: dict[str, str], tmp_path: Path
) -> Callable[[Repo], subprocess.CompletedProcess[str]]:
    """``dagsync once`` from the project's interpreter into tmp_path/root, gated by --check."""
    env = {k: v for k, v in hermetic_git_env.items() if not k.startswith("DAGSYNC_")}

    def once(repo: Repo) -> subprocess.CompletedProcess[str]:
        argv = [
            sys.executable, "-m", "dagsync", "once", "--repo", repo.file_url,
            "--root", str(tmp_path / "root"), "--subpath", "dags", "--check", "python",
        ]  # fmt: skip
        return subprocess.run(
            argv, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL,
            timeout=DAGSYNC_TIMEOUT_SECONDS, check=False,
        )  # fmt: skip

    return once


def published(link: Path) -> str:
    return Path(os.readlink(link)).name


def assert_sees_exactly(parsed: ParsedFolder, dag_ids: list[str]) -> None:
    assert parsed.import_errors == [], parsed.describe()
    assert parsed.dag_ids == sorted(dag_ids), parsed.describe()


@pytest.mark.timeout(INSTALL_TIMEOUT_SECONDS + 600)
def test_airflow_sees_every_publish_and_nothing_else(
    airflow: AirflowHome,
    dagsync_once: Callable[[Repo], subprocess.CompletedProcess[str]],
    make_git_repo: Callable[..., Repo],
    tmp_path: Path,
) -> None:
    began = time.monotonic()
    repo = make_git_repo("dags-repo", initial=False)
    repo.write("README.md", "outside the published subpath\n")
    repo.write("dags/hello_dagsync.py", EXAMPLE_DAG.read_text())
    repo.write("dags/dag_helpers.py", HELPER_MODULE)
    repo.write("dags/uses_helper.py", USES_HELPER)
    repo.write("dags/alpha.py", simple_dag("alpha"))
    repo.commit("first DAGs")
    repo.push()
    root = tmp_path / "root"
    link = root / "current"

    def publish(expect_exit: int = 0) -> ParsedFolder:
        proc = dagsync_once(repo)
        assert proc.returncode == expect_exit, proc.stderr
        return airflow.parse(link)

    # 1. First publish: the example DAG, a DAG importing a helper module from the folder.
    parsed = publish()
    assert published(link) == repo.head()
    assert_sees_exactly(parsed, ["alpha", "hello_dagsync", "uses_helper"])
    by_id = {row["dag_id"]: row for row in parsed.dags}
    assert by_id["uses_helper"]["owners"] == "platform"  # the helper module was imported
    assert all(str(row["fileloc"]).startswith(f"{link}/") for row in parsed.dags)

    # 2. A DAG added.
    repo.write("dags/beta.py", simple_dag("beta"))
    repo.commit("add beta")
    repo.push()
    assert_sees_exactly(publish(), ["alpha", "beta", "hello_dagsync", "uses_helper"])

    # 3. A DAG changed: Airflow reads the new content through the swapped link.
    repo.write("dags/alpha.py", simple_dag("alpha", owner="team-b"))
    repo.commit("alpha now owned by team-b")
    repo.push()
    parsed = publish()
    assert_sees_exactly(parsed, ["alpha", "beta", "hello_dagsync", "uses_helper"])
    assert {row["dag_id"]: row["owners"] for row in parsed.dags}["alpha"] == "team-b"

    # 4. A DAG removed.
    repo.remove("dags/beta.py")
    good = repo.commit("remove beta")
    repo.push()
    assert_sees_exactly(publish(), ["alpha", "hello_dagsync", "uses_helper"])

    # 5. A syntax error: --check python rejects the revision, the last good one stays.
    repo.write("dags/broken.py", "from airflow.sdk import DAG\nwith DAG(dag_id='broken'\n")
    repo.commit("broken DAG")
    repo.push()
    parsed = publish(expect_exit=1)
    assert published(link) == good
    assert not (link / "broken.py").exists()
    assert_sees_exactly(parsed, ["alpha", "hello_dagsync", "uses_helper"])

    # 6. dags_folder at the root by mistake: ROOT/.airflowignore keeps Airflow out of
    # .dagsync, so its walk (followlinks=True, which aborts on a directory reached twice)
    # finds each DAG once, through the link. Only the folder itself goes on sys.path, so
    # there the helper module is not importable: point dags_folder at the link.
    assert (root / ".airflowignore").read_text().splitlines() == [".dagsync"]
    kept = [p for p in (root / ".dagsync" / "revisions").iterdir() if p.is_dir()]
    assert len(kept) >= 2  # what a walk into .dagsync would reach twice
    parsed = airflow.parse(root)
    assert "recursive loop" not in parsed.stderr, parsed.describe()
    assert parsed.dag_ids == ["alpha", "hello_dagsync"], parsed.describe()
    assert all(str(row["fileloc"]).startswith(f"{link}/") for row in parsed.dags)
    assert parsed.error_files == ["current/uses_helper.py"], parsed.describe()
    assert "No module named 'dag_helpers'" in parsed.import_errors[0]["error"]

    # ... and without the ignore file that walk breaks (the check above is not vacuous).
    (root / ".airflowignore").rename(tmp_path / "airflowignore.saved")
    try:
        broken = airflow.parse(root)
        assert "Detected recursive loop" in broken.stderr, broken.describe()
    finally:
        (tmp_path / "airflowignore.saved").rename(root / ".airflowignore")
    print(f"\nairflow end-to-end scenario: {time.monotonic() - began:.0f}s")
