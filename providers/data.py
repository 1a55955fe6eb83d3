"""The small objects that cross the ``providers`` boundary: what a job asks
for, what a call or a poll found, and what went wrong. Plain data, no HTTP."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class RemoteState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (RemoteState.COMPLETED, RemoteState.FAILED)


class ErrorKind(StrEnum):
    AUTH = "auth"  # 401/403: permanent until the credential changes
    RATE_LIMIT = "rate_limit"  # 429: wait Retry-After, then retry
    SERVER = "server"  # 5xx
    TIMEOUT = "timeout"  # read/write/pool timeout: the request may have arrived
    CONNECTION = "connection"  # connect error/timeout: the request surely never arrived
    PROTOCOL = "protocol"  # a body that is not what the document promises
    REJECTED = "rejected"  # 4xx other than auth/429: the provider refused the input
    NOT_FOUND = "not_found"  # 404 / unknown remote id / model not found
    INVALID_SPEC = "invalid_spec"  # refused before any request: the provider cannot express it


@dataclass(frozen=True)
class JobSpec:
    """What the user asked for, in normalized form: the job fields of the
    dashboard's API, whatever the provider."""

    model: str
    prompts: Sequence[str]
    question: str = ""
    system_prompt: str = ""
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    output_schema: dict[str, Any] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    stream: bool = False

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        names = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in names}
        values["prompts"] = list(values.get("prompts") or [])
        values["options"] = dict(values.get("options") or {})
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "prompts": list(self.prompts),
            "question": self.question,
            "system_prompt": self.system_prompt,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "repetition_penalty": self.repetition_penalty,
            "output_schema": self.output_schema,
            "options": dict(self.options),
            "stream": self.stream,
        }


@dataclass(frozen=True)
class TokenUsage:
    """Tokens one prompt used, as the provider reported them (None: not reported)."""

    tokens_in: int | None = None
    tokens_out: int | None = None

    @classmethod
    def from_counts(cls, tokens_in: Any, tokens_out: Any) -> TokenUsage | None:
        """Usage from two reported counts; None when neither is a count."""
        usage = cls(_count(tokens_in), _count(tokens_out))
        return None if usage == cls() else usage


@dataclass(frozen=True)
class ItemResult:
    """One prompt's output from a sync call, with what the provider said it cost."""

    output: Any
    tokens_in: int | None = None
    tokens_out: int | None = None
    #: Wall time of the call that produced it (shared by every prompt of a batched call).
    latency_ms: int | None = None


@dataclass(frozen=True)
class RateInfo:
    """What a provider's rate-limit headers said about the credential's budget
    (``x-ratelimit-remaining-*``, ``x-ratelimit-reset-*``, ``retry-after``):
    calls and tokens left, and seconds until each budget is whole again.
    None where a header was missing or made no sense."""

    remaining_requests: int | None = None
    remaining_tokens: int | None = None
    reset_requests: float | None = None
    reset_tokens: float | None = None
    retry_after: float | None = None

    def wait(self) -> float:
        """Seconds to hold every call on the credential: until the reset of a
        spent budget (or Retry-After); 0 while there is budget left."""
        waits = [self.retry_after or 0.0]
        if self.remaining_requests == 0:
            waits.append(self.reset_requests or 0.0)
        if self.remaining_tokens == 0:
            waits.append(self.reset_tokens or 0.0)
        return max(waits)


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


@dataclass(frozen=True)
class RemoteStatus:
    """The state of one remote job, as one poll saw it."""

    remote_id: str
    state: RemoteState
    provider_status: str
    #: One output per prompt of the unit (text or object) once completed.
    outputs: list[Any] | None = None
    #: The provider's whole log so far (the dashboard stores only what is new).
    log: str | None = None
    error: str = ""
    #: True while the provider reports a model cold start ("Waiting for instance").
    cold_start: bool = False
    #: Anything the provider returned that did not fit ``outputs``, kept whole.
    raw_result: Any = None
    #: Token usage per output (same order), where the provider reports it.
    usage: list[TokenUsage | None] | None = None

    def item_results(self) -> list[ItemResult] | None:
        """The outputs with their usage, shaped like a sync call's :meth:`Provider.run_items`."""
        if self.outputs is None:
            return None
        usage = list(self.usage or ())
        usage += [None] * (len(self.outputs) - len(usage))
        return [
            ItemResult(output, u.tokens_in if u else None, u.tokens_out if u else None)
            for output, u in zip(self.outputs, usage, strict=False)
        ]


class InstanceState(StrEnum):
    """Normalized model-instance states: requested -> loading -> running ->
    stopped (shut down by a user), expired (the expiration period ran out) or failed."""

    REQUESTED = "requested"
    LOADING = "loading"
    RUNNING = "running"
    STOPPED = "stopped"
    EXPIRED = "expired"
    FAILED = "failed"


@dataclass(frozen=True)
class ModelInfo:
    """One entry of a provider's model catalog."""

    name: str
    required_ram_gb: float | None = None
    benchmarked: bool | None = None


@dataclass(frozen=True)
class ConnectionCheck:
    """What a "test connection" found: whether the credential works, in words."""

    ok: bool
    #: What was tried and what the provider said (redacted).
    detail: str
    latency_ms: int
    #: True when the check may have cost money (a billed call the provider took).
    billed: bool
    #: True when the provider refused the credential (401/403).
    auth_failed: bool


@dataclass(frozen=True)
class RemoteInstance:
    """A loaded (or loading, or requested) model instance as the provider reports it."""

    model: str
    state: InstanceState
    provider_status: str
    message: str = ""
    concurrency: int | None = None
    inferences: int | None = None
    expiration_seconds: int | None = None
    expires_at: datetime | None = None
    created_at: datetime | None = None


class ProviderError(Exception):
    """A failed call, as data: what went wrong and whether retrying makes sense.

    ``created_nothing`` is True only when the request surely created nothing at
    the provider (connection refused, 429, a refused request): the only case in
    which a non-idempotent submit may be sent again.
    """

    def __init__(
        self,
        message: str,
        *,
        kind: ErrorKind,
        status_code: int | None = None,
        retry_after: float | None = None,
        detail: str = "",
        rate: RateInfo | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        #: The provider's own words, when it gave any.
        self.detail = detail
        self.kind = kind
        self.status_code = status_code
        self.retry_after = retry_after
        #: The rate-limit headers of the answer, when it had any.
        self.rate = rate

    @property
    def retryable(self) -> bool:
        return self.kind in (
            ErrorKind.RATE_LIMIT,
            ErrorKind.SERVER,
            ErrorKind.TIMEOUT,
            ErrorKind.CONNECTION,
        )

    @property
    def created_nothing(self) -> bool:
        return self.kind in (
            ErrorKind.CONNECTION,
            ErrorKind.RATE_LIMIT,
            ErrorKind.AUTH,
            ErrorKind.REJECTED,
            ErrorKind.INVALID_SPEC,
            ErrorKind.NOT_FOUND,
        )

    def __str__(self) -> str:
        return self.message


class SpecError(ProviderError):
    """The job cannot be expressed for this provider; refused before any request."""

    def __init__(self, message: str, field_name: str | None = None) -> None:
        super().__init__(message, kind=ErrorKind.INVALID_SPEC)
        self.field_name = field_name
