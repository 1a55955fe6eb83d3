"""The usage charts in a real browser: drawn from weeks of history on three or
more providers, each image decoded and styled (its own CSS, under the page's
Content-Security-Policy), on the usage page and lazily on the home page, and
the new-job form's estimate updating as the user types."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from playwright.sync_api import expect

from dashboard.management.demo_history import seed_demo_history
from dashboard.models import Price

from ..conftest import make_credential
from .conftest import login

pytestmark = pytest.mark.django_db(transaction=True)

CHARTS = ("jobs", "failures", "latency", "spend")

#: Of an <img>, its decoded size and the colours drawn in it (read back through a canvas).
PAINTED_JS = """img => {
    const canvas = document.createElement('canvas');
    canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
    const ctx = canvas.getContext('2d');
    ctx.drawImage(img, 0, 0);
    const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    const colours = new Set();
    for (let i = 0; i < data.length; i += 4 * 97) {
        if (data[i + 3] > 200) colours.add(`${data[i]},${data[i + 1]},${data[i + 2]}`);
    }
    return {width: img.naturalWidth, colours: colours.size};
}"""


def csp_watch(page: Any) -> list[str]:
    seen: list[str] = []
    page.on(
        "console",
        lambda msg: seen.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    return seen


def test_the_charts_render_with_three_providers_and_no_csp_refusal(
    page: Any, live_server: Any, team: Any, alice: Any
) -> None:
    for provider in ("together", "openai", "lamini", "mymagic"):
        make_credential(team, provider)
    assert seed_demo_history(team, jobs=120, user=alice) == 120
    assert team.jobs.values("provider").distinct().count() >= 3
    refused = csp_watch(page)
    login(page, live_server.url, "alice")

    page.goto(f"{live_server.url}/usage/")

    for name in CHARTS:
        image = page.locator(f"#chart-{name} img")
        expect(image).to_be_visible()
        image.scroll_into_view_if_needed()
        page.wait_for_function(
            "img => img.complete && img.naturalWidth > 0", arg=image.element_handle()
        )
        painted = image.evaluate(PAINTED_JS)
        # Styled bars in several colours, not an unstyled black drawing.
        assert painted["width"] == 760 and painted["colours"] >= 3, (name, painted)
        assert image.get_attribute("alt")
        table = page.locator(f"#chart-{name} table.chart-numbers")
        assert table.locator("tbody tr").count() >= 1
    latency_rows = page.locator("#chart-latency tbody tr").count()
    assert latency_rows >= 3
    assert refused == [] and page.js_errors == []

    page.goto(f"{live_server.url}/")  # the home page loads the same panel once shown
    expect(page.locator("#usage-charts figure.chart img")).to_have_count(4)
    assert refused == [] and page.js_errors == []


def test_the_new_job_form_estimates_as_the_user_types(
    page: Any, live_server: Any, team: Any
) -> None:
    make_credential(team, "together", name="Together")
    Price.objects.create(
        team=team,
        provider="together",
        model="priced-model",
        input_per_mtok=Decimal("1000"),
        output_per_mtok=Decimal("1000"),
    )
    login(page, live_server.url, "bob")
    page.goto(f"{live_server.url}/jobs/new")
    estimate = page.locator("#job-estimate")
    expect(estimate).to_contain_text("to see what the job may cost")

    page.fill("#id_model", "priced-model")
    page.fill("#id_prompts", "x" * 400)
    expect(estimate).to_contain_text("about 100 input tokens")
    page.fill("#id_max_tokens", "100")
    expect(estimate).to_contain_text("Cost: up to $0.2000")
    page.fill("#id_model", "some-other-model")
    expect(estimate).to_contain_text("no price set")
    assert page.js_errors == []
