"""docs/reference.md: its generated blocks match the code, and it names everything a user can set
or see (every flag of every command, env name, YAML key, metric, git-sync variable, exit code,
endpoint). Shipped files point at it, never at a file outside the repository."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from dagsync import gitsync_vars, reference
from dagsync.cli import ExitCode
from dagsync.http import _GET_PATHS
from dagsync.options import ENV_SET_BY_DAGSYNC, OPTIONS

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "reference.md"
SHIPPED = ("README.md", "Dockerfile", "docs", "charts", "examples", "dagsync")


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


def test_generated_blocks_are_up_to_date(doc: str) -> None:
    assert reference.render(doc) == doc, f"docs/reference.md is stale: run {reference.REGENERATE}"


def test_every_block_renderer_is_used(doc: str) -> None:
    used = {m.group("name") for m in reference.BLOCK.finditer(doc)}
    assert used == set(reference.RENDERERS)


def test_every_flag_of_every_command_is_documented(doc: str) -> None:
    flags = reference.command_flags()
    assert {"once", "run", "status", "version"} <= set(flags)
    for command, names in flags.items():
        assert f"`dagsync {command}" in doc
        for flag in names:
            if flag != "--help":
                assert f"`{flag}" in doc, f"{command} {flag} is missing from docs/reference.md"


def test_every_option_has_a_row_with_env_key_and_default(doc: str) -> None:
    rows = {line.split(" | ")[0]: line for line in doc.splitlines() if line.startswith("| `--")}
    for opt in OPTIONS:
        row = next((r for k, r in rows.items() if k.startswith(f"| `--{opt.name} ")), None)
        if row is None:
            row = rows.get(f"| `--{opt.name}`")
        assert row is not None, f"--{opt.name} has no row in docs/reference.md"
        assert f"`{opt.env}`" in row and f"`{opt.attr}`" in row
        assert reference.default_of(opt) in row


def test_every_option_group_has_a_section(doc: str) -> None:
    titles = reference.group_titles()
    for group in reference.groups():
        assert f"### {titles.get(group, group)}\n" in doc


def test_a_new_option_group_appears_when_regenerated(doc: str) -> None:
    extra = reference.Option("demo-bucket", "str", None, "a bucket", "demo")
    original = reference.OPTIONS
    try:
        reference.OPTIONS = (*original, extra)  # type: ignore[misc]
        rendered = reference.render(doc)
    finally:
        reference.OPTIONS = original  # type: ignore[misc]
    assert "### demo\n" in rendered
    assert "| `--demo-bucket TEXT` | `DAGSYNC_DEMO_BUCKET` | `demo_bucket` | none |" in rendered
    assert rendered != doc


def test_every_metric_is_documented(doc: str) -> None:
    rows = reference.metric_rows()
    assert len(rows) >= 12
    for name, kind, _labels, _help in rows:
        assert f"| {name} | {kind} |" in doc
    assert "`result` = failed \\| published \\| rejected \\| unchanged" in doc


def test_every_gitsync_variable_is_documented(doc: str) -> None:
    for name in sorted(gitsync_vars.KNOWN | gitsync_vars.IGNORED):
        assert f"`{name}`" in doc, name


def test_exit_codes_hook_env_and_endpoints_are_documented(doc: str) -> None:
    for code in ExitCode:
        assert f"| {int(code)} | `{code.name}` |" in doc
    for name in ENV_SET_BY_DAGSYNC:
        assert f"| `{name}` |" in doc
    for path in _GET_PATHS:
        assert f"`GET {path}`" in doc
    assert "`POST /sync`" in doc


def test_check_mode_reports_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "reference.md"
    stale.write_text(
        "x\n<!-- BEGIN generated: exit-codes -->\nold\n<!-- END generated: exit-codes -->\n"
    )
    cmd = [sys.executable, "-m", "dagsync.reference", "--check", str(stale)]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 1 and "stale" in result.stderr
    result = subprocess.run(cmd[:3] + [str(stale)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0
    assert "| 2 | `USAGE` |" in stale.read_text()
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0 and "up to date" in result.stdout


def _shipped_files() -> list[Path]:
    files: list[Path] = []
    for name in SHIPPED:
        path = ROOT / name
        files += [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    return [f for f in files if "__pycache__" not in f.parts]


def test_shipped_files_never_point_outside_the_repository() -> None:
    pattern = re.compile(r"\.\./shared|shared/SPEC|shared/DESIGN")
    offenders = [
        str(f.relative_to(ROOT))
        for f in _shipped_files()
        if pattern.search(f.read_text(encoding="utf-8", errors="replace"))
    ]
    assert offenders == []


def test_readme_and_chart_link_the_reference() -> None:
    assert "(docs/reference.md)" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/reference.md" in (ROOT / "charts/dagsync/values.yaml").read_text("utf-8")
