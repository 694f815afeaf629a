"""llama-server's command line: every memory-relevant flag explicit, slots, kinds, options;
and the estimator's settings that follow the same figures."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from models_app.estimator import CacheType
from scheduling import backend, fleet, llama_server
from scheduling.backend import LaunchSpec
from scheduling.options import clean_options
from tests.factories import CatalogModelFactory

SERVER = Path("/opt/llama/llama-server")


def _spec(tmp_path: Path, **fields) -> LaunchSpec:
    values = dict(
        instance_id="i-1", model_path=tmp_path / "m.gguf", port=40001, served_name="chat",
        log_path=tmp_path / "log", state_dir=tmp_path / "state", server=backend.LLAMA_SERVER,
        executable=SERVER,
    )  # fmt: skip
    return LaunchSpec(**(values | fields))


def _value(args: list[str], flag: str) -> str:
    assert args.count(flag) == 1, f"{flag} appears {args.count(flag)} times in {args}"
    return args[args.index(flag) + 1]


def test_the_context_passed_is_per_slot_times_slots_with_one_kv_stream_per_slot(tmp_path):
    args = backend.server_argv(_spec(tmp_path, n_ctx=4096, parallel=8))
    assert _value(args, "--ctx-size") == str(4096 * 8)
    assert _value(args, "--parallel") == "8"
    assert "--no-kv-unified" in args and "--cont-batching" in args


def test_every_memory_relevant_default_of_llama_server_is_overridden(tmp_path):
    spec = _spec(tmp_path, n_batch=2048, n_ubatch=512, type_k="q8_0", type_v="q8_0")
    args = backend.server_argv(replace_fa(spec, True))
    assert _value(args, "--fit") == "off", "llama-server must not resize what placement sized"
    assert _value(args, "--flash-attn") == "on"
    assert _value(args, "--batch-size") == "2048" and _value(args, "--ubatch-size") == "512"
    assert _value(args, "--cache-type-k") == "q8_0" and _value(args, "--cache-type-v") == "q8_0"
    assert _value(args, "--cache-ram") == "0" and _value(args, "--ctx-checkpoints") == "0"
    assert "--no-mmap" not in args and "--swa-full" not in args
    assert "--no-mmap" in backend.server_argv(replace(spec, use_mmap=False))
    assert _value(args, "--log-verbosity") == "4", "buffer sizes are logged only at 4"
    assert "--metrics" in args and "--slots" in args
    off = backend.server_argv(replace_fa(spec, False))
    assert _value(off, "--flash-attn") == "off"


def replace_fa(spec: LaunchSpec, on: bool) -> LaunchSpec:
    return replace(spec, flash_attn=on)


def test_gpu_layers_and_the_split_are_passed_as_placed(tmp_path):
    args = backend.server_argv(_spec(tmp_path, n_gpu_layers=17, tensor_split=(0.75, 0.25)))
    assert _value(args, "--n-gpu-layers") == "17" and _value(args, "--main-gpu") == "0"
    assert _value(args, "--split-mode") == "layer"
    assert _value(args, "--tensor-split") == "0.75,0.25"


@pytest.mark.parametrize(
    ("kind", "pooling", "expected"),
    [
        ("chat", "", []),
        ("embedding", "", ["--embedding"]),
        ("embedding", "mean", ["--embedding", "--pooling", "mean"]),
        ("reranker", "", ["--reranking"]),
    ],
)
def test_each_kind_starts_the_server_in_its_mode(tmp_path, kind, pooling, expected):
    args = backend.server_argv(_spec(tmp_path, kind=kind, pooling=pooling))
    modes = [a for a in args if a in ("--embedding", "--reranking", "--pooling", "mean")]
    assert modes == expected


def test_options_become_llama_server_flags_and_booleans_are_bare_flags(tmp_path):
    options, errors = clean_options(
        {"n_threads": 2, "use_mlock": "yes", "chat_format": "chatml", "ctx_checkpoints": 4},
        "llama_server",
    )
    assert not errors
    args = backend.server_argv(_spec(tmp_path, extra_options=options))
    assert _value(args, "--threads") == "2" and _value(args, "--chat-template") == "chatml"
    assert "--mlock" in args and _value(args, "--ctx-checkpoints") == "4"
    unset, _ = clean_options({"use_mlock": "no"}, "llama_server")
    assert "--mlock" not in backend.server_argv(_spec(tmp_path, extra_options=unset))


def test_an_option_of_the_other_backend_is_refused_with_the_allowed_list():
    _, errors = clean_options({"last_n_tokens_size": 64}, "llama_server")
    assert "not an allowed option for llama_server" in errors["last_n_tokens_size"]
    assert "n_threads" in errors["last_n_tokens_size"]
    with pytest.raises(ValueError, match="not a llama-server option"):
        LaunchSpec(
            instance_id="i", model_path=Path("m"), port=1, log_path=Path("l"),
            state_dir=Path("s"), server=backend.LLAMA_SERVER, extra_options={"model": "x"},
        )  # fmt: skip


def test_a_value_that_looks_like_a_flag_stays_one_argument(tmp_path):
    args = backend.server_argv(_spec(tmp_path, served_name="-m-odd"))
    assert _value(args, "--alias") == "-m-odd"


def test_a_missing_binary_is_a_launch_error_that_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv(llama_server.BINARY_ENV, str(tmp_path / "nothing-here"))
    with pytest.raises(backend.LaunchError, match="llama-server is not installed"):
        backend.server_argv(_spec(tmp_path, executable=None))


def test_llama_server_is_found_beside_python_or_where_the_environment_says(tmp_path, monkeypatch):
    binary = tmp_path / "llama-server"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    monkeypatch.setenv(llama_server.BINARY_ENV, str(binary))
    assert llama_server.binary() == binary
    binary.chmod(0o644)
    assert llama_server.binary() is None, "a file that cannot run is no server"


def test_the_server_environment_drops_llama_arg_variables(tmp_path):
    env = backend.server_env(_spec(tmp_path), {"LLAMA_ARG_CTX_SIZE": "1", "HOME": "/root"})
    assert "LLAMA_ARG_CTX_SIZE" not in env and env["HOME"] == "/root"


def test_llama_server_is_ready_on_health_and_llama_cpp_server_on_models(tmp_path):
    assert _spec(tmp_path).ready_path == "/health"
    assert _spec(tmp_path, server=backend.LLAMA_CPP_PYTHON).ready_path == "/v1/models"


def test_a_llama_server_process_is_recognised_with_its_port():
    role, port = backend._role_and_port(["/x/bin/llama-server", "--model", "m", "--port", "9"])
    assert (role, port) == ("server", 9)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("backend_name", "swa_full"), [("llama_server", False), ("llama_cpp_python", True)]
)
def test_the_estimate_uses_the_settings_the_backend_is_started_with(backend_name, swa_full):
    from scheduling.models import Deployment

    deployment = Deployment(
        model=CatalogModelFactory(), n_ctx=2048, parallel=4 if swa_full is False else 1,
        backend=backend_name, cache_type="q8_0", flash_attn=True,
    )  # fmt: skip
    settings = fleet.run_settings(deployment)
    assert settings.n_ctx == 2048 * deployment.parallel
    assert settings.n_seq_max == deployment.parallel and settings.kv_unified is False
    assert settings.swa_full is swa_full and settings.flash_attn
    assert settings.type_k is CacheType.Q8_0 and (settings.n_batch, settings.n_ubatch) == (
        2048,
        512,
    )


@pytest.mark.django_db
def test_embedding_backends_take_a_whole_input_in_one_micro_batch_and_pool_by_default():
    from scheduling.models import Deployment

    llama = CatalogModelFactory(facts={"pooling_type": None})
    deployment = Deployment(model=llama, n_ctx=1024, kind="embedding")
    assert fleet.batch_sizes(deployment) == (1024, 1024)
    assert fleet.pooling_flag(deployment) == "mean", "a model without pooling gets mean"
    bert = CatalogModelFactory(facts={"pooling_type": "cls"})
    assert fleet.pooling_flag(Deployment(model=bert, n_ctx=512, kind="embedding")) == ""
    chosen = Deployment(model=bert, n_ctx=512, kind="embedding", pooling="last")
    assert fleet.pooling_flag(chosen) == "last"


@pytest.mark.django_db
def test_an_embedding_micro_batch_is_a_multiple_of_the_slots():
    from scheduling.models import Deployment

    model = CatalogModelFactory(facts={"pooling_type": "mean"})
    deployment = Deployment(model=model, n_ctx=700, parallel=3, kind="embedding")
    assert fleet.batch_sizes(deployment) == (702, 702)  # -np 3 -ub 700 aborts llama-server
    deployment.parallel = 1
    assert fleet.batch_sizes(deployment) == (700, 700)


@pytest.mark.django_db
def test_the_estimate_pools_as_the_backend_is_told_to():
    from scheduling.models import Deployment

    bert = CatalogModelFactory(facts={"pooling_type": "cls"})
    llama = CatalogModelFactory(facts={"pooling_type": None})
    assert fleet.run_settings(Deployment(model=bert, kind="embedding")).pooling is None
    chosen = Deployment(model=bert, kind="embedding", pooling="mean")
    assert fleet.run_settings(chosen).pooling == "mean"
    assert fleet.run_settings(Deployment(model=llama, kind="embedding")).pooling == "mean"
    assert fleet.run_settings(Deployment(model=bert, kind="reranker")).pooling == "rank"
    assert fleet.run_settings(Deployment(model=llama, kind="chat")).pooling is None
