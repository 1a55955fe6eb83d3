"""The Django admin goes through the same services and access rules as the
pages: the last admin stays, every action leaves an audit event, and staff act
only on the teams they belong to (superusers on all)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.urls import reverse

from dashboard.models import AuditEvent, Credential, Job, Membership, ModelInstance, Role
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
    # A viewer sees the other team's job (another team's would not even be listed).
    Membership.objects.create(team=other_team, user=staff, role=Role.VIEWER)
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


# --- saves never write back what a worker wrote meanwhile ------------------------------------


def _job_form(job: Job) -> dict[str, Any]:
    return {
        "team": job.team_id,
        "credential": job.credential_id or "",
        "credential_name": job.credential_name,
        "provider": job.provider,
        "model": job.model,
        "spec": json.dumps(job.spec),
        "outputs": "null",
        "output_errors": "{}",
        "raw_result": "null",
        "error": "",
        "progress_done": 0,
        "progress_total": 1,
        "created_at_0": "2024-01-01",
        "created_at_1": "00:00:00",
        "units-TOTAL_FORMS": 0,
        "units-INITIAL_FORMS": 0,
        "events-TOTAL_FORMS": 0,
        "events-INITIAL_FORMS": 0,
    }


def test_a_job_cannot_be_saved_through_the_change_form(client: Any, team: Any, root: Any) -> None:
    job = make_job(make_credential(team))
    Job.objects.filter(pk=job.pk).update(error="written by the worker", progress_done=1)
    client.force_login(root)
    url = reverse("admin:dashboard_job_change", args=[job.pk])
    page = client.get(url)
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    response = client.post(url, _job_form(job))
    assert response.status_code == 403
    job.refresh_from_db()
    assert (job.error, job.progress_done) == ("written by the worker", 1)


def test_an_instance_cannot_be_saved_through_the_change_form(
    client: Any, team: Any, root: Any
) -> None:
    credential = make_credential(team, "bytez")
    instance = ModelInstance.objects.create(
        team=team, credential=credential, model="m", status="running", inferences=3
    )
    client.force_login(root)
    url = reverse("admin:dashboard_modelinstance_change", args=[instance.pk])
    page = client.get(url)
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    form = {"team": team.pk, "credential": credential.pk, "model": "m", "inferences": 0}
    assert client.post(url, form).status_code == 403
    instance.refresh_from_db()
    assert instance.inferences == 3


def test_the_credential_admin_saves_only_its_fields_and_audits(
    client: Any, team: Any, root: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker writes the credential's health columns after the admin read the
    row: the admin's save leaves them as the worker wrote them."""
    from dashboard.admin import CredentialAdmin

    credential = make_credential(team, name="Main", base_url="https://api.together.xyz")
    read = CredentialAdmin.get_object

    def read_then_worker_writes(self: Any, request: Any, object_id: str, from_field: Any = None):
        obj = read(self, request, object_id, from_field)
        Credential.objects.filter(pk=credential.pk).update(
            consecutive_failures=3, last_error="worker saw a 500", name="Renamed on the page"
        )
        return obj

    monkeypatch.setattr(CredentialAdmin, "get_object", read_then_worker_writes)
    client.force_login(root)
    url = reverse("admin:dashboard_credential_change", args=[credential.pk])
    form = {
        "team": team.pk,
        "provider": "together",
        "name": "Main",
        "base_url": "https://api.together.xyz",
        "options": "{}",
        "initial-options": "{}",  # Django's hidden initial for a callable default
        "max_concurrency": 9,
        "requests_per_minute": "",
        "created_by": "",
        "new_secret": "",
    }
    response = client.post(url, form)
    assert response.status_code == 302, response.content.decode()[:2000]
    credential.refresh_from_db()
    assert credential.max_concurrency == 9
    assert (credential.consecutive_failures, credential.last_error) == (3, "worker saw a 500")
    assert credential.name == "Renamed on the page"  # not on the admin's changed fields
    event = AuditEvent.objects.get(action="credential.updated")
    assert event.actor == root and event.details == {
        "fields": ["max_concurrency"],
        "via": "admin",
    }


def test_the_credential_admin_refuses_an_internal_base_url(
    client: Any, team: Any, root: Any, settings: Any
) -> None:
    settings.DASHBOARD_ALLOWED_PRIVATE_HOSTS = []
    credential = make_credential(team, name="Main", base_url="https://api.together.xyz")
    client.force_login(root)
    url = reverse("admin:dashboard_credential_change", args=[credential.pk])
    form = {
        "team": team.pk,
        "provider": "together",
        "name": "Main",
        "base_url": "http://169.254.169.254/latest",
        "options": "{}",
        "max_concurrency": 4,
        "new_secret": "",
    }
    response = client.post(url, form)
    assert (
        response.status_code == 200
        and "DASHBOARD_ALLOWED_PRIVATE_HOSTS" in response.content.decode()
    )
    credential.refresh_from_db()
    assert credential.base_url == "https://api.together.xyz"
