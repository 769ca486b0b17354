"""Letting git itself write a revision's new files: ``read-tree`` into a private index, then
``checkout-index`` of exactly the files to write, with git's parallel checkout.

Streaming every blob through Python costs a ``cat-file`` record, a Python ``open``, ``write``,
``fchmod`` and ``rename`` per file; git's checkout creates each file once, from C, with
``checkout.workers`` processes. The result must be the same bytes and modes as the Python
writer's (:mod:`.checkout`), so git is kept from changing content on the way out: no
``.gitattributes`` (an eol, ident or filter attribute would rewrite the blob; such trees take
the Python path), ``core.autocrlf`` off, no global or system attributes file, and a 022 umask
(git creates files 0644, or 0755 when executable, and folders 0755, as the Python writer sets
them). Unchanged files are hard-linked and symlinks written by :class:`TreeWriter` as before;
git only ever creates files that are not in the tree yet (no ``-f``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from dagsync.errors import SourceError
from dagsync.manifest import Entry, safe_path
from dagsync.sources.git.command import GitCommand
from dagsync.tree import TreeWriter

log = logging.getLogger(__name__)

# Fewer files than this go through cat-file: read-tree and a second process cost more.
MIN_FILES = 64
# One checkout worker per CPU, 2 to 4: on this 2-CPU machine 8 workers spent twice the kernel
# time of 2 creating 100,000 files (directory locks) and finished later.
CHECKOUT_WORKERS = min(4, max(2, os.cpu_count() or 2))
CHECKOUT_UMASK = 0o022
ATTRIBUTES = ".gitattributes"
CHECKOUT_CONFIG = (
    "-c", "core.autocrlf=false", "-c", "core.symlinks=true",
    "-c", "core.attributesFile=/dev/null", "-c", "core.protectNTFS=false",
    "-c", "core.protectHFS=false", "-c", f"checkout.workers={CHECKOUT_WORKERS}",
    "-c", "checkout.thresholdForParallelism=32",
)  # fmt: skip
NO_SYSTEM_ATTRIBUTES = {"GIT_ATTR_NOSYSTEM": "1"}


def die_with_parent() -> Callable[[], object] | None:
    """A ``preexec_fn`` that has the child killed when dagsync dies (``PR_SET_PDEATHSIG``).

    Unlike ``cat-file``, which dies on a broken pipe with its reader, ``checkout-index`` would
    go on creating files in a staging folder that the next start is removing. None where
    prctl is not available."""
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def set_death_signal() -> object:
        return prctl(pr_set_pdeathsig, signal.SIGKILL)

    return set_death_signal


def has_attributes(path: str) -> bool:
    """Whether ``path`` is a ``.gitattributes`` file (one in the tree rules out git's checkout)."""
    return path == ATTRIBUTES or path.endswith("/" + ATTRIBUTES)


def checkout_files(
    git: GitCommand,
    repo_dir: Path,
    treeish: str,
    writer: TreeWriter,
    entries: Sequence[Entry],
    deadline: float,
    shown: str,
) -> bool:
    """Have git write the regular files ``entries`` (published paths, relative to ``treeish``,
    ``<commit>`` or ``<commit>:<subpath>``) into the writer's tree. False when git failed:
    whatever it created of ``entries`` is removed again, so the caller writes them all."""
    if any(safe_path(e.path) != e.path for e in entries):
        return False  # a path the Python writer would normalise (git trees hold none)
    index = writer.parts / "git-index"
    env = {"GIT_INDEX_FILE": str(index), **NO_SYSTEM_ATTRIBUTES}
    dest = os.fspath(writer.dest)
    try:
        git.run(["read-tree", treeish], deadline=deadline, what="read-tree", shown=shown,
                repo_dir=repo_dir, env=env)  # fmt: skip
        with tempfile.TemporaryFile() as paths:
            paths.write(
                b"".join(e.path.encode("utf-8", "surrogateescape") + b"\0" for e in entries)
            )
            paths.seek(0)
            git.run(
                [*CHECKOUT_CONFIG, "--work-tree", dest, "checkout-index", "-z", "--stdin"],
                deadline=deadline, what="checkout-index", shown=shown, repo_dir=repo_dir,
                env=env, istream=paths, umask=CHECKOUT_UMASK, preexec_fn=die_with_parent(),
            )  # fmt: skip
    except SourceError as exc:
        log.debug("git checkout-index failed, writing the files from Python instead: %s", exc)
        for entry in entries:
            with contextlib.suppress(OSError):
                os.unlink(f"{dest}/{entry.path}")
        return False
    finally:
        with contextlib.suppress(OSError):
            index.unlink()
    writer.placed(len(entries), sum(e.size for e in entries))
    return True
