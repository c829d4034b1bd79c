"""How a refusal from the domain is answered over HTTP: one status per error code."""

from __future__ import annotations

# Every domain error carries a code; the same code means the same answer on every route.
STATUS_BY_CODE = {
    "not_found": 404,
    "forbidden": 403,
    "suspended": 403,
    "lease_expired": 409,
    "conflict": 409,
    "withdrawn": 409,
    "idempotency_conflict": 409,
    "invalid": 422,
    "image_too_large": 413,
    "unsupported_format": 415,
}


def status_for(code: str, default: int = 400) -> int:
    return STATUS_BY_CODE.get(code, default)
