"""A small typed helper for the htmx protocol."""

from __future__ import annotations

from fastapi import Request, Response

# htmx stops polling when a response has this status.
STOP_POLLING = 286


def is_htmx(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true"


def hx_redirect(url: str, request: Request) -> Response:
    """Redirect that works for htmx (HX-Redirect) and plain form posts (303)."""
    if is_htmx(request):
        return Response(status_code=200, headers={"HX-Redirect": url})
    return Response(status_code=303, headers={"Location": url})
