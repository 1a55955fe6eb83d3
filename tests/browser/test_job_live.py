"""What only a browser shows: a job going live from submit to result, without a
reload, and untrusted output staying text."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from providers.simulators import completion_text

from ..conftest import make_credential
from .conftest import login, submit_job

pytestmark = pytest.mark.django_db(transaction=True)


def submit(page: Any, base_url: str, prompt: str, model: str = "demo-model") -> None:
    page.goto(f"{base_url}/jobs/new")
    page.fill("#id_model", model)
    page.fill("#id_prompts", prompt)
    submit_job(page)


def test_submit_and_watch_it_complete_without_reload(
    page: Any, live_server: Any, worker: Any, team: Any, sims: Any, hold: Any
) -> None:
    sim = sims.get("together")
    answer = hold(sim, "^/inference$")  # the job stays unfinished until the page is seen
    make_credential(team, base_url=sim.base_url, name="Together demo")
    login(page, live_server.url, "bob")

    submit(page, live_server.url, "The capital of France is")
    page.evaluate("window.__sameDocument = true")
    badge = page.locator("#job-status .badge[data-status]")
    first = badge.get_attribute("data-status")
    assert first in ("pending", "queued", "running")

    answer.release()
    expect(badge).to_have_attribute("data-status", "completed", timeout=15_000)
    expect(page.locator("#job-outputs pre.output")).to_have_text(
        completion_text("demo-model", "The capital of France is").strip()
    )
    expect(page.locator("#job-timeline")).to_contain_text("Completed: 1 of 1 prompt(s) completed.")
    assert page.evaluate("window.__sameDocument") is True  # no navigation happened
    assert page.js_errors == []


def test_model_output_html_is_shown_as_text(
    page: Any, live_server: Any, worker: Any, team: Any, sims: Any
) -> None:
    sim = sims.get("together")
    make_credential(team, base_url=sim.base_url, name="Together demo")
    login(page, live_server.url, "bob")
    payload = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'

    submit(page, live_server.url, payload)
    expect(page.locator("#job-status .badge[data-status]")).to_have_attribute(
        "data-status", "completed"
    )

    output = page.locator("#job-outputs pre.output")
    expect(output).to_contain_text(payload)  # the markup is visible as text
    assert page.locator("#job-outputs img").count() == 0
    assert page.evaluate("window.__xss") is None
    page.reload()
    expect(page.locator("#job-outputs pre.output")).to_contain_text(payload)
    assert page.evaluate("window.__xss") is None


def test_provider_error_is_readable_on_the_page(
    page: Any, live_server: Any, worker: Any, team: Any, sims: Any
) -> None:
    sim = sims.get("together")
    make_credential(team, base_url=sim.base_url, name="Bad key", secret="wrong")
    login(page, live_server.url, "bob")
    submit(page, live_server.url, "hello")
    expect(page.locator("#job-status .badge[data-status]")).to_have_attribute(
        "data-status", "failed"
    )
    expect(page.locator("#job-status .job-error")).to_contain_text("authentication failed")


def polls_reach(page: Any, polls: list[str], count: int, timeout_ms: int = 15_000) -> int:
    """How many polls were seen once ``count`` were, or the time ran out: a
    loaded machine may space the page's 1 s polls further apart."""
    waited = 0
    while len(polls) < count and waited < timeout_ms:
        page.wait_for_timeout(100)
        waited += 100
    return len(polls)


def test_polling_pauses_while_the_tab_is_hidden(
    page: Any, live_server: Any, team: Any, sims: Any
) -> None:
    """A job held by some other worker stays running, so the page keeps polling;
    while the document is hidden, no poll request goes out."""
    from datetime import timedelta

    from django.utils import timezone

    from dashboard.models import Job

    credential = make_credential(team, base_url=sims.get("together").base_url)
    job = Job.objects.create(  # saved directly: no worker is nudged and none may take it
        team=team,
        credential=credential,
        credential_name=credential.name,
        provider="together",
        model="m",
        spec={"model": "m", "prompts": ["p"]},
        status="running",
        progress_total=1,
        lease_owner="elsewhere",
        lease_expires_at=timezone.now() + timedelta(hours=1),
    )
    login(page, live_server.url, "bob")
    polls: list[str] = []
    page.on(
        "request", lambda request: polls.append(request.url) if "/live" in request.url else None
    )
    page.goto(f"{live_server.url}/jobs/{job.pk}/")
    assert polls_reach(page, polls, 2) >= 2  # polling while visible (1 s apart)
    page.evaluate(
        "Object.defineProperty(document, 'hidden', {configurable: true, get: () => true});"
        "document.dispatchEvent(new Event('visibilitychange'))"
    )
    polls.clear()
    # Count the poll ticks that came while hidden (app.js cancels each one on
    # htmx:confirm): two ticks, two chances to send, and no request went.
    page.evaluate(
        "window.__hiddenTicks = 0;"
        "document.addEventListener('htmx:confirm', (event) => {"
        "  if (document.hidden && event.detail.elt.hasAttribute('data-poll'))"
        "    window.__hiddenTicks += 1; })"
    )
    page.wait_for_function("() => window.__hiddenTicks >= 2", timeout=15_000)
    assert polls == []
    page.evaluate(
        "Object.defineProperty(document, 'hidden', {configurable: true, get: () => false})"
    )
    assert polls_reach(page, polls, 1) >= 1  # and again once visible
