"""The Django admin: everything manageable, secrets never displayed."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from dashboard.accounts import access, services
from dashboard.accounts.audit import audit
from dashboard.accounts.credentials import credential_update, has_nul
from dashboard.core import netguard
from dashboard.instances.services import instance_stop_begin
from dashboard.jobs.services import job_cancel, job_retry

from .models import (
    ApiToken,
    AuditEvent,
    Comparison,
    Credential,
    Dataset,
    Item,
    Job,
    JobEvent,
    JobUnit,
    Membership,
    ModelCatalogEntry,
    ModelInstance,
    Rating,
    Role,
    RowNote,
    Team,
)
from .status import INSTANCE_LIVE, JOB_ACTIVE


class MembershipInline(admin.TabularInline):
    """Shown, not edited here: members change through the Memberships admin,
    whose saves go through the team services (the last admin stays)."""

    model = Membership
    extra = 0
    fields = ["user", "role", "created_at"]
    readonly_fields = fields
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ["name", "created_at", "cost_per_gb_second"]
    search_fields = ["name"]
    inlines = [MembershipInline]

    def save_model(self, request: HttpRequest, obj: Team, form: Any, change: bool) -> None:
        rate = obj.cost_per_gb_second
        if change and "cost_per_gb_second" in form.changed_data:
            obj.cost_per_gb_second = form.initial.get("cost_per_gb_second")
        super().save_model(request, obj, form, change)
        if not change:
            audit(request.user, obj, "team.created", obj, via="admin")
        elif "cost_per_gb_second" in form.changed_data:
            services.team_set_cost_rate(team=obj, rate=rate, actor=request.user, via="admin")


class MembershipAdminForm(forms.ModelForm):
    class Meta:
        model = Membership
        fields = ["team", "user", "role"]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if self.instance.pk and "role" in self.changed_data:
            problem = services.role_change_problem(self.instance, data.get("role", ""))
            if problem:
                self.add_error("role", problem)
        return data


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    """Every change goes through the team services: audited, and a team's last
    admin is neither demoted nor removed."""

    form = MembershipAdminForm
    list_display = ["user", "team", "role", "created_at"]
    list_filter = ["role", "team"]
    search_fields = ["user__username", "team__name"]
    autocomplete_fields = ["user", "team"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return ["team", "user"] if obj is not None else []

    def save_model(self, request: HttpRequest, obj: Membership, form: Any, change: bool) -> None:
        if not change:
            added = services.member_add(
                team=obj.team,
                username=obj.user.get_username(),
                role=obj.role,
                actor=request.user,
                via="admin",
            )
            obj.pk = added.pk
        elif "role" in form.changed_data:
            role = obj.role
            obj.role = form.initial["role"]
            services.member_set_role(membership=obj, role=role, actor=request.user, via="admin")

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and services.role_change_problem(obj, None):
            return False
        return super().has_delete_permission(request, obj)

    def delete_model(self, request: HttpRequest, obj: Membership) -> None:
        services.member_remove(membership=obj, actor=request.user, via="admin")

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Membership]) -> None:
        for membership in queryset:
            try:
                services.member_remove(membership=membership, actor=request.user, via="admin")
            except services.TeamRuleError as exc:
                self.message_user(request, str(exc), messages.ERROR)


class CredentialAdminForm(forms.ModelForm):
    """The secret is write-only: empty keeps the stored one."""

    new_secret = forms.CharField(
        required=False,
        label="Secret",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Stored encrypted and never shown. Leave empty to keep the current secret.",
    )
    base_url = forms.URLField(max_length=500, assume_scheme="https")

    class Meta:
        model = Credential
        fields = [
            "team",
            "provider",
            "name",
            "base_url",
            "options",
            "max_concurrency",
            "requests_per_minute",
            "created_by",
        ]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if not self.instance.pk and not data.get("new_secret"):
            self.add_error("new_secret", "A new credential needs a secret.")
        if data.get("base_url"):
            try:
                netguard.check_url(data["base_url"])
            except netguard.BlockedHostError as exc:
                self.add_error("base_url", str(exc))
        if has_nul(data.get("options")):
            self.add_error("options", "Options may not contain NUL (\\u0000) characters.")
        return data

    def changed_columns(self) -> list[str]:
        """The model fields this form changed (the secret when one was given)."""
        columns = [name for name in self.changed_data if name in self.Meta.fields]
        if self.cleaned_data.get("new_secret"):
            columns.append("secret")
        return columns

    def save(self, commit: bool = True) -> Credential:
        credential = super().save(commit=False)
        if self.cleaned_data.get("new_secret"):
            credential.secret = self.cleaned_data["new_secret"]
        if commit:
            credential.save()
        return credential


@admin.register(Credential)
class CredentialAdmin(admin.ModelAdmin):
    form = CredentialAdminForm
    list_display = [
        "name",
        "provider",
        "team",
        "base_url",
        "max_concurrency",
        "last_used_at",
        "last_error_at",
    ]
    list_filter = ["provider", "team"]
    search_fields = ["name", "base_url", "team__name"]
    readonly_fields = [
        "created_at",
        "last_used_at",
        "last_error",
        "last_error_at",
        "consecutive_failures",
        "circuit_open_until",
        "poll_lease_owner",
        "poll_lease_expires_at",
    ]

    def save_model(
        self, request: HttpRequest, obj: Credential, form: CredentialAdminForm, change: bool
    ) -> None:
        if not change:
            super().save_model(request, obj, form, change)
            audit(
                request.user,
                obj.team,
                "credential.created",
                obj,
                provider=obj.provider,
                via="admin",
            )
            return
        credential_update(obj, actor=request.user, fields=form.changed_columns(), via="admin")


class ReadOnlyChangeForm(admin.ModelAdmin):
    """Rows the workers write (jobs, instances): the admin shows them and acts on
    them through its actions (the services, conditional updates), but never
    saves a change form, which would write back every column as it was when
    the form opened over what a worker wrote since."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Without an object this is the changelist's question (its actions).
        if obj is not None:
            return False
        return super().has_change_permission(request, obj)


class JobEventInline(admin.TabularInline):
    """The timeline; the log and streamed text (possibly megabytes) stay out."""

    model = JobEvent
    extra = 0
    fields = ["created_at", "kind", "message", "author"]
    readonly_fields = fields
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[JobEvent]:
        return (
            super()
            .get_queryset(request)
            .exclude(kind__in=[JobEvent.Kind.LOG, JobEvent.Kind.STREAM])
        )


class JobUnitInline(admin.TabularInline):
    model = JobUnit
    extra = 0
    fields = [
        "index",
        "state",
        "remote_id",
        "provider_status",
        "log_length",
        "error",
        "submitted_at",
    ]
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Job)
class JobAdmin(ReadOnlyChangeForm):
    list_display = [
        "id",
        "status",
        "provider_status",
        "provider",
        "model",
        "credential_name",
        "team",
        "created_by",
        "progress_done",
        "progress_total",
        "created_at",
    ]
    list_filter = ["status", "provider", "team", "created_at"]
    search_fields = ["=id", "model", "credential_name", "created_by__username", "error"]
    date_hierarchy = "created_at"
    list_select_related = ["team", "created_by"]
    readonly_fields = [
        "status",
        "provider_status",
        "created_at",
        "started_at",
        "finished_at",
        "attempts",
        "lease_owner",
        "lease_expires_at",
        "next_check_at",
    ]
    raw_id_fields = ["credential", "retry_of", "created_by"]
    inlines = [JobUnitInline, JobEventInline]
    actions = ["cancel_jobs", "retry_jobs"]

    @admin.action(description="Cancel selected jobs", permissions=["change"])
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        cancelled = 0
        for job in _operable(self, request, queryset.filter(status__in=JOB_ACTIVE)):
            if job_cancel(job, user=request.user, via="admin"):
                cancelled += 1
        self.message_user(request, f"Cancelled {cancelled} job(s).", messages.SUCCESS)

    @admin.action(description="Retry selected jobs", permissions=["change"])
    def retry_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        created = 0
        for job in _operable(self, request, queryset):
            try:
                job_retry(job, user=request.user, via="admin")
            except ValueError as exc:
                self.message_user(request, f"Job {job.pk}: {exc}", messages.WARNING)
                continue
            created += 1
        self.message_user(request, f"Created {created} retry job(s).", messages.SUCCESS)


@admin.register(JobEvent)
class JobEventAdmin(admin.ModelAdmin):
    list_display = ["job", "kind", "short_message", "author", "created_at"]
    list_filter = ["kind"]
    search_fields = ["message", "=job__id"]
    raw_id_fields = ["job", "author"]

    @admin.display(description="message")
    def short_message(self, event: JobEvent) -> str:
        return event.message[:120]


@admin.register(ModelInstance)
class ModelInstanceAdmin(ReadOnlyChangeForm):
    list_display = [
        "model",
        "status",
        "provider_status",
        "credential",
        "team",
        "concurrency",
        "inferences",
        "expires_at",
        "external",
    ]
    list_filter = ["status", "external", "team"]
    search_fields = ["model", "credential__name"]
    raw_id_fields = ["credential", "created_by"]
    list_select_related = ["credential", "team"]
    readonly_fields = [
        "status",
        "provider_status",
        "message",
        "error",
        "created_at",
        "running_since",
        "ended_at",
        "deadline_at",
        "next_check_at",
    ]
    actions = ["shutdown_instances"]

    @admin.action(description="Shut down selected instances", permissions=["change"])
    def shutdown_instances(self, request: HttpRequest, queryset: QuerySet[ModelInstance]) -> None:
        """In the background: the provider call is a task, never this request."""
        started = 0
        live = queryset.filter(status__in=INSTANCE_LIVE).select_related("credential", "team")
        for instance in _operable(self, request, live):
            was = instance.status
            instance = instance_stop_begin(instance, request.user, via="admin")
            if instance.status != was and instance.status in ("stopping", "stopped"):
                started += 1
        self.message_user(
            request,
            f"Shutting down {started} instance(s) in the background; "
            "their status shows “stopping” until the provider confirms.",
            messages.SUCCESS,
        )


@admin.register(ModelCatalogEntry)
class ModelCatalogEntryAdmin(admin.ModelAdmin):
    list_display = ["name", "credential", "required_ram_gb", "benchmarked", "fetched_at"]
    search_fields = ["name"]
    raw_id_fields = ["credential"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "prefix", "created_at", "last_used_at", "revoked_at"]
    search_fields = ["name", "user__username", "prefix"]
    readonly_fields = ["prefix", "created_at", "last_used_at"]
    raw_id_fields = ["user"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # tokens are issued by the UI or `manage.py create_api_token`


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["created_at", "actor", "team", "action", "target"]
    list_filter = ["action", "team"]
    search_fields = ["target", "actor__username"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _operable(model_admin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Any]) -> Any:
    """The selected rows this admin user may act on (superusers: all; other
    staff: those of teams where they are members), warning about the rest."""
    for obj in queryset:
        if access.operator_allows(request.user, obj, Role.MEMBER):
            yield obj
        else:
            model_admin.message_user(
                request,
                f"{obj}: you are not a member of its team; left as it is.",
                messages.WARNING,
            )


# --- items, datasets, comparisons and reviews: read-only, written by the services ---------------


@admin.register(Item)
class ItemAdmin(ReadOnlyChangeForm):
    """A job's rows, looked up by job: workers and the job services write them
    (with the job's counters), so nothing is saved from here."""

    list_display = ["job", "index", "status", "valid", "attempts", "latency_ms", "updated_at"]
    list_filter = ["status", "valid"]
    search_fields = ["=job__id"]
    raw_id_fields = ["job"]
    list_select_related = ["job"]
    show_full_result_count = False  # millions of rows: no COUNT(*) on every page


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ["name", "team", "row_count", "source", "created_by", "created_at"]
    list_filter = ["team", "source"]
    search_fields = ["name"]
    readonly_fields = ["columns", "row_count", "source", "file_name", "size_bytes", "created_at"]
    raw_id_fields = ["created_by"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # uploads go through the page or the API, which read and check the file


@admin.register(Comparison)
class ComparisonAdmin(admin.ModelAdmin):
    list_display = ["name", "team", "dataset", "created_by", "created_at"]
    list_filter = ["team"]
    search_fields = ["name"]
    raw_id_fields = ["dataset", "created_by"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # a comparison starts its jobs: the page or the API make one


@admin.register(Rating)
class RatingAdmin(admin.ModelAdmin):
    list_display = ["job", "index", "user", "score", "best", "updated_at"]
    list_filter = ["score", "best"]
    raw_id_fields = ["job", "user"]


@admin.register(RowNote)
class RowNoteAdmin(admin.ModelAdmin):
    list_display = ["comparison", "index", "author", "created_at"]
    raw_id_fields = ["comparison", "author"]
