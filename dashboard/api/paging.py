"""Where a list page starts: the ``cursor`` of a ``next`` URL, checked once
for every list of the API, and the parameters a list knows."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from django.http import HttpRequest

from dashboard.core import keyset

from .errors import FieldErrors

CURSOR_MESSAGE = "Not a cursor from this API; follow the 'next' URL as it is."


def list_position(
    request: HttpRequest,
    cursor: str | None,
    errors: FieldErrors,
    *,
    known: Collection[str] | None = None,
) -> Any:
    """The keyset position ``cursor`` names (None: the first page). A cursor
    this API did not make, and a query parameter not in ``known`` (when
    given), are field errors."""
    if known is not None:
        for name in request.GET:
            if name not in known:
                errors.add(name, f"Unknown parameter; expected one of {', '.join(known)}.")
    position = keyset.cursor_decode(cursor) if cursor else None
    if cursor and position is None:
        errors.add("cursor", CURSOR_MESSAGE)
    return position
