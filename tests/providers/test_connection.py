"""Test connection: every adapter against its simulator on loopback with a good
and a bad key, the billed flag, and the edge cases over MockTransport."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import FrozenInstanceError

import httpx
import pytest

from providers import PROVIDERS, ConnectionCheck, Provider, get_provider_class
from providers.simulators import DEFAULT_TOKEN, Simulator, get_simulator_class

FREE = {"bytez", "openai", "anthropic"}


class Ticks:
    """A clock that moves a quarter of a second each time it is read."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        self.now += 0.25
        return self.now


@pytest.fixture(scope="module", params=list(PROVIDERS))
def sim(request: pytest.FixtureRequest) -> Iterator[Simulator]:
    simulator = get_simulator_class(request.param)()
    simulator.start()
    yield simulator
    simulator.stop()


def sent_key(request: httpx.Request) -> str:
    """The credential as sent: in Authorization, or Anthropic's x-api-key."""
    return request.headers.get("authorization") or request.headers["x-api-key"]


def against(sim: Simulator, secret: str) -> Provider:
    return get_provider_class(sim.name)(secret=secret, base_url=sim.base_url, clock=Ticks())


def test_billed_flag_says_which_checks_cost_money() -> None:
    for slug in PROVIDERS:
        cls = get_provider_class(slug)
        assert cls.connection_check_billed is (slug not in FREE), slug
        assert cls.connection_check_billed is False or cls.connection_check_model, slug


def test_good_key(sim: Simulator) -> None:
    with against(sim, DEFAULT_TOKEN) as provider:
        check = provider.check_connection()
    assert check == ConnectionCheck(
        ok=True,
        detail=check.detail,
        latency_ms=250,
        billed=sim.name not in FREE,
        auth_failed=False,
    )
    assert check.detail and DEFAULT_TOKEN not in check.detail


def test_bad_key(sim: Simulator) -> None:
    with against(sim, "wrong-key-0123") as provider:
        check = provider.check_connection()
    assert (check.ok, check.auth_failed, check.billed, check.latency_ms) == (
        False,
        True,
        False,
        250,
    )
    assert "401" in check.detail and "wrong-key" not in check.detail


def test_billed_checks_use_the_model_asked_for(sim: Simulator) -> None:
    sim.keep_log = True
    sim.log.clear()
    try:
        with against(sim, DEFAULT_TOKEN) as provider:
            assert provider.check_connection("chosen-model").ok
        (request,) = sim.log
    finally:
        sim.keep_log = False
    body = request.json()
    if sim.name in FREE:
        assert request.method == "GET" and body is None
    else:
        assert request.method == "POST"
        assert "chosen-model" in (body.get("model"), body.get("model_name"), body.get("tag"))
        assert body.get("max_tokens", 1) == 1


def test_connection_check_is_frozen() -> None:
    check = ConnectionCheck(ok=True, detail="", latency_ms=0, billed=False, auth_failed=False)
    with pytest.raises(FrozenInstanceError):
        check.ok = False  # type: ignore[misc]


@pytest.mark.parametrize("slug", list(PROVIDERS))
@pytest.mark.parametrize(
    ("response", "auth_failed", "may_have_run"),
    [
        (httpx.Response(403, json={"error": "forbidden"}), True, False),
        (httpx.Response(429, json={"error": "slow down"}), False, False),
        (httpx.Response(500, json={"error": "boom"}), False, True),
        (httpx.Response(200, text="<html>gateway</html>"), False, True),
    ],
)
def test_failures_are_answers_not_exceptions(
    slug: str, response: httpx.Response, auth_failed: bool, may_have_run: bool
) -> None:
    cls = get_provider_class(slug)
    provider = cls(
        secret="k-0123456789",
        base_url="https://p.test",
        transport=httpx.MockTransport(lambda request: response),
        clock=Ticks(),
    )
    check = provider.check_connection()
    assert (check.ok, check.auth_failed) == (False, auth_failed)
    assert check.billed is (may_have_run and cls.connection_check_billed)


@pytest.mark.parametrize("slug", list(PROVIDERS))
def test_unreachable_server(slug: str) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    provider = get_provider_class(slug)(
        secret="k-0123456789", base_url="https://p.test", transport=httpx.MockTransport(refuse)
    )
    check = provider.check_connection()
    assert (check.ok, check.auth_failed, check.billed) == (False, False, False)
    assert "Could not connect" in check.detail


def test_echoed_secret_is_redacted_from_the_detail() -> None:
    secret = "sk-live-0123456789"

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": f"bad key {sent_key(request)}"})

    for slug in PROVIDERS:
        provider = get_provider_class(slug)(
            secret=secret, base_url="https://p.test", transport=httpx.MockTransport(handler)
        )
        check = provider.check_connection()
        assert check.auth_failed and secret not in check.detail and "[redacted]" in check.detail
        assert secret not in json.dumps(check.__dict__)
