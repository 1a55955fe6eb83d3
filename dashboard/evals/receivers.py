"""Scores listen to the jobs' writes through ``core.events`` (connected in
``DashboardConfig.ready``): jobs never import evals."""

from __future__ import annotations

from typing import Any

from dashboard.core.events import items_completed, job_ended
from dashboard.jobs import serialize
from dashboard.models import Job

from . import judge
from .scores import on_items_completed, scores_summary


def connect() -> None:
    items_completed.connect(on_items_completed, dispatch_uid="evals.items_completed")
    # The job's answer (API and webhooks alike) carries its pass rates.
    serialize.SECTIONS["scores"] = scores_summary
    # The judge: its job is made when the judged job ends, its answers are
    # the judged items' verdicts as they come (dashboard.evals.judge).
    job_ended.connect(judge.on_job_ended, dispatch_uid="evals.judge.job_ended")
    items_completed.connect(judge.on_items_completed, dispatch_uid="evals.judge.items_completed")
    serialize.SECTIONS["judges"] = judges_section
    serialize.SECTIONS["judge_of"] = judge_of_section


def judges_section(job: Job) -> list[dict[str, Any]]:
    """The judge jobs of a job with judge scorers, a repair after the job it
    repairs (one query; none for a job without a judge)."""
    if not judge.judges(job.scorers):
        return []
    rows = job.judges.order_by("id").values_list("judge_scorer", "id")
    return [{"scorer": scorer, "job": pk} for scorer, pk in rows]


def judge_of_section(job: Job) -> dict[str, Any] | None:
    """The job a judge job judges, and with which scorer (no query)."""
    if job.judge_of_id is None:
        return None
    return {"job": job.judge_of_id, "scorer": job.judge_scorer}
