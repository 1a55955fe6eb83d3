"""Prompt templates: text with ``{column}`` placeholders, filled from a row.

``str.format`` is not safe for text a user typed: ``{0.__class__}`` and
``{x[key]}`` reach into objects. This parser allows exactly two things:
``{name}`` (a column's value; spaces around the name are ignored) and
``{{`` / ``}}`` for a literal brace. Anything else is an error that says
where."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


class TemplateError(ValueError):
    """What is wrong with a template, in words a user can act on."""


@dataclass(frozen=True)
class Placeholder:
    name: str


@dataclass(frozen=True)
class PromptTemplate:
    text: str
    parts: tuple[str | Placeholder, ...]

    @classmethod
    def parse(cls, text: str) -> PromptTemplate:
        parts: list[str | Placeholder] = []
        literal: list[str] = []
        i, n = 0, len(text)
        while i < n:
            char = text[i]
            if char == "{" and text.startswith("{{", i):
                literal.append("{")
                i += 2
            elif char == "}" and text.startswith("}}", i):
                literal.append("}")
                i += 2
            elif char == "}":
                raise TemplateError(
                    f"A lone “}}” at character {i + 1}; write “}}}}” for a literal brace."
                )
            elif char == "{":
                end = text.find("}", i + 1)
                inner = text[i + 1 : end] if end != -1 else ""
                if end == -1 or "{" in inner:
                    raise TemplateError(
                        f"The “{{” at character {i + 1} is not closed; write “{{{{” for a "
                        "literal brace."
                    )
                name = inner.strip()
                if not name:
                    raise TemplateError(
                        f"An empty placeholder “{{}}” at character {i + 1}; put a column name "
                        "between the braces."
                    )
                if literal:
                    parts.append("".join(literal))
                    literal = []
                parts.append(Placeholder(name))
                i = end + 1
            else:
                literal.append(char)
                i += 1
        if literal:
            parts.append("".join(literal))
        return cls(text=text, parts=tuple(parts))

    @property
    def names(self) -> list[str]:
        """The columns it names, each once, in order."""
        seen: dict[str, None] = {}
        for part in self.parts:
            if isinstance(part, Placeholder):
                seen.setdefault(part.name, None)
        return list(seen)

    def check(self, columns: list[str]) -> None:
        """Every placeholder names one of ``columns``, and there is at least one."""
        if not self.names:
            raise TemplateError(
                "The template names no column; put {column} where each row's value goes "
                f"(columns: {_listed(columns)})."
            )
        unknown = [name for name in self.names if name not in columns]
        if unknown:
            which = ", ".join(f"{{{name}}}" for name in unknown)
            verb = "names no column" if len(unknown) == 1 else "name no column"
            raise TemplateError(
                f"{which} {verb} of the dataset; the columns are: {_listed(columns)}."
            )

    def render(self, row: dict[str, Any]) -> str:
        return "".join(
            as_text(row.get(part.name)) if isinstance(part, Placeholder) else part
            for part in self.parts
        )


def as_text(value: Any) -> str:
    """A cell as it goes into a prompt: text as it is, nothing for an empty
    cell, JSON for numbers, booleans and nested values."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _listed(columns: list[str]) -> str:
    shown = ", ".join(columns[:20])
    return shown + (f" and {len(columns) - 20} more" if len(columns) > 20 else "")
