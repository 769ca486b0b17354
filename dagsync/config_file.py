"""The ``--config`` YAML file, and where each setting came from, for one-line errors.

An error about a value names the option; when the value was not a flag, it also says where it was
set (``DAGSYNC_PERIOD``, ``GITSYNC_PERIOD``, or ``dagsync.yaml:3``), so a person knows which file
or variable to fix.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from dagsync.errors import ConfigError


@dataclass(frozen=True)
class ConfigFile:
    """The file's values by option attr, and the line each key is on."""

    path: str
    values: dict[str, Any] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)

    def where(self, attr: str) -> str:
        line = self.lines.get(attr)
        return f"{self.path}:{line}" if line else self.path


def read_config_file(path: str, known: Iterable[str]) -> ConfigFile:
    """Parse ``path``; every problem is a one-line ConfigError naming the file (and line)."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError(f"--config: cannot read {path}: {exc.strerror}", "config") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"--config: {path} is not UTF-8 text: {exc.reason}", "config") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(yaml_error(path, exc), "config") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config: {path} must hold a mapping of option: value", "config")
    lines = _key_lines(node)
    known_attrs = sorted(known)
    out: dict[str, Any] = {}
    out_lines: dict[str, int] = {}
    for key, value in data.items():
        attr = str(key).replace("-", "_")
        line = lines.get(str(key))
        if attr not in known_attrs:
            where = f"{path}:{line}" if line else path
            close = difflib.get_close_matches(attr, known_attrs, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"--config: {where}: unknown key {key!r}{hint}", "config")
        out[attr] = value
        if line:
            out_lines[attr] = line
    return ConfigFile(path, out, out_lines)


def yaml_error(path: str, exc: yaml.YAMLError) -> str:
    """PyYAML's several-line report as one line: ``FILE:LINE:COLUMN: problem (context)``."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else path
    problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
    context = getattr(exc, "context", None)
    context_mark = getattr(exc, "context_mark", None)
    if context and context_mark is not None and context_mark is not mark:
        context += f" at line {context_mark.line + 1}, column {context_mark.column + 1}"
    detail = f" ({context})" if context else ""
    return f"--config: {where}: not valid YAML: {problem}{detail}"


def _key_lines(node: yaml.Node | None) -> dict[str, int]:
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {
        str(key.value): key.start_mark.line + 1
        for key, _value in node.value
        if isinstance(key, yaml.ScalarNode)
    }


def with_origin(exc: ConfigError, origins: Mapping[str, str]) -> ConfigError:
    """``exc`` with where its option's value was set, unless that was a flag (which the message
    already names) or the default."""
    attr = (exc.option or "").lstrip("-").replace("-", "_")
    origin = origins.get(attr)
    if not origin:
        return exc
    return ConfigError(f"{exc} (set by {origin})", exc.option)


def origins_of(
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
    envs: Mapping[str, str],
    gitsync: Mapping[str, str],
    config_file: ConfigFile | None,
) -> dict[str, str]:
    """Option attr -> where its value came from (precedence as in ``config.layer``); options
    given as flags are left out: the error message names the flag already."""
    out: dict[str, str] = {}
    if config_file is not None:
        out.update({attr: config_file.where(attr) for attr in config_file.values})
    out.update({attr: name.split(" ", 1)[0] for attr, name in gitsync.items()})
    out.update({attr: name for attr, name in envs.items() if name in environ})
    for attr, value in flags.items():
        if value is not None:
            out.pop(attr, None)
    return out
