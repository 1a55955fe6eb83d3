"""Every page a person navigates to, on a 390 px phone and through axe-core, in
the light and the dark colour scheme; and the narrow-screen menu.

The walk enumerates the URL patterns from the resolver, so a new page is
checked the day it is added: it is reversed with real object ids, probed with
a GET, and checked unless it is the API, the Django admin, POST-only, not HTML
(exports, health) or an htmx fragment. A pattern the walk cannot reach fails
the test with a message that says why.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from .conftest import login
from .helpers_layout import (
    DESKTOP,
    OVERFLOWING_JS,
    PHONE,
    SEVERE,
    LayoutData,
    Route,
    build_layout_data,
    describe,
    run_axe,
    url_routes,
)

pytestmark = pytest.mark.django_db(transaction=True)

#: Set LAYOUT_SCREENSHOTS=/some/dir to keep a full-page screenshot of every page in each scheme.
SCREENSHOTS = (
    Path(os.environ["LAYOUT_SCREENSHOTS"]) if os.environ.get("LAYOUT_SCREENSHOTS") else None
)

#: Patterns that are not pages, by where they are mounted.
NOT_PAGES = {"api/": "JSON API", "admin/": "Django admin (its own pages)"}

#: The pages the walk must find; if enumeration ever misses one, that is a bug in the walk.
MUST_CHECK = {
    "login",
    "home",
    "job_list",
    "job_new",
    "job_detail",
    "credential_list",
    "model_catalog",
    "instance_list",
    "team",
    "audit",
    "token_list",
    "dataset_list",
    "dataset_detail",
    "comparison_list",
    "comparison_new",
    "comparison_detail",
    "usage",
    "webhook_list",
    "webhook_detail",
}


def objects_for(route: Route, data: LayoutData) -> list[tuple[str, dict[str, Any]]]:
    """Real objects for a pattern's keyword arguments, chosen by where it is mounted."""
    by_prefix = [
        ("jobs/", [(key, job.pk) for key, job in data.jobs.items()]),
        ("credentials/", [(c.provider, c.pk) for c in data.credentials]),
        ("instances/", [(i.status, i.pk) for i in data.instances]),
        ("team/members/", [(m.user.username, m.pk) for m in data.memberships]),
        ("account/tokens/", [(t.name, t.pk) for t in data.tokens]),
        ("datasets/", [("dataset", d.pk) for d in data.datasets]),
        ("comparisons/", [("comparison", c.pk) for c in data.comparisons]),
        ("usage/prices/", [(p.model, p.pk) for p in data.prices]),
        ("webhooks/deliveries/", [(d.status, d.pk) for d in data.deliveries]),
        ("webhooks/", [(w.url[:20], w.pk) for w in data.webhooks]),
    ]
    extra: dict[str, Any] = {}
    if route.params == ("pk", "fmt"):
        extra = {"fmt": "csv"}  # an export: probed, found not to be a page
    elif route.params == ("pk", "index"):
        extra = {"index": 0}  # a job's row: the page with its detail panel open
    elif route.params == ("pk", "index", "target"):
        extra = {"index": 0, "target": 1}  # a comparison's cell, its panel open
    elif route.params == ("pk", "number"):
        extra = {"number": 0}  # a batch's resubmit: a POST, probed, found not to be a page
    elif route.params != ("pk",):
        return []
    for prefix, objects in by_prefix:
        if route.route.lstrip("^").startswith(prefix):
            return [(label, {"pk": pk, **extra}) for label, pk in objects]
    return []


@dataclass
class Target:
    label: str
    url: str
    anonymous: bool = False
    status: int = 200
    then: Callable[[Any], None] | None = None  # run after loading: a form submitted, say


@dataclass
class Plan:
    targets: list[Target] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    not_pages: dict[str, str] = field(default_factory=dict)  # whole mounts: "api/*"
    problems: list[str] = field(default_factory=list)


def plan_walk(base: str, signed_in: Any, anonymous: Any, data: LayoutData) -> Plan:
    """Every URL pattern, reversed and probed with a GET; what to check and what not."""
    plan = Plan()
    for route in url_routes():
        mounted = route.route.lstrip("^")
        reason = next((why for prefix, why in NOT_PAGES.items() if mounted.startswith(prefix)), "")
        if reason:
            plan.not_pages[f"{mounted.split('/')[0]}/*"] = reason
            continue
        if route.name is None:
            plan.problems.append(
                f"{route.route}: an unnamed URL pattern; name it to have it walked"
            )
            continue
        if route.params:
            variants = objects_for(route, data)
            if not variants:
                plan.problems.append(
                    f"{route.name} ({route.route}) takes {route.params} and the walk knows no "
                    "objects for it: add its prefix to objects_for() in test_layout.py"
                )
                continue
        else:
            variants = [("", {})]
        for label, kwargs in variants:
            url = reverse(route.name, kwargs=kwargs)
            name = f"{route.name} ({label})" if label else route.name
            answer = signed_in.request.get(base + url, max_redirects=0)
            kind = answer.headers.get("content-type", "")
            if answer.status == 405:
                plan.skipped.append(f"{route.name:28} POST only (GET answers 405)")
                break
            if 300 <= answer.status < 400:
                again = anonymous.request.get(base + url, max_redirects=0)
                if again.status == 200 and "<html" in again.text().lower():
                    plan.targets.append(Target(name, url, anonymous=True))
                    continue
                plan.problems.append(
                    f"{name} {url}: redirects ({answer.status} to "
                    f"{answer.headers.get('location')}) signed in, and signed out answers "
                    f"{again.status}: the walk cannot reach it"
                )
                continue
            if answer.status >= 400:
                plan.problems.append(f"{name} {url}: GET answers {answer.status}")
                continue
            if not kind.startswith("text/html"):
                plan.skipped.append(f"{route.name:28} not a page ({kind.split(';')[0]})")
                break
            if "<html" not in answer.text().lower():
                plan.skipped.append(f"{route.name:28} htmx fragment (no <html>)")
                break
            plan.targets.append(Target(name, url))
    found = {t.label.split(" ")[0] for t in plan.targets}
    for name in sorted(MUST_CHECK - found):
        plan.problems.append(f"{name}: expected among the pages but the walk did not check it")
    return plan


def extra_targets(data: LayoutData) -> list[Target]:
    """States a person meets that a bare GET does not show."""

    def create_token(page: Any) -> None:
        page.fill("#id_name", "a notebook with a rather long descriptive name")
        page.click("button:has-text('Create token')")
        page.wait_for_selector("#new-token")

    def submit_empty(button: str) -> Callable[[Any], None]:
        def submit(page: Any) -> None:
            page.click(f"button:has-text('{button}')")
            page.wait_for_selector(".has-error, .error")

        return submit

    def add_webhook(page: Any) -> None:
        page.fill("#id_url", "http://127.0.0.1:9/a-receiver-with-a-rather-long-path/" + "x" * 80)
        page.click("button:has-text('Add webhook')")
        page.wait_for_selector("#new-webhook")

    structured = data.jobs["structured"].pk
    bytez = next(c for c in data.credentials if c.provider == "bytez")
    return [
        Target(
            "job_list (filters applied)",
            reverse("job_list") + "?status=failed&provider=together&date_from=2020-01-01&q=bonjour",
        ),
        Target("job_list (a filter in error)", reverse("job_list") + "?date_from=yesterday"),
        Target("job_new (cloned)", reverse("job_new") + f"?clone={structured}"),
        Target("job_new (errors)", reverse("job_new"), then=submit_empty("Submit job")),
        Target("credential_list (errors)", reverse("credential_list"), then=submit_empty("Save")),
        Target(
            "comparison_new (errors)",
            reverse("comparison_new"),
            then=submit_empty("Start comparison"),
        ),
        Target("model_catalog (searched)", reverse("model_catalog", args=[bytez.pk]) + "?q=phi"),
        Target("token_list (new token shown)", reverse("token_list"), then=create_token),
        Target("webhook_list (new secret shown)", reverse("webhook_list"), then=add_webhook),
        Target("webhook_list (errors)", reverse("webhook_list"), then=submit_empty("Add webhook")),
        Target("usage (errors)", reverse("usage"), then=submit_empty("Save price")),
        Target("404 page", reverse("job_detail", args=[999999]), status=404),
    ]


def freeze_polling(page: Any) -> None:
    """app.js skips a poll while the document is hidden: keep the DOM still for
    axe, once a poll already on its way has been answered and swapped in."""
    page.evaluate(
        "Object.defineProperty(document, 'hidden', {configurable: true, get: () => true})"
    )
    page.wait_for_function(
        "() => !document.querySelector('.htmx-request, .htmx-swapping, .htmx-settling, .htmx-added')"
    )


def check_target(page: Any, base: str, target: Target, csp: list[str]) -> tuple[list[str], str]:
    """Load one page at phone width; its failures and a summary line."""
    failures: list[str] = []
    csp.clear()
    response = page.goto(base + target.url)
    if response is None or response.status != target.status:
        got = response.status if response else "no response"
        return [f"{target.label} {target.url}: answered {got}, expected {target.status}"], ""
    if target.then:
        target.then(page)
    freeze_polling(page)

    def fits(state: str) -> None:
        width = page.evaluate("document.documentElement.scrollWidth")
        inner = page.evaluate("window.innerWidth")
        if width > inner:
            culprits = ", ".join(page.evaluate(OVERFLOWING_JS))
            failures.append(
                f"{target.label} {target.url} ({state}): the page is {width}px wide in a "
                f"{inner}px window; sticking out: {culprits}"
            )

    fits("menu closed")
    toggle = page.locator(".nav-toggle")
    if toggle.count() and toggle.is_visible():
        toggle.click()
        fits("menu open")
    counts = []
    backgrounds = set()
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        backgrounds.add(page.evaluate("getComputedStyle(document.body).backgroundColor"))
        fits(f"{scheme} scheme")
        if SCREENSHOTS:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            slug = "".join(c if c.isalnum() else "-" for c in target.label).strip("-")
            page.screenshot(path=str(SCREENSHOTS / f"{slug}-{scheme}.png"), full_page=True)
        violations = run_axe(page)
        severe = [v for v in violations if v["impact"] in SEVERE]
        if severe:
            failures.append(
                f"{target.label} {target.url} ({scheme}): axe-core found "
                f"{len(severe)} serious or critical violation(s):\n{describe(severe)}"
            )
        minor = ",".join(sorted(f"{v['id']}({v['impact']})" for v in violations if v not in severe))
        counts.append(f"{scheme} {len(severe)}" + (f" [{minor}]" if minor else ""))
    if len(backgrounds) != 2:
        failures.append(f"{target.label} {target.url}: the dark scheme changes nothing")
    if csp:
        failures.append(f"{target.label} {target.url}: CSP violations: {csp}")
    if page.js_errors:
        failures.append(f"{target.label} {target.url}: script errors: {page.js_errors}")
        page.js_errors.clear()
    page.emulate_media(color_scheme="light")
    who = "signed out" if target.anonymous else "signed in"
    return failures, f"{target.label:36} {target.url:40} {who:10} {'  '.join(counts)}"


def new_page(browser: Any, viewport: dict[str, int], **options: Any) -> Any:
    context = browser.new_context(viewport=viewport, **options)
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.js_errors = []
    page.on("pageerror", lambda exc: page.js_errors.append(str(exc)))
    return page


def test_every_page_fits_a_phone_and_passes_axe_in_both_schemes(
    browser: Any, live_server: Any, capsys: Any
) -> None:
    data = build_layout_data()
    base = live_server.url
    page = new_page(browser, PHONE)
    anonymous = new_page(browser, PHONE)
    csp: list[str] = []
    for p in (page, anonymous):
        p.on(
            "console",
            lambda msg: csp.append(msg.text) if "Content Security Policy" in msg.text else None,
        )
    login(page, base, data.username)

    plan = plan_walk(base, page.context, anonymous.context, data)
    targets = plan.targets + extra_targets(data)
    failures = list(plan.problems)
    lines = []
    for target in targets:
        problems, line = check_target(anonymous if target.anonymous else page, base, target, csp)
        failures += problems
        lines.append(("FAIL " if problems else "ok   ") + (line or target.label))

    summary = [
        f"Layout and accessibility walk at {PHONE['width']}x{PHONE['height']}:",
        f"     {'page':36} {'url':40} {'as':10} serious+critical [other axe findings]",
        *lines,
        f"Not pages ({len(plan.skipped)} patterns, and whole mounts):",
        *(f"  {line}" for line in plan.skipped),
        *(f"  {mount:28} {why}" for mount, why in plan.not_pages.items()),
        f"{len(targets)} pages checked, {len(failures)} problem(s).",
    ]
    with capsys.disabled():  # the summary shows without -s too
        print("\n" + "\n".join(summary))
    page.context.close()
    anonymous.context.close()
    assert not failures, "\n\n".join(failures)


def test_narrow_menu_toggles_and_reaches_every_section(browser: Any, live_server: Any) -> None:
    data = build_layout_data()
    base = live_server.url
    page = new_page(browser, PHONE)
    login(page, base, data.username)
    toggle = page.locator(".nav-toggle")
    menu = page.locator("#site-menu")
    expect(toggle).to_be_visible()
    expect(toggle).to_have_attribute("aria-expanded", "false")
    expect(menu.get_by_role("link", name="Team")).to_be_hidden()

    toggle.click()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    for name in (
        "Dashboard",
        "Jobs",
        "New job",
        "Instances",
        "Usage",
        "Webhooks",
        "Credentials",
        "Team",
        "API tokens",
        "Admin",
    ):
        expect(menu.get_by_role("link", name=name, exact=True)).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")

    page.keyboard.press("Escape")
    expect(toggle).to_have_attribute("aria-expanded", "false")
    expect(toggle).to_be_focused()

    toggle.click()
    menu.get_by_role("link", name="API tokens").click()
    page.wait_for_url(f"{base}{reverse('token_list')}")
    expect(page.locator("#site-menu a[aria-current=page]")).to_have_text("API tokens")
    expect(toggle).to_have_attribute("aria-expanded", "false")  # a new page starts closed
    assert page.js_errors == []
    page.context.close()

    wide = new_page(browser, DESKTOP)
    login(wide, base, data.username)
    expect(wide.locator(".nav-toggle")).to_be_hidden()
    # On a wide screen the rest sits in the team and user menus (<details>), opened by a click.
    for group, name in ((0, "Team"), (1, "API tokens"), (1, "Admin")):
        menu = wide.locator("#site-menu .menu-group").nth(group)
        link = menu.get_by_role("link", name=name, exact=True)
        expect(link).to_be_hidden()
        menu.locator("summary").click()
        expect(link).to_be_visible()
        wide.keyboard.press("Escape")
    wide.context.close()


def test_narrow_menu_without_javascript_shows_every_link(browser: Any, live_server: Any) -> None:
    data = build_layout_data()
    base = live_server.url
    page = new_page(browser, PHONE, java_script_enabled=False)
    login(page, base, data.username)
    expect(page.locator(".nav-toggle")).to_be_hidden()
    menu = page.locator("#site-menu")
    for name in ("Dashboard", "Jobs", "Team", "API tokens", "Admin"):
        expect(menu.get_by_role("link", name=name, exact=True)).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    menu.get_by_role("link", name="Team", exact=True).click()
    page.wait_for_url(f"{base}{reverse('team')}")
    page.context.close()


def test_outputs_keep_a_readable_width_on_a_phone(browser: Any, live_server: Any) -> None:
    """Short outputs do not wrap a word per line and a column still waiting for
    its output does not collapse; long ones scroll inside their card."""
    data = build_layout_data()
    base = live_server.url
    page = new_page(browser, PHONE)
    login(page, base, data.username)
    min_px = 160

    page.goto(base + reverse("job_detail", args=[data.jobs["completed"].pk]))
    widths = page.eval_on_selector_all(
        "#job-outputs pre.output", "els => els.map(e => e.getBoundingClientRect().width)"
    )
    assert len(widths) == 3 and min(widths) >= min_px, widths
    short = page.locator("#job-outputs tr[data-index='1'] pre.output")
    assert short.evaluate("e => e.getBoundingClientRect().height") < 40  # "Yes." on one line
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")

    page.goto(base + reverse("job_detail", args=[data.jobs["running"].pk]))
    freeze_polling(page)
    waiting = page.locator("#job-outputs tr[data-index='2'] td").nth(2)
    assert waiting.evaluate("e => e.getBoundingClientRect().width") >= min_px

    page.goto(base + reverse("job_detail", args=[data.jobs["structured"].pk]))
    cells = page.eval_on_selector_all(
        "#job-outputs tr[data-index='0'] td.mono",
        "els => els.map(e => e.getBoundingClientRect().width)",
    )
    assert cells and min(cells) >= 80, cells
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.context.close()
