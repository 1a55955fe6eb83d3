"""The Django admin goes through the same services and access rules as the
pages: the last admin stays, every action leaves an audit event, and staff act
only on the teams they belong to (superusers on all)."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from dashboard.models import AuditEvent, Job, Membership, Role
from dashboard.status import JobStatus
from tests.conftest import make_credential, make_job, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def root(db: Any) -> Any:
    return make_user("root", is_staff=True, is_superuser=True)


def test_the_last_admin_cannot_be_demoted_in_the_admin(client: Any, team: Any, root: Any) -> None:
    client.force_login(root)
    alice = Membership.objects.get(team=team, role=Role.ADMIN)
    url = reverse("admin:dashboard_membership_change", args=[alice.pk])
    response = client.post(url, {"role": Role.VIEWER})
    assert response.status_code == 200  # the form again, with the error
    assert "last admin of Alpha" in response.content.decode()
    alice.refresh_from_db()
    assert alice.role == Role.ADMIN
    assert not AuditEvent.objects.exists()


def test_a_role_change_in_the_admin_is_audited(client: Any, team: Any, root: Any) -> None:
    client.force_login(root)
    bob = Membership.objects.get(team=team, role=Role.MEMBER)
    url = reverse("admin:dashboard_membership_change", args=[bob.pk])
    response = client.post(url, {"role": Role.ADMIN})
    assert response.status_code == 302
    event = AuditEvent.objects.get()
    assert event.action == "member.role_changed" and event.actor == root
    assert event.details == {"old": "member", "new": "admin", "via": "admin"}


def test_the_last_admin_cannot_be_deleted_in_the_admin(client: Any, team: Any, root: Any) -> None:
    client.force_login(root)
    alice = Membership.objects.get(team=team, role=Role.ADMIN)
    response = client.post(
        reverse("admin:dashboard_membership_delete", args=[alice.pk]), {"post": "yes"}
    )
    assert response.status_code == 403
    bulk = client.post(
        reverse("admin:dashboard_membership_changelist"),
        {"action": "delete_selected", "_selected_action": [alice.pk], "post": "yes"},
    )
    assert bulk.status_code == 403
    assert Membership.objects.filter(pk=alice.pk).exists()
    assert not AuditEvent.objects.exists()


def test_admin_job_actions_are_audited_and_scoped(client: Any, team: Any, other_team: Any) -> None:
    staff = make_user("sam", is_staff=True, is_superuser=False)
    Membership.objects.create(team=team, user=staff, role=Role.MEMBER)
    staff.user_permissions.add(*_permissions("change_job", "view_job"))
    ours, theirs = make_job(make_credential(team)), make_job(make_credential(other_team))
    client.force_login(staff)
    response = client.post(
        reverse("admin:dashboard_job_changelist"),
        {"action": "cancel_jobs", "_selected_action": [ours.pk, theirs.pk]},
        follow=True,
    )
    assert "not a member of its team" in response.content.decode()
    assert Job.objects.get(pk=ours.pk).status == JobStatus.CANCELLED
    assert Job.objects.get(pk=theirs.pk).status == JobStatus.PENDING
    event = AuditEvent.objects.get()
    assert (event.action, event.actor, event.details) == ("job.cancelled", staff, {"via": "admin"})


def _permissions(*codenames: str) -> list[Any]:
    from django.contrib.auth.models import Permission

    return list(Permission.objects.filter(codename__in=codenames))
