from inventory.models.alerts import Alert
from inventory.models.gpus import Gpu
from inventory.models.leases import Lease
from inventory.models.nodes import MaintenanceWindow, Node
from inventory.models.telemetry import GpuSample
from inventory.models.tokens import ApiToken

__all__ = [
    "Alert", "ApiToken", "Gpu", "GpuSample", "Lease", "MaintenanceWindow", "Node",
]  # fmt: skip
