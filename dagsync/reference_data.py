"""The words ``docs/reference.md`` adds to what the code already says (see reference.py).

Everything structural (which options, groups, env names, defaults, metrics, variables) comes from
the code; this module holds only the longer explanations, as data.
"""

from __future__ import annotations

# How an option's kind is shown after its flag (``--period DURATION``).
KIND_METAVAR = {
    "str": "TEXT",
    "int": "N",
    "duration": "DURATION",
    "size": "SIZE",
    "bool": "BOOL",
    "list": "TEXT",
    "choice": "",
}

# Defaults that depend on something else, shown in words.
DEFAULT_SHOWN = {
    "source": "inferred from the source options given",
    "http_bind": "`0.0.0.0:9797` for `run`, off for `once`",
    "oss_access_key_id": "env `OSS_ACCESS_KEY_ID`",
}

# A sentence or two beyond the option's --help text.
OPTION_NOTES = {
    "root": "Created if missing; may be a mount point that is not empty. dagsync never deletes "
    "anything in it outside `.dagsync/` (and its own link)",
    "link": "Point Airflow's `dags_folder` at it. May also be a path (relative to the root, or "
    "absolute); the link stays relative to where it lives",
    "subpath": "git: only that subtree's file contents are downloaded when the server supports "
    "partial clone; stores: a key prefix. A subpath the revision lacks fails the sync",
    "include": "Paths relative to the subpath, in the dialect of `.airflowignore`",
    "period": "Failed syncs are retried sooner, with exponential backoff (1 s doubling, capped "
    "at the period)",
    "max_failures": "`0` and `1` both exit on the first failure",
    "keep_revisions": "Readers of an old revision keep working while it is on disk",
    "error_file": "Written atomically: `result`, `message` (secrets masked), `revision`, "
    "`source`, `time`, `timestamp`",
    "check": "`python`: every `.py` must compile (the error names the file and line). "
    "`cmd:…`: runs in the candidate folder with env `DAGSYNC_CANDIDATE`; a non-zero exit "
    "rejects the revision, which is not retried until the source changes",
    "exechook_command": "cwd the new tree, env `DAGSYNC_REVISION`, `DAGSYNC_PATH`, "
    "`GITSYNC_HASH`; also once at start-up; retried with backoff in `run`, not in `once` (a "
    "failure exits 1 and the revision stays published)",
    "webhook_url": 'Body `{"revision", "source"}`, header `Gitsync-Hash`; `user:pass@` in '
    "the URL becomes Basic auth",
    "http_bind": "An empty value disables it. See [HTTP endpoints](#5-http-endpoints)",
    "trigger_secret_file": "GitHub `X-Hub-Signature-256`, GitLab `X-Gitlab-Token` or "
    "`Authorization: Bearer` must match the file",
    "log_format": "One line per event; json has `ts`, `level`, `event`, `logger` plus fields. "
    "Secrets are masked at the formatter",
    "repo": "Credentials never go into the URL or the process arguments",
    "ssh_known_hosts_file": "Strict host key checking is on when it is given",
    "password_file": "Needs `--username`",
    "oss_endpoint": "e.g. `https://oss-cn-beijing-internal.aliyuncs.com` (plain `http://` is "
    "accepted for private endpoints)",
    "oss_prefix": "A folder: `dags` matches `dags/…`, not `dags-old/…`",
    "oss_access_key_secret_file": "Re-read when it changes (secret rotation)",
    "azure_account_key_file": "The CSI driver's secret works; re-read when it changes",
    "azure_sas_token_file": "Re-read when it changes",
    "local_path": "A checkout, an NFS or ossfs mount, …; `run` reacts to file events within "
    "about a second (debounced) and rescans every period",
}

# Arguments shown after each sub-command's name.
COMMAND_ARGS = {
    "once": "[OPTIONS]",
    "run": "[OPTIONS]",
    "status": "[--root DIR] [--link NAME] [--json]",
    "version": "",
}

# ExitCode member name -> meaning.
EXIT_MEANINGS = {
    "OK": "`once`: published or already up to date (and its hooks succeeded); `run`: stopped "
    "by SIGTERM/SIGINT after finishing or abandoning the current sync cleanly; `status`: a "
    "revision is published",
    "FAILED": "`once`: the sync failed, or a hook failed (the revision stays published); "
    "`run`: `--max-failures` reached; `status`: nothing published yet",
    "USAGE": "bad usage or configuration (unknown source, missing required option, unreadable "
    "file, invalid value or config file): one line on stderr naming the option or file, "
    "before any network access",
}

# (endpoint, commands, answer) for --http-bind.
ENDPOINTS = (
    ("`GET /metrics`", "run, once", "Prometheus text format (see [Metrics](#6-metrics))"),
    (
        "`GET /healthz`",
        "run, once",
        "200 while the sync loop is alive; 503 if it has not completed an attempt in "
        "`3 × period + sync-timeout`",
    ),
    (
        "`GET /readyz`",
        "run, once",
        "200 once a revision is published (also one found on disk at start) and from then on, "
        "so a source outage never takes Airflow out of service; 503 before",
    ),
    (
        "`GET /status`",
        "run, once",
        "JSON: `source`, `revision`, `published_at`, `last_attempt_at`, `last_error` (secrets "
        "masked), `consecutive_failures`, `rejected_revision`, `ready`, `sync_in_progress`, …",
    ),
    (
        "`POST /sync`",
        "run",
        "202 and a sync starts now; requests during a sync coalesce into one more; 401 when "
        "`--trigger-secret-file` is set and not proved; 413 for bodies over 1 MiB; 503 under "
        "`once`",
    ),
    (
        "`GET /v1/revisions`",
        "run --serve-revisions",
        'JSON `{"current": ID, "revisions": [{"id", "published_at", "files", "bytes"}, …]}`, '
        "newest first: the revisions on disk; 401 without the `--serve-token-file` bearer token",
    ),
    (
        "`GET /v1/revisions/ID/manifest`",
        "run --serve-revisions",
        'JSON `{"id", "source", "entries": [{"path", "size", "mode", "sha256" or "target"}]}`; '
        "404 when ID is not on disk",
    ),
    (
        "`GET /v1/revisions/ID/files/PATH`",
        "run --serve-revisions",
        "the file's bytes, `ETag` = its sha256; PATH percent-encoded and relative; `..`, "
        "absolute or NUL → 400; unknown or a symlink leading out → 404",
    ),
    (
        "`GET /v1/revisions/ID/archive.tar`",
        "run --serve-revisions",
        "the whole revision as a POSIX tar stream (modes 0644/0755, symlinks as symlinks); gzip "
        "with `Accept-Encoding: gzip`; a revision being streamed is not deleted under it",
    ),
    (
        "`GET /`",
        "git-sync mode",
        "only when started with git-sync's variables: 503 until the first publish, 200 after",
    ),
)

# git-sync value parsers (dagsync.compat) by function name -> the format they accept.
PARSER_FORMATS = {
    "_text": "text",
    "_int": "integer",
    "_bool": "Go bool",
    "parse_go_duration": "Go duration",
    "_float_seconds": "float seconds",
    "_int_seconds": "int seconds",
    "_submodules": "recursive, shallow or off",
    "_http_bind": "address, `:PORT` = all interfaces",
}

# Rules of dagsync.compat beyond "the first variable set wins", by option attr.
GITSYNC_NOTES = {
    "link": "unset: the last path element of the repository URL, as in git-sync",
    "ref": "`GIT_SYNC_REV` other than `HEAD` wins over `GIT_SYNC_BRANCH`",
    "period": "`GIT_SYNC_WAIT` wins over `GITSYNC_PERIOD` (the chart renders it only when set)",
    "max_failures": "0: exit if the first sync fails, then keep serving and retry",
    "ssh_key_file": "unset with ssh in use: `/etc/git-secret/ssh`",
    "ssh_known_hosts_file": "unset while checking is on: `/etc/git-secret/known_hosts`",
    "http_bind": "then `GET /` answers as git-sync's",
    "password": "not an option: from the environment only",
    "one_time": "true: behave as `once` instead of `run`",
    "ssh": "true: ssh in use (selects the default key file)",
}

# Variables dagsync sets for child processes.
HOOK_ENV = {
    "DAGSYNC_CANDIDATE": "`--check cmd:…`: the candidate folder (also its cwd)",
    "DAGSYNC_REVISION": "`--exechook-command`: the published revision id",
    "DAGSYNC_PATH": "`--exechook-command`: the published folder (also its cwd)",
    "GITSYNC_HASH": "`--exechook-command`: the revision id, as git-sync sets it",
}
