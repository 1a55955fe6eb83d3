"""Adding a credential: the form that validates it for the page and the API,
and the save that records who added it. The secret is encrypted at rest and
never shown again."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django import forms

from dashboard.core import netguard
from dashboard.core.formfields import JSONObjectField
from dashboard.models import Credential, Team
from providers import PROVIDER_CHOICES, get_provider_class

from .audit import audit


def has_nul(value: Any) -> bool:
    """True when a JSON value holds a NUL character in any key or string."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(has_nul(k) or has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_nul(item) for item in value)
    return False


class CredentialForm(forms.ModelForm):
    secret = forms.CharField(
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Stored encrypted; it is never shown again.",
        max_length=4096,
    )
    base_url = forms.URLField(
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
        ]

    def __init__(self, *args: Any, team: Team, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.team = team
        self.fields["provider"].choices = PROVIDER_CHOICES
        self.fields["max_concurrency"].min_value = 1
        self.fields["max_concurrency"].widget.attrs.update(min=1, max=256)

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if (
            Credential.objects.filter(team=self.team, name=name)
            .exclude(pk=self.instance.pk)
            .exists()
        ):
            raise forms.ValidationError("Your team already has a credential with this name.")
        return name

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

    def clean_max_concurrency(self) -> int:
        value = self.cleaned_data["max_concurrency"]
        if not 1 <= value <= 256:
            raise forms.ValidationError("Between 1 and 256.")
        return value

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        provider = data.get("provider")
        if provider and not data.get("base_url"):
            data["base_url"] = get_provider_class(provider).default_base_url
        if data.get("base_url"):
            try:
                netguard.check_url(data["base_url"])
            except netguard.BlockedHostError as exc:
                self.add_error("base_url", str(exc))
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


def credential_update(
    credential: Credential, *, actor: Any, fields: Iterable[str], via: str = "web"
) -> list[str]:
    """Save the edited ``fields`` of ``credential`` (their new values are on the
    instance) and nothing else: the workers write its other columns (health,
    circuit, leases, rate window) at any time, and a save of the whole row would
    put back what they were when the form opened. Audited with the names of
    the fields, never their values. Returns the fields saved."""
    changed = sorted(set(fields))
    if not changed:
        return []
    credential.save(update_fields=changed)
    extra = {"via": via} if via != "web" else {}
    audit(actor, credential.team, "credential.updated", credential, fields=changed, **extra)
    return changed
