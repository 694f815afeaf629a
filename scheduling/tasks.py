"""Django-Q entry points of a node's worker: start an instance's backend, stop one.

Thin: claim the row (``lifecycle``), run the process part (``backend``), record what
happened. Safe to run twice: a second delivery finds the row no longer claimable.
The backend is launched detached (``scheduling.runner``): it is never a child of
this task, and the node's agent supervises it from then on.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from dataclasses import replace
from pathlib import Path

from django.conf import settings

from inventory.devices import DeviceSelectionError, cuda_visible_devices
from models_app import actions as model_actions
from scheduling import backend, backend_logs, fleet, lifecycle, llama_server, ports
from scheduling.actions import on_instance_ended
from scheduling.choices import InstanceState, PlacementKind
from scheduling.models import Instance, InstanceRun

logger = logging.getLogger("gpufleet.backends")
HOST = "127.0.0.1"


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def model_path(instance: Instance) -> str:
    model = instance.deployment.model
    if instance.model_file is not None:
        return instance.model_file.path
    return model.path


def visible_devices(instance: Instance) -> str:
    """UUIDs of the instance's GPUs in priority order; "" hides every GPU (CPU only)."""
    gpus = [claim.gpu for claim in instance.claims.select_related("gpu").order_by("position")]
    return cuda_visible_devices(gpus)


def launch_spec(instance: Instance, run: InstanceRun, port: int) -> backend.LaunchSpec:
    deployment = instance.deployment
    cpu_only = instance.placement_kind == PlacementKind.CPU_ONLY
    n_batch, n_ubatch = fleet.batch_sizes(deployment)
    return backend.LaunchSpec(
        instance_id=str(instance.pk),
        model_path=Path(model_path(instance)),
        host=HOST,
        port=port,
        server=deployment.backend,
        parallel=deployment.parallel,
        kind=deployment.kind,
        pooling=fleet.pooling_flag(deployment),
        cache_ram_mib=deployment.cache_ram,
        n_ctx=deployment.n_ctx,
        n_gpu_layers=0 if cpu_only else instance.n_gpu_layers,
        tensor_split=tuple(instance.tensor_split) if instance.tensor_split else None,
        main_gpu=0,
        n_batch=n_batch,
        n_ubatch=n_ubatch,
        flash_attn=deployment.flash_attn,
        type_k=deployment.cache_type,
        type_v=deployment.cache_type,
        use_mmap=True,
        served_name=deployment.served_name,
        cuda_visible_devices=visible_devices(instance),
        extra_options=deployment.options,
        log_path=Path(run.log_path),
        state_dir=state_dir(instance, run),
        node_name=instance.node.name if instance.node else "",
    )


def with_fallback(spec: backend.LaunchSpec, instance: Instance) -> backend.LaunchSpec:
    """llama-cpp-python's server where llama-server is not installed, when that runs the
    same thing in the same memory: one slot, no reranking, no pooling or prompt cache of
    llama-server's, no server options, and no sliding window (its SWA cache is
    full-size). Otherwise the spec as it is: launching it says what is missing."""
    if spec.server != backend.LLAMA_SERVER or llama_server.binary() is not None:
        return spec
    facts = instance.deployment.model.facts or {}
    same = spec.parallel == 1 and spec.kind != "reranker" and not spec.cache_ram_mib
    same = same and not spec.extra_options and not spec.pooling
    if not same or facts.get("sliding_window"):
        return spec
    logger.warning("llama-server is not installed: %s runs llama_cpp.server", instance)
    return replace(spec, server=backend.LLAMA_CPP_PYTHON)


def state_dir(instance: Instance, run: InstanceRun) -> Path:
    return Path(settings.GPUFLEET_LOG_DIR) / "state" / f"{instance.pk}-run{run.number}"


def start_instance(instance_id: str) -> str:
    """Launch the backend of a scheduled instance and wait until it answers.

    Any failure on the way fails the instance at once with the reason (its claims are
    released, a restart follows after the backoff) and stops whatever was launched for
    it: nothing stays in ``starting`` for a dead task, no backend runs untracked.
    """
    claimed = lifecycle.do_claim_start(instance_id, worker_id())
    if claimed is None:
        return "not startable (not scheduled, or taken by another worker)"
    instance, run = claimed
    try:
        launched = _launch(instance, run)
        return _await_ready(instance, run, launched)
    except Exception as exc:
        expected = (OSError, backend.LaunchError, DeviceSelectionError, lifecycle.PortUnavailable)
        if not isinstance(exc, expected):
            logger.exception("starting instance %s failed", instance_id)
        backend.stop_instance_processes(str(instance.pk))
        lifecycle.do_mark_failed(instance, f"Could not start the backend: {exc}")
        return f"failed to launch: {exc}"


def _launch(instance: Instance, run: InstanceRun) -> backend.Launched:
    low, high = settings.GPUFLEET_BACKEND_PORTS
    port = lifecycle.do_reserve_port(
        instance, range(low, high + 1), lambda candidate: ports.bindable(candidate, HOST)
    )
    spec = with_fallback(launch_spec(instance, run, port), instance)
    launched = backend.launch(spec)
    if not lifecycle.do_record_launch(
        instance, launched.runner_pid, launched.server_pid, spec.server
    ):
        backend.stop(launched.runner_pid, launched.server_pid, instance_id=str(instance.pk))
        raise backend.LaunchError("the instance was stopped while it started")
    return launched


def _await_ready(instance: Instance, run: InstanceRun, launched: backend.Launched) -> str:
    def alive() -> bool:
        return backend.is_running(launched.server_pid, str(instance.pk))

    assert instance.port is not None
    timeout = settings.GPUFLEET_BACKEND_START_TIMEOUT
    path = backend.LaunchSpec.ready_path_of(instance.backend)
    if backend.wait_ready(
        HOST, instance.port, timeout, alive, server_pid=launched.server_pid, path=path
    ):
        measured = backend_logs.measured_memory(backend_logs.read_log(Path(run.log_path)))
        if lifecycle.do_mark_running(instance, measured) and instance.model_file is not None:
            model_actions.do_touch(instance.model_file)  # the storage page's "last used"
        return f"running on port {instance.port} (pid {launched.server_pid})"
    instance.refresh_from_db()
    if instance.state != InstanceState.STARTING:  # stopped by an operator meanwhile
        return f"no longer starting ({instance.state})"
    if alive():
        backend.stop(launched.runner_pid, launched.server_pid, instance_id=str(instance.pk))
        error = f"The backend did not answer within {timeout:.0f} s."
    else:
        error = "The backend exited while starting."
    fail_from_exit(instance, run, error)
    return f"failed: {error}"


def fail_from_exit(instance: Instance, run: InstanceRun, error: str) -> None:
    """Mark failed with the exit status and the last log lines of the run."""
    status = backend.read_exit(state_dir(instance, run))
    lines = "\n".join(backend_logs.tail(Path(run.log_path), lines=40))
    code = status.returncode if status else None
    signal = (status.signal or "") if status else ""
    if status is not None:
        error += f" ({'signal ' + signal if signal else f'exit code {code}'})"
    lifecycle.do_mark_failed(instance, error, exit_code=code, signal=signal, last_lines=lines)


def stop_instance(instance_id: str) -> str:
    """Stop a stopping instance's backend (SIGTERM, then SIGKILL) and release its claims."""
    instance = Instance.objects.select_related("deployment").filter(pk=instance_id).first()
    if instance is None or instance.state != InstanceState.STOPPING:
        return "nothing to stop"
    if instance.pid or instance.server_pid:
        backend.stop(instance.pid or 0, instance.server_pid or 0, instance_id=str(instance.pk))
    backend.stop_instance_processes(str(instance.pk))  # one whose pids were never recorded
    run = instance.current_run
    status = backend.read_exit(state_dir(instance, run)) if run else None
    code = status.returncode if status else None
    lifecycle.do_mark_stopped(
        instance, exit_code=code, signal=(status.signal or "") if status else ""
    )
    on_instance_ended(instance)
    return "stopped"
