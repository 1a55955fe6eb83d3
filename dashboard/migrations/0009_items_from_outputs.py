"""Every existing job's prompts, outputs and per-prompt errors become items,
losing nothing; the job keeps its counters and its spec without the prompts
(they live in the items now). Reversible: the items go back into the lists."""

from __future__ import annotations

import math
from typing import Any

from django.db import migrations

from dashboard.core import structured

TERMINAL = ("completed", "failed", "cancelled")


def estimate(text: Any) -> int:
    if text is None:
        return 0
    if not isinstance(text, str):
        import json

        text = json.dumps(text, ensure_ascii=False)
    return math.ceil(len(text) / 4)


def item_fields(job: Any, index: int, prompt: str, output: Any, error: str) -> dict[str, Any]:
    schema = (job.spec or {}).get("output_schema")
    if output is not None:
        status = "completed"
    elif error:
        status = "failed"
    elif job.status == "cancelled":
        status = "cancelled"
    elif job.status == "completed":
        status = "completed"  # kept whole in raw_result: not one output per prompt
    elif job.status == "failed":
        status, error = "failed", job.error
    else:
        status = "pending"
    valid, problem = None, ""
    if schema and status == "completed" and output is not None:
        found = structured.problems(schema, output)
        valid, problem = not found, "; ".join(found)
    ended = status in TERMINAL
    return {
        "index": index,
        "input": str(prompt),
        "status": status,
        "output": output,
        "error": error or "",
        "attempts": 1 if ended and status != "cancelled" else 0,
        "tokens_in": estimate(prompt) if ended else None,
        "tokens_out": estimate(output) if output is not None else None,
        "tokens_estimated": ended,
        "valid": valid,
        "validation_error": problem,
    }


def forwards(apps: Any, schema_editor: Any) -> None:
    Job = apps.get_model("dashboard", "Job")
    Item = apps.get_model("dashboard", "Item")
    for job in Job.objects.order_by("pk").iterator(chunk_size=100):
        spec = dict(job.spec or {})
        prompts = list(spec.pop("prompts", None) or [])
        outputs = list(job.outputs or [])
        errors = job.output_errors or {}
        rows = [
            item_fields(
                job,
                i,
                prompt,
                outputs[i] if i < len(outputs) else None,
                str(errors.get(str(i), "")),
            )
            for i, prompt in enumerate(prompts)
        ]
        Item.objects.bulk_create([Item(job_id=job.pk, **row) for row in rows], batch_size=500)
        by_status = {s: sum(1 for r in rows if r["status"] == s) for s in (*TERMINAL, "pending")}
        Job.objects.filter(pk=job.pk).update(
            spec=spec,
            progress_total=len(rows),
            progress_done=by_status["completed"] + by_status["failed"] + by_status["cancelled"],
            items_completed=by_status["completed"],
            items_failed=by_status["failed"],
            items_cancelled=by_status["cancelled"],
            items_valid=sum(1 for r in rows if r["valid"] is True),
            items_invalid=sum(1 for r in rows if r["valid"] is False),
            tokens_in=sum(r["tokens_in"] or 0 for r in rows),
            tokens_out=sum(r["tokens_out"] or 0 for r in rows),
            tokens_estimated=any(r["tokens_estimated"] for r in rows),
        )


def backwards(apps: Any, schema_editor: Any) -> None:
    Job = apps.get_model("dashboard", "Job")
    Item = apps.get_model("dashboard", "Item")
    for job in Job.objects.order_by("pk").iterator(chunk_size=100):
        items = list(Item.objects.filter(job_id=job.pk).order_by("index"))
        spec = dict(job.spec or {})
        spec["prompts"] = [item.input for item in items]
        errors = {str(item.index): item.error for item in items if item.status == "failed"}
        Job.objects.filter(pk=job.pk).update(
            spec=spec,
            outputs=[item.output for item in items],
            output_errors=errors,
        )
        Item.objects.filter(job_id=job.pk).delete()


class Migration(migrations.Migration):
    dependencies = [("dashboard", "0008_items")]
    operations = [migrations.RunPython(forwards, backwards)]
