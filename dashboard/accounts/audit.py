"""The audit trail lives in ``dashboard.core.audit`` (jobs and instances write
it too and may not import accounts); this name stays for its callers."""

from __future__ import annotations

from dashboard.core.audit import audit

__all__ = ["audit"]
