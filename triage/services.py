"""Long-lived, per-process services (the gallery index, the face pipeline), built lazily.

``build`` returns a :class:`Services` (``app.state.services``, or a worker's); the
expensive members are created on first use through ``gallery()`` and
``pipeline()``, so the web app and tests that never match a face start fast.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from triage.config import Settings
from triage.storage import ImageStore

if TYPE_CHECKING:
    from matcher import FacePipeline
    from triage.gallery import Gallery, GallerySyncThread

_build_lock = threading.Lock()
log = logging.getLogger("miatari.services")


@dataclass(eq=False)
class Services:
    """What jobs and sweeps work with: the database, the settings, the image store, and what is built on use."""

    engine: Engine
    settings: Settings
    store: ImageStore
    # Built on first use (``gallery()``, ``pipeline()``); a test may put its own in.
    gallery: Gallery | None = None
    pipeline: FacePipeline | None = None
    gallery_sync: GallerySyncThread | None = None
    pipeline_load_seconds: float | None = None
    # Photos re-embedded per transaction by a reindex job (None: its default).
    reindex_batch_size: int | None = None


def build(engine: Engine, settings: Settings, store: ImageStore) -> Services:
    from matcher.decode import set_concurrent_decodes

    set_concurrent_decodes(settings.max_concurrent_decodes)
    return Services(engine, settings, store)


def gallery(services: Services) -> Gallery:
    """This process's gallery index, rebuilt from the database on first use and kept in step after."""
    found = services.gallery
    if found is not None:
        return found
    with _build_lock:
        found = services.gallery
        if found is None:
            from triage.gallery import Gallery, GallerySyncThread

            found = Gallery(services.engine, services.settings.gallery_sync_seconds)
            found.rebuild()
            services.gallery = found
            syncer = GallerySyncThread(found)
            syncer.start()
            services.gallery_sync = syncer
    return found


def pipeline(services: Services) -> FacePipeline:
    """The face pipeline (models placed offline first); one per process.

    It embeds with the configured model (``Settings.face_model``); callers ask for the
    gallery's model too (``models=``) where it may differ."""
    found = services.pipeline
    if found is not None:
        return found
    with _build_lock:
        found = services.pipeline
        if found is None:
            from matcher import ensure_models, get_pipeline

            settings = services.settings
            ensure_models(settings.deepface_home)
            started = time.monotonic()
            found = get_pipeline(models_home=settings.deepface_home, model=settings.face_model)
            found.warm_up()  # load the models now, so the first job's wait is measured and logged
            services.pipeline = found
            services.pipeline_load_seconds = time.monotonic() - started
            log.info("face pipeline loaded in %.1f s", services.pipeline_load_seconds)
    return found


def stop(services: Services) -> None:
    if services.gallery_sync is not None:
        services.gallery_sync.stop()
    services.gallery = services.pipeline = services.gallery_sync = None
