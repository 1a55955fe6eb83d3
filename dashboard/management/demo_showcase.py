"""The demo's showcase for ``setup_demo``: one of each of the product's best
pages, with realistic content, on a fresh ``make run``.

- a dataset, "Capitals (demo)" (``question``, ``expected``);
- a finished comparison of two targets over it, scored (``icontains`` against
  ``expected``, a ``length`` scorer and a ``judge``), with the judge's jobs,
  a few ratings by the demo user (one disagreeing with the judge) and a
  note, so the page shows pass rates, McNemar's p and the judge's kappa;
- a rerun of one target over the same rows with another system prompt, so
  the diff page has changed rows, regressions and improvements;
- a finished batch job with its two remote batches, one row expired;
- an online job and a later one with ``cache`` on that takes most of its
  rows from the first ("N rows from the cache, $X saved");
- the Together credential with rpm and tpm limits, so its page shows its pace.

Everything is written directly through the models (no provider is called,
no worker is nudged: every job is finished already), deterministic, in one
transaction, and only once: a team that has the dataset gets nothing new.
Outputs look like the simulators' (``completion_text``) and every verdict is
computed by the scorers themselves (``score_rows``, ``verdicts_write``), so
the counters, costs and scores read as a real run's. Jobs are marked
``demo`` and their timeline says where they came from.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import transaction

from dashboard.core import clock, structured
from dashboard.evals.judge import JUDGE_JOB_SCORERS, judge_prompt, verdict_of, verdicts_write
from dashboard.evals.scorers import JUDGE_SCHEMA
from dashboard.evals.scores import cheap, score_rows, scores_write
from dashboard.jobs import cache, cost
from dashboard.jobs.batch import EXPIRED
from dashboard.jobs.items import estimate_tokens
from dashboard.jobs.services import summary
from dashboard.models import (
    BatchChunk,
    Comparison,
    Credential,
    Dataset,
    DatasetRow,
    Item,
    Job,
    JobEvent,
    Price,
    Rating,
    RowNote,
    Team,
    tokens_cost,
)
from dashboard.status import ItemStatus, JobStatus
from providers import JobSpec
from providers.simulators import completion_text

DATASET = "Capitals (demo)"
COMPARISON = "Capitals: gpt-4o-mini vs Mixtral (demo)"
NOTE = "Demo data: seeded by setup_demo as a showcase; never sent to a provider."
TEMPLATE = "{question} Answer with the city's name."

#: (provider, model): USD per million input and output tokens.
PRICES = {
    ("openai", "gpt-4o-mini"): ("0.15", "0.60"),
    ("openai", "gpt-4o"): ("2.50", "10.00"),
    ("together", "mistralai/Mixtral-8x7B-Instruct-v0.1"): ("0.60", "0.60"),
}
STRONG = ("openai", "gpt-4o-mini")
WEAK = ("together", "mistralai/Mixtral-8x7B-Instruct-v0.1")
JUDGE_MODEL = "gpt-4o"
SYSTEM = "You are a geography tutor."
SYSTEM_TERSE = "You are a geography tutor. Answer with the capital city's name only."

#: country, capital; what the strong target says, the weak one, the weak one rerun
#: (None: the capital), and whether the weak target rambles (fails "short answer").
CAPITALS: list[tuple[str, str, str | None, str | None, str | None, bool]] = [
    ("France", "Paris", None, None, None, False),
    ("Japan", "Tokyo", None, None, None, True),
    ("Canada", "Ottawa", None, "Toronto", None, True),
    ("Australia", "Canberra", None, "Sydney", None, False),
    ("Brazil", "Brasília", None, "Rio de Janeiro", None, True),
    ("Kenya", "Nairobi", None, "Mombasa", "Mombasa", False),
    ("Germany", "Berlin", None, "Bonn", None, True),
    ("Turkey", "Ankara", None, "Istanbul", None, False),
    ("Egypt", "Cairo", None, None, None, False),
    ("Switzerland", "Bern", "Zürich", None, "Zürich", False),
    ("New Zealand", "Wellington", None, "Auckland", "Auckland", True),
    ("Morocco", "Rabat", None, "Casablanca", None, False),
]
RAMBLE = (
    " It is the country's seat of government, home to its parliament and most of its "
    "ministries, and one of its larger cities."
)
#: What the judge gets wrong: it passes the weak target's "Bonn".
LENIENT = {"Germany": (0.6, "Bonn was the capital of West Germany until 1990; close enough.")}
#: The demo user's ratings: (target, country, +1/-1); Germany disagrees with the judge.
RATINGS = [
    ("strong", "France", 1),
    ("strong", "Japan", 1),
    ("strong", "Switzerland", -1),
    ("weak", "Canada", -1),
    ("weak", "Germany", -1),
    ("weak", "Egypt", 1),
]
SCORERS_BASE: list[dict[str, Any]] = [
    {"type": "icontains", "name": "names the capital", "expected_column": "expected"},
    {"type": "length", "name": "short answer", "max": 160},
]
TICKETS = [
    "Order {n} arrived damaged; the customer asks for a replacement before Friday.",
    "Customer {n} was billed twice for the March renewal and wants one charge refunded.",
    "Account {n} cannot reset its password: the reset e-mail never arrives.",
    "Shipping address of order {n} changed after dispatch; the parcel went to the old one.",
    "Customer {n} asks whether the annual plan's discount applies to added seats.",
    "The coupon on order {n} was refused at checkout although it is still valid.",
]
SENTIMENTS = [
    "Fast delivery and the fit is perfect, would buy again.",
    "The zip broke on the second day and support never answered.",
    "It does the job. Nothing special, nothing wrong.",
    "Lovely colour, but it runs a size small.",
    "Arrived a week late and the box was crushed.",
]


@dataclass
class Row:
    """One item to write: its prompt and what came of it."""

    input: str
    output: Any = None  # None with an error: the row failed
    error: str = ""
    fields: dict[str, Any] | None = None
    source_index: int | None = None
    cached_from: Item | None = None


def seed_demo_showcase(team: Team, *, user: Any, at: datetime | None = None) -> bool:
    """Write the showcase for ``team`` (its simulator credentials made
    already), unless it has it: True when written."""
    if Dataset.objects.filter(team=team, name=DATASET).exists():
        return False
    credentials = {c.provider: c for c in Credential.objects.filter(team=team).order_by("pk")}
    if not {"openai", "together"} <= set(credentials):
        return False
    now = at or clock.now()
    with transaction.atomic():
        _prices(team, user)
        dataset = _dataset(team, user, now - timedelta(days=2))
        comparison, strong, weak = _comparison(team, user, credentials, dataset, now)
        _rerun(team, user, credentials["together"], dataset, weak, now)
        _batch(team, user, credentials["openai"], now)
        _cached(team, user, credentials["openai"], now)
        _limits(credentials["together"], now)
    return True


# --- the writer --------------------------------------------------------------------------------


def _latency(text: str, low: int, spread: int) -> int:
    return low + int(hashlib.sha256(text.encode()).hexdigest()[:6], 16) % spread


def _job(
    team: Team,
    user: Any,
    credential: Credential,
    spec: JobSpec,
    rows: list[Row],
    *,
    created: datetime,
    mode: str = Job.Mode.ONLINE,
    scorers: list[dict[str, Any]] | None = None,
    events: tuple[str, ...] = (),
    **extra: Any,
) -> tuple[Job, list[Item]]:
    """A finished demo job and its items, the counters, tokens and cost from
    the items (as ``jobs_end`` would have them), its cheap scorers' verdicts
    written, and its timeline."""
    base = spec.to_dict()
    del base["prompts"]
    schema = spec.output_schema
    items: list[Item] = []
    tokens = [0, 0]
    clock_ms = 0
    for index, row in enumerate(rows):
        item = Item(
            index=index,
            source_index=row.source_index,
            input=row.input,
            input_fields=row.fields,
            attempts=1,
            updated_at=created,
        )
        if row.cached_from is not None:
            item.cached_from = row.cached_from
            item.status, item.output = ItemStatus.COMPLETED, row.cached_from.output
            item.latency_ms, item.tokens_in, item.tokens_out = 0, 0, 0
            item.attempts = 0
        elif row.output is None:
            item.status, item.error = ItemStatus.FAILED, row.error
        else:
            item.status, item.output = ItemStatus.COMPLETED, row.output
            item.latency_ms = _latency(row.input, 300, 900)
            item.tokens_in = estimate_tokens(spec.system_prompt) + estimate_tokens(row.input) + 7
            item.tokens_out = estimate_tokens(row.output)
            tokens[0] += item.tokens_in
            tokens[1] += item.tokens_out
            clock_ms += item.latency_ms
        if schema is not None and item.status == ItemStatus.COMPLETED:
            item.valid = True
        items.append(item)
    completed = sum(1 for item in items if item.status == ItemStatus.COMPLETED)
    failed = len(items) - completed
    price = cost.price_for(team, credential.provider, spec.model)
    rates = cost.mode_rates(price, mode)
    errors = [item.error for item in items if item.error]
    started = created + timedelta(seconds=2)
    job = Job.objects.create(
        team=team,
        credential=credential,
        credential_name=credential.name,
        provider=credential.provider,
        model=spec.model,
        spec=base,
        mode=mode,
        status=JobStatus.COMPLETED if completed else JobStatus.FAILED,
        error=f"{failed} of {len(items)} prompts failed; first error: {errors[0]}"
        if errors
        else "",
        error_retryable=bool(failed),
        progress_done=len(items),
        progress_total=len(items),
        items_completed=completed,
        items_failed=failed,
        items_valid=completed if schema is not None else 0,
        tokens_in=tokens[0],
        tokens_out=tokens[1],
        price_input_per_mtok=rates[0] if rates else None,
        price_output_per_mtok=rates[1] if rates else None,
        cost_estimated=cost.spec_estimate(team, credential.provider, spec, mode).cost,
        cost_actual=tokens_cost(tokens[0], tokens[1], *rates) if rates else None,
        output_columns=structured.columns(schema) if schema is not None else [],
        scorers=scorers or [],
        demo=True,
        created_by=user,
        created_at=created,
        started_at=started,
        finished_at=started + timedelta(milliseconds=clock_ms // 4 + 500),
        deadline_at=created + timedelta(hours=6),
        **extra,
    )
    for item in items:
        item.job = job
        if mode == Job.Mode.ONLINE:  # the runner hashes what it runs; the batch path does not
            item.request_hash = cache.request_hash(job, base, item.input)
    items = Item.objects.bulk_create(items)
    if job.scorers:
        scores_write(score_rows(job.pk, cheap(job.scorers), items))
    batch = " as a batch" if mode == Job.Mode.BATCH else ""
    messages = [
        NOTE,
        f"Saved by {user.get_username()}: {len(items)} prompt(s) for {spec.model}{batch}",
        *events,
        f"{job.status.capitalize()}: {summary(job)}.",
    ]
    JobEvent.objects.bulk_create(
        [
            JobEvent(job=job, message=message, created_at=created + timedelta(seconds=n))
            for n, message in enumerate(messages)
        ]
    )
    return job, items


def _prices(team: Team, user: Any) -> None:
    for (provider, model), (given, taken) in PRICES.items():
        Price.objects.get_or_create(
            team=team,
            provider=provider,
            model=model,
            defaults={
                "input_per_mtok": Decimal(given),
                "output_per_mtok": Decimal(taken),
                "updated_by": user,
            },
        )


def _answer(model: str, prompt: str, said: str, ramble: bool = False) -> str:
    """The simulator's answer to ``prompt``, ending with the city the model named."""
    return f"{completion_text(model, prompt).strip()}\n{said}.{RAMBLE if ramble else ''}"


# --- the dataset and the comparison ---------------------------------------------------------


def _dataset(team: Team, user: Any, created: datetime) -> Dataset:
    records = [
        {"question": f"What is the capital of {country}?", "expected": capital}
        for country, capital, *_ in CAPITALS
    ]
    dataset = Dataset.objects.create(
        team=team,
        name=DATASET,
        columns=["question", "expected"],
        row_count=len(records),
        source=Dataset.Source.CSV,
        file_name="capitals.csv",
        size_bytes=sum(len(r["question"]) + len(r["expected"]) + 2 for r in records) + 18,
        created_by=user,
        created_at=created,
    )
    DatasetRow.objects.bulk_create(
        [DatasetRow(dataset=dataset, index=n, data=data) for n, data in enumerate(records)]
    )
    return dataset


def _prompt(question: str) -> str:
    return TEMPLATE.format(question=question)


def _comparison(
    team: Team,
    user: Any,
    credentials: dict[str, Credential],
    dataset: Dataset,
    now: datetime,
) -> tuple[Comparison, Job, Job]:
    created = now - timedelta(days=1, hours=3)
    comparison = Comparison.objects.create(
        team=team,
        name=COMPARISON,
        dataset=dataset,
        prompt_template=TEMPLATE,
        created_by=user,
        created_at=created,
    )
    judge_credential = credentials["openai"]
    judge = {
        "type": "judge",
        "name": "judge",
        "credential": judge_credential.pk,
        "model": JUDGE_MODEL,
        "rubric": "Pass when the answer names the country's capital city (the expected "
        "value); extra words are fine, another city is not.",
        "expected_column": "expected",
    }
    scorers = [*SCORERS_BASE, judge]
    targets = {}
    for key, (provider, model) in (("strong", STRONG), ("weak", WEAK)):
        rows, named = [], []
        for country, capital, strong_says, weak_says, _, rambles in CAPITALS:
            said = (strong_says if key == "strong" else weak_says) or capital
            prompt = _prompt(f"What is the capital of {country}?")
            rows.append(
                Row(
                    input=prompt,
                    output=_answer(model, prompt, said, rambles and key == "weak"),
                    fields={"question": f"What is the capital of {country}?", "expected": capital},
                )
            )
            named.append(said)
        spec = JobSpec(model=model, prompts=[r.input for r in rows], system_prompt=SYSTEM)
        job, items = _job(
            team,
            user,
            credentials[provider],
            spec,
            rows,
            created=created,
            scorers=scorers,
            events=(f"Target of comparison {comparison.pk} “{COMPARISON}”.",),
            dataset=dataset,
            comparison=comparison,
            input_columns=["question", "expected"],
        )
        _judge(team, user, judge_credential, job, items, named, judge, created)
        targets[key] = (job, items)
    strong, weak = targets["strong"][0], targets["weak"][0]
    row_of = {country: n for n, (country, *_) in enumerate(CAPITALS)}
    for key, country, score in RATINGS:
        Rating.objects.create(
            job=targets[key][0],
            index=row_of[country],
            user=user,
            score=score,
            best=key == "strong" and score == 1,
            created_at=created + timedelta(hours=2),
            updated_at=created + timedelta(hours=2),
        )
    RowNote.objects.create(
        comparison=comparison,
        index=row_of["Germany"],
        author=user,
        text="Bonn was the capital until 1990; the judge lets it pass, I don't.",
        created_at=created + timedelta(hours=2),
    )
    return comparison, strong, weak


def _judge(
    team: Team,
    user: Any,
    credential: Credential,
    judged: Job,
    items: list[Item],
    named: list[str],
    scorer: dict[str, Any],
    created: datetime,
) -> Job:
    """The judge job of ``judged`` for ``scorer``: its answers, and the
    judged rows' verdicts from them (as ``judge.on_items_completed`` writes)."""
    rows = []
    for item, said, (country, expected, *_) in zip(items, named, CAPITALS, strict=True):
        if country in LENIENT and said != expected:
            score, reason = LENIENT[country]
            answer = {"pass": True, "score": score, "reason": reason}
        elif said == expected:
            answer = {"pass": True, "score": 1.0, "reason": f"Names {expected}, the capital."}
        else:
            answer = {
                "pass": False,
                "score": 0.0,
                "reason": f"Names {said}; the capital of {country} is {expected}.",
            }
        rows.append(
            Row(
                input=judge_prompt(scorer, item.input, item.output, expected),
                output=answer,
                source_index=item.index,
            )
        )
    spec = JobSpec(
        model=scorer["model"], prompts=[r.input for r in rows], output_schema=JUDGE_SCHEMA
    )
    job, answers = _job(
        team,
        user,
        credential,
        spec,
        rows,
        created=created + timedelta(minutes=1),
        scorers=JUDGE_JOB_SCORERS,
        events=(f"Judges job {judged.pk} with scorer “{scorer['name']}”.",),
        judge_of=judged,
        judge_scorer=scorer["name"],
    )
    verdicts_write(
        judged.pk, scorer["name"], {a.source_index: verdict_of(a.output) for a in answers}
    )
    JobEvent.objects.create(
        job=judged,
        message=f"Judge “{scorer['name']}”: job {job.pk} judges {len(answers)} row(s).",
        created_at=created + timedelta(minutes=1),
    )
    return job


# --- a rerun, for the diff ------------------------------------------------------------------


def _rerun(
    team: Team, user: Any, credential: Credential, dataset: Dataset, weak: Job, now: datetime
) -> Job:
    """The weak target again over the same rows with a terser system prompt:
    most wrong cities fixed, one right one lost, the rambling gone."""
    model = weak.model
    rows = []
    for country, capital, _, _, rerun_says, _ in CAPITALS:
        prompt = _prompt(f"What is the capital of {country}?")
        rows.append(
            Row(
                input=prompt,
                # A row the new prompt did not change answers word for word as before.
                output=_answer(model, prompt, rerun_says or capital),
                fields={"question": f"What is the capital of {country}?", "expected": capital},
            )
        )
    spec = JobSpec(model=model, prompts=[r.input for r in rows], system_prompt=SYSTEM_TERSE)
    job, _ = _job(
        team,
        user,
        credential,
        spec,
        rows,
        created=now - timedelta(hours=5),
        scorers=[dict(s) for s in SCORERS_BASE],
        events=(
            f"Rerun of job {weak.pk} over the same rows with a terser system prompt: "
            f"diff it against job {weak.pk}.",
        ),
        dataset=dataset,
        input_columns=["question", "expected"],
    )
    return job


# --- a batch job ------------------------------------------------------------------------------


def _batch(team: Team, user: Any, credential: Credential, now: datetime) -> Job:
    """Twenty reviews classified through the batch API: two remote batches,
    ended; one row expired in the second."""
    model = "gpt-4o-mini"
    created = now - timedelta(hours=20)
    prompts = [
        f"Classify the sentiment of review {1000 + n}: positive, negative or mixed.\n"
        f"{SENTIMENTS[n % len(SENTIMENTS)]}"
        for n in range(20)
    ]
    rows = [Row(input=p, output=completion_text(model, p).strip()) for p in prompts]
    rows[17] = Row(input=prompts[17], error=EXPIRED)
    spec = JobSpec(model=model, prompts=prompts, max_tokens=64)
    job, _ = _job(
        team,
        user,
        credential,
        spec,
        rows,
        created=created,
        mode=Job.Mode.BATCH,
        events=(
            "Cut into 2 batches of at most 10 request(s).",
            "Batch 1 completed: results read.",
            "Batch 2 completed: results read.",
        ),
        provider_status="completed",
    )
    ended = [created + timedelta(hours=3, minutes=12), created + timedelta(hours=4, minutes=41)]
    BatchChunk.objects.bulk_create(
        [
            BatchChunk(
                job=job,
                number=number,
                start_index=10 * number,
                end_index=10 * number + 10,
                requests=10,
                state=BatchChunk.State.ENDED,
                remote_id=f"batch_demo{hashlib.sha256(f'{job.pk}/{number}'.encode()).hexdigest()[:20]}",
                input_file_id=f"file-demo-in-{number + 1}",
                output_file_id=f"file-demo-out-{number + 1}",
                error_file_id="file-demo-err-2" if number else "",
                provider_status="completed",
                counts={"total": 10, "completed": 10 - number, "failed": number},
                submitted_at=created + timedelta(seconds=30 + number),
                ended_at=ended[number],
                created_at=created + timedelta(seconds=5),
            )
            for number in (0, 1)
        ]
    )
    Job.objects.filter(pk=job.pk).update(finished_at=ended[1])
    return job


# --- answers from the cache -----------------------------------------------------------------


def _cached(team: Team, user: Any, credential: Credential, now: datetime) -> Job:
    """Support tickets summarised, then sent again a day later (with four
    new ones) with the cache on: the old ones cost nothing the second time."""
    model = "gpt-4o"
    tickets = [
        f"Summarise support ticket #{4100 + n} in one sentence for the on-call lead.\n"
        + TICKETS[n % len(TICKETS)].format(n=77100 + n)
        for n in range(16)
    ]
    spec_of = {"model": model, "system_prompt": "You triage support tickets.", "max_tokens": 200}
    first, items = _job(
        team,
        user,
        credential,
        JobSpec(prompts=tickets[:12], **spec_of),
        [Row(input=t, output=completion_text(model, t).strip()) for t in tickets[:12]],
        created=now - timedelta(days=1, hours=6),
    )
    rows = [Row(input=t, cached_from=item) for t, item in zip(tickets[:12], items, strict=True)]
    rows += [Row(input=t, output=completion_text(model, t).strip()) for t in tickets[12:]]
    job, _ = _job(
        team,
        user,
        credential,
        JobSpec(prompts=tickets, **spec_of),
        rows,
        created=now - timedelta(hours=2),
        cache=True,
        events=(f"12 row(s) answered from the cache (job {first.pk}'s answers).",),
    )
    return job


# --- a rate-limited credential ----------------------------------------------------------------


def _limits(credential: Credential, now: datetime) -> None:
    Credential.objects.filter(pk=credential.pk, requests_per_minute=None).update(
        requests_per_minute=600,
        tokens_per_minute=200_000,
        last_limited_at=now - timedelta(minutes=7),
        last_limited_reason="its own rate limit (rpm/tpm)",
    )
