"""The serving side in-process: request routing and path checks, the tar stream, the sha256
sidecar, and leases the clean-up honours (tests/test_relay.py runs it all end to end)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import BinaryIO

import pytest

from dagsync.manifest import MODE_EXEC, MODE_FILE, MODE_SYMLINK, Entry, Manifest
from dagsync.revision_sums import RevisionSums
from dagsync.serve import BadRequest, Route, resolve_entry, route, wants_gzip
from dagsync.store import RevisionStore
from dagsync.tarstream import Sink, TarFormatError, TarReader, write_tar

REV = "a" * 40


class Collect:
    """A Channel that keeps what is sent."""

    def __init__(self) -> None:
        self.out = io.BytesIO()

    def write(self, data: bytes) -> None:
        self.out.write(data)

    def sendfile(self, fh: BinaryIO, count: int) -> int:
        data = fh.read(count)
        self.out.write(data)
        return len(data)


def publish(store: RevisionStore, revision: str, files: dict[str, bytes], now: float) -> None:
    staging = store.new_staging()
    entries = []
    for path, data in files.items():
        target = staging / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        mode = MODE_EXEC if path.endswith(".sh") else MODE_FILE
        os.chmod(target, mode)
        entries.append(Entry(path, len(data), hashlib.sha1(data).hexdigest(), mode))
    os.symlink("a.py", staging / "link.py")
    entries.append(Entry("link.py", 4, "", MODE_SYMLINK, "a.py"))
    store.publish(staging, revision, Manifest.of(entries), "local", now)


@pytest.fixture
def store(tmp_path: Path) -> RevisionStore:
    s = RevisionStore(tmp_path / "root", "current")
    s.prepare()
    return s


def test_routes_and_path_checks():
    assert route("/v1/revisions") == Route("revisions")
    assert route(f"/v1/revisions/{REV}/manifest") == Route("manifest", REV)
    assert route(f"/v1/revisions/{REV}/archive.tar?x=1") == Route("archive", REV)
    assert route(f"/v1/revisions/{REV}/files/a%20b/c.py") == Route("files", REV, "a b/c.py")
    for target, status in [
        (f"/v1/revisions/{REV}/files/..%2Fx", 400),
        (f"/v1/revisions/{REV}/files/a/../../x", 400),
        (f"/v1/revisions/{REV}/files/%2Fetc", 400),
        (f"/v1/revisions/{REV}/files/a%00", 400),
        (f"/v1/revisions/{REV}/files/", 400),
        ("/v1/revisions/../manifest", 400),
        ("/v1/revisions/.hidden/manifest", 400),
        (f"/v1/revisions/{REV}/nothing", 404),
        ("/v1/other", 404),
    ]:
        with pytest.raises(BadRequest) as err:
            route(target)
        assert err.value.status == status, target


def test_symlinks_are_followed_only_inside_the_revision():
    entries = [
        Entry("a.py", 1, "t"),
        Entry("in.py", 4, "", MODE_SYMLINK, "a.py"),
        Entry("sub/up.py", 7, "", MODE_SYMLINK, "../in.py"),
        Entry("out.py", 9, "", MODE_SYMLINK, "../../etc/passwd"),
        Entry("abs.py", 11, "", MODE_SYMLINK, "/etc/passwd"),
        Entry("loop.py", 7, "", MODE_SYMLINK, "loop.py"),
    ]
    by_path = {e.path: e for e in entries}
    assert resolve_entry(by_path, "sub/up.py") == entries[0]
    for path in ("out.py", "abs.py", "loop.py", "missing.py"):
        assert resolve_entry(by_path, path) is None


def test_accept_encoding():
    assert wants_gzip("gzip, deflate")
    assert wants_gzip("br;q=1.0, gzip;q=0.5")
    assert not wants_gzip("gzip;q=0")
    assert not wants_gzip(None)
    assert not wants_gzip("identity")


@pytest.mark.parametrize("compress", [False, True])
def test_tar_stream_normalises_modes_and_keeps_symlinks(store: RevisionStore, compress: bool):
    big = os.urandom(600_000)  # past the buffer: goes out with sendfile when not compressed
    publish(store, REV, {"a.py": b"x = 1\n", "bin/run.sh": b"#!/bin/sh\n", "big.bin": big}, 1.0)
    served = RevisionSums(store).get(REV)
    assert served is not None
    os.chmod(served.folder / "a.py", 0o600)  # odd modes on disk are not what is served
    channel = Collect()
    sink = Sink(channel, gzip=compress)
    fd = os.open(served.folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        write_tar(sink, fd, served.manifest.entries)
    finally:
        os.close(fd)
    body = channel.out.getvalue()
    assert sink.sent == len(body)
    raw = gzip.decompress(body) if compress else body
    assert len(raw) % tarfile.RECORDSIZE == 0
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert members["a.py"].mode == 0o644 and members["bin/run.sh"].mode == 0o755
        assert members["link.py"].issym() and members["link.py"].linkname == "a.py"
        assert tar.extractfile("big.bin").read() == big  # type: ignore[union-attr]


def test_sums_are_written_once_beside_the_revision(store: RevisionStore):
    publish(store, REV, {"a.py": b"x = 1\n"}, 1.0)
    served = RevisionSums(store).get(REV)
    assert served is not None
    assert served.sha256 == {"a.py": hashlib.sha256(b"x = 1\n").hexdigest()}
    sidecar = store.sums_path(REV)
    doc = json.loads(sidecar.read_text())
    assert doc["sha256"] == served.sha256
    # A fresh process reads the sidecar, not the files: a changed file does not change it.
    (served.folder / "a.py").chmod(0o644)
    (served.folder / "a.py").write_bytes(b"x = 2\n")
    again = RevisionSums(store).get(REV)
    assert again is not None and again.sha256 == served.sha256
    manifest = json.loads(again.manifest_doc)
    assert manifest["id"] == REV and manifest["source"] == "local"
    assert {e["path"]: e["mode"] for e in manifest["entries"]} == {
        "a.py": "file",
        "link.py": "symlink",
    }


def test_clean_up_skips_a_leased_revision_until_released(store: RevisionStore):
    publish(store, "r1", {"a.py": b"1"}, 1.0)
    RevisionSums(store).get("r1")
    with store.lease("r1"):
        publish(store, "r2", {"a.py": b"2"}, 2.0)
        assert store.collect_garbage(keep=1, grace=0, now=3.0) == []
        publish(store, "r3", {"a.py": b"3"}, 4.0)
        assert store.collect_garbage(keep=1, grace=0, now=5.0) == ["r2"]
        assert (store.revisions / "r1").is_dir() and store.sums_path("r1").exists()
    assert store.collect_garbage(keep=1, grace=0, now=6.0) == ["r1"]
    assert sorted(p.name for p in store.revisions.iterdir()) == ["r3", "r3.manifest.json"]
    assert list(store.leases.iterdir()) == []


def archive_of(members: list[tuple[str, bytes | str, int]]) -> bytes:
    """A tar written by the standard library (pax): (name, bytes or symlink target, mode)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name, content, mode in members:
            info = tarfile.TarInfo(name)
            info.mode = mode
            if isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def test_tar_reader_reads_what_tarfile_writes():
    long_name = "deep/" * 40 + "ünïcode name.py"  # past ustar's 100/155 fields: a pax header
    body = archive_of(
        [
            ("a.py", b"x = 1\n", 0o644),
            (long_name, b"y" * 70_000, 0o755),
            ("link.py", "../" * 60 + "a.py", 0o777),  # a long link target, also pax
            ("empty.py", b"", 0o644),
        ]
    )
    reader = TarReader(io.BytesIO(body))
    got = []
    for member in reader.members():
        data = b""
        while chunk := reader.read(4096):
            data += chunk
        got.append((member.name, member.kind, member.mode, member.linkname, data))
    assert got == [
        ("a.py", "file", 0o644, "", b"x = 1\n"),
        (long_name, "file", 0o755, "", b"y" * 70_000),
        ("link.py", "symlink", 0o777, "../" * 60 + "a.py", b""),
        ("empty.py", "file", 0o644, "", b""),
    ]
    # Members whose content is not read are skipped correctly.
    assert [m.name for m in TarReader(io.BytesIO(body)).members()][-1] == "empty.py"


def test_tar_reader_refuses_damaged_streams():
    body = archive_of([("a.py", b"x" * 5000, 0o644), ("b.py", b"y", 0o644)])
    with pytest.raises(EOFError):
        list(TarReader(io.BytesIO(body[:3000])).members())
    damaged = bytearray(body)
    damaged[10] ^= 0x20  # a name byte: the header checksum no longer matches
    with pytest.raises(TarFormatError):
        list(TarReader(io.BytesIO(bytes(damaged))).members())


def test_sums_of_hard_linked_unchanged_files_are_not_read_again(store: RevisionStore):
    publish(store, "r1", {"same.py": b"old = 1\n", "changed.py": b"v1\n"}, 1.0)
    sums = RevisionSums(store)
    first = sums.get("r1")
    assert first is not None
    staging = store.new_staging()
    os.link(first.folder / "same.py", staging / "same.py")  # as TreeWriter.reuse does
    (staging / "changed.py").write_bytes(b"v2\n")
    os.symlink("same.py", staging / "link.py")
    entries = [
        Entry("same.py", 8, "t1"),
        Entry("changed.py", 3, "t2"),
        Entry("link.py", 7, "", MODE_SYMLINK, "same.py"),
    ]
    store.publish(staging, "r2", Manifest.of(entries), "local", 2.0)
    # Same inode, size and mtime, other bytes: only a file that is read again would notice.
    same = first.folder / "same.py"
    st = same.stat()
    same.chmod(0o644)
    same.write_bytes(b"new = 2\n")
    os.utime(same, ns=(st.st_atime_ns, st.st_mtime_ns))
    second = sums.get("r2")
    assert second is not None
    assert second.sha256["same.py"] == first.sha256["same.py"]
    assert second.sha256["changed.py"] == hashlib.sha256(b"v2\n").hexdigest()
