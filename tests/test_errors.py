"""Errors at the edges, as a user meets them: one line on stderr, exit 2 for usage, naming the
option and, when the value was not a flag, the variable or the file (and line) that set it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from dagsync.checks import check_command
from dagsync.cli import main
from dagsync.config import load
from dagsync.errors import CheckFailed, ConfigError
from dagsync.options import OPTIONS
from dagsync.timing import deadline_in


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def run_main(argv: list[str], environ: dict[str, str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one stderr line of a usage error (exit 2)."""
    code = main(argv, environ)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dagsync: error: "), err
    return lines[0]


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("repo: x\n  bad: [\n", ":2:6: not valid YAML: mapping values are not allowed here"),
        ("repo: [unclosed\n", ":2:1: not valid YAML: expected ',' or ']'"),
        ('repo: "open\n', ":2:1: not valid YAML: found unexpected end of stream"),
        ("\trepo: x\n", ":1:1: not valid YAML: found character '\\t'"),
        ("repo: x\nrepo: *nope\n", ":2:7: not valid YAML: found undefined alias 'nope'"),
    ],
)
def test_invalid_yaml_is_one_line_with_file_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, where: str
) -> None:
    config = tmp_path / "dagsync.yaml"
    config.write_text(text)
    line = run_main(["once", "--config", str(config)], {}, capsys)
    assert f"--config: {config}{where}" in line


def test_unknown_key_names_file_line_and_a_close_match(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "dagsync.yaml"
    config.write_text("repo: x\n\nperoid: 5m\n")
    line = run_main(["run", "--config", str(config)], {}, capsys)
    assert line.endswith(f"--config: {config}:3: unknown key 'peroid' (did you mean 'period'?)")


def test_unreadable_or_odd_config_files_name_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.yaml"
    line = run_main(["once"], {"DAGSYNC_CONFIG": str(missing)}, capsys)
    assert f"--config: cannot read {missing}" in line and "(set by DAGSYNC_CONFIG)" in line
    assert "set by" not in run_main(["once", "--config", str(missing)], {}, capsys)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"repo: \xff\xfe\n")
    assert f"--config: {binary} is not UTF-8 text" in run_main(
        ["once", "--config", str(binary)], {}, capsys
    )
    listing = tmp_path / "list.yaml"
    listing.write_text("- repo\n")
    assert f"{listing} must hold a mapping" in run_main(
        ["once", "--config", str(listing)], {}, capsys
    )


def test_a_bad_value_names_where_it_was_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "dagsync.yaml"
    config.write_text("repo: x\n# a comment\nmax_bytes: huge\n")
    from_file = run_main(["once", "--config", str(config)], {}, capsys)
    assert "--max-bytes: invalid size 'huge'" in from_file
    assert from_file.endswith(f"(set by {config}:3)")
    from_env = run_main(["once", "--repo", "x"], {"DAGSYNC_MAX_BYTES": "huge"}, capsys)
    assert from_env.endswith("(set by DAGSYNC_MAX_BYTES)")
    from_gitsync = run_main([], {"GITSYNC_REPO": "x", "GITSYNC_SYNC_TIMEOUT": "0s"}, capsys)
    assert from_gitsync.endswith("--sync-timeout: must be greater than zero (set by "
                                 "GITSYNC_SYNC_TIMEOUT)")  # fmt: skip
    # A flag beats the file; the message names the flag and nothing else.
    from_flag = run_main(["once", "--config", str(config), "--max-bytes", "vast"], {}, capsys)
    assert from_flag.endswith("--max-bytes: invalid size 'vast' (use e.g. 512k, 10M, 2G)")


def test_a_source_error_at_start_names_the_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere"
    env = {"DAGSYNC_LOCAL_PATH": str(missing), "DAGSYNC_ROOT": str(tmp_path / "root")}
    line = run_main(["once"], env, capsys)
    assert f"--local-path: {missing} is not a directory (set by DAGSYNC_LOCAL_PATH)" in line


def test_origins_are_kept_on_the_config(tmp_path: Path) -> None:
    config = tmp_path / "dagsync.yaml"
    config.write_text("root: /tmp/r\nlocal_path: /tmp\n")
    cfg = load("once", {"config": str(config), "link": "dags"}, {"DAGSYNC_ROOT": "/tmp/x"})
    assert cfg.origins == {"root": "DAGSYNC_ROOT", "local_path": f"{config}:2"}


def test_command_line_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert "a command is required: once, run, status or version" in run_main([], {}, capsys)
    line = run_main(["once", "--repo", "x", "--bogus"], {}, capsys)
    assert "unrecognized arguments: --bogus; see dagsync once --help" in line
    assert "invalid choice: 'frob'" in run_main(["frob"], {}, capsys)
    assert "--period: expected one argument" in run_main(["run", "--period"], {}, capsys)


def test_every_option_value_error_is_one_line_naming_the_option(
    capsys: pytest.CaptureFixture[str],
) -> None:
    bad = {"int": "many", "duration": "soon", "size": "big", "bool": "perhaps", "choice": "x"}
    checked = 0
    for opt in OPTIONS:
        if opt.kind not in bad or "once" not in opt.commands:
            continue
        line = run_main(
            ["once", "--local-path", "/tmp", f"--{opt.name}", bad[opt.kind]], {}, capsys
        )
        assert f"--{opt.name}" in line, line
        checked += 1
    assert checked >= 10


def test_a_check_command_without_output_says_so(tmp_path: Path) -> None:
    with pytest.raises(CheckFailed, match=r"^--check command exited 3 with no output$"):
        check_command("exit 3", tmp_path, deadline_in(30), {"PATH": "/usr/bin:/bin"})
    with pytest.raises(CheckFailed, match=r"^--check command exited 1: broken \| twice$"):
        check_command(
            "echo broken; echo twice; exit 1", tmp_path, deadline_in(30), {"PATH": "/usr/bin:/bin"}
        )


def test_config_errors_carry_the_option() -> None:
    with pytest.raises(ConfigError) as info:
        load("once", {"local_path": "/tmp", "period": "soon"}, {})
    assert info.value.option == "period"


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("period: [1]", "period: expected a single value, got a list"),
        ("root: {a: 1}", "root: expected a single value, got a mapping"),
        ("link: [a]", "link: expected a single value, got a list"),
        ("exclude: [1, {a: b}]", "exclude: expected a list of text, got an item that is a mapping"),
    ],
)
def test_a_value_of_the_wrong_yaml_type_names_file_line_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, problem: str
) -> None:
    config = tmp_path / "dagsync.yaml"
    config.write_text(f"local_path: /tmp\n{line}\n")
    out = run_main(["once", "--config", str(config)], {}, capsys)
    assert out == f"dagsync: error: --config: {config}:2: {problem}"


def test_yaml_values_that_need_no_quotes_are_taken_as_text(tmp_path: Path) -> None:
    config = tmp_path / "dagsync.yaml"
    config.write_text("local_path: /tmp\ninclude: 5\nexclude: a,b\nperiod:\nref: 1234\n")
    cfg = load("run", {"config": str(config)}, {})
    assert (cfg.include, cfg.exclude, cfg.period, cfg.ref) == (("5",), ("a", "b"), 60.0, "1234")


def test_a_root_that_cannot_be_made_names_the_option_and_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "root"
    blocker.write_text("not a folder")
    assert main(["once", "--local-path", str(tmp_path), "--root", str(blocker)], {}) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"dagsync: error: --root: cannot create {blocker}: a file is in the way"
    assert blocker.read_text() == "not a folder"
