"""The holes of issue 19 that two owners left: an output schema that makes the
worker fetch or spin, a ciphertext taken as a secret, and a credential's key
sent to a new host."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.urls import reverse

from dashboard.core import crypto, structured
from dashboard.core.connect import build_provider
from dashboard.jobs import worker
from dashboard.models import Credential, Job
from tests.api.conftest import api_for, assert_error
from tests.conftest import make_credential, make_job

# --- an output schema's $ref is never fetched ---------------------------------------------


class Listener:
    """A loopback HTTP server that counts the requests it gets."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        listener = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                listener.paths.append(self.path)
                body = b'{"type": "string"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/schema+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/x.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


def remote(ref: str, keyword: str = "$ref") -> dict[str, Any]:
    return {"type": "object", "properties": {"a": {keyword: ref}}, "required": ["a"]}


@pytest.mark.django_db
@pytest.mark.parametrize("keyword", ["$ref", "$dynamicRef"])
def test_a_remote_ref_is_refused_at_submit(
    client: Any, alice: Any, team: Any, listener: Listener, keyword: str
) -> None:
    api = api_for(client, alice)
    credential = make_credential(team, "openai")
    body = {"credential": credential.pk, "model": "m", "prompts": ["a"]}
    for ref in (listener.url, "file:///etc/passwd", "other.json#/x"):
        error = assert_error(
            api.post("jobs", {**body, "output_schema": remote(ref, keyword)}), 400, "output_schema"
        )
        message = error["fields"]["output_schema"][0]
        assert keyword in message and "outside" in message
    assert not Job.objects.exists()
    assert listener.paths == []
    # A reference inside the schema is fine.
    local = {
        "type": "object",
        "$defs": {"n": {"type": "integer"}},
        "properties": {"a": {"$ref": "#/$defs/n"}},
    }
    assert api.post("jobs", {**body, "output_schema": local}).status_code == 201


@pytest.mark.django_db
def test_the_job_form_refuses_a_remote_ref(
    client: Any, alice: Any, team: Any, listener: Listener
) -> None:
    credential = make_credential(team, "openai")
    client.force_login(alice)
    page = client.post(
        "/jobs/new",
        {
            "credential": credential.pk,
            "model": "m",
            "prompts": "a",
            "split": "lines",
            "output_schema": json.dumps(remote(listener.url)),
        },
    )
    assert page.status_code == 200
    assert "points outside it" in page.content.decode()
    assert not Job.objects.exists() and listener.paths == []


def test_validating_an_output_never_fetches(listener: Listener) -> None:
    for ref in (listener.url, "file:///etc/passwd"):
        problems = structured.problems(remote(ref), {"a": "x"})
        assert problems and "could not be checked" in problems[0]
    assert listener.paths == []


def test_local_refs_still_validate() -> None:
    schema = {
        "type": "object",
        "$defs": {"n": {"type": "integer"}},
        "properties": {"a": {"$ref": "#/$defs/n"}},
    }
    assert structured.problems(schema, {"a": 1}) == []
    assert structured.problems(schema, {"a": "x"}) == ["a: 'x' is not of type 'integer'"]


# --- a pattern never holds the worker -------------------------------------------------------


def test_a_backtracking_pattern_ends_within_a_second() -> None:
    """In a child process: on a pattern that backtracks for ever (2**40 ways),
    Python's ``re`` would never come back and would hold this one too."""
    code = textwrap.dedent(
        """
        import time
        from dashboard.core import structured
        schema = {"type": "object", "properties": {"s": {"type": "string", "pattern": "^(a+)+$"}}}
        for text in ("a" * 40 + "!", "a" * 60 + "!"):
            for pattern in ("^(a+)+$", "^(a|aa)+$"):
                schema["properties"]["s"]["pattern"] = pattern
                started = time.monotonic()
                problems = structured.problems(schema, {"s": text})
                took = time.monotonic() - started
                assert took < 1.0, (pattern, took)
                assert len(problems) == 1, problems
                print(problems[0])
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=20, check=False
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 4
    assert all("does not match" in line or "took more than" in line for line in lines)
    assert any("'^(a|aa)+$' took more than 0.1 s to check" in line for line in lines)


def test_patterns_still_check() -> None:
    schema = {"type": "object", "properties": {"s": {"type": "string", "pattern": r"^\d{3}$"}}}
    assert structured.problems(schema, {"s": "123"}) == []
    assert structured.problems(schema, {"s": "12a"}) == [r"s: '12a' does not match '^\\d{3}$'"]


@pytest.mark.django_db
def test_a_slow_pattern_marks_the_item_invalid(team: Any, sims: Any) -> None:
    sim = sims.get("together")
    credential = make_credential(team, base_url=sim.base_url)
    pattern = "^(a|aa)+$"  # Python's re takes seconds on 34 letters, and doubles with each 1.5
    schema = {"type": "object", "properties": {"s": {"type": "string", "pattern": pattern}}}
    job = make_job(credential, ["a"], output_schema=schema)
    answer = json.dumps({"s": "a" * 34 + "!"})
    sim.add_fault(
        status=200, body={"status": "finished", "output": {"choices": [{"text": answer}]}}
    )
    worker.advance_job(job.pk)
    item = job.items.get()
    assert item.status == "completed" and item.valid is False
    assert "took more than 0.1 s to check" in item.validation_error


@pytest.mark.django_db
def test_a_pattern_that_cannot_compile_is_a_400(client: Any, alice: Any, team: Any) -> None:
    api = api_for(client, alice)
    credential = make_credential(team, "openai")
    body = {"credential": credential.pk, "model": "m", "prompts": ["a"]}
    for pattern, words in (("a{99999999999}", "too large"), ("(", "is not a 'regex'")):
        schema = {"type": "object", "properties": {"s": {"type": "string", "pattern": pattern}}}
        error = assert_error(
            api.post("jobs", {**body, "output_schema": schema}), 400, "output_schema"
        )
        assert words in error["fields"]["output_schema"][0]
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_pattern_properties_are_refused_at_submit(client: Any, alice: Any, team: Any) -> None:
    api = api_for(client, alice)
    credential = make_credential(team, "openai")
    schema = {"type": "object", "patternProperties": {"^(a+)+$": {"type": "string"}}}
    body = {"credential": credential.pk, "model": "m", "prompts": ["a"], "output_schema": schema}
    error = assert_error(api.post("jobs", body), 400, "output_schema")
    assert "patternProperties" in error["fields"]["output_schema"][0]
    # A job saved before the check is not run on re either.
    assert structured.problems(schema, {"a" * 30 + "!": "x"}) == [
        "the output could not be checked: output_schema may not use patternProperties; "
        "name the properties, or use pattern."
    ]


# --- a ciphertext given as a secret is a secret like any other -----------------------------


def raw_secret(credential: Credential) -> str:
    """The secret column as the database holds it (no field conversion)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT secret FROM dashboard_credential WHERE id = %s", [credential.pk])
        return str(cursor.fetchone()[0])


@pytest.mark.django_db
def test_a_ciphertext_posted_as_a_secret_is_encrypted_not_decrypted(
    client: Any, alice: Any, team: Any
) -> None:
    victim = make_credential(team, secret="victims-key-5678")
    stolen = raw_secret(victim)
    assert stolen.startswith("fernet:")
    response = api_for(client, alice).post(
        "credentials",
        {
            "provider": "together",
            "name": "mine",
            "secret": stolen,
            "base_url": "http://127.0.0.1:9",
        },
    )
    assert response.status_code == 201, response.content
    mine = Credential.objects.get(pk=response.json()["id"])
    assert raw_secret(mine) != stolen
    provider = build_provider(mine)
    assert provider._secret == stolen  # the literal string, as given
    assert provider.client.headers["Authorization"] == f"Bearer {stolen}"
    assert "victims-key-5678" not in provider.client.headers["Authorization"]


@pytest.mark.django_db
def test_a_ciphertext_given_as_a_new_secret_on_the_page_is_encrypted(
    client: Any, alice: Any, team: Any
) -> None:
    stolen = raw_secret(make_credential(team, secret="victims-key-5678"))
    mine = make_credential(team, name="Mine", base_url="http://127.0.0.1:9")
    client.force_login(alice)
    response = client.post(
        reverse("credential_edit", args=[mine.pk]),
        {"name": "Mine", "base_url": mine.base_url, "max_concurrency": "4", "new_secret": stolen},
    )
    assert response.status_code == 302
    mine.refresh_from_db()
    assert mine.reveal_secret() == stolen and build_provider(mine)._secret == stolen


@pytest.mark.django_db
def test_stored_ciphertext_is_kept_as_it_is(team: Any) -> None:
    """What the database holds and what rotate() makes are not encrypted again."""
    credential = make_credential(team, secret="key-1")
    stored = raw_secret(credential)
    loaded = Credential.objects.get(pk=credential.pk)
    loaded.name = "renamed"
    loaded.save()
    assert raw_secret(credential) == stored
    Credential.objects.filter(pk=credential.pk).update(secret=crypto.rotate(loaded.secret))
    assert Credential.objects.get(pk=credential.pk).reveal_secret() == "key-1"


# --- a credential's secret goes only to the host it was given for ---------------------------


@pytest.mark.django_db
def test_a_new_host_needs_the_secret_again(client: Any, alice: Any, team: Any) -> None:
    credential = make_credential(
        team, name="Main", base_url="https://api.together.xyz", secret="key-for-together"
    )
    client.force_login(alice)
    url = reverse("credential_edit", args=[credential.pk])
    base = {"name": "Main", "max_concurrency": "4"}
    for moved in (
        "https://collector.example/v1",
        "https://api.together.xyz:8443",
        "http://api.together.xyz",
    ):
        response = client.post(url, {**base, "base_url": moved, "new_secret": ""})
        assert response.status_code == 200, moved
        form = response.context["form"]
        assert "another host" in " ".join(form.errors["new_secret"]), form.errors
        assert "key-for-together" not in response.content.decode()
        credential.refresh_from_db()
        assert credential.base_url == "https://api.together.xyz"
        assert credential.reveal_secret() == "key-for-together"
    # The same host (any path), or a new host with its own secret, is saved.
    response = client.post(url, {**base, "base_url": "https://API.together.xyz:443/v2"})
    assert response.status_code == 302
    response = client.post(
        url, {**base, "base_url": "https://collector.example/v1", "new_secret": "key-for-it"}
    )
    assert response.status_code == 302
    credential.refresh_from_db()
    assert credential.base_url == "https://collector.example/v1"
    assert credential.reveal_secret() == "key-for-it"
