"""The surfaces (web, API, admin) only render: the services audit, guard and
decide, so each action leaves exactly one audit event whichever surface asked,
marked with that surface; a form acts on the team it was rendered for."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from dashboard.models import AuditEvent, Job, JobEvent, Membership, ModelInstance, Role
from dashboard.status import InstanceStatus, JobStatus
from tests.api.conftest import api_for
from tests.conftest import make_credential, make_job, make_user

pytestmark = pytest.mark.django_db


def _events(action: str) -> list[tuple[str | None, Any]]:
    return [
        (event.details.get("via"), event.actor)
        for event in AuditEvent.objects.filter(action=action).order_by("id")
    ]


@pytest.fixture
def staff(team: Any) -> Any:
    from django.contrib.auth.models import Permission

    sam = make_user("sam", is_staff=True)
    Membership.objects.create(team=team, user=sam, role=Role.MEMBER)
    sam.user_permissions.add(*Permission.objects.filter(codename__in=["change_job", "view_job"]))
    return sam


# --- jobs: cancel and retry ---------------------------------------------------------------------


def test_a_web_cancel_and_retry_are_audited_once_via_web(client: Any, bob: Any, team: Any) -> None:
    job = make_job(make_credential(team))
    client.force_login(bob)
    client.post(reverse("job_cancel", args=[job.pk]))
    client.post(reverse("job_cancel", args=[job.pk]))  # already ended: nothing more
    client.post(reverse("job_retry", args=[job.pk]), {"failed_only": "1"})
    assert _events("job.cancelled") == [("web", bob)]
    assert _events("job.retried") == [("web", bob)]
    retried = AuditEvent.objects.get(action="job.retried")
    new = Job.objects.get(retry_of=job)
    assert retried.details == {"new_job": new.pk, "failed_only": True, "via": "web"}


def test_an_api_cancel_and_retry_are_audited_once_via_api(client: Any, bob: Any, team: Any) -> None:
    job = make_job(make_credential(team))
    api = api_for(client, bob)
    assert api.post(f"jobs/{job.pk}/cancel").status_code == 200
    assert api.post(f"jobs/{job.pk}/cancel").status_code == 409
    assert api.post(f"jobs/{job.pk}/retry", {"invalid_only": True}).status_code == 409
    assert api.post(f"jobs/{job.pk}/retry", {}).status_code == 201
    assert _events("job.cancelled") == [("api", bob)]
    assert _events("job.retried") == [("api", bob)]


def test_admin_cancel_and_retry_are_audited_once_via_admin(
    client: Any, staff: Any, team: Any
) -> None:
    job = make_job(make_credential(team))
    client.force_login(staff)
    url = reverse("admin:dashboard_job_changelist")
    for action in ("cancel_jobs", "retry_jobs"):
        assert client.post(url, {"action": action, "_selected_action": [job.pk]}).status_code == 302
    assert Job.objects.get(pk=job.pk).status == JobStatus.CANCELLED
    assert _events("job.cancelled") == [("admin", staff)]
    assert _events("job.retried") == [("admin", staff)]


# --- instances: request, load, shut down --------------------------------------------------------


def _request_form(credential: Any, **extra: Any) -> dict[str, Any]:
    return {
        "credential": credential.pk,
        "model": "openai-community/gpt2",
        "concurrency": 1,
        **extra,
    }


def test_web_instance_actions_are_audited_once_via_web(
    client: Any, bob: Any, team: Any, nudges: list
) -> None:
    credential = make_credential(team, "bytez")
    client.force_login(bob)
    client.post(reverse("instance_request"), _request_form(credential))  # load unchecked
    instance = ModelInstance.objects.get()
    client.post(reverse("instance_load", args=[instance.pk]), {"concurrency": 1})
    client.post(reverse("instance_load", args=[instance.pk]), {"concurrency": 1})  # refused
    client.post(reverse("instance_shutdown", args=[instance.pk]))
    client.post(reverse("instance_shutdown", args=[instance.pk]))  # already ended
    assert ModelInstance.objects.get().status == InstanceStatus.STOPPED
    assert _events("instance.requested") == [("web", bob)]
    assert _events("instance.loaded") == [("web", bob)]
    assert _events("instance.shutdown") == [("web", bob)]


def test_api_instance_actions_are_audited_once_via_api(
    client: Any, bob: Any, team: Any, nudges: list
) -> None:
    credential = make_credential(team, "bytez")
    api = api_for(client, bob)
    body = {"credential": credential.pk, "model": "openai-community/gpt2"}
    created = api.post("instances", body)
    assert created.status_code == 201
    assert api.post("instances", body).status_code == 409  # one live instance per model
    pk = created.json()["id"]
    assert api.delete(f"instances/{pk}").json()["status"] == "stopped"
    assert api.delete(f"instances/{pk}").status_code == 200  # DELETE is idempotent
    assert _events("instance.requested") == [("api", bob)]
    assert _events("instance.shutdown") == [("api", bob)]


def test_admin_instance_shutdown_is_audited_once_via_admin(
    client: Any, team: Any, bob: Any, nudges: list
) -> None:
    from dashboard.instances.services import instance_request

    root = make_user("root", is_staff=True, is_superuser=True)
    instance = instance_request(team, make_credential(team, "bytez"), "gpt2", bob)
    client.force_login(root)
    url = reverse("admin:dashboard_modelinstance_changelist")
    for _ in range(2):
        client.post(url, {"action": "shutdown_instances", "_selected_action": [instance.pk]})
    assert ModelInstance.objects.get().status == InstanceStatus.STOPPED
    assert _events("instance.shutdown") == [("admin", root)]


def test_the_services_write_their_own_audit_events(bob: Any, team: Any, nudges: list) -> None:
    """Whoever calls them (a command, a task, a surface not written yet)."""
    from dashboard.instances import services as instances
    from dashboard.jobs.services import job_cancel, job_retry

    job = make_job(make_credential(team))
    assert job_cancel(job, user=bob, via="command")
    job_retry(job, user=bob, via="command")
    instance = instances.instance_request(
        team, make_credential(team, "bytez"), "gpt2", bob, load=False, via="command"
    )
    instances.instance_load(instance, bob, via="command")
    instances.instance_stop_begin(instance, bob, via="command")
    actions = ["job.cancelled", "job.retried", "instance.requested", "instance.loaded"]
    for action in [*actions, "instance.shutdown"]:
        assert _events(action) == [("command", bob)], action


# --- notes on a job's timeline ------------------------------------------------------------------


def test_a_viewer_cannot_note_a_job(client: Any, team: Any) -> None:
    viewer = make_user("dave")
    Membership.objects.create(team=team, user=viewer, role=Role.VIEWER)
    job = make_job(make_credential(team))
    client.force_login(viewer)
    assert 'name="note"' not in client.get(job.get_absolute_url()).content.decode()
    response = client.post(reverse("job_note", args=[job.pk]), {"note": "mine"})
    assert response.status_code == 403
    assert not job.events.filter(kind=JobEvent.Kind.NOTE).exists()


def test_a_note_with_a_nul_is_refused_clearly(client: Any, bob: Any, team: Any) -> None:
    job = make_job(make_credential(team))
    client.force_login(bob)
    response = client.post(reverse("job_note", args=[job.pk]), {"note": "bad\x00note"}, follow=True)
    assert response.status_code == 200
    assert "may not contain NUL characters" in response.content.decode()
    htmx = client.post(
        reverse("job_note", args=[job.pk]), {"note": "bad\x00note"}, headers={"HX-Request": "true"}
    )
    assert htmx.status_code == 400 and b"NUL" in htmx.content
    assert not job.events.filter(kind=JobEvent.Kind.NOTE).exists()
    client.post(reverse("job_note", args=[job.pk]), {"note": "fine"})
    assert job.events.get(kind=JobEvent.Kind.NOTE).message == "fine"


# --- a view lives in the module its URL names ---------------------------------------------------


def test_moved_views_answer_at_their_urls_from_the_module_the_url_names(
    client: Any, alice: Any, team: Any, nudges: list
) -> None:
    from django.urls import resolve

    credential = make_credential(team)
    job = make_job(credential)
    client.force_login(alice)
    for url, module in (
        (reverse("job_estimate"), "dashboard.web.jobs"),
        (reverse("job_rate", args=[job.pk]), "dashboard.web.jobs"),
        (reverse("model_catalog", args=[credential.pk]), "dashboard.web.credentials"),
        (reverse("model_catalog_refresh", args=[credential.pk]), "dashboard.web.credentials"),
    ):
        assert resolve(url).func.__module__ == module, url
    estimate = client.post(
        reverse("job_estimate"),
        {"credential": credential.pk, "model": "m", "prompts": "one\n---\ntwo", "split": "dashes"},
    )
    assert estimate.status_code == 200 and "a credential, a model and prompts" not in (
        estimate.content.decode()
    )
    rated = client.post(reverse("job_rate", args=[job.pk]), {"index": 0, "score": "1"})
    assert rated.status_code == 302 and job.ratings.get().score == 1
    catalog = client.get(reverse("model_catalog", args=[credential.pk]))
    assert catalog.status_code == 200 and credential.name in catalog.content.decode()


def test_one_class_is_named_instance_status() -> None:
    """The status choices are ``InstanceStatus``; what a provider reports of an
    instance is a ``RemoteInstance`` (as ``RemoteStatus`` is of a remote job)."""
    import providers
    from dashboard import status

    assert status.InstanceStatus.RUNNING == "running"
    assert not hasattr(providers, "InstanceStatus")
    assert providers.RemoteInstance("gpt2", providers.InstanceState.RUNNING, "RUNNING").model


# --- a form acts for the team it was rendered for -----------------------------------------------

STALE = "You switched teams in another tab"


def _stale_cases(team_a: Any) -> list[tuple[str, str, dict[str, Any], Any]]:
    """(page with the form, where it posts, what it posts, what it would create)."""
    from dashboard.models import Comparison, Credential, Dataset, Price, Team, Webhook

    bytez = make_credential(team_a, "bytez")
    credential = make_credential(team_a)
    return [
        (
            "job_new",
            "job_new",
            {"credential": credential.pk, "model": "m", "prompts": "hi", "split": "single"},
            Job.objects.all(),
        ),
        (
            "credential_list",
            "credential_list",
            {"provider": "together", "name": "new key", "secret": "sk-new"},
            Credential.objects.filter(name="new key"),
        ),
        (
            "dataset_list",
            "dataset_list",
            {"kind": "paste", "name": "rows", "text": "q\nhello\n"},
            Dataset.objects.all(),
        ),
        (
            "comparison_new",
            "comparison_new",
            {"name": "cmp", "prompts": "hi", "target-TOTAL_FORMS": 0, "target-INITIAL_FORMS": 0},
            Comparison.objects.all(),
        ),
        (
            "instance_list",
            "instance_request",
            {"credential": bytez.pk, "model": "gpt2", "concurrency": 1},
            ModelInstance.objects.all(),
        ),
        (
            "instance_list",
            "instance_rate",
            {"cost_per_gb_second": "0.5"},
            Team.objects.filter(cost_per_gb_second__isnull=False),
        ),
        (
            "webhook_list",
            "webhook_list",
            {"url": "https://hooks.example.com/x", "events": ["job.completed"]},
            Webhook.objects.all(),
        ),
        (
            "usage",
            "price_save",
            {"provider": "together", "model": "m", "input_per_mtok": 1, "output_per_mtok": 2},
            Price.objects.all(),
        ),
        (
            "usage",
            "budget_save",
            {"monthly_budget_usd": "10"},
            Team.objects.filter(monthly_budget_usd__isnull=False),
        ),
    ]


def test_a_form_rendered_for_one_team_never_acts_for_the_team_switched_to(
    client: Any, alice: Any, team: Any, nudges: list
) -> None:
    from dashboard.models import Price, Team

    other = Team.objects.create(name="Gamma")
    Membership.objects.create(team=other, user=alice, role=Role.ADMIN)
    client.force_login(alice)
    for page, action, data, created in _stale_cases(team):
        client.post(reverse("switch_team"), {"team": team.pk})
        form = client.get(reverse(page)).content.decode()
        assert f'<input type="hidden" name="team" value="{team.pk}">' in form, page
        client.post(reverse("switch_team"), {"team": other.pk})  # another tab
        before = created.count()
        response = client.post(reverse(action), {**data, "team": team.pk}, follow=True)
        assert STALE in response.content.decode(), action
        assert created.count() == before, action  # nothing for Gamma, nor for Alpha
    assert not AuditEvent.objects.filter(team=other).exists()
    # The same form rendered for the team the session holds goes through.
    price = {"provider": "together", "model": "m", "input_per_mtok": 1, "output_per_mtok": 2}
    client.post(reverse("price_save"), {**price, "team": other.pk})
    assert list(Price.objects.values_list("team__name", flat=True)) == ["Gamma"]


# --- creating: a job, a comparison, a dataset ----------------------------------------------------


def test_submitting_a_job_is_audited_once_by_the_service_via_each_surface(
    client: Any, bob: Any, team: Any
) -> None:
    credential = make_credential(team)
    client.force_login(bob)
    form = {"credential": credential.pk, "model": "m", "prompts": "Say hi", "split": "single"}
    response = client.post(reverse("job_new"), form)
    assert response.status_code == 302, response.content[:500]
    api = api_for(client, bob)
    assert (
        api.post("jobs", {"credential": credential.pk, "model": "m", "prompts": ["a"]}).status_code
        == 201
    )
    assert _events("job.submitted") == [("web", bob), ("api", bob)]


def test_a_comparison_and_a_dataset_are_audited_once_by_their_services(
    client: Any, bob: Any, team: Any
) -> None:
    one, two = make_credential(team), make_credential(team)
    api = api_for(client, bob)
    created = api.post("datasets", {"name": "d", "rows": [{"q": "a"}, {"q": "b"}]})
    assert created.status_code == 201
    comparison = api.post(
        "comparisons",
        {
            "name": "c",
            "prompts": ["a", "b"],
            "targets": [{"credential": one.pk, "model": "m"}, {"credential": two.pk, "model": "n"}],
        },
    )
    assert comparison.status_code == 201, comparison.content
    assert _events("dataset.created") == [("api", bob)]
    assert _events("comparison.created") == [("api", bob)]
