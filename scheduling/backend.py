"""Start, watch and stop a backend (llama.cpp's llama-server, or llama-cpp-python's
OpenAI-compatible server) as a detached process.

Plain functions over plain data (no Django, no database)::

    spec = LaunchSpec(instance_id=..., model_path=..., port=..., log_path=..., state_dir=...)
    launched = launch(spec)
    alive = lambda: is_running(launched.server_pid, spec.instance_id)
    ready = wait_ready(spec.host, spec.port, timeout=120, is_alive=alive)
    log = backend_logs.read_log(launched.log_path, launched.log_offset)
    sizes = backend_logs.measured_memory(log)
    stop(launched.runner_pid, launched.server_pid, instance_id=spec.instance_id)

Process tree: ``launch`` starts ``python -m scheduling.runner`` (see runner.py), which
detaches into its own session and process group (group id = runner pid) and runs the
server (``llama-server``, see llama_server.py, or ``python -m llama_cpp.server``) as its
child in that group. Both carry
``GPUFLEET_INSTANCE_ID`` in their environment, which is how ``find_backends`` and
``is_running`` recognise them (and tell them from a process that reused the pid).

llama-cpp-python's server (0.3.x) has no parallel slots: one ``Llama`` per process,
every request goes through one lock (``n_seq_max`` stays 1 except in embedding mode).
llama-server serves ``parallel`` slots with continuous batching.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import httpx
import psutil

from scheduling import llama_server, ports
from scheduling.backend_logs import tail
from scheduling.choices import DEFAULT_N_CTX

INSTANCE_ENV = "GPUFLEET_INSTANCE_ID"
# The node whose agent owns the backend: several nodes may share a machine (a test run
# beside a running gpufleet, simulated nodes), and one agent must not stop another's.
NODE_ENV = "GPUFLEET_BACKEND_NODE"
EXIT_FILE = "exit.json"
PID_FILE = "pids.json"
# ggml_type values of the KV cache types we allow (ggml.h: GGML_TYPE_F16, _Q8_0, _Q4_0)
GGML_CACHE_TYPES = {"f16": 1, "q8_0": 8, "q4_0": 2}


def _names(words: str) -> frozenset[str]:
    return frozenset(words.split())


# Flags argv() sets from the spec: extra_options may not set them again.
MANAGED_FLAGS = _names(
    "model model_alias host port n_ctx n_gpu_layers main_gpu tensor_split n_batch n_ubatch "
    "flash_attn type_k type_v use_mmap verbose config_file embedding"
)
LLAMA_SERVER_NAMES = frozenset(llama_server.LLAMA_SERVER_FLAGS)
# Defaults that extra_options may override. interrupt_requests: by default a new request
# cuts a running stream short, which would let one gateway user end another's stream.
SERVER_DEFAULTS = {"interrupt_requests": "false"}
# llama_cpp.server reads its settings from the environment too (pydantic-settings, any
# case), uvicorn.run() prefers $HOST and $PORT over the flags (honcho sets PORT), and
# $CONFIG_FILE replaces the command line. These never reach the server.
# tests/scheduling/test_backend.py checks this list against llama_cpp.server.settings.
SERVER_SETTINGS_ENV = _names(
    "model model_alias n_gpu_layers split_mode main_gpu tensor_split vocab_only use_mmap "
    "use_mlock kv_overrides rpc_servers seed n_ctx n_batch n_ubatch n_threads "
    "n_threads_batch rope_scaling_type rope_freq_base rope_freq_scale yarn_ext_factor "
    "yarn_attn_factor yarn_beta_fast yarn_beta_slow yarn_orig_ctx mul_mat_q logits_all "
    "embedding offload_kqv flash_attn last_n_tokens_size lora_base lora_path numa "
    "chat_format chat_template_kwargs clip_model_path cache cache_type cache_size "
    "hf_tokenizer_config_path hf_pretrained_model_name_or_path hf_model_repo_id "
    "draft_model draft_model_num_pred_tokens type_k type_v verbose host port ssl_keyfile "
    "ssl_certfile api_key interrupt_requests disable_ping_events root_path config_file"
)
Role = Literal["runner", "server", "other"]
LLAMA_SERVER = "llama_server"
LLAMA_CPP_PYTHON = "llama_cpp_python"
KINDS = ("chat", "embedding", "reranker")
POOLINGS = ("", "none", "mean", "cls", "last", "rank")


class LaunchError(RuntimeError):
    """The runner could not be started or never reported its pids."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LaunchSpec:
    """Everything one start of a backend needs (options validated by the caller).

    ``cuda_visible_devices``: "" hides every GPU, None leaves the variable as it is.
    """

    instance_id: str
    model_path: Path
    port: int
    log_path: Path
    state_dir: Path  # exit and pid files
    host: str = "127.0.0.1"
    served_name: str = "model"  # the model name clients ask for
    n_ctx: int = DEFAULT_N_CTX
    n_gpu_layers: int = 0
    tensor_split: tuple[float, ...] | None = None
    main_gpu: int = 0
    n_batch: int = 512
    n_ubatch: int = 512
    flash_attn: bool = False
    type_k: str = "f16"
    type_v: str = "f16"
    use_mmap: bool = True
    cuda_visible_devices: str | None = None
    extra_options: Mapping[str, str] = field(default_factory=dict)
    node_name: str = ""  # the node whose agent supervises it
    server: str = LLAMA_CPP_PYTHON  # or LLAMA_SERVER
    executable: Path | None = None  # llama-server's binary (None: llama_server.binary())
    parallel: int = 1  # slots (llama-server); n_ctx is per slot
    kind: str = "chat"  # chat, embedding or reranker
    pooling: str = ""  # embedding pooling; "": the model's own
    cache_ram_mib: int = 0  # llama-server's host-RAM prompt cache

    def __post_init__(self) -> None:
        for name in ("type_k", "type_v"):
            if getattr(self, name) not in GGML_CACHE_TYPES:
                raise ValueError(f"{name} must be one of {', '.join(GGML_CACHE_TYPES)}")
        if self.server not in (LLAMA_SERVER, LLAMA_CPP_PYTHON):
            raise ValueError(f"server must be {LLAMA_SERVER} or {LLAMA_CPP_PYTHON}")
        if self.server == LLAMA_CPP_PYTHON and (clash := MANAGED_FLAGS & set(self.extra_options)):
            raise ValueError(f"extra_options may not set {', '.join(sorted(clash))}")
        if self.server == LLAMA_SERVER and (odd := set(self.extra_options) - LLAMA_SERVER_NAMES):
            raise ValueError(f"not a llama-server option: {', '.join(sorted(odd))}")
        if not 0 < self.port < 65536:
            raise ValueError("port must be between 1 and 65535")
        if self.kind not in KINDS or self.pooling not in POOLINGS or self.parallel < 1:
            raise ValueError("kind, pooling or parallel out of range")

    @property
    def ready_path(self) -> str:
        return self.ready_path_of(self.server)

    @staticmethod
    def ready_path_of(server: str) -> str:
        """What answers 200 once the model is loaded (llama-server: 503 while loading)."""
        return llama_server.HEALTH_PATH if server == LLAMA_SERVER else "/v1/models"

    @property
    def exit_file(self) -> Path:
        return self.state_dir / EXIT_FILE

    @property
    def pid_file(self) -> Path:
        return self.state_dir / PID_FILE


@dataclass(frozen=True, slots=True)
class Launched:
    """A started backend. ``log_offset``: where this start's output begins in the log."""

    runner_pid: int
    server_pid: int
    log_path: Path
    started_at: float
    log_offset: int = 0


@dataclass(frozen=True, slots=True)
class ExitStatus:
    """How a backend ended: ``returncode`` < 0 and ``signal`` set when a signal killed it."""

    returncode: int
    signal: str | None
    finished_at: float
    error: str | None = None  # set when the server could not be started at all


@dataclass(frozen=True, slots=True)
class Found:
    """A process on this machine that belongs to a backend."""

    instance_id: str
    pid: int
    role: Role
    port: int | None
    node: str = ""  # the owning node's name, as launched (empty: unknown)


def _flag(value: bool) -> str:
    return "true" if value else "false"


def server_options(spec: LaunchSpec) -> dict[str, str]:
    """llama_cpp.server's flags (names without ``--``) for a spec, tensor_split aside."""
    return {
        "model": str(spec.model_path),
        "model_alias": spec.served_name,
        "host": spec.host,
        "port": str(spec.port),
        "n_ctx": str(spec.n_ctx),
        "n_gpu_layers": str(spec.n_gpu_layers),
        "main_gpu": str(spec.main_gpu),
        "n_batch": str(spec.n_batch),
        "n_ubatch": str(spec.n_ubatch),
        "flash_attn": _flag(spec.flash_attn),
        "type_k": str(GGML_CACHE_TYPES[spec.type_k]),
        "type_v": str(GGML_CACHE_TYPES[spec.type_v]),
        "use_mmap": _flag(spec.use_mmap),
        "verbose": "true",  # the buffer sizes measured_memory reads
        **({"embedding": "true"} if spec.kind == "embedding" else {}),
        **SERVER_DEFAULTS,
        **spec.extra_options,
    }


def server_argv(spec: LaunchSpec) -> list[str]:
    """The server's own command line.

    llama_cpp.server: scalars are spelled ``--name=value`` so that a value starting with
    "-" stays a value; ``--tensor_split`` takes one argument per GPU (``nargs="*"``).
    """
    if spec.server == LLAMA_SERVER:
        executable = spec.executable or llama_server.binary()
        if executable is None:
            raise LaunchError("llama-server is not installed on this node (make install)")
        return llama_server.command(spec, executable)
    server = [sys.executable, "-m", "llama_cpp.server"]
    server += [f"--{name}={value}" for name, value in server_options(spec).items()]
    if spec.tensor_split:
        server += ["--tensor_split", *(repr(float(part)) for part in spec.tensor_split)]
    return server


def argv(spec: LaunchSpec) -> list[str]:
    """The runner's command line, the server's after ``--``. Never a shell."""
    server = server_argv(spec)
    runner = [sys.executable, "-m", "scheduling.runner", "--exit-file", str(spec.exit_file)]
    runner += ["--pid-file", str(spec.pid_file), "--log-file", str(spec.log_path)]
    return [*runner, "--", *server]


def server_env(spec: LaunchSpec, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of runner and server: ``env`` (default: ours) made safe for the server."""
    result = {
        key: value
        for key, value in (os.environ if env is None else env).items()
        if key.lower() not in SERVER_SETTINGS_ENV and not key.startswith(llama_server.ENV_PREFIX)
    }
    if spec.cuda_visible_devices is not None:
        result["CUDA_VISIBLE_DEVICES"] = spec.cuda_visible_devices
    result[INSTANCE_ENV] = spec.instance_id
    result[NODE_ENV] = spec.node_name
    result["PYTHONUNBUFFERED"] = "1"  # the log shows what happened up to the last moment
    return result


def launch(
    spec: LaunchSpec, env: Mapping[str, str] | None = None, pid_timeout: float = 10.0
) -> Launched:
    """Start the backend detached; returns once the runner has reported both pids."""
    spec.state_dir.mkdir(parents=True, exist_ok=True)
    spec.log_path.parent.mkdir(parents=True, exist_ok=True)
    for stale in (spec.exit_file, spec.pid_file):
        stale.unlink(missing_ok=True)
    started_at = time.time()
    with spec.log_path.open("ab") as log:
        offset = log.tell()
        first = subprocess.Popen(
            argv(spec),
            stdin=subprocess.DEVNULL,
            stdout=log,  # the runner's own complaints, before it takes over the log
            stderr=log,
            env=server_env(spec, env),
            start_new_session=True,
        )
    try:
        returncode = first.wait(timeout=pid_timeout)
    except subprocess.TimeoutExpired:
        first.kill()
        first.wait()
        raise LaunchError("the runner did not detach in time") from None
    if returncode != 0:
        raise LaunchError(f"the runner exited with {returncode}: {_tail_text(spec.log_path)}")
    pids = _wait_for_pids(spec.pid_file, time.monotonic() + pid_timeout)
    if pids is None:
        raise LaunchError(
            f"no pid file {spec.pid_file} after {pid_timeout:g} s: {_tail_text(spec.log_path)}"
        )
    return Launched(pids[0], pids[1], spec.log_path, started_at, offset)


def _wait_for_pids(pid_file: Path, deadline: float) -> tuple[int, int] | None:
    while True:
        try:
            data = json.loads(pid_file.read_text(encoding="utf-8"))
            return int(data["runner_pid"]), int(data["server_pid"])
        except FileNotFoundError:
            if time.monotonic() > deadline:
                return None
            time.sleep(0.002)


def _tail_text(log_path: Path) -> str:
    return " | ".join(tail(log_path, lines=10)) or "(empty log)"


def wait_ready(
    host: str,
    port: int,
    timeout: float,
    is_alive: Callable[[], bool],
    interval: float = 0.05,
    server_pid: int | None = None,
    path: str = "/v1/models",
) -> bool:
    """Poll ``GET path`` until it answers 200 (True), the process dies or time runs out.

    ``path``: ``LaunchSpec.ready_path``. llama_cpp.server loads the model before it
    listens; llama-server listens at once and answers 503 until loaded. With
    ``server_pid``, a 200 counts only once that process listens on the port: whatever
    else answers there (another backend that took the port) is not ours.
    """
    address = f"[{host}]" if ":" in host else host
    url = f"http://{address}:{port}{path}"
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=max(interval, 1.0), trust_env=False) as client:
        while True:
            try:
                if client.get(url).status_code == 200 and (
                    server_pid is None or ports.listens_on(server_pid, port)
                ):
                    return True
            except httpx.HTTPError:
                pass
            if not is_alive() or time.monotonic() >= deadline:
                return False
            time.sleep(interval)


def _instance_of(process: psutil.Process) -> str | None:
    try:
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process.environ().get(INSTANCE_ENV)
    except (psutil.Error, OSError):  # gone, access denied, zombie
        return None


def _role_and_port(cmdline: list[str]) -> tuple[Role, int | None]:
    role: Role = "other"
    if "scheduling.runner" in cmdline:
        role = "runner"
    elif "llama_cpp.server" in cmdline or (cmdline and _is_llama_server(cmdline[0])):
        role = "server"
    for i, part in enumerate(cmdline):
        if part.startswith("--port="):
            value = part.partition("=")[2]
        elif part == "--port" and i + 1 < len(cmdline):
            value = cmdline[i + 1]
        else:
            continue
        return role, int(value) if value.isdigit() else None
    return role, None


def _is_llama_server(program: str) -> bool:
    return Path(program).name == "llama-server"


def find_backends() -> list[Found]:
    """Every live process on this machine whose environment names a backend instance."""
    found = []
    for process in psutil.process_iter():
        instance_id = _instance_of(process)
        if instance_id is None:
            continue
        try:
            cmdline = process.cmdline()
        except (psutil.Error, OSError):
            continue
        role, port = _role_and_port(cmdline)
        found.append(Found(instance_id, process.pid, role, port, _node_of(process)))
    return found


def _node_of(process: psutil.Process) -> str:
    try:
        return process.environ().get(NODE_ENV, "")
    except (psutil.Error, OSError):
        return ""


def is_running(pid: int, instance_id: str) -> bool:
    """The pid is alive, not a zombie, and carries that instance id (not a reused pid)."""
    try:
        return _instance_of(psutil.Process(pid)) == instance_id
    except psutil.Error:
        return False


def read_exit(state_dir: Path) -> ExitStatus | None:
    """What the runner recorded when the server ended; None while it runs (or never did)."""
    try:
        data = json.loads((state_dir / EXIT_FILE).read_text(encoding="utf-8"))
        return ExitStatus(
            int(data["returncode"]), data["signal"], float(data["finished_at"]), data.get("error")
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _live(pids: tuple[int, ...], instance_id: str | None) -> list[psutil.Process]:
    processes = []
    for pid in pids:
        try:
            process = psutil.Process(pid)
        except psutil.Error:
            continue
        if instance_id is None or _instance_of(process) == instance_id:
            processes.append(process)
    return processes


def _signal_all(processes: list[psutil.Process], signum: int) -> None:
    """The process groups of ``processes`` (never our own), or each process alone."""
    groups: set[int] = set()
    for process in processes:
        try:
            group = os.getpgid(process.pid)
        except OSError:
            continue  # gone
        if group != os.getpgrp():
            groups.add(group)
            continue
        with contextlib.suppress(psutil.Error):
            process.send_signal(signum)  # psutil checks that the pid was not reused
    for group in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signum)


def _gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def _wait_gone(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while (left := [p for p in processes if not _gone(p)]) and time.monotonic() < deadline:
        time.sleep(0.02)
    return left


def stop(
    runner_pid: int, server_pid: int, timeout: float = 10.0, instance_id: str | None = None
) -> None:
    """SIGTERM to the backend's process group, SIGKILL after ``timeout``; fine when gone.

    With ``instance_id``, only processes carrying it are signalled (a reused pid is safe).
    """
    processes = _live((runner_pid, server_pid), instance_id)
    if not processes:
        return
    _signal_all(processes, signal.SIGTERM)
    left = _wait_gone(processes, timeout)
    if left:
        _signal_all(left, signal.SIGKILL)
        _wait_gone(left, 5.0)


def stop_instance_processes(instance_id: str, timeout: float = 10.0) -> int:
    """Stop every process on this machine that carries ``instance_id``, tracked or not
    (a launch that failed half-way, pids that were never recorded). How many were found."""
    pids = [found.pid for found in find_backends() if found.instance_id == instance_id]
    for pid in pids:
        stop(pid, pid, timeout=timeout, instance_id=instance_id)
    return len(pids)
