"""Shutting an instance down from the page: the click returns at once, the row
says "Stopping…" while the worker talks to the provider, then "stopped",
without a reload."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from dashboard.models import ModelInstance

from ..conftest import make_credential
from .conftest import login, request_instance

pytestmark = pytest.mark.django_db(transaction=True)


def test_stopping_is_shown_live_until_stopped(
    page: Any, live_server: Any, worker: Any, team: Any, sims: Any, hold: Any
) -> None:
    sim = sims.get("bytez")
    sim.request_seconds, sim.load_seconds = 0.2, 1.0
    make_credential(team, "bytez", base_url=sim.base_url, name="Bytez demo")
    login(page, live_server.url, "alice")

    request_instance(page, live_server.url)
    row = page.locator("tr[data-instance]").first
    expect(row.locator(".badge[data-status]")).to_have_attribute(
        "data-status", "running", timeout=15_000
    )
    # The provider takes its time to shut it down (it answers only when the
    # test lets it): the page must not wait on it.
    delete = hold(sim, "^/model/delete$")
    page.evaluate("window.__sameDocument = true")
    page.on("dialog", lambda dialog: dialog.accept())
    row.locator("button:has-text('Shut down')").click()
    page.wait_for_url("**/instances/")
    badge = page.locator("tr[data-instance] .badge[data-status]").first
    expect(badge).to_have_attribute("data-status", "stopping", timeout=15_000)
    expect(badge).to_have_text("Stopping…")
    expect(page.locator("tr[data-instance] button:has-text('Shut down')")).to_have_count(0)
    assert "openai-community/gpt2" in sim.instances  # the provider has not answered yet
    page.evaluate("window.__sameDocument = true")
    delete.release()
    expect(badge).to_have_attribute("data-status", "stopped", timeout=15_000)
    assert page.evaluate("window.__sameDocument") is True  # it changed without a reload
    assert ModelInstance.objects.get().status == "stopped"
    assert sim.count("POST /model/delete") == 1  # the provider was asked, once
    assert "openai-community/gpt2" not in sim.instances
    assert page.js_errors == []
