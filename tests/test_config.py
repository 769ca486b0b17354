"""Configuration: durations, sizes, precedence flag > env > YAML file > default, validation."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dagsync.config import OPTIONS, load
from dagsync.errors import ConfigError
from dagsync.units import parse_bool, parse_duration, parse_size

REPO = "file:///nowhere/repo.git"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0), (90, 90.0), (1.5, 1.5), ("90s", 90.0), ("5m", 300.0), ("1h", 3600.0),
        ("500ms", 0.5), ("1m30s", 90.0), ("1h2m3s", 3723.0), ("2.5s", 2.5), (" 10s ", 10.0),
        ("0", 0.0),
    ],
)  # fmt: skip
def test_durations(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "5x", "ms", "-1", "1.2.3s", "five", "5 m", True])
def test_bad_durations_name_the_option(text: str) -> None:
    with pytest.raises(ConfigError, match="--period") as info:
        parse_duration(text, "period")
    assert "\n" not in str(info.value)
    assert info.value.option == "period"


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(["", "s", "m", "h", "ms"]))
def test_duration_units(n: int, unit: str) -> None:
    factor = {"": 1, "s": 1, "m": 60, "h": 3600, "ms": 0.001}[unit]
    assert parse_duration(f"{n}{unit}") == pytest.approx(n * factor)


@pytest.mark.parametrize(
    ("text", "size"),
    [("512k", 512 * 1024), ("10M", 10 * 1024**2), ("2G", 2 * 1024**3), ("100", 100), (7, 7),
     ("1g", 1024**3), ("1.5M", int(1.5 * 1024**2))],
)  # fmt: skip
def test_sizes(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "10X", "M", "-5k", "1 2"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(ConfigError, match="--max-bytes"):
        parse_size(text, "max-bytes")


def test_bools() -> None:
    assert parse_bool("true") and parse_bool("1") and parse_bool("YES") and parse_bool(True)
    assert not parse_bool("false") and not parse_bool("0") and not parse_bool("")
    with pytest.raises(ConfigError, match="--ssh-known-hosts"):
        parse_bool("maybe", "ssh-known-hosts")


# --- layering -----------------------------------------------------------------------------------


def flags(**given: object) -> dict[str, object]:
    """Parsed flags as the CLI hands them over: every option present, None when not given."""
    out: dict[str, object] = {o.attr: None for o in OPTIONS}
    out["config"] = None
    out.update(given)
    return out


def test_defaults(tmp_path: Path) -> None:
    cfg = load("run", flags(repo=REPO), {})
    assert cfg.source == "git"
    assert cfg.period == 60.0 and cfg.sync_timeout == 300.0 and cfg.revision_grace == 300.0
    assert cfg.max_bytes == 2 * 1024**3 and cfg.max_files == 100_000
    assert cfg.ref == "HEAD" and cfg.depth == 1 and cfg.submodules == "recursive"
    assert cfg.link == "current" and cfg.root == Path("./dagsync-root").absolute()
    assert cfg.keep_revisions == 2 and cfg.max_failures == -1 and cfg.concurrency == 8
    assert cfg.http_bind == "0.0.0.0:9797"
    assert load("once", flags(repo=REPO), {}).http_bind is None


def test_precedence_flag_over_env_over_file_over_default(tmp_path: Path) -> None:
    config_file = tmp_path / "dagsync.yaml"
    config_file.write_text(
        "repo: file:///from/file\nref: file-ref\nperiod: 7m\ndepth: 3\n"
        "sync-timeout: 9s\ninclude: ['*.py', '*.sql']\n"
    )
    env = {"DAGSYNC_REF": "env-ref", "DAGSYNC_PERIOD": "2m", "DAGSYNC_DEPTH": "0"}
    cfg = load("run", flags(config=str(config_file), ref="flag-ref", depth="5"), env)
    assert cfg.ref == "flag-ref"  # flag beats env and file
    assert cfg.depth == 5
    assert cfg.period == 120.0  # env beats file
    assert cfg.repo == "file:///from/file"  # file beats default
    assert cfg.sync_timeout == 9.0
    assert cfg.include == ("*.py", "*.sql")
    assert cfg.max_bytes == 2 * 1024**3  # default
    # DAGSYNC_CONFIG names the file too.
    assert load("run", flags(), {"DAGSYNC_CONFIG": str(config_file)}).ref == "file-ref"


def test_env_lists_and_booleans() -> None:
    env = {
        "DAGSYNC_REPO": REPO,
        "DAGSYNC_EXCLUDE": "tests/, *.md",
        "DAGSYNC_SSH_KNOWN_HOSTS": "false",
    }
    cfg = load("once", flags(), env)
    assert cfg.exclude == ("tests/", "*.md")
    assert cfg.ssh_known_hosts is False


def test_unknown_dagsync_variable_warns_and_goes_on() -> None:
    # The warning is a notice, logged once logging is set up (so it follows --log-format).
    cfg = load("once", flags(), {"DAGSYNC_REPO": REPO, "DAGSYNC_PERIDO": "5m"})
    assert cfg.repo == REPO
    warnings = [m for level, m in cfg.notices if level == logging.WARNING]
    assert len(warnings) == 1 and "DAGSYNC_PERIDO" in warnings[0]
    # variables dagsync sets for its hooks are not typos
    cfg = load("once", flags(), {"DAGSYNC_REPO": REPO, "DAGSYNC_REVISION": "x"})
    assert not [m for level, m in cfg.notices if level == logging.WARNING]


@pytest.mark.parametrize(
    ("given", "env", "option"),
    [
        ({"period": "5x"}, {}, "--period"),
        ({}, {"DAGSYNC_SYNC_TIMEOUT": "soon"}, "--sync-timeout"),
        ({"revision_grace": "-3"}, {}, "--revision-grace"),
        ({"max_bytes": "lots"}, {}, "--max-bytes"),
        ({"depth": "-1"}, {}, "--depth"),
        ({"depth": "one"}, {}, "--depth"),
        ({"keep_revisions": "0"}, {}, "--keep-revisions"),
        ({"submodules": "sometimes"}, {}, "--submodules"),
        ({"log_format": "xml"}, {}, "--log-format"),
        ({"check": "lint"}, {}, "--check"),
        ({"link": ".dagsync"}, {}, "--link"),
        ({"period": "0s"}, {}, "--period"),
        ({"source_option": ["novalue"]}, {}, "--source-option"),
    ],
)
def test_invalid_values_are_one_line_errors_naming_the_option(
    given: dict[str, object], env: dict[str, str], option: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load("run", flags(repo=REPO, **given), env)
    message = str(info.value)
    assert option in message and "\n" not in message


def test_source_is_inferred_or_required() -> None:
    assert load("once", flags(local_path="/tmp"), {}).source == "local"
    assert load("once", flags(source="Echo"), {}).source == "echo"
    with pytest.raises(ConfigError, match="--source is required"):
        load("once", flags(), {})
    with pytest.raises(ConfigError, match="ambiguous"):
        load("once", flags(repo=REPO, local_path="/tmp"), {})


def test_yaml_file_errors(tmp_path: Path) -> None:
    bad_key = tmp_path / "bad-key.yaml"
    bad_key.write_text("repo: x\nperoid: 5m\n")
    with pytest.raises(ConfigError, match="unknown key 'peroid'"):
        load("run", flags(config=str(bad_key)), {})
    not_yaml = tmp_path / "not.yaml"
    not_yaml.write_text("repo: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load("run", flags(config=str(not_yaml)), {})
    with pytest.raises(ConfigError, match="cannot read"):
        load("run", flags(config=str(tmp_path / "missing.yaml")), {})
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    with pytest.raises(ConfigError, match="mapping"):
        load("run", flags(config=str(scalar)), {})


def test_child_environment_drops_dagsync_settings_and_secrets() -> None:
    env = {
        "PATH": "/usr/bin",
        "DAGSYNC_REPO": REPO,
        "OSS_ACCESS_KEY_SECRET": "s3cret",
        "AZURE_STORAGE_CONNECTION_STRING": "AccountKey=abc",
        "HTTPS_PROXY": "http://proxy:3128",
    }
    cfg = load("once", flags(), env)
    assert cfg.child_env == {"PATH": "/usr/bin", "HTTPS_PROXY": "http://proxy:3128"}
    assert "s3cret" not in repr(cfg)
