"""The dashboard's state. Models hold data and small invariants; no HTTP here.

Every credential, job and instance belongs to a team. Job rows carry what is due
next (``next_check_at``) and who works on them (``lease_owner`` until
``lease_expires_at``): the database is the source of truth, a queued task only
a nudge.
"""

from __future__ import annotations

import hashlib
import json
import secrets as pysecrets
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from providers import PROVIDER_CHOICES

from .core.crypto import EncryptedSecretField, decrypt
from .status import INSTANCE_LIVE, InstanceStatus, ItemStatus, JobStatus, is_terminal


class Role(models.TextChoices):
    VIEWER = "viewer", "Viewer"
    MEMBER = "member", "Member"
    ADMIN = "admin", "Admin"


ROLE_RANK = {Role.VIEWER: 0, Role.MEMBER: 1, Role.ADMIN: 2}


class Team(models.Model):
    name = models.CharField(max_length=100, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    #: Cost estimate for model instances, in the team's currency per GB-second.
    cost_per_gb_second = models.DecimalField(max_digits=12, decimal_places=8, null=True, blank=True)
    #: USD a month (in settings.TIME_ZONE); a job whose estimate would pass it
    #: is refused. Null: no budget.
    monthly_budget_usd = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Membership", related_name="teams"
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "user"], name="one_membership")]
        ordering = ["team__name", "user__username"]

    def __str__(self) -> str:
        return f"{self.user} in {self.team} ({self.role})"

    def allows(self, role: str) -> bool:
        return ROLE_RANK[Role(self.role)] >= ROLE_RANK[Role(role)]


class Credential(models.Model):
    class Health(models.TextChoices):
        """What the last call with the credential saw (``dashboard.core.health``)."""

        UNKNOWN = "unknown", "Not checked yet"
        OK = "ok", "OK"
        AUTH_FAILED = "auth_failed", "Authentication failed"
        ERROR = "error", "Last call failed"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="credentials")
    provider = models.CharField(max_length=20, choices=PROVIDER_CHOICES)
    name = models.CharField(max_length=100)
    secret = EncryptedSecretField(help_text="Encrypted at rest; never shown again.")
    base_url = models.URLField(max_length=500)
    options = models.JSONField(default=dict, blank=True)
    max_concurrency = models.PositiveIntegerField(default=4)
    requests_per_minute = models.PositiveIntegerField(null=True, blank=True)
    #: Tokens per minute: each call counts its prompt's estimated tokens plus
    #: the output it may use, reconciled with the usage the provider reports.
    tokens_per_minute = models.PositiveIntegerField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    circuit_open_until = models.DateTimeField(null=True, blank=True)
    #: The provider asked to wait (Retry-After): no call on this credential before then.
    paused_until = models.DateTimeField(null=True, blank=True)
    #: The pace shown on the credential page: the current minute, and the
    #: requests and tokens counted in it.
    rate_window_start = models.DateTimeField(null=True, blank=True)
    rate_window_count = models.PositiveIntegerField(default=0)
    token_window_count = models.BigIntegerField(default=0, db_default=0)
    #: The rpm and tpm limits' state (``jobs.limits``, a GCRA token bucket):
    #: the moment, in epoch seconds, by which the calls let through so far are
    #: paid for at the limit's pace.
    rate_paid_until = models.FloatField(null=True, blank=True)
    token_paid_until = models.FloatField(null=True, blank=True)
    #: When a limit last held a call back (ours, the provider's headers or a 429).
    last_limited_at = models.DateTimeField(null=True, blank=True)
    last_limited_reason = models.CharField(max_length=200, blank=True)
    #: Who polls this credential's remote jobs now (one poller per credential).
    poll_lease_owner = models.CharField(max_length=64, blank=True)
    poll_lease_expires_at = models.DateTimeField(null=True, blank=True)
    #: The truth about the credential: what the last call with it saw, and when.
    #: A 401/403 from any call turns it to ``auth_failed`` at once.
    health = models.CharField(max_length=12, choices=Health.choices, default=Health.UNKNOWN)
    health_detail = models.TextField(blank=True, help_text="Redacted.")
    health_checked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["team", "name"], name="credential_name_per_team")
        ]
        ordering = ["team__name", "name"]

    def __str__(self) -> str:
        label = self.get_provider_display()
        return self.name if label.lower() in self.name.lower() else f"{self.name} ({label})"

    def reveal_secret(self) -> str:
        """The plaintext secret, for the provider call only (raises SecretDecryptionError)."""
        return decrypt(self.secret)

    def delete_blocker(self) -> str:
        """Why the credential may not be deleted now ("" when it may): a live
        model instance would go on running, and billing, with nothing left here
        to shut it down."""
        live = self.instances.filter(status__in=INSTANCE_LIVE).count()
        if not live:
            return ""
        noun, pronoun = ("instances", "them") if live > 1 else ("instance", "it")
        return (
            f"“{self.name}” still has {live} live model {noun}; "
            f"shut {pronoun} down on the Instances page first."
        )

    @property
    def circuit_is_open(self) -> bool:
        return self.circuit_open()

    def circuit_open(self, now: Any = None) -> bool:
        now = now or timezone.now()
        return self.circuit_open_until is not None and self.circuit_open_until > now


class CredentialSlot(models.Model):
    """One of a credential's ``max_concurrency`` slots, leased by a worker while it
    calls the provider, so the limit holds across every worker process. A lease
    that a killed worker leaves behind simply expires."""

    credential = models.ForeignKey(Credential, on_delete=models.CASCADE, related_name="slots")
    number = models.PositiveIntegerField()
    holder = models.CharField(max_length=64, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["credential", "number"], name="one_slot_per_number")
        ]

    def __str__(self) -> str:
        return f"{self.credential_id}#{self.number} {self.holder or 'free'}"


class Job(models.Model):
    class Mode(models.TextChoices):
        ONLINE = "online", "Online"
        BATCH = "batch", "Batch"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="jobs")
    credential = models.ForeignKey(
        Credential, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    #: Copies, so history reads the same after the credential is deleted.
    credential_name = models.CharField(max_length=100)
    provider = models.CharField(max_length=20, choices=PROVIDER_CHOICES)
    model = models.CharField(max_length=200)
    spec = models.JSONField(
        help_text=(
            "The normalized job spec (providers.JobSpec) without its prompts: those are the items."
        )
    )

    status = models.CharField(
        max_length=10, choices=JobStatus.choices, default=JobStatus.PENDING, db_index=True
    )
    provider_status = models.CharField(max_length=100, blank=True)
    cold_start = models.BooleanField(default=False, help_text="The provider is loading the model.")
    #: What an async provider returned when it was not one output per item, kept whole.
    raw_result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    error_retryable = models.BooleanField(default=False)
    #: Counters derived from the job's items, written in the same transaction
    #: as the items they count (jobs/items.py), so a page never counts rows.
    progress_done = models.PositiveIntegerField(default=0, help_text="Items that ended.")
    progress_total = models.PositiveIntegerField(default=0, help_text="Items.")
    items_running = models.PositiveIntegerField(default=0)
    items_completed = models.PositiveIntegerField(default=0)
    items_failed = models.PositiveIntegerField(default=0)
    items_cancelled = models.PositiveIntegerField(default=0)
    items_valid = models.PositiveIntegerField(default=0)
    items_invalid = models.PositiveIntegerField(default=0)
    tokens_in = models.PositiveBigIntegerField(default=0)
    tokens_out = models.PositiveBigIntegerField(default=0)
    #: True when some item's tokens are an estimate (no usage from the provider).
    tokens_estimated = models.BooleanField(default=False)
    #: The team's price for the model when the job was saved (USD per million
    #: tokens), so a later price change does not rewrite what a job cost. Null:
    #: no price was set, and the job's cost is unknown, never $0.
    price_input_per_mtok = models.DecimalField(
        max_digits=12, decimal_places=6, null=True, blank=True
    )
    price_output_per_mtok = models.DecimalField(
        max_digits=12, decimal_places=6, null=True, blank=True
    )
    #: USD before running: the prompts' tokens and max_tokens per item at the price.
    cost_estimated = models.DecimalField(max_digits=20, decimal_places=6, null=True, blank=True)
    #: USD from the items' tokens at the price, written when the job ends.
    cost_actual = models.DecimalField(max_digits=20, decimal_places=6, null=True, blank=True)
    #: Seeded by ``setup_demo`` as demo history, and shown as such.
    demo = models.BooleanField(default=False)
    #: ``online``: one call per item; ``batch``: the items go to the
    #: provider's own batch API as one or more remote batches (``chunks``).
    mode = models.CharField(max_length=10, choices=Mode.choices, default=Mode.ONLINE)
    #: A batch job's cancel, asked of the provider: the job stays running until
    #: every live chunk has ended and its results were read, then ends cancelled.
    cancel_requested_at = models.DateTimeField(null=True, blank=True)

    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="jobs",
    )
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    deadline_at = models.DateTimeField(null=True, blank=True)
    retry_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retries"
    )
    #: A judge job: the job whose items it judges, with the judged job's scorer
    #: (a ``judge``) it answers for (``dashboard.evals.judge``). Its items keep
    #: ``source_index``, the judged item's index.
    judge_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="judges"
    )
    judge_scorer = models.CharField(max_length=100, blank=True)
    #: Where the items came from, and the comparison the job is a target of. A
    #: deleted dataset or comparison leaves the job and its items as they are.
    dataset = models.ForeignKey(
        "Dataset", null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    comparison = models.ForeignKey(
        "Comparison", null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    #: The dataset's column names in the file's order, the names of the items'
    #: ``input_fields``: a JSON object's keys have no order (PostgreSQL's jsonb
    #: gives them back shortest first), so exports take their columns from here.
    input_columns = models.JSONField(default=list, blank=True)
    #: The output schema's field names in the order they were given, for the
    #: same reason: the schema in ``spec`` is a JSON object.
    output_columns = models.JSONField(default=list, blank=True)
    #: The job's scorers, normalized (``dashboard.evals.scorers``), in order:
    #: each a dict with its ``type`` and ``name``. Their verdicts are ItemScore rows.
    scorers = models.JSONField(default=list, blank=True)
    #: Items whose request an item of the team already answered take that
    #: output without a call.
    cache = models.BooleanField(default=False, db_default=False)

    # What is due next, and who is on it.
    attempts = models.PositiveIntegerField(default=0)
    next_check_at = models.DateTimeField(null=True, blank=True)
    lease_owner = models.CharField(max_length=64, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    #: When a helper task (``advance_slices``) was queued for this job and has
    #: not started yet: one waits in the broker at a time (see ``JobSlice``).
    slice_helper_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["team", "-created_at", "-id"], name="job_history"),
            # Status counts on the home page and status-filtered history pages.
            models.Index(fields=["team", "status", "-created_at", "-id"], name="job_team_status"),
            models.Index(fields=["status", "next_check_at"], name="job_due"),
        ]

    def __str__(self) -> str:
        return f"Job {self.pk} ({self.provider} {self.model})"

    def get_absolute_url(self) -> str:
        return reverse("job_detail", args=[self.pk])

    @property
    def spec_json(self) -> str:
        return json.dumps(self.spec, indent=2, ensure_ascii=False)

    @property
    def log_units(self) -> list[int | None]:
        """The log blocks the page shows: one per prompt for a small batch."""
        total = self.progress_total
        return list(range(total)) if 1 < total <= 100 else [None]

    @property
    def counts(self) -> dict[str, int]:
        """Items by status, and by validity against the output schema."""
        ended = self.items_completed + self.items_failed + self.items_cancelled
        return {
            "pending": max(0, self.progress_total - ended - self.items_running),
            "running": self.items_running,
            "completed": self.items_completed,
            "failed": self.items_failed,
            "cancelled": self.items_cancelled,
            "valid": self.items_valid,
            "invalid": self.items_invalid,
        }

    @property
    def items_unfinished(self) -> int:
        """Rows that did not complete: what "retry failed" would redo."""
        return self.progress_total - self.items_completed

    @property
    def outcome(self) -> str:
        """The status as every list shows it: a completed job with failed or
        invalid items says so ("completed · 3 failed · 12 invalid")."""
        parts = [self.get_status_display().lower()]
        if self.status == JobStatus.COMPLETED or self.is_terminal:
            if self.items_failed and self.status != JobStatus.FAILED:
                parts.append(f"{self.items_failed} failed")
            if self.items_invalid:
                parts.append(f"{self.items_invalid} invalid")
            if self.status == JobStatus.FAILED and self.items_completed:
                parts.append(f"{self.items_completed} completed")
        return " · ".join(parts)

    @property
    def clean_success(self) -> bool:
        """Completed with every item completed and valid: the only plain success."""
        return (
            self.status == JobStatus.COMPLETED
            and not self.items_failed
            and not self.items_invalid
            and not self.items_cancelled
        )

    @property
    def is_terminal(self) -> bool:
        return is_terminal(self.status)

    @property
    def progress_percent(self) -> int:
        if not self.progress_total:
            return 0
        return int(100 * self.progress_done / self.progress_total)

    @property
    def duration(self) -> Any:
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None

    @property
    def priced(self) -> bool:
        return self.price_input_per_mtok is not None

    @property
    def cost_so_far(self) -> Decimal | None:
        """The actual cost once the job ended; while it runs, what the items
        that ended so far cost. None without a price."""
        if self.cost_actual is not None:
            return self.cost_actual
        return tokens_cost(
            self.tokens_in, self.tokens_out, self.price_input_per_mtok, self.price_output_per_mtok
        )


MTOK = Decimal(1_000_000)
#: Cost amounts are kept to the micro-dollar (the columns' six decimal places).
COST_QUANTUM = Decimal("0.000001")


def tokens_cost(
    tokens_in: int, tokens_out: int, input_per_mtok: Decimal | None, output_per_mtok: Decimal | None
) -> Decimal | None:
    """USD for these tokens at these prices per million; None without a price."""
    if input_per_mtok is None or output_per_mtok is None:
        return None
    cost = (tokens_in * input_per_mtok + tokens_out * output_per_mtok) / MTOK
    return cost.quantize(COST_QUANTUM)


class Item(models.Model):
    """One prompt of a job (one row of its dataset): its input, its state and
    its result. Workers write only the items that changed; the job's counters
    move in the same transaction."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="items")
    #: 0-based, the input's order.
    index = models.PositiveIntegerField()
    #: For a retry's items: the index of the row they redo in the first job.
    source_index = models.PositiveIntegerField(null=True, blank=True)
    #: The prompt as sent (rendered from the template for a dataset row).
    input = models.TextField()
    #: The dataset row's fields beside the prompt, when there is a dataset.
    input_fields = models.JSONField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=ItemStatus.choices, default=ItemStatus.PENDING)
    #: Text, or the parsed object when the job asks for structured output.
    output = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    tokens_in = models.PositiveIntegerField(null=True, blank=True)
    tokens_out = models.PositiveIntegerField(null=True, blank=True)
    #: The tokens are estimated (about four characters a token), not reported.
    tokens_estimated = models.BooleanField(default=False)
    #: SHA-256 of the request (provider, base URL, model, parameters, system
    #: prompt, prompt, output schema): an item of the team with the same hash
    #: gives its output to a job with ``cache`` on (``jobs.cache``).
    request_hash = models.CharField(max_length=64, blank=True, db_default="")
    #: The completed item whose output this one took, without a call.
    cached_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    #: Against the output schema; None without one.
    valid = models.BooleanField(null=True, blank=True)
    validation_error = models.TextField(blank=True)
    #: The live partial sends the items of a page that changed since this.
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["job_id", "index"]
        constraints = [models.UniqueConstraint(fields=["job", "index"], name="one_item_per_index")]
        indexes = [
            models.Index(fields=["job", "status", "index"], name="item_status"),
            models.Index(fields=["job", "valid", "index"], name="item_validity"),
            models.Index(
                fields=["request_hash", "status"],
                name="item_request_hash",
                condition=~models.Q(request_hash=""),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.job_id}#{self.index} {self.status}"

    @property
    def ended(self) -> bool:
        return self.status in (ItemStatus.COMPLETED, ItemStatus.FAILED, ItemStatus.CANCELLED)


class ItemScore(models.Model):
    """One scorer's verdict on one item, written as the item completes (or
    when scorers are added to a finished job). ``passed`` None: the row could
    not be scored, and ``reason`` says why. ``job`` and ``index`` are copies
    of the item's, so a job's pass rates are one aggregate over this table."""

    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="scores")
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="item_scores")
    index = models.PositiveIntegerField()
    scorer = models.CharField(max_length=100)
    passed = models.BooleanField(null=True, blank=True)
    score = models.FloatField(null=True, blank=True)
    reason = models.TextField(blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["item", "scorer"], name="one_score_per_scorer")
        ]
        indexes = [models.Index(fields=["job", "scorer", "passed"], name="item_score_rate")]

    def __str__(self) -> str:
        return f"{self.item_id} {self.scorer}: {self.passed}"


class Dataset(models.Model):
    """A table of rows a team runs prompts over: column names in order, and
    its rows in their own table (``DatasetRow``), never one blob read whole."""

    class Source(models.TextChoices):
        CSV = "csv", "CSV"
        JSONL = "jsonl", "JSONL"
        XLSX = "xlsx", "XLSX"
        PASTE = "paste", "Pasted"
        API = "api", "API rows"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="datasets")
    name = models.CharField(max_length=200)
    columns = models.JSONField(default=list, help_text="Column names, in order.")
    row_count = models.PositiveIntegerField(default=0)
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.CSV)
    #: The uploaded file's name and size, as given.
    file_name = models.CharField(max_length=255, blank=True)
    size_bytes = models.PositiveBigIntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["team", "-created_at", "-id"], name="dataset_list")]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("dataset_detail", args=[self.pk])


class DatasetRow(models.Model):
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="rows")
    #: 0-based, the file's order (header and blank lines not counted).
    index = models.PositiveIntegerField()
    #: {column: value}: text from CSV, JSON values from JSONL, cell values from XLSX.
    data = models.JSONField()

    class Meta:
        ordering = ["dataset_id", "index"]
        constraints = [
            models.UniqueConstraint(fields=["dataset", "index"], name="one_row_per_index")
        ]

    def __str__(self) -> str:
        return f"{self.dataset_id}#{self.index}"


class Comparison(models.Model):
    """One prompt set (or dataset) run against several targets: each target is
    a sibling job (``Job.comparison``) over the same items, started together."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="comparisons")
    name = models.CharField(max_length=200)
    dataset = models.ForeignKey(
        Dataset, null=True, blank=True, on_delete=models.SET_NULL, related_name="comparisons"
    )
    prompt_template = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["team", "-created_at", "-id"], name="comparison_list")]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("comparison_detail", args=[self.pk])


class Rating(models.Model):
    """A reviewer's verdict on one cell: row ``index`` of ``job`` (a comparison's
    target, or any job). One per reviewer per cell, the latest wins; ``best``
    marks the reviewer's pick of a comparison's row (one per row)."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="ratings")
    index = models.PositiveIntegerField()
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    score = models.SmallIntegerField(null=True, blank=True, help_text="-1 or 1; none: not scored.")
    best = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["job_id", "index", "updated_at"]
        constraints = [
            models.UniqueConstraint(fields=["job", "index", "user"], name="one_rating_per_cell"),
            models.CheckConstraint(
                condition=Q(score__isnull=True) | Q(score__in=[-1, 1]), name="rating_score_sign"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.job_id}#{self.index} {self.user_id}: {self.score} {self.best}"


class RowNote(models.Model):
    """A reviewer's note on one row of a comparison (every target's cell of it)."""

    comparison = models.ForeignKey(Comparison, on_delete=models.CASCADE, related_name="notes")
    index = models.PositiveIntegerField()
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    text = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["comparison_id", "index", "id"]
        indexes = [models.Index(fields=["comparison", "index"], name="row_note_index")]

    def __str__(self) -> str:
        return f"{self.comparison_id}#{self.index}: {self.text[:40]}"


class JobUnit(models.Model):
    """One remote job of an async provider (MyMagic: the whole batch; GridRepublic:
    one prompt). ``state`` records the submit step so a crash mid-submit is
    reconciled, never blindly resubmitted."""

    class State(models.TextChoices):
        PENDING = "pending"
        SUBMITTING = "submitting"
        SUBMITTED = "submitted"
        COMPLETED = "completed"
        FAILED = "failed"
        UNKNOWN = "unknown"  # crashed mid-submit: outcome unknown, not resubmitted

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="units")
    index = models.PositiveIntegerField()
    prompt_indexes = models.JSONField()
    state = models.CharField(max_length=12, choices=State.choices, default=State.PENDING)
    remote_id = models.CharField(max_length=200, blank=True, db_index=True)
    provider_status = models.CharField(max_length=100, blank=True)
    log_length = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    poll_failures = models.PositiveIntegerField(default=0)
    submitted_at = models.DateTimeField(null=True, blank=True)
    next_poll_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["job_id", "index"]
        constraints = [models.UniqueConstraint(fields=["job", "index"], name="one_unit_per_index")]
        indexes = [models.Index(fields=["state", "next_poll_at"], name="unit_due")]

    def __str__(self) -> str:
        return f"{self.job_id}/{self.index} {self.remote_id or self.state}"


class BatchChunk(models.Model):
    """One remote batch of a batch job: the contiguous item indexes
    ``[start_index, end_index)``. ``state`` records the non-idempotent create
    (``submitting`` before it), so a crash mid-create is looked up by the
    metadata sent with it, never blindly created again."""

    class State(models.TextChoices):
        PENDING = "pending", "Pending"  # not created yet
        SUBMITTING = "submitting", "Submitting"  # the create is under way
        LIVE = "live", "Live"  # at the provider
        ENDED = "ended", "Ended"  # results read
        FAILED = "failed", "Failed"  # refused at validation, or could not be created
        UNKNOWN = "unknown", "Outcome unknown"  # may have been created; cannot be looked up
        SPLIT = "split", "Split"  # refused as too large (413): two halves replace it

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="chunks")
    #: 0-based.
    number = models.PositiveIntegerField()
    start_index = models.PositiveIntegerField()
    end_index = models.PositiveIntegerField()
    requests = models.PositiveIntegerField(default=0)
    state = models.CharField(max_length=20, choices=State.choices, default=State.PENDING)
    remote_id = models.CharField(max_length=255, blank=True)
    input_file_id = models.CharField(max_length=255, blank=True)
    output_file_id = models.CharField(max_length=255, blank=True)
    error_file_id = models.CharField(max_length=255, blank=True)
    results_url = models.CharField(max_length=1000, blank=True)
    #: The provider's own word: validating, in_progress, finalizing, ended, …
    provider_status = models.CharField(max_length=40, blank=True)
    #: total, completed, failed, processing as the provider reports them.
    counts = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    next_poll_at = models.DateTimeField(null=True, blank=True, db_index=True)
    poll_failures = models.PositiveIntegerField(default=0)
    #: Who creates the batch or reads its results now, until when.
    lease_owner = models.CharField(max_length=64, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    cancel_requested = models.BooleanField(default=False)

    class Meta:
        ordering = ["job_id", "number"]
        constraints = [
            models.UniqueConstraint(fields=["job", "number"], name="one_chunk_per_number")
        ]

    def __str__(self) -> str:
        return f"{self.job_id}/{self.number} {self.remote_id or self.state}"

    @property
    def items(self) -> int:
        return self.end_index - self.start_index


class JobSlice(models.Model):
    """A contiguous range ``[start_index, end_index)`` of a big online job's
    items, worked on by one worker process at a time, so every free worker
    on every machine may work on one job. Claimed and renewed with
    conditional UPDATEs (PostgreSQL skips rows another claimer has locked);
    a killed worker's slice is taken over once its lease expires, and only
    its items not recorded yet go again."""

    class State(models.TextChoices):
        PENDING = "pending", "Pending"  # nobody works on it (never claimed, or let go)
        RUNNING = "running", "Running"  # ``owner`` works on it until ``lease_expires_at``
        DONE = "done", "Done"  # every item of it ended

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="slices")
    #: 0-based.
    number = models.PositiveIntegerField()
    start_index = models.PositiveIntegerField()
    end_index = models.PositiveIntegerField()
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    #: The worker process that holds it, or held it last (kept once done).
    owner = models.CharField(max_length=64, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    #: Calls in flight as its owner last wrote them: its share of the job's
    #: ``items_running``, taken back when a killed owner's slice is taken over.
    running = models.PositiveIntegerField(default=0)
    takeovers = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["job_id", "number"]
        constraints = [
            models.UniqueConstraint(fields=["job", "number"], name="one_slice_per_number")
        ]
        indexes = [models.Index(fields=["job", "state", "number"], name="slice_claim")]

    def __str__(self) -> str:
        return f"{self.job_id}/{self.number} {self.state}"

    @property
    def items(self) -> int:
        return self.end_index - self.start_index


class JobEvent(models.Model):
    """The job's append-only timeline and live log. The page reads events after
    a cursor, so each poll sends only what is new."""

    class Kind(models.TextChoices):
        EVENT = "event"  # submitted, polled, finished...
        RETRY = "retry"
        ERROR = "error"
        LOG = "log"  # the provider's own log (the new part only)
        STREAM = "stream"  # streamed output as it arrives
        NOTE = "note"  # a reviewer's comment

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.EVENT)
    message = models.TextField()
    unit = models.PositiveIntegerField(null=True, blank=True)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["job", "id"], name="event_cursor")]

    def __str__(self) -> str:
        return f"{self.kind}: {self.message[:60]}"

    @property
    def is_output(self) -> bool:
        return self.kind in (self.Kind.LOG, self.Kind.STREAM)


class ModelInstance(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="instances")
    credential = models.ForeignKey(Credential, on_delete=models.CASCADE, related_name="instances")
    model = models.CharField(max_length=200)
    status = models.CharField(
        max_length=10, choices=InstanceStatus.choices, default=InstanceStatus.REQUESTED
    )
    provider_status = models.CharField(max_length=100, blank=True)
    message = models.TextField(blank=True)
    concurrency = models.PositiveIntegerField(null=True, blank=True)
    inferences = models.PositiveIntegerField(null=True, blank=True)
    expiration_seconds = models.PositiveIntegerField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    required_ram_gb = models.FloatField(null=True, blank=True)
    external = models.BooleanField(default=False, help_text="Started outside this dashboard.")
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    running_since = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    deadline_at = models.DateTimeField(null=True, blank=True)
    next_check_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["credential", "model"],
                # A stop under way is still live: a new instance of the model
                # would be deleted by it (Bytez deletes by model name).
                condition=Q(status__in=["requested", "loading", "running", "stopping"]),
                name="one_live_instance_per_model",
            )
        ]

    def __str__(self) -> str:
        return f"{self.model} ({self.status})"


class ModelCatalogEntry(models.Model):
    credential = models.ForeignKey(Credential, on_delete=models.CASCADE, related_name="catalog")
    name = models.CharField(max_length=300)
    required_ram_gb = models.FloatField(null=True, blank=True)
    benchmarked = models.BooleanField(null=True)
    fetched_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["credential", "name"], name="catalog_entry_once")
        ]

    def __str__(self) -> str:
        return self.name


class ApiToken(models.Model):
    """A bearer token for the JSON API. Only its SHA-256 is stored."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100, default="API token")
    prefix = models.CharField(max_length=12, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @staticmethod
    def hash(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    @classmethod
    def issue(cls, user: Any, name: str = "API token") -> tuple[ApiToken, str]:
        """Create a token; the plaintext is returned once and never stored."""
        key = "ljd_" + pysecrets.token_urlsafe(32)
        token = cls.objects.create(user=user, name=name, prefix=key[:10], key_hash=cls.hash(key))
        return token, key


class AuditEvent(models.Model):
    """Append-only record of who did what (credentials, jobs, members)."""

    team = models.ForeignKey(
        Team, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit_events"
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    action = models.CharField(max_length=50)
    target = models.CharField(max_length=200, blank=True)
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["team", "-created_at", "-id"], name="audit_history")]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.actor} {self.action} {self.target}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            raise ValueError("Audit events are append-only.")
        super().save(*args, **kwargs)


class LoginAttempt(models.Model):
    """Failed logins per username and per client address, for throttling."""

    key = models.CharField(max_length=200, unique=True)
    failures = models.PositiveIntegerField(default=0)
    window_start = models.DateTimeField(default=timezone.now)
    locked_until = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.key}: {self.failures}"


class Price(models.Model):
    """What a team pays a provider for a model, in USD per million tokens.
    Nothing is priced by default: a model without a row has no price, and
    its jobs show "no price set", never $0."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="prices")
    provider = models.CharField(max_length=20, choices=PROVIDER_CHOICES)
    model = models.CharField(max_length=200)
    input_per_mtok = models.DecimalField(max_digits=12, decimal_places=6)
    output_per_mtok = models.DecimalField(max_digits=12, decimal_places=6)
    #: The batch API's prices; unset: half the online price.
    batch_input_per_mtok = models.DecimalField(
        max_digits=12, decimal_places=6, null=True, blank=True
    )
    batch_output_per_mtok = models.DecimalField(
        max_digits=12, decimal_places=6, null=True, blank=True
    )
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["provider", "model"]
        constraints = [
            models.UniqueConstraint(
                fields=["team", "provider", "model"], name="one_price_per_model"
            )
        ]

    def __str__(self) -> str:
        return (
            f"{self.provider} {self.model}: {self.input_per_mtok}/{self.output_per_mtok} per Mtok"
        )


class Webhook(models.Model):
    """A team's receiver of events, signed per the Standard Webhooks spec with
    its own secret (``whsec_…``, shown once when created, stored encrypted)."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="webhooks")
    url = models.URLField(max_length=500)
    events = models.JSONField(help_text="The event types it receives.")
    secret = EncryptedSecretField(help_text="Encrypted at rest; shown once, when created.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.url

    def reveal_secret(self) -> str:
        """The ``whsec_…`` secret, to sign a delivery (raises SecretDecryptionError)."""
        return decrypt(self.secret)


class Outbox(models.Model):
    """A message to send with its own retries: the row says what is due next
    (``next_attempt_at``) and who holds it (``lease_owner``, until
    ``next_attempt_at`` while an attempt is under way), so a lost task delays
    a message, never loses it."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    event = models.CharField(max_length=40)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    lease_owner = models.CharField(max_length=64, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True


class WebhookDelivery(Outbox):
    """One event for one webhook: the same ``message_id`` (the webhook-id
    header) on every attempt, so a receiver can drop a repeat."""

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    #: The job's or the instance's id.
    object_id = models.BigIntegerField()
    message_id = models.CharField(max_length=40)
    #: The JSON body, exactly as sent (every attempt sends the same bytes).
    #: Empty until the first attempt for job events: built then, from the job.
    body = models.TextField(blank=True)
    response_status = models.PositiveIntegerField(null=True, blank=True)
    redelivery_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="delivery_due"),
            models.Index(fields=["webhook", "-created_at", "-id"], name="delivery_log"),
        ]

    def __str__(self) -> str:
        return f"{self.event} #{self.object_id} -> {self.webhook_id} ({self.status})"


class WebhookAttempt(models.Model):
    """Every attempt of a delivery, logged when it starts and completed with
    what the receiver answered (a worker that died mid-attempt leaves its row
    saying so)."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="log")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField(default=timezone.now)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    response_status = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["delivery_id", "number"]

    def __str__(self) -> str:
        return f"{self.delivery_id} attempt {self.number}: {self.response_status or self.error}"


class NotificationPreference(models.Model):
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_preference"
    )
    email_on_job_end = models.BooleanField(
        default=False, help_text="E-mail me when a job I submitted ends."
    )

    def __str__(self) -> str:
        return f"{self.user}: e-mail on job end {'on' if self.email_on_job_end else 'off'}"


class EmailNotification(Outbox):
    """One e-mail to a user about their job, sent and retried like a delivery."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="+")

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="email_due")]

    def __str__(self) -> str:
        return f"{self.event} #{self.job_id} to {self.user_id} ({self.status})"
