"""The local source beyond the shared contract: modes, symlinks, skipped entries, unreadable
files, the debouncer, file events in-process, and ``dagsync run`` reacting to writes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dagsync.errors import ConfigError, SourceError
from dagsync.sources.local import Debouncer
from dagsync.sources.objectstore import RemoteObject
from tests.sources.store_contract import REPO, link_target, published_files, run_pass, syncer_for

POLL_SECONDS = 0.02


@pytest.fixture
def src(tmp_path: Path) -> Path:
    folder = tmp_path / "src"
    folder.mkdir()
    return folder


def local_flags(src: Path, root: Path, **options: Any) -> dict[str, Any]:
    return {"source": "local", "local_path": str(src), "root": str(root), **options}


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until ``condition()`` held; fails after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(POLL_SECONDS)
    return time.monotonic() - started


# -- what is published -------------------------------------------------------------------------


def test_exec_bit_symlinks_and_skipped_entries(src: Path, tmp_path: Path) -> None:
    (src / "dags").mkdir()
    (src / "dags" / "dag.py").write_text("print(1)\n")
    tool = src / "dags" / "tool.sh"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o700)  # owner-only on the source: published readable by all, still exec
    os.symlink("dag.py", src / "dags" / "alias.py")
    os.symlink("dags/dag.py", src / "dag-link.py")  # (a link to a folder is rejected: SPEC 3)
    (src / ".git").mkdir()
    (src / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    os.mkfifo(src / "dags" / "pipe")
    root = src / "published-root"  # the root inside the folder: neither walked nor published

    result = run_pass(local_flags(src, root), {})
    again = run_pass(local_flags(src, root), {})

    assert result.result == "published", result.error
    assert again.result == "unchanged"
    assert published_files(root) == {
        "dags/dag.py": b"print(1)\n",
        "dags/tool.sh": b"#!/bin/sh\n",
        "dags/alias.py": b"-> dag.py",
        "dag-link.py": b"-> dags/dag.py",
    }
    assert stat.S_IMODE((root / "current" / "dags" / "tool.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((root / "current" / "dags" / "dag.py").stat().st_mode) == 0o644
    assert (root / "current" / "dags" / "dag.py").stat().st_ino != (
        src / "dags" / "dag.py"
    ).stat().st_ino


@pytest.mark.parametrize("target", ["/etc/passwd", "../../outside.py"])
def test_symlink_leaving_the_tree_is_refused(src: Path, tmp_path: Path, target: str) -> None:
    (src / "dags").mkdir()
    (src / "dags" / "dag.py").write_text("print(1)\n")
    os.symlink(target, src / "dags" / "escape.py")

    result = run_pass(local_flags(src, tmp_path / "root"), {})
    excluded = run_pass(local_flags(src, tmp_path / "root", exclude=["escape.py"]), {})

    assert result.result == "failed"
    assert "'dags/escape.py'" in (result.error or "") and "leaves the tree" in (result.error or "")
    assert excluded.result == "published", excluded.error


def test_symlink_inside_source_but_outside_subpath_is_refused(src: Path, tmp_path: Path) -> None:
    (src / "dags").mkdir()
    (src / "shared.py").write_text("x = 1\n")
    os.symlink("../shared.py", src / "dags" / "shared.py")

    result = run_pass(local_flags(src, tmp_path / "root", subpath="dags"), {})

    assert result.result == "failed"  # it would dangle in the published tree
    assert "dags/shared.py" in (result.error or "")


def test_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    # Root reads everything, so run dagsync as "nobody" when the tests run as root.
    base = Path(tempfile.mkdtemp(prefix="dagsync-unreadable-"))
    try:
        base.chmod(0o777)
        src = base / "src"
        (src / "dags").mkdir(parents=True)
        (src / "dags" / "ok.py").write_text("print(1)\n")
        secret = src / "dags" / "private.py"
        secret.write_text("print(2)\n")
        for folder in (src, src / "dags"):
            folder.chmod(0o755)
        (src / "dags" / "ok.py").chmod(0o644)
        secret.chmod(0o000)
        root = base / "root"
        args = ["once", "--local-path", str(src), "--root", str(root)]
        prefix: list[str] = []
        if os.geteuid() == 0:
            prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        proc = subprocess.run(
            [*prefix, sys.executable, "-m", "dagsync", *args],
            env={"PATH": "/usr/bin:/bin", "HOME": str(base)},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert proc.returncode == 1, proc.stderr
    assert "dags/private.py" in proc.stderr and "Permission denied" in proc.stderr


def test_a_file_changed_after_listing_is_not_copied(src: Path, tmp_path: Path) -> None:
    (src / "dag.py").write_text("print(1)\n")
    with syncer_for(local_flags(src, tmp_path / "root"), {}) as syncer:
        source: Any = syncer.source
        listed = RemoteObject("dag.py", 9, "9:1", handle=str(src / "dag.py"))
        with pytest.raises(SourceError, match="dag.py: changed during the sync"):
            source.download(listed, open(os.devnull, "wb"), time.monotonic() + 10)  # noqa: SIM115


def test_configuration_errors(tmp_path: Path) -> None:
    cases = [
        ({"local_path": None}, "--local-path is required"),
        ({"local_path": str(tmp_path / "missing")}, "is not a directory"),
        ({"local_path": str(tmp_path), "root": str(tmp_path)}, "must not be the --root"),
    ]
    for options, message in cases:
        flags = {"source": "local", "root": str(tmp_path / "root"), **options}
        with pytest.raises(ConfigError, match=message) as caught, syncer_for(flags, {}):
            pass
        assert caught.value.option == "local-path"


# -- debouncing and file events ----------------------------------------------------------------


@pytest.fixture
def notes() -> Iterator[list[float]]:
    yield []


def test_debouncer_turns_a_burst_into_one_call(notes: list[float]) -> None:
    debouncer = Debouncer(lambda: notes.append(time.monotonic()), quiet=0.05, max_wait=1.0)
    debouncer.start()
    try:
        started = time.monotonic()
        for _ in range(100):
            debouncer.poke()
        wait_for(lambda: len(notes) == 1, 2, "one notification")
        assert notes[0] - started < 0.5
        time.sleep(0.2)  # a quiet period: nothing more may come
        assert len(notes) == 1
    finally:
        debouncer.stop()


def test_debouncer_fires_within_max_wait_under_constant_writes(notes: list[float]) -> None:
    debouncer = Debouncer(lambda: notes.append(time.monotonic()), quiet=0.1, max_wait=0.25)
    debouncer.start()
    stop = threading.Event()
    try:
        started = time.monotonic()
        while time.monotonic() - started < 0.8:  # never 100 ms of quiet
            debouncer.poke()
            stop.wait(0.01)
        assert 2 <= len(notes) <= 4
        assert notes[0] - started < 0.4
    finally:
        debouncer.stop()


def test_debouncer_stop_is_immediate() -> None:
    debouncer = Debouncer(lambda: None, quiet=30, max_wait=60)
    debouncer.start()
    debouncer.poke()
    started = time.monotonic()
    debouncer.stop()
    assert time.monotonic() - started < 1


def test_watch_notifies_on_changes_but_not_on_its_own_reads(src: Path, notes: list[float]) -> None:
    (src / "dag.py").write_text("print(1)\n")
    root = src / "root"  # inside the watched folder: its writes must be ignored
    with syncer_for(local_flags(src, root), {}, command="run") as syncer:
        source: Any = syncer.source
        source.watch(lambda: notes.append(time.monotonic()))
        assert syncer.run_pass().result == "published"  # reads the source, writes the root
        assert syncer.run_pass().result == "unchanged"
        time.sleep(0.6)  # longer than the debounce: an event from the passes would show
        assert notes == []

        changed = time.monotonic()
        (src / "dag.py").write_text("print(2)\n")
        wait_for(lambda: len(notes) == 1, 2, "a notification")
        assert notes[0] - changed < 1.2
    # close() stopped and joined the observer and the debouncer (the autouse fixture checks)


# -- dagsync run -------------------------------------------------------------------------------


class RunningDagsync:
    """``dagsync run`` on a local folder, its JSON log in a file."""

    def __init__(self, src: Path, root: Path, log: Path, period: str) -> None:
        self.root, self.log = root, log
        args = ["run", "--local-path", str(src), "--root", str(root), "--period", period]
        args += ["--http-bind=", "--log-format", "json", "--log-level", "debug"]
        env = {"PATH": "/usr/bin:/bin", "HOME": str(root.parent)}
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dagsync", *args],
                env=env,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def events(self, name: str) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text().splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if doc.get("event") == name:
                out.append(doc)
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=20) == 0, self.log.read_text()


def current_text(root: Path, name: str) -> str | None:
    try:
        return (root / "current" / name).read_text()
    except OSError:
        return None


def test_run_publishes_a_change_within_two_seconds_and_debounces_bursts(
    src: Path, tmp_path: Path
) -> None:
    (src / "dag.py").write_text("v = 0\n")
    dagsync = RunningDagsync(src, tmp_path / "root", tmp_path / "run.log", period="60s")
    try:
        wait_for(lambda: current_text(tmp_path / "root", "dag.py") == "v = 0\n", 20, "start")
        time.sleep(0.5)  # let the observer settle; the period (60 s) never fires here

        changed = time.monotonic()
        (src / "dag.py").write_text("v = 1\n")
        wait_for(lambda: current_text(tmp_path / "root", "dag.py") == "v = 1\n", 5, "change")
        assert time.monotonic() - changed < 2.0
        published_before_burst = len(dagsync.events("published"))

        for i in range(100):
            (src / f"burst{i % 10}.py").write_text(f"v = {i}\n")
        wait_for(lambda: current_text(tmp_path / "root", "burst9.py") == "v = 99\n", 5, "burst")
        time.sleep(1.5)  # anything still pending would be published by now
        burst_syncs = len(dagsync.events("published")) - published_before_burst
        assert 1 <= burst_syncs <= 3
        assert len(published_files(tmp_path / "root")) == 11
    finally:
        dagsync.stop()


def test_run_rescans_without_change_publish_nothing(src: Path, tmp_path: Path) -> None:
    (src / "dag.py").write_text("v = 0\n")
    root = tmp_path / "root"
    dagsync = RunningDagsync(src, root, tmp_path / "run.log", period="200ms")
    try:
        wait_for(lambda: link_target(root) is not None, 20, "first publish")
        first = link_target(root)
        wait_for(lambda: len(dagsync.events("unchanged")) >= 3, 10, "three rescans")
        assert len(dagsync.events("published")) == 1
        assert link_target(root) == first
    finally:
        dagsync.stop()
