"""A local Hugging Face hub for download tests: the real protocol, injectable faults.

It speaks what huggingface_hub and the download engine use, as the real hub does:

- ``HEAD/GET /{repo}/resolve/{revision}/{path}``: a small file is served directly
  (200/206, ``ETag`` = its git blob id, ``X-Repo-Commit``); an LFS file (``.gguf``,
  or 1 MiB and more) answers ``302`` to the "CDN" with ``X-Linked-Size``,
  ``X-Linked-Etag`` (its sha256) and ``X-Repo-Commit``, as huggingface.co does.
- The CDN is a second listening socket, i.e. another origin, so huggingface_hub
  stops at the redirect as it does for the real CDN and clients must not send it
  the token. It serves ``/cdn/{sha256}?sig=...`` with Range, ``If-Range`` and its own
  ETag (not the sha256: the real CDN's ETag is not the hub's either).
- Errors carry ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``,
  ``EntryNotFound``, ``GatedRepo``) with the statuses huggingface.co uses: an
  anonymous request for a missing or private repo gets 401, a gated one 401
  (anonymous) or 403 (token without access), a bad token 401 "Invalid credentials".
- ``GET /api/models/{repo}/tree/{revision}``: the JSON of ``HfApi.list_repo_tree``,
  paginated with ``Link: <...>; rel="next"`` when ``page_size`` is set.

``hub.faults`` changes how file bodies are served (see ``Faults``); ``hub.log``
records every request with the body bytes actually sent.
"""

from __future__ import annotations

import hashlib
import secrets
import sys
import threading
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

LFS_THRESHOLD = 1024 * 1024


@dataclass
class Faults:
    """Faults applied to GETs of file bodies (CDN and direct files), not to HEADs.

    - ``fail_times``: answer ``fail_status`` (with ``Retry-After`` if set) this many
      times before serving normally; ``head_fail_times`` does the same for HEADs.
    - ``drop_after`` / ``drops``: close the connection after sending this many body
      bytes, for the next ``drops`` responses.
    - ``rate``: send at most this many bytes per second (in ``piece`` byte pieces).
    - ``corrupt_offset``: flip the byte at this offset of the file in every body.
    - ``ignore_range``: answer 200 with the whole file to range requests.
    - ``range_shift``: answer a range request with a range starting this many bytes
      earlier than asked (a broken cache or proxy).
    - ``bare_errors``: error answers carry no ``X-Error-Code``, message or body (as a
      proxy or a CDN in front of the hub may answer).
    - ``hold``: while set, bodies being sent pause between pieces (the connection
      stays open), e.g. to let a client drain what the kernel buffered.
    """

    fail_times: int = 0
    fail_status: int = 500
    retry_after: int | None = None
    head_fail_times: int = 0
    drop_after: int | None = None
    drops: int = 1
    rate: float | None = None
    piece: int = 64 * 1024
    corrupt_offset: int | None = None
    ignore_range: bool = False
    range_shift: int = 0
    bare_errors: bool = False
    hold: threading.Event = field(default_factory=threading.Event)


@dataclass
class Blob:
    """A file's content, in memory or (for big files, served with sendfile) on disk."""

    content: bytes | Path
    size: int = field(init=False)
    sha256: str = field(init=False)
    git_oid: str = field(init=False)

    def __post_init__(self) -> None:
        digest = hashlib.sha256()
        self.size = 0
        for block in self.blocks(0, None):
            digest.update(block)
            self.size += len(block)
        self.sha256 = digest.hexdigest()
        self.git_oid = hashlib.sha1(f"blob {self.size}\0{self.sha256}".encode()).hexdigest()

    @property
    def cdn_etag(self) -> str:
        return f'"cdn-{self.sha256[:32]}"'

    def blocks(self, start: int, end: int | None, size: int = 8 << 20):
        """The bytes [start, end) in blocks of at most ``size``."""
        if isinstance(self.content, bytes):
            view = memoryview(self.content)[start:end]
            for offset in range(0, len(view), size):
                yield bytes(view[offset : offset + size])
            return
        with self.content.open("rb") as file:
            file.seek(start)
            remaining = None if end is None else end - start
            while remaining is None or remaining > 0:
                block = file.read(size if remaining is None else min(size, remaining))
                if not block:
                    return
                remaining = None if remaining is None else remaining - len(block)
                yield block


@dataclass
class FakeRepo:
    repo_id: str
    files: dict[str, Blob]
    commit: str = field(default_factory=lambda: secrets.token_hex(20))
    private: bool = False
    gated: bool = False
    branches: set[str] = field(default_factory=lambda: {"main"})

    def has_revision(self, revision: str) -> bool:
        return revision in self.branches or revision == self.commit

    @staticmethod
    def is_lfs(path: str, blob: Blob) -> bool:
        return path.endswith(".gguf") or blob.size >= LFS_THRESHOLD


@dataclass
class LoggedRequest:
    server: str  # "hub" or "cdn"
    method: str
    path: str
    headers: dict[str, str]
    status: int = 0
    body_bytes: int = 0

    @property
    def range_start(self) -> int | None:
        value = self.headers.get("range", "")
        return int(value[6:].split("-")[0]) if value.startswith("bytes=") else None


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients that go away mid-request (cancelled, killed) are part of the tests."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class FakeHub:
    """The hub and its CDN on two random 127.0.0.1 ports; a context manager."""

    def __init__(self, *, page_size: int | None = None) -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.tokens: dict[str, set[str]] = {}
        self.faults = Faults()
        self.page_size = page_size
        self.signatures: set[str] = set()
        self.log: list[LoggedRequest] = []
        self.lock = threading.Lock()
        self.closing = threading.Event()
        self._servers: list[_Server] = []
        self._threads: list[threading.Thread] = []
        self.url = self.cdn_url = ""

    # -- content ---------------------------------------------------------------

    def add_repo(
        self,
        repo_id: str,
        files: dict[str, bytes | Path],
        *,
        private: bool = False,
        gated: bool = False,
    ) -> FakeRepo:
        blobs = {path: Blob(content) for path, content in files.items()}
        repo = FakeRepo(repo_id, blobs, private=private, gated=gated)
        self.repos[repo_id] = repo
        return repo

    def put_file(self, repo_id: str, path: str, content: bytes | Path) -> None:
        """Change (or add) a file: a new commit that ``main`` now points to."""
        repo = self.repos[repo_id]
        repo.files[path] = Blob(content)
        repo.commit = secrets.token_hex(20)

    def grant(self, token: str, *repo_ids: str) -> None:
        """Make ``token`` valid, with access to the private or gated ``repo_ids``."""
        self.tokens.setdefault(token, set()).update(repo_ids)

    def expire_cdn_urls(self) -> None:
        """Signed CDN URLs handed out so far now answer 403, as expired ones do."""
        with self.lock:
            self.signatures.clear()

    def blob_by_sha(self, sha256: str) -> Blob | None:
        for repo in self.repos.values():
            for blob in repo.files.values():
                if blob.sha256 == sha256:
                    return blob
        return None

    # -- what happened ---------------------------------------------------------

    def requests(self, server: str | None = None, method: str | None = None) -> list[LoggedRequest]:
        with self.lock:
            return [
                r
                for r in self.log
                if (server is None or r.server == server) and (method is None or r.method == method)
            ]

    def body_bytes_served(self) -> int:
        """Body bytes sent for GETs of file contents (CDN and direct files)."""
        return sum(r.body_bytes for r in self.requests(method="GET") if "/api/" not in r.path)

    # -- lifecycle -------------------------------------------------------------

    def __enter__(self) -> FakeHub:
        from tests.transfer.fakehub_http import HubHandler

        for role in ("hub", "cdn"):
            handler = type(f"{role}Handler", (HubHandler,), {"hub": self, "role": role})
            server = _Server(("127.0.0.1", 0), handler)
            thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
            thread.start()
            self._servers.append(server)
            self._threads.append(thread)
        self.url, self.cdn_url = (f"http://127.0.0.1:{s.server_address[1]}" for s in self._servers)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.closing.set()
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join()


def main(argv: list[str] | None = None) -> None:
    """Serve one file on disk as ``REPO/NAME`` until stdin closes (for ``bench/download``):
    a separate process, so that the server does not share the client's GIL.

        python -m tests.transfer.fakehub --file big.bin --repo bench/big --name big.gguf

    Prints ``{"endpoint": ..., "cdn": ...}`` as one JSON line once it listens.
    """
    import argparse
    import json

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--file", type=Path, required=True)
    parser.add_argument("--repo", default="bench/big")
    parser.add_argument("--name", default="big.gguf")
    args = parser.parse_args(argv)
    with FakeHub() as hub:
        hub.add_repo(args.repo, {args.name: args.file})
        print(json.dumps({"endpoint": hub.url, "cdn": hub.cdn_url}), flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
