"""Live logs in the browser: GridRepublic's growing log and Bytez's streamed
output appear in parts before the job completes."""

from __future__ import annotations

import time
from typing import Any

import pytest
from playwright.sync_api import expect

from providers import get_provider_class
from providers.simulators import completion_text

from ..conftest import make_credential
from .conftest import login
from .test_job_live import submit

pytestmark = pytest.mark.django_db(transaction=True)


def watch_log(page: Any, selector: str, seconds: float = 20) -> list[str]:
    """The distinct texts of a log block seen while the job was not yet done."""
    seen: list[str] = []
    badge = page.locator("#job-status .badge[data-status]")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status = badge.get_attribute("data-status")
        text = page.locator(selector).inner_text()
        if status == "completed":
            break
        if text and (not seen or seen[-1] != text):
            seen.append(text)
        page.wait_for_timeout(150)
    return seen


def test_gridrepublic_log_grows_on_the_page(
    page: Any, live_server: Any, worker: Any, team: Any, sims: Any
) -> None:
    sim = sims.get("gridrepublic")
    sim.step_seconds = 1.5
    make_credential(
        team,
        "gridrepublic",
        base_url=sim.base_url,
        name="Grid",
        options={"poll_interval_seconds": 0.3},
    )
    login(page, live_server.url, "bob")
    submit(page, live_server.url, "Why is the sky blue?", model="gemma:2b")

    partials = watch_log(page, "#job-log-all")

    final = completion_text("gemma:2b", "Why is the sky blue?")
    assert len(partials) >= 2, partials
    assert all(final.strip().startswith(p.strip()) for p in partials)
    # It grew: pieces of it showed before the job ended (the last piece and the
    # status come in the same poll round).
    assert sum(len(p.strip()) < len(final.strip()) for p in partials) >= 2, partials
    expect(page.locator("#job-status .badge[data-status]")).to_have_attribute(
        "data-status", "completed"
    )
    expect(page.locator("#job-log-all")).to_have_text(final)


def test_bytez_stream_shows_partial_output(
    page: Any, live_server: Any, worker: Any, team: Any, sims: Any
) -> None:
    sim = sims.get("bytez")
    sim.stream_chunk_delay = 0.7  # slow enough to be seen in pieces on a loaded machine
    get_provider_class("bytez")(secret="sim-secret-key", base_url=sim.base_url).load_model(
        "openai-community/gpt2"
    )
    time.sleep(sim.load_seconds + 0.1)
    make_credential(team, "bytez", base_url=sim.base_url, name="Bytez")
    login(page, live_server.url, "bob")
    page.goto(f"{live_server.url}/jobs/new")
    page.fill("#id_model", "openai-community/gpt2")
    page.fill("#id_prompts", "Once upon a time there was a")
    page.check("#id_stream")
    page.click("button:has-text('Submit job')")
    page.wait_for_url("**/jobs/*/")

    partials = watch_log(page, "#job-log-all")

    final = completion_text("openai-community/gpt2", "Once upon a time there was a")
    # Part of the answer was on the page before the job ended (the whole answer
    # may show a moment before the status does: both come in the last flush).
    assert partials and all(final.strip().startswith(p.strip()) for p in partials), partials
    assert any(len(p.strip()) < len(final.strip()) for p in partials), partials
    expect(page.locator("#job-status .badge[data-status]")).to_have_attribute(
        "data-status", "completed"
    )
    expect(page.locator("#job-outputs pre.output")).to_have_text(final.strip())
