"""Helpers for the layout and accessibility walk (tests/browser/test_layout.py):
the URL patterns as the resolver knows them, a team with realistic data, and
axe-core run inside a page."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.db import transaction
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from dashboard.compare.reviews import note_add, rating_set
from dashboard.compare.services import Target, comparison_create
from dashboard.datasets.parsing import Limits, read_records
from dashboard.datasets.services import dataset_create, inputs_from_dataset
from dashboard.management.demo_history import seed_demo_history
from dashboard.models import (
    ApiToken,
    AuditEvent,
    Comparison,
    Credential,
    Dataset,
    Job,
    JobEvent,
    ModelCatalogEntry,
    ModelInstance,
    Price,
    Team,
    Webhook,
    WebhookAttempt,
    WebhookDelivery,
)
from dashboard.notify.webhooks import new_message_id, new_secret
from providers import JobSpec

from ..conftest import finish_items, make_credential, make_job, make_team, make_user

AXE_JS = Path(__file__).resolve().parents[2] / "static" / "vendor" / "axe-core" / "axe.min.js"
AXE_URL = "/static/vendor/axe-core/axe.min.js"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
PASSWORD = "pw-for-tests-123"

# Text that breaks layouts: unbroken URLs and JSON, and a long plain paragraph.
LONG_URL = "https://storage.example.com/buckets/eval-runs/" + "x7Qm2" * 60 + "/result.json"
LONG_JSON = json.dumps({"id": "run_" + "0123456789abcdef" * 12, "scores": list(range(40))})
PARAGRAPH = (
    "Hamlet, prince of Denmark, learns from his father's ghost that his uncle Claudius "
    "murdered the old king; feigning madness, he delays his revenge until a duel arranged "
    "by Claudius ends with nearly everyone dead. "
) * 3


# --- the URL patterns ------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    name: str | None  # qualified: "admin:index"
    route: str  # the pattern as written, prefixes joined: "jobs/<int:pk>/"
    params: tuple[str, ...]  # the keyword arguments it takes

    @property
    def label(self) -> str:
        return self.name or f"<unnamed {self.route}>"


def url_routes() -> list[Route]:
    """Every URL pattern the project's resolver knows, includes flattened."""

    def walk(
        patterns: list[Any], prefix: str, namespace: str, params: tuple[str, ...]
    ) -> Iterator[Route]:
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            names = params + tuple(pattern.pattern.regex.groupindex)
            if isinstance(pattern, URLResolver):
                inner = ":".join(part for part in (namespace, pattern.namespace) if part)
                yield from walk(pattern.url_patterns, route, inner, names)
            elif isinstance(pattern, URLPattern):
                name = pattern.name and (
                    f"{namespace}:{pattern.name}" if namespace else pattern.name
                )
                yield Route(name, route, names)

    return list(walk(get_resolver().url_patterns, "", "", ()))


# --- the data --------------------------------------------------------------------------------


@dataclass
class LayoutData:
    team: Team
    username: str
    credentials: list[Credential]
    jobs: dict[str, Job]
    instances: list[ModelInstance]
    tokens: list[ApiToken]
    memberships: list[Any] = field(default_factory=list)
    datasets: list[Dataset] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)
    prices: list[Price] = field(default_factory=list)
    webhooks: list[Webhook] = field(default_factory=list)
    deliveries: list[WebhookDelivery] = field(default_factory=list)


def _later(**delta: float) -> Any:
    return timezone.now() + timedelta(**delta)


def _hold(
    job: Job,
    status: str,
    *,
    outputs: list[Any] | None = None,
    output_errors: dict[str, str] | None = None,
    **fields: Any,
) -> None:
    """Set a job's state directly, leased to nobody here and due never, so no
    worker (one may be running for other browser tests) ever takes it up."""
    fields.pop("progress_done", None)  # the items' counters say it
    if outputs or output_errors:
        finish_items(
            job,
            outputs or [],
            {int(index): error for index, error in (output_errors or {}).items()},
        )
    now = timezone.now()
    Job.objects.filter(pk=job.pk).update(
        status=status,
        lease_owner="layout-test",
        lease_expires_at=_later(days=1),
        next_check_at=_later(days=1),
        deadline_at=_later(days=1),
        started_at=None if status in ("pending", "queued") else now - timedelta(seconds=95),
        finished_at=now if status in ("completed", "failed", "cancelled") else None,
        **fields,
    )
    job.refresh_from_db()


def build_layout_data() -> LayoutData:
    """A team as a real one looks after a week of use, seen by `ada`: team
    admin and staff, in two teams (so the team switcher shows)."""
    ada = make_user("ada", is_staff=True, first_name="Ada", last_name="Lovelace")
    team = make_team("Alpha Research Lab", ada="admin", bob="member", carol="viewer")
    make_team("Beta Evaluations", ada="member")
    team.cost_per_gb_second = Decimal("0.00001234")
    team.save(update_fields=["cost_per_gb_second"])

    now = timezone.now()
    together = make_credential(team, "together", name="Together production", created_by=ada)
    bytez = make_credential(
        team, "bytez", name="Bytez GPU pool", max_concurrency=2, requests_per_minute=60
    )
    mymagic = make_credential(team, "mymagic", name="MyMagic batch", base_url=LONG_URL)
    lamini = make_credential(team, "lamini", name="Lamini structured")
    grid = make_credential(
        team,
        "gridrepublic",
        name="GridRepublic volunteers",
        consecutive_failures=3,
        circuit_open_until=now + timedelta(minutes=5),
        last_error="HTTP 503 from " + LONG_URL + ": upstream gateway unavailable",
        last_error_at=now,
    )

    jobs: dict[str, Job] = {}
    # One transaction: the jobs' worker nudges go out only once they are held.
    with transaction.atomic():
        jobs["completed"] = make_job(
            together,
            [
                "Summarise the plot of Hamlet in three sentences.",
                "Answer with one word: is water wet?",
                f"Repeat this URL exactly: {LONG_URL}",
            ],
            user=ada,
            model="meta-llama/Llama-3.3-70B-Instruct-Turbo",
            max_tokens=256,
            temperature=0.2,
        )
        _hold(
            jobs["completed"],
            "completed",
            outputs=[PARAGRAPH, "Yes.", LONG_URL],
            progress_done=3,
        )
        jobs["failed"] = make_job(together, ["Translate “bonjour” into German."], user=ada)
        _hold(
            jobs["failed"],
            "failed",
            error="Together answered 401: authentication failed for this key. Request id "
            + "req_"
            + "9f8e7d6c5b4a" * 10,
            output_errors={"0": "authentication failed"},
        )
        jobs["running"] = make_job(
            bytez,
            ["Write a haiku about autumn.", "Write a limerick about a cat.", "List three primes."],
            user=ada,
            model="microsoft/Phi-3-mini-4k-instruct",
            stream=True,
        )
        _hold(
            jobs["running"],
            "running",
            provider_status="RUNNING",
            outputs=[
                "Crisp leaves drift and fall / the maple lets go of red / a cold wind listens",
                None,
                None,
            ],
            progress_done=1,
        )
        jobs["queued"] = make_job(
            mymagic,
            ["The mitochondria is", "Photosynthesis converts"],
            user=ada,
            model="llama3_70b",
            question="Complete the sentence in the style of a textbook.",
        )
        _hold(jobs["queued"], "queued", provider_status="Waiting for instance", cold_start=True)
        jobs["structured"] = make_job(
            lamini,
            [
                "Extract the person: Grace Hopper, 85, rear admiral and computer scientist.",
                "Extract the person: Alan Turing, forty-one, mathematician.",
                "Extract the person: " + LONG_JSON,
            ],
            user=ada,
            model="meta-llama/Meta-Llama-3.1-8B-Instruct",
            output_schema={"name": "str", "age": "int", "summary": "str"},
        )
        _hold(
            jobs["structured"],
            "completed",
            outputs=[
                {"name": "Grace Hopper", "age": 85, "summary": "Rear admiral; compilers."},
                {"name": "Alan Turing", "age": "forty-one", "summary": LONG_URL},
                None,
            ],
            output_errors={"2": "The model's answer was not valid JSON: " + LONG_JSON},
            progress_done=3,
        )
        jobs["cancelled"] = make_job(grid, ["Fold this protein: MKTAYIAKQRQISFVKSHFSRQ"], user=ada)
        _hold(jobs["cancelled"], "cancelled", provider_status="CANCELLED")
        jobs["pending"] = make_job(together, ["Hello"], user=ada, model="mistralai/Mixtral-8x7B")
        _hold(jobs["pending"], "pending")
        jobs["retry"] = make_job(together, ["Translate “bonjour” into German."], user=ada)
        _hold(
            jobs["retry"],
            "completed",
            retry_of=jobs["failed"],
            outputs=["Guten Tag."],
            progress_done=1,
        )
        jobs["raw"] = make_job(grid, ["Score these:", "a", "b"], user=ada, model="grid-scorer")
        _hold(
            jobs["raw"],
            "completed",
            raw_result={"batch": LONG_JSON, "note": "one result for the whole batch"},
            progress_done=3,
        )

        dataset = dataset_create(
            team=team,
            name="Customer questions, March (support inbox export)",
            rows=read_records(
                [
                    {"question": "Where is my order?", "context": LONG_URL, "lang": "en"},
                    {"question": "Wo ist meine Bestellung?", "context": PARAGRAPH, "lang": "de"},
                    {"question": "Où est ma commande ?", "context": LONG_JSON, "lang": "fr"},
                ],
                Limits.from_settings(),
            ),
            user=ada,
        )
        inputs = inputs_from_dataset(dataset, "Answer in {lang}: {question}\nContext: {context}")
        comparison = comparison_create(
            team=team,
            name="Support answers: Together vs Lamini",
            user=ada,
            inputs=inputs,
            targets=[
                Target(together, JobSpec(model="meta-llama/Llama-3.3-70B", prompts=inputs.prompts)),
                Target(
                    lamini,
                    JobSpec(
                        model="meta-llama/Meta-Llama-3.1-8B-Instruct",
                        prompts=inputs.prompts,
                        output_schema={"answer": "str", "confidence": "float"},
                    ),
                ),
            ],
        )
        left, right = comparison.jobs.order_by("id")
        _hold(left, "completed", outputs=[PARAGRAPH, LONG_URL], output_errors={"2": "timeout"})
        _hold(
            right,
            "completed",
            outputs=[{"answer": "In transit.", "confidence": 0.8}] * 2 + [{"answer": LONG_JSON}],
        )
        rating_set(job=right, index=0, user=ada, score=1, best=True)
        rating_set(job=left, index=1, user=ada, score=-1)
        note_add(
            comparison=comparison, index=0, user=ada, text="Lamini's answer is shorter. " + LONG_URL
        )

        running = jobs["running"]
        JobEvent.objects.bulk_create(
            [
                JobEvent(job=running, kind="event", message="Submitted to Bytez."),
                JobEvent(job=running, kind="retry", message="HTTP 503, retrying in 2 s."),
                JobEvent(job=running, kind="stream", unit=0, message="Crisp leaves drift and fall"),
                JobEvent(
                    job=running, kind="stream", unit=1, message="There once was a " + LONG_URL
                ),
                JobEvent(job=running, kind="log", unit=1, message="loading shard 3/4\n"),
                JobEvent(
                    job=running, kind="note", author=ada, message="Watching this one. " + LONG_URL
                ),
            ]
        )
        JobEvent.objects.create(
            job=jobs["failed"], kind="error", message="authentication failed (HTTP 401)"
        )

    instances = [
        ModelInstance.objects.create(
            team=team,
            credential=bytez,
            model="microsoft/Phi-3-mini-4k-instruct",
            status="running",
            provider_status="RUNNING",
            concurrency=1,
            inferences=12,
            expiration_seconds=1800,
            expires_at=now + timedelta(minutes=25),
            required_ram_gb=7.6,
            running_since=now - timedelta(minutes=10),
            created_by=ada,
            next_check_at=_later(days=1),
            deadline_at=_later(days=1),
        ),
        ModelInstance.objects.create(
            team=team,
            credential=bytez,
            model="Qwen/Qwen2.5-72B-Instruct-with-a-rather-long-model-identifier",
            status="requested",
            provider_status="Model available",
            message="Bytez has prepared the model; load it to start billing.",
            created_by=ada,
            next_check_at=_later(days=1),
            deadline_at=_later(days=1),
        ),
        ModelInstance.objects.create(
            team=team,
            credential=bytez,
            model="google/gemma-2-9b-it",
            status="failed",
            error="Bytez refused the load: not enough capacity in region " + LONG_URL,
            created_by=ada,
            ended_at=now - timedelta(hours=1),
        ),
        ModelInstance.objects.create(
            team=team,
            credential=bytez,
            model="openai-community/gpt2",
            status="stopped",
            concurrency=1,
            inferences=3,
            required_ram_gb=0.5,
            running_since=now - timedelta(hours=3),
            ended_at=now - timedelta(hours=2),
            external=True,
        ),
    ]
    ModelCatalogEntry.objects.bulk_create(
        [
            ModelCatalogEntry(credential=bytez, name=name, required_ram_gb=ram, benchmarked=bench)
            for name, ram, bench in [
                ("microsoft/Phi-3-mini-4k-instruct", 7.6, True),
                ("google/gemma-2-9b-it", 18.5, True),
                ("openai-community/gpt2", 0.5, False),
                ("Qwen/Qwen2.5-72B-Instruct-with-a-rather-long-model-identifier", 145.0, None),
                ("someone/" + "very-long-model-name-" * 12 + "gguf", None, None),
            ]
        ]
    )

    tokens = [ApiToken.issue(ada, "eval notebook")[0], ApiToken.issue(ada, "nightly batch")[0]]
    ApiToken.objects.filter(pk=tokens[1].pk).update(revoked_at=now, last_used_at=now)

    AuditEvent.objects.create(
        team=team,
        actor=ada,
        action="credential.created",
        target=str(mymagic),
        details={"base_url": LONG_URL, "provider": "mymagic"},
    )
    AuditEvent.objects.create(
        team=team,
        actor=ada,
        action="member.role_changed",
        target="carol",
        details={"role": "viewer"},
    )
    AuditEvent.objects.create(
        team=team, actor=None, action="job.failed", target=str(jobs["failed"])
    )

    # Cost and notifications: weeks of demo history for the charts (its own
    # prices), a price with a long model name, a budget nearly spent, and a
    # webhook with a delivery log of every kind.
    seed_demo_history(team, jobs=80, user=ada)
    prices = [
        Price.objects.create(
            team=team,
            provider="bytez",
            model="Qwen/Qwen2.5-72B-Instruct-with-a-rather-long-model-identifier",
            input_per_mtok=Decimal("1.234567"),
            output_per_mtok=Decimal("12.5"),
        ),
        *Price.objects.filter(team=team).exclude(provider="bytez"),
    ]
    Team.objects.filter(pk=team.pk).update(monthly_budget_usd=Decimal("0.05"))
    hook = Webhook.objects.create(
        team=team,
        url=LONG_URL,
        events=["job.completed", "job.failed", "instance.expired"],
        secret=new_secret(),
        created_by=ada,
    )
    deliveries = []
    for status, attempts, answer, error in [
        ("succeeded", 1, 200, ""),
        ("failed", 6, 500, "HTTP 500: " + LONG_JSON),
        ("pending", 2, None, "No answer within 10 s."),
    ]:
        delivery = WebhookDelivery.objects.create(
            webhook=hook,
            event="job.failed" if status == "failed" else "job.completed",
            object_id=jobs["completed"].pk,
            message_id=new_message_id(),
            status=status,
            attempts=attempts,
            response_status=answer,
            last_error=error,
            next_attempt_at=now + timedelta(minutes=5) if status == "pending" else None,
        )
        WebhookAttempt.objects.bulk_create(
            [
                WebhookAttempt(
                    delivery=delivery,
                    number=n,
                    duration_ms=120 * n,
                    response_status=answer,
                    error=error,
                )
                for n in range(1, attempts + 1)
            ]
        )
        deliveries.append(delivery)

    return LayoutData(
        team=team,
        username="ada",
        credentials=[together, bytez, mymagic, lamini, grid],
        jobs=jobs,
        instances=instances,
        tokens=tokens,
        memberships=list(team.memberships.all()),
        datasets=[dataset],
        comparisons=[comparison],
        prices=prices,
        webhooks=[hook],
        deliveries=deliveries,
    )


# --- axe-core ------------------------------------------------------------------------------------

SEVERE = ("serious", "critical")


def run_axe(page: Any) -> list[dict[str, Any]]:
    """axe-core's violations on the page as it is now (all rules it runs by default).

    The vendored file is injected by its static URL, not inlined with
    ``add_script_tag(path=...)``: the app's CSP (``script-src 'self'``) rightly
    blocks inline script, and the walk keeps the CSP on to catch violations."""
    assert AXE_JS.exists(), f"{AXE_JS} is missing: vendor axe-core (see its README.md)"
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(url=AXE_URL)
    return page.evaluate(
        """async () => {
            const results = await axe.run(document, {resultTypes: ['violations']});
            return results.violations.map(v => ({
                id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.map(n => ({target: n.target.join(' '), summary: n.failureSummary}))
            }));
        }"""
    )


def describe(violations: list[dict[str, Any]]) -> str:
    lines = []
    for v in violations:
        lines.append(f"    [{v['impact']}] {v['id']}: {v['help']}")
        for node in v["nodes"][:5]:
            summary = (node["summary"] or "").replace("\n", " ")[:300]
            lines.append(f"        {node['target']}  {summary}")
        if len(v["nodes"]) > 5:
            lines.append(f"        … and {len(v['nodes']) - 5} more")
    return "\n".join(lines)


# What sticks out past the right edge of the viewport (the deepest such elements).
OVERFLOWING_JS = """() => {
    const w = window.innerWidth;
    const wide = [...document.querySelectorAll('body *')].filter(el => {
        const r = el.getBoundingClientRect();
        return r.width > 0 && r.right > w + 0.5;
    });
    const deepest = wide.filter(el => !wide.some(other => other !== el && el.contains(other)));
    return deepest.slice(0, 8).map(el => {
        const id = el.id ? '#' + el.id : '';
        const cls = el.classList.length ? '.' + [...el.classList].join('.') : '';
        return `${el.tagName.toLowerCase()}${id}${cls} right=${Math.round(el.getBoundingClientRect().right)}`;
    });
}"""
