"""Split models: ``name-00001-of-00003.gguf`` shards that together hold one model."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from urllib.parse import urlsplit, urlunsplit

from models_app.gguf.errors import GGUFSplitError
from models_app.gguf.header import GGUFHeader
from models_app.gguf.values import MetaValue

SPLIT_NO = "split.no"
SPLIT_COUNT = "split.count"
SPLIT_TENSORS_COUNT = "split.tensors.count"
_SHARD_NAME = re.compile(r"^(?P<stem>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


def shard_locations(location: str | os.PathLike[str]) -> list[str]:
    """All shard paths or URLs of the model that ``location`` belongs to, in order.

    ``/m/x-00002-of-00003.gguf`` gives the three ``x-0000N-of-00003.gguf`` siblings
    (a URL keeps its query string); a name that is not a shard name is returned alone.
    """
    text = os.fspath(location)
    parts = urlsplit(text) if "://" in text else None
    path = parts.path if parts else text
    head, _, filename = path.rpartition("/")
    match = _SHARD_NAME.match(filename)
    count = int(match.group("count")) if match else 0
    if not match or not 1 <= int(match.group("no")) <= count:
        return [text]
    names = [f"{match.group('stem')}-{no:05d}-of-{count:05d}.gguf" for no in range(1, count + 1)]
    paths = [f"{head}/{name}" if head or path.startswith("/") else name for name in names]
    if parts is None:
        return paths
    return [urlunsplit(parts._replace(path=shard_path)) for shard_path in paths]


def check_shards(headers: Sequence[GGUFHeader]) -> None:
    """Check that ``headers`` are the shards of one model, complete and in order."""
    if not headers:
        raise GGUFSplitError("no GGUF files were given")
    first = headers[0]
    count = first.metadata.get(SPLIT_COUNT)
    if count is None:
        if len(headers) > 1:
            raise GGUFSplitError(
                f"{first.source_name} is not split, but {len(headers)} files were given"
            )
        return
    if not _is_int(count) or count != len(headers):
        raise GGUFSplitError(
            f"{first.source_name} says the model has split.count={count!r} "
            f"shards, but {len(headers)} were given"
        )
    for index, header in enumerate(headers):
        _check_shard(header, index, count)
    _check_tensor_total(first.metadata.get(SPLIT_TENSORS_COUNT), headers)


def _check_shard(header: GGUFHeader, index: int, count: MetaValue) -> None:
    number = header.metadata.get(SPLIT_NO)
    if not _is_int(number) or number != index:
        raise GGUFSplitError(
            f"{header.source_name} has split.no={number!r}, expected {index} "
            "(shards must be given in order)"
        )
    if header.metadata.get(SPLIT_COUNT) != count:
        raise GGUFSplitError(
            f"{header.source_name} has split.count="
            f"{header.metadata.get(SPLIT_COUNT)!r}, expected {count}"
        )


def _check_tensor_total(declared: MetaValue | None, headers: Sequence[GGUFHeader]) -> None:
    names: set[str] = set()
    for header in headers:
        for info in header.tensors:
            if info.name in names:
                raise GGUFSplitError(f"tensor {info.name!r} appears in more than one shard")
            names.add(info.name)
    if declared is not None and declared != len(names):
        raise GGUFSplitError(
            f"split.tensors.count is {declared!r} but the shards hold {len(names)} tensors"
        )


def _is_int(value: MetaValue | None) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
