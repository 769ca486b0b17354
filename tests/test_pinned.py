"""A pinned revision materialised into a folder someone else owns (``dagsync.pinned``), the
Airflow-free half of the DAG bundle. Revisions are published by real ``dagsync once``
processes; the bundle class itself is tested against a real Airflow in
tests/test_airflow_bundle.py."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dagsync.options import OPTIONS_BY_ATTR
from dagsync.pinned import (
    BUILD_MARK,
    RevisionUnavailable,
    local_revision,
    materialize,
    published_revision,
)
from tests.gitservers import free_port
from tests.helpers import client_env, dagsync, snapshot, start_dagsync, terminate, wait_for


@pytest.fixture
def env(hermetic_git_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return client_env(hermetic_git_env, tmp_path / "home")


def publish(src: Path, root: Path, env: dict[str, str], *extra: str) -> str:
    result = dagsync("once", "--local-path", src, "--root", root, *extra, env=env)
    assert result.returncode == 0, result
    revision = published_revision(root, "current")
    assert revision is not None
    return revision


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "lib").mkdir(parents=True)
    (src / "alpha.py").write_text("ALPHA = 1\n")
    (src / "lib" / "helpers.py").write_text("def greet():\n    return 'hi'\n")
    (src / "run.sh").write_text("#!/bin/sh\necho run\n")
    os.chmod(src / "run.sh", 0o755)
    os.symlink("lib/helpers.py", src / "helpers_link.py")
    return src


def test_published_revision_follows_the_link(
    source: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    root = tmp_path / "root"
    assert published_revision(root, "current") is None  # before the first publish
    first = publish(source, root, env)
    assert (root / ".dagsync" / "revisions" / first).is_dir()
    (source / "beta.py").write_text("BETA = 2\n")
    second = publish(source, root, env)
    assert second != first
    assert published_revision(root, "current") == second
    assert published_revision(root, str(root / "current")) == second  # an absolute link


def test_local_revision_is_hard_linked_and_exact(
    source: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    root = tmp_path / "root"
    revision = publish(source, root, env)
    dest = tmp_path / "versions" / revision
    assert materialize(revision, dest, root=root) == "linked"
    tree = root / ".dagsync" / "revisions" / revision
    assert snapshot(dest) == snapshot(tree)
    assert snapshot(dest)["run.sh"][2] == "x"
    assert snapshot(dest)["helpers_link.py"] == ("link", "lib/helpers.py")
    for rel in ("alpha.py", "lib/helpers.py", "run.sh"):
        assert (dest / rel).stat().st_ino == (tree / rel).stat().st_ino, rel
    assert [p.name for p in dest.parent.iterdir()] == [revision]  # nothing half-built beside

    # A second initialisation reuses the folder; dagsync's clean-up then removes only its
    # own names, the pinned tree keeps every byte.
    assert materialize(revision, dest, root=root) == "reused"
    (source / "alpha.py").write_text("ALPHA = 2\n")
    publish(source, root, env, "--keep-revisions", "1", "--revision-grace", "0")
    assert not tree.exists()
    assert (dest / "alpha.py").read_text() == "ALPHA = 1\n"


def other_filesystem(path: Path) -> Path | None:
    for candidate in (Path("/dev/shm"), Path("/run")):
        writable = candidate.is_dir() and os.access(candidate, os.W_OK)
        if writable and candidate.stat().st_dev != path.stat().st_dev:
            return candidate
    return None


def test_other_filesystem_is_copied(
    source: Path, tmp_path: Path, env: dict[str, str], request: pytest.FixtureRequest
) -> None:
    root = tmp_path / "root"
    revision = publish(source, root, env)
    elsewhere = other_filesystem(tmp_path)
    if elsewhere is None:
        pytest.skip("no writable folder on another filesystem")
    versions = elsewhere / f"dagsync-pinned-{os.getpid()}-{request.node.name}"
    try:
        dest = versions / revision
        assert materialize(revision, dest, root=root) == "copied"
        tree = root / ".dagsync" / "revisions" / revision
        assert snapshot(dest) == snapshot(tree)
        assert (dest / "alpha.py").stat().st_ino != (tree / "alpha.py").stat().st_ino
    finally:
        subprocess.run(["rm", "-rf", str(versions)], check=False)


def test_unknown_revision_names_it_and_leaves_nothing(
    source: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    root = tmp_path / "root"
    publish(source, root, env)
    versions = tmp_path / "versions"
    with pytest.raises(RevisionUnavailable, match="0123abcd") as caught:
        materialize("0123abcd", versions / "0123abcd", root=root)
    assert caught.value.revision == "0123abcd"
    assert "no relay_url" in str(caught.value)
    assert list(versions.iterdir()) == []


@pytest.mark.parametrize("bad", ["", "../escape", "a/b", ".hidden", "nul\0byte", " padded"])
def test_a_version_that_is_no_revision_id_is_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(RevisionUnavailable, match="is not a dagsync revision id"):
        materialize(bad, tmp_path / "versions" / "x", root=tmp_path / "root")
    assert not (tmp_path / "versions").exists()


def test_a_revision_vanishing_mid_copy_is_never_half_placed(
    source: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    root = tmp_path / "root"
    revision = publish(source, root, env)
    # The manifest still names a file the clean-up already unlinked: the copy must fail as a
    # whole (no relay here), not place a tree that lacks it.
    (root / ".dagsync" / "revisions" / revision / "run.sh").unlink()
    versions = tmp_path / "versions"
    versions.mkdir()
    (versions / f"{BUILD_MARK}{revision}-deadbeef").mkdir()  # what a kill -9 leaves
    with pytest.raises(RevisionUnavailable, match=revision) as caught:
        materialize(revision, versions / revision, root=root)
    assert "run.sh" in str(caught.value) and "could not be taken" in str(caught.value)
    assert list(versions.iterdir()) == []


def test_a_failing_relay_is_an_error_naming_revision_and_relay(
    source: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    root = tmp_path / "root"
    publish(source, root, env)
    versions = tmp_path / "versions"
    url = f"http://127.0.0.1:{free_port()}"  # nobody listens
    with pytest.raises(RevisionUnavailable) as caught:
        materialize("feedface", versions / "feedface", root=root, relay_url=url)
    message = str(caught.value)
    assert "feedface" in message and url in message
    assert "\n" not in message
    assert list(versions.iterdir()) == []


def test_local_revision_needs_its_manifest(
    source: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    root = tmp_path / "root"
    revision = publish(source, root, env)
    assert local_revision(root, revision) is not None
    (root / ".dagsync" / "revisions" / f"{revision}.manifest.json").unlink()
    assert local_revision(root, revision) is None


def test_importing_dagsync_never_imports_airflow() -> None:
    code = (
        "import sys, dagsync, dagsync.cli, dagsync.app, dagsync.airflow, dagsync.pinned\n"
        "assert not any(m.split('.')[0] == 'airflow' for m in sys.modules), 'airflow loaded'\n"
        "assert 'dagsync.airflow_bundle' not in sys.modules\n"
        "print(sorted(dir(dagsync.airflow)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "DagsyncDagBundle" in proc.stdout


def test_without_airflow_the_class_says_how_to_install_it() -> None:
    if importlib.util.find_spec("airflow") is not None:
        pytest.skip("Airflow is installed in this interpreter")
    import dagsync.airflow

    with pytest.raises(ImportError, match=r"pip install 'dagsync\[airflow\]'"):
        _ = dagsync.airflow.DagsyncDagBundle
    with pytest.raises(AttributeError):
        _ = dagsync.airflow.NoSuchThing  # type: ignore[attr-defined]


@pytest.mark.skipif("relay_url" not in OPTIONS_BY_ATTR, reason="no relay source here")
def test_relay_supplies_what_the_local_root_lost(
    source: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    upstream, worker = tmp_path / "upstream", tmp_path / "worker"
    token = tmp_path / "token"
    token.write_text("pinned-relay-token-77\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    relay = start_dagsync(
        "run", "--local-path", source, "--root", upstream, "--serve-revisions",
        "--serve-token-file", token, "--http-bind", f"127.0.0.1:{port}", "--period", "1s",
        env=env, log=tmp_path / "relay.log",
    )  # fmt: skip
    try:
        wait_for(lambda: published_revision(upstream, "current"), 60, "the relay's publish")
        result = dagsync(
            "once", "--source", "relay", "--relay-url", url, "--relay-token-file", token,
            "--root", worker, env=env,
        )  # fmt: skip
        assert result.returncode == 0, result
        revision = published_revision(worker, "current")
        assert revision == published_revision(upstream, "current")
        assert revision is not None
        # The worker's copy lost a file under the manifest (dagsync's clean-up at work): the
        # pinned tree comes whole from the relay instead, renamed into place.
        (worker / ".dagsync" / "revisions" / revision / "alpha.py").unlink()
        versions = tmp_path / "versions"
        how = materialize(
            revision, versions / revision, root=worker, relay_url=url, relay_token_file=str(token)
        )
        assert how == "relay"
        assert snapshot(versions / revision) == snapshot(
            upstream / ".dagsync" / "revisions" / revision
        )
        assert [p.name for p in versions.iterdir()] == [revision]

        # A wrong token: the relay's refusal, named, and no token in the message.
        wrong = tmp_path / "wrong-token"
        wrong.write_text("not-the-token-55\n")
        with pytest.raises(RevisionUnavailable) as caught:
            materialize("other", versions / "other", root=worker, relay_url=url,
                        relay_token_file=str(wrong))  # fmt: skip
        message = str(caught.value)
        assert "other" in message and url in message
        assert "not-the-token-55" not in message and "pinned-relay-token-77" not in message
        assert [p.name for p in versions.iterdir()] == [revision]
    finally:
        terminate(relay)
