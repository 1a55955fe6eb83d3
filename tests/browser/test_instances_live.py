"""A Bytez model instance on the page: requested, loading, running, live, then
shut down with a click."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from dashboard.models import ModelInstance

from ..conftest import FakeClock, make_credential, use_clock
from .conftest import login, request_instance, wait_until

MODEL = "openai-community/gpt2"

pytestmark = pytest.mark.django_db(transaction=True)


def test_instance_goes_live_then_shuts_down(
    page: Any, live_server: Any, worker: Any, team: Any, sims: Any, sim_clock: FakeClock
) -> None:
    # The simulator's time moves only when the test says: the instance loads
    # until the page has shown it loading, however slow the machine.
    # (Times exact in binary: the simulator compares differences of its clock.)
    sim = use_clock(sims.get("bytez"), sim_clock, request_seconds=0.5, load_seconds=3.0)
    make_credential(team, "bytez", base_url=sim.base_url, name="Bytez demo")
    login(page, live_server.url, "alice")

    request_instance(page, live_server.url)
    page.evaluate("window.__sameDocument = true")
    row = page.locator("tr[data-instance]").first
    badge = row.locator(".badge[data-status]")

    wait_until(lambda: MODEL in sim.job_requests, "the instance to be requested")
    sim_clock.advance(sim.request_seconds)  # the request is granted: it loads
    expect(badge).to_have_attribute("data-status", "loading", timeout=15_000)
    wait_until(lambda: MODEL in sim.instances, "the load to start")
    sim_clock.advance(sim.load_seconds)
    expect(badge).to_have_attribute("data-status", "running", timeout=15_000)
    expect(row.locator(".instance-expires time")).to_contain_text("in ")
    assert page.evaluate("window.__sameDocument") is True  # it changed without a reload

    page.on("dialog", lambda dialog: dialog.accept())
    row.locator("button:has-text('Shut down')").click()
    expect(page.locator("tr[data-instance] .badge[data-status]").first).to_have_attribute(
        "data-status", "stopped"
    )
    assert ModelInstance.objects.get().status == "stopped"
    assert MODEL not in sim.instances
    assert page.js_errors == []
