"""Bytez's model lifecycle and ``/model/run``, as :mod:`providers.bytez` describes them.

Time runs on ``clock`` (monotonic seconds) so tests can drive requests, loads
and expiry without sleeping; wall-clock timestamps in answers are derived from
it. Instances live in ``sim.instances`` and vanish once their expiration
period passes without a run, as on Bytez.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .base import (
    DEFAULT_TOKEN,
    Request,
    Response,
    Simulator,
    bad_request,
    completion_text,
    json_body,
)

WORDS_PER_CHUNK = 3


@dataclass
class Instance:
    model: str
    concurrency: int
    expiration: int
    loaded_at: float
    last_activity: float
    created: datetime
    inferences: int = 0
    modified: datetime | None = None


def iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def catalog_entry(i: int) -> dict[str, Any]:
    name = "openai-community/gpt2" if i == 0 else f"org-{i // 10}/model-{i}"
    ram = None if i % 7 == 6 else round(0.25 + (i * 37 % 100) / 10, 3)
    return {"name": name, "requiredRAM": ram, "benchmarked": i % 3 != 2}


class BytezSimulator(Simulator):
    name = "bytez"
    auth_scheme = "Key"

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        latency: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        model_count: int = 50,
        load_seconds: float = 0.5,
        request_seconds: float = 0.3,
        default_expiration: int = 1800,
        stream_chunk_delay: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.model_count = model_count
        self.load_seconds = load_seconds
        self.request_seconds = request_seconds
        self.default_expiration = default_expiration
        self.stream_chunk_delay = stream_chunk_delay
        self.clock = clock
        self.instances: dict[str, Instance] = {}
        self.job_requests: dict[str, float] = {}  # model -> clock() of its first /model/job
        super().__init__(token=token, latency=latency, host=host, port=port)

    def setup_routes(self) -> None:
        self.route("GET", "/model/list", self.list_models)
        self.route("POST", "/model/job", self.job)
        self.route("POST", "/model/load", self.load)
        self.route("POST", "/model/status", self.status)
        self.route("GET", "/model/instances", self.list_instances)
        self.route("POST", "/model/run", self.run)
        self.route("POST", "/model/delete", self.delete)

    # -- time ------------------------------------------------------------------

    def wall(self, at: float) -> datetime:
        """The wall-clock time of a ``clock()`` reading."""
        return datetime.now(UTC) + timedelta(seconds=at - self.clock())

    def expire(self) -> None:
        now = self.clock()
        with self.lock:
            for model, inst in list(self.instances.items()):
                if now >= inst.last_activity + inst.expiration:
                    del self.instances[model]

    def instance_body(self, inst: Instance) -> dict[str, Any]:
        running = self.clock() - inst.loaded_at >= self.load_seconds
        return {
            "model": inst.model,
            "status": "RUNNING" if running else "LOADING",
            "concurrency": inst.concurrency,
            "inferences": inst.inferences,
            "expirationPeriodSeconds": inst.expiration,
            "expirationPeriodMinutes": inst.expiration // 60,
            "expiresAt": iso(self.wall(inst.last_activity + inst.expiration)),
            "created": iso(inst.created),
            "modified": iso(inst.modified or inst.created),
        }

    # -- routes ----------------------------------------------------------------

    def list_models(self, request: Request) -> Response:
        return Response(200, [catalog_entry(i) for i in range(self.model_count)])

    def job(self, request: Request) -> Response:
        model = _model(json_body(request))
        now = self.clock()
        with self.lock:
            first = self.job_requests.get(model)
            if first is None:
                self.job_requests[model] = now
        if first is None:
            return Response(200, {"model": model, "success": True, "modified": iso(self.wall(now))})
        if now - first < self.request_seconds:
            return Response(
                200,
                {
                    "model": model,
                    "success": True,
                    "message": "Model is already queued",
                    "startTime": None,
                    "modified": iso(self.wall(now)),
                },
            )
        ready = self.wall(first + self.request_seconds)
        return Response(
            200,
            {
                "model": model,
                "success": True,
                "message": "Model available",
                "startTime": iso(self.wall(first)),
                "endTime": iso(ready),
                "modified": iso(ready),
            },
        )

    def load(self, request: Request) -> Response:
        body = json_body(request)
        model = _model(body)
        concurrency = _positive(body, "concurrency", 1)
        expiration = _positive(body, "expirationPeriodSeconds", self.default_expiration)
        self.expire()
        now = self.clock()
        with self.lock:
            inst = self.instances.get(model)
            if inst is None:
                wall = self.wall(now)
                inst = Instance(model, concurrency, expiration, now, now, wall)
                self.instances[model] = inst
            else:  # loading again keeps the instance and only refreshes its settings
                inst.concurrency, inst.expiration, inst.last_activity = concurrency, expiration, now
                inst.modified = self.wall(now)
        return Response(200, {"model": model, "status": "started", "concurrency": concurrency})

    def status(self, request: Request) -> Response:
        model = _model(json_body(request))
        self.expire()
        with self.lock:
            inst = self.instances.get(model)
            if inst is None:
                return Response(404, {"error": f"Model {model} is not loaded"})
            return Response(200, self.instance_body(inst))

    def list_instances(self, request: Request) -> Response:
        self.expire()
        with self.lock:
            return Response(200, [self.instance_body(inst) for inst in self.instances.values()])

    def run(self, request: Request) -> Response:
        body = json_body(request)
        model = _model(body)
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise bad_request("'prompt' must be a string")
        params = body.get("params") or {}
        if not isinstance(params, dict):
            raise bad_request("'params' must be an object")
        self.expire()
        now = self.clock()
        with self.lock:
            inst = self.instances.get(model)
            if inst is None or now - inst.loaded_at < self.load_seconds:
                error = f"Model {model} is not running; load it first"
                return Response(400, {"output": None, "error": error})
            inst.inferences += 1
            inst.last_activity = now
            inst.modified = self.wall(now)
        limit = params.get("max_new_tokens")
        text = completion_text(model, prompt, limit if isinstance(limit, int) else None)
        if body.get("stream"):
            return Response(
                200, stream=self._chunks(text), content_type="text/plain; charset=utf-8"
            )
        return Response(200, {"output": text, "error": None})

    def _chunks(self, text: str) -> Iterator[str]:
        words = text.split(" ")
        for start in range(0, len(words), WORDS_PER_CHUNK):
            if start and self.stream_chunk_delay:
                time.sleep(self.stream_chunk_delay)
            group = " ".join(words[start : start + WORDS_PER_CHUNK])
            yield group if start == 0 else " " + group

    def delete(self, request: Request) -> Response:
        model = _model(json_body(request))
        self.expire()
        with self.lock:
            if self.instances.pop(model, None) is None:
                return Response(404, {"error": f"Model {model} is not loaded"})
        return Response(200, {"model": model, "success": True, "status": "deleted"})


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required")
    return model


def _positive(body: dict[str, Any], key: str, default: int) -> int:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise bad_request(f"'{key}' must be a positive integer")
    return value
