"""A dagsync source plug-in for tests: ``--source echo --source-option files=a.py,b/c.py
--source-option text=hello`` publishes those files, each holding ``# hello``."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from dagsync.errors import ConfigError
from dagsync.manifest import Entry, Manifest, diff, safe_path
from dagsync.sources.base import FetchStats, Plan, Published
from dagsync.tree import TreeWriter

if TYPE_CHECKING:
    from dagsync.config import Config


class EchoSource:
    """Publishes the files named by ``--source-option files=...``."""

    name: ClassVar[str] = "echo"

    def __init__(self, config: Config, cache_dir: Path) -> None:
        options = config.source_option
        if not options.get("files"):
            raise ConfigError("--source-option files=PATH,... is required for --source echo")
        text = f"# {options.get('text', 'echo')}\n".encode()
        self._files = {safe_path(p): text for p in options["files"].split(",")}

    def resolve(self, deadline: float) -> Plan:
        entries = (
            Entry(path, len(data), hashlib.sha256(data).hexdigest())
            for path, data in self._files.items()
        )
        manifest = Manifest.of(entries)
        return Plan(revision=manifest.digest(), manifest=manifest)

    def fetch(
        self, plan: Plan, dest: Path, previous: Published | None, deadline: float
    ) -> FetchStats:
        assert plan.manifest is not None
        stats = FetchStats(manifest=plan.manifest)
        writer = TreeWriter(dest, previous)
        changes = diff(plan.manifest, previous.manifest if previous else None)
        for entry in changes.reuse:
            if writer.reuse(entry):
                stats.reused_files += 1
            else:
                self._write(writer, entry, stats)
        for entry in changes.fetch:
            self._write(writer, entry, stats)
        writer.finish()
        return stats

    def _write(self, writer: TreeWriter, entry: Entry, stats: FetchStats) -> None:
        writer.write_bytes(entry, self._files[entry.path])
        stats.downloaded_files += 1
        stats.downloaded_bytes += entry.size

    def close(self) -> None:
        pass
