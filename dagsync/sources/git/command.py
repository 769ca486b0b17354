"""Running git through GitPython: every command is ``Git.execute`` of an explicit argv.

GitPython starts the process (``as_process=True``) and reports failures as
``GitCommandError``; dagsync keeps what GitPython does not do for it:

- each git runs in a new session, and on ``--sync-timeout`` or a stop signal the whole process
  group is killed (GitPython's ``kill_after_timeout`` kills git itself, not the ssh or
  git-remote-http it started);
- the environment is dagsync's child environment: GitPython starts from ``os.environ``, so the
  variables dagsync keeps from its children (``DAGSYNC_*``, git-sync's, cloud credentials) are
  overridden with empty values there;
- URLs and options pass GitPython's unsafe-protocol and unsafe-option checks (the checks its
  own ``clone``/``fetch`` apply), as dagsync calls ``git fetch`` and ``ls-remote`` itself.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

from dagsync.config import child_environment
from dagsync.errors import SourceError, SyncTimeout
from dagsync.procs import kill_group
from dagsync.redact import redact
from dagsync.sources.git.gitpython import (
    Git,
    GitCommandError,
    RemoteProgress,
    UnsafeOptionError,
    UnsafeProtocolError,
)
from dagsync.timing import remaining

log = logging.getLogger(__name__)

ERROR_DETAIL_CHARS = 300
GIT_BOILERPLATE = ("Please make sure you have the correct access rights", "and the repository")
# Options of fetch/ls-remote that run a command of the caller's choosing.
UNSAFE_REMOTE_OPTIONS = ["--upload-pack", "-u", "--exec"]
PROGRESS_SPLIT = re.compile(rb"[\r\n]")
PUMP_JOIN_SECONDS = 5.0
RECORD_CHUNK_BYTES = 1 << 16

# (stage, done, total or None, message such as "12.00 MiB | 5.00 MiB/s")
ProgressCallback = Callable[[str, int, "int | None", str], None]


class FetchProgress(RemoteProgress):
    """git fetch's progress lines: logged at debug level and handed to an optional callback."""

    STAGES = {
        RemoteProgress.COUNTING: "counting objects",
        RemoteProgress.COMPRESSING: "compressing objects",
        RemoteProgress.RECEIVING: "receiving objects",
        RemoteProgress.RESOLVING: "resolving deltas",
    }

    def __init__(self, what: str, callback: ProgressCallback | None = None) -> None:
        super().__init__()
        self.what = what
        self.callback = callback

    def update(
        self,
        op_code: int,
        cur_count: str | float,
        max_count: str | float | None = None,
        message: str = "",
    ) -> None:
        stage = self.STAGES.get(op_code & self.OP_MASK, "working")
        done, total = int(float(cur_count)), int(float(max_count)) if max_count else None
        if op_code & (self.BEGIN | self.END):
            log.debug("git %s %s done=%d total=%s %s", self.what, stage, done, total, message)
        if self.callback is not None:
            self.callback(stage, done, total, message)


class GitCommand:
    """Runs git commands for one source, with its environment and global ``-c`` options."""

    def __init__(self, env: Callable[[], dict[str, str]], config_args: Sequence[str]) -> None:
        self._env = env
        self.config_args = list(config_args)
        self._git = Git()

    def argv(self, args: Sequence[str], repo_dir: Path | None) -> list[str]:
        head = [Git.GIT_PYTHON_GIT_EXECUTABLE or "git", *self.config_args]
        if repo_dir is not None:
            head += ["--git-dir", str(repo_dir)]
        return [*head, *args]

    def env(self) -> dict[str, str]:
        return without_private_env(self._env())

    def start(
        self, args: Sequence[str], repo_dir: Path | None, *, istream: IO[bytes] | None = None,
        stdout: bool = True, env: Mapping[str, str] | None = None, umask: int = -1,
        preexec_fn: Callable[[], object] | None = None,
    ) -> Git.AutoInterrupt:  # fmt: skip
        """Start git; the caller owns the process (see :func:`stop`). ``umask``: the child's
        (-1: dagsync's own); ``preexec_fn``: run in the child before git (only when given)."""
        extra: dict[str, Any] = {}
        if umask != -1:
            extra["umask"] = umask
        if preexec_fn is not None:
            extra["preexec_fn"] = preexec_fn
        handle = self._git.execute(
            self.argv(args, repo_dir),
            as_process=True,
            istream=cast(BinaryIO, istream),
            with_stdout=stdout,
            env={**self.env(), **(env or {})},
            start_new_session=True,  # one group with git's children: killed together
            **extra,
        )
        assert isinstance(handle, Git.AutoInterrupt)
        return handle

    def run(
        self,
        args: Sequence[str],
        *,
        deadline: float,
        what: str,
        shown: str,
        repo_dir: Path | None = None,
        env: Mapping[str, str] | None = None,
        istream: IO[bytes] | None = None,
        umask: int = -1,
        preexec_fn: Callable[[], object] | None = None,
    ) -> bytes:
        """Run git to completion and return its stdout; SourceError naming ``shown`` (the
        redacted URL) when it fails, SyncTimeout past ``deadline``."""
        timeout = remaining(deadline, f"git {what}")
        handle = self.start(
            args, repo_dir, env=env, istream=istream, umask=umask, preexec_fn=preexec_fn
        )
        proc = handle.proc
        assert proc is not None
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            raise SyncTimeout(f"git {what} of {shown} exceeded --sync-timeout") from None
        except BaseException:
            kill_group(proc)
            raise
        check_status(handle, err, what, shown)
        return bytes(out)

    def records(
        self,
        args: Sequence[str],
        *,
        deadline: float,
        what: str,
        shown: str,
        repo_dir: Path | None = None,
        separator: bytes = b"\0",
        istream: IO[bytes] | None = None,
    ) -> Iterator[bytes]:
        """git's stdout split at ``separator``, as it comes: a listing of 100,000 files is
        never held whole (nor twice, as bytes and as their split)."""
        remaining(deadline, f"git {what}")
        handle = self.start(args, repo_dir, istream=istream)
        proc = handle.proc
        assert proc is not None and proc.stdout is not None and proc.stderr is not None
        ok = False
        try:
            pending = b""
            while chunk := proc.stdout.read1(RECORD_CHUNK_BYTES):  # type: ignore[attr-defined]
                *done, pending = (pending + chunk).split(separator)
                yield from done
                remaining(deadline, f"git {what}")
            if pending:
                yield pending
            err = proc.stderr.read()
            proc.wait(timeout=remaining(deadline, f"git {what}"))
            ok = True
        except subprocess.TimeoutExpired:
            raise SyncTimeout(f"git {what} of {shown} exceeded --sync-timeout") from None
        finally:
            if not ok:
                kill_group(proc)  # a deadline, an error, a stop signal, or the caller stopped
        check_status(handle, err, what, shown)

    def fetch(
        self,
        args: Sequence[str],
        *,
        deadline: float,
        what: str,
        shown: str,
        repo_dir: Path,
        progress: FetchProgress,
        env: Mapping[str, str] | None = None,
        istream: IO[bytes] | None = None,
    ) -> None:
        """``git fetch`` with ``--progress``: stderr is read as it comes (progress lines go to
        ``progress``, the rest is kept for the error message)."""
        timeout = remaining(deadline, f"git {what}")
        handle = self.start(
            ["fetch", "--progress", *args], repo_dir, stdout=False, env=env, istream=istream
        )
        proc = handle.proc
        assert proc is not None and proc.stderr is not None
        kept: list[bytes] = []
        pump = threading.Thread(
            target=_pump_progress, args=(proc.stderr, progress, kept), daemon=True
        )
        pump.start()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            raise SyncTimeout(f"git {what} of {shown} exceeded --sync-timeout") from None
        except BaseException:
            kill_group(proc)
            raise
        finally:
            pump.join(PUMP_JOIN_SECONDS)
        check_status(handle, b"\n".join(kept), what, shown)


def _pump_progress(stream: IO[bytes], progress: FetchProgress, kept: list[bytes]) -> None:
    handler = progress.new_message_handler()
    pending = b""
    try:
        while chunk := stream.read1(65536):  # type: ignore[attr-defined]
            *lines, pending = PROGRESS_SPLIT.split(pending + chunk)
            for line in lines:
                _progress_line(line, handler, kept)
        _progress_line(pending, handler, kept)
    except (OSError, ValueError):
        pass  # the group was killed and the pipe closed under us


def _progress_line(line: bytes, handler: Callable[[Any], None], kept: list[bytes]) -> None:
    text = line.decode("utf-8", "replace").rstrip()
    if not text:
        return
    if RemoteProgress.re_op_relative.match(text) or RemoteProgress.re_op_absolute.match(text):
        handler(text)
    else:
        kept.append(line)


def check_status(handle: Git.AutoInterrupt, stderr: bytes, what: str, shown: str) -> None:
    """GitPython's own check of the exit status; its GitCommandError becomes a SourceError
    with git's stderr as one redacted line."""
    try:
        handle.wait(stderr=stderr)
    except GitCommandError as exc:
        detail = git_error_detail(redact(stderr.decode(errors="replace")))
        raise SourceError(f"git {what} of {shown} failed: {detail}", shown) from exc


def check_remote(url: str, args: Sequence[str], what: str) -> None:
    """GitPython's guards of ``Repo.clone_from``/``Remote.fetch`` for a command dagsync builds:
    no ``ext::``-style transport, no option that runs a command."""
    try:
        Git.check_unsafe_protocols(url)
        Git.check_unsafe_options(options=list(args), unsafe_options=UNSAFE_REMOTE_OPTIONS)
    except (UnsafeProtocolError, UnsafeOptionError) as exc:
        raise SourceError(f"{what}: refused: {redact(str(exc))}", what) from exc


def unsafe_protocol(url: str) -> str | None:
    """Why GitPython refuses ``url`` (a transport that runs commands), or None."""
    try:
        Git.check_unsafe_protocols(url)
    except UnsafeProtocolError as exc:
        return redact(str(exc).split(",")[0])
    return None


def without_private_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` plus an empty value for every variable of dagsync's own environment that
    children must not see: GitPython adds ``env`` on top of a copy of ``os.environ``."""
    kept = child_environment(os.environ)
    blank = {name: "" for name in os.environ if name not in kept and name not in env}
    return {**blank, **env}


def git_error_detail(stderr: str) -> str:
    """git's stderr as one bounded line: all of it when short (ssh's own complaints, such as
    "No user exists for uid", are not ``fatal:`` lines), else its ``fatal:``/``error:`` lines."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(GIT_BOILERPLATE)]
    detail = " ".join(" ".join(lines).split())
    if len(detail) > ERROR_DETAIL_CHARS:
        errors = [line for line in lines if line.startswith(("fatal:", "error:"))]
        detail = " ".join(" ".join(errors or lines).split())
    if len(detail) > ERROR_DETAIL_CHARS:
        detail = detail[: ERROR_DETAIL_CHARS - 3] + "..."
    return detail or "no error output"
