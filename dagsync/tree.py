"""Writing a revision's tree into its staging folder: reused files, new files, symlinks.

Every source that builds a tree file by file uses this, so the rules of SPEC section 3 (hard
links for unchanged files, explicit permissions, temp-file-then-rename) live in one place.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from dagsync.errors import SourceError
from dagsync.manifest import MODE_EXEC, MODE_SYMLINK, Entry, safe_path, safe_symlink_target
from dagsync.sources.base import Published

DIR_MODE = 0o755


class TreeWriter:
    """Builds one tree under ``dest``; temp files go to a sibling ``<dest>.parts`` folder."""

    def __init__(self, dest: Path, previous: Published | None) -> None:
        self.dest = dest
        self.previous = previous
        self.parts = dest.with_name(dest.name + ".parts")
        self.parts.mkdir(parents=True, exist_ok=True)
        self._dirs: set[str] = set()
        self._serial = itertools.count()
        # Plain strings, not Path objects: a revision of 10,000 files is 10,000 links or temp
        # files, and pathlib's joining costs more than the link(2) itself.
        self._dest = os.fspath(dest)
        self._previous = os.fspath(previous.path) if previous is not None else ""
        self._parts = os.fspath(self.parts)

    def _target_str(self, path: str) -> str:
        clean = safe_path(path)
        parent = clean.rpartition("/")[0]
        if parent and parent not in self._dirs:
            os.makedirs(f"{self._dest}/{parent}", mode=DIR_MODE, exist_ok=True)
            self._dirs.add(parent)
        return f"{self._dest}/{clean}"

    def _target(self, path: str) -> Path:
        return Path(self._target_str(path))

    def reuse(self, entry: Entry) -> bool:
        """Hard-link ``entry`` from the previous revision; False when it is not there."""
        if not self._previous or entry.mode == MODE_SYMLINK:
            return False
        src = f"{self._previous}/{entry.path}"
        try:
            st = os.lstat(src)
        except OSError:
            return False
        # lstat: a regular file is neither a symlink nor a folder.
        if not stat.S_ISREG(st.st_mode) or st.st_size != entry.size:
            return False
        dst = self._target_str(entry.path)
        try:
            os.link(src, dst)
        except OSError:
            # Filesystems without hard links (some SMB mounts): a copy keeps bytes and mtime.
            shutil.copy2(src, dst)
        return True

    def symlink(self, entry: Entry) -> None:
        safe_symlink_target(entry.path, entry.target)
        os.symlink(entry.target, self._target(entry.path))

    @contextmanager
    def open(self, entry: Entry) -> Iterator[BinaryIO]:
        """A file to stream ``entry``'s bytes into; renamed into place only if the block ends
        cleanly and the size matches, so a partial download is never in the tree."""
        dst = self._target_str(entry.path)
        # .parts belongs to this writer alone, so a counter names temp files uniquely.
        tmp = f"{self._parts}/{next(self._serial)}"
        fh = open(tmp, "wb")  # noqa: SIM115 - closed below on every path
        placed = False
        try:
            yield fh
            fh.flush()
            size = os.fstat(fh.fileno()).st_size  # not tell(): a retry may have seeked
            if size != entry.size:
                raise SourceError(
                    f"{entry.path}: got {size} bytes, expected {entry.size}", entry.path
                )
            os.fchmod(fh.fileno(), MODE_EXEC if entry.mode == MODE_EXEC else 0o644)
            fh.close()
            os.replace(tmp, dst)
            placed = True
        finally:
            fh.close()
            if not placed:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)

    def write_bytes(self, entry: Entry, data: bytes) -> None:
        if entry.mode == MODE_SYMLINK:
            self.symlink(Entry(entry.path, entry.size, entry.token, entry.mode, data.decode()))
            return
        with self.open(entry) as fh:
            fh.write(data)

    def finish(self) -> None:
        """Remove the temp folder and make every folder readable by Airflow's uid."""
        shutil.rmtree(self.parts, ignore_errors=True)
        folders = {""}
        for parent in self._dirs:
            parts = parent.split("/")
            folders.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        for folder in folders:  # each once, however many files share it
            os.chmod(self.dest / folder, DIR_MODE)
