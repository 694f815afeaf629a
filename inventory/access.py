"""Who may do what. Personas: admin (superuser), operator (member of the "operators"
group, which holds the inventory change permissions), viewer (any active user)."""

from __future__ import annotations

from typing import Any

OPERATORS_GROUP = "operators"
OPERATOR_PERMISSIONS = (
    "change_gpu",
    "change_node",
    "add_maintenancewindow",
    "change_maintenancewindow",
    "delete_maintenancewindow",
)


def can_operate(user: Any) -> bool:
    return bool(user.is_authenticated and user.is_active and user.has_perm("inventory.change_gpu"))
