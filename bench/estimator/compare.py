"""Estimated against reported, for one model and settings, or for the whole matrix.

Loads the model with llama-cpp-python on the CPU (in a worker process), reads the
buffer sizes llama.cpp logs and prints them next to the estimate::

    .venv/bin/python bench/estimator/compare.py /models/tiny.gguf --ctx 4096 --parallel 4 --fa
    .venv/bin/python bench/estimator/compare.py --matrix          # every case, every table

Exit status 1 when a figure is outside its tolerance (weights and KV 1 MiB,
compute 10 %, total 3 %).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from devtools.estimator_matrix import cases, write_models  # noqa: E402
from devtools.llama_harness import compare, format_table, measure  # noqa: E402
from models_app.estimator import CacheType, RunSettings, estimate  # noqa: E402
from models_app.gguf import load_model_facts  # noqa: E402


def _settings(options: argparse.Namespace) -> RunSettings:
    return RunSettings(
        n_ctx=options.ctx,
        n_seq_max=options.parallel,
        n_batch=options.batch,
        n_ubatch=options.ubatch,
        type_k=CacheType(options.cache_type_k),
        type_v=CacheType(options.cache_type_v),
        flash_attn=options.fa,
        use_mmap=not options.no_mmap,
        kv_unified=options.kv_unified,
    )


def compare_one(path: Path, settings: RunSettings, label: str) -> bool:
    (reported,) = measure([(path, settings)], workers=1)
    if reported.error:
        print(f"{label}: llama.cpp failed: {reported.error}")
        return False
    rows = compare(estimate(load_model_facts(path), settings), reported)
    print(format_table(rows, label))
    print()
    return all(row.within for row in rows)


def compare_matrix() -> bool:
    with tempfile.TemporaryDirectory() as directory:
        paths = write_models(Path(directory))
        runs = list(cases())
        reports = measure([(paths[case.model], case.settings) for case in runs])
        ok = True
        for case, reported in zip(runs, reports, strict=True):
            if reported.error:
                print(f"{case.name}: llama.cpp failed: {reported.error}")
                ok = False
                continue
            rows = compare(estimate(load_model_facts(paths[case.model]), case.settings), reported)
            print(format_table(rows, case.name), end="\n\n")
            ok = ok and all(row.within for row in rows)
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", nargs="?", type=Path)
    parser.add_argument("--matrix", action="store_true", help="run the whole accuracy matrix")
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--ubatch", type=int, default=512)
    parser.add_argument("--cache-type-k", default="f16", choices=[t.value for t in CacheType])
    parser.add_argument("--cache-type-v", default="f16", choices=[t.value for t in CacheType])
    parser.add_argument("--fa", action="store_true", help="flash attention")
    parser.add_argument("--no-mmap", action="store_true")
    parser.add_argument("--kv-unified", action="store_true")
    options = parser.parse_args()
    if options.matrix:
        return 0 if compare_matrix() else 1
    if options.model is None:
        parser.error("give a model path or --matrix")
    return 0 if compare_one(options.model, _settings(options), str(options.model)) else 1


if __name__ == "__main__":
    raise SystemExit(main())
