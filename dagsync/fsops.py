"""Filesystem operations the revision store is built on, each safe to interrupt: a file
replaced whole (``write_atomic``), two folders swapped in one step (``exchange``), ``mkdir -p``
that says what it made, and removing a tree that a read-only mode protects."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def write_atomic(path: Path, text: str | Iterable[str], mode: int = 0o644) -> None:
    """Write ``text`` (or its chunks) to a temp file beside ``path`` and rename it over
    ``path``."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            if isinstance(text, str):
                fh.write(text)
            else:
                fh.writelines(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def mkdirs(folder: Path) -> list[Path]:
    """``mkdir -p folder``; returns the folders it created, outermost first."""
    missing = []
    path = folder
    while not path.exists():
        missing.append(path)
        path = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    return list(reversed(missing))


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def exchange(a: Path, b: Path) -> bool:
    """Swap two directories atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where
    the C library or the filesystem cannot, so the caller falls back to two renames."""
    import ctypes  # only here: a rebuilt revision swapped with the published one

    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def remove_tree(path: Path) -> None:
    """Remove a file or folder, also one a non-writable mode protects."""
    if path.is_symlink() or path.is_file():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return

    def onerror(func: Any, name: str, exc_info: Any) -> None:
        # Make the parent writable and try once more; a vanished file is fine.
        if isinstance(exc_info[1], FileNotFoundError):
            return
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(name), 0o755)
            func(name)

    if path.exists():
        shutil.rmtree(path, onerror=onerror)
