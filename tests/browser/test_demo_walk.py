"""What a newcomer sees after ``make run``'s ``setup_demo``, without a click of
setup: a comparison with scores and significance, a diff between two runs,
and a batch job with its remote batches."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from playwright.sync_api import expect

from dashboard.management.demo_showcase import COMPARISON, DATASET
from dashboard.models import Job

from .conftest import login

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_demo_shows_a_scored_comparison_a_diff_and_a_batch_job(
    page: Any, live_server: Any
) -> None:
    call_command("setup_demo", stdout=StringIO())
    base = live_server.url
    login(page, base, "demo", "demo")

    # The comparison, from the menu: pass rates, McNemar's p, the judge against the reviewers.
    page.goto(f"{base}/comparisons/")
    page.get_by_role("link", name=COMPARISON).click()
    scores = page.locator("#comparison-scores")
    expect(scores).to_contain_text("names the capital")
    expect(page.locator("#significance")).to_contain_text("difference is more than chance")
    expect(page.locator("#significance")).to_contain_text("0.0391")
    expect(page.locator("#agreement")).to_contain_text("83.3 %")

    # The rerun against the target it reruns, through the job page's diff form.
    weak = Job.objects.get(comparison__name=COMPARISON, provider="together")
    rerun = Job.objects.get(dataset__name=DATASET, comparison=None, judge_of=None)
    page.goto(f"{base}/jobs/{rerun.pk}/")
    page.fill(f"#diff-against-{rerun.pk}", str(weak.pk))
    page.click(".diff-link button[type=submit]")
    page.wait_for_url(f"**/jobs/{rerun.pk}/diff?against={weak.pk}")
    expect(page.get_by_text("names the capital: regression")).to_have_count(1)
    expect(page.get_by_text("names the capital: improvement").first).to_be_visible()

    # The batch job: its two remote batches, ended.
    batch = Job.objects.get(team__name="Demo", mode=Job.Mode.BATCH)
    page.goto(f"{base}/jobs/{batch.pk}/")
    rows = page.locator("#job-chunks tbody tr[data-state=ended]")
    expect(rows).to_have_count(2)
    expect(rows.first).to_contain_text("batch_demo")
    expect(rows.last).to_contain_text("9/10 completed")
    assert not page.js_errors
