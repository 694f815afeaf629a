"""The plain data placement works on: GPU and node views, the request, the sizer's
answers, and the outcome (``Placement`` or ``Refusal``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from core.units import MIB

REASON_LIMIT = 20  # specific reason lines in a refusal, then "… and N more" lines
MULTI_FITS = 4  # attempt 2 stops after this many fits of the best predicted rank
MULTI_CALLS = 64  # and after this many sizer calls
PARTIAL_TRIES = 16  # attempt 3 asks the sizer about at most this many sets of free sizes
PLAUSIBLE_SHARE = 0.9  # attempt 3: GPU + host free must be this share of the 1-GPU need

# Memory left after placing is compared in these steps: GPUs whose free memory differs by
# the noise of a reading (a few MiB) mostly rank as equal and the tie-break (node, GPU
# index) decides, so a preview and the placement a moment later agree. Near a step's
# edge a few MiB can still tip the choice (about noise / step of the time).
LEFT_STEP = 64 * MIB


@dataclass(frozen=True, slots=True)
class GpuView:
    """One GPU as placement sees it; sizes in bytes."""

    id: str  # GPU primary key as text
    node_id: str
    index: int  # NVML index on its node
    name: str  # e.g. "A100-80GB"
    total: int
    reserved: int  # kept free (driver, other programs)
    claimed: int  # claimed by our placed instances
    observed_free: int  # free per NVML right now (total - used)
    priority: int  # higher first
    enabled: bool = True
    present: bool = True
    error: str = ""  # NVML error text; a GPU with an error gets no work
    foreign: int = 0  # used by processes that are not ours (in no claim)

    @property
    def free(self) -> int:
        """Free for placement: ``min(total - reserved - claimed - foreign, observed_free -
        reserved)``. Foreign use counts on the accounting side too: claims of instances
        not started yet are not in the reading, so the reading alone would let them and
        foreign use overlap."""
        reserved = self.reserved
        by_accounting = self.total - reserved - self.claimed - self.foreign
        return max(0, min(by_accounting, self.observed_free - reserved))


@dataclass(frozen=True, slots=True)
class NodeView:
    """One node as placement sees it."""

    id: str
    name: str
    accepts_work: bool  # online (not offline/maintenance/draining)
    labels: Mapping[str, str]
    has_model: bool  # a ready or in-progress copy of the model file is on this node
    can_download: bool  # the model can be downloaded to this node (disk room etc.)
    ram_free: int  # host bytes available (for CPU offload / CPU only)
    gpus: tuple[GpuView, ...]
    replicas_here: int = 0  # instances of this deployment already on this node (for spread)
    status: str = "online"  # for reasons text


class Policy(StrEnum):
    BINPACK = "binpack"
    SPREAD = "spread"


class Kind(StrEnum):
    SINGLE_GPU = "single_gpu"
    MULTI_GPU = "multi_gpu"
    PARTIAL_OFFLOAD = "partial_offload"
    CPU_ONLY = "cpu_only"


@dataclass(frozen=True, slots=True)
class Request:
    """What the deployment allows and asks for."""

    policy: Policy = Policy.BINPACK
    allow_multi_gpu: bool = False
    allow_cpu_offload: bool = False  # allows partial CPU offload AND CPU only
    node_labels: Mapping[str, str] = field(default_factory=dict)  # every label must match
    only_gpus: frozenset[str] = frozenset()  # GPU ids; empty = any
    exclude_gpus: frozenset[str] = frozenset()
    max_gpus: int = 8


@dataclass(frozen=True, slots=True)
class Fit:
    """A sizer's answer: bytes per GPU (in the order given) and on the host."""

    gpu_bytes: tuple[int, ...]
    host_bytes: int
    n_gpu_layers: int  # llama.cpp -ngl value (-1 = everything on GPU)
    tensor_split: tuple[float, ...] | None = None


class Sizer(Protocol):
    """The memory questions placement asks about one model with its run settings."""

    def single_gpu_need(self) -> int:
        """Bytes free one GPU needs to hold all layers (the same for any GPU)."""
        ...

    def on_gpus(self, free: Sequence[int]) -> Fit | None:
        """All layers on GPUs with these free bytes (in order), split by free; None: no fit."""
        ...

    def partial(self, free: Sequence[int], host_free: int) -> Fit | None:
        """The most layers that fit on these GPUs, the rest on the host; None: not even one
        layer fits, or the host does not hold the rest.

        Placement asks once per distinct set of free sizes, with the most ``host_free``
        among the nodes that have them, and checks ``host_bytes`` against each node's
        RAM: the answer must not depend on ``host_free`` other than by being None."""
        ...

    def cpu_only(self, host_free: int) -> Fit | None:
        """Everything on the host; None if it needs more than ``host_free``.

        Asked once, with the most RAM of any node; ``host_bytes`` is compared per node."""
        ...


@dataclass(frozen=True, slots=True)
class Placement:
    """Where the instance goes and what it claims."""

    node_id: str
    kind: Kind
    gpu_ids: tuple[str, ...]  # in device order: priority desc, then index
    gpu_bytes: tuple[int, ...]  # claim per GPU, same order
    host_bytes: int
    n_gpu_layers: int
    tensor_split: tuple[float, ...] | None
    needs_download: bool  # node lacks the model file


@dataclass(frozen=True, slots=True)
class Refusal:
    """No fit: human text per candidate (bounded), most useful first."""

    reasons: tuple[str, ...]
