"""The judge: an LLM's verdict on each completed item, as a job of its own.

A ``judge`` scorer (``credential``, ``model``, ``rubric``, and optionally
``value`` or ``expected_column``) does not score as an item completes: its
calls are the items of a **judge job**, a normal ``Job`` on the judge's
credential and model, made by ``jobs.services.job_create`` (so the budget,
the price and cost, the limits, the retries and the live page apply to it)
and linked to the judged job (``Job.judge_of``, ``Job.judge_scorer``).

The design, in order:

1. A job is created with all its items up front, so the judge job is made
   when the judged job **ends** (``on_job_ended``, a receiver of
   ``core.events.job_ended``, enqueues ``judge_start`` on commit): one judge
   job per (judged job, judge scorer), one item per completed judged item,
   its prompt the rubric, the item's input, its output (JSON for a
   structured one) and the expected value, its ``source_index`` the judged
   item's index, its output schema JUDGE_SCHEMA. A finished job that gets a
   judge scorer later (``scorers_add``) goes the same way at once: only the
   judge is called, never the judged model.
2. A judge job carries one scorer of its own, ``valid`` named JUDGE_VALID
   (the jobs room announces ``items_completed`` only for jobs with scorers,
   and its page then shows how often the judge's answers fit). As its items
   complete, ``on_items_completed`` writes the judged items' verdicts in the
   same flush: ``(pass, score, reason)`` from each valid answer.
3. When the judge job ends (``judge_finish``): its off-schema answers are
   asked once more with the validation error (``job_retry(invalid_only=True,
   repair=True)``, a judge job too); answers still off-schema after that,
   and calls that failed, leave the judged rows unscored with the reason. A
   judge job the budget refuses leaves every row unscored with the budget's
   words; the judged job has ended either way.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from dashboard.core import queue as tasks_queue
from dashboard.jobs import cost
from dashboard.jobs.services import event_add, job_create, job_retry
from dashboard.models import Credential, Item, Job, JobEvent
from dashboard.status import JOB_TERMINAL, ItemStatus, JobStatus
from providers import JobSpec

from .scorers import JUDGE_SCHEMA, MAX_REASON
from .scores import RESCORE_BATCH, scores_write

logger = logging.getLogger(__name__)

#: The tasks (stable dotted paths in ``dashboard.tasks``).
START_TASK = "dashboard.tasks.judge_start"
FINISH_TASK = "dashboard.tasks.judge_finish"
#: The judge job's own scorer: whether each of its answers fits JUDGE_SCHEMA.
JUDGE_VALID = "answer fits the schema"
JUDGE_JOB_SCORERS = [{"type": "valid", "name": JUDGE_VALID}]
#: Each of the judged item's parts in a judge's prompt is cut to this share
#: of a prompt's limit, so the whole fits ``settings.MAX_PROMPT_CHARS``.
PART_SHARE = 0.3
#: What the reasons start with.
OFF_SCHEMA = "the judge's answer did not fit the schema: "
CALL_FAILED = "the judge's call failed: "


def judges(scorers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [scorer for scorer in scorers if scorer["type"] == "judge"]


# --- the prompt --------------------------------------------------------------------------------


def expected_value(scorer: dict[str, Any], fields: dict[str, Any] | None) -> Any:
    """The value the judge compares against: the item's ``expected_column``,
    the scorer's ``value``, or None."""
    if "expected_column" in scorer:
        value = (fields or {}).get(scorer["expected_column"])
        return None if value == "" else value
    return scorer.get("value")


def _shown(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, indent=2)
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[… cut: {len(text) - limit:,} more characters]"


def judge_prompt(scorer: dict[str, Any], prompt: str, output: Any, expected: Any) -> str:
    """What the judge is asked about one item."""
    part = int(settings.MAX_PROMPT_CHARS * PART_SHARE)
    sections = [
        "You are judging one answer of a language model against a rubric.",
        f"## Rubric\n{scorer['rubric']}",
        f"## Input (the prompt the model was given)\n{_shown(prompt, part)}",
        f"## Output (the model's answer)\n{_shown(output, part)}",
    ]
    if expected is not None:
        sections.append(f"## Expected value\n{_shown(expected, part // 3)}")
    sections.append(
        'Answer with a JSON object: "pass" (true when the output meets the rubric), '
        '"score" (from 0, worst, to 1, best) and "reason" (one or two sentences).'
    )
    return "\n\n".join(sections)


# --- when the judged job ends: the judge job ------------------------------------------------


def on_job_ended(sender: Any, *, job_ids: list[int], status: str, **kwargs: Any) -> None:
    """Jobs ended: a judged job's judges start, a judge job's answers are
    finished (repaired or left unscored), in tasks once this commits. One
    query; nothing else here (this runs in ``jobs_end``'s transaction)."""
    rows = Job.objects.filter(pk__in=job_ids).values_list("id", "scorers", "judge_of_id")
    for job_id, scorers, judge_of in rows:
        if judge_of is not None:
            tasks_queue.on_commit(FINISH_TASK, job_id)
        elif judges(scorers or []):
            tasks_queue.on_commit(START_TASK, job_id, None)


def judge_start(job_id: int, names: list[str] | None = None) -> list[int]:
    """Make the judge jobs of a finished job: one per judge scorer (those
    named ``names``, all for None) that has none yet. Returns their ids."""
    job = Job.objects.select_related("team", "created_by").filter(pk=job_id).first()
    if job is None or job.status not in JOB_TERMINAL or job.judge_of_id is not None:
        return []
    made = []
    for scorer in judges(job.scorers):
        if names is None or scorer["name"] in names:
            judge = judge_job_create(job, scorer)
            if judge is not None:
                made.append(judge.pk)
    return made


def judge_job_create(job: Job, scorer: dict[str, Any]) -> Job | None:
    """The judge job of ``job`` for ``scorer``, over its completed items;
    None when there is nothing to judge, one exists already, or it cannot be
    made (the budget, a deleted credential): then every completed row is
    left unscored with the reason, and the judged job's timeline says so."""
    name = scorer["name"]
    label = f"Judge “{name}”"
    with transaction.atomic():
        Job.objects.select_for_update().filter(pk=job.pk).values_list("id").first()
        if Job.objects.filter(judge_of=job, judge_scorer=name, retry_of=None).exists():
            return None
        items = list(
            Item.objects.filter(job_id=job.pk, status=ItemStatus.COMPLETED)
            .order_by("index")
            .values_list("index", "input", "output", "input_fields")
        )
        if not items:
            event_add(job.pk, f"{label}: no completed row to judge.")
            return None
        credential = Credential.objects.filter(pk=scorer["credential"], team=job.team_id).first()
        if credential is None:
            reason = f"the judge's credential {scorer['credential']} was deleted"
            _refused(job, name, label, reason)
            return None
        spec = JobSpec(
            model=scorer["model"],
            prompts=[
                judge_prompt(scorer, prompt, output, expected_value(scorer, fields))
                for _, prompt, output, fields in items
            ],
            output_schema=JUDGE_SCHEMA,
        )
        try:
            with transaction.atomic():
                judge = job_create(
                    team=job.team,
                    credential=credential,
                    spec=spec,
                    user=job.created_by,
                    source_indexes=[index for index, *_ in items],
                    scorers=JUDGE_JOB_SCORERS,
                )
                Job.objects.filter(pk=judge.pk).update(judge_of=job, judge_scorer=name)
        except cost.BudgetExceeded as exc:
            _refused(job, name, label, f"the budget refused the judge's job: {exc}")
            return None
        judge.judge_of, judge.judge_scorer = job, name
        event_add(job.pk, f"{label}: job {judge.pk} judges {len(items)} row(s).")
        event_add(judge.pk, f"Judges job {job.pk} with scorer “{name}”.")
    return judge


def _refused(job: Job, name: str, label: str, reason: str) -> None:
    event_add(job.pk, f"{label} did not run: {reason}", kind=JobEvent.Kind.ERROR)
    unscored_all(job.pk, name, reason)


def unscored_all(job_id: int, name: str, reason: str) -> int:
    """Every completed item of the job unscored by ``name``, with ``reason``
    (keyset batches, upserted). Returns the rows written."""
    written, after = 0, -1
    while True:
        rows = list(
            Item.objects.filter(job_id=job_id, status=ItemStatus.COMPLETED, index__gt=after)
            .order_by("index")
            .values_list("id", "index")[:RESCORE_BATCH]
        )
        scores_write(
            [(pk, job_id, index, name, None, None, reason[:MAX_REASON]) for pk, index in rows]
        )
        written += len(rows)
        if len(rows) < RESCORE_BATCH:
            return written
        after = rows[-1][1]


# --- as the judge's answers come in ---------------------------------------------------------


def verdict_of(answer: Any) -> tuple[bool, float, str]:
    """(passed, score, reason) from an answer that fits JUDGE_SCHEMA."""
    return bool(answer["pass"]), float(answer["score"]), str(answer["reason"])[:MAX_REASON]


def on_items_completed(
    sender: Any, *, job_id: int, scorers: list[dict[str, Any]], items: list[Item], **kwargs: Any
) -> None:
    """Items of a judge job completed: write the judged items' verdicts in
    the flush that wrote the answers. An answer off the schema waits for its
    repair (the first judge job), or leaves its row unscored (the repair).
    Jobs that are not judges cost nothing here but a look at their scorers."""
    if scorers != JUDGE_JOB_SCORERS or not items:
        return
    link = Job.objects.filter(pk=job_id).values_list("judge_of_id", "judge_scorer", "retry_of_id")
    judged, name, retry_of = link.first() or (None, "", None)
    if judged is None:
        return
    rows: dict[int, tuple[bool | None, float | None, str]] = {}
    for item in items:
        index = item.source_index if item.source_index is not None else item.index
        if item.valid:
            rows[index] = verdict_of(item.output)
        elif retry_of is not None:
            rows[index] = (None, None, (OFF_SCHEMA + item.validation_error)[:MAX_REASON])
    try:
        with transaction.atomic():
            verdicts_write(judged, name, rows)
    except Exception:
        logger.exception("The judge's verdicts of job %s were not written", judged)


def verdicts_write(
    judged: int, name: str, verdicts: dict[int, tuple[bool | None, float | None, str]]
) -> None:
    """Upsert ``name``'s verdict on the judged job's items, by index."""
    if not verdicts:
        return
    ids = Item.objects.filter(job_id=judged, index__in=list(verdicts)).values_list("index", "id")
    scores_write(
        [(pk, judged, index, name, *verdicts[index]) for index, pk in ids.order_by("index")]
    )


# --- when the judge job ends ----------------------------------------------------------------


def judge_finish(job_id: int) -> int | None:
    """A judge job ended: its off-schema answers are asked again once, with
    the validation error (a repair job, a judge job of the same scorer);
    answers still off-schema (the repair's, or when it cannot be made) and
    calls that failed leave their rows unscored with the reason. Returns the
    repair job's id, if one was made."""
    job = Job.objects.select_related("team", "credential").filter(pk=job_id).first()
    if job is None or job.judge_of_id is None or job.status not in JOB_TERMINAL:
        return None
    judged, name = job.judge_of_id, job.judge_scorer
    repair: Job | None = None
    # Once (a task run twice makes no second repair); never for a judge job someone cancelled.
    asked_again = job.retries.exists()
    if (
        job.retry_of_id is None
        and job.items_invalid
        and job.status != JobStatus.CANCELLED
        and not asked_again
    ):
        try:
            with transaction.atomic():
                repair = job_retry(job, invalid_only=True, repair=True)
                Job.objects.filter(pk=repair.pk).update(
                    judge_of=judged, judge_scorer=name, scorers=JUDGE_JOB_SCORERS
                )
                event_add(
                    judged,
                    f"Judge “{name}”: job {repair.pk} asks its {job.items_invalid} "
                    "off-schema answer(s) again.",
                )
        except ValueError as exc:  # the budget, a deleted credential
            event_add(
                job.pk,
                f"The off-schema answers were not asked again: {exc}",
                kind=JobEvent.Kind.ERROR,
            )
            repair = None
    # Calls that failed or never ran; off-schema answers that no repair asks again.
    left = Q(status__in=[ItemStatus.FAILED, ItemStatus.CANCELLED, ItemStatus.PENDING])
    if repair is None and not asked_again:
        left |= Q(status=ItemStatus.COMPLETED, valid=False)
    rows: dict[int, tuple[bool | None, float | None, str]] = {}
    values = (
        Item.objects.filter(left, job_id=job.pk)
        .order_by("index")
        .values_list("index", "source_index", "status", "error", "validation_error")
    )
    for index, source, status, error, validation_error in values.iterator(chunk_size=2000):
        if status == ItemStatus.COMPLETED:
            reason = OFF_SCHEMA + validation_error
        elif status == ItemStatus.FAILED:
            reason = CALL_FAILED + (error or "no answer")
        else:
            reason = "the judge's call never ran (its job was cancelled or ended first)"
        rows[source if source is not None else index] = (None, None, reason[:MAX_REASON])
        if len(rows) >= RESCORE_BATCH:
            verdicts_write(judged, name, rows)
            rows = {}
    verdicts_write(judged, name, rows)
    return repair.pk if repair is not None else None
