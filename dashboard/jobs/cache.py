"""Answers not paid for twice: an item whose request equals that of an item
the same team already has completed takes its output without a call.

The request is everything that decides the answer: provider, base URL, model,
every parameter of the spec (system prompt, output schema, options…) and the
prompt, as a SHA-256 over canonical JSON (``Item.request_hash``). The runner
hashes every item it runs, so any completed item can answer a later job with
``cache`` on; the lookup is one query per chunk of pending items.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from django.db.models import Count, Sum

from dashboard.models import Item, Job, tokens_cost
from dashboard.status import ItemStatus, check_item_move


def request_hash(job: Job, base: dict[str, Any], prompt: str) -> str:
    """The stable hash of one item's request (``base``: the spec without its prompts)."""
    credential = job.credential
    request = {
        "provider": job.provider,
        "base_url": (credential.base_url if credential else "").rstrip("/"),
        "model": job.model,
        "spec": {k: v for k, v in base.items() if k != "prompts"},
        "prompt": prompt,
    }
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def cache_sources(team_id: int, hashes: Iterable[str], *, exclude_job: int) -> dict[str, Item]:
    """For each hash, the team's newest completed item with it that answered
    by a call (never a copy, never another team's), in one query."""
    wanted = sorted(set(hashes))
    if not wanted:
        return {}
    rows = (
        Item.objects.filter(
            request_hash__in=wanted,
            status=ItemStatus.COMPLETED,
            cached_from__isnull=True,
            job__team_id=team_id,
        )
        .exclude(job_id=exclude_job)
        .only("id", "request_hash", "output", "valid", "validation_error")
        .order_by("request_hash", "-id")
    )
    found: dict[str, Item] = {}
    for row in rows:
        found.setdefault(row.request_hash, row)
    return found


def item_from_cache(item: Item, source: Item) -> None:
    """Complete ``item`` (in memory) with ``source``'s output: no call, no cost."""
    check_item_move(item.status, ItemStatus.COMPLETED)
    item.status = ItemStatus.COMPLETED
    item.output = source.output
    item.error = ""
    item.valid, item.validation_error = source.valid, source.validation_error
    item.cached_from_id = source.pk
    item.latency_ms = 0
    item.tokens_in = item.tokens_out = 0
    item.tokens_estimated = False


def cache_summary(job: Job) -> dict[str, Any]:
    """``{"hits", "saved"}``: rows that came from the cache, and what their
    source rows cost (USD; None when the model has no price)."""
    totals = Item.objects.filter(job_id=job.pk, cached_from__isnull=False).aggregate(
        hits=Count("id"),
        tokens_in=Sum("cached_from__tokens_in"),
        tokens_out=Sum("cached_from__tokens_out"),
    )
    hits = totals["hits"] or 0
    if hits:
        # At the job's own price (kept when it was saved); None without one.
        saved = tokens_cost(
            totals["tokens_in"] or 0,
            totals["tokens_out"] or 0,
            job.price_input_per_mtok,
            job.price_output_per_mtok,
        )
        return {"hits": hits, "saved": None if saved is None else float(saved)}
    return {"hits": 0, "saved": 0.0}
