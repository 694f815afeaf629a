"""Estimates compared with figures recorded from an earlier version of the estimator.

``data/estimates.json`` holds about fifty cases (tiny and 70B-shaped models, MoE,
attention biases, per-layer widths, sliding windows; contexts, batch sizes, flash
attention, quantized caches, 0 to 3 GPUs, tensor splits, offloading switches) with
every device's figures, buffers and compute high-water mark, as the estimator gave
them before its speed work (commit ca5b28c). The speed work must not move a byte.

When figures are meant to change, rewrite the file from the current code::

    .venv/bin/python tests/estimator/test_recorded_estimates.py --write
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from gguf import GGMLQuantizationType as Q

from devtools.tiny_gguf import write_tiny_model
from models_app.estimator import (
    COMPONENTS,
    CacheType,
    Estimate,
    GpuDevice,
    RunSettings,
    SplitMode,
    estimate,
)
from models_app.estimator import compute as compute_module
from models_app.gguf import ModelFacts, PartialFileSource, parse_model

DATA = Path(__file__).parent / "data" / "estimates.json"

# name -> (write_tiny_model fields, ModelFacts fields to replace)
MODELS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "llama-gqa-f16": ({"n_layer": 3, "n_embd": 256, "n_head": 4, "n_head_kv": 2, "n_ff": 512}, {}),
    "qwen2-bias-q8": (
        {"arch": "qwen2", "n_layer": 6, "n_embd": 256, "n_head": 4, "n_head_kv": 1, "n_ff": 384},
        {},
    ),
    "moe-q4": (
        {"n_layer": 5, "n_embd": 128, "n_head": 2, "n_head_kv": 1, "n_ff": 128, "n_expert": 4},
        {},
    ),
    "llama-tied-f32": (
        {"n_embd": 128, "n_head": 4, "n_head_kv": 4, "n_ff": 256, "tied_embeddings": True},
        {},
    ),
    "llama-deep-q4": ({"n_layer": 8, "n_embd": 256, "n_head": 2, "n_head_kv": 1}, {}),
    "per-layer-q8": ({"n_layer": 6, "n_embd": 256, "n_head_kv": [2, 2, 1, 4, 2, 2]}, {}),
    "sliding-f16": (
        {"n_layer": 6, "n_embd": 256, "n_head": 4, "n_head_kv": 2, "n_ff": 512},
        {"architecture": "mystery", "sliding_window": 128},
    ),
    "70b-q4k": (
        {
            "n_layer": 80,
            "n_embd": 8192,
            "n_head": 64,
            "n_head_kv": 8,
            "n_ff": 28672,
            "n_vocab": 128256,
            "n_ctx_train": 8192,
        },
        {},
    ),
}
WEIGHT_TYPES = {"f16": Q.F16, "q8": Q.Q8_0, "q4": Q.Q4_0, "f32": Q.F32, "q4k": Q.Q4_K}


def load_model(name: str, directory: Path) -> ModelFacts:
    fields, overrides = MODELS[name]
    fields = {"weight_type": WEIGHT_TYPES[name.rsplit("-", 1)[1]], **fields}
    if fields.get("n_expert"):
        fields.setdefault("n_expert_used", 2)
    (path,) = write_tiny_model(directory / f"{name}.gguf", header_only=True, **fields)
    return replace(parse_model([PartialFileSource(path)]), **overrides)


def run_case(facts: ModelFacts, case: dict[str, Any]) -> Estimate:
    settings = dict(case["settings"])
    for key in ("type_k", "type_v"):
        settings[key] = CacheType(settings[key])
    settings["split_mode"] = SplitMode(settings["split_mode"])
    if settings["tensor_split"] is not None:
        settings["tensor_split"] = tuple(settings["tensor_split"])
    gpus = [GpuDevice(name, free) for name, free in case["gpus"]]
    return estimate(facts, RunSettings(**settings), gpus)


def figures(result: Estimate) -> dict[str, Any]:
    """What is recorded of an estimate: every figure and the compute working."""
    compute = {  # the compute buffer's working names the allocation that set its size
        item.device: item.text.rpartition("high-water mark set by ")[2]
        for item in result.explanation
        if item.component == "compute"
    }
    return {
        "devices": [
            {
                "device": device.device,
                "components": [device.component(name) for name in COMPONENTS],
                "buffers": device.buffers,
                "layers": [device.layers[0], len(device.layers)] if device.layers else [],
                "compute_peak": compute[device.device],
            }
            for device in result.devices
        ],
        "n_gpu_layers": result.assignment.n_gpu_layers,
        "output_device": result.assignment.output_device,
    }


def _cases() -> list[dict[str, Any]]:
    return list(json.loads(DATA.read_text()))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModelFacts]:
    directory = tmp_path_factory.mktemp("recorded")
    return {name: load_model(name, directory) for name in MODELS}


def test_estimates_match_the_recorded_figures(models: dict[str, ModelFacts]) -> None:
    cases = _cases()
    assert len(cases) >= 50
    for index, case in enumerate(cases):
        if index % 3 == 0:  # some from scratch, the others after other cases filled the cache
            compute_module._CACHE.clear()
        got = figures(run_case(models[case["model"]], case))
        assert got == case["expected"], (index, case["model"], case["settings"], case["gpus"])


BENCH_CASES = [  # bench/estimator/run.py's: the CPU only, two 80 GiB GPUs, two 24 GiB ones
    {"model": "70b-q4k", "settings": {"n_ctx": 8192}, "gpus": gpus}
    for gpus in ([], [["CUDA0", 80 << 30], ["CUDA1", 80 << 30]])
] + [
    {"model": "70b-q4k", "settings": {"n_ctx": 8192, "n_gpu_layers": layers}, "gpus": gpus}
    for layers in (40, 60)
    for gpus in ([["CUDA0", 24 << 30], ["CUDA1", 24 << 30]],)
]


def random_cases(count: int, seed: int = 2026) -> list[dict[str, Any]]:
    """Settings to record: the bench's, then a spread of everything that changes a figure."""
    rng = random.Random(seed)
    cases: list[dict[str, Any]] = [
        {**case, "settings": {**_DEFAULTS, **case["settings"]}} for case in BENCH_CASES
    ]
    for index in range(count - len(cases)):
        model = list(MODELS)[index % len(MODELS)]
        n_layer = MODELS[model][0].get("n_layer", 2)
        flash = rng.random() < 0.5
        n_gpus = rng.choice([0, 1, 2, 2, 3])
        settings = {
            "n_ctx": rng.choice([256, 1000, 4096, 8192, 32768, 131072]),
            "n_seq_max": rng.choice([1, 1, 2, 4]),
            "n_batch": rng.choice([512, 2048]),
            "n_ubatch": rng.choice([1, 16, 128, 512]),
            "type_k": rng.choice(["f16", "q8_0", "q4_0"]),
            "type_v": rng.choice(["f16", "q8_0"]) if flash else "f16",
            "flash_attn": flash,
            "n_gpu_layers": rng.choice([-1, 0, n_layer, rng.randint(0, n_layer + 1)]),
            "split_mode": rng.choice(["layer", "layer", "none"]),
            "tensor_split": rng.choice([None, None, [3.0, 1.0], [1.0, 0.0, 2.0]]),
            "offload_kqv": rng.random() < 0.8,
            "op_offload": rng.random() < 0.8,
            "kv_unified": rng.random() < 0.2,
            "swa_full": rng.random() < 0.5,
        }
        gpus = [[f"CUDA{i}", rng.choice([8, 24, 80]) << 30] for i in range(n_gpus)]
        cases.append({"model": model, "settings": settings, "gpus": gpus})
    return cases


_DEFAULTS = {
    "type_k": "f16",
    "type_v": "f16",
    "split_mode": "layer",
    "tensor_split": None,
}


def write(path: Path = DATA) -> None:
    """Record the current estimator's figures for ``random_cases(50)``."""
    cases = random_cases(50)
    with tempfile.TemporaryDirectory() as directory:
        models = {name: load_model(name, Path(directory)) for name in MODELS}
        for case in cases:
            compute_module._CACHE.clear()
            case["expected"] = figures(run_case(models[case["model"]], case))
    path.write_text("[\n" + ",\n".join(json.dumps(case) for case in cases) + "\n]\n")


if __name__ == "__main__" and "--write" in sys.argv:
    write()
