"""The bare cache repository a git source fetches into (a ``git.Repo``), kept usable and small."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from pathlib import Path

from dagsync.errors import SourceError
from dagsync.redact import redact_url
from dagsync.sources.git.command import (
    FetchProgress,
    GitCommand,
    ProgressCallback,
    check_remote,
    git_error_detail,
)
from dagsync.sources.git.gitpython import (
    GitCommandError,
    InvalidGitRepositoryError,
    NoSuchPathError,
    Repo,
)
from dagsync.store import remove_tree

log = logging.getLogger(__name__)

KEEP_REF = "refs/dagsync/current"
# A fetch adds one pack; past this many the cache is repacked and unreachable objects pruned,
# so a sidecar that publishes for months keeps a small, fast cache.
MAX_PACKS = 20

# What a git process killed with -9 (a pod killed mid-sync) leaves in the cache and what would
# make every later git in it fail ("shallow.lock: File exists").
STALE_GLOBS = ("*.lock", "refs/**/*.lock", "objects/pack/tmp_*", "objects/*/tmp_obj_*", "gc.pid")
# Written into every cache repository's config. gc.pruneExpire=now: a gc drops what is
# unreachable at once. fetch.unpackLimit=1: every fetch keeps its pack (git would explode a
# small one into loose objects, which the pack count never sees), so the cache stays bounded.
CACHE_CONFIG = (("gc", "pruneExpire", "now"), ("fetch", "unpackLimit", 1))


class CacheRepo:
    """One bare cache repository (the superproject's or a submodule's) and its fetches."""

    def __init__(self, git: GitCommand, repo_dir: Path, depth: int) -> None:
        self.git = git
        self.repo_dir = repo_dir
        self.depth = depth
        self.progress_callback: ProgressCallback | None = None

    def ensure_commit(
        self, url: str, sha: str, ref: str | None, deadline: float, env: dict[str, str]
    ) -> None:
        """Fetch ``sha`` from ``url`` unless it is here already, and keep it (KEEP_REF)."""
        shown = redact_url(url)
        repo = open_cache(self.repo_dir, self.git.env())
        repo.close()
        if not self.has_commit(sha, deadline, shown):
            args = ["--no-tags", "--no-write-fetch-head", "--no-auto-gc"]
            if self.depth > 0:
                args.append(f"--depth={self.depth}")
            elif (self.repo_dir / "shallow").exists():
                args.append("--unshallow")
            try:
                self._fetch(args, url, sha, deadline, env)
            except SourceError:
                if not ref:
                    raise
                # Servers that refuse a want by SHA still serve the ref it came from.
                self._fetch(args, url, ref, deadline, env)
            if not self.has_commit(sha, deadline, shown):
                raise SourceError(f"commit {sha} not found in {shown}", sha)
        self._run(["update-ref", KEEP_REF, sha], deadline, "update-ref", shown)
        if pack_count(self.repo_dir) > MAX_PACKS:
            # Only refs/dagsync/current is kept: older commits and their blobs go.
            self._run(["gc", "--quiet", "--prune=now"], deadline, "gc", shown)

    def _fetch(
        self, options: list[str], url: str, want: str, deadline: float, env: dict[str, str]
    ) -> None:
        shown = redact_url(url)
        check_remote(url, options, shown)
        progress = FetchProgress(f"fetch of {shown}", self.progress_callback)
        self.git.fetch(
            [*options, "--", url, want], deadline=deadline, what="fetch", shown=shown,
            repo_dir=self.repo_dir, progress=progress, env=env,
        )  # fmt: skip

    def has_commit(self, sha: str, deadline: float, shown: str) -> bool:
        try:
            self._run(["cat-file", "-e", f"{sha}^{{commit}}"], deadline, "cat-file", shown)
        except SourceError:
            return False
        return True

    def _run(self, args: list[str], deadline: float, what: str, shown: str) -> bytes:
        return self.git.run(args, deadline=deadline, what=what, shown=shown, repo_dir=self.repo_dir)


def open_cache(repo_dir: Path, env: dict[str, str]) -> Repo:
    """A usable bare cache repository at ``repo_dir``. It is created beside its place and
    renamed into it, so a kill -9 during ``git init`` cannot leave half a repository; one
    that is damaged anyway (a disk filled up, a hand deleted a folder) is made anew."""
    for leftover in repo_dir.parent.glob(f"{repo_dir.name}.init-*"):
        remove_tree(leftover)
    if repo_dir.exists():
        if is_bare_repo(repo_dir):
            # The root's lock is ours, so no other dagsync runs git here: whatever git
            # left behind was left by a process that died with a previous dagsync.
            clear_stale_git_state(repo_dir)
            with contextlib.suppress(InvalidGitRepositoryError, NoSuchPathError):
                repo = Repo(repo_dir)
                _ensure_config(repo)
                return repo
        log.warning("cache repository is damaged, making it anew path=%s", repo_dir)
        remove_tree(repo_dir)
    repo_dir.parent.mkdir(parents=True, exist_ok=True)
    fresh = repo_dir.with_name(f"{repo_dir.name}.init-{secrets.token_hex(4)}")
    try:
        repo = Repo.init(fresh, mkdir=True, bare=True, quiet=True, env=env)
        with repo.config_writer() as config:
            for section, option, value in CACHE_CONFIG:
                config.set_value(section, option, value)
    except (GitCommandError, OSError) as exc:
        remove_tree(fresh)
        detail = git_error_detail(str(getattr(exc, "stderr", "") or exc))
        raise SourceError(f"cannot make the git cache repository {repo_dir}: {detail}") from exc
    repo.close()
    os.replace(fresh, repo_dir)
    return Repo(repo_dir)


def _ensure_config(repo: Repo) -> None:
    """A cache made by an older dagsync may lack part of CACHE_CONFIG."""
    reader = repo.config_reader("repository")
    missing = [
        (section, option, value)
        for section, option, value in CACHE_CONFIG
        if str(reader.get_value(section, option, "")) != str(value)
    ]
    if missing:
        with repo.config_writer() as config:
            for section, option, value in missing:
                config.set_value(section, option, value)


def is_bare_repo(repo_dir: Path) -> bool:
    """What git needs to open a bare repository (HEAD, objects, refs) is in place."""
    return (
        (repo_dir / "HEAD").is_file()
        and (repo_dir / "objects" / "pack").is_dir()
        and (repo_dir / "refs").is_dir()
        and (repo_dir / "config").is_file()
    )


def clear_stale_git_state(repo_dir: Path) -> None:
    """Remove lock and temp files a killed git left in ``repo_dir``."""
    for pattern in STALE_GLOBS:
        for path in repo_dir.glob(pattern):
            log.debug("removing stale git file path=%s", path)
            with contextlib.suppress(OSError):
                path.unlink()


def pack_count(repo_dir: Path) -> int:
    return len(list((repo_dir / "objects" / "pack").glob("*.pack")))
