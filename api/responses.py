"""The error answers every API route may give, documented once in OpenAPI.

Each is ``{"detail": "<sentence>"}`` (a 413 adds its ``code``, ``limit_bytes`` and
``size_bytes``; a 422 from request validation lists the problems instead).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class Message(BaseModel):
    detail: str


class FieldProblem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationProblems(BaseModel):
    """422: the request's fields did not validate (a list), or a sentence saying what was wrong."""

    detail: list[FieldProblem] | str


COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": Message, "description": "The body could not be parsed"},
    401: {"model": Message, "description": "Not authenticated: no, or no working, credential"},
    403: {"model": Message, "description": "Not allowed: a missing role, a failed CSRF check, or an action "
                                           "the account must take first"},
    404: {"model": Message, "description": "Not found — also the answer for someone else's record"},
    409: {"model": Message, "description": "Conflict with the record's current state"},
    413: {"model": Message, "description": "The request body is over its limit"},
    422: {"model": ValidationProblems, "description": "Validation error"},
}
