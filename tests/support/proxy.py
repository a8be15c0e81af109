"""A TCP proxy in front of PostgreSQL (or Redis) that can stall: it keeps every connection
open but stops passing bytes either way, as a network path that drops packets (or a frozen
server) does."""

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from sqlalchemy import make_url
from sqlalchemy.engine import URL


class StallingProxy:
    def __init__(self, database_url: str, port: int = 0) -> None:
        """In front of `database_url`'s server (a `redis://host:port` URL works too)."""
        self._target = make_url(database_url)
        self._stalled = threading.Event()
        self._closing = threading.Event()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", port))
        self.port: int = self._listener.getsockname()[1]

    @property
    def url(self) -> URL:
        """The target database, reached through this proxy."""
        return self._target.set(host="127.0.0.1", port=self.port, query={})

    def stall(self) -> None:
        self._stalled.set()

    def resume(self) -> None:
        self._stalled.clear()

    def _connect_upstream(self) -> socket.socket:
        socket_dir = self._target.query.get("host")
        if isinstance(socket_dir, str) and socket_dir.startswith("/"):
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(f"{socket_dir}/.s.PGSQL.{self._target.port or 5432}")
            return upstream
        return socket.create_connection(
            (self._target.host or "127.0.0.1", self._target.port or 5432)
        )

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                while self._stalled.is_set() and not self._closing.is_set():
                    time.sleep(0.02)
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = self._connect_upstream()
            self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @contextmanager
    def running(self) -> Iterator["StallingProxy"]:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._closing.set()
            self._listener.close()
            for sock in self._sockets:
                sock.close()
            thread.join(timeout=5)
