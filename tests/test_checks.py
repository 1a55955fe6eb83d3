"""The start-up system check: a provider adapter that does not import fails
`manage.py check`, instead of its features silently disappearing."""

from __future__ import annotations

from typing import Any

import pytest

from dashboard import checks
from providers import PROVIDERS


def test_every_adapter_imports() -> None:
    assert checks.provider_adapters_import() == []


def test_a_broken_adapter_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = dict(PROVIDERS)
    broken["together"] = ("providers.together", "NoSuchProvider", "Together")
    monkeypatch.setitem(PROVIDERS, "together", broken["together"])
    problems: list[Any] = checks.provider_adapters_import()
    assert [p.id for p in problems] == ["dashboard.E001"]
    assert "together" in problems[0].msg and "NoSuchProvider" in problems[0].msg
