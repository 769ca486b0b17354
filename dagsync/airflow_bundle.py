"""The Airflow 3 DAG bundle class itself; this module imports Airflow (``dagsync.airflow``
loads it on first use, so ``import dagsync`` never does).

- Unpinned (``version=None``, the DAG processor): ``path`` is ``ROOT/LINK`` itself, so file
  locations stay the same across revisions; ``refresh()`` writes nothing (the dagsync sidecar
  publishes), and the current version is re-read from the link.
- Pinned (``version=ID``, a task): ``initialize()`` materialises revision ID into Airflow's
  own version folder (``dagsync.pinned``), where Airflow's version locks and stale-version
  clean-up manage it and dagsync's clean-up of ROOT cannot remove it under a running task.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from airflow.dag_processing.bundles.base import BaseDagBundle, get_bundle_version_path

from dagsync.pinned import link_path, materialize, published_revision

try:  # Airflow 3.2+: versions are returned as BundleVersion; a bare str is deprecated there.
    from airflow.dag_processing.bundles.base import BundleVersion
except ImportError:  # Airflow 3.0 / 3.1
    BundleVersion = None

log = logging.getLogger(__name__)

# The refresh is one readlink, so it can run far more often than a git fetch.
DEFAULT_REFRESH_INTERVAL_SECONDS = 10


class DagsyncDagBundle(BaseDagBundle):  # type: ignore[misc]
    """A versioned DAG bundle whose versions are dagsync's published revision ids."""

    supports_versioning = True

    def __init__(
        self,
        *,
        root: str,
        link: str = "current",
        relay_url: str | None = None,
        relay_token_file: str | None = None,
        refresh_interval: int = DEFAULT_REFRESH_INTERVAL_SECONDS,
        **kwargs: Any,
    ) -> None:
        super().__init__(refresh_interval=refresh_interval, **kwargs)
        if not root or not isinstance(root, str):
            raise ValueError(f"dag bundle {self.name}: kwargs.root is required (the dagsync root)")
        if not link or not isinstance(link, str):
            raise ValueError(f"dag bundle {self.name}: kwargs.link must be a non-empty name")
        self.root = Path(root)
        self.link = link
        self.relay_url = relay_url or None
        self.relay_token_file = relay_token_file or None

    @property
    def path(self) -> Path:
        if self.version is None:
            return link_path(self.root, self.link)
        return Path(get_bundle_version_path(bundle_name=self.name, version=self.version))

    def get_current_version(self) -> Any:
        """The published revision id (a ``BundleVersion`` where Airflow has that class)."""
        revision = self.version if self.version is not None else self._published()
        if revision is None or BundleVersion is None:
            return revision
        return BundleVersion(version=revision)

    def _published(self) -> str | None:
        return published_revision(self.root, self.link)

    def refresh(self) -> None:
        """Nothing to fetch: the dagsync sidecar publishes, the link already names it."""
        if self.version is None:
            log.debug("bundle=%s published revision=%s", self.name, self._published())

    def initialize(self) -> None:
        if self.version is not None:
            with self.lock():
                how = materialize(
                    self.version,
                    self.path,
                    root=self.root,
                    relay_url=self.relay_url,
                    relay_token_file=self.relay_token_file,
                )
            log.info("bundle=%s revision=%s path=%s (%s)", self.name, self.version, self.path, how)
        super().initialize()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name}, root={self.root}, link={self.link})"
