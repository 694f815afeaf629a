from unittest import mock

import pytest

from inventory.probe import CpuOnlyProbe, ProbeUnavailable, SimulatedProbe, get_probe
from inventory.probe.simulated import GIB, SpecError, parse_spec


def test_spec_expands_counts_in_index_order():
    models = parse_spec("2xA100-80GB, 1xRTX4090")
    assert [m.name for m in models] == [
        "NVIDIA A100-SXM4-80GB",
        "NVIDIA A100-SXM4-80GB",
        "NVIDIA GeForce RTX 4090",
    ]
    assert models[2].memory == 24 * GIB


@pytest.mark.parametrize("spec", ["2xB300", "x", "0xA100-80GB", "2*A100-80GB"])
def test_spec_rejects_unknown_models_and_bad_syntax(spec):
    with pytest.raises(SpecError):
        parse_spec(spec)


def test_simulated_readings_change_but_stay_believable(tmp_path):
    probe = SimulatedProbe("n1", "2xA100-80GB", tmp_path, seed=1)
    series = [probe.read() for _ in range(30)]
    utils = [r[0].utilization for r in series]
    assert len(set(utils)) > 5
    for tick in series:
        for reading in tick:
            assert 0 <= reading.utilization <= 100
            assert 0 < reading.memory_used < reading.memory_total
            assert 25 <= reading.temperature <= 90
            assert 0 < reading.power_draw <= 400


def test_simulated_uuids_are_stable_per_node_and_index(tmp_path):
    a = SimulatedProbe("n1", "2xA100-80GB", tmp_path).devices()
    b = SimulatedProbe("n1", "2xA100-80GB", tmp_path).devices()
    c = SimulatedProbe("n2", "2xA100-80GB", tmp_path).devices()
    assert [d.uuid for d in a] == [d.uuid for d in b]
    assert not {d.uuid for d in a} & {d.uuid for d in c}


def test_injected_foreign_memory_shows_as_used_with_a_process(tmp_path):
    probe = SimulatedProbe("n1", "1xA100-80GB", tmp_path)
    probe.inject(foreign={"0": 8 * GIB})
    reading = probe.read()[0]
    assert reading.memory_used >= 8 * GIB
    assert reading.processes[0].memory_used == 8 * GIB


def test_injected_faults_make_gpus_err_or_disappear(tmp_path):
    probe = SimulatedProbe("n1", "3xT4", tmp_path)
    probe.inject(errors={"1": "Unknown Error"}, missing=[2], temperature={"0": 97})
    readings = probe.read()
    assert [r.index for r in readings] == [0, 1]
    assert readings[0].temperature == 97
    assert readings[1].error == "Unknown Error" and not readings[1].ok
    assert [d.index for d in probe.devices()] == [0, 1]


def test_no_nvidia_driver_falls_back_to_cpu_only_with_a_message(settings):
    settings.GPUFLEET_GPU_PROBE = "auto"
    settings.GPUFLEET_SIMULATED_GPUS = ""
    with mock.patch(
        "inventory.probe.nvml.NvmlProbe.__init__",
        side_effect=ProbeUnavailable("No NVIDIA driver found (NVML: Driver Not Loaded)."),
    ):
        probe = get_probe("n1")
    assert isinstance(probe, CpuOnlyProbe)
    assert "No NVIDIA driver found" in probe.message
    assert probe.read() == [] and probe.devices() == []


def test_nvml_mode_reports_a_missing_driver_instead_of_hiding_it(settings):
    settings.GPUFLEET_GPU_PROBE = "nvml"
    with (
        mock.patch(
            "inventory.probe.nvml.NvmlProbe.__init__",
            side_effect=ProbeUnavailable("No NVIDIA driver found."),
        ),
        pytest.raises(ProbeUnavailable),
    ):
        get_probe("n1")


def test_real_nvml_on_this_machine_never_crashes(settings):
    """Whatever this machine has (a GPU or none), probing ends in a usable probe."""
    settings.GPUFLEET_GPU_PROBE = "auto"
    settings.GPUFLEET_SIMULATED_GPUS = ""
    probe = get_probe("n1")
    assert probe.kind in ("nvml", "none")
    assert probe.message
    probe.close()


def test_simulated_spec_setting_selects_the_simulated_probe(settings, tmp_path):
    settings.GPUFLEET_GPU_PROBE = "auto"
    settings.GPUFLEET_SIMULATED_GPUS = "1xL4"
    settings.STATE_DIR = tmp_path
    probe = get_probe("n1")
    assert isinstance(probe, SimulatedProbe)
    assert probe.devices()[0].name == "NVIDIA L4"
