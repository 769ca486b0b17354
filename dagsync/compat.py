"""git-sync v3/v4 environment variables mapped onto dagsync options (docs/reference.md §7).

The Airflow chart starts the git-sync image with no arguments, only environment, and renders
both name families at once (``GITSYNC_*`` for v4, ``GIT_SYNC_*``/``GIT_*`` for v3). This module
turns that environment into raw option values for :func:`dagsync.config.layer`, below every
``DAGSYNC_*`` variable and flag. It is a pure function of the mapping it is given; the one check
that needs the file system (the ssh and password files that git-sync's defaults name) is
:func:`require_files`, called once the layers are merged.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dagsync.errors import ConfigError
from dagsync.gitsync_vars import (
    BRANCH_VAR,
    IGNORED,
    KNOWN,
    ONE_TIME_VARS,
    PASSWORD_VARS,
    PERIOD_VARS,
    REF_VAR,
    REV_VAR,
    SSH_VARS,
    TABLE,
    WAIT_VAR,
    Var,
)
from dagsync.redact import redact_url, register_secret
from dagsync.units import parse_bool

PREFIXES = ("GITSYNC_", "GIT_SYNC_")
DEFAULT_SSH_KEY_FILE = "/etc/git-secret/ssh"
DEFAULT_KNOWN_HOSTS_FILE = "/etc/git-secret/known_hosts"

# Options that only mean something to the git source: dropped when DAGSYNC_SOURCE (or a flag)
# picks another source, so the chart's always-present GITSYNC_REPO cannot make it ambiguous.
GIT_ONLY = frozenset(
    {"repo", "ref", "depth", "submodules", "ssh_key_file", "ssh_known_hosts",
     "ssh_known_hosts_file", "username", "password_file"}
)  # fmt: skip
# Options whose presence (as a flag or DAGSYNC_* variable) names a non-git source.
OTHER_SOURCE_HINTS = {
    "oss_bucket": "oss",
    "oss_endpoint": "oss",
    "azure_share": "azure",
    "local_path": "local",
}
# The files that a git-sync variable (or its default) names; checked by require_files().
FILE_OPTIONS = ("ssh_key_file", "ssh_known_hosts_file", "password_file")


@dataclass(frozen=True)
class Translated:
    """Raw option values taken from git-sync's variables, and what that mode implies."""

    values: dict[str, Any] = field(default_factory=dict)
    active: bool = False
    first_sync_must_succeed: bool = False
    one_time: bool = False
    password: str | None = field(default=None, repr=False)
    # Which variable each value came from ("GITSYNC_SSH_KEY_FILE", or a default's reason), so
    # errors name what the user actually set.
    origins: dict[str, str] = field(default_factory=dict)
    # (logging level, message) lines to log once logging is set up.
    notes: tuple[tuple[int, str], ...] = ()


def is_active(environ: Mapping[str, str]) -> bool:
    """Any git-sync variable (``GITSYNC_*`` or ``GIT_SYNC_*``) present."""
    return any(k.startswith(PREFIXES) for k in environ)


def _present(environ: Mapping[str, str], var: Var) -> bool:
    raw = environ.get(var.name)
    if raw is None or not raw.strip():
        return False  # git-sync treats an empty variable as unset
    return not (var.zero_is_unset and _is_zero(raw))


def _is_zero(raw: str) -> bool:
    try:
        return float(raw.strip()) == 0
    except ValueError:
        return False


def _shown(attr: str, value: Any) -> str:
    if attr in ("repo", "webhook_url"):
        return redact_url(str(value))
    return str(value)


class _Builder:
    """Collects values, origins and notes while the rules run."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.env = environ
        self.values: dict[str, Any] = {}
        self.origins: dict[str, str] = {}
        self.notes: list[tuple[int, str]] = []

    def note(self, level: int, message: str) -> None:
        self.notes.append((level, message))

    def shown(self, name: str, attr: str) -> str:
        """The variable's text as the user wrote it (URLs redacted) for a log line."""
        text = _shown(attr, self.env[name].strip())
        return repr(text) if not text or any(c.isspace() for c in text) else text

    def disagree(self, attr: str, winner: str, losers: list[str], secret: bool = False) -> None:
        """The one warning for variables that disagree: which one was used and its value."""
        if secret:
            value, ignored = "***", ",".join(losers)
        else:
            value = self.shown(winner, attr)
            ignored = ",".join(f"{name}={self.shown(name, attr)}" for name in losers)
        self.note(
            logging.WARNING,
            f"git-sync variables disagree, using {winner} value={value} ignored={ignored}",
        )

    def pick(self, attr: str, candidates: tuple[Var, ...], secret: bool = False) -> Any:
        """The first candidate present wins; one warning if another present one disagrees."""
        env = self.env
        found = [(v, v.parse(env[v.name], v.name)) for v in candidates if _present(env, v)]
        if not found:
            return None
        (winner, value), rest = found[0], found[1:]
        losers = [v.name for v, other in rest if other != value]
        if losers:
            self.disagree(attr, winner.name, losers, secret)
        self.origins[attr] = winner.name
        return value

    def set(self, attr: str, candidates: tuple[Var, ...]) -> None:
        value = self.pick(attr, candidates)
        if value is not None:
            self.values[attr] = value


def translate(environ: Mapping[str, str], overrides: Mapping[str, Any] | None = None) -> Translated:
    """The git-sync layer of the configuration; empty when no git-sync variable is set.

    ``overrides`` are the options given as flags (non-None values); with the ``DAGSYNC_*``
    variables in ``environ`` they decide whether another source than git was chosen, in which
    case the git-only values are dropped.
    """
    if not is_active(environ):
        return Translated()
    b = _Builder(environ)
    for attr, candidates in TABLE.items():
        b.set(attr, candidates)
    _ref(b)
    _period(b)
    _link_default(b)
    _ssh(b, _dagsync_option(environ, overrides or {}, "ssh_known_hosts"))
    password = b.pick("password", PASSWORD_VARS, secret=True)
    register_secret(password)
    one_time = bool(b.pick("one_time", ONE_TIME_VARS))
    first_must_succeed = b.values.get("max_failures") == 0
    if first_must_succeed:
        # git-sync's 0: exit if the first sync fails; afterwards keep serving (daemon.py).
        b.values["max_failures"] = -1
    source = chosen_source(environ, overrides or {})
    if source not in (None, "git"):
        dropped = sorted(b.origins[a] for a in GIT_ONLY if a in b.values)
        for attr in GIT_ONLY:
            b.values.pop(attr, None)
            b.origins.pop(attr, None)
        if password is not None:
            dropped.append(b.origins.pop("password", "GITSYNC_PASSWORD"))
            password = None
        if dropped:
            b.note(
                logging.INFO,
                f"git-sync repository settings ignored source={source} "
                f"variables={','.join(dropped)}",
            )
    _note_ignored(b)
    return Translated(
        values=b.values,
        active=True,
        first_sync_must_succeed=first_must_succeed,
        one_time=one_time,
        password=password,
        origins=b.origins,
        notes=tuple(b.notes),
    )


def _ref(b: _Builder) -> None:
    """GITSYNC_REF, else GIT_SYNC_REV when it is not HEAD, else GIT_SYNC_BRANCH, else the rev.
    The v4 name wins over the older pair, with a warning when they disagree."""
    env = b.env
    rev = env.get(REV_VAR.name, "").strip() if _present(env, REV_VAR) else ""
    branch = env.get(BRANCH_VAR.name, "").strip() if _present(env, BRANCH_VAR) else ""
    legacy: tuple[str, str] | None = None
    if rev and rev != "HEAD":
        legacy = (REV_VAR.name, rev)
        if branch:
            b.note(logging.DEBUG, f"GIT_SYNC_REV wins over GIT_SYNC_BRANCH rev={rev}")
    elif branch:
        legacy = (BRANCH_VAR.name, branch)
    elif rev:
        legacy = (REV_VAR.name, rev)
    ref = env.get(REF_VAR.name, "").strip() if _present(env, REF_VAR) else ""
    if ref:
        b.values["ref"], b.origins["ref"] = ref, REF_VAR.name
        if legacy is not None and legacy[1] != ref:
            b.disagree("ref", REF_VAR.name, [legacy[0]])
    elif legacy is not None:
        b.values["ref"], b.origins["ref"] = legacy[1], legacy[0]


def _period(b: _Builder) -> None:
    """GIT_SYNC_WAIT (float seconds), which the chart renders only when the user sets it, wins
    over GITSYNC_PERIOD, as in git-sync; otherwise the v4 name wins."""
    period = b.pick("period", PERIOD_VARS)
    if _present(b.env, WAIT_VAR):
        wait = WAIT_VAR.parse(b.env[WAIT_VAR.name], WAIT_VAR.name)
        if period is not None and period != wait:
            b.disagree("period", WAIT_VAR.name, [b.origins["period"]])
        period = wait
        b.origins["period"] = WAIT_VAR.name
    if period is not None:
        b.values["period"] = period


def link_default(repo: str) -> str:
    """git-sync's default link: the last path element of the repository URL, unchanged
    (``…/dags.git`` gives ``dags.git``)."""
    leaf = repo.strip().strip("/").split("/")[-1]
    if "://" not in repo and ":" in leaf:  # scp-like git@host:repo.git
        leaf = leaf.rsplit(":", 1)[-1]
    return leaf


def _link_default(b: _Builder) -> None:
    if "link" not in b.values and b.values.get("repo"):
        leaf = link_default(str(b.values["repo"]))
        if leaf:
            b.values["link"] = leaf
            b.origins["link"] = "GITSYNC_REPO (git-sync's default link: its last path element)"


def is_ssh_url(repo: str) -> bool:
    url = repo.strip()
    if re.match(r"^(ssh|git\+ssh|ssh\+git)://", url):
        return True
    # scp-like [user@]host:path: a colon before the first slash and no scheme
    return "://" not in url and ":" in url.split("/", 1)[0]


def _dagsync_option(
    environ: Mapping[str, str], overrides: Mapping[str, Any], attr: str
) -> Any | None:
    """An option's value given through dagsync's own names (flag, then DAGSYNC_* variable)."""
    if overrides.get(attr) is not None:
        return overrides[attr]
    return environ.get("DAGSYNC_" + attr.upper())


def _ssh(b: _Builder, known_hosts_override: Any | None) -> None:
    """Key file default when ssh is in use; known-hosts file only when checking is on (as
    decided by DAGSYNC_SSH_KNOWN_HOSTS or a flag if given, which win)."""
    ssh_flag = bool(b.pick("ssh", SSH_VARS))
    b.origins.pop("ssh", None)
    repo = str(b.values.get("repo") or "")
    ssh_in_use = ssh_flag or (bool(repo) and is_ssh_url(repo))
    if not ssh_in_use:
        return
    if "ssh_key_file" not in b.values:
        b.values["ssh_key_file"] = DEFAULT_SSH_KEY_FILE
        b.origins["ssh_key_file"] = (
            f"GITSYNC_SSH_KEY_FILE (unset: git-sync's default {DEFAULT_SSH_KEY_FILE})"
        )
    known_hosts = b.values.get("ssh_known_hosts", True)
    if known_hosts_override is not None:
        known_hosts = parse_bool(known_hosts_override, "ssh-known-hosts")
    if known_hosts and "ssh_known_hosts_file" not in b.values:
        b.values["ssh_known_hosts_file"] = DEFAULT_KNOWN_HOSTS_FILE
        b.origins["ssh_known_hosts_file"] = (
            f"GITSYNC_SSH_KNOWN_HOSTS_FILE (unset: git-sync's default {DEFAULT_KNOWN_HOSTS_FILE}"
            " while GITSYNC_SSH_KNOWN_HOSTS is true)"
        )
    elif not known_hosts:
        b.values.pop("ssh_known_hosts_file", None)
        b.origins.pop("ssh_known_hosts_file", None)


def _note_ignored(b: _Builder) -> None:
    for name in sorted(b.env):
        if not name.startswith(PREFIXES):
            continue
        if name in IGNORED:
            b.note(logging.DEBUG, f"git-sync variable ignored, not needed by dagsync name={name}")
        elif name in ("GITSYNC_SSH", "GIT_SYNC_SSH"):
            b.note(logging.DEBUG, f"git-sync variable only selects the default ssh key name={name}")
        elif name not in KNOWN:
            b.note(logging.DEBUG, f"git-sync variable ignored, no dagsync equivalent name={name}")


def chosen_source(environ: Mapping[str, str], overrides: Mapping[str, Any]) -> str | None:
    """The source named through dagsync's own options (flag or DAGSYNC_* variable), if any."""
    explicit = overrides.get("source") or environ.get("DAGSYNC_SOURCE")
    if explicit:
        return str(explicit).strip().lower()
    for attr, source in OTHER_SOURCE_HINTS.items():
        if overrides.get(attr) or environ.get("DAGSYNC_" + attr.upper()):
            return source
    if overrides.get("repo") or environ.get("DAGSYNC_REPO"):
        return "git"
    return None


def require_files(
    translated: Translated,
    effective: Mapping[str, Any],
    unreadable: Callable[[str], str | None] | None = None,
) -> None:
    """Each file that a git-sync variable (or git-sync's default) names and that is still in
    effect must be readable now: a one-line error naming the variable, exit 2, before any
    network access (git-sync, too, refuses to start without its key or known_hosts file)."""
    why_not = unreadable or _unreadable
    for attr in FILE_OPTIONS:
        value = translated.values.get(attr)
        if value is None or effective.get(attr) != value:
            continue  # not from git-sync's variables, or overridden by dagsync's own
        reason = why_not(str(value))
        if reason is not None:
            origin = translated.origins.get(attr, attr)
            hint = ""
            if attr == "ssh_known_hosts_file":
                hint = "; set GITSYNC_SSH_KNOWN_HOSTS=false to skip host key checking"
            raise ConfigError(
                f"{origin}: cannot read {value}: {reason}{hint}", origin.split(" ", 1)[0]
            )


def _unreadable(path: str) -> str | None:
    try:
        with open(path, "rb"):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)


def implied_command(environ: Mapping[str, str]) -> str | None:
    """``run`` (or ``once`` for GITSYNC_ONE_TIME) when started with git-sync's variables only."""
    if not is_active(environ):
        return None
    b = _Builder(environ)
    return "once" if b.pick("one_time", ONE_TIME_VARS) else "run"
