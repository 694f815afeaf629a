"""Inputs of the estimator: run settings (llama.cpp's model and context parameters),
the GPUs to place on, and the host CPU's traits. Plain frozen dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from core.units import MIB

# Memory a CUDA context takes on each GPU it touches (driver, cuBLAS workspace, the
# kernels' module images, the CUDA memory pool's first blocks). llama.cpp does not
# report it; measured figures are usually 250-600 MiB depending on driver and card.
# Override per estimate with ``RunSettings.gpu_overhead_bytes``.
DEFAULT_GPU_OVERHEAD_BYTES = 400 * MIB

# ggml types the x86 CPU backend repacks when built with AVX2 (ggml-cpu/repack.cpp:
# q4_0_8x8, q4_K_8x8, iq4_nl_8x8, mxfp4_8x8; each needs rows % 8 == 0). Q8_0 is only
# repacked on ARM (NEON + i8mm/dotprod) and RISC-V.
# llama_pooling_type NONE to RANK (--pooling)
POOLING_TYPES = ("none", "mean", "cls", "last", "rank")
X86_AVX2_REPACK_TYPES = frozenset({"Q4_0", "Q4_K", "IQ4_NL", "MXFP4"})
ARM_REPACK_TYPES = frozenset({"Q4_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "MXFP4", "Q8_0", "Q1_0"})


class SplitMode(StrEnum):
    """``llama_split_mode``: how layers and tensors are spread over several GPUs."""

    NONE = "none"  # everything on ``main_gpu``
    LAYER = "layer"  # whole layers per GPU, by ``tensor_split``
    ROW = "row"  # matrices split by rows across GPUs (approximated: see placement.py)


class CacheType(StrEnum):
    """K/V cache element types (``--cache-type-k/-v``)."""

    F16 = "f16"
    Q8_0 = "q8_0"
    Q4_0 = "q4_0"

    @property
    def ggml_type(self) -> str:
        return self.value.upper()


@dataclass(frozen=True, slots=True)
class GpuDevice:
    """One GPU as llama.cpp sees it: a name (``CUDA0``) and its free memory in bytes."""

    name: str
    free_bytes: int


@dataclass(frozen=True, slots=True)
class HostProfile:
    """Traits of the host's CPU backend that change buffer sizes.

    ``repack_types``: weight types the CPU backend re-lays out into a CPU_REPACK
    buffer (only used when no GPU takes part, see weights.py). The default matches
    x86-64 builds with AVX2, which is what ``-DGGML_NATIVE=OFF`` builds enable.
    """

    repack_types: frozenset[str] = X86_AVX2_REPACK_TYPES


@dataclass(frozen=True, slots=True)
class RunSettings:
    """llama.cpp settings that change memory use (server flag names in comments).

    ``n_gpu_layers`` follows llama.cpp: -1 means all layers plus the output layer,
    ``n_layer + 1`` is the same, ``n_layer`` keeps the output layer on the CPU.
    ``tensor_split`` of None splits by the GPUs' free memory, as llama.cpp does.
    """

    n_ctx: int = 4096  # -c (0: the model's training context)
    n_seq_max: int = 1  # -np (parallel slots)
    n_batch: int = 2048  # -b
    n_ubatch: int = 512  # -ub
    type_k: CacheType = CacheType.F16  # -ctk
    type_v: CacheType = CacheType.F16  # -ctv
    flash_attn: bool = False  # -fa
    n_gpu_layers: int = -1  # -ngl
    split_mode: SplitMode = SplitMode.LAYER  # -sm
    tensor_split: tuple[float, ...] | None = None  # -ts
    main_gpu: int = 0  # -mg
    use_mmap: bool = True  # --no-mmap turns it off
    offload_kqv: bool = True  # --no-kv-offload turns it off
    op_offload: bool = True  # --no-op-offload turns it off (big batches of CPU layers on GPU 0)
    kv_unified: bool = False  # --kv-unified
    swa_full: bool = True  # llama_context_default_params().swa_full
    # Rows of logits one batch may produce (llama_context_params.n_outputs_max; 0 means
    # n_batch, llama.cpp's default). llama-server sets its slot count for chat (one
    # sampled token per slot) and keeps n_batch for embeddings; it sizes the compute
    # buffer's prompt graph.
    n_outputs_max: int = 0
    # Embeddings on (an embedding or reranker server, --embedding): the graph ends in the
    # pooling (and a reranker's classifier head), and the output holds embeddings too.
    embeddings: bool = False
    # --pooling (llama_context_params.pooling_type): None is the model's own type
    # (``{arch}.pooling_type``, none without the key); --reranking is "rank"
    pooling: str | None = None
    gpu_overhead_bytes: int = DEFAULT_GPU_OVERHEAD_BYTES
    host: HostProfile = field(default_factory=HostProfile)

    def __post_init__(self) -> None:
        for name in ("n_seq_max", "n_batch", "n_ubatch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.pooling is not None and self.pooling not in POOLING_TYPES:
            raise ValueError(f"pooling must be one of {POOLING_TYPES} or None")
        if self.n_outputs_max < 0:
            raise ValueError("n_outputs_max must not be negative (0 means n_batch)")
        if self.n_ctx < 0:
            raise ValueError("n_ctx must not be negative (0 means the training context)")
        if self.type_v is not CacheType.F16 and not self.flash_attn:
            raise ValueError("a quantized V cache requires flash attention (llama.cpp refuses it)")
        if self.tensor_split is not None and any(part < 0 for part in self.tensor_split):
            raise ValueError("tensor_split parts must not be negative")
