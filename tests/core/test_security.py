"""Web security: production settings, CSRF (htmx too), login throttling, headers,
secrets kept out of logs and exception reports."""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.test import Client
from django.urls import reverse

from dashboard.core import crypto
from dashboard.core.logs import RedactSecretsFilter, redact, register_secret
from dashboard.jobs import worker
from dashboard.models import Job
from tests.conftest import SECRET, make_credential, make_job

ROOT = Path(__file__).resolve().parents[2]


def manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {
        k: v for k, v in os.environ.items() if k not in ("DEBUG", "DASHBOARD_HTTPS", "SECRET_KEY")
    }
    full.update(env)
    full.pop("DJANGO_SETTINGS_MODULE", None)  # manage.py: the production settings
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
    )


PRODUCTION = {
    "DEBUG": "false",
    "DASHBOARD_HTTPS": "true",
    "SECRET_KEY": secrets.token_urlsafe(64),
    "DASHBOARD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
    "ALLOWED_HOSTS": "jobs.example.com",
}


def test_check_deploy_is_clean_in_production_mode() -> None:
    result = manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "no issues" in result.stdout


def test_plain_http_on_a_private_network_with_debug_off() -> None:
    env = {**PRODUCTION, "DASHBOARD_HTTPS": "false"}
    script = "from django.conf import settings as s; print(s.SECURE_SSL_REDIRECT, s.SESSION_COOKIE_SECURE, s.DEBUG)"
    result = manage("shell", "-c", script, **env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].split() == ["False", "False", "False"]


def test_debug_off_without_secret_key_refuses_to_start() -> None:
    env = {**PRODUCTION}
    env.pop("SECRET_KEY")
    result = manage("check", **env)
    assert result.returncode != 0 and "Set SECRET_KEY" in result.stderr


def test_debug_off_without_encryption_keys_refuses_to_encrypt() -> None:
    env = {**PRODUCTION, "DASHBOARD_ENCRYPTION_KEYS": ""}
    result = manage("shell", "-c", "from dashboard.core.crypto import encrypt; encrypt('x')", **env)
    assert result.returncode != 0 and "Set DASHBOARD_ENCRYPTION_KEYS" in result.stderr


@pytest.mark.django_db
def test_wrong_key_raises_never_hands_ciphertext_over(team: Any, settings: Any) -> None:
    credential = make_credential(team)
    settings.DASHBOARD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    crypto.multifernet.cache_clear()
    try:
        with pytest.raises(crypto.SecretDecryptionError):
            credential.reveal_secret()
        job = make_job(credential)
        worker.advance_job(job.pk)
        job.refresh_from_db()
        assert job.status == "failed" and "cannot be decrypted" in job.error
    finally:
        crypto.multifernet.cache_clear()


@pytest.mark.django_db
def test_csrf_is_enforced_and_htmx_header_works(team: Any, bob: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(bob)
    job = make_job(make_credential(team))
    assert client.post(reverse("job_cancel", args=[job.pk])).status_code == 403
    job.refresh_from_db()
    assert job.status == "pending"
    page = client.get(job.get_absolute_url()).content.decode()
    token = page.split('"X-CSRFToken": "', 1)[1].split('"', 1)[0]
    response = client.post(
        reverse("job_cancel", args=[job.pk]), headers={"X-CSRFToken": token, "HX-Request": "true"}
    )
    assert response.status_code == 200 and response["HX-Redirect"] == job.get_absolute_url()
    job.refresh_from_db()
    assert job.status == "cancelled"


@pytest.mark.django_db
def test_login_is_throttled(client: Any, alice: Any) -> None:
    for _ in range(5):
        response = client.post(reverse("login"), {"username": "alice", "password": "wrong"})
        assert "Please enter a correct username" in response.content.decode()
    response = client.post(reverse("login"), {"username": "alice", "password": "pw-for-tests-123"})
    assert "Too many failed logins" in response.content.decode()
    assert "_auth_user_id" not in client.session


@pytest.mark.django_db
def test_security_headers(client: Any, alice: Any, team: Any) -> None:
    client.force_login(alice)
    response = client.get("/")
    csp = response["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    page = response.content.decode()
    assert '"allowScriptTags": false' in page and '"allowEval": false' in page
    assert "<script>" not in page  # no inline scripts at all


def test_log_redaction() -> None:
    register_secret("sk-live-abcdef123456")
    assert redact("calling with sk-live-abcdef123456 now") == "calling with [redacted] now"
    assert redact("Authorization: Bearer xyz-other-token") == "Authorization: Bearer [redacted]"
    record = logging.LogRecord(
        "x", logging.ERROR, __file__, 1, "key=%s", ("sk-live-abcdef123456",), None
    )
    RedactSecretsFilter().filter(record)
    assert "sk-live" not in record.getMessage()


@pytest.mark.django_db
def test_secret_stays_out_of_logs_and_events(team: Any, sims: Any, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)
    sim = sims.get("together")
    sim.add_fault(status=500, body={"error": f"echoing your key {SECRET}"}, times=10)
    credential = make_credential(team, base_url=sim.base_url)
    job = make_job(credential)
    worker.advance_job(job.pk)
    job = Job.objects.get(pk=job.pk)
    assert job.status == "failed"
    assert SECRET not in job.error
    assert "[redacted]" in job.error
    for event in job.events.all():
        assert SECRET not in event.message
    handler_filter = RedactSecretsFilter()
    for record in caplog.records:
        handler_filter.filter(record)
        assert SECRET not in record.getMessage()
