"""The pre-publish gate: checks.py on plain folders, and the syncer/reporter path of a rejected
revision (not published, reported, not retried until the source moves) with an in-memory
source."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest
from prometheus_client import CollectorRegistry

from dagsync.checks import check_command, check_python, run_check
from dagsync.config import Config, load
from dagsync.errors import CheckFailed, SyncTimeout
from dagsync.manifest import Entry, Manifest
from dagsync.metrics import Metrics
from dagsync.reporting import Reporter
from dagsync.sources.base import FetchStats, Plan, Published
from dagsync.status import Status, StatusBoard
from dagsync.store import RevisionStore
from dagsync.syncer import Syncer


def far() -> float:
    return time.monotonic() + 60


def tree(root: Path, files: dict[str, str]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


# -- --check python ----------------------------------------------------------------------------
def test_python_check_passes_a_good_tree(tmp_path: Path):
    tree(tmp_path, {"dags/a.py": "x = 1\n", "dags/sub/b.py": "def f():\n    return 2\n"})
    check_python(tmp_path, far())


def test_python_check_names_file_and_line(tmp_path: Path):
    tree(tmp_path, {"dags/a.py": "x = 1\n", "dags/broken.py": "x = 1\ndef f(:\n    pass\n"})
    with pytest.raises(CheckFailed, match=r"^--check python: dags/broken.py:2: "):
        check_python(tmp_path, far())


def test_python_check_indentation_error(tmp_path: Path):
    tree(tmp_path, {"a.py": "def f():\nreturn 1\n"})
    with pytest.raises(CheckFailed, match=r"a.py:2: expected an indented block"):
        check_python(tmp_path)


def test_python_check_ignores_other_files(tmp_path: Path):
    tree(tmp_path, {"README.md": "def f(:", "dags/a.pyc.txt": "(", "sql/q.sql": "select ("})
    check_python(tmp_path)


def test_python_check_honours_encoding_cookie(tmp_path: Path):
    (tmp_path / "latin.py").write_bytes(b"# -*- coding: latin-1 -*-\ns = '\xe9'\n")
    check_python(tmp_path)


def test_python_check_refuses_nul_bytes(tmp_path: Path):
    (tmp_path / "nul.py").write_bytes(b"x = 1\x00\n")
    with pytest.raises(CheckFailed, match="nul.py"):
        check_python(tmp_path)


def test_python_check_follows_symlinks_inside_only(tmp_path: Path):
    tree(tmp_path / "cand", {"lib/bad.txt": "def f(:\n"})
    (tmp_path / "outside.py").write_text("def f(:\n")
    (tmp_path / "cand" / "dangling.py").symlink_to("nowhere.py")
    (tmp_path / "cand" / "out.py").symlink_to(tmp_path / "outside.py")
    check_python(tmp_path / "cand")  # dangling and outside links are not the revision's
    (tmp_path / "cand" / "in.py").symlink_to("lib/bad.txt")
    with pytest.raises(CheckFailed, match="in.py:1"):
        check_python(tmp_path / "cand")


def test_python_check_respects_the_deadline(tmp_path: Path):
    tree(tmp_path, {"a.py": "x = 1\n"})
    with pytest.raises(SyncTimeout):
        check_python(tmp_path, time.monotonic() - 1)


# -- --check cmd: ------------------------------------------------------------------------------
def test_command_runs_in_the_candidate_with_its_env(tmp_path: Path):
    tree(tmp_path, {"marker": ""})
    out = tmp_path.parent / f"{tmp_path.name}-out"
    check_command(
        f'test -f marker && echo "$DAGSYNC_CANDIDATE|$PWD|$KEEP" > {out}',
        tmp_path,
        far(),
        {"PATH": os.environ["PATH"], "KEEP": "yes"},
    )
    assert out.read_text() == f"{tmp_path}|{tmp_path}|yes\n"


def test_command_failure_rejects_with_the_output_tail(tmp_path: Path):
    env = {"PATH": os.environ["PATH"]}
    with pytest.raises(CheckFailed, match=r"exited 4: line one \| line two$"):
        check_command("echo line one; echo line two >&2; exit 4", tmp_path, far(), env)


def test_command_output_is_bounded(tmp_path: Path):
    env = {"PATH": os.environ["PATH"]}
    with pytest.raises(CheckFailed) as info:
        check_command("head -c 100000 /dev/zero | tr '\\0' x; exit 1", tmp_path, far(), env)
    assert len(str(info.value)) < 500


def test_command_timeout_is_a_failure_not_a_rejection(tmp_path: Path):
    env = {"PATH": os.environ["PATH"]}
    t0 = time.monotonic()
    with pytest.raises(SyncTimeout):
        check_command("sleep 60", tmp_path, time.monotonic() + 0.3, env)
    assert time.monotonic() - t0 < 5


def test_run_check_dispatch(tmp_path: Path):
    run_check(None, tmp_path, far(), {})
    run_check("", tmp_path, far(), {})
    tree(tmp_path, {"a.py": "("})
    with pytest.raises(CheckFailed, match="--check python"):
        run_check("python", tmp_path, far(), {})
    with pytest.raises(CheckFailed, match="--check command exited 1"):
        run_check("cmd:false", tmp_path, far(), {"PATH": os.environ["PATH"]})
    with pytest.raises(CheckFailed, match="unknown check"):
        run_check("pylint", tmp_path, far(), {})


# -- the rejected path through syncer and reporter ---------------------------------------------
class MemorySource:
    """A source whose current revision is a dict of files the test changes."""

    name: ClassVar[str] = "memory"

    def __init__(self) -> None:
        self.files: dict[str, str] = {}
        self.fetches = 0

    def revision(self) -> str:
        return Manifest.of(Entry(p, len(c), str(hash(c))) for p, c in self.files.items()).digest()

    def resolve(self, deadline: float) -> Plan:
        return Plan(self.revision())

    def fetch(
        self, plan: Plan, dest: Path, previous: Published | None, deadline: float
    ) -> FetchStats:
        self.fetches += 1
        tree(dest, self.files)
        manifest = Manifest.of(Entry(p, len(c), str(hash(c))) for p, c in self.files.items())
        return FetchStats(manifest, downloaded_files=len(manifest))

    def close(self) -> None:
        pass


class Rig:
    def __init__(self, tmp_path: Path, **flags: Any) -> None:
        flags.setdefault("repo", "file:///unused.git")
        flags.setdefault("root", str(tmp_path / "root"))
        self.config: Config = load("run", flags, {"PATH": os.environ["PATH"]})
        self.store = RevisionStore(self.config.root, self.config.link)
        self.store.prepare()
        self.source = MemorySource()
        self.syncer = Syncer(self.config, self.source, self.store)  # type: ignore[arg-type]
        self.board = StatusBoard(Status(source="memory", started_at=0.0))
        self.registry = CollectorRegistry()
        self.reporter = Reporter(self.config, self.board)
        self.reporter.observers.append(Metrics(self.registry, "memory").observe)

    def sync(self) -> str:
        result = self.syncer.run_pass()
        self.reporter(result)
        return result.result

    def count(self, result: str) -> float | None:
        labels = {"source": "memory", "result": result}
        return self.registry.get_sample_value("dagsync_sync_total", labels)

    def served(self) -> str | None:
        published = self.store.published()
        return published.revision if published else None


def test_rejected_revision_is_kept_out_reported_and_not_retried(tmp_path: Path):
    rig = Rig(tmp_path, check="python", error_file="errors/last.json")
    rig.source.files = {"dags/a.py": "x = 1\n"}
    assert rig.sync() == "published"
    good = rig.served()

    rig.source.files = {"dags/a.py": "x = 1\n", "dags/bad.py": "def f(:\n"}
    bad = rig.source.revision()
    assert rig.sync() == "rejected"
    assert rig.served() == good  # the previous revision keeps serving
    assert not (rig.store.revisions / bad).exists()
    status = rig.board.current
    assert status.revision == good
    assert status.rejected_revision == bad
    assert status.last_error == "--check python: dags/bad.py:1: invalid syntax"
    assert status.consecutive_failures == 0
    doc = json.loads((rig.config.root / "errors/last.json").read_text())
    assert doc["result"] == "rejected"
    assert doc["revision"] == bad
    assert doc["message"] == "--check python: dags/bad.py:1: invalid syntax"
    assert doc["time"].endswith("Z")

    fetches = rig.source.fetches
    assert rig.sync() == "rejected"  # same revision again: not fetched, not checked
    assert rig.source.fetches == fetches
    assert rig.count("rejected") == 2

    rig.source.files["dags/bad.py"] = "def f():\n    pass\n"  # the source moves: tried again
    assert rig.sync() == "published"
    assert rig.served() == rig.source.revision()
    assert rig.board.current.rejected_revision is None
    assert rig.board.current.last_error is None
    assert not (rig.config.root / "errors/last.json").exists()
    assert rig.count("published") == 2


def test_rejected_first_revision_publishes_nothing(tmp_path: Path):
    rig = Rig(tmp_path, check="cmd:test ! -e forbidden")
    rig.source.files = {"forbidden": "", "a.py": ""}
    assert rig.sync() == "rejected"
    assert rig.served() is None
    assert not rig.board.current.ready
    assert list(rig.store.staging.iterdir()) == []  # the candidate was discarded


def test_command_check_sees_the_complete_candidate(tmp_path: Path):
    listing = tmp_path / "listing"
    rig = Rig(tmp_path, check=f"cmd:find . -type f | sort > {listing}")
    rig.source.files = {"dags/a.py": "", "dags/sub/b.py": "", "c.sql": ""}
    assert rig.sync() == "published"
    assert listing.read_text().split() == ["./c.sql", "./dags/a.py", "./dags/sub/b.py"]


def test_error_file_is_written_atomically_and_removed_on_success(tmp_path: Path):
    rig = Rig(tmp_path, check="python", error_file=str(tmp_path / "abs-error.json"))
    rig.source.files = {"a.py": "("}
    assert rig.sync() == "rejected"
    path = tmp_path / "abs-error.json"
    assert set(json.loads(path.read_text())) >= {"message", "time", "result", "revision"}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".abs-error")] == []
    rig.source.files = {"a.py": "x = 1"}
    assert rig.sync() == "published"
    assert not path.exists()
    assert rig.sync() == "unchanged"  # removing an absent file is fine


def test_touch_file_after_each_publish_only(tmp_path: Path):
    rig = Rig(tmp_path, touch_file="touched")
    touched = rig.config.root / "touched"
    rig.source.files = {"a.py": "1"}
    assert rig.sync() == "published"
    first = touched.stat().st_mtime_ns
    os.utime(touched, ns=(first - 10**9, first - 10**9))
    assert rig.sync() == "unchanged"
    assert touched.stat().st_mtime_ns == first - 10**9
    rig.source.files = {"a.py": "2"}
    assert rig.sync() == "published"
    assert touched.stat().st_mtime_ns > first - 10**9
