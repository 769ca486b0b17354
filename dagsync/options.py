"""Every user-facing option: flag ``--name``, env ``DAGSYNC_NAME``, YAML key ``name``, its kind,
default and help. The CLI, the environment and the config file are all built from this table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ENV_PREFIX = "DAGSYNC_"
# Variables dagsync itself sets for hooks and checks; seeing them is not a typo.
ENV_SET_BY_DAGSYNC = frozenset({"DAGSYNC_CANDIDATE", "DAGSYNC_REVISION", "DAGSYNC_PATH"})


@dataclass(frozen=True)
class Option:
    """One user-facing option: flag ``--name``, env ``DAGSYNC_NAME``, YAML key ``name``."""

    name: str
    kind: str  # str | int | duration | size | bool | list | choice
    default: Any
    help: str
    group: str = "common"
    commands: frozenset[str] = frozenset({"once", "run"})
    choices: tuple[str, ...] = ()

    @property
    def attr(self) -> str:
        return self.name.replace("-", "_")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.attr.upper()


RUN = frozenset({"run"})
OPTIONS: tuple[Option, ...] = (
    Option(
        "source",
        "str",
        None,
        "git, oss, azure, s3, gcs, azureblob, local or a plug-in's name (default: inferred)",
    ),
    Option("root", "str", "./dagsync-root", "shared volume; state lives under ROOT/.dagsync"),
    Option("link", "str", "current", "symlink ROOT/LINK -> published revision"),
    Option("subpath", "str", None, "publish only this sub-folder of the source"),
    Option("include", "list", (), "gitignore-style glob to publish (repeatable)"),
    Option("exclude", "list", (), "gitignore-style glob to leave out (repeatable)"),
    Option("period", "duration", "60s", "time between syncs (+-10%% jitter)", commands=RUN),
    Option("sync-timeout", "duration", "5m", "abandon one sync attempt after this"),
    Option(
        "max-failures",
        "int",
        -1,
        "exit 1 on the N-th failure in a row; -1 = never",
        commands=RUN,
    ),
    Option("keep-revisions", "int", 2, "published revisions kept on disk"),
    Option("revision-grace", "duration", "5m", "keep a superseded revision at least this long"),
    Option("touch-file", "str", None, "touched after every publish (relative to the root)"),
    Option("error-file", "str", None, "last error as JSON; removed after the next success"),
    Option("check", "str", None, "gate before publish: 'python' or 'cmd:SHELL COMMAND'"),
    Option("max-bytes", "size", "2G", "refuse a revision larger than this"),
    Option("max-files", "int", 100000, "refuse a revision with more files than this"),
    Option("concurrency", "int", 8, "parallel requests for object-store sources"),
    Option("exechook-command", "str", None, "run through /bin/sh -c after each publish"),
    Option("webhook-url", "str", None, "POST JSON here after each publish"),
    Option("http-bind", "str", None, "metrics/health/trigger address (run: 0.0.0.0:9797)"),
    Option("trigger-secret-file", "str", None, "secret that POST /sync must prove"),
    # serving revisions to other pods (relay)
    Option(
        "serve-revisions",
        "bool",
        False,
        "serve published revisions on --http-bind under /v1/ (for --source relay)",
        "serve",
        commands=RUN,
    ),
    Option(
        "serve-token-file",
        "str",
        None,
        "bearer token every /v1/ request must send (re-read on change)",
        "serve",
        commands=RUN,
    ),
    Option("log-format", "choice", "text", "text or json", choices=("text", "json")),
    Option(
        "log-level",
        "choice",
        "info",
        "log level",
        choices=("debug", "info", "warning", "error"),
    ),
    Option("source-option", "list", (), "KEY=VALUE for a plug-in source (repeatable)"),
    # git
    Option("repo", "str", None, "git URL: https, ssh, git:// or file://", "git"),
    Option("ref", "str", "HEAD", "branch, tag or full commit SHA", "git"),
    Option("depth", "int", 1, "fetch depth; 0 = full history", "git"),
    Option(
        "submodules",
        "choice",
        "recursive",
        "submodules",
        "git",
        choices=("recursive", "shallow", "off"),
    ),
    Option("ssh-key-file", "str", None, "private key for ssh", "git"),
    Option("ssh-known-hosts-file", "str", None, "known_hosts for strict host checking", "git"),
    Option("ssh-known-hosts", "bool", True, "check ssh host keys (false disables)", "git"),
    Option("username", "str", None, "https basic-auth user", "git"),
    Option("password-file", "str", None, "https password or token (re-read every sync)", "git"),
    # oss
    Option("oss-endpoint", "str", None, "OSS endpoint URL", "oss"),
    Option("oss-bucket", "str", None, "OSS bucket", "oss"),
    Option("oss-prefix", "str", "", "only keys under this prefix (stripped)", "oss"),
    Option("oss-region", "str", None, "region for V4 signatures (default: V1 signatures)", "oss"),
    Option("oss-access-key-id", "str", None, "access key id (else env OSS_ACCESS_KEY_ID)", "oss"),
    Option("oss-access-key-secret-file", "str", None, "file with the access key secret", "oss"),
    # azure
    Option("azure-share", "str", None, "Azure Files share", "azure"),
    Option("azure-path", "str", "", "directory inside the share", "azure"),
    Option("azure-account-url", "str", None, "https://ACCOUNT.file.core.windows.net", "azure"),
    Option("azure-account-key-file", "str", None, "file with the account key", "azure"),
    Option("azure-sas-token-file", "str", None, "file with a SAS token", "azure"),
    # s3
    Option("s3-bucket", "str", None, "S3 bucket (or access point ARN)", "s3"),
    Option("s3-prefix", "str", "", "only keys under this prefix (stripped)", "s3"),
    Option("s3-region", "str", None, "region (default: the AWS chain's, else us-east-1)", "s3"),
    Option("s3-endpoint-url", "str", None, "S3-compatible endpoint (MinIO, Ceph, OSS)", "s3"),
    # gcs
    Option("gcs-bucket", "str", None, "Google Cloud Storage bucket", "gcs"),
    Option("gcs-prefix", "str", "", "only objects under this prefix (stripped)", "gcs"),
    Option("gcs-project", "str", None, "project (default: the credentials')", "gcs"),
    # azureblob
    Option("azureblob-container", "str", None, "Azure Blob container", "azureblob"),
    Option("azureblob-prefix", "str", "", "only blobs under this prefix (stripped)", "azureblob"),
    Option(
        "azureblob-account-url", "str", None, "https://ACCOUNT.blob.core.windows.net", "azureblob"
    ),
    # local
    Option("local-path", "str", None, "directory to publish", "local"),
    # relay
    Option(
        "relay-url", "str", None, "a 'dagsync run --serve-revisions', http(s)://HOST:PORT", "relay"
    ),
    Option("relay-token-file", "str", None, "file with the relay's bearer token", "relay"),
    Option("revision", "str", None, "publish exactly this revision id (default: current)", "relay"),
)
OPTIONS_BY_ATTR = {o.attr: o for o in OPTIONS}

# Options whose presence names the source when --source is not given.
SOURCE_HINTS = {
    "repo": "git",
    "oss_bucket": "oss",
    "oss_endpoint": "oss",
    "azure_share": "azure",
    "s3_bucket": "s3",
    "s3_endpoint_url": "s3",
    "gcs_bucket": "gcs",
    "azureblob_container": "azureblob",
    "local_path": "local",
    "relay_url": "relay",
}
