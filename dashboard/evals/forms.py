"""The new-job form's scorers: a JSON list in a textarea, checked by the same
rules as the API (``normalize_scorers``), its refusals shown on the field."""

from __future__ import annotations

from typing import Any, TypeVar

from django import forms

from .scorers import ScorerError, normalize_scorers

F = TypeVar("F", bound=forms.Form)

SCORERS_HELP = (
    'Checks on every output, as JSON: e.g. [{"type": "contains", "value": "Paris"}, '
    '{"type": "equals", "expected_column": "answer", "name": "exact"}]. Types: equals, '
    "contains, icontains, regex, json_field, numeric, length, valid, judge."
)


class ScorersField(forms.JSONField):
    """JSON in a textarea that starts empty: no scorers is an empty box, not
    the word null."""

    def prepare_value(self, value: Any) -> Any:
        return "" if value is None or value == "null" else super().prepare_value(value)


def add_scorers_field(form: F) -> F:
    form.fields["scorers"] = ScorersField(
        required=False,
        label="Scorers",
        help_text=SCORERS_HELP,
        widget=forms.Textarea(attrs={"rows": 3, "class": "mono", "spellcheck": "false"}),
    )
    return form


def scorers_clean(form: Any, team: Any) -> list[dict[str, Any]] | None:
    """The form's scorers normalized (after ``is_valid``), or None with the
    refusal added to the field."""
    inputs = form.inputs()
    try:
        return normalize_scorers(
            form.cleaned_data.get("scorers") or None,
            columns=inputs.columns if inputs.dataset is not None else None,
            team=team,
        )
    except ScorerError as exc:
        for message in exc.messages:
            form.add_error("scorers", message)
        return None
