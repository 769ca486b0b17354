"""``--trigger-secret-file``: the proof ``POST /sync`` must carry (GitHub, GitLab or Bearer)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from dagsync.redact import read_secret_file

if TYPE_CHECKING:
    from email.message import Message

log = logging.getLogger(__name__)


class SecretFile:
    """A secret read from a file, re-read whenever the file changes (rotation; a Kubernetes
    secret update swaps the file under a symlink, changing its inode)."""

    def __init__(self, path: Path, option: str, refusing: str) -> None:
        self.path = path
        self.option = option  # for messages: "--trigger-secret-file"
        self.refusing = refusing  # what an empty file refuses: "POST /sync"
        self._lock = threading.Lock()
        self._stamp: tuple[int, ...] | None = None
        self._secret: bytes | None = None
        self.current()

    def current(self) -> bytes | None:
        with self._lock:
            try:
                st = os.stat(self.path)
                stamp = (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns)
                if stamp != self._stamp:
                    value = read_secret_file(self.path)
                    self._secret, self._stamp = value.encode() or None, stamp
                    if self._secret is None:
                        log.warning("%s is empty: refusing %s", self.option, self.refusing)
            except OSError as exc:
                # Keep the last good secret: a rotation in progress must not open the door.
                log.warning("cannot read %s error=%s", self.option, exc.strerror)
            return self._secret

    def bearer_matches(self, authorization: str | None) -> bool:
        """``Authorization: Bearer <secret>``, compared in constant time."""
        secret = self.current()
        scheme, _, credentials = (authorization or "").strip().partition(" ")
        if not secret or scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(_bytes(credentials.strip()), secret)


class TriggerSecret(SecretFile):
    """The secret ``POST /sync`` must prove (``--trigger-secret-file``)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, "--trigger-secret-file", "POST /sync")

    def verify(self, headers: Message, body: bytes) -> bool:
        """GitHub ``X-Hub-Signature-256``, GitLab ``X-Gitlab-Token`` or ``Authorization:
        Bearer``, each compared in constant time."""
        secret = self.current()
        if not secret:
            return False
        proofs: list[tuple[bytes, bytes]] = []
        signature = headers.get("X-Hub-Signature-256")
        if signature is not None:
            digest = hmac.new(secret, body, hashlib.sha256).hexdigest()
            proofs.append((_bytes(signature.strip().lower()), b"sha256=" + digest.encode()))
        token = headers.get("X-Gitlab-Token")
        if token is not None:
            proofs.append((_bytes(token.strip()), secret))
        scheme, _, credentials = (headers.get("Authorization") or "").strip().partition(" ")
        if scheme.lower() == "bearer":
            proofs.append((_bytes(credentials.strip()), secret))
        # Check every proof given (no early exit): timing says nothing about which one failed.
        ok = False
        for given, expected in proofs:
            ok = hmac.compare_digest(given, expected) or ok
        return ok


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")
