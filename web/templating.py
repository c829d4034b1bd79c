"""Jinja2 templates with the request helpers every page needs."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from webcommon.deps import csrf_token_for, get_settings

TEMPLATES_DIR = Path(__file__).parent / "templates"
templates = Jinja2Templates(directory=str(TEMPLATES_DIR))


def _fmt_time(value: dt.datetime | None) -> str:
    if value is None:
        return ""
    return value.strftime("%Y-%m-%d %H:%M UTC")


templates.env.filters["time"] = _fmt_time


def render(request: Request, name: str, context: dict[str, Any] | None = None, status_code: int = 200,
           headers: dict[str, str] | None = None) -> HTMLResponse:
    auth = getattr(request.state, "auth", None)
    ctx: dict[str, Any] = {
        "user": auth.user if auth else None,
        "csrf_token": csrf_token_for(request),
        "settings": get_settings(request),
    }
    ctx.update(context or {})
    return templates.TemplateResponse(request, name, ctx, status_code=status_code, headers=headers)
