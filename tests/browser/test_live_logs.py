"""Live logs in the browser: GridRepublic's growing log and Bytez's streamed
output appear in parts before the job completes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from providers import get_provider_class
from providers.simulators import completion_text

from ..conftest import FakeClock, make_credential, use_clock
from .conftest import login, submit_job, wait_until
from .test_job_live import submit

pytestmark = pytest.mark.django_db(transaction=True)


def shows_unfinished(page: Any, selector: str, text: str) -> str:
    """Wait until the log block shows ``text`` while the job is not done; what it shows."""
    log = page.locator(selector)
    expect(log).to_have_text(text, timeout=15_000)
    status = page.locator("#job-status .badge[data-status]").get_attribute("data-status")
    assert status != "completed", f"{text!r} showed only once the job had completed"
    return log.inner_text()


def test_gridrepublic_log_grows_on_the_page(
    page: Any, live_server: Any, worker: Any, team: Any, sims: Any, sim_clock: FakeClock
) -> None:
    # The simulator's time moves only when the test says: each piece of the
    # log lasts until the page has shown it.
    step = 1.0
    sim = use_clock(sims.get("gridrepublic"), sim_clock, step_seconds=step)
    make_credential(
        team,
        "gridrepublic",
        base_url=sim.base_url,
        name="Grid",
        options={"poll_interval_seconds": 0.3},
    )
    login(page, live_server.url, "bob")
    submit(page, live_server.url, "Why is the sky blue?", model="gemma:2b")
    wait_until(lambda: sim.submissions == 1, "the job to reach GridRepublic")
    started = sim_clock.now  # the remote job's creation

    final = completion_text("gemma:2b", "Why is the sky blue?")
    partials = []
    for ran in (0.5, 1.0, 1.5):  # running: the log is a prefix proportional to the time run
        sim_clock.now = started + step + ran
        prefix = final[: int(len(final) * ran / (2 * step))]
        partials.append(shows_unfinished(page, "#job-log-all", prefix.strip()))
    sim_clock.now = started + 3 * step  # finished

    expect(page.locator("#job-status .badge[data-status]")).to_have_attribute(
        "data-status", "completed", timeout=15_000
    )
    expect(page.locator("#job-log-all")).to_have_text(final)
    # It grew: three pieces, each longer than the last and short of the whole.
    assert all(final.strip().startswith(p.strip()) for p in partials), partials
    lengths = [len(p.strip()) for p in partials]
    assert lengths == sorted(set(lengths)) and lengths[-1] < len(final.strip()), partials


def test_bytez_stream_shows_partial_output(
    page: Any,
    live_server: Any,
    worker: Any,
    team: Any,
    sims: Any,
    sim_clock: FakeClock,
    monkeypatch: Any,
) -> None:
    sim = use_clock(sims.get("bytez"), sim_clock)
    get_provider_class("bytez")(secret="sim-secret-key", base_url=sim.base_url).load_model(
        "openai-community/gpt2"
    )
    sim_clock.advance(sim.load_seconds)  # loaded: no wait
    # The stream sends its first piece, then the rest only once the page has shown it.
    rest = threading.Event()
    chunks = sim._chunks

    def first_then_the_rest(text: str) -> Iterator[str]:
        pieces = chunks(text)
        yield next(pieces)
        rest.wait(60)
        yield from pieces

    monkeypatch.setattr(sim, "_chunks", first_then_the_rest)
    make_credential(team, "bytez", base_url=sim.base_url, name="Bytez")
    login(page, live_server.url, "bob")
    page.goto(f"{live_server.url}/jobs/new")
    page.fill("#id_model", "openai-community/gpt2")
    page.fill("#id_prompts", "Once upon a time there was a")
    page.check("#id_stream")
    submit_job(page)

    final = completion_text("openai-community/gpt2", "Once upon a time there was a")
    try:
        first = next(chunks(final))
        # Part of the answer is on the page before the job ends.
        partial = shows_unfinished(page, "#job-log-all", first.strip())
    finally:
        rest.set()
    assert final.strip().startswith(partial.strip()) and len(partial.strip()) < len(final.strip())
    expect(page.locator("#job-status .badge[data-status]")).to_have_attribute(
        "data-status", "completed", timeout=15_000
    )
    expect(page.locator("#job-outputs pre.output")).to_have_text(final.strip())
