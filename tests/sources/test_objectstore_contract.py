"""The contract every listing source keeps (SPEC section 3), run against every store env.

Stores plug in through ``tests/sources/store_env_<name>.py`` (see store_contract.py); each test
below runs once per store, and skips what a store cannot do (faults, unsafe keys, credentials).
"""

from __future__ import annotations

import os
import random
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sources.store_contract import (
    StoreEnv,
    cli_args,
    discover,
    inodes,
    link_target,
    published_files,
    run_cli,
    sync,
)

ENVS = discover()
CREDENTIAL_ERROR = re.compile(r"(?i)denied|credential|authori[sz]|authenticat|forbidden")


@pytest.fixture(params=sorted(ENVS))
def store_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreEnv]:
    with ENVS[request.param](tmp_path) as env:
        yield env


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "root"


def needs(env: StoreEnv, capability: str) -> None:
    if not getattr(env, capability):
        pytest.skip(f"{env.source}: no {capability.removeprefix('supports_')}")


def put_all(env: StoreEnv, files: dict[str, bytes]) -> None:
    for path, data in files.items():
        env.put(path, data)


def assert_downloads(env: StoreEnv, expected: int, stats_downloaded: int | None) -> None:
    counted = env.downloads()
    assert (counted if counted is not None else stats_downloaded) == expected


def revision_folders(root: Path) -> dict[str, tuple[int, int]]:
    revisions = root / ".dagsync" / "revisions"
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in revisions.iterdir()}


# -- what is published -------------------------------------------------------------------------


def test_publishes_nested_unicode_empty_and_large_files(store_env: StoreEnv, root: Path) -> None:
    files = {
        "dag.py": b"print('top')\n",
        "a/b/c/deep.py": b"print('deep')\n",
        "ünïcödé/日本 語.py": "print('ü')\n".encode(),
        "with space/and more.py": b"x = 1\n",
        "empty.py": b"",
        "data/big.bin": random.Random(5).randbytes(5 * 1024 * 1024),
    }
    put_all(store_env, files)

    result = sync(store_env, root)

    assert result.result == "published", result.error
    assert published_files(root) == files
    target = link_target(root)
    assert target is not None and not os.path.isabs(target)
    assert os.path.basename(target) == result.revision
    for folder, dirs, names in os.walk(root / "current"):
        for name in dirs:
            assert stat.S_IMODE(os.stat(Path(folder, name)).st_mode) == 0o755
        for name in names:
            assert stat.S_IMODE(os.stat(Path(folder, name)).st_mode) & 0o044 == 0o044


def test_more_objects_than_one_listing_page(store_env: StoreEnv, root: Path) -> None:
    files = {f"many/{i:04d}.py": f"n = {i}\n".encode() for i in range(1234)}
    put_all(store_env, files)
    store_env.clear_requests()

    result = sync(store_env, root)

    assert result.result == "published", result.error
    assert published_files(root) == files
    counts = store_env.requests()
    if counts is not None and store_env.list_page_size:
        assert counts["list"] >= -(-len(files) // store_env.list_page_size)


def test_resync_without_change_only_lists_and_touches_nothing(
    store_env: StoreEnv, root: Path
) -> None:
    put_all(store_env, {"a.py": b"a", "sub/b.py": b"b", "sub/deeper/c.py": b"c"})
    first = sync(store_env, root)
    assert first.result == "published", first.error
    before = (link_target(root), revision_folders(root), inodes(root), os.lstat(root / "current"))
    store_env.clear_requests()

    again = sync(store_env, root)

    assert again.result == "unchanged", again.error
    assert again.revision == first.revision
    counts = store_env.requests()
    if counts is not None:
        assert counts and set(counts) <= store_env.listing_kinds, counts
    after = (link_target(root), revision_folders(root), inodes(root), os.lstat(root / "current"))
    assert after[:3] == before[:3]
    assert (after[3].st_ino, after[3].st_mtime_ns) == (before[3].st_ino, before[3].st_mtime_ns)


def test_one_changed_file_of_200_is_the_only_download(store_env: StoreEnv, root: Path) -> None:
    files = {f"dags/f{i:03d}.py": f"value = {i:03d}\n".encode() for i in range(200)}
    put_all(store_env, files)
    first = sync(store_env, root)
    assert first.result == "published", first.error
    before = inodes(root)
    store_env.clear_requests()

    files["dags/f107.py"] = b"value = 999\n"  # same size: only the change token tells
    store_env.put("dags/f107.py", files["dags/f107.py"])
    second = sync(store_env, root)

    assert second.result == "published", second.error
    assert second.revision != first.revision
    assert published_files(root) == files
    assert second.stats is not None
    assert (second.stats.downloaded_files, second.stats.reused_files) == (1, 199)
    assert_downloads(store_env, 1, second.stats.downloaded_files)
    after = inodes(root)
    changed = {path for path in files if after[path] != before[path]}
    assert changed == {"dags/f107.py"}


def test_deleted_object_disappears(store_env: StoreEnv, root: Path) -> None:
    put_all(store_env, {"keep.py": b"k", "gone/drop.py": b"d"})
    assert sync(store_env, root).result == "published"

    store_env.delete("gone/drop.py")
    result = sync(store_env, root)

    assert result.result == "published", result.error
    assert published_files(root) == {"keep.py": b"k"}


def test_subpath_include_and_exclude(store_env: StoreEnv, root: Path) -> None:
    put_all(
        store_env,
        {
            "dags/a.py": b"a",
            "dags/sub/b.py": b"b",
            "dags/sub/notes.md": b"n",
            "dags/sub/skip_me.py": b"s",
            "other/c.py": b"c",
        },
    )

    result = sync(store_env, root, subpath="dags", include=["*.py"], exclude=["sub/skip*"])

    assert result.result == "published", result.error
    assert published_files(root) == {"a.py": b"a", "sub/b.py": b"b"}


def test_a_subpath_with_nothing_under_it_fails_and_publishes_nothing(
    store_env: StoreEnv, root: Path
) -> None:
    put_all(store_env, {"dags/a.py": b"a", "dags-old/b.py": b"b"})

    result = sync(store_env, root, subpath="dag")

    assert result.result == "failed" and result.published is None
    # The error names the subpath (Azure lists the folder itself: "directory '…/dag' not found").
    assert re.search(r"(--subpath |/)'?dag'", result.error or ""), result.error
    # Files that the filters leave out are the user's choice: that publishes an empty tree.
    result = sync(store_env, root, subpath="dags", exclude=["*.py"])
    assert result.result == "published", result.error
    assert published_files(root) == {}


# -- refusing what must not be published -------------------------------------------------------


# ("a\\..\\evil.py" is no longer here: a backslash is an ordinary byte of a Linux name, so that
# key is one file named as stored; tests/reliability/test_hostile_stores.py publishes such names.)
@pytest.mark.parametrize("key", ["../evil.py", "dags/../../evil.py", "/abs.py"])
def test_key_escaping_the_tree_is_refused(store_env: StoreEnv, root: Path, key: str) -> None:
    needs(store_env, "supports_unsafe_keys")
    store_env.put("good.py", b"g")
    first = sync(store_env, root)
    store_env.put_raw(key, b"evil")
    store_env.clear_requests()

    result = sync(store_env, root)

    assert result.result == "failed"
    assert repr(key) in (result.error or "")  # named exactly, escapes and all
    assert link_target(root) is not None and result.published is not None
    assert result.published.revision == first.revision
    assert store_env.downloads() in (0, None)
    assert not (root / "evil.py").exists() and not (root.parent / "evil.py").exists()


def test_max_files_and_max_bytes_fail_before_downloading(store_env: StoreEnv, root: Path) -> None:
    put_all(store_env, {f"f{i}.py": b"x" * 1000 for i in range(5)})
    store_env.clear_requests()

    too_many = sync(store_env, root, max_files=4)
    too_big = sync(store_env, root, max_bytes="4k")

    assert too_many.result == too_big.result == "failed"
    assert "--max-files 4" in (too_many.error or "")
    assert "--max-bytes" in (too_big.error or "")
    assert store_env.downloads() in (0, None)
    assert link_target(root) is None
    assert sync(store_env, root, max_files=5, max_bytes="5000").result == "published"


# -- faults ------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_then_success_publish(store_env: StoreEnv, root: Path, status: int) -> None:
    needs(store_env, "supports_faults")
    files = {"a.py": b"a" * 100, "b.py": b"b" * 100}
    put_all(store_env, files)
    store_env.fail_next(2, status)

    result = sync(store_env, root)

    assert result.result == "published", result.error
    assert published_files(root) == files


def test_connection_reset_then_success_publishes(store_env: StoreEnv, root: Path) -> None:
    needs(store_env, "supports_faults")
    files = {"a.py": b"a" * 100, "b.py": b"b" * 100}
    put_all(store_env, files)
    store_env.reset_next(2)

    result = sync(store_env, root)

    assert result.result == "published", result.error
    assert published_files(root) == files


def test_one_truncated_body_is_recovered_never_published(store_env: StoreEnv, root: Path) -> None:
    needs(store_env, "supports_faults")
    files = {"big.bin": random.Random(7).randbytes(300_000)}
    put_all(store_env, files)
    store_env.truncate_next_get(1)

    result = sync(store_env, root)

    assert result.result == "published", result.error
    assert published_files(root) == files


def test_bodies_that_stay_truncated_are_never_published(store_env: StoreEnv, root: Path) -> None:
    needs(store_env, "supports_faults")
    put_all(store_env, {"big.bin": random.Random(8).randbytes(300_000)})
    store_env.truncate_next_get(1000)

    result = sync(store_env, root, sync_timeout="2s")

    assert result.result == "failed"
    assert "big.bin" in (result.error or "")
    assert link_target(root) is None
    assert list((root / ".dagsync" / "staging").iterdir()) == []


def test_corrupted_body_is_never_published(store_env: StoreEnv, root: Path) -> None:
    needs(store_env, "supports_faults")
    files = {"dag.py": b"print('the real bytes')\n" * 100}
    put_all(store_env, files)
    store_env.corrupt_next_get(1)

    result = sync(store_env, root)

    assert result.result == "failed"
    assert "dag.py" in (result.error or "")
    assert link_target(root) is None
    assert sync(store_env, root).result == "published"
    assert published_files(root) == files


# -- the CLI, as a user sees it ----------------------------------------------------------------


def test_cli_publishes_without_printing_credentials(store_env: StoreEnv, root: Path) -> None:
    files = {"dag.py": b"print(1)\n", "sub/other.py": b"print(2)\n"}
    put_all(store_env, files)

    proc = run_cli([*cli_args(store_env, root), "--log-level", "debug"], store_env.environ())

    assert proc.returncode == 0, proc.stderr
    assert published_files(root) == files
    assert "published" in proc.stderr
    for secret in store_env.secrets():
        assert secret not in proc.stdout + proc.stderr


def test_cli_wrong_credentials_fail_clearly(store_env: StoreEnv, root: Path) -> None:
    needs(store_env, "supports_credentials")
    put_all(store_env, {"dag.py": b"print(1)\n"})
    store_env.break_credentials()

    proc = run_cli([*cli_args(store_env, root), "--log-level", "debug"], store_env.environ())

    assert proc.returncode == 1, proc.stderr
    assert CREDENTIAL_ERROR.search(proc.stderr), proc.stderr
    assert link_target(root) is None
    output = proc.stdout + proc.stderr
    for secret in [*store_env.secrets(), *store_env.environ().values()]:
        assert secret not in output
