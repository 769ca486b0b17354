"""Third-party sources: a package that registers entry point group ``dagsync.sources`` adds a
source without touching dagsync.

The plug-in under tests/plugins/dagsync_echo_source is installed the way a user installs one,
with pip, but into a temporary ``--target`` folder instead of the shared virtualenv: offline
(``--no-index --no-build-isolation --no-deps``), nothing to uninstall, no effect on other tests
running at the same time. That folder goes on ``sys.path`` for the in-process part and on
``PYTHONPATH`` for the ``dagsync`` subprocesses.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dagsync.errors import ConfigError
from dagsync.sources.base import Source, available, load_source_class
from tests.helpers import assert_published, dagsync, inode_mtime, leftovers, published

PLUGIN_SOURCE = Path(__file__).parent / "plugins" / "dagsync_echo_source"


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the pip-installed plug-in."""
    work = tmp_path_factory.mktemp("echo-plugin")
    source = work / "src"
    shutil.copytree(PLUGIN_SOURCE, source)  # a build never writes into the source tree
    site = work / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
         "--no-build-isolation", "--disable-pip-version-check", "--target", str(site),
         str(source)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert list(site.glob("dagsync_echo_source-*.dist-info/entry_points.txt"))
    return site


@pytest.fixture
def on_sys_path(plugin_site: Path) -> Iterator[None]:
    sys.path.insert(0, str(plugin_site))
    importlib.invalidate_caches()
    try:
        yield
    finally:
        sys.path.remove(str(plugin_site))
        for name in [m for m in sys.modules if m.startswith("dagsync_echo_source")]:
            del sys.modules[name]


def test_entry_point_is_found_in_process(on_sys_path: None) -> None:
    registered = available()
    assert {"git", "echo", "echo-broken"} <= set(registered)
    cls = load_source_class("echo")
    assert cls.__module__ == "dagsync_echo_source"
    assert getattr(cls, "name", None) == "echo"
    with pytest.raises(ConfigError, match="--source echo-broken: plug-in failed to load"):
        load_source_class("echo-broken")


def test_built_in_sources_are_the_registered_ones() -> None:
    """The table that loads dagsync's own sources without scanning entry points names exactly
    what pyproject.toml registers, and each one loads."""
    from dagsync.sources.base import BUILT_IN

    ours = {n: ep.value for n, ep in available().items() if ep.value.startswith("dagsync.")}
    assert ours == BUILT_IN
    for name in ("git", "local", "relay"):  # the ones without an optional SDK
        assert load_source_class(name).__module__.startswith(f"dagsync.sources.{name}")


def test_a_plugin_implements_the_protocol(on_sys_path: None, tmp_path: Path) -> None:
    from dagsync.config import OPTIONS, load

    flags = {o.attr: None for o in OPTIONS} | {"config": None, "source": "echo"}
    flags["source_option"] = ["files=a.py"]
    source = load_source_class("echo")(load("once", flags, {}), tmp_path)
    assert isinstance(source, Source)


def test_without_the_plugin_echo_is_unknown(tmp_path: Path) -> None:
    result = dagsync("once", "--source", "echo", "--root", tmp_path / "root", env=_env(None))
    assert result.returncode == 2
    assert "unknown source 'echo'" in result.stderr and "git" in result.stderr


def _env(site: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSYNC_", "GITSYNC_"))}
    env.pop("PYTHONPATH", None)
    if site is not None:
        env["PYTHONPATH"] = str(site)
    return env


def test_dagsync_once_publishes_a_plugin_source(plugin_site: Path, tmp_path: Path) -> None:
    env = _env(plugin_site)
    root = tmp_path / "root"
    args = ["once", "--source", "echo", "--root", str(root),
            "--source-option", "files=dags/a.py,dags/b.py,README.md"]  # fmt: skip

    result = dagsync(*args, "--source-option", "text=first", env=env)
    assert result.returncode == 0, str(result)
    first, folder = published(root)
    assert len(first) == 40
    expected = {"dags/a.py": "# first\n", "dags/b.py": "# first\n", "README.md": "# first\n"}
    assert_published(root, first, expected)
    before = inode_mtime(folder / "dags/a.py")

    again = dagsync(*args, "--source-option", "text=first", env=env)
    assert again.returncode == 0 and published(root)[0] == first  # same state, same id

    result = dagsync(*args[:-1], "files=dags/a.py,dags/c.py", "--source-option", "text=first",
                     env=env)  # fmt: skip
    assert result.returncode == 0, str(result)
    second, folder = published(root)
    assert second != first
    assert_published(root, second, {"dags/a.py": "# first\n", "dags/c.py": "# first\n"})
    assert inode_mtime(folder / "dags/a.py") == before  # reused through TreeWriter
    assert leftovers(root) == []

    broken = dagsync("once", "--source", "echo-broken", "--root", root, env=env)
    assert broken.returncode == 2 and "plug-in failed to load" in broken.stderr
    missing_option = dagsync("once", "--source", "echo", "--root", root, env=env)
    assert missing_option.returncode == 2 and "--source-option" in missing_option.stderr
    git_still_works = dagsync("once", "--source", "git", "--root", root, env=env)
    assert git_still_works.returncode == 2 and "--repo" in git_still_works.stderr
