"""REST API of scheduling: deployments (CRUD, preview, scale, start/stop) and instances
(state, claims, runs, logs)."""

from ninja import Router

from scheduling.api import deployments, instances

router = Router()
router.add_router("", deployments.router)
router.add_router("", instances.router)
