"""The new-job form as a person first meets it: a credential that works, a
model filled in, prompts split one per line and counted, and the models of
every provider listed beside the field, with a warning for a doubtful name."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.urls import reverse

from dashboard.core import clock
from dashboard.instances.catalog import catalog_store
from dashboard.jobs.forms import credential_for_new_job, model_for_new_job
from dashboard.models import Credential, Job, Membership, ModelInstance
from providers import ModelInfo
from tests.conftest import make_credential, make_job, make_user, prompts_of

pytestmark = pytest.mark.django_db


@pytest.fixture
def bob_client(client: Any, bob: Any, team: Any) -> Any:
    client.force_login(bob)
    return client


def selected_credential(page: str) -> str:
    select = page[page.index('<select name="credential"') :]
    return re.search(r'<option value="(\d+)" selected>', select).group(1)


def model_value(page: str) -> str:
    return re.search(r'<input type="text" name="model" id="id_model"[^>]* value="([^"]*)"', page)[1]


# --- the credential and model it starts with ------------------------------------------------------


def test_first_job_skips_a_credential_that_needs_an_instance(
    bob_client: Any, team: Any, bob: Any, nudges: list
) -> None:
    make_credential(team, "bytez", name="A Bytez")  # first by name, needs a loaded model
    make_credential(team, "together", name="B refused", health=Credential.Health.AUTH_FAILED)
    grid = make_credential(team, "gridrepublic", name="C GridRepublic")
    page = bob_client.get(reverse("job_new")).content.decode()
    assert selected_credential(page) == str(grid.pk)
    assert model_value(page) == "gemma:2b"  # the model its document names
    assert 'id="model-auto" value="1"' in page
    assert credential_for_new_job(team=team, user=bob) == grid


def test_then_the_credential_and_model_the_user_used_last(
    bob_client: Any, team: Any, bob: Any, alice: Any
) -> None:
    together = make_credential(team, "together", name="A Together")
    lamini = make_credential(team, "lamini", name="B Lamini")
    make_job(lamini, user=bob, model="my/lamini-model")
    make_job(together, user=alice, model="alice/model")  # someone else's later job
    page = bob_client.get(reverse("job_new")).content.decode()
    assert selected_credential(page) == str(lamini.pk)
    assert model_value(page) == "my/lamini-model"
    Credential.objects.filter(pk=lamini.pk).delete()  # gone: the first that needs nothing
    assert credential_for_new_job(team=team, user=bob) == together
    # The team's recent models on the provider come before the documented ones.
    assert model_for_new_job(credential=together, user=bob) == "alice/model"


def test_only_a_credential_that_needs_preparation_is_still_chosen(
    bob_client: Any, team: Any
) -> None:
    bytez = make_credential(team, "bytez")
    page = bob_client.get(reverse("job_new")).content.decode()
    assert selected_credential(page) == str(bytez.pk)


def test_a_catalog_row_opens_the_form_on_its_credential_and_model(
    bob_client: Any, team: Any, nudges: list
) -> None:
    make_credential(team, "together", name="A")
    bytez = make_credential(team, "bytez", name="B")
    catalog_store(bytez.pk, [ModelInfo("org/picked-model")], clock.now())
    catalog = bob_client.get(reverse("model_catalog", args=[bytez.pk])).content.decode()
    link = f"/jobs/new?credential={bytez.pk}&amp;model=org/picked-model"
    assert f'href="{link}"' in catalog and ">New job</a>" in catalog
    page = bob_client.get(link.replace("&amp;", "&")).content.decode()
    assert selected_credential(page) == str(bytez.pk)
    assert model_value(page) == "org/picked-model" and 'id="model-auto" value="0"' in page


# --- prompts -------------------------------------------------------------------------------------


def test_three_pasted_lines_are_three_prompts_by_default_and_counted(
    bob_client: Any, team: Any
) -> None:
    credential = make_credential(team)
    page = bob_client.get(reverse("job_new")).content.decode()
    assert '<option value="lines" selected>' in page
    assert 'id="prompt-count" aria-live="polite">0 prompts<' in page
    split = re.search(r'<option value="(\w+)" selected>One prompt per line', page)[1]
    response = bob_client.post(
        reverse("job_new"),
        {"credential": credential.pk, "model": "", "prompts": "one\ntwo\nthree", "split": split},
    )
    assert ">3 prompts<" in response.content.decode()  # the count, with the form's errors
    bob_client.post(
        reverse("job_new"),
        {"credential": credential.pk, "model": "m", "prompts": "one\ntwo\nthree", "split": split},
    )
    assert prompts_of(Job.objects.get()) == ["one", "two", "three"]


# --- the model list beside the field ----------------------------------------------------------


def models(client: Any, credential: Credential, model: str = "", **extra: Any) -> Any:
    return client.get(
        reverse("job_new_models"),
        {"credential": credential.pk, "model": model, **extra},
        headers={"HX-Request": "true", "HX-Target": "model-help"},
    )


def test_mymagic_warns_of_a_model_its_list_does_not_hold(bob_client: Any, team: Any) -> None:
    mymagic = make_credential(team, "mymagic")
    body = models(bob_client, mymagic, "llama3-70b").content.decode()
    assert "is not in MyMagic&#x27;s documented model list" in body
    body = models(bob_client, mymagic, "llama3_70b").content.decode()
    assert 'class="warning" role="status"></p>' in body
    assert 'data-model-pick="llama3_70b"' in body and "llama2_7b" not in body  # filtered


def test_a_typed_name_that_matches_nothing_keeps_the_whole_list(bob_client: Any, team: Any) -> None:
    mymagic = make_credential(team, "mymagic")
    body = models(bob_client, mymagic, "gpt").content.decode()
    assert 'data-model-pick="llama2_7b"' in body and "documented model list" in body


def test_gridrepublic_lists_its_documented_and_the_teams_past_models(
    bob_client: Any, team: Any
) -> None:
    grid = make_credential(team, "gridrepublic")
    make_job(grid, model="llama3:8b")
    body = models(bob_client, grid).content.decode()
    assert "Your team&#x27;s recent models" in body
    assert body.index('data-model-pick="llama3:8b"') < body.index('data-model-pick="gemma:2b"')


def test_an_openai_server_list_is_fetched_in_the_background_and_shown(
    bob_client: Any, team: Any, nudges: list
) -> None:
    server = make_credential(team, "openai", name="vLLM")
    page = bob_client.get(reverse("job_new")).content.decode()
    assert ("dashboard.tasks.catalog_refresh", server.pk, False) in nudges  # queued, not fetched
    aside = page[page.index('<aside id="model-help"') :]
    since = re.search(r'hx-get="/jobs/new/models\?since=([0-9.]+)"', aside)[1]
    assert "Fetching" in aside and 'hx-trigger="every 2s"' in aside

    waiting = models(bob_client, server, since=since)
    assert waiting.status_code == 200 and "Fetching" in waiting.content.decode()
    catalog_store(server.pk, [ModelInfo("Qwen/Qwen2.5-7B"), ModelInfo("meta/llama-3")], clock.now())
    arrived = models(bob_client, server, since=since)
    body = arrived.content.decode()
    assert arrived.status_code == 286  # the list is here: stop polling
    assert "vLLM&#x27;s model list" not in body  # titled by provider, not credential
    assert (
        "OpenAI-compatible&#x27;s model list" in body and 'data-model-pick="meta/llama-3"' in body
    )
    assert "not among the 2 models" in models(bob_client, server, "gpt-4o").content.decode()


def test_a_bytez_model_with_no_live_instance_is_warned_with_a_link(
    bob_client: Any, team: Any
) -> None:
    bytez = make_credential(team, "bytez")
    body = models(bob_client, bytez, "openai-community/gpt2").content.decode()
    assert "No instance of “openai-community/gpt2” is live" in body
    assert f'<a href="{reverse("instance_list")}">Instances page</a>' in body
    ModelInstance.objects.create(
        team=team, credential=bytez, model="openai-community/gpt2", status="running"
    )
    assert "is live" not in models(bob_client, bytez, "openai-community/gpt2").content.decode()


def test_another_credential_brings_its_fields_its_models_and_its_default_model(
    bob_client: Any, team: Any
) -> None:
    together = make_credential(team, "together", name="A")
    mymagic = make_credential(team, "mymagic", name="B")
    swap = {"HX-Request": "true", "HX-Target": "provider-fields"}
    filled = bob_client.get(
        reverse("job_new"),
        {"credential": mymagic.pk, "model": "togethercomputer/x", "model_auto": "1"},
        headers=swap,
    ).content.decode()
    assert 'id="model-help" class="model-help"' in filled and 'hx-swap-oob="true"' in filled
    field = filled[filled.index('id="model-field"') :]
    assert field.startswith('id="model-field" hx-swap-oob="true"')
    assert 'value="llama3_70b"' in field[:600]  # MyMagic's first documented model
    typed = bob_client.get(
        reverse("job_new"),
        {"credential": mymagic.pk, "model": "my-typed", "model_auto": "0"},
        headers=swap,
    ).content.decode()
    assert 'id="model-field"' not in typed  # the user's own choice is kept
    assert "“my-typed” is not in MyMagic" in typed
    assert together.pk  # the first credential stays a choice


def test_the_model_list_needs_the_member_role_and_a_credential_of_the_team(
    client: Any, team: Any, other_team: Any, charlie: Any
) -> None:
    credential = make_credential(team, "mymagic")
    viewer = make_user("vic")
    Membership.objects.create(team=team, user=viewer, role="viewer")
    client.force_login(viewer)
    assert models(client, credential).status_code == 403
    client.force_login(charlie)  # another team: its own (none), never this one's
    body = models(client, credential).content.decode()
    assert "llama3_70b" not in body
