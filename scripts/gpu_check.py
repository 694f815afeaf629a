"""Compare our NVML readings (``inventory.probe.nvml.NvmlProbe``) with ``nvidia-smi``.

    python scripts/gpu_check.py

Run it from the repository root on a machine with an NVIDIA GPU. It prints both
readings side by side for every GPU and exits 0 when they agree, 1 on a mismatch and
2 when there is no GPU to check (no driver, no nvidia-smi, or no device). Identity
fields must match exactly; live figures change between the two reads and get a
tolerance (TOLERANCES). See docs/gpu-checks.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# The probe needs only nvidia-ml-py; this keeps the import of the package safe anyway.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from core.units import MIB  # noqa: E402
from inventory.probe.base import GpuInfo, GpuReading, ProbeUnavailable  # noqa: E402

FIELDS = (
    "index",
    "uuid",
    "name",
    "memory.total",
    "memory.used",
    "utilization.gpu",
    "temperature.gpu",
    "power.draw",
    "driver_version",
)
SMI_COMMAND = [
    "nvidia-smi",
    f"--query-gpu={','.join(FIELDS)}",
    "--format=csv,noheader,nounits",
]
EXACT = ("uuid", "name", "memory.total", "driver_version")
# field → (absolute tolerance, relative tolerance): the larger of the two applies.
TOLERANCES: dict[str, tuple[float, float]] = {
    "memory.used": (64, 0.0),  # MiB
    "utilization.gpu": (10, 0.0),  # percentage points
    "temperature.gpu": (2, 0.0),  # °C
    "power.draw": (0, 0.10),  # W
}
NO_GPU = 2


@dataclass(frozen=True)
class Check:
    index: int
    field: str
    ours: str
    theirs: str
    ok: bool


def parse_smi(text: str) -> dict[int, dict[str, str]]:
    """nvidia-smi's CSV (noheader, nounits) → {index: {field: value}}."""
    rows: dict[int, dict[str, str]] = {}
    for line in text.strip().splitlines():
        values = [v.strip() for v in line.split(",")]
        if len(values) != len(FIELDS):
            raise ValueError(f"unexpected nvidia-smi line: {line!r}")
        row = dict(zip(FIELDS, values, strict=True))
        rows[int(row["index"])] = row
    return rows


def our_rows(devices: list[GpuInfo], readings: list[GpuReading]) -> dict[int, dict[str, str]]:
    """Our probe's figures in nvidia-smi's units (MiB, %, °C, W)."""
    by_index = {r.index: r for r in readings}
    rows: dict[int, dict[str, str]] = {}
    for info in devices:
        reading = by_index.get(info.index)
        row = {
            "uuid": info.uuid,
            "name": info.name,
            "memory.total": str(info.memory_total // MIB),
            "driver_version": info.driver_version,
        }
        if reading is not None and reading.ok:
            row |= {
                "memory.used": str(reading.memory_used // MIB),
                "utilization.gpu": _number(reading.utilization),
                "temperature.gpu": _number(reading.temperature),
                "power.draw": _number(reading.power_draw),
            }
        rows[info.index] = row
    return rows


def _number(value: float | None) -> str:
    return "[N/A]" if value is None else f"{value:g}"


def _agrees(field: str, ours: str, theirs: str) -> bool:
    if field in EXACT or ours == theirs:
        return ours == theirs
    try:
        a, b = float(ours), float(theirs)
    except ValueError:  # "[N/A]" on one side only, or a reading we could not take
        return False
    absolute, relative = TOLERANCES[field]
    return abs(a - b) <= max(absolute, relative * max(abs(a), abs(b)))


def compare(ours: dict[int, dict[str, str]], theirs: dict[int, dict[str, str]]) -> list[Check]:
    checks = []
    for index in sorted(set(ours) | set(theirs)):
        mine, smi = ours.get(index, {}), theirs.get(index, {})
        for field in FIELDS[1:]:
            a, b = mine.get(field, "(missing)"), smi.get(field, "(missing)")
            checks.append(Check(index, field, a, b, _agrees(field, a, b)))
    return checks


def report(checks: list[Check]) -> str:
    lines = [f"{'gpu':>3}  {'field':<16} {'NVML probe':<42} {'nvidia-smi':<42} result"]
    for c in checks:
        verdict = "ok" if c.ok else "MISMATCH"
        lines.append(f"{c.index:>3}  {c.field:<16} {c.ours:<42} {c.theirs:<42} {verdict}")
    bad = sum(not c.ok for c in checks)
    gpus = len({c.index for c in checks})
    lines.append(f"{gpus} GPU(s), {len(checks)} checks, {bad} mismatch(es).")
    return "\n".join(lines)


def read_smi() -> str:
    try:
        done = subprocess.run(SMI_COMMAND, capture_output=True, text=True, timeout=30)
    except FileNotFoundError as exc:
        raise ProbeUnavailable("nvidia-smi is not installed.") from exc
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip().splitlines()
        raise ProbeUnavailable(f"nvidia-smi failed: {message[0] if message else done.returncode}")
    return done.stdout


def main() -> int:
    from inventory.probe.nvml import NvmlProbe

    try:
        probe = NvmlProbe()
    except ProbeUnavailable as exc:
        print(f"No GPU to check: {exc}", file=sys.stderr)
        return NO_GPU
    try:
        print(probe.message)
        ours = our_rows(probe.devices(), probe.read())
        theirs = parse_smi(read_smi())
    except ProbeUnavailable as exc:
        print(f"No GPU to check: {exc}", file=sys.stderr)
        return NO_GPU
    finally:
        probe.close()
    if not ours and not theirs:
        print("No GPU to check: NVML and nvidia-smi list no device.", file=sys.stderr)
        return NO_GPU
    checks = compare(ours, theirs)
    print(report(checks))
    return 0 if all(c.ok for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
