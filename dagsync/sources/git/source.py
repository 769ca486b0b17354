"""The git source: ``ls-remote`` to resolve, a shallow fetch into a bare cache, then the tree is
written blob by blob (one streaming ``cat-file --batch``) so unchanged blobs are hard-linked from
the previous revision. GitPython runs every git command (see :mod:`.command`)."""

from __future__ import annotations

import itertools
import logging
import re
import tempfile
from dataclasses import dataclass, field, replace
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
from dagsync.redact import redact_url
from dagsync.sources.base import FetchStats, Plan, Published
from dagsync.sources.git.auth import GitAuth
from dagsync.sources.git.batch import BlobBatch
from dagsync.sources.git.cache import CacheRepo, is_partial_clone
from dagsync.sources.git.checkout import write_blobs
from dagsync.sources.git.command import (
    GitCommand,
    ProgressCallback,
    check_remote,
    unsafe_protocol,
)
from dagsync.sources.git.gitpython import GIT_FOUND
from dagsync.sources.git.urls import is_local, is_ssh, resolve_submodule_url, split_userinfo
from dagsync.sources.git.worktree import MIN_FILES, checkout_files, has_attributes
from dagsync.tree import TreeWriter

log = logging.getLogger(__name__)

FULL_SHA = re.compile(r"^[0-9a-f]{40}$|^[0-9a-f]{64}$")
# The file transport is allowed only when --repo itself is local; for a remote --repo git's own
# default ("user") applies, and submodule fetches are marked as not asked for by the user, so a
# .gitmodules naming a local path cannot publish a file of this machine.
LOCAL_CONFIG = ("-c", "credential.helper=", "-c", "protocol.file.allow=always")
REMOTE_CONFIG = ("-c", "credential.helper=", "-c", "protocol.file.allow=user")
NOT_FROM_USER = {"GIT_PROTOCOL_FROM_USER": "0"}
GIT_MODES = {"100755": MODE_EXEC, "120000": MODE_SYMLINK}


@dataclass
class Collected:
    """The selected entries of a commit and its submodules, kept lean for 100,000 files:
    one Entry each (token = blob SHA), and the cache repository only of those that come from
    a submodule."""

    main_repo: Path
    files: list[Entry] = field(default_factory=list)
    links: list[Entry] = field(default_factory=list)  # link text not read yet
    repo_of: dict[str, Path] = field(default_factory=dict)
    unsized: bool = False  # some sizes are -1: listed from a partial clone
    treeish: str = ""  # what the main repository's published paths are relative to
    attributes: bool = False  # a .gitattributes in it: git's checkout could change bytes

    def add(self, path: str, size: int, sha: str, mode: int, repo: Path) -> None:
        (self.links if mode == MODE_SYMLINK else self.files).append(Entry(path, size, sha, mode))
        if repo != self.main_repo:
            self.repo_of[path] = repo

    def repo(self, path: str) -> Path:
        return self.repo_of.get(path, self.main_repo)


class GitSource:
    """Publishes a commit of a git repository."""

    name: ClassVar[str] = "git"

    def __init__(self, config: Config, cache_dir: Path) -> None:
        if not config.repo:
            raise ConfigError("--repo is required for --source git", "repo")
        if not GIT_FOUND:
            raise ConfigError("--source git: git was not found on PATH (install git)", "source")
        if config.password_file and not config.username:
            raise ConfigError("--password-file needs --username", "username")
        for option, path in (
            ("password-file", config.password_file),
            ("ssh-key-file", config.ssh_key_file),
            ("ssh-known-hosts-file", config.ssh_known_hosts_file),
        ):
            require_readable(path, option)
        self.config = config
        repo_url = split_userinfo(config.repo)
        self.url = repo_url.url
        self.shown_url = redact_url(self.url)
        why = unsafe_protocol(self.url)
        if why:
            raise ConfigError(f"--repo {self.shown_url}: refused: {why}", "repo")
        self.local = is_local(self.url)
        self.cache_dir = cache_dir
        self.auth = GitAuth(config, username=repo_url.username, password=repo_url.password)
        if is_ssh(self.url):
            self._require_ssh(f"--repo {self.shown_url}", "repo")
        self.git = GitCommand(self.auth.env, LOCAL_CONFIG if self.local else REMOTE_CONFIG)
        # A progress display may set this: (stage, done, total, message) while fetching.
        self.on_fetch_progress: ProgressCallback | None = None
        self._caches: dict[Path, CacheRepo] = {}

    def _require_ssh(self, what: str, option: str) -> None:
        problem = self.auth.ssh_problem()
        if problem:
            key = " with --ssh-key-file" if self.config.ssh_key_file else ""
            raise ConfigError(f"{what}{key}: {problem}", option)

    # -- resolve -------------------------------------------------------------------------
    def resolve(self, deadline: float) -> Plan:
        ref = self.config.ref
        if FULL_SHA.match(ref.lower()):
            return Plan(revision=ref.lower(), detail={"ref": ref.lower()})
        repo_dir = self.cache_dir / "repo.git"
        if not repo_dir.exists() and (ref == "HEAD" or not ref.startswith("refs/")):
            # Nothing was ever fetched here, so whatever the remote says must be fetched:
            # fetch the ref at once and read the commit it brought, instead of asking first
            # with a separate ls-remote (one process and one connection less).
            name = "HEAD" if ref == "HEAD" else f"refs/heads/{ref}"
            self._caches = {}
            sha = self._cache(repo_dir).fetch_ref(self.url, name, deadline)
            if sha is not None:
                return Plan(revision=sha, detail={"ref": name})
        patterns = ["HEAD"] if ref == "HEAD" else [ref, f"{ref}^{{}}"]
        check_remote(self.url, [], self.shown_url)
        out = self.git.run(
            ["ls-remote", "--", self.url, *patterns], deadline=deadline, what="ls-remote",
            shown=self.shown_url,
        )  # fmt: skip
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
        self._caches = {}
        self._cache(repo_dir).ensure_commit(
            self.url, plan.revision, plan.detail.get("ref"), deadline, {}
        )
        selector = Selector(self.config.subpath, self.config.include, self.config.exclude)
        tree = Collected(repo_dir)
        sub = selector.subpath
        tree.treeish = f"{plan.revision}:{sub}" if sub else plan.revision
        found = self._collect(repo_dir, self.url, plan.revision, "", selector, tree, 0, deadline)
        if not found:
            # A mistyped or moved --subpath must not publish an empty tree: Airflow would
            # drop every DAG.
            raise SourceError(
                f"--subpath {selector.subpath!r} not found in commit {plan.revision}",
                selector.subpath,
            )
        for repo, cache in self._caches.items():
            selected = itertools.chain(tree.files, tree.links)
            cache.ensure_blobs((e.token for e in selected if tree.repo(e.path) == repo), deadline)
        if tree.unsized:
            self._read_sizes(tree, deadline)
        tree.files.extend(self._read_link_targets(tree))
        manifest = Manifest.of(tree.files)
        del tree.files[:]  # the manifest holds the entries now
        check_limits(manifest, self.config.max_files, self.config.max_bytes)
        plan_diff = diff(manifest, previous.manifest if previous else None)
        writer = TreeWriter(dest, previous, need_bytes=manifest.total_bytes)
        writer.expect(len(manifest), manifest.total_bytes)  # a progress display's total
        stats = FetchStats(manifest=manifest)
        to_write = list(plan_diff.fetch)
        for entry in plan_diff.reuse:
            if writer.reuse(entry):
                stats.reused_files += 1
            else:
                to_write.append(entry)
        self._write(writer, to_write, tree, stats, deadline)
        writer.finish()
        return stats

    def _cache(self, repo_dir: Path) -> CacheRepo:
        """The cache at ``repo_dir``; with --subpath a partial clone (only the blobs of the
        subtree are downloaded, where the server supports filters)."""
        cache = CacheRepo(self.git, repo_dir, self.config.depth, partial=bool(self.config.subpath))
        cache.progress_callback = self.on_fetch_progress
        self._caches[repo_dir] = cache
        return cache

    def _write(
        self,
        writer: TreeWriter,
        entries: list[Entry],
        tree: Collected,
        stats: FetchStats,
        deadline: float,
    ) -> None:
        """Write ``entries`` from the cache: git's own checkout for the main repository's
        files where it writes the same bytes, else one streaming cat-file per repository."""
        by_repo: dict[Path, list[tuple[Entry, str]]] = {}
        for entry in entries:
            if entry.is_symlink:
                writer.symlink(entry)
            else:
                by_repo.setdefault(tree.repo(entry.path), []).append((entry, entry.token))
            stats.downloaded_files += 1
            stats.downloaded_bytes += entry.size
        for repo, wanted in by_repo.items():
            if (
                repo == tree.main_repo
                and len(wanted) >= MIN_FILES
                and not tree.attributes
                and checkout_files(
                    self.git,
                    repo,
                    tree.treeish,
                    writer,
                    [e for e, _ in wanted],
                    deadline,
                    self.shown_url,
                )
            ):
                continue
            with BlobBatch(self.git, repo, [sha for _, sha in wanted]) as blobs:
                write_blobs(writer, blobs, wanted, deadline)

    def _read_sizes(self, tree: Collected, deadline: float) -> None:
        """Blob sizes for a partial clone's listing (``ls-tree -l`` would fetch every blob
        of the commit, one by one, to learn its size)."""
        for kind in (tree.files, tree.links):
            by_repo: dict[Path, list[str]] = {}
            for entry in kind:
                by_repo.setdefault(tree.repo(entry.path), []).append(entry.token)
            sizes: dict[str, int] = {}
            for repo, shas in by_repo.items():
                with tempfile.TemporaryFile() as wanted:
                    wanted.write("".join(f"{sha}\n" for sha in shas).encode())
                    wanted.seek(0)
                    for line in self.git.records(
                        ["cat-file", "--batch-check"], deadline=deadline, what="cat-file",
                        shown=self.shown_url, repo_dir=repo, separator=b"\n", istream=wanted,
                    ):  # fmt: skip
                        sha, _, size = line.decode().split(" ")
                        sizes[sha] = int(size)
            kind[:] = [replace(e, size=sizes[e.token]) if e.size < 0 else e for e in kind]
        tree.unsized = False

    def _read_link_targets(self, tree: Collected) -> list[Entry]:
        """The symlinks with their link text (part of the manifest, so read before diff)."""
        by_repo: dict[Path, list[Entry]] = {}
        for link in tree.links:
            by_repo.setdefault(tree.repo(link.path), []).append(link)
        done = []
        for repo, links in by_repo.items():
            with BlobBatch(self.git, repo, [link.token for link in links]) as blobs:
                for link in links:
                    target = blobs.read(link.token).decode("utf-8", "surrogateescape")
                    done.append(replace(link, target=target))
        return done

    def _collect(
        self,
        repo_dir: Path,
        url: str,
        commit: str,
        prefix: str,
        selector: Selector,
        tree: Collected,
        level: int,
        deadline: float,
    ) -> bool:
        """Every blob of ``commit`` (and of its submodules, as configured) that is selected;
        returns whether anything lies under --subpath (always true without one)."""
        # A partial clone lists without sizes: -l would fetch every blob to learn its size.
        sized = not is_partial_clone(repo_dir)
        tree.unsized = tree.unsized or not sized
        listing = self.git.records(
            ["ls-tree", "-r", "-z", *(["-l"] if sized else []), "--full-tree", commit],
            deadline=deadline, what="ls-tree", shown=self.shown_url, repo_dir=repo_dir,
        )  # fmt: skip
        submodules: list[tuple[str, str]] = []  # (path, commit)
        found = not selector.subpath
        inside_prefix = selector.subpath + "/"
        for record in listing:
            meta, _, raw_path = record.partition(b"\t")
            mode, kind, sha, *sizes = meta.decode().split()
            size = sizes[0] if sizes else "?"
            path = prefix + raw_path.decode("utf-8", "surrogateescape")
            inside = path.startswith(inside_prefix)
            found = found or inside
            if kind == "commit":
                found = found or path == selector.subpath
                submodules.append((path, sha))
                continue
            if kind != "blob":
                continue
            if level == 0 and has_attributes(path) and (not selector.subpath or inside):
                tree.attributes = True
            published = selector.select(path)
            if published is not None:
                nbytes = -1 if size == "?" else int(size) if size != "-" else 0
                tree.add(published, nbytes, sha, GIT_MODES.get(mode, MODE_FILE), repo_dir)
        mode = self.config.submodules
        if not submodules or mode == "off" or (mode == "shallow" and level >= 1):
            return found
        urls = self._submodule_urls(repo_dir, commit, deadline)
        for sub_path, sub_sha in submodules:
            rel = sub_path[len(prefix) :]
            if not _may_select(selector, sub_path):
                continue
            sub_url = urls.get(rel)
            if sub_url is None:
                raise SourceError(f"submodule {sub_path!r} has no url in .gitmodules", sub_path)
            sub_url = self._submodule_url(url, sub_url, sub_path)
            sub_dir = self.cache_dir / "modules" / re.sub(r"[^A-Za-z0-9._-]", "_", sub_path)
            env = {} if self.local else NOT_FROM_USER
            self._cache(sub_dir).ensure_commit(sub_url, sub_sha, None, deadline, env)
            inside = self._collect(
                sub_dir, sub_url, sub_sha, sub_path + "/", selector, tree, level + 1, deadline
            )
            found = found or inside
        return found

    def _submodule_url(self, parent: str, url: str, path: str) -> str:
        """The URL to fetch submodule ``path`` from; refused when it is a local path and
        --repo is not, or a transport GitPython deems unsafe."""
        resolved = resolve_submodule_url(parent, url)
        shown = redact_url(resolved)
        if is_local(resolved) and not self.local:
            raise SourceError(
                f"submodule {path!r}: refused local url {shown} in a remote repository "
                f"({self.shown_url}); only a local --repo may have local submodules",
                path,
            )
        why = unsafe_protocol(resolved)
        if why:
            raise SourceError(f"submodule {path!r}: refused url {shown}: {why}", path)
        if is_ssh(resolved):
            problem = self.auth.ssh_problem()
            if problem:
                raise SourceError(f"submodule {path!r} ({shown}): {problem}", path)
        return resolved

    def _submodule_urls(self, repo_dir: Path, commit: str, deadline: float) -> dict[str, str]:
        try:
            raw = self.git.run(
                ["config", "--blob", f"{commit}:.gitmodules", "--list", "-z"],
                deadline=deadline, what=".gitmodules", shown=self.shown_url, repo_dir=repo_dir,
            )  # fmt: skip
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

    def close(self) -> None:
        self.auth.close()


def pick_ref_names(ref: str) -> list[str]:
    """Full ref names that ``--ref`` may mean, in the order they win."""
    if ref == "HEAD":
        return ["HEAD"]
    if ref.startswith("refs/"):
        return [f"{ref}^{{}}", ref]
    return [f"refs/heads/{ref}", f"refs/tags/{ref}^{{}}", f"refs/tags/{ref}"]


def _may_select(selector: Selector, path: str) -> bool:
    """Whether a submodule at ``path`` can hold any file under --subpath."""
    sub = selector.subpath
    return not sub or path == sub or path.startswith(sub + "/") or sub.startswith(path + "/")
