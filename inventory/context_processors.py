from typing import Any

from django.http import HttpRequest

from inventory.models import MaintenanceWindow


def maintenance(request: HttpRequest) -> dict[str, Any]:
    """Maintenance windows that every page announces while upcoming or active."""
    if not request.user.is_authenticated:
        return {}
    windows = MaintenanceWindow.objects.announced().select_related("node")
    return {"maintenance_windows": list(windows)}
