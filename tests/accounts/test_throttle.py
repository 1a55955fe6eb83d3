"""Login throttling: keyed on the real client behind a trusted proxy, with
delays that grow per username and per address and always end."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils import timezone

from dashboard.accounts import throttle
from dashboard.core import clock
from dashboard.models import LoginAttempt

pytestmark = pytest.mark.django_db

PASSWORD = "pw-for-tests-123"
PROXY = "10.0.0.1"


class Wall:
    def __init__(self) -> None:
        self.now = timezone.now()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def wall(monkeypatch: pytest.MonkeyPatch) -> Wall:
    wall = Wall()
    monkeypatch.setattr(clock, "now", wall)
    return wall


def login(client: Client, username: str, password: str, **meta: str) -> str:
    response = client.post(reverse("login"), {"username": username, "password": password}, **meta)
    return response.content.decode() if response.status_code == 200 else "LOGGED IN"


# --- the client address -----------------------------------------------------------------------


def test_the_client_address_behind_trusted_proxies(settings: Any) -> None:
    settings.DASHBOARD_TRUSTED_PROXIES = ["10.0.0.0/8", "192.0.2.7"]
    rf = RequestFactory()

    def address(remote: str, forwarded: str | None = None) -> str:
        meta = {"REMOTE_ADDR": remote}
        if forwarded is not None:
            meta["HTTP_X_FORWARDED_FOR"] = forwarded
        return throttle.client_address(rf.post("/login/", **meta))

    # The right-most address no trusted proxy vouches for; what the client wrote is ignored.
    assert address(PROXY, "6.6.6.6, 203.0.113.5, 10.1.1.1") == "203.0.113.5"
    assert address("192.0.2.7", "203.0.113.5") == "203.0.113.5"
    assert address(PROXY, "203.0.113.5:4711") == "203.0.113.5"
    # Not from a trusted proxy: the header is the client's own claim.
    assert address("198.51.100.9", "203.0.113.5") == "198.51.100.9"
    # Nothing but proxies: the left-most; garbage: the proxy that passed it on.
    assert address(PROXY, "10.2.2.2, 10.3.3.3") == "10.2.2.2"
    assert address(PROXY, "not-an-address\x00, 10.3.3.3") == "10.3.3.3"
    assert address(PROXY) == PROXY


def test_without_trusted_proxies_the_header_is_ignored(settings: Any) -> None:
    settings.DASHBOARD_TRUSTED_PROXIES = []
    request = RequestFactory().post("/", REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="203.0.113.5")
    assert throttle.client_address(request) == PROXY


# --- behind the proxy, failures of some do not lock out the others ---------------------------------


def test_failures_behind_the_proxy_do_not_lock_out_everyone(
    client: Client, alice: Any, settings: Any, wall: Wall
) -> None:
    settings.DASHBOARD_TRUSTED_PROXIES = [PROXY]
    for n in range(30):
        body = login(
            client, f"guess{n}", "wrong", REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=f"203.0.113.{n}"
        )
        assert "Please enter a correct username" in body
    body = login(client, "alice", PASSWORD, REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="198.51.100.1")
    assert body == "LOGGED IN"


# --- progressive delays, never a lock -----------------------------------------------------------


def test_failures_per_username_bring_a_delay_the_form_states(
    client: Client, alice: Any, wall: Wall
) -> None:
    for _ in range(throttle.FREE_PER_USER):
        assert "Please enter a correct username" in login(client, "alice", "wrong")
    body = login(client, "alice", PASSWORD)
    assert "Too many failed logins" in body and "Try again in 2 seconds" in body
    assert "_auth_user_id" not in client.session
    wall.advance(2)
    assert login(client, "alice", PASSWORD) == "LOGGED IN"


def test_delays_double_and_stop_growing(client: Client, alice: Any, wall: Wall) -> None:
    waits = []
    for _ in range(throttle.FREE_PER_USER + 12):
        login(client, "Alice ", "wrong")
        waits.append(throttle.wait_seconds(throttle.attempt_keys(None, "alice")))
        wall.advance(waits[-1])  # let the delay pass
    free = throttle.FREE_PER_USER
    assert waits[: free - 1] == [0] * (free - 1)
    assert waits[free - 1 : free + 3] == [2, 4, 8, 16]
    assert max(waits) == throttle.MAX_DELAY_SECONDS
    # Never a lock: once the longest delay has passed the right password works.
    assert login(client, "alice", PASSWORD) == "LOGGED IN"
    assert not LoginAttempt.objects.filter(key="user:alice").exists()


def test_attempts_refused_during_a_delay_are_not_counted(
    client: Client, alice: Any, wall: Wall
) -> None:
    for _ in range(throttle.FREE_PER_USER):
        login(client, "alice", "wrong")
    for _ in range(20):
        assert "Too many failed logins" in login(client, "alice", "wrong")
    assert LoginAttempt.objects.get(key="user:alice").failures == throttle.FREE_PER_USER
    wall.advance(2)
    assert login(client, "alice", PASSWORD) == "LOGGED IN"


def test_only_one_attempt_goes_through_when_a_delay_ends(alice: Any, wall: Wall) -> None:
    """Concurrent attempts at the moment a delay ends: one is checked, the
    others are refused (no burst of guesses)."""
    keys = throttle.attempt_keys(None, "alice")
    for _ in range(throttle.FREE_PER_USER):
        attempt = throttle.attempt_begin(keys)
        throttle.attempt_end(attempt, success=False)
    wall.advance(2)
    first = throttle.attempt_begin(keys)
    second = throttle.attempt_begin(keys)
    assert first.wait == 0 and second.wait > 0
    throttle.attempt_end(first, success=True)
    assert throttle.attempt_begin(keys).wait == 0


def test_a_long_quiet_spell_forgets_old_failures(client: Client, alice: Any, wall: Wall) -> None:
    for _ in range(throttle.FREE_PER_USER + 3):
        login(client, "alice", "wrong")
        wall.advance(throttle.MAX_DELAY_SECONDS)
    wall.advance(throttle.FORGET_AFTER.total_seconds())
    login(client, "alice", "wrong")
    assert LoginAttempt.objects.get(key="user:alice").failures == 1


def test_a_client_address_is_slowed_down_across_usernames(client: Client, wall: Wall) -> None:
    for n in range(throttle.FREE_PER_ADDRESS):
        assert "Please enter a correct username" in login(client, f"user{n}", "wrong")
    assert "Too many failed logins" in login(client, "someone-else", "wrong")


def test_a_nul_in_the_login_form_is_a_field_error(client: Client, alice: Any) -> None:
    response = client.post(reverse("login"), {"username": "ali\x00ce", "password": "x\x00"})
    assert response.status_code == 200
    assert "Null characters are not allowed" in response.content.decode()
    assert not any("\x00" in key for key in LoginAttempt.objects.values_list("key", flat=True))


def test_a_bad_trusted_proxies_setting_refuses_to_start() -> None:
    from tests.core.test_security import PRODUCTION, manage

    result = manage("check", **{**PRODUCTION, "DASHBOARD_TRUSTED_PROXIES": "10.0.0.1,proxy.lan"})
    assert result.returncode != 0 and "'proxy.lan' is not an IP address" in result.stderr
