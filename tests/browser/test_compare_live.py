"""The comparison flow in a real browser: upload a CSV, write a template and
see its preview, start a comparison of two targets, watch the cells fill in
without a reload, rate two cells, export the grid."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from dashboard.models import Comparison, Rating
from providers.simulators import completion_text

from ..conftest import make_credential
from .conftest import login

pytestmark = pytest.mark.django_db(transaction=True)

CSV = 'question,topic\n"What is 2+2, roughly?",math\nNäme a colour,art\n<b>bold?</b>,html\n'


def test_upload_template_compare_watch_rate_export(
    page: Any, live_server: Any, worker: Any, team: Any, sims: Any, tmp_path: Path
) -> None:
    sim = sims.get("together")
    sim.latency = 0.7  # long enough to see the cells fill in
    make_credential(team, base_url=sim.base_url, name="Together A")
    make_credential(team, base_url=sim.base_url, name="Together B")
    base = live_server.url
    login(page, base, "bob")

    # Upload a CSV and see its rows.
    path = tmp_path / "questions.csv"
    path.write_bytes(CSV.encode())
    page.goto(f"{base}/datasets/")
    page.set_input_files("#id_file", str(path))
    page.click("button:has-text('Upload')")
    page.wait_for_url("**/datasets/*/")
    expect(page.locator("table.dataset-preview")).to_contain_text("What is 2+2, roughly?")

    # A template, previewed as it is typed.
    page.click("text=Compare models on it")
    page.wait_for_url("**/comparisons/new?dataset=*")
    page.fill("#id_prompt_template", "Answer ({topic}): {qestion}")
    expect(page.locator("#template-preview")).to_contain_text("{qestion} names no column")
    page.fill("#id_prompt_template", "Answer ({topic}): {question}")
    preview = page.locator("#template-preview li")
    expect(preview).to_have_count(3)
    expect(preview.nth(2)).to_contain_text("Answer (html): <b>bold?</b>")

    # Two targets, started together.
    page.fill("#id_name", "Two ways")
    page.fill("#id_target-0-model", "model-a")
    page.select_option("#id_target-1-credential", label="Together B")
    page.fill("#id_target-1-model", "model-b")
    page.click("button:has-text('Start comparison')")
    page.wait_for_url("**/comparisons/*/")
    page.evaluate("window.__sameDocument = true")
    comparison = Comparison.objects.get()
    first, second = comparison.jobs.order_by("id")
    prompts = [
        "Answer (math): What is 2+2, roughly?",
        "Answer (art): Näme a colour",
        "Answer (html): <b>bold?</b>",
    ]

    # The cells fill in without a reload.
    for job, model in ((first, "model-a"), (second, "model-b")):
        for index, prompt in enumerate(prompts):
            expect(page.locator(f"#cell-{job.pk}-{index} pre.output")).to_have_text(
                completion_text(model, prompt).strip(), timeout=20_000
            )
    expect(page.locator("#comparison-summary .status-line .badge")).to_have_attribute(
        "data-status", "completed"
    )
    assert page.locator("#comparison-grid b").count() == 0  # model output stays text
    assert page.evaluate("window.__sameDocument") is True

    # Rate two cells.
    page.click(f"#cell-{first.pk}-0 button.vote-up")
    expect(page.locator(f"#cell-{first.pk}-0 ul.ratings")).to_contain_text("bob")
    page.click(f"#cell-{second.pk}-1 button.vote-best")
    expect(page.locator(f"#cell-{second.pk}-1 button.vote-best")).to_have_attribute(
        "aria-pressed", "true"
    )
    expect(page.locator(f"#cell-{second.pk}-1 ul.ratings")).to_contain_text("★ best")
    assert Rating.objects.count() == 2
    assert page.evaluate("window.__sameDocument") is True

    # Export the grid.
    with page.expect_download() as download:
        page.click("text=Export CSV")
    rows = list(csv.reader(io.StringIO(Path(download.value.path()).read_text())))
    header, body = rows[0], rows[1:]
    assert [row[header.index("input")] for row in body] == prompts
    up = header.index("T1 together/model-a up")
    best = header.index("T2 together/model-b best")
    assert body[0][up] == "1" and body[1][best] == "1"
    assert page.js_errors == []
