"""The fleet as placement sees it: plain views of nodes and GPUs read from the database
in a few queries, and the sizer and request of a deployment."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from django.conf import settings
from django.db.models import Sum

from core.units import MIB
from inventory.choices import NodeStatus
from inventory.models import Gpu, Node
from models_app import actions as model_actions
from models_app import learning
from models_app.choices import DownloadState, SourceKind
from models_app.estimator import CacheType, RunSettings
from models_app.estimator.estimate import is_bound
from models_app.gguf import ModelFacts
from models_app.models import CatalogModel, ModelFile
from scheduling.choices import CLAIMING_STATES, Backend, ModelKind
from scheduling.models import Deployment, GpuClaim, Instance
from scheduling.placement import GpuView, NodeView, Placement, Policy, Request
from scheduling.placement_sizer import EstimatorSizer

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


# Batch and micro-batch of chat backends (llama-server's and llama.cpp's defaults,
# passed explicitly). Embedding and reranker backends process each input in one
# micro-batch (non-causal models must), so both are the context of one slot.
CHAT_BATCH, CHAT_UBATCH = 2048, 512


def batch_sizes(deployment: Deployment) -> tuple[int, int]:
    """(n_batch, n_ubatch) the deployment's backends run with. Embeddings and reranking
    take a whole input in one micro-batch: the context, rounded up to a multiple of the
    slots (llama.cpp 0.3.36's llama-server aborts at start with mean pooling otherwise:
    ``-np 3 -ub 700`` aborts, ``-ub 702`` starts)."""
    if deployment.kind == ModelKind.CHAT:
        return CHAT_BATCH, CHAT_UBATCH
    slots = max(deployment.parallel, 1)
    size = -(-deployment.n_ctx // slots) * slots
    return size, size


# Encoder architectures llama.cpp runs (non-causal): they only make embeddings.
ENCODERS = frozenset(
    {
        "bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "jina-bert-v3",
        "modern-bert", "neo-bert", "eurobert", "t5encoder",
    }
)  # fmt: skip


def default_kind(model: CatalogModel) -> str:
    """What a model serves unless the operator says otherwise: rank pooling makes a
    reranker, pooling of its own or an encoder an embedding model, anything else chat."""
    facts = model.facts or {}
    pooling = facts.get("pooling_type")
    if pooling == "rank":
        return ModelKind.RERANKER
    if pooling in ("mean", "cls", "last") or facts.get("architecture") in ENCODERS:
        return ModelKind.EMBEDDING
    return ModelKind.CHAT


def pooling_flag(deployment: Deployment) -> str:
    """``--pooling`` for an embedding deployment: the operator's, else none for a model
    that has its own, else mean (a chat model such as llama has none, and llama-server
    refuses its embeddings as "not OAI compatible" without one)."""
    if deployment.kind != ModelKind.EMBEDDING:
        return ""
    if deployment.pooling:
        return deployment.pooling
    facts = deployment.model.facts or {}
    return "" if facts.get("pooling_type") not in (None, "", "none") else "mean"


def run_settings(deployment: Deployment) -> RunSettings:
    """The estimator's settings for what ``tasks.launch_spec`` starts (llama_server.py
    passes each of these explicitly): the KV cache holds ``n_ctx`` cells per slot, one
    stream per slot; llama-server keeps the SWA cache small (no ``--swa-full``),
    llama-cpp-python's context keeps it full-size; llama-server reserves one row of
    logits per slot for chat (its ``server_output_limits``), n_batch for embeddings."""
    cache = CacheType(deployment.cache_type)
    n_batch, n_ubatch = batch_sizes(deployment)
    llama_server = deployment.backend == Backend.LLAMA_SERVER
    chat = deployment.kind == ModelKind.CHAT
    return RunSettings(
        n_ctx=deployment.n_ctx * deployment.parallel,
        n_seq_max=deployment.parallel,
        n_batch=n_batch,
        n_ubatch=n_ubatch,
        type_k=cache,
        type_v=cache,
        flash_attn=deployment.flash_attn,
        kv_unified=False,
        swa_full=not llama_server,
        n_outputs_max=deployment.parallel if llama_server and chat else 0,
        embeddings=not chat,
        pooling=run_pooling(deployment),
    )


def run_pooling(deployment: Deployment) -> str | None:
    """The pooling its backend runs with (``--reranking`` is rank; ``--pooling`` for
    embeddings; None: the model's own)."""
    if deployment.kind == ModelKind.RERANKER:
        return "rank"
    return pooling_flag(deployment) or None


def sizer_for(deployment: Deployment) -> EstimatorSizer:
    """The deployment's sizer; the model's facts are read here (a placement pass defers
    them: one large JSON document per model, not per pending instance)."""
    rows = CatalogModel.objects.filter(pk=deployment.model_id).values_list("facts", flat=True)
    facts = ModelFacts.from_dict(rows.first() or {})
    sizer = EstimatorSizer(
        facts,
        run_settings(deployment),
        margin_bytes=settings.GPUFLEET_PLACEMENT_MARGIN,
        host_extra_bytes=deployment.cache_ram * MIB,
    )
    if is_bound(sizer.shape, sizer.settings):  # a larger margin for an upper bound
        sizer.margin_bytes = settings.GPUFLEET_PLACEMENT_MARGIN_INEXACT
    # what instances of this file measured (GPUs of any kind: the sizer is not told which)
    sizer.learning = learning.load(facts, sizer.shape)
    return sizer


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
