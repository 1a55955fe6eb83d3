"""The team page: members and roles, the last-admin rule, the cost rate, and
the audit trail."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone

from dashboard.accounts.audit import audit
from dashboard.accounts.services import TeamRuleError, member_remove, member_set_role
from dashboard.models import AuditEvent, Membership, Role, Team
from tests.conftest import make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def carol(team: Team) -> User:
    """A viewer of the team."""
    user = make_user("carol")
    Membership.objects.create(team=team, user=user, role=Role.VIEWER)
    return user


@pytest.fixture
def dave(db: Any) -> User:
    """Has an account, in no team yet."""
    return make_user("dave")


def login(client: Any, user: User) -> Any:
    client.force_login(user)
    return client


def membership(team: Team, user: User) -> Membership:
    return Membership.objects.get(team=team, user=user)


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


# --- who sees what ---------------------------------------------------------------------------


def test_everyone_in_the_team_sees_the_members(
    client: Any, team: Team, alice: User, bob: User, carol: User
) -> None:
    for user in (alice, bob, carol):
        page = login(client, user).get(reverse("team")).content.decode()
        for name in ("alice", "bob", "carol"):
            assert f">{name}" in page or f"{name} " in page
        assert "Admin" in page and "Viewer" in page


@pytest.mark.parametrize("who", ["bob", "carol"])
def test_members_and_viewers_see_the_list_read_only(
    client: Any, team: Team, carol: User, who: str
) -> None:
    page = login(client, User.objects.get(username=who)).get(reverse("team")).content.decode()
    assert "Only team admins" in page
    assert reverse("team_member_add") not in page
    assert "team_member_remove" not in page and "/remove" not in page and "/role" not in page
    assert reverse("audit") not in page


def test_admin_sees_the_management_forms(client: Any, team: Team, alice: User, bob: User) -> None:
    page = login(client, alice).get(reverse("team")).content.decode()
    assert reverse("team_member_add") in page
    assert reverse("team_member_remove", args=[membership(team, bob).pk]) in page
    assert reverse("team_member_role", args=[membership(team, bob).pk]) in page
    assert reverse("team_settings") in page and reverse("audit") in page


@pytest.mark.parametrize("who", ["bob", "carol"])
def test_members_and_viewers_cannot_manage(
    client: Any, team: Team, alice: User, carol: User, dave: User, who: str
) -> None:
    login(client, User.objects.get(username=who))
    target = membership(team, alice)
    attempts = [
        (reverse("team_member_add"), {"username": "dave", "role": "admin"}),
        (reverse("team_member_role", args=[target.pk]), {"role": "viewer"}),
        (reverse("team_member_remove", args=[target.pk]), {}),
        (reverse("team_settings"), {"cost_per_gb_second": "1"}),
    ]
    for url, data in attempts:
        assert client.post(url, data).status_code == 403, url
    assert not Membership.objects.filter(user=dave).exists()
    assert membership(team, alice).role == Role.ADMIN
    assert Team.objects.get(pk=team.pk).cost_per_gb_second is None
    assert not AuditEvent.objects.exists()


def test_management_urls_are_post_only(client: Any, team: Team, alice: User, bob: User) -> None:
    login(client, alice)
    pk = membership(team, bob).pk
    for url in (
        reverse("team_member_add"),
        reverse("team_member_role", args=[pk]),
        reverse("team_member_remove", args=[pk]),
        reverse("team_settings"),
    ):
        assert client.get(url).status_code == 405


def test_no_team_is_forbidden_not_an_error(client: Any, dave: User) -> None:
    assert login(client, dave).get(reverse("team")).status_code == 403


# --- admins manage members --------------------------------------------------------------------


def test_admin_adds_a_member_by_username(client: Any, team: Team, alice: User, dave: User) -> None:
    response = login(client, alice).post(
        reverse("team_member_add"),
        {"username": " dave ", "role": "viewer", "team": team.pk},
        follow=True,
    )
    assert "dave added as viewer." in messages_of(response)
    assert membership(team, dave).role == Role.VIEWER
    event = AuditEvent.objects.get(action="member.added")
    assert event.actor == alice and event.team == team and "dave" in event.target
    assert event.details == {"role": "viewer"}


def test_adding_an_unknown_user_or_a_member_again_says_why(
    client: Any, team: Team, alice: User
) -> None:
    login(client, alice)
    response = client.post(reverse("team_member_add"), {"username": "nobody", "role": "member"})
    assert response.status_code == 400
    assert "There is no user named “nobody”" in response.content.decode()
    assert 'value="nobody"' in response.content.decode()  # the input is kept
    response = client.post(reverse("team_member_add"), {"username": "bob", "role": "admin"})
    assert (
        response.status_code == 400
        and "bob is already a member (member)" in response.content.decode()
    )
    response = client.post(reverse("team_member_add"), {"username": "bob", "role": "owner"})
    assert response.status_code == 400
    assert membership(team, User.objects.get(username="bob")).role == Role.MEMBER
    assert not AuditEvent.objects.exists()


def test_admin_changes_a_role(client: Any, team: Team, alice: User, bob: User) -> None:
    target = membership(team, bob)
    response = login(client, alice).post(
        reverse("team_member_role", args=[target.pk]), {"role": "admin"}, follow=True
    )
    assert "bob is now admin." in messages_of(response)
    assert membership(team, bob).role == Role.ADMIN
    event = AuditEvent.objects.get(action="member.role_changed")
    assert event.details == {"old": "member", "new": "admin"} and "bob" in event.target
    response = client.post(
        reverse("team_member_role", args=[target.pk]), {"role": "admin"}, follow=True
    )
    assert "bob already was admin." in messages_of(response)
    assert AuditEvent.objects.filter(action="member.role_changed").count() == 1


def test_admin_removes_a_member(client: Any, team: Team, alice: User, bob: User) -> None:
    target = membership(team, bob)
    response = login(client, alice).post(
        reverse("team_member_remove", args=[target.pk]), follow=True
    )
    assert "bob removed from Alpha." in messages_of(response)
    assert not Membership.objects.filter(pk=target.pk).exists()
    event = AuditEvent.objects.get(action="member.removed")
    assert event.details == {"role": "member"} and "bob" in event.target
    # Removed means removed: bob no longer reaches the team.
    assert login(client, bob).get(reverse("team")).status_code == 403


def test_a_form_for_another_team_is_refused(
    client: Any, team: Team, alice: User, dave: User
) -> None:
    other = Team.objects.create(name="Gamma")
    Membership.objects.create(team=other, user=alice, role=Role.ADMIN)
    response = login(client, alice).post(
        reverse("team_member_add"),
        {"username": "dave", "role": "member", "team": other.pk},
        follow=True,
    )
    assert "You switched teams in another tab" in " ".join(messages_of(response))
    assert not Membership.objects.filter(user=dave).exists()


# --- the last admin ---------------------------------------------------------------------------


def test_the_last_admin_cannot_be_demoted_or_removed(client: Any, team: Team, alice: User) -> None:
    mine = membership(team, alice)
    login(client, alice)
    response = client.post(
        reverse("team_member_role", args=[mine.pk]), {"role": "member"}, follow=True
    )
    assert "alice is the last admin of Alpha; make another member admin first." in messages_of(
        response
    )
    response = client.post(reverse("team_member_remove", args=[mine.pk]), follow=True)
    assert any("alice is the last admin of Alpha" in m for m in messages_of(response))
    assert membership(team, alice).role == Role.ADMIN
    assert not AuditEvent.objects.exists()


def test_with_two_admins_one_may_step_down_and_then_the_other_may_not(
    team: Team, alice: User, bob: User
) -> None:
    member_set_role(membership=membership(team, bob), role=Role.ADMIN, actor=alice)
    assert member_set_role(membership=membership(team, alice), role=Role.VIEWER, actor=alice)
    with pytest.raises(TeamRuleError, match="bob is the last admin"):
        member_set_role(membership=membership(team, bob), role=Role.MEMBER, actor=bob)
    with pytest.raises(TeamRuleError, match="bob is the last admin"):
        member_remove(membership=membership(team, bob), actor=bob)
    assert membership(team, bob).role == Role.ADMIN


def test_an_admin_who_leaves_goes_home(client: Any, team: Team, alice: User, bob: User) -> None:
    Membership.objects.filter(team=team, user=bob).update(role=Role.ADMIN)
    response = login(client, alice).post(
        reverse("team_member_remove", args=[membership(team, alice).pk])
    )
    assert response.status_code == 302 and response["Location"] == reverse("home")
    assert not Membership.objects.filter(team=team, user=alice).exists()


def test_a_stale_membership_is_reported_not_crashed(team: Team, alice: User, bob: User) -> None:
    stale = membership(team, bob)
    Membership.objects.filter(pk=stale.pk).delete()
    with pytest.raises(TeamRuleError, match="already removed"):
        member_remove(membership=stale, actor=alice)


# --- the cost rate --------------------------------------------------------------------------------


def test_admin_sets_and_clears_the_cost_rate(
    client: Any, team: Team, alice: User, bob: User
) -> None:
    login(client, alice)
    response = client.post(
        reverse("team_settings"), {"cost_per_gb_second": "0.00001250"}, follow=True
    )
    assert "Cost rate set to 0.00001250 per GB-second." in messages_of(response)
    assert Team.objects.get(pk=team.pk).cost_per_gb_second == Decimal("0.0000125")
    client.post(reverse("team_settings"), {"cost_per_gb_second": ""})
    assert Team.objects.get(pk=team.pk).cost_per_gb_second is None
    changes = list(AuditEvent.objects.filter(action="team.cost_rate_changed").order_by("id"))
    assert [e.details for e in changes] == [
        {"old": None, "new": "0.00001250"},
        {"old": "0.00001250", "new": None},
    ]
    page = login(client, bob).get(reverse("team")).content.decode()
    assert "Not set." in page


def test_a_negative_cost_rate_is_refused(client: Any, team: Team, alice: User) -> None:
    response = login(client, alice).post(reverse("team_settings"), {"cost_per_gb_second": "-1"})
    assert response.status_code == 400
    assert "greater than or equal to 0" in response.content.decode()
    assert Team.objects.get(pk=team.pk).cost_per_gb_second is None


# --- the audit trail ---------------------------------------------------------------------------------


def test_audit_page_is_for_admins_only(
    client: Any, team: Team, alice: User, bob: User, carol: User, dave: User
) -> None:
    assert login(client, alice).get(reverse("audit")).status_code == 200
    for user in (bob, carol, dave):
        assert login(client, user).get(reverse("audit")).status_code == 403


def test_audit_page_shows_actor_action_target_details_newest_first(
    client: Any, team: Team, alice: User, bob: User
) -> None:
    login(client, alice).post(
        reverse("team_member_role", args=[membership(team, bob).pk]), {"role": "viewer"}
    )
    client.post(reverse("team_settings"), {"cost_per_gb_second": "2"})
    page = client.get(reverse("audit")).content.decode()
    assert page.index("team.cost_rate_changed") < page.index("member.role_changed")
    assert "alice" in page and "bob" in page
    assert "old:" in page and "member" in page and "viewer" in page


def test_audit_page_shows_only_the_team_and_pages_through(
    client: Any, team: Team, alice: User, other_team: Team, charlie: User
) -> None:
    now = timezone.now()
    for i in range(60):
        event = audit(alice, team, "job.submitted", f"job {i}")
        AuditEvent.objects.filter(pk=event.pk).update(created_at=now - timedelta(minutes=i))
    audit(charlie, other_team, "credential.created", "theirs-marker")
    page = login(client, alice).get(reverse("audit")).content.decode()
    assert page.count('id="audit-') == 50 and "theirs-marker" not in page
    assert ">job 0<" in page and ">job 49<" in page and ">job 50<" not in page
    older = page.split('rel="next"')[0].rsplit('href="', 1)[1].split('"')[0]
    page = client.get(older).content.decode()
    assert page.count('id="audit-') == 10 and ">job 50<" in page and "← Newest" in page
    assert "theirs-marker" in login(client, charlie).get(reverse("audit")).content.decode()


def test_audit_events_are_append_only(team: Team, alice: User) -> None:
    event = audit(alice, team, "member.added", "bob", role="member")
    event.action = "member.removed"
    with pytest.raises(ValueError, match="append-only"):
        event.save()
    assert AuditEvent.objects.get(pk=event.pk).action == "member.added"
