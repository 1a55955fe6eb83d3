"""The API's docs page (/api/v1/docs) in a real browser: every operation
renders, under the site's Content-Security-Policy, and no request leaves the
host (swagger-ui is served from local static files, no CDN), and trying an
operation out with a token reaches the API."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from dashboard.models import ApiToken

pytestmark = pytest.mark.django_db(transaction=True)


def operations_in_schema(client: Any) -> int:
    """As many operations as the schema has: the docs must render them all."""
    schema = client.get("/api/v1/openapi.json").json()
    return sum(len(item) for item in schema["paths"].values())


def test_docs_render_every_operation_from_this_host_only(
    page: Any, live_server: Any, alice: Any, team: Any, client: Any
) -> None:
    host = urlsplit(live_server.url).netloc
    requests: list[str] = []
    offsite: list[str] = []

    def watch(route: Any) -> None:
        url = route.request.url
        requests.append(url)
        if urlsplit(url).scheme in ("http", "https") and urlsplit(url).netloc != host:
            offsite.append(url)
            route.abort()  # and it does not leave the machine either
        else:
            route.continue_()

    page.route("**/*", watch)
    console: list[str] = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))

    page.goto(f"{live_server.url}/api/v1/docs")
    operations = page.locator(".opblock")
    expect(operations).to_have_count(operations_in_schema(client))
    expect(
        page.locator(".opblock-summary-path", has_text="/api/v1/jobs/{pk}/retry")
    ).to_be_visible()

    # Try one out with a token, as a reader of the docs would.
    _, key = ApiToken.issue(alice, "docs")
    page.get_by_role("button", name="Authorize").first.click()
    page.locator(".auth-container input").first.fill(key)
    page.locator(".auth-btn-wrapper button.authorize").click()
    page.locator(".btn-done").click()
    listing = page.locator("#operations-jobs-list_jobs")
    listing.locator(".opblock-summary").click()
    listing.get_by_role("button", name="Try it out").click()
    listing.get_by_role("button", name="Execute").click()
    expect(listing.locator(".live-responses-table tr.response .response-col_status")).to_have_text(
        "200"
    )

    assert requests and any(url.endswith("/api/v1/openapi.json") for url in requests)
    assert not offsite, f"requests off {host}: {offsite}"
    assert not page.js_errors, page.js_errors
    refused = [line for line in console if "Content Security Policy" in line]
    assert not refused, refused
