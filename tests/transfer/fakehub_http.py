"""The HTTP side of the fake hub (see ``fakehub`` for what it imitates and why)."""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import socket
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, quote, unquote, urlsplit

if TYPE_CHECKING:
    from tests.transfer.fakehub import Blob, FakeHub, FakeRepo, LoggedRequest

_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_TREE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$")
_CDN = re.compile(r"^/cdn/(?P<sha>[0-9a-f]{64})$")
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class HubHandler(BaseHTTPRequestHandler):
    hub: FakeHub
    role: str
    protocol_version = "HTTP/1.1"
    entry: LoggedRequest

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_GET(self) -> None:
        self._route(head=False)

    # -- routing ---------------------------------------------------------------

    def _route(self, *, head: bool) -> None:
        from tests.transfer.fakehub import LoggedRequest

        parts = urlsplit(self.path)
        self.entry = LoggedRequest(
            self.role, self.command, self.path, {k.lower(): v for k, v in self.headers.items()}
        )
        with self.hub.lock:
            self.hub.log.append(self.entry)
        if self.role == "cdn":
            self._cdn(parts.path, parse_qs(parts.query), head=head)
        elif match := _TREE.match(parts.path):
            self._tree(match, parse_qs(parts.query))
        elif match := _RESOLVE.match(parts.path):
            self._resolve(match, head=head)
        else:
            self._error(404, None, "Not Found")

    def _repo(self, repo_id: str, revision: str) -> FakeRepo | None:
        """The repo if this request may see it at ``revision``; else answers the error."""
        repo = self.hub.repos.get(repo_id)
        token = self.headers.get("Authorization", "").removeprefix("Bearer ") or None
        granted = token is not None and repo_id in self.hub.tokens.get(token, set())
        if token is not None and token not in self.hub.tokens:
            self._error(401, None, "Invalid credentials in Authorization header")
        elif repo is None or (repo.private and not granted):
            self._error(404 if token else 401, "RepoNotFound", "Repository not found")
        elif repo.gated and not granted:
            self._error(403 if token else 401, "GatedRepo", f"Access to {repo_id} is restricted")
        elif not repo.has_revision(revision):
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        else:
            return repo
        return None

    def _resolve(self, match: re.Match[str], *, head: bool) -> None:
        if head and self.hub.faults.head_fail_times > 0:
            self.hub.faults.head_fail_times -= 1
            return self._error(self.hub.faults.fail_status, None, "injected failure")
        revision, path = unquote(match["rev"]), unquote(match["path"])
        repo = self._repo(match["repo"], revision)
        if repo is None:
            return
        blob = repo.files.get(path)
        if blob is None:
            return self._error(404, "EntryNotFound", f"{path} does not exist on {revision}")
        headers = {"X-Repo-Commit": repo.commit}
        if not repo.is_lfs(path, blob):
            return self._blob(blob, f'"{blob.git_oid}"', headers, head=head)
        signature = secrets.token_hex(8)
        with self.hub.lock:
            self.hub.signatures.add(signature)
        location = f"{self.hub.cdn_url}/cdn/{blob.sha256}?sig={signature}"
        headers |= {
            "Location": location,
            "X-Linked-Size": str(blob.size),
            "X-Linked-Etag": f'"{blob.sha256}"',
            "ETag": f'"{blob.sha256}"',
        }
        self._send(302, f"Found. Redirecting to {location}".encode(), headers, head=head)

    def _cdn(self, path: str, query: dict[str, list[str]], *, head: bool) -> None:
        match = _CDN.match(path)
        blob = self.hub.blob_by_sha(match["sha"]) if match else None
        if blob is None:
            return self._error(404, None, "NoSuchKey")
        if query.get("sig", [""])[0] not in self.hub.signatures:
            return self._error(403, None, "Request has expired")
        self._blob(blob, blob.cdn_etag, {}, head=head)

    def _tree(self, match: re.Match[str], query: dict[str, list[str]]) -> None:
        repo = self._repo(match["repo"], unquote(match["rev"]))
        if repo is None:
            return
        entries = _tree_entries(
            repo, recursive=query.get("recursive", ["false"])[0].lower() == "true"
        )
        start = int(query.get("cursor", ["0"])[0])
        end = len(entries) if self.hub.page_size is None else start + self.hub.page_size
        headers = {"Content-Type": "application/json"}
        if end < len(entries):
            quoted = quote(match["rev"], safe="")
            next_url = f"{self.hub.url}/api/models/{repo.repo_id}/tree/{quoted}"
            headers["Link"] = f'<{next_url}?recursive=True&expand=False&cursor={end}>; rel="next"'
        self._send(200, json.dumps(entries[start:end]).encode(), headers)

    # -- file bodies -----------------------------------------------------------

    def _blob(self, blob: Blob, etag: str, headers: dict[str, str], *, head: bool) -> None:
        faults = self.hub.faults
        if not head and faults.fail_times > 0:
            faults.fail_times -= 1
            extra = {"Retry-After": str(faults.retry_after)} if faults.retry_after else {}
            return self._error(faults.fail_status, None, "injected failure", extra)
        start, end = 0, blob.size
        headers = headers | {"ETag": etag, "Accept-Ranges": "bytes"}
        wanted = _RANGE.match(self.headers.get("Range", ""))
        if_range = self.headers.get("If-Range")
        status = 200
        if wanted and not faults.ignore_range and if_range in (None, etag):
            start = max(0, int(wanted[1]) - faults.range_shift)
            end = min(int(wanted[2]) + 1, blob.size) if wanted[2] else blob.size
            if start >= blob.size:
                return self._send(416, b"", headers | {"Content-Range": f"bytes */{blob.size}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{blob.size}"
        self._start(status, headers | {"Content-Length": str(end - start)})
        if not head:
            self._stream(blob, start, end)

    def _stream(self, blob: Blob, start: int, end: int) -> None:
        faults = self.hub.faults
        limit = end
        if faults.drop_after is not None and faults.drops > 0:
            faults.drops -= 1
            limit = min(end, start + faults.drop_after)
            self.close_connection = True
        if isinstance(blob.content, Path) and not faults.rate and faults.corrupt_offset is None:
            return self._sendfile(blob.content, start, limit, end)
        piece = faults.piece if faults.rate or faults.corrupt_offset is not None else 1 << 20
        began = time.monotonic()
        offset = start
        try:
            for block in blob.blocks(start, limit, piece):
                if self.hub.closing.is_set():
                    break
                self._pace(offset - start, began)
                self.wfile.write(_corrupted(block, offset, faults.corrupt_offset))
                offset += len(block)
                with self.hub.lock:
                    self.entry.body_bytes += len(block)
        except OSError:  # the client went away (e.g. it was killed)
            self.close_connection = True
        self._finish_body(offset, end)

    def _sendfile(self, path: Path, start: int, limit: int, end: int) -> None:
        """Big files on disk: the kernel copies them, as a real server would."""
        sent = 0
        try:
            with path.open("rb") as file:
                sent = self.connection.sendfile(file, start, limit - start)
        except OSError:
            self.close_connection = True
        with self.hub.lock:
            self.entry.body_bytes += sent
        self._finish_body(start + sent, end)

    def _finish_body(self, offset: int, end: int) -> None:
        """A body cut short (a drop, a client gone) ends the connection, as it must."""
        if offset < end:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

    def _pace(self, sent: int, began: float) -> None:
        while self.hub.faults.hold.is_set() and not self.hub.closing.is_set():
            time.sleep(0.01)
        rate = self.hub.faults.rate
        if rate:
            delay = began + sent / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    # -- responses -------------------------------------------------------------

    def _start(self, status: int, headers: dict[str, str]) -> None:
        self.entry.status = status
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def _send(
        self, status: int, body: bytes, headers: dict[str, str], *, head: bool = False
    ) -> None:
        self._start(status, headers | {"Content-Length": str(len(body))})
        if not head:
            self.wfile.write(body)

    def _error(
        self, status: int, code: str | None, message: str, extra: dict[str, str] | None = None
    ) -> None:
        headers = {"X-Error-Message": message, **(extra or {})}
        if code:
            headers["X-Error-Code"] = code
        body = json.dumps({"error": message}).encode()
        if self.hub.faults.bare_errors:
            headers, body = dict(extra or {}), b""
        self._send(
            status,
            body,
            headers | {"Content-Type": "application/json"},
            head=self.command == "HEAD",
        )


def _corrupted(block: bytes, offset: int, corrupt_offset: int | None) -> bytes:
    if corrupt_offset is None or not offset <= corrupt_offset < offset + len(block):
        return block
    index = corrupt_offset - offset
    return block[:index] + bytes([block[index] ^ 0xFF]) + block[index + 1 :]


def _tree_entries(repo: FakeRepo, *, recursive: bool) -> list[dict[str, object]]:
    entries: list[dict[str, object]] = []
    folders = sorted(
        {"/".join(p.split("/")[:i]) for p in repo.files for i in range(1, p.count("/") + 1)}
    )
    for folder in folders:
        if recursive or "/" not in folder:
            entries.append({"type": "directory", "oid": "0" * 40, "path": folder})
    for path, blob in sorted(repo.files.items()):
        if not recursive and "/" in path:
            continue
        entry: dict[str, object] = {
            "type": "file",
            "oid": blob.git_oid,
            "size": blob.size,
            "path": path,
        }
        if repo.is_lfs(path, blob):
            entry["lfs"] = {"oid": blob.sha256, "size": blob.size, "pointerSize": 134}
        entries.append(entry)
    return entries
