"""A FUSE passthrough that behaves like a shared volume dagsync cannot publish on, for the
start-up probe tests: ``python -m tests.fakes.fusefs MODE SOURCE MOUNTPOINT`` (foreground).

Modes: ``no-symlinks`` (symlink and link fail with EPERM: Azure Files over SMB without
``mfsymlinks``), ``no-rename-over`` (renaming onto an existing name fails with EPERM, as some
FUSE object-store mounts do), ``no-hardlinks`` (only link fails: plain SMB / some NFS exports).
Needs libfuse3 (apt ``fuse3``) and ``mfusepy``.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Any

import mfusepy as fuse

MODES = ("no-symlinks", "no-rename-over", "no-hardlinks")
_STAT = ("st_mode", "st_nlink", "st_size", "st_uid", "st_gid", "st_atime", "st_mtime", "st_ctime")
_STATVFS = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files")


class Passthrough(fuse.Operations):  # type: ignore[misc]
    use_ns = True

    def __init__(self, mode: str, source: str) -> None:
        self.mode = mode
        self.source = source

    def _p(self, path: str) -> str:
        return os.path.join(self.source, path.lstrip("/"))

    def getattr(self, path: str, fh: Any = None) -> dict[str, Any]:
        st = os.lstat(self._p(path))
        found = {k: getattr(st, k) for k in _STAT}
        for k in ("st_atime", "st_mtime", "st_ctime"):
            found[k] = getattr(st, k + "_ns")
        return found

    def readdir(self, path: str, fh: Any) -> list[str]:
        return [".", "..", *os.listdir(self._p(path))]

    def mkdir(self, path: str, mode: int) -> None:
        os.mkdir(self._p(path), mode)

    def rmdir(self, path: str) -> None:
        os.rmdir(self._p(path))

    def unlink(self, path: str) -> None:
        os.unlink(self._p(path))

    def rename(self, old: str, new: str) -> None:
        if self.mode == "no-rename-over" and os.path.lexists(self._p(new)):
            raise fuse.FuseOSError(errno.EPERM)
        os.rename(self._p(old), self._p(new))

    def chmod(self, path: str, mode: int) -> None:
        os.chmod(self._p(path), mode, follow_symlinks=False)

    def chown(self, path: str, uid: int, gid: int) -> None:
        os.chown(self._p(path), uid, gid, follow_symlinks=False)

    def create(self, path: str, mode: int, fi: Any = None) -> int:
        return os.open(self._p(path), os.O_RDWR | os.O_CREAT | os.O_TRUNC, mode)

    def open(self, path: str, flags: int) -> int:
        return os.open(self._p(path), flags)

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        return os.pread(fh, size, offset)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        return os.pwrite(fh, data, offset)

    def truncate(self, path: str, length: int, fh: Any = None) -> None:
        os.truncate(self._p(path), length)

    def release(self, path: str, fh: int) -> None:
        os.close(fh)

    def flush(self, path: str, fh: int) -> int:
        return 0

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        return 0

    def utimens(self, path: str, times: Any = None) -> None:
        os.utime(self._p(path), ns=times, follow_symlinks=False)

    def readlink(self, path: str) -> str:
        return os.readlink(self._p(path))

    def symlink(self, target: str, source: str) -> None:
        if self.mode == "no-symlinks":
            raise fuse.FuseOSError(errno.EPERM)
        os.symlink(source, self._p(target))

    def link(self, target: str, source: str) -> None:
        if self.mode in ("no-symlinks", "no-hardlinks"):
            raise fuse.FuseOSError(errno.EPERM)
        os.link(self._p(source), self._p(target))

    def statfs(self, path: str) -> dict[str, int]:
        st = os.statvfs(self._p(path))
        return {k: getattr(st, k) for k in _STATVFS}


def main() -> None:
    mode, source, mountpoint = sys.argv[1:4]
    if mode not in MODES:
        raise SystemExit(f"mode must be one of {MODES}")
    fuse.FUSE(Passthrough(mode, os.path.abspath(source)), mountpoint, foreground=True,
              nothreads=True)  # fmt: skip


if __name__ == "__main__":
    main()
