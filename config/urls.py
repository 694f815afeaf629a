from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.contrib.contenttypes.views import shortcut
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import include, path, re_path

from config.api import api, api_not_found
from config.health import healthz
from config.metrics import metrics


def view_on_site(request: HttpRequest, content_type_id: int, object_id: str) -> HttpResponse:
    """The admin's "view on site" redirect; a key the model cannot parse (not a UUID) is
    a 404 like a key that does not exist, not Django's unhandled ValidationError."""
    try:
        return shortcut(request, content_type_id, object_id)
    except ValidationError:
        raise Http404("No such object.") from None


urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics, name="metrics"),
    path(
        "login/",
        login_not_required(auth_views.LoginView.as_view(template_name="login.html")),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    # Before admin.site.urls, which has the same route (reverse still finds the admin's).
    path("admin/r/<int:content_type_id>/<path:object_id>/", admin.site.admin_view(view_on_site)),
    path("admin/", admin.site.urls),
    path("api/v1/", api.urls),
    # JSON, not the HTML 404 page ("/api/v1" itself still gains its slash)
    re_path(r"^api/(?!v1$)", api_not_found),
    path("models/", include("models_app.urls")),
    path("deployments/", include("scheduling.urls")),
    path("", include("gateway.urls")),
    path("", include("inventory.urls")),
]
