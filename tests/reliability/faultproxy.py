"""A TCP proxy on 127.0.0.1 in front of a git or store server that misbehaves on request, the
way a network and an overloaded service do. ``mode`` may be changed while it runs:

- ``pass``: forward both ways
- ``refuse``: stop listening (connections are refused); listening resumes on the same port
- ``reset``: accept, then reset the connection (RST) before any answer
- ``hang``: accept and read, never answer (slow past any timeout)
- ``cut``: forward the request, then only the first ``cut_bytes`` of the answer, then close
  (a truncated body; a server that stops in the middle of a listing)
- ``500`` / ``503``: answer every request with that status
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

BUFFER = 64 * 1024
MODES = ("pass", "refuse", "reset", "hang", "cut", "500", "503")
REASONS = {"500": "Internal Server Error", "503": "Service Unavailable"}


class FaultProxy:
    def __init__(self, upstream_port: int, cut_bytes: int = 400) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.cut_bytes = cut_bytes
        self.port = 0
        self._mode = "pass"
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self.connections = 0

    # -- control -------------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        self._listen()
        return self

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        assert mode in MODES, mode
        with self._lock:
            previous, self._mode = self._mode, mode
        if mode == "refuse" and previous != "refuse":
            self._close_listener()
        elif previous == "refuse" and mode != "refuse":
            self._listen()
        self._drop_open()  # kept-alive connections meet the new behaviour too

    def stop(self) -> None:
        self._stop.set()
        self._close_listener()
        self._drop_open()
        for thread in self._threads:
            thread.join(timeout=5)

    # -- plumbing ------------------------------------------------------------------------------
    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._spawn(self._accept_loop, listener)

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()

    def _drop_open(self) -> None:
        with self._lock:
            open_sockets = list(self._sockets)
        for sock in open_sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        self._threads = [t for t in self._threads if t.is_alive()]
        self._threads.append(thread)
        thread.start()

    def _track(self, sock: socket.socket, add: bool) -> None:
        with self._lock:
            (self._sockets.add if add else self._sockets.discard)(sock)

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            self.connections += 1
            self._spawn(self._serve, client)

    def _serve(self, client: socket.socket) -> None:
        self._track(client, True)
        try:
            mode = self._mode
            if mode == "reset":
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif mode == "hang":
                while client.recv(BUFFER):
                    pass
            elif mode in REASONS:
                self._answer(client, mode)
            else:
                self._forward(client, cut=mode == "cut")
        except OSError:
            pass
        finally:
            self._track(client, False)
            client.close()

    @staticmethod
    def _answer(client: socket.socket, status: str) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = client.recv(BUFFER)
            if not chunk:
                return
            data += chunk
        body = f"{status} {REASONS[status]} (injected)\n".encode()
        client.sendall(
            f"HTTP/1.1 {status} {REASONS[status]}\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )

    def _forward(self, client: socket.socket, cut: bool) -> None:
        upstream = socket.create_connection(self.upstream, timeout=30)
        upstream.settimeout(None)
        self._track(upstream, True)
        try:
            self._spawn(self._pump, client, upstream, None)
            self._pump(upstream, client, self.cut_bytes if cut else None)
        finally:
            self._track(upstream, False)
            upstream.close()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while limit is None or sent < limit:
                chunk = src.recv(BUFFER)
                if not chunk:
                    break
                if limit is not None:
                    chunk = chunk[: limit - sent]
                dst.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_RDWR)
