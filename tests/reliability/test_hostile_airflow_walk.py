"""Trees Airflow cannot walk (SPEC section 3), shown with real Airflow: its own DAG-file listing
(``airflow.utils.file.list_py_file_paths``, which the DAG processor uses) aborts on a committed
``dags/up -> ..`` or a second link to a folder ("Detected recursive loop"), so dagsync rejects
such a revision like a failed check, naming the symlink, and the last good revision (which
Airflow lists fine) keeps serving. Without the rule dagsync published it, even with
``--check python``."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.airflow_helpers import AirflowUnavailable, AirflowVenv, airflow_spec, ensure_airflow_venv
from tests.gitservers import Repo, run_git
from tests.helpers import client_env, dagsync, link_target, published
from tests.reliability.hostile_common import error_lines

pytestmark = pytest.mark.airflow

LIST_DAG_FILES = """
import json, sys
from airflow.utils.file import list_py_file_paths
try:
    found = list_py_file_paths(sys.argv[1], safe_mode=False)
except RuntimeError as exc:
    print(json.dumps({"error": str(exc)}))
else:
    print(json.dumps({"files": sorted(os.path.relpath(f, sys.argv[1]) for f in found)}))
""".replace("import json, sys", "import json, os, sys")


@pytest.fixture(scope="module")
def airflow_venv() -> Iterator[AirflowVenv]:
    try:
        venv = ensure_airflow_venv()
    except AirflowUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the Airflow test, but the virtualenv failed: {exc}")
        pytest.skip(f"cannot create the Airflow virtualenv ({airflow_spec()}): {exc}")
    yield venv


def airflow_lists(venv: AirflowVenv, folder: Path, home: Path) -> dict[str, object]:
    """What Airflow's own walk finds under ``folder`` (or the error it aborts with)."""
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    proc = subprocess.run(
        [str(venv.python), "-c", LIST_DAG_FILES, str(folder)],
        env=env, capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def checkout(repo: Repo, into: Path) -> Path:
    """The committed tree as plain files (what a git clone would give Airflow)."""
    archive = into.with_suffix(".tar")
    run_git(["archive", "--output", str(archive), "HEAD"], cwd=repo.work, env=repo.env)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="fully_trusted")
    return into


@pytest.mark.parametrize(
    ("links", "culprit"),
    [({"dags/up": ".."}, "dags/up"), ({"latest": "dags"}, "latest")],
    ids=["ancestor-loop", "second-link-to-a-folder"],
)
def test_a_tree_airflow_aborts_on_is_rejected_and_the_old_one_keeps_serving(
    git_repo: Repo,
    airflow_venv: AirflowVenv,
    hermetic_git_env: dict[str, str],
    tmp_path: Path,
    links: dict[str, str],
    culprit: str,
) -> None:
    env = client_env(hermetic_git_env, tmp_path / "home")
    root = tmp_path / "root"
    args = ("once", "--repo", git_repo.file_url, "--root", root, "--check", "python")
    first = dagsync(*args, env=env)
    assert first.returncode == 0, first
    good = link_target(root)
    for path, target in links.items():
        git_repo.symlink(path, target)
    git_repo.commit("a link Airflow cannot walk")
    git_repo.push()

    # Real Airflow aborts its whole DAG listing on this tree.
    plain = checkout(git_repo, tmp_path / "checkout")
    aborted = airflow_lists(airflow_venv, plain, tmp_path / "airflow-home")
    assert "Detected recursive loop" in str(aborted.get("error")), aborted

    run = dagsync(*args, env=env)

    assert run.returncode == 1, run
    errors = error_lines(run.stderr)
    assert len(errors) == 1 and "rejected" in errors[0], run.stderr
    assert repr(culprit) in errors[0] and "Airflow" in errors[0]
    assert link_target(root) == good  # the previous revision keeps serving
    assert not any(p.is_symlink() for p in published(root)[1].rglob("*"))
    served = airflow_lists(airflow_venv, root / "current", tmp_path / "airflow-home")
    assert served == {"files": ["dags/a.py", "dags/b.py"]}, served
