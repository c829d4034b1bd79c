"""The JSON API (``/api``): thin routers over ``triage`` and ``matcher``."""

from fastapi import APIRouter

from api.responses import COMMON_RESPONSES
from api.routes import audit, auth, flags, health, metrics, review, sightings, subjects, users

router = APIRouter()
router.include_router(health.router)
for _module in (auth, users, subjects, sightings, review, flags, metrics, audit):
    router.include_router(_module.router, responses=COMMON_RESPONSES)

__all__ = ["router"]
