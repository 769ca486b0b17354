"""The pure core: entries, the revision digest, diffs, path safety and selection."""

from __future__ import annotations

import posixpath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dagsync.errors import LimitExceeded, UnsafePath
from dagsync.manifest import (
    MODE_EXEC,
    MODE_FILE,
    MODE_SYMLINK,
    Entry,
    Manifest,
    Selector,
    check_limits,
    diff,
    safe_path,
    safe_symlink_target,
)

segment = st.text(
    alphabet=st.characters(blacklist_characters="/\\\x00", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=8,
).filter(lambda s: s not in (".", ".."))
rel_path = st.lists(segment, min_size=1, max_size=4).map("/".join)
entry = st.builds(
    Entry,
    path=rel_path,
    size=st.integers(min_value=0, max_value=10**9),
    token=st.text(alphabet="0123456789abcdef", min_size=1, max_size=40),
    mode=st.sampled_from([MODE_FILE, MODE_EXEC]),
)


def _no_file_is_a_folder(entries: list[Entry]) -> bool:
    """A listing a filesystem can hold: no path is also the folder of another one."""
    paths = {e.path for e in entries}
    return not any(
        "/".join(e.path.split("/")[:i]) in paths
        for e in entries
        for i in range(1, e.path.count("/") + 1)
    )


unique_entries = st.lists(entry, max_size=30, unique_by=lambda e: e.path).filter(
    _no_file_is_a_folder
)


# --- the manifest and its digest ----------------------------------------------------------------


@given(unique_entries, st.randoms(use_true_random=False))
def test_digest_does_not_depend_on_listing_order(entries: list[Entry], rnd: object) -> None:
    shuffled = list(entries)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert Manifest.of(shuffled).digest() == Manifest.of(entries).digest()
    assert Manifest.of(shuffled) == Manifest.of(entries)


@given(unique_entries.filter(bool), st.data())
def test_digest_changes_with_any_field(entries: list[Entry], data: st.DataObject) -> None:
    before = Manifest.of(entries)
    victim = data.draw(st.sampled_from(entries))
    field = data.draw(st.sampled_from(["size", "token", "mode"]))
    changed = {
        "size": Entry(victim.path, victim.size + 1, victim.token, victim.mode),
        "token": Entry(victim.path, victim.size, victim.token + "0", victim.mode),
        "mode": Entry(
            victim.path,
            victim.size,
            victim.token,
            MODE_EXEC if victim.mode == MODE_FILE else MODE_FILE,
        ),
    }[field]
    after = Manifest.of([changed if e is victim else e for e in entries])
    assert after.digest() != before.digest()


@given(unique_entries)
def test_json_round_trip(entries: list[Entry]) -> None:
    manifest = Manifest.of(entries)
    assert Manifest.from_json(manifest.to_json()) == manifest
    assert Manifest.from_json(manifest.to_json()).digest() == manifest.digest()


def test_digest_is_the_same_as_in_every_earlier_release() -> None:
    """Revision ids of stores are published, served by relays and pinned by users: the digest
    of a given listing must never change (this value is what 0.1.0 computed)."""
    manifest = Manifest.of(
        [
            Entry("dags/a.py", 12, '"0x8D"', MODE_FILE),
            Entry('dags/é "q"\n.py', 0, "tok", MODE_EXEC),
            Entry("dags/up", 2, "", MODE_SYMLINK, ".."),
        ]
    )
    assert manifest.digest() == "14c0b957f97de03e12f982f66719dcfd4949ffe6"


@given(st.text(), st.integers(min_value=0), st.text(), st.text())
def test_digest_rows_are_json_dumps_byte_for_byte(
    path: str, size: int, token: str, target: str
) -> None:
    import json

    from dagsync.manifest import _digest_row

    entry = Entry(path, size, token, MODE_FILE, target)
    assert _digest_row(entry) == json.dumps([path, size, token, MODE_FILE, target]) + "\n"


def test_manifest_refuses_duplicate_paths_and_sums_sizes() -> None:
    with pytest.raises(UnsafePath, match="duplicate path"):
        Manifest.of([Entry("a.py", 1, "x"), Entry("a.py", 2, "y")])
    manifest = Manifest.of([Entry("b", 2, "t"), Entry("a", 3, "u")])
    assert [e.path for e in manifest.entries] == ["a", "b"]
    assert manifest.total_bytes == 5 and len(manifest) == 2
    assert Manifest.of([]).digest() == Manifest.of([]).digest()
    assert len(Manifest.of([]).digest()) == 40


# --- diff ---------------------------------------------------------------------------------------


@given(unique_entries, unique_entries)
def test_diff_partitions_the_new_manifest(
    new_entries: list[Entry], old_entries: list[Entry]
) -> None:
    new, old = Manifest.of(new_entries), Manifest.of(old_entries)
    result = diff(new, old)
    reuse = {e.path for e in result.reuse}
    fetch = {e.path for e in result.fetch}
    assert reuse.isdisjoint(fetch)
    assert reuse | fetch == {e.path for e in new.entries}
    assert len(result.reuse) + len(result.fetch) == len(new)
    before = old.by_path()
    for e in result.reuse:
        assert before[e.path].same_content(e)
    for e in result.fetch:
        assert e.path not in before or not before[e.path].same_content(e)
    assert set(result.removed) == set(before) - {e.path for e in new.entries}


@given(unique_entries)
def test_diff_against_nothing_or_itself(entries: list[Entry]) -> None:
    manifest = Manifest.of(entries)
    assert diff(manifest, None).fetch == manifest.entries
    assert diff(manifest, manifest).reuse == manifest.entries
    assert diff(manifest, manifest).removed == ()


def test_diff_never_reuses_symlinks() -> None:
    link = Entry("l", 1, "t", MODE_SYMLINK, "a")
    manifest = Manifest.of([link])
    assert diff(manifest, manifest).fetch == (link,)


# --- path safety --------------------------------------------------------------------------------


@given(st.lists(st.sampled_from(["a", "b.py", ".", "", "..", "c d", "é"]), min_size=1))
def test_safe_path_result_never_escapes(parts: list[str]) -> None:
    raw = "/".join(parts)
    try:
        clean = safe_path(raw)
    except UnsafePath as exc:
        assert exc.obj == raw
        assert ".." in parts or not [p for p in parts if p not in ("", ".")] or raw.startswith("/")
        return
    assert ".." not in parts
    assert not clean.startswith("/") and clean == posixpath.normpath(clean)
    assert ".." not in clean.split("/")


@pytest.mark.parametrize(
    "raw",
    [
        "../x",
        "a/../../x",
        "a/..",
        "..",
        "/etc/passwd",
        "C:/x",
        "C:",
        "a\x00b",
        "dags/" + "x" * 256 + ".py",
        "é" * 128 + "/a.py",  # 256 bytes in UTF-8
        "",
        "./",
        "//",
    ],  # fmt: skip
)
def test_safe_path_refuses(raw: str) -> None:
    with pytest.raises(UnsafePath) as info:
        safe_path(raw)
    assert repr(raw) in str(info.value)  # the error names the key


@pytest.mark.parametrize("raw", ["a:b.py", "dags/12:00 report.py", "ab:/x"])
def test_colons_are_ordinary_posix_names(raw: str) -> None:
    assert safe_path(raw) == raw


@pytest.mark.parametrize(
    "raw",
    [
        "back\\slash.py",
        "a\\b/c.py",
        "..\\x",
        "a\\..\\b.py",
        "x" * 255,
        "line\nbreak.py",
        "\udcff.py",
    ],
)
def test_names_linux_can_hold_are_kept(raw: str) -> None:
    # A backslash is an ordinary byte of a Linux name (not a separator), and so are bytes
    # that are not UTF-8 (carried as surrogate escapes): one such file must not stop a revision.
    assert safe_path(raw) == raw


@pytest.mark.parametrize(
    ("paths", "named"),
    [
        (["a", "a/b.py"], "a"),
        (["dags/x", "dags/x/y/z.py", "dags/w.py"], "dags/x"),
    ],
)
def test_a_path_that_is_both_a_file_and_a_folder_is_refused(paths: list[str], named: str) -> None:
    with pytest.raises(UnsafePath) as info:
        Manifest.of(Entry(p, 1, "t") for p in paths)
    assert info.value.obj == named
    assert "both a file and a folder" in str(info.value) and repr(named) in str(info.value)


@given(rel_path)
def test_safe_path_keeps_plain_relative_paths(raw: str) -> None:
    assert safe_path(raw) == raw
    assert safe_path("./" + raw.replace("/", "//")) == raw


@pytest.mark.parametrize(
    ("path", "target", "ok"),
    [
        ("dags/a.py", "b.py", True),
        ("dags/a.py", "../lib/x.py", True),
        ("a.py", "dags", True),
        ("a.py", "../outside", False),
        ("dags/a.py", "../../outside", False),
        ("a.py", "/etc/passwd", False),
        ("a.py", "", False),
    ],
)
def test_symlink_targets_stay_inside(path: str, target: str, ok: bool) -> None:
    if ok:
        safe_symlink_target(path, target)
    else:
        with pytest.raises(UnsafePath):
            safe_symlink_target(path, target)


# --- selection ----------------------------------------------------------------------------------


def test_selector_subpath_include_exclude() -> None:
    sel = Selector("dags/", include=["*.py"], exclude=["tests/", "!tests/keep.py", "b.py"])
    assert sel.select("README.md") is None
    assert sel.select("dags/a.py") == "a.py"
    assert sel.select("dags/notes.md") is None
    assert sel.select("dags/b.py") is None
    assert sel.select("dags/sub/b.py") is None  # gitignore: a bare name matches at any depth
    assert sel.select("dags/tests/t.py") is None
    assert sel.select("dagsx/a.py") is None
    assert Selector(None).select("any/thing") == "any/thing"
    anchored = Selector(None, exclude=["/top.py"])
    assert anchored.select("top.py") is None and anchored.select("sub/top.py") == "sub/top.py"
    with pytest.raises(UnsafePath):
        Selector("../up")


def test_limits() -> None:
    manifest = Manifest.of([Entry("a", 10, "t"), Entry("b", 10, "u")])
    check_limits(manifest, max_files=2, max_bytes=20)
    with pytest.raises(LimitExceeded, match="--max-files 1"):
        check_limits(manifest, max_files=1, max_bytes=20)
    with pytest.raises(LimitExceeded, match="--max-bytes 19"):
        check_limits(manifest, max_files=2, max_bytes=19)


@pytest.mark.parametrize("count", [0, 1, 1024, 1025, 5000])
def test_manifest_json_written_in_chunks_is_the_same_document(count: int) -> None:
    """The publisher writes a manifest chunk by chunk (a 100,000-entry one never whole in
    memory); what it writes reads back as the same manifest, and equals ``to_json()``."""
    import json

    entries = [
        Entry(f"d{i % 7}/f{i}é.py", i, f"t{i}", 0o755 if i % 3 else 0o644) for i in range(count)
    ]
    manifest = Manifest.of(entries)
    text = "".join(manifest.json_chunks())
    assert json.loads(text) == {
        "version": 1,
        "entries": [[e.path, e.size, e.token, e.mode, e.target] for e in manifest.entries],
    }
    assert text == manifest.to_json()
    assert Manifest.from_json(text) == manifest
