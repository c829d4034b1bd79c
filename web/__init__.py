"""Server-rendered pages: Jinja2 templates and htmx partials."""

from fastapi import APIRouter, Request, Response

from web.routes import admin, audit, auth, flags, metrics, notifications, review, sightings, watchlist

router = APIRouter(include_in_schema=False)
for _module in (auth, admin, watchlist, sightings, review, flags, metrics, audit, notifications):
    router.include_router(_module.router)


def error_page(request: Request, status_code: int, title: str, message: str) -> Response:
    from web.templating import render

    return render(request, "error.html", {"title": title, "message": message},
                  status_code=status_code)


__all__ = ["router", "error_page"]
