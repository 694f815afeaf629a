"""A tiny threaded HTTP file server for remote-parsing tests (Range support optional)."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


@dataclass
class ServerState:
    root: Path
    honour_range: bool = True
    required_auth: str | None = None
    bytes_served: int = 0
    requests: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    state: ServerState

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        with self.state.lock:
            self.state.requests.append({"path": self.path, **dict(self.headers.items())})
        if self.path.startswith("/redirect/"):
            self._redirect("/files/" + self.path.removeprefix("/redirect/"))
            return
        if (
            self.state.required_auth
            and self.headers.get("Authorization") != self.state.required_auth
        ):
            self._status(401)
            return
        path = self.state.root / self.path.removeprefix("/files/").split("?")[0]
        if not self.path.startswith("/files/") or not path.is_file():
            self._status(404)
            return
        self._serve(path.read_bytes())

    def _serve(self, data: bytes) -> None:
        match = _RANGE.match(self.headers.get("Range", ""))
        if not match or not self.state.honour_range:
            self._send(200, data, {})
            return
        start = int(match.group(1))
        end = min(int(match.group(2) or len(data) - 1), len(data) - 1)
        if start >= len(data):
            self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
            return
        headers = {"Content-Range": f"bytes {start}-{end}/{len(data)}"}
        self._send(206, data[start : end + 1], headers)

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            return
        with self.state.lock:
            self.state.bytes_served += len(body)

    def _status(self, status: int) -> None:
        self._send(status, b"", {})

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()


@contextmanager
def serve_files(root: Path, **options: object) -> Iterator[tuple[str, ServerState]]:
    """Serve ``root`` at ``http://127.0.0.1:<port>/files/``; yields (base URL, state)."""
    state = ServerState(root=root, **options)  # type: ignore[arg-type]
    handler = type("Handler", (_Handler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
