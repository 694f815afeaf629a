"""The REST API root (django-ninja): /api/v1/ with its OpenAPI schema and docs."""

from ninja import NinjaAPI

api = NinjaAPI(
    title="gpufleet API",
    version="1",
    urls_namespace="api",
    docs_url="/docs",
)
