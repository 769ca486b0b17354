"""The on-disk layout: staging, the link swap, state.json, garbage collection, recovery."""

from __future__ import annotations

import fcntl
import json
import os
import threading
from pathlib import Path

import pytest

from dagsync.errors import PublishError
from dagsync.fsops import remove_tree, write_atomic
from dagsync.manifest import Entry, Manifest
from dagsync.store import RevisionStore
from tests.helpers import leftovers, published


def build(store: RevisionStore, revision: str, files: dict[str, str], now: float) -> Path:
    """Stage ``files`` and publish them as ``revision`` at time ``now``."""
    staging = store.new_staging()
    for path, text in files.items():
        (staging / path).parent.mkdir(parents=True, exist_ok=True)
        (staging / path).write_text(text)
    manifest = Manifest.of(Entry(p, len(t), t) for p, t in files.items())
    return store.publish(staging, revision, manifest, "test", now).path


@pytest.fixture
def store(tmp_path: Path) -> RevisionStore:
    s = RevisionStore(tmp_path / "root", "current")
    s.prepare()
    return s


def test_prepare_creates_the_layout_and_an_airflowignore(tmp_path: Path) -> None:
    root = tmp_path / "root"
    RevisionStore(root, "current").prepare()
    for sub in ("revisions", "staging", "cache"):
        assert (root / ".dagsync" / sub).is_dir()
    assert (root / ".airflowignore").read_text() == ".dagsync\n"
    RevisionStore(root, "current").prepare()  # idempotent: the line is not added twice
    assert (root / ".airflowignore").read_text() == ".dagsync\n"
    (root / ".airflowignore").write_text("mine")
    RevisionStore(root, "current").prepare()
    assert (root / ".airflowignore").read_text() == "mine\n.dagsync\n"


def test_publish_swaps_a_relative_link_and_records_state(store: RevisionStore) -> None:
    assert store.published() is None
    build(store, "rev1", {"a.py": "1"}, now=100.0)
    assert published(store.root) == ("rev1", store.revisions / "rev1")
    assert os.readlink(store.link) == ".dagsync/revisions/rev1"
    state = json.loads(store.state_file.read_text())
    assert state["revision"] == "rev1" and state["files"] == 1 and state["published_at"] == 100.0
    pub = store.published()
    assert pub is not None and pub.manifest.by_path()["a.py"].size == 1

    build(store, "rev2", {"a.py": "22"}, now=200.0)
    assert published(store.root)[0] == "rev2"
    history = json.loads(store.state_file.read_text())["history"]
    assert [h["revision"] for h in history] == ["rev2", "rev1"]
    assert history[1]["superseded_at"] == 200.0
    assert leftovers(store.root) == []


def test_a_link_given_as_a_path_stays_relative(tmp_path: Path) -> None:
    store = RevisionStore(tmp_path / "root", "airflow/dags")
    store.prepare()
    build(store, "r", {"x": "x"}, now=1.0)
    assert os.readlink(tmp_path / "root" / "airflow" / "dags") == "../.dagsync/revisions/r"
    absolute = RevisionStore(tmp_path / "root", str(tmp_path / "elsewhere" / "link"))
    absolute.prepare()
    build(absolute, "s", {"y": "y"}, now=2.0)
    target = os.readlink(tmp_path / "elsewhere" / "link")
    assert target == "../root/.dagsync/revisions/s"


def test_republishing_an_unpublished_revision_and_a_real_directory_at_the_link(
    store: RevisionStore,
) -> None:
    build(store, "rev1", {"a": "1"}, now=1.0)
    store.link.unlink()
    assert store.published() is None
    reusable = store.reusable()
    assert reusable is not None and reusable.revision == "rev1"  # from state.json
    build(store, "rev1", {"a": "1"}, now=2.0)  # the same id again: folder replaced
    assert published(store.root)[0] == "rev1"

    store.link.unlink()
    store.link.mkdir()
    with pytest.raises(PublishError, match="real directory"):
        build(store, "rev2", {"a": "2"}, now=3.0)
    assert [p.name for p in store.root.iterdir() if ".tmp-dagsync-" in p.name] == []


def test_published_ignores_links_that_do_not_point_at_a_complete_revision(
    store: RevisionStore, tmp_path: Path
) -> None:
    os.symlink(".dagsync/revisions/missing", store.link)
    assert store.published() is None
    store.link.unlink()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(str(tmp_path / "elsewhere"), store.link)
    assert store.published() is None
    store.link.unlink()
    (store.revisions / "nomanifest").mkdir()
    os.symlink(".dagsync/revisions/nomanifest", store.link)
    assert store.published() is None


def test_garbage_collection_keeps_newest_and_recent(store: RevisionStore) -> None:
    for i in range(5):
        build(store, f"r{i}", {"f": str(i)}, now=100.0 + i)
    (store.revisions / "stray").mkdir()  # a folder no revision claims
    (store.staging / "left-over").mkdir()
    # Within the grace period everything superseded stays (readers may still hold it).
    assert store.collect_garbage(keep=2, grace=60.0, now=110.0) == ["stray"]
    assert sorted(store.collect_garbage(keep=2, grace=60.0, now=1000.0)) == ["r0", "r1", "r2"]
    assert sorted(p.name for p in store.revisions.iterdir()) == [
        "r3", "r3.manifest.json", "r4", "r4.manifest.json",
    ]  # fmt: skip
    assert list(store.staging.iterdir()) == []
    # The published revision is never removed, even if history says otherwise.
    store.state_file.write_text("{}")
    store.collect_garbage(keep=1, grace=0.0, now=2000.0)
    assert published(store.root)[0] == "r4"


def test_prepare_clears_what_a_crash_left(store: RevisionStore) -> None:
    build(store, "r", {"a": "a"}, now=1.0)
    (store.staging / "half" / "deep").mkdir(parents=True)
    (store.staging / "half" / "deep" / "f").write_text("x")
    (store.staging / "half" / "deep").chmod(0o500)  # even a folder we cannot write into
    (store.staging / "half.parts").mkdir()
    tmp_link = store.root / ".current.tmp-dagsync-abcdef"
    os.symlink(".dagsync/revisions/r", tmp_link)
    (store.state_dir / ".state.json.0123456789ab.tmp").write_text("{")
    (store.revisions / ".r2.manifest.json.0123456789ab.tmp").write_text("{")
    store.prepare()
    assert list(store.staging.iterdir()) == []
    assert not tmp_link.is_symlink()
    assert leftovers(store.root) == []
    assert published(store.root)[0] == "r"


def test_prepare_removes_a_tree_whose_manifest_clean_up_already_removed(
    store: RevisionStore,
) -> None:
    # A kill in the middle of clean-up: the old revision's manifest is gone, its folder not.
    # The next pass may find the source unchanged and not clean up, so start-up must.
    build(store, "old", {"a": "1"}, now=1.0)
    build(store, "new", {"a": "2"}, now=2.0)
    (store.revisions / "old.manifest.json").unlink()
    assert leftovers(store.root) == ["revisions/old (no manifest)"]
    store.prepare()
    assert leftovers(store.root) == []
    assert not (store.revisions / "old").exists()
    assert published(store.root)[0] == "new"


def test_one_process_per_root(store: RevisionStore) -> None:
    entered = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with store.locked():
            entered.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert entered.wait(10)
        with open(store.state_dir / "lock", "a+") as fh, pytest.raises(BlockingIOError):
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        release.set()
        holder.join()
    with store.locked():
        pass


def test_write_atomic_and_remove_tree(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    write_atomic(target, "one")
    write_atomic(target, "two", mode=0o600)
    assert target.read_text() == "two" and (target.stat().st_mode & 0o777) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
    with pytest.raises(OSError):
        write_atomic(tmp_path / "missing" / "x", "y")
    remove_tree(target)
    remove_tree(tmp_path / "does-not-exist")
    assert list(tmp_path.iterdir()) == []


REBUILDS = 400


def test_rebuilding_the_published_id_never_leaves_the_link_dangling(store: RevisionStore) -> None:
    """Another --subpath for the same commit rebuilds the same id: the folder the link names
    turns into the new tree in one step, so a reader always finds a complete tree."""
    build(store, "rev1", {"a.py": "old"}, now=100.0)
    link_text = os.readlink(store.link)
    stop = threading.Event()
    seen: list[str] = []
    problems: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                names = sorted(os.listdir(store.link))
            except OSError as exc:
                problems.append(repr(exc))
                continue
            if names not in (["a.py"], ["b.py"]):
                problems.append(f"mixed or empty tree {names}")
            seen.append(names[0] if names else "")

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for n in range(REBUILDS):
            files = {"b.py": f"new{n}"} if n % 2 == 0 else {"a.py": f"old{n}"}
            staging = store.new_staging()
            for path, text in files.items():
                (staging / path).write_text(text)
            staged_inode = staging.stat().st_ino
            manifest = Manifest.of(Entry(p, len(t), t) for p, t in files.items())
            store.publish(staging, "rev1", manifest, "test", 200.0 + n)
            assert (store.revisions / "rev1").stat().st_ino == staged_inode
            assert os.readlink(store.link) == link_text
            assert not staging.exists()  # the old tree is retired, not deleted under readers
    finally:
        stop.set()
        thread.join()
    assert problems == []
    assert {"a.py", "b.py"} <= set(seen)
    assert sorted(os.listdir(store.link)) == ["a.py"]
    assert len(list(store.retired.iterdir())) == REBUILDS
    store.collect_garbage(keep=2, grace=300, now=499.0)  # retired at 200..599: kept
    assert len(list(store.retired.iterdir())) == REBUILDS
    store.collect_garbage(keep=2, grace=300, now=700.0)  # those retired 300 s ago go
    assert sorted(int(p.name.split("-")[0]) for p in store.retired.iterdir()) == list(
        range(401, 200 + REBUILDS)
    )
    assert leftovers(store.root) == []
