"""Trees Airflow can walk: a pure check on a manifest, for every source.

Airflow lists DAG files with ``os.walk(followlinks=True)`` and aborts its whole scan ("Detected
recursive loop when walking DAG directory") when it reaches one folder twice. Every folder of a
tree is reached through its own path, so a symlink that leads to a folder of the tree (an
ancestor such as ``up -> ..``, or a second name such as ``latest -> v2``) always makes Airflow
reach that folder twice. Symlink targets are in the manifest, so this is decided before any
byte is downloaded (stores) or before the tree is checked (git).
"""

from __future__ import annotations

import posixpath

from dagsync.errors import CheckFailed
from dagsync.manifest import Manifest

MAX_LINK_HOPS = 40  # as the kernel: a longer chain is ELOOP, which a walk does not follow


class _Tree:
    """The folders, files and symlinks of a manifest, to resolve paths without a disk."""

    def __init__(self, manifest: Manifest) -> None:
        self.links = {e.path: e.target for e in manifest.entries if e.is_symlink}
        self.files = {e.path for e in manifest.entries if not e.is_symlink}
        self.folders = {""}
        for entry in manifest.entries:
            folder = posixpath.dirname(entry.path)
            while folder not in self.folders:
                self.folders.add(folder)
                folder = posixpath.dirname(folder)

    def resolve(self, start: str, text: str, hops: list[int]) -> str | None:
        """The real path inside the tree that ``text`` names from folder ``start``, following
        symlinks as the kernel does; None when it dangles, loops or leaves the tree."""
        if text.startswith("/"):
            return None
        parts = [p for p in text.split("/") if p not in ("", ".")]
        current = start
        for i, part in enumerate(parts):
            if current not in self.folders:
                return None  # a file used as a folder
            if part == "..":
                if not current:
                    return None  # above the tree
                current = posixpath.dirname(current)
                continue
            path = f"{current}/{part}" if current else part
            if path in self.links:
                hops[0] += 1
                if hops[0] > MAX_LINK_HOPS:
                    return None
                found = self.resolve(current, self.links[path], hops)
                if found is None:
                    return None
                path = found
            elif path not in self.folders and (path not in self.files or i < len(parts) - 1):
                return None
            current = path
        return current


def loops(manifest: Manifest) -> list[tuple[str, str, str]]:
    """(symlink, its target, the folder it leads to) for every symlink that makes Airflow's
    walk reach a folder of the tree twice."""
    if not any(e.is_symlink for e in manifest.entries):
        return []  # only a symlink can lead a walk back (most trees: skip building the tree)
    tree = _Tree(manifest)
    found = []
    for path, target in sorted(tree.links.items()):
        real = tree.resolve(posixpath.dirname(path), target, [0])
        if real is not None and real in tree.folders:
            found.append((path, target, real))
    return found


def check_walkable(manifest: Manifest, revision: str = "") -> None:
    """Reject (like a failed --check) a tree Airflow's DAG scan would abort on."""
    bad = loops(manifest)
    if not bad:
        return
    path, target, folder = bad[0]
    shown = repr(folder) if folder else "the top of the tree"
    inside = folder == "" or path.startswith(folder + "/")
    what = "a folder that contains it, a loop" if inside else "a folder that is already walked"
    more = f" (and {len(bad) - 1} more symlinks like it)" if len(bad) > 1 else ""
    raise CheckFailed(
        f"symlink {path!r} -> {target!r} leads to {shown}, {what}: Airflow's DAG scan "
        f"(os.walk with followlinks) would reach that folder twice and abort{more}",
        revision,
    )
