"""Random and malformed form posts: never a 500, never a change to another
team's data."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dashboard.models import Credential, Job, JobEvent
from tests.conftest import make_credential, make_job

pytestmark = pytest.mark.django_db

texts = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "",
            "0",
            "-1",
            "1e309",
            "nan",
            "null",
            "[]",
            "{}",
            '{"a": 1}',
            "<script>x</script>",
            "999999999999",
        ]
    ),
)
CREDENTIAL_FIELDS = [
    "provider",
    "name",
    "secret",
    "base_url",
    "options",
    "max_concurrency",
    "requests_per_minute",
]
JOB_FIELDS = [
    "credential",
    "model",
    "prompts",
    "split",
    "question",
    "system_prompt",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "repetition_penalty",
    "output_schema",
    "options",
    "stream",
]


def form_data(fields: list[str]) -> st.SearchStrategy[dict[str, str]]:
    return st.dictionaries(st.sampled_from(fields), texts, max_size=len(fields))


@pytest.fixture
def world(team: Any, other_team: Any, alice: Any) -> dict[str, Any]:
    theirs = make_credential(other_team, name="theirs")
    their_job = make_job(theirs)
    client = Client()
    client.force_login(alice)
    return {
        "client": client,
        "theirs": theirs,
        "their_job": their_job,
        "ours": make_credential(team),
    }


def snapshot(world: dict[str, Any]) -> tuple[Any, ...]:
    theirs, job = world["theirs"], world["their_job"]
    return (
        Credential.objects.filter(team=theirs.team).count(),
        Credential.objects.get(pk=theirs.pk).secret,
        Job.objects.filter(team=theirs.team).count(),
        Job.objects.get(pk=job.pk).status,
        JobEvent.objects.filter(job=job).count(),
    )


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=form_data(CREDENTIAL_FIELDS))
def test_credential_form_fuzz(world: dict[str, Any], data: dict[str, str]) -> None:
    before = snapshot(world)
    response = world["client"].post(reverse("credential_list"), data)
    assert response.status_code in (200, 302)
    assert snapshot(world) == before


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=form_data(JOB_FIELDS), use_theirs=st.booleans())
def test_job_form_fuzz(world: dict[str, Any], data: dict[str, str], use_theirs: bool) -> None:
    if use_theirs:
        data["credential"] = str(world["theirs"].pk)
    before = snapshot(world)
    response = world["client"].post(reverse("job_new"), data)
    assert response.status_code in (200, 302)
    assert snapshot(world) == before
    assert (
        not Job.objects.filter(credential=world["theirs"])
        .exclude(pk=world["their_job"].pk)
        .exists()
    )


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(note=texts, team_id=texts, after=texts, done=texts)
def test_small_forms_and_params_fuzz(
    world: dict[str, Any], note: str, team_id: str, after: str, done: str
) -> None:
    client, job = world["client"], world["their_job"]
    before = snapshot(world)
    assert client.post(reverse("job_note", args=[job.pk]), {"note": note}).status_code == 404
    assert client.post(reverse("switch_team"), {"team": team_id}).status_code == 302
    ours = make_job(world["ours"])
    response = client.get(reverse("job_live", args=[ours.pk]), {"after": after, "done": done})
    assert response.status_code in (200, 286)
    assert client.get(reverse("job_new"), {"clone": after, "credential": done}).status_code in (
        200,
        404,
    )
    assert snapshot(world) == before
