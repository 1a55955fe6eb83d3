"""Object ids in API paths: digits only and short enough for a 64-bit column,
so anything else is the JSON 404 of an unknown path, never a database error."""

from __future__ import annotations

from django.urls import register_converter


class ObjectIdConverter:
    regex = "[0-9]{1,18}"

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value: int | str) -> str:
        return str(value)


register_converter(ObjectIdConverter, "objectid")
