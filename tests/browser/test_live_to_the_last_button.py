"""The pages as a person meets them, in a real Chromium with a real worker: the
job page's buttons and timeline and the home page's counters and panels change
without a reload when a job ends; the first job with the form's own defaults
completes on the demo credentials; times show in the reader's zone; a new token
copies."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import expect

from dashboard.jobs.forms import PROMPT_SPLIT_CHOICES, split_prompts
from dashboard.models import Job, JobEvent
from providers import get_provider_class
from providers.simulators import Fault, available

from ..conftest import make_credential, make_job
from .conftest import login, submit_job

pytestmark = pytest.mark.django_db(transaction=True)


def same_document(page: Any) -> None:
    page.evaluate("window.__sameDocument = true")


def still_same_document(page: Any) -> bool:
    return page.evaluate("window.__sameDocument") is True


def test_job_page_buttons_and_timeline_follow_the_job_to_its_end(
    page: Any, live_server: Any, worker: Any, team: Any, sims: Any, hold: Any
) -> None:
    sim = sims.get("together")
    # The answers wait until the test has seen the job running and tried Cancel
    # (the refused prompt, a fault, is answered at once).
    answers = hold(sim, "^/inference$")
    sim.faults.append(Fault(status=400, body={"error": "prompt refused"}, method="POST"))
    make_credential(team, base_url=sim.base_url, name="Together demo")
    login(page, live_server.url, "bob")
    page.goto(f"{live_server.url}/jobs/new")
    page.fill("#id_model", "demo-model")
    page.fill("#id_prompts", "one\ntwo\nthree\nfour")
    submit_job(page)
    job = Job.objects.get()
    same_document(page)
    actions = page.locator("#job-actions")
    expect(actions.get_by_role("button", name="Cancel")).to_be_visible()
    expect(actions.get_by_role("button", name=re.compile("Retry"))).to_have_count(0)
    # A timeline longer than its box: notes written while the job runs.
    JobEvent.objects.bulk_create(
        [JobEvent(job=job, kind="note", message=f"note {i}") for i in range(60)]
    )

    # Cancel asks first; saying no leaves the job alone.
    questions: list[str] = []

    def dismiss(dialog: Any) -> None:
        questions.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", dismiss)
    actions.get_by_role("button", name="Cancel").click()
    answers.release()
    expect(page.locator("#job-status .badge[data-status]")).to_have_attribute(
        "data-status", "completed", timeout=20_000
    )
    assert questions and f"Cancel job #{job.pk}?" in questions[0]

    # Ended with one prompt refused: the buttons changed without a reload.
    expect(actions.get_by_role("button", name="Cancel")).to_have_count(0)
    expect(
        actions.get_by_role("button", name="Retry rows that did not complete (1)")
    ).to_be_visible()
    expect(actions.get_by_role("button", name="Retry all")).to_be_visible()
    expect(page.locator("#job-status .progress-wrap")).to_have_attribute("data-state", "partial")

    # The terminal event is at the top of its box and in view, though the
    # timeline overflows the box.
    timeline = page.locator("#job-timeline")
    top = timeline.locator("li").first
    expect(top).to_contain_text("Completed: 3 of 4 prompt(s) completed, 1 failed.")
    expect(timeline.locator("li", has_text="note 59")).to_have_count(1)
    assert timeline.evaluate("el => el.scrollHeight > el.clientHeight + 50")
    assert top.evaluate(
        """li => { const box = li.parentElement.getBoundingClientRect();
                   const r = li.getBoundingClientRect();
                   return r.top >= box.top && r.bottom <= box.bottom; }"""
    )
    assert still_same_document(page)
    assert page.js_errors == []


def test_home_counters_and_panels_change_without_reload(
    page: Any, live_server: Any, worker: Any, team: Any, sims: Any, bob: Any, hold: Any
) -> None:
    sim = sims.get("together")
    answer = hold(sim, "^/inference$")  # the job runs until the test has seen it active
    credential = make_credential(team, base_url=sim.base_url, name="Together demo")
    login(page, live_server.url, "bob")
    job = make_job(credential, ["hello"], user=bob)  # the worker takes it at once
    page.goto(f"{live_server.url}/")
    same_document(page)
    row = f"#job-row-{job.pk}"
    expect(page.locator(f"#active-jobs {row}")).to_be_visible()
    active = page.locator(
        "#home-stats [data-stat=running] .num, #home-stats [data-stat=queued] .num, #home-stats [data-stat=pending] .num"
    )
    assert sum(int(t) for t in active.all_inner_texts()) == 1
    expect(page.locator("#recent-jobs")).to_contain_text("No finished jobs yet.")

    answer.release()
    expect(page.locator(f"#recent-jobs {row}")).to_be_visible(timeout=20_000)
    expect(page.locator("#active-jobs")).to_contain_text("Nothing running.")
    expect(page.locator("#home-stats [data-stat=completed] .num")).to_have_text("1")
    expect(page.locator("#home-stats [data-stat=running] .num")).to_have_text("0")
    assert still_same_document(page)
    assert page.js_errors == []


def demo_credentials(team: Any, sims: Any) -> None:
    """What `manage.py setup_demo` makes (one credential per simulator, named
    "<Provider> (simulator)"), pointed at this session's simulators."""
    for slug in available():
        label = get_provider_class(slug).label
        make_credential(
            team,
            slug,
            name=f"{label} (simulator)",
            base_url=sims.get(slug).base_url,
            max_concurrency=8,
        )


def test_first_job_with_the_default_form_values_completes_on_the_demo_credentials(
    page: Any, live_server: Any, worker: Any, team: Any, sims: Any
) -> None:
    demo_credentials(team, sims)
    login(page, live_server.url, "bob")
    page.goto(f"{live_server.url}/jobs/new")
    chosen = page.locator("#id_credential option:checked").inner_text()
    assert "Bytez" not in chosen  # a credential that needs no model loaded first
    assert page.input_value("#id_model")  # a model is filled in
    count = page.locator("#prompt-count")
    expect(count).to_have_text("0 prompts")
    page.fill("#id_prompts", "Say hi\nSay bye\nSay thanks")  # three pasted lines
    expect(count).to_have_text("3 prompts")
    submit_job(page)
    expect(page.locator("#job-status .badge[data-status]")).to_have_attribute(
        "data-status", "completed", timeout=30_000
    )
    job = Job.objects.get()
    assert job.progress_total == 3 and job.items_completed == 3
    assert page.js_errors == []


def test_the_prompt_count_splits_as_the_server_does(page: Any, live_server: Any, team: Any) -> None:
    make_credential(team)
    login(page, live_server.url, "bob")
    page.goto(f"{live_server.url}/jobs/new")
    texts = [
        "",
        "  \n\n ",
        "one",
        "one\ntwo\n\n three \r\nfour",
        "a\n---\nb\n---\n\n---\nc",
        "first line\nsecond line\n---\nthird",
        "x\n---",
    ]
    for text in texts:
        for mode, _ in PROMPT_SPLIT_CHOICES:
            got = page.evaluate("([t, m]) => window.dashboardSplitPrompts(t, m)", [text, mode])
            assert got == split_prompts(text, mode), (text, mode)
    page.select_option("#id_split", "single")
    page.fill("#id_prompts", "one\ntwo")
    expect(page.locator("#prompt-count")).to_have_text("1 prompt")


def settled(page: Any) -> None:
    """htmx binds swapped-in elements when they settle: wait for that before typing."""
    page.wait_for_function(
        "() => !document.querySelector('.htmx-added, .htmx-settling, .htmx-request')"
    )


def test_model_list_follows_the_credential_and_warns(
    page: Any, live_server: Any, team: Any
) -> None:
    together = make_credential(team, "together", name="A Together")
    mymagic = make_credential(team, "mymagic", name="B MyMagic")
    login(page, live_server.url, "bob")
    page.goto(f"{live_server.url}/jobs/new")
    assert page.input_value("#id_credential") == str(together.pk)
    assert page.input_value("#id_model") == "togethercomputer/RedPajama-INCITE-7B-Instruct"
    page.select_option("#id_credential", str(mymagic.pk))
    # The model the form filled in follows the credential; the list shows its models.
    expect(page.locator("#id_model")).to_have_value("llama3_70b")
    help = page.locator("#model-help")
    expect(help.locator("[data-model-pick=mistral_7b]")).to_be_visible()
    settled(page)
    page.fill("#id_model", "llama3-70b")
    expect(page.locator("#model-warning")).to_contain_text("not in MyMagic's documented model list")
    settled(page)
    help.locator("[data-model-pick=llama3_70b]").click()
    expect(page.locator("#id_model")).to_have_value("llama3_70b")
    expect(page.locator("#model-warning")).to_be_empty()
    # A model the user chose stays when the credential changes.
    page.select_option("#id_credential", str(together.pk))
    expect(page.locator("#model-help")).to_have_attribute("aria-label", "Models for A Together")
    expect(page.locator("#id_model")).to_have_value("llama3_70b")
    assert page.js_errors == []


def test_times_show_in_the_readers_zone_with_its_name(
    browser: Any, live_server: Any, team: Any
) -> None:
    job = make_job(make_credential(team))
    context = browser.new_context(timezone_id="America/New_York", locale="en-US")
    page = context.new_page()
    login(page, live_server.url, "bob")
    page.goto(f"{live_server.url}/jobs/{job.pk}/")
    created = page.locator("#job-status dd time").first
    iso = created.get_attribute("datetime")
    local = datetime.fromisoformat(iso).astimezone(ZoneInfo("America/New_York"))
    zone = local.strftime("%Z")  # EST or EDT
    expect(created).to_have_text(f"{local:%Y-%m-%d %H:%M:%S} {zone}")
    assert "UTC" in created.get_attribute("title")
    context.close()


def test_a_new_token_copies_with_one_click(browser: Any, live_server: Any, team: Any) -> None:
    context = browser.new_context(permissions=["clipboard-read", "clipboard-write"])
    page = context.new_page()
    login(page, live_server.url, "bob")
    page.goto(f"{live_server.url}/account/tokens/")
    page.fill("#id_name", "notebook")
    page.click("button:has-text('Create token')")
    key = page.input_value("#new-token-key")
    page.get_by_role("button", name="Copy").click()
    expect(page.locator(".copy-status")).to_have_text("Copied.")
    assert page.evaluate("navigator.clipboard.readText()") == key
    context.close()
