"""GitPython, imported for the git source only (``dagsync version`` and the other sources never
load it), with what its import does kept in bounds.

Importing GitPython runs ``git version`` (its "refresh") with the process environment; that
child must not see the variables dagsync keeps from its children (git-sync's password, cloud
credentials, ``DAGSYNC_*``), so they are out of ``os.environ`` for the length of the import.
``GIT_PYTHON_REFRESH=quiet`` keeps a missing git from failing the import with a page of text:
:data:`GIT_FOUND` says whether git ran, and the source says so in one line.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from dagsync.config import child_environment


@contextmanager
def _import_environment() -> Iterator[None]:
    kept = child_environment(os.environ)
    private = {name: value for name, value in os.environ.items() if name not in kept}
    refresh = os.environ.get("GIT_PYTHON_REFRESH")
    for name in private:
        del os.environ[name]
    os.environ["GIT_PYTHON_REFRESH"] = "quiet"
    try:
        yield
    finally:
        os.environ.update(private)
        if refresh is None:
            del os.environ["GIT_PYTHON_REFRESH"]
        else:
            os.environ["GIT_PYTHON_REFRESH"] = refresh


with _import_environment():
    import git

from git import Repo  # noqa: E402
from git.cmd import Git  # noqa: E402
from git.exc import (  # noqa: E402
    GitCommandError,
    InvalidGitRepositoryError,
    NoSuchPathError,
    UnsafeOptionError,
    UnsafeProtocolError,
)
from git.util import RemoteProgress  # noqa: E402

GIT_FOUND = bool(git.GIT_OK)

__all__ = [
    "GIT_FOUND",
    "Git",
    "GitCommandError",
    "InvalidGitRepositoryError",
    "NoSuchPathError",
    "RemoteProgress",
    "Repo",
    "UnsafeOptionError",
    "UnsafeProtocolError",
]
