"""One published revision, materialised into a folder that someone else owns and cleans up.

Airflow's DAG bundle (``dagsync.airflow``) keeps each pinned bundle version in a folder of its
own, guarded by Airflow's version locks and removed by Airflow's stale-version clean-up. This
module fills such a folder with exactly revision ID, without Airflow:

- from ``ROOT/.dagsync/revisions/ID`` when the root still holds it: hard links when the two
  folders share a filesystem (published trees are never modified, so sharing inodes is safe
  and dagsync's clean-up then only drops its own names), else copies;
- otherwise from a relay (``dagsync once --source relay --revision ID`` into a private root
  beside the folder, whose tree is then renamed into place).

The folder appears complete or not at all: it is built beside its place and renamed in.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from dagsync.errors import DagsyncError
from dagsync.manifest import Manifest, safe_path
from dagsync.redact import redact, redact_url

log = logging.getLogger(__name__)

STATE_DIR = ".dagsync"  # store.py's layout, read here without importing the store
BUILD_MARK = ".dagsync-build-"
RELAY_MARK = ".dagsync-relay-"
RELAY_TIMEOUT_SECONDS = 600
ERROR_FILE = "error.json"  # the relay sync's --error-file, under its private root
DIR_MODE = 0o755
# A hard link fails with these where a copy works: another filesystem, a filesystem without
# links, or fs.protected_hardlinks refusing a file owned by another uid (the sidecar's).
_NO_LINK = frozenset({errno.EXDEV, errno.EPERM, errno.EACCES, errno.EMLINK, errno.ENOTSUP})


class RevisionUnavailable(DagsyncError):
    """Neither the local root nor the relay holds the revision asked for."""

    def __init__(self, message: str, revision: str) -> None:
        super().__init__(message)
        self.revision = revision


def link_path(root: Path, link: str) -> Path:
    """``ROOT/LINK`` as the store resolves it (an absolute LINK stands alone)."""
    path = Path(link)
    return path if path.is_absolute() else root / path


def published_revision(root: Path, link: str) -> str | None:
    """The revision id the link names (the basename of its target); None before a publish."""
    try:
        target = os.readlink(link_path(root, link))
    except OSError:
        return None
    name = Path(target).name
    return name or None


def check_revision_id(revision: str) -> str:
    """A revision id is one plain folder name: never a path, never hidden."""
    if (
        not revision
        or revision.startswith(".")
        or "/" in revision
        or "\0" in revision
        or revision != revision.strip()
    ):
        raise RevisionUnavailable(f"{revision!r} is not a dagsync revision id", revision)
    return revision


def local_revision(root: Path, revision: str) -> tuple[Path, Manifest] | None:
    """The published tree and its manifest under ``ROOT/.dagsync/revisions``, if both exist."""
    revisions = root / STATE_DIR / "revisions"
    try:
        manifest = Manifest.from_json(
            (revisions / f"{revision}.manifest.json").read_text(encoding="utf-8")
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    tree = revisions / revision
    return (tree, manifest) if tree.is_dir() else None


def materialize(
    revision: str,
    dest: Path,
    *,
    root: Path,
    relay_url: str | None = None,
    relay_token_file: str | None = None,
    dagsync_argv: Sequence[str] | None = None,
) -> str:
    """Make ``dest`` hold exactly ``revision``; returns how: reused, linked, copied or relay.

    The caller serialises calls for one ``dest.parent`` (Airflow's bundle lock); the rename
    into place still keeps a concurrent caller from ever seeing half a tree.
    """
    check_revision_id(revision)
    if dest.is_dir():
        return "reused"
    dest.parent.mkdir(parents=True, exist_ok=True)
    _clear_leftovers(dest.parent)
    revisions = root / STATE_DIR / "revisions"
    local = local_revision(root, revision)
    why = f"is not under {revisions}"
    if local is not None:
        tree, manifest = local
        try:
            return _place(dest, lambda tmp: link_tree(tree, tmp, manifest))
        except OSError as exc:
            # Typically dagsync's clean-up removed the revision while we read it.
            why = f"could not be taken from {revisions}: {exc.strerror}: {exc.filename}"
            log.warning("revision=%s %s; trying the relay", revision, why)
    if relay_url:
        return fetch_from_relay(
            revision, dest, relay_url=relay_url, token_file=relay_token_file, argv=dagsync_argv
        )
    raise RevisionUnavailable(f"revision {revision} {why} and no relay_url is configured", revision)


def _place(dest: Path, build: Callable[[Path], str]) -> str:
    """Build a tree beside ``dest`` with ``build(tmp) -> how`` and rename it into place."""
    tmp = dest.with_name(f"{BUILD_MARK}{dest.name}-{secrets.token_hex(6)}")
    try:
        how = build(tmp)
        try:
            os.rename(tmp, dest)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST) and dest.is_dir():
                return "reused"  # another process won the race with the same revision
            raise
        return how
    finally:
        _remove(tmp)


def link_tree(src: Path, dest: Path, manifest: Manifest) -> str:
    """Recreate ``src`` (a published tree) at ``dest`` from its manifest: hard links where the
    filesystem allows, copies otherwise. A file missing or resized in ``src`` is an OSError."""
    dest.mkdir(mode=DIR_MODE)
    made = {""}
    can_link = True
    for entry in manifest.entries:
        rel = safe_path(entry.path)
        parent = os.path.dirname(rel)
        if parent not in made:
            (dest / parent).mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            made.add(parent)
        target = dest / rel
        if entry.is_symlink:
            os.symlink(entry.target, target)
            continue
        source = src / rel
        st = source.lstat()
        if not os.path.isfile(source) or os.path.islink(source) or st.st_size != entry.size:
            raise OSError(errno.ESTALE, "changed under the copy", str(source))
        if can_link:
            try:
                os.link(source, target)
                continue
            except OSError as exc:
                if exc.errno not in _NO_LINK:
                    raise
                can_link = False
        shutil.copy2(source, target)
    for folder in made:
        os.chmod(dest / folder, DIR_MODE)
    return "linked" if can_link else "copied"


def fetch_from_relay(
    revision: str,
    dest: Path,
    *,
    relay_url: str,
    token_file: str | None,
    argv: Sequence[str] | None = None,
) -> str:
    """``dagsync once --source relay --revision ID`` into a private root beside ``dest``; the
    verified tree it publishes is renamed to ``dest`` (same filesystem, nothing copied)."""
    private = Path(tempfile.mkdtemp(prefix=f"{RELAY_MARK}{dest.name}-", dir=dest.parent))
    try:
        cmd = [
            *(argv or default_dagsync_argv()),
            "once", "--source", "relay", "--relay-url", relay_url, "--revision", revision,
            "--root", str(private), "--link", "current", "--keep-revisions", "1",
            "--error-file", ERROR_FILE,
        ]  # fmt: skip
        if token_file:
            cmd += ["--relay-token-file", token_file]
        env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSYNC_")}
        try:
            proc = subprocess.run(
                cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                timeout=RELAY_TIMEOUT_SECONDS, check=False,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise _relay_failed(revision, relay_url, str(exc)) from None
        if proc.returncode != 0:
            raise _relay_failed(revision, relay_url, _why(private / ERROR_FILE, proc.stderr))
        if published_revision(private, "current") != revision:
            raise _relay_failed(revision, relay_url, "it published another revision")
        fetched = private / STATE_DIR / "revisions" / revision

        def take(tmp: Path) -> str:
            os.rename(fetched, tmp)
            return "relay"

        return _place(dest, take)
    finally:
        _remove(private)


def default_dagsync_argv() -> list[str]:
    """This interpreter's dagsync: the one installed beside the bundle being used."""
    return [sys.executable, "-m", "dagsync"]


def _relay_failed(revision: str, relay_url: str, why: str) -> RevisionUnavailable:
    return RevisionUnavailable(
        f"revision {revision}: not on local disk, and the relay {redact_url(relay_url)} "
        f"could not provide it: {redact(why)}",
        revision,
    )


def _why(error_file: Path, stderr: str) -> str:
    """The failed sync's own message (its --error-file), else its last line of output."""
    try:
        message = json.loads(error_file.read_text(encoding="utf-8"))["message"]
        if isinstance(message, str) and message:
            return message
    except (OSError, ValueError, KeyError, TypeError):
        pass
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else "no error output"


def _clear_leftovers(folder: Path) -> None:
    """Half-built trees a killed process left (the caller holds the folder's lock)."""
    for path in folder.iterdir():
        if path.name.startswith((BUILD_MARK, RELAY_MARK)):
            _remove(path)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)
