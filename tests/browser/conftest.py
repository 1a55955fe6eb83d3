"""Browser tests: a real headless Chromium (Debian's, driven by Playwright) against
the live server, with a real qcluster worker process on the same test database."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..workers import start_qcluster, stop

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


@pytest.fixture(scope="session")
def browser(django_db_setup: Any) -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        pytest.fail(
            f"Chromium not found at {CHROMIUM}. Install it (apt-get install chromium) or set "
            "CHROMIUM_PATH; `make test` installs it when it can.",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running in this thread from here
    # on; the ORM calls the tests make are still plain synchronous calls. Browser
    # tests run last (tests/conftest.py orders them), so this covers only them.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
            )
            yield browser
            browser.close()
    finally:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.js_errors = errors
    yield page
    context.close()


@pytest.fixture(scope="session")
def worker(django_db_setup: Any, django_db_blocker: Any, tmp_path_factory: Any) -> Iterator[Any]:
    """A real `manage.py qcluster` on the test database (the same broker settings)."""
    with django_db_blocker.unblock():
        process = start_qcluster(tmp_path_factory.mktemp("worker") / "qcluster.log")
    yield process
    stop(process)


def login(page: Any, base_url: str, username: str, password: str = "pw-for-tests-123") -> None:
    page.goto(f"{base_url}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base_url}/")


def request_instance(page: Any, base_url: str, model: str = "openai-community/gpt2") -> None:
    """Ask for a model instance from the instances page, as a user would."""
    page.goto(f"{base_url}/instances/")
    page.fill("#id_model", model)
    page.click("button:has-text('Request')")
    page.wait_for_url("**/instances/")
