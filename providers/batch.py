"""The providers' native batch APIs, behind one small interface.

OpenAI (``openai-batch.md``: a JSONL file uploaded to ``/v1/files``, then
``POST /v1/batches``) and Anthropic (``anthropic-batches.md``: the requests
inline in ``POST /v1/messages/batches``) run many requests at about half the
price within 24 hours. The dashboard sends a job's items as one or more remote
batches ("chunks"); this module is the plain-Python half of that: turning
requests into the provider's lines, the batch object into a ``BatchState``,
and the result file into ``BatchResult`` rows, streamed line by line (a result
file can be hundreds of MB: never read whole). It knows nothing of the
database.

An adapter that has a batch API sets ``batch = True`` and implements the
``batch_*`` methods of :class:`BatchAPI`. The calls, in order:

1. ``batch_line(custom_id, prompt, spec)`` for every request of a chunk
   (bytes of one JSON line; the chunk is cut by ``batch_limits()``).
2. ``batch_upload(lines)``: OpenAI uploads the file and returns its id (the
   dashboard records it, so the same chunk is never uploaded twice); an API
   without files returns None.
3. ``batch_create(lines, input_file_id, metadata)``: the non-idempotent
   create. ``metadata`` (``dashboard_job``, ``dashboard_chunk``) goes with the
   batch where the API keeps it (OpenAI), so that
4. ``batch_find(metadata)`` can find a batch created by a worker that died
   before it recorded the id; None when no such batch exists;
   ``BatchLookupUnsupported`` where the API cannot tell (Anthropic).
5. ``batch_get(remote_id)``, ``batch_cancel(remote_id)``: the batch object.
6. ``batch_results(state)``: every result line of an ended batch, output and
   error files alike, matched by ``custom_id`` by the caller, never by order.
   A line that cannot be read (not JSON, over-long, of an unknown shape) is
   an ERRORED result for the row it still names, or one with an empty
   ``custom_id`` when it names none: one bad line never stops the read.
"""

from __future__ import annotations

import contextlib
import json
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import IO, Any

from .data import ItemResult, JobSpec


class BatchPhase(StrEnum):
    """The provider's batch status words, normalized."""

    VALIDATING = "validating"  # checked before it runs (OpenAI)
    RUNNING = "running"  # in_progress, finalizing, cancelling / canceling
    ENDED = "ended"  # completed, expired, cancelled (Anthropic: ended): results to read
    FAILED = "failed"  # refused at validation (OpenAI): nothing ran, no results


@dataclass(frozen=True)
class BatchLimits:
    """The most one remote batch may hold."""

    max_requests: int
    max_bytes: int


@dataclass(frozen=True)
class BatchState:
    """A remote batch as the provider reports it."""

    remote_id: str
    phase: BatchPhase
    #: The provider's own word: validating, in_progress, finalizing, ended, …
    provider_status: str
    #: Requests done so far, where the provider reports them as it goes
    #: (OpenAI's ``request_counts``); Anthropic's move only at the end.
    total: int | None = None
    completed: int | None = None
    failed: int | None = None
    #: Anthropic: every request counts as processing until the batch ends.
    processing: int | None = None
    #: True where the counts move while the batch runs (OpenAI).
    counts_live: bool = False
    input_file_id: str = ""
    output_file_id: str = ""
    error_file_id: str = ""
    #: Anthropic: where the results are, once ended.
    results_url: str = ""
    #: Why a batch failed validation (OpenAI ``errors.data``), in words.
    errors: Sequence[str] = ()
    #: The terminal word when ended (completed, expired, cancelled, ended).
    ended_as: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


class ResultKind(StrEnum):
    SUCCEEDED = "succeeded"
    ERRORED = "errored"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class BatchResult:
    """One line of a batch's results."""

    #: Empty for a line that could not be read far enough to name its row
    #: (``message`` says why): the caller counts it, no row takes it.
    custom_id: str
    kind: ResultKind
    #: For a succeeded line: the output and its usage tokens.
    result: ItemResult | None = None
    #: For the others: the provider's code (``batch_expired``, ``invalid_request_error``,
    #: a status code) and message, already redacted.
    code: str = ""
    message: str = ""


class BatchLookupUnsupported(Exception):
    """The API cannot find a batch by what the dashboard sent with it: a create
    that may or may not have happened stays unknown."""


class BatchAPI:
    """The methods an adapter with a batch API implements (mixed into its
    ``Provider`` subclass)."""

    #: True on adapters that implement the methods below.
    batch: bool = True

    def batch_limits(self) -> BatchLimits:
        raise NotImplementedError

    def batch_line(self, custom_id: str, prompt: str, spec: JobSpec) -> bytes:
        """One request, as the JSON line (no newline) the provider takes."""
        raise NotImplementedError

    def batch_upload(self, lines: Iterable[bytes]) -> str | None:
        """``lines`` may be read once, as they come (see :func:`spool`)."""
        raise NotImplementedError

    def batch_create(
        self, lines: Iterable[bytes], input_file_id: str | None, metadata: dict[str, str]
    ) -> BatchState:
        raise NotImplementedError

    def batch_find(self, metadata: dict[str, str]) -> BatchState | None:
        raise NotImplementedError

    def batch_get(self, remote_id: str) -> BatchState:
        raise NotImplementedError

    def batch_cancel(self, remote_id: str) -> BatchState:
        raise NotImplementedError

    def batch_results(self, state: BatchState) -> Iterator[BatchResult]:
        raise NotImplementedError


#: Bytes a spooled request body is sent in, at a time.
SPOOL_CHUNK = 64 * 1024


@dataclass
class Spool:
    """A request body written to a temporary file: sent from disk, so a
    chunk's input (up to hundreds of MB) is never held whole in memory."""

    file: IO[bytes]
    #: Lines written, and the body's size in bytes.
    count: int
    size: int

    def chunks(self) -> Iterator[bytes]:
        """The body from its start, SPOOL_CHUNK bytes at a time."""
        self.file.seek(0)
        while chunk := self.file.read(SPOOL_CHUNK):
            yield chunk


@contextlib.contextmanager
def spool(
    lines: Iterable[bytes],
    *,
    line_end: bytes = b"",
    separator: bytes = b"",
    opening: bytes = b"",
    closing: bytes = b"",
    max_bytes: int | None = None,
    too_large: Callable[[], Exception] | None = None,
) -> Iterator[Spool]:
    """``opening``, the lines (each followed by ``line_end``, ``separator``
    between two), ``closing``, written to a temporary file as the lines come
    (each line read once; the file is gone on exit). Past ``max_bytes`` the
    writing stops with ``too_large()``."""
    with tempfile.TemporaryFile(prefix="dashboard-batch-") as file:
        size, count = file.write(opening), 0
        for line in lines:
            if count and separator:
                size += file.write(separator)
            size += file.write(line) + file.write(line_end)
            count += 1
            if max_bytes is not None and size > max_bytes:
                raise too_large() if too_large else ValueError(f"more than {max_bytes} bytes")
        size += file.write(closing)
        file.flush()
        yield Spool(file, count, size)


def custom_id(job_id: int, index: int) -> str:
    """The request id of item ``index`` of a job: unique in its batch, stable
    for its item, within the 64 characters of ``[A-Za-z0-9_-]`` both APIs
    allow."""
    return f"job{job_id}-item{index}"


def jsonl_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Whole lines from a stream of byte chunks, one at a time (a line is never
    held twice, a file never whole); empty lines are skipped."""
    parts: list[bytes] = []  # the line being read, in pieces (no quadratic +=)
    for chunk in chunks:
        if b"\n" not in chunk:
            parts.append(chunk)
            continue
        *lines, rest = b"".join([*parts, chunk]).split(b"\n")
        parts = [rest]
        for line in lines:
            if line.strip():
                yield line
    last = b"".join(parts)
    if last.strip():
        yield last


#: Of a result line too long to read, the bytes kept: where its ``custom_id`` is.
LINE_HEAD_BYTES = 4096

_CUSTOM_ID = re.compile(rb'"custom_id"\s*:\s*"([A-Za-z0-9_-]{1,64})"')


@dataclass(frozen=True)
class LongLine:
    """A line longer than the reader's limit: its first bytes and its whole
    length; the rest of it was skipped, never held."""

    head: bytes
    size: int


def bounded_lines(
    chunks: Iterable[bytes], limit: int, *, head: int = LINE_HEAD_BYTES
) -> Iterator[bytes | LongLine]:
    """Like :func:`jsonl_lines`, but a line longer than ``limit`` bytes comes
    out as a :class:`LongLine` (its first ``head`` bytes kept, the rest
    skipped as it streams by) and the lines after it are read as ever. At
    most ``limit`` bytes of a line are ever held."""
    parts: list[bytes] = []  # the open line, in pieces
    size = 0  # its length so far
    long: bytes | None = None  # the head of the open line, once it is too long
    for chunk in chunks:
        pieces = chunk.split(b"\n")
        last = len(pieces) - 1
        for n, piece in enumerate(pieces):
            if long is None and size + len(piece) > limit:
                long = b"".join([*parts, piece[:head]])[:head]
                parts = []
            if long is None and piece:
                parts.append(piece)
            size += len(piece)
            if n == last:
                break
            # A newline ends the open line.
            if long is not None:
                yield LongLine(long, size)
            elif size:
                line = parts[0] if len(parts) == 1 else b"".join(parts)
                if line.strip():
                    yield line
            parts, size, long = [], 0, None
    if long is not None:
        yield LongLine(long, size)
    elif size:
        line = b"".join(parts)
        if line.strip():
            yield line


def custom_id_in(raw: bytes) -> str:
    """The ``custom_id`` a line that cannot be parsed (cut short, not JSON, too
    long) still names in its first bytes, or "". An unescaped
    ``"custom_id": "…"`` is a key, never text inside a JSON string."""
    found = _CUSTOM_ID.search(raw[:LINE_HEAD_BYTES])
    return found.group(1).decode() if found else ""


def unreadable(custom: str, message: str) -> BatchResult:
    """The result of a line that could not be read: ERRORED for the row it
    names (when it names one), saying why."""
    return BatchResult(custom, ResultKind.ERRORED, code="unreadable", message=message)


def result_object(
    raw: bytes, who: str, clean: Callable[[str], str]
) -> dict[str, Any] | BatchResult:
    """A JSONL result line as the object it holds, with a ``custom_id``; or,
    when it is not JSON or names no row, the unreadable result that says why
    (``clean`` makes provider text fit for a message: redacted, shortened)."""
    try:
        line = json.loads(raw)
    except ValueError:
        head = clean(raw[:400].decode(errors="replace"))
        return unreadable(custom_id_in(raw), f"{who} sent a result line that is not JSON: {head!r}")
    custom = line.get("custom_id") if isinstance(line, dict) else None
    if not isinstance(custom, str) or not custom:
        shape = (
            "without a 'custom_id'"
            if isinstance(line, dict)
            else f"of an unexpected shape ({type(line).__name__})"
        )
        return unreadable("", f"{who} sent a result line {shape}.")
    return line


def long_line_message(label: str, line: LongLine, limit: int) -> str:
    mb = 1024 * 1024
    return (
        f"{label} sent a result line of {line.size / mb:.1f} MB, over the {limit / mb:g} MB "
        "read per line; it was skipped."
    )


def supports_batch(provider: Any) -> bool:
    return bool(getattr(provider, "batch", False))
