"""A job's results as the job page, the API and the exports read them: pages
of items by index (keyset, never OFFSET), filters by status and validity, the
validity summary, what changed since a client's cursor, and a job merged with
its retries (for each row, the latest attempt that completed)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Func, Q, QuerySet, TextField

from dashboard.core import structured
from dashboard.models import Item, ItemScore, Job
from dashboard.status import ItemStatus

from .items import ITEM_FIELDS

PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
#: The validity summary names this many of the most common validation errors.
TOP_ERRORS = 5
#: What a page of items reads (everything an item shows).
ITEM_COLUMNS = ("id", "job_id", "index", "source_index", "input", "input_fields", *ITEM_FIELDS)
VALIDITY = ("valid", "invalid")
#: A search is cut to this many characters (a pasted page of text is not a query).
SEARCH_MAX = 200


class OutputText(Func):
    """An item's output as text to search: a string output as itself (not its
    JSON form, quotes and escapes), an object as its JSON text."""

    output_field = TextField()
    template = "JSON_EXTRACT(%(expressions)s, '$')"

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return self.as_sql(compiler, connection, template="(%(expressions)s #>> '{}')", **extra)


@dataclass(frozen=True)
class ItemFilter:
    status: str = ""  # one of ItemStatus, or "" for all
    validity: str = ""  # "valid", "invalid" or ""
    score: str = ""  # "<scorer>:pass" or "<scorer>:fail", or ""
    query: str = ""  # words to find in the input or the output, or ""

    def apply(self, items: QuerySet[Item]) -> QuerySet[Item]:
        if self.status:
            items = items.filter(status=self.status)
        if self.validity:
            items = items.filter(valid=self.validity == "valid")
        if self.score:
            name, verdict = self.score.rsplit(":", 1)
            items = items.filter(scores__scorer=name, scores__passed=verdict == "pass")
        if self.query:
            items = items.alias(output_text=OutputText("output")).filter(
                Q(input__icontains=self.query) | Q(output_text__icontains=self.query)
            )
        return items

    def as_params(self) -> dict[str, str]:
        return {
            name: value
            for name, value in (
                ("status", self.status),
                ("valid", self.validity),
                ("score", self.score),
                ("q", self.query),
            )
            if value
        }


SCORE_VERDICTS = ("pass", "fail")


def parse_filter(
    status: str | None,
    valid: str | None,
    score: str | None = None,
    scorers: list[str] | None = None,
    query: str | None = None,
) -> tuple[ItemFilter, dict[str, str]]:
    """The filter from query values, and a message per value that is not one
    (``score`` is ``<scorer>:pass|fail``, the scorer one of ``scorers``;
    ``query`` loses its NULs, which PostgreSQL refuses, and is cut to
    SEARCH_MAX characters)."""
    errors = {}
    query = (query or "").replace("\x00", "").strip()
    if len(query) > SEARCH_MAX:
        errors["q"] = f"Searched for the first {SEARCH_MAX} characters only."
        query = query[:SEARCH_MAX].strip()
    score = (score or "").strip()
    if score:
        name, _, verdict = score.rpartition(":")
        if not name or verdict not in SCORE_VERDICTS:
            errors["score"] = "Give <scorer>:pass or <scorer>:fail, e.g. exact:fail."
            score = ""
        elif scorers is not None and name not in scorers:
            known = ", ".join(scorers) or "none"
            errors["score"] = f"No scorer {name!r} on this job; its scorers: {known}."
            score = ""
    status = (status or "").strip()
    if status and status not in ItemStatus.values:
        errors["status"] = f"Unknown status; one of {', '.join(ItemStatus.values)}."
        status = ""
    validity = (valid or "").strip().lower()
    validity = {"true": "valid", "false": "invalid"}.get(validity, validity)
    if validity and validity not in VALIDITY:
        errors["valid"] = "One of valid, invalid (or true, false)."
        validity = ""
    return ItemFilter(status=status, validity=validity, score=score, query=query), errors


def item_scores(items: list[Item]) -> dict[int, list[dict[str, Any]]]:
    """Each item's scores (by item id) as the API shows them, for a page of
    items in one query, in the job's scorer order where it has one."""
    by_item: dict[int, list[dict[str, Any]]] = {item.pk: [] for item in items}
    if not items:
        return by_item
    rows = ItemScore.objects.filter(item_id__in=list(by_item)).values_list(
        "item_id", "scorer", "passed", "score", "reason"
    )
    for item_id, scorer, passed, score, reason in rows.order_by("item_id", "id"):
        by_item[item_id].append(
            {"scorer": scorer, "pass": passed, "score": score, "reason": reason}
        )
    return by_item


def with_scores(job: Job, items: list[Item]) -> list[Item]:
    """The items of a page, each with ``score_list`` (its scores in the job's
    scorer order; one query, none for a job without scorers)."""
    if not job.scorers:
        for item in items:
            item.score_list = []  # type: ignore[attr-defined]
        return items
    order = {scorer["name"]: i for i, scorer in enumerate(job.scorers)}
    scores = item_scores(items)
    for item in items:
        item.score_list = sorted(  # type: ignore[attr-defined]
            scores.get(item.pk, []), key=lambda s: order.get(s["scorer"], len(order))
        )
    return items


@dataclass(frozen=True)
class ItemsPage:
    items: list[Item]
    #: Index to continue after (None on the last page), and to go back before.
    next_after: int | None
    previous_before: int | None

    @property
    def first_index(self) -> int | None:
        return self.items[0].index if self.items else None

    @property
    def last_index(self) -> int | None:
        return self.items[-1].index if self.items else None


def items_page(
    job: Job,
    *,
    after: int | None = None,
    before: int | None = None,
    item_filter: ItemFilter = ItemFilter(),
    size: int = PAGE_SIZE,
) -> ItemsPage:
    """One page of the job's items in index order: those after ``after``, or
    the page that ends before ``before``. Two queries at most, whatever the
    job's size (one row more than shown says whether there is more)."""
    items = item_filter.apply(Item.objects.filter(job_id=job.pk)).only(*ITEM_COLUMNS)
    if before is not None:
        rows = list(items.filter(index__lt=before).order_by("-index")[: size + 1])
        more_before = len(rows) > size
        rows = list(reversed(rows[:size]))
        return ItemsPage(
            rows,
            next_after=rows[-1].index if rows else None,
            previous_before=rows[0].index if rows and more_before else None,
        )
    if after is not None:
        items = items.filter(index__gt=after)
    rows = list(items.order_by("index")[: size + 1])
    more = len(rows) > size
    rows = rows[:size]
    return ItemsPage(
        rows,
        next_after=rows[-1].index if more else None,
        previous_before=rows[0].index if rows and after is not None else None,
    )


def item_at(job: Job, index: int, *, merged: bool = False) -> Item | None:
    """One row of the job (None when it has no such row), with ``merged``
    its latest completed attempt across the job's retries."""
    item = Item.objects.filter(job_id=job.pk, index=index).only(*ITEM_COLUMNS).first()
    if item is None:
        return None
    return merge_retries(job, [item])[0] if merged else item


def output_shown(output: Any) -> tuple[str, bool]:
    """An output as a reader wants it whole: text as it is, a structured one
    as indented JSON; and whether it is JSON."""
    if output is None:
        return "", False
    if isinstance(output, str):
        return output, False
    return json.dumps(output, indent=2, ensure_ascii=False), True


#: How far back a live page's cursor reaches. A write stamps its items inside
#: its transaction and commits a moment later: a poll answering in between must
#: not hand out a cursor past that stamp, or the row would never be sent. Rows
#: written within this window are sent again (the same row, swapped in place).
WRITE_SETTLE = timedelta(seconds=3)


def live_cursor(now: datetime) -> datetime:
    """The cursor a live page's next poll asks from, for a poll answered ``now``."""
    return now - WRITE_SETTLE


def items_changed(job: Job, first: int, last: int, since: datetime | None) -> list[Item]:
    """The items of a page (indexes ``first``..``last``) written since ``since``
    (all of them for None): what a live page needs, never more than a page."""
    rows = Item.objects.filter(job_id=job.pk, index__gte=first, index__lte=last)
    if since is not None:
        rows = rows.filter(updated_at__gte=since)
    return list(rows.order_by("index").only(*ITEM_COLUMNS)[:MAX_PAGE_SIZE])


def validity_summary(job: Job) -> dict[str, Any] | None:
    """Valid and invalid counts and the most common validation errors, for a
    job with an output schema (None without one)."""
    if not job.spec.get("output_schema"):
        return None
    top = list(
        Item.objects.filter(job_id=job.pk, valid=False)
        .values("validation_error")
        .annotate(count=Count("id"))
        .order_by("-count", "validation_error")[:TOP_ERRORS]
    )
    return {"valid": job.items_valid, "invalid": job.items_invalid, "top_errors": top}


def structured_columns(job: Job) -> list[str]:
    """The output schema's field names in the order they were given (a job
    saved before it kept them: in the order the stored schema gives)."""
    return list(job.output_columns) or structured.columns(job.spec.get("output_schema"))


def fields_of(item: Item, columns: list[str]) -> list[Any]:
    """The structured output's values in schema order (None where absent)."""
    output = item.output
    return [output.get(name) if isinstance(output, dict) else None for name in columns]


# --- a job and its retries ---------------------------------------------------------------


def lineage(job: Job) -> Job:
    """The first job of a retry lineage (retries hang off the first job)."""
    return job.retry_of or job


def merge_retries(job: Job, items: list[Item]) -> list[Item]:
    """Each row of the first job as its latest attempt that completed: the row
    itself, or the latest completed retry of it. A replaced row carries
    ``merged_from`` (the retry's job id). One query for the page."""
    for item in items:
        item.merged_from = None  # type: ignore[attr-defined]
    if not items:
        return items
    latest: dict[int, Item] = {}
    for retry in (
        Item.objects.filter(
            job__retry_of_id=job.pk,
            source_index__in=[item.index for item in items],
            status=ItemStatus.COMPLETED,
        )
        .order_by("job__created_at", "job_id")
        .only(*ITEM_COLUMNS)
    ):
        latest[retry.source_index] = retry  # later attempts win
    merged = []
    for item in items:
        retry = latest.get(item.index)
        if retry is None:
            merged.append(item)
            continue
        retry.merged_from = retry.job_id  # type: ignore[attr-defined]
        retry.index = item.index
        retry.input, retry.input_fields = item.input, item.input_fields
        merged.append(retry)
    return merged


def field_names(job: Job, fields: dict[str, Any] | None) -> list[str]:
    """The names of a job's input fields in the dataset's order; for a job
    saved before it kept them, the keys of one row's fields."""
    return list(job.input_columns or fields or [])


def iter_items(job: Job, *, chunk: int = 1000, merged: bool = False) -> Iterator[Item]:
    """Every item of the job in index order, ``chunk`` rows per query (exports)."""
    after = -1
    while True:
        rows = list(
            Item.objects.filter(job_id=job.pk, index__gt=after)
            .order_by("index")
            .only(*ITEM_COLUMNS)[:chunk]
        )
        if merged:
            rows = merge_retries(job, rows)
        yield from rows
        if len(rows) < chunk:
            return
        after = rows[-1].index


def job_rows(job: Job) -> list[dict[str, Any]]:
    """Every row of a small job as a dict (prompt, output, error), for the API's
    ``outputs`` and places that want plain data."""
    return [
        {
            "index": item.index,
            "prompt": item.input,
            "output": item.output,
            "error": item.error if item.status == ItemStatus.FAILED else "",
            "status": item.status,
            "valid": item.valid,
        }
        for item in iter_items(job)
    ]
