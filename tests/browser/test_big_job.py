"""A job of 3,000 prompts in a real browser, with a real worker: the page shows
progress and the first page of results while the job runs, updates rows in
place, pages forward, filters to the failed rows, and exports them all."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from playwright.sync_api import expect

from ..conftest import make_credential, make_job
from .conftest import login

pytestmark = pytest.mark.django_db(transaction=True)

ROWS = 3000
FAILING = 30


def test_a_3000_row_job_runs_pages_filters_and_exports(
    page: Any, live_server: Any, worker: Any, team: Any, sims: Any
) -> None:
    sim = sims.get("together")
    sim.latency = 0.04  # about 20 s of work: long enough to watch it run, on a loaded machine too
    sim.add_fault(status=400, body={"error": "bad prompt"}, times=FAILING)
    credential = make_credential(team, base_url=sim.base_url, max_concurrency=6)
    login(page, live_server.url, "bob")
    job = make_job(credential, [f"Row {i}: say something" for i in range(ROWS)], model="m")

    page.goto(f"{live_server.url}/jobs/{job.pk}/")
    page.evaluate("window.__sameDocument = true")
    badge = page.locator("#job-status .badge[data-status]")
    assert badge.get_attribute("data-status") in ("pending", "queued", "running")
    expect(page.locator(".pager")).to_contain_text(f"rows 1–50 of {ROWS}")
    expect(page.locator("#job-items tr[data-index]")).to_have_count(50)
    # Rows of the first page fill in while the job runs, without a reload.
    expect(page.locator("#job-items tr[data-status=completed]").first).to_be_visible(timeout=20_000)
    running = badge.get_attribute("data-status")
    progress = page.locator("#job-status .progress").get_attribute("aria-valuenow")
    assert running == "running" and 0 < int(progress or 0) < ROWS, (running, progress)
    assert page.evaluate("window.__sameDocument") is True

    page.click("a[rel=next]")
    expect(page.locator("#job-items tr[data-index]").first).to_have_attribute("data-index", "50")
    expect(page.locator(".pager")).to_contain_text("rows 51–100")

    page.select_option("#item-status", "failed")
    page.click(".item-filters button[type=submit]")
    failed = page.locator("#job-items tr[data-index]")
    expect(failed.first).to_have_attribute("data-status", "failed")
    assert 0 < failed.count() <= FAILING
    assert all(
        status == "failed"
        for status in failed.evaluate_all("rows => rows.map(r => r.getAttribute('data-status'))")
    )

    page.goto(f"{live_server.url}/jobs/{job.pk}/")
    expect(page.locator("#job-status .badge[data-status]")).to_have_attribute(
        "data-status", "completed", timeout=60_000
    )
    expect(page.locator("#job-status .badge[data-status]")).to_contain_text(
        f"completed · {FAILING} failed"
    )
    with page.expect_download() as download:
        page.click("#job-outputs a:has-text('CSV')")
    rows = list(csv.reader(io.StringIO(download.value.path().read_text())))
    assert rows[0][:3] == ["index", "input", "output"] and len(rows) == ROWS + 1
    statuses = [row[rows[0].index("status")] for row in rows[1:]]
    assert statuses.count("failed") == FAILING and statuses.count("completed") == ROWS - FAILING
    assert [int(row[0]) for row in rows[1:]] == list(range(ROWS))
