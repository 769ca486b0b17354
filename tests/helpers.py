"""Running dagsync as a user does (a subprocess) and looking at what it published.

Shared by the git source, consistency, crash and plug-in tests. Everything here observes the
root the way Airflow and a shell would: through the link, readlink and the file system.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

DAGSYNC = (sys.executable, "-m", "dagsync")
RUN_TIMEOUT_SECONDS = 60.0
POLL_SECONDS = 0.01
TMP_LINK_MARK = ".tmp-dagsync-"


@dataclass(frozen=True)
class Result:
    """How one dagsync process ended and what it printed."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def __str__(self) -> str:
        return f"exit {self.returncode}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


def client_env(base: Mapping[str, str], home: Path) -> dict[str, str]:
    """The environment a user's dagsync gets: hermetic, with an empty HOME of its own (so no
    global git config helps it), and none of dagsync's or git-sync's variables."""
    home.mkdir(parents=True, exist_ok=True)
    env = {
        k: v
        for k, v in base.items()
        if not k.startswith(("DAGSYNC_", "GITSYNC_", "GIT_SYNC_", "GIT_AUTHOR", "GIT_COMMITTER"))
    }
    env.update(HOME=str(home), GIT_CONFIG_NOSYSTEM="1", GIT_TERMINAL_PROMPT="0")
    return env


def dagsync(
    *args: str | os.PathLike[str],
    env: Mapping[str, str],
    timeout: float = RUN_TIMEOUT_SECONDS,
    cwd: Path | None = None,
    umask: int = -1,
) -> Result:
    """``dagsync ARGS`` as a subprocess; returns its exit code and output."""
    proc = subprocess.run(
        [*DAGSYNC, *map(str, args)],
        env=dict(env),
        cwd=cwd,
        umask=umask,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def start_dagsync(
    *args: str | os.PathLike[str], env: Mapping[str, str], log: Path
) -> subprocess.Popen[str]:
    """``dagsync ARGS`` in the background (``run``, or a ``once`` to be killed); its output
    goes to ``log`` (a pipe nobody reads would fill up and stall a long ``run``)."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [*DAGSYNC, *map(str, args)],
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )


def wait_for(
    condition: Callable[[], object], timeout: float = 30.0, what: str = "condition"
) -> object:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(POLL_SECONDS)


# --- what is published --------------------------------------------------------------------


def link_target(root: Path, link: str = "current") -> str | None:
    try:
        return os.readlink(root / link)
    except FileNotFoundError:
        return None


def published(root: Path, link: str = "current") -> tuple[str, Path]:
    """(revision, folder) of the link, checking the SPEC's promises about the link itself:
    a relative symlink into ROOT/.dagsync/revisions whose basename is the revision id."""
    path = root / link
    assert path.is_symlink(), f"{path} is not a symlink"
    target = os.readlink(path)
    assert not os.path.isabs(target), f"link target {target!r} is absolute"
    folder = (path.parent / target).resolve()
    assert folder.parent == (root / ".dagsync" / "revisions").resolve(), target
    assert folder.is_dir(), f"link target {target!r} is not a folder"
    return os.path.basename(target), folder


def snapshot(folder: Path) -> dict[str, tuple[str, ...]]:
    """Every file under ``folder``: ("file", text, "x"|"-") or ("link", target)."""
    out: dict[str, tuple[str, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = Path(dirpath) / name
            rel = path.relative_to(folder).as_posix()
            if path.is_symlink():
                out[rel] = ("link", os.readlink(path))
            else:
                executable = "x" if path.stat().st_mode & stat.S_IXUSR else "-"
                out[rel] = ("file", path.read_text(errors="replace"), executable)
    return out


def files_of(folder: Path) -> dict[str, str]:
    """Regular files' text by path (symlinks and modes left out)."""
    return {k: v[1] for k, v in snapshot(folder).items() if v[0] == "file"}


def assert_published(
    root: Path, revision: str, files: Mapping[str, str], link: str = "current"
) -> Path:
    """The link points at ``revision`` and the tree holds exactly ``files``."""
    got, folder = published(root, link)
    assert got == revision, f"published {got}, expected {revision}"
    assert files_of(folder) == dict(files)
    assert not (folder / ".git").exists()
    return folder


def assert_readable_by_others(paths: Sequence[Path]) -> None:
    """Airflow runs as another uid: folders must be r-x and files r-- for group and others."""
    for path in paths:
        if path.is_symlink():
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        wanted = 0o055 if path.is_dir() else 0o044
        assert mode & wanted == wanted, f"{path} has mode {oct(mode)}"


def inode_mtime(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


def leftovers(root: Path, link: str = "current") -> list[str]:
    """What a finished dagsync must not leave behind: staging content, temp links, temp files,
    ``.parts`` folders, revision folders without a manifest."""
    state = root / ".dagsync"
    found = [f"staging/{p.name}" for p in (state / "staging").iterdir()]
    link_dir = (root / link).parent
    found += [p.name for p in link_dir.iterdir() if TMP_LINK_MARK in p.name]
    found += [p.name for p in state.iterdir() if p.name.endswith(".tmp")]
    revisions = state / "revisions"
    for p in revisions.iterdir():
        if p.name.endswith(".tmp") or p.name.endswith(".parts"):
            found.append(f"revisions/{p.name}")
        elif p.is_dir() and not (revisions / f"{p.name}.manifest.json").exists():
            found.append(f"revisions/{p.name} (no manifest)")
    return found


def files_in_staging(root: Path) -> int:
    """Files written so far into the trees being built."""
    staging = root / ".dagsync" / "staging"
    count = 0
    try:
        for folder in staging.iterdir():
            for _, _, names in os.walk(folder):
                count += len(names)
    except FileNotFoundError:
        return 0
    return count


def cache_debris(root: Path) -> list[str]:
    """What an interrupted git leaves in the cache repository: locks, temporary packs."""
    cache = root / ".dagsync" / "cache"
    patterns = ("**/*.lock", "**/tmp_pack_*", "**/tmp_obj_*", "**/gc.pid")
    return sorted(str(p.relative_to(cache)) for pattern in patterns for p in cache.glob(pattern))


def revision_folders(root: Path) -> list[str]:
    revisions = root / ".dagsync" / "revisions"
    return sorted(p.name for p in revisions.iterdir() if p.is_dir())


# --- processes -----------------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """``pid``'s children, grandchildren, … (from /proc; git runs its helpers in new sessions,
    so a process group does not cover them)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill_tree(
    proc: subprocess.Popen[str],
    sig: int = signal.SIGKILL,
    inspect: Callable[[list[int]], object] | None = None,
) -> None:
    """Send ``sig`` to ``proc`` and every descendant, as a container's kill does: freeze the
    tree first so nothing forks in between. ``inspect(pids)`` looks at the frozen tree (what
    it was doing at the moment of the kill) before the signal goes out."""
    pids = [proc.pid]
    for _ in range(3):
        for pid in pids:
            _signal(pid, signal.SIGSTOP)
        pids = [proc.pid, *descendants(proc.pid)]
    for pid in pids:
        _signal(pid, signal.SIGSTOP)
    try:
        if inspect is not None:
            inspect(pids)
    finally:
        for pid in reversed(pids):
            _signal(pid, sig)
        for pid in pids:
            _signal(pid, signal.SIGCONT)
    proc.wait(timeout=10)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def terminate(proc: subprocess.Popen[str], timeout: float = 20.0) -> int:
    """SIGTERM and wait; returns the exit code."""
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=timeout)


def secret_free(text: str, secrets: Sequence[str]) -> bool:
    return not any(s and s in text for s in secrets)
