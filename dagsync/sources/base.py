"""The Source contract, the values passed through a pass, and the plug-in registry.

Sources are found through the entry-point group ``dagsync.sources``. dagsync's own sources are
registered there too (so they are listed with the plug-ins), but loaded from ``BUILT_IN``
directly: scanning every installed distribution's entry points is the dearer part of start-up.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from dagsync.errors import ConfigError
from dagsync.manifest import Manifest

if TYPE_CHECKING:
    from dagsync.config import Config

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "dagsync.sources"
# The sources dagsync ships (also its entry points, for listing): loaded without scanning every
# installed distribution's entry points, which costs tens of ms in a venv with Airflow in it.
BUILT_IN = {
    "git": "dagsync.sources.git:GitSource",
    "oss": "dagsync.sources.oss:OssSource",
    "azure": "dagsync.sources.azure:AzureSource",
    "local": "dagsync.sources.local:LocalSource",
    "relay": "dagsync.sources.relay:RelaySource",
    "s3": "dagsync.sources.s3:S3Source",
    "gcs": "dagsync.sources.gcs:GcsSource",
    "azureblob": "dagsync.sources.azureblob:AzureBlobSource",
}
EXTRA_FOR = {"oss": "oss", "azure": "azure", "s3": "s3", "gcs": "gcs", "azureblob": "azureblob"}


@dataclass(frozen=True)
class Plan:
    """What ``resolve`` found: the revision id to compare, and what it is made of if known.

    Stores know their ``manifest`` after listing; git learns it only after fetching the commit.
    ``detail`` carries source-private data from ``resolve`` to ``fetch`` (e.g. the ref name).
    """

    revision: str
    manifest: Manifest | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Published:
    """A complete revision on disk: its id, folder and manifest (to reuse unchanged files)."""

    revision: str
    path: Path
    manifest: Manifest


@dataclass
class FetchStats:
    """What one ``fetch`` did; ``manifest`` is the tree written into ``dest``."""

    manifest: Manifest
    downloaded_files: int = 0
    downloaded_bytes: int = 0
    reused_files: int = 0


@runtime_checkable
class Source(Protocol):
    """A place DAG files come from.

    A source is constructed as ``SourceClass(config, cache_dir)``. The constructor validates
    its options and raises :class:`~dagsync.errors.ConfigError` naming the flag; it must not
    touch the network. ``cache_dir`` is a private folder under ``ROOT/.dagsync/cache/`` that
    survives between passes (git keeps its bare repository there).
    """

    name: ClassVar[str]

    def resolve(self, deadline: float) -> Plan:
        """Ask the remote, as cheaply as possible, which revision is current.

        ``deadline`` is a ``time.monotonic()`` value; raise SourceError on failure and
        SyncTimeout past the deadline. When ``Plan.revision`` equals the published revision
        nothing else is called, so this must not download contents it could avoid.
        """
        ...

    def fetch(
        self, plan: Plan, dest: Path, previous: Published | None, deadline: float
    ) -> FetchStats:
        """Write the complete tree of ``plan`` into the empty folder ``dest``.

        Files whose content equals the one in ``previous`` are hard-linked from
        ``previous.path`` (see :class:`dagsync.tree.TreeWriter`), so they keep their inode and
        mtime. Apply the --subpath/--include/--exclude selection, refuse unsafe paths and
        --max-files/--max-bytes overflows. Raise SourceError on any failure: a partial tree
        is never published.
        """
        ...

    def close(self) -> None:
        """Release connections, child processes and watchers."""
        ...


@runtime_checkable
class WatchingSource(Source, Protocol):
    """A source that can notice changes itself (file events) and ask for a sync."""

    def watch(self, notify: Callable[[], None]) -> None:
        """Start watching; call ``notify`` (from any thread) when the source changed."""
        ...


SourceFactory = Callable[["Config", Path], Source]


def available() -> dict[str, Any]:
    """The registered sources by name (entry points, not yet loaded)."""
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _load_built_in(target: str) -> SourceFactory:
    module, _, attr = target.partition(":")
    cls: SourceFactory = getattr(importlib.import_module(module), attr)
    return cls


def load_source_class(name: str) -> SourceFactory:
    """The class registered as ``name``; a missing optional SDK becomes an install hint."""
    registered = {name: BUILT_IN[name]} if name in BUILT_IN else available()
    for other, ep in registered.items():
        if other != name:
            continue
        try:
            cls: SourceFactory = _load_built_in(ep) if isinstance(ep, str) else ep.load()
        except ModuleNotFoundError as exc:
            extra = EXTRA_FOR.get(name, name)
            raise ConfigError(
                f"--source {name}: missing dependency {exc.name!r}; install dagsync[{extra}]",
                "source",
            ) from None
        except Exception as exc:  # a broken plug-in is fatal only when it is the one asked for
            raise ConfigError(f"--source {name}: plug-in failed to load: {exc}", "source") from None
        return cls
    names = ", ".join(sorted(registered)) or "none"
    raise ConfigError(f"--source: unknown source {name!r} (available: {names})", "source")
