"""The fleet as placement sees it: plain views of nodes and GPUs read from the database
in a few queries, and the sizer and request of a deployment."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from django.conf import settings
from django.db.models import Sum

from inventory.choices import NodeStatus
from inventory.models import Gpu, Node
from models_app import actions as model_actions
from models_app.choices import DownloadState, SourceKind
from models_app.estimator import CacheType, RunSettings
from models_app.gguf import ModelFacts
from models_app.models import CatalogModel, ModelFile
from scheduling.choices import CLAIMING_STATES
from scheduling.models import Deployment, GpuClaim, Instance
from scheduling.placement import GpuView, NodeView, Placement, Policy, Request
from scheduling.sizing import EstimatorSizer

# Copies in these states count as "the node has the model" (a download in progress too).
HAVING_STATES = (
    DownloadState.QUEUED,
    DownloadState.DOWNLOADING,
    DownloadState.VERIFYING,
    DownloadState.READY,
)


def gpu_view(gpu: Gpu, ours: set[int] | None = None) -> GpuView:
    """``ours``: server pids of our backends on this GPU (looked up when not given)."""
    foreign = gpu.foreign_given(ours if ours is not None else gpu.our_pids())
    foreign = max(foreign - gpu.released_since_reading, 0)  # a stopped backend's, stale
    return GpuView(
        id=str(gpu.pk),
        node_id=str(gpu.node_id),
        index=gpu.index,
        name=gpu.name,
        total=gpu.memory_total,
        reserved=gpu.reserved,
        claimed=gpu.claimed,
        foreign=foreign,
        observed_free=gpu.free_now,
        priority=gpu.priority,
        enabled=gpu.enabled,
        present=gpu.present,
        error=gpu.error,
    )


@dataclass
class Fleet:
    """Every node as a ``NodeView`` (model-specific fields filled per deployment), kept
    up to date in memory while one placement pass claims memory."""

    nodes: dict[str, NodeView]
    disk_room: dict[str, Node]  # node id → node row, for the disk check of downloads
    _by_model: dict[Any, dict[str, NodeView]] = field(default_factory=dict)

    @classmethod
    def load(cls) -> Fleet:
        gpus_by_node: dict[str, list[GpuView]] = defaultdict(list)
        annotated = Gpu.objects.with_claims()
        pids = _backend_pids_by_gpu()
        for gpu in annotated.order_by("node_id", "index"):
            gpus_by_node[str(gpu.node_id)].append(gpu_view(gpu, pids.get(gpu.pk, set())))
        host_claims = _host_claims()
        nodes: dict[str, NodeView] = {}
        rows: dict[str, Node] = {}
        for node in Node.objects.all():
            key = str(node.pk)
            rows[key] = node
            nodes[key] = NodeView(
                id=key,
                name=node.name,
                accepts_work=node.status == NodeStatus.ONLINE,
                labels=dict(node.labels),
                has_model=False,
                can_download=False,
                ram_free=max(node.ram_available - host_claims.get(key, 0), 0),
                gpus=tuple(gpus_by_node.get(key, ())),
                status=node.status,
            )
        return cls(nodes, rows)

    def for_deployment(self, deployment: Deployment) -> list[NodeView]:
        """The nodes with this deployment's model-specific facts filled in (cached per
        model for the pass; replicas of the deployment per node for ``spread``)."""
        views = self._by_model.get(deployment.model_id)
        if views is None:
            views = self._model_views(deployment.model)
            self._by_model[deployment.model_id] = views
        spread = _replicas_by_node(deployment) if deployment.policy == "spread" else {}
        if not spread:
            return list(views.values())
        return [
            replace(view, replicas_here=spread[key]) if key in spread else view
            for key, view in views.items()
        ]

    def _model_views(self, model: CatalogModel) -> dict[str, NodeView]:
        having = _nodes_with_copy(model)
        return {
            key: replace(
                view,
                has_model=key in having,
                can_download=key not in having and _can_download(model, self.disk_room[key]),
            )
            for key, view in self.nodes.items()
        }

    def claim(self, placement: Placement) -> None:
        """Record a placement's claims so the rest of the pass sees them."""
        key = placement.node_id
        view = self.nodes[key]
        extra = dict(zip(placement.gpu_ids, placement.gpu_bytes, strict=True))
        gpus = tuple(
            replace(gpu, claimed=gpu.claimed + extra[gpu.id]) if gpu.id in extra else gpu
            for gpu in view.gpus
        )
        ram_free = max(view.ram_free - placement.host_bytes, 0)
        self.nodes[key] = replace(view, gpus=gpus, ram_free=ram_free)
        for views in self._by_model.values():
            views[key] = replace(views[key], gpus=gpus, ram_free=ram_free)


def _backend_pids_by_gpu() -> dict[Any, set[int]]:
    rows = GpuClaim.objects.filter(instance__server_pid__isnull=False).values_list(
        "gpu_id", "instance__server_pid"
    )
    pids: dict[Any, set[int]] = defaultdict(set)
    for gpu_id, pid in rows:
        if pid:
            pids[gpu_id].add(pid)
    return pids


def _host_claims() -> dict[str, int]:
    rows = (
        Instance.objects.filter(state__in=CLAIMING_STATES, node__isnull=False)
        .values("node_id")
        .annotate(total=Sum("host_bytes"))
    )
    return {str(row["node_id"]): int(row["total"] or 0) for row in rows}


def _nodes_with_copy(model: CatalogModel) -> set[str]:
    if model.source_kind == SourceKind.PATH:
        return {str(model.path_node_id)} if model.path_node_id else set()
    copies = ModelFile.objects.filter(model=model, state__in=HAVING_STATES)
    return {str(node_id) for node_id in copies.values_list("node_id", flat=True)}


def _replicas_by_node(deployment: Deployment) -> dict[str, int]:
    rows = (
        Instance.objects.filter(deployment_id=deployment.pk, state__in=CLAIMING_STATES)
        .values_list("node_id", flat=True)
        .order_by()
    )
    counts: dict[str, int] = defaultdict(int)
    for node_id in rows:
        counts[str(node_id)] += 1
    return counts


def _can_download(model: CatalogModel, node: Node) -> bool:
    if model.source_kind == SourceKind.PATH or not model.files:
        return False
    roots = model_actions.storage_roots(node)
    if not roots:
        return False
    free = model_actions.root_free(node, roots[0])
    return free is None or free >= model.size_bytes + model_actions.FREE_SPACE_MARGIN


def run_settings(deployment: Deployment) -> RunSettings:
    cache = CacheType(deployment.cache_type)
    return RunSettings(
        n_ctx=deployment.n_ctx,
        n_seq_max=1,
        type_k=cache,
        type_v=cache,
        flash_attn=deployment.flash_attn,
    )


def sizer_for(deployment: Deployment) -> EstimatorSizer:
    """The deployment's sizer; the model's facts are read here (a placement pass defers
    them: one large JSON document per model, not per pending instance)."""
    rows = CatalogModel.objects.filter(pk=deployment.model_id).values_list("facts", flat=True)
    facts = ModelFacts.from_dict(rows.first() or {})
    return EstimatorSizer(
        facts, run_settings(deployment), margin_bytes=settings.GPUFLEET_PLACEMENT_MARGIN
    )


def request_for(
    deployment: Deployment,
    only_gpus: Iterable[Any] | None = None,
    exclude_gpus: Iterable[Any] | None = None,
) -> Request:
    """The placement request of a deployment; GPU sets from the arguments when given
    (a deployment not saved yet), else from its saved selector."""
    if only_gpus is None:
        only_gpus = deployment.only_gpus.all()  # prefetched by a placement pass
    if exclude_gpus is None:
        exclude_gpus = deployment.exclude_gpus.all()
    return Request(
        policy=Policy(deployment.policy),
        allow_multi_gpu=deployment.allow_multi_gpu,
        allow_cpu_offload=deployment.allow_cpu_offload,
        node_labels=dict(deployment.node_labels),
        only_gpus=frozenset(str(getattr(g, "pk", g)) for g in only_gpus),
        exclude_gpus=frozenset(str(getattr(g, "pk", g)) for g in exclude_gpus),
    )
