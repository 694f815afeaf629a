"""Reading a backend's log: the memory llama.cpp reports per device, and its tail.

Separate from ``backend`` (processes) so that pages and the API can read logs without
the process machinery; ``backend`` re-exports these names.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from models_app.estimator.harness import parse_log


def device_of(buffer: str) -> str:
    """The device a llama.cpp buffer type's memory lives on.

    Host memory → "CPU": "CPU", "CPU_Mapped" (mmap of the model file), "CPU_REPACK",
    "AMX", and every "*_Host" type (pinned host memory such as "CUDA_Host").
    A device buffer "CUDA0", "ROCm1", "Vulkan0" or one with a suffix ("CUDA0_Mapped")
    → the device ("CUDA0"). Anything else ("CUDA_Split", "Metal", "RPC[...]") is kept
    under its own name.
    """
    if buffer.startswith("CPU") or buffer == "AMX" or buffer.endswith("_Host"):
        return "CPU"
    match = re.fullmatch(r"([A-Za-z]+\d+)(?:_\w+)?", buffer)
    return match.group(1) if match else buffer


def measured_memory(log_text: str) -> dict[str, int]:
    """Bytes per device (weights + KV cache + compute + output) from a server's load log.

    Give the log of one start only (from ``Launched.log_offset``): a buffer logged
    twice counts once, at its last size. CUDA context overhead is not in the log.
    """
    sizes: dict[str, int] = {}
    for buffers in parse_log(log_text).buffers.values():
        for name, size in buffers.items():
            device = device_of(name)
            sizes[device] = sizes.get(device, 0) + size
    return sizes


def tail(log_path: Path, lines: int = 50, max_bytes: int = 64 * 1024) -> list[str]:
    """The last ``lines`` lines of a log, reading at most its last ``max_bytes``."""
    try:
        with log_path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(size - max_bytes, 0))
            data = handle.read(max_bytes)
    except OSError:
        return []
    text = data.decode("utf-8", errors="replace").splitlines()
    if size > max_bytes and text:
        text = text[1:]  # cut mid-line
    return text[-lines:] if lines > 0 else []


def read_log(log_path: Path, offset: int = 0, max_bytes: int = 16 * 1024 * 1024) -> str:
    """A log from ``offset`` (``Launched.log_offset``: this start's part), bounded."""
    try:
        with log_path.open("rb") as handle:
            handle.seek(offset)
            return handle.read(max_bytes).decode("utf-8", errors="replace")
    except OSError:
        return ""
