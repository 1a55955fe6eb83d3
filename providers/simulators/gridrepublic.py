"""GridRepublic's ``/remotejobs/v2/jobs``, as :mod:`providers.gridrepublic` describes it.

Each input of a submit becomes one job: queued for ``step_seconds``, running
for twice that while its ``log`` grows towards the final text, then finished
(or failed, with an error line ending the log, when the prompt holds
``[[fail]]``). Status GETs take comma-separated ids.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from .base import Request, Response, Simulator, completion_text

APP = "gridrepublic:text-inference"
STATUS_PATTERN = "/remotejobs/v2/jobs/(?P<ids>[^/]+)"
FAIL_LINE = "ERROR: inference failed (simulated [[fail]])"


@dataclass
class GridJob:
    id: str
    tag: str
    prompt: str
    command_line: str
    created: float
    created_at: str

    @property
    def failing(self) -> bool:
        return "[[fail]]" in self.prompt

    @property
    def text(self) -> str:
        """What the log grows towards while running (a failing job stops half way)."""
        full = completion_text(self.tag, self.prompt)
        return full[: len(full) // 2] if self.failing else full


class GridRepublicSimulator(Simulator):
    name = "gridrepublic"

    def __init__(
        self,
        *,
        step_seconds: float = 1.0,
        clock: Callable[[], float] | None = None,
        **kwargs: Any,
    ) -> None:
        self.step_seconds = step_seconds
        self.clock = clock or time.monotonic
        self.jobs: dict[str, GridJob] = {}
        self._serial = 0
        super().__init__(**kwargs)

    def __enter__(self) -> GridRepublicSimulator:
        self.start()
        return self

    def setup_routes(self) -> None:
        self.route("POST", "/remotejobs/v2/jobs", self.create)
        self.route("GET", STATUS_PATTERN, self.status)

    # -- inspection for tests ------------------------------------------------

    def reset(self) -> None:
        """Forget jobs, faults and counters, so one running server can serve many tests."""
        with self.lock:
            self.jobs.clear()
            self.faults.clear()
            self.requests.clear()
            self.max_overlap.clear()
            self.submissions = self.overlaps = 0

    @property
    def status_requests(self) -> int:
        return self.count(f"GET {STATUS_PATTERN}")

    def status_of(self, job_id: str) -> str:
        with self.lock:
            job = self.jobs[job_id]
        return self._phase(job)[0]

    def running_ids(self) -> list[str]:
        with self.lock:
            jobs = list(self.jobs.values())
        return [job.id for job in jobs if self._phase(job)[0] == "running"]

    # -- routes ----------------------------------------------------------------

    def unauthorized(self) -> Response:
        return Response(401, {"success": False, "error": "Unauthorized"})

    def not_found(self, request: Request) -> Response:
        return _error(404, f"No route for {request.method} {request.path}")

    def create(self, request: Request) -> Response:
        try:
            body = request.json()
        except ValueError:
            return _error(400, "Invalid JSON")
        if not isinstance(body, dict):
            return _error(400, "Invalid JSON")
        if body.get("app") != APP:
            return _error(400, "Unknown app")
        tag = body.get("tag")
        if not isinstance(tag, str) or not tag.strip():
            return _error(400, "Missing tag")
        inputs = _inputs(body.get("commandLine"))
        if inputs is None:
            return _error(400, "Invalid input format")
        jobs = [self._new_job(tag, prompt, body["commandLine"]) for prompt in inputs]
        with self.lock:
            for job in jobs:
                self.jobs[job.id] = job
                self.submissions += 1
        return Response(200, {"success": True, "ids": [job.id for job in jobs]})

    def status(self, request: Request, ids: str) -> Response:
        wanted = [unquote(part) for part in ids.split(",") if part.strip()]
        entries: dict[str, Any] = {}
        known = 0
        for job_id in wanted:
            with self.track(job_id):
                with self.lock:
                    job = self.jobs.get(job_id)
                if job is None:
                    entries[job_id] = {"success": False, "error": "unknown job"}
                else:
                    entries[job_id] = self._entry(job)
                    known += 1
        if not known:
            return _error(404, "Job not found")
        return Response(200, {"success": True, "jobs": entries})

    # -- behaviour -------------------------------------------------------------

    def _new_job(self, tag: str, prompt: str, command_line: str) -> GridJob:
        with self.lock:
            self._serial += 1
            number = self._serial
        job_id = hashlib.sha256(f"gridrepublic-job-{number}".encode()).hexdigest()[:32]
        created_at = datetime.now(UTC).isoformat(timespec="seconds")
        return GridJob(job_id, tag, prompt, command_line, self.clock(), created_at)

    def _phase(self, job: GridJob) -> tuple[str, str, float]:
        """(status, vmStatus, seconds of running so far) at this moment."""
        step = self.step_seconds
        elapsed = self.clock() - job.created
        if step > 0 and elapsed < step:
            return "queued", "pending", 0.0
        if step > 0 and elapsed < 3 * step:
            return "running", "running", elapsed - step
        return ("failed" if job.failing else "finished"), "exited", 2 * step

    def _entry(self, job: GridJob) -> dict[str, Any]:
        status, vm_status, ran = self._phase(job)
        return {
            "vmStatus": vm_status,
            "states": {
                "default": {
                    "status": status,
                    "outputFiles": [],
                    "log": self._log(job, status, ran),
                    "commandLine": job.command_line,
                    "app": APP,
                }
            },
            "created": job.created_at,
            "copy": 0,
            "tag": job.tag,
            "runtime": int(ran),
        }

    def _log(self, job: GridJob, status: str, ran: float) -> str:
        text = job.text
        if status == "queued":
            return ""
        if status == "running":
            # A prefix proportional to the running time: every poll sees more.
            return text[: int(len(text) * ran / (2 * self.step_seconds))]
        return f"{text}\n{FAIL_LINE}" if status == "failed" else text


def _inputs(command_line: Any) -> list[str] | None:
    """The prompts of a ``commandLine``, or None when it is not the documented JSON."""
    if not isinstance(command_line, str):
        return None
    try:
        parsed = json.loads(command_line)
    except ValueError:
        return None
    inputs = parsed.get("inputs") if isinstance(parsed, dict) else None
    if not isinstance(inputs, list) or not inputs:
        return None
    if not all(isinstance(item, str) for item in inputs):
        return None
    return inputs


def _error(status: int, message: str) -> Response:
    return Response(status, {"success": False, "error": message})
