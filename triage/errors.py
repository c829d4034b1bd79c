"""The one base of every refusal the domain raises: a ``code`` (what kind of refusal, read by the
HTTP layer to choose a status) and a ``message`` meant for the person who asked.

A refusal may carry its audit entry (``Refused.audit``): whoever ends the transaction (see
``triage.transaction``) rolls the work back, writes that entry and commits it alone, so a refusal is
always on record and nothing half-done is ever committed with it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlmodel import Session

    from triage.models import User


@dataclass
class RefusalEntry:
    """The audit entry of a refusal, written after the refused work was rolled back."""

    action: str
    actor: User | None = None
    object_type: str = ""
    object_id: object = ""
    detail: dict[str, Any] = field(default_factory=dict)
    ip: str = ""
    # A change the refusal itself makes and keeps (an expired lease given back to the queue), made
    # after the rollback, in the transaction that stores the entry.
    also: Callable[[Session], None] | None = None


class Refused(Exception):
    """An exception whose refusal is put on record when the transaction ends."""

    audit: RefusalEntry | None = None
    # The work done before the refusal is its record (a failed login's count and entry): kept, not rolled back.
    keeps_work: bool = False

    def recorded_as(self, entry: RefusalEntry) -> Refused:
        self.audit = entry
        return self


class DomainError(Refused):
    def __init__(self, code: str, message: str, *, audit: RefusalEntry | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.audit = audit
