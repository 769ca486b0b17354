"""The typed configuration, built once from flags > env > git-sync env > YAML file > defaults.

This is the only module that reads ``os.environ`` (callers pass it in). Everything is validated
here, before any network access; errors are one line naming the flag.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dagsync.config_file import ConfigFile, origins_of, read_config_file, with_origin
from dagsync.errors import ConfigError
from dagsync.options import (
    ENV_PREFIX,
    ENV_SET_BY_DAGSYNC,
    OPTIONS,
    OPTIONS_BY_ATTR,
    SOURCE_HINTS,
)
from dagsync.units import as_list, parse_bool, parse_duration, parse_int, parse_size

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Config:
    """Everything one dagsync process needs, validated."""

    command: str
    source: str
    root: Path
    link: str
    subpath: str | None
    include: tuple[str, ...]
    exclude: tuple[str, ...]
    period: float
    sync_timeout: float
    max_failures: int
    keep_revisions: int
    revision_grace: float
    touch_file: Path | None
    error_file: Path | None
    check: str | None
    max_bytes: int
    max_files: int
    concurrency: int
    exechook_command: str | None
    webhook_url: str | None
    http_bind: str | None
    trigger_secret_file: Path | None
    log_format: str
    log_level: str
    source_option: Mapping[str, str]
    repo: str | None
    ref: str
    depth: int
    submodules: str
    ssh_key_file: Path | None
    ssh_known_hosts_file: Path | None
    ssh_known_hosts: bool
    username: str | None
    password_file: Path | None
    oss_endpoint: str | None
    oss_bucket: str | None
    oss_prefix: str
    oss_region: str | None
    oss_access_key_id: str | None
    oss_access_key_secret_file: Path | None
    azure_share: str | None
    azure_path: str
    azure_account_url: str | None
    azure_account_key_file: Path | None
    azure_sas_token_file: Path | None
    s3_bucket: str | None
    s3_prefix: str
    s3_region: str | None
    s3_endpoint_url: str | None
    gcs_bucket: str | None
    gcs_prefix: str
    gcs_project: str | None
    azureblob_container: str | None
    azureblob_prefix: str
    azureblob_account_url: str | None
    local_path: Path | None
    # serving (relay) and the relay source
    serve_revisions: bool = False
    serve_token_file: Path | None = None
    relay_url: str | None = None
    relay_token_file: Path | None = None
    revision: str | None = None
    # Secrets that arrive through the environment; never in argv, never in repr.
    password: str | None = field(default=None, repr=False)
    oss_env_access_key_id: str | None = field(default=None, repr=False)
    oss_env_access_key_secret: str | None = field(default=None, repr=False)
    oss_env_session_token: str | None = field(default=None, repr=False)
    azure_connection_string: str | None = field(default=None, repr=False)
    # The variables the cloud SDKs' credential chains read (AWS_*, GOOGLE_*, AZURE_*, ...):
    # the s3/gcs/azureblob sources watch the credential files they name.
    sdk_env: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    # git-sync mode (docs/reference.md §7).
    gitsync_mode: bool = False
    first_sync_must_succeed: bool = False
    # (logging level, message) lines from reading the configuration (e.g. git-sync variables
    # that disagree), logged by the CLI once logging is set up.
    notices: tuple[tuple[int, str], ...] = field(default=(), repr=False, compare=False)
    # The environment for child processes (git, hooks, checks), without dagsync's own
    # variables and without cloud credentials, which only the SDK sources need.
    child_env: Mapping[str, str] = field(default_factory=dict, repr=False)
    # Option attr -> where a value not given as a flag was set (a variable, FILE:LINE), so an
    # error found later (a source's own checks) can say which file or variable to fix.
    origins: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def link_path(self) -> Path:
        link = Path(self.link)
        return link if link.is_absolute() else self.root / link

    def resolve_under_root(self, path: Path | None) -> Path | None:
        if path is None:
            return None
        return path if path.is_absolute() else self.root / path


def read_yaml(path: str) -> dict[str, Any]:
    """The --config file as a mapping of option attrs to raw values."""
    return read_config_file(path, OPTIONS_BY_ATTR).values


def env_layer(environ: Mapping[str, str]) -> dict[str, Any]:
    """Raw values from ``DAGSYNC_*`` variables (unknown ones: see :func:`unknown_env`)."""
    known = {o.env: o.attr for o in OPTIONS}
    return {known[name]: value for name, value in environ.items() if name in known}


def unknown_env(environ: Mapping[str, str]) -> list[str]:
    """``DAGSYNC_*`` names that are no option: probably typos, worth a warning, never fatal."""
    known = {o.env for o in OPTIONS} | ENV_SET_BY_DAGSYNC | {"DAGSYNC_CONFIG"}
    return sorted(n for n in environ if n.startswith(ENV_PREFIX) and n not in known)


def layer(
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
    compat: Mapping[str, Any] | None = None,
    config_file: ConfigFile | None = None,
) -> dict[str, Any]:
    """Merge the layers by precedence: flag > DAGSYNC_* env > git-sync env > file > default.
    The file is read here unless ``config_file`` is given."""
    if config_file is None:
        config_file = _config_file(flags, environ)
    merged: dict[str, Any] = {o.attr: o.default for o in OPTIONS}
    if config_file is not None:
        merged.update(config_file.values)
    merged.update(compat or {})
    merged.update(env_layer(environ))
    merged.update({k: v for k, v in flags.items() if v is not None and k in OPTIONS_BY_ATTR})
    return merged


def _config_file(flags: Mapping[str, Any], environ: Mapping[str, str]) -> ConfigFile | None:
    path = flags.get("config") or environ.get("DAGSYNC_CONFIG")
    if not path:
        return None
    try:
        return read_config_file(str(path), OPTIONS_BY_ATTR)
    except ConfigError as exc:
        origins = {} if flags.get("config") else {"config": "DAGSYNC_CONFIG"}
        raise with_origin(exc, origins) from None


def _path(value: Any) -> Path | None:
    return Path(str(value)) if value not in (None, "") else None


def _source_options(values: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--source-option: expected KEY=VALUE, got {item!r}", "source-option")
        out[key] = value
    return out


def infer_source(raw: Mapping[str, Any]) -> str:
    if raw.get("source"):
        return str(raw["source"]).strip().lower()
    found = sorted({src for attr, src in SOURCE_HINTS.items() if raw.get(attr)})
    if len(found) == 1:
        return found[0]
    if not found:
        raise ConfigError(
            "--source is required (git, oss, azure, s3, gcs, azureblob, local), or give --repo, "
            "--oss-bucket, --azure-share, --s3-bucket, --gcs-bucket, --azureblob-container or "
            "--local-path",
            "source",
        )
    raise ConfigError(f"--source is ambiguous: options for {', '.join(found)} given", "source")


def build(
    command: str,
    raw: Mapping[str, Any],
    environ: Mapping[str, str],
    *,
    gitsync_mode: bool = False,
    first_sync_must_succeed: bool = False,
    password: str | None = None,
    notices: tuple[tuple[int, str], ...] = (),
) -> Config:
    """Turn merged raw values into a validated :class:`Config`."""
    http_bind = raw.get("http_bind")
    if http_bind is None:
        http_bind = "0.0.0.0:9797" if command == "run" else ""
    choice = {}
    for attr in ("log_format", "log_level", "submodules"):
        opt = OPTIONS_BY_ATTR[attr]
        value = str(raw[attr]).strip().lower()
        if value not in opt.choices:
            raise ConfigError(
                f"--{opt.name}: must be one of {', '.join(opt.choices)}, got {raw[attr]!r}",
                opt.name,
            )
        choice[attr] = value
    ints = {
        a: parse_int(raw[a], OPTIONS_BY_ATTR[a].name)
        for a in ("max_failures", "keep_revisions", "max_files", "concurrency", "depth")
    }
    for attr, low in (("keep_revisions", 1), ("max_files", 1), ("concurrency", 1), ("depth", 0)):
        if ints[attr] < low:
            raise ConfigError(
                f"--{OPTIONS_BY_ATTR[attr].name}: must be at least {low}",
                OPTIONS_BY_ATTR[attr].name,
            )
    period = parse_duration(raw["period"], "period")
    if period <= 0:
        raise ConfigError("--period: must be greater than zero", "period")
    sync_timeout = parse_duration(raw["sync_timeout"], "sync-timeout")
    if sync_timeout <= 0:
        raise ConfigError("--sync-timeout: must be greater than zero", "sync-timeout")
    check = raw.get("check") or None
    if check is not None and check != "python" and not str(check).startswith("cmd:"):
        raise ConfigError(f"--check: use 'python' or 'cmd:COMMAND', got {check!r}", "check")
    root = Path(str(raw["root"] or "./dagsync-root")).absolute()
    link = str(raw["link"] or "current")
    if link.strip("/") in ("", ".", "..", ".dagsync") or "\x00" in link:
        raise ConfigError(f"--link: invalid link name {link!r}", "link")
    cfg = Config(
        command=command,
        source=infer_source(raw),
        root=root,
        link=link,
        subpath=(str(raw["subpath"]).strip("/") or None) if raw.get("subpath") else None,
        include=as_list(raw.get("include")),
        exclude=as_list(raw.get("exclude")),
        period=period,
        sync_timeout=sync_timeout,
        max_failures=ints["max_failures"],
        keep_revisions=ints["keep_revisions"],
        revision_grace=parse_duration(raw["revision_grace"], "revision-grace"),
        touch_file=_path(raw.get("touch_file")),
        error_file=_path(raw.get("error_file")),
        check=check,
        max_bytes=parse_size(raw["max_bytes"], "max-bytes"),
        max_files=ints["max_files"],
        concurrency=ints["concurrency"],
        exechook_command=raw.get("exechook_command") or None,
        webhook_url=raw.get("webhook_url") or None,
        http_bind=str(http_bind).strip() or None,
        trigger_secret_file=_path(raw.get("trigger_secret_file")),
        log_format=choice["log_format"],
        log_level=choice["log_level"],
        source_option=_source_options(as_list(raw.get("source_option"))),
        repo=raw.get("repo") or None,
        ref=str(raw.get("ref") or "HEAD"),
        depth=ints["depth"],
        submodules=choice["submodules"],
        ssh_key_file=_path(raw.get("ssh_key_file")),
        ssh_known_hosts_file=_path(raw.get("ssh_known_hosts_file")),
        ssh_known_hosts=parse_bool(raw["ssh_known_hosts"], "ssh-known-hosts"),
        username=raw.get("username") or None,
        password_file=_path(raw.get("password_file")),
        oss_endpoint=raw.get("oss_endpoint") or None,
        oss_bucket=raw.get("oss_bucket") or None,
        oss_prefix=str(raw.get("oss_prefix") or ""),
        oss_region=raw.get("oss_region") or None,
        oss_access_key_id=raw.get("oss_access_key_id") or None,
        oss_access_key_secret_file=_path(raw.get("oss_access_key_secret_file")),
        azure_share=raw.get("azure_share") or None,
        azure_path=str(raw.get("azure_path") or "").strip("/"),
        azure_account_url=raw.get("azure_account_url") or None,
        azure_account_key_file=_path(raw.get("azure_account_key_file")),
        azure_sas_token_file=_path(raw.get("azure_sas_token_file")),
        s3_bucket=str(raw.get("s3_bucket") or "").strip() or None,
        s3_prefix=str(raw.get("s3_prefix") or ""),
        s3_region=str(raw.get("s3_region") or "").strip() or None,
        s3_endpoint_url=str(raw.get("s3_endpoint_url") or "").strip() or None,
        gcs_bucket=str(raw.get("gcs_bucket") or "").strip() or None,
        gcs_prefix=str(raw.get("gcs_prefix") or ""),
        gcs_project=str(raw.get("gcs_project") or "").strip() or None,
        azureblob_container=str(raw.get("azureblob_container") or "").strip() or None,
        azureblob_prefix=str(raw.get("azureblob_prefix") or ""),
        azureblob_account_url=str(raw.get("azureblob_account_url") or "").strip() or None,
        local_path=_path(raw.get("local_path")),
        serve_revisions=parse_bool(raw["serve_revisions"], "serve-revisions"),
        serve_token_file=_path(raw.get("serve_token_file")),
        relay_url=(str(raw["relay_url"]).strip() or None) if raw.get("relay_url") else None,
        relay_token_file=_path(raw.get("relay_token_file")),
        revision=(str(raw["revision"]).strip() or None) if raw.get("revision") else None,
        password=password,
        oss_env_access_key_id=environ.get("OSS_ACCESS_KEY_ID") or None,
        oss_env_access_key_secret=environ.get("OSS_ACCESS_KEY_SECRET") or None,
        oss_env_session_token=environ.get("OSS_SESSION_TOKEN") or None,
        azure_connection_string=environ.get("AZURE_STORAGE_CONNECTION_STRING") or None,
        sdk_env={k: v for k, v in environ.items() if k.startswith(SDK_ENV_PREFIXES)},
        gitsync_mode=gitsync_mode,
        first_sync_must_succeed=first_sync_must_succeed,
        notices=notices,
        child_env=child_environment(environ),
    )
    if cfg.serve_revisions and cfg.http_bind is None:
        raise ConfigError("--serve-revisions needs --http-bind (the /v1/ endpoints)", "http-bind")
    for attr in ("trigger_secret_file", "serve_token_file", "relay_token_file"):
        require_readable(getattr(cfg, attr), OPTIONS_BY_ATTR[attr].name)
    return cfg


SDK_ENV_PREFIXES = ("AWS_", "GOOGLE_", "CLOUDSDK_", "STORAGE_EMULATOR_HOST", "AZURE_")
SECRET_ENV = frozenset(
    {
        "OSS_ACCESS_KEY_ID",
        "OSS_ACCESS_KEY_SECRET",
        "OSS_SESSION_TOKEN",
        "AZURE_STORAGE_CONNECTION_STRING",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AZURE_CLIENT_SECRET",
        "AZURE_CLIENT_CERTIFICATE_PASSWORD",
        "GITSYNC_PASSWORD",
        "GIT_SYNC_PASSWORD",
    }
)


def child_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """What child processes inherit: everything but dagsync's settings and secrets."""
    return {
        k: v
        for k, v in environ.items()
        if k not in SECRET_ENV and not k.startswith((ENV_PREFIX, "GITSYNC_", "GIT_SYNC_"))
    }


def require_readable(path: Path | None, option: str) -> None:
    """A file named by an option must be readable now, not at the first sync."""
    if path is None:
        return
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ConfigError(f"--{option}: cannot read {path}: {exc.strerror}", option) from None


def load(
    command: str,
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
) -> Config:
    """The configuration for ``command`` from flags and the environment (and git-sync's)."""
    from dagsync import compat

    given = {k: v for k, v in flags.items() if v is not None}
    translated = compat.translate(environ, given)
    config_file = _config_file(flags, environ)
    raw = layer(flags, environ, translated.values, config_file)
    envs = {o.attr: o.env for o in OPTIONS}
    origins = origins_of(flags, environ, envs, translated.origins, config_file)
    try:
        config = build(
            command,
            raw,
            environ,
            gitsync_mode=translated.active,
            first_sync_must_succeed=translated.first_sync_must_succeed
            and "max_failures" not in _explicit(flags, environ),
            password=translated.password,
            notices=tuple(translated.notes)
            + tuple(
                (logging.WARNING, f"ignoring unknown environment variable {name} (a typo?)")
                for name in unknown_env(environ)
            ),
        )
    except ConfigError as exc:
        raise with_origin(exc, origins) from None
    if config.source == "git":
        compat.require_files(translated, raw)
    return replace(config, origins=origins)


def _explicit(flags: Mapping[str, Any], environ: Mapping[str, str]) -> set[str]:
    """Options the user set through dagsync's own names (these beat git-sync's rules)."""
    return {k for k, v in flags.items() if v is not None} | {
        o.attr for o in OPTIONS if o.env in environ
    }
