"""What the s3, gcs and azureblob sources keep beyond the shared contract, each against its real
emulator behind the counting proxy: a missing bucket, rotated credential files, an object
replaced mid-sync, and ``dagsync run`` following changes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.emulators import patched_environ
from tests.helpers import wait_for
from tests.sources.cloud_env import CloudStoreEnv
from tests.sources.store_contract import (
    REPO,
    cli_args,
    discover,
    link_target,
    published_files,
    run_cli,
    sync,
    syncer_for,
)

CLOUDS = {name: env for name, env in discover().items() if issubclass(env, CloudStoreEnv)}


@pytest.fixture(params=sorted(CLOUDS))
def cloud(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CloudStoreEnv]:
    with CLOUDS[request.param](tmp_path) as env:
        assert isinstance(env, CloudStoreEnv)
        yield env


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "root"


def test_missing_bucket_is_one_line_naming_it_and_exit_1(cloud: CloudStoreEnv, root: Path) -> None:
    cloud.put("dag.py", b"x")
    options = cloud.missing_bucket_options()
    missing = next(v for k, v in options.items() if v != cloud.options().get(k))

    proc = run_cli(cli_args(cloud, root, **options), cloud.environ())

    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert repr(missing) in last and "does not exist" in last, proc.stderr
    assert link_target(root) is None


def test_rotated_credential_file_is_used_by_the_next_pass(
    cloud: CloudStoreEnv, tmp_path: Path, root: Path
) -> None:
    cloud.put("dag.py", b"v1")
    secret_file = tmp_path / "credential"
    options, environ = cloud.credential_file(secret_file)
    flags = {"source": cloud.source, "root": str(root), **cloud.options(), **options}
    with patched_environ(environ):
        config_env = {k: v for k, v in {**cloud.environ(), **environ}.items() if v is not None}
        with syncer_for(flags, config_env) as syncer:
            first = syncer.run_pass()
            cloud.rotate_credentials()
            cloud.put("dag.py", b"v2")
            stale = syncer.run_pass()
            cloud.credential_file(secret_file)
            fresh = syncer.run_pass()

    assert first.result == "published", first.error
    assert stale.result == "failed" and "denied" in (stale.error or "").lower(), stale.error
    assert fresh.result == "published", fresh.error
    assert published_files(root) == {"dag.py": b"v2"}


def test_object_replaced_after_listing_fails_that_pass_only(
    cloud: CloudStoreEnv, root: Path
) -> None:
    cloud.put("dag.py", b"print('old')\n")
    cloud.replace_on_first_download("dag.py", b"print('new one')\n")

    failed = sync(cloud, root)
    again = sync(cloud, root)

    assert failed.result == "failed", failed
    assert "dag.py" in (failed.error or "") and "changed" in (failed.error or ""), failed.error
    assert again.result == "published", again.error
    assert published_files(root) == {"dag.py": b"print('new one')\n"}


def test_run_follows_changes(cloud: CloudStoreEnv, root: Path, tmp_path: Path) -> None:
    cloud.put("dag.py", b"v1")
    args = cli_args(cloud, root)
    args[0] = "run"
    args += ["--period", "0.5s", "--http-bind", "127.0.0.1:0"]
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSYNC_", "AZURE_"))}
    log = tmp_path / "run.log"
    with open(log, "wb") as out:  # a file, not a pipe nobody reads while it runs
        proc = subprocess.Popen(
            [sys.executable, "-m", "dagsync", *args],
            env={**base, **cloud.environ()},
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: published_files(root) == {"dag.py": b"v1"}, 60, "the first revision")
        cloud.put("dag.py", b"v2 changed")
        cloud.put("new/other.py", b"o")
        expected = {"dag.py": b"v2 changed", "new/other.py": b"o"}
        wait_for(lambda: published_files(root) == expected, 60, "the change")
        cloud.delete("new/other.py")
        wait_for(lambda: published_files(root) == {"dag.py": b"v2 changed"}, 60, "the delete")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0, log.read_text()[-2000:]
