from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.urls import include, path

from config.api import api
from config.health import healthz

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path(
        "login/",
        login_not_required(auth_views.LoginView.as_view(template_name="login.html")),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("api/v1/", api.urls),
    path("models/", include("models_app.urls")),
    path("deployments/", include("scheduling.urls")),
    path("", include("gateway.urls")),
    path("", include("inventory.urls")),
]
