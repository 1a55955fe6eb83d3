"""A caller whose role cannot make a write gets its 403 before the body is
read: a viewer (or a member, on an admin's route) cannot make the server
parse a 64 MB JSON body it would refuse anyway."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from django.contrib.auth.models import User

from dashboard.api import wire
from dashboard.models import Membership, Role
from tests.api.conftest import Api, api_for, assert_error
from tests.conftest import make_credential, make_team, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every body the API's JSON parser read."""
    sizes: list[int] = []
    real = wire.StrictJsonParser.parse_body

    def counting(self: Any, request: Any) -> Any:
        sizes.append(len(request.body))
        return real(self, request)

    monkeypatch.setattr(wire.StrictJsonParser, "parse_body", counting)
    return sizes


def big_job_body(credential_id: int) -> str:
    return json.dumps({"credential": credential_id, "model": "m", "prompts": ["x" * 800] * 40_000})


def test_a_viewer_s_big_body_is_refused_before_it_is_parsed(
    viewer_api: Api, team: Any, parsed: list[int]
) -> None:
    credential = make_credential(team)
    body = big_job_body(credential.pk)
    assert len(body) > 32_000_000

    started = time.monotonic()
    response = viewer_api.post("jobs", raw=body)
    took = time.monotonic() - started

    error = assert_error(response, 403)
    assert "member" in error["error"]
    assert parsed == []  # the body was never parsed
    assert took < 2.0, took
    # A viewer still reads.
    assert viewer_api.get("jobs").status_code == 200


@pytest.mark.parametrize(
    "path", ["credentials", "webhooks", "prices"], ids=["credential", "webhook", "price"]
)
def test_a_member_s_body_to_an_admin_route_is_refused_before_it_is_parsed(
    bob_api: Api, path: str, parsed: list[int]
) -> None:
    error = assert_error(bob_api.post(path, raw=json.dumps({"pad": "x" * 1_000_000})), 403)
    assert "admin" in error["error"]
    assert parsed == []


def test_the_budget_put_is_refused_to_a_member_before_it_is_parsed(
    bob_api: Api, parsed: list[int]
) -> None:
    assert_error(bob_api.call("PUT", "budget", {"pad": "x" * 1_000_000}), 403)
    assert parsed == []


def test_the_right_role_still_gets_its_body_parsed(
    alice_api: Api, team: Any, parsed: list[int]
) -> None:
    body = {"provider": "together", "name": "x", "secret": "s", "team": team.pk}
    assert alice_api.post("credentials", body).status_code == 201
    assert len(parsed) == 1


def test_a_member_elsewhere_is_still_refused_in_a_team_where_they_view(
    client: Any, team: Any, alice: User
) -> None:
    """The early check refuses only who can write nowhere; the team's own check
    still holds for who can write somewhere else."""
    erin = make_user("erin")
    Membership.objects.create(team=team, user=erin, role=Role.VIEWER)
    Membership.objects.create(team=make_team("Elsewhere"), user=erin, role=Role.MEMBER)
    credential = make_credential(team)
    response = api_for(client, erin).post(
        "jobs", {"credential": credential.pk, "model": "m", "prompts": ["hi"]}
    )
    assert_error(response, 403)
