"""The credentials page: the team's provider keys, added and edited by admins
(the secret never shown again), tested by members, with the truth about each:
what the last call with it saw, and when."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from dashboard.accounts import access
from dashboard.accounts.access import require_membership
from dashboard.accounts.credentials import (
    CredentialEditForm,
    CredentialForm,
    CredentialInUse,
    credential_check_is_billed,
    credential_check_model,
    credential_test,
)
from dashboard.accounts.credentials import credential_delete as credential_delete_service
from dashboard.core.connect import credential_redact
from dashboard.models import Credential, Role
from dashboard.status import JOB_ACTIVE


@login_required
def credential_list(request: HttpRequest) -> HttpResponse:
    membership = require_membership(request)
    form = None
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
    for credential in credentials:
        # Every member sees this: scrub what any writer stored, once more.
        credential.last_error = credential_redact(credential, credential.last_error)
        credential.health_detail = credential_redact(credential, credential.health_detail)
        credential.check_billed = credential_check_is_billed(credential)
        credential.check_model = credential_check_model(credential)
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
