"""A Bytez model instance on the page: requested, loading, running, live, then
shut down with a click."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from dashboard.models import ModelInstance

from ..conftest import make_credential
from .conftest import login, request_instance

pytestmark = pytest.mark.django_db(transaction=True)


def test_instance_goes_live_then_shuts_down(
    page: Any, live_server: Any, worker: Any, team: Any, sims: Any
) -> None:
    sim = sims.get("bytez")
    sim.request_seconds, sim.load_seconds = 0.3, 3.0
    make_credential(team, "bytez", base_url=sim.base_url, name="Bytez demo")
    login(page, live_server.url, "alice")

    request_instance(page, live_server.url)
    page.evaluate("window.__sameDocument = true")
    row = page.locator("tr[data-instance]").first
    badge = row.locator(".badge[data-status]")

    expect(badge).to_have_attribute("data-status", "loading", timeout=15_000)
    expect(badge).to_have_attribute("data-status", "running", timeout=15_000)
    expect(row.locator(".instance-expires time")).to_contain_text("in ")
    assert page.evaluate("window.__sameDocument") is True  # it changed without a reload

    page.on("dialog", lambda dialog: dialog.accept())
    row.locator("button:has-text('Shut down')").click()
    expect(page.locator("tr[data-instance] .badge[data-status]").first).to_have_attribute(
        "data-status", "stopped"
    )
    assert ModelInstance.objects.get().status == "stopped"
    assert "openai-community/gpt2" not in sim.instances
    assert page.js_errors == []
