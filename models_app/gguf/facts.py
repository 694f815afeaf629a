"""ModelFacts: what the memory estimator, the catalog and the scheduler need to know.

Built from one or more parsed headers (the shards of one model), as plain data
that ``to_dict()`` turns into JSON-serialisable values.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import MISSING, dataclass, fields
from typing import Any

from models_app.gguf.ggml import file_type_name
from models_app.gguf.header import GGUFHeader, TensorInfo
from models_app.gguf.values import ArraySummary, MetaValue, meta_from_plain

MAX_LAYERS = 65536  # block indices beyond this are not counted per layer
_BLOCK = re.compile(r"blk\.(\d{1,9})\.")
PerLayer = int | tuple[int, ...]
POOLING_TYPES = ("none", "mean", "cls", "last", "rank")  # llama_pooling_type 0 to 4


@dataclass(frozen=True, slots=True)
class ShardInfo:
    """One file of the model: where its data starts and how big it must at least be.

    ``required_size`` is where the last tensor's data ends (llama.cpp checks that
    the file is at least this long); ``file_size`` is the size seen while parsing.
    """

    source_name: str
    header_bytes: int
    data_offset: int
    data_bytes: int
    required_size: int
    file_size: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "source_name": self.source_name,
            "header_bytes": self.header_bytes,
            "data_offset": self.data_offset,
            "data_bytes": self.data_bytes,
            "required_size": self.required_size,
            "file_size": self.file_size,
        }


@dataclass(frozen=True, slots=True)
class ModelFacts:
    """Facts about one model read from its GGUF header(s); sizes in bytes.

    Per-layer hyperparameters are an int when the file gives one value and a tuple
    when it gives one per layer. ``dominant_tensor_type`` is the ggml type holding
    the most bytes (``tensor_type_bytes``); ``tensor_type_counts`` counts tensors.
    ``metadata`` holds every key/value except the content of big arrays (tokenizer
    arrays), which appear as ``ArraySummary``.

    ``pooling_type`` is ``{arch}.pooling_type`` by name (``POOLING_TYPES``), None when
    absent or unknown; ``n_cls_out`` is the number of classifier outputs of a reranker
    (``{arch}.classifier.output_labels``' count, else llama.cpp's default 1 when the
    pooling is ``rank`` or there is a ``cls.output.weight``), None otherwise. Both were
    added later: dicts stored without them load with None.
    """

    architecture: str
    name: str | None
    file_type: str | None
    file_type_id: int | None
    dominant_tensor_type: str | None
    tensor_type_bytes: dict[str, int]
    tensor_type_counts: dict[str, int]
    parameter_count: int
    block_count: int | None
    embedding_length: int | None
    feed_forward_length: PerLayer | None
    head_count: PerLayer | None
    head_count_kv: PerLayer | None
    key_length: int | None
    value_length: int | None
    context_length: int | None
    vocab_size: int | None
    expert_count: int | None
    expert_used_count: int | None
    sliding_window: int | None
    tied_embeddings: bool
    has_chat_template: bool
    bytes_per_layer: tuple[int, ...]
    token_embedding: TensorInfo | None
    output: TensorInfo | None
    total_tensor_bytes: int
    tensor_count: int
    gguf_version: int
    alignment: int
    shards: tuple[ShardInfo, ...]
    tensors: tuple[TensorInfo, ...]
    metadata: dict[str, MetaValue]
    pooling_type: str | None = None
    n_cls_out: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable data (non-finite floats become strings)."""
        return {name: _plain(getattr(self, name)) for name in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelFacts:
        """Rebuild facts stored with ``to_dict`` (e.g. from a JSON field)."""
        values = {
            field.name: data[field.name]
            for field in fields(cls)
            if field.name in data or field.default is MISSING
        }
        for name in ("token_embedding", "output"):
            if values[name] is not None:
                values[name] = TensorInfo.from_dict(values[name])
        for name in ("feed_forward_length", "head_count", "head_count_kv", "bytes_per_layer"):
            if isinstance(values[name], list):
                values[name] = tuple(values[name])
        values["tensors"] = tuple(TensorInfo.from_dict(item) for item in data["tensors"])
        values["shards"] = tuple(ShardInfo(**item) for item in data["shards"])
        values["metadata"] = {key: meta_from_plain(v) for key, v in data["metadata"].items()}
        return cls(**values)


def _plain(value: Any) -> Any:
    if isinstance(value, TensorInfo | ShardInfo | ArraySummary):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def build_facts(headers: Sequence[GGUFHeader]) -> ModelFacts:
    """Facts for the model made of ``headers`` (metadata from the first, tensors from all)."""
    first = headers[0]
    meta = first.metadata
    arch = _str(meta.get("general.architecture")) or "unknown"
    tensors = tuple(info for header in headers for info in header.tensors)
    by_name = {info.name: info for info in tensors}
    type_bytes = _bytes_by_type(tensors)
    hp = _Hparams(meta, arch)
    file_type_id = _int(meta.get("general.file_type"))
    pooling_type = _pooling_type(hp.get_int("pooling_type"))
    return ModelFacts(
        architecture=arch,
        name=_str(meta.get("general.name")),
        file_type=None if file_type_id is None else file_type_name(file_type_id),
        file_type_id=file_type_id,
        dominant_tensor_type=next(iter(type_bytes), None),
        tensor_type_bytes=type_bytes,
        tensor_type_counts=dict(Counter(info.ggml_type for info in tensors).most_common()),
        parameter_count=sum(info.n_elements for info in tensors),
        block_count=hp.block_count,
        embedding_length=hp.n_embd,
        feed_forward_length=hp.per_layer("feed_forward_length"),
        head_count=hp.n_head,
        head_count_kv=hp.per_layer("attention.head_count_kv"),
        key_length=hp.head_size("attention.key_length"),
        value_length=hp.head_size("attention.value_length"),
        context_length=hp.get_int("context_length"),
        vocab_size=_vocab_size(meta, hp, by_name.get("token_embd.weight")),
        expert_count=hp.get_int("expert_count"),
        expert_used_count=hp.get_int("expert_used_count"),
        sliding_window=hp.get_int("attention.sliding_window"),
        tied_embeddings="output.weight" not in by_name,
        has_chat_template=bool(_str(meta.get("tokenizer.chat_template"))),
        bytes_per_layer=_bytes_per_layer(tensors, hp.block_count),
        token_embedding=by_name.get("token_embd.weight"),
        output=by_name.get("output.weight"),
        total_tensor_bytes=sum(info.n_bytes for info in tensors),
        tensor_count=len(tensors),
        gguf_version=first.version,
        alignment=first.alignment,
        shards=tuple(_shard_info(header) for header in headers),
        tensors=tensors,
        metadata=dict(meta),
        pooling_type=pooling_type,
        n_cls_out=_n_cls_out(hp, pooling_type, "cls.output.weight" in by_name),
    )


class _Hparams:
    """Reads ``{arch}.*`` hyperparameters leniently: a wrong type reads as missing."""

    def __init__(self, meta: Mapping[str, MetaValue], arch: str) -> None:
        self.meta = meta
        self.arch = arch
        self.block_count = self.get_int("block_count")
        self.n_embd = self.get_int("embedding_length")
        self.n_head = self.per_layer("attention.head_count")

    def get_int(self, key: str) -> int | None:
        return _int(self.meta.get(f"{self.arch}.{key}"))

    def per_layer(self, key: str) -> PerLayer | None:
        value = self.meta.get(f"{self.arch}.{key}")
        if isinstance(value, list):
            items = [_int(item) for item in value]
            return tuple(item for item in items if item is not None) or None
        return _int(value)

    def head_size(self, key: str) -> int | None:
        """``key`` if present, else n_embd / n_head (first layer) as llama.cpp does."""
        explicit = self.get_int(key)
        if explicit is not None:
            return explicit
        n_head = self.n_head[0] if isinstance(self.n_head, tuple) else self.n_head
        if not self.n_embd or not n_head or n_head <= 0:
            return None
        return self.n_embd // n_head


def _int(value: MetaValue | None) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: MetaValue | None) -> str | None:
    return value if isinstance(value, str) else None


def _length(value: MetaValue | None) -> int | None:
    if isinstance(value, ArraySummary):
        return value.length
    return len(value) if isinstance(value, list) else None


def _vocab_size(
    meta: Mapping[str, MetaValue], hp: _Hparams, token_embd: TensorInfo | None
) -> int | None:
    tokens = _length(meta.get("tokenizer.ggml.tokens"))
    if tokens is not None:
        return tokens
    declared = hp.get_int("vocab_size")
    if declared is not None:
        return declared
    if token_embd is not None and len(token_embd.shape) >= 2:
        return token_embd.shape[1]
    return None


def _pooling_type(value: int | None) -> str | None:
    return POOLING_TYPES[value] if value is not None and 0 <= value < len(POOLING_TYPES) else None


def _n_cls_out(hp: _Hparams, pooling_type: str | None, has_cls_out: bool) -> int | None:
    """What llama.cpp takes as ``n_cls_out``: the labels' count, else 1 (for rerankers)."""
    labels = _length(hp.meta.get(f"{hp.arch}.classifier.output_labels"))
    if labels:
        return labels
    return 1 if pooling_type == "rank" or has_cls_out else None


def _bytes_by_type(tensors: Iterable[TensorInfo]) -> dict[str, int]:
    totals: Counter[str] = Counter()
    for info in tensors:
        totals[info.ggml_type] += info.n_bytes
    return dict(totals.most_common())


def _bytes_per_layer(tensors: Iterable[TensorInfo], block_count: int | None) -> tuple[int, ...]:
    sizes: dict[int, int] = {}
    for info in tensors:
        match = _BLOCK.match(info.name)
        if match and (layer := int(match.group(1))) < MAX_LAYERS:
            sizes[layer] = sizes.get(layer, 0) + info.n_bytes
    n_layers = max(sizes) + 1 if sizes else 0
    if block_count is not None and n_layers <= block_count <= MAX_LAYERS:
        n_layers = block_count
    return tuple(sizes.get(layer, 0) for layer in range(n_layers))


def _shard_info(header: GGUFHeader) -> ShardInfo:
    return ShardInfo(
        source_name=header.source_name,
        header_bytes=header.header_bytes,
        data_offset=header.data_offset,
        data_bytes=header.data_bytes,
        required_size=header.required_size,
        file_size=header.file_size,
    )
