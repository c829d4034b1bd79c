"""Jinja2 templates with the request helpers every page needs."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from webcommon.deps import csrf_token_for, get_settings

TEMPLATES_DIR = Path(__file__).parent / "templates"
templates = Jinja2Templates(directory=str(TEMPLATES_DIR))


def _fmt_time(value: dt.datetime | None) -> Markup:
    """A stored (UTC) time as <time>: the browser shows it in local time (app.js); UTC without script."""
    if value is None:
        return Markup("")
    utc = value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    return Markup('<time datetime="{}">{}</time>').format(utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                                       utc.strftime("%Y-%m-%d %H:%M UTC"))


def _fmt_duration(seconds: float | None) -> str:
    """A span in the words a reader takes in at a glance: minutes, then hours, then days."""
    if seconds is None:
        return "–"
    minutes = seconds / 60
    if minutes < 90:
        return f"{minutes:.0f} min"
    if minutes < 48 * 60:
        return f"{minutes / 60:.1f} h"
    return f"{minutes / 1440:.1f} days"


templates.env.filters["time"] = _fmt_time
templates.env.filters["duration"] = _fmt_duration


def compile_all() -> int:
    """Compile every page template now (a web process does this before it serves: the first view of a
    page would otherwise pay for it, tens of milliseconds each). Returns how many."""
    names = templates.env.list_templates(filter_func=lambda name: name.endswith(".html"))
    for name in names:
        templates.env.get_template(name)
    return len(names)


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
