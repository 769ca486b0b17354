"""A local folder for the contract suite: the walk is the listing, copies are the downloads."""

from __future__ import annotations

import os
from typing import Any

from tests.sources.store_contract import StoreEnv


class LocalStoreEnv(StoreEnv):
    """A folder written with plain file operations; no requests, faults or credentials."""

    source = "local"
    supports_faults = False
    supports_unsafe_keys = False
    supports_credentials = False

    def start(self) -> None:
        self.folder = self.tmp_path / "local-source"
        self.folder.mkdir()
        self._writes = 0

    def put(self, path: str, data: bytes) -> None:
        target = self.folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        existed = target.exists()
        target.write_bytes(data)
        if existed:
            # Same size within one mtime tick would look unchanged; a real editor's write
            # is seconds apart. Move the mtime forward instead of sleeping.
            self._writes += 1
            st = target.stat()
            os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + self._writes * 1_000_000))

    def delete(self, path: str) -> None:
        (self.folder / path).unlink()

    def options(self) -> dict[str, Any]:
        return {"local_path": str(self.folder)}


STORE_ENV = LocalStoreEnv
