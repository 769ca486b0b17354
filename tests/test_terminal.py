"""Output for people: ``dagsync once``'s progress bar and ``dagsync status``'s summary on a real
pseudo-terminal, and neither when the output is piped or the logs are JSON."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import termios
from dataclasses import dataclass
from pathlib import Path

import pytest
from tqdm import tqdm

from dagsync.config import load
from dagsync.manifest import Entry
from dagsync.progress import CHECKING, FETCHING, PUBLISHING, RESOLVING, WRITING, watching
from dagsync.sources.base import load_source_class
from dagsync.store import RevisionStore
from dagsync.syncer import Syncer
from dagsync.tree import TreeWriter
from tests.gitservers import INITIAL_FILES, Repo
from tests.helpers import DAGSYNC, RUN_TIMEOUT_SECONDS, client_env, dagsync

FILES = 40
FILE_BYTES = 3000


@dataclass(frozen=True)
class TtyRun:
    returncode: int
    tty: str  # what the program wrote to the terminal
    piped: str  # what it wrote to the other, piped stream


def on_tty(*args: str | Path, env: dict[str, str], stream: str, cols: int = 100) -> TtyRun:
    """Run dagsync with ``stream`` ("stderr" or "stdout") on a new pseudo-terminal of ``cols``
    columns (0: a terminal that reports no size) and the other stream on a pipe."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24 if cols else 0, cols, 0, 0))
    ends = {"stderr": slave, "stdout": subprocess.PIPE}
    if stream == "stdout":
        ends = {"stdout": slave, "stderr": subprocess.PIPE}
    proc = subprocess.Popen([*DAGSYNC, *map(str, args)], env=env, stdin=subprocess.DEVNULL, **ends)  # type: ignore[call-overload]
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the last writer closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    piped = (proc.stdout or proc.stderr).read()  # type: ignore[union-attr]
    proc.wait(timeout=RUN_TIMEOUT_SECONDS)
    return TtyRun(proc.returncode, b"".join(chunks).decode(errors="replace"), piped.decode())


@pytest.fixture
def env(hermetic_git_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return client_env(hermetic_git_env, tmp_path / "home")


@pytest.fixture
def src(tmp_path: Path) -> Path:
    folder = tmp_path / "src"
    (folder / "dags").mkdir(parents=True)
    for i in range(FILES):
        (folder / "dags" / f"d{i:02}.py").write_bytes(b"#" * FILE_BYTES)
    return folder


def frames(tty: str) -> list[str]:
    """The successive states of the bar (tqdm redraws the line after a carriage return)."""
    return [f.strip() for line in tty.split("\n") for f in line.split("\r") if f.strip()]


# --- the progress bar -------------------------------------------------------------------------


@pytest.mark.parametrize("cols", [100, 0])
def test_once_on_a_terminal_shows_phases_files_bytes_and_rate(
    src: Path, tmp_path: Path, env: dict[str, str], cols: int
) -> None:
    root = tmp_path / "root"
    run = on_tty("once", "--local-path", src, "--root", root, "--check", "cmd:true",
                 env=env, stream="stderr", cols=cols)  # fmt: skip
    assert run.returncode == 0, run.tty
    shown = frames(run.tty)
    for phase in (RESOLVING, FETCHING, WRITING, CHECKING, PUBLISHING):
        assert any(f.startswith(f"{phase}:") for f in shown), (phase, shown)
    total = "/" + tqdm.format_sizeof(FILES * FILE_BYTES)  # "/120k"
    done = [f for f in shown if f.startswith(f"{PUBLISHING}:")]
    assert any("100%" in f and total in f and f"{FILES}/{FILES} files" in f for f in done)
    assert any("B/s" in f for f in shown)  # the rate
    assert "published revision=" in run.tty  # log lines still reach the terminal, whole
    assert run.piped == ""
    assert len(list((root / "current" / "dags").iterdir())) == FILES

    # A second revision: unchanged files are linked, and counted as such.
    (src / "dags" / "d00.py").write_bytes(b"changed")
    again = on_tty("once", "--local-path", src, "--root", root, env=env, stream="stderr")
    assert again.returncode == 0
    assert any(f"{FILES}/{FILES} files ({FILES - 1} unchanged)" in f for f in frames(again.tty))


def test_once_from_git_on_a_terminal_counts_files_without_a_total(
    git_repo: Repo, tmp_path: Path, env: dict[str, str]
) -> None:
    run = on_tty("once", "--repo", git_repo.file_url, "--root", tmp_path / "root",
                 env=env, stream="stderr")  # fmt: skip
    assert run.returncode == 0, run.tty
    shown = frames(run.tty)
    assert any(f.startswith(f"{WRITING}:") for f in shown), shown
    assert any(f"{len(INITIAL_FILES)} files" in f for f in shown), shown


def test_no_progress_when_stderr_is_piped(src: Path, tmp_path: Path, env: dict[str, str]) -> None:
    result = dagsync("once", "--local-path", src, "--root", tmp_path / "root", env=env)
    assert result.returncode == 0, str(result)
    assert "\r" not in result.stderr and "files]" not in result.stderr
    assert RESOLVING + ":" not in result.stderr and WRITING + ":" not in result.stderr
    assert result.stderr.count("\n") == len(result.stderr.strip().splitlines())


def test_no_progress_with_json_logs_on_a_terminal(
    src: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    run = on_tty("once", "--local-path", src, "--root", tmp_path / "root",
                 "--log-format", "json", env=env, stream="stderr")  # fmt: skip
    assert run.returncode == 0, run.tty
    lines = [line for line in run.tty.replace("\r", "").split("\n") if line.strip()]
    events = [json.loads(line) for line in lines]  # every byte on the terminal is a JSON line
    assert "published" in [e["event"] for e in events]
    assert "files]" not in run.tty


def test_tqdm_is_imported_only_for_a_terminal(
    src: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    code = (
        "import sys; from dagsync.cli import main; "
        f"rc = main(['once', '--local-path', {str(src)!r}, '--root', {str(tmp_path / 'r')!r}]); "
        "print(rc, 'tqdm' in sys.modules)"
    )
    out = subprocess.run([DAGSYNC[0], "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["0", "False"], out.stderr


# --- the observer, whatever the source ---------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.phases: list[str] = []
        self.expected: tuple[int, int] | None = None
        self.files = self.bytes = self.linked = 0

    def phase(self, name: str) -> None:
        self.phases.append(name)

    def expect(self, files: int, nbytes: int) -> None:
        self.expected = (files, nbytes)

    def advance(self, files: int, nbytes: int, linked: bool = False) -> None:
        self.files += files
        self.bytes += nbytes
        self.linked += files if linked else 0


def observed_pass(flags: dict[str, object], tmp_path: Path) -> tuple[Recorder, Syncer]:
    config = load("once", {"root": str(tmp_path / "root"), **flags}, dict(os.environ))
    store = RevisionStore(config.root, config.link)
    store.prepare()
    source = load_source_class(config.source)(config, store.cache / config.source)
    syncer = Syncer(config, source, store)
    syncer.progress = recorder = Recorder()
    try:
        result = syncer.run_pass()
    finally:
        source.close()
    assert result.result == "published", result.error
    return recorder, syncer


def test_the_tree_writer_reports_every_file_of_a_store(src: Path, tmp_path: Path) -> None:
    (src / "dags" / "link.py").symlink_to("d00.py")
    rec, _ = observed_pass({"local_path": str(src), "check": "python"}, tmp_path)
    assert rec.phases == [RESOLVING, FETCHING, WRITING, CHECKING, PUBLISHING]
    assert rec.expected == (FILES + 1, FILES * FILE_BYTES + len("d00.py"))
    assert (rec.files, rec.bytes, rec.linked) == (*rec.expected, 0)
    for i in range(3):
        (src / "dags" / f"d{i:02}.py").write_bytes(b"new")
    rec, _ = observed_pass({"local_path": str(src)}, tmp_path)
    assert (rec.files, rec.linked) == (FILES + 1, FILES - 3)  # a symlink is made anew


def test_the_tree_writer_reports_every_file_of_a_git_checkout(
    git_repo: Repo, tmp_path: Path, hermetic_git: dict[str, str]
) -> None:
    rec, _ = observed_pass({"repo": git_repo.file_url}, tmp_path)
    assert rec.phases == [RESOLVING, FETCHING, WRITING, PUBLISHING]
    assert rec.files == len(INITIAL_FILES)
    assert rec.bytes == sum(len(v) for v in INITIAL_FILES.values())


def test_a_source_can_tell_the_total_through_its_tree_writer(tmp_path: Path) -> None:
    dest = tmp_path / "staging"
    dest.mkdir()
    rec = Recorder()
    with watching(dest, rec):
        writer = TreeWriter(dest, None)
        writer.expect(1, 5)
        writer.write_bytes(Entry("a/b.py", 5, "t"), b"hello")
        writer.finish()
    assert rec.phases == [WRITING] and rec.expected == (1, 5) and (rec.files, rec.bytes) == (1, 5)
    assert TreeWriter(tmp_path / "other", None).progress is None  # nobody watches that tree


# --- dagsync status ----------------------------------------------------------------------------


def test_status_on_a_terminal_is_a_summary_and_json_otherwise(
    src: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    root = tmp_path / "root"
    empty = on_tty("status", "--root", root, env=env, stream="stdout")
    assert empty.returncode == 1
    assert empty.tty.strip() == f"nothing published yet under {root} (link current)"
    piped_empty = dagsync("status", "--root", root, env=env)
    assert piped_empty.returncode == 1
    assert json.loads(piped_empty.stdout) == {"revision": None, "root": str(root)}

    assert dagsync("once", "--local-path", src, "--root", root, env=env).returncode == 0
    piped = dagsync("status", "--root", root, env=env)
    assert piped.returncode == 0
    doc = json.loads(piped.stdout)
    assert doc["files"] == FILES and doc["bytes"] == FILES * FILE_BYTES
    assert doc["source"] == "local" and doc["link"] == str(root / "current")

    summary = on_tty("status", "--root", root, env=env, stream="stdout")
    assert summary.returncode == 0
    lines = dict(line.split(None, 1) for line in summary.tty.replace("\r", "").splitlines())
    assert lines["revision"] == doc["revision"]
    assert lines["source"] == "local"
    assert lines["files"] == f"{FILES}, 117.2 KiB"
    assert lines["published"].endswith("ago)") and "UTC (" in lines["published"]
    assert lines["link"] == str(root / "current")

    forced = on_tty("status", "--root", root, "--json", env=env, stream="stdout")
    assert forced.returncode == 0
    assert json.loads(forced.tty) == doc
