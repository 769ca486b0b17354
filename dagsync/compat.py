"""git-sync v3/v4 environment variables mapped onto dagsync options (SPEC section 7)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Translated:
    """Raw option values taken from git-sync's variables, and what that mode implies."""

    values: dict[str, Any] = field(default_factory=dict)
    active: bool = False
    first_sync_must_succeed: bool = False
    one_time: bool = False
    password: str | None = field(default=None, repr=False)


def translate(environ: Mapping[str, str]) -> Translated:
    """The git-sync layer of the configuration; empty when no git-sync variable is set."""
    return Translated()


def implied_command(environ: Mapping[str, str]) -> str | None:
    """``run`` (or ``once`` for GITSYNC_ONE_TIME) when started with git-sync's variables only."""
    if not any(k.startswith(("GITSYNC_", "GIT_SYNC_")) for k in environ):
        return None
    one_time = environ.get("GITSYNC_ONE_TIME") or environ.get("GIT_SYNC_ONE_TIME") or ""
    return "once" if one_time.strip().lower() in ("1", "true", "yes") else "run"
