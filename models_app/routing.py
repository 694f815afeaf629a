from django.urls import path

from models_app.consumers import DownloadsConsumer

websocket_urlpatterns = [path("ws/downloads/", DownloadsConsumer.as_asgi())]
