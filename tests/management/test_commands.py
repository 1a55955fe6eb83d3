"""Management commands for operators (README: "Management commands").
run_simulators is covered with the simulators."""

from __future__ import annotations

from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command
from django.test import Client

from dashboard.core import crypto
from dashboard.models import ApiToken, AuditEvent, Credential, Membership, Team
from tests.conftest import make_credential

pytestmark = pytest.mark.django_db


def run(*args: Any) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


# --- teams and members -------------------------------------------------------------------


def test_create_team_is_idempotent() -> None:
    assert "Created: team Ops" in run("create_team", "Ops")
    assert "Exists: team Ops" in run("create_team", "  Ops ")
    assert Team.objects.filter(name="Ops").count() == 1


def test_add_member_adds_then_changes_the_role(alice: Any) -> None:
    run("create_team", "Ops")
    assert "alice is viewer in Ops" in run("add_member", "Ops", "alice", "--role", "viewer")
    assert Membership.objects.get(user=alice).role == "viewer"
    run("add_member", "Ops", "alice", "--role", "admin")
    membership = Membership.objects.get(user=alice)
    assert membership.role == "admin" and membership.team.name == "Ops"
    actions = list(AuditEvent.objects.order_by("id").values_list("action", flat=True))
    assert actions == ["member.added", "member.role_changed"]


def test_add_member_defaults_to_member(alice: Any) -> None:
    run("create_team", "Ops")
    run("add_member", "Ops", "alice")
    assert Membership.objects.get(user=alice).role == "member"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("Nope", "alice"), "No team named 'Nope'"),
        (("Ops", "nobody"), "No user named 'nobody'"),
        (("Ops", "alice", "--role", "owner"), "invalid choice"),
    ],
)
def test_add_member_refuses_unknown_names(alice: Any, args: tuple[str, ...], message: str) -> None:
    run("create_team", "Ops")
    with pytest.raises(CommandError, match=message):
        run("add_member", *args)
    assert not Membership.objects.exists()


# --- API tokens ---------------------------------------------------------------------------


def test_create_api_token_prints_a_working_token(alice: Any, team: Any) -> None:
    key = run("create_api_token", "alice").strip()
    assert key.startswith("ljd_") and "\n" not in key
    token = ApiToken.objects.get()
    assert token.user == alice and token.name == "command line"
    assert token.key_hash == ApiToken.hash(key)  # only the hash is stored
    response = Client().get("/api/v1/credentials", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200 and response.json() == []


def test_create_api_token_names_and_unknown_user(alice: Any) -> None:
    run("create_api_token", "alice", "--name", "ci")
    assert ApiToken.objects.get().name == "ci"
    with pytest.raises(CommandError, match="No user named 'ghost'"):
        run("create_api_token", "ghost")


# --- key rotation ----------------------------------------------------------------------------


@pytest.fixture
def keys(settings: Any) -> Iterator[Any]:
    """Switch DASHBOARD_ENCRYPTION_KEYS; the cached MultiFernet follows."""

    def use(*fernet_keys: str) -> None:
        settings.DASHBOARD_ENCRYPTION_KEYS = list(fernet_keys)
        crypto.multifernet.cache_clear()

    crypto.multifernet.cache_clear()
    yield use
    crypto.multifernet.cache_clear()


def stored_secrets() -> dict[int, str]:
    return dict(Credential.objects.values_list("pk", "secret"))


def new_key() -> str:
    return Fernet.generate_key().decode()


def test_rotate_re_encrypts_under_the_first_key(keys: Any, team: Any) -> None:
    old, new = new_key(), new_key()
    keys(old)
    plain = {make_credential(team, secret=f"secret-{i}").pk: f"secret-{i}" for i in range(3)}
    before = stored_secrets()

    keys(new, old)
    assert "Re-encrypted 3 secret(s)" in run("rotate_encryption_key")
    after = stored_secrets()
    assert all(after[pk] != before[pk] for pk in plain)

    keys(new)  # the old key is gone: every secret still decrypts
    for credential in Credential.objects.all():
        assert credential.reveal_secret() == plain[credential.pk]


def test_rotate_without_the_old_key_fails_and_changes_nothing(keys: Any, team: Any) -> None:
    old = new_key()
    keys(old)
    make_credential(team, secret="one")
    make_credential(team, secret="two")
    before = stored_secrets()

    keys(new_key())
    with pytest.raises(CommandError, match="cannot be decrypted"):
        run("rotate_encryption_key")
    assert stored_secrets() == before
    keys(old)
    assert sorted(c.reveal_secret() for c in Credential.objects.all()) == ["one", "two"]


def test_rotate_stops_at_a_secret_it_cannot_read(keys: Any, team: Any) -> None:
    old, current = new_key(), new_key()
    keys(current)
    readable = make_credential(team, secret="readable")
    keys(old)
    lost = make_credential(team, secret="lost")
    before = stored_secrets()

    keys(current)  # the key that encrypted "lost" is missing
    with pytest.raises(
        CommandError, match=f"Credentials {lost.pk} cannot be decrypted.*nothing was changed"
    ):
        run("rotate_encryption_key")
    assert stored_secrets() == before  # all or nothing: the readable one is untouched too
    readable.refresh_from_db()
    assert readable.reveal_secret() == "readable"


def test_rotate_with_no_credentials(keys: Any, db: Any) -> None:
    keys(new_key())
    assert "Re-encrypted 0 secret(s)" in run("rotate_encryption_key")


def test_add_member_cannot_demote_the_last_admin(alice: Any) -> None:
    """The command goes through the team services: the last admin stays."""
    run("create_team", "Ops")
    run("add_member", "Ops", "alice", "--role", "admin")
    with pytest.raises(CommandError, match="last admin of Ops"):
        run("add_member", "Ops", "alice", "--role", "viewer")
    assert Membership.objects.get(user=alice).role == "admin"
    assert list(AuditEvent.objects.values_list("details__via", flat=True)) == ["command"]
