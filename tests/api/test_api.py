"""The JSON API (README: "JSON API"), through the Django test client with a
bearer token: the whole table, then auth, bad input, team scoping and roles."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dashboard.core import connect
from dashboard.jobs import worker
from dashboard.models import ApiToken, AuditEvent, Credential, Job, Membership, ModelInstance, Role
from providers.simulators import completion_text
from tests.api.conftest import BASE, Api, api_for, assert_error
from tests.conftest import SECRET, finish_items, make_credential, make_job, make_user, use_clock

pytestmark = pytest.mark.django_db

# --- the whole table -------------------------------------------------------------------------


def test_design_table_walkthrough(alice_api: Api, team: Any, sims: Any) -> None:
    together = sims.get("together")

    response = alice_api.post(
        "credentials",
        {
            "provider": "together",
            "name": "Sim",
            "secret": SECRET,
            "base_url": together.base_url,
            "max_concurrency": 2,
        },
    )
    assert response.status_code == 201, response.content
    credential = response.json()
    assert credential == {
        "id": credential["id"],
        "provider": "together",
        "name": "Sim",
        "base_url": together.base_url,
        "options": {},
        "max_concurrency": 2,
        "rpm": None,
        "tpm": None,
    }
    assert alice_api.get("credentials").json() == [credential]

    spec = {
        "credential": credential["id"],
        "model": "m-1",
        "prompts": ["one", "two"],
        "max_tokens": 64,
        "temperature": 0.2,
    }
    response = alice_api.post("jobs", spec)
    assert response.status_code == 201, response.content
    created = response.json()
    assert created == {"id": created["id"], "status": "pending"}
    job_id = created["id"]

    job = alice_api.get(f"jobs/{job_id}").json()
    assert job["status"] == "pending" and job["outputs"] == [None, None]
    assert job["progress"] == {"done": 0, "total": 2}
    assert job["created_by"] == "alice" and job["provider"] == "together" and job["model"] == "m-1"
    assert "Saved by alice" in job["log"]

    worker.advance_job(job_id)  # what a worker does
    job = alice_api.get(f"jobs/{job_id}").json()
    assert job["status"] == "completed"
    assert job["outputs"] == [completion_text("m-1", p, 64) for p in ("one", "two")]
    assert job["progress"] == {"done": 2, "total": 2}
    assert job["started_at"] and job["finished_at"] and job["error"] == ""
    assert job["log"].splitlines()[0][2] == ":"  # "HH:MM:SS message"
    assert "Completed" in job["log"]
    expected_keys = {
        "id",
        "provider",
        "model",
        "status",
        "provider_status",
        "progress",
        "outputs",
        "log",
        "error",
        "created_by",
        "created_at",
        "started_at",
        "finished_at",
    }
    assert expected_keys <= set(job)

    listed = alice_api.get("jobs").json()
    assert [j["id"] for j in listed["results"]] == [job_id] and listed["next"] is None

    pending = alice_api.post("jobs", spec).json()["id"]
    response = alice_api.post(f"jobs/{pending}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert response.json()["id"] == pending
    assert_error(alice_api.post(f"jobs/{pending}/cancel"), 409)

    response = alice_api.post(f"jobs/{job_id}/retry")
    assert response.status_code == 201
    retried = response.json()
    assert retried["id"] not in (job_id, pending) and retried["retry_of"] == job_id
    assert retried["status"] == "pending"
    assert Job.objects.get(pk=retried["id"]).spec == Job.objects.get(pk=job_id).spec

    response = alice_api.delete(f"credentials/{credential['id']}")
    assert response.status_code == 204 and response.content == b""
    assert alice_api.get("credentials").json() == []
    kept = alice_api.get(f"jobs/{job_id}").json()
    assert kept["outputs"] == job["outputs"] and kept["credential"] is None
    assert kept["credential_name"] == "Sim"

    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {
        "credential.created",
        "job.submitted",
        "job.cancelled",
        "job.retried",
        "credential.deleted",
    } <= actions
    assert all(SECRET.encode() not in body for body in alice_api.bodies)


def test_trailing_slash_is_accepted(alice_api: Api, team: Any) -> None:
    assert alice_api.get("credentials/").status_code == 200
    assert alice_api.get("jobs/").status_code == 200


def test_job_log_is_the_providers_log_when_there_is_one(alice_api: Api, team: Any) -> None:
    job = make_job(make_credential(team), ["a", "b"])
    job.events.create(kind="log", message="line 1\n", unit=1)
    job.events.create(kind="log", message="first\n", unit=0)
    job.events.create(kind="log", message="line 2\n", unit=1)
    job.events.create(kind="note", message="a reviewer's comment")
    log = alice_api.get(f"jobs/{job.pk}").json()["log"]
    assert log == "first\n\nline 1\nline 2\n"


def test_outputs_one_per_item_and_null_above_a_thousand(alice_api: Api, team: Any) -> None:
    job = make_job(make_credential(team), ["a", "b", "c"])
    assert alice_api.get(f"jobs/{job.pk}").json()["outputs"] == [None, None, None]
    finish_items(job, [None, {"answer": 42}])
    assert alice_api.get(f"jobs/{job.pk}").json()["outputs"] == [None, {"answer": 42}, None]
    big = make_job(make_credential(team), [f"p{i}" for i in range(1001)])
    answer = alice_api.get(f"jobs/{big.pk}").json()
    assert answer["outputs"] is None and answer["progress"] == {"done": 0, "total": 1001}


# --- listing -----------------------------------------------------------------------------------


def test_list_paginates_newest_first_without_duplicates(alice_api: Api, team: Any) -> None:
    credential = make_credential(team)
    jobs = [make_job(credential, [f"p{i}"]) for i in range(7)]
    # Three share one timestamp: the id breaks the tie, so no row is skipped or repeated.
    same = timezone.now()
    Job.objects.filter(pk__in=[j.pk for j in jobs[2:5]]).update(created_at=same)
    expected = list(Job.objects.order_by("-created_at", "-id").values_list("pk", flat=True))

    seen: list[int] = []
    pages = 0
    url = "jobs?limit=3"
    while url:
        body = alice_api.get(url).json()
        assert len(body["results"]) <= 3
        seen += [j["id"] for j in body["results"]]
        url = body["next"]
        pages += 1
        assert "log" not in body["results"][0]
    assert pages == 3
    assert seen == expected and len(set(seen)) == 7


def test_next_keeps_the_filters(alice_api: Api, team: Any) -> None:
    credential = make_credential(team)
    for i in range(4):
        make_job(credential, [f"p{i}"], model="keep")
        make_job(credential, [f"q{i}"], model="other")
    body = alice_api.get("jobs?model=keep&limit=3").json()
    assert "model=keep" in body["next"] and body["next"].startswith("http")
    rest = alice_api.get(body["next"]).json()
    assert {j["model"] for j in body["results"] + rest["results"]} == {"keep"}
    assert len(body["results"] + rest["results"]) == 4 and rest["next"] is None


def test_list_filters(alice_api: Api, bob: User, team: Any) -> None:
    together = make_credential(team, "together")
    mymagic = make_credential(team, "mymagic")
    by_alice = make_job(together, model="m-a", user=User.objects.get(username="alice"))
    by_bob = make_job(together, model="m-b", user=bob)
    magic = make_job(mymagic, model="m-a", question="?")
    Job.objects.filter(pk=by_bob.pk).update(status="completed")

    def ids(query: str) -> set[int]:
        response = alice_api.get(f"jobs?{query}")
        assert response.status_code == 200, response.content
        return {j["id"] for j in response.json()["results"]}

    assert ids("status=completed") == {by_bob.pk}
    assert ids("status=pending,completed") == {by_alice.pk, by_bob.pk, magic.pk}
    assert ids("provider=mymagic") == {magic.pk}
    assert ids("model=m-a") == {by_alice.pk, magic.pk}
    assert ids("created_by=bob") == {by_bob.pk}
    assert ids("created_by=nobody") == set()
    assert ids("model=m-a&provider=together") == {by_alice.pk}
    assert ids(f"team={team.pk}") == {by_alice.pk, by_bob.pk, magic.pk}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=done", "status"),
        ("provider=acme", "provider"),
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=ten", "limit"),
        ("cursor=not-a-cursor", "cursor"),
        ("cursor=%25%25%25", "cursor"),
        ("page=2", "page"),
        ("team=x", "team"),
        # "²".isdigit() is true and int("²") raises: these were 500s.
        ("limit=%C2%B2", "limit"),
        ("team=%C2%B2", "team"),
        ("limit=nan", "limit"),
        ("team=99999999999999999999", "team"),
        ("model=a%00b", "model"),
        ("created_by=%00", "created_by"),
    ],
)
def test_list_refuses_bad_parameters(alice_api: Api, team: Any, query: str, field: str) -> None:
    assert_error(alice_api.get(f"jobs?{query}"), 400, field)


def test_list_shows_only_my_teams(
    alice_api: Api, charlie_api: Api, team: Any, other_team: Any
) -> None:
    mine = make_job(make_credential(team))
    theirs = make_job(make_credential(other_team))
    assert [j["id"] for j in alice_api.get("jobs").json()["results"]] == [mine.pk]
    assert [j["id"] for j in charlie_api.get("jobs").json()["results"]] == [theirs.pk]
    assert [c["id"] for c in charlie_api.get("credentials").json()] == [theirs.credential_id]


# --- authentication ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header", [None, "", "Bearer", "Bearer ", "Bearer ljd_wrong", "Basic YWxpY2U6cHc=", "Token x"]
)
def test_missing_or_invalid_token_is_401(
    client: Any, alice: User, team: Any, header: str | None
) -> None:
    headers = {"Authorization": header} if header is not None else {}
    response = client.get(BASE + "jobs", headers=headers)
    assert_error(response, 401)
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_revoked_token_and_inactive_user_are_401(client: Any, alice: User, team: Any) -> None:
    token, key = ApiToken.issue(alice)
    api = Api(client, key)
    assert api.get("jobs").status_code == 200
    ApiToken.objects.filter(pk=token.pk).update(revoked_at=timezone.now())
    assert_error(api.get("jobs"), 401)
    _, key = ApiToken.issue(alice)
    User.objects.filter(pk=alice.pk).update(is_active=False)
    assert_error(api.get("jobs", key=key), 401)


def test_session_cookie_is_not_enough(client: Any, alice: User, team: Any) -> None:
    client.force_login(alice)
    assert_error(client.get(BASE + "jobs"), 401)


def test_last_used_is_written_at_most_once_a_minute(client: Any, alice: User, team: Any) -> None:
    token, key = ApiToken.issue(alice)
    api = Api(client, key)
    api.get("jobs")
    token.refresh_from_db()
    first = token.last_used_at
    assert first is not None
    recent = timezone.now() - timedelta(seconds=30)
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=recent)
    api.get("jobs")
    token.refresh_from_db()
    assert token.last_used_at == recent
    stale = timezone.now() - timedelta(minutes=2)
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=stale)
    api.get("jobs")
    token.refresh_from_db()
    assert token.last_used_at > stale + timedelta(minutes=1)


# --- paths and methods ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["nope", "jobs/abc", "jobs/1/explode", "credentials/1/x", "jobs/12345678901234567890123"],
)
def test_unknown_path_is_json_404(alice_api: Api, path: str) -> None:
    assert_error(alice_api.get(path), 404)
    assert_error(alice_api.post(path, {}), 404)


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "jobs", "GET, POST"),
        ("DELETE", "jobs", "GET, POST"),
        ("DELETE", "jobs/1", "GET"),
        ("GET", "jobs/1/cancel", "POST"),
        ("PATCH", "credentials/1", "DELETE, GET"),
        ("GET", "jobs/1/retry", "POST"),
    ],
)
def test_wrong_method_is_json_405(alice_api: Api, method: str, path: str, allow: str) -> None:
    response = alice_api.call(method, path)
    assert_error(response, 405)
    assert response["Allow"] == allow


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "{",
        "{'a': 1}",
        "[]",
        '"text"',
        "1",
        "null",
        "true",
        "",
        "   ",
        '{"prompts": NaN}',
        '{"temperature": Infinity}',
        '{"options": {"x": 1e400}}',
        "[" * 5000 + "]" * 5000,
        '{"options": ' + "[" * 100 + "]" * 100 + "}",
        b"\xff\xfe",
    ],
)
@pytest.mark.parametrize("path", ["credentials", "jobs"])
def test_body_must_be_a_json_object(alice_api: Api, team: Any, raw: str | bytes, path: str) -> None:
    assert_error(alice_api.post(path, raw=raw), 400)
    assert not Job.objects.exists() and not Credential.objects.exists()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"prompts": "one"}, "prompts"),
        ({"prompts": [1, 2]}, "prompts"),
        ({"prompts": []}, "prompts"),
        ({"prompts": ["ok", "  "]}, "prompts"),
        ({"prompts": None}, "prompts"),
        ({"max_tokens": "ten"}, "max_tokens"),
        ({"max_tokens": 1.5}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 10**30}, "max_tokens"),
        ({"temperature": True}, "temperature"),
        ({"temperature": 9}, "temperature"),
        ({"top_p": "0.5"}, "top_p"),
        ({"model": ""}, "model"),
        ({"model": None}, "model"),
        ({"model": 7}, "model"),
        ({"model": "x" * 201}, "model"),
        ({"credential": "1"}, "credential"),
        ({"credential": True}, "credential"),
        ({"credential": 999_999}, "credential"),
        ({"credential": -3}, "credential"),
        ({"credential": None}, "credential"),
        ({"options": [1]}, "options"),
        ({"output_schema": "json"}, "output_schema"),
        ({"question": "Only MyMagic asks questions"}, "question"),
        ({"stream": True}, "stream"),
        ({"stream": "yes"}, "stream"),
        ({"prompt": "typo"}, "prompt"),
        ({"team": 999_999}, "credential"),
        ({"model": "nul\x00byte"}, "model"),
        ({"options": {"deep": ["nul\x00"]}}, "options"),
    ],
)
def test_job_input_errors_name_the_field(
    alice_api: Api, team: Any, change: dict[str, Any], field: str
) -> None:
    credential = make_credential(team)
    body = {"credential": credential.pk, "model": "m", "prompts": ["a"], **change}
    assert_error(alice_api.post("jobs", body), 400, field)
    assert not Job.objects.exists()


def test_all_field_errors_come_at_once(alice_api: Api, team: Any) -> None:
    body = assert_error(alice_api.post("jobs", {"prompts": 3, "max_tokens": "x"}), 400)
    assert set(body["fields"]) == {"credential", "model", "prompts", "max_tokens"}
    assert "credential: This field is required." in body["error"]


def test_job_limits_come_from_settings(alice_api: Api, team: Any, settings: Any) -> None:
    settings.MAX_PROMPTS_PER_JOB = 2
    settings.MAX_PROMPT_CHARS = 10
    credential = make_credential(team)
    body = {"credential": credential.pk, "model": "m"}
    error = assert_error(
        alice_api.post("jobs", {**body, "prompts": ["a", "b", "c"]}), 400, "prompts"
    )
    assert "at most 2 per job" in error["fields"]["prompts"][0]
    error = assert_error(alice_api.post("jobs", {**body, "prompts": ["x" * 11]}), 400, "prompts")
    assert "at most 10 characters" in error["fields"]["prompts"][0]
    assert alice_api.post("jobs", {**body, "prompts": ["a", "x" * 10]}).status_code == 201


def test_provider_validation_applies(alice_api: Api, team: Any) -> None:
    mymagic = make_credential(team, "mymagic")
    lamini = make_credential(team, "lamini")
    grid = make_credential(team, "gridrepublic")
    body = {"model": "llama3_70b", "prompts": ["a"]}
    assert_error(alice_api.post("jobs", {**body, "credential": mymagic.pk}), 400, "question")
    assert_error(
        alice_api.post(
            "jobs", {**body, "credential": lamini.pk, "output_schema": {"a": "complex"}}
        ),
        400,
        "output_schema",
    )
    assert_error(
        alice_api.post("jobs", {**body, "credential": grid.pk, "system_prompt": "x"}),
        400,
        "system_prompt",
    )
    response = alice_api.post(
        "jobs",
        {
            **body,
            "credential": mymagic.pk,
            "question": "Summarize",
            "output_schema": {"n": "int"},
            "options": {"return_output": True},
        },
    )
    assert response.status_code == 201, response.content
    spec = Job.objects.get(pk=response.json()["id"]).spec
    assert spec["question"] == "Summarize" and spec["output_schema"] == {"n": "int"}


def test_streaming_job_on_bytez(alice_api: Api, team: Any) -> None:
    bytez = make_credential(team, "bytez")
    response = alice_api.post(
        "jobs",
        {
            "credential": bytez.pk,
            "model": "openai-community/gpt2",
            "prompts": ["a"],
            "stream": True,
        },
    )
    assert response.status_code == 201, response.content
    assert Job.objects.get().spec["stream"] is True


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"secret": ""}, "secret"),
        ({"secret": None}, "secret"),
        ({"secret": 1234}, "secret"),
        ({"provider": "acme"}, "provider"),
        ({"name": ""}, "name"),
        ({"name": ["x"]}, "name"),
        ({"base_url": "http://169.254.169.254/"}, "base_url"),
        ({"base_url": "ftp://example.com"}, "base_url"),
        ({"base_url": 80}, "base_url"),
        ({"options": [1, 2]}, "options"),
        ({"options": "{}"}, "options"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"max_concurrency": 2001}, "max_concurrency"),
        ({"rpm": 0}, "rpm"),
        ({"rpm": 1_000_001}, "rpm"),
        ({"rpm": "ten"}, "rpm"),
        ({"tpm": -5}, "tpm"),
        ({"tpm": 10**12}, "tpm"),
        ({"max_concurrency": "ten"}, "max_concurrency"),
        ({"max_concurrency": False}, "max_concurrency"),
        ({"team": 999_999}, "team"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_credential_input_errors_name_the_field(
    alice_api: Api, team: Any, change: dict[str, Any], field: str
) -> None:
    body = {"provider": "together", "name": "Main", "secret": "s3cr3t-value", **change}
    error = assert_error(alice_api.post("credentials", body), 400, field)
    assert "s3cr3t-value" not in json.dumps(error)
    assert not Credential.objects.exists()


def test_credential_defaults_and_duplicate_name(alice_api: Api, team: Any) -> None:
    body = {"provider": "together", "name": "Main", "secret": "s3cr3t-value"}
    response = alice_api.post("credentials", body)
    assert response.status_code == 201
    created = response.json()
    assert created["base_url"] == "https://api.together.xyz" and created["max_concurrency"] == 4
    assert created["rpm"] is None and created["tpm"] is None
    assert b"s3cr3t-value" not in response.content
    credential = Credential.objects.get()
    assert (
        credential.reveal_secret() == "s3cr3t-value" and credential.created_by.username == "alice"
    )
    assert_error(alice_api.post("credentials", body), 400, "name")


def test_credential_rate_limits(alice_api: Api, team: Any) -> None:
    body = {"provider": "together", "name": "Paced", "secret": "s", "rpm": 600, "tpm": 90_000}
    body["max_concurrency"] = 2000
    response = alice_api.post("credentials", body)
    assert response.status_code == 201
    created = response.json()
    assert (created["rpm"], created["tpm"], created["max_concurrency"]) == (600, 90_000, 2000)
    credential = Credential.objects.get()
    assert (credential.requests_per_minute, credential.tokens_per_minute) == (600, 90_000)
    assert alice_api.get(f"credentials/{credential.pk}").json()["rpm"] == 600


def test_team_in_body_picks_the_team(
    alice_api: Api, alice: User, team: Any, other_team: Any
) -> None:
    gamma = make_team_with(alice, "Gamma", Role.ADMIN)
    body = {"provider": "together", "name": "Main", "secret": "s"}
    assert alice_api.post("credentials", body).status_code == 201
    assert alice_api.post("credentials", {**body, "team": gamma.pk}).status_code == 201
    assert set(Credential.objects.values_list("team__name", flat=True)) == {"Alpha", "Gamma"}
    assert_error(alice_api.post("credentials", {**body, "team": other_team.pk}), 400, "team")
    in_gamma = Credential.objects.get(team=gamma)
    job = {"credential": in_gamma.pk, "model": "m", "prompts": ["a"]}
    response = alice_api.post("jobs", job)
    assert response.status_code == 201 and Job.objects.get().team == gamma
    assert_error(alice_api.post("jobs", {**job, "team": team.pk}), 400, "credential")
    assert [c["name"] for c in alice_api.get(f"credentials?team={gamma.pk}").json()] == ["Main"]


def make_team_with(user: User, name: str, role: str) -> Any:
    from dashboard.models import Team

    team = Team.objects.create(name=name)
    Membership.objects.create(team=team, user=user, role=role)
    return team


def test_user_without_team(client: Any, db: Any) -> None:
    api = api_for(client, make_user("loner"))
    assert api.get("jobs").json() == {"results": [], "next": None}
    assert_error(api.post("credentials", {"provider": "together", "name": "x", "secret": "s"}), 403)


def test_retry_and_cancel_refusals(alice_api: Api, team: Any) -> None:
    credential = make_credential(team)
    job = make_job(credential)
    assert_error(alice_api.post(f"jobs/{job.pk}/cancel", {"why": "x"}), 400, "why")
    assert_error(alice_api.post(f"jobs/{job.pk}/retry", {"failed_only": "yes"}), 400, "failed_only")
    finish_items(job, ["fine"])
    Job.objects.filter(pk=job.pk).update(status="completed")
    assert_error(alice_api.post(f"jobs/{job.pk}/retry", {"failed_only": True}), 409)  # none failed
    credential.delete()
    error = assert_error(alice_api.post(f"jobs/{job.pk}/retry"), 409)
    assert "credential" in error["error"]


# --- team scoping and roles -----------------------------------------------------------------------


def test_another_teams_ids_are_404_everywhere(charlie_api: Api, team: Any, sims: Any) -> None:
    credential = make_credential(team)
    job = make_job(credential)
    instance = ModelInstance.objects.create(team=team, credential=credential, model="m")
    for method, path in [
        ("GET", f"credentials/{credential.pk}"),
        ("DELETE", f"credentials/{credential.pk}"),
        ("GET", f"jobs/{job.pk}"),
        ("POST", f"jobs/{job.pk}/cancel"),
        ("POST", f"jobs/{job.pk}/retry"),
        ("GET", f"instances/{instance.pk}"),
        ("DELETE", f"instances/{instance.pk}"),
    ]:
        assert_error(charlie_api.call(method, path), 404)
    assert_error(
        charlie_api.post("jobs", {"credential": credential.pk, "model": "m", "prompts": ["a"]}),
        400,
        "credential",
    )
    job.refresh_from_db()
    assert job.status == "pending" and Job.objects.count() == 1
    assert Credential.objects.filter(pk=credential.pk).exists()
    assert ModelInstance.objects.get().status == "requested"


def test_viewer_reads_but_cannot_write(viewer_api: Api, team: Any) -> None:
    credential = make_credential(team)
    job = make_job(credential)
    instance = ModelInstance.objects.create(team=team, credential=credential, model="m")
    assert viewer_api.get("credentials").status_code == 200
    assert viewer_api.get(f"jobs/{job.pk}").status_code == 200
    assert viewer_api.get("jobs").json()["results"][0]["id"] == job.pk
    assert viewer_api.get(f"instances/{instance.pk}").status_code == 200
    writes = [
        ("POST", "credentials", {"provider": "together", "name": "V", "secret": "s"}),
        ("DELETE", f"credentials/{credential.pk}", None),
        ("POST", "jobs", {"credential": credential.pk, "model": "m", "prompts": ["a"]}),
        ("POST", f"jobs/{job.pk}/cancel", None),
        ("POST", f"jobs/{job.pk}/retry", None),
        ("POST", "instances", {"credential": credential.pk, "model": "m"}),
        ("DELETE", f"instances/{instance.pk}", None),
    ]
    for method, path, body in writes:
        error = assert_error(viewer_api.call(method, path, body), 403)
        assert "role" in error["error"]
    assert Job.objects.count() == 1 and Credential.objects.count() == 1


def test_member_submits_but_cannot_manage_credentials(bob_api: Api, team: Any) -> None:
    credential = make_credential(team)
    assert_error(
        bob_api.post("credentials", {"provider": "together", "name": "B", "secret": "s"}), 403
    )
    assert_error(bob_api.delete(f"credentials/{credential.pk}"), 403)
    response = bob_api.post("jobs", {"credential": credential.pk, "model": "m", "prompts": ["a"]})
    assert response.status_code == 201
    assert bob_api.post(f"jobs/{response.json()['id']}/cancel").status_code == 200


# --- model instances ------------------------------------------------------------------------------


def test_instances_through_the_api(bob_api: Api, team: Any) -> None:
    bytez = make_credential(team, "bytez")
    body = {
        "credential": bytez.pk,
        "model": "openai-community/gpt2",
        "concurrency": 2,
        "expiration_seconds": 300,
    }
    response = bob_api.post("instances", body)
    assert response.status_code == 201, response.content
    created = response.json()
    assert created == {"id": created["id"], "status": "requested"}

    shown = bob_api.get(f"instances/{created['id']}").json()
    assert {
        k: shown[k] for k in ("id", "model", "status", "concurrency", "inferences", "expires_at")
    } == {
        "id": created["id"],
        "model": "openai-community/gpt2",
        "status": "requested",
        "concurrency": 2,
        "inferences": None,
        "expires_at": None,
    }
    assert isinstance(shown["provider_status"], str)
    assert [i["id"] for i in bob_api.get("instances").json()] == [created["id"]]
    assert_error(bob_api.post("instances", body), 409)  # one live instance per model

    response = bob_api.delete(f"instances/{created['id']}")
    assert response.status_code == 200 and response.json()["status"] == "stopped"
    assert bob_api.delete(f"instances/{created['id']}").status_code == 200  # idempotent
    actions = list(AuditEvent.objects.order_by("id").values_list("action", flat=True))
    assert actions == ["instance.requested", "instance.shutdown"]
    ModelInstance.objects.filter(pk=created["id"]).update(status="expired")
    assert_error(bob_api.delete(f"instances/{created['id']}"), 409)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"model": ""}, "model"),
        ({"model": None}, "model"),
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": "2"}, "concurrency"),
        ({"expiration_seconds": -1}, "expiration_seconds"),
        ({"expiration_seconds": 1.5}, "expiration_seconds"),
        ({"credential": 999_999}, "credential"),
        ({"size": "xl"}, "size"),
    ],
)
def test_instance_input_errors(bob_api: Api, team: Any, change: dict[str, Any], field: str) -> None:
    bytez = make_credential(team, "bytez")
    body = {"credential": bytez.pk, "model": "openai-community/gpt2", **change}
    assert_error(bob_api.post("instances", body), 400, field)
    assert not ModelInstance.objects.exists()


def test_instances_need_a_provider_that_has_them(bob_api: Api, team: Any) -> None:
    together = make_credential(team, "together")
    error = assert_error(
        bob_api.post("instances", {"credential": together.pk, "model": "m"}), 400, "credential"
    )
    assert "Together has no model instances" in error["error"]


def test_instance_lifecycle_on_the_bytez_simulator(
    bob_api: Api, team: Any, sims: Any, sim_clock: Any
) -> None:
    from dashboard.instances.poller import instance_check

    sim = use_clock(sims.get("bytez"), sim_clock, request_seconds=0, load_seconds=0)
    bytez = make_credential(team, "bytez", base_url=sim.base_url)
    response = bob_api.post("instances", {"credential": bytez.pk, "model": "openai-community/gpt2"})
    assert response.status_code == 201, response.content
    instance_id = response.json()["id"]
    with connect.build_provider(bytez) as provider:  # what the instance poller does
        for _ in range(3):
            instance_check(ModelInstance.objects.get(pk=instance_id), provider)
    shown = bob_api.get(f"instances/{instance_id}").json()
    assert shown["status"] == "running" and shown["provider_status"]
    assert shown["concurrency"] == 1 and shown["expires_at"]

    response = bob_api.delete(f"instances/{instance_id}")
    assert response.status_code == 200 and response.json()["status"] == "stopped"
    assert sim.count("POST /model/delete") == 1
    assert all(SECRET.encode() not in body for body in bob_api.bodies)


# --- anything goes in, never a 500 ------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)


@pytest.fixture
def fuzz_world(client: Any, alice: User, team: Any, other_team: Any) -> dict[str, Any]:
    mine = make_credential(team, "together", name="fuzz-together")
    bytez = make_credential(team, "bytez", name="fuzz-bytez")
    lamini = make_credential(team, "lamini", name="fuzz-lamini")
    mymagic = make_credential(team, "mymagic", name="fuzz-mymagic")
    theirs = make_credential(other_team, name="fuzz-theirs")
    return {
        "api": api_for(client, alice),
        "job": make_job(mine),
        "ids": [mine.pk, bytez.pk, lamini.pk, mymagic.pk, theirs.pk, team.pk, other_team.pk, 0],
    }


def _field_values(ids: list[int]) -> dict[str, st.SearchStrategy[Any]]:
    """Plausible values per field, so bodies reach deep validation and success,
    not only the type checks; any JSON value stays possible."""
    words = st.text(max_size=12)
    numbers = st.integers(-5, 300) | st.floats(-1, 12, allow_nan=False)
    plausible = {
        "provider": st.sampled_from(
            ["together", "bytez", "lamini", "mymagic", "gridrepublic", "x"]
        ),
        "name": words,
        "secret": words,
        "base_url": st.sampled_from(["http://127.0.0.1:9", "", "https://example.com/v1", "x:/"]),
        "options": st.dictionaries(
            st.sampled_from(["params", "return_output", "region", "x"]), json_values, max_size=2
        ),
        "max_concurrency": st.integers(-1, 300),
        "team": st.sampled_from(ids),
        "credential": st.sampled_from(ids),
        "model": st.sampled_from(["m", "openai-community/gpt2", " ", "x" * 201]) | words,
        "prompts": st.lists(words, max_size=3),
        "question": words,
        "system_prompt": words,
        "max_tokens": numbers,
        "temperature": numbers,
        "top_p": numbers,
        "top_k": numbers,
        "repetition_penalty": numbers,
        "output_schema": st.dictionaries(
            words, st.sampled_from(["str", "int", "x"]) | json_values, max_size=2
        ),
        "stream": st.booleans(),
        "failed_only": st.booleans(),
        "concurrency": st.integers(-1, 300),
        "expiration_seconds": st.integers(-1, 100_000),
    }
    return plausible


ENDPOINT_FIELDS = {  # (required, optional)
    "credentials": (["provider", "name", "secret"], ["base_url", "options", "max_concurrency"]),
    "jobs": (
        ["credential", "model", "prompts"],
        [
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
            "team",
        ],
    ),
    "job/cancel": ([], []),
    "job/retry": ([], ["failed_only"]),
    "instances": (["credential", "model"], ["concurrency", "expiration_seconds", "team"]),
}


def _bodies(endpoint: str, ids: list[int]) -> st.SearchStrategy[Any]:
    """Plausible bodies (often valid), the same with any JSON in any field and
    stray fields, and raw bytes or JSON that is not an object."""
    plausible = _field_values(ids)
    anything = {name: strategy | json_values for name, strategy in plausible.items()}
    required, optional = ENDPOINT_FIELDS[endpoint]
    valid = st.fixed_dictionaries(
        {name: plausible[name] for name in required},
        optional={name: plausible[name] for name in optional},
    )
    wild = st.fixed_dictionaries(
        {}, optional={name: anything[name] for name in required + optional}
    )
    extra = st.dictionaries(
        st.sampled_from(list(plausible)) | st.text(max_size=6), json_values, max_size=2
    )
    mixed = st.tuples(wild, extra).map(lambda pair: {**pair[0], **pair[1]})
    raw = st.binary(max_size=40) | json_values.map(json.dumps)
    return st.one_of(valid, valid, wild, mixed, raw)


@pytest.mark.parametrize(
    "endpoint", ["credentials", "jobs", "job/cancel", "job/retry", "instances"]
)
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_random_bodies_never_break_the_api(
    fuzz_world: dict[str, Any], endpoint: str, data: Any
) -> None:
    api: Api = fuzz_world["api"]
    job = fuzz_world["job"]
    path = endpoint.replace("job/", f"jobs/{job.pk}/")
    body = data.draw(_bodies(endpoint, fuzz_world["ids"]))
    key = data.draw(st.sampled_from([*[api.key] * 8, None, "ljd_bogus"]))
    raw = body if isinstance(body, bytes | str) else json.dumps(body)
    response = api.post(path, raw=raw, key=key)
    allowed = {201, 400, 401, 403, 404, 409} | ({200} if endpoint == "job/cancel" else set())
    assert response.status_code in allowed, response.content
    assert response["Content-Type"] == "application/json"
    answer = response.json()
    if response.status_code >= 400:
        assert isinstance(answer["error"], str) and answer["error"]
    assert SECRET.encode() not in response.content


def test_credential_with_live_instance_is_not_deleted(alice_api: Api, team: Any) -> None:
    from dashboard.models import ModelInstance

    credential = make_credential(team, "bytez")
    ModelInstance.objects.create(team=team, credential=credential, model="m", status="loading")
    response = alice_api.delete(f"credentials/{credential.pk}")
    assert response.status_code == 409
    assert "live model instance" in response.json()["error"]
    assert Credential.objects.filter(pk=credential.pk).exists()


def test_json_answers_escape_markup(alice_api: Api, team: Any) -> None:
    job = make_job(make_credential(team), ["<script>alert(1)</script>"])
    response = alice_api.get(f"jobs/{job.pk}")
    assert b"<script>" not in response.content
    finish_items(job, ["<b>bold</b> & <script>x</script>"])
    response = alice_api.get(f"jobs/{job.pk}")
    assert b"<script>" not in response.content and b"<b>" not in response.content
    assert response.json()["outputs"] == ["<b>bold</b> & <script>x</script>"]


# --- the schema and the docs ------------------------------------------------------------------


def test_openapi_schema_lists_every_operation(client: Any) -> None:
    from django.urls import get_resolver

    response = client.get(BASE + "openapi.json")  # no token: the schema is public
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    operations = {
        (method.upper(), path) for path, item in schema["paths"].items() for method in item
    }
    # DESIGN's calls that exist so far, at least; every mounted route is checked below.
    assert {
        ("POST", "/api/v1/credentials"),
        ("POST", "/api/v1/jobs"),
        ("GET", "/api/v1/jobs/{pk}/items"),
        ("POST", "/api/v1/credentials/{pk}/test"),
        ("DELETE", "/api/v1/instances/{pk}"),
    } <= operations
    assert ("POST", "/api/v1/jobs/{pk}/retry") in operations
    assert schema["components"]["securitySchemes"] == {
        "BearerToken": {"type": "http", "scheme": "bearer"}
    }
    # Every route of the API is in the schema (so schemathesis tests it too).
    mounted = next(e for e in get_resolver().url_patterns if str(e.pattern) == "api/v1/")
    api_routes = {
        "/api/v1/" + str(entry.pattern).replace("<objectid:pk>", "{pk}")
        for entry in mounted.url_patterns
        if entry.name
        and entry.name.startswith("api_")
        and entry.name not in ("api_openapi", "api_docs", "api_root", "api_not_found")
    }
    assert api_routes == {path for _, path in operations}
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            assert operation["security"] == [{"BearerToken": []}], (method, path)
            errors = {code for code in operation["responses"] if code.startswith("4")}
            assert {"400", "401"} <= errors, (method, path)


def test_docs_page_is_served_from_this_host(client: Any) -> None:
    response = client.get(BASE + "docs")
    assert response.status_code == 200
    page = response.content.decode()
    assert "/static/ninja/swagger-ui-bundle.js" in page and "/api/v1/openapi.json" in page
    assert "http://" not in page and "https://" not in page  # no CDN
    assert "<script>" not in page  # the init script is a static file (CSP: script-src 'self')


# --- what the fuzzers found --------------------------------------------------------------------


def test_a_path_with_a_newline_is_a_json_404(alice_api: Api) -> None:
    assert_error(alice_api.get("instances/%0A"), 404)
    assert_error(alice_api.get("jobs/1%0A"), 404)


def test_a_job_deadline_option_must_be_a_number_of_seconds(alice_api: Api, team: Any) -> None:
    """job_create reads options.deadline_seconds with int(): "abc" was a 500."""
    credential = make_credential(team)
    body = {"credential": credential.pk, "model": "m", "prompts": ["a"]}
    for bad in ("abc", 10**30, -5, 1.5, True, [1]):
        error = assert_error(
            alice_api.post("jobs", {**body, "options": {"deadline_seconds": bad}}), 400, "options"
        )
        assert "deadline_seconds" in error["fields"]["options"][0]
    response = alice_api.post("jobs", {**body, "options": {"deadline_seconds": 600}})
    assert response.status_code == 201, response.content


def test_an_optional_body_may_be_empty_or_null_but_not_anything_else(
    alice_api: Api, team: Any
) -> None:
    job = make_job(make_credential(team))
    assert alice_api.post(f"jobs/{job.pk}/cancel", raw="null").status_code == 200
    assert alice_api.post(f"jobs/{job.pk}/retry", raw="").status_code == 201
    assert_error(alice_api.post(f"jobs/{job.pk}/retry", raw="[]"), 400)
    error = assert_error(alice_api.post("jobs", raw="null"), 400)
    assert error["error"] == "Invalid input: The body must be a JSON object."


def test_another_teams_object_is_a_404_whatever_the_body(charlie_api: Api, team: Any) -> None:
    """The object is looked up before the body is read: a bad body does not
    turn another team's 404 into a 400."""
    job = make_job(make_credential(team))
    for raw in ("{", "[]", '{"failed_only": "yes"}', '{"x": 1}'):
        assert_error(charlie_api.post(f"jobs/{job.pk}/retry", raw=raw), 404)
        assert_error(charlie_api.post(f"jobs/{job.pk}/cancel", raw=raw), 404)
