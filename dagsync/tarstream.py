"""Writing a published revision as a POSIX (pax) tar stream, file by file, never whole in memory.

The body goes to a :class:`Sink`: small files are gathered into one buffer (fewer syscalls and
packets), large ones go out with ``sendfile(2)``; with gzip every byte passes the compressor.
Modes are normalised to 0644/0755, owners to 0, symlinks stay symlinks.
"""

from __future__ import annotations

import os
import tarfile
import zlib
from collections.abc import Iterable
from typing import BinaryIO, Protocol

from dagsync.manifest import MODE_EXEC, Entry

BLOCK_BYTES = tarfile.BLOCKSIZE  # 512
RECORD_BYTES = tarfile.RECORDSIZE  # 10240: readers expect the archive padded to a record
BUFFER_BYTES = 256 * 1024
GZIP_LEVEL = 6


class Channel(Protocol):
    """Where a response body goes (the HTTP handler's socket)."""

    def write(self, data: bytes) -> None: ...

    def sendfile(self, fh: BinaryIO, count: int) -> int: ...


class Sink:
    """A response body: buffered writes, counted; ``gzip`` compresses everything."""

    def __init__(self, channel: Channel, gzip: bool = False) -> None:
        self.channel = channel
        self.sent = 0  # bytes put on the wire
        self.raw = 0  # bytes before compression
        self._buffer = bytearray()
        self._gzip = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31) if gzip else None

    def write(self, data: bytes) -> None:
        self.raw += len(data)
        if self._gzip is not None:
            data = self._gzip.compress(data)
        self._buffer += data
        if len(self._buffer) >= BUFFER_BYTES:
            self.flush()

    def copy_file(self, fh: BinaryIO, count: int) -> None:
        """Exactly ``count`` bytes of ``fh`` (from its start); OSError if it is shorter."""
        if self._gzip is None and count >= BUFFER_BYTES:
            self.flush()
            sent = self.channel.sendfile(fh, count)
            self.sent += sent
            self.raw += sent
            if sent != count:
                raise OSError(f"file shorter than its manifest entry ({sent} < {count})")
            return
        left = count
        while left > 0:
            chunk = fh.read(min(left, BUFFER_BYTES))
            if not chunk:
                raise OSError(f"file shorter than its manifest entry ({count - left} < {count})")
            self.write(chunk)
            left -= len(chunk)

    def flush(self) -> None:
        if self._buffer:
            self.channel.write(bytes(self._buffer))
            self.sent += len(self._buffer)
            self._buffer.clear()

    def close(self) -> None:
        if self._gzip is not None:
            self._buffer += self._gzip.flush()
            self._gzip = None
        self.flush()


def tar_info(entry: Entry, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(entry.path)
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if entry.is_symlink:
        info.type = tarfile.SYMTYPE
        info.linkname = entry.target
        info.mode = 0o777
        info.size = 0
    else:
        info.type = tarfile.REGTYPE
        info.mode = 0o755 if entry.mode == MODE_EXEC else 0o644
        info.size = entry.size
    return info


def write_tar(sink: Sink, folder_fd: int, entries: Iterable[Entry]) -> None:
    """Every entry of a revision, read relative to ``folder_fd`` (the revision folder, opened
    once, so a rename of the folder cannot mix two trees into one archive)."""
    folder_mtime = int(os.fstat(folder_fd).st_mtime)
    for entry in entries:
        if entry.is_symlink:
            sink.write(
                tar_info(entry, folder_mtime).tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
            )
            continue
        fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder_fd)
        with open(fd, "rb", buffering=0) as fh:
            st = os.fstat(fd)
            if st.st_size != entry.size:
                raise OSError(
                    f"{entry.path}: {st.st_size} bytes on disk, manifest says {entry.size}"
                )
            info = tar_info(entry, int(st.st_mtime))
            sink.write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
            sink.copy_file(fh, entry.size)
        pad = -entry.size % BLOCK_BYTES
        if pad:
            sink.write(b"\0" * pad)
    sink.write(b"\0" * (2 * BLOCK_BYTES))  # end of archive
    tail = -sink.raw % RECORD_BYTES
    if tail:
        sink.write(b"\0" * tail)
    sink.close()
