"""Hubs that are down, as the network shows them: a closed port (connection refused), a
port that never completes a connection (a firewall dropping packets), and a server that
accepts connections but never answers. Each is a context manager giving a base URL."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def closed_port() -> Iterator[str]:
    """A loopback port nothing listens on: connecting is refused at once."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    yield f"http://127.0.0.1:{port}"


@contextmanager
def black_hole() -> Iterator[str]:
    """A port whose connections never complete: a listener with a backlog of 0 whose
    queue is filled and never accepted, so Linux drops every further SYN (as a firewall
    that drops packets does) and connecting waits until the client's own timeout."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    address = server.getsockname()
    fillers = [socket.socket() for _ in range(3)]
    for filler in fillers:
        filler.setblocking(False)
        filler.connect_ex(address)
    try:
        yield f"http://127.0.0.1:{address[1]}"
    finally:
        for sock in [*fillers, server]:
            sock.close()


class SilentServer:
    """Accepts every connection and never sends a byte; ``connections`` counts them."""

    def __init__(self) -> None:
        self.connections = 0
        self._server = socket.socket()
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(16)
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"

    def _accept(self) -> None:
        self._server.settimeout(0.05)
        while not self._stop.is_set():
            try:
                connection, _ = self._server.accept()
            except TimeoutError:
                continue
            self.connections += 1
            self._held.append(connection)

    def __enter__(self) -> SilentServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for sock in [*self._held, self._server]:
            sock.close()
