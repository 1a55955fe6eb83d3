"""Credentials: the forms that add and edit one (for the page and the API),
the saves that record who did it, and the connection test. The secret is
encrypted at rest and never shown again, not even to the admin replacing it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from django import forms
from django.db import transaction
from django.views.decorators.debug import sensitive_variables

from dashboard.core import clock, netguard
from dashboard.core.connect import build_provider, credential_redact
from dashboard.core.formfields import JSONObjectField, has_nul
from dashboard.core.health import credential_record_health
from dashboard.models import Credential, Team
from providers import (
    PROVIDER_CHOICES,
    ConnectionCheck,
    ErrorKind,
    ProviderError,
    get_provider_class,
)
from providers.batch import supports_batch

from .audit import audit

MAX_CONCURRENCY = 2000
#: The largest requests-per-minute and tokens-per-minute limits a credential may set.
MAX_RPM = 1_000_000
MAX_TPM = 1_000_000_000


def clean_credential_name(team: Team, name: str, credential: Credential) -> str:
    name = name.strip()
    if Credential.objects.filter(team=team, name=name).exclude(pk=credential.pk).exists():
        raise forms.ValidationError("Your team already has a credential with this name.")
    return name


def clean_max_concurrency(value: int) -> int:
    if not 1 <= value <= MAX_CONCURRENCY:
        raise forms.ValidationError(f"Between 1 and {MAX_CONCURRENCY}.")
    return value


def clean_per_minute(value: int | None, most: int) -> int | None:
    """An rpm/tpm limit: empty (none), or 1 to ``most``."""
    if value is None:
        return None
    if not 1 <= value <= most:
        raise forms.ValidationError(f"Between 1 and {most:,}, or empty for no limit.")
    return value


class PerMinuteFields(forms.ModelForm):
    """The rpm and tpm fields both credential forms share."""

    def setup_limits(self) -> None:
        self.fields["max_concurrency"].min_value = 1
        self.fields["max_concurrency"].widget.attrs.update(min=1, max=MAX_CONCURRENCY)
        rpm, tpm = self.fields["requests_per_minute"], self.fields["tokens_per_minute"]
        rpm.label, tpm.label = "Requests per minute (rpm)", "Tokens per minute (tpm)"
        rpm.help_text = "Shared by every job and worker on this credential. Empty: no limit."
        tpm.help_text = (
            "Each call counts its prompt's estimated tokens plus the output it may use. "
            "Empty: no limit."
        )
        rpm.widget.attrs.update(min=1, max=MAX_RPM)
        tpm.widget.attrs.update(min=1, max=MAX_TPM)

    def clean_max_concurrency(self) -> int:
        return clean_max_concurrency(self.cleaned_data["max_concurrency"])

    def clean_requests_per_minute(self) -> int | None:
        return clean_per_minute(self.cleaned_data.get("requests_per_minute"), MAX_RPM)

    def clean_tokens_per_minute(self) -> int | None:
        return clean_per_minute(self.cleaned_data.get("tokens_per_minute"), MAX_TPM)


def base_url_problem(url: str) -> str:
    """Why calls to ``url`` are refused ("" when they may be made)."""
    try:
        netguard.check_url(url)
    except netguard.BlockedHostError as exc:
        return str(exc)
    return ""


def origin(url: str) -> tuple[str, str, int | None]:
    """Scheme, host and port of ``url`` (the port a scheme implies when none is given)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(scheme)


class CredentialForm(PerMinuteFields):
    secret = forms.CharField(
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Stored encrypted; it is never shown again.",
        max_length=4096,
    )
    base_url = forms.URLField(
        label="Base URL",
        required=False,
        max_length=500,
        assume_scheme="https",
        help_text="Leave empty for the provider's public endpoint.",
    )
    options = JSONObjectField(required=False, help_text="Provider-specific settings as JSON.")

    class Meta:
        model = Credential
        fields = [
            "provider",
            "name",
            "secret",
            "base_url",
            "options",
            "max_concurrency",
            "requests_per_minute",
            "tokens_per_minute",
        ]

    def __init__(self, *args: Any, team: Team, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.team = team
        self.fields["provider"].choices = PROVIDER_CHOICES
        self.setup_limits()

    def clean_name(self) -> str:
        return clean_credential_name(self.team, self.cleaned_data["name"], self.instance)

    def clean_secret(self) -> str:
        secret = self.cleaned_data["secret"].strip()
        if not secret:
            raise forms.ValidationError("The secret is required.")
        return secret

    def clean_options(self) -> dict[str, Any] | None:
        options = self.cleaned_data.get("options")
        if has_nul(options):
            # PostgreSQL's jsonb cannot hold \u0000: refused here, not as a 500.
            raise forms.ValidationError("Options may not contain NUL (\\u0000) characters.")
        return options

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        provider = data.get("provider")
        if provider and not data.get("base_url"):
            data["base_url"] = get_provider_class(provider).default_base_url
        if data.get("base_url") and (problem := base_url_problem(data["base_url"])):
            self.add_error("base_url", problem)
        data["options"] = data.get("options") or {}
        return data

    def save_for(self, user: Any, *, via: str = "web") -> Credential:
        """Save the new credential as ``user``'s, with its audit event."""
        credential = self.save(commit=False)
        credential.created_by = user
        credential.save()
        extra = {"via": via} if via != "web" else {}
        audit(
            user, self.team, "credential.created", credential, provider=credential.provider, **extra
        )
        return credential

    def save(self, commit: bool = True) -> Credential:
        credential = super().save(commit=False)
        credential.team = self.team
        credential.base_url = self.cleaned_data["base_url"]
        credential.options = self.cleaned_data["options"]
        if commit:
            credential.save()
        return credential


class CredentialEditForm(PerMinuteFields):
    """An admin's edit of a credential: name, base URL, limits, and a new
    secret (empty keeps the stored one, which is never shown)."""

    base_url = forms.URLField(
        label="Base URL",
        required=False,
        max_length=500,
        assume_scheme="https",
        help_text="Leave empty for the provider's public endpoint. Jobs already "
        "submitted are polled at the new address.",
    )
    new_secret = forms.CharField(
        required=False,
        label="New secret",
        max_length=4096,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Replaces the stored secret, which is never shown. Leave empty to keep it.",
    )

    class Meta:
        model = Credential
        fields = [
            "name",
            "base_url",
            "max_concurrency",
            "requests_per_minute",
            "tokens_per_minute",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.setup_limits()
        self.stored_base_url = self.instance.base_url

    def clean_name(self) -> str:
        return clean_credential_name(self.instance.team, self.cleaned_data["name"], self.instance)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        url = data.get("base_url")
        if (
            url
            and origin(url) != origin(self.stored_base_url)
            and not data.get("new_secret")
            and "new_secret" not in self.errors
        ):
            # The stored secret was given for the old host; a "Test connection"
            # or a job would hand it to the new one, whoever runs it.
            self.add_error(
                "new_secret",
                f"The base URL moves to another host ({urlsplit(url).netloc}): enter the "
                "secret for it here. The stored secret is only sent to the host it was "
                "given for.",
            )
        return data

    def clean_base_url(self) -> str:
        url = (
            self.cleaned_data.get("base_url")
            or get_provider_class(self.instance.provider).default_base_url
        )
        if problem := base_url_problem(url):
            raise forms.ValidationError(problem)
        return url

    @sensitive_variables("secret")
    def clean_new_secret(self) -> str:
        secret = self.cleaned_data.get("new_secret") or ""
        if secret and not secret.strip():
            raise forms.ValidationError("The new secret is empty.")
        return secret.strip()

    def changed_columns(self) -> list[str]:
        columns = [name for name in self.changed_data if name in self.Meta.fields]
        if self.cleaned_data.get("new_secret"):
            columns.append("secret")
        return columns

    def save_for(self, user: Any, *, via: str = "web") -> list[str]:
        """Save what changed (nothing else: see :func:`credential_update`)."""
        credential = self.instance  # the form's values are on it after validation
        if self.cleaned_data.get("new_secret"):
            credential.secret = self.cleaned_data["new_secret"]
        return credential_update(credential, actor=user, fields=self.changed_columns(), via=via)


#: Columns that describe how calls with the old secret or base URL went.
_VERDICT_RESET: dict[str, Any] = {
    "health": Credential.Health.UNKNOWN,
    "health_detail": "",
    "health_checked_at": None,
    "consecutive_failures": 0,
    "circuit_open_until": None,
}


def credential_update(
    credential: Credential, *, actor: Any, fields: Iterable[str], via: str = "web"
) -> list[str]:
    """Save the edited ``fields`` of ``credential`` (their new values are on the
    instance; "secret" for a replaced secret) and nothing else: the workers
    write its other columns (health, circuit, leases, rate window) at any time,
    and a save of the whole row would put back what they were when the form
    opened. A new secret or base URL also clears the health and the circuit:
    they were about the old one. Audited with the names of the fields, never
    their values. Returns the fields saved."""
    changed = sorted(set(fields))
    if not changed:
        return []
    columns = list(changed)
    if {"secret", "base_url"} & set(changed):
        for name, value in _VERDICT_RESET.items():
            setattr(credential, name, value)
        columns += list(_VERDICT_RESET)
    credential.save(update_fields=columns)
    extra = {"via": via} if via != "web" else {}
    audit(actor, credential.team, "credential.updated", credential, fields=changed, **extra)
    return changed


class CredentialInUse(Exception):
    """The credential may not be deleted now; the message says why and what to do."""


def credential_delete(credential: Credential, *, user: Any, via: str = "web") -> None:
    """Delete the credential, audited (its jobs stay in the history, under
    the name they copied). Refused with CredentialInUse while it has live
    model instances: they would go on running, and billing, with nothing
    left here to shut them down."""
    with transaction.atomic():
        blocker = credential.delete_blocker()
        if blocker:
            raise CredentialInUse(blocker)
        extra = {"via": via} if via != "web" else {}
        audit(user, credential.team, "credential.deleted", credential, **extra)
        credential.delete()


# --- test connection ----------------------------------------------------------------------


class BilledCheckNotConfirmed(ValueError):
    """The provider bills the call a connection check makes: ask first."""


def credential_check_is_billed(credential: Credential) -> bool:
    return bool(get_provider_class(credential.provider).connection_check_billed)


def credential_check_model(credential: Credential) -> str:
    """The model a billed check asks for when the user names none."""
    return get_provider_class(credential.provider).connection_check_model


def credential_test(
    credential: Credential,
    *,
    actor: Any,
    model: str | None = None,
    confirm_billed: bool = False,
    via: str = "web",
    transport: Any = None,
) -> dict[str, Any]:
    """Try the credential with the provider's cheapest documented call and
    record the outcome as its health. A check the provider bills runs only
    with ``confirm_billed`` (else BilledCheckNotConfirmed, before any call);
    ``model`` names the model a billed check asks (else the adapter's
    default). Returns ``{"ok", "detail", "latency_ms", "billed",
    "auth_failed", "checked_at"}``; never raises a ProviderError."""
    label = credential.get_provider_display()
    if credential_check_is_billed(credential) and not confirm_billed:
        raise BilledCheckNotConfirmed(
            f"testing a {label} credential sends a short request that may be billed; "
            "confirm it to run the test."
        )
    model = (model or "").strip()
    if len(model) > 200 or "\x00" in model:
        raise ValueError("A model name has at most 200 characters and no NUL.")
    check = _check(credential, model or None, transport)
    detail = credential_redact(credential, check.detail)
    credential_record_health(
        credential.pk, ok=check.ok, detail=detail, auth_failed=check.auth_failed
    )
    extra = {"via": via} if via != "web" else {}
    audit(
        actor,
        credential.team,
        "credential.tested",
        credential,
        ok=check.ok,
        billed=check.billed,
        **extra,
    )
    checked_at: datetime = clock.now()
    return {
        "ok": check.ok,
        "detail": detail,
        "latency_ms": check.latency_ms,
        "billed": check.billed,
        "auth_failed": check.auth_failed,
        "checked_at": checked_at,
    }


def _check(credential: Credential, model: str | None, transport: Any) -> ConnectionCheck:
    try:
        provider = build_provider(credential, transport=transport)
    except ProviderError as exc:  # a secret that cannot be decrypted, a refused base URL
        return ConnectionCheck(
            ok=False,
            detail=exc.message,
            latency_ms=0,
            billed=False,
            auth_failed=exc.kind is ErrorKind.AUTH,
        )
    with provider:
        check = provider.check_connection(model)
        if check.ok and supports_batch(provider):
            check = replace(check, detail=f"{check.detail} {batch_words(provider)}")
        return check


def batch_words(provider: Any) -> str:
    """Whether the provider's batch API answers, for the connection check's
    message (kept as the credential's health detail, shown on its page): an
    OpenAI-compatible server may lack the files and batches endpoints;
    where the adapter cannot ask (Anthropic's is always there) it is available."""
    available = getattr(provider, "batch_available", None)
    if available is None:
        return "Batch API: available."
    try:
        found = available()
    except ProviderError as exc:
        return f"Batch API: could not be checked ({exc.message})."
    return "Batch API: available." if found else "Batch API: not available on this server."
