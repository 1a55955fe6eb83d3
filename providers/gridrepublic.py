"""GridRepublic's remote jobs API: one remote job per prompt, polled in batches.

What this adapter relies on from GridRepublic's protocol:

* Default base URL ``https://api.gridrepublic.services``; auth header
  ``Authorization: Bearer <token>``.
* Submit: ``POST /remotejobs/v2/jobs`` with ``app`` (always
  ``"gridrepublic:text-inference"``), ``commandLine`` (a JSON *string*
  ``{"inputs": [prompt]}``) and ``tag`` (the model). The answer is
  ``{"success": true, "ids": [...]}`` or ``{"success": false, "error": ...}``
  (a refusal). A job takes a bare prompt: a question, system prompt or
  output schema is refused before any request.
* Status: ``GET /remotejobs/v2/jobs/{id1,id2,...}`` (comma-separated ids, up
  to :data:`BATCH_SIZE` per request) answers ``{"success": true, "jobs": {id:
  {"vmStatus": ..., "states": {"default": {"status": ..., "log": ...}}}}}``.
  The word is ``states.default.status``, with ``vmStatus`` as a fallback,
  compared case-insensitively: queued, pending, created -> queued; starting,
  running -> running; finished, completed, complete, done, success,
  succeeded, exited -> completed; failed, error, aborted, killed, cancelled,
  canceled -> failed. Only "running" is documented; an unknown word is taken
  as still running, and the dashboard's per-job deadline bounds it.
* ``log`` holds the whole output so far on every poll (the dashboard stores
  only what is new); a finished job's output is its log. A failed job's
  error is its own ``error``, else the last line of its log. Both are
  redacted. No token usage is reported.
* An id GridRepublic does not know comes back as an entry with
  ``success: false``, or as an error for the whole request (404, or
  ``success: false`` at the top): then each id is asked alone, so one bad id
  never stalls the others.
* Retries: a submit is a non-idempotent POST, sent again only when
  ``ProviderError.created_nothing``. Status GETs are safe to repeat; a batch
  that fails for another reason (5xx, timeout) puts its error in every slot.
* Connection check: the status call's error codes are not documented, so an
  unknown id proves nothing about the key; the check submits a one-prompt job
  on ``connection_check_model`` (billed, and not tracked).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from .base import (
    CONNECTION_CHECK_PROMPT,
    ErrorKind,
    JobSpec,
    Provider,
    ProviderError,
    RemoteState,
    RemoteStatus,
    SpecError,
    redacted,
    shorten,
)

APP = "gridrepublic:text-inference"
JOBS_PATH = "/remotejobs/v2/jobs"
BATCH_SIZE = 50

_FAMILIES = {
    RemoteState.COMPLETED: (
        "finished",
        "completed",
        "complete",
        "done",
        "success",
        "succeeded",
        "exited",
    ),
    RemoteState.FAILED: ("failed", "error", "aborted", "killed", "cancelled", "canceled"),
    RemoteState.QUEUED: ("queued", "pending", "created"),
    RemoteState.RUNNING: ("starting", "running"),
}
STATUS_WORDS = {word: state for state, words in _FAMILIES.items() for word in words}

#: Spec fields that change what is asked; GridRepublic takes only a prompt, so
#: dropping them silently would run a different job than the one requested.
_UNEXPRESSIBLE = {
    "question": "a question",
    "system_prompt": "a system prompt",
    "output_schema": "structured output",
}


# -- request ------------------------------------------------------------------


def build_request(spec: JobSpec, prompt: str) -> dict[str, Any]:
    """The ``POST /remotejobs/v2/jobs`` body for one prompt."""
    return {"app": APP, "commandLine": json.dumps({"inputs": [prompt]}), "tag": spec.model}


def status_path(remote_ids: list[str]) -> str:
    # Commas separate ids in the path, so they must stay literal.
    return f"{JOBS_PATH}/" + ",".join(quote(rid, safe="") for rid in remote_ids)


# -- answers ------------------------------------------------------------------


def parse_submit(body: dict[str, Any]) -> str:
    """The first id of a submit answer, or a ProviderError that says why not."""
    if body.get("success") is True:
        ids = body.get("ids")
        if isinstance(ids, list) and ids and isinstance(ids[0], str) and ids[0].strip():
            return ids[0].strip()
    elif body.get("success") is False:
        error = body.get("error") or "no reason given"
        raise ProviderError(
            f"GridRepublic refused the job: {shorten(str(error), 300)}", kind=ErrorKind.REJECTED
        )
    raise ProviderError(
        f"GridRepublic sent a submit answer without job ids: {shorten(json.dumps(body), 200)}",
        kind=ErrorKind.PROTOCOL,
    )


def parse_jobs(
    body: dict[str, Any], remote_ids: list[str]
) -> dict[str, RemoteStatus | ProviderError]:
    """Each id's slot from a batch answer whose top level succeeded.

    A ValueError says the answer has no ``jobs`` object at all.
    """
    jobs = body.get("jobs")
    if not isinstance(jobs, dict):
        raise ValueError("the answer has no 'jobs' object")
    return {rid: _entry_status(rid, jobs.get(rid)) for rid in remote_ids}


def _entry_status(remote_id: str, entry: Any) -> RemoteStatus | ProviderError:
    if entry is None:
        return not_found(remote_id, "missing from the answer")
    if not isinstance(entry, dict):
        return _protocol(remote_id, f"its entry is {type(entry).__name__}, not an object")
    if entry.get("success") is False:
        return not_found(remote_id, str(entry.get("error") or "unknown job"))
    try:
        return parse_status(remote_id, entry)
    except ValueError as exc:
        return _protocol(remote_id, str(exc))


def parse_status(remote_id: str, entry: dict[str, Any]) -> RemoteStatus:
    """One job entry: ``states.default.status`` (``vmStatus`` as a fallback) and its log.

    A ValueError says the entry has no status word at all.
    """
    default = _default_state(entry)
    word = default.get("status")
    if not isinstance(word, str) or not word.strip():
        word = entry.get("vmStatus")
    if not isinstance(word, str) or not word.strip():
        raise ValueError("the job has neither states.default.status nor vmStatus")
    # An undocumented word most likely means "still working"; the job deadline bounds it.
    state = STATUS_WORDS.get(word.strip().lower(), RemoteState.RUNNING)
    log = default.get("log")
    log = log if isinstance(log, str) else None
    if state is RemoteState.COMPLETED:
        if log is None:
            return RemoteStatus(remote_id, state, word, raw_result=entry)
        return RemoteStatus(remote_id, state, word, outputs=[log], log=log)
    if state is RemoteState.FAILED:
        return RemoteStatus(remote_id, state, word, log=log, error=_failure(word, log, entry))
    return RemoteStatus(remote_id, state, word, log=log)


def _default_state(entry: dict[str, Any]) -> dict[str, Any]:
    states = entry.get("states")
    default = states.get("default") if isinstance(states, dict) else None
    return default if isinstance(default, dict) else {}


def _failure(word: str, log: str | None, entry: dict[str, Any]) -> str:
    """The job's own error, else the last line of its log (where errors end up)."""
    reason = entry.get("error")
    if not reason and log:
        lines = [line.strip() for line in log.splitlines() if line.strip()]
        reason = lines[-1] if lines else ""
    suffix = f": {shorten(str(reason), 300)}" if reason else ""
    return f"GridRepublic reported the job {word}{suffix}"


def not_found(remote_id: str, reason: str, status_code: int | None = None) -> ProviderError:
    return ProviderError(
        f"GridRepublic does not know job {remote_id}: {shorten(reason, 300)}",
        kind=ErrorKind.NOT_FOUND,
        status_code=status_code,
    )


def _protocol(remote_id: str, reason: str) -> ProviderError:
    return ProviderError(
        f"GridRepublic sent an unreadable status for job {remote_id}: {reason}",
        kind=ErrorKind.PROTOCOL,
    )


# -- adapter ------------------------------------------------------------------


class GridRepublicProvider(Provider):
    slug = "gridrepublic"
    label = "GridRepublic"
    default_base_url = "https://api.gridrepublic.services"
    kind = "async"
    poll_batch_size = BATCH_SIZE
    # The log grows while a job runs and the dashboard shows it live.
    poll_interval = 1.0
    supported_fields = frozenset()
    #: The model the document's own example submits to (an example, not a list).
    documented_models = ("gemma:2b",)
    # No error codes of the status call are documented, so an unknown id proves
    # nothing about the key: the check submits a one-prompt job.
    connection_check_model = documented_models[0]

    def validate(self, spec: JobSpec) -> None:
        super().validate(spec)
        for name, what in _UNEXPRESSIBLE.items():
            if getattr(spec, name):
                raise SpecError(f"GridRepublic runs a bare prompt: it cannot take {what}.", name)

    @redacted
    def submit(self, spec: JobSpec, indexes: list[int]) -> str:
        (index,) = indexes
        response = self.request("POST", JOBS_PATH, json=build_request(spec, spec.prompts[index]))
        return parse_submit(self.json(response))

    def probe_connection(self, model: str) -> str:
        remote_id = self.submit(JobSpec(model=model, prompts=[CONNECTION_CHECK_PROMPT]), [0])
        return f"GridRepublic accepted a one-prompt test job on {model} (job {remote_id}, not tracked)."

    @redacted
    def poll(self, remote_ids: list[str]) -> dict[str, RemoteStatus | ProviderError]:
        """Never raises: a failed batch puts its error in each of its slots."""
        ids = list(dict.fromkeys(remote_ids))
        results: dict[str, RemoteStatus | ProviderError] = {}
        for start in range(0, len(ids), self.poll_batch_size):
            results.update(self._poll_batch(ids[start : start + self.poll_batch_size]))
        return results

    def _poll_batch(self, batch: list[str]) -> dict[str, RemoteStatus | ProviderError]:
        try:
            response = self.request("GET", status_path(batch))
            body = self.json(response)
        except ProviderError as exc:
            if exc.kind in (ErrorKind.NOT_FOUND, ErrorKind.REJECTED):
                return self._poll_alone(batch, exc.message, exc.status_code)
            return dict.fromkeys(batch, exc)
        if body.get("success") is False:
            reason = str(body.get("error") or "the request failed")
            return self._poll_alone(batch, reason, response.status_code)
        try:
            return parse_jobs(body, batch)
        except ValueError as exc:
            error = ProviderError(
                f"GridRepublic sent a status answer without jobs ({exc})", kind=ErrorKind.PROTOCOL
            )
            return dict.fromkeys(batch, error)

    def _poll_alone(
        self, batch: list[str], reason: str, status_code: int | None
    ) -> dict[str, RemoteStatus | ProviderError]:
        """The provider refused the whole batch, perhaps for one bad id: ask for each
        id alone so the others keep moving."""
        if len(batch) > 1:
            return {rid: self._poll_batch([rid])[rid] for rid in batch}
        return {batch[0]: not_found(batch[0], reason, status_code)}
