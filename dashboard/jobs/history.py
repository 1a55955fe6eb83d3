"""The team's job history: filters over the jobs a page or an export shows.

Plain functions over querysets, no request objects, so the page, the exports
and the benchmark share them. Pages walk the ``job_history`` index
(team, -created_at, -id) with a keyset cursor: no OFFSET and no COUNT(*), so a
page deep in 100,000 jobs costs what the first one does. The result count is
bounded the same way: it counts up to COUNT_LIMIT + 1 rows, then says "more".
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Exists, OuterRef, Q, QuerySet, TextField
from django.db.models.fields.json import KeyTransform
from django.db.models.functions import Cast, Coalesce
from django.utils import timezone

from dashboard.models import Item, Job, Team

#: The JSON columns a history page never shows; they can be megabytes per job.
BIG_FIELDS = ("spec", "raw_result")


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
    cost_min: Decimal | None = None  # USD, actual (or estimated while running)
    cost_max: Decimal | None = None
    mode: str = ""  # online or batch

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
        # Part of the name, any case: "llama" finds meta-llama/Llama-2-7b-chat-hf.
        jobs = jobs.filter(model__icontains=filters.model)
    if filters.status:
        jobs = jobs.filter(status=filters.status)
    if filters.mode:
        jobs = jobs.filter(mode=filters.mode)
    if filters.created_by:
        jobs = jobs.filter(created_by__username=filters.created_by)
    if filters.date_from:
        jobs = jobs.filter(created_at__gte=_start_of(filters.date_from))
    if filters.date_to and filters.date_to < date.max:  # no day after the last one
        jobs = jobs.filter(created_at__lt=_start_of(filters.date_to + timedelta(days=1)))
    if filters.q:
        jobs = _text_search(jobs, filters.q)
    if filters.cost_min is not None or filters.cost_max is not None:
        # A job's cost as the history shows it: actual once it ended, the
        # estimate while it runs; unpriced jobs have none and never match.
        jobs = jobs.alias(_cost=Coalesce("cost_actual", "cost_estimated"))
        if filters.cost_min is not None:
            jobs = jobs.filter(_cost__gte=filters.cost_min)
        if filters.cost_max is not None:
            jobs = jobs.filter(_cost__lte=filters.cost_max)
    return jobs


def _start_of(day: date) -> datetime:
    """Midnight of ``day`` in the site's time zone: the day the user means."""
    return timezone.make_aware(datetime.combine(day, time.min))


def _text_search(jobs: QuerySet[Job], text: str) -> QuerySet[Job]:
    """Substring search over the items' prompts and outputs and MyMagic's
    question, each JSON value cast to text. A scan, so it runs only when asked.

    SQLite keeps JSON as written (non-ASCII as \\u escapes, quotes escaped)
    while PostgreSQL prints jsonb with the characters themselves: looking for
    both spellings finds the text on either database."""
    # As typed; JSON-escaped with \u escapes (SQLite); JSON-escaped keeping the
    # characters (PostgreSQL escapes only quotes, backslashes and controls).
    spellings = {text, json.dumps(text)[1:-1], json.dumps(text, ensure_ascii=False)[1:-1]}
    in_items = Q(input__icontains=text)
    question = Q()
    for spelling in spellings:
        in_items |= Q(_output__icontains=spelling)
        question |= Q(_question__icontains=spelling)
    items = Item.objects.alias(_output=Cast("output", TextField())).filter(
        in_items, job_id=OuterRef("pk")
    )
    jobs = jobs.alias(_question=Cast(KeyTransform("question", "spec"), TextField()))
    return jobs.filter(Exists(items) | question)


#: The history counts the jobs that match up to this many, then says "more than".
COUNT_LIMIT = 1000


def jobs_count(*, team: Team, filters: JobFilters, limit: int = COUNT_LIMIT) -> int:
    """How many jobs match, counted up to ``limit + 1`` (a bounded count, so a
    page of a team with 100,000 jobs never counts them all)."""
    return jobs_filtered(team=team, filters=filters).order_by().values("pk")[: limit + 1].count()


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
    "progress_total",
    "items_completed",
    "items_failed",
    "items_cancelled",
    "items_valid",
    "items_invalid",
    "error",
    "created_by__username",
    "created_at",
    "started_at",
    "finished_at",
    "tokens_in",
    "tokens_out",
    "tokens_estimated",
    "cost_estimated",
    "cost_actual",
    "demo",
)


def jobs_for_export(*, team: Team, filters: JobFilters) -> QuerySet[Any]:
    return jobs_filtered(team=team, filters=filters).values(*EXPORT_VALUES)
