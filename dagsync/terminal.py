"""Output for a person at a terminal: sizes, ages, and ``dagsync status``'s summary.

Machine-readable output (JSON, log lines) is elsewhere; what is here is shown only when the
stream is a TTY, so its wording is free to change.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, TextIO

SIZE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


def human_size(n: float) -> str:
    """``1536`` -> ``1.5 KiB``."""
    size = float(n)
    for unit in SIZE_UNITS:
        if abs(size) < 1024 or unit == SIZE_UNITS[-1]:
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def human_age(seconds: float) -> str:
    """``125`` -> ``2 minutes ago``."""
    s = max(0, int(seconds))
    for unit, length in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if s >= length:
            n = s // length
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    return f"{s} second{'s' if s != 1 else ''} ago"


def status_summary(state: Mapping[str, Any], now: float | None = None) -> str:
    """A few aligned lines: revision, source, when (and how long ago), files and size, link."""
    now = time.time() if now is None else now
    lines = [("revision", str(state.get("revision")))]
    if state.get("source"):
        lines.append(("source", str(state["source"])))
    published_at = state.get("published_at")
    if isinstance(published_at, int | float):
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(published_at))
        lines.append(("published", f"{when} ({human_age(now - published_at)})"))
    if isinstance(state.get("files"), int):
        size = f", {human_size(state['bytes'])}" if isinstance(state.get("bytes"), int) else ""
        lines.append(("files", f"{state['files']}{size}"))
    if state.get("link"):
        lines.append(("link", str(state["link"])))
    width = max(len(k) for k, _ in lines)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in lines)


def nothing_published(root: str, link: str) -> str:
    return f"nothing published yet under {root} (link {link})"
