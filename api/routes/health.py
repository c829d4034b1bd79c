"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi.responses import JSONResponse
from sqlalchemy import text

from triage.migrate import at_head
from webcommon import routing
from webcommon.deps import EngineDep, SettingsDep

router = routing.router(tags=["health"])


@router.get("/healthz")
def read_health() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
def read_ready(settings: SettingsDep, engine: EngineDep) -> JSONResponse:
    """Ready to serve: database reachable, migrations at head, model files present."""
    checks: dict[str, str] = {}
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
        checks["migrations"] = "ok" if at_head(engine) else "not at head: run `miatari migrate`"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        checks["database"] = f"unreachable: {type(exc).__name__}"
        checks["migrations"] = "unknown"
    from matcher import models_present

    checks["models"] = "ok" if models_present(settings.deepface_home) else "missing: run `miatari migrate`"
    checks["face_model"] = _face_model_check(settings, engine) if checks["migrations"] == "ok" else "unknown"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks},
                        status_code=200 if ready else 503)


def _face_model_check(settings: SettingsDep, engine: EngineDep) -> str:
    """This process can embed probes with the model the gallery searches with."""
    from sqlmodel import Session

    from triage.gallery import active_model_id
    from triage.reindex import unavailable_reason

    with Session(engine) as session:
        active = active_model_id(session)
    problem = unavailable_reason(settings, active)
    if problem:
        return (f"the gallery searches with {active}, which this build cannot embed with ({problem}): "
                "re-embed with `miatari reindex`")
    return "ok"
