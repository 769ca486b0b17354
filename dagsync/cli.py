"""Commands, options and exit codes: ``cli.main(argv) -> int`` maps every outcome in one place."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from enum import IntEnum
from pathlib import Path
from typing import Any

from dagsync import __version__
from dagsync.config import Config, load
from dagsync.errors import Abandoned, ConfigError, DagsyncError
from dagsync.options import OPTIONS, Option

log = logging.getLogger("dagsync")


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2


GROUP_TITLES = {
    "common": "common options",
    "git": "git source",
    "oss": "oss source (Alibaba Cloud OSS; credentials from OSS_ACCESS_KEY_ID/SECRET)",
    "azure": "azure source (Azure Files; or AZURE_STORAGE_CONNECTION_STRING)",
    "s3": "s3 source (AWS S3 or S3-compatible; credentials from the AWS chain)",
    "gcs": "gcs source (Google Cloud Storage; Application Default Credentials)",
    "azureblob": "azureblob source (Azure Blob; --azure-account-key-file/--azure-sas-token-file, "
    "AZURE_STORAGE_CONNECTION_STRING or the Azure default credential chain)",
    "local": "local source",
    "serve": "serving revisions to other pods (run --serve-revisions; see --source relay)",
    "relay": "relay source (another dagsync's run --serve-revisions)",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2, as every usage error
        raise ConfigError(f"{message}; see {self.prog} --help")


def _add_option(group: argparse._ArgumentGroup, opt: Option) -> None:
    default = "" if opt.default in (None, (), "") else f" (default: {opt.default})"
    help_text = f"{opt.help}{default} [env {opt.env}]"
    flag = f"--{opt.name}"
    if opt.kind == "list":
        group.add_argument(flag, dest=opt.attr, action="append", default=None, help=help_text)
    elif opt.kind == "bool":
        group.add_argument(
            flag, dest=opt.attr, nargs="?", const="true", metavar="BOOL", help=help_text
        )
    else:
        group.add_argument(flag, dest=opt.attr, metavar=opt.kind.upper(), help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="dagsync",
        description="Keep an Airflow DAG folder in sync from git, OSS, Azure Files or a local "
        "folder; every revision is published with an atomic symlink swap.",
    )
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    for command, text in (
        ("once", "sync once, publish, exit (initContainer, CI, a laptop)"),
        ("run", "long-running sidecar: sync on a period, on webhook, on file events"),
    ):
        p = sub.add_parser(command, help=text, description=text)
        p.add_argument("--config", metavar="FILE", help="YAML file of options [env DAGSYNC_CONFIG]")
        groups = {g: p.add_argument_group(t) for g, t in GROUP_TITLES.items()}
        for opt in OPTIONS:
            if command in opt.commands:
                _add_option(groups[opt.group], opt)
    status = sub.add_parser(
        "status",
        help="show the published revision: a summary on a terminal, else JSON",
        description="Show the published revision (exit 1 when none): a short summary on a "
        "terminal, the JSON document with --json or when the output is not a terminal.",
    )
    status.add_argument("--root", default=None, help="default ./dagsync-root [env DAGSYNC_ROOT]")
    status.add_argument("--link", default=None, help="default current [env DAGSYNC_LINK]")
    status.add_argument("--json", action="store_true", help="print JSON even on a terminal")
    sub.add_parser("version", help="print the version")
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run one command; returns the process exit code (docs/reference.md §4)."""
    env = dict(os.environ if environ is None else environ)
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return _dispatch(args, env)
    except ConfigError as exc:
        print(f"dagsync: error: {_redacted(exc)}", file=sys.stderr)
        return ExitCode.USAGE
    except DagsyncError as exc:
        print(f"dagsync: error: {_redacted(exc)}", file=sys.stderr)
        return ExitCode.FAILED


def _redacted(exc: BaseException) -> str:
    from dagsync.redact import redact

    # One line whatever the message (a library's text may hold several).
    return " | ".join(line.strip() for line in redact(str(exc)).splitlines() if line.strip())


def _dispatch(args: list[str], env: dict[str, str]) -> int:
    parser = build_parser()
    if not args or args[0].startswith("-") and args[0] not in ("-h", "--help"):
        from dagsync import compat

        implied = compat.implied_command(env)
        if implied is None:
            raise ConfigError(
                "a command is required: once, run, status or version (or git-sync's "
                "GITSYNC_* variables for run); see dagsync --help"
            )
        args = [implied, *args]
    ns, extra = parser.parse_known_args(args)
    if extra:
        command = f"dagsync {ns.command}" if ns.command else "dagsync"
        raise ConfigError(f"unrecognized arguments: {' '.join(extra)}; see {command} --help")
    if ns.command == "version":
        print(f"dagsync {__version__}")
        return ExitCode.OK
    if ns.command == "status":
        return _status(ns, env)
    flags = {k: v for k, v in vars(ns).items() if k != "command"}
    config = load(ns.command, flags, env)
    from dagsync import log as logsetup

    logsetup.setup(config.log_format, config.log_level)
    for level, message in config.notices:
        logging.getLogger("dagsync.config").log(level, message)
    return run_command(config)


def _status(ns: argparse.Namespace, env: Mapping[str, str]) -> int:
    from dagsync import terminal
    from dagsync.store import RevisionStore

    root = Path(ns.root or env.get("DAGSYNC_ROOT") or "./dagsync-root").absolute()
    link = ns.link or env.get("DAGSYNC_LINK") or "current"
    store = RevisionStore(root, link)
    published = store.published()
    human = not ns.json and terminal.is_terminal(sys.stdout)
    if published is None:
        none = {"revision": None, "root": str(root)}
        print(terminal.nothing_published(str(root), link) if human else json.dumps(none))
        return ExitCode.FAILED
    state = store.read_state()
    state.pop("history", None)
    state.update(revision=published.revision, path=str(published.path))
    print(terminal.status_summary(state) if human else json.dumps(state, indent=2))
    return ExitCode.OK


def run_command(config: Config) -> int:
    """Build everything (no network yet), then run ``once`` or ``run``."""
    from dagsync.app import App
    from dagsync.config_file import with_origin

    try:
        app = App.build(config)
    except ConfigError as exc:  # a source's own validation: say where the value was set
        raise with_origin(exc, config.origins) from None
    try:
        return app.once() if config.command == "once" else app.run()
    except Abandoned:
        log.info("stopped before the sync finished")
        return ExitCode.FAILED
    finally:
        app.close()
