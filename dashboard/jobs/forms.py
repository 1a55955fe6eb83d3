"""The new-job form. Its fields turn the page's text into values (numbers,
JSON); every rule of a job spec is :func:`dashboard.jobs.spec.build_spec`'s,
whose messages it shows on its fields, so the page and the API refuse a job
for the same reasons in the same words."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from django import forms
from django.core.validators import ProhibitNullCharactersValidator

from dashboard.core.formfields import JSONObjectField
from dashboard.instances.catalog import ModelChoices, model_choices
from dashboard.models import Credential, Job, Team
from providers import Provider, get_provider_class
from providers.batch import supports_batch

from .spec import MAX_MODEL, NUMBERS, OPTIONAL, SpecError, build_spec, mode_problem

#: The optional spec fields, in the order the form shows them.
SPEC_FIELDS = OPTIONAL

PROMPT_SPLIT_CHOICES = [
    ("lines", "One prompt per line"),
    ("single", "The whole text is one prompt"),
    ("separator", "Prompts separated by a line with only ---"),
]
#: Three pasted lines are three prompts; a single line is one prompt either way.
PROMPT_SPLIT_DEFAULT = "lines"

#: The job modes as the form offers them (for a credential with a batch API).
MODE_CHOICES = [
    (Job.Mode.ONLINE, "Online: one call per prompt, results as they come"),
    (Job.Mode.BATCH, "Batch: about half the price, results within 24 hours"),
]


def split_prompts(text: str, mode: str) -> list[str]:
    text = text.replace("\r\n", "\n")
    if mode == "lines":
        return [line.strip() for line in text.split("\n") if line.strip()]
    if mode == "separator":
        parts = [part.strip() for part in text.split("\n---\n")]
        return [part for part in parts if part]
    return [text.strip()] if text.strip() else []


def spec_text(**kwargs: Any) -> forms.CharField:
    """A text field whose rules (NUL, length) are build_spec's, so its words
    are the ones shown; the form only hands the text on."""
    field = forms.CharField(**kwargs)
    field.validators = [
        v for v in field.validators if not isinstance(v, ProhibitNullCharactersValidator)
    ]
    return field


def spec_number(name: str) -> forms.Field:
    """A number field: the form parses the text, build_spec checks the range
    (the browser is told it too, as min and max)."""
    rule = NUMBERS[name]
    whole = rule.kind is int
    attrs = {"min": rule.minimum, "max": rule.maximum, "step": 1 if whole else "any"}
    field_class = forms.IntegerField if whole else forms.FloatField
    return field_class(required=False, widget=forms.NumberInput(attrs=attrs))


class JobForm(forms.Form):
    credential = forms.ModelChoiceField(queryset=Credential.objects.none(), empty_label=None)
    model = spec_text(
        widget=forms.TextInput(attrs={"list": "model-suggestions", "maxlength": MAX_MODEL})
    )
    prompts = spec_text(widget=forms.Textarea(attrs={"rows": 6}), strip=False)
    split = forms.ChoiceField(
        choices=PROMPT_SPLIT_CHOICES, initial=PROMPT_SPLIT_DEFAULT, label="Several prompts?"
    )
    question = spec_text(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Applied to every prompt (MyMagic's question; the prompts become its list_inputs).",
    )
    system_prompt = spec_text(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    max_tokens = spec_number("max_tokens")
    temperature = spec_number("temperature")
    top_p = spec_number("top_p")
    top_k = spec_number("top_k")
    repetition_penalty = spec_number("repetition_penalty")
    output_schema = JSONObjectField(
        required=False,
        help_text='Structured output: a JSON Schema, or a type map like {"age": "int", "units": "str"}.',
    )
    options = JSONObjectField(required=False, help_text="Provider-specific fields as JSON.")
    stream = forms.BooleanField(required=False, help_text="Stream the output as it is generated.")
    mode = forms.ChoiceField(
        choices=MODE_CHOICES,
        initial=Job.Mode.ONLINE,
        required=False,
        widget=forms.RadioSelect,
        help_text="Batch sends the prompts to the provider's own batch API: outside the "
        "online rate limits, at the batch price.",
    )
    cache = forms.BooleanField(
        required=False,
        label="Use the cache",
        help_text="Prompts your team already ran with the same model and parameters take "
        "that answer without a call, at no cost.",
    )

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
        return [self[name] for name in shown_fields(get_provider_class(credential.provider))]

    def offers_batch(self) -> bool:
        """Whether the chosen credential's provider has a batch API (the form
        shows the mode only then)."""
        credential = self.selected_credential()
        return credential is not None and supports_batch(get_provider_class(credential.provider))

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
        data["mode"] = data.get("mode") or Job.Mode.ONLINE
        credential: Credential | None = data.get("credential")
        if credential is None:
            return data
        problem = mode_problem(credential, data["mode"])
        if problem:
            self.add_error("mode", problem)
        # The page posts only the fields it shows for this credential's provider:
        # a value of another provider's field is stale (a credential changed
        # without a reload), not a request.
        cls = get_provider_class(credential.provider)
        values = {name: data.get(name) for name in shown_fields(cls)}
        values.update(
            model=data.get("model"), prompts=data.get("prompt_list"), options=data.get("options")
        )
        try:
            data["spec"] = build_spec(credential, values)
        except SpecError as exc:
            # A field the form refused already says why; prompts not made yet
            # (a dataset's template is wrong) have their own error.
            known = set(self.errors) | ({"prompts"} if "prompt_list" not in data else set())
            add_spec_errors(self, exc, skip=known)
        return data


def shown_fields(cls: type[Provider]) -> list[str]:
    """The spec fields the form shows (and reads) for a provider: those it uses."""
    names = [name for name in OPTIONAL if name in cls.supported_fields]
    return [*names, "stream"] if cls.supports_stream else names


def add_spec_errors(form: forms.Form, exc: SpecError, *, skip: Collection[str] = ()) -> None:
    """build_spec's messages on the form's fields (those it has no field for,
    above the form, named)."""
    for field, messages in exc.fields.items():
        if field in skip:
            continue
        for message in messages:
            if field in form.fields:
                form.add_error(field, message)
            else:
                form.add_error(None, message if field == "__all__" else f"{field}: {message}")


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
