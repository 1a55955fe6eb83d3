"""Shutting an instance down from the page or the admin is a task, with a
visible ``stopping`` status: running/loading -> stopping -> stopped, or back
with the error, or failed. The poller leaves a stop alone (or finishes it),
the sweep takes up a stop whose worker died, and the API keeps its
synchronous shutdown."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from dashboard import status as s
from dashboard import tasks
from dashboard.instances import services
from dashboard.instances.gate import bytez_job_gate, note_runs
from dashboard.instances.services import InstanceError, instance_request, instance_shutdown
from dashboard.instances.sweep import instances_sweep
from dashboard.models import AuditEvent, Credential, ModelInstance
from dashboard.status import InstanceStatus as I
from providers.simulators.bytez import BytezSimulator
from tests.conftest import make_job
from tests.instances.test_instances import GPT2, Clock, fresh, make_running, poll

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}
STOP_TASK = "dashboard.tasks.instance_stop"


# --- the rules -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "new", "allowed"),
    [
        (I.RUNNING, I.STOPPING, True),
        (I.LOADING, I.STOPPING, True),
        (I.REQUESTED, I.STOPPING, False),
        (I.STOPPING, I.STOPPED, True),
        (I.STOPPING, I.FAILED, True),
        (I.STOPPING, I.EXPIRED, True),
        (I.STOPPING, I.RUNNING, True),  # back: the shutdown call failed
        (I.STOPPING, I.LOADING, True),
        (I.STOPPING, I.REQUESTED, False),
        (I.STOPPED, I.STOPPING, False),
    ],
)
def test_stopping_moves(current: str, new: str, allowed: bool) -> None:
    assert s.instance_can_move(current, new) is allowed


def test_only_the_shutdown_service_moves_a_stop_back() -> None:
    """The WHERE clause every other writer uses leaves a stop under way alone,
    so a check or a run that still sees the instance running never undoes it."""
    assert I.STOPPING not in s.instance_sources_for(I.RUNNING)
    assert I.STOPPING not in s.instance_sources_for(I.LOADING)
    assert I.STOPPING in s.instance_sources_for(I.STOPPED)
    assert I.STOPPING in s.instance_sources_for(I.FAILED)
    assert I.STOPPING in s.INSTANCE_LIVE


# --- from the page: a task, shown live ------------------------------------------------------------


@pytest.fixture
def bob_client(bob: User, team: Any) -> Client:
    client = Client()
    client.force_login(bob)
    return client


def _flash(response: Any) -> str:
    return " ".join(str(m) for m in response.wsgi_request._messages)


def test_shutdown_from_the_page_is_a_task_shown_live(
    bob_client: Client,
    team: Any,
    bob: User,
    bytez: Credential,
    sim: BytezSimulator,
    clock: Clock,
    nudges: list,
    django_capture_on_commit_callbacks: Any,
) -> None:
    instance = make_running(team, bytez, bob, clock)
    nudges.clear()
    with django_capture_on_commit_callbacks(execute=True):
        response = bob_client.post(reverse("instance_shutdown", args=[instance.pk]))
    assert response.status_code == 302 and "Shutting down" in _flash(response)
    assert sim.count("POST /model/delete") == 0  # no provider call inside the request
    assert fresh(instance).status == I.STOPPING
    assert (STOP_TASK, instance.pk) in nudges
    assert AuditEvent.objects.filter(action="instance.shutdown", actor=bob).exists()

    live = bob_client.get(reverse("instance_list"), headers=HTMX)
    body = live.content.decode()
    assert live.status_code == 200  # still live: the table keeps polling
    assert 'data-status="stopping"' in body and "Stopping…" in body
    assert f'action="/instances/{instance.pk}/shutdown"' not in body  # no second click

    assert tasks.instance_stop(instance.pk) == "stopped"
    instance = fresh(instance)
    assert (instance.status, instance.message) == (I.STOPPED, "Shut down by bob.")
    assert sim.count("POST /model/delete") == 1 and sim.instances == {}
    assert bob_client.get(reverse("instance_list"), headers=HTMX).status_code == 286
    assert tasks.instance_stop(instance.pk) == "done"  # a redelivered task does nothing
    assert sim.count("POST /model/delete") == 1


def test_admin_action_shuts_down_in_the_background(
    client: Client,
    team: Any,
    alice: User,
    bytez: Credential,
    sim: BytezSimulator,
    clock: Clock,
    nudges: list,
    django_capture_on_commit_callbacks: Any,
) -> None:
    User.objects.filter(pk=alice.pk).update(is_staff=True, is_superuser=True)
    instance = make_running(team, bytez, alice, clock)
    client.force_login(alice)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            "/admin/dashboard/modelinstance/",
            {"action": "shutdown_instances", "_selected_action": [instance.pk]},
            follow=True,
        )
    assert "Shutting down 1 instance" in response.content.decode()
    assert fresh(instance).status == I.STOPPING and sim.count("POST /model/delete") == 0
    assert (STOP_TASK, instance.pk) in nudges
    tasks.instance_stop(instance.pk)
    assert fresh(instance).status == I.STOPPED


def test_a_failed_stop_goes_back_with_the_error_or_fails(
    team: Any, alice: User, bytez: Credential, sim: BytezSimulator, clock: Clock, nudges: list
) -> None:
    instance = make_running(team, bytez, alice, clock)
    services.instance_stop_begin(instance, alice)
    sim.add_fault(status=503, path="/model/delete")
    assert tasks.instance_stop(instance.pk) == "running"
    instance = fresh(instance)
    assert instance.status == I.RUNNING and instance.error.startswith("Shut down failed: Bytez")
    assert GPT2 in sim.instances

    services.instance_stop_begin(instance, alice)
    assert fresh(instance).error == ""  # a new attempt clears the old error
    sim.add_fault(status=401, path="/model/delete")
    assert tasks.instance_stop(instance.pk) == "failed"
    assert "refused the credential" in fresh(instance).error


def test_a_stop_of_a_loading_instance_goes_back_to_loading(
    team: Any, alice: User, bytez: Credential, sim: BytezSimulator, clock: Clock, nudges: list
) -> None:
    instance = instance_request(team, bytez, GPT2, alice)
    poll(bytez, 4)
    assert fresh(instance).status == I.LOADING
    services.instance_stop_begin(fresh(instance), alice)
    sim.add_fault(status=500, path="/model/delete")
    tasks.instance_stop(instance.pk)
    assert fresh(instance).status == I.LOADING


def test_checks_and_runs_leave_a_stop_alone(
    team: Any, alice: User, bytez: Credential, sim: BytezSimulator, clock: Clock, nudges: list
) -> None:
    instance = make_running(team, bytez, alice, clock)
    services.instance_stop_begin(instance, alice)
    note_runs(make_job(bytez, model=GPT2), 1)  # a run that finished meanwhile
    assert fresh(instance).status == I.STOPPING
    verdict = bytez_job_gate(make_job(bytez, model=GPT2))
    assert verdict is not None and verdict[0] == "fail" and "being shut down" in verdict[1]
    with pytest.raises(InstanceError, match="already has an instance"):
        instance_request(team, bytez, GPT2, alice)
    # The poll loop, finding the stop due (its task lost), finishes it.
    clock.advance(services.STOP_CLAIM_SECONDS + 1)
    poll(bytez, 2)
    assert fresh(instance).status == I.STOPPED and sim.instances == {}


def test_the_sweep_takes_up_a_stop_whose_worker_died(
    team: Any, alice: User, bytez: Credential, sim: BytezSimulator, clock: Clock, nudges: list
) -> None:
    instance = make_running(team, bytez, alice, clock)
    services.instance_stop_begin(instance, alice)
    # A worker claimed the stop, then was killed before the provider call.
    assert services.instance_claim(fresh(instance), clock.wall())
    nudges.clear()
    assert instances_sweep()["instance_stops"] == 0  # its claim still holds
    assert tasks.instance_stop(instance.pk) == "busy"
    clock.advance(services.STOP_CLAIM_SECONDS + 20)
    counts = instances_sweep()
    assert counts["instance_stops"] == 1 and (STOP_TASK, instance.pk) in nudges
    assert tasks.instance_stop(instance.pk) == "stopped"
    assert fresh(instance).status == I.STOPPED


def test_the_api_shutdown_stays_synchronous(
    team: Any, alice: User, bytez: Credential, sim: BytezSimulator, clock: Clock, nudges: list
) -> None:
    instance = make_running(team, bytez, alice, clock)
    services.instance_stop_begin(instance, alice)  # a stop from the page is under way
    instance = instance_shutdown(fresh(instance), alice)  # the API's DELETE
    assert instance.status == I.STOPPED and sim.count("POST /model/delete") == 1


def test_a_stop_in_progress_blocks_deleting_the_credential(
    team: Any, alice: User, bytez: Credential, sim: BytezSimulator, clock: Clock, nudges: list
) -> None:
    instance = make_running(team, bytez, alice, clock)
    services.instance_stop_begin(instance, alice)
    assert "still has 1 live model instance" in bytez.delete_blocker()
    assert ModelInstance.objects.filter(status=I.STOPPING).count() == 1
    assert timedelta(0) <= fresh(instance).next_check_at - clock.wall()


def test_a_failed_stop_goes_back_through_the_rules_and_is_no_news(
    team: Any, alice: User, bytez: Credential, sim: BytezSimulator, clock: Clock, nudges: list
) -> None:
    """The way back from a failed stop is a move of the status rules
    (``instance_sources_for(..., stop_revert=True)``), keeps the instance's
    running time and announces nothing: it never stopped running."""
    from dashboard.core import events

    instance = make_running(team, bytez, alice, clock)
    since = fresh(instance).running_since
    seen: list[str] = []

    def record(sender: Any, *, instance_id: int, status: str, **kwargs: Any) -> None:
        seen.append(status)

    events.instance_changed.connect(record, dispatch_uid="test_stop_revert")
    try:
        services.instance_stop_begin(instance, alice)
        sim.add_fault(status=503, path="/model/delete")
        assert tasks.instance_stop(instance.pk) == "running"
    finally:
        events.instance_changed.disconnect(dispatch_uid="test_stop_revert")
    assert seen == [I.STOPPING]
    assert fresh(instance).running_since == since
    assert s.instance_sources_for(I.RUNNING, stop_revert=True) == [I.STOPPING]
    with pytest.raises(s.TransitionError):
        s.instance_sources_for(I.STOPPED, stop_revert=True)
