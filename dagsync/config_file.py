"""The ``--config`` YAML file, and where each setting came from, for one-line errors.

An error about a value names the option; when the value was not a flag, it also says where it was
set (``DAGSYNC_PERIOD``, ``GITSYNC_PERIOD``, or ``dagsync.yaml:3``), so a person knows which file
or variable to fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dagsync.errors import ConfigError
from dagsync.options import Option

if TYPE_CHECKING:
    import yaml  # imported when a --config file is read: start-up without one skips it


@dataclass(frozen=True)
class ConfigFile:
    """The file's values by option attr, and the line each key is on."""

    path: str
    values: dict[str, Any] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)

    def where(self, attr: str) -> str:
        line = self.lines.get(attr)
        return f"{self.path}:{line}" if line else self.path


def read_config_file(path: str, known: Mapping[str, Option]) -> ConfigFile:
    """Parse ``path``; every problem is a one-line ConfigError naming the file (and line).
    ``known`` maps option attrs to their options (for the kinds of value each accepts)."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError(f"--config: cannot read {path}: {exc.strerror}", "config") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"--config: {path} is not UTF-8 text: {exc.reason}", "config") from None
    import yaml

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
            import difflib

            close = difflib.get_close_matches(attr, known_attrs, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"--config: {where}: unknown key {key!r}{hint}", "config")
        if value is None:
            continue  # "key:" with nothing after it: as if the key were not there
        problem = _wrong_type(known[attr], value)
        if problem:
            where = f"{path}:{line}" if line else path
            raise ConfigError(f"--config: {where}: {key}: {problem}", "config")
        if known[attr].kind == "list" and not isinstance(value, list):
            value = str(value)  # comma-separated, as in the environment
        out[attr] = value
        if line:
            out_lines[attr] = line
    return ConfigFile(path, out, out_lines)


_SCALARS = (str, int, float, bool)


def _wrong_type(opt: Option, value: Any) -> str | None:
    """What is wrong with the YAML type of ``value`` for ``opt``, or None when it may do."""
    if opt.kind == "list":
        items = value if isinstance(value, list) else [value]
        odd = [v for v in items if not isinstance(v, _SCALARS)]
        return f"expected a list of text, got an item that is {_yaml_type(odd[0])}" if odd else None
    if isinstance(value, _SCALARS):
        return None
    return f"expected a single value, got {_yaml_type(value)}"


def _yaml_type(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


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
    import yaml

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
