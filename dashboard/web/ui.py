"""Template helpers every page uses (a builtin library: no ``{% load %}``).

- ``{% when value %}``: a moment as ``<time>``, the zone named; app.js
  rewrites the text to the reader's own zone and keeps ``datetime``.
- ``job|provider_word``: the provider's own status word, only where it adds
  something to the normalized status.
- ``text|link_pages``: escaped text whose "Instances page" (and the like)
  becomes a link to that page.
- ``{% job_progress job as p %}``: the segments of a job's progress bar.
- ``{% team_field %}``: the hidden field that says which team a form was
  rendered for (the session's, or the one given), checked on POST by
  ``web.scope``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django import template
from django.urls import reverse
from django.utils import timezone
from django.utils.dateformat import format as date_format
from django.utils.html import conditional_escape, format_html
from django.utils.safestring import SafeString, mark_safe

from dashboard.status import INSTANCE_TERMINAL, JOB_TERMINAL, InstanceStatus

register = template.Library()

# --- times ------------------------------------------------------------------------------------

#: What ``{% when %}`` shows, by name: the server's text (in the site's zone,
#: named) and the form app.js gives it in the reader's zone (data-local).
TIME_FORMATS = {
    "datetime": "Y-m-d H:i:s T",
    "minute": "Y-m-d H:i T",
    "time": "H:i:s T",
}


@register.simple_tag
def when(value: datetime | None, fmt: str = "datetime", empty: str = "—") -> str:
    """``<time datetime="ISO" data-local="fmt">2025-05-01 14:03:07 UTC</time>``."""
    if value is None:
        return empty
    pattern = TIME_FORMATS.get(fmt, TIME_FORMATS["datetime"])
    local = timezone.localtime(value)
    text = date_format(local, pattern)
    full = date_format(local, TIME_FORMATS["datetime"])
    return format_html(
        '<time datetime="{}" data-local="{}" title="{}">{}</time>',
        local.isoformat(),
        fmt if fmt in TIME_FORMATS else "datetime",
        full,
        text,
    )


# --- status words ------------------------------------------------------------------------------

#: Provider words that say no more than the normalized status they map to.
_SAME_AS = {
    "pending": {"pending", "created", "new"},
    "queued": {"queued", "pending", "created", "waiting", "submitted"},
    "running": {"running", "processing", "inprogress", "started", "starting"},
    "loading": {"loading", "deploying", "starting"},
    "requested": {"requested", "pending"},
}


def _word(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


@register.filter
def provider_word(obj: Any) -> str:
    """The provider's word beside a job's or an instance's status, or "" when
    it repeats the status ("Queued" beside queued), or may contradict it: an
    ended object's last provider word is stale ("RUNNING" beside stopped), and
    a stop under way is still "RUNNING" to the provider."""
    said = (getattr(obj, "provider_status", "") or "").strip()
    status = getattr(obj, "status", "")
    if not said or status in JOB_TERMINAL or status in INSTANCE_TERMINAL:
        return ""
    if status == InstanceStatus.STOPPING:
        return ""
    if _word(said) in _SAME_AS.get(status, set()) | {_word(status)}:
        return ""
    return said


# --- links in messages -------------------------------------------------------------------------

#: Pages that error messages name, and where they are.
NAMED_PAGES = {
    "Instances page": "instance_list",
    "Credentials page": "credential_list",
    "API tokens page": "token_list",
    "Team page": "team",
}
_NAMED = re.compile("|".join(re.escape(name) for name in NAMED_PAGES))


@register.filter(needs_autoescape=True)
def link_pages(text: Any, autoescape: bool = True) -> SafeString:
    """Escape ``text`` and link the pages it names ("load it on the Instances page")."""
    escaped = str(conditional_escape(text) if autoescape else text)

    def link(match: re.Match[str]) -> str:
        name = match.group(0)
        return str(format_html('<a href="{}">{}</a>', reverse(NAMED_PAGES[name]), name))

    return mark_safe(_NAMED.sub(link, escaped))  # noqa: S308 - escaped above, links built here


# --- progress ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    kind: str  # completed, failed, cancelled (never ran), running
    count: int
    percent: float


@dataclass(frozen=True)
class Progress:
    state: str  # not-started, running, done, partial, failed, cancelled
    done: int
    total: int
    segments: list[Segment]
    words: str  # "3 of 4 done: 2 completed, 1 failed, 1 waiting"


@register.simple_tag
def job_progress(job: Any) -> Progress:
    """The bar's segments: completed, failed, never ran (cancelled) and running,
    each a share of the items; what is left is waiting. A job with nothing
    started yet has no segment at all, so 0 of N never looks begun."""
    total = job.progress_total or 0
    counts = job.counts
    ended = job.status in JOB_TERMINAL
    # Once the job ended, a row still waiting never will run: it joins the cancelled.
    waiting = 0 if ended else counts["pending"]
    never = counts["cancelled"] + (counts["pending"] if ended else 0)
    parts = [
        ("completed", counts["completed"]),
        ("failed", counts["failed"]),
        ("cancelled", never),
        ("running", 0 if ended else counts["running"]),
    ]
    segments = [Segment(kind, n, round(100 * n / total, 2)) for kind, n in parts if n and total]
    if ended:
        state = {"completed": "done" if job.clean_success else "partial"}.get(
            job.status, job.status
        )
    elif not segments and job.status != "running":
        state = "not-started"
    else:
        state = "running"
    labels = {"cancelled": "never ran"}
    described = [f"{n} {labels.get(kind, kind)}" for kind, n in parts if n]
    if waiting:
        described.append(f"{waiting} waiting")
    words = f"{job.progress_done} of {total} done"
    if state == "not-started":
        words = f"Not started: {total} waiting"
    elif described:
        words += ": " + ", ".join(described)
    return Progress(state, job.progress_done, total, segments, words)


# --- forms ------------------------------------------------------------------------------------


@register.simple_tag(takes_context=True)
def team_field(context: template.Context, team: Any = None) -> str:
    """``<input type="hidden" name="team">`` with the team the form acts for."""
    team = team if team is not None else context.get("current_team")
    if team is None:
        return ""
    return format_html('<input type="hidden" name="team" value="{}">', team.pk)
