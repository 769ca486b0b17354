"""The start-up probe of the root's filesystem: can it hold what publishing needs?

Publishing creates a symlink and renames it over the old one (SPEC section 3); unchanged files
are hard-linked. A shared volume that cannot do the first two (Azure Files over SMB without
``mfsymlinks``, FUSE mounts such as ossfs or blobfuse) would fail every publish; the probe says
so once, in one line, before any network access. Without hard links files are copied, which
only costs space and mtimes, so that is an info line.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from dagsync.errors import ConfigError
from dagsync.fsops import remove_tree
from dagsync.store import TMP_LINK_MARK

log = logging.getLogger(__name__)

PROBE_MARK = ".probe-"
SYMLINK_HINT = "SMB without the mfsymlinks mount option? FUSE mounts such as ossfs cannot"
RENAME_HINT = "FUSE mounts such as ossfs or blobfuse cannot; use NFS, SMB or a local disk"


def probe_root(root: Path, state_dir: Path, link: Path) -> bool:
    """Raise ConfigError when the folder of ``link`` cannot hold a symlink or rename one over
    another; returns whether hard links work in ``state_dir`` (where revisions share files).
    The probe links are named like the publisher's temporary links, so a kill -9 here leaves
    nothing that the next start-up does not remove."""
    tag = secrets.token_hex(6)
    first = link.parent / f".{link.name}{TMP_LINK_MARK}probe-a-{tag}"
    second = link.parent / f".{link.name}{TMP_LINK_MARK}probe-b-{tag}"
    try:
        _probe_link_swap(root, first, second)
    finally:
        for path in (first, second):
            if os.path.lexists(path):
                remove_tree(path)
    for stale in state_dir.glob(f"{PROBE_MARK}*"):  # a kill -9 during an earlier probe
        remove_tree(stale)
    probe = state_dir / f"{PROBE_MARK}{tag}"
    try:
        probe.mkdir()
        return _hard_links_work(root, probe)
    except OSError as exc:
        raise ConfigError(f"--root {root}: cannot create {probe}: {exc.strerror}", "root") from None
    finally:
        remove_tree(probe)


def _probe_link_swap(root: Path, first: Path, second: Path) -> None:
    try:
        os.symlink("a", first)
        os.symlink("b", second)
    except OSError as exc:
        raise ConfigError(
            f"--root {root}: the filesystem cannot hold symlinks ({exc.strerror}; "
            f"{SYMLINK_HINT}); dagsync publishes every revision as a symlink",
            "root",
        ) from None
    try:
        os.replace(first, second)
        moved = os.readlink(second) == "a" and not os.path.lexists(first)
    except OSError as exc:
        moved, reason = False, exc.strerror
    else:
        reason = "the old link stayed"
    if not moved:
        raise ConfigError(
            f"--root {root}: the filesystem cannot rename a symlink over another "
            f"({reason}; {RENAME_HINT}); dagsync swaps the link that way, atomically",
            "root",
        )


def _hard_links_work(root: Path, probe: Path) -> bool:
    original = probe / "file"
    try:
        original.write_bytes(b"probe")
        os.link(original, probe / "link")
    except OSError as exc:
        log.info(
            "no hard links under --root, unchanged files are copied root=%s reason=%s",
            root,
            exc.strerror,
        )
        return False
    return True
