"""The JSON API (``/api``): thin routers over ``triage`` and ``matcher``."""

from fastapi import APIRouter

from api.routes import health

router = APIRouter()
router.include_router(health.router)

__all__ = ["router"]
