"""The provider interface: plain Python over httpx, no Django.

An adapter turns "run these prompts" / "submit this job" / "what is the state
of these remote jobs" into HTTP calls and back into the small dataclasses of
:mod:`providers.data` (importable from here too). Provider words never leave an adapter except as ``provider_status``;
what the dashboard sees is a normalized :class:`RemoteState`.

Two kinds of provider:

* ``sync``: one HTTP call returns the outputs (Together, Lamini, Bytez runs,
  OpenAI-compatible servers). The dashboard calls :meth:`Provider.run` (or
  :meth:`Provider.run_items`, with token usage) once per *unit* of prompts.
* ``async``: a non-idempotent POST creates a remote job that is polled later
  (MyMagic, GridRepublic). The dashboard calls :meth:`Provider.submit` once per
  unit and :meth:`Provider.poll` for many remote ids at once.

A unit is a group of prompt indexes that one call or one remote job covers;
:meth:`Provider.units` decides the grouping (one per prompt for Together,
the whole list for MyMagic and Lamini).
"""

from __future__ import annotations

import email.utils
import functools
import inspect
import json
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any, ClassVar, Literal, TypeVar, cast

import httpx

from .batch import BatchResult, BatchState
from .data import (
    ConnectionCheck,
    ErrorKind,
    InstanceState,
    ItemResult,
    JobSpec,
    ModelInfo,
    ProviderError,
    RateInfo,
    RemoteInstance,
    RemoteState,
    RemoteStatus,
    SpecError,
    TokenUsage,
)
from .redaction import redact, secret_forms

__all__ = [
    "CONNECTION_CHECK_PROMPT",
    "DEFAULT_TIMEOUT",
    "ENTRY_POINTS",
    "USER_AGENT",
    "ChunkCallback",
    "ConnectionCheck",
    "ErrorKind",
    "InstanceState",
    "RemoteInstance",
    "ItemResult",
    "JobSpec",
    "ModelInfo",
    "Provider",
    "ProviderError",
    "RateInfo",
    "RemoteState",
    "RemoteStatus",
    "SpecError",
    "TokenUsage",
    "parse_duration",
    "parse_rate_headers",
    "parse_retry_after",
    "redacted",
    "shared_ssl_context",
    "shorten",
]

USER_AGENT = "llm-jobs-dashboard/0.1 (+httpx)"

#: httpx timeouts stay well below the worker task's timeout, so a stuck provider
#: ends in a TIMEOUT error the worker records, never in a killed task.
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
#: Connections of one thread's client: it makes one call at a time (a second
#: one only while a streamed answer is open), and keeps one alive between calls.
THREAD_LIMITS = httpx.Limits(max_connections=4, max_keepalive_connections=1)
#: The largest answer read from a provider (decoded, so a compressed body counts
#: at its full size), unless the adapter is given another limit.
DEFAULT_MAX_RESPONSE_BYTES = 32 * 1024 * 1024


#: What a billed connection check asks, with a one-token limit where the provider has one.
CONNECTION_CHECK_PROMPT = "Reply with OK."

#: Failures after which a billed call may still have been carried out.
_MAY_HAVE_RUN = frozenset({ErrorKind.TIMEOUT, ErrorKind.SERVER, ErrorKind.PROTOCOL})


ChunkCallback = Callable[[int, str], None]
"""Called with (prompt index, text chunk) as streamed output arrives."""

#: The methods the dashboard calls. Every adapter's own version of one of these
#: is decorated with :func:`redacted` (a test checks it).
ENTRY_POINTS = (
    "check_connection",
    "run",
    "run_items",
    "submit",
    "poll",
    "cancel",
    "list_models",
    "request_model",
    "load_model",
    "instance_status",
    "list_instances",
    "shutdown_model",
    "batch_available",
    "batch_upload",
    "batch_create",
    "batch_find",
    "batch_get",
    "batch_cancel",
    "batch_results",
)

F = TypeVar("F", bound=Callable[..., Any])


def redacted(method: F) -> F:
    """An adapter entry point whose errors and results leave with every
    credential scrubbed from the provider's text (see :meth:`Provider.redact`).
    Translation functions raise ProviderErrors that quote the provider as it
    answered; this is where that text is cleaned, for every path at once."""

    if inspect.isgeneratorfunction(method):
        # A stream of results (a batch's result file): each one, and an error
        # raised half way, are scrubbed as they leave.
        @functools.wraps(method)
        def stream(self: Provider, *args: Any, **kwargs: Any) -> Any:
            try:
                for result in method(self, *args, **kwargs):
                    yield self.redact_result(result)
            except ProviderError as exc:
                self.redact_error(exc)
                raise

        stream.redacts = True  # type: ignore[attr-defined]
        return cast(F, stream)

    @functools.wraps(method)
    def wrapper(self: Provider, *args: Any, **kwargs: Any) -> Any:
        try:
            result = method(self, *args, **kwargs)
        except ProviderError as exc:
            self.redact_error(exc)
            raise
        return self.redact_result(result)

    wrapper.redacts = True  # type: ignore[attr-defined]
    return cast(F, wrapper)


class Provider:
    """Base class of every adapter. Subclasses set the class attributes and
    implement either :meth:`run` (sync) or :meth:`submit` + :meth:`poll` (async)."""

    slug: ClassVar[str]
    label: ClassVar[str]
    default_base_url: ClassVar[str]
    kind: ClassVar[Literal["sync", "async"]]
    #: How the secret goes in the Authorization header ("Bearer", "Key").
    auth_scheme: ClassVar[str] = "Bearer"
    #: Remote ids per status request (GridRepublic batches; others poll one by one).
    poll_batch_size: ClassVar[int] = 1
    #: Seconds between status polls of a running remote job, before backoff.
    poll_interval: ClassVar[float] = 1.0
    #: Models the provider's documents name (form suggestions); empty means free text.
    documented_models: ClassVar[tuple[str, ...]] = ()
    #: True when ``documented_models`` is the provider's whole documented list,
    #: so a model outside it is probably a typo; False when the names are examples.
    documents_model_list: ClassVar[bool] = False
    #: True when :meth:`list_models` asks the provider (a catalog worth caching).
    lists_models: ClassVar[bool] = False
    #: Spec fields this provider uses (the new-job form shows only these).
    supported_fields: ClassVar[frozenset[str]] = frozenset()
    #: True when output can be streamed as it is generated (Bytez ``stream: true``).
    supports_stream: ClassVar[bool] = False
    #: True when the provider has a model lifecycle (Bytez).
    has_instances: ClassVar[bool] = False
    #: Provider-specific option names (credential or job ``options``).
    option_names: ClassVar[tuple[str, ...]] = ()
    #: True when :meth:`check_connection` makes a call the provider bills (the
    #: UI asks the user to confirm first); False when it uses a free call.
    connection_check_billed: ClassVar[bool] = True
    #: The model a billed check asks for when the caller names none.
    connection_check_model: ClassVar[str] = ""

    def __init__(
        self,
        *,
        secret: str,
        base_url: str | None = None,
        options: dict[str, Any] | None = None,
        transport: httpx.BaseTransport | None = None,
        transport_factory: Callable[[], httpx.BaseTransport] | None = None,
        timeout: httpx.Timeout | float | None = None,
        clock: Callable[[], float] | None = None,
        max_response_bytes: int | None = None,
    ) -> None:
        """``transport`` is shared by every thread's client (tests pass an
        ``httpx.MockTransport``); ``transport_factory`` makes one per client,
        so each thread has a connection pool of its own (the dashboard's
        guarded transport). With neither, httpx's own transport.
        ``max_response_bytes`` caps every answer read (a larger one fails
        the call); DEFAULT_MAX_RESPONSE_BYTES without it."""
        self.base_url = (base_url or self.default_base_url).rstrip("/")
        self.options = dict(options or {})
        self._secret = secret
        self._secret_forms = secret_forms(secret)
        #: Monotonic seconds, for latencies (tests pass a fake).
        self.clock = clock or time.monotonic
        self._transport = transport
        self._transport_factory = transport_factory
        self._timeout = timeout if timeout is not None else DEFAULT_TIMEOUT
        self.max_response_bytes = max_response_bytes or DEFAULT_MAX_RESPONSE_BYTES
        self._clients: list[httpx.Client] = []
        self._clients_lock = threading.Lock()
        self._local = threading.local()
        self._local.client = self._new_client()

    @property
    def client(self) -> httpx.Client:
        """The calling thread's HTTP client. Every thread that calls the
        provider (the sync runner's pool) gets a client and a connection pool
        of its own: httpcore's pool walks every connection it holds on each
        request and each response, under one lock, so one pool shared by 32
        threads spends more of the GIL than the calls do (10,000 calls on one
        shared client: 22 s of CPU; on a client per thread: 16 s)."""
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._new_client()
        return client

    def _new_client(self) -> httpx.Client:
        transport = self._transport
        if transport is None and self._transport_factory is not None:
            transport = self._transport_factory()
        client = httpx.Client(
            base_url=self.base_url,
            headers={
                "Authorization": f"{self.auth_scheme} {self._secret}",
                "User-Agent": USER_AGENT,
                "Accept": "application/json",
            },
            timeout=self._timeout,
            transport=transport,
            follow_redirects=False,
            verify=shared_ssl_context(),
            # One thread makes one call at a time: a connection, kept alive.
            limits=THREAD_LIMITS,
        )
        with self._clients_lock:
            self._clients.append(client)
        return client

    def __repr__(self) -> str:  # never show the secret
        return f"<{type(self).__name__} {self.base_url}>"

    def close(self) -> None:
        with self._clients_lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()

    def __enter__(self) -> Provider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what every adapter may override ---------------------------------

    def validate(self, spec: JobSpec) -> None:
        """Raise :class:`SpecError` if this provider cannot express ``spec``."""
        if not spec.model:
            raise SpecError("A model is required.", "model")
        if not spec.prompts:
            raise SpecError("At least one prompt is required.", "prompts")

    def units(self, spec: JobSpec) -> list[list[int]]:
        """Group prompt indexes into calls (sync) or remote jobs (async)."""
        return [[i] for i in range(len(spec.prompts))]

    def run(
        self, spec: JobSpec, indexes: list[int], on_chunk: ChunkCallback | None = None
    ) -> list[Any]:
        """Sync providers: run one unit, return one output per index."""
        raise NotImplementedError

    def run_items(
        self, spec: JobSpec, indexes: list[int], on_chunk: ChunkCallback | None = None
    ) -> list[ItemResult]:
        """Sync providers: :meth:`run`, with each output's token usage where the
        provider reports it (adapters that do override this) and the call's latency."""
        started = self.clock()
        outputs = self.run(spec, indexes, on_chunk)
        latency_ms = self._elapsed_ms(started)
        return [ItemResult(output, latency_ms=latency_ms) for output in outputs]

    def submit(self, spec: JobSpec, indexes: list[int]) -> str:
        """Async providers: create one remote job for the unit, return its id."""
        raise NotImplementedError

    def poll(self, remote_ids: list[str]) -> dict[str, RemoteStatus | ProviderError]:
        """Async providers: the state of each remote id. One bad id gives a
        ProviderError in its slot and never stalls the others."""
        raise NotImplementedError

    # -- test connection ------------------------------------------------------

    def check_connection(self, model: str | None = None) -> ConnectionCheck:
        """Try the credential with the cheapest call the provider documents.
        Never raises a ProviderError: what went wrong is in the answer.
        ``model`` is used only by billed checks that must name one."""
        started = self.clock()
        try:
            detail = self.probe_connection(model or self.connection_check_model)
        except ProviderError as exc:
            self.redact_error(exc)
            return ConnectionCheck(
                ok=False,
                detail=exc.message,
                latency_ms=self._elapsed_ms(started),
                billed=self.connection_check_billed and exc.kind in _MAY_HAVE_RUN,
                auth_failed=exc.kind is ErrorKind.AUTH,
            )
        return ConnectionCheck(
            ok=True,
            detail=self.redact(detail),
            latency_ms=self._elapsed_ms(started),
            billed=self.connection_check_billed,
            auth_failed=False,
        )

    def probe_connection(self, model: str) -> str:
        """Make the check's call; say what succeeded, or raise ProviderError."""
        raise NotImplementedError

    def _elapsed_ms(self, started: float) -> int:
        return max(0, round((self.clock() - started) * 1000))

    # -- models, and their lifecycle (providers with ``has_instances``) ----------

    def list_models(self) -> list[ModelInfo]:
        """The provider's model catalog: asked of the provider when
        ``lists_models``, else the models its documents name."""
        return [ModelInfo(name) for name in self.documented_models]

    @classmethod
    def model_is_documented(cls, name: str) -> bool | None:
        """Whether the provider's documented model list holds ``name``; None when
        the provider documents no list (any name may be right)."""
        if not cls.documents_model_list:
            return None
        return name.strip() in cls.documented_models

    def request_model(self, model: str) -> RemoteInstance:
        """Ask the provider to make a model available (state REQUESTED until it is)."""
        raise NotImplementedError

    def load_model(
        self, model: str, *, concurrency: int = 1, expiration_seconds: int | None = None
    ) -> RemoteInstance:
        raise NotImplementedError

    def instance_status(self, model: str) -> RemoteInstance:
        """Raises ProviderError(kind=NOT_FOUND) when no instance of the model runs."""
        raise NotImplementedError

    def list_instances(self) -> list[RemoteInstance]:
        raise NotImplementedError

    def shutdown_model(self, model: str) -> None:
        raise NotImplementedError

    # -- helpers for adapters -----------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send one request; transport failures, error statuses and an answer
        larger than ``max_response_bytes`` become ProviderError."""
        try:
            with self.client.stream(method, path, **kwargs) as response:
                self.read(response)
        except httpx.HTTPError as exc:
            raise self.transport_error(exc, method, path) from None
        self.raise_for_status(response)
        return response

    def read(self, response: httpx.Response) -> bytes:
        """The whole body of a streamed ``response``, read only up to
        ``max_response_bytes``: a larger answer is a ProviderError, and what
        came of it is dropped. Afterwards the response reads as usual
        (``.json()``, ``.text``)."""
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > self.max_response_bytes:
                raise self.too_large()
            chunks.append(chunk)
        # Where httpx's own Response.read() keeps the body it read.
        response._content = b"".join(chunks)
        return response._content

    def capped(self, pieces: Iterable[str]) -> Iterator[str]:
        """Streamed text (``response.iter_text()``, ``iter_lines()``), refused
        once it passes ``max_response_bytes`` (counted in characters)."""
        size = 0
        for piece in pieces:
            size += len(piece)
            if size > self.max_response_bytes:
                raise self.too_large()
            yield piece

    def too_large(self) -> ProviderError:
        limit = self.max_response_bytes / (1024 * 1024)
        return ProviderError(
            f"{self.label} sent an answer larger than {limit:g} MB; it was not read.",
            kind=ErrorKind.PROTOCOL,
        )

    def transport_error(self, exc: httpx.HTTPError, method: str, path: str) -> ProviderError:
        """A transport failure as a ProviderError: a connect failure surely sent
        nothing (CONNECTION); anything later may have reached the provider (TIMEOUT)."""
        if isinstance(exc, httpx.ConnectError):
            return ProviderError(
                f"Could not connect to {self.label} at {self.base_url}: {self._reason(exc)}",
                kind=ErrorKind.CONNECTION,
            )
        if isinstance(exc, httpx.ConnectTimeout):
            return ProviderError(
                f"Timed out connecting to {self.label} at {self.base_url}",
                kind=ErrorKind.CONNECTION,
            )
        if isinstance(exc, httpx.TimeoutException):
            return ProviderError(
                f"{self.label} did not answer in time ({method} {path})", kind=ErrorKind.TIMEOUT
            )
        return ProviderError(
            f"Network error talking to {self.label}: {self._reason(exc)}", kind=ErrorKind.TIMEOUT
        )

    def take_rate(self) -> RateInfo | None:
        """The rate-limit headers of this thread's latest answer (once)."""
        rate = getattr(self._local, "rate", None)
        self._local.rate = None
        return rate

    def raise_for_status(self, response: httpx.Response) -> None:
        status = response.status_code
        rate = parse_rate_headers(response.headers)
        self._local.rate = rate
        if status < 400:
            return
        detail = self.redact(self.error_detail(response))
        suffix = f": {detail}" if detail else ""
        common = {"status_code": status, "detail": detail}
        if status in (401, 403):
            raise ProviderError(
                f"{self.label} refused the credential (authentication failed, HTTP {status}){suffix}",
                kind=ErrorKind.AUTH,
                **common,
            )
        if status == 429:
            raise ProviderError(
                f"{self.label} is rate limiting requests (HTTP 429){suffix}",
                kind=ErrorKind.RATE_LIMIT,
                **common,
                retry_after=rate.retry_after if rate else None,
                rate=rate,
            )
        if status == 404:
            raise ProviderError(
                f"{self.label} answered 404 Not Found{suffix}",
                kind=ErrorKind.NOT_FOUND,
                **common,
            )
        if status >= 500:
            raise ProviderError(
                f"{self.label} had a server error (HTTP {status}){suffix}",
                kind=ErrorKind.SERVER,
                **common,
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        raise ProviderError(
            f"{self.label} rejected the request (HTTP {status}){suffix}",
            kind=ErrorKind.REJECTED,
            **common,
        )

    def error_detail(self, response: httpx.Response) -> str:
        """A short readable reason from an error body, whatever its shape, redacted."""
        try:
            body = response.json()
        except ValueError:
            text = response.text.strip()
            return self.readable(text) if text and "<html" not in text[:200].lower() else ""
        if isinstance(body, dict):
            for key in ("error", "detail", "message", "msg"):
                value = body.get(key)
                if isinstance(value, dict):
                    value = value.get("message") or json.dumps(value)
                if value:
                    return self.readable(str(value))
        return self.readable(json.dumps(body))

    def json(self, response: httpx.Response, expect: type | tuple[type, ...] = dict) -> Any:
        """The body as JSON of the promised type, or a PROTOCOL ProviderError."""
        try:
            body = response.json()
        except ValueError:
            raise ProviderError(
                f"{self.label} sent a body that is not JSON: {self.readable(response.text, 120)!r}",
                kind=ErrorKind.PROTOCOL,
                status_code=response.status_code,
            ) from None
        if not isinstance(body, expect):
            raise ProviderError(
                f"{self.label} sent JSON of an unexpected shape ({type(body).__name__})",
                kind=ErrorKind.PROTOCOL,
                status_code=response.status_code,
            )
        return body

    # -- redaction: provider text never carries the credential out ----------------

    def redact(self, text: str) -> str:
        """``text`` without this credential's secret (as sent, JSON-escaped,
        URL-encoded or base64-encoded, or cut short at the end), without any
        ``Authorization`` header value and without ``api_key``/``token``-like
        fields. The one function every provider text goes through."""
        return redact(text, self._secret_forms)

    def readable(self, text: str, limit: int = 300) -> str:
        """Provider text for a message: redacted first, then shortened (so no
        cut can leave part of a secret behind)."""
        return shorten(self.redact(text), limit)

    def redact_error(self, exc: ProviderError) -> ProviderError:
        """Scrub ``exc`` in place (message, detail, and the args its repr shows)."""
        exc.message = self.redact(exc.message)
        exc.detail = self.redact(exc.detail)
        exc.args = (exc.message,)
        return exc

    def redact_result(self, value: Any) -> Any:
        """An entry point's answer with the provider's own words scrubbed: error
        slots, a failed job's error and log, an instance's message. Outputs are
        the model's answers and stay as they are."""
        if isinstance(value, ProviderError):
            return self.redact_error(value)
        if isinstance(value, RemoteStatus):
            log = None if value.log is None else self.redact(value.log)
            return replace(value, error=self.redact(value.error), log=log)
        if isinstance(value, RemoteInstance):
            return replace(value, message=self.redact(value.message))
        if isinstance(value, BatchResult):
            return replace(value, code=self.redact(value.code), message=self.redact(value.message))
        if isinstance(value, BatchState):
            return replace(value, errors=tuple(self.redact(error) for error in value.errors))
        if isinstance(value, dict):
            return {key: self.redact_result(item) for key, item in value.items()}
        if isinstance(value, list) and any(
            isinstance(item, ProviderError | RemoteStatus | RemoteInstance) for item in value
        ):
            return [self.redact_result(item) for item in value]
        return value

    def _reason(self, exc: Exception) -> str:
        return self.readable(str(exc) or type(exc).__name__, 200)


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """One verifying TLS context for every client: building one loads the CA
    bundle (tens of milliseconds of CPU), too much to pay for every job."""
    return httpx.create_ssl_context()


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_duration(value: str | None) -> float | None:
    """A reset header as seconds: "1s", "6m0s", "20ms", "1h2m3.5s" or a bare
    number of seconds. None for anything else (never an exception)."""
    if not value:
        return None
    value = value.strip().lower()
    try:
        seconds = float(value)
    except ValueError:
        parts = _DURATION_PART.findall(value)
        if not parts or "".join(n + u for n, u in parts) != value:
            return None
        scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
        seconds = sum(float(n) * scale[u] for n, u in parts)
    if seconds != seconds or seconds < 0 or seconds > 86400:  # NaN, negative, absurd
        return None
    return seconds


def _header_count(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        count = int(value.strip())
    except ValueError:
        return None
    return count if count >= 0 else None


def parse_rate_headers(headers: Any, *, now: float | None = None) -> RateInfo | None:
    """The rate-limit headers of an answer, or None when it has none that make
    sense. A header with a nonsense value is ignored."""
    try:
        retry_after = parse_retry_after(headers.get("retry-after"), now=now)
    except (OverflowError, ValueError):
        retry_after = None
    if retry_after is not None and not 0 <= retry_after <= 86400:
        retry_after = None  # inf, NaN: nonsense
    rate = RateInfo(
        remaining_requests=_header_count(headers.get("x-ratelimit-remaining-requests")),
        remaining_tokens=_header_count(headers.get("x-ratelimit-remaining-tokens")),
        reset_requests=parse_duration(headers.get("x-ratelimit-reset-requests")),
        reset_tokens=parse_duration(headers.get("x-ratelimit-reset-tokens")),
        retry_after=retry_after,
    )
    return None if rate == RateInfo() else rate


def shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
