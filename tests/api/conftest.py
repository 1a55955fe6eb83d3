"""The API tests' shared parts: a client per user speaking JSON with a bearer
token of its own (alice admin, bob member, charlie of another team, dave a
viewer), and the schemathesis run's figures, printed at the end of the
session that runs it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import User

from dashboard.core import netguard
from dashboard.models import ApiToken, Membership, Role
from tests.conftest import make_user

BASE = "/api/v1/"


class Api:
    """The test client speaking JSON with a bearer token; keeps every raw answer
    so a test can check that no secret ever went out."""

    def __init__(self, client: Any, key: str | None) -> None:
        self.client = client
        self.key = key
        self.bodies: list[bytes] = []

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | str | None = None,
        key: str | None = "default",
    ) -> Any:
        key = self.key if key == "default" else key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        data = raw if raw is not None else (json.dumps(body) if body is not None else "")
        url = path if path.startswith("http") else BASE + path.lstrip("/")
        response = self.client.generic(
            method, url, data=data, content_type="application/json", headers=headers
        )
        self.bodies.append(response.content)
        return response

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.call("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        return self.call("POST", path, body, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.call("DELETE", path, **kwargs)


def api_for(client: Any, user: User) -> Api:
    return Api(client, ApiToken.issue(user, "tests")[1])


@pytest.fixture
def alice_api(client: Any, alice: User, team: Any) -> Api:
    return api_for(client, alice)


@pytest.fixture
def bob_api(client: Any, bob: User, team: Any) -> Api:
    return api_for(client, bob)


@pytest.fixture
def charlie_api(client: Any, charlie: User, other_team: Any) -> Api:
    return api_for(client, charlie)


@pytest.fixture
def viewer_api(client: Any, team: Any) -> Api:
    dave = make_user("dave")
    Membership.objects.create(team=team, user=dave, role=Role.VIEWER)
    return api_for(client, dave)


@pytest.fixture(autouse=True)
def _public_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hosts resolve to a public address: no test waits on real DNS."""
    monkeypatch.setattr(netguard, "_resolve", lambda host: ["93.184.216.34"])


def assert_error(response: Any, status: int, *fields: str) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["fields"], dict)
    for field in fields:
        assert body["fields"].get(field), body
    return body


SCHEMATHESIS_REPORTS = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "schemathesis: the schemathesis run; bin/run-tests gives it a session"
    )


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    reports = config.stash.get(SCHEMATHESIS_REPORTS, [])
    if reports:
        terminalreporter.section("schemathesis")
        for line in reports:
            terminalreporter.write_line(line)
