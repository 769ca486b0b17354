"""Writing a revision's tree into its staging folder: reused files, new files, symlinks.

Every source that builds a tree file by file uses this, so the rules of SPEC section 3 (hard
links for unchanged files, explicit permissions, temp-file-then-rename) live in one place.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
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
        self._dest_text = os.fspath(dest)
        self.parts = dest.with_name(dest.name + ".parts")
        self.parts.mkdir(parents=True, exist_ok=True)
        self._dirs: set[str] = set()
        self._serial = itertools.count()

    def _target(self, path: str) -> Path:
        clean = safe_path(path)
        parent = os.path.dirname(clean)
        if parent and parent not in self._dirs:
            (self.dest / parent).mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            self._dirs.add(parent)
        return self.dest / clean

    def reuse(self, entry: Entry) -> bool:
        """Hard-link ``entry`` from the previous revision; False when it is not there."""
        if self.previous is None or entry.is_symlink:
            return False
        src = self.previous.path / entry.path
        try:
            st = src.lstat()
        except OSError:
            return False
        if not os.path.isfile(src) or os.path.islink(src) or st.st_size != entry.size:
            return False
        dst = self._target(entry.path)
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
        dst = self._target(entry.path)
        # .parts belongs to this writer alone, so a counter names temp files uniquely.
        tmp = self.parts / str(next(self._serial))
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
                    tmp.unlink()

    @contextmanager
    def create(self, entry: Entry) -> Iterator[BinaryIO]:
        """Like :meth:`open`, but writing the final path directly, one rename per file less:
        only for a tree this writer builds from nothing, in order, where a failure discards
        the whole staging folder (a cold fetch from one stream). Unbuffered: callers write
        large chunks."""
        clean = safe_path(entry.path)
        parent = os.path.dirname(clean)
        if parent and parent not in self._dirs:
            os.makedirs(os.path.join(self._dest_text, parent), mode=DIR_MODE, exist_ok=True)
            self._dirs.add(parent)
        target = os.path.join(self._dest_text, clean)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with open(fd, "wb", buffering=0) as fh:
            yield fh
            size = os.fstat(fd).st_size
            if size != entry.size:
                raise SourceError(
                    f"{entry.path}: got {size} bytes, expected {entry.size}", entry.path
                )
            os.fchmod(fd, MODE_EXEC if entry.mode == MODE_EXEC else 0o644)

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
