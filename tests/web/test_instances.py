"""Instance and catalog pages through the Django test client: what a user sees,
what a click does, and the live partials a browser would poll."""

# The simulator fixtures come from test_instances; pytest injects them by name.
# ruff: noqa: F811

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from dashboard import tasks
from dashboard.instances.catalog import catalog_refresh
from dashboard.instances.gate import note_runs
from dashboard.instances.poller import instances_reconcile
from dashboard.models import AuditEvent, Credential, Membership, ModelInstance, Role, Team
from providers import JobSpec
from providers.bytez import BytezProvider
from providers.simulators.bytez import BytezSimulator, catalog_entry
from tests.conftest import SECRET, make_credential, make_job, make_user
from tests.instances.test_instances import (  # noqa: F401  (fixtures)
    GPT2,
    NEO,
    Clock,
    bytez,
    clock,
    fresh,
    make_running,
    poll,
    running_sim,
    sim,
)

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}


@pytest.fixture
def alice_client(client: Client, alice: User, team: Team) -> Client:
    client.force_login(alice)
    return client


@pytest.fixture
def bob_client(bob: User, team: Team) -> Client:
    client = Client()
    client.force_login(bob)
    return client


def page(client: Client, url: str, **kwargs: Any) -> str:
    response = client.get(url, **kwargs)
    assert response.status_code == 200, response.status_code
    return response.content.decode()


def live(client: Client) -> Any:
    return client.get(reverse("instance_list"), headers=HTMX)


def flash(response: Any) -> str:
    return " ".join(str(m) for m in response.wsgi_request._messages)


# --- the instances page ------------------------------------------------------------------------


def test_request_available_load_running_on_the_page(
    bob_client: Client,
    team: Team,
    bytez: Credential,
    sim: BytezSimulator,
    clock: Clock,
    nudges: list,
) -> None:
    body = page(bob_client, reverse("instance_list"))
    assert "Request a model" in body and 'id="live-instances"' in body
    assert "data-poll" not in body  # nothing live: nothing polls
    assert live(bob_client).status_code == 286

    response = bob_client.post(
        reverse("instance_request"),
        {"credential": bytez.pk, "model": GPT2, "concurrency": "1"},  # "load" unticked
    )
    assert response.status_code == 302 and response["Location"] == reverse("instance_list")
    instance = ModelInstance.objects.get()
    assert (instance.status, instance.created_by.username) == ("requested", "bob")
    assert AuditEvent.objects.filter(action="instance.requested").exists()

    body = page(bob_client, reverse("instance_list"))
    assert 'hx-trigger="every 1s"' in body and "data-poll" in body
    poll(bytez, 1.5)
    response = live(bob_client)
    body = response.content.decode()
    assert response.status_code == 200
    assert "Requested" in body and "Model is already queued" in body
    assert "available — load it" not in body

    poll(bytez, 3)
    body = live(bob_client).content.decode()
    assert "available — load it" in body
    assert reverse("instance_load", args=[instance.pk]) in body

    response = bob_client.post(
        reverse("instance_load", args=[instance.pk]),
        {"concurrency": "2", "expiration_seconds": "120"},
    )
    assert response.status_code == 302 and "Loading" in flash(response)
    poll(bytez, 2)
    body = live(bob_client).content.decode()
    assert 'data-status="loading"' in body and "Loading" in body
    assert "LOADING" not in body  # the provider's word repeats the status: not shown

    clock.advance(5)
    poll(bytez, 1)
    body = live(bob_client).content.decode()
    assert 'data-status="running"' in body
    row = _row(body, instance.pk)
    assert re.search(r'class="instance-inferences">0<', row)
    assert "in 1 min 5" in row  # 120 s from the load, 6 s ago
    assert "no rate set" in row
    assert reverse("instance_shutdown", args=[instance.pk]) in row


def _row(body: str, pk: int) -> str:
    match = re.search(rf'<tr id="instance-{pk}".*?</tr>', body, re.S)
    assert match, body
    return match.group(0)


def test_inferences_and_countdown_update_after_a_run(
    bob_client: Client,
    team: Team,
    bob: User,
    bytez: Credential,
    sim: BytezSimulator,
    clock: Clock,
    nudges: list,
) -> None:
    instance = make_running(team, bytez, bob, clock, expiration_seconds=300)
    row = _row(live(bob_client).content.decode(), instance.pk)
    assert "in 4 min 5" in row
    clock.advance(60)
    row = _row(live(bob_client).content.decode(), instance.pk)
    assert "in 3 min 5" in row and "1 min" in row  # counts down; uptime grows

    job = make_job(bytez, ["Hi"], model=GPT2)
    with BytezProvider(secret=sim.token, base_url=sim.base_url) as provider:
        provider.run(JobSpec(model=GPT2, prompts=["Hi"]), [0])
    note_runs(job, 1)
    row = _row(live(bob_client).content.decode(), instance.pk)
    assert re.search(r'class="instance-inferences">1<', row)
    assert "in 5 min" in row  # a run starts the expiration period again


def test_request_form_errors(
    bob_client: Client,
    team: Team,
    bob: User,
    bytez: Credential,
    sim: BytezSimulator,
    nudges: list,
) -> None:
    response = bob_client.post(reverse("instance_request"), {"credential": bytez.pk, "model": ""})
    assert response.status_code == 200 and "This field is required." in response.content.decode()
    bob_client.post(reverse("instance_request"), {"credential": bytez.pk, "model": GPT2})
    response = bob_client.post(reverse("instance_request"), {"credential": bytez.pk, "model": GPT2})
    assert "already has an instance" in response.content.decode()
    together = make_credential(team, "together")
    response = bob_client.post(
        reverse("instance_request"), {"credential": together.pk, "model": GPT2}
    )
    assert "Select a valid choice" in response.content.decode()
    assert ModelInstance.objects.count() == 1


def test_viewer_sees_but_cannot_act(
    client: Client,
    team: Team,
    alice: User,
    bytez: Credential,
    sim: BytezSimulator,
    clock: Clock,
    nudges: list,
) -> None:
    viewer = make_user("vera")
    Membership.objects.create(team=team, user=viewer, role=Role.VIEWER)
    instance = make_running(team, bytez, alice, clock)
    client.force_login(viewer)
    body = page(client, reverse("instance_list"))
    assert GPT2 in body and "Request a model" not in body
    assert reverse("instance_shutdown", args=[instance.pk]) not in body
    assert client.post(reverse("instance_shutdown", args=[instance.pk])).status_code == 403
    response = client.post(reverse("instance_request"), {"credential": bytez.pk, "model": NEO})
    assert response.status_code == 403
    assert fresh(instance).status == "running"


def test_rate_and_cost_estimate(
    alice_client: Client,
    bob_client: Client,
    team: Team,
    alice: User,
    bytez: Credential,
    sim: BytezSimulator,
    clock: Clock,
    nudges: list,
) -> None:
    catalog_refresh(bytez.pk)
    instance = make_running(team, bytez, alice, clock)
    assert instance.required_ram_gb == catalog_entry(0)["requiredRAM"] == 0.25

    assert bob_client.post(reverse("instance_rate"), {"cost_per_gb_second": "1"}).status_code == 403
    response = alice_client.post(reverse("instance_rate"), {"cost_per_gb_second": "-1"})
    assert "Rate not saved" in flash(response)
    alice_client.post(reverse("instance_rate"), {"cost_per_gb_second": "0.0001"})
    team.refresh_from_db()
    assert str(team.cost_per_gb_second.normalize()) == "0.0001"

    row = _row(live(bob_client).content.decode(), instance.pk)
    assert "≈ 0.0015" in row  # 0.25 GB x 60 s (the minimum) x 0.0001
    assert "0.25 GB × 60 s (at least 60) × 0.0001 per GB-second" in row
    clock.advance(120)
    row = _row(live(bob_client).content.decode(), instance.pk)
    assert "≈ 0.0030" in row and "121 s" in row  # 0.25 GB x 121 s x 0.0001 = 0.003025

    ModelInstance.objects.filter(pk=instance.pk).update(required_ram_gb=None)
    assert "RAM unknown" in _row(live(bob_client).content.decode(), instance.pk)
    alice_client.post(reverse("instance_rate"), {"cost_per_gb_second": ""})
    assert "no rate set" in _row(live(bob_client).content.decode(), instance.pk)


def test_shutdown_from_the_page(
    bob_client: Client,
    team: Team,
    bob: User,
    bytez: Credential,
    sim: BytezSimulator,
    clock: Clock,
    nudges: list,
) -> None:
    instance = make_running(team, bytez, bob, clock)
    response = bob_client.post(reverse("instance_shutdown", args=[instance.pk]))
    assert response.status_code == 302 and "Shutting down" in flash(response)
    assert fresh(instance).status == "stopping"
    tasks.instance_stop(instance.pk)  # the background task
    assert fresh(instance).status == "stopped" and sim.instances == {}
    response = live(bob_client)
    assert response.status_code == 286  # nothing live: the poll stops...
    row = _row(response.content.decode(), instance.pk)  # ...showing how it ended
    assert 'data-status="stopped"' in row and "Shut down by bob." in row
    assert AuditEvent.objects.filter(action="instance.shutdown").exists()


def test_shutdown_error_is_shown(
    bob_client: Client,
    team: Team,
    bob: User,
    bytez: Credential,
    sim: BytezSimulator,
    clock: Clock,
    nudges: list,
) -> None:
    instance = make_running(team, bytez, bob, clock)
    sim.add_fault(status=500, path="/model/delete")
    bob_client.post(reverse("instance_shutdown", args=[instance.pk]))
    tasks.instance_stop(instance.pk)  # the background task
    row = _row(live(bob_client).content.decode(), instance.pk)
    assert "Shut down failed: Bytez had a server error (HTTP 500)" in row
    assert 'data-status="running"' in row


def test_admin_action_shuts_instances_down(
    alice_client: Client,
    team: Team,
    alice: User,
    bytez: Credential,
    sim: BytezSimulator,
    clock: Clock,
    nudges: list,
) -> None:
    User.objects.filter(pk=alice.pk).update(is_staff=True, is_superuser=True)
    instance = make_running(team, bytez, alice, clock)
    page(alice_client, f"/admin/dashboard/modelinstance/{instance.pk}/change/")
    response = alice_client.post(
        "/admin/dashboard/modelinstance/",
        {"action": "shutdown_instances", "_selected_action": [instance.pk]},
    )
    assert response.status_code == 302
    assert fresh(instance).status == "stopping" and sim.count("POST /model/delete") == 0
    tasks.instance_stop(instance.pk)  # the background task
    assert fresh(instance).status == "stopped" and sim.count("POST /model/delete") == 1


def test_external_instances_appear(
    bob_client: Client,
    team: Team,
    bytez: Credential,
    sim: BytezSimulator,
    clock: Clock,
    nudges: list,
) -> None:
    with BytezProvider(secret=sim.token, base_url=sim.base_url) as provider:
        provider.load_model(NEO)
    clock.advance(5)
    response = bob_client.post(reverse("instance_reconcile"))
    assert response.status_code == 302
    assert nudges == [("dashboard.tasks.instances_reconcile", bytez.pk)]
    instances_reconcile(bytez.pk)  # what the task does
    body = live(bob_client).content.decode()
    row = _row(body, ModelInstance.objects.get(model=NEO).pk)
    assert NEO in row and ">external<" in row and 'data-status="running"' in row


def test_home_panel_shows_live_instances(
    bob_client: Client,
    team: Team,
    bob: User,
    bytez: Credential,
    sim: BytezSimulator,
    clock: Clock,
    nudges: list,
) -> None:
    body = page(bob_client, reverse("home"))
    assert 'id="instance-panel"' in body and "No model instance is live" in body
    instance = make_running(team, bytez, bob, clock)
    body = page(bob_client, reverse("home"))
    assert 'id="instance-panel"' in body and GPT2 in body
    assert f'hx-get="{reverse("instance_panel")}"' in body and "data-poll" in body
    response = bob_client.get(reverse("instance_panel"), headers=HTMX)
    assert response.status_code == 200 and 'data-status="running"' in response.content.decode()
    bob_client.post(reverse("instance_shutdown", args=[instance.pk]))
    response = bob_client.get(reverse("instance_panel"), headers=HTMX)
    assert response.status_code == 200 and 'data-status="stopping"' in response.content.decode()
    tasks.instance_stop(instance.pk)  # the background task
    response = bob_client.get(reverse("instance_panel"), headers=HTMX)
    assert response.status_code == 286
    assert "No model instance is live" in response.content.decode()


def test_home_has_no_panel_without_bytez(bob_client: Client, team: Team) -> None:
    make_credential(team, "together")
    assert 'id="instance-panel"' not in page(bob_client, reverse("home"))


# --- the catalog -----------------------------------------------------------------------------


def test_catalog_of_5000_models_search_and_pages(
    alice_client: Client,
    bob_client: Client,
    team: Team,
    bytez: Credential,
    sim: BytezSimulator,
    clock: Clock,
    nudges: list,
) -> None:
    sim.model_count = 5000
    url = reverse("model_catalog", args=[bytez.pk])
    body = page(bob_client, url)
    assert "Fetching the model list from Bytez in the background" in body
    assert nudges == [("dashboard.tasks.catalog_refresh", bytez.pk, False)]
    since = re.search(r"since=([0-9.]+)", body).group(1)
    waiting = bob_client.get(url, {"since": since}, headers=HTMX)
    assert waiting.status_code == 200 and "data-poll" in waiting.content.decode()

    assert catalog_refresh(bytez.pk) == "refreshed"  # the task
    done = bob_client.get(url, {"since": since}, headers=HTMX)
    assert done.status_code == 286 and "5000 models" in done.content.decode()

    names = [catalog_entry(i)["name"] for i in range(5000)]
    expected = sorted(n for n in names if "model-12" in n.lower())
    body = page(bob_client, url, data={"q": "MODEL-12"})
    assert f"{len(expected)} models matching “MODEL-12”" in body
    rows = re.findall(r'<td class="mono">([^<]+)</td>', body)
    assert rows == expected[:50]
    assert "q=MODEL-12&amp;page=2" in body and "Page 1 of 3" in body
    body = page(bob_client, url, data={"q": "MODEL-12", "page": "3"})
    assert re.findall(r'<td class="mono">([^<]+)</td>', body) == expected[100:]
    partial = bob_client.get(url, {"q": "model-12"}, headers=HTMX).content.decode()
    assert partial.lstrip().startswith('<div id="catalog-results"')

    nudges.clear()
    for _ in range(3):
        page(bob_client, url)
    assert nudges == [] and sim.count("GET /model/list") == 1  # fresh: not fetched again


def test_catalog_refresh_now_respects_the_minimum_interval(
    alice_client: Client,
    bob_client: Client,
    team: Team,
    bytez: Credential,
    sim: BytezSimulator,
    clock: Clock,
    nudges: list,
) -> None:
    catalog_refresh(bytez.pk)
    refresh = reverse("model_catalog_refresh", args=[bytez.pk])
    assert bob_client.post(refresh).status_code == 403
    assert "Refresh now" not in page(bob_client, reverse("model_catalog", args=[bytez.pk]))
    assert "Refresh now" in page(alice_client, reverse("model_catalog", args=[bytez.pk]))
    response = alice_client.post(refresh)
    assert "try again in" in flash(response) and nudges == []
    clock.advance(61)
    response = alice_client.post(refresh)
    assert response.status_code == 302 and "since=" in response["Location"]
    assert nudges == [("dashboard.tasks.catalog_refresh", bytez.pk, True)]
    assert catalog_refresh(bytez.pk, force=True) == "refreshed"
    assert sim.count("GET /model/list") == 2


def test_catalog_error_is_shown(
    bob_client: Client, team: Team, bytez: Credential, sim: BytezSimulator, nudges: list
) -> None:
    sim.add_fault(status=401, path="/model/list")
    catalog_refresh(bytez.pk)
    body = page(bob_client, reverse("model_catalog", args=[bytez.pk]))
    assert "Model catalog refresh failed: Bytez refused the credential" in body
    assert nudges == []  # not asked again on every view


def test_request_from_the_catalog(
    bob_client: Client, team: Team, bytez: Credential, sim: BytezSimulator, nudges: list
) -> None:
    catalog_refresh(bytez.pk)
    body = page(bob_client, reverse("model_catalog", args=[bytez.pk]), data={"q": "model-3"})
    assert f'name="model" value="{NEO}"' in body
    bob_client.post(reverse("instance_request"), {"credential": bytez.pk, "model": NEO})
    instance = ModelInstance.objects.get()
    assert (instance.model, instance.concurrency) == (NEO, None)  # loaded from the page later
    body = page(bob_client, reverse("model_catalog", args=[bytez.pk]), data={"q": "model-3"})
    assert "live instance" in body


def test_catalog_of_providers_without_a_list(bob_client: Client, team: Team, nudges: list) -> None:
    mymagic = make_credential(team, "mymagic")
    body = page(bob_client, reverse("model_catalog", args=[mymagic.pk]), data={"q": "llama3"})
    assert "llama3_70b" in body and "The models MyMagic documents" in body
    assert "Refresh now" not in body and nudges == []
    together = make_credential(team, "together")
    make_job(together, model="my-org/my-model")
    body = page(bob_client, reverse("model_catalog", args=[together.pk]), data={"q": "my-org"})
    assert "my-org/my-model" in body


# --- access ----------------------------------------------------------------------------------


def test_another_teams_instances_and_catalog_are_404(
    client: Client,
    charlie: User,
    other_team: Team,
    team: Team,
    alice: User,
    bytez: Credential,
    sim: BytezSimulator,
    clock: Clock,
    nudges: list,
) -> None:
    instance = make_running(team, bytez, alice, clock)
    catalog_refresh(bytez.pk)
    client.force_login(charlie)
    assert client.get(reverse("model_catalog", args=[bytez.pk])).status_code == 404
    assert client.post(reverse("model_catalog_refresh", args=[bytez.pk])).status_code == 404
    for name in ("instance_load", "instance_shutdown"):
        assert client.post(reverse(name, args=[instance.pk])).status_code == 404
    assert GPT2 not in page(client, reverse("instance_list"))
    assert GPT2 not in client.get(reverse("instance_panel")).content.decode()
    response = client.post(reverse("instance_request"), {"credential": bytez.pk, "model": NEO})
    assert response.status_code == 200  # the form refuses a credential of another team
    assert fresh(instance).status == "running" and ModelInstance.objects.count() == 1


def test_secret_in_no_instance_page(
    alice_client: Client,
    team: Team,
    alice: User,
    bytez: Credential,
    sim: BytezSimulator,
    clock: Clock,
    nudges: list,
) -> None:
    User.objects.filter(pk=alice.pk).update(is_staff=True, is_superuser=True)
    instance = make_running(team, bytez, alice, clock)
    catalog_refresh(bytez.pk)
    stored = Credential.objects.get(pk=bytez.pk).secret
    for url in (
        reverse("instance_list"),
        reverse("instance_panel"),
        reverse("model_catalog", args=[bytez.pk]),
        "/admin/dashboard/modelinstance/",
        f"/admin/dashboard/modelinstance/{instance.pk}/change/",
    ):
        body = alice_client.get(url).content.decode()
        assert SECRET not in body and stored not in body, url


def test_deadline_passed_shows_the_reason(
    bob_client: Client,
    team: Team,
    bob: User,
    bytez: Credential,
    sim: BytezSimulator,
    clock: Clock,
    nudges: list,
) -> None:
    sim.load_seconds = 100_000
    from dashboard.instances.services import instance_request

    instance = instance_request(team, bytez, GPT2, bob)
    poll(bytez, 5)
    clock.advance(15 * 60)
    poll(bytez, 1)
    assert fresh(instance).status == "failed"
    row = _row(live(bob_client).content.decode(), instance.pk)
    assert "did not finish loading within 15 min" in row
    assert fresh(instance).ended_at - fresh(instance).created_at > timedelta(minutes=15)
