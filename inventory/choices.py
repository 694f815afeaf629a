from django.db import models


class NodeStatus(models.TextChoices):
    ONLINE = "online", "Online"
    OFFLINE = "offline", "Offline"
    MAINTENANCE = "maintenance", "Maintenance"
    DRAINING = "draining", "Draining"


# A node whose instances move elsewhere (each stopped once its replacement runs).
MOVING_AWAY = (NodeStatus.DRAINING, NodeStatus.MAINTENANCE)


class AlertKind(models.TextChoices):
    NODE_OFFLINE = "node_offline", "Node offline"
    GPU_TEMPERATURE = "gpu_temperature", "GPU temperature"
    GPU_MISSING = "gpu_missing", "GPU disappeared"
    GPU_ERROR = "gpu_error", "GPU reports NVML errors"
    OOM_RISK = "oom_risk", "GPU memory nearly full"
    ESTIMATE_EXCEEDED = "estimate_exceeded", "Backend uses more than estimated"
    INSTANCE_FAILED = "instance_failed", "Backend failed"
    MEMORY_NOT_RELEASED = "memory_not_released", "GPU memory not given back"


class Severity(models.TextChoices):
    WARNING = "warning", "Warning"
    CRITICAL = "critical", "Critical"


class Resolution(models.IntegerChoices):
    RAW = 1, "1 s"
    MINUTE = 60, "1 min"
    QUARTER = 900, "15 min"


PRIORITY_MIN = 0
PRIORITY_MAX = 100
