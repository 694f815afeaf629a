"""Seeds and mutations shared by the fuzz tests and the corpus regression test."""

from __future__ import annotations

import contextlib
import json
import struct
import tempfile
from functools import cache
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as V
from gguf import GGUFWriter

from devtools.tiny_gguf import write_tiny_model
from models_app.gguf import (
    BytesSource,
    GGUFError,
    GGUFSplitError,
    ModelFacts,
    build_facts,
    read_header,
)
from models_app.gguf.split import check_shards

CORPUS = Path(__file__).parent / "corpus"
INTERESTING_U64 = (
    0,
    1,
    7,
    (1 << 24),
    (1 << 31),
    (1 << 32) - 1,
    (1 << 32),
    (1 << 63) - 1,
    (1 << 63),
    (1 << 64) - 1,
)


def _write(path: Path, writer: GGUFWriter, header_only: bool) -> bytes:
    writer.write_header_to_file(path)
    writer.write_kv_data_to_file()
    if header_only:
        writer.write_ti_data_to_file()
    else:
        writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


def _every_value_type(path: Path) -> bytes:
    """A small complete file with every metadata type, nested arrays and real tensors."""
    writer = GGUFWriter(path, "llama")
    writer.add_custom_alignment(64)
    writer.add_name("every type")
    scalars = [V.UINT8, V.INT8, V.UINT16, V.INT16, V.UINT32, V.INT32, V.UINT64, V.INT64]
    for vtype in scalars:
        writer.add_key_value(f"x.{vtype.name.lower()}", 7, vtype)
    writer.add_key_value("x.f32", 1.5, V.FLOAT32)
    writer.add_key_value("x.f64", 2.5, V.FLOAT64)
    writer.add_bool("x.bool", True)
    writer.add_array("llama.attention.head_count_kv", [1, 2])
    writer.add_array("x.strings", ["a", "bc", ""])
    writer.add_array("x.nested", [[1, 2], [3]])
    writer.add_array("tokenizer.ggml.tokens", [f"t{i}" for i in range(100)])
    writer.add_array("tokenizer.ggml.scores", [0.5] * 100)
    writer.add_tensor("token_embd.weight", np.ones((4, 32), dtype=np.float16))
    writer.add_tensor("blk.0.w", np.zeros((2, 34), dtype=np.uint8), raw_dtype=Q.Q8_0)
    writer.add_tensor("output_norm.weight", np.ones(32, dtype=np.float32))
    return _write(path, writer, header_only=False)


@cache
def seeds() -> dict[str, tuple[bytes, bool]]:
    """name -> (file bytes, complete): valid files to mutate."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (tiny,) = write_tiny_model(root / "tiny.gguf", n_vocab=270, header_only=True)
        (split, *_rest) = write_tiny_model(root / "s.gguf", n_layer=1, split_max_tensors=4)
        return {
            "tiny-header": (tiny.read_bytes(), False),
            "every-type": (_every_value_type(root / "every.gguf"), True),
            "split-shard": (split.read_bytes(), True),
        }


def parse_bytes(data: bytes, *, complete: bool = True) -> ModelFacts | GGUFError:
    """Parse one file, returning a GGUFError instead of raising it.

    Any other exception escapes. A lone shard is accepted (its split keys are still
    checked for crashes), and facts must survive ``to_dict`` and strict JSON.
    """
    try:
        header = read_header(BytesSource(data, complete=complete))
    except GGUFError as error:
        return error
    with contextlib.suppress(GGUFSplitError):
        check_shards([header])
    facts = build_facts([header])
    json.dumps(facts.to_dict(), allow_nan=False)
    return facts


def without_shards(facts: ModelFacts | GGUFError) -> dict[str, object]:
    assert isinstance(facts, ModelFacts), facts
    data = facts.to_dict()
    del data["shards"]
    return data


def overwrite_u64(data: bytes, position: int, value: int) -> bytes:
    position = min(position, max(len(data) - 8, 0))
    return data[:position] + struct.pack("<Q", value) + data[position + 8 :]


def overwrite_u32(data: bytes, position: int, value: int) -> bytes:
    position = min(position, max(len(data) - 4, 0))
    return data[:position] + struct.pack("<I", value & 0xFFFFFFFF) + data[position + 4 :]


def flip(data: bytes, position: int, mask: int) -> bytes:
    if not data:
        return data
    position %= len(data)
    return data[:position] + bytes([data[position] ^ mask]) + data[position + 1 :]
