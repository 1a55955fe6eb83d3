"""Demo history for ``setup_demo`` (and the tests that need a team with a
past): weeks of finished jobs on several providers, with items, latencies,
tokens, a few failures and priced models, so the charts and the usage page
have something to show on a fresh ``make run``.

Every job it writes is marked ``demo`` (shown as "demo data" on the pages), its
timeline says where it came from, and nothing of it is sent to any provider.
Rows are written in bulk: a few thousand jobs take a second.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import transaction

from dashboard.core import clock
from dashboard.jobs.items import estimate_tokens
from dashboard.models import Credential, Item, Job, JobEvent, Price, Team, tokens_cost
from dashboard.status import ItemStatus, JobStatus


@dataclass(frozen=True)
class DemoModel:
    provider: str
    model: str
    #: Typical latency of one item, ms.
    latency_ms: int
    #: USD per million input and output tokens; None: left unpriced.
    price: tuple[str, str] | None
    #: The provider reports usage (else the tokens are estimated).
    usage: bool = False


MODELS = [
    DemoModel("together", "meta-llama/Llama-3.3-70B-Instruct-Turbo", 900, ("0.88", "0.88")),
    DemoModel("together", "mistralai/Mixtral-8x7B-Instruct-v0.1", 450, ("0.60", "0.60")),
    DemoModel("openai", "gpt-4o-mini", 650, ("0.15", "0.60"), usage=True),
    DemoModel("lamini", "meta-llama/Meta-Llama-3.1-8B-Instruct", 1300, ("0.20", "0.20")),
    DemoModel("mymagic", "llama3_70b", 3200, None),
    DemoModel("gridrepublic", "grid-scorer", 5200, ("0.05", "0.05")),
]
TASKS = [
    "Summarise support ticket #{n} in one sentence.",
    "Classify the sentiment of review {n}: positive, negative or neutral.",
    "Extract the company name from invoice {n}.",
    "Translate product description {n} into German.",
    "Answer FAQ question {n} in two lines.",
]
NOTE = "Demo data: seeded by setup_demo as history; never sent to a provider."
WORDS = (
    "customer",
    "order",
    "delivery",
    "late",
    "refund",
    "invoice",
    "account",
    "password",
    "reset",
    "billing",
    "plan",
    "upgrade",
    "shipping",
    "address",
    "warehouse",
    "damaged",
    "replacement",
    "priority",
    "support",
    "escalation",
    "subscription",
    "renewal",
    "discount",
    "coupon",
    "feedback",
    "survey",
    "quality",
)


def _context(rng: random.Random) -> str:
    """A paragraph of plausible ticket text, so prompts have a realistic length."""
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(30, 300)))


def seed_demo_history(
    team: Team,
    *,
    jobs: int = 120,
    days: int = 21,
    user: Any = None,
    seed: int = 7,
    at: datetime | None = None,
    prices: bool = True,
) -> int:
    """Write ``jobs`` finished demo jobs over the last ``days`` days (none if
    the team has its demo history already: running it again changes nothing).
    Returns the number written."""
    if Job.objects.filter(team=team, demo=True, events__message=NOTE).exists():
        return 0  # (the showcase's demo jobs say otherwise: demo_showcase)
    rng = random.Random(seed)
    now = at or clock.now()
    credentials = {c.provider: c for c in Credential.objects.filter(team=team).order_by("pk")}
    with transaction.atomic():
        priced = _prices(team, user) if prices else {}
        rows = [_job(team, rng, now, days, credentials, priced, user) for _ in range(jobs)]
        saved = Job.objects.bulk_create([job for job, _ in rows], batch_size=500)
        items: list[Item] = []
        for job, plan in zip(saved, (p for _, p in rows), strict=True):
            items += [Item(job=job, **fields) for fields in plan]
        Item.objects.bulk_create(items, batch_size=2000)
        JobEvent.objects.bulk_create(
            [JobEvent(job=job, message=NOTE, created_at=job.created_at) for job in saved],
            batch_size=2000,
        )
    return len(saved)


def _prices(team: Team, user: Any) -> dict[tuple[str, str], tuple[Decimal, Decimal]]:
    found = {}
    for demo in MODELS:
        if demo.price is None:
            continue
        price, _ = Price.objects.get_or_create(
            team=team,
            provider=demo.provider,
            model=demo.model,
            defaults={
                "input_per_mtok": Decimal(demo.price[0]),
                "output_per_mtok": Decimal(demo.price[1]),
                "updated_by": user,
            },
        )
        found[(demo.provider, demo.model)] = (price.input_per_mtok, price.output_per_mtok)
    return found


def _job(
    team: Team,
    rng: random.Random,
    now: datetime,
    days: int,
    credentials: dict[str, Credential],
    priced: dict[tuple[str, str], tuple[Decimal, Decimal]],
    user: Any,
) -> tuple[Job, list[dict[str, Any]]]:
    demo = rng.choice(MODELS)
    created = now - timedelta(days=rng.uniform(0.05, days), minutes=rng.uniform(0, 59))
    size = rng.choice((1, 2, 3, 5, 8, 12))
    broken = rng.random() < 0.05  # the provider refused the whole job
    plan: list[dict[str, Any]] = []
    tokens = [0, 0]
    for index in range(size):
        prompt = rng.choice(TASKS).format(n=rng.randint(100, 9999)) + "\n" + _context(rng)
        latency = max(40, int(rng.gauss(demo.latency_ms, demo.latency_ms / 4)))
        if broken or rng.random() < 0.07:
            plan.append(
                {
                    "index": index,
                    "input": prompt,
                    "status": ItemStatus.FAILED,
                    "error": "HTTP 503 from the provider: upstream overloaded (demo)",
                    "attempts": 3,
                    "latency_ms": latency,
                }
            )
            continue
        output = f"Demo answer {index + 1} from {demo.model}: " + _context(rng)[:300]
        used_in = estimate_tokens(prompt) + (3 if demo.usage else 0)
        used_out = rng.randint(40, 600)
        tokens[0] += used_in
        tokens[1] += used_out
        plan.append(
            {
                "index": index,
                "input": prompt,
                "status": ItemStatus.COMPLETED,
                "output": output,
                "attempts": 1,
                "latency_ms": latency,
                "tokens_in": used_in,
                "tokens_out": used_out,
                "tokens_estimated": not demo.usage,
            }
        )
    completed = sum(1 for row in plan if row["status"] == ItemStatus.COMPLETED)
    failed = size - completed
    price = priced.get((demo.provider, demo.model))
    started = created + timedelta(seconds=rng.uniform(0.5, 4))
    finished = started + timedelta(milliseconds=sum(row["latency_ms"] for row in plan))
    credential = credentials.get(demo.provider)
    estimated_in = sum(estimate_tokens(row["input"]) for row in plan)
    job = Job(
        team=team,
        credential=credential,
        credential_name=credential.name if credential else f"{demo.provider} (demo)",
        provider=demo.provider,
        model=demo.model,
        spec={"model": demo.model, "max_tokens": 256, "options": {}},
        status=JobStatus.COMPLETED if completed else JobStatus.FAILED,
        error="" if not failed else f"{failed} of {size} prompts failed (demo data)",
        error_retryable=bool(failed),
        progress_done=size,
        progress_total=size,
        items_completed=completed,
        items_failed=failed,
        tokens_in=tokens[0],
        tokens_out=tokens[1],
        tokens_estimated=not demo.usage and bool(completed),
        price_input_per_mtok=price[0] if price else None,
        price_output_per_mtok=price[1] if price else None,
        cost_estimated=tokens_cost(estimated_in, 256 * size, *price) if price else None,
        cost_actual=tokens_cost(tokens[0], tokens[1], *price) if price else None,
        demo=True,
        created_by=user,
        created_at=created,
        started_at=started,
        finished_at=finished,
        deadline_at=created + timedelta(hours=6),
    )
    return job, plan
