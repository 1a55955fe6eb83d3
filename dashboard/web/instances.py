"""Pages for model instances and model catalogs.

The instances page polls its own live table (``#live-instances``) every
second while an instance is live, so the countdown to expiry, the uptime and
the cost estimate are computed on the server; the home page polls a smaller
panel. Both answer 286 (stop polling) once nothing is live. Every action is a
plain form POST that redirects, so the pages work on a full reload too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseStopPolling

from dashboard.accounts import access
from dashboard.accounts.access import require_membership
from dashboard.accounts.services import team_set_cost_rate
from dashboard.core import clock
from dashboard.core import queue as tasks_queue
from dashboard.instances import services as instances
from dashboard.instances.poller import duration_text
from dashboard.instances.services import (
    MAX_CONCURRENCY,
    MAX_EXPIRATION_SECONDS,
    MIN_BILLED_SECONDS,
    MIN_EXPIRATION_SECONDS,
    InstanceError,
)
from dashboard.models import Credential, ModelInstance, Role, Team
from dashboard.status import INSTANCE_LIVE, InstanceStatus

from .scope import posted_for_other_team

#: Ended instances shown under the live ones (so a stop or an expiry stays visible).
RECENT_ENDED = 10


# --- forms -----------------------------------------------------------------------------------


class LoadSettingsForm(forms.Form):
    concurrency = forms.IntegerField(
        min_value=1,
        max_value=MAX_CONCURRENCY,
        initial=1,
        help_text="Copies of the model serving requests in parallel.",
    )
    expiration_seconds = forms.IntegerField(
        label="Expiration period (seconds)",
        min_value=MIN_EXPIRATION_SECONDS,
        max_value=MAX_EXPIRATION_SECONDS,
        required=False,
        help_text="The instance stops this long after its last run (Bytez's default: 1800).",
    )


class InstanceRequestForm(LoadSettingsForm):
    credential = forms.ModelChoiceField(queryset=Credential.objects.none(), empty_label=None)
    model = forms.CharField(max_length=200, widget=forms.TextInput(attrs={"class": "mono"}))
    load = forms.BooleanField(
        required=False, initial=True, label="Load it as soon as it is available"
    )
    field_order = ["credential", "model", "load", "concurrency", "expiration_seconds"]

    def __init__(self, *args: Any, team: Team, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["credential"].queryset = instance_credentials(team)
        self.fields["concurrency"].required = False


class RateForm(forms.Form):
    cost_per_gb_second = forms.DecimalField(
        label="Cost per GB-second",
        max_digits=12,
        decimal_places=8,
        min_value=Decimal(0),
        required=False,
        help_text="In your currency; empty removes the rate.",
    )


def instance_credentials(team: Team) -> Any:
    return instances.instance_credentials().filter(team=team)


# --- what a row shows ----------------------------------------------------------------------------


@dataclass(frozen=True)
class InstanceRow:
    instance: ModelInstance
    live: bool
    available: bool
    load_wanted: bool
    expires: str
    uptime: str
    cost: str
    cost_detail: str


def instance_row(instance: ModelInstance, rate: Decimal | None, at: datetime) -> InstanceRow:
    cost, detail = _cost_text(instance, rate, at)
    uptime = instances.instance_uptime(instance, at)
    return InstanceRow(
        instance=instance,
        live=instance.status in INSTANCE_LIVE,
        available=instances.instance_is_available(instance),
        load_wanted=instances.instance_wants_load(instance),
        expires=_expires_text(instance, at),
        uptime=duration_text(uptime) if uptime is not None else "—",
        cost=cost,
        cost_detail=detail,
    )


def _expires_text(instance: ModelInstance, at: datetime) -> str:
    left = instances.instance_expires_in(instance, at)
    if left is None:
        return "—"
    if left > 0:
        return f"in {duration_text(left)}"
    return "now (Bytez stops it within 2 min)"


def _cost_text(instance: ModelInstance, rate: Decimal | None, at: datetime) -> tuple[str, str]:
    if instance.running_since is None:
        return "—", ""
    if rate is None:
        return "no rate set", ""
    if instance.required_ram_gb is None:
        return "RAM unknown", "The model's required RAM is not in the cached catalog."
    cost = instances.instance_cost(instance, rate, at)
    uptime = instances.instance_uptime(instance, at) or 0
    seconds = max(MIN_BILLED_SECONDS, int(uptime))
    detail = (
        f"{instance.required_ram_gb:g} GB × {seconds} s (at least {MIN_BILLED_SECONDS}) "
        f"× {rate.normalize():f} per GB-second"
    )
    return f"≈ {cost:.4f}", detail


def instance_rows(team: Team, *, live_only: bool = False) -> tuple[list[InstanceRow], bool]:
    """The team's live instances (newest first) and, unless ``live_only``, the
    last few that ended; plus whether anything is live (keep polling)."""
    base = ModelInstance.objects.filter(team=team).select_related("credential", "created_by")
    rows = list(base.filter(status__in=INSTANCE_LIVE))
    any_live = bool(rows)
    if not live_only:
        rows += list(
            base.exclude(status__in=INSTANCE_LIVE).order_by("-ended_at", "-id")[:RECENT_ENDED]
        )
    at = clock.now()
    return [instance_row(i, team.cost_per_gb_second, at) for i in rows], any_live


def instance_panel_context(team: Team) -> dict[str, Any]:
    """The home page's model-status panel (shown when the team can have instances)."""
    rows, any_live = instance_rows(team, live_only=True)
    return {
        "instance_panel_rows": rows,
        "instance_any_live": any_live,
        "show_instance_panel": any_live or instance_credentials(team).exists(),
    }


# --- pages ---------------------------------------------------------------------------------------


def _live_response(request: HttpRequest, template: str, context: dict[str, Any]) -> HttpResponse:
    response = render(request, template, context)
    if not context.get("any_live", context.get("instance_any_live")):
        response.status_code = HttpResponseStopPolling.status_code
    return response


@login_required
def instance_list(request: HttpRequest) -> HttpResponse:
    membership = require_membership(request)
    team = membership.team
    rows, any_live = instance_rows(team)
    context: dict[str, Any] = {
        "rows": rows,
        "any_live": any_live,
        "can_act": membership.allows(Role.MEMBER),
    }
    if request.htmx:
        return _live_response(request, "dashboard/instances.html#live-instances", context)
    return render(request, "dashboard/instances.html", _page_context(request, team, context))


def _page_context(
    request: HttpRequest,
    team: Team,
    context: dict[str, Any],
    form: InstanceRequestForm | None = None,
) -> dict[str, Any]:
    membership = require_membership(request)
    can_admin = membership.allows(Role.ADMIN)
    return {
        **context,
        "team": team,
        "credentials": instance_credentials(team),
        "form": form or InstanceRequestForm(team=team, initial=_request_initial(request)),
        "load_form": LoadSettingsForm(),
        "rate_form": RateForm(initial={"cost_per_gb_second": team.cost_per_gb_second})
        if can_admin
        else None,
        "can_admin": can_admin,
    }


def _request_initial(request: HttpRequest) -> dict[str, Any]:
    return {key: request.GET[key] for key in ("credential", "model") if request.GET.get(key)}


@login_required
@require_GET
def instance_panel(request: HttpRequest) -> HttpResponse:
    membership = require_membership(request)
    return _live_response(
        request, "partials/instance_panel.html", instance_panel_context(membership.team)
    )


@login_required
@require_POST
def instance_request_view(request: HttpRequest) -> HttpResponse:
    membership = require_membership(request, Role.MEMBER)
    if posted_for_other_team(request, membership):
        return redirect("instance_list")
    team = membership.team
    form = InstanceRequestForm(request.POST, team=team)
    if form.is_valid():
        data = form.cleaned_data
        try:
            instance = instances.instance_request(
                team,
                data["credential"],
                data["model"],
                request.user,
                concurrency=data["concurrency"] or 1,
                expiration_seconds=data["expiration_seconds"],
                load=data["load"],
                via="web",
            )
        except InstanceError as exc:
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        else:
            then = " and load it" if data["load"] else ""
            messages.success(request, f"Asked Bytez to prepare {instance.model}{then}.")
            return redirect("instance_list")
    rows, any_live = instance_rows(team)
    context = {"rows": rows, "any_live": any_live, "can_act": True}
    return render(request, "dashboard/instances.html", _page_context(request, team, context, form))


def _team_instance(request: HttpRequest, pk: int, role: str) -> ModelInstance:
    instance, _ = access.object_for(
        request.user, ModelInstance.objects.select_related("credential", "team"), role=role, pk=pk
    )
    return instance


@login_required
@require_POST
def instance_load_view(request: HttpRequest, pk: int) -> HttpResponse:
    instance = _team_instance(request, pk, Role.MEMBER)
    form = LoadSettingsForm(request.POST)
    if not form.is_valid():
        errors = "; ".join(e for field in form.errors.values() for e in field)
        messages.error(request, f"Not loaded: {errors}")
        return redirect("instance_list")
    try:
        instances.instance_load(
            instance,
            request.user,
            concurrency=form.cleaned_data["concurrency"],
            expiration_seconds=form.cleaned_data["expiration_seconds"],
            via="web",
        )
    except InstanceError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Loading {instance.model}.")
    return redirect("instance_list")


@login_required
@require_POST
def instance_shutdown_view(request: HttpRequest, pk: int) -> HttpResponse:
    instance = _team_instance(request, pk, Role.MEMBER)
    was = instance.status
    instance = instances.instance_stop_begin(instance, request.user, via="web")
    if instance.status != was and instance.status in (
        InstanceStatus.STOPPING,
        InstanceStatus.STOPPED,
    ):
        if instance.status == InstanceStatus.STOPPING:
            messages.success(request, f"Shutting down {instance.model}…")
        else:
            messages.success(request, f"The request for {instance.model} is cancelled.")
    elif instance.status == InstanceStatus.STOPPING:
        messages.info(request, f"{instance.model} is already being shut down.")
    else:
        messages.info(request, f"{instance.model} had already ended ({instance.status}).")
    return redirect("instance_list")


@login_required
@require_POST
def instance_reconcile_view(request: HttpRequest) -> HttpResponse:
    membership = require_membership(request, Role.MEMBER)
    if posted_for_other_team(request, membership):
        return redirect("instance_list")
    credentials = list(instance_credentials(membership.team).values_list("pk", flat=True))
    for credential_id in credentials:
        tasks_queue.nudge_reconcile(credential_id)
    if credentials:
        messages.info(
            request,
            "Asking Bytez for its running instances; those started elsewhere appear here shortly.",
        )
    else:
        messages.error(request, "The team has no Bytez credential.")
    return redirect("instance_list")


@login_required
@require_POST
def instance_rate(request: HttpRequest) -> HttpResponse:
    membership = require_membership(request, Role.ADMIN)
    if posted_for_other_team(request, membership):
        return redirect("instance_list")
    form = RateForm(request.POST)
    if form.is_valid():
        rate = form.cleaned_data["cost_per_gb_second"]
        team_set_cost_rate(team=membership.team, rate=rate, actor=request.user)
        messages.success(request, "Rate saved." if rate is not None else "Rate removed.")
    else:
        errors = "; ".join(e for field in form.errors.values() for e in field)
        messages.error(request, f"Rate not saved: {errors}")
    return redirect("instance_list")
