"""The repository stands alone: no file in it points at a file outside it.
What the code relies on from a provider's protocol is said in the adapter's
docstring and docs/providers.md."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from providers import PROVIDERS

ROOT = Path(__file__).resolve().parents[1]
TEXT_SUFFIXES = {".py", ".md", ".txt", ".rst", ".toml", ".cfg", ".ini", ".json", ".html", ""}
#: Spelled in pieces so this file does not match itself.
OUTSIDE = ("provider" + "-docs", "NOTES" + ".md", "DESIGN" + ".md")


def searched_files() -> list[Path]:
    """Every file of the repository (tracked or new), but vendored assets."""
    names = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    return [
        ROOT / name
        for name in names
        if (ROOT / name).is_file()
        and (ROOT / name).suffix in TEXT_SUFFIXES
        and not name.startswith("static/vendor/")
    ]


def test_the_search_covers_the_code_tests_and_docs() -> None:
    names = {path.relative_to(ROOT).as_posix() for path in searched_files()}
    assert {
        "providers/base.py",
        "dashboard/models.py",
        "tests/test_standalone.py",
        "docs/providers.md",
        "README.md",
        "Makefile",
        ".ci/run",
    } <= names


@pytest.mark.parametrize("needle", OUTSIDE)
def test_no_reference_to_files_outside_the_repository(needle: str) -> None:
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in searched_files()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if needle.lower() in line.lower()
    ]
    assert found == [], f"{needle} is outside the repository; say what it says instead"


def test_docs_cover_every_provider() -> None:
    text = (ROOT / "docs" / "providers.md").read_text(encoding="utf-8")
    for slug in PROVIDERS:
        assert f"| `{slug}` |" in text and f"(`{slug}`)" in text, slug
