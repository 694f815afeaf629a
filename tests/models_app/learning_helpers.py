"""Load logs as llama.cpp writes them, from figures per device and component, for the
tests of learned memory (``models_app.learning``, ``scheduling.measuring``)."""

from __future__ import annotations

from collections.abc import Mapping

from core.units import MIB
from models_app.estimator import Estimate

_LINES = {
    "weights": "load_tensors:        {buffer} model buffer size = {mib:10.2f} MiB",
    "kv_cache": "llama_kv_cache:        {buffer} KV buffer size = {mib:10.2f} MiB",
    "compute": "sched_reserve:        {buffer} compute buffer size = {mib:10.2f} MiB",
    "output": "llama_context:        {buffer}  output buffer size = {mib:10.2f} MiB",
}
_HOST_BUFFER = {"weights": "CPU_Mapped", "kv_cache": "CPU", "compute": "CPU", "output": "CPU"}


def buffers_of(result: Estimate, **scale: float) -> dict[str, dict[str, int]]:
    """The estimate's figures per device, each component times ``scale[component]``."""
    return {
        device.device: {
            name: round(device.component(name) * scale.get(name, 1.0))
            for name in ("weights", "kv_cache", "compute", "output")
        }
        for device in result.devices
    }


def load_log(buffers: Mapping[str, Mapping[str, int]]) -> str:
    """A verbose load log naming these buffers (a device's zero figures left out)."""
    lines = ["llama_model_loader: loaded meta data with 30 key-value pairs"]
    for component, line in _LINES.items():
        for device, parts in buffers.items():
            size = parts.get(component, 0)
            if size:
                buffer = _HOST_BUFFER[component] if device == "CPU" else device
                lines.append(line.format(buffer=buffer, mib=size / MIB))
    lines.append("srv  update_slots: all slots are idle")
    return "\n".join(lines) + "\n"
