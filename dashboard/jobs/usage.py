"""A team's usage over a period: what the charts, the usage page and
``GET /api/v1/usage`` show.

Each figure is one aggregate query (GROUP BY in the database), so what it
costs does not grow with the number of jobs, only with the groups it returns
(days × providers, providers × models). Latency percentiles are the nearest
rank (the value at rank ceil(p·n) of each group's latencies in order), picked
by ``ROW_NUMBER()`` and ``COUNT(*)`` over a window partitioned by the group:
SQLite (3.25 and later) and PostgreSQL run the same query, which returns at
most two rows a group. Days are the site's (settings.TIME_ZONE), as the
budget's month is, whatever time zone a request activated.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Count, F, Q, QuerySet, Sum, Window
from django.db.models.functions import RowNumber, TruncDate
from django.utils import timezone

from dashboard.core import clock
from dashboard.models import Item, Job, Team
from dashboard.status import ItemStatus

from .cost import BATCH, MODES, month_after, month_start, site_zone

#: The charts' period: the last thirty days, today included.
CHART_DAYS = 30


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime
    days: list[date] = field(default_factory=list)


def last_days(days: int = CHART_DAYS, at: datetime | None = None) -> Period:
    today = timezone.localdate(at or clock.now(), site_zone())
    first = today - timedelta(days=days - 1)
    return Period(
        start=timezone.make_aware(datetime.combine(first, time.min), site_zone()),
        end=timezone.make_aware(datetime.combine(today + timedelta(days=1), time.min), site_zone()),
        days=[first + timedelta(days=n) for n in range(days)],
    )


def this_month(at: datetime | None = None) -> Period:
    start = month_start(at)
    return Period(start=start, end=month_after(start))


def period_jobs(team: Team, period: Period) -> QuerySet[Job]:
    return Job.objects.filter(team=team, created_at__gte=period.start, created_at__lt=period.end)


def _day() -> TruncDate:
    return TruncDate("created_at", tzinfo=site_zone())


def jobs_per_day(team: Team, period: Period) -> dict[str, dict[date, int]]:
    """Jobs saved per day, by provider: {provider: {day: count}}."""
    rows = (
        period_jobs(team, period)
        .annotate(day=_day())
        .values("day", "provider")
        .annotate(n=Count("id"))
        .order_by()
    )
    found: dict[str, dict[date, int]] = defaultdict(dict)
    for row in rows:
        found[row["provider"]][row["day"]] = row["n"]
    return dict(sorted(found.items()))


def spend_per_day(team: Team, period: Period) -> dict[str, dict[date, Decimal]]:
    """The actual cost of the jobs saved each day (priced jobs that ended),
    by mode: {"online": {day: usd}, "batch": {day: usd}} (a mode without
    spend has an empty dict). One query, grouped by day and mode."""
    rows = (
        period_jobs(team, period)
        .filter(cost_actual__isnull=False)
        .annotate(day=_day())
        .values("day", "mode")
        .annotate(usd=Sum("cost_actual"))
        .order_by()
    )
    found: dict[str, dict[date, Decimal]] = {mode: {} for mode in MODES}
    for row in rows:
        found.setdefault(row["mode"], {})[row["day"]] = Decimal(row["usd"] or 0)
    return found


def by_provider(team: Team, period: Period) -> list[dict[str, Any]]:
    """Per provider: jobs (and how many ran in batch mode), items, items
    failed, and the actual cost of its priced jobs, all of it and split by
    mode (None when none of its jobs, or none of that mode, was priced).
    One query: the split is a filtered sum, not a group of its own."""
    batch = Q(mode=BATCH)
    rows = (
        period_jobs(team, period)
        .values("provider")
        .annotate(
            jobs=Count("id"),
            jobs_batch=Count("id", filter=batch),
            items=Sum("progress_total"),
            completed=Sum("items_completed"),
            failed=Sum("items_failed"),
            cost=Sum("cost_actual"),
            cost_online=Sum("cost_actual", filter=~batch),
            cost_batch=Sum("cost_actual", filter=batch),
            estimated_tokens=Count("id", filter=Q(tokens_estimated=True)),
        )
        .order_by("provider")
    )
    return [
        {
            **row,
            "items": row["items"] or 0,
            "completed": row["completed"] or 0,
            "failed": row["failed"] or 0,
            **{name: _decimal(row[name]) for name in ("cost", "cost_online", "cost_batch")},
        }
        for row in rows
    ]


def _decimal(value: Any) -> Decimal | None:
    return None if value is None else Decimal(value)


def latency_percentiles(
    team: Team, period: Period, *, by_model: bool = True
) -> list[dict[str, Any]]:
    """p50 and p95 of the completed items' latency (ms) per provider (and
    model): [{"provider", "model", "n", "p50", "p95"}], one query."""
    group = [F("job__provider"), F("job__model")] if by_model else [F("job__provider")]
    ranked = (
        Item.objects.filter(
            job__team=team,
            job__created_at__gte=period.start,
            job__created_at__lt=period.end,
            status=ItemStatus.COMPLETED,
            latency_ms__isnull=False,
        )
        .annotate(
            group_provider=F("job__provider"),
            group_model=F("job__model"),
            rank=Window(RowNumber(), partition_by=group, order_by=[F("latency_ms").asc()]),
            n=Window(Count("id"), partition_by=group),
        )
        # Nearest rank: ceil(n·p/100), in integer arithmetic.
        .annotate(p50_rank=(F("n") * 50 + 99) / 100, p95_rank=(F("n") * 95 + 99) / 100)
        .filter(Q(rank=F("p50_rank")) | Q(rank=F("p95_rank")))
        .values("group_provider", "group_model", "n", "rank", "p50_rank", "p95_rank", "latency_ms")
    )
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for row in ranked:
        model = row["group_model"] if by_model else ""
        entry = groups.setdefault(
            (row["group_provider"], model),
            {"provider": row["group_provider"], "model": model, "n": row["n"]},
        )
        if row["rank"] == row["p50_rank"]:
            entry["p50"] = row["latency_ms"]
        if row["rank"] == row["p95_rank"]:
            entry["p95"] = row["latency_ms"]
    return [groups[key] for key in sorted(groups)]


def month_usage(team: Team, at: datetime | None = None) -> list[dict[str, Any]]:
    """DESIGN's ``by_provider`` of GET /api/v1/usage, for the month: two queries."""
    period = this_month(at)
    latency = {row["provider"]: row for row in latency_percentiles(team, period, by_model=False)}
    return [
        {
            "provider": row["provider"],
            "jobs": row["jobs"],
            "items": row["items"],
            "failed": row["failed"],
            "cost": row["cost"],
            "jobs_batch": row["jobs_batch"],
            "cost_online": row["cost_online"],
            "cost_batch": row["cost_batch"],
            "latency_ms_p50": latency.get(row["provider"], {}).get("p50"),
            "latency_ms_p95": latency.get(row["provider"], {}).get("p95"),
        }
        for row in by_provider(team, period)
    ]
