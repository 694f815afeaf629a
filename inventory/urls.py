from django.urls import path

from inventory.views import alerts, gpus, maintenance, nodes, overview, tokens

app_name = "inventory"

urlpatterns = [
    path("", overview.overview, name="overview"),
    path("nodes/<uuid:node_id>/", nodes.node_detail, name="node"),
    path("nodes/<uuid:node_id>/drain/", nodes.node_drain, name="node-drain"),
    path("gpus/<uuid:gpu_id>/", gpus.gpu_detail, name="gpu"),
    path("gpus/<uuid:gpu_id>/settings/", gpus.gpu_settings, name="gpu-settings"),
    path("gpus/<uuid:gpu_id>/chart/", gpus.gpu_chart, name="gpu-chart"),
    path(
        "nodes/<uuid:node_id>/maintenance/new/",
        maintenance.maintenance_new,
        name="maintenance-new",
    ),
    path(
        "maintenance/<uuid:window_id>/delete/",
        maintenance.maintenance_delete,
        name="maintenance-delete",
    ),
    path("alerts/", alerts.alert_list, name="alerts"),
    path("tokens/", tokens.token_list, name="tokens"),
    path("tokens/<int:token_id>/revoke/", tokens.token_revoke, name="token-revoke"),
]
