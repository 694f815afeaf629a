"""Model downloads: plain Python, no Django, so the engine is tested on its own.

Resolves Hugging Face files (through huggingface_hub) and plain URLs, lists a
repo's GGUF models (split shards as one), streams into ``<final>.partial`` with
resumption (HTTP Range), retries with backoff, cancellation, a sha256 computed
while downloading, and an atomic rename once verified. The Django task of a
``ModelFile`` wraps ``download_hf_file`` / ``download_shards``: its progress
callback writes the row, its ``should_stop`` reads a flag.

    from models_app.transfer import DownloadOptions, HfFile, download_shards
    results = download_shards(
        HfFile("org/repo", "q4/m-00001-of-00002.gguf", token=token),
        storage_root / "org/repo",
        DownloadOptions(progress=save_progress, should_stop=stop_requested.is_set),
    )
"""

from models_app.retrying import RetryPolicy
from models_app.transfer.download import (
    DownloadOptions,
    DownloadResult,
    download_hf_file,
    download_remote,
    download_shards,
    download_url,
)
from models_app.transfer.errors import (
    Cancelled,
    FileNotFound,
    GatedRepo,
    InsufficientSpace,
    InvalidSource,
    NotFound,
    RangeNotSatisfiable,
    RepoNotFound,
    RevisionNotFound,
    TransferError,
    TransientError,
    Unauthorized,
    Unreachable,
    UnsafePath,
    VerificationFailed,
)
from models_app.transfer.http import READ_SIZE, resolve_url
from models_app.transfer.hub import (
    GgufModel,
    RepoFileInfo,
    group_gguf_files,
    list_gguf_models,
    resolve_hf_file,
)
from models_app.transfer.paths import (
    DEFAULT_SPACE_MARGIN,
    check_free_space,
    resolve_inside,
    resolve_inside_any,
)
from models_app.transfer.sources import HfFile, RemoteFile
from models_app.transfer.stream import ProgressCallback, StopCheck

__all__ = [
    "DEFAULT_SPACE_MARGIN",
    "READ_SIZE",
    "Cancelled",
    "DownloadOptions",
    "DownloadResult",
    "FileNotFound",
    "GatedRepo",
    "GgufModel",
    "HfFile",
    "InsufficientSpace",
    "InvalidSource",
    "NotFound",
    "ProgressCallback",
    "RangeNotSatisfiable",
    "RemoteFile",
    "RepoFileInfo",
    "RepoNotFound",
    "RetryPolicy",
    "RevisionNotFound",
    "StopCheck",
    "TransferError",
    "TransientError",
    "Unauthorized",
    "Unreachable",
    "UnsafePath",
    "VerificationFailed",
    "check_free_space",
    "download_hf_file",
    "download_remote",
    "download_shards",
    "download_url",
    "group_gguf_files",
    "list_gguf_models",
    "resolve_hf_file",
    "resolve_inside",
    "resolve_inside_any",
    "resolve_url",
]
