"""Schemathesis against the running API, from the API's own OpenAPI schema.

Every operation, with a real token of a team admin whose team has data
(credentials on the local simulators, jobs, a running model instance), in
both generation modes: data that fits the schema and data that does not.
Each answer is checked for server errors, a status code the schema lists,
its content type and its conformance to the schema of that status.

``make test`` runs it in a session of its own (bin/run-tests), which prints
the figures: operations, cases, failures, seconds. The same run, planted
with a 500, must report it (the last test), so a green run means something.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from dashboard.core import netguard
from dashboard.jobs import serialize
from dashboard.models import ApiToken, Job, ModelInstance, Price, WebhookDelivery
from dashboard.notify.webhooks import webhook_create
from tests.api.conftest import SCHEMATHESIS_REPORTS
from tests.conftest import finish_items, make_credential, make_job, use_clock
from tests.test_isolation import make_comparison

pytestmark = [pytest.mark.django_db, pytest.mark.schemathesis]

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
#: Per operation and generation mode; about 40 s for the whole run on this machine.
MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "40"))


@dataclass
class Report:
    operations: list[str] = field(default_factory=list)
    cases: int = 0
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)

    def summary(self) -> str:
        answers = ", ".join(f"{code} x{n}" for code, n in sorted(self.statuses.items()))
        return (
            f"schemathesis: {len(self.operations)} operations, {self.cases} cases, "
            f"{len(self.failures)} failures in {self.seconds:.1f} s (answers: {answers})"
        )


def run_schemathesis(
    schema: Any,
    *,
    headers: dict[str, str],
    ids: dict[str, list[int]],
    max_examples: int,
    only: Callable[[str], bool] = lambda label: True,
) -> Report:
    """Every operation of ``schema`` (those ``only`` keeps), each answer
    checked with CHECKS. Failures are collected, not raised, so one run
    names them all."""
    report = Report()
    started = time.monotonic()
    for result in schema.get_all_operations():
        operation = result.ok()
        if not only(operation.label):
            continue
        report.operations.append(operation.label)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            cases = with_real_ids(operation.as_strategy(generation_mode=mode), ids)
            run_cases(cases, f"{operation.label} ({mode})", report, headers, max_examples)
    report.seconds = time.monotonic() - started
    return report


def run_cases(
    cases: st.SearchStrategy[Any],
    label: str,
    report: Report,
    headers: dict[str, str],
    max_examples: int,
) -> None:
    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases)
    def check(case: Any) -> None:
        report.cases += 1
        try:
            response = case.call_and_validate(headers=headers, checks=CHECKS)
            report.statuses[response.status_code] += 1
        except (Exception, BaseExceptionGroup) as exc:  # failed checks, or the call
            report.failures.append(f"{label}: {exc}")

    check()


def with_real_ids(
    cases: st.SearchStrategy[Any], ids: dict[str, list[int]]
) -> st.SearchStrategy[Any]:
    """Half the cases name objects that exist, in the path (an object of the
    path's kind) and in the body's ``credential`` and ``team``, so the success
    answers are checked too, not only the 404s and 400s of random ids."""

    def pick(drawn: tuple[Any, bool, Any]) -> Any:
        case, real, choose = drawn
        if not real:
            return case
        if "pk" in (case.path_parameters or {}):
            kind = case.operation.path.split("/")[3]  # /api/v1/<kind>/{pk}…
            case.path_parameters["pk"] = choose(ids[kind])
        if isinstance(case.body, dict):
            for name, kind in (
                ("credential", "credentials"),
                ("team", "teams"),
                ("dataset", "datasets"),
            ):
                if name in case.body:
                    case.body[name] = choose(ids[kind])
        return case

    randoms = st.randoms(use_true_random=False).map(lambda r: r.choice)
    return st.tuples(cases, st.booleans(), randoms).map(pick)


# --- the world it runs in ------------------------------------------------------------------


@pytest.fixture
def wsgi_app() -> Iterator[Any]:
    """Django's WSGI application, called in this thread inside the test's
    transaction. As the test client does, keep the end of a request from
    closing the connection (on PostgreSQL that would end the transaction)."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield get_wsgi_application()
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


@pytest.fixture
def api_world(
    team: Any,
    alice: Any,
    sims: Any,
    sim_clock: Any,
    nudges: Any,
    wsgi_app: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, Any]:
    # Generated hosts resolve to a public address without asking DNS, so a
    # credential can be saved. Nothing calls them: no worker runs here, and the
    # only synchronous provider call (shutting down a running instance) goes to
    # the instance of this fixture, on the Bytez simulator.
    monkeypatch.setattr(netguard, "_resolve", lambda host: ["93.184.216.34"])
    together = make_credential(team, "together", base_url=sims.get("together").base_url)
    bytez_sim = use_clock(sims.get("bytez"), sim_clock, request_seconds=0, load_seconds=0)
    bytez = make_credential(team, "bytez", base_url=bytez_sim.base_url)
    done = make_job(together, ["one", "two"], user=alice)
    finish_items(done, ["1"], {1: "boom"})
    Job.objects.filter(pk=done.pk).update(status="completed")
    pending = make_job(together, ["three"], user=alice)
    instance = ModelInstance.objects.create(
        team=team, credential=bytez, model="openai-community/gpt2", status="running"
    )
    dataset, comparison = make_comparison(team, alice)
    _, key = ApiToken.issue(alice, "schemathesis")
    Price.objects.create(
        team=team, provider="together", model="test-model", input_per_mtok=1, output_per_mtok=2
    )
    hook, _ = webhook_create(
        team=team, url="http://127.0.0.1:9/hook", events=["job.completed"], actor=alice
    )
    WebhookDelivery.objects.create(
        webhook=hook, event="job.completed", object_id=done.pk, message_id="msg_s", status="failed"
    )
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", wsgi_app)
    ids = {
        "credentials": [together.pk, bytez.pk],
        "jobs": [done.pk, pending.pk],
        "instances": [instance.pk],
        "webhooks": [hook.pk],
        "teams": [team.pk],
        "datasets": [dataset.pk],
        "comparisons": [comparison.pk],
    }
    return {"schema": schema, "headers": {"Authorization": f"Bearer {key}"}, "ids": ids}


# --- the tests ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_every_operation_conforms_and_never_fails(
    api_world: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    report = run_schemathesis(
        api_world["schema"],
        headers=api_world["headers"],
        ids=api_world["ids"],
        max_examples=MAX_EXAMPLES,
    )
    request.config.stash.setdefault(SCHEMATHESIS_REPORTS, []).append(report.summary())
    schema = api_world["schema"].raw_schema
    in_schema = sum(len(item) for item in schema["paths"].values())
    assert len(report.operations) == in_schema, report.operations  # every one of them
    assert report.cases >= len(report.operations) * MAX_EXAMPLES
    assert not report.failures, "\n\n".join(report.failures[:10])


def test_a_planted_server_error_is_caught(
    api_world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One operation made to fail the way a bug would: the same run reports it."""

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("planted")

    monkeypatch.setattr(serialize, "job_log", broken)  # GET /jobs/{pk} answers 500
    report = run_schemathesis(
        api_world["schema"],
        headers=api_world["headers"],
        ids=api_world["ids"],
        max_examples=20,
        only=lambda label: label.startswith("GET /api/v1/jobs"),
    )
    assert report.operations == [
        "GET /api/v1/jobs",
        "GET /api/v1/jobs/{pk}",
        "GET /api/v1/jobs/{pk}/items",
        "GET /api/v1/jobs/{pk}/diff",
    ]
    assert report.failures, report.summary()
    assert all(failure.startswith("GET /api/v1/jobs/{pk}") for failure in report.failures)
    assert any("Server error" in failure for failure in report.failures), report.failures[0]
