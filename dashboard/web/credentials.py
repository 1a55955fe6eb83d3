"""The credentials page: the team's provider keys, added by admins, never shown again."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from dashboard.accounts import access
from dashboard.accounts.access import require_membership
from dashboard.accounts.audit import audit
from dashboard.accounts.credentials import CredentialForm
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
    return render(
        request,
        "dashboard/credentials.html",
        {"credentials": credentials, "form": form, "can_manage": membership.allows(Role.ADMIN)},
    )


@login_required
@require_POST
def credential_delete(request: HttpRequest, pk: int) -> HttpResponse:
    credential, _ = access.object_for(
        request.user, Credential.objects.all(), role=Role.ADMIN, pk=pk
    )
    blocker = credential.delete_blocker()
    if blocker:
        messages.error(request, blocker)
        return redirect("credential_list")
    name = credential.name
    audit(request.user, credential.team, "credential.deleted", credential)
    credential.delete()
    messages.success(request, f"Credential “{name}” deleted. Its jobs stay in the history.")
    return redirect("credential_list")
