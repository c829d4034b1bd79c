"""Long-lived, per-process services (the gallery index, the face pipeline), built lazily."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from triage.config import Settings
from triage.storage import ImageStore


def build(engine: Engine, settings: Settings, store: ImageStore) -> dict[str, Any]:
    return {"engine": engine, "settings": settings, "store": store}


def stop(services: dict[str, Any]) -> None:
    services.clear()
