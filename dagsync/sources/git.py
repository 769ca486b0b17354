"""The git source: ``ls-remote`` to resolve, a shallow fetch into a bare cache, then the tree is
written blob by blob (one streaming ``cat-file --batch``) so unchanged blobs are hard-linked from
the previous revision."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from dagsync.config import Config, require_readable
from dagsync.errors import ConfigError, SourceError
from dagsync.manifest import (
    MODE_EXEC,
    MODE_FILE,
    MODE_SYMLINK,
    Entry,
    Manifest,
    Selector,
    check_limits,
    diff,
)
from dagsync.procs import run_bounded
from dagsync.redact import redact, redact_url, register_secret
from dagsync.sources.base import FetchStats, Plan, Published
from dagsync.sources.git_auth import GitAuth
from dagsync.sources.git_batch import BlobBatch
from dagsync.store import remove_tree
from dagsync.timing import remaining
from dagsync.tree import TreeWriter

log = logging.getLogger(__name__)

FULL_SHA = re.compile(r"^[0-9a-f]{40}$|^[0-9a-f]{64}$")
# fetch.unpackLimit=1: every fetch keeps its pack (git would explode a small one into loose
# objects, which the pack count below never sees), so the cache stays bounded.
GIT_ARGV = (
    "git",
    "-c", "credential.helper=",
    "-c", "protocol.file.allow=always",
    "-c", "fetch.unpackLimit=1",
)  # fmt: skip
GIT_MODE_SYMLINK = "120000"
GIT_MODES = {"100755": MODE_EXEC, GIT_MODE_SYMLINK: MODE_SYMLINK}
KEEP_REF = "refs/dagsync/current"
ERROR_DETAIL_CHARS = 300
GIT_BOILERPLATE = ("Please make sure you have the correct access rights", "and the repository")
# A fetch adds one pack; past this many the cache is repacked and unreachable objects pruned,
# so a sidecar that publishes for months keeps a small, fast cache.
MAX_PACKS = 20
# What a git process killed with -9 (a pod killed mid-sync) leaves in the cache and what would
# make every later git in it fail ("shallow.lock: File exists").
STALE_GLOBS = ("*.lock", "refs/**/*.lock", "objects/pack/tmp_*", "objects/*/tmp_obj_*", "gc.pid")


@dataclass(frozen=True)
class TreeItem:
    mode: str
    kind: str  # blob | commit (a submodule) | tree
    sha: str
    size: int
    path: str


class GitSource:
    """Publishes a commit of a git repository."""

    name: ClassVar[str] = "git"

    def __init__(self, config: Config, cache_dir: Path) -> None:
        if not config.repo:
            raise ConfigError("--repo is required for --source git", "repo")
        if config.password_file and not config.username:
            raise ConfigError("--password-file needs --username", "username")
        for option, path in (
            ("password-file", config.password_file),
            ("ssh-key-file", config.ssh_key_file),
            ("ssh-known-hosts-file", config.ssh_known_hosts_file),
        ):
            require_readable(path, option)
        self.config = config
        self.url = normalise_url(config.repo)
        self.shown_url = redact_url(self.url)
        register_secret(config.password)
        self.cache_dir = cache_dir
        self.auth = GitAuth(config)

    # -- resolve -------------------------------------------------------------------------
    def resolve(self, deadline: float) -> Plan:
        ref = self.config.ref
        if FULL_SHA.match(ref.lower()):
            return Plan(revision=ref.lower(), detail={"ref": ref.lower()})
        patterns = ["HEAD"] if ref == "HEAD" else [ref, f"{ref}^{{}}"]
        out = self._git(["ls-remote", "--", self.url, *patterns], deadline, None, "ls-remote")
        refs: dict[str, str] = {}
        for line in out.decode(errors="replace").splitlines():
            sha, _, name = line.partition("\t")
            refs[name.strip()] = sha.strip()
        for candidate in pick_ref_names(ref):
            if candidate in refs:
                return Plan(revision=refs[candidate], detail={"ref": candidate.removesuffix("^{}")})
        raise SourceError(f"--ref {ref!r} not found in {self.shown_url}", ref)

    # -- fetch ---------------------------------------------------------------------------
    def fetch(
        self, plan: Plan, dest: Path, previous: Published | None, deadline: float
    ) -> FetchStats:
        repo_dir = self.cache_dir / "repo.git"
        self._ensure_commit(repo_dir, self.url, plan.revision, plan.detail.get("ref"), deadline)
        selector = Selector(self.config.subpath, self.config.include, self.config.exclude)
        items: list[tuple[str, Path, TreeItem]] = []  # (published path, repo, item)
        found = self._collect(repo_dir, self.url, plan.revision, "", selector, items, 0, deadline)
        if not found:
            # A mistyped or moved --subpath must not publish an empty tree: Airflow would
            # drop every DAG.
            raise SourceError(
                f"--subpath {selector.subpath!r} not found in commit {plan.revision}",
                selector.subpath,
            )
        targets = self._symlink_targets(items)
        manifest = Manifest.of(
            Entry(path, item.size, item.sha, mode_of(item), targets.get(path, ""))
            for path, _, item in items
        )
        check_limits(manifest, self.config.max_files, self.config.max_bytes)
        where = {path: (repo, item) for path, repo, item in items}
        plan_diff = diff(manifest, previous.manifest if previous else None)
        writer = TreeWriter(dest, previous)
        stats = FetchStats(manifest=manifest)
        to_write = list(plan_diff.fetch)
        for entry in plan_diff.reuse:
            if writer.reuse(entry):
                stats.reused_files += 1
            else:
                to_write.append(entry)
        self._write(writer, to_write, where, stats, deadline)
        writer.finish()
        return stats

    def _write(
        self,
        writer: TreeWriter,
        entries: list[Entry],
        where: dict[str, tuple[Path, TreeItem]],
        stats: FetchStats,
        deadline: float,
    ) -> None:
        """Write ``entries`` from the cache: one streaming cat-file per repository."""
        by_repo: dict[Path, list[tuple[Entry, str]]] = {}
        for entry in entries:
            repo, item = where[entry.path]
            if entry.is_symlink:
                writer.symlink(entry)
            else:
                by_repo.setdefault(repo, []).append((entry, item.sha))
            stats.downloaded_files += 1
            stats.downloaded_bytes += entry.size
        for repo, wanted in by_repo.items():
            with self._blobs(repo, [sha for _, sha in wanted]) as blobs:
                for entry, sha in wanted:
                    remaining(deadline)
                    with writer.open(entry) as fh:
                        blobs.copy_to(sha, fh)

    def _symlink_targets(self, items: list[tuple[str, Path, TreeItem]]) -> dict[str, str]:
        """The link text of every symlink (it is part of the manifest, so read before diff)."""
        by_repo: dict[Path, list[tuple[str, str]]] = {}
        for path, repo, item in items:
            if item.mode == GIT_MODE_SYMLINK:
                by_repo.setdefault(repo, []).append((path, item.sha))
        targets = {}
        for repo, links in by_repo.items():
            with self._blobs(repo, [sha for _, sha in links]) as blobs:
                for path, sha in links:
                    targets[path] = blobs.read(sha).decode("utf-8", "surrogateescape")
        return targets

    def _blobs(self, repo_dir: Path, shas: list[str]) -> BlobBatch:
        return BlobBatch(GIT_ARGV, repo_dir, shas, self.auth.env())

    def _collect(
        self,
        repo_dir: Path,
        url: str,
        commit: str,
        prefix: str,
        selector: Selector,
        out: list[tuple[str, Path, TreeItem]],
        level: int,
        deadline: float,
    ) -> bool:
        """Every blob of ``commit`` (and of its submodules, as configured) that is selected;
        returns whether anything lies under --subpath (always true without one)."""
        listing = self._git(
            ["ls-tree", "-r", "-z", "-l", "--full-tree", commit], deadline, repo_dir, "ls-tree"
        )
        submodules: list[TreeItem] = []
        found = not selector.subpath
        for record in listing.split(b"\0"):
            if not record:
                continue
            meta, _, raw_path = record.partition(b"\t")
            mode, kind, sha, size = meta.decode().split()
            item = TreeItem(mode, kind, sha, int(size) if size != "-" else 0, "")
            path = prefix + raw_path.decode("utf-8", "surrogateescape")
            inside = path.startswith(selector.subpath + "/")
            found = found or inside or (kind == "commit" and path == selector.subpath)
            if kind == "commit":
                submodules.append(TreeItem(mode, kind, sha, 0, path))
                continue
            if kind != "blob":
                continue
            published = selector.select(path)
            if published is not None:
                out.append((published, repo_dir, TreeItem(mode, kind, sha, item.size, path)))
        mode = self.config.submodules
        if not submodules or mode == "off" or (mode == "shallow" and level >= 1):
            return found
        urls = self._submodule_urls(repo_dir, commit, deadline)
        for sub in submodules:
            rel = sub.path[len(prefix) :]
            if not _may_select(selector, sub.path):
                continue
            sub_url = urls.get(rel)
            if sub_url is None:
                raise SourceError(f"submodule {sub.path!r} has no url in .gitmodules", sub.path)
            sub_url = resolve_submodule_url(url, sub_url)
            sub_dir = self.cache_dir / "modules" / re.sub(r"[^A-Za-z0-9._-]", "_", sub.path)
            self._ensure_commit(sub_dir, sub_url, sub.sha, None, deadline)
            inside = self._collect(
                sub_dir, sub_url, sub.sha, sub.path + "/", selector, out, level + 1, deadline
            )
            found = found or inside
        return found

    def _submodule_urls(self, repo_dir: Path, commit: str, deadline: float) -> dict[str, str]:
        try:
            raw = self._git(
                ["config", "--blob", f"{commit}:.gitmodules", "--list", "-z"],
                deadline,
                repo_dir,
                ".gitmodules",
            )
        except SourceError:
            return {}
        names: dict[str, str] = {}
        urls: dict[str, str] = {}
        for record in raw.decode(errors="replace").split("\0"):
            key, _, value = record.partition("\n")
            if key.startswith("submodule.") and key.endswith(".path"):
                names[key[len("submodule.") : -len(".path")]] = value
            elif key.startswith("submodule.") and key.endswith(".url"):
                urls[key[len("submodule.") : -len(".url")]] = value
        return {path: urls[name] for name, path in names.items() if name in urls}

    def _ensure_commit(
        self, repo_dir: Path, url: str, sha: str, ref: str | None, deadline: float
    ) -> None:
        """Fetch ``sha`` into the bare cache unless it is there already."""
        self._ensure_repo(repo_dir, deadline)
        if not self._has_commit(repo_dir, sha, deadline):
            args = ["fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--no-auto-gc"]
            if self.config.depth > 0:
                args.append(f"--depth={self.config.depth}")
            elif (repo_dir / "shallow").exists():
                args.append("--unshallow")
            try:
                self._git([*args, "--", url, sha], deadline, repo_dir, "fetch")
            except SourceError:
                if not ref:
                    raise
                # Servers that refuse a want by SHA still serve the ref it came from.
                self._git([*args, "--", url, ref], deadline, repo_dir, "fetch")
            if not self._has_commit(repo_dir, sha, deadline):
                raise SourceError(f"commit {sha} not found in {redact_url(url)}", sha)
        self._git(["update-ref", KEEP_REF, sha], deadline, repo_dir, "update-ref")
        if len(list((repo_dir / "objects" / "pack").glob("*.pack"))) > MAX_PACKS:
            # Only refs/dagsync/current is kept: older commits and their blobs go.
            self._git(["gc", "--quiet", "--prune=now"], deadline, repo_dir, "gc")

    def _ensure_repo(self, repo_dir: Path, deadline: float) -> None:
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
                return
            log.warning("cache repository is damaged, making it anew path=%s", repo_dir)
            remove_tree(repo_dir)
        repo_dir.parent.mkdir(parents=True, exist_ok=True)
        fresh = repo_dir.with_name(f"{repo_dir.name}.init-{secrets.token_hex(4)}")
        self._git(["init", "--bare", "--quiet", str(fresh)], deadline, None, "init")
        self._git(["config", "gc.pruneExpire", "now"], deadline, fresh, "config")
        os.replace(fresh, repo_dir)

    def _has_commit(self, repo_dir: Path, sha: str, deadline: float) -> bool:
        try:
            self._git(["cat-file", "-e", f"{sha}^{{commit}}"], deadline, repo_dir, "cat-file")
        except SourceError:
            return False
        return True

    def _git(self, args: list[str], deadline: float, repo_dir: Path | None, what: str) -> bytes:
        argv = list(GIT_ARGV)
        if repo_dir is not None:
            argv += ["--git-dir", str(repo_dir)]
        result = run_bounded(
            argv + args,
            timeout=remaining(deadline, f"git {what}"),
            what=f"git {what} of {self.shown_url}",
            env=self.auth.env(),
        )
        if result.returncode != 0:
            detail = git_error_detail(redact(result.stderr.decode(errors="replace")))
            raise SourceError(f"git {what} of {self.shown_url} failed: {detail}", self.shown_url)
        return result.stdout

    def close(self) -> None:
        self.auth.close()


def mode_of(item: TreeItem) -> int:
    return GIT_MODES.get(item.mode, MODE_FILE)


def git_error_detail(stderr: str) -> str:
    """git's stderr as one bounded line: all of it when short (ssh's own complaints, such as
    "No user exists for uid", are not ``fatal:`` lines), else its ``fatal:``/``error:`` lines."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(GIT_BOILERPLATE)]
    detail = " ".join(" ".join(lines).split())
    if len(detail) > ERROR_DETAIL_CHARS:
        errors = [line for line in lines if line.startswith(("fatal:", "error:"))]
        detail = " ".join(" ".join(errors or lines).split())
    if len(detail) > ERROR_DETAIL_CHARS:
        detail = detail[: ERROR_DETAIL_CHARS - 3] + "..."
    return detail or "no error output"


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


def pick_ref_names(ref: str) -> list[str]:
    """Full ref names that ``--ref`` may mean, in the order they win."""
    if ref == "HEAD":
        return ["HEAD"]
    if ref.startswith("refs/"):
        return [f"{ref}^{{}}", ref]
    return [f"refs/heads/{ref}", f"refs/tags/{ref}^{{}}", f"refs/tags/{ref}"]


def normalise_url(url: str) -> str:
    return url.strip()


def resolve_submodule_url(parent: str, url: str) -> str:
    """A relative submodule URL (``../lib.git``) is relative to the superproject's URL."""
    if not url.startswith(("./", "../")):
        return url
    base = parent.rstrip("/")
    # The path part starts after scheme://host, or after host: in the scp-like form.
    m = re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/]*", base) or re.match(r"^[^/:]+:", base)
    floor = m.end() if m else 0
    while url.startswith(("./", "../")):
        if url.startswith("./"):
            url = url[2:]
            continue
        url = url[3:]
        cut = base.rfind("/", floor)
        base = base[:cut] if cut >= floor else base[:floor]
    return base + url if base.endswith((":", "/")) else f"{base}/{url}"


def _may_select(selector: Selector, path: str) -> bool:
    """Whether a submodule at ``path`` can hold any file under --subpath."""
    sub = selector.subpath
    return not sub or path == sub or path.startswith(sub + "/") or sub.startswith(path + "/")
