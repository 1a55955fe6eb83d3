"""Every instance path reports to the credential's health: a 401/403 from a
status check, a load, a shutdown, the instance list or the job gate turns it
to "authentication failed" at once; a later success turns it back."""

from __future__ import annotations

from typing import Any

import pytest

from dashboard import tasks
from dashboard.core.crypto import Ciphertext
from dashboard.instances import services
from dashboard.instances.gate import bytez_job_gate
from dashboard.instances.poller import instances_reconcile
from dashboard.instances.services import instance_request
from dashboard.models import Credential
from providers.simulators.bytez import BytezSimulator
from tests.conftest import make_job
from tests.instances.test_instances import GPT2, Clock, make_running, poll

pytestmark = pytest.mark.django_db


def health(credential: Credential) -> str:
    credential.refresh_from_db()
    return credential.health


def test_status_checks_report_health(
    team: Any, alice: Any, bytez: Credential, sim: BytezSimulator, clock: Clock, nudges: list
) -> None:
    make_running(team, bytez, alice, clock)
    assert health(bytez) == "ok"
    # A revoked key: every call is refused from now on.
    sim.add_fault(status=401, body={"error": "Invalid API key"}, times=100)
    clock.advance(11)
    poll(bytez, 1)
    assert health(bytez) == "auth_failed" and "Invalid API key" in bytez.health_detail


def test_a_request_refused_for_the_key_reports_health(
    team: Any, alice: Any, bytez: Credential, sim: BytezSimulator, clock: Clock, nudges: list
) -> None:
    instance_request(team, bytez, GPT2, alice)
    sim.add_fault(status=403, times=100)
    poll(bytez, 1)
    assert health(bytez) == "auth_failed"


def test_shutdown_reports_health(
    team: Any, alice: Any, bytez: Credential, sim: BytezSimulator, clock: Clock, nudges: list
) -> None:
    instance = make_running(team, bytez, alice, clock)
    services.instance_stop_begin(instance, alice)
    sim.add_fault(status=401, path="/model/delete")
    tasks.instance_stop(instance.pk)
    assert health(bytez) == "auth_failed"


def test_the_instance_list_and_the_gate_report_health(
    team: Any, bytez: Credential, sim: BytezSimulator, nudges: list
) -> None:
    sim.add_fault(status=401, path="/model/instances")
    instances_reconcile(bytez.pk)
    assert health(bytez) == "auth_failed"
    instances_reconcile(bytez.pk)
    assert health(bytez) == "ok"
    sim.add_fault(status=401, path="/model/status")
    bytez_job_gate(make_job(bytez, model=GPT2))
    assert health(bytez) == "auth_failed"


def test_a_secret_that_cannot_be_decrypted_reports_health(
    team: Any, alice: Any, bytez: Credential, sim: BytezSimulator, nudges: list
) -> None:
    instance_request(team, bytez, GPT2, alice)
    Credential.objects.filter(pk=bytez.pk).update(secret=Ciphertext("fernet:garbage"))
    poll(bytez, 1)
    assert health(bytez) == "auth_failed" and "decrypt" in bytez.health_detail
