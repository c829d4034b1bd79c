"""Structured logs: one JSON object per line, with the request id of the request being served.

Request and job lines carry their fields in ``extra={"fields": {...}}`` (see
``miatari.observability`` and ``triage.worker``).  Nothing that identifies a face,
opens an account or rides a session may reach a log: the formatter drops any field
whose name says it is a secret, and the callers never pass raw paths, query strings,
headers, form fields or image bytes (docs/operations.md).
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import re
import uuid
from typing import Any

REQUEST_ID_HEADER = "X-Request-ID"
# An incoming X-Request-ID is kept only if it looks like an id: it goes into every log line of the request.
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
SECRET_FIELD_RE = re.compile(r"pass|secret|token|cookie|authori|csrf|totp|session_key", re.IGNORECASE)
REDACTED = "[redacted]"
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("miatari_request_id", default=None)


def new_request_id(incoming: str | None = None) -> str:
    """The caller's id when it is a plain token, else a fresh one."""
    if incoming and REQUEST_ID_RE.match(incoming):
        return incoming
    return uuid.uuid4().hex


def _clean(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: (REDACTED if SECRET_FIELD_RE.search(k) else v) for k, v in fields.items()}


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", "request_id"?, ...fields}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id:
            out["request_id"] = request_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(_clean(fields))
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in ("fields", "request_id") and not key.startswith("_"):
                out[key] = REDACTED if SECRET_FIELD_RE.search(key) else value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def install(level: int = logging.INFO) -> None:
    """Every log line of this process as JSON on stderr (``miatari serve`` / ``worker``)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # uvicorn's own access line repeats the raw path and query string: ours replaces it.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
