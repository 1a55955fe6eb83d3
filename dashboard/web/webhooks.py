"""Webhooks (team admins): add one (its secret is shown once), delete one, and
each one's delivery log (attempts, answers, next attempt) with "redeliver".

Admins only, reading too: a receiver's URL is often itself a secret (chat
services put the token in the path)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count, F, Max, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from dashboard.accounts import access
from dashboard.accounts.access import require_membership
from dashboard.core.keyset import cursor_decode, keyset_page
from dashboard.models import Role, Webhook, WebhookDelivery
from dashboard.notify import webhooks
from dashboard.notify.webhooks import EVENTS, WebhookError

from .scope import posted_for_other_team

DELIVERIES_PER_PAGE = 25
EVENT_HELP = {
    "job.completed": "a job completed (some rows may have failed)",
    "job.failed": "a job failed",
    "job.cancelled": "a job was cancelled",
    "instance.running": "a model instance is running",
    "instance.expired": "a model instance expired",
    "instance.failed": "a model instance failed",
}


class WebhookForm(forms.Form):
    url = forms.CharField(
        max_length=500,
        label="URL",
        help_text="Receives a signed POST (Standard Webhooks) for each event.",
        widget=forms.URLInput(attrs={"placeholder": "https://example.com/hooks/llm-jobs"}),
    )
    events = forms.MultipleChoiceField(
        choices=[(event, f"{event}: {EVENT_HELP[event]}") for event in EVENTS],
        widget=forms.CheckboxSelectMultiple,
        initial=["job.completed", "job.failed"],
    )

    def clean_url(self) -> str:
        url = self.cleaned_data["url"].strip()
        problem = webhooks.url_problem(url)
        if problem:
            raise forms.ValidationError(problem)
        return url


def _deliveries() -> Any:
    """Deliveries with their webhook's team, for ``access.object_for``."""
    return WebhookDelivery.objects.select_related("webhook__team").annotate(
        team_id=F("webhook__team_id")
    )


@login_required
@never_cache
@require_http_methods(["GET", "POST"])
def webhook_list(request: HttpRequest) -> HttpResponse:
    membership = require_membership(request, Role.ADMIN)
    if request.method == "POST" and posted_for_other_team(request, membership):
        return redirect("webhook_list")
    team = membership.team
    form = WebhookForm(request.POST) if request.method == "POST" else WebhookForm()
    created: tuple[Webhook, str] | None = None
    status = 200
    if form.is_bound:
        if form.is_valid():
            try:
                created = webhooks.webhook_create(
                    team=team,
                    url=form.cleaned_data["url"],
                    events=form.cleaned_data["events"],
                    actor=request.user,
                )
                form = WebhookForm()
            except WebhookError as exc:
                form.add_error(exc.field, exc.message)
        if form.errors:
            status = 400
    hooks = Webhook.objects.filter(team=team).annotate(
        delivered=Count("deliveries", filter=Q(deliveries__status="succeeded")),
        failed=Count("deliveries", filter=Q(deliveries__status="failed")),
        pending=Count("deliveries", filter=Q(deliveries__status="pending")),
        last_delivery=Max("deliveries__created_at"),
    )
    context = {
        "hooks": hooks,
        "form": form,
        "new_hook": created[0] if created else None,
        "new_secret": created[1] if created else None,
    }
    return render(request, "dashboard/webhooks.html", context, status=status)


@login_required
@require_GET
def webhook_detail(request: HttpRequest, pk: int) -> HttpResponse:
    hook, _ = access.object_for(request.user, Webhook.objects.all(), role=Role.ADMIN, pk=pk)
    position = cursor_decode(request.GET.get("cursor", ""))
    page = keyset_page(
        hook.deliveries.prefetch_related("log"), position=position, size=DELIVERIES_PER_PAGE
    )
    context = {
        "hook": hook,
        "deliveries": page.items,
        "next_cursor": page.next_cursor,
        "is_first_page": position is None,
        "max_attempts": webhooks.MAX_ATTEMPTS,
    }
    return render(request, "dashboard/webhook_detail.html", context)


@login_required
@require_POST
def webhook_delete(request: HttpRequest, pk: int) -> HttpResponse:
    hook, _ = access.object_for(
        request.user, Webhook.objects.select_related("team"), role=Role.ADMIN, pk=pk
    )
    webhooks.webhook_delete(hook, actor=request.user)
    messages.success(request, f"Webhook to {hook.url} deleted, with its delivery log.")
    return redirect("webhook_list")


@login_required
@require_POST
def delivery_redeliver(request: HttpRequest, pk: int) -> HttpResponse:
    delivery, _ = access.object_for(request.user, _deliveries(), role=Role.ADMIN, pk=pk)
    try:
        again = webhooks.redeliver(delivery, actor=request.user)
    except ValueError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request,
            f"Delivery {delivery.pk} queued again as {again.pk} (same webhook-id "
            f"{delivery.message_id}).",
        )
    return redirect("webhook_detail", delivery.webhook_id)
