"""``--http-bind``: where the operations endpoints listen (kept apart from the server, so a
``once`` without them never imports ``http.server``)."""

from __future__ import annotations

from dataclasses import dataclass

from dagsync.errors import ConfigError


@dataclass(frozen=True)
class BindAddress:
    host: str  # "" = every interface
    port: int

    @property
    def ipv6(self) -> bool:
        return ":" in self.host

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if self.ipv6 else f"{self.host}:{self.port}"


def parse_bind(text: str | None) -> BindAddress | None:
    """``host:port``, ``:port`` (every interface) or ``[v6addr]:port``; empty disables."""
    raw = (text or "").strip()
    if not raw:
        return None
    usage = f"--http-bind: expected HOST:PORT, :PORT or [IPV6]:PORT, got {raw!r}"
    if raw.startswith("["):
        host, sep, rest = raw[1:].partition("]")
        if not sep or not host or not rest.startswith(":"):
            raise ConfigError(usage, "http-bind")
        port_text = rest[1:]
    else:
        host, sep, port_text = raw.rpartition(":")
        if not sep or ":" in host:
            raise ConfigError(usage, "http-bind")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"--http-bind: invalid port in {raw!r}", "http-bind")
    return BindAddress(host, int(port_text))
