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


def test_a_fresh_checkout_s_data_dir_is_made_for_the_embedded_database(tmp_path: Any) -> None:
    """`make run` on a clean clone: no var/ yet, and the first command that
    touches the database (migrate's checks) must not fail to open its file."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    data = tmp_path / "not-yet"
    env = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE")
    }
    env.update(DEBUG="true", DASHBOARD_DATA_DIR=str(data))
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, str(root / "manage.py"), "check", "--database", "default"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert data.is_dir()
