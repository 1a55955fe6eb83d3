"""The user's API tokens: create one (its key is shown once), see them, revoke one.

Only a token's SHA-256 is stored, so the key exists in exactly one response:
the page answering the create form, sent with ``Cache-Control: no-store``.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from dashboard.accounts.audit import audit
from dashboard.models import ApiToken


class TokenForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        initial="API token",
        help_text="What will use it, e.g. “eval notebook” or “nightly batch”.",
    )


@login_required
@never_cache
@require_http_methods(["GET", "POST"])
def token_list(request: HttpRequest) -> HttpResponse:
    form = TokenForm(request.POST) if request.method == "POST" else TokenForm()
    new_key = None
    if form.is_bound and form.is_valid():
        token, new_key = ApiToken.issue(request.user, form.cleaned_data["name"].strip())
        audit(request.user, None, "token.created", token)
        form = TokenForm()
    tokens = ApiToken.objects.filter(user=request.user)
    context = {
        "tokens": tokens,
        "form": form,
        "new_key": new_key,
        "api_root": request.build_absolute_uri("/api/v1/"),
    }
    return render(request, "dashboard/tokens.html", context)


@login_required
@require_POST
def token_revoke(request: HttpRequest, pk: str) -> HttpResponse:
    token = get_object_or_404(ApiToken, pk=int(pk), user=request.user)
    revoked = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    if revoked:
        audit(request.user, None, "token.revoked", token)
        messages.success(request, f"Token “{token.name}” revoked: calls with it now get 401.")
    else:
        messages.info(request, f"Token “{token.name}” was already revoked.")
    return redirect("token_list")
