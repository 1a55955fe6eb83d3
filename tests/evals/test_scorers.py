"""Scorers: each type's pass, fail and unscored verdicts, the time limit on
regular expressions, and the rules a job's scorers follow at submit."""

from __future__ import annotations

import time
from typing import Any

import pytest

from dashboard.evals import scorers as scorers_module
from dashboard.evals.scorers import ScorerError, normalize_scorers, parse_number, verdict
from tests.conftest import make_credential


def v(spec: dict[str, Any], output: Any, fields: dict[str, Any] | None = None, **kw: Any) -> Any:
    return verdict({"name": spec["type"], **spec}, output, fields, **kw)


@pytest.mark.parametrize(
    ("spec", "output", "fields", "passed"),
    [
        ({"type": "equals", "value": "Paris"}, " Paris\n", None, True),
        ({"type": "equals", "value": "Paris"}, "paris", None, False),
        ({"type": "equals", "expected_column": "answer"}, "42", {"answer": "42"}, True),
        ({"type": "equals", "value": {"a": 1}}, {"a": 1}, None, True),
        ({"type": "contains", "value": "Paris"}, "It is Paris.", None, True),
        ({"type": "contains", "value": "Paris"}, "It is paris.", None, False),
        ({"type": "icontains", "value": "PARIS"}, "It is paris.", None, True),
        ({"type": "icontains", "expected_column": "city"}, "Lyon", {"city": "paris"}, False),
        ({"type": "regex", "value": r"^\d{3}-\d{4}$"}, "555-1234", None, True),
        ({"type": "regex", "value": r"^\d{3}-\d{4}$"}, "call 555-1234", None, False),
        ({"type": "regex", "expected_column": "p"}, "abc", {"p": "b+"}, True),
        (
            {"type": "json_field", "path": "a.b.0.c", "value": 3},
            {"a": {"b": [{"c": 3}]}},
            None,
            True,
        ),
        (
            {"type": "json_field", "path": "a.b.0.c", "value": 3},
            {"a": {"b": [{"c": 4}]}},
            None,
            False,
        ),
        ({"type": "json_field", "path": "n", "expected_column": "n"}, '{"n": 7}', {"n": "7"}, True),
        ({"type": "numeric", "value": 42}, "The answer is 42.", None, True),
        ({"type": "numeric", "value": 1234.5}, "1,234.5", None, True),
        ({"type": "numeric", "value": 10, "tolerance": 0.5}, "10.4", None, True),
        ({"type": "numeric", "value": 10, "tolerance": 0.5}, "10.6", None, False),
        ({"type": "numeric", "expected_column": "x"}, 3, {"x": "3.0"}, True),
        ({"type": "length", "min": 2, "max": 5}, "abcd", None, True),
        ({"type": "length", "min": 2, "max": 5}, "abcdef", None, False),
        ({"type": "length", "min": 2}, "a", None, False),
    ],
)
def test_verdicts(spec: dict[str, Any], output: Any, fields: Any, passed: bool) -> None:
    ok, score, reason = v(spec, output, fields)
    assert ok is passed, reason
    assert score == (1.0 if passed else 0.0)
    assert bool(reason) is (not passed)  # a failure says why


def test_valid_is_the_schema_verdict() -> None:
    assert v({"type": "valid"}, {"a": 1}, valid=True) == (True, 1.0, "")
    assert v({"type": "valid"}, {"a": 1}, valid=False, validation_error="a: not a string") == (
        False,
        0.0,
        "a: not a string",
    )
    assert v({"type": "valid"}, "text", valid=None)[0] is None  # no schema: unscored


@pytest.mark.parametrize(
    ("spec", "output", "fields", "reason"),
    [
        ({"type": "equals", "value": "x"}, None, None, "no output"),
        ({"type": "length", "max": 3}, None, None, "no output"),
        (
            {"type": "contains", "expected_column": "c"},
            "abc",
            {"c": ""},
            'no expected value in column "c"',
        ),
        (
            {"type": "contains", "expected_column": "c"},
            "abc",
            {},
            'no expected value in column "c"',
        ),
        (
            {"type": "json_field", "path": "a.b", "value": 1},
            {"a": {}},
            None,
            'no "a.b" in the output',
        ),
        (
            {"type": "json_field", "path": "a.5", "value": 1},
            {"a": [1]},
            None,
            'no "a.5" in the output',
        ),
        (
            {"type": "json_field", "path": "a", "value": 1},
            "not json",
            None,
            "the output is not JSON",
        ),
        ({"type": "numeric", "value": 1}, "no digits here", None, "no number in the output"),
        (
            {"type": "numeric", "expected_column": "x"},
            "3",
            {"x": "three"},
            'the expected value "three" is not a number',
        ),
        (
            {"type": "regex", "expected_column": "p"},
            "abc",
            {"p": "("},
            "the pattern does not compile",
        ),
    ],
)
def test_unscored_with_the_reason(
    spec: dict[str, Any], output: Any, fields: Any, reason: str
) -> None:
    ok, score, why = v(spec, output, fields)
    assert (ok, score) == (None, None)
    assert why.startswith(reason), why


def test_a_catastrophic_regex_ends_within_its_limit() -> None:
    """``^(a|aa)+$`` backtracks exponentially on a's followed by a "!" (the
    regex package copes with ``^(a+)+$`` itself): the row is unscored once
    the time limit passes, and the worker goes on."""
    for pattern in (r"^(a+)+$", r"^(a|aa)+$"):
        started = time.monotonic()
        ok, score, reason = v({"type": "regex", "value": pattern}, "a" * 40 + "!")
        elapsed = time.monotonic() - started
        assert elapsed < scorers_module.REGEX_TIMEOUT + 0.4, (pattern, elapsed)
        assert ok in (False, None)
    assert (ok, score) == (None, None)
    assert reason == "regex took longer than 0.1 s"


def test_numbers_from_text() -> None:
    assert parse_number("1,234.5") == 1234.5
    assert parse_number(" 42 ") == 42
    assert parse_number("12%") == 12
    assert parse_number("Step 1: add. Step 2: the total is 17.") == 17  # the last number
    assert parse_number("-2e3") == -2000
    assert parse_number(True) is None
    assert parse_number("nothing") is None


# --- the rules at submit ------------------------------------------------------------------------


def refused(raw: Any, columns: list[str] | None = None, team: Any = None) -> list[str]:
    with pytest.raises(ScorerError) as caught:
        normalize_scorers(raw, columns=columns, team=team)
    assert caught.value.fields == {"scorers": caught.value.messages}
    return caught.value.messages


def test_names_default_to_the_type_and_are_kept_in_order() -> None:
    scorers = normalize_scorers(
        [{"type": "contains", "value": "x"}, {"type": "length", "max": 10, "name": "short"}],
        columns=None,
        team=None,
    )
    assert scorers == [
        {"type": "contains", "value": "x", "name": "contains"},
        {"type": "length", "max": 10, "name": "short"},
    ]
    assert normalize_scorers(None, columns=None, team=None) == []


def test_refusals_name_the_scorer() -> None:
    assert refused([{"type": "equalz", "name": "exact", "value": "x"}]) == [
        'scorers[0] "exact": unknown type "equalz"; one of equals, contains, icontains, regex, '
        "json_field, numeric, length, valid, judge."
    ]
    [message] = refused(
        [{"type": "equals", "value": "a"}, {"type": "regex", "name": "r", "value": "(unclosed"}]
    )
    assert message.startswith('scorers[1] "r": the regular expression does not compile')
    [message] = refused(
        [{"type": "equals", "expected_column": "answr"}], columns=["question", "answer"]
    )
    assert message == (
        'scorers[0] "equals": the dataset has no column "answr"; its columns: question, answer.'
    )
    [message] = refused([{"type": "equals", "expected_column": "answer"}], columns=None)
    assert "needs a dataset" in message
    [message] = refused(
        [{"type": "contains", "value": "a"}, {"type": "equals", "value": "b", "name": "contains"}]
    )
    assert message.startswith('scorers[1] "contains": another scorer of the job has this name')
    assert refused([{"type": "equals"}]) == [
        'scorers[0] "equals": equals needs value or expected_column (one of them).'
    ]
    assert refused([{"type": "length", "min": 1, "colour": "red"}]) == [
        'scorers[0] "length": length takes no colour.'
    ]
    assert "min is more than max" in refused([{"type": "length", "min": 5, "max": 2}])[0]
    assert "tolerance" in refused([{"type": "numeric", "value": 1, "tolerance": -1}])[0]
    assert refused("equals") == ["scorers must be a list of objects with a type."]
    assert refused([3]) == ["scorers[0]: must be an object with a type."]


@pytest.mark.django_db
def test_a_judge_takes_only_a_credential_of_the_team(team: Any, other_team: Any) -> None:
    mine, theirs = make_credential(team, "openai"), make_credential(other_team)
    judge = {"type": "judge", "credential": mine.pk, "model": "m", "rubric": "Is it polite?"}
    assert normalize_scorers([judge], columns=None, team=team)[0]["name"] == "judge"
    [message] = refused([{**judge, "credential": theirs.pk}], team=team)
    assert message == f'scorers "judge": no credential {theirs.pk} in the job\'s team.'
    assert (
        "judge needs rubric"
        in refused([{"type": "judge", "credential": mine.pk, "model": "m"}], team=team)[0]
    )
