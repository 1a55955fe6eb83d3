"""Prompt templates: {column} placeholders and {{ }} escapes only; a
placeholder that names no column is a clear error; no attribute or index
access whatever the text says."""

from __future__ import annotations

from typing import Any

import pytest

from dashboard.datasets.parsing import Limits, read_records
from dashboard.datasets.services import dataset_create, inputs_from_dataset, template_preview
from dashboard.datasets.template import PromptTemplate, TemplateError


def render(text: str, row: dict[str, Any]) -> str:
    return PromptTemplate.parse(text).render(row)


def test_placeholders_escapes_and_values() -> None:
    row = {"name": "Ada", "age": 36, "tags": ["a", "b"], "ok": True, "none": None}
    assert render("Hi {name} ({ age }), {{literal}} {tags} {ok} [{none}]", row) == (
        'Hi Ada (36), {literal} ["a", "b"] true []'
    )
    assert PromptTemplate.parse("{a}{b}{a}").names == ["a", "b"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x {name", "“{” at character 3 is not closed"),
        ("x } y", "A lone “}” at character 3"),
        ("{}", "empty placeholder"),
        ("{a{b}}", "not closed"),
    ],
)
def test_malformed_templates(text: str, message: str) -> None:
    with pytest.raises(TemplateError) as caught:
        PromptTemplate.parse(text)
    assert message.lower() in str(caught.value).lower()


@pytest.mark.parametrize("text", ["{name.__class__}", "{name[0]}", "{0}", "{name!r}"])
def test_no_attribute_or_index_access(text: str) -> None:
    """What str.format would evaluate is just a name here, and names no column."""
    template = PromptTemplate.parse(text)
    with pytest.raises(TemplateError) as caught:
        template.check(["name"])
    assert "names no column" in str(caught.value)
    assert template.render({"name": "Ada"}) == ""


def test_unknown_placeholder_says_which_and_lists_the_columns() -> None:
    with pytest.raises(TemplateError) as caught:
        PromptTemplate.parse("{nmae} is {age}").check(["name", "age"])
    assert str(caught.value) == "{nmae} names no column of the dataset; the columns are: name, age."


def test_a_template_naming_no_column() -> None:
    with pytest.raises(TemplateError, match="names no column"):
        PromptTemplate.parse("plain text").check(["a"])


@pytest.mark.django_db
def test_rendered_over_a_dataset(team: Any) -> None:
    rows = read_records(
        [{"city": "Paris", "n": 1}, {"city": "Rome", "n": 2}, {"city": "Oslo"}, {"city": "Bern"}],
        Limits.from_settings(),
    )
    dataset = dataset_create(team=team, name="cities", rows=rows)
    inputs = inputs_from_dataset(dataset, "Describe {city} in {n} words.")
    assert inputs.prompts[:3] == [
        "Describe Paris in 1 words.",
        "Describe Rome in 2 words.",
        "Describe Oslo in  words.",
    ]
    assert inputs.input_fields is not None and inputs.input_fields[1] == {"city": "Rome", "n": 2}
    assert template_preview(dataset, "{city}!") == ["Paris!", "Rome!", "Oslo!"]
    with pytest.raises(TemplateError, match="Row 3 gives an empty prompt"):
        inputs_from_dataset(dataset, "{n}")
