"""The repository stands alone: nothing in the provider code, its tests or its
docs points at a file outside the repository. What the code relies on from a
provider's protocol is said in the adapter's docstring and docs/providers.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from providers import PROVIDERS

ROOT = Path(__file__).resolve().parents[2]
SEARCHED = ("providers", "tests/providers", "docs")
TEXT_SUFFIXES = {".py", ".md", ".txt", ".rst", ".toml", ".cfg", ".ini", ".json", ".html"}
#: Spelled in pieces so this file does not match itself.
OUTSIDE = ("provider" + "-docs", "NOTES" + ".md", "DESIGN" + ".md")


def searched_files() -> list[Path]:
    files = []
    for folder in SEARCHED:
        for path in sorted((ROOT / folder).rglob("*")):
            if path.is_file() and path.suffix in TEXT_SUFFIXES and "__pycache__" not in path.parts:
                files.append(path)
    return files


def test_the_search_covers_the_code_tests_and_docs() -> None:
    names = {path.relative_to(ROOT).as_posix() for path in searched_files()}
    assert {"providers/base.py", "tests/providers/test_standalone.py", "docs/providers.md"} <= names


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
