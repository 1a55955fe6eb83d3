"""Browser tests: a real headless Chromium (Debian's, driven by Playwright) against
the live server, with a real qcluster worker process on the same test database."""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
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


class Hold:
    """Requests to one path of a simulator, kept waiting until the test releases
    them: a state the page must show (a job running, an instance stopping) lasts
    until the test has seen it, however slow the machine, instead of for a
    latency that a loaded machine may outrun."""

    LIMIT = 60.0  # a test that fails before releasing still frees the server's threads

    def __init__(self) -> None:
        self.released = threading.Event()
        self.lock = threading.Lock()
        self.held = 0  # requests that came and were kept waiting

    def wait(self) -> None:
        with self.lock:
            self.held += 1
        self.released.wait(self.LIMIT)

    def release(self) -> None:
        self.released.set()


@pytest.fixture
def hold() -> Iterator[Callable[..., Hold]]:
    """``hold(sim, path)``: requests whose path matches wait for ``.release()``
    (a fault, answered before routing, is not held)."""
    made: list[tuple[Any, Hold]] = []

    def make(sim: Any, path: str, method: str | None = None) -> Hold:
        held = Hold()
        route = sim.dispatch

        def dispatch(request: Any) -> Any:
            if re.search(path, request.path) and method in (None, request.method):
                held.wait()
            return route(request)

        sim.dispatch = dispatch
        made.append((sim, held))
        return held

    yield make
    for sim, held in made:
        held.release()
        vars(sim).pop("dispatch", None)


def wait_until(check: Callable[[], Any], what: str, seconds: float = 15) -> None:
    """Wait (bounded) until ``check()`` is true: a readiness wait on something
    outside the page (a simulator's state)."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def htmx_settled(page: Any) -> None:
    """No htmx request, swap or settle under way (a swap that lands mid-click
    can take the clicked element away)."""
    page.wait_for_function(
        "() => !document.querySelector('.htmx-request, .htmx-swapping, .htmx-settling, .htmx-added')"
    )


def submit_job(page: Any) -> None:
    """Submit the new-job form once htmx has settled, and wait for the job's
    page. The POST writes the job and its items in one transaction, which may
    queue behind a worker's write on the shared SQLite file: wait as long as
    SQLite's busy timeout (30 s), not Playwright's default 15 s."""
    htmx_settled(page)
    page.click("button:has-text('Submit job')")
    page.wait_for_url("**/jobs/*/", timeout=45_000)
