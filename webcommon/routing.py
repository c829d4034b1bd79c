"""Routes whose plain-``def`` handlers end the request's transaction themselves, in their own thread.

FastAPI ends a function-scoped dependency only after the response is built, and building the response of
a plain ``def`` handler (validating it against its model) waits for a thread of the pool.  Were the
request's transaction still open then, a busy server could have every pooled thread waiting for SQLite's
write lock, held by the very transaction that needs a thread to end.  So the handler's own thread commits
as soon as the handler returns; ``webcommon.deps.get_session`` is left with nothing to do but close, and
with the rollback (and the refusal's audit entry) when the handler raised.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from fastapi.routing import APIRoute
from sqlmodel import Session

_COMMITS = "__miatari_commits__"


def commits_when_done(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """The handler, committing the open transaction of each session it was given when it returns."""
    if inspect.iscoroutinefunction(inspect.unwrap(endpoint)) or getattr(endpoint, _COMMITS, False):
        return endpoint

    @functools.wraps(endpoint)
    def handler(*args: Any, **kwargs: Any) -> Any:
        result = endpoint(*args, **kwargs)
        for value in (*args, *kwargs.values()):
            if isinstance(value, Session) and value.in_transaction():
                value.commit()
        return result

    setattr(handler, _COMMITS, True)
    return handler


class CommittingRoute(APIRoute):
    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, commits_when_done(endpoint), **kwargs)


def router(**kwargs: Any) -> APIRouter:
    """An ``APIRouter`` of ``CommittingRoute``s."""
    return APIRouter(route_class=CommittingRoute, **kwargs)
