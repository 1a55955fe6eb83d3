"""The admin site, for staff who are not superusers: every model permission
granted, and still only their own teams' rows (``dashboard.admin``'s rules,
from ``accounts/access``). Sam is staff and the admin of Beta; Alpha is not
his (Alice administers it). Everything goes through the admin's own URLs."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from dashboard.accounts import throttle
from dashboard.core import clock
from dashboard.models import (
    ApiToken,
    AuditEvent,
    Comparison,
    Credential,
    Dataset,
    JobEvent,
    Membership,
    ModelCatalogEntry,
    ModelInstance,
    Rating,
    Role,
    RowNote,
    Team,
)
from tests.conftest import make_credential, make_job, make_user

pytestmark = pytest.mark.django_db

PASSWORD = "pw-for-tests-123"


@pytest.fixture
def sam(other_team: Team) -> Any:
    """Staff, not superuser, with every dashboard permission; admin of Beta."""
    sam = make_user("sam", is_staff=True, is_superuser=False)
    sam.user_permissions.add(*Permission.objects.filter(content_type__app_label="dashboard"))
    Membership.objects.create(team=other_team, user=sam, role=Role.ADMIN)
    return sam


@pytest.fixture
def root(db: Any) -> Any:
    return make_user("root", is_staff=True, is_superuser=True)


@pytest.fixture
def theirs(team: Team) -> Credential:
    return make_credential(team, name="Alpha key", base_url="http://127.0.0.1:9")


@pytest.fixture
def ours(other_team: Team) -> Credential:
    return make_credential(other_team, name="Beta key", base_url="http://127.0.0.1:9")


def url(name: str, *args: Any) -> str:
    return reverse(f"admin:dashboard_{name}", args=args)


def credential_form(credential: Credential, **changes: Any) -> dict[str, Any]:
    form = {
        "team": credential.team_id,
        "provider": credential.provider,
        "name": credential.name,
        "base_url": credential.base_url,
        "options": "{}",
        "initial-options": "{}",
        "max_concurrency": credential.max_concurrency,
        "requests_per_minute": "",
        "new_secret": "",
    }
    return {**form, **changes}


def options(html: str, name: str) -> str:
    """The <select name=...> element of a page, to look at its choices."""
    start = html.index(f'name="{name}"')
    return html[start : html.index("</select>", start)]


# --- another team's rows are missing ------------------------------------------------------------


def test_staff_cannot_list_open_change_or_delete_another_teams_credential(
    client: Client, sam: Any, ours: Credential, theirs: Credential
) -> None:
    client.force_login(sam)
    listing = client.get(url("credential_changelist")).content.decode()
    assert "Beta key" in listing and "Alpha key" not in listing
    assert ">Alpha<" not in listing  # not even in the team filter
    # Django's answer for a row that does not exist: back to the index.
    opened = client.get(url("credential_change", theirs.pk))
    assert opened.status_code == 302 and opened["Location"] == reverse("admin:index")
    changed = client.post(
        url("credential_change", theirs.pk),
        credential_form(theirs, base_url="https://evil.example"),
    )
    assert changed.status_code == 302
    deleted = client.post(url("credential_delete", theirs.pk), {"post": "yes"})
    assert deleted.status_code == 302
    bulk = client.post(
        url("credential_changelist"),
        {"action": "delete_selected", "_selected_action": [theirs.pk], "post": "yes"},
    )
    assert bulk.status_code in (200, 302)
    theirs.refresh_from_db()
    assert theirs.base_url == "http://127.0.0.1:9"
    assert not AuditEvent.objects.filter(team=theirs.team).exists()
    # Their own team's credential: theirs to change.
    mine = client.post(url("credential_change", ours.pk), credential_form(ours, max_concurrency=7))
    assert mine.status_code == 302
    assert Credential.objects.get(pk=ours.pk).max_concurrency == 7


def test_no_admin_list_or_page_shows_another_teams_rows(
    client: Client, sam: Any, team: Team, alice: Any, theirs: Credential
) -> None:
    """A row of Alpha's in every model the admin registers: none is listed
    for Sam, and each one's page is missing."""
    job = make_job(theirs, ["a prompt"], user=alice)
    comparison = Comparison.objects.create(team=team, name="Alpha's comparison")
    rows = [
        team,
        theirs,
        job,
        job.items.get(),
        JobEvent.objects.create(job=job, kind=JobEvent.Kind.NOTE, message="m", author=alice),
        live_instance(theirs),
        ModelCatalogEntry.objects.create(credential=theirs, name="m"),
        Dataset.objects.create(team=team, name="Alpha's data"),
        comparison,
        Rating.objects.create(job=job, index=0, user=alice, score=1),
        RowNote.objects.create(comparison=comparison, index=0, text="x", author=alice),
        Membership.objects.get(team=team, user=alice),
        AuditEvent.objects.create(team=team, action="credential.created"),
        ApiToken.issue(alice)[0],
    ]
    registered = {m for m in admin.site._registry if m._meta.app_label == "dashboard"}
    assert registered <= {type(row) for row in rows}, "a model without a row here"
    client.force_login(sam)
    for row in rows:
        meta = row._meta
        listing = client.get(url(f"{meta.model_name}_changelist"))
        assert listing.status_code == 200, meta.model_name
        change = url(f"{meta.model_name}_change", row.pk)
        assert f'href="{change}' not in listing.content.decode(), meta.model_name
        assert client.get(change).status_code == 302, meta.model_name


def test_a_viewer_sees_a_teams_credential_and_cannot_change_it(
    client: Client, sam: Any, team: Team, theirs: Credential
) -> None:
    Membership.objects.create(team=team, user=sam, role=Role.VIEWER)
    client.force_login(sam)
    page = client.get(url("credential_change", theirs.pk))
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    response = client.post(
        url("credential_change", theirs.pk),
        credential_form(theirs, base_url="https://evil.example"),
    )
    assert response.status_code == 403
    assert Credential.objects.get(pk=theirs.pk).base_url == "http://127.0.0.1:9"


def test_foreign_key_choices_hold_only_the_teams_one_administers(
    client: Client, sam: Any, team: Team, other_team: Team, theirs: Credential
) -> None:
    Membership.objects.create(team=team, user=sam, role=Role.MEMBER)  # a member, not admin
    client.force_login(sam)
    page = client.get(url("credential_add")).content.decode()
    choices = options(page, "team")
    assert f'value="{other_team.pk}"' in choices and f'value="{team.pk}"' not in choices
    form = {**credential_form(theirs, name="Planted", team=team.pk), "new_secret": "sk-x"}
    response = client.post(url("credential_add"), form)
    assert response.status_code == 200 and "Select a valid choice" in response.content.decode()
    assert not Credential.objects.filter(name="Planted").exists()
    # A row chosen by id (a catalog entry's credential) is held to the same teams.
    entry = {"credential": theirs.pk, "name": "m", "fetched_at_0": "2024-01-01"}
    entry["fetched_at_1"] = "00:00:00"
    response = client.post(url("modelcatalogentry_add"), entry)
    assert response.status_code == 200 and not ModelCatalogEntry.objects.exists()
    # The team autocomplete lists only teams one is in.
    Team.objects.create(name="Zeta")
    found = client.get(
        reverse("admin:autocomplete"),
        {"app_label": "dashboard", "model_name": "membership", "field_name": "team", "term": ""},
    )
    assert [row["text"] for row in found.json()["results"]] == ["Alpha", "Beta"]


# --- members: no way into another team, no raise of one's own role ------------------------------


def test_staff_cannot_add_themself_to_a_team_they_do_not_administer(
    client: Client, sam: Any, team: Team, other_team: Team
) -> None:
    client.force_login(sam)
    page = client.get(url("membership_add")).content.decode()
    assert f'value="{team.pk}"' not in options(page, "team")
    response = client.post(
        url("membership_add"), {"team": team.pk, "user": sam.pk, "role": Role.ADMIN}
    )
    assert response.status_code == 200 and "Select a valid choice" in response.content.decode()
    assert not Membership.objects.filter(team=team, user=sam).exists()
    # Into Beta, which Sam administers: through the service, audited.
    dora = make_user("dora")
    response = client.post(
        url("membership_add"), {"team": other_team.pk, "user": dora.pk, "role": Role.MEMBER}
    )
    assert response.status_code == 302
    assert Membership.objects.get(team=other_team, user=dora).role == Role.MEMBER
    assert AuditEvent.objects.get(action="member.added").details == {
        "role": "member",
        "via": "admin",
    }


def test_a_member_cannot_raise_their_own_role(client: Client, sam: Any, team: Team) -> None:
    mine = Membership.objects.create(team=team, user=sam, role=Role.MEMBER)
    client.force_login(sam)
    page = client.get(url("membership_change", mine.pk))
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    response = client.post(url("membership_change", mine.pk), {"role": Role.ADMIN})
    assert response.status_code == 403
    assert Membership.objects.get(pk=mine.pk).role == Role.MEMBER
    # Nor anyone else's in that team, nor remove them.
    alice = Membership.objects.get(team=team, role=Role.ADMIN)
    assert client.post(url("membership_change", alice.pk), {"role": "viewer"}).status_code == 403
    bob = Membership.objects.get(team=team, role=Role.MEMBER, user__username="bob")
    assert client.post(url("membership_delete", bob.pk), {"post": "yes"}).status_code == 403
    assert Membership.objects.filter(pk=bob.pk).exists()
    assert not AuditEvent.objects.exists()


# --- tokens ------------------------------------------------------------------------------------


def test_a_token_stays_with_its_user(client: Client, sam: Any, root: Any) -> None:
    token, _ = ApiToken.issue(sam, "mine")
    roots, _ = ApiToken.issue(root, "root's")
    client.force_login(sam)
    listing = client.get(url("apitoken_changelist")).content.decode()
    assert "mine" in listing and "root&#x27;s" not in listing and "root's" not in listing
    assert client.get(url("apitoken_change", roots.pk)).status_code == 302
    page = client.get(url("apitoken_change", token.pk)).content.decode()
    assert 'name="user"' not in page
    response = client.post(url("apitoken_change", token.pk), {"name": "renamed", "user": root.pk})
    assert response.status_code == 302
    token.refresh_from_db()
    assert (token.name, token.user) == ("renamed", sam)


# --- the team's own settings ---------------------------------------------------------------------


def team_form(team: Team, **changes: Any) -> dict[str, Any]:
    form = {
        "name": team.name,
        "created_at_0": team.created_at.strftime("%Y-%m-%d"),
        "created_at_1": team.created_at.strftime("%H:%M:%S"),
        "initial-created_at_0": team.created_at.strftime("%Y-%m-%d"),
        "initial-created_at_1": team.created_at.strftime("%H:%M:%S"),
        "cost_per_gb_second": team.cost_per_gb_second or "",
        "monthly_budget_usd": team.monthly_budget_usd or "",
        "memberships-TOTAL_FORMS": 0,
        "memberships-INITIAL_FORMS": 0,
    }
    return {**form, **changes}


def test_a_budget_change_in_the_team_admin_is_audited_and_saves_only_itself(
    client: Client, sam: Any, other_team: Team, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dashboard.admin import TeamAdmin

    Team.objects.filter(pk=other_team.pk).update(monthly_budget_usd=Decimal("100"))
    other_team.refresh_from_db()
    read = TeamAdmin.get_object

    def read_then_the_page_writes(self: Any, request: Any, object_id: str, from_field: Any = None):
        obj = read(self, request, object_id, from_field)
        Team.objects.filter(pk=other_team.pk).update(
            cost_per_gb_second=Decimal("0.5"), name="Renamed on the page"
        )
        return obj

    monkeypatch.setattr(TeamAdmin, "get_object", read_then_the_page_writes)
    client.force_login(sam)
    response = client.post(
        url("team_change", other_team.pk), team_form(other_team, monthly_budget_usd="250.5")
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    other_team.refresh_from_db()
    assert other_team.monthly_budget_usd == Decimal("250.50")
    assert (other_team.name, other_team.cost_per_gb_second) == (
        "Renamed on the page",
        Decimal("0.5"),
    )
    event = AuditEvent.objects.get()
    assert (event.action, event.actor, event.team) == ("team.budget_changed", sam, other_team)
    assert event.details == {"old": "100.00", "new": "250.50", "via": "admin"}


def test_the_team_admin_refuses_a_budget_the_service_refuses(
    client: Client, sam: Any, other_team: Team
) -> None:
    client.force_login(sam)
    response = client.post(
        url("team_change", other_team.pk), team_form(other_team, monthly_budget_usd="-5")
    )
    assert response.status_code == 200 and "Must be zero or more" in response.content.decode()
    assert Team.objects.get(pk=other_team.pk).monthly_budget_usd is None
    assert not AuditEvent.objects.exists()


def test_staff_change_only_teams_they_administer(
    client: Client, sam: Any, team: Team, other_team: Team
) -> None:
    Membership.objects.create(team=team, user=sam, role=Role.MEMBER)
    client.force_login(sam)
    response = client.post(url("team_change", team.pk), team_form(team, monthly_budget_usd="1"))
    assert response.status_code == 403
    assert Team.objects.get(pk=team.pk).monthly_budget_usd is None
    # Teams are made and removed by superusers.
    assert client.get(url("team_add")).status_code == 403
    assert client.post(url("team_delete", other_team.pk), {"post": "yes"}).status_code == 403
    assert Team.objects.filter(pk=other_team.pk).exists()


# --- deleting a credential: the service's guard and its one audit event --------------------------


def live_instance(credential: Credential) -> ModelInstance:
    return ModelInstance.objects.create(
        team=credential.team, credential=credential, model="m", status="running"
    )


def test_a_credential_with_a_live_instance_is_not_deleted_from_the_admin(
    client: Client, sam: Any, ours: Credential
) -> None:
    live_instance(ours)
    client.force_login(sam)
    response = client.post(url("credential_delete", ours.pk), {"post": "yes"}, follow=True)
    assert "still has 1 live model instance" in response.content.decode()
    assert "deleted successfully" not in response.content.decode()
    bulk = client.post(
        url("credential_changelist"),
        {"action": "delete_selected", "_selected_action": [ours.pk], "post": "yes"},
        follow=True,
    )
    body = bulk.content.decode()
    assert "Not deleted" in body and "still has 1 live model instance" in body
    assert "Successfully deleted" not in body
    assert Credential.objects.filter(pk=ours.pk).exists()
    assert not AuditEvent.objects.filter(action="credential.deleted").exists()
    from django.contrib.admin.models import LogEntry

    assert not LogEntry.objects.exists()


def test_a_credential_deleted_from_the_admin_is_audited_once(
    client: Client, sam: Any, ours: Credential, other_team: Team
) -> None:
    spare = make_credential(other_team, name="Spare")
    blocked = make_credential(other_team, name="Busy")
    live_instance(blocked)
    client.force_login(sam)
    response = client.post(url("credential_delete", ours.pk), {"post": "yes"})
    assert response.status_code == 302
    bulk = client.post(
        url("credential_changelist"),
        {"action": "delete_selected", "_selected_action": [spare.pk, blocked.pk], "post": "yes"},
        follow=True,
    )
    assert "Deleted 1 credential(s)" in bulk.content.decode()
    assert list(Credential.objects.filter(team=other_team)) == [blocked]
    events = AuditEvent.objects.filter(action="credential.deleted").order_by("id")
    assert [e.details for e in events] == [{"via": "admin"}, {"via": "admin"}]
    assert [e.target.split(": ")[1].split(" (")[0] for e in events] == ["Beta key", "Spare"]


# --- the admin's login is throttled as /login/ is -------------------------------------------------


class Wall:
    def __init__(self) -> None:
        self.now = timezone.now()

    def __call__(self) -> datetime:
        return self.now


def admin_login(client: Client, username: str, password: str, **meta: str) -> str:
    response = client.post(
        reverse("admin:login"),
        {"username": username, "password": password, "next": "/admin/"},
        **meta,
    )
    return response.content.decode() if response.status_code == 200 else "LOGGED IN"


def test_the_admin_login_is_throttled_like_the_login_page(
    client: Client, root: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    wall = Wall()
    monkeypatch.setattr(clock, "now", wall)
    for _ in range(throttle.FREE_PER_USER):
        assert "Please enter the correct username" in admin_login(client, "root", "wrong")
    body = admin_login(client, "root", PASSWORD)
    assert "Too many failed logins" in body and "Try again in 2 seconds" in body
    assert "_auth_user_id" not in client.session
    # The same keys as /login/: the delay holds there too.
    page = client.post(reverse("login"), {"username": "root", "password": PASSWORD})
    assert "Too many failed logins" in page.content.decode()
    wall.now += timedelta(seconds=2)
    assert admin_login(client, "root", PASSWORD) == "LOGGED IN"


def test_the_admin_login_keys_on_the_client_behind_a_trusted_proxy(
    client: Client, root: Any, settings: Any
) -> None:
    settings.DASHBOARD_TRUSTED_PROXIES = ["10.0.0.1"]
    admin_login(client, "root", "wrong", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.5")
    keys = set(throttle.LoginAttempt.objects.filter(failures=1).values_list("key", flat=True))
    assert keys == {"user:root", "addr:203.0.113.5"}
