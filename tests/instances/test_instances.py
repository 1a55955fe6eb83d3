"""Model instances: services and background work against the Bytez simulator
over loopback, with the simulator's clock and the dashboard's driven together
(never slept on)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from dashboard import tasks
from dashboard.core import clock as dashboard_clock
from dashboard.instances import catalog
from dashboard.instances import poller as instance_poller
from dashboard.instances import services as instance_services
from dashboard.instances.catalog import catalog_refresh
from dashboard.instances.gate import bytez_job_gate, note_runs
from dashboard.instances.poller import instances_poll, instances_reconcile
from dashboard.instances.services import (
    InstanceError,
    instance_load,
    instance_request,
    instance_shutdown,
)
from dashboard.instances.sweep import instances_sweep
from dashboard.models import Credential, ModelCatalogEntry, ModelInstance
from providers import JobSpec
from providers.bytez import BytezProvider
from providers.simulators.bytez import BytezSimulator
from tests.conftest import make_credential, make_job

pytestmark = pytest.mark.django_db

GPT2 = "openai-community/gpt2"
NEO = "org-0/model-3"


class Clock:
    """Monotonic seconds for the simulator and the poll loop, and the matching
    wall-clock time for the dashboard."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.start = 1000.0
        self.base = timezone.now()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def wall(self) -> datetime:
        return self.wall_at(self.now)

    def wall_at(self, at: float) -> datetime:
        return self.base + timedelta(seconds=at - self.start)

    def reset(self) -> None:
        self.now = self.start
        self.base = timezone.now()


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def running_sim(clock: Clock) -> Iterator[BytezSimulator]:
    # One server per module: stopping one takes half a second.
    with BytezSimulator(
        load_seconds=5, request_seconds=3, stream_chunk_delay=0.001, clock=clock
    ) as sim:
        yield sim


@pytest.fixture
def sim(
    running_sim: BytezSimulator, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> BytezSimulator:
    clock.reset()
    running_sim.instances.clear()
    running_sim.job_requests.clear()
    running_sim.faults.clear()
    running_sim.requests.clear()
    running_sim.model_count = 50
    running_sim.load_seconds = 5
    running_sim.request_seconds = 3
    monkeypatch.setattr(dashboard_clock, "sleep", clock.advance)
    monkeypatch.setattr(dashboard_clock, "monotonic", clock)
    monkeypatch.setattr(dashboard_clock, "now", clock.wall)
    # The simulator dates its answers from the real wall clock; tie them to ours.
    monkeypatch.setattr(running_sim, "wall", clock.wall_at)
    return running_sim


@pytest.fixture
def bytez(team: Any, sim: BytezSimulator) -> Credential:
    return make_credential(team, "bytez", base_url=sim.base_url, name="Bytez main")


def poll(credential: Credential, seconds: float) -> int:
    return instances_poll(credential.pk, budget=seconds)


def fresh(instance: ModelInstance) -> ModelInstance:
    instance.refresh_from_db()
    return instance


def make_running(
    team: Any, credential: Credential, user: Any, clock: Clock, model: str = GPT2, **load: Any
) -> ModelInstance:
    instance = instance_request(team, credential, model, user, **load)
    poll(credential, 4)  # requested -> available -> loading
    clock.advance(5)
    poll(credential, 2)  # -> running
    instance = fresh(instance)
    assert instance.status == "running", (instance.status, instance.error)
    return instance


# --- the lifecycle ----------------------------------------------------------------------------


def test_request_becomes_available_then_load_runs(
    team: Any, alice: Any, bytez: Credential, sim: BytezSimulator, clock: Clock, nudges: list
) -> None:
    instance = instance_request(team, bytez, GPT2, alice, load=False)
    assert (instance.status, instance.concurrency, instance.external) == ("requested", None, False)
    assert instance.deadline_at == clock.wall() + timedelta(minutes=30)

    poll(bytez, 1.5)
    instance = fresh(instance)
    assert instance.status == "requested"
    assert instance.provider_status == "Model is already queued"
    assert not instance_services.instance_is_available(instance)

    poll(bytez, 5)
    instance = fresh(instance)
    assert instance.status == "requested"  # available, but not loaded
    assert instance.provider_status == "Model available"
    assert instance_services.instance_is_available(
        instance
    ) and not instance_services.instance_wants_load(instance)
    assert instance.message == "Model available: load it."
    assert sim.count("POST /model/load") == 0 and sim.instances == {}
    asked = sim.count("POST /model/job")
    poll(bytez, 5)  # nothing to do until someone loads it
    assert sim.count("POST /model/job") == asked

    instance = instance_load(instance, alice, concurrency=2, expiration_seconds=300)
    assert instance_services.instance_wants_load(instance)
    with pytest.raises(InstanceError):
        instance_load(instance, alice)  # once is enough
    poll(bytez, 2)
    instance = fresh(instance)
    assert instance.status == "loading", instance.error
    assert instance.provider_status == "LOADING" and instance.concurrency == 2
    assert clock.wall() < instance.deadline_at <= clock.wall() + timedelta(minutes=15)
    assert sim.instances[GPT2].concurrency == 2 and sim.instances[GPT2].expiration == 300

    clock.advance(5)
    poll(bytez, 2)
    instance = fresh(instance)
    assert instance.status == "running"
    assert (instance.provider_status, instance.inferences, instance.expiration_seconds) == (
        "RUNNING",
        0,
        300,
    )
    assert instance.running_since is not None and instance.deadline_at is None
    assert abs((instance.expires_at - (clock.wall() + timedelta(seconds=293))).total_seconds()) < 1
    assert sim.count("POST /model/load") == 1


def test_api_request_loads_as_soon_as_available(
    team: Any, alice: Any, bytez: Credential, sim: BytezSimulator, clock: Clock, nudges: list
) -> None:
    instance = instance_request(team, bytez, GPT2, alice, concurrency=3, expiration_seconds=120)
    poll(bytez, 4)
    instance = fresh(instance)
    assert instance.status == "loading" and sim.instances[GPT2].expiration == 120
    clock.advance(5)
    poll(bytez, 1)
    assert fresh(instance).status == "running" and fresh(instance).concurrency == 3


def test_request_validation(team: Any, other_team: Any, alice: Any, bytez: Credential) -> None:
    together = make_credential(team, "together")
    with pytest.raises(InstanceError, match="has no model instances") as info:
        instance_request(team, together, GPT2, alice)
    assert info.value.field == "credential"
    with pytest.raises(InstanceError, match="No such credential"):
        instance_request(other_team, bytez, GPT2, alice)
    with pytest.raises(InstanceError, match="required"):
        instance_request(team, bytez, "  ", alice)
    with pytest.raises(InstanceError, match="between 1 and 100"):
        instance_request(team, bytez, GPT2, alice, concurrency=0)
    with pytest.raises(InstanceError, match="between 60 and"):
        instance_request(team, bytez, GPT2, alice, expiration_seconds=5)
    first = instance_request(team, bytez, GPT2, alice)
    with pytest.raises(InstanceError, match="already has an instance") as info:
        instance_request(team, bytez, GPT2, alice)
    assert info.value.existing == first


def test_request_nudges_the_poller_after_commit(
    team: Any, alice: Any, bytez: Credential, nudges: list, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        instance_request(team, bytez, GPT2, alice)
    assert nudges == [("dashboard.tasks.instances_poll", bytez.pk)]


def test_runs_count_and_move_the_expiry(
    team: Any, alice: Any, bytez: Credential, sim: BytezSimulator, clock: Clock, nudges: list
) -> None:
    instance = make_running(team, bytez, alice, clock, expiration_seconds=600)
    job = make_job(bytez, ["Once upon a time"], model=GPT2)
    clock.advance(100)
    with BytezProvider(secret=sim.token, base_url=sim.base_url) as provider:
        provider.run(JobSpec(model=GPT2, prompts=["Once upon a time"]), [0])
    note_runs(job, 1)
    instance = fresh(instance)
    assert instance.inferences == 1
    assert instance.expires_at == clock.wall() + timedelta(seconds=600)

    clock.advance(10)
    poll(bytez, 1)  # the provider's own count agrees
    instance = fresh(instance)
    assert instance.inferences == sim.instances[GPT2].inferences == 1
    assert abs((instance.expires_at - (clock.wall() + timedelta(seconds=590))).total_seconds()) < 5
    note_runs(make_job(make_credential(team), model=GPT2), 5)  # another credential: no effect
    assert fresh(instance).inferences == 1


def test_left_alone_it_expires(
    team: Any, alice: Any, bytez: Credential, sim: BytezSimulator, clock: Clock, nudges: list
) -> None:
    instance = make_running(team, bytez, alice, clock, expiration_seconds=60)
    clock.advance(30)
    poll(bytez, 1)
    assert fresh(instance).status == "running"
    clock.advance(31)
    poll(bytez, 1)
    instance = fresh(instance)
    assert instance.status == "expired"
    assert instance.message == "Expired: no run within its expiration period (1 min)."
    assert instance.ended_at is not None and instance.next_check_at is None
    assert poll(bytez, 5) == 0  # nothing live: the loop ends at once


def test_gone_before_expiry_was_stopped_elsewhere(
    team: Any, alice: Any, bytez: Credential, sim: BytezSimulator, clock: Clock, nudges: list
) -> None:
    instance = make_running(team, bytez, alice, clock)
    del sim.instances[GPT2]
    clock.advance(10)
    poll(bytez, 1)
    instance = fresh(instance)
    assert (instance.status, instance.message) == ("stopped", "Stopped outside the dashboard.")


def test_shutdown(
    team: Any, alice: Any, bytez: Credential, sim: BytezSimulator, clock: Clock, nudges: list
) -> None:
    instance = make_running(team, bytez, alice, clock)
    instance = instance_shutdown(instance, alice)
    assert (instance.status, instance.message) == ("stopped", "Shut down by alice.")
    assert sim.instances == {} and sim.count("POST /model/delete") == 1
    assert instance_shutdown(instance, alice).status == "stopped"  # terminal: nothing sent
    assert sim.count("POST /model/delete") == 1

    requested = instance_request(team, bytez, GPT2, alice)
    requested = instance_shutdown(requested, alice)
    assert requested.status == "stopped" and "before it was loaded" in requested.message
    assert sim.count("POST /model/delete") == 1


def test_a_load_that_lands_after_a_stop_is_undone(
    team: Any, alice: Any, bytez: Credential, sim: BytezSimulator, clock: Clock, nudges: list
) -> None:
    instance = instance_request(team, bytez, GPT2, alice)
    poll(bytez, 0.5)  # Bytez starts preparing it
    clock.advance(3)
    stale = ModelInstance.objects.get(pk=instance.pk)
    instance_shutdown(instance, alice)  # stopped while the poller was about to load it
    with BytezProvider(secret=sim.token, base_url=sim.base_url) as provider:
        instance_poller.instance_check(stale, provider)
    assert fresh(instance).status == "stopped"
    assert sim.count("POST /model/load") == 1 and sim.instances == {}


def test_a_load_asked_during_a_check_is_not_lost(
    team: Any, alice: Any, bytez: Credential, sim: BytezSimulator, clock: Clock, nudges: list
) -> None:
    instance = instance_request(team, bytez, GPT2, alice, load=False)
    poll(bytez, 0.5)
    clock.advance(3)
    stale = ModelInstance.objects.get(pk=instance.pk)  # the poller read the row...
    instance_load(instance, alice)  # ...then the user clicked Load
    with BytezProvider(secret=sim.token, base_url=sim.base_url) as provider:
        instance_poller.instance_check(stale, provider)  # Bytez says available
    instance = fresh(instance)
    assert (
        instance_services.instance_wants_load(instance) and instance.next_check_at <= clock.wall()
    )
    poll(bytez, 0.5)
    assert fresh(instance).status == "loading"


def test_reconciliation_adopts_instances_started_elsewhere(
    team: Any, alice: Any, bytez: Credential, sim: BytezSimulator, clock: Clock, nudges: list
) -> None:
    with BytezProvider(secret=sim.token, base_url=sim.base_url) as provider:
        provider.load_model(NEO, concurrency=2)
    clock.advance(5)
    assert instances_reconcile(bytez.pk) == 1
    external = ModelInstance.objects.get(model=NEO)
    assert (external.status, external.external, external.concurrency) == ("running", True, 2)
    assert external.team == team and external.running_since is not None
    assert instances_reconcile(bytez.pk) == 0  # seen once, recorded once
    assert ModelInstance.objects.filter(model=NEO).count() == 1

    sim.add_fault(status=500, path="/model/instances")
    assert instances_reconcile(bytez.pk) == 0  # a failing list is only a missed discovery


def test_poll_loop_reconciles_and_enqueues_its_successor(
    team: Any, alice: Any, bytez: Credential, sim: BytezSimulator, clock: Clock, nudges: list
) -> None:
    with BytezProvider(secret=sim.token, base_url=sim.base_url) as provider:
        provider.load_model(NEO)
    clock.advance(5)
    assert poll(bytez, 0.5) == 0  # nothing live yet: returns before asking anything
    instance_request(team, bytez, GPT2, alice, load=False)
    poll(bytez, 2)
    assert ModelInstance.objects.filter(model=NEO, external=True, status="running").exists()
    nudges.clear()
    poll(bytez, 15)  # a running instance remains: the loop hands over to a successor
    assert nudges == [("dashboard.tasks.instances_poll", bytez.pk)]
    # Every 10 s while running, not every second.
    before = sim.count("POST /model/status")
    poll(bytez, 30)
    assert 2 <= sim.count("POST /model/status") - before <= 4


def test_a_loop_that_loses_a_claim_stops(
    team: Any, alice: Any, bytez: Credential, sim: BytezSimulator, nudges: list, monkeypatch: Any
) -> None:
    instance = instance_request(team, bytez, GPT2, alice)
    stale = ModelInstance.objects.get(pk=instance.pk)
    assert instance_poller.claim(instance, dashboard_clock.now()) is True
    assert instance_poller.claim(stale, dashboard_clock.now()) is False  # another poller took it
    ModelInstance.objects.filter(pk=instance.pk).update(next_check_at=None)
    monkeypatch.setattr(instance_poller, "claim", lambda *args: False)
    assert poll(bytez, 10) == 0
    assert nudges == [] and sim.count("POST /model/job") == 0


# --- provider errors end readable ------------------------------------------------------------


def advance_to(
    path: str, team: Any, user: Any, credential: Credential, clock: Clock
) -> ModelInstance:
    """A requested instance whose next check calls ``path``."""
    instance = instance_request(team, credential, GPT2, user)
    if path == "/model/job":
        return instance
    poll(credential, 0.5)  # Bytez starts preparing it...
    clock.advance(3)  # ...and has it available: the next check loads it
    if path == "/model/status":
        poll(credential, 0.5)  # loaded: the next check asks for its status
        clock.advance(1)
    return instance


@pytest.mark.parametrize(
    ("path", "step"),
    [("/model/job", "Request"), ("/model/load", "Load"), ("/model/status", "Status check")],
)
def test_transient_errors_are_shown_then_retried(
    team: Any,
    alice: Any,
    bytez: Credential,
    sim: BytezSimulator,
    clock: Clock,
    nudges: list,
    path: str,
    step: str,
) -> None:
    instance = advance_to(path, team, alice, bytez, clock)
    sim.add_fault(status=500, path=path, times=1)
    poll(bytez, 0.5)
    instance = fresh(instance)
    assert instance.status in ("requested", "loading")
    assert instance.error == (
        f"{step} failed: Bytez had a server error (HTTP 500): simulated fault"
    )
    clock.advance(5)
    poll(bytez, 0.5)
    instance = fresh(instance)
    assert instance.error == "" and instance.status in ("requested", "loading", "running")


@pytest.mark.parametrize(
    ("path", "step"),
    [("/model/job", "Request"), ("/model/load", "Load"), ("/model/status", "Status check")],
)
def test_auth_errors_fail_the_instance(
    team: Any,
    alice: Any,
    bytez: Credential,
    sim: BytezSimulator,
    clock: Clock,
    nudges: list,
    path: str,
    step: str,
) -> None:
    instance = advance_to(path, team, alice, bytez, clock)
    sim.add_fault(status=401, body='{"error": "Invalid API key"}', path=path, times=5)
    poll(bytez, 0.5)
    instance = fresh(instance)
    assert instance.status == "failed"
    assert instance.error.startswith(f"{step} failed: Bytez refused the credential")
    assert "Invalid API key" in instance.error and instance.ended_at is not None


def test_refused_request_fails_with_the_providers_words(
    team: Any, alice: Any, bytez: Credential, sim: BytezSimulator, nudges: list
) -> None:
    instance = instance_request(team, bytez, "no/such-model", alice)
    sim.add_fault(
        status=200,
        body='{"success": false, "message": "Model not found on the Hub"}',
        path="/model/job",
    )
    poll(bytez, 0.5)
    instance = fresh(instance)
    assert instance.status == "failed"
    assert (
        instance.error
        == "Request failed: Bytez refused to prepare no/such-model: Model not found on the Hub"
    )


def test_shutdown_errors(
    team: Any, alice: Any, bytez: Credential, sim: BytezSimulator, clock: Clock, nudges: list
) -> None:
    instance = make_running(team, bytez, alice, clock)
    sim.add_fault(status=503, path="/model/delete")
    instance = instance_shutdown(instance, alice)
    assert instance.status == "running"
    assert (
        instance.error == "Shut down failed: Bytez had a server error (HTTP 503): simulated fault"
    )
    assert GPT2 in sim.instances
    sim.add_fault(status=401, path="/model/delete")
    instance = instance_shutdown(instance, alice)
    assert instance.status == "failed" and "refused the credential" in instance.error


def test_already_gone_counts_as_shut_down(
    team: Any, alice: Any, bytez: Credential, sim: BytezSimulator, clock: Clock, nudges: list
) -> None:
    instance = make_running(team, bytez, alice, clock)
    del sim.instances[GPT2]
    assert instance_shutdown(instance, alice).status == "stopped"


def test_undecryptable_secret_fails_live_instances(
    team: Any, alice: Any, bytez: Credential, sim: BytezSimulator, nudges: list
) -> None:
    instance = instance_request(team, bytez, GPT2, alice)
    Credential.objects.filter(pk=bytez.pk).update(base_url="http://169.254.169.254")
    poll(bytez, 1)
    instance = fresh(instance)
    assert instance.status == "failed" and instance.error.startswith("Cannot use the credential")


# --- deadlines and the sweep -------------------------------------------------------------------


def test_deadline_moves_stuck_loading_to_failed(
    team: Any, alice: Any, bytez: Credential, sim: BytezSimulator, clock: Clock, nudges: list
) -> None:
    sim.load_seconds = 100_000
    instance = instance_request(team, bytez, GPT2, alice)
    poll(bytez, 5)
    assert fresh(instance).status == "loading"
    clock.advance(15 * 60)
    poll(bytez, 1)
    instance = fresh(instance)
    assert instance.status == "failed"
    assert instance.error == (
        "Gave up: the model did not finish loading within 15 min (last status: LOADING)."
    )
    assert sim.instances == {}  # the stuck load is shut down, not left billing


def test_deadline_for_a_request_that_never_becomes_available(
    team: Any, alice: Any, bytez: Credential, sim: BytezSimulator, clock: Clock, nudges: list
) -> None:
    sim.request_seconds = 100_000
    instance = instance_request(team, bytez, GPT2, alice)
    poll(bytez, 2)
    clock.advance(30 * 60)
    poll(bytez, 1)
    instance = fresh(instance)
    assert instance.status == "failed"
    assert instance.error.startswith("Gave up: the provider had not made the model available")


def test_sweep_fails_past_deadlines_and_nudges_late_credentials(
    team: Any, alice: Any, bytez: Credential, sim: BytezSimulator, clock: Clock, nudges: list
) -> None:
    stuck = instance_request(team, bytez, GPT2, alice)
    ModelInstance.objects.filter(pk=stuck.pk).update(
        status="loading", deadline_at=clock.wall() - timedelta(minutes=5)
    )
    late = instance_request(team, bytez, NEO, alice)
    ModelInstance.objects.filter(pk=late.pk).update(
        next_check_at=clock.wall() - timedelta(minutes=1)
    )
    counts = instances_sweep()
    assert counts["instance_deadline"] == 1 and fresh(stuck).status == "failed"
    assert counts["instance_pollers"] == 1
    assert ("dashboard.tasks.instances_poll", bytez.pk) in nudges
    nudges.clear()
    ModelInstance.objects.filter(pk=late.pk).update(next_check_at=clock.wall())
    assert instances_sweep()["instance_pollers"] == 0  # on schedule: someone polls it


def test_tasks_sweep_runs_the_instance_sweep(db: Any, nudges: list) -> None:
    counts = tasks.sweep()
    assert {"instance_deadline", "instance_pollers", "instance_reconciles"} <= set(counts)


# --- the job gate ----------------------------------------------------------------------------------


def test_gate_outcomes(
    team: Any, alice: Any, bytez: Credential, sim: BytezSimulator, clock: Clock, nudges: list
) -> None:
    job = make_job(bytez, model=GPT2)
    verdict = bytez_job_gate(job)
    assert verdict == (
        "fail",
        f"No instance of {GPT2} is loaded on Bytez. Load it on the Instances page "
        "(or POST /api/v1/instances) and retry.",
    )
    assert sim.count("POST /model/status") == 1  # asked the provider once

    instance = instance_request(team, bytez, GPT2, alice)
    poll(bytez, 1.5)
    kind, reason = bytez_job_gate(job)
    assert kind == "wait" and reason == "Waiting for instance (requested: Model is already queued)"
    assert len(reason) <= 100
    poll(bytez, 3)
    assert bytez_job_gate(job) == ("wait", "Waiting for instance (loading: started)")
    poll(bytez, 1.5)
    assert bytez_job_gate(job) == ("wait", "Waiting for instance (loading: LOADING)")

    clock.advance(5)
    poll(bytez, 1)
    assert fresh(instance).status == "running"
    assert bytez_job_gate(job) is None


def test_gate_adopts_an_instance_loaded_elsewhere(
    team: Any, bytez: Credential, sim: BytezSimulator, clock: Clock, nudges: list
) -> None:
    with BytezProvider(secret=sim.token, base_url=sim.base_url) as provider:
        provider.load_model(GPT2)
    job = make_job(bytez, model=GPT2)
    assert bytez_job_gate(job) == ("wait", "Waiting for instance (loading: LOADING)")
    clock.advance(5)
    ModelInstance.objects.update(status="failed")  # forget it: the provider is asked again
    assert bytez_job_gate(job) is None
    adopted = ModelInstance.objects.get(status="running")
    assert adopted.external and adopted.model == GPT2


def test_gate_leaves_other_providers_and_provider_trouble_to_the_run(
    team: Any, bytez: Credential, sim: BytezSimulator, nudges: list
) -> None:
    assert bytez_job_gate(make_job(make_credential(team, "together"))) is None
    sim.add_fault(status=502, path="/model/status")
    assert bytez_job_gate(make_job(bytez, model=GPT2)) is None


def test_gate_says_how_to_load_a_model_that_is_only_available(
    team: Any, alice: Any, bytez: Credential, sim: BytezSimulator, clock: Clock, nudges: list
) -> None:
    instance_request(team, bytez, GPT2, alice, load=False)
    poll(bytez, 0.5)
    clock.advance(3)
    poll(bytez, 0.5)
    assert bytez_job_gate(make_job(bytez, model=GPT2)) == (
        "wait",
        "Waiting for instance (requested: available; load it on the Instances page)",
    )


# --- the catalog ---------------------------------------------------------------------------------


def test_catalog_of_5000_models_is_fetched_once_per_period(
    team: Any,
    alice: Any,
    bytez: Credential,
    sim: BytezSimulator,
    clock: Clock,
    django_assert_max_num_queries: Any,
    nudges: list,
) -> None:
    sim.model_count = 5000
    waiting = instance_request(team, bytez, "org-1/model-12", alice)
    assert waiting.required_ram_gb is None  # the list was not known yet
    with django_assert_max_num_queries(40):  # SQLite: 200 rows per INSERT
        assert catalog_refresh(bytez.pk) == "refreshed"
    assert ModelCatalogEntry.objects.filter(credential=bytez).count() == 5000
    assert (
        fresh(waiting).required_ram_gb
        == ModelCatalogEntry.objects.get(name="org-1/model-12").required_ram_gb
    )

    assert catalog_refresh(bytez.pk) == "fresh"
    assert catalog_refresh(bytez.pk, force=True) == "fresh"  # not twice within a minute
    clock.advance(30 * 60)
    assert catalog_refresh(bytez.pk) == "fresh"
    assert sim.count("GET /model/list") == 1

    sim.model_count = 4000  # the provider dropped some models
    assert catalog_refresh(bytez.pk, force=True) == "refreshed"
    assert ModelCatalogEntry.objects.filter(credential=bytez).count() == 4000
    clock.advance(3600)
    assert catalog_refresh(bytez.pk) == "refreshed"
    assert sim.count("GET /model/list") == 3


def test_catalog_refresh_failure_is_shown_and_retried_after_a_pause(
    team: Any, bytez: Credential, sim: BytezSimulator, clock: Clock
) -> None:
    sim.add_fault(status=500, path="/model/list")
    assert catalog_refresh(bytez.pk) == "failed"
    bytez.refresh_from_db()
    assert bytez.last_error.startswith(
        "Model catalog refresh failed: Bytez had a server error (HTTP 500)"
    )
    assert catalog_refresh(bytez.pk) == "fresh"  # a failing provider is not asked on every view
    clock.advance(61)
    assert catalog_refresh(bytez.pk) == "refreshed"
    assert sim.count("GET /model/list") == 1  # the simulator counts what it answered itself


def test_catalog_of_other_providers(team: Any) -> None:
    mymagic = make_credential(team, "mymagic")
    together = make_credential(team, "together")
    make_job(together, model="togethercomputer/llama-2-7b")
    names = [m.name for m in catalog.catalog_models(together)]
    assert "togethercomputer/llama-2-7b" in names  # run before
    assert "togethercomputer/RedPajama-INCITE-7B-Instruct" in names  # documented
    names = [m.name for m in catalog.catalog_models(mymagic, "LLAMA")]
    assert names == ["codellama_70b", "llama2_70b", "llama2_7b", "llama3_70b"]
    assert catalog_refresh(together.pk) == "unsupported"


# --- cost ----------------------------------------------------------------------------------------


def test_cost_estimate(team: Any, bytez: Credential, clock: Clock, sim: BytezSimulator) -> None:
    at = clock.wall()
    instance = ModelInstance(
        team=team,
        credential=bytez,
        model=GPT2,
        status="running",
        required_ram_gb=2.5,
        running_since=at - timedelta(seconds=30),
    )
    rate = Decimal("0.0001")
    assert (
        instance_services.instance_cost(instance, rate, at) == Decimal("2.5") * 60 * rate
    )  # minimum
    instance.running_since = at - timedelta(seconds=125)
    assert instance_services.instance_cost(instance, rate, at) == Decimal("2.5") * 125 * rate
    assert instance_services.instance_cost(instance, None, at) is None
    instance.required_ram_gb = None
    assert instance_services.instance_cost(instance, rate, at) is None
