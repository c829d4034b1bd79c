"""Long-lived, per-process services (the gallery index, the face pipeline), built lazily.

``build`` returns a plain dict (``app.state.services``, or a worker's); the
expensive members are created on first use through ``gallery()`` and
``pipeline()``, so the web app and tests that never match a face start fast.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from triage.config import Settings
from triage.storage import ImageStore

if TYPE_CHECKING:
    from matcher import FacePipeline
    from triage.gallery import Gallery

_build_lock = threading.Lock()
log = logging.getLogger("miatari.services")


def build(engine: Engine, settings: Settings, store: ImageStore) -> dict[str, Any]:
    # Importing these registers the jobs (matching, ZIP import, re-embedding) and the sweeps with the worker.
    import triage.matching  # noqa: F401
    import triage.reindex  # noqa: F401
    import triage.retention  # noqa: F401
    import triage.watchlist  # noqa: F401
    from matcher.decode import set_concurrent_decodes

    set_concurrent_decodes(settings.max_concurrent_decodes)
    return {"engine": engine, "settings": settings, "store": store}


def gallery(services: dict[str, Any]) -> Gallery:
    """This process's gallery index, rebuilt from the database on first use and kept in step after."""
    found = services.get("gallery")
    if found is not None:
        return found  # type: ignore[no-any-return]
    with _build_lock:
        found = services.get("gallery")
        if found is None:
            from triage.gallery import Gallery, GallerySyncThread

            settings: Settings = services["settings"]
            found = Gallery(services["engine"], settings.gallery_sync_seconds)
            found.rebuild()
            services["gallery"] = found
            syncer = GallerySyncThread(found)
            syncer.start()
            services["gallery_sync"] = syncer
    return found


def pipeline(services: dict[str, Any]) -> FacePipeline:
    """The face pipeline (models placed offline first); one per process.

    It embeds with the configured model (``Settings.face_model``); callers ask for the
    gallery's model too (``models=``) where it may differ."""
    found = services.get("pipeline")
    if found is not None:
        return found  # type: ignore[no-any-return]
    with _build_lock:
        found = services.get("pipeline")
        if found is None:
            from matcher import ensure_models, get_pipeline

            settings: Settings | None = services.get("settings")
            home = settings.deepface_home if settings is not None else None
            if home is not None:
                ensure_models(home)
            started = time.monotonic()
            found = get_pipeline(models_home=home, model=settings.face_model if settings is not None else None)
            found.warm_up()  # load the models now, so the first job's wait is measured and logged
            services["pipeline"] = found
            services["pipeline_load_seconds"] = time.monotonic() - started
            log.info("face pipeline loaded in %.1f s", services["pipeline_load_seconds"])
    return found


def stop(services: dict[str, Any]) -> None:
    syncer = services.get("gallery_sync")
    if syncer is not None:
        syncer.stop()
    services.clear()
