"""``docs/reference.md``'s tables, generated from the code that defines them.

The reference is hand-written prose with generated blocks between markers::

    <!-- BEGIN generated: options -->
    ...
    <!-- END generated: options -->

``python -m dagsync.reference docs/reference.md`` rewrites every block in place (the prose is
kept); ``--check`` exits 1 when a block is stale. The option tables come from
:data:`dagsync.options.OPTIONS`, one section per option group in the table's order, so a new
option or group appears by regenerating. Metrics come from a fresh :class:`Metrics` registry and
git-sync's variables from :mod:`dagsync.gitsync_vars`.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from dagsync import gitsync_vars
from dagsync.options import OPTIONS, OPTIONS_BY_ATTR, Option
from dagsync.reference_data import (
    COMMAND_ARGS,
    DEFAULT_SHOWN,
    ENDPOINTS,
    EXIT_MEANINGS,
    GITSYNC_NOTES,
    HOOK_ENV,
    KIND_METAVAR,
    OPTION_NOTES,
    PARSER_FORMATS,
)

BLOCK = re.compile(
    r"(<!-- BEGIN generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)"
    r"(<!-- END generated: (?P=name) -->)",
    re.DOTALL,
)
REGENERATE = "python -m dagsync.reference docs/reference.md"


def cell(text: object) -> str:
    """One markdown table cell: pipes escaped, on one line."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# -- options --------------------------------------------------------------------------------
def group_titles() -> dict[str, str]:
    from dagsync.cli import GROUP_TITLES

    return dict(GROUP_TITLES)


def groups() -> list[str]:
    """Option groups in the order the option table first names them."""
    seen: list[str] = []
    for opt in OPTIONS:
        if opt.group not in seen:
            seen.append(opt.group)
    return seen


def flag_of(opt: Option) -> str:
    metavar = KIND_METAVAR.get(opt.kind, opt.kind.upper())
    if opt.kind == "str" and opt.name.endswith(("-file", "-url", "-path", "root")):
        metavar = {"e": "FILE", "l": "URL", "h": "DIR", "t": "DIR"}[opt.name[-1]]
    if opt.choices:
        metavar = "|".join(opt.choices)
    return f"`--{opt.name} {metavar}`" if metavar else f"`--{opt.name}`"


def default_of(opt: Option) -> str:
    if opt.attr in DEFAULT_SHOWN:
        return DEFAULT_SHOWN[opt.attr]
    value = opt.default
    if value is None or value == ():
        return "none"
    if value == "":
        return '`""`'
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def meaning_of(opt: Option) -> str:
    text = opt.help.replace("%%", "%")
    note = OPTION_NOTES.get(opt.attr)
    return f"{text}. {note}" if note else text


def options_block() -> str:
    titles = group_titles()
    parts = []
    for group in groups():
        parts.append(f"### {titles.get(group, group)}\n")
        rows = [
            (
                flag_of(o),
                f"`{o.env}`",
                f"`{o.attr}`",
                default_of(o),
                ", ".join(sorted(o.commands)),
                meaning_of(o),
            )
            for o in OPTIONS
            if o.group == group
        ]
        parts.append(table(("flag", "env", "YAML key", "default", "commands", "meaning"), rows))
    return "\n".join(parts)


# -- commands and exit codes ----------------------------------------------------------------
def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _helps(parser: argparse.ArgumentParser) -> dict[str, str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {a.dest: a.help or "" for a in action._choices_actions}
    return {}


def commands_block() -> str:
    from dagsync.cli import build_parser

    parser = build_parser()
    helps = _helps(parser)
    rows = [
        (f"`dagsync {name} {COMMAND_ARGS.get(name, '')}`".replace(" `", "`"), helps.get(name, ""))
        for name in _subparsers(parser)
    ]
    return table(("command", "what it does"), rows)


def command_flags() -> dict[str, list[str]]:
    """Every flag each sub-command accepts (for the completeness test)."""
    from dagsync.cli import build_parser

    out: dict[str, list[str]] = {}
    for name, sub in _subparsers(build_parser()).items():
        out[name] = [s for a in sub._actions for s in a.option_strings if s.startswith("--")]
    return out


def exit_codes_block() -> str:
    from dagsync.cli import ExitCode

    return table(
        ("code", "name", "meaning"),
        ((int(c), f"`{c.name}`", EXIT_MEANINGS.get(c.name, "")) for c in ExitCode),
    )


def endpoints_block() -> str:
    return table(("endpoint", "commands", "answer"), ENDPOINTS)


# -- metrics --------------------------------------------------------------------------------
def metric_rows() -> list[tuple[str, str, str, str]]:
    """(name, type, labels, help) of every metric a fresh registry holds."""
    from prometheus_client import CollectorRegistry

    from dagsync.metrics import Metrics

    registry = CollectorRegistry()
    metrics = Metrics(registry, "SOURCE")
    values: dict[str, dict[str, set[str]]] = {}
    for family in registry.collect():
        for sample in family.samples:
            for label, value in sample.labels.items():
                if label != "le":
                    values.setdefault(family.name, {}).setdefault(label, set()).add(value)
    rows = []
    for metric in vars(metrics).values():
        describe = getattr(metric, "describe", None)
        if not callable(describe):
            continue
        family = describe()[0]
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = []
        for label in getattr(metric, "_labelnames", ()):
            seen = sorted(values.get(family.name, {}).get(label, ()))
            shown = " = " + " | ".join(seen) if len(seen) > 1 else ""
            labels.append(f"`{label}`{shown}")
        rows.append((f"`{name}`", family.type, ", ".join(labels), family.documentation))
    return rows


def metrics_block() -> str:
    return table(("metric", "type", "labels", "meaning"), metric_rows())


# -- git-sync variables ---------------------------------------------------------------------
def _format(var: gitsync_vars.Var) -> str:
    text = PARSER_FORMATS.get(getattr(var.parse, "__name__", ""), "text")
    return text + (" (0 = unset)" if var.zero_is_unset else "")


def gitsync_rows() -> list[tuple[str, str, str, str]]:
    """(option, variables best first, value format, note) for every variable compat knows."""
    special: dict[str, tuple[gitsync_vars.Var, ...]] = {
        "period": (*gitsync_vars.PERIOD_VARS, gitsync_vars.WAIT_VAR),
        "ref": (gitsync_vars.REF_VAR, gitsync_vars.REV_VAR, gitsync_vars.BRANCH_VAR),
        "password": gitsync_vars.PASSWORD_VARS,
        "one_time": gitsync_vars.ONE_TIME_VARS,
        "ssh": gitsync_vars.SSH_VARS,
    }
    rows = []
    for attr, variables in {**gitsync_vars.TABLE, **special}.items():
        option = f"`--{attr.replace('_', '-')}`" if attr in OPTIONS_BY_ATTR else attr
        names = ", ".join(f"`{v.name}`" for v in variables)
        formats = ", ".join(dict.fromkeys(f"{v.name}: {_format(v)}" for v in variables))
        if len({_format(v) for v in variables}) == 1:
            formats = _format(variables[0])
        rows.append((option, names, formats, GITSYNC_NOTES.get(attr, "")))
    ignored = ", ".join(f"`{n}`" for n in sorted(gitsync_vars.IGNORED))
    rows.append(("(none)", ignored, "", "accepted and ignored (a debug line each)"))
    return rows


def gitsync_block() -> str:
    return table(("dagsync option", "git-sync variables, best first", "format", "note"),
                 gitsync_rows())  # fmt: skip


def hook_env_block() -> str:
    from dagsync.options import ENV_SET_BY_DAGSYNC

    missing = sorted(ENV_SET_BY_DAGSYNC - set(HOOK_ENV))
    rows = [(f"`{n}`", HOOK_ENV[n]) for n in HOOK_ENV] + [(f"`{n}`", "") for n in missing]
    return table(("variable", "set for"), rows)


RENDERERS: dict[str, Callable[[], str]] = {
    "commands": commands_block,
    "options": options_block,
    "exit-codes": exit_codes_block,
    "endpoints": endpoints_block,
    "metrics": metrics_block,
    "gitsync": gitsync_block,
    "hook-env": hook_env_block,
}


def render(document: str) -> str:
    """``document`` with every generated block rewritten (unknown block names are an error)."""

    def replace(m: re.Match[str]) -> str:
        name = m.group("name")
        if name not in RENDERERS:
            raise KeyError(f"unknown generated block {name!r}")
        return m.group(1) + RENDERERS[name]() + m.group(4)

    return BLOCK.sub(replace, document)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dagsync.reference",
        description="Regenerate the generated blocks of the reference document in place.",
    )
    parser.add_argument("path", nargs="?", default="docs/reference.md")
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    path = Path(args.path)
    before = path.read_text(encoding="utf-8")
    after = render(before)
    if after == before:
        print(f"{path}: up to date")
        return 0
    if args.check:
        print(f"{path}: stale; run {REGENERATE}", file=sys.stderr)
        return 1
    path.write_text(after, encoding="utf-8")
    print(f"{path}: regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
