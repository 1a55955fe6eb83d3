"""The Django admin: everything manageable, secrets never displayed.

Superusers operate every team. Other staff operate their own teams only,
whatever model permissions they were granted (``TeamScoped``):

- they see the rows of teams they are in, with the role the team's pages
  need to see them (any role; the admin role for the audit trail), and
  another team's row is missing, as Django shows a row that does not exist;
- they add, change and delete rows of teams where they are admins: the admin
  site edits rows past the pages' forms, so it asks for the role that manages
  the team (credentials, members, budget and cost rate alike), and its
  foreign-key choices hold only those teams' rows;
- the job and instance actions need the member role, as the pages' buttons:
  they go through the same services;
- API tokens are their own only, and a token's user never changes.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import actions as admin_actions
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import ForeignKey, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect

from dashboard.accounts import access, services
from dashboard.accounts import credentials as credential_limits
from dashboard.accounts.audit import audit
from dashboard.accounts.credentials import (
    CredentialInUse,
    credential_delete,
    credential_update,
)
from dashboard.accounts.prices import MAX_BUDGET, PriceError, amount, team_set_budget
from dashboard.accounts.throttle import ThrottledAdminAuthenticationForm
from dashboard.core import netguard
from dashboard.core.formfields import has_nul
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

#: The admin's login is throttled as /login/ is: the same keys and delays.
admin.site.login_form = ThrottledAdminAuthenticationForm

#: A team list filter of the teams in the admin user's own rows only.
TEAM_FILTER = ("team", admin.RelatedOnlyFieldListFilter)


class TeamScoped(admin.ModelAdmin):
    """A model admin of one team's rows, for staff who are not superusers:
    see the module's docstring. ``team_path`` leads from a row to its team."""

    team_path = "team"
    view_role: str = Role.VIEWER
    change_role: str = Role.ADMIN

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        rows = super().get_queryset(request)
        return access.operable(rows, request.user, self.view_role, team_path=self.team_path)

    def allows(self, request: HttpRequest, obj: Any) -> bool:
        return access.operator_allows(request.user, obj, self.change_role, team_path=self.team_path)

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        if not super().has_add_permission(request, *args):
            return False
        user = request.user
        return user.is_superuser or access.teams_of(user, self.change_role).exists()

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        allowed = super().has_change_permission(request, obj)
        return allowed and (obj is None or self.allows(request, obj))

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        allowed = super().has_delete_permission(request, obj)
        return allowed and (obj is None or self.allows(request, obj))

    def save_form(self, request: HttpRequest, form: Any, change: bool) -> Any:
        obj = super().save_form(request, form, change)
        if not self.allows(request, obj):  # the choices hold only such teams: a forged post
            raise PermissionDenied
        return obj

    def formfield_for_foreignkey(
        self, db_field: ForeignKey, request: HttpRequest, **kwargs: Any
    ) -> Any:
        """A choice of a team's row (the team itself, a credential, a job...)
        offers only the rows of teams where the user may change things."""
        related = self.admin_site._registry.get(db_field.remote_field.model)
        if isinstance(related, TeamScoped) and "queryset" not in kwargs:
            kwargs["queryset"] = access.operable(
                db_field.remote_field.model._default_manager.all(),
                request.user,
                self.change_role,
                team_path=related.team_path,
            )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


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


class TeamAdminForm(forms.ModelForm):
    class Meta:
        model = Team
        fields = ["name", "created_at", "cost_per_gb_second", "monthly_budget_usd"]

    def clean_monthly_budget_usd(self) -> Any:
        budget = self.cleaned_data.get("monthly_budget_usd")
        if budget is None:
            return None
        try:  # what the budget service accepts, refused here as a form error
            return amount(budget, "monthly_usd", maximum=MAX_BUDGET - 1, places=2)
        except PriceError as exc:
            raise forms.ValidationError(exc.message) from None


@admin.register(Team)
class TeamAdmin(TeamScoped):
    """A team's admins change its name, cost rate and budget; teams are
    created (``create_team``) and deleted by superusers."""

    form = TeamAdminForm
    team_path = "pk"
    list_display = ["name", "created_at", "cost_per_gb_second", "monthly_budget_usd"]
    search_fields = ["name"]
    inlines = [MembershipInline]

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return request.user.is_superuser and super().has_add_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser and super().has_delete_permission(request, obj)

    def save_model(self, request: HttpRequest, obj: Team, form: Any, change: bool) -> None:
        """Only the changed columns, and the cost rate and the budget through
        their services (audited with the old and new values)."""
        if not change:
            super().save_model(request, obj, form, change)
            audit(request.user, obj, "team.created", obj, via="admin")
            return
        changed = set(form.changed_data)
        rate, budget = obj.cost_per_gb_second, obj.monthly_budget_usd
        plain = sorted(changed - {"cost_per_gb_second", "monthly_budget_usd"})
        with transaction.atomic():
            if plain:
                obj.save(update_fields=plain)
                audit(request.user, obj, "team.updated", obj, fields=plain, via="admin")
            if "cost_per_gb_second" in changed:
                services.team_set_cost_rate(team=obj, rate=rate, actor=request.user, via="admin")
            if "monthly_budget_usd" in changed:
                team_set_budget(team=obj, budget=budget, actor=request.user, via="admin")


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
class MembershipAdmin(TeamScoped):
    """Every change goes through the team services: audited, and a team's last
    admin is neither demoted nor removed. Staff see their teams' members and
    add, change and remove those of teams they administer."""

    form = MembershipAdminForm
    list_display = ["user", "team", "role", "created_at"]
    list_filter = ["role", TEAM_FILTER]
    search_fields = ["user__username", "team__name"]
    autocomplete_fields = ["user"]  # the team: a choice of the teams one administers

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
            "tokens_per_minute",
        ]

    def clean_max_concurrency(self) -> int:
        return credential_limits.clean_max_concurrency(self.cleaned_data["max_concurrency"])

    def clean_requests_per_minute(self) -> int | None:
        value = self.cleaned_data.get("requests_per_minute")
        return credential_limits.clean_per_minute(value, credential_limits.MAX_RPM)

    def clean_tokens_per_minute(self) -> int | None:
        value = self.cleaned_data.get("tokens_per_minute")
        return credential_limits.clean_per_minute(value, credential_limits.MAX_TPM)

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
class CredentialAdmin(TeamScoped):
    form = CredentialAdminForm
    list_display = [
        "name",
        "provider",
        "team",
        "base_url",
        "max_concurrency",
        "requests_per_minute",
        "tokens_per_minute",
        "last_used_at",
        "last_error_at",
    ]
    list_filter = ["provider", TEAM_FILTER]
    search_fields = ["name", "base_url", "team__name"]
    actions = ["delete_selected"]
    readonly_fields = [
        "created_by",
        "created_at",
        "last_used_at",
        "last_error",
        "last_error_at",
        "consecutive_failures",
        "circuit_open_until",
        "paused_until",
        "last_limited_at",
        "last_limited_reason",
        "poll_lease_owner",
        "poll_lease_expires_at",
    ]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # A credential stays in its team: its jobs and instances are there.
        fields = list(super().get_readonly_fields(request, obj))
        return ["team", *fields] if obj is not None else fields

    def save_model(
        self, request: HttpRequest, obj: Credential, form: CredentialAdminForm, change: bool
    ) -> None:
        if not change:
            obj.created_by = request.user
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

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: Any = None
    ) -> HttpResponse:
        try:
            return super().delete_view(request, object_id, extra_context)
        except CredentialInUse as exc:  # raised in delete_model; the admin's log rolled back
            self.message_user(request, str(exc), messages.ERROR)
            return redirect("admin:dashboard_credential_change", object_id)

    def delete_model(self, request: HttpRequest, obj: Credential) -> None:
        credential_delete(obj, user=request.user, via="admin")

    @admin.action(permissions=["delete"], description="Delete selected credentials")
    def delete_selected(self, request: HttpRequest, queryset: QuerySet[Credential]) -> Any:
        """Django's bulk delete (its confirmation page and permission checks),
        but each credential through the service, and a message that says
        which were deleted and which were not."""
        if not request.POST.get("post"):
            return admin_actions.delete_selected(self, request, queryset)
        _, _, perms_needed, protected = self.get_deleted_objects(queryset, request)
        if perms_needed or protected:
            raise PermissionDenied
        self.delete_queryset(request, queryset)
        return None

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Credential]) -> None:
        deleted = 0
        for credential in queryset.select_related("team"):
            try:
                with transaction.atomic():
                    self.log_deletions(request, [credential])
                    credential_delete(credential, user=request.user, via="admin")
            except CredentialInUse as exc:
                self.message_user(request, f"Not deleted: {exc}", messages.ERROR)
                continue
            deleted += 1
        if deleted:
            self.message_user(request, f"Deleted {deleted} credential(s).", messages.SUCCESS)


class ReadOnlyChangeForm(TeamScoped):
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
    list_filter = ["status", "provider", TEAM_FILTER, "created_at"]
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
class JobEventAdmin(ReadOnlyChangeForm):
    """The timeline the services write: shown, never edited here."""

    team_path = "job__team"
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
    list_filter = ["status", "external", TEAM_FILTER]
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
class ModelCatalogEntryAdmin(TeamScoped):
    team_path = "credential__team"
    list_display = ["name", "credential", "required_ram_gb", "benchmarked", "fetched_at"]
    search_fields = ["name"]
    raw_id_fields = ["credential"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """A token is its user's: staff see and change only their own, and no one
    hands a token to another user."""

    list_display = ["name", "user", "prefix", "created_at", "last_used_at", "revoked_at"]
    search_fields = ["name", "user__username", "prefix"]
    readonly_fields = ["user", "prefix", "created_at", "last_used_at"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[ApiToken]:
        tokens = super().get_queryset(request)
        return tokens if request.user.is_superuser else tokens.filter(user=request.user)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # tokens are issued by the UI or `manage.py create_api_token`


@admin.register(AuditEvent)
class AuditEventAdmin(TeamScoped):
    """A team's trail, for its admins as on the team's audit page; events of
    no team (sign-ins, operators' commands) for superusers."""

    view_role = Role.ADMIN
    list_display = ["created_at", "actor", "team", "action", "target"]
    list_filter = ["action", TEAM_FILTER]
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
                f"{obj}: you are not a member of its team (or only a viewer); left as it is.",
                messages.WARNING,
            )


# --- items, datasets, comparisons and reviews: read-only, written by the services ---------------


@admin.register(Item)
class ItemAdmin(ReadOnlyChangeForm):
    """A job's rows, looked up by job: workers and the job services write them
    (with the job's counters), so nothing is saved from here."""

    team_path = "job__team"
    list_display = ["job", "index", "status", "valid", "attempts", "latency_ms", "updated_at"]
    list_filter = ["status", "valid"]
    search_fields = ["=job__id"]
    raw_id_fields = ["job"]
    list_select_related = ["job"]
    show_full_result_count = False  # millions of rows: no COUNT(*) on every page


@admin.register(Dataset)
class DatasetAdmin(TeamScoped):
    list_display = ["name", "team", "row_count", "source", "created_by", "created_at"]
    list_filter = [TEAM_FILTER, "source"]
    search_fields = ["name"]
    readonly_fields = [
        "team",
        "created_by",
        "columns",
        "row_count",
        "source",
        "file_name",
        "size_bytes",
        "created_at",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # uploads go through the page or the API, which read and check the file


@admin.register(Comparison)
class ComparisonAdmin(TeamScoped):
    list_display = ["name", "team", "dataset", "created_by", "created_at"]
    list_filter = [TEAM_FILTER]
    search_fields = ["name"]
    readonly_fields = ["team", "dataset", "created_by", "created_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # a comparison starts its jobs: the page or the API make one


@admin.register(Rating)
class RatingAdmin(TeamScoped):
    """A reviewer's verdict stays on its cell and its reviewer."""

    team_path = "job__team"
    list_display = ["job", "index", "user", "score", "best", "updated_at"]
    list_filter = ["score", "best"]
    readonly_fields = ["job", "index", "user", "created_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # reviewers rate on the review page


@admin.register(RowNote)
class RowNoteAdmin(TeamScoped):
    team_path = "comparison__team"
    list_display = ["comparison", "index", "author", "created_at"]
    readonly_fields = ["comparison", "index", "author", "created_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # reviewers write notes on the review page
