"""Plain data of deployments and instances, for the API and the pages alike."""

from __future__ import annotations

import math
from typing import Any

from inventory.models import Gpu, Node
from models_app import learning
from models_app.estimator.estimate import estimate_reasons
from models_app.estimator.shape import EstimatorError, prepare
from models_app.gguf import ModelFacts
from models_app.models import CatalogModel
from scheduling.choices import InstanceState
from scheduling.fleet import run_settings
from scheduling.models import Deployment, Instance
from scheduling.placement import Placement


def claim_data(instance: Instance) -> list[dict[str, Any]]:
    return [
        {
            "gpu_id": claim.gpu_id,
            "node": claim.gpu.node.name,
            "index": claim.gpu.index,
            "position": claim.position,
            "estimated": claim.estimated,
            "measured": claim.measured,
            "claimed": claim.claimed,
        }
        for claim in instance.claims.select_related("gpu__node").order_by("position")
    ]


def _number(value: Any) -> float | None:
    """A finite, non-negative number from stored JSON (not a flag), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return max(float(value), 0.0) if math.isfinite(value) else None


def readings_data(instance: Instance) -> dict[str, Any] | None:
    """A running instance's readings (``scheduling.readings``) checked, as pages and
    /metrics show them; None when there are none (not running, llama-cpp-python, not read
    yet)."""
    data = instance.readings
    if instance.state != InstanceState.RUNNING or not isinstance(data, dict):
        return None
    slots = int(_number(data.get("slots")) or 0)
    if not slots:
        return None
    kv = _number(data.get("kv_used"))
    kv = None if kv is None else min(kv, 1.0)
    return {
        "slots": slots,
        "busy": min(int(_number(data.get("busy")) or 0), slots),
        "deferred": int(_number(data.get("deferred")) or 0),
        "tokens_per_second": _number(data.get("tokens_per_second")),
        "kv_used": kv,
        "kv_pct": None if kv is None else round(100 * kv),
    }


def instance_data(instance: Instance) -> dict[str, Any]:
    return {
        "id": instance.pk,
        "deployment_id": instance.deployment_id,
        "served_name": instance.deployment.served_name,
        "node": instance.node.name if instance.node else None,
        "state": instance.state,
        "placement_kind": instance.placement_kind,
        "n_gpu_layers": instance.n_gpu_layers,
        "tensor_split": instance.tensor_split,
        "port": instance.port,
        "backend": instance.backend,
        "readings": instance.readings if isinstance(instance.readings, dict) else {},
        "pid": instance.pid,
        "server_pid": instance.server_pid,
        "restart_count": instance.restart_count,
        "next_attempt_at": instance.next_attempt_at,
        "reason": instance.reason,
        "last_error": instance.last_error,
        "estimated": instance.estimated,
        "measured": instance.measured,
        "claims": claim_data(instance),
        "created_at": instance.created_at,
        "ready_at": instance.ready_at,
    }


def estimate_notes(deployment: Deployment) -> list[str]:
    """Why the deployment's memory estimate is approximate (an upper bound for an
    architecture without an exact graph), and what of it placement learns from
    measurements of running instances (``models_app.learning``); empty when it follows
    llama.cpp's rules and nothing was measured."""
    rows = CatalogModel.objects.filter(pk=deployment.model_id).values_list("facts", flat=True)
    try:
        facts = ModelFacts.from_dict(rows.first() or {})
        shape = prepare(facts)
    except (EstimatorError, ValueError, KeyError, TypeError):
        return []
    settings = run_settings(deployment)
    notes = list(estimate_reasons(shape, settings))
    return notes + learning.load(facts, shape).notes(settings)


def deployment_data(deployment: Deployment, with_stopped: bool = False) -> dict[str, Any]:
    instances = deployment.instances.select_related("node", "deployment")
    if not with_stopped:
        instances = instances.exclude(state="stopped")
    return {
        "id": deployment.pk,
        "model_id": deployment.model_id,
        "model": str(deployment.model),
        "served_name": deployment.served_name,
        "replicas": deployment.replicas,
        "min_replicas": deployment.min_replicas,
        "demand": deployment.demand,
        "idle_timeout": deployment.idle_timeout,
        "cold_start_timeout": deployment.cold_start_timeout,
        "max_queue": deployment.max_queue,
        "desired_state": deployment.desired_state,
        "n_ctx": deployment.n_ctx,
        "parallel": deployment.parallel,
        "backend": deployment.backend,
        "kind": deployment.kind,
        "pooling": deployment.pooling,
        "cache_ram": deployment.cache_ram,
        "cache_type": deployment.cache_type,
        "flash_attn": deployment.flash_attn,
        "policy": deployment.policy,
        "node_labels": deployment.node_labels,
        "only_gpus": list(deployment.only_gpus.values_list("pk", flat=True)),
        "exclude_gpus": list(deployment.exclude_gpus.values_list("pk", flat=True)),
        "priority": deployment.priority,
        "allow_cpu_offload": deployment.allow_cpu_offload,
        "allow_multi_gpu": deployment.allow_multi_gpu,
        "extra_options": deployment.extra_options,
        "estimate_notes": estimate_notes(deployment),
        "instances": [instance_data(i) for i in instances.order_by("created_at")],
        "created_at": deployment.created_at,
    }


def placement_data(placement: Placement) -> dict[str, Any]:
    node = Node.objects.get(pk=placement.node_id)
    gpus = Gpu.objects.in_bulk([*placement.gpu_ids])
    by_id = {str(pk): gpu for pk, gpu in gpus.items()}
    return {
        "node_id": node.pk,
        "node": node.name,
        "kind": placement.kind.value,
        "gpus": [
            {"id": gpu_id, "index": by_id[gpu_id].index, "name": by_id[gpu_id].name, "bytes": size}
            for gpu_id, size in zip(placement.gpu_ids, placement.gpu_bytes, strict=True)
        ],
        "host_bytes": placement.host_bytes,
        "n_gpu_layers": placement.n_gpu_layers,
        "tensor_split": list(placement.tensor_split) if placement.tensor_split else None,
        "needs_download": placement.needs_download,
    }
