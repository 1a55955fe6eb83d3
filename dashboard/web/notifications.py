"""The user's own e-mail opt-in: an e-mail when a job they submitted ends
(shown on the account page beside their API tokens)."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from dashboard.notify.emails import email_opt_in


class EmailOptInForm(forms.Form):
    email = forms.EmailField(required=False, label="E-mail address")
    email_on_job_end = forms.BooleanField(
        required=False, label="E-mail me when a job I submitted ends"
    )

    def clean(self) -> dict[str, object]:
        data = super().clean()
        if data.get("email_on_job_end") and not data.get("email"):
            self.add_error("email", "Give the address to send them to.")
        return data


@login_required
@require_POST
def account_notifications(request: HttpRequest) -> HttpResponse:
    form = EmailOptInForm(request.POST)
    if not form.is_valid():
        messages.error(request, " ".join(m for errors in form.errors.values() for m in errors))
        return redirect("token_list")
    on = form.cleaned_data["email_on_job_end"]
    email_opt_in(request.user, on=on, address=form.cleaned_data["email"])
    messages.success(
        request,
        f"E-mails when your jobs end go to {request.user.email}."
        if on
        else "No e-mails when your jobs end.",
    )
    return redirect("token_list")
