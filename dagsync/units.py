"""Values as users write them: durations (``90s``, ``5m``, ``1m30s``), sizes (``512k``, ``2G``),
booleans and integers; each error is one line naming the option."""

from __future__ import annotations

import re
from typing import Any

from dagsync.errors import ConfigError

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|s|m|h|d)?")
_DURATION_UNITS = {
    None: 1.0,
    "s": 1.0,
    "ms": 1e-3,
    "us": 1e-6,
    "µs": 1e-6,
    "ns": 1e-9,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}


def parse_duration(text: str | float | int, option: str = "duration") -> float:
    """Seconds from ``90``, ``90s``, ``5m``, ``1h``, ``500ms`` or a Go duration like ``1m30s``."""
    if isinstance(text, bool):
        raise ConfigError(f"--{option}: invalid duration {text!r}", option)
    if isinstance(text, int | float):
        if text < 0:
            raise ConfigError(f"--{option}: duration must not be negative", option)
        return float(text)
    raw = text.strip()
    pos, total, parts = 0, 0.0, 0
    while pos < len(raw):
        m = _DURATION_PART.match(raw, pos)
        if not m or (m.group(2) is None and pos + len(m.group(0)) != len(raw)):
            raise ConfigError(
                f"--{option}: invalid duration {text!r} (use e.g. 90, 90s, 5m, 1h, 500ms)",
                option,
            )
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
        parts += 1
        if m.group(2) is None:
            break
    if not parts:
        raise ConfigError(f"--{option}: invalid duration {text!r} (use e.g. 90s, 5m)", option)
    return total


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)", re.IGNORECASE)


def parse_size(text: str | int, option: str = "size") -> int:
    """Bytes from ``512k``, ``10M``, ``2G`` (binary multiples) or a plain number."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    m = _SIZE.fullmatch(str(text).strip())
    if not m:
        raise ConfigError(f"--{option}: invalid size {text!r} (use e.g. 512k, 10M, 2G)", option)
    power = " kmgt".index(m.group(2).lower() or " ")
    return int(float(m.group(1)) * 1024**power)


def parse_bool(text: str | bool, option: str = "flag") -> bool:
    if isinstance(text, bool):
        return text
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"--{option}: expected true or false, got {text!r}", option)


def parse_int(text: str | int, option: str) -> int:
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    try:
        return int(str(text).strip())
    except ValueError:
        raise ConfigError(f"--{option}: expected an integer, got {text!r}", option) from None


def as_list(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(p.strip() for p in value.split(",") if p.strip())
    return tuple(str(v) for v in value)
