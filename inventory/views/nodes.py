from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from inventory.models import Node
from inventory.presenters import gpu_rows


@require_GET
def node_detail(request: HttpRequest, node_id: str) -> HttpResponse:
    node = get_object_or_404(Node, pk=node_id)
    context = {
        "node": node,
        "rows": gpu_rows(node.gpus.with_claims()),
        "windows": node.maintenance_windows.filter(ends_at__gt=node.created_at).order_by(
            "-starts_at"
        )[:20],
        "alerts": node.alert_set.all()[:20],
    }
    return render(request, "inventory/node_detail.html", context)
