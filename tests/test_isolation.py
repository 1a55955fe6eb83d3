"""Team isolation, for every URL the project has.

A user of team B gets 404 on every URL of team A's objects: pages, htmx
partials, exports and the API. The URL patterns are enumerated, not listed
by hand, so a new view cannot be forgotten: a pattern that takes an object id
must be registered in OBJECT_URLS below (which of team A's objects its id
names), or its test fails and says so. Patterns without arguments act on the
user's own team; they must not show any of team A's data to team B.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.urls.resolvers import RegexPattern, RoutePattern

from dashboard.accounts.audit import audit
from dashboard.compare.reviews import note_add, rating_set
from dashboard.compare.services import Target, comparison_create
from dashboard.datasets.parsing import Limits, read_records
from dashboard.datasets.services import dataset_create, inputs_from_dataset
from dashboard.models import (
    ApiToken,
    Comparison,
    Credential,
    Dataset,
    Job,
    JobEvent,
    Membership,
    ModelInstance,
    Price,
    Rating,
    Role,
    RowNote,
    Team,
    Webhook,
    WebhookDelivery,
)
from dashboard.notify.webhooks import webhook_create
from providers import JobSpec

from .conftest import make_credential, make_job

pytestmark = pytest.mark.django_db

MARKER = "zqx7marker"  # in every name and text of team A: absent from team B's pages
SKIPPED_NAMESPACES = {"admin"}
SKIPPED_NAMES = {"login", "logout"}
SKIPPED_PREFIXES = ("static/", "media/", "__debug__/")
METHODS = ("get", "post", "put", "patch", "delete")

#: URL name -> which of team A's objects its argument names (a key of World),
#: or a function of the World giving the URL's kwargs (for several arguments).
#: URL name -> its other arguments (not an object), the same for every test.
EXTRA_KWARGS: dict[str, dict[str, Any]] = {
    "job_items_export": {"fmt": "csv"},
    "job_item_detail": {"index": 0},
    "job_chunk_resubmit": {"number": 0},
    "comparison_cell": {"index": 0, "target": 1},
    "comparison_export": {"fmt": "csv"},
}

OBJECT_URLS: dict[str, str | Callable[[World], dict[str, Any]]] = {
    # pages and htmx partials
    "job_detail": "job",
    "job_live": "job",
    "job_cancel": "job",
    "job_retry": "job",
    "job_note": "job",
    "job_items_export": "job",
    "job_rate": "job",
    "job_chunk_resubmit": "job",
    "job_item_detail": "job",
    "dataset_detail": "dataset",
    "dataset_rename": "dataset",
    "dataset_delete": "dataset",
    "comparison_detail": "comparison",
    "comparison_live": "comparison",
    "comparison_cell": "comparison",
    "comparison_rate": "comparison",
    "comparison_note": "comparison",
    "comparison_retry": "comparison",
    "comparison_export": "comparison",
    "credential_delete": "credential",
    "credential_edit": "credential",
    "credential_test": "credential",
    "model_catalog": "credential",
    "model_catalog_refresh": "credential",
    "instance_load": "instance",
    "instance_shutdown": "instance",
    "team_member_role": "membership",
    "team_member_remove": "membership",
    "token_revoke": "token",
    # the JSON API
    "api_credential": "credential",
    "api_credential_test": "credential",
    "api_job": "job",
    "api_job_cancel": "job",
    "api_job_retry": "job",
    "api_job_scorers": "job",
    "api_job_items": "job",
    "api_instance": "instance",
    "api_dataset": "dataset",
    "api_comparison": "comparison",
    "api_comparison_ratings": "comparison",
    # scores: comparisons' scorers and disagreements, diffs between jobs
    "api_comparison_scorers": "comparison",
    "api_comparison_disagreements": "comparison",
    "api_job_diff": "job",
    "job_diff": "job",
    # cost and notifications
    "price_delete": "price",
    "webhook_detail": "webhook",
    "webhook_delete": "webhook",
    "delivery_redeliver": "delivery",
    "api_webhook": "webhook",
    "api_webhook_deliveries": "webhook",
}


@dataclass(frozen=True)
class Route:
    name: str  # with its namespace, as reverse() wants it
    path: str  # the pattern as written, for messages
    args: tuple[str, ...]


def _args_of(pattern: Any) -> tuple[str, ...]:
    if isinstance(pattern, RoutePattern):
        return tuple(pattern.converters)
    if isinstance(pattern, RegexPattern):
        named = tuple(pattern.regex.groupindex)
        unnamed = pattern.regex.groups - len(named)
        return named + tuple(f"<unnamed {i}>" for i in range(unnamed))
    return ()


def _walk(
    patterns: list[Any], prefix: str, namespaces: tuple[str, ...], args: tuple[str, ...]
) -> Iterator[Route]:
    for entry in patterns:
        path = prefix + str(entry.pattern)
        if path.startswith(SKIPPED_PREFIXES):
            continue
        if isinstance(entry, URLResolver):
            if entry.namespace in SKIPPED_NAMESPACES:
                continue
            inner = (*namespaces, entry.namespace) if entry.namespace else namespaces
            yield from _walk(entry.url_patterns, path, inner, args + _args_of(entry.pattern))
        elif isinstance(entry, URLPattern):
            if entry.name in SKIPPED_NAMES:
                continue
            name = ":".join((*namespaces, entry.name)) if entry.name else ""
            yield Route(name=name, path=path, args=args + _args_of(entry.pattern))


def all_routes() -> list[Route]:
    return list(_walk(get_resolver().url_patterns, "", (), ()))


OBJECT_ROUTES = [r for r in all_routes() if r.args]
LIST_ROUTES = [r for r in all_routes() if not r.args]


# --- the two teams ------------------------------------------------------------------------


@dataclass
class World:
    team_a: Team
    team_b: Team
    credential: Credential
    job: Job
    instance: ModelInstance
    token: ApiToken
    membership: Membership
    charlie_key: str
    dataset: Dataset
    comparison: Comparison
    price: Price
    webhook: Webhook
    delivery: WebhookDelivery


@pytest.fixture
def world(team: Team, other_team: Team, alice: User, bob: User, charlie: User) -> World:
    Team.objects.filter(pk=team.pk).update(name=f"Alpha {MARKER}")
    team.refresh_from_db()
    credential = make_credential(team, "together", name=f"cred {MARKER}")
    job = make_job(credential, [f"prompt {MARKER}"], user=alice, model=f"model-{MARKER}")
    job.items.update(status="completed", output=f"output {MARKER}")
    JobEvent.objects.create(
        job=job, kind=JobEvent.Kind.NOTE, message=f"note {MARKER}", author=alice
    )
    instance = ModelInstance.objects.create(
        team=team, credential=credential, model=f"inst-{MARKER}", status="running"
    )
    token, _ = ApiToken.issue(alice, f"token {MARKER}")
    audit(alice, team, "credential.created", f"audit {MARKER}")
    # Team B has its own data, so its pages render lists, not empty states.
    own = make_credential(other_team, "together", name="beta cred")
    make_job(own, ["beta prompt"], user=charlie)
    _, charlie_key = ApiToken.issue(charlie, "charlie's token")
    dataset, comparison = make_comparison(team, alice)
    price = Price.objects.create(
        team=team, provider="together", model=f"model-{MARKER}", input_per_mtok=1, output_per_mtok=2
    )
    webhook, _ = webhook_create(
        team=team, url=f"http://127.0.0.1:9/{MARKER}", events=["job.completed"], actor=alice
    )
    delivery = WebhookDelivery.objects.create(
        webhook=webhook,
        event="job.completed",
        object_id=job.pk,
        message_id="msg_isolation",
        body=f'{{"data": "{MARKER}"}}',
        status="failed",
    )
    # Team B has a webhook too, so its webhooks page lists something.
    webhook_create(
        team=other_team, url="http://127.0.0.1:9/beta", events=["job.failed"], actor=charlie
    )
    return World(
        team_a=team,
        team_b=other_team,
        credential=credential,
        job=job,
        instance=instance,
        token=token,
        membership=Membership.objects.get(team=team, user=bob),
        charlie_key=charlie_key,
        dataset=dataset,
        comparison=comparison,
        price=price,
        webhook=webhook,
        delivery=delivery,
    )


def make_comparison(team: Team, user: User) -> tuple[Dataset, Comparison]:
    """Team A's dataset (its rows hold the marker) and a comparison over it,
    rated and noted."""
    rows = read_records([{"q": f"row {MARKER}"}], Limits.from_settings())
    dataset = dataset_create(team=team, name=f"data {MARKER}", rows=rows, user=user)
    inputs = inputs_from_dataset(dataset, "Say {q}")
    credentials = [make_credential(team, name=f"cmp {MARKER} {i}") for i in range(2)]
    comparison = comparison_create(
        team=team,
        name=f"comparison {MARKER}",
        user=user,
        inputs=inputs,
        targets=[Target(c, JobSpec(model="m", prompts=inputs.prompts)) for c in credentials],
    )
    first = comparison.jobs.order_by("id").first()
    first.items.update(status="failed", error=f"error {MARKER}")
    Job.objects.filter(pk=first.pk).update(status="completed", items_failed=1, progress_done=1)
    rating_set(job=first, index=0, user=user, score=1)
    note_add(comparison=comparison, index=0, user=user, text=f"note {MARKER}")
    return dataset, comparison


@pytest.fixture
def charlie_client(client: Any, charlie: User, world: World) -> Any:
    client.force_login(charlie)
    return client


def fetch(
    client: Any, world: World, method: str, url: str, *, htmx: bool = False
) -> tuple[int, str]:
    headers = {}
    if url.startswith("/api/"):
        headers["Authorization"] = f"Bearer {world.charlie_key}"
    if htmx:
        headers["HX-Request"] = "true"
    response = getattr(client, method)(url, headers=headers)
    if getattr(response, "streaming", False):
        body = b"".join(response.streaming_content)
    else:
        body = response.content
    return response.status_code, body.decode(errors="replace")


def object_kwargs(route: Route, world: World) -> dict[str, Any]:
    entry = OBJECT_URLS.get(route.name)
    if entry is None:
        pytest.fail(
            f"URL {route.path!r} (name {route.name or 'none'!r}) takes {', '.join(route.args)} but "
            "tests/test_isolation.py does not know which object that is. Add it to OBJECT_URLS "
            "(url name -> the World object its id names), so the test can check that another "
            "team gets a 404 there." + ("" if route.name else " Give the pattern a name first.")
        )
    if callable(entry):
        return entry(world)
    return kwargs_for_object(route, getattr(world, entry))


def kwargs_for_object(route: Route, target: Any) -> dict[str, Any]:
    """The kwargs of a URL whose one object argument names ``target``."""
    extra = EXTRA_KWARGS.get(route.name or "", {})
    args = [arg for arg in route.args if arg not in extra]
    if len(args) != 1:
        pytest.fail(
            f"{route.name} takes {route.args}: register a function that returns its kwargs."
        )
    return {**extra, args[0]: target.pk}


def assert_team_a_untouched(world: World) -> None:
    job = Job.objects.get(pk=world.job.pk)
    assert job.status == world.job.status and not job.retries.exists()
    assert (
        not job.events.exclude(message__contains="Saved").exclude(message=f"note {MARKER}").exists()
    )
    assert Credential.objects.filter(pk=world.credential.pk).exists()
    assert ModelInstance.objects.get(pk=world.instance.pk).status == "running"
    assert ApiToken.objects.get(pk=world.token.pk).revoked_at is None
    assert Membership.objects.get(pk=world.membership.pk).role == Role.MEMBER
    assert Dataset.objects.get(pk=world.dataset.pk).name == f"data {MARKER}"
    assert Comparison.objects.filter(pk=world.comparison.pk).exists()
    assert Rating.objects.count() == 1 and RowNote.objects.count() == 1
    assert not Job.objects.filter(retry_of__comparison=world.comparison).exists()
    assert Price.objects.filter(pk=world.price.pk, input_per_mtok=1).exists()
    assert Webhook.objects.filter(pk=world.webhook.pk).exists()
    assert WebhookDelivery.objects.filter(webhook=world.webhook).count() == 1
    assert Team.objects.get(pk=world.team_a.pk).monthly_budget_usd is None


# --- the tests ---------------------------------------------------------------------------------


def test_the_walk_finds_the_project_urls() -> None:
    names = {r.name for r in all_routes()}
    assert {
        "job_detail",
        "job_list",
        "job_export_csv",
        "credential_delete",
        "team",
        "audit",
    } <= names
    assert not any(name.startswith("admin:") for name in names)


@pytest.mark.parametrize("route", OBJECT_ROUTES, ids=[r.name or r.path for r in OBJECT_ROUTES])
def test_another_teams_object_is_a_404(charlie_client: Any, world: World, route: Route) -> None:
    url = reverse(route.name, kwargs=object_kwargs(route, world))
    answers = {}
    for method in METHODS:
        answers[method] = fetch(charlie_client, world, method, url)
    answers["get (htmx)"] = fetch(charlie_client, world, "get", url, htmx=True)
    statuses = {method: status for method, (status, _) in answers.items()}
    assert set(statuses.values()) <= {404, 405}, (
        f"{url}: {statuses} (another team's object must be a 404)"
    )
    assert 404 in statuses.values(), f"{url}: no method reached the view: {statuses}"
    for method, (_, body) in answers.items():
        assert MARKER not in body, f"{method.upper()} {url} shows team A's data"
    assert_team_a_untouched(world)


@pytest.mark.parametrize("route", LIST_ROUTES, ids=[r.name or r.path for r in LIST_ROUTES])
def test_team_pages_show_nothing_of_another_team(
    charlie_client: Any, world: World, route: Route
) -> None:
    if not route.name:
        pytest.skip(f"unnamed pattern {route.path!r} cannot be reversed")
    url = reverse(route.name)
    for htmx in (False, True):
        method = "get"
        status, body = fetch(charlie_client, world, method, url, htmx=htmx)
        if status == 405:
            # POST-only: it acts on the user's own team; posting must not reach team A.
            method = "post"
            status, body = fetch(charlie_client, world, method, url, htmx=htmx)
        assert status < 500, f"{method.upper()} {url} failed with {status}"
        assert MARKER not in body, (
            f"GET {url}{' (htmx)' if htmx else ''} shows team A's data to team B"
        )
    assert_team_a_untouched(world)


def test_team_a_sees_its_own_marker(client: Any, alice: User, world: World) -> None:
    """The check above means something: the same pages do show the marker to team A."""
    client.force_login(alice)
    for name in (
        "job_list",
        "credential_list",
        "team",
        "audit",
        "dataset_list",
        "comparison_list",
        "usage",
        "webhook_list",
    ):
        assert MARKER in client.get(reverse(name)).content.decode(), name
    page = client.get(reverse("comparison_detail", args=[world.comparison.pk])).content.decode()
    assert f"note {MARKER}" in page and f"row {MARKER}" in page
    export = client.get(reverse("job_export_jsonl"))
    assert MARKER in b"".join(export.streaming_content).decode()
    assert client.get(reverse("job_detail", args=[world.job.pk])).status_code == 200


def test_ids_in_request_bodies_are_team_scoped_too(charlie_client: Any, world: World) -> None:
    """Not URL arguments, but the same rule: naming team A's objects in a form
    or a JSON body neither works nor reveals them."""
    charlie_client.post(reverse("switch_team"), {"team": world.team_a.pk})
    assert MARKER not in charlie_client.get(reverse("home")).content.decode()
    jobs_before = Job.objects.count()
    response = charlie_client.post(
        reverse("job_new"),
        {"credential": world.credential.pk, "model": "m", "prompts": "hi", "split": "single"},
    )
    assert response.status_code == 200 and MARKER not in response.content.decode()
    status, body = fetch_json_post(
        charlie_client,
        world,
        "/api/v1/jobs",
        {"credential": world.credential.pk, "model": "m", "prompts": ["hi"]},
    )
    assert status in (400, 404) and MARKER not in body
    assert Job.objects.count() == jobs_before
    assert_team_a_untouched(world)


def fetch_json_post(client: Any, world: World, url: str, data: dict[str, Any]) -> tuple[int, str]:
    response = client.post(
        url,
        data,
        content_type="application/json",
        headers={"Authorization": f"Bearer {world.charlie_key}"},
    )
    return response.status_code, response.content.decode()


def test_dataset_and_comparison_ids_in_bodies_and_queries_are_team_scoped(
    charlie_client: Any, world: World
) -> None:
    """Team A's dataset, job or credential named in a form, a query or a JSON
    body: refused like an id that does not exist, and nothing shown."""
    own = Credential.objects.get(team=world.team_b)
    preview = charlie_client.get(
        reverse("dataset_template_preview"), {"dataset": world.dataset.pk, "prompt_template": "{q}"}
    )
    assert preview.status_code == 404 and MARKER not in preview.content.decode()
    new_page = charlie_client.get(reverse("comparison_new"), {"from_job": world.job.pk})
    assert new_page.status_code == 404
    jobs_before = Job.objects.count()
    form = charlie_client.post(
        reverse("comparison_new"),
        {
            "name": "x",
            "dataset": world.dataset.pk,
            "prompt_template": "{q}",
            "split": "lines",
            "target-TOTAL_FORMS": "2",
            "target-INITIAL_FORMS": "0",
            "target-0-credential": own.pk,
            "target-0-model": "m",
            "target-1-credential": world.credential.pk,
            "target-1-model": "m",
        },
    )
    assert form.status_code == 400 and MARKER not in form.content.decode()
    job_form = charlie_client.post(
        reverse("job_new"),
        {
            "credential": own.pk,
            "model": "m",
            "dataset": world.dataset.pk,
            "prompt_template": "{q}",
            "split": "single",
        },
    )
    assert job_form.status_code == 200 and MARKER not in job_form.content.decode()
    for url, body in [
        (
            "/api/v1/jobs",
            {
                "credential": own.pk,
                "model": "m",
                "dataset": world.dataset.pk,
                "prompt_template": "{q}",
            },
        ),
        (
            "/api/v1/comparisons",
            {
                "name": "x",
                "dataset": world.dataset.pk,
                "prompt_template": "{q}",
                "targets": [
                    {"credential": own.pk, "model": "m"},
                    {"credential": own.pk, "model": "n"},
                ],
            },
        ),
        (
            "/api/v1/comparisons",
            {
                "name": "x",
                "prompts": ["hi"],
                "targets": [
                    {"credential": own.pk, "model": "m"},
                    {"credential": world.credential.pk, "model": "n"},
                ],
            },
        ),
    ]:
        status, text = fetch_json_post(charlie_client, world, url, body)
        assert status == 400 and MARKER not in text, (url, status, text)
    assert Job.objects.count() == jobs_before
    assert_team_a_untouched(world)
