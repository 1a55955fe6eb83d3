"""Provider text is redacted once more before the dashboard stores it on an
instance or a credential: the adapter's redaction can miss what it never
looked at (a status word), or an adapter can forget it."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote

import pytest

from dashboard.instances.catalog import catalog_refresh
from dashboard.instances.services import instance_request
from dashboard.models import Credential, ModelInstance
from providers import ErrorKind, ProviderError
from providers.bytez import BytezProvider
from providers.simulators.bytez import BytezSimulator
from tests.conftest import SECRET, make_credential
from tests.instances.test_instances import GPT2, fresh, make_running, poll

pytestmark = pytest.mark.django_db


def test_a_status_word_that_echoes_the_key_is_not_stored(
    team: Any, alice: Any, bytez: Credential, sim: BytezSimulator, clock: Any
) -> None:
    """Adapters redact messages and errors, not the status word they pass on."""
    instance = instance_request(team, bytez, GPT2, alice)
    poll(bytez, 4)  # requested -> available -> loading
    assert fresh(instance).status == "loading"
    echo = f"warming up for Key {SECRET}"
    sim.add_fault(status=200, body={"status": echo, "model": GPT2}, path="/model/status", times=5)
    clock.advance(1)
    poll(bytez, 1)
    instance = fresh(instance)
    assert instance.provider_status.startswith("warming up")
    assert SECRET not in instance.provider_status and "[redacted]" in instance.provider_status


def test_an_adapter_that_forgot_to_redact_leaves_no_key_on_the_credential(
    team: Any, bytez: Credential, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The secret as the provider might echo it: base64, as in a Basic header."""
    encoded = base64.b64encode(SECRET.encode()).decode()

    def list_models(self: BytezProvider) -> list[Any]:  # not @redacted: an adapter's bug
        raise ProviderError(f"Bytez said: bad credentials {encoded}", kind=ErrorKind.AUTH)

    monkeypatch.setattr(BytezProvider, "list_models", list_models)
    assert catalog_refresh(bytez.pk) == "failed"
    credential = Credential.objects.get(pk=bytez.pk)
    assert encoded not in credential.last_error and "[redacted]" in credential.last_error


def test_a_shutdown_error_that_echoes_the_key_is_not_stored(
    team: Any, alice: Any, bytez: Credential, sim: BytezSimulator, clock: Any
) -> None:
    from dashboard.instances.services import instance_shutdown

    instance = make_running(team, bytez, alice, clock)
    sim.add_fault(status=503, body={"error": f"upstream got key={quote(SECRET)}"}, times=5)
    instance = instance_shutdown(instance, alice)
    assert instance.error and quote(SECRET) not in instance.error and SECRET not in instance.error


def test_the_credentials_page_never_shows_a_key_stored_by_another_path(
    client: Any, team: Any, bob: Any
) -> None:
    """Whatever wrote last_error (the job engine's circuit breaker, an older
    release), the page scrubs it again before anyone sees it."""
    credential = make_credential(team, name="Leaky")
    url_form = quote(SECRET + "/x", safe="")
    Credential.objects.filter(pk=credential.pk).update(
        secret=SECRET + "/x", last_error=f"HTTP 500: echo {url_form} and {SECRET}/x"
    )
    client.force_login(bob)
    page = client.get("/credentials/").content.decode()
    assert "Leaky" in page
    assert url_form not in page and f"{SECRET}/x" not in page
    assert ModelInstance.objects.count() == 0
