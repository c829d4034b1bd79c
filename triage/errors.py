"""The one base of every refusal the domain raises: a ``code`` (what kind of refusal, read by the
HTTP layer to choose a status) and a ``message`` meant for the person who asked."""

from __future__ import annotations


class DomainError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
