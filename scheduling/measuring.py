"""Recording what a running instance measured, for later estimates to learn from
(``models_app.learning``): the buffers its load log names, when it reaches running,
and NVML's per-process figures while it runs.

Both are best effort and run outside the instance's own writes: a log without the
figures, a model whose facts cannot be read or a failing write records nothing and
leaves the instance as it is.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from models_app import learning
from models_app.estimator import RunSettings
from models_app.gguf import ModelFacts
from scheduling import backend_logs, fleet
from scheduling.choices import PlacementKind
from scheduling.models import Instance

logger = logging.getLogger("gpufleet.scheduling")


def instance_settings(instance: Instance) -> RunSettings:
    """The estimator's settings of what the instance runs: its deployment's, with the
    layers and split it was placed with (as ``tasks.launch_spec`` passes them)."""
    cpu_only = instance.placement_kind == PlacementKind.CPU_ONLY
    split = tuple(instance.tensor_split) if instance.tensor_split else None
    return replace(
        fleet.run_settings(instance.deployment),
        n_gpu_layers=0 if cpu_only else instance.n_gpu_layers,
        tensor_split=split,
        main_gpu=0,
    )


def record_start(instance_id: Any) -> None:
    """Store the buffers the instance's current run logged (after it reached running)."""
    try:
        _record_start(instance_id)
    except Exception:
        logger.exception("recording the measured memory of instance %s failed", instance_id)


def _record_start(instance_id: Any) -> None:
    instance = (
        Instance.objects.select_related("deployment", "deployment__model")
        .filter(pk=instance_id)
        .first()
    )
    run = instance.current_run if instance is not None else None
    if instance is None or run is None or not run.log_path:
        return
    buffers = backend_logs.measured_components(backend_logs.read_log(Path(run.log_path)))
    if not buffers:
        logger.info("no buffer sizes in the log of %s: nothing learned", instance)
        return
    model = instance.deployment.model
    claims = instance.claims.select_related("gpu").order_by("position")
    kind = learning.device_kind([claim.gpu.name for claim in claims])
    stored = learning.record(
        ModelFacts.from_dict(model.facts or {}),
        instance_settings(instance),
        kind,
        buffers,
        instance_id=instance.pk,
        model=model,
    )
    if stored is None:
        logger.info("the log of %s is incomplete or not its layout: nothing learned", instance)
        return
    Instance.objects.filter(pk=instance.pk).update(measurement=stored)


def record_nvml(instance: Instance, used: dict[str, int]) -> None:
    """Keep NVML's per-process figures (device → bytes) with the instance's measurement."""
    if instance.measurement_id is None:
        return
    try:
        learning.record_nvml(instance.measurement_id, used)
    except Exception:
        logger.exception("recording NVML's figures of instance %s failed", instance)
