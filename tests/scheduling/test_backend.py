"""Backend processes: real runners, real llama_cpp.server on the CPU with a tiny model."""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gguf
import httpx
import psutil
import pytest

from core.units import MIB
from devtools.tiny_gguf import write_tiny_model
from scheduling import backend, backend_logs, ports
from scheduling.backend import Launched, LaunchSpec

needs_llama = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None,
    reason="llama-cpp-python is not installed (make install; CI installs it)",
)
WAIT = 60.0  # seconds: the upper bound of every wait on a real process
Launcher = Callable[..., tuple[LaunchSpec, Launched]]


def _wait_for(condition: Callable[[], Any], timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout} s: {condition}")
        time.sleep(0.02)
    return result


def _zombie_children() -> list[psutil.Process]:
    children = psutil.Process().children()
    return [child for child in children if child.status() == psutil.STATUS_ZOMBIE]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    (path,) = write_tiny_model(
        tmp_path_factory.mktemp("model") / "tiny.gguf",
        header_only=False,
        n_layer=2,
        n_embd=64,
        n_head=4,
        n_head_kv=2,
        n_ff=128,
        n_ctx_train=512,
        weight_type=gguf.GGMLQuantizationType.Q8_0,
    )
    return path


@contextmanager
def _launcher(tiny_model: Path, root: Path) -> Iterator[Launcher]:
    """A function that launches ready backends; every one is stopped at the end."""
    started: list[tuple[LaunchSpec, Launched]] = []
    taken: set[int] = set()
    counter = itertools.count()

    def launch(**fields: Any) -> tuple[LaunchSpec, Launched]:
        port = ports.free_port(20000, 29999, taken)
        assert port is not None
        taken.add(port)
        run = root / f"run-{next(counter)}"
        spec = LaunchSpec(
            instance_id=f"test-{uuid.uuid4()}",
            model_path=tiny_model,
            port=port,
            log_path=run / "logs" / "server.log",
            state_dir=run / "state",
            served_name="tiny",
            n_ctx=256,
            cuda_visible_devices="",
            **fields,
        )
        launched = backend.launch(spec)
        started.append((spec, launched))
        alive = lambda: backend.is_running(launched.server_pid, spec.instance_id)  # noqa: E731
        assert backend.wait_ready(spec.host, port, WAIT, alive), backend_logs.tail(spec.log_path)
        return spec, launched

    try:
        yield launch
    finally:
        for spec, launched in started:
            backend.stop(launched.runner_pid, launched.server_pid, 10, spec.instance_id)


@pytest.fixture
def start_backend(tiny_model: Path, tmp_path: Path) -> Iterator[Launcher]:
    """``start_backend(**spec fields)``: a ready backend, stopped at teardown."""
    with _launcher(tiny_model, tmp_path) as launch:
        yield launch


@pytest.fixture(scope="module")
def running(
    tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LaunchSpec, Launched]]:
    """One ready backend shared by the tests that only look at it."""
    with _launcher(tiny_model, tmp_path_factory.mktemp("shared")) as launch:
        yield launch()


# --- with a real llama_cpp.server ------------------------------------------------------


@needs_llama
def test_a_launched_backend_serves_completions_through_its_port(
    running: tuple[LaunchSpec, Launched],
) -> None:
    spec, _ = running
    base = f"http://{spec.host}:{spec.port}"

    models = httpx.get(f"{base}/v1/models", timeout=WAIT, trust_env=False).json()
    answer = httpx.post(
        f"{base}/v1/completions",
        json={"model": "tiny", "prompt": "Hello", "max_tokens": 4, "temperature": 0},
        timeout=WAIT,
        trust_env=False,
    )

    assert [model["id"] for model in models["data"]] == ["tiny"]
    assert answer.status_code == 200, answer.text
    assert isinstance(answer.json()["choices"][0]["text"], str)
    assert answer.json()["usage"]["completion_tokens"] > 0


@needs_llama
def test_the_server_is_marked_with_its_instance_and_sees_no_gpu(
    running: tuple[LaunchSpec, Launched],
) -> None:
    spec, launched = running

    environ = psutil.Process(launched.server_pid).environ()

    assert environ["GPUFLEET_INSTANCE_ID"] == spec.instance_id
    assert environ["CUDA_VISIBLE_DEVICES"] == ""
    assert psutil.Process(launched.server_pid).ppid() == launched.runner_pid
    assert os.getpgid(launched.server_pid) == launched.runner_pid  # one group to signal


@needs_llama
def test_the_measured_memory_of_a_cpu_backend_is_on_the_cpu(
    running: tuple[LaunchSpec, Launched],
) -> None:
    _, launched = running

    sizes = backend_logs.measured_memory(
        backend_logs.read_log(launched.log_path, launched.log_offset)
    )

    assert set(sizes) == {"CPU"}
    assert sizes["CPU"] > 0


@needs_llama
def test_find_backends_finds_runner_and_server_and_nothing_unrelated(
    running: tuple[LaunchSpec, Launched],
) -> None:
    spec, launched = running
    unrelated = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)"],
        env={**os.environ, "GPUFLEET_UNRELATED": "1"},
    )
    try:
        found = backend.find_backends()
    finally:
        unrelated.kill()
        unrelated.wait()

    mine = {
        (item.pid, item.role, item.port) for item in found if item.instance_id == spec.instance_id
    }
    assert mine == {
        (launched.runner_pid, "runner", spec.port),
        (launched.server_pid, "server", spec.port),
    }
    assert unrelated.pid not in {item.pid for item in found}
    assert os.getpid() not in {item.pid for item in found}


@needs_llama
def test_is_running_is_false_for_a_pid_without_the_instance_id(
    running: tuple[LaunchSpec, Launched],
) -> None:
    spec, launched = running

    assert backend.is_running(launched.server_pid, spec.instance_id)
    assert not backend.is_running(launched.server_pid, "another-instance")
    assert not backend.is_running(os.getpid(), spec.instance_id)


@needs_llama
def test_a_server_killed_with_sigkill_is_recorded_and_leaves_no_zombie(
    start_backend: Launcher,
) -> None:
    spec, launched = start_backend()

    os.kill(launched.server_pid, signal.SIGKILL)
    status = _wait_for(lambda: backend.read_exit(spec.state_dir))

    assert not backend.is_running(launched.server_pid, spec.instance_id)
    assert (status.returncode, status.signal, status.error) == (-9, "SIGKILL", None)
    assert status.finished_at >= launched.started_at
    _wait_for(lambda: not backend.is_running(launched.runner_pid, spec.instance_id))
    assert _zombie_children() == []


@needs_llama
def test_stop_ends_runner_and_server_records_the_exit_and_can_be_repeated(
    start_backend: Launcher,
) -> None:
    spec, launched = start_backend()

    backend.stop(launched.runner_pid, launched.server_pid, timeout=10)

    status = backend.read_exit(spec.state_dir)
    assert status is not None
    assert status.signal in (None, "SIGTERM")  # uvicorn re-raises the signal after shutdown
    assert not backend.is_running(launched.runner_pid, spec.instance_id)
    assert not backend.is_running(launched.server_pid, spec.instance_id)
    assert "Shutting down" in "\n".join(backend_logs.tail(spec.log_path))
    backend.stop(launched.runner_pid, launched.server_pid, timeout=10)  # already gone
    backend.stop(launched.runner_pid, launched.server_pid, 10, spec.instance_id)
    assert _zombie_children() == []


# --- the runner with other commands --------------------------------------------------


def _run_runner(tmp_path: Path, *command: str) -> tuple[Path, Path, Path]:
    exit_file, pid_file, log = tmp_path / "exit.json", tmp_path / "pids.json", tmp_path / "log"
    own = ["--exit-file", str(exit_file), "--pid-file", str(pid_file), "--log-file", str(log)]
    subprocess.run(
        [sys.executable, "-m", "scheduling.runner", *own, "--", *command],
        check=True,
        timeout=WAIT,
    )  # returns as soon as the runner has detached
    return exit_file, pid_file, log


def test_the_runner_records_pids_output_and_exit_code(tmp_path: Path) -> None:
    code = "import os; print('pid', os.getpid(), flush=True); raise SystemExit(3)"

    exit_file, pid_file, log = _run_runner(tmp_path, sys.executable, "-c", code)
    _wait_for(exit_file.exists)

    pids = json.loads(pid_file.read_text())
    result = json.loads(exit_file.read_text())
    assert f"pid {pids['server_pid']}" in log.read_text()
    assert (result["returncode"], result["signal"], result["error"]) == (3, None, None)
    assert result["finished_at"] <= time.time()
    assert _zombie_children() == []


def test_the_runner_forwards_sigterm_to_the_server(tmp_path: Path) -> None:
    code = "import time; time.sleep(60)"
    exit_file, pid_file, _ = _run_runner(tmp_path, sys.executable, "-c", code)
    pids = _wait_for(lambda: pid_file.exists() and json.loads(pid_file.read_text()))

    os.kill(pids["runner_pid"], signal.SIGTERM)  # the runner only, not its group

    _wait_for(exit_file.exists)
    assert json.loads(exit_file.read_text())["signal"] == "SIGTERM"


def test_the_exit_file_says_when_the_server_cannot_start(tmp_path: Path) -> None:
    exit_file, _, _ = _run_runner(tmp_path, str(tmp_path / "no-such-program"), "--flag")

    _wait_for(exit_file.exists)
    result = json.loads(exit_file.read_text())
    assert result["returncode"] == 127
    assert "FileNotFoundError" in result["error"]


def test_launch_says_which_pid_file_never_appeared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backend, "argv", lambda spec: [sys.executable, "-c", "pass"])

    with pytest.raises(backend.LaunchError, match=r"no pid file .*pids\.json after 0\.3 s"):
        backend.launch(_spec(tmp_path), pid_timeout=0.3)


def test_launch_reports_a_runner_that_failed_with_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = "import sys; print('bad arguments', file=sys.stderr); raise SystemExit(2)"
    monkeypatch.setattr(backend, "argv", lambda spec: [sys.executable, "-c", code])

    with pytest.raises(backend.LaunchError, match="exited with 2: bad arguments"):
        backend.launch(_spec(tmp_path))


# --- without processes ----------------------------------------------------------------


def _spec(tmp_path: Path, **fields: Any) -> LaunchSpec:
    values: dict[str, Any] = {
        "instance_id": "inst-1",
        "model_path": tmp_path / "-model.gguf",
        "port": 8123,
        "log_path": tmp_path / "logs" / "server.log",
        "state_dir": tmp_path / "state",
        "served_name": "llama-3-8b",
    }
    return LaunchSpec(**(values | fields))


def test_argv_runs_the_runner_then_the_server_without_a_shell(tmp_path: Path) -> None:
    command = backend.argv(_spec(tmp_path))

    split = command.index("--")
    assert command[:3] == [sys.executable, "-m", "scheduling.runner"]
    assert command[split + 1 : split + 4] == [sys.executable, "-m", "llama_cpp.server"]
    assert not {"sh", "bash", "/bin/sh", "-c", "shell=True"} & set(command)
    assert command[command.index("--exit-file") + 1] == str(tmp_path / "state" / "exit.json")
    assert command[command.index("--pid-file") + 1] == str(tmp_path / "state" / "pids.json")


@needs_llama
def test_argv_puts_every_option_where_llama_cpp_server_reads_it(tmp_path: Path) -> None:
    from llama_cpp.server.cli import add_args_from_model, parse_model_from_args
    from llama_cpp.server.settings import ModelSettings, ServerSettings, Settings

    spec = _spec(
        tmp_path,
        host="0.0.0.0",
        n_ctx=4096,
        n_gpu_layers=33,
        tensor_split=(0.6, 0.4),
        main_gpu=1,
        n_batch=1024,
        n_ubatch=256,
        flash_attn=True,
        type_k="q8_0",
        type_v="q4_0",
        use_mmap=False,
        extra_options={"n_threads": "3", "chat_format": "chatml"},
    )
    command = backend.argv(spec)
    parser = argparse.ArgumentParser()
    add_args_from_model(parser, Settings)  # what llama_cpp.server.__main__ does
    parser.add_argument("--config_file")
    args = parser.parse_args(command[command.index("--") + 4 :])
    model = parse_model_from_args(ModelSettings, args)
    server = parse_model_from_args(ServerSettings, args)

    assert (model.model, model.model_alias) == (str(tmp_path / "-model.gguf"), "llama-3-8b")
    assert (server.host, server.port, server.interrupt_requests) == ("0.0.0.0", 8123, False)
    assert (model.n_ctx, model.n_gpu_layers, model.main_gpu) == (4096, 33, 1)
    assert model.tensor_split == [0.6, 0.4]
    assert (model.n_batch, model.n_ubatch) == (1024, 256)
    assert (model.flash_attn, model.use_mmap, model.verbose) == (True, False, True)
    assert (model.type_k, model.type_v) == (8, 2)  # GGML_TYPE_Q8_0, GGML_TYPE_Q4_0
    assert (model.n_threads, model.chat_format) == (3, "chatml")


@needs_llama
def test_the_cache_type_numbers_are_ggmls() -> None:
    import llama_cpp

    assert backend.GGML_CACHE_TYPES == {
        "f16": llama_cpp.GGML_TYPE_F16,
        "q8_0": llama_cpp.GGML_TYPE_Q8_0,
        "q4_0": llama_cpp.GGML_TYPE_Q4_0,
    }


@needs_llama
def test_every_setting_the_server_reads_from_the_environment_is_scrubbed() -> None:
    from llama_cpp.server.settings import Settings

    assert set(Settings.model_fields) | {"config_file"} == backend.SERVER_SETTINGS_ENV


def test_the_server_environment_drops_server_settings_and_marks_the_instance(
    tmp_path: Path,
) -> None:
    base = {"PATH": "/usr/bin", "PORT": "5000", "host": "0.0.0.0", "N_CTX": "9", "HOME": "/h"}

    hidden = backend.server_env(_spec(tmp_path, cuda_visible_devices="", node_name="gpu-a"), base)
    untouched = backend.server_env(_spec(tmp_path), {**base, "CUDA_VISIBLE_DEVICES": "1"})

    assert hidden == {
        "PATH": "/usr/bin",
        "HOME": "/h",
        "CUDA_VISIBLE_DEVICES": "",
        "GPUFLEET_INSTANCE_ID": "inst-1",
        "GPUFLEET_BACKEND_NODE": "gpu-a",
        "PYTHONUNBUFFERED": "1",
    }
    assert untouched["CUDA_VISIBLE_DEVICES"] == "1"


def test_a_spec_refuses_options_that_the_spec_itself_decides(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="port"):
        _spec(tmp_path, extra_options={"port": "1"})
    with pytest.raises(ValueError, match="type_k"):
        _spec(tmp_path, type_k="q5_1")


CUDA_LOG = """\
llama_model_load_from_file_impl: using device CUDA0 (NVIDIA GeForce RTX 4090) - 23638 MiB free
llama_model_load_from_file_impl: using device CUDA1 (NVIDIA GeForce RTX 4090) - 23852 MiB free
load_tensors: offloading 32 repeating layers to GPU
load_tensors: offloading output layer to GPU
load_tensors: offloaded 33/33 layers to GPU
load_tensors:        CUDA0 model buffer size =  2200.52 MiB
load_tensors:        CUDA1 model buffer size =  1918.25 MiB
load_tensors:   CPU_Mapped model buffer size =   281.81 MiB
llama_context: constructing llama_context
llama_context: n_seq_max     = 1
llama_context: n_ctx         = 8192
llama_context: n_batch       = 512
llama_context: n_ubatch      = 512
llama_context:  CUDA_Host  output buffer size =     0.49 MiB
llama_kv_cache:      CUDA0 KV buffer size =   544.00 MiB
llama_kv_cache:      CUDA1 KV buffer size =   480.00 MiB
llama_kv_cache: size = 1024.00 MiB (  8192 cells,  32 layers,  1/1 seqs), \
K (f16):  512.00 MiB, V (f16):  512.00 MiB
sched_reserve:      CUDA0 compute buffer size =   560.01 MiB
sched_reserve:      CUDA1 compute buffer size =   592.02 MiB
sched_reserve:  CUDA_Host compute buffer size =    72.02 MiB
sched_reserve: graph nodes  = 1158
sched_reserve: graph splits = 3
"""


def test_measured_memory_sums_each_device_and_puts_host_buffers_on_the_cpu() -> None:
    mib = lambda *figures: sum(round(figure * MIB) for figure in figures)  # noqa: E731

    assert backend_logs.measured_memory(CUDA_LOG) == {
        "CUDA0": mib(2200.52, 544.00, 560.01),
        "CUDA1": mib(1918.25, 480.00, 592.02),
        "CPU": mib(281.81, 0.49, 72.02),
    }
    assert backend_logs.measured_memory("no buffers here") == {}


@pytest.mark.parametrize(
    ("buffer", "device"),
    [
        ("CPU", "CPU"),
        ("CPU_Mapped", "CPU"),
        ("CPU_REPACK", "CPU"),
        ("CUDA_Host", "CPU"),
        ("AMX", "CPU"),
        ("CUDA0", "CUDA0"),
        ("CUDA11", "CUDA11"),
        ("ROCm1", "ROCm1"),
        ("CUDA0_Mapped", "CUDA0"),
        ("CUDA_Split", "CUDA_Split"),
        ("Metal", "Metal"),
    ],
)
def test_each_buffer_type_maps_to_the_device_holding_it(buffer: str, device: str) -> None:
    assert backend_logs.device_of(buffer) == device


def test_read_exit_is_none_before_the_backend_ended(tmp_path: Path) -> None:
    assert backend.read_exit(tmp_path) is None
    (tmp_path / "exit.json").write_text("{not json")
    assert backend.read_exit(tmp_path) is None


def test_stop_does_nothing_for_processes_that_are_gone() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()

    backend.stop(gone.pid, gone.pid, timeout=0.1)  # no error, nothing signalled


def test_stop_leaves_a_process_alone_when_it_lacks_the_instance_id() -> None:
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        backend.stop(other.pid, other.pid, timeout=0.1, instance_id="inst-1")
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_tail_reads_only_the_end_of_a_long_log(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("".join(f"line {i}\n" for i in range(100_000)))

    assert backend_logs.tail(log, lines=3) == ["line 99997", "line 99998", "line 99999"]
    short = backend_logs.tail(log, lines=10_000, max_bytes=1000)
    assert 0 < len(short) < 100
    assert all(line.startswith("line ") and line[5:].isdigit() for line in short)
    assert backend_logs.tail(tmp_path / "missing.log") == []


def test_free_port_skips_taken_and_bound_ports() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]

        assert ports.free_port(port, port, set()) is None
        assert ports.free_port(port, port + 1, {port + 1}) is None
        found = ports.free_port(port, port + 50, set())
        assert found is not None and found != port
