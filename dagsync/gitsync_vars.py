"""git-sync's environment variable names, as data: for each dagsync option the variables that
set it, best first (the v4 name, then v3's), and how each value parses (Go durations and
booleans). :mod:`dagsync.compat` holds the rules that combine them."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dagsync.errors import ConfigError

Parser = Callable[[str, str], Any]


# -- value parsers: (raw text, variable name) -> value; ConfigError names the variable ---------
def _text(value: str, _name: str) -> str:
    return value.strip()


def _int(value: str, name: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise ConfigError(f"{name}: expected an integer, got {value!r}", name) from None


_GO_BOOLS = {
    "1": True, "t": True, "true": True, "yes": True, "y": True, "on": True,
    "0": False, "f": False, "false": False, "no": False, "n": False, "off": False,
}  # fmt: skip


def _bool(value: str, name: str) -> bool:
    parsed = _GO_BOOLS.get(value.strip().lower())
    if parsed is None:
        raise ConfigError(f"{name}: expected true or false, got {value!r}", name)
    return parsed


_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_GO_DURATION_PART = re.compile(f"({_NUMBER})(ns|us|µs|μs|ms|s|m|h)")
_GO_DURATION = re.compile(f"(?:{_GO_DURATION_PART.pattern})+")
_GO_UNITS = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
}  # fmt: skip


def parse_go_duration(value: str, name: str) -> float:
    """Seconds from a Go duration (``5s``, ``1m30s``, ``500ms``, ``1.5h``); a bare number is
    taken as seconds, which Go rejects but a person may well write. Never negative."""
    text = value.strip()
    if re.fullmatch(_NUMBER, text):
        return float(text)
    if _GO_DURATION.fullmatch(text):
        return sum(float(n) * _GO_UNITS[unit] for n, unit in _GO_DURATION_PART.findall(text))
    raise ConfigError(f"{name}: invalid duration {value!r} (use e.g. 5s, 1m30s, 500ms)", name)


def _float_seconds(value: str, name: str) -> float:
    if not re.fullmatch(_NUMBER, value.strip()):
        raise ConfigError(f"{name}: expected seconds as a number, got {value!r}", name)
    return float(value.strip())


def _int_seconds(value: str, name: str) -> float:
    seconds = _int(value, name)
    if seconds < 0:
        raise ConfigError(f"{name}: must not be negative, got {value!r}", name)
    return float(seconds)


def _submodules(value: str, name: str) -> str:
    mode = value.strip().lower()
    if mode not in ("recursive", "shallow", "off"):
        raise ConfigError(f"{name}: must be recursive, shallow or off, got {value!r}", name)
    return mode


def _http_bind(value: str, _name: str) -> str:
    # Go's ":1234" (what the chart renders) means every interface.
    bind = value.strip()
    return "0.0.0.0" + bind if bind.startswith(":") else bind


# -- the table: option attr -> the variables for it, best first (v4 name, then older ones) ------
@dataclass(frozen=True)
class Var:
    name: str
    parse: Parser = _text
    zero_is_unset: bool = False  # git-sync's deprecated numeric flags apply only when non-zero


TABLE: dict[str, tuple[Var, ...]] = {
    "repo": (Var("GITSYNC_REPO"), Var("GIT_SYNC_REPO")),
    "root": (Var("GITSYNC_ROOT"), Var("GIT_SYNC_ROOT")),
    "link": (Var("GITSYNC_LINK"), Var("GIT_SYNC_LINK"), Var("GIT_SYNC_DEST")),
    "depth": (Var("GITSYNC_DEPTH", _int), Var("GIT_SYNC_DEPTH", _int)),
    "submodules": (Var("GITSYNC_SUBMODULES", _submodules), Var("GIT_SYNC_SUBMODULES", _submodules)),
    "sync_timeout": (
        Var("GITSYNC_SYNC_TIMEOUT", parse_go_duration),
        Var("GIT_SYNC_SYNC_TIMEOUT", parse_go_duration),
        Var("GIT_SYNC_TIMEOUT", _int_seconds, zero_is_unset=True),
    ),
    "max_failures": (
        Var("GITSYNC_MAX_FAILURES", _int),
        Var("GIT_SYNC_MAX_FAILURES", _int),
        Var("GIT_SYNC_MAX_SYNC_FAILURES", _int),
    ),
    "ssh_key_file": (
        Var("GITSYNC_SSH_KEY_FILE"),
        Var("GIT_SYNC_SSH_KEY_FILE"),
        Var("GIT_SSH_KEY_FILE"),
    ),
    "ssh_known_hosts": (
        Var("GITSYNC_SSH_KNOWN_HOSTS", _bool),
        Var("GIT_SYNC_KNOWN_HOSTS", _bool),
        Var("GIT_KNOWN_HOSTS", _bool),
    ),
    "ssh_known_hosts_file": (
        Var("GITSYNC_SSH_KNOWN_HOSTS_FILE"),
        Var("GIT_SYNC_SSH_KNOWN_HOSTS_FILE"),
        Var("GIT_SSH_KNOWN_HOSTS_FILE"),
    ),
    "username": (Var("GITSYNC_USERNAME"), Var("GIT_SYNC_USERNAME")),
    "password_file": (Var("GITSYNC_PASSWORD_FILE"), Var("GIT_SYNC_PASSWORD_FILE")),
    "http_bind": (Var("GITSYNC_HTTP_BIND", _http_bind), Var("GIT_SYNC_HTTP_BIND", _http_bind)),
    "touch_file": (Var("GITSYNC_TOUCH_FILE"), Var("GIT_SYNC_TOUCH_FILE")),
    "error_file": (Var("GITSYNC_ERROR_FILE"), Var("GIT_SYNC_ERROR_FILE")),
    "exechook_command": (
        Var("GITSYNC_EXECHOOK_COMMAND"),
        Var("GIT_SYNC_EXECHOOK_COMMAND"),
        Var("GIT_SYNC_HOOK_COMMAND"),
    ),
    "webhook_url": (Var("GITSYNC_WEBHOOK_URL"), Var("GIT_SYNC_WEBHOOK_URL")),
    "revision_grace": (Var("GITSYNC_STALE_WORKTREE_TIMEOUT", parse_go_duration),),
}
# Handled by their own rules below.
PERIOD_VARS = (Var("GITSYNC_PERIOD", parse_go_duration), Var("GIT_SYNC_PERIOD", parse_go_duration))
WAIT_VAR = Var("GIT_SYNC_WAIT", _float_seconds, zero_is_unset=True)
REF_VAR = Var("GITSYNC_REF")
REV_VAR = Var("GIT_SYNC_REV")
BRANCH_VAR = Var("GIT_SYNC_BRANCH")
ONE_TIME_VARS = (Var("GITSYNC_ONE_TIME", _bool), Var("GIT_SYNC_ONE_TIME", _bool))
PASSWORD_VARS = (Var("GITSYNC_PASSWORD"), Var("GIT_SYNC_PASSWORD"))
SSH_VARS = (Var("GITSYNC_SSH", _bool), Var("GIT_SYNC_SSH", _bool))
# Accepted and ignored: dagsync needs no passwd entry to be added, always has metrics, and
# logs through --log-level.
IGNORED = frozenset(
    {"GITSYNC_ADD_USER", "GIT_SYNC_ADD_USER", "GITSYNC_HTTP_METRICS", "GIT_SYNC_HTTP_METRICS",
     "GITSYNC_VERBOSE"}
)  # fmt: skip


def _known_names() -> frozenset[str]:
    names = {v.name for vars_ in TABLE.values() for v in vars_}
    names.update(v.name for v in (*PERIOD_VARS, WAIT_VAR, REF_VAR, REV_VAR, BRANCH_VAR))
    names.update(v.name for v in (*ONE_TIME_VARS, *PASSWORD_VARS, *SSH_VARS))
    return frozenset(names)


KNOWN = _known_names()
