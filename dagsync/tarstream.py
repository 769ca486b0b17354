"""Writing a published revision as a POSIX (pax) tar stream, file by file, never whole in memory.

The body goes to a :class:`Sink`: small files are gathered into one buffer (fewer syscalls and
packets), large ones go out with ``sendfile(2)``; with gzip every byte passes the compressor.
Modes are normalised to 0644/0755, owners to 0, symlinks stay symlinks.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Protocol

from dagsync.manifest import MODE_EXEC, Entry

if TYPE_CHECKING:
    # The writer's side only (the relay); a worker reading an archive never imports tarfile,
    # which pulls bz2 and lzma in (~12 ms of a worker's start-up).
    import tarfile

BLOCK_BYTES = 512  # tarfile.BLOCKSIZE
RECORD_BYTES = 20 * BLOCK_BYTES  # tarfile.RECORDSIZE: archives are padded to a record
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
    import tarfile

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


def tar_headers(folder_fd: int, entries: Sequence[Entry]) -> list[bytes]:
    """Each entry's tar header (a published tree never changes, so a server computes these
    once per revision and streams every archive of it with no per-file Python encoding)."""
    import tarfile

    folder_mtime = int(os.fstat(folder_fd).st_mtime)
    out = []
    for entry in entries:
        mtime = folder_mtime
        if not entry.is_symlink:
            mtime = int(os.stat(entry.path, dir_fd=folder_fd, follow_symlinks=False).st_mtime)
        out.append(tar_info(entry, mtime).tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
    return out


def write_tar(
    sink: Sink, folder_fd: int, entries: Sequence[Entry], headers: Sequence[bytes] | None = None
) -> None:
    """Every entry of a revision, read relative to ``folder_fd`` (the revision folder, opened
    once, so a rename of the folder cannot mix two trees into one archive)."""
    if headers is None:
        headers = tar_headers(folder_fd, entries)
    for entry, header in zip(entries, headers, strict=True):
        sink.write(header)
        if entry.is_symlink:
            continue
        fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder_fd)
        with open(fd, "rb", buffering=0) as fh:
            size = os.fstat(fd).st_size
            if size != entry.size:
                raise OSError(f"{entry.path}: {size} bytes on disk, manifest says {entry.size}")
            sink.copy_file(fh, entry.size)
        pad = -entry.size % BLOCK_BYTES
        if pad:
            sink.write(b"\0" * pad)
    sink.write(b"\0" * (2 * BLOCK_BYTES))  # end of archive
    tail = -sink.raw % RECORD_BYTES
    if tail:
        sink.write(b"\0" * tail)
    sink.close()


# -- reading --------------------------------------------------------------------------------------
_ZERO_BLOCK = bytes(BLOCK_BYTES)
_KINDS = {b"0": "file", b"\0": "file", b"2": "symlink"}


class TarFormatError(ValueError):
    """The stream is not the ustar/pax archive the relay writes."""


@dataclass(frozen=True)
class Member:
    """One archive member: ``kind`` is ``file``, ``symlink`` or the raw type flag."""

    name: str
    size: int
    mode: int
    kind: str
    linkname: str = ""


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _number(field: bytes) -> int:
    if field[:1] and field[0] & 0x80:  # base-256 (GNU), for sizes past 8 GiB
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    digits = field.split(b"\0", 1)[0].strip(b" \0")
    try:
        return int(digits or b"0", 8)
    except ValueError:
        raise TarFormatError(f"invalid number {field!r} in a tar header") from None


def _pax_records(data: bytes) -> dict[str, str]:
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data) and data[pos : pos + 1] != b"\0":
        space = data.find(b" ", pos)
        if space < 0:
            raise TarFormatError("malformed pax header")
        length = int(data[pos:space])
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


class TarReader:
    """Reads a ustar/pax stream member by member with no per-block Python overhead beyond
    the header (the standard ``tarfile`` costs several times more CPU per small member).
    Between members, :meth:`read` returns the current member's content."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self._left = 0
        self._pad = 0

    def _exact(self, count: int) -> bytes:
        data = self.stream.read(count)
        while len(data) < count:
            more = self.stream.read(count - len(data))
            if not more:
                raise EOFError("the archive ends in the middle of a member")
            data += more
        return data

    def read(self, count: int) -> bytes:
        if self._left <= 0:
            return b""
        data = self.stream.read(min(count, self._left))
        if not data:
            raise EOFError("the archive ends in the middle of a member")
        self._left -= len(data)
        return data

    def read_rest(self) -> bytes:
        """All of the current member's content not read yet (for members known to be small)."""
        data = self._exact(self._left) if self._left > 0 else b""
        self._left = 0
        return data

    def _skip_rest(self) -> None:
        while self._left > 0:
            self.read(BUFFER_BYTES)
        if self._pad:
            self._exact(self._pad)
        self._pad = 0

    def members(self) -> Iterator[Member]:
        pax: dict[str, str] = {}
        while True:
            self._skip_rest()
            block = self._exact(BLOCK_BYTES)
            if block == _ZERO_BLOCK:
                return
            if _number(block[148:156]) != sum(block) - sum(block[148:156]) + 8 * 32:
                raise TarFormatError("tar header checksum mismatch")
            flag = block[156:157]
            size = _number(block[124:136])
            if flag in (b"x", b"g"):
                data = self._exact(size + (-size % BLOCK_BYTES))[:size]
                if flag == b"x":
                    pax = _pax_records(data)
                continue
            name = _text(block[0:100])
            if block[257:262] == b"ustar" and block[345] != 0:
                name = _text(block[345:500]) + "/" + name
            linkname = _text(block[157:257]) if flag == b"2" else ""
            if pax:
                name = pax.get("path", name)
                linkname = pax.get("linkpath", linkname)
                size = int(pax.get("size", size))
                pax = {}
            kind = _KINDS.get(flag) or flag.decode("latin-1")
            # Content of other kinds is skipped, never read.
            self._left = size
            self._pad = -size % BLOCK_BYTES
            yield Member(
                name, size if kind == "file" else 0, _number(block[100:108]), kind, linkname
            )
