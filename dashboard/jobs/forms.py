"""The job form, and the checks of a job spec that the form and the API share.

Every field is validated with a message that says what is wrong; the provider
adapter's own validation runs at submit too, so a job the provider cannot
express is refused before it is saved."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django import forms
from django.conf import settings

from dashboard.core import structured
from dashboard.core.formfields import JSONObjectField
from dashboard.instances.catalog import ModelChoices, model_choices
from dashboard.models import Credential, Job, Team
from providers import JobSpec, Provider, ProviderError, get_provider_class

PROMPT_SPLIT_CHOICES = [
    ("lines", "One prompt per line"),
    ("single", "The whole text is one prompt"),
    ("separator", "Prompts separated by a line with only ---"),
]
#: Three pasted lines are three prompts; a single line is one prompt either way.
PROMPT_SPLIT_DEFAULT = "lines"


def split_prompts(text: str, mode: str) -> list[str]:
    text = text.replace("\r\n", "\n")
    if mode == "lines":
        return [line.strip() for line in text.split("\n") if line.strip()]
    if mode == "separator":
        parts = [part.strip() for part in text.split("\n---\n")]
        return [part for part in parts if part]
    return [text.strip()] if text.strip() else []


class JobForm(forms.Form):
    credential = forms.ModelChoiceField(queryset=Credential.objects.none(), empty_label=None)
    model = forms.CharField(
        max_length=200, widget=forms.TextInput(attrs={"list": "model-suggestions"})
    )
    prompts = forms.CharField(widget=forms.Textarea(attrs={"rows": 6}), strip=False)
    split = forms.ChoiceField(
        choices=PROMPT_SPLIT_CHOICES, initial=PROMPT_SPLIT_DEFAULT, label="Several prompts?"
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
        if not hasattr(self, "_selected"):
            self._selected = self._find_credential()
        return self._selected

    def _find_credential(self) -> Credential | None:
        raw = self.data.get("credential") if self.is_bound else self.initial.get("credential")
        queryset = self.fields["credential"].queryset
        if isinstance(raw, Credential):
            return raw
        try:
            found = queryset.filter(pk=int(raw)).first() if raw else None
        except (TypeError, ValueError):
            found = None
        return found or queryset.first()

    def prompt_count(self) -> int:
        """How many prompts the text makes as split now (app.js keeps it live)."""
        text = self["prompts"].value() or ""
        mode = self["split"].value() or PROMPT_SPLIT_DEFAULT
        return len(split_prompts(str(text), str(mode)))

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

    def model_choices(self) -> ModelChoices | None:
        """The models shown beside the field (catalog.model_choices), unfiltered."""
        if not hasattr(self, "_choices"):
            credential = self.selected_credential()
            self._choices = model_choices(credential) if credential else None
        return self._choices

    def model_suggestions(self) -> list[str]:
        """The datalist's names: the same as the visible list."""
        choices = self.model_choices()
        return choices.names if choices else []

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


def credential_for_new_job(*, team: Team, user: Any) -> Credential | None:
    """The credential the new-job form starts on: the one of the user's latest
    job in this team, if it is still there; else the first by name that needs
    no preparation (no model instance to load first, not refused by its
    provider); else the first by name."""
    credentials = Credential.objects.filter(team=team).order_by("name")
    last = (
        Job.objects.filter(team=team, created_by=user, credential__isnull=False)
        .order_by("-created_at", "-id")
        .values_list("credential_id", flat=True)
        .first()
    )
    if last is not None:
        found = credentials.filter(pk=last).first()
        if found is not None:
            return found
    ready = (
        c
        for c in credentials
        if not get_provider_class(c.provider).has_instances
        and c.health != Credential.Health.AUTH_FAILED
    )
    return next(ready, None) or credentials.first()


def model_for_new_job(
    *, credential: Credential, user: Any, choices: ModelChoices | None = None
) -> str:
    """The model the form starts with on this credential: the user's latest
    on it, else the first the model list offers (the team's recent models,
    then the documented ones, then the provider's own list)."""
    last = (
        Job.objects.filter(credential=credential, created_by=user)
        .order_by("-created_at", "-id")
        .values_list("model", flat=True)
        .first()
    )
    return last or (choices or model_choices(credential)).first


def check_job_spec(credential: Credential, spec: JobSpec) -> dict[str, list[str]]:
    """Field errors for a job spec on this credential: the per-job prompt limits,
    an output schema the worker could not run safely, then the provider
    adapter's own validation. Empty when the job can run.

    Shared by every way a job is submitted, so a page and a script are refused
    for the same reasons with the same words."""
    problem = prompt_limits_error(spec.prompts)
    if problem:
        return {"prompts": [problem]}
    problem = structured.schema_problem(spec.output_schema)
    if problem:
        return {"output_schema": [problem]}
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
