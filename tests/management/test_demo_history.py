"""``setup_demo`` seeds weeks of demo history, marked as such, so the charts
of a fresh ``make run`` are not empty; running it again adds nothing."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.db.models import Count, Max, Min, Q

from dashboard.core import clock
from dashboard.jobs import usage
from dashboard.management.demo_history import NOTE
from dashboard.models import Item, Job, JobEvent, Price, Team
from dashboard.web import charts

pytestmark = pytest.mark.django_db


def setup_demo() -> str:
    out = StringIO()
    call_command("setup_demo", stdout=out)
    return out.getvalue()


def test_setup_demo_seeds_weeks_of_history_marked_as_demo_once() -> None:
    assert "finished jobs over three weeks, marked as demo data" in setup_demo()
    team = Team.objects.get(name="Demo")
    assert not Job.objects.filter(team=team, demo=False).exists()
    # The history (the showcase's jobs are demo too: tests/management/test_demo_showcase.py).
    jobs = Job.objects.filter(team=team, events__message=NOTE)

    assert jobs.count() == 150
    assert jobs.values("provider").distinct().count() >= 3
    span = jobs.aggregate(first=Min("created_at"), last=Max("created_at"))
    assert span["last"] - span["first"] > timedelta(days=14)
    assert span["last"] <= clock.now()
    assert jobs.filter(status="failed").exists() and jobs.filter(items_failed__gt=0).exists()
    assert JobEvent.objects.filter(job__team=team, message=NOTE).count() == 150
    assert Price.objects.filter(team=team).count() >= 3
    # The counters say what the items say.
    for job in jobs.annotate(
        n=Count("items"), failed=Count("items", filter=Q(items__status="failed"))
    ):
        assert (job.n, job.failed) == (job.progress_total, job.items_failed)
    assert jobs.filter(cost_actual__gt=0).exists() and jobs.filter(cost_actual=None).exists()

    assert "Demo history" not in setup_demo()  # idempotent
    assert jobs.count() == 150 and Item.objects.filter(job__in=jobs).count() > 150


def test_the_demo_s_charts_have_data(settings: Any) -> None:
    setup_demo()
    team = Team.objects.get(name="Demo")
    for chart in charts.all_charts(team, usage.last_days()):
        assert not chart.empty, chart.name
        assert "<rect" in chart.svg()
