"""REST API of models_app: memory estimates, the catalog, downloads and storage."""

from ninja import Router

from models_app.api import catalog, downloads, estimate

router = Router()
router.add_router("", estimate.router)
router.add_router("", catalog.router)
router.add_router("", downloads.router)
