"""MyMagic's ``POST /v1/completions`` + ``GET /v1/job_status/{id}`` (see :mod:`providers.mymagic`).

A job is queued for ``step_seconds`` (as "Waiting for instance" when a prompt or
the question holds ``[[cold]]``), "Processing" for twice that, then "Completed"
(or "Error" when an input holds ``[[fail]]``). Defaults are MyMagic's own:
``max_tokens`` 10, ``return_output`` false.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .base import Request, Response, Simulator, completion_text

DEFAULT_MAX_TOKENS = 10
TEXT_FIELDS = (
    "system_prompt",
    "storage_provider",
    "bucket_name",
    "session",
    "role_arn",
    "region",
    "input_json_file",
)


@dataclass
class MyMagicJob:
    id: str
    model: str
    question: str
    inputs: list[str]
    max_tokens: int
    return_output: bool
    schema: dict[str, Any] | None
    created: float

    @property
    def cold(self) -> bool:
        return any("[[cold]]" in text for text in [self.question, *self.inputs])

    @property
    def failing(self) -> bool:
        return any("[[fail]]" in text for text in [self.question, *self.inputs])


class MyMagicSimulator(Simulator):
    name = "mymagic"

    def __init__(
        self,
        *,
        step_seconds: float = 1.0,
        clock: Callable[[], float] | None = None,
        legacy_task_id: bool = False,
        **kwargs: Any,
    ) -> None:
        self.step_seconds = step_seconds
        self.clock = clock or time.monotonic
        # The older protocol answers a submit with "task_id" instead of "job_id".
        self.legacy_task_id = legacy_task_id
        self.jobs: dict[str, MyMagicJob] = {}
        self._serial = 0
        super().__init__(**kwargs)

    def __enter__(self) -> MyMagicSimulator:
        self.start()
        return self

    def setup_routes(self) -> None:
        self.route("POST", "/v1/completions", self.completions)
        self.route("GET", "/v1/job_status/(?P<job_id>[^/]+)", self.job_status)

    # -- inspection for tests ------------------------------------------------

    def reset(self) -> None:
        """Forget jobs, faults and counters, so one running server can serve many tests."""
        with self.lock:
            self.jobs.clear()
            self.faults.clear()
            self.requests.clear()
            self.max_overlap.clear()
            self.submissions = self.overlaps = 0

    def status_of(self, job_id: str) -> str:
        with self.lock:
            job = self.jobs[job_id]
        return self._status_word(job)

    def running_ids(self) -> list[str]:
        with self.lock:
            jobs = list(self.jobs.values())
        return [job.id for job in jobs if self._status_word(job) == "Processing"]

    # -- routes ----------------------------------------------------------------

    def completions(self, request: Request) -> Response:
        try:
            body = request.json()
        except ValueError:
            return _error(400, "Body is not valid JSON")
        if not isinstance(body, dict):
            return _error(400, "Body must be a JSON object")
        job_or_error = self._new_job(body)
        if isinstance(job_or_error, Response):
            return job_or_error
        with self.lock:
            self.jobs[job_or_error.id] = job_or_error
            self.submissions += 1
        key = "task_id" if self.legacy_task_id else "job_id"
        return Response(200, {"status": "Submitted", key: job_or_error.id})

    def job_status(self, request: Request, job_id: str) -> Response:
        with self.track(job_id):
            with self.lock:
                job = self.jobs.get(job_id)
            if job is None:
                return _error(404, f"Job {job_id} not found")
            return Response(200, self._status_body(job))

    # -- behaviour -------------------------------------------------------------

    def _new_job(self, body: dict[str, Any]) -> MyMagicJob | Response:
        model, question, inputs = body.get("model"), body.get("question"), body.get("list_inputs")
        if not isinstance(model, str) or not model:
            return _error(400, "'model' is required")
        if not isinstance(question, str) or not question:
            return _error(400, "'question' is required")
        if not isinstance(inputs, list) or not inputs:
            return _error(400, "'list_inputs' must be a non-empty list of strings")
        if not all(isinstance(item, str) for item in inputs):
            return _error(400, "'list_inputs' must be a non-empty list of strings")
        max_tokens = body.get("max_tokens", DEFAULT_MAX_TOKENS)
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            return _error(400, "'max_tokens' must be a positive integer")
        return_output = body.get("return_output", False)
        if not isinstance(return_output, bool):
            return _error(400, "'return_output' must be a boolean")
        for name in TEXT_FIELDS:
            if name in body and not isinstance(body[name], str):
                return _error(400, f"'{name}' must be a string")
        schema = _schema(body.get("structured_output"))
        if isinstance(schema, Response):
            return schema
        with self.lock:
            self._serial += 1
            number = self._serial
        job_id = hashlib.sha256(f"mymagic-job-{number}".encode()).hexdigest()[:32]
        return MyMagicJob(
            job_id, model, question, inputs, max_tokens, return_output, schema, self.clock()
        )

    def _status_word(self, job: MyMagicJob) -> str:
        elapsed = self.clock() - job.created
        if self.step_seconds > 0 and elapsed < self.step_seconds:
            return "Waiting for instance" if job.cold else "Queued"
        if self.step_seconds > 0 and elapsed < 3 * self.step_seconds:
            return "Processing"
        return "Error" if job.failing else "Completed"

    def _status_body(self, job: MyMagicJob) -> dict[str, Any]:
        word = self._status_word(job)
        if word == "Error":
            return {"status": word, "error": _failure_message(job)}
        if word != "Completed":
            return {"status": word}
        body: dict[str, Any] = {"status": word, "task_id": job.id}
        if job.return_output:
            body["result"] = [self._output(job, text) for text in job.inputs]
        return body

    def _output(self, job: MyMagicJob, text: str) -> Any:
        prompt = f"{job.question}\n{text}"
        if job.schema is None:
            return completion_text(job.model, prompt, job.max_tokens)
        return structured_value(job.schema, job.model, prompt, "")


def structured_value(schema: dict[str, Any], model: str, prompt: str, path: str) -> Any:
    """A deterministic value of the schema's type (objects recurse into properties)."""
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    seed = int(hashlib.sha256(f"{model}\n{prompt}\n{path}".encode()).hexdigest()[:8], 16)
    if kind == "object" or (kind is None and isinstance(schema.get("properties"), dict)):
        properties = schema.get("properties") or {}
        return {
            name: structured_value(
                sub if isinstance(sub, dict) else {}, model, prompt, f"{path}.{name}"
            )
            for name, sub in properties.items()
        }
    if kind == "integer":
        return seed % 100
    if kind == "number":
        return (seed % 10000) / 100
    if kind == "boolean":
        return seed % 2 == 0
    if kind == "array":
        items = schema.get("items")
        return (
            [structured_value(items, model, prompt, f"{path}[0]")]
            if isinstance(items, dict)
            else []
        )
    if kind == "null":
        return None
    return completion_text(model, f"{prompt}\n{path}", 4).strip()


def _failure_message(job: MyMagicJob) -> str:
    failing = [i for i, text in enumerate(job.inputs) if "[[fail]]" in text]
    where = f"input {failing[0]}" if failing else "the question"
    return f"Inference failed on {where}: simulated failure"


def _schema(value: Any) -> dict[str, Any] | None | Response:
    if value is None:
        return None
    if not isinstance(value, str):
        return _error(400, "'structured_output' must be a JSON schema string")
    try:
        schema = json.loads(value)
    except ValueError:
        return _error(400, "'structured_output' is not valid JSON")
    if not isinstance(schema, dict):
        return _error(400, "'structured_output' must be a JSON schema object")
    return schema


def _error(status: int, message: str) -> Response:
    # The document's only error shape is the one job_status uses.
    return Response(status, {"status": "Error", "error": message})
