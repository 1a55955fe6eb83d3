"""Keyset pagination over (created_at, id), newest first: no OFFSET and no
COUNT(*), so a page deep in 100,000 rows costs what the first one does.
Cursors are opaque, URL-safe, and anything malformed decodes to None."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db.models import Q, QuerySet

#: Rows per query when a walk reads every row (exports).
CHUNK = 1000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Position:
    """Where a page ends: the (created_at, id) of its last row."""

    created_at: datetime
    id: int

    @classmethod
    def of(cls, row: Any) -> Position:
        """The position of a model instance or of a ``values()`` row."""
        if isinstance(row, dict):
            return cls(created_at=row["created_at"], id=row["id"])
        return cls(created_at=row.created_at, id=row.pk)


def cursor_encode(position: Position) -> str:
    micros = (position.created_at - _EPOCH) // timedelta(microseconds=1)
    raw = f"{micros}.{position.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def cursor_decode(cursor: str) -> Position | None:
    """The position a cursor stands for, or None for anything malformed."""
    if not cursor or len(cursor) > 64:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        micros, pk = raw.split(".")
        return Position(created_at=_EPOCH + timedelta(microseconds=int(micros)), id=int(pk))
    except (ValueError, binascii.Error, UnicodeDecodeError, OverflowError):
        return None


def after(position: Position) -> Q:
    """Rows older than ``position`` in (-created_at, -id) order.

    The redundant ``created_at <= …`` gives the planner a range on the index;
    the OR alone would make SQLite walk from the newest row."""
    return Q(created_at__lte=position.created_at) & (
        Q(created_at__lt=position.created_at) | Q(id__lt=position.id)
    )


@dataclass(frozen=True)
class Page:
    items: list[Any]
    next_position: Position | None

    @property
    def next_cursor(self) -> str:
        return cursor_encode(self.next_position) if self.next_position else ""

    @property
    def has_more(self) -> bool:
        return self.next_position is not None


def keyset_page(queryset: QuerySet[Any], *, position: Position | None, size: int) -> Page:
    """One page, newest first, of any queryset whose model has ``created_at``
    and ``id``. One query: it reads one row more than it shows to learn
    whether an older page exists."""
    ordered = queryset.order_by("-created_at", "-id")
    if position is not None:
        ordered = ordered.filter(after(position))
    rows = list(ordered[: size + 1])
    if len(rows) > size:
        return Page(items=rows[:size], next_position=Position.of(rows[size - 1]))
    return Page(items=rows, next_position=None)


def iter_keyset(queryset: QuerySet[Any], *, chunk: int | None = None) -> Iterator[Any]:
    """Every row, newest first, ``chunk`` rows per query, so memory stays flat
    whatever the size of the set. Rows saved during the walk are newer than
    where it has reached, so they are not repeated or half-included."""
    chunk = chunk or CHUNK
    ordered = queryset.order_by("-created_at", "-id")
    position: Position | None = None
    while True:
        query = ordered if position is None else ordered.filter(after(position))
        rows = list(query[:chunk])
        yield from rows
        if len(rows) < chunk:
            return
        position = Position.of(rows[-1])
