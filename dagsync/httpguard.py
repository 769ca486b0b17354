"""Limits that keep the operations endpoints answering under a flood or a slow client.

- :class:`HeaderDeadlines`: a client must deliver a request's line and headers within the
  request timeout. A socket timeout alone bounds each read, not the whole: a slowloris client
  that trickles one header byte every few seconds would hold its thread forever. One reaper
  thread shuts down connections whose deadline passed (an idle keep-alive connection included).
(Connections served at once are bounded in ``dagsync.http``: past ``MAX_CONNECTIONS`` a new
connection is answered 503 and closed straight away, so threads stay bounded.)
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

REAP_INTERVAL_SECONDS = 0.25


class HeaderDeadlines:
    """Connections still owing their request line and headers, and when they must be in."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._lock = threading.Lock()
        self._deadlines: dict[socket.socket, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._reap, name="dagsync-http-reaper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def watch(self, conn: socket.socket) -> None:
        with self._lock:
            self._deadlines[conn] = time.monotonic() + self.timeout

    def forget(self, conn: socket.socket) -> None:
        with self._lock:
            self._deadlines.pop(conn, None)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(REAP_INTERVAL_SECONDS * 4)

    def _reap(self) -> None:
        while not self._stop.wait(REAP_INTERVAL_SECONDS):
            now = time.monotonic()
            with self._lock:
                late = [c for c, deadline in self._deadlines.items() if deadline < now]
                for conn in late:
                    del self._deadlines[conn]
            for conn in late:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)  # the handler's read returns; it ends
