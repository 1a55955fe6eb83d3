"""Forms for credentials and jobs. Every field is validated with a message that
says what is wrong; the provider adapter's own validation runs at submit too,
so a job the provider cannot express is refused before it is saved."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from django import forms
from django.conf import settings

from providers import PROVIDER_CHOICES, JobSpec, Provider, ProviderError, get_provider_class

from . import netguard
from .models import Credential, Job, Team

PROMPT_SPLIT_CHOICES = [
    ("single", "The whole text is one prompt"),
    ("lines", "One prompt per line"),
    ("separator", "Prompts separated by a line with only ---"),
]


def split_prompts(text: str, mode: str) -> list[str]:
    text = text.replace("\r\n", "\n")
    if mode == "lines":
        return [line.strip() for line in text.split("\n") if line.strip()]
    if mode == "separator":
        parts = [part.strip() for part in text.split("\n---\n")]
        return [part for part in parts if part]
    return [text.strip()] if text.strip() else []


class JSONObjectField(forms.CharField):
    """A textarea holding a JSON object (empty means none)."""

    widget = forms.Textarea(attrs={"rows": 3, "spellcheck": "false", "class": "mono"})

    def to_python(self, value: Any) -> dict[str, Any] | None:
        value = super().to_python(value)
        if not value or not value.strip():
            return None
        try:
            data = json.loads(value)
        except ValueError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise forms.ValidationError("Must be a JSON object ({...}).")
        return data

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, dict):
            return json.dumps(value, indent=2)
        return value


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
        from .audit import audit

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


class JobForm(forms.Form):
    credential = forms.ModelChoiceField(queryset=Credential.objects.none(), empty_label=None)
    model = forms.CharField(
        max_length=200, widget=forms.TextInput(attrs={"list": "model-suggestions"})
    )
    prompts = forms.CharField(widget=forms.Textarea(attrs={"rows": 6}), strip=False)
    split = forms.ChoiceField(
        choices=PROMPT_SPLIT_CHOICES, initial="single", label="Several prompts?"
    )
    question = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Applied to every prompt (MyMagic's question; the prompts become its list_inputs).",
    )
    system_prompt = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    max_tokens = forms.IntegerField(required=False, min_value=1, max_value=1_000_000)
    temperature = forms.FloatField(required=False, min_value=0, max_value=5)
    top_p = forms.FloatField(required=False, min_value=0, max_value=1)
    top_k = forms.IntegerField(required=False, min_value=0, max_value=100_000)
    repetition_penalty = forms.FloatField(required=False, min_value=0, max_value=10)
    output_schema = JSONObjectField(
        required=False,
        help_text='Structured output: a JSON Schema, or a type map like {"age": "int", "units": "str"}.',
    )
    options = JSONObjectField(required=False, help_text="Provider-specific fields as JSON.")
    stream = forms.BooleanField(required=False, help_text="Stream the output as it is generated.")

    #: Fields every provider shows; the others only when the provider uses them.
    COMMON = ("credential", "model", "prompts", "split", "options")

    def __init__(self, *args: Any, team: Team, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.team = team
        self.fields["credential"].queryset = Credential.objects.filter(team=team).order_by("name")

    def selected_credential(self) -> Credential | None:
        raw = self.data.get("credential") if self.is_bound else self.initial.get("credential")
        queryset = self.fields["credential"].queryset
        if isinstance(raw, Credential):
            return raw
        try:
            return queryset.filter(pk=int(raw)).first() if raw else queryset.first()
        except (TypeError, ValueError):
            return queryset.first()

    def provider_fields(self) -> list[forms.BoundField]:
        credential = self.selected_credential()
        if credential is None:
            return []
        cls = get_provider_class(credential.provider)
        names = [
            name for name in self.fields if name not in self.COMMON and name in cls.supported_fields
        ]
        if getattr(cls, "supports_stream", False):
            names.append("stream")
        return [self[name] for name in names]

    def model_suggestions(self) -> list[str]:
        credential = self.selected_credential()
        if credential is None:
            return []
        documented = list(get_provider_class(credential.provider).documented_models)
        used = (
            Job.objects.filter(team=self.team, provider=credential.provider)
            .order_by()
            .values_list("model", flat=True)
            .distinct()[:50]
        )
        return sorted(set(documented) | set(used))

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if "prompts" in data:
            data["prompt_list"] = split_prompts(data["prompts"], data.get("split") or "single")
            problem = prompt_limits_error(data["prompt_list"])
            if problem:
                self.add_error("prompts", problem)
        if self.errors or "prompt_list" not in data:
            return data
        credential: Credential = data["credential"]
        allowed = get_provider_class(credential.provider).supported_fields | {"stream"}
        spec = spec_from_data(data, allowed)
        for field, messages in check_job_spec(credential, spec).items():
            for message in messages:
                self.add_error(field if field in self.fields else None, message)
        data["spec"] = spec
        return data


def check_job_spec(credential: Credential, spec: JobSpec) -> dict[str, list[str]]:
    """Field errors for a job spec on this credential: the per-job prompt limits,
    then the provider adapter's own validation. Empty when the job can run.

    Shared by every way a job is submitted, so a page and a script are refused
    for the same reasons with the same words."""
    problem = prompt_limits_error(spec.prompts)
    if problem:
        return {"prompts": [problem]}
    cls = get_provider_class(credential.provider)
    adapter: Provider = cls(secret="-", base_url=credential.base_url, options=credential.options)
    with adapter:
        try:
            adapter.validate(spec)
        except ProviderError as exc:
            field = getattr(exc, "field_name", None) or "__all__"
            return {field: [exc.message]}
    return {}


def prompt_limits_error(prompts: Sequence[str]) -> str | None:
    """JobForm's per-job limits (settings.MAX_PROMPTS_PER_JOB, MAX_PROMPT_CHARS)."""
    if not prompts:
        return "Enter at least one prompt."
    if len(prompts) > settings.MAX_PROMPTS_PER_JOB:
        return f"{len(prompts):,} prompts: at most {settings.MAX_PROMPTS_PER_JOB:,} per job."
    if max(len(p) for p in prompts) > settings.MAX_PROMPT_CHARS:
        return f"A prompt is too long: at most {settings.MAX_PROMPT_CHARS:,} characters each."
    if sum(len(p) for p in prompts) > settings.MAX_PROMPT_CHARS * 10:
        return f"The prompts are too long: at most {settings.MAX_PROMPT_CHARS * 10:,} characters in all."
    return None


SPEC_FIELDS = (
    "question",
    "system_prompt",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "repetition_penalty",
    "output_schema",
)


def spec_from_data(data: dict[str, Any], allowed: frozenset[str] | set[str]) -> JobSpec:
    """A JobSpec from cleaned form data, keeping only fields the provider uses."""
    values: dict[str, Any] = {
        "model": data["model"].strip(),
        "prompts": data["prompt_list"],
        "options": data.get("options") or {},
        "stream": bool(data.get("stream")) and "stream" in allowed,
    }
    for name in SPEC_FIELDS:
        value = data.get(name)
        if name in allowed and value not in (None, ""):
            values[name] = value
    return JobSpec(**values)
