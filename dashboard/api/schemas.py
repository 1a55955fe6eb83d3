"""Every body the API reads and every answer it gives, as schemas: the
OpenAPI document at /api/v1/openapi.json is generated from these, so it is
the contract scripts generate clients from and schemathesis tests against.

Bodies are strict JSON: no field the call does not know, no string for a
number, no boolean for an integer, finite numbers only. Every rule of a job's
fields (ranges, lengths, what a provider supports) is
``dashboard.jobs.spec.build_spec``'s, which the page calls too; the schema
only shows the ranges. Rules that need the database (a credential's team)
stay in the services.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from ninja import Field, Schema
from pydantic import ConfigDict, PlainSerializer, WithJsonSchema

from dashboard.jobs.spec import MAX_MODEL, NUMBERS
from dashboard.status import InstanceStatus, JobStatus
from providers import PROVIDERS

#: The largest id a 64-bit column holds; a bigger one can name nothing.
MAX_ID = 2**63 - 1


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


Id = Annotated[int, Field(strict=True, ge=1, le=MAX_ID)]
Text = Annotated[str, Field(strict=True)]
Flag = Annotated[bool, Field(strict=True)]
JsonObject = dict[str, Any]
#: UTC with a "Z" and every microsecond, as the API always wrote them.
Timestamp = Annotated[
    datetime,
    PlainSerializer(iso, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
ProviderSlug = Literal[tuple(PROVIDERS)]  # type: ignore[valid-type]


def job_field(name: str, kind: type, **extra: Any) -> Any:
    """A strict JSON field of a job spec. Its limits are build_spec's: shown
    in the schema, checked there (so the page and the API refuse a value in
    the same words), not here."""
    if name == "model":
        limits: dict[str, Any] = {"maxLength": MAX_MODEL}
    else:
        rule = NUMBERS[name]
        limits = {"minimum": rule.minimum, "maximum": rule.maximum}
    options = {"allow_inf_nan": False} if kind is float else {}
    return Annotated[kind, Field(strict=True, json_schema_extra=limits, **options, **extra)]


class Body(Schema):
    """A request body: a misspelt field is refused by name, not ignored."""

    model_config = ConfigDict(extra="forbid")


class Error(Schema):
    error: str = Field(description="A readable message.")
    fields: dict[str, list[str]] = Field(description="Messages per field of the input.")


# --- credentials ---------------------------------------------------------------------------


class CredentialIn(Body):
    provider: ProviderSlug
    name: Text
    secret: Text = Field(description="Stored encrypted; never returned by any call.")
    base_url: Text | None = Field(None, description="Empty for the provider's public endpoint.")
    options: JsonObject | None = Field(None, description="Provider-specific settings.")
    max_concurrency: Annotated[int, Field(strict=True)] | None = Field(
        None, description="Requests at once on this credential, 1-2000 (default 4)."
    )
    rpm: Annotated[int, Field(strict=True)] | None = Field(
        None,
        description="Requests per minute, shared by every job and worker "
        "(1-1,000,000; null: no limit).",
    )
    tpm: Annotated[int, Field(strict=True)] | None = Field(
        None,
        description="Tokens per minute: each call's estimated prompt tokens plus the output "
        "it may use (1-1,000,000,000; null: no limit).",
    )
    team: Id | None = Field(None, description="Default: your first team by name.")


class CredentialOut(Schema):
    id: int
    provider: str
    name: str
    base_url: str
    options: JsonObject
    max_concurrency: int
    rpm: int | None
    tpm: int | None


class ConnectionTestIn(Body):
    model: Text | None = Field(
        None, description="The model a billed check asks for (else the provider's default)."
    )
    confirm_billed: Flag | None = Field(
        None,
        description="Providers with no free call: confirm that a one-token request "
        "may be billed. Without it such a test is refused (400).",
    )


class ConnectionTestOut(Schema):
    ok: bool
    detail: str
    latency_ms: int
    billed: bool = Field(description="The check made a call the provider bills.")
    auth_failed: bool = Field(description="The provider refused the secret (401/403).")
    checked_at: Timestamp


# --- jobs -------------------------------------------------------------------------------------


class JobIn(Body):
    credential: Id
    model: job_field("model", str)  # type: ignore[valid-type]
    prompts: list[Text] | None = Field(
        None, min_length=1, description="Or `dataset` and `prompt_template` instead."
    )
    dataset: Id | None = Field(None, description="One item per row of this dataset.")
    prompt_template: Text | None = Field(
        None, description="With `dataset`: the prompt, {column} replaced by the row's value."
    )
    question: Text | None = Field(None, description="MyMagic: applied to every prompt.")
    system_prompt: Text | None = None
    max_tokens: job_field("max_tokens", int) | None = None  # type: ignore[valid-type]
    temperature: job_field("temperature", float) | None = None  # type: ignore[valid-type]
    top_p: job_field("top_p", float) | None = None  # type: ignore[valid-type]
    top_k: job_field("top_k", int) | None = None  # type: ignore[valid-type]
    repetition_penalty: job_field("repetition_penalty", float) | None = None  # type: ignore[valid-type]
    output_schema: JsonObject | None = Field(
        None,
        description='A JSON Schema object, or Lamini\'s {"field": "str"/"int"/"float"/"bool"} map.',
    )
    options: JsonObject | None = Field(None, description="Provider-specific fields.")
    stream: Flag | None = Field(None, description="Stream the output (providers that can).")
    mode: Text | None = Field(
        None,
        description='"online" (default: one call per item) or "batch": the provider\'s own '
        "batch API (OpenAI, Anthropic), within 24 hours at the batch price.",
    )
    team: Id | None = Field(None, description="Must be the credential's team when given.")
    scorers: list[Any] | None = Field(
        None,
        description="Checks on every item's output, each {type, name, ...}: equals, contains, "
        "icontains, regex, json_field, numeric, length, valid, judge.",
    )
    cache: Flag | None = Field(
        None,
        description="Rows whose request (provider, base URL, model, parameters, prompt) an "
        "item of the team already answered take that output without a call, at no cost.",
    )
    dry_run: Flag | None = Field(
        None,
        description="Save nothing: answer 200 with the estimate (items, tokens, cost at the "
        "team's price) instead of creating the job.",
    )


class RetryIn(Body):
    failed_only: Flag | None = Field(
        None, description="Retry only the rows that did not complete (failed, or never ran)."
    )
    invalid_only: Flag | None = Field(
        None, description="Retry only the completed rows whose output does not fit the schema."
    )
    repair: Flag | None = Field(
        None,
        description="With invalid_only: send each row again with its validation error "
        "and the schema appended to its prompt.",
    )
    mode: Text | None = Field(
        None, description='"online" or "batch" (default: the job\'s own mode).'
    )


class NoBody(Body):
    """Calls that take no fields (an empty body, or {})."""


class JobCreated(Schema):
    id: int
    status: JobStatus


class Progress(Schema):
    done: int
    total: int


class Counts(Schema):
    """Items by status, and by validity against the output schema."""

    pending: int
    running: int
    completed: int
    failed: int
    cancelled: int
    valid: int
    invalid: int


class Cost(Schema):
    estimated: float | None = Field(description="USD before running; null with no price set.")
    actual: float | None = Field(
        description="USD from the items' tokens: final once the job ended, so far while it "
        "runs; null with no price set."
    )


class BatchOut(Schema):
    id: int
    remote_id: str = Field(description="The provider's batch id (empty until created).")
    status: Literal["pending", "submitting", "live", "ended", "failed", "unknown"]
    provider_status: str = Field(description="The provider's own word.")
    counts: dict[str, int] = Field(description="total, completed, failed, processing as reported.")
    items: int = Field(description="The rows it holds.")


class ScoreSummary(Schema):
    name: str
    type: str
    passed: int
    failed: int
    unscored: int = Field(
        description="Finished items with no verdict, or that could not be scored."
    )
    pass_rate: float | None = Field(description="passed / (passed + failed); null if none.")
    ci95: list[float] | None = Field(description="The pass rate's 95 % Wilson interval.")


class ScorersIn(Body):
    scorers: list[Any] = Field(description="The scorers to add, as at submit.")


class ScoresOut(Schema):
    scores: list[ScoreSummary]
    rescoring: bool = Field(description="The job's finished items are being scored.")


class CacheSummary(Schema):
    hits: int = Field(description="Rows that took a completed row's output without a call.")
    saved: float | None = Field(
        description="USD those rows' sources cost, at the job's price (null: no price)."
    )


class JobSummary(Schema):
    id: int
    provider: str
    model: str
    status: JobStatus
    provider_status: str
    progress: Progress
    counts: Counts
    outputs: list[Any] | None = Field(
        description="One per item in index order (text, an object for structured output, "
        "null where there is none yet); null for jobs of more than 1,000 items: "
        "page GET /jobs/{id}/items instead."
    )
    error: str
    cost: Cost
    dataset: int | None = Field(description="The dataset the items came from, if any.")
    comparison: int | None = Field(description="The comparison the job is a target of, if any.")
    created_by: str | None
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None
    output_errors: dict[str, Any] = Field(
        description="The failed items' errors by index (jobs of up to 1,000 items)."
    )
    credential: int | None = Field(description="Null once the credential is deleted.")
    credential_name: str
    team: int
    retry_of: int | None
    spec: JsonObject
    mode: Literal["online", "batch"]
    batches: list[BatchOut] = Field(
        description="A batch job's remote batches (empty for an online job)."
    )
    scorers: list[JsonObject] = Field(description="The job's scorers, normalized.")
    scores: list[ScoreSummary] = Field(description="Per scorer: counts, pass rate, interval.")
    cache: CacheSummary = Field(description="Rows that came from the cache, and what they saved.")


class JobOut(JobSummary):
    log: str = Field(
        description="The provider's log or streamed output where there is one, "
        "else the job's timeline."
    )


class ItemOut(Schema):
    index: int
    source_index: int | None = Field(description="For a retry's items: the row they redo.")
    input: str = Field(description="The prompt as sent.")
    fields: JsonObject | None = Field(description="The dataset row's fields, if any.")
    status: Literal["pending", "running", "completed", "failed", "cancelled"]
    output: Any = Field(description="Text, or the parsed object for structured output.")
    error: str
    attempts: int
    cached_from: int | None = Field(
        None, description="The completed item (its id) whose output this row took, if any."
    )
    latency_ms: int | None
    tokens_in: int | None
    tokens_out: int | None
    tokens_estimated: bool = Field(description="The tokens are estimated, not reported.")
    valid: bool | None = Field(description="Against the output schema; null without one.")
    validation_error: str
    from_job: int | None = Field(
        None, description="With merged=true: the retry the row's answer came from."
    )
    scores: list[JsonObject] = Field(
        default_factory=list,
        description='One per scorer: {"scorer", "pass" (null: could not be scored), "score", '
        '"reason"}.',
    )


class ItemPage(Schema):
    items: list[ItemOut]
    next: str | None = Field(description="The next page; null on the last page.")


class DiffRows(Schema):
    same: int = Field(description="Rows of both jobs with the same output.")
    changed: int = Field(description="Rows of both jobs whose output changed.")
    only_here: int = Field(description="Rows only this job has.")
    only_there: int = Field(description="Rows only the `against` job has.")


class DiffScorer(Schema):
    name: str
    regressions: int = Field(description="Rows that passed in `against` and fail here.")
    improvements: int = Field(description="Rows that failed in `against` and pass here.")


class DiffItem(Schema):
    index: int = Field(description="The row: a retry's source_index, else the index.")
    input: str | None
    status: str | None = Field(description="Here; null when only the other job has the row.")
    against_status: str | None
    output: Any
    against_output: Any
    changed: bool
    scores: list[JsonObject]
    against_scores: list[JsonObject]


class DiffOut(Schema):
    job: int
    against: int = Field(description="The run before: regressions are its passes failing here.")
    rows: DiffRows
    scorers: list[DiffScorer] = Field(description="The scorers both jobs have.")
    items: list[DiffItem]
    next: str | None = Field(description="The next page; null on the last page.")


class JobPage(Schema):
    results: list[JobSummary]
    next: str | None = Field(description="The next (older) page; null on the last page.")


# --- model instances ------------------------------------------------------------------------


class InstanceIn(Body):
    credential: Id
    model: Text
    concurrency: Annotated[int, Field(strict=True)] | None = None
    expiration_seconds: Annotated[int, Field(strict=True)] | None = None
    team: Id | None = None


class InstanceCreated(Schema):
    id: int
    status: InstanceStatus


class InstanceOut(Schema):
    id: int
    model: str
    status: InstanceStatus
    provider_status: str
    concurrency: int | None
    inferences: int | None
    expires_at: Timestamp | None
    error: str
    credential: int
    team: int
    created_at: Timestamp


# --- datasets ----------------------------------------------------------------------------------


class DatasetRowsIn(Body):
    name: Text
    rows: list[JsonObject] = Field(min_length=1, description="One object per row: {column: value}.")
    team: Id | None = Field(None, description="Default: your first team by name.")


class DatasetOut(Schema):
    id: int
    name: str
    columns: list[str]
    rows: int = Field(description="How many rows.")
    source: str = Field(description="csv, tsv, jsonl, xlsx, paste or api.")
    team: int
    created_by: str | None
    created_at: Timestamp


class DatasetDetail(DatasetOut):
    preview: list[JsonObject] = Field(description="The first 20 rows.")


class DatasetPage(Schema):
    results: list[DatasetOut]
    next: str | None = Field(description="The next (older) page; null on the last page.")


# --- comparisons --------------------------------------------------------------------------------


class TargetIn(Body):
    credential: Id
    model: job_field("model", str)  # type: ignore[valid-type]
    question: Text | None = None
    system_prompt: Text | None = None
    max_tokens: job_field("max_tokens", int) | None = None  # type: ignore[valid-type]
    temperature: job_field("temperature", float) | None = None  # type: ignore[valid-type]
    top_p: job_field("top_p", float) | None = None  # type: ignore[valid-type]
    top_k: job_field("top_k", int) | None = None  # type: ignore[valid-type]
    repetition_penalty: job_field("repetition_penalty", float) | None = None  # type: ignore[valid-type]
    output_schema: JsonObject | None = Field(None, description="Overrides the comparison's.")
    options: JsonObject | None = None
    stream: Flag | None = None
    mode: Text | None = Field(
        None,
        description='"online" (default: one call per item) or "batch": the provider\'s own '
        "batch API (OpenAI, Anthropic), within 24 hours at the batch price.",
    )


class ComparisonIn(Body):
    name: Text
    prompts: list[Text] | None = Field(None, min_length=1)
    dataset: Id | None = None
    prompt_template: Text | None = None
    targets: list[TargetIn] = Field(
        min_length=2, max_length=8, description="One sibling job per target."
    )
    output_schema: JsonObject | None = Field(
        None, description="For every target that gives none of its own."
    )
    team: Id | None = Field(None, description="Must be the credentials' team when given.")


class ComparisonTarget(Schema):
    job: int
    credential: int | None
    provider: str
    model: str
    status: JobStatus


class ComparisonSummary(Schema):
    id: int
    name: str
    status: JobStatus
    targets: list[ComparisonTarget] = Field(description="One job per target, in the order given.")
    created_at: Timestamp


class ComparisonPage(Schema):
    results: list[ComparisonSummary]
    next: str | None = Field(description="The next (older) page; null on the last page.")


class ComparisonCreated(Schema):
    id: int
    jobs: list[int] = Field(description="One job per target, in the order given.")


class ReviewOut(Schema):
    user: str
    score: Literal[-1, 1] | None
    best: bool
    created_at: Timestamp
    updated_at: Timestamp


class CellRating(Schema):
    up: int
    down: int
    best: int = Field(description="Reviewers who picked this cell as the best of its row.")
    reviews: list[ReviewOut]


class CellOut(Schema):
    job: int
    status: Literal["pending", "running", "completed", "failed", "cancelled"] | None
    output: Any
    error: str
    valid: bool | None
    latency_ms: int | None
    from_job: int | None = Field(description="The retry this cell's answer came from.")
    rating: CellRating


class NoteOut(Schema):
    user: str | None
    text: str
    created_at: Timestamp


class RowOut(Schema):
    index: int
    input: str
    fields: JsonObject | None
    cells: list[CellOut]
    notes: list[NoteOut]


class TargetOut(Schema):
    job: int
    credential: int | None
    provider: str
    model: str
    status: JobStatus
    counts: Counts
    latency_ms_p50: int | None
    latency_ms_p95: int | None
    cost: float | None = Field(description="USD; null while no price is set.")
    wins: int
    up: int
    down: int
    scores: list[ScoreSummary] = Field(description="The target's pass rates, per scorer.")


class PairedScores(Schema):
    scorer: str
    a: int = Field(description="A target's job id.")
    b: int = Field(description="Another target's job id.")
    p: float = Field(description="McNemar's exact p on the rows both scored (1: no difference).")
    only_a: int = Field(description="Rows both scored where only a passed.")
    only_b: int = Field(description="Rows both scored where only b passed.")
    both: int
    neither: int


class Agreement(Schema):
    scorer: str = Field(description="A judge scorer.")
    cells: int = Field(description="Cells the judge scored that reviewers rated.")
    percent: float | None = Field(description="Cells where the judge and the reviewers agree.")
    kappa: float | None = Field(description="Cohen's kappa; null when undefined.")
    disagree: int = Field(description="Cells where they disagree (the disagreements call).")


class TargetScores(Schema):
    job: int
    scores: list[ScoreSummary]


class ComparisonOut(Schema):
    id: int
    name: str
    status: JobStatus
    dataset: int | None
    prompt_template: str
    created_by: str | None
    created_at: Timestamp
    targets: list[TargetOut]
    significance: list[PairedScores] = Field(description="Per pair of targets, per scorer.")
    agreement: list[Agreement] = Field(description="Per judge scorer, with human ratings.")
    rows: list[RowOut]
    next: str | None = Field(description="The next page of rows; null on the last page.")


class ComparisonScoresOut(Schema):
    targets: list[TargetScores]
    significance: list[PairedScores]
    agreement: list[Agreement]
    rescoring: bool = Field(description="The targets' finished items are being scored.")


class Disagreement(Schema):
    index: int
    job: int
    judge: bool = Field(description="The judge's verdict: passed or not.")
    human: Literal[-1, 1] = Field(description="The reviewers' verdict (their ratings summed).")
    reason: str = Field(description="The judge's reason.")


class DisagreementPage(Schema):
    scorer: str
    cells: list[Disagreement]
    next: str | None = Field(description="The next page; null on the last page.")


class RatingIn(Body):
    index: Annotated[int, Field(strict=True, ge=0, le=2**31 - 1)]
    job: Id | None = Field(None, description="With score: the target rated.")
    score: Literal[-1, 1] | None = Field(None, description="-1 thumbs down, 1 thumbs up.")
    best: Id | None = Field(None, description="Instead: the target that is best of the row.")


class RatingOut(Schema):
    index: int
    job: int
    user: str
    score: Literal[-1, 1] | None
    best: bool
    updated_at: Timestamp


# --- cost: estimates, prices, the budget, usage -------------------------------------------

#: USD amounts: finite, not negative, within what the columns hold.
Usd = Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)]


class Estimate(Schema):
    items: int
    tokens_in: int = Field(description="Estimated: about four characters a token.")
    tokens_out_max: int = Field(
        description="max_tokens per item (512 when the job sets none) times the items."
    )
    cost: float | None = Field(
        description="USD, at most, in the asked mode; null when the model has no price."
    )
    cost_online: float | None = Field(description="USD, at most, if the job ran online.")
    cost_batch: float | None = Field(
        description="USD, at most, if the job ran in batch mode (the batch prices, or half "
        "the online ones)."
    )


class EstimateOut(Schema):
    estimate: Estimate


class PriceIn(Body):
    provider: ProviderSlug
    model: Annotated[str, Field(strict=True, min_length=1, max_length=200)]
    input_per_mtok: Annotated[Usd, Field(le=100000)] = Field(
        description="USD per million input tokens (six decimals kept)."
    )
    output_per_mtok: Annotated[Usd, Field(le=100000)] = Field(
        description="USD per million output tokens (six decimals kept)."
    )
    batch_input_per_mtok: Annotated[Usd, Field(le=100000)] | None = Field(
        None, description="Batch mode's USD per million input tokens; unset: half the online one."
    )
    batch_output_per_mtok: Annotated[Usd, Field(le=100000)] | None = Field(
        None, description="Batch mode's USD per million output tokens; unset: half the online one."
    )
    team: Id | None = Field(None, description="Default: your first team by name.")


class PriceOut(Schema):
    id: int
    team: int
    provider: str
    model: str
    input_per_mtok: float
    output_per_mtok: float
    batch_input_per_mtok: float | None = Field(description="Null: half the online price.")
    batch_output_per_mtok: float | None = Field(description="Null: half the online price.")
    updated_at: Timestamp


class BudgetIn(Body):
    monthly_usd: Annotated[Usd, Field(le=999999999)] | None = Field(
        description="USD a month (rounded to the cent); null: no budget."
    )
    team: Id | None = Field(None, description="Default: your first team by name.")


class BudgetOut(Schema):
    monthly_usd: float | None


class ProviderUsage(Schema):
    provider: str
    jobs: int
    items: int
    failed: int
    cost: float | None = Field(description="USD, actual, of its priced jobs that ended.")
    jobs_batch: int = Field(description="Of its jobs, those that ran in batch mode.")
    cost_online: float | None = Field(description="USD, actual, of its online jobs.")
    cost_batch: float | None = Field(description="USD, actual, of its batch jobs.")
    latency_ms_p50: int | None
    latency_ms_p95: int | None


class UsageOut(Schema):
    month: str = Field(description="YYYY-MM, in the site's time zone.")
    team: int
    budget: float | None = Field(description="The monthly budget in USD; null: none.")
    spent: float = Field(
        description="USD: the actual cost of the month's jobs that ended and the estimate "
        "of those still running."
    )
    by_provider: list[ProviderUsage]


# --- webhooks -----------------------------------------------------------------------------

WebhookEvent = Literal[
    "job.completed",
    "job.failed",
    "job.cancelled",
    "instance.running",
    "instance.expired",
    "instance.failed",
]


class WebhookIn(Body):
    url: Annotated[str, Field(strict=True, min_length=1, max_length=500)]
    events: list[WebhookEvent] = Field(min_length=1)
    team: Id | None = Field(None, description="Default: your first team by name.")


class WebhookOut(Schema):
    id: int
    url: str
    events: list[str]
    created_at: Timestamp


class WebhookCreated(WebhookOut):
    secret: str = Field(
        description="The whsec_… signing secret: shown in this answer only, never again."
    )


class DeliveryOut(Schema):
    id: int
    event: str
    object_id: int = Field(description="The job's or the instance's id.")
    attempts: int
    status: Literal["pending", "succeeded", "failed"]
    response_status: int | None
    next_attempt_at: Timestamp | None
    last_error: str
    created_at: Timestamp
    redelivery_of: int | None


class DeliveryPage(Schema):
    results: list[DeliveryOut]
    next: str | None = Field(description="The next (older) page; null on the last page.")
