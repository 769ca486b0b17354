"""The bare cache repository a git source fetches into (a ``git.Repo``), kept usable and small."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from dagsync.errors import SourceError
from dagsync.fsops import remove_tree
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

log = logging.getLogger(__name__)

KEEP_REF = "refs/dagsync/current"
# A fetch adds one pack; past this many the cache is repacked and unreachable objects pruned,
# so a sidecar that publishes for months keeps a small, fast cache.
MAX_PACKS = 20
PROMISOR = "origin"
FULL_HEX = re.compile(r"^[0-9a-f]{40}$|^[0-9a-f]{64}$")
BLOB_FILTER = "blob:none"
# What git's own lazy fetch of missing objects runs. No negotiation: the blobs are reachable
# from a commit the cache has, so a server told about it would send none of them.
BLOB_FETCH = [
    "--no-tags", "--no-write-fetch-head", "--recurse-submodules=no",
    f"--filter={BLOB_FILTER}", "--stdin",
]  # fmt: skip
NO_NEGOTIATION = {
    "GIT_CONFIG_COUNT": "1",
    "GIT_CONFIG_KEY_0": "fetch.negotiationAlgorithm",
    "GIT_CONFIG_VALUE_0": "noop",
}

# What a git process killed with -9 (a pod killed mid-sync) leaves in the cache and what would
# make every later git in it fail ("shallow.lock: File exists").
STALE_GLOBS = ("*.lock", "refs/**/*.lock", "objects/pack/tmp_*", "objects/*/tmp_obj_*", "gc.pid")
# Written into every cache repository's config. gc.pruneExpire=now: a gc drops what is
# unreachable at once. fetch.unpackLimit=1: every fetch keeps its pack (git would explode a
# small one into loose objects, which the pack count never sees), so the cache stays bounded.
CACHE_CONFIG = (("gc", "pruneExpire", "now"), ("fetch", "unpackLimit", 1))


class CacheRepo:
    """One bare cache repository (the superproject's or a submodule's) and its fetches.

    ``partial``: fetch commits and trees only (``--filter=blob:none``, the cache becomes a
    partial clone of the promisor remote "origin"); :meth:`ensure_blobs` then fetches exactly
    the blobs a selection needs, in one request. A server that ignores filters sends
    everything, as a plain fetch; one that refuses blobs by id gets the plain fetch instead.
    """

    def __init__(self, git: GitCommand, repo_dir: Path, depth: int, partial: bool) -> None:
        self.git = git
        self.repo_dir = repo_dir
        self.depth = depth
        self.partial = partial
        self.progress_callback: ProgressCallback | None = None
        self._fetched: tuple[str, str, dict[str, str]] | None = None  # url, commit, env

    def ensure_commit(
        self, url: str, sha: str, ref: str | None, deadline: float, env: dict[str, str]
    ) -> None:
        """Fetch ``sha`` from ``url`` unless it is here already, and keep it (KEEP_REF)."""
        shown = redact_url(url)
        repo = open_cache(self.repo_dir, self.git.env())
        if self.partial or is_partial_clone(self.repo_dir):
            set_promisor(repo, url)  # also a new --repo for a cache that is partial already
        repo.close()
        self._fetched = (url, sha, env)
        if not self.has_commit(sha, deadline, shown):
            args = ["--no-tags", "--no-write-fetch-head", "--no-auto-gc"]
            if self.depth > 0:
                args.append(f"--depth={self.depth}")
            elif (self.repo_dir / "shallow").exists():
                args.append("--unshallow")
            if self.partial:
                args.append(f"--filter={BLOB_FILTER}")
            try:
                self._fetch(args, url, sha, deadline, env)
            except SourceError:
                if not ref:
                    raise
                # Servers that refuse a want by SHA still serve the ref it came from; the
                # ref may have moved since, so check the commit came with it.
                self._fetch(args, url, ref, deadline, env)
                if not self.has_commit(sha, deadline, shown):
                    raise SourceError(f"commit {sha} not found in {shown}", sha) from None
        self._run(["update-ref", KEEP_REF, sha], deadline, "update-ref", shown)
        if pack_count(self.repo_dir) > MAX_PACKS:
            # Only refs/dagsync/current is kept: older commits and their blobs go.
            self._run(["gc", "--quiet", "--prune=now"], deadline, "gc", shown)

    def fetch_ref(self, url: str, ref: str, deadline: float) -> str | None:
        """Fetch ``ref`` into a new cache and return the commit it names; None when the
        remote has no such ref (the caller then asks with ls-remote, which knows tags)."""
        repo = open_cache(self.repo_dir, self.git.env())
        if self.partial:
            set_promisor(repo, url)
        repo.close()
        args = ["--no-tags", "--no-auto-gc"]
        if self.depth > 0:
            args.append(f"--depth={self.depth}")
        if self.partial:
            args.append(f"--filter={BLOB_FILTER}")
        try:
            self._fetch(args, url, ref, deadline, {})
        except SourceError as exc:
            if "couldn't find remote ref" not in str(exc):
                raise
            return None
        head = (self.repo_dir / "FETCH_HEAD").read_text().split("\t", 1)[0].strip()
        (self.repo_dir / "FETCH_HEAD").unlink()
        return head if FULL_HEX.match(head) else None

    def ensure_blobs(self, shas: Iterable[str], deadline: float) -> None:
        """Fetch those of ``shas`` that a partial clone lacks, in one request (git would
        fetch them one by one, lazily, as ``cat-file`` asks)."""
        if self._fetched is None or not is_partial_clone(self.repo_dir):
            return
        url, commit, env = self._fetched
        shown = redact_url(url)
        missing = self._missing_objects(commit, deadline, shown)
        need = sorted({sha for sha in shas if sha in missing})
        if not need:
            return
        log.debug("fetching blobs count=%d of %s", len(need), shown)
        with tempfile.TemporaryFile() as wanted:
            wanted.write("".join(f"{sha}\n" for sha in need).encode())
            wanted.seek(0)
            try:
                self._fetch(
                    BLOB_FETCH, url, None, deadline, {**env, **NO_NEGOTIATION}, istream=wanted
                )
            except SourceError as exc:
                log.warning(
                    "fetching blobs by id failed, fetching the whole commit instead url=%s "
                    "error=%s", shown, exc,
                )  # fmt: skip
                remove_tree(self.repo_dir)
                self.partial = False
                self.ensure_commit(url, commit, None, deadline, env)

    def _missing_objects(self, commit: str, deadline: float, shown: str) -> set[str]:
        listing = self.git.records(
            ["rev-list", "--objects", "--missing=print", commit], deadline=deadline,
            what="rev-list", shown=shown, repo_dir=self.repo_dir, separator=b"\n",
        )  # fmt: skip
        return {line[1:41].decode() for line in listing if line.startswith(b"?")}

    def _fetch(
        self,
        options: list[str],
        url: str,
        want: str | None,
        deadline: float,
        env: dict[str, str],
        istream: IO[bytes] | None = None,
    ) -> None:
        """Fetch ``want`` (or what ``istream`` lists) from ``url``, through the promisor
        remote when this cache is a partial clone (git requires that for filters)."""
        shown = redact_url(url)
        check_remote(url, options, shown)
        source = PROMISOR if is_partial_clone(self.repo_dir) else url
        progress = FetchProgress(f"fetch of {shown}", self.progress_callback)
        self.git.fetch(
            [*options, "--", source, *([want] if want else [])], deadline=deadline,
            what="fetch", shown=shown, repo_dir=self.repo_dir, progress=progress, env=env,
            istream=istream,
        )  # fmt: skip

    def has_commit(self, sha: str, deadline: float, shown: str) -> bool:
        """Whether the commit is here; never a lazy fetch from a promisor remote (as
        ``cat-file -e`` would do: of the whole history of that commit)."""
        try:
            out = self._run(
                ["rev-list", "--missing=allow-any", "--no-walk", sha], deadline, "rev-list", shown
            )
        except SourceError:
            return False
        return bool(out.strip())

    def _run(self, args: list[str], deadline: float, what: str, shown: str) -> bytes:
        return self.git.run(args, deadline=deadline, what=what, shown=shown, repo_dir=self.repo_dir)


def set_promisor(repo: Repo, url: str) -> None:
    """Make ``repo`` a partial clone of ``url`` (the remote "origin", filter blob:none)."""
    section = f'remote "{PROMISOR}"'
    reader = repo.config_reader("repository")
    wanted = {
        (section, "url"): url,
        (section, "promisor"): "true",
        (section, "partialclonefilter"): BLOB_FILTER,
        ("extensions", "partialclone"): PROMISOR,
        ("core", "repositoryformatversion"): "1",
    }
    changed = {k: v for k, v in wanted.items() if str(reader.get_value(*k, "")) != v}
    if changed:
        with repo.config_writer() as config:
            for (sect, option), value in changed.items():
                config.set_value(sect, option, value)


def is_partial_clone(repo_dir: Path) -> bool:
    try:
        text = (repo_dir / "config").read_text()
    except OSError:
        return False
    return "partialclone" in text.lower()


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
