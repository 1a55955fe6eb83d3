"""Redaction where provider text enters: the pure function as a table, then every
adapter against a provider that echoes the secret and the Authorization header in
its error bodies and in a failed job's error and log."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
import pytest

from providers import PROVIDERS, get_provider_class
from providers.base import (
    ENTRY_POINTS,
    ErrorKind,
    JobSpec,
    Provider,
    ProviderError,
    RemoteState,
    RemoteStatus,
)
from providers.redaction import REDACTED, redact, secret_forms

SECRET = "sk-live/abc+123=XYZ_9"
Handler = Callable[[httpx.Request], httpx.Response]


# -- the pure function ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"bad key {SECRET}!", f"bad key {REDACTED}!"),
        (f'{{"key": {json.dumps(SECRET)}}}', f'{{"key": "{REDACTED}"}}'),
        (f"url ?k={quote(SECRET, safe='')}", f"url ?k={REDACTED}"),
        (f"form k={quote_plus(SECRET)}", f"form k={REDACTED}"),
        (f"b64 {base64.b64encode(SECRET.encode()).decode()}", f"b64 {REDACTED}"),
        (f"b64url {base64.urlsafe_b64encode(SECRET.encode()).decode()}", f"b64url {REDACTED}"),
        # cut short by a shortened message or a log still being written
        (f"said: {SECRET[:9]}…", f"said: {REDACTED}…"),
        (f"(said: {SECRET[:7]}…)", f"(said: {REDACTED}…)"),
        (f"log so far: {SECRET[:-1]}", f"log so far: {REDACTED}"),
        ("log ends with sk-l", "log ends with sk-l"),  # too short to be a cut secret
        # header values and secret-like fields, whatever the secret
        ("Authorization: Bearer other-0123456", f"Authorization: Bearer {REDACTED}"),
        ("{'Authorization': 'Key abc'}", f"{{'Authorization': 'Key {REDACTED}'}}"),
        ('"authorization":"Basic dXNlcjpwYXNz"', f'"authorization":"Basic {REDACTED}"'),
        ("sent Bearer zz9zz9zz9", f"sent Bearer {REDACTED}"),
        ("sent Key abc12345678", f"sent Key {REDACTED}"),
        (
            '{"api_key": "a b", "apiKey": \'x\', "access_token": 7, "max_tokens": 5}',
            f'{{"api_key": "{REDACTED}", "apiKey": \'{REDACTED}\', '
            f'"access_token": {REDACTED}, "max_tokens": 5}}',
        ),
        ("x-api-key: abc; token=t&q=1", f"x-api-key: {REDACTED}; token={REDACTED}&q=1"),
        ("client_secret = s3", f"client_secret = {REDACTED}"),
        # ordinary text stays as it is
        ("Key points: prompt_tokens=3, completion_tokens: 4", None),
        ("authorization failed (HTTP 401)", None),
        ("The API key provided is invalid", None),
        ("", None),
    ],
)
def test_redact(text: str, expected: str | None) -> None:
    assert redact(text, secret_forms(SECRET)) == (text if expected is None else expected)


def test_redact_is_idempotent() -> None:
    forms = secret_forms(SECRET)
    once = redact(f"Authorization: Bearer {SECRET} token={SECRET}", forms)
    assert redact(once, forms) == once


@pytest.mark.parametrize("secret", ["", "abc"])
def test_short_secrets_are_not_searched_for(secret: str) -> None:
    assert secret_forms(secret) == ()
    assert redact("abc abc", secret_forms(secret)) == "abc abc"


# -- every adapter, through its entry points ------------------------------------


def leaked(text: str) -> list[str]:
    """The forms of the secret (or of the header carrying it) found in ``text``."""
    needles = [*secret_forms(SECRET), SECRET[:8]]
    return [needle for needle in needles if needle in text]


def assert_clean_error(exc: ProviderError) -> None:
    for text in (exc.message, exc.detail, str(exc), repr(exc), *map(str, exc.args)):
        assert not leaked(text), text


def assert_clean_status(status: RemoteStatus) -> None:
    assert status.state is RemoteState.FAILED
    for text in (status.error, status.log or "", repr(status)):
        assert not leaked(text), text
    assert REDACTED in status.error


def echo(request: httpx.Request) -> str:
    """What a careless provider says back: the header as sent, the secret in a
    URL and in base64, and the body it was given."""
    header = request.headers.get("authorization") or request.headers["x-api-key"]
    b64 = base64.b64encode(SECRET.encode()).decode()
    return (
        f"invalid credential {header!r} (Authorization: {header}); "
        f"see https://x.test/?api_key={quote(SECRET, safe='')} {b64} "
        f"body={request.content.decode()[:200]}"
    )


def provider(slug: str, handler: Handler) -> Provider:
    cls = get_provider_class(slug)
    return cls(secret=SECRET, base_url="https://p.test", transport=httpx.MockTransport(handler))


def spec(slug: str, **kwargs: Any) -> JobSpec:
    extra = {"question": "Q?"} if slug == "mymagic" else {}
    return JobSpec(**{"model": "m", "prompts": ["p"], **extra, **kwargs})


def call(slug: str, handler: Handler, **kwargs: Any) -> Any:
    """The unit's call for this provider: run (sync) or submit (async)."""
    p = provider(slug, handler)
    s = spec(slug, **kwargs)
    if p.kind == "sync":
        return p.run(s, [0])
    return p.submit(s, [0])


def error_bodies(request: httpx.Request) -> list[httpx.Response]:
    text = echo(request)
    return [
        httpx.Response(401, json={"error": text}),
        httpx.Response(403, json={"detail": text}),
        httpx.Response(400, json={"error": {"message": text, "type": "invalid"}}),
        httpx.Response(422, json={"detail": [{"loc": ["body", "prompt"], "msg": text}]}),
        httpx.Response(429, text=text, headers={"Retry-After": "1"}),
        httpx.Response(500, json={"message": text, "headers": dict(request.headers)}),
        httpx.Response(594, json={"detail": text}),
        httpx.Response(200, text=f"not json: {text}"),
        httpx.Response(200, json={"status": "Error", "error": text, "success": False}),
        httpx.Response(200, json={"unexpected": text, "echo": dict(request.headers)}),
        httpx.Response(200, json=[text]),
    ]


@pytest.mark.parametrize("case", range(11))
@pytest.mark.parametrize("slug", list(PROVIDERS))
def test_unit_call_errors_never_carry_the_secret(slug: str, case: int) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return error_bodies(request)[case]

    try:
        result = call(slug, handler)
    except ProviderError as exc:
        assert_clean_error(exc)
        if case in (0, 2, 5):  # the provider's words are quoted, not dropped
            assert REDACTED in exc.message
    else:  # a shape some adapters accept as an output: then it is the model's answer
        assert case == 10 and slug == "lamini", result


@pytest.mark.parametrize("slug", ["openai", "bytez"])
def test_streamed_errors_never_carry_the_secret(slug: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        text = echo(request)
        if slug == "openai":
            events = f"data: {json.dumps({'error': {'message': text}})}\n\n"
            return httpx.Response(200, text=events, headers={"content-type": "text/event-stream"})
        return httpx.Response(400, json={"output": None, "error": text})

    with pytest.raises(ProviderError) as caught:
        call(slug, handler, stream=True)
    assert_clean_error(caught.value)


def test_openai_stream_event_that_is_not_json_is_redacted() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text=f"data: {{{echo(request)}\n\n")

    with pytest.raises(ProviderError) as caught:
        call("openai", handler, stream=True)
    assert caught.value.kind is ErrorKind.PROTOCOL
    assert_clean_error(caught.value)


@pytest.mark.parametrize(
    "method",
    [
        lambda p: p.list_models(),
        lambda p: p.request_model("m"),
        lambda p: p.load_model("m"),
        lambda p: p.instance_status("m"),
        lambda p: p.list_instances(),
        lambda p: p.shutdown_model("m"),
    ],
)
@pytest.mark.parametrize("status", [200, 400, 404, 500])
def test_bytez_lifecycle_errors_never_carry_the_secret(method: Any, status: int) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        text = echo(request)
        body = {"success": False, "error": text, "message": text}
        return httpx.Response(status, json=body if status != 200 else {**body, "status": 3})

    try:
        method(provider("bytez", handler))
    except ProviderError as exc:
        assert_clean_error(exc)


def test_openai_model_list_error_is_redacted() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": {"message": echo(request)}})

    with pytest.raises(ProviderError) as caught:
        provider("openai", handler).list_models()
    assert_clean_error(caught.value)


def test_mymagic_failed_job_and_error_slots_are_redacted() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        job = request.url.path.rsplit("/", 1)[1]
        text = echo(request)
        if job == "failed":
            return httpx.Response(200, json={"status": "Error", "error": text})
        if job == "wordless":
            return httpx.Response(200, json={"result": text})
        return httpx.Response(404, json={"status": "Error", "error": text})

    slots = provider("mymagic", handler).poll(["failed", "wordless", "gone"])
    assert isinstance(slots["failed"], RemoteStatus)
    assert_clean_status(slots["failed"])
    for remote_id in ("wordless", "gone"):
        assert isinstance(slots[remote_id], ProviderError)
        assert_clean_error(slots[remote_id])


def test_gridrepublic_failed_job_log_and_error_slots_are_redacted() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        text = echo(request)
        ids = request.url.path.rsplit("/", 1)[1].split(",")
        if ids == ["batchfail"]:
            return httpx.Response(500, json={"success": False, "error": text})
        jobs = {
            "failed": {
                "vmStatus": "exited",
                "states": {"default": {"status": "failed", "log": f"partial output\n{text}"}},
            },
            "erred": {"states": {"default": {"status": "error", "log": ""}}, "error": text},
            "running": {"states": {"default": {"status": "running", "log": f"so far {SECRET}"}}},
            "unknown": {"success": False, "error": text},
        }
        return httpx.Response(200, json={"success": True, "jobs": {i: jobs.get(i) for i in ids}})

    grid = provider("gridrepublic", handler)
    slots = grid.poll(["failed", "erred", "running", "unknown"])
    assert_clean_status(slots["failed"])
    assert_clean_status(slots["erred"])
    running = slots["running"]
    assert isinstance(running, RemoteStatus) and running.log == f"so far {REDACTED}"
    assert isinstance(slots["unknown"], ProviderError)
    assert_clean_error(slots["unknown"])
    (batch_error,) = grid.poll(["batchfail"]).values()
    assert isinstance(batch_error, ProviderError) and batch_error.kind is ErrorKind.SERVER
    assert_clean_error(batch_error)


@pytest.mark.parametrize("slug", ["mymagic", "gridrepublic"])
def test_poll_transport_error_is_redacted(slug: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadError(f"connection reset while sending {echo(request)}")

    (slot,) = provider(slug, handler).poll(["x"]).values()
    assert isinstance(slot, ProviderError) and slot.kind is ErrorKind.TIMEOUT
    assert_clean_error(slot)


@pytest.mark.parametrize("slug", list(PROVIDERS))
def test_every_entry_point_an_adapter_defines_is_redacted(slug: str) -> None:
    cls = get_provider_class(slug)
    for klass in cls.__mro__:
        if klass is Provider or not issubclass(klass, Provider):
            continue
        for name in ENTRY_POINTS:
            if name in vars(klass):
                assert getattr(vars(klass)[name], "redacts", False), f"{klass.__name__}.{name}"
