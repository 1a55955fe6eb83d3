"""The team's job history: filters, keyset pagination and the export writers.

Plain functions over querysets, no request objects, so the page, the exports
and the benchmark share them. Pages walk the ``job_history`` index
(team, -created_at, -id) with a keyset cursor: no OFFSET and no COUNT(*), so a
page deep in 100,000 jobs costs what the first one does.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django.db.models import Q, QuerySet, TextField
from django.db.models.fields.json import KeyTransform
from django.db.models.functions import Cast
from django.utils import timezone

from .models import Job, Team

#: The JSON columns a history page never shows; they can be megabytes per job.
BIG_FIELDS = ("spec", "outputs", "output_errors", "raw_result")
EXPORT_CHUNK = 1000
PROMPT_SEPARATOR = "\n---\n"  # the same separator the job form splits on
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --- filters ------------------------------------------------------------------------


@dataclass(frozen=True)
class JobFilters:
    provider: str = ""
    model: str = ""
    status: str = ""
    created_by: str = ""  # a username
    date_from: date | None = None
    date_to: date | None = None  # inclusive
    q: str = ""  # text in the prompts or the outputs

    def as_params(self) -> dict[str, str]:
        """The non-empty filters as query parameters (for links that keep them)."""
        params = {}
        for name, value in asdict(self).items():
            if value not in (None, ""):
                params[name] = value.isoformat() if isinstance(value, date) else str(value)
        return params

    @property
    def active(self) -> bool:
        return any(getattr(self, f.name) not in (None, "") for f in fields(self))


def jobs_filtered(*, team: Team, filters: JobFilters) -> QuerySet[Job]:
    jobs = Job.objects.filter(team=team)
    if filters.provider:
        jobs = jobs.filter(provider=filters.provider)
    if filters.model:
        jobs = jobs.filter(model=filters.model)
    if filters.status:
        jobs = jobs.filter(status=filters.status)
    if filters.created_by:
        jobs = jobs.filter(created_by__username=filters.created_by)
    if filters.date_from:
        jobs = jobs.filter(created_at__gte=_start_of(filters.date_from))
    if filters.date_to:
        jobs = jobs.filter(created_at__lt=_start_of(filters.date_to + timedelta(days=1)))
    if filters.q:
        jobs = _text_search(jobs, filters.q)
    return jobs


def _start_of(day: date) -> datetime:
    """Midnight of ``day`` in the site's time zone: the day the user means."""
    return timezone.make_aware(datetime.combine(day, time.min))


def _text_search(jobs: QuerySet[Job], text: str) -> QuerySet[Job]:
    """Substring search over the prompts, MyMagic's question and the outputs,
    each JSON value cast to text. A scan, so it runs only when asked for.

    SQLite keeps JSON as written (non-ASCII as \\u escapes, quotes escaped)
    while PostgreSQL prints jsonb with the characters themselves: looking for
    both spellings finds the text on either database."""
    jobs = jobs.alias(
        _prompts=Cast(KeyTransform("prompts", "spec"), TextField()),
        _question=Cast(KeyTransform("question", "spec"), TextField()),
        _outputs=Cast("outputs", TextField()),
    )
    # As typed; JSON-escaped with \u escapes (SQLite); JSON-escaped keeping the
    # characters (PostgreSQL escapes only quotes, backslashes and controls).
    spellings = {text, json.dumps(text)[1:-1], json.dumps(text, ensure_ascii=False)[1:-1]}
    match = Q()
    for spelling in spellings:
        for column in ("_prompts", "_question", "_outputs"):
            match |= Q(**{f"{column}__icontains": spelling})
    return jobs.filter(match)


def jobs_for_page(*, team: Team, filters: JobFilters) -> QuerySet[Job]:
    return jobs_filtered(team=team, filters=filters).select_related("created_by").defer(*BIG_FIELDS)


#: What an export reads: plain values, not model instances (three times faster),
#: and the credential's name copy on the job, never the credential row, so
#: nothing here can reach a secret.
EXPORT_VALUES = (
    "id",
    "provider",
    "model",
    "credential_name",
    "status",
    "provider_status",
    "spec",
    "outputs",
    "output_errors",
    "error",
    "created_by__username",
    "created_at",
    "started_at",
    "finished_at",
)


def jobs_for_export(*, team: Team, filters: JobFilters) -> QuerySet[Any]:
    return jobs_filtered(team=team, filters=filters).values(*EXPORT_VALUES)


# --- keyset pagination -------------------------------------------------------------------


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
    chunk = chunk or EXPORT_CHUNK
    ordered = queryset.order_by("-created_at", "-id")
    position: Position | None = None
    while True:
        query = ordered if position is None else ordered.filter(after(position))
        rows = list(query[:chunk])
        yield from rows
        if len(rows) < chunk:
            return
        position = Position.of(rows[-1])


# --- export --------------------------------------------------------------------------------

CSV_HEADER = [
    "id",
    "created_at",
    "created_by",
    "credential",
    "provider",
    "model",
    "status",
    "provider_status",
    "prompts",
    "outputs",
    "error",
    "started_at",
    "finished_at",
    "duration_seconds",
]
#: What a spreadsheet would take for the start of a formula (OWASP "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: str) -> str:
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment else None


def duration_seconds(started: datetime | None, finished: datetime | None) -> float | None:
    if started and finished:
        return round((finished - started).total_seconds(), 3)
    return None


def job_record(row: dict[str, Any]) -> dict[str, Any]:
    """One job (a row of ``jobs_for_export``) as the JSONL export writes it."""
    return {
        "id": row["id"],
        "provider": row["provider"],
        "model": row["model"],
        "credential": row["credential_name"],
        "status": row["status"],
        "provider_status": row["provider_status"],
        "spec": row["spec"],
        "outputs": row["outputs"],
        "output_errors": row["output_errors"],
        "error": row["error"],
        "created_by": row["created_by__username"],
        "created_at": _iso(row["created_at"]),
        "started_at": _iso(row["started_at"]),
        "finished_at": _iso(row["finished_at"]),
        "duration_seconds": duration_seconds(row["started_at"], row["finished_at"]),
    }


def _output_text(output: Any) -> str:
    if output is None:
        return ""
    if isinstance(output, str):
        return output
    return json.dumps(output, ensure_ascii=False, sort_keys=True)


def job_csv_row(row: dict[str, Any]) -> list[str]:
    record = job_record(row)
    prompts = PROMPT_SEPARATOR.join(str(p) for p in (row["spec"] or {}).get("prompts") or [])
    outputs = PROMPT_SEPARATOR.join(_output_text(o) for o in (row["outputs"] or []))
    cells = [
        record["id"],
        record["created_at"],
        record["created_by"],
        record["credential"],
        record["provider"],
        record["model"],
        record["status"],
        record["provider_status"],
        prompts,
        outputs,
        record["error"],
        record["started_at"],
        record["finished_at"],
        record["duration_seconds"],
    ]
    return [csv_safe("" if cell is None else str(cell)) for cell in cells]


def csv_chunks(
    jobs: Iterable[dict[str, Any]], *, rows_per_chunk: int = EXPORT_CHUNK
) -> Iterator[str]:
    """The CSV text in pieces of ``rows_per_chunk`` rows (the header first)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_HEADER)
    for n, row in enumerate(jobs, start=1):
        writer.writerow(job_csv_row(row))
        if n % rows_per_chunk == 0:
            yield _drain(buffer)
    yield _drain(buffer)


def jsonl_chunks(
    jobs: Iterable[dict[str, Any]], *, rows_per_chunk: int = EXPORT_CHUNK
) -> Iterator[str]:
    lines: list[str] = []
    for row in jobs:
        lines.append(json.dumps(job_record(row), ensure_ascii=False, default=str))
        if len(lines) == rows_per_chunk:
            yield "\n".join(lines) + "\n"
            lines = []
    if lines:
        yield "\n".join(lines) + "\n"


def _drain(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text
