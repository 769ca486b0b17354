"""The rule of SPEC section 3 on trees Airflow cannot walk, as a pure check on manifests: every
symlink that leads to a folder of the tree is found (ancestor loops, second names, chains),
and links to files, dangling links and plain trees pass."""

from __future__ import annotations

import pytest

from dagsync.errors import CheckFailed
from dagsync.manifest import MODE_SYMLINK, Entry, Manifest
from dagsync.walkable import check_walkable, loops


def tree(files: list[str], links: dict[str, str]) -> Manifest:
    entries = [Entry(p, 1, "t") for p in files]
    entries += [Entry(p, len(t), "l", MODE_SYMLINK, t) for p, t in links.items()]
    return Manifest.of(entries)


@pytest.mark.parametrize(
    ("files", "links", "culprit", "folder"),
    [
        (["dags/a.py"], {"dags/up": ".."}, "dags/up", ""),
        (["dags/a.py"], {"dags/self": "."}, "dags/self", "dags"),
        (["dags/a.py"], {"top": "."}, "top", ""),
        (["v2/a.py"], {"latest": "v2"}, "latest", "v2"),
        (["v2/a.py"], {"latest": "./v2/"}, "latest", "v2"),
        (["a/b/c.py"], {"a/b/back": "../../a"}, "a/b/back", "a"),
        # a chain: the first link leads to a second one that names a folder
        (["v2/a.py"], {"x": "y", "y": "v2"}, "x", "v2"),
        # through a symlinked folder, ".." applies to the link's target (as the kernel does)
        (["d/e/f.py", "g.py"], {"d/e/l": "..", "z": "d/e/l/.."}, "d/e/l", "d"),
    ],
)
def test_a_symlink_to_a_folder_of_the_tree_is_rejected_naming_it(
    files: list[str], links: dict[str, str], culprit: str, folder: str
) -> None:
    manifest = tree(files, links)
    found = loops(manifest)
    assert (culprit, links[culprit], folder) in found
    with pytest.raises(CheckFailed) as info:
        check_walkable(manifest, "rev1")
    assert repr(found[0][0]) in str(info.value) and "Airflow" in str(info.value)
    assert info.value.revision == "rev1"


@pytest.mark.parametrize(
    ("files", "links"),
    [
        (["dags/a.py", "lib/util.py"], {}),
        (["lib/util.py", "dags/a.py"], {"dags/util.py": "../lib/util.py"}),  # a file
        (["dags/a.py"], {"dags/gone.py": "missing.py"}),  # dangling
        (["dags/a.py"], {"dags/x": "a.py/deeper"}),  # a file used as a folder
        (["dags/a.py"], {"loop1": "loop2", "loop2": "loop1"}),  # ELOOP: never walked into
        (["dags/a.py"], {"dags/out": "../../elsewhere"}),  # leaves the tree (refused earlier)
    ],
)
def test_trees_without_folder_links_pass(files: list[str], links: dict[str, str]) -> None:
    manifest = tree(files, links)
    assert loops(manifest) == []
    check_walkable(manifest)
