"""Choices of deployments and instances, and which instance states hold what."""

from django.db import models


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
