"""The one access helper: another team's object is a 404, a role too low a 403
that names the role, a malformed lookup a 404 and never a 500."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import PermissionDenied
from django.http import Http404

from dashboard.accounts import access
from dashboard.models import Credential, Job, Membership, Role
from tests.conftest import make_credential, make_job, make_user

pytestmark = pytest.mark.django_db


def test_object_for_returns_the_object_and_the_membership(team: Any, alice: Any) -> None:
    job = make_job(make_credential(team))
    found, membership = access.object_for(alice, Job.objects.all(), role=Role.ADMIN, pk=job.pk)
    assert found == job and membership.team == team and membership.role == Role.ADMIN


def test_another_teams_object_is_a_404(team: Any, other_team: Any, charlie: Any) -> None:
    credential = make_credential(team)
    with pytest.raises(Http404):
        access.object_for(charlie, Credential.objects.all(), pk=credential.pk)


def test_a_role_too_low_is_a_403_naming_the_role(team: Any) -> None:
    viewer = make_user("vera")
    Membership.objects.create(team=team, user=viewer, role=Role.VIEWER)
    credential = make_credential(team)
    access.object_for(viewer, Credential.objects.all(), pk=credential.pk)  # reading is fine
    with pytest.raises(PermissionDenied, match="member role"):
        access.object_for(viewer, Credential.objects.all(), role=Role.MEMBER, pk=credential.pk)


@pytest.mark.parametrize("pk", ["x", 2**70, -1, None])
def test_malformed_lookups_are_a_404(team: Any, alice: Any, pk: Any) -> None:
    with pytest.raises(Http404):
        access.object_for(alice, Job.objects.all(), pk=pk)


def test_operators_act_on_their_teams_superusers_on_all(team: Any, other_team: Any) -> None:
    staff = make_user("sam", is_staff=True)
    Membership.objects.create(team=team, user=staff, role=Role.MEMBER)
    root = make_user("root", is_staff=True, is_superuser=True)
    ours, theirs = make_job(make_credential(team)), make_job(make_credential(other_team))
    assert access.operator_allows(staff, ours, Role.MEMBER)
    assert not access.operator_allows(staff, theirs, Role.MEMBER)
    assert not access.operator_allows(staff, ours, Role.ADMIN)
    assert access.operator_allows(root, theirs, Role.ADMIN)
