"""The HTTP handler's side of ``/v1/`` responses: status line, headers, then the body straight
to the socket (``sendfile`` for large files). Kept apart so ``http.py`` only routes."""

from __future__ import annotations

from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler
from typing import BinaryIO

STREAM_STALL_SECONDS = 60.0  # a download client that reads nothing this long is dropped


class HandlerResponder:
    """A request handler's connection lent to the revision server (``serve.Responder``)."""

    def __init__(self, handler: BaseHTTPRequestHandler) -> None:
        self.handler = handler
        self.started = False

    def start(self, status: int, headers: Sequence[tuple[str, str]]) -> None:
        h = self.handler
        h.connection.settimeout(STREAM_STALL_SECONDS)
        h.send_response(status)
        for name, value in headers:
            h.send_header(name, value)
        h.send_header("Cache-Control", "no-store")
        h.send_header("Connection", "close")
        h.end_headers()
        self.started = True

    def write(self, data: bytes) -> None:
        self.handler.wfile.write(data)

    def sendfile(self, fh: BinaryIO, count: int) -> int:
        return self.handler.connection.sendfile(fh, 0, count)
