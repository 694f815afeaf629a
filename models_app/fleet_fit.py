"""Which GPUs of the fleet could hold a catalog model: the estimator's answer for every
node, at a usual context, against each GPU's free-for-placement memory now."""

from __future__ import annotations

from dataclasses import dataclass

from inventory.devices import device_order
from inventory.models import Gpu, Node
from models_app.estimator import EstimatorError, GpuDevice, ModelShape, RunSettings, estimate
from models_app.estimator import prepare as prepare_shape
from models_app.models import CatalogModel

FIT_CONTEXT = 4096
"""The context the catalog checks fits with (one slot, f16 KV): a usual deployment."""


@dataclass(frozen=True)
class NodeFit:
    node: str
    single: tuple[str, ...]
    """GPUs (``gpu0``) that hold the whole model alone."""
    split: int
    """0, or how many of the node's GPUs hold it together when none does alone."""
    needed: int
    """Bytes one GPU would need for all of it (weights, KV, compute, overhead)."""
    bound: bool = False
    """``needed`` is an upper bound: the architecture has no exact graph."""

    @property
    def fits(self) -> bool:
        return bool(self.single or self.split)

    def summary(self) -> str:
        if self.single:
            return f"{self.node}: {', '.join(self.single)}"
        if self.split:
            return f"{self.node}: split over {self.split} GPUs"
        return f"{self.node}: no"


def _split_fits(shape: ModelShape, settings: RunSettings, gpus: list[Gpu]) -> bool:
    devices = [GpuDevice(f"CUDA{i}", gpu.free_for_placement) for i, gpu in enumerate(gpus)]
    return estimate(shape, settings, devices).fits()


def node_fits(model: CatalogModel, nodes: list[Node] | None = None) -> list[NodeFit]:
    """For each node with usable (enabled, present) GPUs: which hold the model alone, or
    whether all of them do together.

    One GPU's need does not depend on its size, so it is estimated once per model."""
    if not model.facts:
        return []
    try:
        shape = prepare_shape(model.model_facts)
        settings = RunSettings(n_ctx=min(FIT_CONTEXT, model.context_length or FIT_CONTEXT))
        alone = estimate(shape, settings, [GpuDevice("CUDA0", 1 << 50)])
    except (EstimatorError, ValueError):
        return []
    needed = sum(d.total for d in alone.devices if d.is_gpu)
    fits = []
    for node in nodes if nodes is not None else Node.objects.prefetch_related("gpus"):
        gpus = [gpu for gpu in node.gpus.all() if gpu.enabled and gpu.present]
        if not gpus:
            continue
        single = tuple(f"gpu{g.index}" for g in gpus if needed <= g.free_for_placement)
        together = not single and len(gpus) > 1 and _split_fits(shape, settings, device_order(gpus))
        split = len(gpus) if together else 0
        fits.append(NodeFit(node.name, single, split, needed, bound=not shape.exact))
    return fits
