"""What the shared store contract suite (test_objectstore_contract.py) needs from a store.

A store plugs in by adding a module ``tests/sources/store_env_<name>.py`` that defines
``STORE_ENV``, a :class:`StoreEnv` subclass; the suite finds it by that file name and runs every
contract test against it (``pytest tests/sources/test_objectstore_contract.py -k <name>``).
Nothing in this file or in the suite needs to change for a new store.

Paths given to ``put``/``delete`` are paths in the published tree: the env maps them onto its
bucket prefix, share directory or folder, and fills that location with objects that must not be
published (a sibling prefix, a folder marker) where the store has such things.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import subprocess
import sys
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from dagsync import config as config_module
from dagsync.sources.base import Source, load_source_class
from dagsync.store import RevisionStore
from dagsync.syncer import Syncer, SyncResult

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
ENV_MODULE_PREFIX = "store_env_"
CLI_TIMEOUT_SECONDS = 60.0


class StoreEnv(ABC):
    """One running store (a fake server, a folder) and how dagsync is pointed at it."""

    #: the ``--source`` name
    source: ClassVar[str]
    #: request kinds that only list; a sync that finds nothing changed makes only these
    listing_kinds: ClassVar[frozenset[str]] = frozenset({"list"})
    #: the request kind of a content download (one per downloaded file, unless resumed)
    download_kind: ClassVar[str] = "get"
    #: the most objects one listing request returns (None: no paging to check)
    list_page_size: ClassVar[int | None] = None
    #: fail_next / reset_next / truncate_next_get / corrupt_next_get work
    supports_faults: ClassVar[bool] = True
    #: keys like "../x" or "a\\b" can be stored (a real object store can hold them)
    supports_unsafe_keys: ClassVar[bool] = True
    #: the store checks credentials (break_credentials works)
    supports_credentials: ClassVar[bool] = True

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path

    # lifecycle
    def start(self) -> None:  # noqa: B027 - optional
        """Start servers; called once before the test."""

    def stop(self) -> None:  # noqa: B027 - optional
        """Stop what start() started."""

    def __enter__(self) -> StoreEnv:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # content
    @abstractmethod
    def put(self, path: str, data: bytes) -> None:
        """Create or replace the object published as ``path``."""

    @abstractmethod
    def delete(self, path: str) -> None:
        """Remove the object published as ``path``."""

    def put_raw(self, key: str, data: bytes) -> None:
        """Store an object under a raw (possibly unsafe) key relative to the root."""
        self.put(key, data)

    # how dagsync reaches it
    @abstractmethod
    def options(self) -> dict[str, Any]:
        """Option values (attr names, e.g. ``oss_bucket``) naming this store, no secrets."""

    def environ(self) -> dict[str, str]:
        """Environment variables with the credentials."""
        return {}

    def secrets(self) -> list[str]:
        """Credential values that must never appear in any output."""
        return []

    def break_credentials(self) -> None:
        """Make the credentials dagsync will use wrong (only if supports_credentials)."""
        raise NotImplementedError

    # observation
    def requests(self) -> Counter[str] | None:
        """Requests received since the last clear, by kind; None when the store has none."""
        return None

    def clear_requests(self) -> None:  # noqa: B027 - optional
        pass

    def downloads(self) -> int | None:
        counts = self.requests()
        return None if counts is None else counts[self.download_kind]

    # faults (only if supports_faults)
    def fail_next(self, n: int, status: int = 500) -> None:
        """The next ``n`` downloads are answered ``status``."""
        raise NotImplementedError

    def reset_next(self, n: int) -> None:
        """The next ``n`` downloads lose their connection before any answer."""
        raise NotImplementedError

    def truncate_next_get(self, n: int) -> None:
        """The next ``n`` downloads announce the full length but send half the body."""
        raise NotImplementedError

    def corrupt_next_get(self, n: int) -> None:
        """The next ``n`` downloads have a flipped byte; headers keep the true checksums."""
        raise NotImplementedError


class FakeServerStoreEnv(StoreEnv):
    """A store served by one of tests/fakes/: observation and faults go to ``self.fake``, whose
    request log and fault knobs both fakes share."""

    fake: Any

    def requests(self) -> Counter[str]:
        return Counter(r.kind for r in self.fake.requests)

    def clear_requests(self) -> None:
        self.fake.clear_requests()

    def fail_next(self, n: int, status: int = 500) -> None:
        self.fake.fail_next(n, status, kind="get")

    def reset_next(self, n: int) -> None:
        self.fake.reset_next(n, kind="get")

    def truncate_next_get(self, n: int) -> None:
        self.fake.truncate_next_get(n)

    def corrupt_next_get(self, n: int) -> None:
        self.fake.corrupt_next_get(n)


def discover() -> dict[str, type[StoreEnv]]:
    """Every ``tests/sources/store_env_<name>.py`` and its ``STORE_ENV``."""
    found: dict[str, type[StoreEnv]] = {}
    for path in sorted(HERE.glob(f"{ENV_MODULE_PREFIX}*.py")):
        module = importlib.import_module(f"tests.sources.{path.stem}")
        found[path.stem.removeprefix(ENV_MODULE_PREFIX)] = module.STORE_ENV
    return found


# -- running dagsync ---------------------------------------------------------------------------


@contextlib.contextmanager
def syncer_for(
    flags: Mapping[str, Any], environ: Mapping[str, str], command: str = "once"
) -> Iterator[Syncer]:
    """The Syncer ``dagsync once`` would build from these option values (attr names) and
    environment, without hooks and metrics; passes run with ``.run_pass()``."""
    cfg = config_module.load(command, dict(flags), dict(environ))
    store = RevisionStore(cfg.root, cfg.link)
    with store.locked():
        store.prepare()
    source: Source = load_source_class(cfg.source)(cfg, store.cache / cfg.source)
    try:
        yield Syncer(cfg, source, store)
    finally:
        source.close()


def run_pass(flags: Mapping[str, Any], environ: Mapping[str, str]) -> SyncResult:
    with syncer_for(flags, environ) as syncer:
        return syncer.run_pass()


def sync(env: StoreEnv, root: Path, **options: Any) -> SyncResult:
    """One in-process pass against ``env``, as ``dagsync once`` runs it."""
    flags = {"source": env.source, "root": str(root), **env.options(), **options}
    return run_pass(flags, env.environ())


def cli_args(env: StoreEnv, root: Path, **options: Any) -> list[str]:
    """``once`` flags for this store: the env's options and ``options`` as ``--flag value``."""
    args = ["once", "--source", env.source, "--root", str(root)]
    for attr, value in {**env.options(), **options}.items():
        values = value if isinstance(value, list | tuple) else [value]
        for item in values:
            args += [f"--{attr.replace('_', '-')}", str(item)]
    return args


def run_cli(
    args: Sequence[str], extra_env: Mapping[str, str], timeout: float = CLI_TIMEOUT_SECONDS
) -> subprocess.CompletedProcess[str]:
    """``python -m dagsync ARGS`` as a user runs it: no DAGSYNC_* or cloud variables inherited."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DAGSYNC_", "GITSYNC_", "GIT_SYNC_", "OSS_", "AZURE_"))
    }
    return subprocess.run(
        [sys.executable, "-m", "dagsync", *args],
        env={**base, **extra_env},
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# -- looking at the result ---------------------------------------------------------------------


def published_files(root: Path, link: str = "current") -> dict[str, bytes]:
    """Every file (and symlink, as ``b"-> target"``) under the link, by relative path."""
    base = root / link
    out: dict[str, bytes] = {}
    for folder, dirs, files in os.walk(base):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            path = Path(folder, name)
            rel = path.relative_to(base).as_posix()
            link = path.is_symlink()
            out[rel] = b"-> " + os.readlink(path).encode() if link else path.read_bytes()
    return out


def inodes(root: Path, link: str = "current") -> dict[str, int]:
    base = root / link
    return {
        Path(folder, name).relative_to(base).as_posix(): os.lstat(Path(folder, name)).st_ino
        for folder, _dirs, files in os.walk(base)
        for name in files
    }


def link_target(root: Path, link: str = "current") -> str | None:
    try:
        return os.readlink(root / link)
    except OSError:
        return None
