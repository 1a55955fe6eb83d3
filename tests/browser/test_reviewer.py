"""A reviewer's day in a real browser: a 200-row job fits two screens, rows
open in a detail panel by click and by keyboard and are rated from it, and
the menu fits one line at 1280 px and still works at 390 px."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from dashboard.models import Job
from tests.conftest import finish_items, job_row, make_credential

from .conftest import login

pytestmark = pytest.mark.django_db(transaction=True)

SCREEN = {"width": 1280, "height": 800}
ROWS = 200


def big_job(team: Any) -> Job:
    prompts = [f"Question {i}: " + "explain the thing in detail " * 12 for i in range(ROWS)]
    outputs = [f"Answer {i}. " + "Here is a long answer that goes on. " * 40 for i in range(ROWS)]
    # Written as a worker leaves a finished job, without one: the browser
    # tests' qcluster would otherwise take a job made by job_create and run
    # it while its outputs are written (its events made the page taller).
    return job_row(team, prompts=prompts, outputs=outputs)


def new_page(browser: Any, viewport: dict[str, int]) -> Any:
    context = browser.new_context(viewport=viewport)
    context.set_default_timeout(20_000)
    page = context.new_page()
    page.js_errors = []
    page.on("pageerror", lambda exc: page.js_errors.append(str(exc)))
    return page


def test_a_200_row_job_is_at_most_two_screens_tall(
    browser: Any, live_server: Any, team: Any
) -> None:
    job = big_job(team)
    page = new_page(browser, SCREEN)
    login(page, live_server.url, "bob")
    page.goto(live_server.url + job.get_absolute_url())
    expect(page.locator("#job-items tr[data-review-item]")).to_have_count(50)  # one page
    height = page.evaluate("document.scrollingElement.scrollHeight")
    print(f"job page with {ROWS} rows at 1280x800: scrollHeight {height} px")
    assert height <= 2 * SCREEN["height"], height
    row = page.locator("#item-0")
    assert row.evaluate("e => e.getBoundingClientRect().height") <= 60  # two lines at most
    assert page.js_errors == []
    page.context.close()


def test_a_row_opens_by_click_and_by_keyboard_and_is_rated(
    browser: Any, live_server: Any, team: Any
) -> None:
    job = big_job(team)
    page = new_page(browser, SCREEN)
    login(page, live_server.url, "bob")
    page.goto(live_server.url + job.get_absolute_url())
    panel = page.locator("#item-detail")
    expect(panel).to_have_count(0)

    page.locator("#item-3 td").nth(1).click()
    expect(panel).to_be_visible()
    expect(panel.locator("h2")).to_contain_text("Row 4")
    expect(panel).to_contain_text("Here is a long answer that goes on. " * 40)
    expect(page.locator("[data-review-announce]")).to_have_text("Row 4 of 200 opened")
    assert "row=3" in page.url
    page.keyboard.press("Escape")
    expect(panel).to_have_count(0)
    expect(page.locator("#item-3")).to_be_focused()
    assert "row=" not in page.url

    page.reload()
    page.keyboard.press("j")
    page.keyboard.press("j")
    expect(page.locator("#item-1")).to_be_focused()
    page.keyboard.press("Enter")
    expect(panel.locator("h2")).to_contain_text("Row 2")
    expect(page.locator("[data-review-announce]")).to_have_text("Row 2 of 200 opened")
    page.keyboard.press("2")  # thumbs up
    up = panel.locator("button[title='Thumbs up']")
    expect(up).to_have_attribute("aria-pressed", "true")
    expect(up).to_contain_text("1")
    expect(panel.locator("ul.ratings")).to_contain_text("bob")
    page.keyboard.press("j")  # the open panel follows the current row
    expect(panel.locator("h2")).to_contain_text("Row 3")
    page.keyboard.press("Escape")
    expect(panel).to_have_count(0)

    # A deep link opens the panel; the rating given above is there.
    page.goto(live_server.url + job.get_absolute_url() + "?row=1")
    expect(panel.locator("button[title='Thumbs up']")).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#item-1")).to_have_class("item-completed current")
    assert page.js_errors == []
    page.context.close()


def test_the_menu_is_one_line_at_1280_and_usable_at_390(
    browser: Any, live_server: Any, team: Any
) -> None:
    page = new_page(browser, SCREEN)
    login(page, live_server.url, "alice")  # a team admin: every link of the menus
    tops = page.eval_on_selector_all(
        "#site-menu nav a, #site-menu .menu-group > summary",
        "els => els.map(e => Math.round(e.getBoundingClientRect().top))",
    )
    assert len(tops) == 7 and max(tops) - min(tops) <= 4, tops
    nav_tops = page.eval_on_selector_all("#site-menu nav a", "els => els.map(e => e.offsetTop)")
    assert len(set(nav_tops)) == 1, nav_tops
    assert page.locator(".topbar").evaluate("e => e.getBoundingClientRect().height") < 60

    team_menu = page.locator(".menu-group").first
    expect(team_menu.get_by_role("link", name="Usage")).to_be_hidden()
    team_menu.locator("summary").click()
    expect(team_menu.get_by_role("link", name="Webhooks")).to_be_visible()
    page.keyboard.press("Escape")
    expect(team_menu.get_by_role("link", name="Webhooks")).to_be_hidden()
    expect(team_menu.locator("summary")).to_be_focused()
    team_menu.locator("summary").click()
    team_menu.get_by_role("link", name="Usage").click()
    page.wait_for_url(f"{live_server.url}{reverse('usage')}")
    expect(page.locator("#site-menu a[aria-current=page]")).to_have_text("Usage")
    expect(team_menu.locator("summary")).to_have_class("has-current")
    page.context.close()

    phone = new_page(browser, {"width": 390, "height": 844})
    login(phone, live_server.url, "alice")
    phone.locator(".nav-toggle").click()
    for name in ("Jobs", "Comparisons", "Usage", "Team", "API tokens"):
        expect(
            phone.locator("#site-menu").get_by_role("link", name=name, exact=True)
        ).to_be_visible()
    assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    phone.locator("#site-menu").get_by_role("link", name="Credentials").click()
    phone.wait_for_url(f"{live_server.url}{reverse('credential_list')}")
    assert phone.js_errors == []
    phone.context.close()


def finished_comparison(team: Any, user: Any) -> Any:
    from dashboard.compare.services import Target, comparison_create
    from dashboard.datasets.parsing import Limits, read_records
    from dashboard.datasets.services import dataset_create, inputs_from_dataset
    from providers import JobSpec

    rows = read_records([{"q": f"question {i}"} for i in range(3)], Limits.from_settings())
    dataset = dataset_create(team=team, name="review set", rows=rows, user=user)
    inputs = inputs_from_dataset(dataset, "Answer {q}")
    comparison = comparison_create(
        team=team,
        name="two models",
        user=user,
        inputs=inputs,
        targets=[
            Target(make_credential(team), JobSpec(model=f"m{i}", prompts=inputs.prompts))
            for i in range(2)
        ],
    )
    for number, job in enumerate(comparison.jobs.order_by("id"), start=1):
        finish_items(job, [f"T{number} answer {i}. " + "More words here. " * 60 for i in range(3)])
        Job.objects.filter(pk=job.pk).update(status="completed")
    return comparison


def test_a_grid_cell_opens_by_click_and_by_keyboard_and_is_rated(
    browser: Any, live_server: Any, team: Any, alice: Any
) -> None:
    comparison = finished_comparison(team, alice)
    first, second = comparison.jobs.order_by("id")
    page = new_page(browser, SCREEN)
    login(page, live_server.url, "bob")
    page.goto(live_server.url + comparison.get_absolute_url())
    panel = page.locator("#cell-detail")
    whole = "T2 answer 1. " + "More words here. " * 60
    assert whole.strip() not in page.locator(f"#cell-{second.pk}-1").inner_text()  # clipped

    page.locator(f"#cell-{second.pk}-1 pre.output").click()
    expect(panel).to_be_visible()
    expect(panel.locator("pre.detail-text").nth(1)).to_have_text(whole)
    expect(page.locator("[data-review-announce]")).to_have_text("Row 2 of 3, T2 opened")
    page.keyboard.press("Escape")
    expect(panel).to_have_count(0)
    expect(page.locator(f"#cell-{second.pk}-1")).to_be_focused()

    page.keyboard.press("k")  # up the same target's column
    expect(page.locator(f"#cell-{second.pk}-0")).to_be_focused()
    page.keyboard.press("h")  # across, to T1
    expect(page.locator(f"#cell-{first.pk}-0")).to_be_focused()
    page.keyboard.press("Enter")
    expect(panel.locator("h2")).to_contain_text("Row 1 · T1")
    page.keyboard.press("2")
    expect(panel.locator("button.vote-up")).to_have_attribute("aria-pressed", "true")
    expect(panel.locator("ul.ratings")).to_contain_text("bob")
    # The grid's cell took the rating too (out of band).
    expect(page.locator(f"#cell-{first.pk}-0 button.vote-up")).to_have_attribute(
        "aria-pressed", "true"
    )
    page.keyboard.press("3")
    expect(panel.locator("button.vote-best")).to_have_attribute("aria-pressed", "true")
    page.keyboard.press("Escape")
    expect(panel).to_have_count(0)
    assert page.js_errors == []
    page.context.close()
