"""GGUF header analysis: plain Python, no Django.

Reads only the header of a GGUF file (key/values and tensor infos, never tensor
data) from a local file, a partly downloaded file, or a URL through HTTP Range
requests, and turns it into ``ModelFacts`` for the estimator, catalog and scheduler.

    facts = load_model_facts("/models/llama-00001-of-00002.gguf")
    facts = load_model_facts(url, http_headers={"Authorization": f"Bearer {token}"})
    facts = parse_model([LocalFileSource(p) for p in shard_locations(path)])
"""

from models_app.gguf.errors import (
    GGUFError,
    GGUFFormatError,
    GGUFIncompleteError,
    GGUFLimitError,
    GGUFRemoteError,
    GGUFSplitError,
    GGUFTooShortError,
    GGUFUnsupportedError,
)
from models_app.gguf.facts import ModelFacts, ShardInfo, build_facts
from models_app.gguf.ggml import file_type_name, tensor_nbytes, tensor_type_name
from models_app.gguf.header import GGUFHeader, TensorInfo, read_header
from models_app.gguf.parse import is_url, load_model_facts, open_source, parse_model
from models_app.gguf.reader import DEFAULT_LIMITS, Limits
from models_app.gguf.remote import HttpRangeSource
from models_app.gguf.sources import ByteSource, BytesSource, LocalFileSource, PartialFileSource
from models_app.gguf.split import shard_locations
from models_app.gguf.values import ArraySummary, MetaValue

__all__ = [
    "DEFAULT_LIMITS",
    "ArraySummary",
    "ByteSource",
    "BytesSource",
    "GGUFError",
    "GGUFFormatError",
    "GGUFHeader",
    "GGUFIncompleteError",
    "GGUFLimitError",
    "GGUFRemoteError",
    "GGUFSplitError",
    "GGUFTooShortError",
    "GGUFUnsupportedError",
    "HttpRangeSource",
    "Limits",
    "LocalFileSource",
    "MetaValue",
    "ModelFacts",
    "PartialFileSource",
    "ShardInfo",
    "TensorInfo",
    "build_facts",
    "file_type_name",
    "is_url",
    "load_model_facts",
    "open_source",
    "parse_model",
    "read_header",
    "shard_locations",
    "tensor_nbytes",
    "tensor_type_name",
]
