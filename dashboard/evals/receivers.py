"""Scores listen to the jobs' writes through ``core.events`` (connected in
``DashboardConfig.ready``): jobs never import evals."""

from __future__ import annotations

from dashboard.core.events import items_completed
from dashboard.jobs import serialize

from .scores import on_items_completed, scores_summary


def connect() -> None:
    items_completed.connect(on_items_completed, dispatch_uid="evals.items_completed")
    # The job's answer (API and webhooks alike) carries its pass rates.
    serialize.SECTIONS["scores"] = scores_summary
