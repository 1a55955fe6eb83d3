"""Scrub credentials out of text that came back from a provider.

A provider's error text can echo what it was sent: the API key, the whole
``Authorization`` header, a JSON body with an ``api_key`` field. Adapters pass
every such text through :func:`redact` (via ``Provider.redact``) before it can
reach a job, a credential's last error, a log line or a page.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from urllib.parse import quote, quote_plus

REDACTED = "[redacted]"

#: Shorter secrets are not searched for as text: replacing every "abc" would
#: garble messages, and no real API key is that short.
MIN_SECRET = 4
#: A text that ends in this many leading characters of a secret (or more), or
#: has them just before a "…", was cut in the middle of it: by shortening, or
#: by a log still being written.
MIN_TAIL = 6

_DONE = r"(?!\[redacted\])"  # what was redacted stays as it is
_VALUE = _DONE + r"""(?:"[^"]*"|'[^']*'|[^\s"',;&}\]]+)"""

#: ``Authorization: Bearer x`` in a header dump, JSON or a Python repr.
_SCHEMES = r"(?:bearer|basic|key|token)\s"
_AUTH_HEADER = re.compile(
    r"""(?i)\b((?:proxy-)?authorization["']?\s*[:=]\s*["']?)"""
    + rf"((?={_SCHEMES})\w+\s+|(?!{_SCHEMES}))"
    + _DONE
    + r"""[^\s"',;}\]]+"""
)
#: A scheme followed by a token-like word (with a digit: "Key points" stays).
_SCHEME_TOKEN = re.compile(r"\b((?i:bearer|basic)|Key|KEY)(\s+)(?=[\w.~+/=-]*\d)[\w.~+/=-]{8,}")
#: ``"api_key": "x"``, ``token=x``, ``X-Api-Key: x``, ``client_secret: 'x'``; not "max_tokens".
_SECRET_FIELD = re.compile(
    r"""(?i)(["']?\b[\w-]*?(?:api[_-]?key|access[_-]?key|secret|token|password|passwd)["']?"""
    r"""\s*[:=]\s*)""" + _VALUE
)


def secret_forms(secret: str) -> tuple[str, ...]:
    """The ways a secret can be echoed: as sent, JSON-escaped, URL-encoded and
    base64-encoded (standard and URL-safe, with and without padding), longest
    first. Empty when the secret is too short to search for."""
    if len(secret) < MIN_SECRET:
        return ()
    raw = secret.encode()
    encoded = [base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()]
    forms = {
        secret,
        json.dumps(secret)[1:-1],
        quote(secret, safe=""),
        quote_plus(secret),
        *encoded,
        *(form.rstrip("=") for form in encoded),
    }
    return tuple(sorted((f for f in forms if len(f) >= MIN_SECRET), key=len, reverse=True))


def redact(text: str, forms: Sequence[str] = ()) -> str:
    """``text`` without credentials: authorization header values, secret-like
    fields, every form of the secret (see :func:`secret_forms`), and a secret
    cut short at the very end of the text."""
    if not text:
        return text
    text = _AUTH_HEADER.sub(lambda m: f"{m[1]}{m[2] or ''}{REDACTED}", text)
    text = _SCHEME_TOKEN.sub(lambda m: f"{m[1]}{m[2]}{REDACTED}", text)
    text = _SECRET_FIELD.sub(_field, text)
    for form in forms:
        text = text.replace(form, REDACTED)
    return _redact_tail(text, forms)


def _field(match: re.Match[str]) -> str:
    value = match[0][len(match[1]) :]
    quote_char = value[0] if value[:1] in ("'", '"') else ""
    return f"{match[1]}{quote_char}{REDACTED}{quote_char}"


def _redact_tail(text: str, forms: Sequence[str]) -> str:
    """A secret cut short: at the end of the text, or where shortening put "…"."""
    cuts = [i for i, ch in enumerate(text) if ch == "…"]
    for end in sorted({*cuts, len(text)}, reverse=True):
        head = text[:end]
        for form in forms:
            length = _cut_length(head, form)
            if length:
                text = head[:-length] + REDACTED + text[end:]
                break
    return text


def _cut_length(head: str, form: str) -> int:
    """How many characters at the end of ``head`` are the start of ``form``."""
    for length in range(len(form) - 1, MIN_TAIL - 1, -1):
        if head.endswith(form[:length]):
            return length
    return 0
