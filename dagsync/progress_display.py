"""The progress bar ``dagsync once`` draws on a terminal (tqdm), and the rule for when it does.

Only when stderr is a TTY and logs are text: never in a pipe, a file, a container log or with
``--log-format json``. tqdm is imported only then, so every other start pays nothing for it.
While the bar is up, log lines go through ``tqdm.write`` so they do not tear it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from typing import TYPE_CHECKING, Any, TextIO

from dagsync.progress import RESOLVING
from dagsync.terminal import is_terminal

if TYPE_CHECKING:
    from dagsync.config import Config

REFRESH_SECONDS = 0.1
FALLBACK_COLUMNS, FALLBACK_ROWS = 80, 24


def wanted(config: Config, stream: TextIO) -> bool:
    return config.command == "once" and config.log_format == "text" and is_terminal(stream)


class TerminalProgress:
    """A :class:`dagsync.progress.Progress` that draws one tqdm bar: the phase, bytes done of
    the total (when the source listed it), files done of the total, the rate."""

    def __init__(self, stream: TextIO) -> None:
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        self._lock = threading.Lock()
        self._files = 0
        self._linked = 0
        self._total_files: int | None = None
        self._redirect = contextlib.ExitStack()
        self._redirect.enter_context(logging_redirect_tqdm(tqdm_class=tqdm))
        width = _columns(stream)
        self._bar: Any = tqdm(
            desc=RESOLVING,
            file=stream,
            unit="B",
            unit_scale=True,
            # A terminal that reports no size (a bare pty) would get an empty line.
            dynamic_ncols=width > 0,
            ncols=None if width > 0 else FALLBACK_COLUMNS,
            nrows=None if width > 0 else FALLBACK_ROWS,
            mininterval=REFRESH_SECONDS,
            leave=False,
        )

    def phase(self, name: str) -> None:
        with self._lock:
            self._bar.set_description_str(name, refresh=False)
            self._bar.set_postfix_str(self._files_text(), refresh=False)
            self._bar.refresh()

    def expect(self, files: int, nbytes: int) -> None:
        with self._lock:
            self._total_files = files
            self._bar.total = nbytes or None
            self._bar.refresh()

    def advance(self, files: int, nbytes: int, linked: bool = False) -> None:
        with self._lock:
            self._files += files
            self._linked += files if linked else 0
            self._bar.set_postfix_str(self._files_text(), refresh=False)
            self._bar.update(nbytes)

    def _files_text(self) -> str:
        total = f"/{self._total_files}" if self._total_files is not None else ""
        linked = f" ({self._linked} unchanged)" if self._linked else ""
        return f"{self._files}{total} files{linked}"

    def close(self) -> None:
        with self._lock:
            self._bar.close()
            self._redirect.close()


def _columns(stream: TextIO) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return 0


def for_once(config: Config, stream: TextIO | None = None) -> TerminalProgress | None:
    """The display for this run, or None when nobody is watching a terminal."""
    stream = sys.stderr if stream is None else stream
    return TerminalProgress(stream) if wanted(config, stream) else None
