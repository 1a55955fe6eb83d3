"""The credentials page: the team's provider keys, added and edited by admins
(the secret never shown again), tested by members, with the truth about each:
what the last call with it saw, and when; and each credential's model
catalog (``/credentials/<id>/models``)."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseStopPolling

from dashboard.accounts import access
from dashboard.accounts.access import require_membership
from dashboard.accounts.audit import audit
from dashboard.accounts.credentials import (
    CredentialEditForm,
    CredentialForm,
    CredentialInUse,
    credential_check_is_billed,
    credential_check_model,
    credential_test,
)
from dashboard.accounts.credentials import credential_delete as credential_delete_service
from dashboard.core import clock
from dashboard.core import queue as tasks_queue
from dashboard.core.connect import credential_redact
from dashboard.instances import catalog
from dashboard.instances import services as instances
from dashboard.instances.catalog import CATALOG_MIN_INTERVAL_SECONDS, CATALOG_REFRESH_SECONDS
from dashboard.jobs import limits
from dashboard.models import Credential, Role
from dashboard.status import INSTANCE_LIVE, JOB_ACTIVE

from .scope import posted_for_other_team


@login_required
def credential_list(request: HttpRequest) -> HttpResponse:
    membership = require_membership(request)
    form = None
    if request.method == "POST" and posted_for_other_team(request, membership):
        return redirect("credential_list")
    if membership.allows(Role.ADMIN):
        form = CredentialForm(request.POST or None, team=membership.team)
        if request.method == "POST" and form.is_valid():
            credential = form.save_for(request.user)
            messages.success(
                request,
                f"Credential “{credential.name}” saved. Its secret will not be shown again.",
            )
            return redirect("credential_list")
    elif request.method == "POST":
        require_membership(request, Role.ADMIN)
    credentials = list(
        Credential.objects.filter(team=membership.team).annotate(
            active_jobs=Count("jobs", filter=Q(jobs__status__in=JOB_ACTIVE))
        )
    )
    now = clock.now()
    for credential in credentials:
        # Every member sees this: scrub what any writer stored, once more.
        credential.last_error = credential_redact(credential, credential.last_error)
        credential.health_detail = credential_redact(credential, credential.health_detail)
        credential.check_billed = credential_check_is_billed(credential)
        credential.check_model = credential_check_model(credential)
        # The pace this minute, against the limits every worker shares.
        credential.pace = (
            limits.rate_pace(credential)
            if credential.requests_per_minute or credential.tokens_per_minute
            else None
        )
        # A provider's Retry-After (or a 429) holds every call until then.
        credential.paused_now = (
            credential.paused_until
            if credential.paused_until and credential.paused_until > now
            else None
        )
        # An error newer than the health verdict (a writer that does not report
        # health yet) is shown beside it, never hidden behind a green OK.
        credential.error_is_newer = bool(credential.last_error) and (
            credential.health_checked_at is None
            or (
                credential.last_error_at is not None
                and credential.last_error_at > credential.health_checked_at
            )
        )
    return render(
        request,
        "dashboard/credentials.html",
        {
            "credentials": credentials,
            "form": form,
            "can_manage": membership.allows(Role.ADMIN),
            "can_test": membership.allows(Role.MEMBER),
        },
    )


@login_required
def credential_edit(request: HttpRequest, pk: int) -> HttpResponse:
    credential, _ = access.object_for(
        request.user, Credential.objects.select_related("team"), role=Role.ADMIN, pk=pk
    )
    form = CredentialEditForm(request.POST or None, instance=credential)
    if request.method == "POST" and form.is_valid():
        changed = form.save_for(request.user)
        if changed:
            messages.success(request, f"Credential “{credential.name}” saved.")
        else:
            messages.info(request, "Nothing changed.")
        return redirect("credential_list")
    return render(
        request, "dashboard/credential_edit.html", {"form": form, "credential": credential}
    )


@login_required
@require_POST
def credential_test_view(request: HttpRequest, pk: int) -> HttpResponse:
    credential, _ = access.object_for(
        request.user, Credential.objects.select_related("team"), role=Role.MEMBER, pk=pk
    )
    try:
        result = credential_test(
            credential,
            actor=request.user,
            model=request.POST.get("model", ""),
            confirm_billed=request.POST.get("confirm_billed") == "on",
        )
    except ValueError as exc:  # BilledCheckNotConfirmed, or a model name that cannot be
        messages.error(request, f"Not tested: {exc}")
        return redirect("credential_list")
    verdict = "Connection OK" if result["ok"] else "Connection failed"
    billed = " This check may have been billed." if result["billed"] else ""
    text = f"{verdict} ({result['latency_ms']} ms): {result['detail']}{billed}"
    (messages.success if result["ok"] else messages.error)(request, text)
    return redirect(f"{reverse('credential_list')}#credential-{credential.pk}")


@login_required
@require_POST
def credential_delete(request: HttpRequest, pk: int) -> HttpResponse:
    credential, _ = access.object_for(
        request.user, Credential.objects.all(), role=Role.ADMIN, pk=pk
    )
    name = credential.name
    try:
        credential_delete_service(credential, user=request.user)
    except CredentialInUse as exc:
        messages.error(request, str(exc))
        return redirect("credential_list")
    messages.success(request, f"Credential “{name}” deleted. Its jobs stay in the history.")
    return redirect("credential_list")


# --- a credential's model catalog ------------------------------------------------------------------

#: Models per page of the catalog.
CATALOG_PAGE_SIZE = 50
#: The catalog page stops waiting for a background refresh after this long.
CATALOG_WAIT_SECONDS = 120


def _team_credential(
    request: HttpRequest, pk: int, role: str = Role.VIEWER
) -> tuple[Credential, Any]:
    return access.object_for(
        request.user, Credential.objects.select_related("team"), role=role, pk=pk
    )


def float_param(request: HttpRequest, name: str) -> float | None:
    """A finite number, or None: NaN compares false with everything, so a
    ``since=nan`` would keep the partial polling for ever."""
    try:
        value = float(request.GET.get(name, ""))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


@login_required
@require_GET
def model_catalog(request: HttpRequest, pk: int) -> HttpResponse:
    credential, membership = _team_credential(request, pk)
    # PostgreSQL refuses NUL in a query parameter (a 500): a search ignores it.
    query = request.GET.get("q", "").replace("\x00", "").strip()[:200]
    waiting_since = float_param(request, "since")
    at = clock.now()
    state = catalog.catalog_state(credential)
    refreshing = False
    if state.source == "provider":
        if waiting_since is not None:
            refreshing = still_refreshing(state, waiting_since, at)
        elif catalog.catalog_wait_seconds(credential, force=False, at=at) <= 0:
            tasks_queue.nudge_catalog(credential.pk)
            refreshing, waiting_since = True, at.timestamp()
    page = Paginator(catalog.catalog_models(credential, query), CATALOG_PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    live = set(
        credential.instances.filter(status__in=INSTANCE_LIVE).values_list("model", flat=True)
    )
    context = {
        "credential": credential,
        "state": state,
        "q": query,
        "page_obj": page,
        "live_models": live,
        "refreshing": refreshing,
        "since": waiting_since,
        "has_instances": instances.provider_has_instances(credential.provider),
        "can_request": instances.provider_has_instances(credential.provider)
        and membership.allows(Role.MEMBER),
        "can_start_job": membership.allows(Role.MEMBER),
        "can_refresh": state.source == "provider" and membership.allows(Role.ADMIN),
        "refresh_hours": CATALOG_REFRESH_SECONDS // 3600,
    }
    if request.htmx:
        response = render(request, "dashboard/catalog.html#catalog-results", context)
        if waiting_since is not None and not refreshing:
            response.status_code = HttpResponseStopPolling.status_code
        return response
    return render(request, "dashboard/catalog.html", context)


def still_refreshing(state: catalog.CatalogState, since: float, at: datetime) -> bool:
    """A background refresh asked for at ``since`` (a timestamp) is not done yet."""
    if at.timestamp() - since > CATALOG_WAIT_SECONDS:
        return False
    if state.fetched_at is not None and state.fetched_at.timestamp() >= since - 1:
        return False
    return not (state.error_at is not None and state.error_at.timestamp() >= since - 1)


@login_required
@require_POST
def model_catalog_refresh(request: HttpRequest, pk: int) -> HttpResponse:
    credential, _ = _team_credential(request, pk, Role.ADMIN)
    if not catalog.catalog_from_provider(credential):
        messages.error(request, f"{credential.get_provider_display()} has no model list to fetch.")
        return redirect("model_catalog", pk=credential.pk)
    wait = catalog.catalog_wait_seconds(credential, force=True)
    if wait > 0:
        messages.error(
            request,
            f"The list was fetched (or tried) less than {CATALOG_MIN_INTERVAL_SECONDS} s ago; "
            f"try again in {int(wait) + 1} s.",
        )
        return redirect("model_catalog", pk=credential.pk)
    tasks_queue.nudge_catalog(credential.pk, force=True)
    audit(request.user, credential.team, "catalog.refresh", credential)
    messages.success(request, "Refreshing the model list in the background.")
    url = f"{reverse('model_catalog', args=[credential.pk])}?since={clock.now().timestamp():.3f}"
    return redirect(url)
