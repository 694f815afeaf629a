"""Reading a backend's log: the memory llama.cpp reports per device, and its tail.

Separate from ``backend`` (processes) so that pages and the API can read logs without
the process machinery. ``parse_log`` reads llama.cpp's load log (the same lines whether
llama-server, llama-cpp-python or the estimator's test harness loaded the model).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from core.units import MIB

ROUNDING = MIB // 200 + 1  # a figure printed as %.2f MiB is within 0.005 MiB
ROUNDING_EXACT = MIB // 20000 + 1  # %.4f MiB


_NUMBER = r"([0-9]+(?:\.[0-9]+)?)"
_PATTERNS = {
    "weights": re.compile(rf"load_tensors:\s+(\S+) model buffer size =\s+{_NUMBER} MiB"),
    # a hybrid's recurrent state (llama_memory_recurrent's RS buffer) counts as KV cache
    "kv_cache": re.compile(
        r"(?:llama_kv_cache|llama_memory_recurrent):"
        rf"\s+(\S+) (?:KV|RS) buffer size =\s+{_NUMBER} MiB"
    ),
    "compute": re.compile(rf"sched_reserve:\s+(\S+) compute buffer size =\s+{_NUMBER} MiB"),
    "output": re.compile(rf"llama_context:\s+(\S+)\s+output buffer size =\s+{_NUMBER} MiB"),
}
_EXACT_COMPUTE = re.compile(rf"~llama_context:\s+(\S+) compute buffer size is\s+{_NUMBER} MiB")
_KV_SPLIT = re.compile(rf"K \((\w+)\):\s+{_NUMBER} MiB, V \((\w+)\):\s+{_NUMBER} MiB")
_CPARAM = re.compile(r"llama_context: (n_ctx|n_ctx_seq|n_seq_max|n_batch|n_ubatch)\s+= (\d+)")


@dataclass(frozen=True, slots=True)
class Reported:
    """What llama.cpp logged for one load: bytes per buffer, grouped by component."""

    buffers: dict[str, dict[str, int]]  # component -> {buffer name: bytes}
    resolution: dict[str, int]  # component -> how exact the printed figure is (bytes)
    kv_split: tuple[int, int] = (0, 0)  # K and V bytes
    cparams: dict[str, int] = field(default_factory=dict)
    error: str | None = None

    def component(self, name: str) -> int:
        return sum(self.buffers.get(name, {}).values())

    @property
    def total(self) -> int:
        return sum(self.component(name) for name in self.buffers)


def _mib(text: str) -> int:
    return round(float(text) * MIB)


def parse_log(log: str, error: str | None = None) -> Reported:
    """The buffer sizes in a llama.cpp load log."""
    buffers: dict[str, dict[str, int]] = {}
    resolution: dict[str, int] = {}
    for component, pattern in _PATTERNS.items():
        for name, size in pattern.findall(log):
            # a name logged twice is two buffers: an iSWA model's two KV caches
            sizes = buffers.setdefault(component, {})
            sizes[name] = sizes.get(name, 0) + _mib(size)
            # each figure is rounded to 0.01 MiB (0.0001 MiB for the compute buffer at teardown)
            resolution[component] = resolution.get(component, 0) + ROUNDING
    exact = _EXACT_COMPUTE.findall(log)
    if exact:
        buffers["compute"] = {name: _mib(size) for name, size in exact}
        resolution["compute"] = len(exact) * ROUNDING_EXACT
    splits = _KV_SPLIT.findall(log)  # one line per cache
    kv_split = (sum(_mib(s[1]) for s in splits), sum(_mib(s[3]) for s in splits))
    cparams = {key: int(value) for key, value in _CPARAM.findall(log)}
    return Reported(buffers, resolution, kv_split, cparams, error)


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


# The components llama.cpp's load log reports (the estimator's names, ``parse_log``).
LOGGED_COMPONENTS = ("weights", "kv_cache", "compute", "output")


def measured_components(log_text: str) -> dict[str, dict[str, int]]:
    """Bytes per device and component (weights, kv_cache, compute, output) from a
    server's load log: what ``measured_memory`` adds up, kept apart.

    A device appears with every component (0 where the log names none for it). A log
    that reports no model buffer (a load that failed, a log cut short, a server that is
    not verbose) gives ``{}``: nothing measured, rather than a load without weights.
    """
    reported = parse_log(log_text)
    if not reported.buffers.get("weights"):
        return {}
    sizes: dict[str, dict[str, int]] = {}
    for component in LOGGED_COMPONENTS:
        for name, size in reported.buffers.get(component, {}).items():
            device = sizes.setdefault(device_of(name), dict.fromkeys(LOGGED_COMPONENTS, 0))
            device[component] += size
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
