"""Reading numbers from query strings: ASCII digits only (``"²".isdigit()`` is
true and ``int("²")`` raises), within bounds, else None. Bad input is the
client's mistake, never a 500."""

from __future__ import annotations

import re
from datetime import UTC, datetime

_DIGITS = re.compile(r"[0-9]{1,18}")
_SIGNED = re.compile(r"-?[0-9]{1,18}")


def int_param(value: str | None, *, minimum: int = 0, maximum: int = 2**63 - 1) -> int | None:
    if value is None or not _SIGNED.fullmatch(value.strip()):
        return None
    number = int(value.strip())
    return number if minimum <= number <= maximum else None


def micros_param(value: str | None) -> datetime | None:
    """A moment given as microseconds since the epoch (a cursor this app issued)."""
    if value is None or not _DIGITS.fullmatch(value.strip()):
        return None
    try:
        return datetime.fromtimestamp(int(value) / 1_000_000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def micros(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)
