"""Nothing leaks: every page, htmx partial, API answer, admin page, export and
log line is searched for the credential's secret and for untrusted markup that
was not escaped (model output, provider logs, errors, notes, names)."""

from __future__ import annotations

import csv
import io
import json
import logging
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.urls import reverse
from openpyxl import load_workbook

from dashboard.accounts.audit import audit
from dashboard.compare.reviews import note_add, rating_set
from dashboard.compare.services import Target, comparison_create
from dashboard.core.logs import RedactSecretsFilter
from dashboard.datasets.parsing import Limits, read_records
from dashboard.datasets.services import dataset_create, inputs_from_dataset
from dashboard.jobs import worker
from dashboard.models import (
    ApiToken,
    Job,
    JobEvent,
    ModelInstance,
    Price,
    Webhook,
    WebhookAttempt,
    WebhookDelivery,
)
from providers import JobSpec

from .conftest import SECRET, make_credential, make_job
from .test_isolation import OBJECT_URLS, all_routes, kwargs_for_object

pytestmark = pytest.mark.django_db

SCRIPT = '<script>alert("pwned")</script>'
IMG = "<img src=x onerror=alert(1)>"
FORMULA = "=cmd|' /C calc'!A0"
PAYLOAD = f"{SCRIPT}{IMG}"
RAW_MARKERS = (SCRIPT, "<img src=x onerror", "<script>alert")


class Everything:
    def __init__(self, team: Any, alice: User, sim: Any) -> None:
        User.objects.filter(pk=alice.pk).update(is_staff=True, is_superuser=True)
        self.credential = make_credential(team, base_url=sim.base_url, name=f"cred {IMG}")
        self.job = make_job(self.credential, [PAYLOAD, FORMULA], user=alice, model=f"model{IMG}")
        worker.advance_job(self.job.pk)  # real outputs echo the prompts
        Job.objects.filter(pk=self.job.pk).update(error=PAYLOAD, provider_status=IMG[:90])
        JobEvent.objects.create(
            job=self.job, kind=JobEvent.Kind.LOG, message=f"log {PAYLOAD}", unit=0
        )
        JobEvent.objects.create(
            job=self.job, kind=JobEvent.Kind.NOTE, message=f"note {PAYLOAD}", author=alice
        )
        self.instance = ModelInstance.objects.create(
            team=team,
            credential=make_credential(team, "bytez", name="bz"),
            model=f"m{IMG}",
            status="running",
            message=PAYLOAD,
            provider_status=IMG[:90],
        )
        formula_job = make_job(self.credential, [FORMULA], user=alice, model="m")
        Job.objects.filter(pk=formula_job.pk).update(error=FORMULA)
        formula_job.items.update(status="completed", output="+SUM(A1:A9)")
        self.formula_job = formula_job
        self.token, self.key = ApiToken.issue(alice, f"token {IMG}")
        self.membership = alice.memberships.get(team=team)
        audit(alice, team, "credential.created", f"audit {PAYLOAD}")
        rows = read_records(
            [{"q": PAYLOAD, f"col{IMG}"[:40].replace("{", "").replace("}", ""): FORMULA}],
            Limits.from_settings(),
        )
        self.dataset = dataset_create(team=team, name=f"data {PAYLOAD}", rows=rows, user=alice)
        inputs = inputs_from_dataset(self.dataset, "{q}")
        self.comparison = comparison_create(
            team=team,
            name=f"cmp {PAYLOAD}",
            user=alice,
            inputs=inputs,
            targets=[
                Target(self.credential, JobSpec(model=f"m{IMG}", prompts=inputs.prompts)),
                Target(self.credential, JobSpec(model="m2", prompts=inputs.prompts)),
            ],
        )
        first, second = self.comparison.jobs.order_by("id")
        first.items.update(status="completed", output=PAYLOAD)
        second.items.update(status="failed", error=FORMULA)
        rating_set(job=first, index=0, user=alice, score=1)
        note_add(comparison=self.comparison, index=0, user=alice, text=f"note {PAYLOAD}")
        self.price = Price.objects.create(
            team=team, provider="together", model=f"model{IMG}", input_per_mtok=1, output_per_mtok=1
        )
        self.webhook = Webhook.objects.create(
            team=team, url=f"http://127.0.0.1:9/{IMG}", events=["job.failed"], secret="whsec_x"
        )
        self.delivery = WebhookDelivery.objects.create(
            webhook=self.webhook,
            event="job.failed",
            object_id=self.job.pk,
            message_id="msg_leak",
            status="failed",
            last_error=PAYLOAD,
        )
        WebhookAttempt.objects.create(delivery=self.delivery, number=1, error=PAYLOAD)

    def kwargs(self, route: Any) -> dict[str, Any]:
        entry = OBJECT_URLS[route.name]
        if callable(entry):
            return entry(self)  # type: ignore[arg-type]
        target = {
            "credential": self.credential,
            "job": self.job,
            "instance": self.instance,
            "token": self.token,
            "membership": self.membership,
            "dataset": self.dataset,
            "comparison": self.comparison,
            "price": self.price,
            "webhook": self.webhook,
            "delivery": self.delivery,
        }[entry]
        return kwargs_for_object(route, target)


def body_of(response: Any) -> str:
    if getattr(response, "streaming", False):
        return b"".join(response.streaming_content).decode()
    return response.content.decode()


def assert_clean(url: str, response: Any, status: int | None = None) -> str:
    """No secret anywhere; no raw markup in anything a browser may render (pages,
    partials, JSON). Downloads (CSV, JSONL) keep the data exact by design. With
    ``status``, the page must answer exactly that (a 4xx page is not searched
    for anything worth finding)."""
    body = body_of(response)
    if status is None:
        assert response.status_code < 500, url
    else:
        assert response.status_code == status, f"{url} answered {response.status_code}"
    assert SECRET not in body, f"secret in {url}"
    kind = response.get("Content-Type", "")
    # SVG is markup a browser renders too (the usage charts).
    if kind.startswith(("text/html", "application/json", "image/svg+xml")):
        for marker in RAW_MARKERS:
            assert marker not in body, f"unescaped {marker!r} in {url}"
    else:
        assert response.get("Content-Disposition", "").startswith("attachment"), url
    return body


@pytest.fixture
def everything(team: Any, alice: User, sims: Any) -> Everything:
    return Everything(team, alice, sims.get("together"))


def test_every_get_route_page_partial_and_api(
    client: Any, alice: User, everything: Everything, caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    client.force_login(alice)
    checked = 0
    for route in all_routes():
        if not route.name or route.name in ("logout",):
            continue
        url = reverse(route.name, kwargs=everything.kwargs(route) if route.args else None)
        headers = {"Authorization": f"Bearer {everything.key}"} if url.startswith("/api/") else {}
        for extra in ({}, {"HX-Request": "true"}):
            response = client.get(url, headers={**headers, **extra})
            if response.status_code == 405:
                break
            assert_clean(url, response)
            checked += 1
    assert checked > 30
    for record in caplog.records:
        RedactSecretsFilter().filter(record)
        assert SECRET not in record.getMessage()


def test_every_admin_page(client: Any, alice: User, everything: Everything) -> None:
    """A superuser sees every changelist and the change form of a row that
    exists (read-only ones too): each answers 200, so a page that fails with a
    4xx does not pass unsearched."""
    client.force_login(alice)
    changes = 0
    for model in admin.site._registry:
        meta = model._meta
        changelist = reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist")
        assert_clean(changelist, client.get(changelist), status=200)
        first = model.objects.first()
        if first is not None:
            change = reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[first.pk])
            assert_clean(change, client.get(change), status=200)
            changes += 1
    assert changes >= 15  # the fixture filled most tables: the change forms were seen


def test_exports_guard_formulas_and_hold_no_secret(
    client: Any, alice: User, everything: Everything
) -> None:
    client.force_login(alice)
    body = assert_clean("csv", client.get(reverse("job_export_csv")))
    for row in csv.reader(io.StringIO(body)):
        for cell in row:
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell
    assert "'" + FORMULA in body
    lines = assert_clean("jsonl", client.get(reverse("job_export_jsonl"))).splitlines()
    jobs = {job["id"]: job for job in map(json.loads, lines)}
    assert jobs[everything.job.pk]["model"] == everything.job.model
    # A job's own rows: formulas defused in CSV and XLSX, exact data in JSONL.
    for fmt in ("csv", "jsonl", "xlsx"):
        for job in (everything.job, everything.formula_job):
            url = reverse("job_items_export", args=[job.pk, fmt])
            response = client.get(url)
            raw = (
                b"".join(response.streaming_content)
                if getattr(response, "streaming", False)
                else response.content
            )
            assert SECRET.encode() not in raw, url
            if fmt == "csv":
                for row in csv.reader(io.StringIO(raw.decode())):
                    assert not any(c.startswith(("=", "+", "-", "@")) for c in row), row
                if job == everything.formula_job:
                    assert "'+SUM(A1:A9)" in raw.decode()
            if fmt == "jsonl" and job == everything.job:
                assert json.loads(raw.decode().splitlines()[0])["input"] == PAYLOAD


def test_comparison_exports_guard_formulas(
    client: Any, alice: User, everything: Everything
) -> None:
    client.force_login(alice)
    pk = everything.comparison.pk
    body = assert_clean("csv", client.get(reverse("comparison_export", args=[pk, "csv"])))
    rows = list(csv.reader(io.StringIO(body)))
    for row in rows:
        assert not any(c.startswith(("=", "+", "-", "@")) for c in row), row
    assert "'" + FORMULA in rows[1]  # the dataset's field and the failed cell's error
    lines = assert_clean("jsonl", client.get(reverse("comparison_export", args=[pk, "jsonl"])))
    record = json.loads(lines.splitlines()[0])
    assert record["input"] == PAYLOAD and record["targets"][1]["error"] == FORMULA
    raw = client.get(reverse("comparison_export", args=[pk, "xlsx"]))
    book = load_workbook(io.BytesIO(b"".join(raw.streaming_content)), read_only=True)
    cells = [c for row in book.worksheets[0].iter_rows(values_only=True) for c in row]
    assert "'" + FORMULA in cells and FORMULA not in cells
