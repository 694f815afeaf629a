"""scripts/gpu_check.py's comparison, fed with fake nvidia-smi output and fake readings.

The real check needs an NVIDIA GPU (docs/gpu-checks.md); these tests need none."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from core.units import MIB
from inventory.probe import GpuInfo, GpuReading, ProbeUnavailable

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.py"
UUID = "GPU-5b1b3f0e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
SMI = f"0, {UUID}, NVIDIA H100 80GB HBM3, 81559, 531, 0, 31, 71.52, 570.124.06\n"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


gpu_check = _load()


def _probe_rows(**overrides):
    info = GpuInfo(
        index=0,
        uuid=UUID,
        name="NVIDIA H100 80GB HBM3",
        memory_total=81559 * MIB,
        driver_version="570.124.06",
    )
    values = dict(
        index=0,
        uuid=UUID,
        utilization=0.0,
        memory_used=531 * MIB,
        memory_total=81559 * MIB,
        temperature=31.0,
        power_draw=71.5,
    )
    values.update(overrides)
    return gpu_check.our_rows([info], [GpuReading(**values)])


def _mismatches(ours, smi=SMI):
    checks = gpu_check.compare(ours, gpu_check.parse_smi(smi))
    return {c.field for c in checks if not c.ok}


def test_it_accepts_readings_that_agree_within_tolerance():
    ours = _probe_rows(memory_used=(531 + 60) * MIB, temperature=33.0, power_draw=77.0)
    assert _mismatches(ours) == set()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"memory_used": (531 + 65) * MIB}, "memory.used"),
        ({"temperature": 34.0}, "temperature.gpu"),
        ({"power_draw": 80.0}, "power.draw"),
        ({"utilization": 25.0}, "utilization.gpu"),
        ({"power_draw": None}, "power.draw"),
    ],
)
def test_it_flags_live_figures_beyond_tolerance(overrides, field):
    assert _mismatches(_probe_rows(**overrides)) == {field}


def test_identity_fields_must_match_exactly():
    smi = SMI.replace("81559", "81558").replace("570.124.06", "570.124.04")
    assert _mismatches(_probe_rows(), smi) == {"memory.total", "driver_version"}


def test_a_gpu_that_only_one_side_sees_is_a_mismatch():
    second = SMI.replace("0, GPU-5b1b", "1, GPU-ffff")
    checks = gpu_check.compare(_probe_rows(), gpu_check.parse_smi(SMI + second))
    assert {c.index for c in checks if not c.ok} == {1}


def test_a_reading_error_is_a_mismatch_not_a_crash():
    assert "memory.used" in _mismatches(_probe_rows(error="NVML: GPU is lost"))


def test_unavailable_power_on_both_sides_agrees():
    smi = SMI.replace("71.52", "[N/A]")
    assert _mismatches(_probe_rows(power_draw=None), smi) == set()


def test_it_rejects_unexpected_nvidia_smi_output():
    with pytest.raises(ValueError, match="unexpected nvidia-smi line"):
        gpu_check.parse_smi("0, GPU-x, name\n")


def test_report_names_every_mismatch():
    checks = gpu_check.compare(_probe_rows(temperature=40.0), gpu_check.parse_smi(SMI))
    text = gpu_check.report(checks)
    assert "temperature.gpu" in text and "MISMATCH" in text
    assert text.endswith("1 GPU(s), 8 checks, 1 mismatch(es).")


def test_main_exits_2_without_a_gpu(monkeypatch, capsys):
    def no_driver(self):
        raise ProbeUnavailable("No NVIDIA driver found (NVML: Driver Not Loaded).")

    monkeypatch.setattr("inventory.probe.nvml.NvmlProbe.__init__", no_driver)
    assert gpu_check.main() == 2
    assert "No GPU to check: No NVIDIA driver found" in capsys.readouterr().err


def test_the_script_runs_standalone_from_the_repo_root():
    """`python scripts/gpu_check.py` needs no DJANGO_SETTINGS_MODULE from the caller."""
    done = subprocess.run(
        [sys.executable, str(SCRIPT)],
        cwd=SCRIPT.parents[1],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home())},
        timeout=60,
    )
    assert done.returncode in (0, 1, 2), done.stderr
    assert "Traceback" not in done.stderr
