"""The rules of a job spec, in one place.

Every way a job is asked for (the new-job page, a comparison's targets on the
page and in the API, ``POST /api/v1/jobs``) hands its values to
:func:`build_spec`, which checks every field on the credential's provider and
either returns the :class:`~providers.JobSpec` or raises :class:`SpecError`
with messages per field. Each surface only shows those messages its own way
(form errors on the page, the API's ``{"error", "fields"}`` 400), so a page
and a script are refused for the same reasons in the same words.

What a surface does before: turning its own text into values (the page's
form parses numbers and JSON; the API's schema refuses a string for a
number). What :func:`build_spec` does not do: the budget (a 409 at save, in
``job_create``), the credential's team (each surface's access check)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from dashboard.core import structured
from dashboard.core.formfields import has_nul
from dashboard.models import Credential
from providers import JobSpec, Provider, ProviderError, get_provider_class
from providers.batch import supports_batch

#: The words the API's body parser uses for a NUL anywhere in a body, so a NUL
#: is refused in the same words whichever check sees it first.
NUL_MESSAGE = "Text may not contain NUL characters."
REQUIRED = "This field is required."
MAX_MODEL = 200
#: A job's own deadline (``options.deadline_seconds``) is at most a week.
MAX_DEADLINE = 7 * 24 * 3600
#: Options every provider takes; the others are the provider's ``option_names``.
COMMON_OPTIONS = ("deadline_seconds", "batch_max_requests")
#: A batch job's default deadline: the providers' 24 h window, and time to read the results.
BATCH_DEADLINE = 26 * 3600
MODES = ("online", "batch")


@dataclass(frozen=True)
class Number:
    """A numeric job parameter: whole (``int``) or not, and its range."""

    kind: type
    minimum: float
    maximum: float


NUMBERS: dict[str, Number] = {
    "max_tokens": Number(int, 1, 1_000_000),
    "temperature": Number(float, 0, 5),
    "top_p": Number(float, 0, 1),
    "top_k": Number(int, 0, 100_000),
    "repetition_penalty": Number(float, 0, 10),
}
TEXTS = ("question", "system_prompt")
#: The optional fields of a spec, each used only by the providers that list it
#: in ``supported_fields`` (``stream``: those that ``supports_stream``).
OPTIONAL = (*TEXTS, *NUMBERS, "output_schema")
FIELDS = ("model", "prompts", *OPTIONAL, "options", "stream")


class SpecError(ValueError):
    """A job spec that cannot run: messages per field (``__all__`` for none).

    Not :class:`providers.SpecError`, which is one adapter's refusal of one
    field; :func:`build_spec` gathers those into this."""

    def __init__(self, fields: Mapping[str, Sequence[str]]) -> None:
        self.fields: dict[str, list[str]] = {name: list(msgs) for name, msgs in fields.items()}
        super().__init__("; ".join(f"{name}: {msgs[0]}" for name, msgs in self.fields.items()))


class _Errors:
    def __init__(self) -> None:
        self.fields: dict[str, list[str]] = {}

    def add(self, field: str, message: str) -> None:
        self.fields.setdefault(field, []).append(message)


def build_spec(credential: Credential, values: Mapping[str, Any]) -> JobSpec:
    """The JobSpec of ``values`` on ``credential``'s provider, or SpecError
    naming every field that is wrong.

    ``values`` holds ``model``, ``prompts`` (a list of texts) and any of the
    optional fields, ``options`` and ``stream``; None, "" and {} mean "not
    given". Numbers come typed (a surface parses its own text first); a
    string, a boolean or a non-finite number where a number goes is refused
    here all the same."""
    unknown = set(values) - set(FIELDS)
    if unknown:
        raise TypeError(f"build_spec got unknown fields: {', '.join(sorted(unknown))}")
    cls = get_provider_class(credential.provider)
    errors = _Errors()
    spec: dict[str, Any] = {
        "model": _model(values.get("model"), errors),
        "prompts": _prompts(values.get("prompts"), errors),
        "options": _options(cls, values.get("options"), errors),
        "stream": _stream(cls, values.get("stream"), errors),
    }
    for name in OPTIONAL:
        value = values.get(name)
        if _given(value) and name not in cls.supported_fields:
            errors.add(name, f"{cls.label} does not use {name}.")
        elif _given(value):
            spec[name] = _optional(name, value, errors)
    if errors.fields:
        raise SpecError(errors.fields)
    built = JobSpec(**spec)
    _provider_check(credential, cls, built, errors)
    if errors.fields:
        raise SpecError(errors.fields)
    return built


def deadline_seconds(spec: JobSpec, mode: str = "online") -> int:
    """How long a job may take: its own ``deadline_seconds`` (checked by
    :func:`build_spec`), else the site's default; a batch job's default covers
    the provider's 24 h window (BATCH_DEADLINE) when the site's is shorter."""
    default = settings.JOB_DEADLINE_SECONDS
    if mode == "batch":
        default = max(default, BATCH_DEADLINE)
    return int(spec.options.get("deadline_seconds") or default)


def mode_problem(credential: Credential, mode: str | None) -> str | None:
    """Why a job on ``credential`` cannot run in ``mode`` (None: it can).
    Batch mode needs an adapter with a native batch API."""
    if mode in (None, "", "online"):
        return None
    if mode not in MODES:
        return "Choose online or batch."
    cls = get_provider_class(credential.provider)
    if not supports_batch(cls):
        return f"Batch mode needs an OpenAI or Anthropic credential; {cls.label} has no batch API."
    return None


def prompt_limits_error(prompts: Sequence[str]) -> str | None:
    """The per-job limits (settings.MAX_PROMPTS_PER_JOB, MAX_PROMPT_CHARS)."""
    if not prompts:
        return "Enter at least one prompt."
    if len(prompts) > settings.MAX_PROMPTS_PER_JOB:
        return f"{len(prompts):,} prompts: at most {settings.MAX_PROMPTS_PER_JOB:,} per job."
    if max(len(p) for p in prompts) > settings.MAX_PROMPT_CHARS:
        return f"A prompt is too long: at most {settings.MAX_PROMPT_CHARS:,} characters each."
    if sum(len(p) for p in prompts) > settings.MAX_PROMPT_CHARS * 10:
        return f"The prompts are too long: at most {settings.MAX_PROMPT_CHARS * 10:,} characters in all."
    return None


def prompts_error(prompts: Sequence[Any]) -> str | None:
    """What is wrong with a job's prompts (the limits, an empty one, a NUL), or None."""
    if not all(isinstance(prompt, str) for prompt in prompts):
        return "Every prompt must be a string."
    problem = prompt_limits_error(prompts)
    if problem:
        return problem
    blank = next((i for i, prompt in enumerate(prompts) if not prompt.strip()), None)
    if blank is not None:
        return f"Prompt {blank + 1} is empty."
    if any("\x00" in prompt for prompt in prompts):
        return NUL_MESSAGE
    return None


# --- the fields -------------------------------------------------------------------------------


def _number_error(name: str, value: Any) -> str | None:
    """Why ``value`` is not a valid ``name`` (one of NUMBERS), or None."""
    rule = NUMBERS[name]
    whole = rule.kind is int
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "Enter a whole number." if whole else "Enter a number."
    if whole and not isinstance(value, int):
        return "Enter a whole number."
    if not math.isfinite(value):
        return "Enter a finite number."
    if value < rule.minimum:
        return f"Ensure this value is greater than or equal to {_shown(rule.minimum)}."
    if value > rule.maximum:
        return f"Ensure this value is less than or equal to {_shown(rule.maximum)}."
    return None


def _given(value: Any) -> bool:
    if isinstance(value, str):
        return bool(value.strip())
    return value not in (None, {}) and value is not False


def _model(value: Any, errors: _Errors) -> str:
    if value is not None and not isinstance(value, str):
        errors.add("model", "Must be a string.")
        return ""
    model = (value or "").strip()
    if not model:
        errors.add("model", REQUIRED)
    elif "\x00" in model:
        errors.add("model", NUL_MESSAGE)
    elif len(model) > MAX_MODEL:
        errors.add(
            "model",
            f"Ensure this value has at most {MAX_MODEL} characters (it has {len(model)}).",
        )
    return model


def _prompts(value: Any, errors: _Errors) -> list[str]:
    prompts = list(value or [])
    problem = prompts_error(prompts)
    if problem:
        errors.add("prompts", problem)
    return prompts


def _optional(name: str, value: Any, errors: _Errors) -> Any:
    if name in NUMBERS:
        problem = _number_error(name, value)
        if problem:
            errors.add(name, problem)
        return float(value) if not problem and NUMBERS[name].kind is float else value
    if name == "output_schema":
        return _schema(value, errors)
    return _text(name, value, errors)


def _text(name: str, value: Any, errors: _Errors) -> str:
    if not isinstance(value, str):
        errors.add(name, "Must be a string.")
        return ""
    text = value.strip()
    if "\x00" in text:
        errors.add(name, NUL_MESSAGE)
    elif len(text) > settings.MAX_PROMPT_CHARS:
        errors.add(name, f"Too long: at most {settings.MAX_PROMPT_CHARS:,} characters.")
    return text


def _schema(value: Any, errors: _Errors) -> dict[str, Any] | None:
    """A JSON object the worker can check outputs against safely
    (``structured.schema_problem``); the provider's own form of it is the
    adapter's check, after."""
    if not isinstance(value, dict):
        errors.add("output_schema", "Must be a JSON object ({...}).")
        return None
    if has_nul(value):
        errors.add("output_schema", NUL_MESSAGE)
        return None
    problem = structured.schema_problem(value)
    if problem:
        errors.add("output_schema", problem)
    return value


def _options(cls: type[Provider], value: Any, errors: _Errors) -> dict[str, Any]:
    if value in (None, ""):
        return {}
    if not isinstance(value, dict):
        errors.add("options", "Must be a JSON object ({...}).")
        return {}
    names = (*COMMON_OPTIONS, *cls.option_names)
    for name in value:
        if name not in names:
            errors.add("options", f"Unknown option {name!r}; {cls.label} takes {', '.join(names)}.")
    if "deadline_seconds" in value and not _is_deadline(value["deadline_seconds"]):
        errors.add(
            "options",
            f"deadline_seconds must be a whole number of seconds from 1 to {MAX_DEADLINE:,} "
            "(7 days).",
        )
    if "batch_max_requests" in value and not _is_positive_int(value["batch_max_requests"]):
        errors.add("options", "batch_max_requests must be a whole number of requests, at least 1.")
    if has_nul(value):
        errors.add("options", NUL_MESSAGE)
    return dict(value)


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _is_deadline(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_DEADLINE


def _stream(cls: type[Provider], value: Any, errors: _Errors) -> bool:
    if value in (None, False):
        return False
    if value is not True:
        errors.add("stream", "Must be true or false.")
    elif not cls.supports_stream:
        errors.add("stream", f"{cls.label} cannot stream output.")
    return value is True and cls.supports_stream


def _provider_check(
    credential: Credential, cls: type[Provider], spec: JobSpec, errors: _Errors
) -> None:
    """The adapter's own validation: what this provider cannot express (a
    question for MyMagic, an option of the wrong type, a schema it cannot take)."""
    adapter = cls(secret="-", base_url=credential.base_url, options=credential.options)
    with adapter:
        try:
            adapter.validate(spec)
        except ProviderError as exc:
            errors.add(getattr(exc, "field_name", None) or "__all__", exc.message)


def _shown(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)
