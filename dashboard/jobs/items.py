"""A job's items: creating them, and writing what changed.

Every writer of items (the sync runner, the async poller, cancel, fail) goes
through :func:`items_write`: one transaction that first moves the job row —
conditionally on its status, with its counters moved by the deltas of the
items written — and then writes only the items that changed. The job row is
the lock: a cancel that lands first makes the worker's write match nothing, a
worker's write that lands first makes the cancel wait for it. No write grows
with the job's size.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from django.db import connection, models, transaction
from django.db.models import F

from dashboard.core import clock, structured
from dashboard.core.events import items_completed
from dashboard.models import Item, Job
from dashboard.status import (
    ITEM_ENDED,
    JOB_ACTIVE,
    ItemStatus,
    check_item_move,
    item_sources_for,
)
from providers import ItemResult

__all__ = ["ItemResult"]  # re-exported: writers build results with it

#: Rows per INSERT when a job's items are created.
CREATE_BATCH = 2000
#: Rows per UPDATE when items are written.
WRITE_BATCH = 1000
#: The columns a write may change.
ITEM_FIELDS = [
    "status",
    "output",
    "error",
    "attempts",
    "latency_ms",
    "tokens_in",
    "tokens_out",
    "tokens_estimated",
    "valid",
    "validation_error",
    "updated_at",
    "request_hash",
    "cached_from",
]
#: Characters per token when the provider reports no usage.
CHARS_PER_TOKEN = 4


def estimate_tokens(value: Any) -> int:
    """About four characters a token (marked as an estimate wherever shown)."""
    if value is None:
        return 0
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def items_create(
    job: Job,
    prompts: Sequence[str],
    *,
    input_fields: Sequence[dict[str, Any] | None] | None = None,
    source_indexes: Sequence[int | None] | None = None,
) -> None:
    """The job's rows, in input order, all pending: one multi-row INSERT per
    CREATE_BATCH rows (``bulk_create`` spends over 100 µs of Python a row, a
    second for 10,000 prompts; this a tenth of it)."""
    quote = connection.ops.quote_name
    fields = [
        Item._meta.get_field(name)
        for name in ("job", "index", "input", "input_fields", "source_index", "status")
    ]
    fields += [Item._meta.get_field(name) for name in CREATE_DEFAULTS]
    columns = ", ".join(quote(f.column) for f in fields)
    row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    json_field = Item._meta.get_field("input_fields")
    now = Item._meta.get_field("updated_at").get_db_prep_save(clock.now(), connection)
    constant = [
        Item._meta.get_field(name).get_db_prep_save(value, connection)
        for name, value in CREATE_DEFAULTS.items()
        if name != "updated_at"
    ]
    table = quote(Item._meta.db_table)
    if connection.vendor == "postgresql":
        _copy_items(job, prompts, input_fields, source_indexes, table, columns, constant, now)
        return
    with connection.cursor() as cursor:
        for start in range(0, len(prompts), CREATE_BATCH):
            stop = min(start + CREATE_BATCH, len(prompts))
            params: list[Any] = []
            for i in range(start, stop):
                fields_of_row = input_fields[i] if input_fields else None
                params += [
                    job.pk,
                    i,
                    prompts[i],
                    json_field.get_db_prep_save(fields_of_row, connection),
                    source_indexes[i] if source_indexes else None,
                    ItemStatus.PENDING,
                    *constant,
                    now,
                ]
            cursor.execute(
                f"INSERT INTO {table} ({columns}) VALUES {', '.join([row] * (stop - start))}",  # noqa: S608
                params,
            )


def _copy_items(
    job: Job,
    prompts: Sequence[str],
    input_fields: Sequence[dict[str, Any] | None] | None,
    source_indexes: Sequence[int | None] | None,
    table: str,
    columns: str,
    constant: list[Any],
    now: Any,
) -> None:
    """PostgreSQL's COPY: the rows streamed in one statement, a fifth of the
    time of a multi-row INSERT for 50,000 prompts."""
    with connection.cursor() as wrapper:
        cursor = wrapper.cursor  # psycopg's own, for its copy()
        with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            for i, prompt in enumerate(prompts):
                fields = input_fields[i] if input_fields else None
                copy.write_row(
                    [
                        job.pk,
                        i,
                        prompt,
                        None if fields is None else json.dumps(fields, ensure_ascii=False),
                        source_indexes[i] if source_indexes else None,
                        ItemStatus.PENDING,
                        *constant,
                        now,
                    ]
                )


#: The other columns of a new item (written explicitly: the INSERT is by hand).
CREATE_DEFAULTS: dict[str, Any] = {
    "error": "",
    "attempts": 0,
    "tokens_estimated": False,
    "validation_error": "",
    "updated_at": None,  # the moment of creation
}


# --- what changed, and the counters it moves --------------------------------------------


@dataclass
class Tally:
    """The job's counter deltas for a set of item writes."""

    running: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    valid: int = 0
    invalid: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    estimated: bool = False

    def move(self, item: Item, before: str) -> None:
        """Count ``item`` going from ``before`` (its status in the database)
        to its status now."""
        after = item.status
        if before == after:
            return
        if before == ItemStatus.RUNNING:
            self.running -= 1
        if after == ItemStatus.RUNNING:
            self.running += 1
        if after == ItemStatus.COMPLETED:
            self.completed += 1
            self.valid += item.valid is True
            self.invalid += item.valid is False
        elif after == ItemStatus.FAILED:
            self.failed += 1
        elif after == ItemStatus.CANCELLED:
            self.cancelled += 1
        if after in ITEM_ENDED:
            self.tokens_in += item.tokens_in or 0
            self.tokens_out += item.tokens_out or 0
            self.estimated |= item.tokens_estimated

    @property
    def ended(self) -> int:
        return self.completed + self.failed + self.cancelled

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))

    def job_updates(self) -> dict[str, Any]:
        """F() increments for the job row (only the counters that move)."""
        pairs = {
            "items_running": self.running,
            "items_completed": self.completed,
            "items_failed": self.failed,
            "items_cancelled": self.cancelled,
            "items_valid": self.valid,
            "items_invalid": self.invalid,
            "progress_done": self.ended,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
        }
        updates: dict[str, Any] = {name: F(name) + n for name, n in pairs.items() if n}
        if self.estimated:
            updates["tokens_estimated"] = True
        return updates


@dataclass
class Changes:
    """Items changed in memory since they were last written, with the status
    each had in the database, so the counters move by exactly what is written."""

    items: dict[int, Item] = field(default_factory=dict)
    before: dict[int, str] = field(default_factory=dict)

    def add(self, item: Item, before: str) -> None:
        self.items.setdefault(item.pk, item)
        self.before.setdefault(item.pk, before)

    def tally(self) -> Tally:
        tally = Tally()
        for pk, item in self.items.items():
            tally.move(item, self.before[pk])
        return tally

    def __len__(self) -> int:
        return len(self.items)

    def clear(self) -> None:
        self.items.clear()
        self.before.clear()


def items_write(
    job_id: int,
    changes: Changes,
    *,
    statuses: Iterable[str] = JOB_ACTIVE,
    job_fields: dict[str, Any] | None = None,
    scorers: Sequence[dict[str, Any]] = (),
    guard: Callable[[], bool] | None = None,
) -> bool:
    """Write the changed items and move the job's counters, in one transaction,
    if the job is still in ``statuses``. False (nothing written) otherwise.
    With the job's ``scorers``, the items that completed are scored in the
    same transaction (``completed_announce``). ``guard`` runs first in that
    transaction: False (a slice's lease lost to another worker) writes nothing."""
    tally = changes.tally()
    updates = {**tally.job_updates(), **(job_fields or {})}
    with transaction.atomic():
        if guard is not None and not guard():
            return False
        rows = Job.objects.filter(pk=job_id, status__in=list(statuses))
        moved = rows.update(**updates) if updates else rows.exists()
        if not moved:
            return False
        # Stamped once the job's row is ours, as close to the commit as can be
        # (a live page's cursor allows results.WRITE_SETTLE between the two).
        now = clock.now()
        for item in changes.items.values():
            item.updated_at = now
        bulk_write(list(changes.items.values()))
        completed_announce(job_id, scorers, changes)
    changes.clear()
    return True


def completed_announce(job_id: int, scorers: Sequence[dict[str, Any]], changes: Changes) -> None:
    """Send ``items_completed`` for the items of ``changes`` that have just
    completed, when the job has scorers (nothing at all otherwise). Called in
    the transaction that writes them, after the write."""
    if not scorers:
        return
    done = [
        item
        for pk, item in changes.items.items()
        if item.status == ItemStatus.COMPLETED and changes.before[pk] != ItemStatus.COMPLETED
    ]
    if done:
        items_completed.send(sender=Item, job_id=job_id, scorers=list(scorers), items=done)


def bulk_write(items: list[Item], fields: list[str] = ITEM_FIELDS) -> None:
    """Write ``fields`` of many items, each its own values, in one statement per
    WRITE_BATCH rows: ``WITH v(...) AS (VALUES ...) UPDATE ... FROM v`` on
    SQLite, ``UPDATE ... FROM unnest(<one array per column>)`` on PostgreSQL.

    Django's ``bulk_update`` builds a CASE per column per row and spends about
    4 ms of Python per row doing so, more than the provider call it records;
    this costs a few microseconds. UPDATE ... FROM is PostgreSQL's and SQLite's
    (3.33 and later); an older SQLite gets ``bulk_update``."""
    if not items:
        return
    if connection.vendor == "sqlite" and sqlite3.sqlite_version_info < (3, 33):
        Item.objects.bulk_update(items, fields, batch_size=WRITE_BATCH)
        return
    columns = [Item._meta.get_field(name) for name in fields]
    if connection.vendor == "postgresql":
        _bulk_write_arrays(items, columns)
        return
    quote = connection.ops.quote_name
    table = quote(Item._meta.db_table)
    names = ", ".join(quote(name) for name in ["id", *(c.column for c in columns)])
    sets = ", ".join(f"{quote(c.column)} = v.{quote(c.column)}" for c in columns)
    row = "(" + ", ".join(["%s"] * (len(columns) + 1)) + ")"
    preparers = [(c.attname, _preparer(c)) for c in columns]
    with connection.cursor() as cursor:
        for start in range(0, len(items), WRITE_BATCH):
            batch = items[start : start + WRITE_BATCH]
            params: list[Any] = []
            for item in batch:
                params.append(item.pk)
                params.extend(prepare(getattr(item, name)) for name, prepare in preparers)
            # Names come from the model's metadata, quoted; every value is a parameter.
            cursor.execute(
                f"WITH v({names}) AS (VALUES {', '.join([row] * len(batch))}) "  # noqa: S608
                f"UPDATE {table} SET {sets} FROM v WHERE {table}.{quote('id')} = v.{quote('id')}",
                params,
            )


def _bulk_write_arrays(items: list[Item], columns: list[models.Field[Any, Any]]) -> None:
    """PostgreSQL: one array parameter per column, unnested into rows. The
    statement's text is the same for every batch and short, so the driver
    parses it once (thousands of ``%s`` in a VALUES list are parsed again on
    every execute, half the Python cost of a write). JSON goes as text, cast
    back to jsonb."""
    quote = connection.ops.quote_name
    table = quote(Item._meta.db_table)
    pk = Item._meta.pk
    assert pk is not None
    json_columns = {c.attname for c in columns if isinstance(c, models.JSONField)}
    arrays = [f"%s::{pk.rel_db_type(connection)}[]"]
    sets = []
    for c in columns:
        name = quote(c.column)
        if c.attname in json_columns:
            arrays.append("%s::text[]")
            sets.append(f"{name} = v.{name}::jsonb")
        else:
            arrays.append(f"%s::{c.db_type(connection)}[]")
            sets.append(f"{name} = v.{name}")
    names = ", ".join(quote(name) for name in ["id", *(c.column for c in columns)])
    sql = (
        f"UPDATE {table} SET {', '.join(sets)} "  # noqa: S608 (names from the model, quoted)
        f"FROM unnest({', '.join(arrays)}) AS v({names}) "
        f"WHERE {table}.{quote('id')} = v.{quote('id')}"
    )
    preparers = [
        (c.attname, _json_text(c) if c.attname in json_columns else _preparer(c)) for c in columns
    ]
    with connection.cursor() as cursor:
        for start in range(0, len(items), WRITE_BATCH):
            batch = items[start : start + WRITE_BATCH]
            params = [[item.pk for item in batch]]
            params += [
                [prepare(getattr(item, name)) for item in batch] for name, prepare in preparers
            ]
            cursor.execute(sql, params)


def _json_text(column: models.JSONField[Any, Any]) -> Callable[[Any], str | None]:
    """A JSON column's value as JSON text (None stays SQL NULL, as Django saves it)."""
    encoder = column.encoder

    def prepare(value: Any) -> str | None:
        return None if value is None else json.dumps(value, cls=encoder)

    return prepare


#: Values the database drivers take as they are, and that Django's
#: ``get_db_prep_save`` gives back unchanged for a text, number or boolean column.
_PLAIN = frozenset({str, int, bool, float, type(None)})


def _preparer(column: models.Field[Any, Any]) -> Callable[[Any], Any]:
    """One column's value as a query parameter, at a few hundred nanoseconds a
    value rather than Django's few microseconds: a plain value goes as it is
    (never for JSON, which must be encoded), and a value that is the same object
    as the one before (every row's stamp) is converted once."""
    prep = column.get_db_prep_save
    if isinstance(column, models.JSONField):
        return lambda value: prep(value, connection)
    last: list[Any] = [object(), None]

    def prepare(value: Any) -> Any:
        if type(value) in _PLAIN:
            return value
        if value is not last[0]:
            last[0], last[1] = value, prep(value, connection)
        return last[1]

    return prepare


def items_end_active(job_id: int, status: str, error: str = "") -> Tally:
    """Every item still pending or running ends as ``status`` (cancelled, or
    failed with the job's error). Run inside the transaction that moved the
    job, after it: the job row is already locked. Returns the counters moved."""
    now = clock.now()
    tally = Tally()
    active = Item.objects.filter(job_id=job_id, status__in=item_sources_for(status))
    running = active.filter(status=ItemStatus.RUNNING).update(
        status=status, error=error, updated_at=now
    )
    pending = active.filter(status=ItemStatus.PENDING).update(
        status=status, error=error, updated_at=now
    )
    tally.running = -running
    if status == ItemStatus.CANCELLED:
        tally.cancelled = running + pending
    else:
        tally.failed = running + pending
    return tally


def items_requeue_running(job_id: int) -> int:
    """Items left running by a worker that stopped mid-call go back to pending
    (a sync call creates nothing to duplicate). Only the job's lease holder
    calls this."""
    with transaction.atomic():
        moved = Item.objects.filter(
            job_id=job_id, status__in=item_sources_for(ItemStatus.PENDING)
        ).update(status=ItemStatus.PENDING, updated_at=clock.now())
        if moved:
            Job.objects.filter(pk=job_id).update(items_running=F("items_running") - moved)
    return moved


# --- turning a provider's answer into an item -------------------------------------------


def item_complete(item: Item, result: ItemResult, schema: dict[str, Any] | None) -> None:
    """Record a completed call on ``item`` (in memory): the output (parsed
    and checked against the schema), latency and tokens."""
    check_item_move(item.status, ItemStatus.COMPLETED)
    output = structured.parse_output(result.output) if schema else result.output
    item.status = ItemStatus.COMPLETED
    item.output = output
    item.error = ""
    item.latency_ms = result.latency_ms
    if result.tokens_in is not None or result.tokens_out is not None:
        item.tokens_in, item.tokens_out = result.tokens_in, result.tokens_out
        item.tokens_estimated = False
    else:
        item.tokens_in = estimate_tokens(item.input)
        item.tokens_out = estimate_tokens(output)
        item.tokens_estimated = True
    if schema:
        problems = structured.problems(schema, output)
        item.valid = not problems
        item.validation_error = "; ".join(problems)[:2000]


def item_fail(item: Item, error: str, *, latency_ms: int | None = None) -> None:
    check_item_move(item.status, ItemStatus.FAILED)
    item.status = ItemStatus.FAILED
    item.error = error
    if latency_ms is not None:
        item.latency_ms = latency_ms


# --- reading --------------------------------------------------------------------------------


def items_pending(
    job_id: int, *, chunk: int = 1000, start: int = 0, stop: int | None = None
) -> Iterator[Item]:
    """The job's pending items in index order (those of ``[start, stop)``
    only, for a slice), ``chunk`` rows per query, so a worker never holds
    fifty thousand prompts at once."""
    after = start - 1
    upto = {} if stop is None else {"index__lt": stop}
    while True:
        rows = list(
            Item.objects.filter(
                job_id=job_id, status=ItemStatus.PENDING, index__gt=after, **upto
            ).order_by("index")[:chunk]
        )
        yield from rows
        if len(rows) < chunk:
            return
        after = rows[-1].index
