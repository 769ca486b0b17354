"""git-sync compatibility (SPEC section 7): translate() rule by rule, then the dagsync CLI started
exactly as the Airflow charts start the git-sync image: no arguments, only their environment."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from dagsync import cli, compat, gitsync_vars
from dagsync.config import load
from dagsync.errors import ConfigError
from dagsync.redact import redact
from tests.airflow_helpers import (
    as_environ,
    community_chart_env,
    official_chart_env,
)
from tests.gitservers import HTTP_PASSWORD, HTTP_USERNAME, GitHttpServer, Repo, SshServer

REPO_URL = "https://github.com/apache/airflow.git"


def chart(**kwargs: Any) -> dict[str, str]:
    kwargs.setdefault("repo", REPO_URL)
    return as_environ(official_chart_env(**kwargs))


def warnings_of(t: compat.Translated) -> list[str]:
    return [msg for level, msg in t.notes if level >= logging.WARNING]


def debug_of(t: compat.Translated) -> list[str]:
    return [msg for level, msg in t.notes if level == logging.DEBUG]


# --- translate(): the chart's environment -------------------------------------------------------


def test_no_git_sync_variables_is_inactive() -> None:
    t = compat.translate({"PATH": "/usr/bin", "DAGSYNC_REPO": "x", "GIT_SSH_COMMAND": "ssh"})
    assert t == compat.Translated()
    assert compat.implied_command({"DAGSYNC_REPO": "x"}) is None


def test_pure_function_of_the_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITSYNC_REPO", REPO_URL)
    assert not compat.translate({}).active


def test_official_chart_sidecar() -> None:
    t = compat.translate(chart(root="/git"))
    assert t.active and not t.one_time
    assert t.values == {
        "repo": REPO_URL,
        "ref": "v2-2-stable",
        "root": "/git",
        "link": "repo",
        "depth": 1,
        "period": 5.0,
        "max_failures": -1,  # 0 means: the first sync must succeed, then never exit
        "http_bind": "0.0.0.0:8000",
    }
    assert t.first_sync_must_succeed
    assert warnings_of(t) == []  # the two families agree
    assert compat.implied_command(chart()) == "run"


def test_official_chart_init_container() -> None:
    env = chart(init=True)
    t = compat.translate(env)
    assert t.one_time and "http_bind" not in t.values
    assert compat.implied_command(env) == "once"


def test_community_chart_v3_names_only() -> None:
    env = as_environ(community_chart_env(repo=REPO_URL, init=True))
    t = compat.translate(env)
    assert t.values == {
        "repo": REPO_URL,
        "ref": "master",
        "root": "/dags",
        "link": "repo",
        "depth": 1,
        "period": 60.0,
        "sync_timeout": 120.0,
        "ssh_known_hosts": False,
    }
    assert t.one_time and warnings_of(t) == []
    assert compat.implied_command(env) == "once"


def test_load_gives_the_config_the_chart_means(tmp_path: Path) -> None:
    cfg = load("run", {}, chart(root=str(tmp_path / "git"), ref="main", branch="main"))
    assert (cfg.source, cfg.repo, cfg.ref, cfg.link) == ("git", REPO_URL, "main", "repo")
    assert cfg.root == tmp_path / "git" and cfg.link_path == tmp_path / "git" / "repo"
    assert (cfg.depth, cfg.submodules, cfg.period) == (1, "recursive", 5.0)
    assert (cfg.http_bind, cfg.gitsync_mode, cfg.first_sync_must_succeed) == (
        "0.0.0.0:8000",
        True,
        True,
    )
    assert cfg.max_failures == -1
    assert not any(k.startswith(("GITSYNC_", "GIT_SYNC_")) for k in cfg.child_env)


# --- both families: the v4 name wins, one warning ---------------------------------------------


def test_ref_v4_wins_over_the_charts_default_branch_with_one_warning() -> None:
    t = compat.translate(chart(ref="main"))  # the user set ref; branch keeps its default
    assert t.values["ref"] == "main"
    (warning,) = warnings_of(t)
    assert "GITSYNC_REF" in warning and "value=main" in warning
    assert "GIT_SYNC_BRANCH=v2-2-stable" in warning


@pytest.mark.parametrize(
    ("env", "ref"),
    [
        ({"GIT_SYNC_REV": "v1.2", "GIT_SYNC_BRANCH": "main"}, "v1.2"),
        ({"GIT_SYNC_REV": "HEAD", "GIT_SYNC_BRANCH": "main"}, "main"),
        ({"GIT_SYNC_REV": "HEAD"}, "HEAD"),
        ({"GIT_SYNC_BRANCH": "release"}, "release"),
        ({"GITSYNC_REF": "abc", "GIT_SYNC_REV": "abc", "GIT_SYNC_BRANCH": "x"}, "abc"),
    ],
)
def test_ref_rules(env: dict[str, str], ref: str) -> None:
    t = compat.translate({"GIT_SYNC_REPO": REPO_URL, **env})
    assert t.values["ref"] == ref
    assert warnings_of(t) == []


def test_v4_wins_for_every_pair_with_one_warning_each() -> None:
    env = {
        "GITSYNC_REPO": "https://h/a.git", "GIT_SYNC_REPO": "https://h/b.git",
        "GITSYNC_ROOT": "/v4", "GIT_SYNC_ROOT": "/v3",
        "GITSYNC_LINK": "four", "GIT_SYNC_DEST": "three",
        "GITSYNC_DEPTH": "2", "GIT_SYNC_DEPTH": "3",
        "GITSYNC_MAX_FAILURES": "4", "GIT_SYNC_MAX_SYNC_FAILURES": "5",
        "GITSYNC_SYNC_TIMEOUT": "30s", "GIT_SYNC_TIMEOUT": "60",
        "GITSYNC_PERIOD": "7s", "GIT_SYNC_PERIOD": "9s",
    }  # fmt: skip
    t = compat.translate(env)
    assert {k: t.values[k] for k in ("repo", "root", "link", "depth", "max_failures")} == {
        "repo": "https://h/a.git", "root": "/v4", "link": "four", "depth": 2, "max_failures": 4,
    }  # fmt: skip
    assert (t.values["sync_timeout"], t.values["period"]) == (30.0, 7.0)
    warnings = warnings_of(t)
    assert len(warnings) == 7
    for v4 in ("REPO", "ROOT", "LINK", "DEPTH", "MAX_FAILURES", "SYNC_TIMEOUT", "PERIOD"):
        assert sum(f"using GITSYNC_{v4} " in w for w in warnings) == 1, v4
    assert not t.first_sync_must_succeed


def test_values_that_agree_after_parsing_do_not_warn() -> None:
    t = compat.translate({"GITSYNC_PERIOD": "60s", "GIT_SYNC_PERIOD": "1m", "GIT_SYNC_WAIT": "60"})
    assert t.values["period"] == 60.0 and warnings_of(t) == []


def test_git_sync_wait_wins_over_period() -> None:
    t = compat.translate(chart(wait=66))
    assert t.values["period"] == 66.0
    (warning,) = warnings_of(t)
    assert "using GIT_SYNC_WAIT value=66" in warning and "GITSYNC_PERIOD=5s" in warning
    assert compat.translate({"GIT_SYNC_WAIT": "2.5"}).values["period"] == 2.5


def test_zero_wait_and_timeout_mean_unset_as_in_git_sync() -> None:
    t = compat.translate({"GITSYNC_PERIOD": "5s", "GIT_SYNC_WAIT": "0", "GIT_SYNC_TIMEOUT": "0"})
    assert t.values["period"] == 5.0 and "sync_timeout" not in t.values


def test_password_disagreement_never_shows_a_value() -> None:
    t = compat.translate({"GITSYNC_PASSWORD": "pw-four-aaa", "GIT_SYNC_PASSWORD": "pw-three-bbb"})
    assert t.password == "pw-four-aaa"
    (warning,) = warnings_of(t)
    assert "GIT_SYNC_PASSWORD" in warning
    assert "pw-four" not in warning and "pw-three" not in warning


def test_empty_variables_are_unset() -> None:
    t = compat.translate({"GITSYNC_REPO": REPO_URL, "GITSYNC_LINK": "", "GIT_SYNC_WAIT": ""})
    assert t.values["link"] == "airflow.git" and "period" not in t.values


# --- durations and malformed values --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5s", 5.0), ("1m30s", 90.0), ("500ms", 0.5), ("1h", 3600.0), ("1.5h", 5400.0),
     ("2h45m", 9900.0), (".5s", 0.5), ("10", 10.0), ("0", 0.0), ("300us", 0.0003)],
)  # fmt: skip
def test_go_durations(text: str, seconds: float) -> None:
    assert gitsync_vars.parse_go_duration(text, "GITSYNC_PERIOD") == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GITSYNC_PERIOD", "5x"),
        ("GITSYNC_PERIOD", "-5s"),
        ("GITSYNC_PERIOD", "1m30"),
        ("GITSYNC_PERIOD", "5 s"),
        ("GITSYNC_SYNC_TIMEOUT", "soon"),
        ("GITSYNC_STALE_WORKTREE_TIMEOUT", "1d"),
        ("GIT_SYNC_WAIT", "five"),
        ("GIT_SYNC_TIMEOUT", "1.5"),
        ("GITSYNC_DEPTH", "one"),
        ("GITSYNC_MAX_FAILURES", "never"),
        ("GITSYNC_SUBMODULES", "all"),
        ("GITSYNC_SSH_KNOWN_HOSTS", "maybe"),
        ("GITSYNC_ONE_TIME", "sometimes"),
    ],
)
def test_malformed_value_is_a_config_error_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        compat.translate({"GITSYNC_REPO": REPO_URL, name: value})
    assert info.value.option == name
    message = str(info.value)
    assert message.startswith(name + ":") and "\n" not in message and repr(value) in message


def test_bad_duration_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main([], environ=chart(period="5x"))
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "GITSYNC_PERIOD" in err and "'5x'" in err


@pytest.mark.parametrize(
    ("text", "value"),
    [("true", True), ("True", True), ("1", True), ("t", True), ("false", False), ("0", False)],
)
def test_go_booleans(text: str, value: bool) -> None:
    assert compat.translate({"GITSYNC_ONE_TIME": text}).one_time is value


# --- defaults git-sync has and dagsync keeps in this mode --------------------------------------


@pytest.mark.parametrize(
    ("repo", "link"),
    [
        ("https://github.com/acme/dags.git", "dags.git"),
        ("https://github.com/acme/dags", "dags"),
        ("file:///srv/git/repo/", "repo"),
        ("git@github.com:acme/dags.git", "dags.git"),
        ("git@github.com:dags.git", "dags.git"),
        ("ssh://git@host:2222/acme/dags.git", "dags.git"),
    ],
)
def test_link_defaults_to_the_last_path_element_unchanged(repo: str, link: str) -> None:
    assert compat.translate({"GITSYNC_REPO": repo}).values["link"] == link


def test_dest_is_the_v3_link() -> None:
    assert compat.translate({"GIT_SYNC_REPO": REPO_URL, "GIT_SYNC_DEST": "d"}).values["link"] == "d"


def test_depth_and_submodules(tmp_path: Path) -> None:
    cfg = load("once", {}, {"GITSYNC_REPO": REPO_URL, "GITSYNC_ROOT": str(tmp_path)})
    assert (cfg.depth, cfg.submodules) == (1, "recursive")
    t = compat.translate({"GITSYNC_SUBMODULES": "Off", "GIT_SYNC_DEPTH": "0"})
    assert (t.values["submodules"], t.values["depth"]) == ("off", 0)


# --- max-failures ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "value", "first_must_succeed"),
    [
        ({"GITSYNC_MAX_FAILURES": "0"}, -1, True),
        ({"GIT_SYNC_MAX_SYNC_FAILURES": "0"}, -1, True),
        ({"GIT_SYNC_MAX_FAILURES": "0"}, -1, True),
        ({"GITSYNC_MAX_FAILURES": "3"}, 3, False),
        ({"GITSYNC_MAX_FAILURES": "-1"}, -1, False),
    ],
)
def test_max_failures(env: dict[str, str], value: int, first_must_succeed: bool) -> None:
    t = compat.translate({"GITSYNC_REPO": REPO_URL, **env})
    assert t.values["max_failures"] == value
    assert t.first_sync_must_succeed is first_must_succeed


def test_dagsync_max_failures_overrides_the_first_sync_rule(tmp_path: Path) -> None:
    env = chart(root=str(tmp_path))
    assert load("run", {}, env).first_sync_must_succeed
    cfg = load("run", {}, {**env, "DAGSYNC_MAX_FAILURES": "5"})
    assert (cfg.max_failures, cfg.first_sync_must_succeed) == (5, False)
    cfg = load("run", {"max_failures": "2"}, env)
    assert (cfg.max_failures, cfg.first_sync_must_succeed) == (2, False)


# --- ssh ----------------------------------------------------------------------------------------


def test_ssh_flag_gives_the_default_key_and_known_hosts_files() -> None:
    t = compat.translate({"GIT_SYNC_REPO": REPO_URL, "GIT_SYNC_SSH": "true"})
    assert t.values["ssh_key_file"] == "/etc/git-secret/ssh"
    assert t.values["ssh_known_hosts_file"] == "/etc/git-secret/known_hosts"
    assert "ssh" not in t.values and "ssh" not in t.origins


@pytest.mark.parametrize(
    "repo", ["git@github.com:acme/dags.git", "ssh://git@github.com/acme/dags.git", "host:dags"]
)
def test_an_ssh_repo_gives_the_defaults_too(repo: str) -> None:
    t = compat.translate({"GITSYNC_REPO": repo})
    assert t.values["ssh_key_file"] == "/etc/git-secret/ssh"
    assert t.values["ssh_known_hosts_file"] == "/etc/git-secret/known_hosts"


def test_no_ssh_defaults_for_https() -> None:
    t = compat.translate({"GITSYNC_REPO": REPO_URL})
    assert "ssh_key_file" not in t.values and "ssh_known_hosts_file" not in t.values


def test_known_hosts_off_means_no_known_hosts_file() -> None:
    env = chart(ssh_key_file="/k", known_hosts_file=None)  # chart: knownHosts unset
    t = compat.translate(env)
    assert t.values["ssh_key_file"] == "/k"
    assert t.values["ssh_known_hosts"] is False and "ssh_known_hosts_file" not in t.values
    t = compat.translate({**env, "GITSYNC_SSH_KNOWN_HOSTS_FILE": "/kh"})
    assert "ssh_known_hosts_file" not in t.values


def test_chart_ssh_with_known_hosts() -> None:
    t = compat.translate(chart(ssh_key_file="/k", known_hosts_file="/kh"))
    assert (t.values["ssh_key_file"], t.values["ssh_known_hosts"]) == ("/k", True)
    assert t.values["ssh_known_hosts_file"] == "/kh" and warnings_of(t) == []


def test_missing_known_hosts_file_is_exit_2_naming_the_variable(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("not really a key\n")
    env = chart(root=str(tmp_path), ssh_key_file=str(key), known_hosts_file="/nonexistent/kh")
    with pytest.raises(ConfigError) as info:
        load("once", {}, env)
    message = str(info.value)
    assert message.startswith("GITSYNC_SSH_KNOWN_HOSTS_FILE: cannot read /nonexistent/kh")
    assert "GITSYNC_SSH_KNOWN_HOSTS=false" in message and "\n" not in message
    assert info.value.option == "GITSYNC_SSH_KNOWN_HOSTS_FILE"


def test_missing_default_files_name_the_variable_to_set() -> None:
    t = compat.translate({"GITSYNC_REPO": "git@github.com:acme/dags.git"})
    effective = dict(t.values)
    with pytest.raises(ConfigError, match=r"^GITSYNC_SSH_KEY_FILE \(unset: git-sync's default"):
        compat.require_files(t, effective, lambda path: "No such file or directory")
    seen: list[str] = []
    compat.require_files(t, effective, lambda path: seen.append(path) or None)
    assert seen == ["/etc/git-secret/ssh", "/etc/git-secret/known_hosts"]


def test_dagsync_file_options_are_not_checked_here(tmp_path: Path) -> None:
    env = {
        "GITSYNC_REPO": "git@github.com:acme/dags.git",
        "GITSYNC_ROOT": str(tmp_path),
        "DAGSYNC_SSH_KEY_FILE": "/elsewhere/key",
        "DAGSYNC_SSH_KNOWN_HOSTS": "false",
    }
    cfg = load("once", {}, env)  # the git source checks its own options later
    assert cfg.ssh_key_file == Path("/elsewhere/key") and cfg.ssh_known_hosts is False


# --- credentials ---------------------------------------------------------------------------------


def test_password_goes_to_translated_password_only(tmp_path: Path) -> None:
    secret = "chart-secret-9f3a"
    env = chart(root=str(tmp_path), credentials=("bot", secret))
    t = compat.translate(env)
    assert t.password == secret and t.values["username"] == "bot"
    assert secret not in repr(t) and secret not in json.dumps(t.values)
    assert redact(f"fatal: {secret}") == "fatal: ***"
    cfg = load("once", {}, env)
    assert cfg.password == secret and cfg.username == "bot"
    assert secret not in repr(cfg) and secret not in cfg.child_env.values()


def test_password_file(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("token\n")
    t = compat.translate({"GITSYNC_USERNAME": "u", "GITSYNC_PASSWORD_FILE": str(pw)})
    assert t.values["password_file"] == str(pw) and t.password is None
    env = {"GITSYNC_REPO": REPO_URL, "GITSYNC_ROOT": str(tmp_path), "GITSYNC_USERNAME": "u"}
    with pytest.raises(ConfigError, match="^GITSYNC_PASSWORD_FILE: cannot read"):
        load("once", {}, {**env, "GITSYNC_PASSWORD_FILE": str(tmp_path / "missing")})


# --- the rest of the table ------------------------------------------------------------------------


def test_http_bind() -> None:
    assert compat.translate({"GITSYNC_HTTP_BIND": ":1234"}).values["http_bind"] == "0.0.0.0:1234"
    t = compat.translate({"GIT_SYNC_HTTP_BIND": "127.0.0.1:9"})
    assert t.values["http_bind"] == "127.0.0.1:9" and t.active


def test_files_hooks_and_grace() -> None:
    t = compat.translate(
        {
            "GITSYNC_TOUCH_FILE": "touched",
            "GITSYNC_ERROR_FILE": "error.json",
            "GITSYNC_EXECHOOK_COMMAND": "/hooks/notify --all",
            "GITSYNC_WEBHOOK_URL": "http://127.0.0.1:1/hook",
            "GITSYNC_STALE_WORKTREE_TIMEOUT": "10m",
            "GITSYNC_SYNC_TIMEOUT": "2m",
        }
    )
    assert t.values == {
        "touch_file": "touched",
        "error_file": "error.json",
        "exechook_command": "/hooks/notify --all",
        "webhook_url": "http://127.0.0.1:1/hook",
        "revision_grace": 600.0,
        "sync_timeout": 120.0,
    }


@pytest.mark.parametrize(
    ("env", "attr", "value"),
    [
        ({"GIT_SYNC_TOUCH_FILE": "t"}, "touch_file", "t"),
        ({"GIT_SYNC_ERROR_FILE": "e"}, "error_file", "e"),
        ({"GIT_SYNC_HOOK_COMMAND": "hook"}, "exechook_command", "hook"),
        ({"GIT_SYNC_EXECHOOK_COMMAND": "hook2"}, "exechook_command", "hook2"),
        ({"GIT_SYNC_WEBHOOK_URL": "http://x/"}, "webhook_url", "http://x/"),
        ({"GIT_SYNC_TIMEOUT": "90"}, "sync_timeout", 90.0),
        ({"GIT_SYNC_SUBMODULES": "shallow"}, "submodules", "shallow"),
        ({"GIT_SYNC_USERNAME": "u"}, "username", "u"),
        ({"GIT_SSH_KEY_FILE": "/k"}, "ssh_key_file", "/k"),
        ({"GIT_SYNC_SSH_KEY_FILE": "/k2"}, "ssh_key_file", "/k2"),
        ({"GIT_KNOWN_HOSTS": "false"}, "ssh_known_hosts", False),
        ({"GIT_SYNC_LINK": "l"}, "link", "l"),
    ],
)
def test_older_names(env: dict[str, str], attr: str, value: Any) -> None:
    assert compat.translate({"GIT_SYNC_ROOT": "/r", **env}).values[attr] == value


def test_ignored_names_get_a_debug_line_each_and_never_fail() -> None:
    env = {
        "GITSYNC_REPO": REPO_URL,
        "GITSYNC_ADD_USER": "true",
        "GIT_SYNC_ADD_USER": "true",
        "GITSYNC_HTTP_METRICS": "true",
        "GITSYNC_VERBOSE": "9",
        "GITSYNC_SSH": "true",
        "GIT_SYNC_SSH": "true",
        "GITSYNC_GIT_GC": "aggressive",
        "GIT_SYNC_PERMISSIONS": "0755",
        "GITSYNC_SOMETHING_NEW": "whatever",
    }
    t = compat.translate(env)
    debug = debug_of(t)
    for name in env:
        if name != "GITSYNC_REPO":
            assert sum(line.endswith(f"name={name}") for line in debug) == 1, name
    assert warnings_of(t) == []


def test_notices_reach_the_log_after_logging_is_set_up(tmp_path: Path) -> None:
    cfg = load("run", {}, chart(root=str(tmp_path), ref="main"))
    levels = [level for level, _ in cfg.notices]
    assert levels.count(logging.WARNING) == 1 and logging.DEBUG in levels


# --- DAGSYNC_* and flags win ---------------------------------------------------------------------


def test_dagsync_variables_and_flags_win(tmp_path: Path) -> None:
    env = chart(root=str(tmp_path / "a"), ref="main", branch="main")
    cfg = load("run", {}, {**env, "DAGSYNC_REF": "dev", "DAGSYNC_LINK": "current"})
    assert (cfg.ref, cfg.link) == ("dev", "current")
    cfg = load("run", {"ref": "tag1", "root": str(tmp_path / "b")}, {**env, "DAGSYNC_REF": "dev"})
    assert (cfg.ref, cfg.root) == ("tag1", tmp_path / "b")


@pytest.mark.parametrize(
    "dagsync_env",
    [
        {"DAGSYNC_SOURCE": "oss", "DAGSYNC_OSS_BUCKET": "dags", "DAGSYNC_OSS_ENDPOINT": "http://e"},
        {"DAGSYNC_OSS_BUCKET": "dags", "DAGSYNC_OSS_ENDPOINT": "http://e"},
        {"DAGSYNC_SOURCE": "azure", "DAGSYNC_AZURE_SHARE": "dags"},
        {"DAGSYNC_SOURCE": "local", "DAGSYNC_LOCAL_PATH": "/mnt/dags"},
        {"DAGSYNC_LOCAL_PATH": "/mnt/dags"},
    ],
)
def test_another_source_through_dags_gitsync_env_wins_over_the_charts_repo(
    tmp_path: Path, dagsync_env: dict[str, str]
) -> None:
    pw = tmp_path / "pw"
    env = chart(
        root=str(tmp_path),
        ref="main",
        credentials=("bot", "pw-12345"),
        extra=list(dagsync_env.items()),
    )
    env["GITSYNC_PASSWORD_FILE"] = str(pw)  # missing: must not matter for another source
    cfg = load("run", {}, env)
    expected = dagsync_env.get("DAGSYNC_SOURCE") or (
        "oss" if "DAGSYNC_OSS_BUCKET" in env else "local"
    )
    assert cfg.source == expected
    assert (cfg.repo, cfg.username, cfg.password, cfg.password_file) == (None, None, None, None)
    assert (cfg.link, cfg.root, cfg.period) == ("repo", tmp_path, 5.0)  # generic ones stay
    assert cfg.first_sync_must_succeed and cfg.gitsync_mode
    infos = [m for level, m in cfg.notices if level == logging.INFO]
    assert any("GITSYNC_REPO" in m and "GITSYNC_PASSWORD" in m for m in infos)


def test_source_flag_wins_too(tmp_path: Path) -> None:
    cfg = load("once", {"source": "local", "local_path": "/d"}, chart(root=str(tmp_path)))
    assert (cfg.source, cfg.repo) == ("local", None)


# --- end to end: the CLI started as the charts start it -------------------------------------------

DAGSYNC_TIMEOUT_SECONDS = 60.0


@pytest.fixture
def base_env(hermetic_git_env: dict[str, str]) -> dict[str, str]:
    """The hermetic environment without any dagsync or git-sync setting of the caller's."""
    return {
        k: v
        for k, v in hermetic_git_env.items()
        if not k.startswith(("DAGSYNC_", "GITSYNC_", "GIT_SYNC_"))
    }


def dagsync_argv(how: str = "module") -> list[str]:
    if how == "module":
        return [sys.executable, "-m", "dagsync"]
    script = Path(sys.executable).with_name("dagsync")
    if not script.exists():
        pytest.skip(f"console script not installed beside {sys.executable}")
    return [str(script)]


def run_chart(
    base: Mapping[str, str], env: Mapping[str, str], how: str = "module"
) -> subprocess.CompletedProcess[str]:
    """Start dagsync as the chart does: no arguments, only the environment."""
    return subprocess.run(
        dagsync_argv(how),
        env={**base, **env},
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=DAGSYNC_TIMEOUT_SECONDS,
        check=False,
    )


@pytest.fixture
def start_chart(base_env: dict[str, str]) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start a long-running dagsync (the sidecar); stopped with SIGTERM at the end."""
    procs: list[subprocess.Popen[str]] = []

    def start(env: Mapping[str, str]) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            dagsync_argv(),
            env={**base_env, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    return proc.returncode, err


def wait_until(
    condition: Callable[[], bool], proc: subprocess.Popen[str] | None = None, timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            _, err = proc.communicate()
            raise AssertionError(f"dagsync exited {proc.returncode}:\n{err}")
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def published(link: Path) -> str | None:
    """The revision the link points at, after checking it is a relative symlink."""
    if not link.is_symlink():
        return None
    target = os.readlink(link)
    assert not os.path.isabs(target), target
    return Path(target).name


def http_status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def free_port() -> int:
    from tests.gitservers import free_port as pick

    return pick()


@pytest.mark.parametrize("how", ["module", "script"])
def test_init_container_publishes_and_exits_0(
    base_env: dict[str, str], git_repo: Repo, tmp_path: Path, how: str
) -> None:
    root = tmp_path / "git"
    env = chart(repo=git_repo.file_url, root=str(root), ref="main", branch="main", init=True)
    proc = run_chart(base_env, env, how)
    assert proc.returncode == 0, proc.stderr
    assert published(root / "repo") == git_repo.head()
    assert (root / "repo" / "dags" / "a.py").read_text() == "# dag a\nDAG_ID = 'a'\n"
    assert not (root / "repo" / ".git").exists()
    assert "disagree" not in proc.stderr


def test_community_chart_init_container(
    base_env: dict[str, str], git_repo: Repo, tmp_path: Path
) -> None:
    env = as_environ(
        community_chart_env(repo=git_repo.file_url, root=str(tmp_path), branch="main", init=True)
    )
    proc = run_chart(base_env, env)
    assert proc.returncode == 0, proc.stderr
    assert published(tmp_path / "repo") == git_repo.head()


def test_both_families_disagreeing_use_the_v4_ref_and_say_so_once(
    base_env: dict[str, str], git_repo: Repo, tmp_path: Path
) -> None:
    git_repo.branch("feature")
    git_repo.checkout("feature")
    git_repo.write("dags/feature.py", "# feature\n")
    feature = git_repo.commit("feature work")
    git_repo.push("feature")
    # The user set dags.gitSync.ref; branch keeps the chart's default (here: main).
    env = chart(repo=git_repo.file_url, root=str(tmp_path), ref="feature", branch="main", init=True)
    proc = run_chart(base_env, env)
    assert proc.returncode == 0, proc.stderr
    assert published(tmp_path / "repo") == feature
    lines = [line for line in proc.stderr.splitlines() if "disagree" in line]
    assert len(lines) == 1 and "GITSYNC_REF" in lines[0] and "warning" in lines[0]
    assert "GIT_SYNC_BRANCH=main" in lines[0]


def test_sidecar_serves_follows_and_stops_cleanly(
    start_chart: Callable[..., subprocess.Popen[str]], git_repo: Repo, tmp_path: Path
) -> None:
    port = free_port()
    env = chart(
        repo=git_repo.file_url,
        root=str(tmp_path),
        ref="main",
        branch="main",
        period="1s",
        http_bind=f"127.0.0.1:{port}",
    )
    proc = start_chart(env)
    link = tmp_path / "repo"
    wait_until(lambda: published(link) == git_repo.head(), proc)
    wait_until(lambda: http_status(port, "/readyz") == 200, proc)
    assert http_status(port, "/") == 200  # git-sync's health endpoint
    git_repo.write("dags/c.py", "# dag c\n")
    second = git_repo.commit("add c")
    git_repo.push()
    wait_until(lambda: published(link) == second, proc)
    assert (link / "dags" / "c.py").exists()
    code, err = stop(proc)
    assert code == 0, err
    assert err.count("exit if the first sync fails") == 1


def test_sidecar_health_before_the_first_publish(
    start_chart: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    port = free_port()
    missing = (tmp_path / "missing.git").as_uri()
    env = chart(repo=missing, root=str(tmp_path / "git"), max_failures=-1,
                http_bind=f"127.0.0.1:{port}")  # fmt: skip
    proc = start_chart(env)
    wait_until(lambda: _answers(port), proc)
    assert http_status(port, "/") == 503
    assert http_status(port, "/readyz") == 503
    assert proc.poll() is None  # -1: retries forever
    code, err = stop(proc)
    assert code == 0, err


def _answers(port: int) -> bool:
    try:
        http_status(port, "/healthz")
        return True
    except OSError:
        return False


def test_wrong_repo_with_the_charts_max_failures_0_exits_1_quickly(
    start_chart: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    missing = (tmp_path / "missing.git").as_uri()
    env = chart(repo=missing, root=str(tmp_path / "git"), http_bind=f"127.0.0.1:{free_port()}")
    began = time.monotonic()
    proc = start_chart(env)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, err
    assert time.monotonic() - began < 15
    assert "missing.git" in err
    assert not (tmp_path / "git" / "repo").exists()


def test_malformed_duration_exits_2_before_anything(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    proc = run_chart(base_env, chart(root=str(tmp_path / "git"), period="1m30"))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "GITSYNC_PERIOD" in proc.stderr
    assert not (tmp_path / "git").exists()


def test_missing_known_hosts_exits_2_naming_the_variable(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    key = tmp_path / "ssh"
    key.write_text("key\n")
    env = chart(
        repo="git@github.com:acme/dags.git",
        root=str(tmp_path / "git"),
        ssh_key_file=str(key),
        known_hosts_file=str(tmp_path / "known_hosts"),
        init=True,
    )
    proc = run_chart(base_env, env)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert "GITSYNC_SSH_KNOWN_HOSTS_FILE" in proc.stderr and "known_hosts" in proc.stderr


def test_chart_credentials_over_smart_http(
    base_env: dict[str, str], git_repo: Repo, git_http_auth: GitHttpServer, tmp_path: Path
) -> None:
    env = chart(
        repo=git_http_auth.url_for(git_repo.bare_path),
        root=str(tmp_path),
        ref="main",
        branch="main",
        credentials=(HTTP_USERNAME, HTTP_PASSWORD),
        init=True,
        extra=[("DAGSYNC_LOG_LEVEL", "debug")],  # through dags.gitSync.env
    )
    proc = run_chart(base_env, env)
    assert proc.returncode == 0, proc.stderr
    assert published(tmp_path / "repo") == git_repo.head()
    assert HTTP_PASSWORD not in proc.stderr + proc.stdout
    for path in (tmp_path / ".dagsync").rglob("*"):
        if path.is_file():
            assert HTTP_PASSWORD.encode() not in path.read_bytes(), path


def test_chart_ssh_key_and_known_hosts(
    base_env: dict[str, str], git_repo: Repo, sshd: SshServer, tmp_path: Path
) -> None:
    env = chart(
        repo=sshd.url_for(git_repo.bare_path),
        root=str(tmp_path),
        ref="main",
        branch="main",
        ssh_key_file=str(sshd.client_key),
        known_hosts_file=str(sshd.known_hosts),
        init=True,
    )
    proc = run_chart(base_env, env)
    assert proc.returncode == 0, proc.stderr
    assert published(tmp_path / "repo") == git_repo.head()


def test_dagsync_source_local_beside_the_charts_repo(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    folder = tmp_path / "nfs-dags"
    (folder / "sub").mkdir(parents=True)
    (folder / "one.py").write_text("# one\n")
    (folder / "sub" / "two.py").write_text("# two\n")
    root = tmp_path / "git"
    env = chart(
        root=str(root),
        init=True,
        extra=[("DAGSYNC_SOURCE", "local"), ("DAGSYNC_LOCAL_PATH", str(folder))],
    )
    proc = run_chart(base_env, env)
    assert proc.returncode == 0, proc.stderr
    assert published(root / "repo")
    assert sorted(
        p.relative_to(root / "repo").as_posix() for p in (root / "repo").rglob("*.py")
    ) == [
        "one.py",
        "sub/two.py",
    ]


def test_dagsync_source_oss_rides_on_the_charts_git_sync_wiring(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    pytest.importorskip("oss2", reason="dagsync[oss] is not installed")
    from tests.fakes.oss_server import FakeOss

    with FakeOss(access_key_id="chart-key-id", access_key_secret="chart-key-secret") as fake:
        fake.create_bucket("airflow-dags")
        fake.put("airflow-dags", "team/dags/one.py", b"# one\n")
        fake.put("airflow-dags", "other/skip.py", b"# not under the prefix\n")
        root = tmp_path / "git"
        # The user's dags.gitSync.env; the credentials would come from a secret (envFrom).
        user_env = [
            ("DAGSYNC_SOURCE", "oss"),
            ("DAGSYNC_OSS_ENDPOINT", fake.endpoint),
            ("DAGSYNC_OSS_BUCKET", "airflow-dags"),
            ("DAGSYNC_OSS_PREFIX", "team/dags/"),
            ("OSS_ACCESS_KEY_ID", "chart-key-id"),
            ("OSS_ACCESS_KEY_SECRET", "chart-key-secret"),
        ]
        proc = run_chart(base_env, chart(root=str(root), init=True, extra=user_env))
    assert proc.returncode == 0, proc.stderr
    assert published(root / "repo")
    assert sorted(p.name for p in (root / "repo").iterdir()) == ["one.py"]
    assert "chart-key-secret" not in proc.stderr
