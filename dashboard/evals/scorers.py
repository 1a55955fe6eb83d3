"""Scorers: what each checks on an item's output, and the rules a job's list
of scorers must follow at submit.

A scorer is a dict with a ``type`` and a ``name`` (unique in the job; the
type by default). Its verdict on one item is ``(passed, score, reason)``:
``passed`` None means the row could not be scored (no output, a bad JSON
path, no expected value, a regular expression over its time limit), and the
reason says why. Scoring is plain Python over the item's output, its dataset
row (``input_fields``) and its schema verdict: no database (but the judge's
credential check at submit), no network.

The judge (an LLM answering ``{"pass", "score", "reason"}``, JUDGE_SCHEMA)
is checked here, its model's structured output too; its calls are a job of
their own (``dashboard.evals.judge``), so it gets no verdict here.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from typing import Any

import regex

from dashboard.jobs.spec import SpecError, build_spec
from dashboard.models import Credential
from providers import get_provider_class

#: (passed, score, reason): passed None when the row could not be scored.
Verdict = tuple[bool | None, float | None, str]

#: A regular expression gets this long on one row (seconds), then the row is unscored.
REGEX_TIMEOUT = 0.1
#: Longest pattern, name and rubric accepted.
MAX_PATTERN = 2000
MAX_NAME = 100
MAX_RUBRIC = 10_000
#: A job has at most this many scorers.
MAX_SCORERS = 20
#: Reasons are kept this short.
MAX_REASON = 500

#: Against a fixed ``value`` or a dataset column (``expected_column``).
EXPECTING = ("equals", "contains", "icontains", "regex", "json_field", "numeric")
#: Cheap, computed as the item completes; the judge is not.
CHEAP = (*EXPECTING, "length", "valid")
TYPES = (*CHEAP, "judge")
#: The keys each type takes besides ``type`` and ``name`` (required, optional).
KEYS: dict[str, tuple[set[str], set[str]]] = {
    "equals": (set(), {"value", "expected_column"}),
    "contains": (set(), {"value", "expected_column"}),
    "icontains": (set(), {"value", "expected_column"}),
    "regex": (set(), {"value", "expected_column"}),
    "json_field": ({"path"}, {"value", "expected_column"}),
    "numeric": (set(), {"value", "expected_column", "tolerance"}),
    "length": (set(), {"min", "max"}),
    "valid": (set(), set()),
    "judge": ({"credential", "model", "rubric"}, {"value", "expected_column"}),
}
#: What a judge answers, as structured output.
JUDGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "pass": {"type": "boolean"},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "reason": {"type": "string"},
    },
    "required": ["pass", "score", "reason"],
}


class ScorerError(Exception):
    """The scorers of a submission are refused: ``fields`` has every message,
    under ``scorers``, each naming the scorer by its place and name."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__("; ".join(messages))
        self.messages = messages
        self.fields = {"scorers": messages}


# --- the rules at submit ----------------------------------------------------------------------


def normalize_scorers(
    raw: Any,
    *,
    columns: list[str] | None,
    team: Any,
    taken: list[str] | tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """The scorers of a submission, checked and normalized (each with its
    ``name``), or ScorerError naming every scorer that is refused. ``columns``
    are the dataset's (None: the job has no dataset); ``taken`` are names the
    job already has (scorers added later). A judge's credential must be the
    team's (one query, only when there is a judge)."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ScorerError(["scorers must be a list of objects with a type."])
    if len(raw) > MAX_SCORERS:
        raise ScorerError([f"At most {MAX_SCORERS} scorers, not {len(raw)}."])
    messages: list[str] = []
    scorers: list[dict[str, Any]] = []
    names = set(taken)
    for position, spec in enumerate(raw):
        label = f"scorers[{position}]"
        if not isinstance(spec, dict):
            messages.append(f"{label}: must be an object with a type.")
            continue
        kind = spec.get("type")
        name = spec.get("name", kind)
        if isinstance(name, str):
            label += f" {json.dumps(name, ensure_ascii=False)}"
        problems = _problems(spec, columns)
        if not problems:
            if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
                problems.append(f"name must be text of 1 to {MAX_NAME} characters.")
            elif name in names:
                problems.append("another scorer of the job has this name; give each its own.")
        messages += [f"{label}: {problem}" for problem in problems]
        if problems:
            continue
        names.add(name)
        scorers.append({**spec, "name": name.strip()})
    judges = [s for s in scorers if s["type"] == "judge"]
    if judges and not messages:
        messages += _judge_credentials(judges, team)
    if messages:
        raise ScorerError(messages)
    return scorers


def _problems(spec: dict[str, Any], columns: list[str] | None) -> list[str]:
    kind = spec.get("type")
    if kind not in KEYS:
        return [
            f"unknown type {json.dumps(kind, ensure_ascii=False)}; one of {', '.join(TYPES)}."
            if isinstance(kind, str)
            else f"type is required: one of {', '.join(TYPES)}."
        ]
    required, optional = KEYS[kind]
    given = set(spec) - {"type", "name"}
    problems = []
    if extra := sorted(given - required - optional):
        problems.append(f"{kind} takes no {', '.join(extra)}.")
    if missing := sorted(required - given):
        problems.append(f"{kind} needs {', '.join(missing)}.")
    if kind in EXPECTING:
        problems += _expected_problems(spec, columns)
    if kind == "json_field" and "path" in spec:
        path = spec["path"]
        if not isinstance(path, str) or not path.strip() or len(path) > MAX_PATTERN:
            problems.append('path must be a dotted path like "answer" or "items.0.name".')
    if kind == "numeric":
        if "value" in spec and not _is_number(spec["value"]):
            problems.append("value must be a number.")
        tolerance = spec.get("tolerance", 0)
        if not _is_number(tolerance) or tolerance < 0:
            problems.append("tolerance must be a number of 0 or more.")
    if kind == "length":
        bounds = [spec.get("min"), spec.get("max")]
        if bounds == [None, None]:
            problems.append("length needs min, max or both.")
        for bound in ("min", "max"):
            value = spec.get(bound)
            if value is not None and not (_is_int(value) and value >= 0):
                problems.append(f"{bound} must be a whole number of characters, 0 or more.")
        if all(_is_int(b) for b in bounds) and bounds[0] > bounds[1]:  # type: ignore[operator]
            problems.append("min is more than max.")
    if kind == "judge":
        if "credential" in spec and not (_is_int(spec["credential"]) and spec["credential"] > 0):
            problems.append("credential must be a credential's id.")
        for key, limit in (("model", 200), ("rubric", MAX_RUBRIC)):
            value = spec.get(key)
            if key in spec and not (
                isinstance(value, str) and value.strip() and len(value) <= limit
            ):
                problems.append(f"{key} must be text of 1 to {limit} characters.")
        if "value" in spec or "expected_column" in spec:
            problems += _expected_problems(spec, columns)
    return problems


def _expected_problems(spec: dict[str, Any], columns: list[str] | None) -> list[str]:
    kind = spec["type"]
    has_value, column = "value" in spec, spec.get("expected_column")
    if has_value == ("expected_column" in spec):
        return [f"{kind} needs value or expected_column (one of them)."]
    if not has_value:
        if not isinstance(column, str) or not column:
            return ["expected_column must be a column's name."]
        if columns is None:
            return [f'expected_column "{column}" needs a dataset; this job has none.']
        if column not in columns:
            return [f'the dataset has no column "{column}"; its columns: {", ".join(columns)}.']
        return []
    value = spec["value"]
    if kind in ("contains", "icontains", "regex") and not isinstance(value, str):
        return ["value must be text."]
    if kind in ("contains", "icontains", "regex") and not value:
        return ["value must not be empty."]
    if kind == "regex":
        if len(value) > MAX_PATTERN:
            return [f"the pattern is longer than {MAX_PATTERN} characters."]
        try:
            compiled(value)
        except regex.error as exc:
            return [f"the regular expression does not compile: {exc}."]
    return []


def _judge_credentials(judges: list[dict[str, Any]], team: Any) -> list[str]:
    ids = {judge["credential"] for judge in judges}
    found = {c.pk: c for c in Credential.objects.filter(pk__in=ids, team=team)}
    messages = []
    for judge in judges:
        credential = found.get(judge["credential"])
        if credential is None:
            messages.append(
                f'scorers "{judge["name"]}": no credential {judge["credential"]} in the job\'s team.'
            )
        elif problem := judge_spec_problem(credential, judge["model"]):
            messages.append(f'scorers "{judge["name"]}": {problem}')
    return messages


def judge_spec_problem(credential: Credential, model: str) -> str | None:
    """Why a judge cannot run on ``credential`` with ``model`` (its provider
    has no structured output, or cannot take JUDGE_SCHEMA), or None. The
    rules of ``build_spec``, on one sample prompt; no network."""
    try:
        build_spec(
            credential, {"model": model, "prompts": ["judge"], "output_schema": JUDGE_SCHEMA}
        )
    except SpecError as exc:
        label = get_provider_class(credential.provider).label
        if "output_schema" in exc.fields:
            return (
                f"a judge answers as structured output, and {label} cannot give it "
                f"({exc.fields['output_schema'][0]})"
            )
        name, messages = next(iter(exc.fields.items()))
        return f"{name}: {messages[0]}"
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@functools.lru_cache(maxsize=256)
def compiled(pattern: str) -> regex.Pattern[str]:
    return regex.compile(pattern)


# --- verdicts ------------------------------------------------------------------------------------


def verdict(
    scorer: dict[str, Any],
    output: Any,
    fields: dict[str, Any] | None = None,
    valid: bool | None = None,
    validation_error: str = "",
) -> Verdict:
    """One scorer's verdict on one completed item (never raises for what an
    output may be: whatever it cannot judge is unscored, with the reason)."""
    kind = scorer["type"]
    if kind == "valid":
        if valid is None:
            return None, None, "the job has no output schema"
        return valid, 1.0 if valid else 0.0, "" if valid else validation_error[:MAX_REASON]
    if output is None:
        return None, None, "no output"
    if kind == "length":
        return _length(scorer, _text(output))
    expected: Any
    if "expected_column" in scorer:
        column = scorer["expected_column"]
        expected = (fields or {}).get(column)
        if expected is None or expected == "":
            return None, None, f'no expected value in column "{column}"'
    else:
        expected = scorer.get("value")
    return CHECKS[kind](scorer, output, expected)


def _passed(ok: bool, reason: Callable[[], str] | str = "") -> Verdict:
    """A pass or a fail; ``reason`` (text, or what makes it: a verdict runs for
    every row as it completes, so a passing row never builds its reason) only
    for a fail."""
    if ok:
        return True, 1.0, ""
    return False, 0.0, (reason if isinstance(reason, str) else reason())[:MAX_REASON]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _short(value: Any, limit: int = 80) -> str:
    return _quoted(_text(value), limit)


@functools.lru_cache(maxsize=256)
def _quoted(text: str, limit: int) -> str:
    """A value as a reason quotes it: the same few expected values, row after row."""
    return json.dumps(text[:limit] + ("…" if len(text) > limit else ""), ensure_ascii=False)


def _equals(scorer: dict[str, Any], output: Any, expected: Any) -> Verdict:
    if isinstance(output, str) or isinstance(expected, str):
        ok = _text(output).strip() == _text(expected).strip()
    else:
        ok = output == expected
    return _passed(ok, lambda: f"expected {_short(expected)}")


def _contains(scorer: dict[str, Any], output: Any, expected: Any) -> Verdict:
    needle, text = _text(expected), _text(output)
    if scorer["type"] == "icontains":
        needle, text = needle.casefold(), text.casefold()
    return _passed(needle in text, lambda: f"does not contain {_short(expected)}")


def _regex(scorer: dict[str, Any], output: Any, expected: Any) -> Verdict:
    try:
        pattern = compiled(_text(expected))
    except regex.error as exc:
        return None, None, f"the pattern does not compile: {exc}"
    try:
        # concurrent=False: keep the GIL. regex lets go of it around each match
        # by default, and in a worker with calls in flight taking it back costs
        # up to the switch interval (200 µs a verdict instead of 5 µs).
        found = pattern.search(_text(output), timeout=REGEX_TIMEOUT, concurrent=False)
    except TimeoutError:
        return None, None, f"regex took longer than {REGEX_TIMEOUT:g} s"
    return _passed(found is not None, lambda: f"no match for {_short(pattern.pattern)}")


def _json_field(scorer: dict[str, Any], output: Any, expected: Any) -> Verdict:
    value = output
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None, None, "the output is not JSON"
    path = scorer["path"]
    for step in path.split("."):
        if isinstance(value, dict) and step in value:
            value = value[step]
        elif (
            isinstance(value, list)
            and step.lstrip("-").isdigit()
            and -len(value) <= int(step) < len(value)
        ):
            value = value[int(step)]
        else:
            return None, None, f'no "{path}" in the output'
    return _equals(scorer, value, expected)


#: A number in text: 1,234.5, -3, 2e-4 (thousands separated by commas).
NUMBER = regex.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?:[eE][-+]?\d+)?")


def parse_number(value: Any) -> float | None:
    """A number from an output: itself, the whole text as a number ("1,234.5",
    " 42 ", "12%"), or else the last number in the text (an answer tends to
    end with its result: "… so the total is 42.")."""
    if _is_number(value):
        return float(value)
    if not isinstance(value, str):
        return None
    text = value.strip().rstrip(".").strip().removesuffix("%").lstrip("$")
    try:
        number = float(text.replace(",", ""))
    except ValueError:
        numbers = [
            m for m in NUMBER.findall(value, concurrent=False) if any(c.isdigit() for c in m)
        ]
        if not numbers:
            return None
        number = float(numbers[-1].replace(",", ""))
    return number if math.isfinite(number) else None


def _numeric(scorer: dict[str, Any], output: Any, expected: Any) -> Verdict:
    got = parse_number(output)
    if got is None:
        return None, None, "no number in the output"
    want = parse_number(expected)
    if want is None:
        return None, None, f"the expected value {_short(expected)} is not a number"
    tolerance = float(scorer.get("tolerance", 0))
    return _passed(abs(got - want) <= tolerance, lambda: f"{got:g} is not {want:g} ± {tolerance:g}")


def _length(scorer: dict[str, Any], text: str) -> Verdict:
    low, high = scorer.get("min"), scorer.get("max")
    size = len(text)
    if low is not None and size < low:
        return _passed(False, f"{size} characters, fewer than {low}")
    if high is not None and size > high:
        return _passed(False, f"{size} characters, more than {high}")
    return _passed(True)


CHECKS: dict[str, Callable[[dict[str, Any], Any, Any], Verdict]] = {
    "equals": _equals,
    "contains": _contains,
    "icontains": _contains,
    "regex": _regex,
    "json_field": _json_field,
    "numeric": _numeric,
}
