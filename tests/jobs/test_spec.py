"""One owner for a job spec's rules: build_spec, and every surface that asks
for a job (the new-job page, POST /api/v1/jobs, a comparison's targets in the
API and on the page) refusing the same bad spec with the same message."""

from __future__ import annotations

import html
import json
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from dashboard.jobs.spec import MAX_DEADLINE, NUL_MESSAGE, SpecError, build_spec
from dashboard.models import Comparison, Credential, Job
from tests.api.conftest import Api, api_for
from tests.conftest import make_credential, make_job

pytestmark = pytest.mark.django_db

GOOD = {"model": "m", "prompts": ["one", "two"]}


def refusal(credential: Credential, **values: Any) -> dict[str, list[str]]:
    with pytest.raises(SpecError) as caught:
        build_spec(credential, {**GOOD, **values})
    return caught.value.fields


# --- build_spec ---------------------------------------------------------------------------


def test_a_good_spec_is_built_as_the_provider_takes_it(team: Any) -> None:
    spec = build_spec(
        make_credential(team, "together"),
        {**GOOD, "model": "  m  ", "temperature": 1, "max_tokens": 5, "question": ""},
    )
    assert spec.model == "m" and list(spec.prompts) == ["one", "two"]
    assert spec.temperature == 1.0 and isinstance(spec.temperature, float)
    assert spec.max_tokens == 5 and spec.question == "" and spec.options == {}


@pytest.mark.parametrize(
    ("provider", "values", "field", "message"),
    [
        ("together", {"model": ""}, "model", "This field is required."),
        ("together", {"model": "m\x00"}, "model", NUL_MESSAGE),
        ("together", {"model": "x" * 201}, "model", "at most 200 characters (it has 201)"),
        ("together", {"prompts": []}, "prompts", "Enter at least one prompt."),
        ("together", {"prompts": ["a", " "]}, "prompts", "Prompt 2 is empty."),
        ("together", {"prompts": ["a\x00"]}, "prompts", NUL_MESSAGE),
        ("together", {"temperature": 5.5}, "temperature", "less than or equal to 5."),
        ("together", {"temperature": -1}, "temperature", "greater than or equal to 0."),
        ("together", {"temperature": float("inf")}, "temperature", "Enter a finite number."),
        ("together", {"temperature": "0.5"}, "temperature", "Enter a number."),
        ("together", {"top_p": 1.01}, "top_p", "less than or equal to 1."),
        ("together", {"max_tokens": 0}, "max_tokens", "greater than or equal to 1."),
        ("together", {"max_tokens": 1.5}, "max_tokens", "Enter a whole number."),
        ("together", {"max_tokens": True}, "max_tokens", "Enter a whole number."),
        ("together", {"top_k": 100_001}, "top_k", "less than or equal to 100000."),
        ("together", {"repetition_penalty": 11}, "repetition_penalty", "less than or equal"),
        ("together", {"question": "why?"}, "question", "Together does not use question."),
        ("together", {"output_schema": {"a": "int"}}, "output_schema", "does not use"),
        ("together", {"stream": True}, "stream", "Together cannot stream output."),
        ("mymagic", {}, "question", "a question is required"),
        ("mymagic", {"question": "q\x00"}, "question", NUL_MESSAGE),
        ("lamini", {"output_schema": {"a": "complex"}}, "output_schema", "not one of str"),
        (
            "openai",
            {"output_schema": {"type": "strng"}},
            "output_schema",
            "not a valid JSON Schema",
        ),
        ("openai", {"output_schema": [1]}, "output_schema", "Must be a JSON object"),
        ("together", {"options": {"deadline_seconds": "soon"}}, "options", "deadline_seconds"),
        ("together", {"options": {"deadline_seconds": 1e300}}, "options", "deadline_seconds"),
        ("together", {"options": {"deadline_seconds": -5}}, "options", "deadline_seconds"),
        ("together", {"options": {"deadline_seconds": 0}}, "options", "deadline_seconds"),
        ("together", {"options": {"deadline_seconds": True}}, "options", "deadline_seconds"),
        ("together", {"options": {"deadline_seconds": 60.0}}, "options", "deadline_seconds"),
        (
            "together",
            {"options": {"deadline_seconds": MAX_DEADLINE + 1}},
            "options",
            "deadline_seconds",
        ),
        ("together", {"options": {"colour": "red"}}, "options", "Unknown option 'colour'"),
        ("together", {"options": [1]}, "options", "Must be a JSON object"),
        ("bytez", {"options": {"params": [1]}}, "options", "must be a JSON object"),
        (
            "mymagic",
            {"question": "q", "options": {"bucket_name": 5}},
            "options",
            "The MyMagic option 'bucket_name' must be text.",
        ),
        ("mymagic", {"question": "q", "options": {"region": "eu\x00"}}, "options", NUL_MESSAGE),
    ],
)
def test_build_spec_refuses_by_field(
    team: Any, provider: str, values: dict[str, Any], field: str, message: str
) -> None:
    fields = refusal(make_credential(team, provider), **values)
    assert any(message in text for text in fields[field]), fields


def test_every_field_error_is_named_at_once(team: Any) -> None:
    fields = refusal(
        make_credential(team, "together"),
        model="",
        temperature=9,
        options={"deadline_seconds": "soon"},
    )
    assert set(fields) == {"model", "temperature", "options"}


def test_a_deadline_within_the_week_is_kept(team: Any) -> None:
    credential = make_credential(team, "together")
    for seconds in (1, 600, MAX_DEADLINE):
        spec = build_spec(credential, {**GOOD, "options": {"deadline_seconds": seconds}})
        assert spec.options == {"deadline_seconds": seconds}


# --- the same refusal on every surface -------------------------------------------------------

#: (provider, what the bad spec changes, the field it is refused on). The page
#: and the comparison page send options and output_schema as the JSON they type.
BAD_SPECS = [
    pytest.param("together", {"options": {"deadline_seconds": "soon"}}, "options", id="soon"),
    pytest.param("together", {"options": {"deadline_seconds": 1e300}}, "options", id="1e300"),
    pytest.param("together", {"options": {"deadline_seconds": -5}}, "options", id="negative"),
    pytest.param("together", {"options": {"deadline_seconds": True}}, "options", id="bool"),
    pytest.param("together", {"temperature": 9}, "temperature", id="temperature"),
    pytest.param("together", {"max_tokens": 0}, "max_tokens", id="max-tokens"),
    pytest.param("together", {"top_p": 2}, "top_p", id="top-p"),
    pytest.param("together", {"model": "lla\x00ma"}, "model", id="nul-in-model"),
    pytest.param("together", {"options": {"colour": "red"}}, "options", id="unknown-option"),
    pytest.param(
        "mymagic",
        {"question": "q", "options": {"bucket_name": 5}},
        "options",
        id="option-of-the-wrong-type",
    ),
    pytest.param("mymagic", {"question": ""}, "question", id="mymagic-without-question"),
    pytest.param(
        "openai", {"output_schema": {"type": "strng"}}, "output_schema", id="broken-schema"
    ),
    pytest.param("lamini", {"output_schema": {"a": "complex"}}, "output_schema", id="lamini-type"),
]


def _form_value(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, dict) else value


def _page_errors(response: Any, form: Any, field: str) -> list[str]:
    assert response.status_code in (200, 400), response.status_code
    return list(form.errors.get(field, []))


def page_messages(
    client: Client, credential: Credential, change: dict[str, Any], field: str
) -> list[str]:
    """The new-job page's errors on ``field``, after a POST of the bad spec."""
    data = {
        "credential": credential.pk,
        "model": "m",
        "prompts": "one\ntwo",
        "split": "lines",
        **{name: _form_value(value) for name, value in change.items()},
    }
    response = client.post(reverse("job_new"), data)
    messages = _page_errors(response, response.context["form"], field)
    page = html.unescape(response.content.decode())
    assert all(message in page for message in messages)  # shown, not only set
    return messages


def comparison_page_messages(
    client: Client, credential: Credential, change: dict[str, Any], field: str
) -> list[str]:
    """The comparison page's errors on the first target's ``field``."""
    data = {
        "name": "cmp",
        "prompts": "one\ntwo",
        "split": "lines",
        "target-TOTAL_FORMS": "2",
        "target-INITIAL_FORMS": "0",
    }
    first = {"model": "m", **change}
    for name, value in first.items():
        data[f"target-0-{name}"] = _form_value(value)
    data.update({"target-0-credential": credential.pk, "target-1-credential": credential.pk})
    data["target-1-model"] = "other"
    if credential.provider == "mymagic":
        data["target-1-question"] = "q"
    response = client.post(reverse("comparison_new"), data)
    assert response.status_code == 400
    return _page_errors(response, response.context["targets"].forms[0], field)


def api_messages(api: Api, credential: Credential, change: dict[str, Any], field: str) -> list[str]:
    body = {"credential": credential.pk, "model": "m", "prompts": ["one", "two"], **change}
    response = api.post("jobs", body)
    assert response.status_code == 400, response.content
    return response.json()["fields"].get(field, [])


def api_comparison_messages(
    api: Api, credential: Credential, change: dict[str, Any], field: str
) -> list[str]:
    other = {"credential": credential.pk, "model": "other"}
    if credential.provider == "mymagic":
        other["question"] = "q"
    body = {
        "name": "cmp",
        "prompts": ["one", "two"],
        "targets": [{"credential": credential.pk, "model": "m", **change}, other],
    }
    response = api.post("comparisons", body)
    assert response.status_code == 400, response.content
    return response.json()["fields"]["targets"]


@pytest.mark.parametrize(("provider", "change", "field"), BAD_SPECS)
def test_every_surface_refuses_a_bad_spec_in_the_same_words(
    client: Client, bob: Any, team: Any, provider: str, change: dict[str, Any], field: str
) -> None:
    credential = make_credential(team, provider)
    expected = refusal(credential, **change)[field]
    api = api_for(client, bob)
    client.force_login(bob)
    surfaces = {
        "page": page_messages(client, credential, change, field),
        "api": api_messages(api, credential, change, field),
        "api comparison": api_comparison_messages(api, credential, change, field),
        "comparison page": comparison_page_messages(client, credential, change, field),
    }
    for surface, messages in surfaces.items():
        for message in expected:
            assert any(message in text for text in messages), (surface, messages, expected)
    assert not Job.objects.exists() and not Comparison.objects.exists()


def test_a_field_the_provider_does_not_use_is_refused_alike_in_comparisons(
    client: Client, bob: Any, team: Any
) -> None:
    """The new-job page shows (and reads) only the provider's own fields, so
    there a stale value is dropped; the comparison forms show every field."""
    credential = make_credential(team, "together")
    change = {"question": "why?"}
    expected = "Together does not use question."
    assert refusal(credential, **change)["question"] == [expected]
    api = api_for(client, bob)
    client.force_login(bob)
    assert api_messages(api, credential, change, "question") == [expected]
    assert f"Target 1: question: {expected}" in api_comparison_messages(
        api, credential, change, "question"
    )
    assert comparison_page_messages(client, credential, change, "question") == [expected]


# --- what was broken -------------------------------------------------------------------------


@pytest.mark.parametrize("deadline", ['"soon"', "1e300", "-5"])
def test_a_bad_deadline_on_the_page_is_a_form_error_not_a_500(
    client: Client, bob: Any, team: Any, deadline: str
) -> None:
    """The page did not check options.deadline_seconds: job_create's int()
    made "soon" a 500, 1e300 an overflow, and -5 a job already past its deadline."""
    credential = make_credential(team, "together")
    client.force_login(bob)
    client.raise_request_exception = False
    response = client.post(
        reverse("job_new"),
        {
            "credential": credential.pk,
            "model": "m",
            "prompts": "one",
            "split": "lines",
            "options": '{"deadline_seconds": ' + deadline + "}",
        },
    )
    assert response.status_code == 200, response.status_code
    assert "deadline_seconds must be a whole number of seconds" in response.content.decode()
    assert not Job.objects.exists()


def test_a_nul_in_a_job_option_is_refused_on_the_page(client: Client, bob: Any, team: Any) -> None:
    """PostgreSQL refuses a NUL in jsonb (a 500): the page let one through."""
    credential = make_credential(team, "mymagic")
    client.force_login(bob)
    response = client.post(
        reverse("job_new"),
        {
            "credential": credential.pk,
            "model": "m",
            "prompts": "one",
            "split": "lines",
            "question": "q",
            "options": '{"region": "eu\\u0000"}',
        },
    )
    assert response.status_code == 200
    assert response.context["form"].errors["options"] == [NUL_MESSAGE]
    assert not Job.objects.exists()


def test_a_good_deadline_on_the_page_sets_the_jobs_deadline(
    client: Client, bob: Any, team: Any, nudges: Any
) -> None:
    credential = make_credential(team, "together")
    client.force_login(bob)
    response = client.post(
        reverse("job_new"),
        {
            "credential": credential.pk,
            "model": "m",
            "prompts": "one",
            "split": "lines",
            "options": '{"deadline_seconds": 600}',
        },
    )
    job = Job.objects.get()
    assert response.status_code == 302
    assert (job.deadline_at - job.created_at).total_seconds() == 600


def test_a_comparison_target_on_the_page_takes_options_and_a_question(
    client: Client, bob: Any, team: Any, nudges: Any
) -> None:
    """MyMagic needs a question: a MyMagic target could not be made on the page."""
    mymagic = make_credential(team, "mymagic")
    together = make_credential(team, "together")
    client.force_login(bob)
    data = {
        "name": "cmp",
        "prompts": "one\ntwo",
        "split": "lines",
        "target-TOTAL_FORMS": "2",
        "target-INITIAL_FORMS": "0",
        "target-0-credential": mymagic.pk,
        "target-0-model": "llama3_70b",
        "target-0-question": "Summarise",
        "target-0-options": '{"deadline_seconds": 900}',
        "target-1-credential": together.pk,
        "target-1-model": "m",
    }
    response = client.post(reverse("comparison_new"), data)
    assert response.status_code == 302, response.context and response.context["targets"].errors
    first, second = Comparison.objects.get().jobs.order_by("id")
    assert first.spec["question"] == "Summarise" and first.spec["options"] == {
        "deadline_seconds": 900
    }
    assert (first.deadline_at - first.created_at).total_seconds() == 900
    assert second.spec["question"] == ""


def test_comparing_from_a_job_starts_its_target_with_the_jobs_question_and_options(
    client: Client, bob: Any, team: Any
) -> None:
    credential = make_credential(team, "mymagic")
    job = make_job(credential, model="llama3_70b", question="Summarise", options={"region": "eu"})
    client.force_login(bob)
    response = client.get(reverse("comparison_new"), {"from_job": job.pk})
    first = response.context["targets"].forms[0]
    assert first.initial["question"] == "Summarise"
    assert first.initial["options"] == {"region": "eu"}
    page = html.unescape(response.content.decode())
    assert "Summarise" in page and '"region": "eu"' in page
