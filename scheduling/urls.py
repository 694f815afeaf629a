from django.urls import path

from scheduling.views import create, deployments, instances

app_name = "scheduling"

urlpatterns = [
    path("", deployments.deployment_list, name="list"),
    path("new/", create.deployment_new, name="new"),
    path("new/preview/", create.deployment_preview, name="preview"),
    path("<uuid:deployment_id>/", deployments.deployment_detail, name="detail"),
    path("<uuid:deployment_id>/scale/", deployments.deployment_scale, name="scale"),
    path("<uuid:deployment_id>/<slug:action>/", deployments.deployment_action, name="action"),
    path("instances/<uuid:instance_id>/log/", instances.instance_log, name="instance-log"),
]
