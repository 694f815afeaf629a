"""Entry points: parse shards into ModelFacts, from sources or from a path or URL."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import httpx

from models_app.fetch_guard import guarded_client
from models_app.gguf.facts import ModelFacts, build_facts
from models_app.gguf.header import read_header
from models_app.gguf.reader import DEFAULT_LIMITS, Limits
from models_app.gguf.remote import DEFAULT_TIMEOUT, HttpRangeSource
from models_app.gguf.sources import ByteSource, LocalFileSource, PartialFileSource
from models_app.gguf.split import check_shards, shard_locations


def parse_model(
    sources: ByteSource | Sequence[ByteSource], limits: Limits = DEFAULT_LIMITS
) -> ModelFacts:
    """Parse one model from its file, or from all its shards in order.

    Metadata comes from the first shard (``split.count`` and ``split.no`` are
    checked), tensors from all of them. Raises ``GGUFError`` on any problem.
    """
    shards = [sources] if isinstance(sources, ByteSource) else list(sources)
    headers = [read_header(source, limits, shard=index) for index, source in enumerate(shards)]
    check_shards(headers)
    return build_facts(headers)


def is_url(location: str | os.PathLike[str]) -> bool:
    return os.fspath(location).lower().startswith(("http://", "https://"))


def open_source(
    location: str | os.PathLike[str],
    *,
    partial: bool = False,
    http_headers: Mapping[str, str] | None = None,
    client: httpx.Client | None = None,
    size: int | None = None,
) -> ByteSource:
    """A byte source for a local path (``partial`` while downloading) or an http(s) URL
    (``size``: the remote file's, when already known)."""
    if is_url(location):
        return HttpRangeSource(os.fspath(location), headers=http_headers, client=client, size=size)
    return PartialFileSource(location) if partial else LocalFileSource(location)


def load_model_facts(
    location: str | os.PathLike[str],
    *,
    partial: bool = False,
    http_headers: Mapping[str, str] | None = None,
    limits: Limits = DEFAULT_LIMITS,
    timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
    size: int | None = None,
) -> ModelFacts:
    """Facts for the model at ``location``: a path or URL of the file or of any shard.

    The sibling shards are derived from a shard name and all are read (headers
    only). ``http_headers`` (e.g. Authorization) are sent to remote servers. Remote
    reads go through the fetch guard (``FetchRefused`` for an address not fetched from).
    ``size`` is the size of the file at ``location`` when the caller already knows it.
    """
    locations = shard_locations(location)
    client = guarded_client(follow_redirects=True, timeout=timeout) if is_url(location) else None
    sources: list[ByteSource] = []
    try:
        for shard in locations:
            sources.append(
                open_source(
                    shard,
                    partial=partial,
                    http_headers=http_headers,
                    client=client,
                    size=size if os.fspath(shard) == os.fspath(location) else None,
                )
            )
        return parse_model(sources, limits)
    finally:
        for source in sources:
            source.close()
        if client is not None:
            client.close()
