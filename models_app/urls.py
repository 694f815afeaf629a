from django.urls import path

from models_app.views import catalog, downloads, estimate

app_name = "models_app"

urlpatterns = [
    path("", catalog.catalog_page, name="catalog"),
    path("add/", catalog.add_model, name="add"),
    path("add/files/", catalog.hub_files, name="hub-files"),
    path("add/facts/", catalog.model_facts, name="facts"),
    path("<uuid:model_id>/download/", catalog.request_download, name="download"),
    path("downloads/", downloads.downloads_page, name="downloads"),
    path(
        "downloads/<uuid:copy_id>/<slug:action>/",
        downloads.download_action,
        name="download-action",
    ),
    path("storage/", downloads.storage_index, name="storage-index"),
    path("storage/<uuid:node_id>/", downloads.storage_page, name="storage"),
    path("estimate/", estimate.estimate_page, name="estimate"),
]
