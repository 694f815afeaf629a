"""Reading llama.cpp's load log and comparing it with an estimate (no llama.cpp needed)."""

from __future__ import annotations

from core.units import MIB
from devtools.llama_harness import Row, compare, format_table, worker_config
from models_app.estimator import RunSettings, estimate
from scheduling.backend_logs import parse_log

LOG = "\n".join(
    [
        "load_tensors: loading model tensors, this can take a while... (load_mode = mmap)",
        "load_tensors:   CPU_Mapped model buffer size =     0.18 MiB",
        "load_tensors:   CPU_REPACK model buffer size =     0.18 MiB",
        "llama_context: n_ctx                 = 512",
        "llama_context: n_ctx_seq             = 512",
        "llama_context:        CPU  output buffer size =     0.00 MiB",
        "llama_kv_cache:        CPU KV buffer size =     0.25 MiB",
        "llama_kv_cache: size =    0.25 MiB (   512 cells,   2 layers,  1/1 seqs), "
        "K (f16):    0.12 MiB, V (f16):    0.12 MiB",
        "sched_reserve:        CPU compute buffer size =     6.51 MiB",
        "~llama_context:        CPU compute buffer size is   6.5098 MiB, "
        "matches expectation of   6.5098 MiB",
    ]
)


def test_it_reads_every_buffer_and_prefers_the_exact_compute_figure() -> None:
    reported = parse_log(LOG)

    assert reported.buffers["weights"] == {
        "CPU_Mapped": round(0.18 * MIB),
        "CPU_REPACK": round(0.18 * MIB),
    }
    assert reported.component("kv_cache") == MIB // 4
    assert reported.component("compute") == round(6.5098 * MIB)
    assert reported.resolution["compute"] < reported.resolution["weights"]
    assert reported.kv_split == (round(0.12 * MIB), round(0.12 * MIB))
    assert reported.cparams == {"n_ctx": 512, "n_ctx_seq": 512}


def test_tolerances_allow_for_the_rounding_of_the_log() -> None:
    assert Row("weights", MIB + 5000, 0, 5243).within  # 1 MiB plus the rounding
    assert not Row("weights", 2 * MIB, 0, 5243).within
    assert Row("compute", 109, 100, 0).within  # 9 %
    assert not Row("compute", 111, 100, 0).within
    assert not Row("total", 104, 100, 0).within  # 3 % at most


def test_compare_gives_one_row_per_component_and_a_total(make_facts) -> None:
    result = estimate(make_facts(), RunSettings(n_ctx=512))

    rows = compare(result, parse_log(LOG))

    assert [row.component for row in rows] == ["weights", "kv_cache", "compute", "output", "total"]
    assert "component" in format_table(rows, "label")


def test_the_worker_gets_llama_cpp_parameter_values() -> None:
    config = worker_config("/m.gguf", RunSettings(n_ctx=1024, n_seq_max=2, use_mmap=False))

    assert config["n_seq_max"] == 2
    assert config["use_mmap"] is False
    assert config["type_k"] == "f16"
    assert config["n_gpu_layers"] == 0
