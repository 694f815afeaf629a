"""A simulated fleet for demos and tests: believable, changing readings.

``GPUFLEET_SIMULATED_GPUS="2xA100-80GB,1xRTX4090"`` describes a node's GPUs. Faults are
injected through a JSON file (``<state dir>/simulated/<node>.json``), so a test or an
operator in another process can change what the agent sees::

    {"foreign": {"0": 8589934592}, "errors": {"1": "GPU is lost"},
     "missing": [2], "temperature": {"0": 97}}
"""

from __future__ import annotations

import json
import math
import random
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.units import GIB, MIB
from inventory.probe.base import GpuInfo, GpuReading, ProcessUsage


@dataclass(frozen=True)
class GpuModel:
    name: str
    memory: int
    power_limit: float
    idle_power: float
    compute_capability: str


CATALOG: dict[str, GpuModel] = {
    "A100-80GB": GpuModel("NVIDIA A100-SXM4-80GB", 80 * GIB, 400, 60, "8.0"),
    "A100-40GB": GpuModel("NVIDIA A100-SXM4-40GB", 40 * GIB, 400, 55, "8.0"),
    "H100-80GB": GpuModel("NVIDIA H100 80GB HBM3", 80 * GIB, 700, 70, "9.0"),
    "H200": GpuModel("NVIDIA H200", 141 * GIB, 700, 75, "9.0"),
    "L40S": GpuModel("NVIDIA L40S", 48 * GIB, 350, 35, "8.9"),
    "A10": GpuModel("NVIDIA A10", 24 * GIB, 150, 20, "8.6"),
    "L4": GpuModel("NVIDIA L4", 24 * GIB, 72, 16, "8.9"),
    "T4": GpuModel("Tesla T4", 16 * GIB, 70, 10, "7.5"),
    "RTX4090": GpuModel("NVIDIA GeForce RTX 4090", 24 * GIB, 450, 25, "8.9"),
    "RTX3090": GpuModel("NVIDIA GeForce RTX 3090", 24 * GIB, 350, 22, "8.6"),
}
_SPEC_ITEM = re.compile(r"^(?:(\d+)\s*x\s*)?([A-Za-z0-9-]+)$")
DRIVER_BASELINE = 420 * MIB


class SpecError(ValueError):
    pass


def parse_spec(spec: str) -> list[GpuModel]:
    """``"2xA100-80GB,1xRTX4090"`` → the node's GPU models in index order."""
    models: list[GpuModel] = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        match = _SPEC_ITEM.match(item)
        if not match:
            raise SpecError(f"{item!r}: expected COUNTxMODEL, e.g. 2xA100-80GB")
        count, key = int(match.group(1) or 1), match.group(2).upper().replace("RTX-", "RTX")
        if key not in CATALOG:
            raise SpecError(f"{item!r}: unknown GPU model; known: {', '.join(sorted(CATALOG))}")
        if not 1 <= count <= 64:
            raise SpecError(f"{item!r}: count must be between 1 and 64")
        models.extend([CATALOG[key]] * count)
    return models


class SimulatedProbe:
    kind = "simulated"

    def __init__(self, node_name: str, spec: str, state_dir: Path, seed: int | None = None):
        self.models = parse_spec(spec)
        self.node_name = node_name
        self.fault_file = state_dir / "simulated" / f"{node_name}.json"
        self._rng = random.Random(seed if seed is not None else node_name)
        self._load = [self._rng.uniform(0, 60) for _ in self.models]
        self._tick = 0
        self.message = f"Simulated GPUs: {spec}."
        # Our backends' use per GPU uuid, as a real GPU would show it (the agent sets
        # this from the instances' claims: a simulated backend uses what it claimed).
        self.workload: Callable[[], dict[str, list[ProcessUsage]]] | None = None

    def uuid_of(self, index: int) -> str:
        return "GPU-" + str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{self.node_name}.gpu{index}"))

    def devices(self) -> list[GpuInfo]:
        faults = self.faults()
        missing = set(faults.get("missing", []))
        return [
            GpuInfo(
                index=i,
                uuid=self.uuid_of(i),
                name=m.name,
                memory_total=m.memory,
                driver_version="550.54.15",
                cuda_version="12.4",
                compute_capability=m.compute_capability,
                power_limit=m.power_limit,
            )
            for i, m in enumerate(self.models)
            if i not in missing
        ]

    def faults(self) -> dict[str, Any]:
        try:
            data = json.loads(self.fault_file.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def inject(self, **faults: Any) -> None:
        """Replace the injected faults (keys: foreign, errors, missing, temperature)."""
        self.fault_file.parent.mkdir(parents=True, exist_ok=True)
        self.fault_file.write_text(json.dumps(faults))

    def read(self) -> list[GpuReading]:
        self._tick += 1
        faults = self.faults()
        missing = {int(i) for i in faults.get("missing", [])}
        readings = []
        workload = self.workload() if self.workload else {}
        for index, model in enumerate(self.models):
            if index in missing:
                continue
            error = faults.get("errors", {}).get(str(index), "")
            if error:
                readings.append(GpuReading(index=index, uuid=self.uuid_of(index), error=error))
                continue
            readings.append(
                self._reading(index, model, faults, workload.get(self.uuid_of(index), []))
            )
        return readings

    def _reading(
        self, index: int, model: GpuModel, faults: dict[str, Any], ours: list[ProcessUsage]
    ) -> GpuReading:
        load = self._walk(index)
        foreign = int(faults.get("foreign", {}).get(str(index), 0))
        backends = sum(p.memory_used for p in ours)
        noise = int(self._rng.uniform(0, 4) * MIB)
        used = min(model.memory, DRIVER_BASELINE + foreign + backends + noise)
        temperature = 32 + load * 0.45 + self._rng.uniform(-1, 1)
        forced = faults.get("temperature", {}).get(str(index))
        processes = tuple(ours)
        if foreign:
            processes += (ProcessUsage(pid=10_000 + index, memory_used=foreign, name="foreign"),)
        return GpuReading(
            index=index,
            uuid=self.uuid_of(index),
            utilization=round(load),
            memory_used=used,
            memory_total=model.memory,
            temperature=float(forced) if forced is not None else round(temperature),
            power_draw=round(
                model.idle_power + load / 100 * (model.power_limit - model.idle_power), 1
            ),
            processes=processes,
        )

    def _walk(self, index: int) -> float:
        """A bounded random walk with a slow wave: changes every second, never jumps."""
        wave = 15 * math.sin(self._tick / 40 + index)
        step = self._rng.gauss(0, 6)
        self._load[index] = min(100.0, max(0.0, self._load[index] + step))
        return min(100.0, max(0.0, self._load[index] + wave))

    def close(self) -> None:
        return None
