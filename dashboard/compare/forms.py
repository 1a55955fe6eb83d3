"""Forms that take a dataset as well as pasted prompts: the new-job form (the
jobs package's own form plus a dataset and a prompt template) and the
comparison form with its targets (a small formset, 2 to 8)."""

from __future__ import annotations

import copy
from typing import Any

from django import forms
from django.conf import settings

from dashboard.datasets.services import Inputs, inputs_from_dataset
from dashboard.datasets.template import TemplateError
from dashboard.jobs.forms import PROMPT_SPLIT_CHOICES, JobForm, add_spec_errors, split_prompts
from dashboard.jobs.spec import SpecError, build_spec, mode_problem, prompts_error
from dashboard.models import Credential, Dataset, Job, Team
from providers import JobSpec

from .services import MAX_NAME, MAX_TARGETS, MIN_TARGETS, inputs_of_job

TEMPLATE_HELP = (
    "One prompt per row: {column} is replaced by the row's value ({{ and }} for literal braces)."
)


def dataset_field(team: Team) -> forms.ModelChoiceField:
    return forms.ModelChoiceField(
        queryset=Dataset.objects.filter(team=team).order_by("-created_at", "-id"),
        required=False,
        empty_label="— none —",
        label="Dataset",
    )


def template_field() -> forms.CharField:
    return forms.CharField(
        required=False,
        strip=False,
        max_length=settings.MAX_PROMPT_CHARS,
        label="Prompt template",
        help_text=TEMPLATE_HELP,
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}),
    )


def dataset_inputs(form: forms.Form, dataset: Dataset, text: str) -> Inputs | None:
    """The dataset's rows rendered, or the template's error on its field."""
    try:
        return inputs_from_dataset(dataset, text)
    except TemplateError as exc:
        form.add_error("prompt_template", str(exc))
        return None


class DatasetJobForm(JobForm):
    """JobForm, with a dataset and a prompt template instead of pasted prompts."""

    def __init__(self, *args: Any, team: Team, **kwargs: Any) -> None:
        super().__init__(*args, team=team, **kwargs)
        self.fields["prompts"].required = False
        self.fields["dataset"] = dataset_field(team)
        self.fields["prompt_template"] = template_field()
        self.dataset_inputs: Inputs | None = None

    def clean(self) -> dict[str, Any]:
        data = self.cleaned_data
        dataset = data.get("dataset")
        if dataset is not None:
            if (data.get("prompts") or "").strip():
                self.add_error("prompts", "Either paste prompts or choose a dataset, not both.")
            data.pop("prompts", None)
            self.dataset_inputs = dataset_inputs(self, dataset, data.get("prompt_template", ""))
            if self.dataset_inputs is not None:
                data["prompt_list"] = self.dataset_inputs.prompts
        elif (data.get("prompt_template") or "").strip():
            self.add_error("dataset", "Choose the dataset the template runs over.")
        return super().clean()

    def inputs(self) -> Inputs:
        return self.dataset_inputs or Inputs(prompts=list(self.cleaned_data["prompt_list"]))


# --- comparisons ---------------------------------------------------------------------------------


class ComparisonForm(forms.Form):
    """A comparison's name and its inputs: pasted prompts, a dataset and a
    template, or the prompts of a finished job (``from_job``)."""

    name = forms.CharField(max_length=MAX_NAME)
    prompts = forms.CharField(required=False, strip=False, widget=forms.Textarea(attrs={"rows": 5}))
    split = forms.ChoiceField(
        choices=PROMPT_SPLIT_CHOICES, initial="lines", label="Several prompts?"
    )
    from_job = forms.IntegerField(required=False, widget=forms.HiddenInput, min_value=1)

    def __init__(self, *args: Any, team: Team, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.team = team
        self.fields["dataset"] = dataset_field(team)
        self.fields["prompt_template"] = template_field()
        self.inputs: Inputs | None = None

    def source_job(self) -> Job | None:
        raw = self.data.get("from_job") if self.is_bound else self.initial.get("from_job")
        try:
            pk = int(raw) if raw not in (None, "") else None
        except (TypeError, ValueError):
            return None
        if pk is None or not 0 < pk < 2**63:
            return None
        return Job.objects.filter(team=self.team, pk=pk).first()

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if "\x00" in name:
            raise forms.ValidationError("The name may not contain NUL characters.")
        return name

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        job = self.source_job() if data.get("from_job") else None
        dataset = data.get("dataset")
        prompts = (data.get("prompts") or "").strip()
        if data.get("from_job") and job is None:
            self.add_error(None, "That job is not one of your team's.")
        elif job is not None:
            self.inputs = inputs_of_job(job)
        elif dataset is not None:
            if prompts:
                self.add_error("prompts", "Either paste prompts or choose a dataset, not both.")
            self.inputs = dataset_inputs(self, dataset, data.get("prompt_template", ""))
        elif prompts:
            self.inputs = Inputs(split_prompts(data["prompts"], data.get("split") or "lines"))
        else:
            self.add_error("prompts", "Paste prompts, or choose a dataset and write a template.")
        if self.inputs is not None:
            # Every target runs over these: said once here, not once per target.
            problem = prompts_error(self.inputs.prompts)
            if problem:
                self.add_error("dataset" if self.inputs.dataset else "prompts", problem)
                self.inputs = None
        return data


class TargetForm(forms.Form):
    """One target: a credential, a model, its mode (online, or batch where the
    provider has a batch API: a comparison may mix them) and the job
    parameters (build_spec refuses by name those the provider does not use,
    not silently dropped)."""

    PARAMS = (
        "question",
        "system_prompt",
        "max_tokens",
        "temperature",
        "top_p",
        "output_schema",
        "options",
    )

    credential = forms.ModelChoiceField(queryset=Credential.objects.none(), empty_label=None)
    model = copy.deepcopy(JobForm.base_fields["model"])
    question = copy.deepcopy(JobForm.base_fields["question"])
    system_prompt = copy.deepcopy(JobForm.base_fields["system_prompt"])
    max_tokens = copy.deepcopy(JobForm.base_fields["max_tokens"])
    temperature = copy.deepcopy(JobForm.base_fields["temperature"])
    top_p = copy.deepcopy(JobForm.base_fields["top_p"])
    output_schema = copy.deepcopy(JobForm.base_fields["output_schema"])
    options = copy.deepcopy(JobForm.base_fields["options"])
    mode = forms.ChoiceField(
        choices=[(Job.Mode.ONLINE, "Online"), (Job.Mode.BATCH, "Batch (OpenAI, Anthropic)")],
        initial=Job.Mode.ONLINE,
        required=False,
        help_text="Batch: about half the price, results within 24 hours.",
    )

    def __init__(self, *args: Any, team: Team, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["credential"].queryset = Credential.objects.filter(team=team).order_by("name")
        self.fields["model"].widget.attrs.pop("list", None)
        self.fields["question"].help_text = "MyMagic: applied to every prompt."
        for name in ("output_schema", "options"):
            self.fields[name].widget = forms.Textarea(
                attrs={"rows": 2, "spellcheck": "false", "class": "mono"}
            )

    def spec_for(self, prompts: list[str] | None) -> JobSpec | None:
        """The target's JobSpec over ``prompts``, or None with the errors on the
        form (``prompts`` None: the comparison's inputs are wrong, and say so
        themselves; the target's own fields are still checked)."""
        data = self.cleaned_data
        credential: Credential | None = data.get("credential")
        if credential is None:
            return None
        data["mode"] = data.get("mode") or Job.Mode.ONLINE
        problem = mode_problem(credential, data["mode"])
        if problem:
            self.add_error("mode", problem)
        values = {name: data.get(name) for name in ("model", *self.PARAMS)}
        try:
            spec = build_spec(credential, {**values, "prompts": prompts})
        except SpecError as exc:
            add_spec_errors(
                self, exc, skip={*self.errors, "prompts"} if prompts is None else set(self.errors)
            )
            return None
        return None if self.errors else spec


class BaseTargetFormSet(forms.BaseFormSet):
    def __init__(self, *args: Any, team: Team, **kwargs: Any) -> None:
        super().__init__(*args, form_kwargs={"team": team}, **kwargs)


TargetFormSet = forms.formset_factory(
    TargetForm,
    formset=BaseTargetFormSet,
    extra=0,
    min_num=MIN_TARGETS,
    max_num=MAX_TARGETS,
    absolute_max=MAX_TARGETS,
    validate_min=True,
    validate_max=True,
)
