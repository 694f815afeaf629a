from django.urls import path

from scheduling.consumers import DeploymentsConsumer

websocket_urlpatterns = [
    path("ws/deployments/", DeploymentsConsumer.as_asgi()),
    path("ws/deployments/<uuid:deployment_id>/", DeploymentsConsumer.as_asgi()),
]
