"""Writing a revision's tree into its staging folder: reused files, new files, symlinks.

Every source that builds a tree file by file uses this, so the rules of docs/reference.md §3 (hard
links for unchanged files, explicit permissions, temp-file-then-rename) live in one place.
"""

from __future__ import annotations

import contextlib
import errno
import io
import itertools
import os
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from dagsync.errors import SourceError, WriteFailed
from dagsync.manifest import MODE_EXEC, MODE_SYMLINK, Entry, safe_path, safe_symlink_target
from dagsync.progress import WRITING, for_tree
from dagsync.sources.base import Published

DIR_MODE = 0o755


MB = 1024 * 1024
_FULL = (errno.ENOSPC, errno.EDQUOT)
_CLASH = (errno.EEXIST, errno.ENOTDIR, errno.EISDIR)
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


def _process_umask() -> int:
    """The umask, read without changing it (``os.umask`` sets it, racing other threads);
    where /proc does not say, assume the worst so that every file gets its mode set."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o777


def _mb(size: int) -> int:
    return max(1, -(-size // MB))


def write_error(
    exc: OSError, path: str, need_bytes: int | None = None, file_bytes: int | None = None
) -> WriteFailed:
    """One line naming the published path (never the staging folder) and what to do."""
    code = exc.errno
    if code in _FULL:
        if need_bytes:
            need = f"; this revision needs ~{_mb(need_bytes)} MB"
        else:
            need = f" ({_mb(file_bytes)} MB)" if file_bytes else ""
        what = "no space left on device" if code == errno.ENOSPC else "disk quota exceeded"
        return WriteFailed(f"{what} writing {path}{need}: free space under --root", path)
    if code == errno.ENAMETOOLONG:
        return WriteFailed(
            f"name too long for the filesystem under --root writing {path!r}; shorten it", path
        )
    if code in _CLASH:
        return WriteFailed(
            f"cannot write {path!r}: a file and a folder of the same name ({exc.strerror})", path
        )
    if code == errno.EROFS:
        return WriteFailed(f"read-only filesystem under --root writing {path}", path)
    return WriteFailed(f"cannot write {path}: {exc.strerror or exc}", path)


class _Sink(io.BufferedWriter):
    """A temp file whose write errors name the published path they were for."""

    def __init__(self, tmp: str, entry: Entry, need_bytes: int | None) -> None:
        super().__init__(io.FileIO(tmp, "w"))
        self.entry = entry
        self.need_bytes = need_bytes

    def _error(self, exc: OSError) -> WriteFailed:
        return write_error(exc, self.entry.path, self.need_bytes, self.entry.size)

    def write(self, data: Any) -> int:
        try:
            return super().write(data)
        except OSError as exc:
            raise self._error(exc) from None

    def flush(self) -> None:
        try:
            super().flush()
        except OSError as exc:
            raise self._error(exc) from None


class _RawSink(io.FileIO):
    """An unbuffered new file (``O_EXCL``) whose write errors name the published path."""

    def __init__(self, target: str, entry: Entry, need_bytes: int | None) -> None:
        super().__init__(target, "xb")
        self.entry = entry
        self.need_bytes = need_bytes

    def write(self, data: Any) -> int:
        try:
            return super().write(data)
        except OSError as exc:
            raise write_error(exc, self.entry.path, self.need_bytes, self.entry.size) from None


class TreeWriter:
    """Builds one tree under ``dest``; temp files go to a sibling ``<dest>.parts`` folder.

    Every OSError while writing becomes a :class:`WriteFailed` naming the published path and
    the cause (``need_bytes``, the revision's size when known, goes into a full-disk message).
    """

    def __init__(
        self, dest: Path, previous: Published | None, need_bytes: int | None = None
    ) -> None:
        self.dest = dest
        self.previous = previous
        self.need_bytes = need_bytes
        self.parts = dest.with_name(dest.name + ".parts")
        try:
            self.parts.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise write_error(exc, "the revision", need_bytes) from None
        self._dirs: set[str] = set()
        self._serial = itertools.count()
        # Whoever watches this tree (dagsync once on a terminal) is told of every file placed.
        self.progress = for_tree(dest)
        if self.progress is not None:
            self.progress.phase(WRITING)
        # Plain strings, not Path objects: a revision of 10,000 files is 10,000 links or temp
        # files, and pathlib's joining costs more than the link(2) itself.
        self._dest = os.fspath(dest)
        self._previous = os.fspath(previous.path) if previous is not None else ""
        self._parts = os.fspath(self.parts)
        self._umask = _process_umask()

    @contextmanager
    def _writing(self, path: str) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise write_error(exc, path, self.need_bytes) from None

    def _target_str(self, path: str) -> str:
        clean = safe_path(path)
        parent = clean.rpartition("/")[0]
        if parent and parent not in self._dirs:
            with self._writing(clean):
                os.makedirs(f"{self._dest}/{parent}", mode=DIR_MODE, exist_ok=True)
            self._dirs.add(parent)
        return f"{self._dest}/{clean}"

    def _target(self, path: str) -> Path:
        return Path(self._target_str(path))

    def expect(self, files: int, nbytes: int) -> None:
        """Tell a watcher how big the whole tree will be, for a source that learns it only
        while fetching (git: after the commit arrived); stores' totals come from the plan."""
        if self.progress is not None:
            self.progress.expect(files, nbytes)

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
        with self._writing(entry.path):
            try:
                os.link(src, dst)
            except OSError as exc:
                if exc.errno in (*_FULL, *_CLASH, errno.ENAMETOOLONG, errno.EROFS):
                    raise
                # Filesystems without hard links (some SMB mounts): a copy keeps bytes and mtime.
                shutil.copy2(src, dst)
        if self.progress is not None:
            self.progress.advance(1, entry.size, linked=True)
        return True

    def symlink(self, entry: Entry) -> None:
        safe_symlink_target(entry.path, entry.target)
        dst = self._target(entry.path)
        with self._writing(entry.path):
            os.symlink(entry.target, dst)
        if self.progress is not None:
            self.progress.advance(1, entry.size)

    @contextmanager
    def open(self, entry: Entry) -> Iterator[BinaryIO]:
        """A file to stream ``entry``'s bytes into; renamed into place only if the block ends
        cleanly and the size matches, so a partial download is never in the tree."""
        dst = self._target_str(entry.path)
        # .parts belongs to this writer alone, so a counter names temp files uniquely.
        tmp = f"{self._parts}/{next(self._serial)}"
        with self._writing(entry.path):
            fh = _Sink(tmp, entry, self.need_bytes)
        placed = False
        try:
            yield fh
            fh.flush()
            size = os.fstat(fh.fileno()).st_size  # not tell(): a retry may have seeked
            if size != entry.size:
                raise SourceError(
                    f"{entry.path}: got {size} bytes, expected {entry.size}", entry.path
                )
            with self._writing(entry.path):
                os.fchmod(fh.fileno(), MODE_EXEC if entry.mode == MODE_EXEC else 0o644)
                fh.close()
                os.replace(tmp, dst)
            placed = True
            if self.progress is not None:
                self.progress.advance(1, size)
        finally:
            with contextlib.suppress(OSError, WriteFailed):  # the first error is the one shown
                fh.close()
            if not placed:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)

    @contextmanager
    def create(self, entry: Entry) -> Iterator[BinaryIO]:
        """Like :meth:`open`, but writing the final path directly, one rename per file less:
        only for a tree this writer builds from nothing, in order, where a failure discards
        the whole staging folder (a cold fetch from one stream). Unbuffered: callers write
        large chunks."""
        target = self._target_str(entry.path)
        with self._writing(entry.path):
            fh = _RawSink(target, entry, self.need_bytes)
        with fh:
            yield fh
            size = os.fstat(fh.fileno()).st_size
            if size != entry.size:
                raise SourceError(
                    f"{entry.path}: got {size} bytes, expected {entry.size}", entry.path
                )
            with self._writing(entry.path):
                os.fchmod(fh.fileno(), MODE_EXEC if entry.mode == MODE_EXEC else 0o644)
        if self.progress is not None:
            self.progress.advance(1, size)

    def place(self, entry: Entry, data: bytes) -> None:
        """A file of a tree built from nothing (as :meth:`create`) whose bytes are all here:
        one open, write, chmod and close, none of a file object's machinery (a cold relay
        worker writes 2,000 small files this way)."""
        if len(data) != entry.size:
            raise SourceError(
                f"{entry.path}: got {len(data)} bytes, expected {entry.size}", entry.path
            )
        target = self._target_str(entry.path)
        mode = MODE_EXEC if entry.mode == MODE_EXEC else 0o644
        try:
            fd = os.open(target, _NEW_FILE_FLAGS, mode)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if mode & self._umask:  # the umask took bits away (022 takes none of ours)
                    os.fchmod(fd, mode)
            finally:
                os.close(fd)
        except OSError as exc:
            raise write_error(exc, entry.path, self.need_bytes, entry.size) from None
        if self.progress is not None:
            self.progress.advance(1, entry.size)

    def placed(self, files: int, nbytes: int) -> None:
        """``files`` files of ``nbytes`` were created under ``dest`` by someone else (git's own
        checkout), with the modes this writer gives them; tell a watcher."""
        if self.progress is not None:
            self.progress.advance(files, nbytes)

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
            with self._writing(folder or "the revision"):
                os.chmod(self.dest / folder, DIR_MODE)
