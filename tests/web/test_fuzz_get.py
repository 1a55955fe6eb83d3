"""Hostile query strings on every GET route: pages, htmx partials, exports and
the API. Never a 5xx.

The routes are enumerated as tests/test_isolation.py walks them, ids filled
with real objects of the user's team, so a new view is fuzzed without being
listed here. Which parameters a view reads is learned by watching it: every
route is fetched once while the query dicts record the keys asked for
(forms bound to ``request.GET`` included); the API's come from its OpenAPI
schema. Each parameter then gets each hostile value, and hypothesis mixes
them with random names, repeated keys and htmx requests.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from django.contrib.auth.models import User
from django.http import QueryDict
from django.test import Client
from django.urls import reverse
from django.utils.datastructures import MultiValueDict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dashboard.api.main import api
from dashboard.models import ApiToken, Job, JobEvent, ModelInstance, Price, WebhookDelivery
from dashboard.notify.webhooks import webhook_create
from tests.conftest import finish_items, make_credential, make_job
from tests.test_isolation import (
    OBJECT_URLS,
    Route,
    all_routes,
    kwargs_for_object,
    make_comparison,
)

pytestmark = pytest.mark.django_db

SKIPPED = {"logout"}

#: Values that broke, or could break, a parser somewhere: digits int() refuses
#: but str.isdigit() accepts, numbers past every column, NUL (PostgreSQL
#: refuses it in text), floats that are not finite, dates at the ends of the
#: calendar, and sheer length.
HOSTILE = [
    "²",
    "٣",
    "𝟗",
    "-1",
    "0",
    "9" * 30,
    "-" + "9" * 30,
    "1e309",
    "nan",
    "inf",
    "-inf",
    "a\x00b",
    "\x00",
    "9999-12-31",
    "0000-01-01",
    "0001-01-01",
    "2025-02-30",
    "x" * 5000,
    "%",
    " ",
    "true",
    "[]",
    "<script>",
]


@pytest.fixture
def world(team: Any, alice: User) -> dict[str, Any]:
    # Bytez: the credential with the most behind its pages (model catalog, instances).
    credential = make_credential(team, "bytez")
    job = make_job(make_credential(team, "together"), ["first", "second"], user=alice)
    finish_items(job, ["one"])
    Job.objects.filter(pk=job.pk).update(status="completed")
    JobEvent.objects.create(job=job, kind=JobEvent.Kind.LOG, message="log line", unit=0)
    instance = ModelInstance.objects.create(
        team=team, credential=credential, model="m", status="running"
    )
    token, key = ApiToken.issue(alice, "fuzz")
    dataset, comparison = make_comparison(team, alice)
    webhook, _ = webhook_create(
        team=team, url="http://127.0.0.1:9/hook", events=["job.completed"], actor=alice
    )
    objects = {
        "dataset": dataset,
        "comparison": comparison,
        "price": Price.objects.create(
            team=team, provider="together", model="m", input_per_mtok=1, output_per_mtok=1
        ),
        "webhook": webhook,
        "delivery": WebhookDelivery.objects.create(
            webhook=webhook, event="job.completed", object_id=job.pk, message_id="msg_f"
        ),
        "credential": credential,
        "job": job,
        "instance": instance,
        "token": token,
        "membership": alice.memberships.get(team=team),
    }
    client = Client()
    client.force_login(alice)
    return {"objects": objects, "client": client, "key": key}


def url_of(route: Route, world: dict[str, Any]) -> str:
    if not route.args:
        return reverse(route.name)
    entry = OBJECT_URLS[route.name]
    kwargs = entry(world) if callable(entry) else kwargs_for_object(route, world["objects"][entry])
    return reverse(route.name, kwargs=kwargs)


def fetch(world: dict[str, Any], url: str, query: str = "", *, htmx: bool = False) -> Any:
    headers = {"HX-Request": "true"} if htmx else {}
    if url.startswith("/api/"):
        headers["Authorization"] = f"Bearer {world['key']}"
    response = world["client"].get(f"{url}?{query}" if query else url, headers=headers)
    if getattr(response, "streaming", False):
        b"".join(response.streaming_content)  # an export fails while it streams
    return response


# --- which parameters each view reads -------------------------------------------------------


class _Recorder:
    """Records the keys read from query dicts (request.GET, its copies)."""

    def __init__(self) -> None:
        self.keys: set[str] = set()

    def patch(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for method in ("get", "__getitem__", "getlist", "__contains__"):
            original = getattr(MultiValueDict, method)
            monkeypatch.setattr(MultiValueDict, method, self._recording(original))

    def _recording(self, original: Any) -> Any:
        def method(data: Any, key: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(data, QueryDict) and isinstance(key, str):
                self.keys.add(key)
            return original(data, key, *args, **kwargs)

        return method


def api_query_names(route: Route) -> set[str]:
    """The query parameters the API's schema gives the route's operations."""
    path = "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route.path)
    operations = api.get_openapi_schema(path_prefix="/api/v1/")["paths"].get(path, {})
    return {
        parameter["name"]
        for operation in operations.values()
        for parameter in operation.get("parameters", [])
        if parameter["in"] == "query"
    }


_read: dict[str, set[str] | None] = {}


def read_params(route: Route, world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The query keys the view reads; skips a POST-only route. Learned once
    per route: the names do not depend on which objects the ids name."""
    if route.name not in _read:
        _read[route.name] = _learn(route, world, monkeypatch)
    # A POST-only route reads no query; hostile keys must still get its 405, not a 500.
    return _read[route.name] or set()


def _learn(route: Route, world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> set[str] | None:
    url = url_of(route, world)
    if url.startswith("/api/"):
        return api_query_names(route)
    recorder = _Recorder()
    with monkeypatch.context() as patch:
        recorder.patch(patch)
        for htmx in (False, True):
            if fetch(world, url, htmx=htmx).status_code == 405:
                return None
    return recorder.keys


ROUTES = [r for r in all_routes() if r.name and r.name not in SKIPPED]
IDS = [r.name for r in ROUTES]


def queries(names: set[str]) -> st.SearchStrategy[str]:
    """Query strings of the view's parameters and random ones, hostile values
    and random text, keys repeated."""
    name = st.sampled_from(sorted(names)) if names else st.nothing()
    name = name | st.text(min_size=1, max_size=8)
    value = st.sampled_from(HOSTILE) | st.text(max_size=30) | st.integers().map(str)
    pairs = st.lists(st.tuples(name, value), max_size=6)
    return pairs.map(urlencode)


def hostile_queries(names: set[str]) -> Iterator[tuple[str, bool]]:
    """Each name with each value, as a page and (every other one) as its htmx partial."""
    for name in sorted(names):
        for i, value in enumerate(HOSTILE):
            yield urlencode({name: value}), i % 2 == 1
        yield urlencode([(name, "1"), (name, "²")]), False


# --- the tests ----------------------------------------------------------------------------------


def test_the_walk_covers_pages_partials_exports_and_api(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    routes = {route.name: route for route in ROUTES}
    assert {"job_list", "job_live", "job_export_csv", "instance_panel", "api_jobs"} <= set(routes)
    assert len(ROUTES) > 30

    def params(name: str) -> set[str]:
        return read_params(routes[name], world, monkeypatch)

    assert {"date_to", "per_page", "cursor", "q"} <= params("job_list")
    assert {"after", "since", "first", "last"} <= params("job_live")
    assert {"q", "page", "since"} <= params("model_catalog")
    assert {"limit", "team", "cursor", "status"} <= params("api_jobs")
    assert params("api_credentials") == {"team"}


@pytest.mark.parametrize("route", ROUTES, ids=IDS)
def test_each_parameter_with_each_hostile_value(
    world: dict[str, Any], route: Route, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = url_of(route, world)
    for query, htmx in hostile_queries(read_params(route, world, monkeypatch)):
        response = fetch(world, url, query, htmx=htmx)
        assert response.status_code < 500, f"GET {url}?{query} -> {response.status_code}"


@pytest.mark.parametrize("route", ROUTES, ids=IDS)
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_random_query_strings(
    world: dict[str, Any], route: Route, monkeypatch: pytest.MonkeyPatch, data: Any
) -> None:
    url = url_of(route, world)
    query = data.draw(queries(read_params(route, world, monkeypatch)), label="query")
    htmx = data.draw(st.booleans(), label="htmx")
    response = fetch(world, url, query, htmx=htmx)
    assert response.status_code < 500, f"GET {url}?{query} -> {response.status_code}"


# --- what the fuzzers found ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["job_list", "job_export_csv", "job_export_jsonl"])
@pytest.mark.parametrize("date", ["9999-12-31", "0001-01-01"])
def test_history_dates_at_the_ends_of_the_calendar(
    world: dict[str, Any], name: str, date: str
) -> None:
    """The day after 9999-12-31 does not exist: the filter was a 500."""
    for field in ("date_to", "date_from"):
        response = fetch(world, reverse(name), urlencode({field: date}))
        body = response.content.decode() if not response.streaming else ""
        if name == "job_list":
            # The page shows the form's error, as for any other bad filter.
            assert response.status_code == 200 and "Pick a date between" in body
        else:
            assert response.status_code == 400 and "Pick a date between" in body
