"""Form fields shared by the forms of several packages."""

from __future__ import annotations

import json
from typing import Any

from django import forms


def has_nul(value: Any) -> bool:
    """True when a JSON value holds a NUL character in any key or string
    (PostgreSQL refuses it in text). Iterative: a deep value cannot exhaust
    the stack."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str) and "\x00" in item:
            return True
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


class JSONObjectField(forms.CharField):
    """A textarea holding a JSON object (empty means none)."""

    widget = forms.Textarea(attrs={"rows": 3, "spellcheck": "false", "class": "mono"})

    def to_python(self, value: Any) -> dict[str, Any] | None:
        value = super().to_python(value)
        if not value or not value.strip():
            return None
        try:
            data = json.loads(value)
        except ValueError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise forms.ValidationError("Must be a JSON object ({...}).")
        return data

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, dict):
            return json.dumps(value, indent=2)
        return value
