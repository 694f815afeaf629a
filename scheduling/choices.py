"""Choices of deployments and instances, and which instance states hold what."""

from django.db import models

# A deployment's context per slot unless the operator sets one (the model's field, the
# form, the API and a launch spec all start from it).
DEFAULT_N_CTX = 4096


class DesiredState(models.TextChoices):
    RUNNING = "running", "Running"
    STOPPED = "stopped", "Stopped"
    DELETING = "deleting", "Deleting"


class PlacementPolicy(models.TextChoices):
    BINPACK = "binpack", "Bin-pack (fill GPUs before using new ones)"
    SPREAD = "spread", "Spread (replicas on different nodes, most free memory first)"


class CacheType(models.TextChoices):
    F16 = "f16", "f16"
    Q8_0 = "q8_0", "q8_0"
    Q4_0 = "q4_0", "q4_0"


class InstanceState(models.TextChoices):
    PENDING = "pending", "Pending"
    SCHEDULED = "scheduled", "Scheduled"
    WAITING_FOR_FILES = "waiting_for_files", "Waiting for files"
    STARTING = "starting", "Starting"
    RUNNING = "running", "Running"
    STOPPING = "stopping", "Stopping"
    STOPPED = "stopped", "Stopped"
    FAILED = "failed", "Failed"
    UNREACHABLE = "unreachable", "Unreachable"


class PlacementKind(models.TextChoices):
    SINGLE_GPU = "single_gpu", "One GPU"
    MULTI_GPU = "multi_gpu", "Several GPUs"
    PARTIAL_OFFLOAD = "partial_offload", "GPU + CPU offload"
    CPU_ONLY = "cpu_only", "CPU only"


S = InstanceState
# An instance in one of these states holds its GPU claims.
CLAIMING_STATES = (S.SCHEDULED, S.WAITING_FOR_FILES, S.STARTING, S.RUNNING, S.STOPPING)
# A process may exist for an instance in these states (the agent watches them).
PROCESS_STATES = (S.STARTING, S.RUNNING, S.STOPPING, S.UNREACHABLE)
# Instances that count as a replica the deployment asked for (not yet ended).
LIVE_STATES = (*CLAIMING_STATES, S.PENDING, S.FAILED, S.UNREACHABLE)


class Backend(models.TextChoices):
    """The server process an instance runs (``scheduling.backend``)."""

    LLAMA_SERVER = "llama_server", "llama.cpp llama-server (parallel slots)"
    LLAMA_CPP_PYTHON = "llama_cpp_python", "llama-cpp-python server (one request at a time)"


class ModelKind(models.TextChoices):
    """What a deployment serves, and so which gateway endpoints answer for it."""

    CHAT = "chat", "Chat / completion"
    EMBEDDING = "embedding", "Embedding"
    RERANKER = "reranker", "Reranker"


class Pooling(models.TextChoices):
    """How an embedding or reranker model pools token states (llama.cpp ``--pooling``);
    blank: the model's own (its GGUF ``pooling_type``)."""

    MODEL = "", "The model's own"
    NONE = "none", "none (one vector per token)"
    MEAN = "mean", "mean"
    CLS = "cls", "cls (first token)"
    LAST = "last", "last token"
    RANK = "rank", "rank (reranker head)"
