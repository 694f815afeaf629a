"""Layer placement follows llama.cpp's load_tensors rules (hand-computed expectations).

n_layer = 4 unless said otherwise, so there are 5 "layers" counting the output one:
i_gpu_start = max(5 - n_gpu_layers, 0), act_gpu_layers = min(n_gpu_layers, 5), and
layer il goes to the first GPU whose cumulative split point exceeds (il - start) / act.
"""

from __future__ import annotations

import pytest

from core.units import GIB
from models_app.estimator import GpuDevice, RunSettings, SplitMode, estimate
from models_app.estimator.context import pad
from models_app.estimator.layer_split import CPU, place_layers, split_points
from models_app.estimator.shape import prepare
from models_app.estimator.weights import CUDA_ALIGNMENT, cuda_alloc_size

ONE = [GpuDevice("CUDA0", 24 * GIB)]
TWO = [GpuDevice("CUDA0", 24 * GIB), GpuDevice("CUDA1", 8 * GIB)]


def _place(n_gpu_layers: int, gpus: list[GpuDevice], n_layer: int = 4, **settings: object):
    return place_layers(n_layer, gpus, RunSettings(n_gpu_layers=n_gpu_layers, **settings))  # type: ignore[arg-type]


def test_it_keeps_everything_on_the_cpu_without_gpus() -> None:
    placement = _place(-1, [])

    assert placement.layers == (CPU,) * 4
    assert placement.output == CPU
    assert placement.input == CPU


def test_it_keeps_everything_on_the_cpu_with_zero_gpu_layers() -> None:
    placement = _place(0, ONE)

    assert placement.layers == (CPU,) * 4
    assert placement.output == CPU


def test_partial_offload_takes_the_last_layers_and_the_output() -> None:
    # start = 5 - 2 = 3: layer 3 and the output layer (4) go to the GPU
    placement = _place(2, ONE)

    assert placement.layers == (CPU, CPU, CPU, 0)
    assert placement.output == 0


def test_n_gpu_layers_equal_to_n_layer_leaves_the_first_layer_on_the_cpu() -> None:
    # start = 5 - 4 = 1: the output layer counts as one of the offloaded layers
    placement = _place(4, ONE)

    assert placement.layers == (CPU, 0, 0, 0)
    assert placement.output == 0


@pytest.mark.parametrize("n_gpu_layers", [-1, 5, 100])
def test_all_layers_plus_output_offload_everything(n_gpu_layers: int) -> None:
    placement = _place(n_gpu_layers, ONE)

    assert placement.layers == (0, 0, 0, 0)
    assert placement.output == 0
    assert placement.full_offload


def test_an_even_split_puts_the_first_three_of_five_on_the_first_gpu() -> None:
    # points [0.5, 1.0]; positions 0, .2, .4 -> GPU 0; .6, .8 (output) -> GPU 1
    placement = _place(-1, TWO, tensor_split=(1.0, 1.0))

    assert placement.layers == (0, 0, 0, 1)
    assert placement.output == 1


def test_a_three_to_one_split_leaves_only_the_output_on_the_second_gpu() -> None:
    # points [0.75, 1.0]; positions 0 .. .6 -> GPU 0; .8 -> GPU 1
    placement = _place(-1, TWO, tensor_split=(3.0, 1.0))

    assert placement.layers == (0, 0, 0, 0)
    assert placement.output == 1


def test_the_default_split_follows_free_memory() -> None:
    # 24 GiB and 8 GiB free: the same points as a 3:1 split
    assert _place(-1, TWO) == _place(-1, TWO, tensor_split=(3.0, 1.0))
    assert split_points(TWO, None) == (0.75, 1.0)


def test_an_80_layer_model_splits_41_and_39_on_two_equal_gpus() -> None:
    # act = 81: layer il is on GPU 0 while il / 81 < 0.5, i.e. il <= 40
    placement = _place(-1, TWO, n_layer=80, tensor_split=(1.0, 1.0))

    assert placement.layers_on(0) == list(range(41))
    assert placement.layers_on(1) == list(range(41, 80))
    assert placement.output == 1


def test_split_points_are_computed_in_32_bit_floats() -> None:
    three = [GpuDevice(f"CUDA{i}", GIB) for i in range(3)]

    placement = _place(-1, three, n_layer=2, tensor_split=(1.0, 1.0, 1.0))

    # 1/3 as a float equals the first point, and upper_bound moves past equal points
    assert placement.layers == (0, 1)
    assert placement.output == 2


def test_split_mode_none_keeps_only_the_main_gpu() -> None:
    placement = _place(-1, TWO, split_mode=SplitMode.NONE, main_gpu=1)

    assert [gpu.name for gpu in placement.gpus] == ["CUDA1"]
    assert placement.layers == (0, 0, 0, 0)


def test_split_mode_none_with_a_negative_main_gpu_uses_no_gpu() -> None:
    placement = _place(-1, TWO, split_mode=SplitMode.NONE, main_gpu=-1)

    assert placement.gpus == ()
    assert placement.layers == (CPU,) * 4


def test_the_assignment_names_devices_and_keeps_the_input_layer_on_the_cpu(make_facts) -> None:
    facts = make_facts(n_layer=4)

    result = estimate(facts, RunSettings(n_ctx=256, n_gpu_layers=2), ONE)

    assert result.assignment.by_device == {"CUDA0": (3,), "CPU": (0, 1, 2)}
    assert result.assignment.output_device == "CUDA0"
    assert result.assignment.input_device == "CPU"
    assert result.assignment.n_gpu_layers == 2


def test_tied_embeddings_are_duplicated_on_the_output_gpu(make_facts) -> None:
    facts = make_facts(n_layer=2, tied_embeddings=True)
    shape = prepare(facts)
    embd = next(w for w in shape.weights if w.name == "token_embd.weight")
    on_gpu = [w for w in shape.weights if w.layer >= 0]

    result = estimate(facts, RunSettings(n_ctx=256), ONE)

    expected_gpu = sum(pad(cuda_alloc_size(w), CUDA_ALIGNMENT) for w in [*on_gpu, embd])
    assert result.device("CUDA0").weights == expected_gpu
    assert result.cpu.buffers["CPU_Mapped model"] == embd.nbytes
