"""A root on a shared volume that cannot hold what publishing needs is refused at start-up in
ONE line, before any network access (exit 2), instead of failing every publish; a volume
without hard links only logs an info line and publishes with copies. The volumes are real
FUSE mounts (tests/fakes/fusefs.py) that refuse what SMB without ``mfsymlinks`` or a FUSE
object-store mount refuses."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fakes.oss_server import FakeOss
from tests.sources.store_contract import REPO, published_files, run_cli

KEY_ID = "LTAI5tVolumeKeyId"
SECRET = "VolumeSecret-77aa"
BUCKET = "dags"
ENV = {"OSS_ACCESS_KEY_ID": KEY_ID, "OSS_ACCESS_KEY_SECRET": SECRET}
MOUNT_TIMEOUT_SECONDS = 20.0


def _unmount(mountpoint: Path) -> None:
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    argv = [tool, "-u", "-z", str(mountpoint)] if tool else ["umount", "-l", str(mountpoint)]
    subprocess.run(argv, capture_output=True, check=False)


@pytest.fixture
def fuse_root(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """``mount(mode)``: a FUSE mount of that mode; unmounted (and its process ended) after."""
    mounted: list[tuple[Path, subprocess.Popen[bytes]]] = []

    def mount(mode: str) -> Path:
        if not os.path.exists("/dev/fuse") or not (
            shutil.which("fusermount3") or shutil.which("fusermount")
        ):
            if os.environ.get("CI"):
                pytest.fail("CI must provide FUSE (/dev/fuse and fuse3) for the probe tests")
            pytest.skip("no FUSE here (/dev/fuse or fusermount3 missing)")
        source, point = tmp_path / f"{mode}-backing", tmp_path / f"{mode}-mnt"
        source.mkdir()
        point.mkdir()
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fakes.fusefs", mode, str(source), str(point)],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        mounted.append((point, proc))
        deadline = time.monotonic() + MOUNT_TIMEOUT_SECONDS
        while not os.path.ismount(point):
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.poll() is not None and proc.stderr else ""
                if os.environ.get("CI"):
                    pytest.fail(f"cannot mount FUSE: {err}")
                pytest.skip(f"cannot mount FUSE here: {err[-300:]}")
            time.sleep(0.05)
        return point

    yield mount
    for point, proc in mounted:
        _unmount(point)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def once(oss: FakeOss, root: Path) -> subprocess.CompletedProcess[str]:
    args = ["once", "--source", "oss", "--oss-endpoint", oss.endpoint, "--oss-bucket", BUCKET]
    return run_cli([*args, "--root", str(root)], ENV)


@pytest.mark.parametrize(
    ("mode", "says"),
    [
        ("no-symlinks", "the filesystem cannot hold symlinks (Operation not permitted; SMB"),
        ("no-rename-over", "the filesystem cannot rename a symlink over another"),
    ],
)
def test_a_root_that_cannot_hold_the_link_is_refused_in_one_line_at_start_up(
    fuse_root: Callable[[str], Path], mode: str, says: str
) -> None:
    root = fuse_root(mode) / "root"
    with FakeOss(access_key_id=KEY_ID, access_key_secret=SECRET) as oss:
        oss.put(BUCKET, "dags/a.py", b"a = 1\n")

        run = once(oss, root)

        assert run.returncode == 2, run.stderr
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1, run.stderr
        assert lines[0].startswith(f"dagsync: error: --root {root}: {says}"), lines[0]
        assert oss.requests == []  # before any network access
    assert not (root / "current").exists()
    assert [p.name for p in (root / ".dagsync").iterdir() if p.name.startswith(".probe")] == []
    assert [p.name for p in root.iterdir() if p.name.startswith(".current.tmp")] == []


def test_a_root_without_hard_links_publishes_with_copies_after_one_info_line(
    fuse_root: Callable[[str], Path],
) -> None:
    root = fuse_root("no-hardlinks") / "root"
    with FakeOss(access_key_id=KEY_ID, access_key_secret=SECRET) as oss:
        oss.put(BUCKET, "dags/a.py", b"a = 1\n")
        first = once(oss, root)
        oss.put(BUCKET, "dags/b.py", b"b = 2\n")
        second = once(oss, root)  # a.py is unchanged: copied, since it cannot be linked

    for run in (first, second):
        assert run.returncode == 0, run.stderr
        assert "no hard links under --root, unchanged files are copied" in run.stderr
        assert " error " not in run.stderr
    assert published_files(root) == {"dags/a.py": b"a = 1\n", "dags/b.py": b"b = 2\n"}
